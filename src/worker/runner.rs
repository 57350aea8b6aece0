//! The runner: the thread a worker runs its model on, so that a call that
//! hangs past its timeout can be abandoned instead of stalling the worker.
//!
//! Invariants:
//! - At most one call is in flight per runner: a worker sends a batch and
//!   waits for its reply (or its timeout) before it sends the next.
//! - A runner whose call timed out, or whose thread is gone, is replaced by
//!   a fresh one before the error is returned, so a late reply from the old
//!   thread can never be taken for the reply to a later call.
//! - A model panic is caught on the runner thread and returned as a
//!   [`ModelError`]; it fails the call, not the worker.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::Erased;
use super::rows::RowBlock;
use super::ModelError;

/// The reply to one call: one encoded output per input, or why the call
/// failed.
pub(super) type Reply = std::result::Result<RowBlock, ModelError>;

/// One call: the model and its encoded rows.
type Call = (Arc<dyn Erased>, Arc<RowBlock>);

/// A thread that runs models, so a call that hangs can be abandoned.
pub(super) struct Runner {
    tx: SyncSender<Call>,
    rx: Receiver<Reply>,
}

impl Runner {
    pub(super) fn new() -> Runner {
        let (tx, inbox) = mpsc::sync_channel::<Call>(1);
        let (outbox, rx) = mpsc::sync_channel::<Reply>(1);
        let spawned = std::thread::Builder::new()
            .name("lanelog-runner".into())
            .spawn(move || {
                while let Ok((model, rows)) = inbox.recv() {
                    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        model.infer(&rows)
                    }))
                    .unwrap_or_else(|p| {
                        // A panic says nothing about whether a retry helps.
                        Err(ModelError::transient(format!(
                            "model panicked: {}",
                            panic_text(&p)
                        )))
                    });
                    if outbox.send(reply).is_err() {
                        return;
                    }
                }
            });
        // Without a thread the channel is closed and every call reports it.
        drop(spawned);
        Runner { tx, rx }
    }

    /// Run `model` on `rows`, calling `renew` every `renew_every` while it
    /// runs, and give up after `timeout`.
    pub(super) fn call(
        &mut self,
        model: Arc<dyn Erased>,
        rows: Arc<RowBlock>,
        timeout: Duration,
        renew_every: Duration,
        mut renew: impl FnMut(),
    ) -> Reply {
        if self.tx.send((model, rows)).is_err() {
            *self = Runner::new();
            return Err(ModelError::transient("the model runner thread is gone"));
        }
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            match self.rx.recv_timeout(left.min(renew_every)) {
                Ok(reply) => return reply,
                Err(RecvTimeoutError::Timeout) if left <= renew_every => {
                    // Abandon the stuck thread; its late reply goes nowhere.
                    *self = Runner::new();
                    return Err(ModelError::timed_out(timeout));
                }
                Err(RecvTimeoutError::Timeout) => renew(),
                Err(RecvTimeoutError::Disconnected) => {
                    *self = Runner::new();
                    return Err(ModelError::transient("the model runner thread died"));
                }
            }
        }
    }
}

/// The message of a panic payload (`panic!` with a literal or a format).
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
