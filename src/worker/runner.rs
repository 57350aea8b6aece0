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

use super::{Model, ModelError};

/// The reply to one call: one output per input, or why the call failed.
pub(super) type Reply<O> = std::result::Result<Vec<O>, ModelError>;

/// A thread that runs the model, so a call that hangs can be abandoned.
pub(super) struct Runner<M: Model> {
    model: Arc<M>,
    tx: SyncSender<Vec<M::Input>>,
    rx: Receiver<Reply<M::Output>>,
}

impl<M: Model> Runner<M> {
    pub(super) fn new(model: Arc<M>) -> Runner<M> {
        let (tx, inbox) = mpsc::sync_channel::<Vec<M::Input>>(1);
        let (outbox, rx) = mpsc::sync_channel::<Reply<M::Output>>(1);
        let m = model.clone();
        let spawned = std::thread::Builder::new()
            .name("lanelog-runner".into())
            .spawn(move || {
                while let Ok(inputs) = inbox.recv() {
                    let reply =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.infer(&inputs)))
                            .unwrap_or_else(|p| {
                                Err(ModelError(format!("model panicked: {}", panic_text(&p))))
                            });
                    if outbox.send(reply).is_err() {
                        return;
                    }
                }
            });
        // Without a thread the channel is closed and every call reports it.
        drop(spawned);
        Runner { model, tx, rx }
    }

    /// Run the model on `inputs`, calling `renew` every `renew_every` while
    /// it runs, and give up after `timeout`.
    pub(super) fn call(
        &mut self,
        inputs: Vec<M::Input>,
        timeout: Duration,
        renew_every: Duration,
        mut renew: impl FnMut(),
    ) -> Reply<M::Output> {
        if self.tx.send(inputs).is_err() {
            *self = Runner::new(self.model.clone());
            return Err(ModelError("the model runner thread is gone".into()));
        }
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            match self.rx.recv_timeout(left.min(renew_every)) {
                Ok(reply) => return reply,
                Err(RecvTimeoutError::Timeout) if left <= renew_every => {
                    // Abandon the stuck thread; its late reply goes nowhere.
                    *self = Runner::new(self.model.clone());
                    return Err(ModelError(format!("timed out after {timeout:?}")));
                }
                Err(RecvTimeoutError::Timeout) => renew(),
                Err(RecvTimeoutError::Disconnected) => {
                    *self = Runner::new(self.model.clone());
                    return Err(ModelError("the model runner thread died".into()));
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
