//! The kill-child harness: run the current test binary again as a child
//! that runs one named `#[test]` (the scenario), read the lines it prints,
//! and `kill -9` it at a chosen moment.
//!
//! The scenario tells parent from child by an environment variable the
//! parent sets ([`Child::spawn`]'s `env`): with it set, the test body is the
//! child's workload; without it, the body is the parent. A child that is
//! never killed must end on its own; every wait here is bounded, and a
//! [`Child`] dropped early kills and reaps its process, so no test leaves a
//! process behind.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A child process running one scenario, its stdout read line by line.
pub struct Child {
    process: Option<std::process::Child>,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl Child {
    /// Run `test` (a `#[test]` of this binary, matched exactly, one thread,
    /// output not captured) in a child with `env` set; its stdout is piped
    /// to the parent, stderr inherited.
    pub fn spawn<K: AsRef<OsStr>, V: AsRef<OsStr>>(test: &str, env: &[(K, V)]) -> Child {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = cmd.spawn().expect("spawn child");
        let stdout = process.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            // Only complete lines: the one a kill cuts short is dropped.
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.last() == Some(&b'\n') => {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Ok(_) => break,
                }
            }
        });
        Child {
            process: Some(process),
            lines,
            reader: Some(reader),
        }
    }

    /// The next complete line, waiting at most `timeout`; `None` if none
    /// came in time or the child's stdout closed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Read lines until `stop` returns true for one, for at most `timeout`
    /// in all; returns whether `stop` did.
    pub fn wait_for(&mut self, timeout: Duration, mut stop: impl FnMut(&str) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.next_line(left) {
                Some(l) if stop(&l) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }

    /// Send SIGKILL, reap the process, and return every complete line not
    /// yet read (the child's stdout is read to its end).
    pub fn kill(mut self) -> Vec<String> {
        self.stop();
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        self.lines.try_iter().collect()
    }

    /// Let the child run for `after`, then [`Child::kill`] it.
    pub fn kill_after(self, after: Duration) -> Vec<String> {
        std::thread::sleep(after);
        self.kill()
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            // `Child::kill` sends SIGKILL on Unix; it fails only if the
            // child was already reaped, which `take` rules out.
            p.kill().expect("kill child");
            p.wait().expect("reap child");
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A parent that panicked before the kill must not leave the child.
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
