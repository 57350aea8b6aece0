//! The backend's private tokio runtime and the bridge from synchronous
//! calls into it.
//!
//! Invariant: no future of the backend runs on a caller's runtime. Every
//! call is spawned onto this runtime and the caller waits on a plain
//! channel, so a synchronous call made from inside a caller's own tokio
//! runtime blocks that thread (as the embedded queue's calls do) instead
//! of panicking the way a nested `block_on` would.

use std::future::Future;
use std::sync::mpsc;

use tokio::runtime::Runtime;

use crate::{Error, Result};

/// Owns the runtime; dropping it stops the runtime's threads without
/// waiting for them, which is safe from any context (a plain drop of a
/// runtime inside another runtime panics).
pub(crate) struct Private {
    runtime: Option<Runtime>,
}

impl Private {
    /// One worker thread: the backend's work is network waiting, and the
    /// machine's cores belong to the model.
    pub(crate) fn new() -> Result<Private> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lanelog-nats")
            .enable_all()
            .build()?;
        Ok(Private {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        // Only `drop` takes the runtime out.
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// Run `future` on the private runtime and wait for its output on this
    /// thread. `Closed` if the runtime stopped first (the queue was
    /// dropped).
    pub(crate) fn block<F, T>(&self, future: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().unwrap_or_else(|_| Err(Error::Closed))
    }

    /// Run `future` on the private runtime; the returned future (for a
    /// caller's own runtime) resolves with its output.
    #[cfg(feature = "tokio")]
    pub(crate) fn spawn<F, T>(&self, future: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle().spawn(future);
        async move { task.await.unwrap_or_else(|_| Err(Error::Closed)) }
    }

    /// Start a background task (the wake-up listener).
    pub(crate) fn detach<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle().spawn(future);
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
