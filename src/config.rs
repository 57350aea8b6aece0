//! Options, their defaults and their limits. Nothing here opens a file or
//! starts a thread; `QueueOptions::open` (beside the queue, in `queue.rs`)
//! hands a validated copy to the engine.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{duration_ms, Clock, SystemClock, Timestamp};
use crate::codec::attributes::Attributes;
use crate::codec::{header, record};
use crate::error::{Error, Result};
use crate::lanes::Scheduling;

/// Smallest allowed segment: 1 MiB.
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// Largest allowed segment: offsets inside a segment are 32-bit.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 31;
/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default size of one journal file: 16 MiB.
pub const DEFAULT_JOURNAL_FILE_SIZE: u64 = 16 << 20;
/// Smallest allowed journal file: 64 KiB.
pub const MIN_JOURNAL_FILE_SIZE: u64 = 64 << 10;
/// Default largest payload: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;
/// Default time an idempotency key is remembered: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// Default cap on remembered idempotency keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Attributes stored in the directory, as bits of `QueueOptions::set`: the
/// ones the caller named override the stored ones.
mod attr {
    pub const SEGMENT_SIZE: u16 = 1;
    pub const MAX_MESSAGE_SIZE: u16 = 2;
    pub const VISIBILITY: u16 = 4;
    pub const MAX_DELIVERIES: u16 = 8;
    pub const RETENTION: u16 = 16;
    pub const DEAD_RETENTION: u16 = 32;
    pub const DEDUP_WINDOW: u16 = 64;
    pub const DEFAULT_DELAY: u16 = 128;
    pub const DEFAULT_WAIT: u16 = 256;
}
/// Longest delay of a delayed enqueue: the record stores it in 32 bits of
/// milliseconds (about 49.7 days).
pub const MAX_DELAY: Duration = Duration::from_millis(u32::MAX as u64);

/// When writes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Every call that changes the queue returns after its records are on
    /// stable storage (`fdatasync`). Concurrent callers share one sync
    /// (group commit). Dequeue is the one exception: the delivery record is
    /// written at once (a process crash keeps it) and made durable by the
    /// next sync, so a power loss may forget that a message was delivered
    /// and deliver it again with the same attempt number.
    Immediate,
    /// A background thread syncs every given interval. A process crash loses
    /// nothing; a power loss may lose the last interval's writes.
    Periodic(Duration),
    /// The operating system decides when data reaches the disk. A process
    /// crash loses nothing; a power loss may lose anything not yet written
    /// back. [`crate::Queue::sync`] still forces a sync.
    ///
    /// Under `Periodic` and `None`, what a power loss keeps of each lane is
    /// a prefix of its enqueue order: it never keeps a message and loses an
    /// earlier one of the same lane.
    None,
}

/// Options for opening a queue; see [`QueueOptions::open`].
///
/// ```
/// # fn main() -> Result<(), lanelog::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// use lanelog::{Durability, QueueOptions};
/// let q = QueueOptions::new()
///     .segment_size(8 << 20)
///     .durability(Durability::Immediate)
///     .visibility_timeout(Duration::from_secs(30))
///     .max_deliveries(5)
///     .open(dir.path())?;
/// # drop(q); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub(crate) segment_size: u64,
    pub(crate) journal_file_size: u64,
    pub(crate) durability: Durability,
    pub(crate) visibility_timeout: Duration,
    pub(crate) max_deliveries: u32,
    /// `None` = the default, shrunk to fit small segments.
    max_message_size: Option<usize>,
    pub(crate) checkpoint_bytes: u64,
    pub(crate) scheduling: Scheduling,
    pub(crate) clock: Arc<dyn Clock>,
    /// `None` = on for a directory, off for a custom storage.
    pub(crate) prepare_ahead: Option<bool>,
    pub(crate) retention: Option<Duration>,
    pub(crate) dead_letter_retention: Option<Duration>,
    pub(crate) dedup_window: Duration,
    pub(crate) max_keys: usize,
    pub(crate) default_delay: Duration,
    pub(crate) default_wait: Duration,
    /// Which stored attributes the caller named (bits of `attr`).
    set: u16,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueOptions {
    /// The defaults: 64 MiB segments, `Immediate` durability, a 30 s
    /// visibility timeout, 5 deliveries before dead-lettering, 4 MiB
    /// payloads at most.
    pub fn new() -> Self {
        QueueOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            journal_file_size: DEFAULT_JOURNAL_FILE_SIZE,
            durability: Durability::Immediate,
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_message_size: None,
            checkpoint_bytes: 64 << 20,
            scheduling: Scheduling::Strict,
            clock: Arc::new(SystemClock::new()),
            prepare_ahead: None,
            retention: None,
            dead_letter_retention: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            max_keys: DEFAULT_MAX_KEYS,
            default_delay: Duration::ZERO,
            default_wait: Duration::ZERO,
            set: 0,
        }
    }

    /// Bytes per segment file, preallocated when the segment is created.
    /// At least 1 MiB and at most 2 GiB. Default = 64 MiB.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self.set |= attr::SEGMENT_SIZE;
        self
    }

    /// Bytes per journal file. At least 64 KiB. Default = 16 MiB.
    #[must_use]
    pub fn journal_file_size(mut self, bytes: u64) -> Self {
        self.journal_file_size = bytes;
        self
    }

    /// When writes reach stable storage. Default = `Immediate`.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a delivery is leased before the message becomes ready again.
    /// Default = 30 s.
    #[must_use]
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self.set |= attr::VISIBILITY;
        self
    }

    /// Deliveries after which an unacked message is dead-lettered instead of
    /// delivered again; 0 = unlimited. Default = 5.
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self.set |= attr::MAX_DELIVERIES;
        self
    }

    /// Largest payload accepted, in bytes; it must fit in a segment together
    /// with the headers. Default = 4 MiB, or what fits in a smaller segment.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self.set |= attr::MAX_MESSAGE_SIZE;
        self
    }

    /// The largest payload accepted, after defaults.
    pub fn max_message_bytes(&self) -> usize {
        let room = self
            .segment_size
            .saturating_sub((header::SIZE + record::HEADER_SIZE) as u64);
        self.max_message_size
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE.min(room as usize))
    }

    /// Journal bytes written after which a checkpoint is taken. A
    /// checkpoint is also never taken more often than its own size would
    /// justify (it is at least as large as the live index). Default = 64 MiB.
    #[must_use]
    pub fn checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes;
        self
    }

    /// Make the next segment and journal file in a background thread once
    /// the current one is an eighth full, so the write that fills it does not
    /// stall on writing megabytes of preallocated zeros. Default = on for
    /// [`QueueOptions::open`] (a directory), off for
    /// [`QueueOptions::open_storage`], whose users (crash simulations) need
    /// the storage calls in a deterministic order.
    #[must_use]
    pub fn prepare_ahead(mut self, on: bool) -> Self {
        self.prepare_ahead = Some(on);
        self
    }

    /// How ready lanes share consumers: [`Scheduling::Strict`] or
    /// [`Scheduling::Weighted`] (no lane starves). Default = `Strict`.
    #[must_use]
    pub fn scheduling(mut self, scheduling: Scheduling) -> Self {
        self.scheduling = scheduling;
        self
    }

    /// How long a message (ready, delayed, in flight, or completed with a
    /// stored result) is kept after its enqueue; older ones are removed,
    /// journaled and counted in [`crate::Stats::expired_total`], and their
    /// space reclaimed as for an ack. Enforced to within a 64th of the
    /// retention (at most a minute) by a background thread, whether or not
    /// anyone reads the queue. Dead letters follow
    /// [`Self::dead_letter_retention`] instead. Stored in the directory.
    /// Default = kept for ever (SQS `message_retention_seconds`).
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self.set |= attr::RETENTION;
        self
    }

    /// How long a dead letter is kept after it became one; older ones are
    /// purged, journaled and counted in
    /// [`crate::Stats::dead_expired_total`]. Stored in the directory.
    /// Default = kept for ever.
    #[must_use]
    pub fn dead_letter_retention(mut self, retention: Duration) -> Self {
        self.dead_letter_retention = Some(retention);
        self.set |= attr::DEAD_RETENTION;
        self
    }

    /// How long an idempotency key ([`crate::EnqueueOptions::key`]) is
    /// remembered after its first enqueue. Stored in the directory.
    /// Default = 5 minutes.
    #[must_use]
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self.set |= attr::DEDUP_WINDOW;
        self
    }

    /// Most idempotency keys remembered at once; a keyed enqueue that would
    /// pass it is refused with [`Error::TooManyKeys`] (nothing written),
    /// never admitted by forgetting a key early. Each key costs about 90
    /// bytes plus its length. Default = 1,000,000.
    #[must_use]
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self
    }

    /// Delay of an enqueue whose options name none (SQS `delay_seconds`).
    /// Stored in the directory. Default = none.
    #[must_use]
    pub fn default_delay(mut self, delay: Duration) -> Self {
        self.default_delay = delay;
        self.set |= attr::DEFAULT_DELAY;
        self
    }

    /// How long [`crate::Queue::dequeue_with`] waits for a first message
    /// when its [`DequeueOptions`] name no wait (SQS
    /// `receive_wait_time_seconds`). The shorthands that say how long they
    /// wait ([`crate::Queue::dequeue`] and `dequeue_up_to` never,
    /// `dequeue_timeout` and `dequeue_batch` as told) are not changed by it.
    /// Stored in the directory. Default = no wait.
    #[must_use]
    pub fn default_wait(mut self, wait: Duration) -> Self {
        self.default_wait = wait;
        self.set |= attr::DEFAULT_WAIT;
        self
    }

    /// The attributes to store, after defaults.
    pub(crate) fn attributes(&self) -> Attributes {
        Attributes {
            segment_size: self.segment_size,
            // 0: not named, derived from the segment size at each open.
            max_message_size: self.max_message_size.map_or(0, |b| b as u64),
            visibility_timeout_ms: duration_ms(self.visibility_timeout),
            max_deliveries: self.max_deliveries,
            retention_ms: self.retention.map(duration_ms),
            dead_letter_retention_ms: self.dead_letter_retention.map(duration_ms),
            dedup_window_ms: duration_ms(self.dedup_window),
            default_delay_ms: duration_ms(self.default_delay),
            default_wait_ms: duration_ms(self.default_wait),
        }
    }

    /// Take every stored attribute the caller did not name.
    pub(crate) fn adopt(&mut self, stored: &Attributes) {
        let ms = Duration::from_millis;
        let unset = |bit: u16| self.set & bit == 0;
        if unset(attr::SEGMENT_SIZE) {
            self.segment_size = stored.segment_size;
        }
        if unset(attr::MAX_MESSAGE_SIZE) {
            self.max_message_size = match stored.max_message_size {
                0 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            };
        }
        if unset(attr::VISIBILITY) {
            self.visibility_timeout = ms(stored.visibility_timeout_ms);
        }
        if unset(attr::MAX_DELIVERIES) {
            self.max_deliveries = stored.max_deliveries;
        }
        if unset(attr::RETENTION) {
            self.retention = stored.retention_ms.map(ms);
        }
        if unset(attr::DEAD_RETENTION) {
            self.dead_letter_retention = stored.dead_letter_retention_ms.map(ms);
        }
        if unset(attr::DEDUP_WINDOW) {
            self.dedup_window = ms(stored.dedup_window_ms);
        }
        if unset(attr::DEFAULT_DELAY) {
            self.default_delay = ms(stored.default_delay_ms);
        }
        if unset(attr::DEFAULT_WAIT) {
            self.default_wait = ms(stored.default_wait_ms);
        }
    }

    /// Whether the caller named the max message size.
    pub(crate) fn names_max_message_size(&self) -> bool {
        self.set & attr::MAX_MESSAGE_SIZE != 0
    }

    /// The span of one retention mark (see `index::Marks`): a 64th of the
    /// retention, between 1 ms and a minute.
    pub(crate) fn mark_granularity(&self) -> u64 {
        self.retention
            .map_or(60_000, |r| (duration_ms(r) / 64).clamp(1, 60_000))
    }

    /// The clock the queue reads; tests pass a [`crate::ManualClock`].
    /// Default = the system clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Check every option is in range (at open).
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidArgument(s));
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return bad(format!(
                "segment_size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            ));
        }
        if self.journal_file_size < MIN_JOURNAL_FILE_SIZE
            || self.journal_file_size > MAX_SEGMENT_SIZE
        {
            return bad(format!(
                "journal_file_size {} is outside {MIN_JOURNAL_FILE_SIZE}..={MAX_SEGMENT_SIZE}",
                self.journal_file_size
            ));
        }
        let room = self.segment_size - header::SIZE as u64 - record::HEADER_SIZE as u64;
        if self.max_message_bytes() as u64 > room {
            return bad(format!(
                "max_message_size {} does not fit in a segment of {} bytes (at most {room})",
                self.max_message_bytes(),
                self.segment_size
            ));
        }
        if self.visibility_timeout.is_zero() {
            return bad("visibility_timeout must be above zero".into());
        }
        if self.retention.is_some_and(|r| r.is_zero()) {
            return bad("retention must be above zero".into());
        }
        if self.dead_letter_retention.is_some_and(|r| r.is_zero()) {
            return bad("dead_letter_retention must be above zero".into());
        }
        if self.dedup_window.is_zero() {
            return bad("dedup_window must be above zero".into());
        }
        if self.default_delay > MAX_DELAY {
            return bad(format!(
                "default_delay {:?} is over the longest delay, {MAX_DELAY:?}",
                self.default_delay
            ));
        }
        if let Durability::Periodic(d) = self.durability {
            if d.is_zero() {
                return bad("Durability::Periodic interval must be above zero".into());
            }
        }
        Ok(())
    }
}

/// How to enqueue one message: see [`crate::Queue::enqueue_with`].
///
/// ```
/// # fn main() -> Result<(), lanelog::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// use lanelog::{EnqueueOptions, QueueOptions, Timestamp};
/// let q = QueueOptions::new().open(dir.path())?;
/// let opts = EnqueueOptions::new()
///     .priority(7)
///     .deadline(Timestamp::now().plus(Duration::from_secs(60)))
///     .key("request-8c1f");
/// let first = q.enqueue_with(b"payload", &opts)?;
/// // The same key within the dedup window: nothing written, same id.
/// assert_eq!(q.enqueue_with(b"payload", &opts)?, first);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    pub(crate) priority: u8,
    pub(crate) delay: Option<Duration>,
    pub(crate) deadline: Option<Timestamp>,
    pub(crate) key: Option<Vec<u8>>,
}

impl EnqueueOptions {
    /// Priority 0, the queue's default delay, no deadline, no key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lane: higher is served first. Default = 0.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Not delivered before this much time has passed (at most
    /// [`MAX_DELAY`]). Default = the queue's
    /// [`QueueOptions::default_delay`].
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Not delivered after this time (the queue's clock, ms since the Unix
    /// epoch). Within its lane the message leaves earliest-deadline-first,
    /// ahead of messages without one; if the deadline passes first, it
    /// becomes a dead letter with the reason `deadline missed` without
    /// being delivered. A deadline already past, or before the delay ends,
    /// is refused. Default = none.
    #[must_use]
    pub fn deadline(mut self, deadline: Timestamp) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Idempotency key, 1 to 128 bytes: a second enqueue with a key seen
    /// within the queue's [`QueueOptions::dedup_window`] writes nothing and
    /// returns the first enqueue's id. Default = none.
    #[must_use]
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }
}

/// How to dequeue: see [`crate::Queue::dequeue_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DequeueOptions {
    pub(crate) max: usize,
    /// `None` = the queue's `default_wait`.
    pub(crate) wait: Option<Duration>,
    pub(crate) linger: Duration,
    pub(crate) linger_within_wait: bool,
    pub(crate) visibility: Option<Duration>,
}

impl Default for DequeueOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl DequeueOptions {
    /// One message, the queue's default wait (none unless set), the
    /// queue's visibility timeout.
    pub fn new() -> Self {
        DequeueOptions {
            max: 1,
            wait: None,
            linger: Duration::ZERO,
            linger_within_wait: false,
            visibility: None,
        }
    }

    /// Most messages to take. Default = 1.
    #[must_use]
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Longest wait for the first message. Default = the queue's
    /// [`QueueOptions::default_wait`] (no wait unless set).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// After the first message, how much longer to wait for the batch to
    /// fill. Default = no lingering.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self.linger_within_wait = false;
        self
    }

    /// Let the batch fill until the end of the `wait`: one overall
    /// deadline instead of a linger after the first message (what
    /// [`crate::Queue::dequeue_batch`] does). A later [`Self::linger`]
    /// undoes it. Default = off.
    #[must_use]
    pub fn linger_within_wait(mut self) -> Self {
        self.linger_within_wait = true;
        self
    }

    /// The lease of these deliveries. Default = the queue's visibility
    /// timeout.
    #[must_use]
    pub fn visibility(mut self, lease: Duration) -> Self {
        self.visibility = Some(lease);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max == 0 {
            return Err(Error::InvalidArgument("max must be at least 1".into()));
        }
        if self.visibility.is_some_and(|v| v.is_zero()) {
            return Err(Error::InvalidArgument(
                "visibility must be above zero".into(),
            ));
        }
        Ok(())
    }
}
