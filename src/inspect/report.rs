//! The public types an [`Inspector`](super::Inspector) reports in: the lock
//! state, the stored attributes, peeked messages, a message's history, and
//! what `verify` found.
//!
//! Invariants:
//!
//! A. These are plain data, built only inside `inspect` and only read by
//!    users: every type and every enum is `#[non_exhaustive]` (and so is
//!    every enum variant with fields), so a new field, state or kind is not
//!    a breaking change.
//! B. No `codec` type appears here. What users see of a file kind, a
//!    journal entry's kind or a checkpoint entry's state is this module's
//!    own enum, converted from (or, for a file kind, to) the codec's by the
//!    `from_codec` and `to_codec` functions, the only place the two meet;
//!    the format may hold kinds (such as the journal's id reservations)
//!    that never reach a report.
//! C. The `Display` names are the words the `lanelog` command prints, in
//!    text and in JSON; changing one changes its output.

use std::fmt;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::codec::{attributes, checkpoint, entry, header};
use crate::message::MessageId;

/// Whether a queue holds the directory's owner lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockState {
    /// Nobody holds it: the directory is at rest.
    Free,
    /// A queue has the directory open (in another process, or in this
    /// one): what is read is a snapshot that may be a moment old.
    #[non_exhaustive]
    Held {
        /// The holder's process id, when the system tells it.
        pid: Option<u32>,
    },
    /// This system cannot tell without taking the lock, which an inspector
    /// never does.
    Unknown,
}

impl LockState {
    /// Whether a queue is known to hold the directory.
    pub fn is_held(&self) -> bool {
        matches!(self, LockState::Held { .. })
    }
}

/// The attributes a queue directory stores (`attributes.lla`, format
/// version 2), as [`Inspector::attributes`](super::Inspector::attributes)
/// reads them: every opener uses them for the options it does not name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredAttributes {
    /// The file's revision: 1 when first stored, one more each time an
    /// opener changed an attribute.
    pub revision: u64,
    /// When this revision was written.
    pub written_at: Timestamp,
    /// Bytes per new segment file.
    pub segment_size: u64,
    /// Largest payload (and stored result) accepted, in bytes: the stored
    /// limit, or the default for the segment size when none is stored.
    pub max_message_size: u64,
    /// Whether `max_message_size` is the default derived from the segment
    /// size (the file names no limit), so it follows a new segment size.
    pub max_message_size_derived: bool,
    /// Lease length of a dequeue that names none.
    pub visibility_timeout: Duration,
    /// Deliveries before a message becomes a dead letter; 0 = no limit.
    pub max_deliveries: u32,
    /// How long messages and stored results are kept after their enqueue;
    /// `None` = for ever.
    pub retention: Option<Duration>,
    /// How long dead letters are kept after they became one; `None` = for
    /// ever.
    pub dead_letter_retention: Option<Duration>,
    /// How long an idempotency key is remembered.
    pub dedup_window: Duration,
    /// Delay of an enqueue that names none.
    pub default_delay: Duration,
    /// Wait of a dequeue that names none.
    pub default_wait: Duration,
}

impl StoredAttributes {
    /// `max_message_size` is the limit an opener adopting `a` would have.
    pub(super) fn from_codec(
        a: &attributes::Attributes,
        revision: u64,
        written_ms: u64,
        max_message_size: u64,
    ) -> StoredAttributes {
        let ms = Duration::from_millis;
        StoredAttributes {
            revision,
            written_at: Timestamp(written_ms),
            segment_size: a.segment_size,
            max_message_size,
            max_message_size_derived: a.max_message_size == 0,
            visibility_timeout: ms(a.visibility_timeout_ms),
            max_deliveries: a.max_deliveries,
            retention: a.retention_ms.map(ms),
            dead_letter_retention: a.dead_letter_retention_ms.map(ms),
            dedup_window: ms(a.dedup_window_ms),
            default_delay: ms(a.default_delay_ms),
            default_wait: ms(a.default_wait_ms),
        }
    }
}

/// A ready message as [`Inspector::peek`](super::Inspector::peek) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peeked {
    /// The message's id.
    pub id: MessageId,
    /// Its priority (its lane).
    pub priority: u8,
    /// Deliveries it had so far (0 if never delivered).
    pub attempts: u32,
    /// When it was enqueued (0 when even the record's header is damaged).
    pub enqueued_at: Timestamp,
    /// Its deadline, if it has one (it leaves its lane before messages
    /// without one, and becomes a dead letter if the deadline passes).
    pub deadline: Option<Timestamp>,
    /// Its idempotency key, if it has one (lossy UTF-8).
    pub key: Option<String>,
    /// The payload, checksum-verified; empty when `damage` is set.
    pub payload: Vec<u8>,
    /// Why the record cannot be read: the queue dead-letters such a message
    /// when it comes up instead of delivering it.
    pub damage: Option<String>,
}

/// Where a message is now, as far as the directory tells.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageState {
    /// Ready in lane `priority`.
    #[non_exhaustive]
    Ready {
        /// Its lane.
        priority: u8,
        /// Deliveries so far.
        attempts: u32,
    },
    /// Waiting for a delay (its own or a nack's) to pass.
    #[non_exhaustive]
    Delayed {
        /// Its lane.
        priority: u8,
        /// Deliveries so far.
        attempts: u32,
        /// When it becomes ready.
        until: Timestamp,
    },
    /// Leased to a consumer (the next open makes it ready again).
    #[non_exhaustive]
    InFlight {
        /// Its lane.
        priority: u8,
        /// Which delivery holds the lease (1 on the first).
        attempt: u32,
        /// When the lease expires.
        lease_deadline: Timestamp,
    },
    /// Parked in the dead letters.
    #[non_exhaustive]
    Dead {
        /// Its lane.
        priority: u8,
        /// Deliveries it had.
        attempts: u32,
        /// Why.
        reason: String,
        /// Since when.
        since: Timestamp,
    },
    /// Completed with a stored result ([`crate::Queue::complete`]), which
    /// stays readable until retention removes it.
    #[non_exhaustive]
    Completed {
        /// Its lane.
        priority: u8,
        /// Deliveries it had.
        attempts: u32,
        /// When it was completed.
        at: Timestamp,
        /// The stored result's size in bytes.
        result_size: u32,
    },
    /// Acknowledged: finished for good.
    Acked,
    /// Purged from the dead letters: finished for good.
    Purged,
    /// Removed by retention (a message, a result or a dead letter past its
    /// retention): finished for good.
    Expired,
    /// Not live, and the journal entry that finished it (ack or purge) was
    /// removed with an old journal file.
    Finished,
    /// Not finished, but it can never be delivered: its segment file is
    /// missing, or its record is damaged (open skips it) or gone.
    #[non_exhaustive]
    Lost {
        /// The missing segment, when that is the cause.
        segment: Option<u32>,
    },
}

/// A message's record in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// The segment file's name.
    pub file: String,
    /// Where the record starts in it.
    pub offset: u32,
    /// When the message was enqueued.
    pub enqueued_at: Timestamp,
    /// Its priority.
    pub priority: u8,
    /// Its delay after `enqueued_at`.
    pub delay: Duration,
    /// Payload bytes.
    pub size: u32,
    /// Its deadline, if it has one.
    pub deadline: Option<Timestamp>,
    /// Its idempotency key, if it has one (lossy UTF-8).
    pub key: Option<String>,
    /// A stored result of the message (a result record), not the message.
    pub result: bool,
    /// A copy made by relocation (the original was in an older segment).
    pub relocated: bool,
    /// The record the index points at (the others are stale copies).
    pub current: bool,
    /// Why the payload does not verify, if it does not.
    pub damage: Option<String>,
}

/// A message's state in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointState {
    /// Ready, or delayed until the entry's time.
    Pending,
    /// A dead letter since the entry's time.
    Dead,
    /// Leased when the checkpoint was taken; the entry's time is the
    /// lease deadline.
    InFlight,
    /// Completed with a stored result since the entry's time.
    Completed,
}

impl CheckpointState {
    pub(super) fn from_codec(s: checkpoint::CheckpointState) -> CheckpointState {
        match s {
            checkpoint::CheckpointState::Pending => CheckpointState::Pending,
            checkpoint::CheckpointState::Dead => CheckpointState::Dead,
            checkpoint::CheckpointState::InFlight => CheckpointState::InFlight,
            checkpoint::CheckpointState::Completed => CheckpointState::Completed,
        }
    }
}

/// "pending", "dead", "in_flight" or "completed".
impl fmt::Display for CheckpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            CheckpointState::Pending => "pending",
            CheckpointState::Dead => "dead",
            CheckpointState::InFlight => "in_flight",
            CheckpointState::Completed => "completed",
        })
    }
}

/// A message's entry in the newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// The checkpoint's number.
    pub number: u64,
    /// Pending, dead or in flight when the checkpoint was taken.
    pub state: CheckpointState,
    /// Ready-at (pending; 0 = ready), dead-lettered at, lease deadline, or
    /// completed at.
    pub time: Timestamp,
    /// Its deadline, if it has one.
    pub deadline: Option<Timestamp>,
    /// Deliveries so far.
    pub attempts: u32,
    /// Its priority.
    pub priority: u8,
    /// A dead letter's reason.
    pub reason: Option<String>,
}

/// What a journal entry about a message says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// Leased to a consumer; the event's time is the lease deadline, its
    /// attempt counts this delivery.
    Delivered,
    /// Acknowledged: done for good.
    Acked,
    /// Returned by the consumer; ready again at the event's time (0 = at
    /// once).
    Nacked,
    /// Its lease expired (seen at the event's time); ready again.
    Expired,
    /// Moved to the dead letters at the event's time, for the event's
    /// reason.
    DeadLettered,
    /// Taken from the dead letters back to ready, attempts reset.
    Redriven,
    /// A dead letter removed for good.
    Purged,
    /// The lease was extended to the event's time.
    LeaseExtended,
    /// Its deadline passed before it was delivered: a dead letter with the
    /// reason "deadline missed" since the event's time.
    DeadlineMissed,
    /// Removed by retention at the event's time (a message or its stored
    /// result).
    RetentionExpired,
    /// A dead letter removed by dead-letter retention at the event's time.
    DeadExpired,
}

impl EventKind {
    /// The kind of a journal entry about one message; `None` for the
    /// entries that are about no message (id reservations).
    pub(super) fn from_codec(kind: entry::Kind) -> Option<EventKind> {
        Some(match kind {
            entry::Kind::Delivered => EventKind::Delivered,
            entry::Kind::Acked => EventKind::Acked,
            entry::Kind::Nacked => EventKind::Nacked,
            entry::Kind::Expired => EventKind::Expired,
            entry::Kind::DeadLettered => EventKind::DeadLettered,
            entry::Kind::Redriven => EventKind::Redriven,
            entry::Kind::Purged => EventKind::Purged,
            entry::Kind::LeaseExtended => EventKind::LeaseExtended,
            entry::Kind::DeadlineMissed => EventKind::DeadlineMissed,
            entry::Kind::RetentionCut => EventKind::RetentionExpired,
            entry::Kind::DeadExpired => EventKind::DeadExpired,
            entry::Kind::IdsReserved => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            EventKind::Delivered => "delivered",
            EventKind::Acked => "acked",
            EventKind::Nacked => "nacked",
            EventKind::Expired => "expired",
            EventKind::DeadLettered => "dead-lettered",
            EventKind::Redriven => "redriven",
            EventKind::Purged => "purged",
            EventKind::LeaseExtended => "lease-extended",
            EventKind::DeadlineMissed => "deadline-missed",
            EventKind::RetentionExpired => "retention-expired",
            EventKind::DeadExpired => "dead-letter-expired",
        }
    }
}

/// The kind in words, as [`Event::name`] gives it.
impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// One journal entry about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The journal file's name.
    pub file: String,
    /// Where the entry starts in it.
    pub offset: u32,
    /// What happened.
    pub kind: EventKind,
    /// Meaning per kind (see [`EventKind`]): lease deadline (delivered,
    /// lease extended), ready-at (nacked; 0 = at once), or the event's time.
    pub time: Timestamp,
    /// The attempt the entry names.
    pub attempt: u32,
    /// A dead letter's reason (empty otherwise).
    pub reason: String,
}

impl Event {
    /// The kind in words: "delivered", "acked", "nacked", "expired",
    /// "dead-lettered", "redriven", "purged", "lease-extended",
    /// "deadline-missed", "retention-expired", "dead-letter-expired".
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// Everything the directory tells about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// The message.
    pub id: MessageId,
    /// Where it is now.
    pub state: MessageState,
    /// Its record (and any relocated copies), in file order.
    pub records: Vec<RecordInfo>,
    /// Its entry in the newest checkpoint, if that holds it.
    pub checkpoint: Option<CheckpointInfo>,
    /// Every journal entry about it still on disk, oldest first.
    pub events: Vec<Event>,
    /// When the queue removes it, as the stored attributes say: a message
    /// or a stored result by `retention` (counted from the message's
    /// enqueue, to the retention mark's precision, a 64th of the retention
    /// at most), a dead letter by `dead_letter_retention` (counted from
    /// when it became one). `None` when no retention applies or it is
    /// finished.
    pub expires_at: Option<Timestamp>,
    /// The oldest journal file on disk. Files before it were removed after
    /// a checkpoint covered them, with the entries they held.
    pub first_journal_file: Option<u64>,
}

impl History {
    /// Whether `events` reach back to the queue's first journal file, so
    /// no entry about the message can have been trimmed by a checkpoint.
    pub fn is_complete(&self) -> bool {
        self.first_journal_file.is_none_or(|n| n <= 1)
    }

    /// The file name of [`History::first_journal_file`], as the directory
    /// holds it.
    pub fn first_journal_file_name(&self) -> Option<String> {
        self.first_journal_file.map(crate::layout::journal_name)
    }
}

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Durable data is damaged or missing: messages or state changes are
    /// lost, or open would refuse the directory.
    Damage,
    /// What a crash or a running owner normally leaves (a torn tail, a
    /// blank or leftover file, a finished segment): open tidies it.
    Notice,
}

/// "damage" or "notice".
impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Damage => "damage",
            Severity::Notice => "notice",
        })
    }
}

/// One thing `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The file concerned, if any.
    pub file: Option<String>,
    /// The byte offset in that file, if it is about a place.
    pub offset: Option<u64>,
    /// What is wrong, in a sentence.
    pub what: String,
}

/// What kind of queue file a [`FileCheck`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A segment of message records.
    Segment,
    /// A journal file of state-change entries.
    Journal,
    /// A checkpoint of the live messages.
    Checkpoint,
    /// The stored attributes (`attributes.lla`).
    Attributes,
}

impl FileKind {
    /// The kind a file's header names, to check the header against.
    pub(super) fn to_codec(self) -> header::FileKind {
        match self {
            FileKind::Segment => header::FileKind::Segment,
            FileKind::Journal => header::FileKind::Journal,
            FileKind::Checkpoint => header::FileKind::Checkpoint,
            FileKind::Attributes => header::FileKind::Attributes,
        }
    }

    /// What [`FileCheck::frames`] counts in a file of this kind:
    /// "records", "entries", "messages" or "attributes".
    pub fn frames_name(self) -> &'static str {
        match self {
            FileKind::Segment => "records",
            FileKind::Journal => "entries",
            FileKind::Checkpoint => "messages",
            FileKind::Attributes => "attributes",
        }
    }
}

/// "segment", "journal", "checkpoint" or "attributes".
impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            FileKind::Segment => "segment",
            FileKind::Journal => "journal",
            FileKind::Checkpoint => "checkpoint",
            FileKind::Attributes => "attributes",
        })
    }
}

/// One file `verify` read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileCheck {
    /// The file's name.
    pub name: String,
    /// Segment, journal, checkpoint or attributes.
    pub kind: FileKind,
    /// Its size in bytes.
    pub bytes: u64,
    /// Records (segment), entries (journal) or messages (checkpoint) that
    /// decoded; for the attributes file, the attributes it stores.
    pub frames: u64,
    /// Where its data ends (a segment or journal file's scanned end).
    pub data_end: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Every file read: the attributes file, the checkpoints, the
    /// segments, then the journal files.
    pub files: Vec<FileCheck>,
    /// Everything found, damage first, then in file order.
    pub findings: Vec<Finding>,
    /// Bytes read.
    pub bytes: u64,
    /// Segment records that decoded (result records included).
    pub records: u64,
    /// Of those, result records (stored results of completed messages).
    pub results: u64,
    /// Journal entries that decoded.
    pub entries: u64,
    /// Live messages (and stored results) whose record location was
    /// checked.
    pub live_messages: u64,
}

impl VerifyReport {
    /// True when no finding is [`Severity::Damage`].
    pub fn is_clean(&self) -> bool {
        self.damage().next().is_none()
    }

    /// The findings of [`Severity::Damage`].
    pub fn damage(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Damage)
    }
}
