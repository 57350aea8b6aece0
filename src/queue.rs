//! The public [`Queue`]: a cheap handle on one open queue. Every method
//! checks its arguments and hands the work to the engine (`crate::engine`);
//! this file holds the API, its documentation and examples, and
//! [`QueueOptions::open`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::duration_ms;
use crate::codec::entry::Kind;
use crate::config::{DequeueOptions, EnqueueOptions, QueueOptions, MAX_DELAY};
use crate::engine::{Inner, NewMessage, Settlement};
use crate::error::{Error, Result};
use crate::message::{
    DeadLetter, Delivery, MessageId, MessageStatus, Receipt, RecoveryReport, Stats,
};
use crate::storage::{DiskStorage, Storage};

/// A durable, log-structured job queue in one directory.
///
/// `Queue` is a cheap handle: clone it to share one open queue between
/// threads. The directory is released when the last handle is dropped or
/// [`Queue::close`] is called.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Owner>,
}

/// What every clone of one [`Queue`] shares. The engine's own threads (the
/// flusher, the tender, the preparer) hold the engine weakly and may keep
/// it alive a moment after the last handle goes; this is dropped exactly
/// when the last user handle goes, and releases the directory then, so a
/// reopen right after never finds it still locked.
struct Owner(Arc<Inner>);

impl std::ops::Deref for Owner {
    type Target = Arc<Inner>;

    fn deref(&self) -> &Arc<Inner> {
        &self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Best effort: the caller who wants the error calls `close`.
        let _ = self.0.shutdown();
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

// `Queue` is a cheap handle shared across threads, and a receipt a plain
// value (both promised in the crate docs).
const _: fn() = || {
    fn handle<T: Send + Sync + Clone>() {}
    fn receipt<T: Copy + Send + Sync>() {}
    handle::<Queue>();
    receipt::<Receipt>();
};

impl QueueOptions {
    /// Open (or create) the queue in directory `dir`.
    ///
    /// The directory itself is created if missing, but not its parents.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an option out of range,
    /// [`Error::BadDirectory`] when `dir` cannot be used, [`Error::Locked`]
    /// when the queue is already open, [`Error::UnsupportedVersion`] and
    /// [`Error::Corrupt`] for files recovery cannot read, [`Error::Io`].
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Queue> {
        self.validate()?;
        let dir = dir.as_ref();
        let storage = DiskStorage::open(dir).map_err(|e| Error::BadDirectory {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let mut opts = self;
        opts.prepare_ahead.get_or_insert(true);
        Ok(Queue {
            inner: Arc::new(Owner(Inner::open(Arc::new(storage), opts)?)),
        })
    }

    /// Open (or create) the queue on any [`Storage`], such as
    /// [`crate::storage::MemoryStorage`].
    ///
    /// # Errors
    /// As [`QueueOptions::open`].
    pub fn open_storage(self, storage: Arc<dyn Storage>) -> Result<Queue> {
        self.validate()?;
        Ok(Queue {
            inner: Arc::new(Owner(Inner::open(storage, self)?)),
        })
    }
}

impl Queue {
    /// Open (or create) a queue in `dir` with default options.
    ///
    /// # Errors
    /// See [`QueueOptions::open`].
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Queue> {
        QueueOptions::new().open(dir)
    }

    /// What recovery found when this queue was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.inner.recovery_report()
    }

    /// Enqueue one message with a priority (higher is served first).
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let id = q.enqueue(b"resize image 7", 5)?;
    /// let d = q.dequeue()?.expect("one message");
    /// assert_eq!(d.id, id);
    /// q.ack(d.receipt)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a payload over `max_message_size` (nothing is
    /// written), [`Error::Io`] (a full disk included; nothing is enqueued),
    /// [`Error::Poisoned`], [`Error::Closed`].
    pub fn enqueue(&self, payload: &[u8], priority: u8) -> Result<MessageId> {
        let ids = self.inner.enqueue(&[NewMessage::new(payload, priority)])?;
        Ok(MessageId(ids[0]))
    }

    /// Enqueue one message with a priority, delay, deadline or idempotency
    /// key ([`EnqueueOptions`]); returns its id, or, for a key seen within
    /// the dedup window, the first enqueue's id (nothing is written).
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// use lanelog::{EnqueueOptions, Timestamp};
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let soon = EnqueueOptions::new().deadline(Timestamp::now().plus(Duration::from_secs(60)));
    /// let later = EnqueueOptions::new().deadline(Timestamp::now().plus(Duration::from_secs(600)));
    /// q.enqueue(b"no deadline", 0)?;
    /// q.enqueue_with(b"due in 10 min", &later)?;
    /// q.enqueue_with(b"due in 1 min", &soon)?;
    /// // Within a lane: earliest deadline first, then the rest in order.
    /// assert_eq!(q.dequeue()?.unwrap().payload, b"due in 1 min");
    /// assert_eq!(q.dequeue()?.unwrap().payload, b"due in 10 min");
    /// assert_eq!(q.dequeue()?.unwrap().payload, b"no deadline");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::enqueue`]; [`Error::InvalidArgument`] for a delay over
    /// [`crate::MAX_DELAY`], a deadline already past or before the delay
    /// ends, or a key that is empty or over 128 bytes;
    /// [`Error::TooManyKeys`] when `max_keys` keys are remembered already.
    /// Nothing is written on any error.
    pub fn enqueue_with(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<MessageId> {
        let ids = self.inner.enqueue(&[NewMessage::with(payload, opts)?])?;
        Ok(MessageId(ids[0]))
    }

    /// [`Queue::enqueue_batch`] with options per message: one write, all or
    /// none. A key repeated within the batch is enqueued once; every
    /// occurrence returns that id.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use lanelog::EnqueueOptions;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let k = EnqueueOptions::new().key("job-1");
    /// let ids = q.enqueue_batch_with(&[(&b"a"[..], k.clone()), (&b"a"[..], k)])?;
    /// assert_eq!(ids[0], ids[1]);
    /// assert_eq!(q.stats().ready, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::enqueue_with`] and [`Queue::enqueue_batch`].
    pub fn enqueue_batch_with<P: AsRef<[u8]>>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> Result<Vec<MessageId>> {
        let items = items
            .iter()
            .map(|(payload, opts)| NewMessage::with(payload.as_ref(), opts))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .inner
            .enqueue(&items)?
            .into_iter()
            .map(MessageId)
            .collect())
    }

    /// Enqueue many messages with one write and (under `Immediate`) one sync.
    /// All or none are enqueued, also across a crash: the batch's records go
    /// into one segment, and recovery drops a batch whose last record is
    /// missing.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let ids = q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 9)])?;
    /// assert_eq!(ids.len(), 2);
    /// assert_eq!(q.dequeue()?.unwrap().payload, b"b"); // priority 9 first
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::enqueue`]; one oversized payload refuses the whole batch,
    /// and so does a batch whose records (payloads plus 40 bytes each) do
    /// not fit in one segment ([`Error::TooLarge`] with the segment's room).
    pub fn enqueue_batch<P: AsRef<[u8]>>(&self, items: &[(P, u8)]) -> Result<Vec<MessageId>> {
        let items: Vec<NewMessage<'_>> = items
            .iter()
            .map(|(payload, priority)| NewMessage::new(payload.as_ref(), *priority))
            .collect();
        Ok(self
            .inner
            .enqueue(&items)?
            .into_iter()
            .map(MessageId)
            .collect())
    }

    /// Enqueue a message that stays invisible for `delay` (at most
    /// [`crate::MAX_DELAY`]); the ready time survives a restart.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue_delayed(b"later", 0, Duration::from_secs(3600))?;
    /// assert!(q.dequeue()?.is_none());
    /// assert_eq!(q.stats().delayed, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::enqueue`], and [`Error::InvalidArgument`] for a delay over
    /// the maximum.
    pub fn enqueue_delayed(
        &self,
        payload: &[u8],
        priority: u8,
        delay: Duration,
    ) -> Result<MessageId> {
        check_delay(delay)?;
        let ids = self.inner.enqueue(&[NewMessage {
            delay_ms: Some(duration_ms(delay) as u32),
            ..NewMessage::new(payload, priority)
        }])?;
        Ok(MessageId(ids[0]))
    }

    /// Take the next ready message, if any, leasing it for the visibility
    /// timeout. Never blocks.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// assert!(q.dequeue()?.is_none());
    /// q.enqueue(b"job", 0)?;
    /// let d = q.dequeue()?.expect("ready");
    /// assert_eq!((d.payload.as_slice(), d.attempt), (&b"job"[..], 1));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Poisoned`], [`Error::Closed`].
    pub fn dequeue(&self) -> Result<Option<Delivery>> {
        // Never blocks, whatever the queue's `default_wait`.
        Ok(self
            .dequeue_with(&DequeueOptions::new().wait(Duration::ZERO))?
            .pop())
    }

    /// Take the next ready message, waiting up to `wait` for one to become
    /// ready (an enqueue, a delay that matures, a lease that expires). The
    /// thread sleeps until one of those can happen; it never polls.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// assert!(q.dequeue_timeout(Duration::from_millis(10))?.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::dequeue`].
    pub fn dequeue_timeout(&self, wait: Duration) -> Result<Option<Delivery>> {
        Ok(self.dequeue_with(&DequeueOptions::new().wait(wait))?.pop())
    }

    /// Take up to `max` messages, returning as soon as `max` are leased or
    /// when `linger` has passed with whatever was ready by then (possibly
    /// none): the way inference servers fill a batch.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 0)])?;
    /// let batch = q.dequeue_batch(64, Duration::from_millis(5))?;
    /// assert_eq!(batch.len(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max` is 0; as [`Queue::dequeue`].
    pub fn dequeue_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        self.dequeue_with(
            &DequeueOptions::new()
                .max(max)
                .wait(linger)
                .linger_within_wait(),
        )
    }

    /// Take up to `max` ready messages without waiting.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 0), (&b"c"[..], 0)])?;
    /// assert_eq!(q.dequeue_up_to(2)?.len(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max` is 0; as [`Queue::dequeue`].
    pub fn dequeue_up_to(&self, max: usize) -> Result<Vec<Delivery>> {
        self.dequeue_with(&DequeueOptions::new().max(max).wait(Duration::ZERO))
    }

    /// Dequeue with every knob: how many, how long to wait for the first
    /// (the queue's [`QueueOptions::default_wait`] when the options name no
    /// wait), how long to linger for more, and the lease for these
    /// deliveries.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// use lanelog::DequeueOptions;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 0)])?;
    /// let batch = q.dequeue_with(
    ///     &DequeueOptions::new()
    ///         .max(64)
    ///         .wait(Duration::from_secs(1))
    ///         .linger(Duration::from_millis(2))
    ///         .visibility(Duration::from_secs(120)),
    /// )?;
    /// assert_eq!(batch.len(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max` is 0 or the visibility is zero;
    /// as [`Queue::dequeue`].
    pub fn dequeue_with(&self, opts: &DequeueOptions) -> Result<Vec<Delivery>> {
        self.inner.dequeue(opts)
    }

    /// Wait (asynchronously) for the next ready message and lease it.
    /// Bound the wait with `tokio::time::timeout` if you need one.
    ///
    /// Cancel-safe: the message is leased by a synchronous call that either
    /// completes or does not start, so a dropped future never strands one.
    ///
    /// # Errors
    /// As [`Queue::dequeue`].
    #[cfg(feature = "tokio")]
    pub async fn dequeue_async(&self) -> Result<Delivery> {
        loop {
            let mut batch = self.dequeue_batch_async(1).await?;
            if let Some(d) = batch.pop() {
                return Ok(d);
            }
        }
    }

    /// Wait (asynchronously) until at least one message is ready, then lease
    /// up to `max` that are ready. Cancel-safe like [`Queue::dequeue_async`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max` is 0; as [`Queue::dequeue`].
    #[cfg(feature = "tokio")]
    pub async fn dequeue_batch_async(&self, max: usize) -> Result<Vec<Delivery>> {
        let waker = self.inner.async_waker()?;
        loop {
            let mut notified = std::pin::pin!(waker.notify.notified());
            // Register before looking, so an enqueue between the look and
            // the await still wakes this future.
            notified.as_mut().enable();
            let batch = self.dequeue_up_to(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            notified.await;
        }
    }

    /// [`Queue::enqueue`] for async callers: the write is made at once, and
    /// its sync (under `Immediate`) is awaited, not made on this thread:
    /// the queue's syncer thread syncs for every async writer waiting (one
    /// group commit), and blocking writers' syncs wake them too. A
    /// current-thread runtime keeps running other tasks meanwhile.
    ///
    /// Dropping the future after its first poll leaves the message written
    /// but perhaps not yet durable, as a crash before a sync would.
    ///
    /// # Errors
    /// As [`Queue::enqueue`].
    #[cfg(feature = "tokio")]
    pub async fn enqueue_async(&self, payload: &[u8], priority: u8) -> Result<MessageId> {
        let (ids, written) = self
            .inner
            .enqueue_unsynced(&[NewMessage::new(payload, priority)])?;
        if let Some(w) = written {
            self.inner.finish_write_async(w).await?;
        }
        Ok(MessageId(ids[0]))
    }

    /// [`Queue::enqueue_with`] for async callers (see
    /// [`Queue::enqueue_async`]).
    ///
    /// # Errors
    /// As [`Queue::enqueue_with`].
    #[cfg(feature = "tokio")]
    pub async fn enqueue_with_async(
        &self,
        payload: &[u8],
        opts: &EnqueueOptions,
    ) -> Result<MessageId> {
        let (ids, written) = self
            .inner
            .enqueue_unsynced(&[NewMessage::with(payload, opts)?])?;
        if let Some(w) = written {
            self.inner.finish_write_async(w).await?;
        }
        Ok(MessageId(ids[0]))
    }

    /// [`Queue::enqueue_batch_with`] for async callers (see
    /// [`Queue::enqueue_async`]): one write, all or none, one awaited sync.
    ///
    /// # Errors
    /// As [`Queue::enqueue_batch_with`].
    #[cfg(feature = "tokio")]
    pub async fn enqueue_batch_with_async<P: AsRef<[u8]>>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> Result<Vec<MessageId>> {
        let (ids, written) = {
            let items = items
                .iter()
                .map(|(payload, opts)| NewMessage::with(payload.as_ref(), opts))
                .collect::<Result<Vec<_>>>()?;
            self.inner.enqueue_unsynced(&items)?
        };
        if let Some(w) = written {
            self.inner.finish_write_async(w).await?;
        }
        Ok(ids.into_iter().map(MessageId).collect())
    }

    /// [`Queue::ack_batch`] for async callers: the acks are written at once,
    /// their sync awaited (see [`Queue::enqueue_async`]).
    ///
    /// # Errors
    /// As [`Queue::ack`].
    #[cfg(feature = "tokio")]
    pub async fn ack_async(&self, receipts: &[Receipt]) -> Result<()> {
        if let Some(w) = self.inner.settle_unsynced(receipts, &Settlement::Ack)? {
            self.inner.finish_write_async(w).await?;
        }
        Ok(())
    }

    /// [`Queue::complete`] for async callers: the result and the ack are
    /// written at once as one record, their sync awaited (see
    /// [`Queue::enqueue_async`]).
    ///
    /// # Errors
    /// As [`Queue::complete`].
    #[cfg(feature = "tokio")]
    pub async fn complete_async(&self, receipt: Receipt, result: &[u8]) -> Result<()> {
        let written = self.inner.complete_unsynced(receipt, result)?;
        self.inner.finish_write_async(written).await
    }

    /// [`Queue::sync`] for async callers: awaits a sync of everything
    /// written so far, made by the queue's syncer thread.
    ///
    /// # Errors
    /// As [`Queue::sync`].
    #[cfg(feature = "tokio")]
    pub async fn sync_async(&self) -> Result<()> {
        self.inner.sync_async().await
    }

    /// Acknowledge a delivery: the message is done and never delivered again.
    ///
    /// # Errors
    /// [`Error::StaleReceipt`] when the delivery is no longer current,
    /// [`Error::Unknown`] for a receipt this queue never issued; nothing
    /// changes. [`Error::Io`], [`Error::Poisoned`], [`Error::Closed`].
    pub fn ack(&self, receipt: Receipt) -> Result<()> {
        self.ack_batch(&[receipt])
    }

    /// Acknowledge many deliveries with one write and one sync. If any
    /// receipt is stale or unknown, none is acked.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 0)])?;
    /// let receipts: Vec<_> = q.dequeue_up_to(2)?.iter().map(|d| d.receipt).collect();
    /// q.ack_batch(&receipts)?;
    /// assert_eq!(q.stats().acked_total, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`].
    pub fn ack_batch(&self, receipts: &[Receipt]) -> Result<()> {
        self.inner.settle(receipts, &Settlement::Ack)
    }

    /// Give a delivery back: the message is ready again after `delay` (zero
    /// for at once), keeping its attempt count.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue(b"flaky", 0)?;
    /// let d = q.dequeue()?.unwrap();
    /// q.nack(d.receipt, Duration::ZERO)?;
    /// assert_eq!(q.dequeue()?.unwrap().attempt, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`], and [`Error::InvalidArgument`] for a delay over
    /// [`crate::MAX_DELAY`].
    pub fn nack(&self, receipt: Receipt, delay: Duration) -> Result<()> {
        check_delay(delay)?;
        self.inner.settle(&[receipt], &Settlement::Nack(delay))
    }

    /// Extend a delivery's lease to `extension` from now.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue(b"long job", 0)?;
    /// let d = q.dequeue()?.unwrap();
    /// q.extend_lease(d.receipt, Duration::from_secs(600))?;
    /// q.ack(d.receipt)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`], and [`Error::InvalidArgument`] for a zero extension.
    pub fn extend_lease(&self, receipt: Receipt, extension: Duration) -> Result<()> {
        if extension.is_zero() {
            return Err(Error::InvalidArgument(
                "a lease extension must be above zero".into(),
            ));
        }
        self.inner
            .settle(&[receipt], &Settlement::Extend(extension))
    }

    /// Move a delivered message straight to the dead letters with a reason
    /// (cut to 1 KiB).
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue(b"bad input", 0)?;
    /// let d = q.dequeue()?.unwrap();
    /// q.dead_letter(d.receipt, "shape mismatch")?;
    /// assert_eq!(q.dead_letters()?[0].reason, "shape mismatch");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`].
    pub fn dead_letter(&self, receipt: Receipt, reason: &str) -> Result<()> {
        self.inner
            .settle(&[receipt], &Settlement::DeadLetter(reason.to_string()))
    }

    /// Finish a delivery with its result: the result is stored and the
    /// message acked in one durable record (under `Immediate`, no crash
    /// leaves the message acked without its result, or the result stored
    /// with the message still pending). Read it back with
    /// [`Queue::result`] until retention removes it.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let id = q.enqueue(b"2 + 2", 0)?;
    /// let d = q.dequeue()?.unwrap();
    /// q.complete(d.receipt, b"4")?;
    /// assert_eq!(q.result(id)?, Some(b"4".to_vec()));
    /// assert_eq!(q.stats().acked_total, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`], and [`Error::TooLarge`] for a result over
    /// `max_message_size`; nothing changes on any error.
    pub fn complete(&self, receipt: Receipt, result: &[u8]) -> Result<()> {
        self.inner.complete(receipt, result)
    }

    /// The result stored by [`Queue::complete`] for message `id`, or `None`
    /// when it has none (not completed, acked without a result, or removed
    /// by retention).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the result's record is damaged,
    /// [`Error::Io`], [`Error::Closed`].
    pub fn result(&self, id: MessageId) -> Result<Option<Vec<u8>>> {
        self.inner.result(id.0)
    }

    /// Where message `id` is now: ready, delayed, in flight, a dead letter
    /// (with its reason), completed, or gone (acked, removed, or never
    /// enqueued).
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use lanelog::MessageStatus;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let id = q.enqueue(b"x", 2)?;
    /// assert_eq!(q.status(id)?, MessageStatus::Ready { priority: 2 });
    /// let d = q.dequeue()?.unwrap();
    /// q.dead_letter(d.receipt, "bad input")?;
    /// assert_eq!(q.status(id)?, MessageStatus::Dead { reason: "bad input".into() });
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn status(&self, id: MessageId) -> Result<MessageStatus> {
        self.inner.status(id.0)
    }

    /// The id that the enqueue with idempotency key `key` returned, while
    /// the key is remembered (for `dedup_window` after that enqueue, across
    /// reopens); `None` once forgotten or for a key never used. Writes
    /// nothing, unlike an enqueue with the key.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use lanelog::EnqueueOptions;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let id = q.enqueue_with(b"x", &EnqueueOptions::new().key("order-17"))?;
    /// assert_eq!(q.key_id(b"order-17")?, Some(id));
    /// assert_eq!(q.key_id(b"order-18")?, None);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn key_id(&self, key: impl AsRef<[u8]>) -> Result<Option<MessageId>> {
        Ok(self.inner.key_id(key.as_ref())?.map(MessageId))
    }

    /// Make everything written so far durable now, whatever the durability
    /// mode.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use lanelog::{Durability, QueueOptions};
    /// let q = QueueOptions::new().durability(Durability::None).open(dir.path())?;
    /// q.enqueue(b"x", 0)?;
    /// q.sync()?; // now durable
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the sync fails (the queue is then poisoned),
    /// [`Error::Poisoned`], [`Error::Closed`].
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Reserve a block of ids durably now (one journal sync, if the
    /// current block is used up), not at the first enqueue.
    pub(crate) fn reserve_ids_ahead(&self) -> Result<()> {
        self.inner.reserve_ids_ahead()
    }

    /// Wake every thread blocked in a dequeue on this queue (any handle):
    /// each returns at once with what it has leased so far, possibly
    /// nothing, instead of waiting out its `wait` or `linger`. For stopping
    /// consumer threads promptly; async dequeues are not affected.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let consumer = q.clone();
    /// let t = std::thread::spawn(move || consumer.dequeue_timeout(Duration::from_secs(3600)));
    /// while !t.is_finished() {
    ///     q.wake_waiters(); // the consumer may not be asleep yet
    ///     std::thread::sleep(Duration::from_millis(10));
    /// }
    /// assert!(t.join().unwrap()?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn wake_waiters(&self) {
        self.inner.wake_waiters()
    }

    /// A snapshot of the queue's counters.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue(b"x", 3)?;
    /// let s = q.stats();
    /// assert_eq!(s.ready, 1);
    /// assert_eq!(s.ready_per_lane, vec![lanelog::LaneCount { priority: 3, ready: 1 }]);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// All dead letters, in id order.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// assert!(q.dead_letters()?.is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters()
    }

    /// Send one dead letter back to ready, its attempts reset.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// let id = q.enqueue(b"x", 0)?;
    /// q.dead_letter(q.dequeue()?.unwrap().receipt, "oops")?;
    /// q.redrive(id)?;
    /// assert_eq!(q.dequeue()?.unwrap().attempt, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unknown`] when `id` is not a dead letter; as [`Queue::ack`].
    pub fn redrive(&self, id: MessageId) -> Result<()> {
        self.inner
            .dead_letter_op(Kind::Redriven, Some(id.0))
            .map(|_| ())
    }

    /// Send every dead letter back to ready; returns how many.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue(b"x", 0)?;
    /// q.dead_letter(q.dequeue()?.unwrap().receipt, "oops")?;
    /// assert_eq!(q.redrive_all()?, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`].
    pub fn redrive_all(&self) -> Result<u64> {
        self.inner.dead_letter_op(Kind::Redriven, None)
    }

    /// Remove every dead letter for good; returns how many. Their space is
    /// reclaimed with their segments.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.enqueue(b"x", 0)?;
    /// q.dead_letter(q.dequeue()?.unwrap().receipt, "oops")?;
    /// assert_eq!(q.purge_dead_letters()?, 1);
    /// assert_eq!(q.stats().dead, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::ack`].
    pub fn purge_dead_letters(&self) -> Result<u64> {
        self.inner.dead_letter_op(Kind::Purged, None)
    }

    /// Sync, write a checkpoint if anything was written since the last one
    /// (so the next open is fast and makes no sync of its own) and release
    /// the directory. Other handles to this queue get [`Error::Closed`]
    /// after.
    ///
    /// ```
    /// # fn main() -> Result<(), lanelog::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let q = lanelog::Queue::open(dir.path())?;
    /// q.close()?;
    /// let q = lanelog::Queue::open(dir.path())?; // the directory is free again
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the final sync or checkpoint fails; the directory
    /// is released anyway and the next open recovers.
    pub fn close(self) -> Result<()> {
        self.inner.shutdown()
    }
}

/// Refuse a delay the record cannot store.
fn check_delay(delay: Duration) -> Result<()> {
    if delay > MAX_DELAY {
        return Err(Error::InvalidArgument(format!(
            "delay {delay:?} is over the maximum {MAX_DELAY:?}"
        )));
    }
    Ok(())
}
