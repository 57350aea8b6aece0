//! The queue seam over NATS JetStream (feature `nats`): the same
//! [`JobQueue`] the embedded [`crate::Queue`] implements, served by a
//! `nats-server` (2.10 or later) or a cluster of them, so workers on many
//! machines share one queue.
//!
//! ```no_run
//! # fn main() -> Result<(), lanelog::Error> {
//! use lanelog::nats::NatsOptions;
//! use lanelog::JobQueue;
//! let q = NatsOptions::new().prefix("jobs").replicas(3).open("nats://10.0.0.1:4222")?;
//! q.enqueue_with(b"row 7", &lanelog::EnqueueOptions::new().priority(9))?;
//! # Ok(()) }
//! ```
//!
//! How each part of the queue maps onto JetStream, and where it behaves
//! differently from the embedded queue, is written down in `docs/nats.md`.
//! In short: lanes are grouped into bands, one subject and one durable
//! pull consumer each, pulled highest first; the lease is the consumer's
//! ack wait; lanelog counts deliveries and moves a message to a dead-letter
//! stream itself; delays are a not-before header; keys are the server's
//! message-id deduplication; results go to a stream with one message per
//! job, written create-if-absent so a job completes once.
//!
//! The client (`async-nats`) runs on a runtime private to the queue
//! (`runtime.rs`); the calls are synchronous like the embedded queue's.
//!
//! Files:
//! - `mod.rs`: [`NatsOptions`], [`JetStreamQueue`] and its [`JobQueue`]
//!   and [`DeadLetterAdmin`] implementations (each a call into `ops`);
//! - `setup.rs`: connecting, the server version check, creating streams
//!   and consumers;
//! - `ops.rs`: every operation, async, on the private runtime;
//! - `receipts.rs`: the table from lanelog receipts to JetStream
//!   deliveries;
//! - `names.rs`: stream, consumer and subject names, headers;
//! - `runtime.rs`: the private runtime and the bridge to it.

mod names;
mod ops;
mod receipts;
mod runtime;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use crate::seam::{DeadLetterAdmin, JobQueue};
use crate::{
    DeadLetter, Delivery, DequeueOptions, EnqueueOptions, Error, MessageId, MessageStatus, Receipt,
    Result, DEFAULT_DEDUP_WINDOW,
};
#[cfg(feature = "tokio")]
use std::future::Future;

/// The default lane bands: eight of 32 priorities each.
const DEFAULT_BANDS: [u8; 8] = [0, 32, 64, 96, 128, 160, 192, 224];

/// How to open a [`JetStreamQueue`]. Every process of one queue must use
/// the same prefix, bands and visibility timeout (the consumers are
/// shared; a different ack wait is refused at open).
#[derive(Debug, Clone)]
pub struct NatsOptions {
    prefix: String,
    replicas: usize,
    visibility_timeout: Duration,
    max_deliveries: u32,
    dedup_window: Duration,
    max_message_size: Option<usize>,
    bands: Vec<u8>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_in_flight: i64,
    result_retention: Option<Duration>,
    dead_letter_retention: Option<Duration>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl NatsOptions {
    /// The defaults listed on each setter.
    pub fn new() -> Self {
        NatsOptions {
            prefix: "lanelog".into(),
            replicas: 1,
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            max_message_size: None,
            bands: DEFAULT_BANDS.to_vec(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_in_flight: 20_000,
            result_retention: None,
            dead_letter_retention: None,
        }
    }

    /// The name every stream, consumer and subject of this queue starts
    /// with: 1 to 64 letters, digits, `_` or `-`. Several queues share a
    /// server under different prefixes. Default = `lanelog`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The prefix set by [`NatsOptions::prefix`] (the service derives its
    /// two queues' prefixes from it).
    pub(crate) fn prefix_name(&self) -> &str {
        &self.prefix
    }

    /// Copies the server keeps of each stream (1 to 5; a cluster of at
    /// least that many nodes). Applies when the streams are created.
    /// Default = 1.
    #[must_use]
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The lease of every delivery: the consumers' ack wait. Default = 30 s.
    #[must_use]
    pub fn visibility_timeout(mut self, lease: Duration) -> Self {
        self.visibility_timeout = lease;
        self
    }

    /// Deliveries before a message becomes a dead letter; 0 = unlimited.
    /// Default = 5.
    #[must_use]
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// How long an idempotency key is remembered: the jobs stream's
    /// duplicate window. Default = [`DEFAULT_DEDUP_WINDOW`].
    #[must_use]
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self
    }

    /// Largest payload or result. Default = the server's `max_payload`
    /// less 1 KiB for the headers (1 MiB less 1 KiB on a default server).
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// The lowest priority of each band: a message of priority `p` goes to
    /// the highest band at or below `p`. Bands are served strictly highest
    /// first; within a band, in stream order. One consumer per band, so
    /// `0..=255` gives exact lanes at the cost of 256 consumers.
    /// Default = `[0, 32, 64, 96, 128, 160, 192, 224]`.
    #[must_use]
    pub fn bands(mut self, lowest_priorities: impl IntoIterator<Item = u8>) -> Self {
        self.bands = lowest_priorities.into_iter().collect();
        self
    }

    /// Longest wait to connect. Default = 5 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for the server's answer to one request (a publish ack,
    /// an ack's reply, a read); past it the call fails with
    /// [`Error::Unavailable`]. Default = 5 s.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Deliveries unsettled at once per band, all processes together (the
    /// consumers' `max_ack_pending`; past it the server delivers nothing
    /// more from that band). Default = 20,000.
    #[must_use]
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = i64::from(n);
        self
    }

    /// How long a stored result is kept. Default = forever.
    #[must_use]
    pub fn result_retention(mut self, retention: Duration) -> Self {
        self.result_retention = Some(retention);
        self
    }

    /// How long a dead letter is kept. Default = forever.
    #[must_use]
    pub fn dead_letter_retention(mut self, retention: Duration) -> Self {
        self.dead_letter_retention = Some(retention);
        self
    }

    fn validate(&mut self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas must be 1 to 5, not {}", self.replicas));
        }
        if self.visibility_timeout < Duration::from_millis(10) {
            return bad("visibility_timeout must be at least 10 ms".into());
        }
        if self.dedup_window.is_zero() {
            return bad("dedup_window must be above zero".into());
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("connect_timeout and request_timeout must be above zero".into());
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1".into());
        }
        self.bands.sort_unstable();
        self.bands.dedup();
        if self.bands.first() != Some(&0) {
            return bad(format!(
                "bands must include 0 (the band of the lowest priorities), got {:?}",
                self.bands
            ));
        }
        Ok(())
    }

    /// Connect to `url` (`nats://host:port`, or several separated by
    /// commas) and create or find this queue's streams and consumers.
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the URL when no server answers within
    /// the connect timeout; [`Error::Backend`] when the server refuses a
    /// stream or consumer or is older than 2.10;
    /// [`Error::InvalidArgument`] for an option out of range or a consumer
    /// already made with another visibility timeout.
    pub fn open(mut self, url: impl Into<String>) -> Result<JetStreamQueue> {
        self.validate()?;
        let url = url.into();
        let runtime = runtime::Private::new()?;
        let inner = Arc::new(runtime.block(setup::open(url, self))?);
        // The listener wakes waiting dequeues on every enqueue announced
        // by any process; it ends with the runtime.
        if let Some(mut wake) = inner.wake.lock().take() {
            let notify = inner.notify.clone();
            runtime.detach(async move {
                use futures_util::StreamExt;
                while wake.next().await.is_some() {
                    notify.notify_waiters();
                }
            });
        }
        Ok(JetStreamQueue {
            inner,
            runtime: Arc::new(runtime),
        })
    }
}

/// A queue on a NATS JetStream server: a cheap handle (`Clone`), safe to
/// share between threads; open one per process with [`NatsOptions::open`].
#[derive(Clone)]
pub struct JetStreamQueue {
    inner: Arc<ops::Inner>,
    runtime: Arc<runtime::Private>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.opts.prefix)
            .finish_non_exhaustive()
    }
}

impl JetStreamQueue {
    /// The server address this queue was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Deliveries this handle holds unsettled (its receipt table).
    pub fn held(&self) -> usize {
        self.inner.table.lock().len()
    }

    /// The name of the server leading the jobs stream (in a cluster, the
    /// node whose loss makes the stream elect another leader).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no server answers.
    pub fn stream_leader(&self) -> Result<Option<String>> {
        self.call(|q| async move { q.stream_leader().await })
    }

    /// Run one operation on the private runtime and wait for it.
    fn call<T, F, Fut>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<ops::Inner>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.runtime.block(op(self.inner.clone()))
    }

    #[cfg(feature = "tokio")]
    fn call_async<T, F, Fut>(&self, op: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Arc<ops::Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.runtime.spawn(op(self.inner.clone()))
    }

    fn outgoing<P: AsRef<[u8]>>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> Result<Vec<ops::Outgoing>> {
        items
            .iter()
            .map(|(p, o)| self.inner.outgoing(p.as_ref(), o))
            .collect()
    }
}

/// The error of a server that could not be reached or did not answer.
pub(crate) fn unavailable(url: &str, detail: impl Into<String>) -> Error {
    Error::Unavailable {
        url: url.to_string(),
        detail: detail.into(),
    }
}

impl JobQueue for JetStreamQueue {
    fn enqueue_with(&self, payload: &[u8], opts: &EnqueueOptions) -> Result<MessageId> {
        let batch = vec![self.inner.outgoing(payload, opts)?];
        let ids = self.call(|q| async move { q.enqueue(batch).await })?;
        Ok(ids[0])
    }

    fn enqueue_batch_with<P: AsRef<[u8]>>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> Result<Vec<MessageId>> {
        let batch = self.outgoing(items)?;
        self.call(|q| async move { q.enqueue(batch).await })
    }

    fn dequeue_with(&self, opts: &DequeueOptions) -> Result<Vec<Delivery>> {
        opts.validate()?;
        let lease = self.inner.opts.visibility_timeout;
        if let Some(v) = opts.visibility.filter(|v| *v != lease) {
            return Err(Error::InvalidArgument(format!(
                "this JetStream queue's lease is its consumers' ack wait, {lease:?}; a dequeue cannot ask for {v:?}"
            )));
        }
        let (max, wait, linger, within) = (
            opts.max,
            opts.wait.unwrap_or(Duration::ZERO),
            opts.linger,
            opts.linger_within_wait,
        );
        self.call(|q| async move { q.dequeue(max, wait, linger, within).await })
    }

    fn ack_batch(&self, receipts: &[Receipt]) -> Result<()> {
        let receipts = receipts.to_vec();
        self.call(|q| async move { q.ack_batch(&receipts).await })
    }

    fn complete(&self, receipt: Receipt, result: &[u8]) -> Result<()> {
        let result = result.to_vec();
        self.call(|q| async move { q.complete(receipt, result).await })
    }

    fn nack(&self, receipt: Receipt, delay: Duration) -> Result<()> {
        self.call(|q| async move { q.nack(receipt, delay).await })
    }

    fn extend_lease(&self, receipt: Receipt, extension: Duration) -> Result<()> {
        self.call(|q| async move { q.extend_lease(receipt, extension).await })
    }

    fn dead_letter(&self, receipt: Receipt, reason: &str) -> Result<()> {
        let reason = reason.to_string();
        self.call(|q| async move { q.dead_letter(receipt, &reason).await })
    }

    fn result(&self, id: MessageId) -> Result<Option<Vec<u8>>> {
        self.call(|q| async move { q.result(id).await })
    }

    fn status(&self, id: MessageId) -> Result<MessageStatus> {
        self.call(|q| async move { q.status(id).await })
    }

    fn key_id<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<MessageId>> {
        let key = key.as_ref().to_vec();
        self.call(|q| async move { q.key_id(key).await })
    }

    fn sync(&self) -> Result<()> {
        self.call(|q| async move { q.sync().await })
    }

    fn wake_waiters(&self) {
        self.inner.wake_waiters();
    }

    fn close(self) -> Result<()> {
        self.call(|q| async move { q.close().await })
    }

    fn fixed_lease(&self) -> Option<Duration> {
        Some(self.inner.opts.visibility_timeout)
    }

    fn remote(&self) -> bool {
        // Every write waits for the server's confirmation (see `sync`).
        true
    }

    #[cfg(feature = "tokio")]
    fn enqueue_with_async(
        &self,
        payload: &[u8],
        opts: &EnqueueOptions,
    ) -> impl Future<Output = Result<MessageId>> + Send {
        let batch = self.inner.outgoing(payload, opts).map(|o| vec![o]);
        let inner = self.inner.clone();
        let runtime = self.runtime.clone();
        async move {
            let batch = batch?;
            let ids = runtime
                .spawn(async move { inner.enqueue(batch).await })
                .await?;
            Ok(ids[0])
        }
    }

    #[cfg(feature = "tokio")]
    fn enqueue_batch_with_async<P: AsRef<[u8]> + Sync>(
        &self,
        items: &[(P, EnqueueOptions)],
    ) -> impl Future<Output = Result<Vec<MessageId>>> + Send {
        let batch = self.outgoing(items);
        let inner = self.inner.clone();
        let runtime = self.runtime.clone();
        async move {
            let batch = batch?;
            runtime
                .spawn(async move { inner.enqueue(batch).await })
                .await
        }
    }

    #[cfg(feature = "tokio")]
    fn complete_async(
        &self,
        receipt: Receipt,
        result: &[u8],
    ) -> impl Future<Output = Result<()>> + Send {
        let result = result.to_vec();
        self.call_async(move |q| async move { q.complete(receipt, result).await })
    }

    #[cfg(feature = "tokio")]
    fn sync_async(&self) -> impl Future<Output = Result<()>> + Send {
        self.call_async(|q| async move { q.sync().await })
    }
}

impl DeadLetterAdmin for JetStreamQueue {
    fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.call(|q| async move { q.dead_letters().await })
    }

    fn redrive(&self, id: MessageId) -> Result<()> {
        self.call(|q| async move { q.redrive(id).await })
    }

    fn redrive_all(&self) -> Result<u64> {
        self.call(|q| async move { q.redrive_all().await })
    }
}
