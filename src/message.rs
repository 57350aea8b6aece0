//! The vocabulary: ids, deliveries, receipts and reports. Plain data only.

use std::ops::Range;
use std::time::Duration;

use crate::clock::Timestamp;

/// A message's id: unique and increasing for the life of the directory,
/// never reused, not even after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub(crate) u64);

impl From<MessageId> for u64 {
    fn from(id: MessageId) -> u64 {
        id.0
    }
}

impl From<u64> for MessageId {
    fn from(n: u64) -> MessageId {
        MessageId(n)
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Names one delivery of a message; pass it to `ack`, `nack`,
/// `extend_lease` or `dead_letter`.
///
/// A receipt goes stale when its lease expires and the message is delivered
/// again, or when it has been used to settle the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    pub(crate) id: u64,
    pub(crate) lease: u64,
}

impl Receipt {
    /// The message this receipt is for.
    pub fn id(&self) -> MessageId {
        MessageId(self.id)
    }
}

/// A leased message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id.
    pub id: MessageId,
    /// Its priority (higher is served first).
    pub priority: u8,
    /// Which delivery this is: 1 on the first.
    pub attempt: u32,
    /// The payload, checksum-verified on this private copy.
    pub payload: Vec<u8>,
    /// Settles this delivery.
    pub receipt: Receipt,
    /// When the message was enqueued.
    pub enqueued_at: Timestamp,
}

/// A message parked in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The message's id.
    pub id: MessageId,
    /// Its priority.
    pub priority: u8,
    /// Deliveries it had.
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When it was enqueued.
    pub enqueued_at: Timestamp,
    /// When it was dead-lettered.
    pub dead_at: Timestamp,
}

/// Where one message is in its life, from [`crate::Queue::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageStatus {
    /// Ready in lane `priority`.
    Ready {
        /// Its lane.
        priority: u8,
    },
    /// Waiting for a delay (its own or a nack's) to pass.
    Delayed {
        /// Its lane.
        priority: u8,
        /// When it becomes ready.
        until: Timestamp,
    },
    /// Leased to a consumer.
    InFlight {
        /// Its lane.
        priority: u8,
        /// Which delivery holds the lease (1 on the first).
        attempt: u32,
    },
    /// A dead letter, with the reason it was parked
    /// ([`crate::DEADLINE_MISSED`] for a missed deadline).
    Dead {
        /// Why it was dead-lettered.
        reason: String,
    },
    /// Completed with a result ([`crate::Queue::result`] reads it).
    Completed,
    /// Not in the queue: acked, removed by retention or a purge, or never
    /// enqueued.
    Gone,
}

/// One non-empty lane in [`Stats::ready_per_lane`]. A plain pair with
/// names, so it can be built to compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneCount {
    /// The lane's priority.
    pub priority: u8,
    /// Ready messages in it.
    pub ready: u64,
}

/// A file and a byte range in it, in a [`RecoveryReport`]. A plain pair
/// with names, so it can be built to compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRange {
    /// The file's name in the queue directory.
    pub file: String,
    /// The bytes concerned.
    pub range: Range<u64>,
}

/// A snapshot of the queue's counters; cheap to take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Ready messages per non-empty lane, highest priority first.
    pub ready_per_lane: Vec<LaneCount>,
    /// All ready messages.
    pub ready: u64,
    /// Messages leased to consumers.
    pub in_flight: u64,
    /// Messages waiting for a delay to pass.
    pub delayed: u64,
    /// Dead letters.
    pub dead: u64,
    /// Messages acked (or completed) over the life of the directory.
    pub acked_total: u64,
    /// Stored results of completed messages ([`crate::Queue::complete`]).
    pub results: u64,
    /// Idempotency keys remembered now.
    pub keys: u64,
    /// Messages whose deadline passed before delivery (now dead letters
    /// with the reason `deadline missed`), over the directory's life.
    pub deadline_missed_total: u64,
    /// Messages and results removed by `retention`, over the directory's
    /// life.
    pub expired_total: u64,
    /// Dead letters removed by `dead_letter_retention`, over the
    /// directory's life.
    pub dead_expired_total: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Bytes of all queue files on disk (segments with their messages and
    /// results, journal, checkpoint, stored attributes).
    pub bytes_on_disk: u64,
    /// Age of the oldest ready message, if any.
    pub oldest_ready_age: Option<Duration>,
}

/// What recovery found and did when the queue was opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Whether a checkpoint was loaded (otherwise the whole journal was
    /// replayed).
    pub checkpoint: Option<u64>,
    /// Journal entries replayed.
    pub entries_replayed: u64,
    /// Segment records scanned.
    pub records_scanned: u64,
    /// Messages that were in flight and are ready again.
    pub in_flight_released: u64,
    /// Torn tails cut: each file and the byte range cut.
    pub torn_tails: Vec<FileRange>,
    /// Whole frames dropped with torn tails (never durable).
    pub frames_dropped: u64,
    /// Damaged regions inside durable data, skipped and never delivered.
    pub damaged: Vec<FileRange>,
    /// Files removed: blank files (created, never initialised), segments
    /// holding only finished messages, leftover temporary checkpoints, and
    /// checkpoints and journal files a newer checkpoint supersedes.
    pub files_removed: Vec<String>,
    /// Live messages whose segment is missing; they cannot be delivered.
    pub missing_messages: u64,
}

impl RecoveryReport {
    /// Whether recovery found damage to durable data (not merely a torn
    /// tail, which is what a crash normally leaves).
    pub fn found_damage(&self) -> bool {
        !self.damaged.is_empty() || self.missing_messages > 0
    }
}

/// Bounds of a range, widened to u64.
pub(crate) fn range64(r: Range<u32>) -> Range<u64> {
    u64::from(r.start)..u64::from(r.end)
}
