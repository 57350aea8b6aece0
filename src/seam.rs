//! The queue seam: what the inference layer needs from a queue, as a
//! trait, so the same worker loop runs over the embedded [`Queue`] and over
//! a remote engine (NATS JetStream, feature `nats`).
//!
//! Invariants every implementation keeps (the contract suite in
//! `tests/seam_contract.rs` checks them on each):
//!
//! - A message whose enqueue returned `Ok` is delivered until it is acked,
//!   completed or dead-lettered (at-least-once).
//! - A delivery is leased: unsettled when its lease runs out, the message
//!   is delivered again with its `attempt` raised; past `max_deliveries`
//!   it becomes a dead letter instead.
//! - Higher lanes are served first.
//! - An idempotency key seen within the dedup window returns the first
//!   enqueue's id and adds nothing.
//! - A message is completed at most once: a second `complete` of the same
//!   message (a stale delivery) returns [`Error::StaleReceipt`] and leaves
//!   the first result in place. This is what keeps a row from counting
//!   twice when a backend accepts a late settle.
//! - After `sync` returns, every earlier `Ok` write survives what the
//!   backend promises to survive (an fsync for the embedded queue; the
//!   stream's replicas for JetStream).
//!
//! The trait is synchronous because the worker loop is thread-based; the
//! async variants exist with the `tokio` feature and default to the
//! synchronous call.

use std::time::Duration;

use crate::{
    DeadLetter, Delivery, DequeueOptions, EnqueueOptions, MessageId, MessageStatus, Queue, Receipt,
    Result,
};
#[cfg(feature = "tokio")]
use std::future::Future;

#[cfg(doc)]
use crate::Error;

/// What the worker pool, the inference service and `parallel_infer` call
/// on a queue. The embedded [`Queue`] implements it by forwarding to its
/// methods of the same names, whose docs give the exact meaning; a remote
/// backend documents where it differs (for JetStream: `docs/nats.md`).
///
/// `Clone` is a cheap handle copy, as for [`Queue`]: every clone serves
/// the same queue.
pub trait JobQueue: Clone + Send + Sync + 'static {
    /// Enqueue one message with [`EnqueueOptions`]; for a key seen within
    /// the dedup window, the first enqueue's id (nothing added).
    ///
    /// # Errors
    /// As [`Queue::enqueue_with`]; a remote backend adds
    /// [`Error::Unavailable`] and [`Error::Backend`].
    fn enqueue_with(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<MessageId>;

    /// Enqueue many messages, each with its options; ids in input order.
    ///
    /// # Errors
    /// As [`JobQueue::enqueue_with`]. The embedded queue writes all or
    /// none; a remote backend may have added a prefix of the batch when it
    /// fails (a retry with the same keys adds nothing twice).
    fn enqueue_batch_with<P: AsRef<[u8]>>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> Result<Vec<MessageId>>;

    /// Lease up to `opts.max` messages, highest lane first, waiting and
    /// lingering as [`DequeueOptions`] says.
    ///
    /// # Errors
    /// As [`Queue::dequeue_with`]; a backend whose lease length is fixed
    /// ([`JobQueue::fixed_lease`]) refuses another `visibility` with
    /// [`Error::InvalidArgument`].
    fn dequeue_with(&self, opts: &DequeueOptions) -> Result<Vec<Delivery>>;

    /// Acknowledge deliveries: done, never delivered again.
    ///
    /// # Errors
    /// As [`Queue::ack_batch`].
    fn ack_batch(&self, receipts: &[Receipt]) -> Result<()>;

    /// Store a result for the delivered message and acknowledge it.
    ///
    /// # Errors
    /// As [`Queue::complete`]; [`Error::StaleReceipt`] when the message
    /// was completed already (its first result stays).
    fn complete(&self, receipt: Receipt, result: &[u8]) -> Result<()>;

    /// Give a delivery back: ready again after `delay`.
    ///
    /// # Errors
    /// As [`Queue::nack`].
    fn nack(&self, receipt: Receipt, delay: Duration) -> Result<()>;

    /// Keep a delivery leased for longer.
    ///
    /// # Errors
    /// As [`Queue::extend_lease`].
    fn extend_lease(&self, receipt: Receipt, extension: Duration) -> Result<()>;

    /// Park a delivered message in the dead letters with a reason.
    ///
    /// # Errors
    /// As [`Queue::dead_letter`].
    fn dead_letter(&self, receipt: Receipt, reason: &str) -> Result<()>;

    /// The result [`JobQueue::complete`] stored for message `id`.
    ///
    /// # Errors
    /// As [`Queue::result`].
    fn result(&self, id: MessageId) -> Result<Option<Vec<u8>>>;

    /// Where message `id` is in its life.
    ///
    /// # Errors
    /// As [`Queue::status`].
    fn status(&self, id: MessageId) -> Result<MessageStatus>;

    /// The id an enqueue with idempotency key `key` returned, while the key
    /// is remembered.
    ///
    /// # Errors
    /// As [`Queue::key_id`].
    fn key_id<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<MessageId>>;

    /// Make every write so far durable (see the module docs for what that
    /// means per backend).
    ///
    /// # Errors
    /// As [`Queue::sync`].
    fn sync(&self) -> Result<()>;

    /// Wake every thread of this process blocked in a dequeue on this
    /// queue: each returns at once with what it has.
    fn wake_waiters(&self);

    /// Close this handle's queue: later calls on any clone fail with
    /// [`Error::Closed`].
    ///
    /// # Errors
    /// As [`Queue::close`].
    fn close(self) -> Result<()>;

    /// The one lease length this backend can give, when it cannot take a
    /// length per dequeue (JetStream: the consumer's ack wait); `None`
    /// when every `visibility` is honoured. A worker pool sizes its lease
    /// from it.
    fn fixed_lease(&self) -> Option<Duration> {
        None
    }

    /// Whether this queue is a server's rather than this process's own:
    /// every call is a round trip, other processes may hold its
    /// deliveries (and settle, complete or dead-letter them), and every
    /// write is confirmed by the server before its call returns, so
    /// [`JobQueue::sync`] adds nothing to durability. The worker layer
    /// waits longer per dequeue, hears of jobs settled by other processes
    /// by asking the queue, and makes no syncs of its own on such a queue.
    /// `false` for the embedded queue.
    fn remote(&self) -> bool {
        false
    }

    /// [`JobQueue::enqueue_with`] for async callers. The default runs the
    /// synchronous call on the calling thread.
    ///
    /// # Errors
    /// As [`JobQueue::enqueue_with`].
    #[cfg(feature = "tokio")]
    fn enqueue_with_async(
        &self,
        payload: &[u8],
        opts: &EnqueueOptions,
    ) -> impl Future<Output = Result<MessageId>> + Send {
        async move { self.enqueue_with(payload, opts) }
    }

    /// [`JobQueue::enqueue_batch_with`] for async callers. The default runs
    /// the synchronous call on the calling thread.
    ///
    /// # Errors
    /// As [`JobQueue::enqueue_batch_with`].
    #[cfg(feature = "tokio")]
    fn enqueue_batch_with_async<P: AsRef<[u8]> + Sync>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> impl Future<Output = Result<Vec<MessageId>>> + Send {
        async move { self.enqueue_batch_with(items) }
    }

    /// [`JobQueue::complete`] for async callers. The default runs the
    /// synchronous call on the calling thread.
    ///
    /// # Errors
    /// As [`JobQueue::complete`].
    #[cfg(feature = "tokio")]
    fn complete_async(
        &self,
        receipt: Receipt,
        result: &[u8],
    ) -> impl Future<Output = Result<()>> + Send {
        async move { self.complete(receipt, result) }
    }

    /// [`JobQueue::sync`] for async callers. The default runs the
    /// synchronous call on the calling thread.
    ///
    /// # Errors
    /// As [`JobQueue::sync`].
    #[cfg(feature = "tokio")]
    fn sync_async(&self) -> impl Future<Output = Result<()>> + Send {
        async move { self.sync() }
    }
}

/// Inspecting and redriving dead letters: not needed by the worker loop,
/// needed by operators and by the contract suite.
pub trait DeadLetterAdmin: JobQueue {
    /// Every dead letter, oldest first.
    ///
    /// # Errors
    /// As [`Queue::dead_letters`].
    fn dead_letters(&self) -> Result<Vec<DeadLetter>>;

    /// Move dead letter `id` back to its lane, ready, with its attempts
    /// reset.
    ///
    /// # Errors
    /// As [`Queue::redrive`].
    fn redrive(&self, id: MessageId) -> Result<()>;

    /// Redrive every dead letter; returns how many.
    ///
    /// # Errors
    /// As [`Queue::redrive_all`].
    fn redrive_all(&self) -> Result<u64>;
}

impl JobQueue for Queue {
    fn enqueue_with(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<MessageId> {
        Queue::enqueue_with(self, payload, opts)
    }

    fn enqueue_batch_with<P: AsRef<[u8]>>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> Result<Vec<MessageId>> {
        Queue::enqueue_batch_with(self, items)
    }

    fn dequeue_with(&self, opts: &DequeueOptions) -> Result<Vec<Delivery>> {
        Queue::dequeue_with(self, opts)
    }

    fn ack_batch(&self, receipts: &[Receipt]) -> Result<()> {
        Queue::ack_batch(self, receipts)
    }

    fn complete(&self, receipt: Receipt, result: &[u8]) -> Result<()> {
        Queue::complete(self, receipt, result)
    }

    fn nack(&self, receipt: Receipt, delay: Duration) -> Result<()> {
        Queue::nack(self, receipt, delay)
    }

    fn extend_lease(&self, receipt: Receipt, extension: Duration) -> Result<()> {
        Queue::extend_lease(self, receipt, extension)
    }

    fn dead_letter(&self, receipt: Receipt, reason: &str) -> Result<()> {
        Queue::dead_letter(self, receipt, reason)
    }

    fn result(&self, id: MessageId) -> Result<Option<Vec<u8>>> {
        Queue::result(self, id)
    }

    fn status(&self, id: MessageId) -> Result<MessageStatus> {
        Queue::status(self, id)
    }

    fn key_id<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<MessageId>> {
        Queue::key_id(self, key)
    }

    fn sync(&self) -> Result<()> {
        Queue::sync(self)
    }

    fn wake_waiters(&self) {
        Queue::wake_waiters(self)
    }

    fn close(self) -> Result<()> {
        Queue::close(self)
    }

    #[cfg(feature = "tokio")]
    fn enqueue_with_async(
        &self,
        payload: &[u8],
        opts: &EnqueueOptions,
    ) -> impl Future<Output = Result<MessageId>> + Send {
        Queue::enqueue_with_async(self, payload, opts)
    }

    #[cfg(feature = "tokio")]
    fn enqueue_batch_with_async<P: AsRef<[u8]> + Sync>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> impl Future<Output = Result<Vec<MessageId>>> + Send {
        Queue::enqueue_batch_with_async(self, items)
    }

    #[cfg(feature = "tokio")]
    fn complete_async(
        &self,
        receipt: Receipt,
        result: &[u8],
    ) -> impl Future<Output = Result<()>> + Send {
        Queue::complete_async(self, receipt, result)
    }

    #[cfg(feature = "tokio")]
    fn sync_async(&self) -> impl Future<Output = Result<()>> + Send {
        Queue::sync_async(self)
    }
}

impl DeadLetterAdmin for Queue {
    fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Queue::dead_letters(self)
    }

    fn redrive(&self, id: MessageId) -> Result<()> {
        Queue::redrive(self, id)
    }

    fn redrive_all(&self) -> Result<u64> {
        Queue::redrive_all(self)
    }
}
