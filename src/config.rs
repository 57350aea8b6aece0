//! Options, their defaults and their limits. Nothing here opens a file or
//! starts a thread; `QueueOptions::open` (beside the queue, in `queue.rs`)
//! hands a validated copy to the engine.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
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
        }
    }

    /// Bytes per segment file, preallocated when the segment is created.
    /// At least 1 MiB and at most 2 GiB. Default = 64 MiB.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
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
        self
    }

    /// Deliveries after which an unacked message is dead-lettered instead of
    /// delivered again; 0 = unlimited. Default = 5.
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// Largest payload accepted, in bytes; it must fit in a segment together
    /// with the headers. Default = 4 MiB, or what fits in a smaller segment.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
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
        if let Durability::Periodic(d) = self.durability {
            if d.is_zero() {
                return bad("Durability::Periodic interval must be above zero".into());
            }
        }
        Ok(())
    }
}

/// How to dequeue: see [`crate::Queue::dequeue_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DequeueOptions {
    pub(crate) max: usize,
    pub(crate) wait: Duration,
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
    /// One message, no waiting, the queue's visibility timeout.
    pub fn new() -> Self {
        DequeueOptions {
            max: 1,
            wait: Duration::ZERO,
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

    /// Longest wait for the first message. Default = no wait.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
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
