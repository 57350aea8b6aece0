//! A bound on a whole test: a test that talks to servers or child
//! processes can hang on a wait the code under test failed to bound (found
//! in CI: a JetStream fetch whose server was killed). Then the test
//! process is ended loudly, naming the test, instead of running until CI's
//! own limit; the servers and children it started go with it (their
//! guards watch the test process).

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// Ends the test process if still alive `limit` after [`Watchdog::arm`].
/// Dropping it (the test ended, passed or panicked) disarms it.
pub struct Watchdog {
    _disarm: Sender<()>,
}

impl Watchdog {
    /// Arm for the test named `what`: past `limit`, print that it hung
    /// and exit the process with status 101 (a failed test's).
    pub fn arm(what: &str, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let what = what.to_string();
        std::thread::spawn(move || {
            // A disconnect is the disarm; only the timeout ends the process.
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "{what}: still running after {limit:?}: a wait that never ends; aborting"
                );
                std::process::exit(101);
            }
        });
        Watchdog { _disarm: tx }
    }
}
