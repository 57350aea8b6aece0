//! Read-only inspection of a queue directory: counters, the next messages,
//! dead letters, one message's history, and a full check of every file.
//!
//! An [`Inspector`] reads a directory the way open does
//! (`recovery::scan_directory`, with in-flight messages left in flight) and
//! changes nothing: the directory is opened with
//! [`DiskStorage::open_read_only`], so no file is created, written, removed
//! or locked, and files are read with plain reads, never mapped.
//!
//! Invariants:
//!
//! A. Nothing here writes: every file handle comes from a read-only storage
//!    (or, on another [`Storage`], is only read), and the owner lock is never
//!    taken, not even briefly, so an owner opening the queue at the same
//!    moment never fails because of an inspector.
//! B. The state shown is what the next open would rebuild, minus releasing
//!    in-flight messages: the same scanner, the same `Index::add` and
//!    `Index::apply` calls. Nothing decodes bytes apart from `codec`.
//! C. A directory another process has open is read as one listing: every
//!    file is opened when the directory is listed and read through those
//!    handles, so what the owner removes afterwards is still read and no
//!    file vanishes half-way. Results may be a moment old, and
//!    [`Inspector::lock_state`] says when another process holds the lock.
//!
//! ```
//! # fn main() -> Result<(), lanelog::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let q = lanelog::Queue::open(dir.path())?;
//! q.enqueue(b"resize image 7", 5)?;
//! drop(q);
//! let inspector = lanelog::inspect::Inspector::open(dir.path())?;
//! assert_eq!(inspector.stats()?.ready, 1);
//! assert_eq!(inspector.peek(None, 10)?[0].payload, b"resize image 7");
//! assert!(inspector.verify(|_done, _total| {})?.is_clean());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::codec::checkpoint::{self, CheckpointMeta, CheckpointState};
use crate::codec::entry::{self, Kind};
use crate::codec::header::{self, FileKind};
use crate::codec::{record, DecodeError};
use crate::config::{QueueOptions, MAX_SEGMENT_SIZE, MIN_JOURNAL_FILE_SIZE, MIN_SEGMENT_SIZE};
use crate::error::{Error, Result};
use crate::index::Found;
use crate::message::{DeadLetter, MessageId, RecoveryReport, Stats};
use crate::recovery::{self, Files, Scanned};
use crate::storage::{DiskStorage, Storage, StorageFile};
use crate::{journal, prepare, segment};

/// How many times a scan of a directory another process has open starts
/// over when a file vanished under it (a busy owner removes files often).
const SCAN_ATTEMPTS: usize = 10;

/// Files are read in pieces of this size, so progress moves smoothly.
const READ_CHUNK: usize = 4 << 20;

/// Whether a queue holds the directory's owner lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nobody holds it: the directory is at rest.
    Free,
    /// A queue has the directory open (in another process, or in this
    /// one): what is read is a snapshot that may be a moment old.
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

/// Check that `dir` is a queue directory and tell whether a queue has it
/// open, without scanning it and without taking its lock.
///
/// # Errors
/// [`Error::BadDirectory`] when `dir` does not exist, is not a directory
/// or holds no segment, journal or checkpoint file; [`Error::Io`].
pub fn lock_state(dir: impl AsRef<Path>) -> Result<LockState> {
    let storage = open_dir(dir.as_ref())?;
    Ok(disk_lock_state(&storage))
}

fn open_dir(path: &Path) -> Result<DiskStorage> {
    let bad = |detail: String| Error::BadDirectory {
        path: path.to_path_buf(),
        detail,
    };
    let storage = DiskStorage::open_read_only(path).map_err(|e| {
        bad(match e.kind() {
            io::ErrorKind::NotFound => "no such directory".to_string(),
            io::ErrorKind::NotADirectory => "not a directory".to_string(),
            _ => e.to_string(),
        })
    })?;
    require_queue_files(&storage).map_err(|e| match e {
        Error::BadDirectory { detail, .. } => bad(detail),
        other => other,
    })?;
    Ok(storage)
}

fn require_queue_files(storage: &dyn Storage) -> Result<()> {
    let files = classify(&storage.list()?);
    if files.segments.is_empty() && files.journals.is_empty() && files.checkpoints.is_empty() {
        return Err(Error::BadDirectory {
            path: Default::default(),
            detail: "not a lanelog queue directory (no segment, journal or checkpoint file)"
                .to_string(),
        });
    }
    Ok(())
}

fn disk_lock_state(storage: &DiskStorage) -> LockState {
    match storage.lock_holders() {
        Ok(pids) if pids.is_empty() => LockState::Free,
        Ok(pids) => LockState::Held {
            pid: pids.first().and_then(|&p| u32::try_from(p).ok()),
        },
        Err(_) => LockState::Unknown,
    }
}

/// The file kind a name belongs to, and its number.
fn classify(names: &[String]) -> Files {
    let mut f = Files {
        segments: vec![],
        journals: vec![],
        checkpoints: vec![],
        temporary: vec![],
    };
    for name in names {
        if let Some(id) = segment::parse_name(name) {
            f.segments.push(id);
        } else if let Some(n) = journal::parse_name(name) {
            f.journals.push(n);
        } else if let Some(n) = recovery::parse_checkpoint_name(name) {
            f.checkpoints.push(n);
        } else if (name.starts_with("checkpoint-") && name.ends_with(".tmp"))
            || prepare::is_temp_name(name)
        {
            f.temporary.push(name.clone());
        }
    }
    f.segments.sort_unstable();
    f.journals.sort_unstable();
    f.checkpoints.sort_unstable();
    f
}

/// One reading of a directory.
#[derive(Debug)]
struct Snapshot {
    /// The files as they were listed, held open.
    files: Arc<Pinned>,
    /// The file names seen, sorted.
    names: Vec<String>,
    bytes_on_disk: u64,
    /// What open would rebuild; an error (a damaged header, say) is kept
    /// so that `verify` can still check every file.
    scan: std::result::Result<Scanned, Error>,
}

/// A directory's files opened all at once when it is listed, so that what
/// the owner removes afterwards stays readable through the handles: the
/// reads that follow see one listing, never a file that vanished between
/// listing and reading. Everything but `list` and `open` is refused.
#[derive(Debug)]
struct Pinned {
    names: Vec<String>,
    /// Open handles; a name missing here (one that is not a queue file, or
    /// past the open-file limit) is opened from `inner` when asked for.
    open: BTreeMap<String, Arc<dyn StorageFile>>,
    inner: Arc<dyn Storage>,
}

impl Pinned {
    fn new(inner: Arc<dyn Storage>) -> Result<Pinned> {
        let mut names = Vec::new();
        let mut open = BTreeMap::new();
        let mut pinning = true;
        let mut listed = inner.list()?;
        listed.sort();
        for name in listed {
            let queue_file = segment::parse_name(&name).is_some()
                || journal::parse_name(&name).is_some()
                || recovery::parse_checkpoint_name(&name).is_some();
            if queue_file && pinning {
                match inner.open(&name) {
                    Ok(f) => {
                        open.insert(name.clone(), f);
                    }
                    // Removed since it was listed: as if never listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    // Out of file handles, say: open the rest when read.
                    Err(_) => pinning = false,
                }
            }
            names.push(name);
        }
        Ok(Pinned { names, open, inner })
    }
}

impl Storage for Pinned {
    fn lock(&self) -> io::Result<crate::storage::LockGuard> {
        Err(refused())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names.clone())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        match self.open.get(name) {
            Some(f) => Ok(f.clone()),
            None => self.inner.open(name),
        }
    }

    fn create(&self, _: &str, _: u64) -> io::Result<Arc<dyn StorageFile>> {
        Err(refused())
    }

    fn rename(&self, _: &str, _: &str) -> io::Result<()> {
        Err(refused())
    }

    fn remove(&self, _: &str) -> io::Result<()> {
        Err(refused())
    }

    fn sync_dir(&self) -> io::Result<()> {
        Err(refused())
    }
}

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "inspection is read-only")
}

/// A read-only view of a queue directory; see the module documentation.
#[derive(Debug)]
pub struct Inspector {
    clock: Arc<dyn Clock>,
    lock: LockState,
    /// Longest payload accepted when reading records (as recovery does:
    /// at least the default limit, at most what fits the file).
    max_len: usize,
    snapshot: Snapshot,
}

/// A ready message as [`Inspector::peek`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The message's id.
    pub id: MessageId,
    /// Its priority (its lane).
    pub priority: u8,
    /// Deliveries it had so far (0 if never delivered).
    pub attempts: u32,
    /// When it was enqueued (0 when even the record's header is damaged).
    pub enqueued_at: Timestamp,
    /// The payload, checksum-verified; empty when `damage` is set.
    pub payload: Vec<u8>,
    /// Why the record cannot be read: the queue dead-letters such a message
    /// when it comes up instead of delivering it.
    pub damage: Option<String>,
}

/// Where a message is now, as far as the directory tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageState {
    /// Ready in lane `priority`.
    Ready {
        /// Its lane.
        priority: u8,
        /// Deliveries so far.
        attempts: u32,
    },
    /// Waiting for a delay (its own or a nack's) to pass.
    Delayed {
        /// Its lane.
        priority: u8,
        /// Deliveries so far.
        attempts: u32,
        /// When it becomes ready.
        until: Timestamp,
    },
    /// Leased to a consumer (the next open makes it ready again).
    InFlight {
        /// Its lane.
        priority: u8,
        /// Which delivery holds the lease (1 on the first).
        attempt: u32,
        /// When the lease expires.
        lease_deadline: Timestamp,
    },
    /// Parked in the dead letters.
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
    /// Acknowledged: finished for good.
    Acked,
    /// Purged from the dead letters: finished for good.
    Purged,
    /// Not live, and the journal entry that finished it (ack or purge) was
    /// removed with an old journal file.
    Finished,
    /// Not finished, but it can never be delivered: its segment file is
    /// missing, or its record is damaged (open skips it) or gone.
    Lost {
        /// The missing segment, when that is the cause.
        segment: Option<u32>,
    },
}

/// A message's record in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A copy made by relocation (the original was in an older segment).
    pub relocated: bool,
    /// The record the index points at (the others are stale copies).
    pub current: bool,
    /// Why the payload does not verify, if it does not.
    pub damage: Option<String>,
}

/// A message's entry in the newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The checkpoint's number.
    pub number: u64,
    /// Pending, dead or in flight when the checkpoint was taken.
    pub state: CheckpointState,
    /// Ready-at (pending; 0 = ready), dead-lettered at, or lease deadline.
    pub time: Timestamp,
    /// Deliveries so far.
    pub attempts: u32,
    /// Its priority.
    pub priority: u8,
    /// A dead letter's reason.
    pub reason: Option<String>,
}

/// One journal entry about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The journal file's name.
    pub file: String,
    /// Where the entry starts in it.
    pub offset: u32,
    /// What happened.
    pub kind: Kind,
    /// Meaning per kind (see [`Kind`]): lease deadline (delivered, lease
    /// extended), ready-at (nacked; 0 = at once), or the event's time.
    pub time: Timestamp,
    /// The attempt the entry names.
    pub attempt: u32,
    /// A dead letter's reason (empty otherwise).
    pub reason: String,
}

impl Event {
    /// The kind in words: "delivered", "acked", "nacked", "expired",
    /// "dead-lettered", "redriven", "purged", "lease-extended".
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Delivered => "delivered",
            Kind::Acked => "acked",
            Kind::Nacked => "nacked",
            Kind::Expired => "expired",
            Kind::DeadLettered => "dead-lettered",
            Kind::Redriven => "redriven",
            Kind::Purged => "purged",
            Kind::LeaseExtended => "lease-extended",
            Kind::IdsReserved => "ids-reserved",
        }
    }
}

/// Everything the directory tells about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Durable data is damaged or missing: messages or state changes are
    /// lost, or open would refuse the directory.
    Damage,
    /// What a crash or a running owner normally leaves (a torn tail, a
    /// blank or leftover file, a finished segment): open tidies it.
    Notice,
}

/// One thing `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// One file `verify` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// The file's name.
    pub name: String,
    /// Segment, journal or checkpoint.
    pub kind: FileKind,
    /// Its size in bytes.
    pub bytes: u64,
    /// Records (segment), entries (journal) or messages (checkpoint) that
    /// decoded.
    pub frames: u64,
    /// Where its data ends (a segment or journal file's scanned end).
    pub data_end: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Every segment, journal and checkpoint file read, in that order.
    pub files: Vec<FileCheck>,
    /// Everything found, damage first, then in file order.
    pub findings: Vec<Finding>,
    /// Bytes read.
    pub bytes: u64,
    /// Segment records that decoded.
    pub records: u64,
    /// Journal entries that decoded.
    pub entries: u64,
    /// Live messages whose record location was checked.
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

impl Inspector {
    /// Open the queue directory `dir` read-only and read it as open would.
    ///
    /// Takes no lock and creates nothing; see [`Inspector::lock_state`] for
    /// whether a queue has the directory open. A directory open cannot read
    /// (a damaged header, an unknown format version) still opens here: the
    /// methods that need its state return that error, and
    /// [`Inspector::verify`] checks every file.
    ///
    /// # Errors
    /// [`Error::BadDirectory`] when `dir` does not exist, is not a directory
    /// or holds no segment, journal or checkpoint file; [`Error::Io`] when
    /// it cannot be listed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Inspector> {
        let storage = open_dir(dir.as_ref())?;
        let lock = disk_lock_state(&storage);
        Inspector::with(Arc::new(storage), Arc::new(SystemClock::new()), lock)
    }

    /// Inspect a queue on any [`Storage`] (such as
    /// [`crate::storage::MemoryStorage`]), reading time from `clock`. The
    /// storage is only read. Its lock state is [`LockState::Unknown`].
    ///
    /// # Errors
    /// As [`Inspector::open`].
    pub fn open_storage(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Result<Inspector> {
        require_queue_files(&*storage)?;
        Inspector::with(storage, clock, LockState::Unknown)
    }

    fn with(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>, lock: LockState) -> Result<Self> {
        let max_len = QueueOptions::new().max_message_bytes();
        let snapshot = take_snapshot(&storage, &*clock, lock)?;
        Ok(Inspector {
            clock,
            lock,
            max_len,
            snapshot,
        })
    }

    /// Whether a queue had the directory open when it was read.
    pub fn lock_state(&self) -> LockState {
        self.lock
    }

    /// What the next open would find and repair (torn tails it would zero,
    /// files it would remove, damage it would skip); in-flight messages are
    /// not counted as released.
    ///
    /// # Errors
    /// The error open would fail with ([`Error::Corrupt`],
    /// [`Error::UnsupportedVersion`], [`Error::Io`]).
    pub fn recovery_report(&self) -> Result<&RecoveryReport> {
        Ok(&self.scanned()?.report)
    }

    fn scanned(&self) -> Result<&Scanned> {
        self.snapshot.scan.as_ref().map_err(copy_error)
    }

    /// The counters [`crate::Queue::stats`] gives, as of the reading.
    ///
    /// `segments` counts the segments an open would keep; `bytes_on_disk`
    /// is the size of every segment, journal and checkpoint file present.
    /// Messages still leased count as in flight.
    ///
    /// # Errors
    /// As [`Inspector::recovery_report`].
    pub fn stats(&self) -> Result<Stats> {
        let s = self.scanned()?;
        let now = self.clock.now();
        let (ready, in_flight, delayed, dead) = s.index.counts();
        let oldest = s.index.oldest_ready().and_then(|(_, loc)| {
            let seg = s.segments.get(&loc.segment)?;
            segment::read_header(&*seg.file, loc.offset, self.limit(seg.size))
        });
        Ok(Stats {
            ready_per_lane: s.index.ready_per_lane(),
            ready,
            in_flight,
            delayed,
            dead,
            acked_total: s.index.acked_total(),
            segments: s.segments.len() as u64,
            bytes_on_disk: self.snapshot.bytes_on_disk,
            oldest_ready_age: oldest.map(|h| now.since(Timestamp(h.enqueued_ms))),
        })
    }

    fn limit(&self, file_size: u32) -> usize {
        self.max_len.max(file_size as usize)
    }

    /// The next `limit` messages strict scheduling would deliver (of lane
    /// `lane` only, when given), without leasing them: higher priority
    /// first, by id within a lane. Delays that have passed count as ready.
    ///
    /// # Errors
    /// As [`Inspector::recovery_report`]; [`Error::Io`] reading a record.
    pub fn peek(&self, lane: Option<u8>, limit: usize) -> Result<Vec<Peeked>> {
        let s = self.scanned()?;
        let mut out = Vec::new();
        for c in s.index.ready_in_order(lane).take(limit) {
            let (enqueued, payload, damage) = match s.segments.get(&c.loc.segment) {
                None => (0, Vec::new(), Some("its segment is missing".to_string())),
                Some(seg) => {
                    let max = self.limit(seg.size);
                    match segment::read_record(&*seg.file, c.loc.offset, max) {
                        Ok((h, payload)) => (h.enqueued_ms, payload, None),
                        Err(segment::ReadError::Io(e)) => return Err(e.into()),
                        Err(segment::ReadError::Corrupt(e)) => {
                            let enqueued = segment::read_header(&*seg.file, c.loc.offset, max)
                                .map_or(0, |h| h.enqueued_ms);
                            let what = format!(
                                "the record at {} offset {} is damaged ({e})",
                                segment::name(c.loc.segment),
                                c.loc.offset
                            );
                            (enqueued, Vec::new(), Some(what))
                        }
                    }
                }
            };
            out.push(Peeked {
                id: MessageId(c.id),
                priority: c.priority,
                attempts: c.attempt,
                enqueued_at: Timestamp(enqueued),
                payload,
                damage,
            });
        }
        Ok(out)
    }

    /// All dead letters in id order, as [`crate::Queue::dead_letters`]
    /// gives them.
    ///
    /// # Errors
    /// As [`Inspector::recovery_report`].
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let s = self.scanned()?;
        Ok(crate::queue::dead_letter_list(&s.index, &s.segments))
    }

    /// A message's whole history: its record, its entry in the newest
    /// checkpoint, and every journal entry about it still on disk. Entries
    /// older than the newest checkpoint may have been removed with their
    /// journal files ([`History::is_complete`] tells).
    ///
    /// Reads the journal files, and for a message that is no longer live
    /// every segment, so it costs a pass over those files.
    ///
    /// # Errors
    /// [`Error::Unknown`] when the directory holds no trace of `id`; as
    /// [`Inspector::recovery_report`]; [`Error::Io`].
    pub fn explain(&self, id: MessageId) -> Result<History> {
        let s = self.scanned()?;
        let id = id.0;
        let files = classify(&self.snapshot.names);
        let found = s.index.find(id);
        let mut state = match found {
            Some(Found::Ready {
                priority, attempt, ..
            }) => Some(MessageState::Ready {
                priority,
                attempts: attempt,
            }),
            Some(Found::Delayed {
                priority,
                attempt,
                ready_at,
                ..
            }) => Some(MessageState::Delayed {
                priority,
                attempts: attempt,
                until: Timestamp(ready_at),
            }),
            Some(Found::InFlight(l)) => Some(MessageState::InFlight {
                priority: l.priority,
                attempt: l.attempt,
                lease_deadline: Timestamp(l.deadline),
            }),
            Some(Found::Dead(d)) => Some(MessageState::Dead {
                priority: d.priority,
                attempts: d.attempt,
                reason: d.reason.clone(),
                since: Timestamp(d.at),
            }),
            None => s
                .missing
                .iter()
                .find(|&&(m, _)| m == id)
                .map(|&(_, segment)| MessageState::Lost {
                    segment: Some(segment),
                }),
        };
        let current = match found {
            Some(Found::Ready { loc, .. } | Found::Delayed { loc, .. }) => Some(loc),
            Some(Found::InFlight(l)) => Some(l.loc),
            Some(Found::Dead(d)) => Some(d.loc),
            None => None,
        };
        let records = match current {
            Some(loc) => s
                .segments
                .get(&loc.segment)
                .map(|seg| self.record_at(seg.id, &*seg.file, loc.offset, seg.size))
                .transpose()?
                .into_iter()
                .collect(),
            None => self.find_records(&files.segments, id)?,
        };
        let checkpoint = match s.report.checkpoint {
            Some(n) => self.checkpoint_entry(n, id)?,
            None => None,
        };
        let events = self.events(&files.journals, id)?;
        if state.is_none() {
            state = events.iter().rev().find_map(|e| match e.kind {
                Kind::Acked => Some(MessageState::Acked),
                Kind::Purged => Some(MessageState::Purged),
                _ => None,
            });
        }
        // Not live and nothing finished it: entries about it (which a
        // checkpoint trims only together with the one that finished it) or
        // a damaged record mean it was lost, not finished.
        let unreadable = records.iter().any(|r| r.damage.is_some());
        let state = match state {
            Some(state) => state,
            None if unreadable || !events.is_empty() => MessageState::Lost { segment: None },
            None if !records.is_empty() || checkpoint.is_some() => MessageState::Finished,
            None => return Err(Error::Unknown),
        };
        Ok(History {
            id: MessageId(id),
            state,
            records,
            checkpoint,
            events,
            first_journal_file: files.journals.first().copied(),
        })
    }

    fn record_at(
        &self,
        segment_id: u32,
        file: &dyn StorageFile,
        offset: u32,
        size: u32,
    ) -> Result<RecordInfo> {
        let max = self.limit(size);
        let (h, damage) = match segment::read_record(file, offset, max) {
            Ok((h, _)) => (Some(h), None),
            Err(segment::ReadError::Io(e)) => return Err(e.into()),
            Err(segment::ReadError::Corrupt(e)) => (
                segment::read_header(file, offset, max),
                Some(format!("{e}; the queue dead-letters it when it comes up")),
            ),
        };
        Ok(RecordInfo {
            file: segment::name(segment_id),
            offset,
            enqueued_at: Timestamp(h.map_or(0, |h| h.enqueued_ms)),
            priority: h.map_or(0, |h| h.priority),
            delay: Duration::from_millis(h.map_or(0, |h| u64::from(h.delay_ms))),
            size: h.map_or(0, |h| h.len),
            relocated: h.is_some_and(|h| h.relocated()),
            current: true,
            damage,
        })
    }

    /// Every record of `id` in the segments on disk (it is not live).
    fn find_records(&self, segments: &[u32], id: u64) -> Result<Vec<RecordInfo>> {
        let mut out = Vec::new();
        for &seg in segments {
            let name = segment::name(seg);
            let Some(bytes) = read_if_present(&*self.snapshot.files, &name, &mut |_| {})? else {
                continue;
            };
            if bytes.len() < header::SIZE {
                continue;
            }
            let max = self.limit(len32(&bytes));
            let scan = recovery::scan_segment(&bytes, header::SIZE, max);
            // A damaged record whose unverified header names the message.
            for gap in &scan.damaged {
                let at = gap.start as usize;
                let Some(h) = record::decode_header(&bytes[at..], max)
                    .ok()
                    .filter(|h| h.id == id)
                else {
                    continue;
                };
                let why = record::decode(&bytes[at..], max)
                    .err()
                    .map_or("out of id order".to_string(), |e| e.to_string());
                out.push(RecordInfo {
                    file: name.clone(),
                    offset: gap.start,
                    enqueued_at: Timestamp(h.enqueued_ms),
                    priority: h.priority,
                    delay: Duration::from_millis(u64::from(h.delay_ms)),
                    size: h.len,
                    relocated: h.relocated(),
                    current: false,
                    damage: Some(format!("{why}; open skips it")),
                });
            }
            for (offset, h) in scan.frames.iter().filter(|(_, h)| h.id == id) {
                out.push(RecordInfo {
                    file: name.clone(),
                    offset: *offset,
                    enqueued_at: Timestamp(h.enqueued_ms),
                    priority: h.priority,
                    delay: Duration::from_millis(u64::from(h.delay_ms)),
                    size: h.len,
                    relocated: h.relocated(),
                    current: false,
                    damage: None,
                });
            }
        }
        out.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
        Ok(out)
    }

    fn checkpoint_entry(&self, number: u64, id: u64) -> Result<Option<CheckpointInfo>> {
        let name = recovery::checkpoint_name(number);
        let Some(bytes) = read_if_present(&*self.snapshot.files, &name, &mut |_| {})? else {
            return Ok(None);
        };
        let mut found = None;
        let mut reason = None;
        // Decoded when the directory was scanned; a checkpoint replaced since
        // then simply holds nothing here.
        let _ = checkpoint::decode(
            &bytes,
            |_, _| {},
            |m| {
                if m.id == id {
                    found = Some(m);
                }
            },
            |m, r| {
                if m == id {
                    reason = Some(r);
                }
            },
        );
        Ok(found.map(|m| CheckpointInfo {
            number,
            state: m.state,
            time: Timestamp(m.time_ms),
            attempts: m.attempt,
            priority: m.priority,
            reason,
        }))
    }

    fn events(&self, journals: &[u64], id: u64) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for &n in journals {
            let name = journal::name(n);
            let Some(bytes) = read_if_present(&*self.snapshot.files, &name, &mut |_| {})? else {
                continue;
            };
            let scan = recovery::scan_journal(&bytes, header::SIZE);
            for (offset, (e, _)) in &scan.frames {
                if e.id == id && e.kind != Kind::IdsReserved {
                    out.push(Event {
                        file: name.clone(),
                        offset: *offset,
                        kind: e.kind,
                        time: Timestamp(e.time_ms),
                        attempt: e.attempt,
                        reason: e.reason.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Check every segment, journal and checkpoint file: headers, every
    /// record's and entry's checksum and id order, torn tails against
    /// damage as recovery judges them (a torn tail is a notice: it is what
    /// a crash leaves), file sizes, the journal's file sequence, the newest
    /// checkpoint's checksum and fields, and that every live message points
    /// at a record with its id in an existing segment. Never modifies
    /// anything.
    ///
    /// The files checked are those the inspector listed when it opened
    /// (held open since, so a file the owner removes meanwhile is still
    /// read); `progress` is called with (bytes read, bytes to read) as they
    /// are read.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read; damage is never an error,
    /// it is in the report.
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
        let snap = &self.snapshot;
        let files = classify(&snap.names);
        let mut v = Verify {
            storage: &*snap.files,
            max_len: self.max_len,
            report: VerifyReport::default(),
            expected: BTreeMap::new(),
            damaged: BTreeMap::new(),
            read_segments: BTreeSet::new(),
            done: 0,
            total: 0,
            progress: &mut progress,
        };
        v.total = v.sizes(&files)?;
        (v.progress)(0, v.total);
        for name in &files.temporary {
            v.notice(name, None, "leftover temporary file; open removes it");
        }
        if let Err(e) = recovery::check_numbers(&files) {
            v.error(e);
        }
        let scan = snap.scan.as_ref();
        if let Ok(s) = scan {
            v.expect_live(s);
        }
        let newest = v.checkpoints(&files.checkpoints)?;
        let meta = match newest {
            Newest::Found(m) => Some(m),
            _ => None,
        };
        v.segments(&files.segments, meta.as_ref())?;
        v.journals(&files.journals, newest)?;
        v.unmatched();
        if let Err(e) = scan {
            // Open refuses the directory; say why unless a file finding did.
            let file = error_file(e);
            let said = v
                .report
                .damage()
                .any(|f| file.is_some() && f.file.as_deref() == file);
            if !said {
                v.damage(
                    file.unwrap_or(""),
                    None,
                    format!("open would refuse the directory: {e}"),
                );
            }
        }
        let mut report = v.report;
        // Damage first; otherwise in the order found (file order).
        report.findings.sort_by_key(|f| f.severity);
        Ok(report)
    }
}

fn len32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

/// Read the directory the way open does, from files all opened when it is
/// listed; starting over when a file vanished anyway (the open-file limit
/// was reached) in a directory that may be in use.
fn take_snapshot(
    storage: &Arc<dyn Storage>,
    clock: &dyn Clock,
    lock: LockState,
) -> Result<Snapshot> {
    let opts = QueueOptions::new();
    let mut attempt = 1;
    loop {
        let files = Arc::new(Pinned::new(storage.clone())?);
        let names = files.names.clone();
        let bytes_on_disk = queue_bytes(&*files, &names)?;
        let scan = recovery::scan_directory(&*files, &opts, false);
        let vanished = matches!(&scan, Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound);
        if vanished && lock != LockState::Free && attempt < SCAN_ATTEMPTS {
            attempt += 1;
            continue;
        }
        let scan = scan.map(|mut s| {
            // Delays that have passed count as ready, as in `Queue::stats`.
            s.index.promote_due(clock.now().0);
            s
        });
        return Ok(Snapshot {
            files,
            names,
            bytes_on_disk,
            scan,
        });
    }
}

/// Bytes of every segment, journal and checkpoint file present.
fn queue_bytes(storage: &dyn Storage, names: &[String]) -> Result<u64> {
    let mut total = 0;
    for name in names {
        let queue_file = segment::parse_name(name).is_some()
            || journal::parse_name(name).is_some()
            || recovery::parse_checkpoint_name(name).is_some();
        if queue_file {
            total += file_len(storage, name)?.unwrap_or(0);
        }
    }
    Ok(total)
}

/// A file's length; `None` when it is gone (its owner removed it).
fn file_len(storage: &dyn Storage, name: &str) -> Result<Option<u64>> {
    match storage.open(name).and_then(|f| f.len()) {
        Ok(len) => Ok(Some(len)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Read a whole file in pieces, reporting each piece's size; `None` when
/// the file is gone.
fn read_if_present(
    storage: &dyn Storage,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<Vec<u8>>> {
    let file = match storage.open(name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.len()?;
    if len > MAX_SEGMENT_SIZE.max(u64::from(u32::MAX)) {
        return Err(Error::Corrupt {
            file: name.to_string(),
            offset: 0,
            detail: format!("{len} bytes: larger than any file the queue makes"),
        });
    }
    let mut buf = vec![0u8; len as usize];
    for (i, chunk) in buf.chunks_mut(READ_CHUNK).enumerate() {
        match file.read_at((i * READ_CHUNK) as u64, chunk) {
            Ok(()) => {}
            // The owner may not shrink files, but a reader must not fail
            // on it: the rest reads as zeros, which scans as the end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        progress(chunk.len() as u64);
    }
    Ok(Some(buf))
}

/// The file an error names, if any.
fn error_file(e: &Error) -> Option<&str> {
    match e {
        Error::Corrupt { file, .. } | Error::UnsupportedVersion { file, .. } => Some(file),
        _ => None,
    }
}

/// A copy of a kept error (errors are not `Clone`: `io::Error` is not).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
        Error::Corrupt {
            file,
            offset,
            detail,
        } => Error::Corrupt {
            file: file.clone(),
            offset: *offset,
            detail: detail.clone(),
        },
        Error::UnsupportedVersion {
            file,
            found,
            supported,
        } => Error::UnsupportedVersion {
            file: file.clone(),
            found: *found,
            supported: *supported,
        },
        Error::BadDirectory { path, detail } => Error::BadDirectory {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => Error::Io(io::Error::other(other.to_string())),
    }
}

/// The state of one `verify` pass.
struct Verify<'a> {
    storage: &'a dyn Storage,
    max_len: usize,
    report: VerifyReport,
    /// Where live messages' records must be: (segment, offset) → id.
    expected: BTreeMap<(u32, u32), u64>,
    /// Bad regions found in each file.
    damaged: BTreeMap<String, Vec<Range<u32>>>,
    /// Segments read whole, whose records were matched.
    read_segments: BTreeSet<u32>,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

/// A scan's bad regions, torn tail and frames' durability claims, whatever
/// the frame type.
struct ScanFacts {
    damaged: Vec<Range<u32>>,
    torn: Option<Range<u32>>,
    dropped: usize,
    end: u32,
    frames: u64,
    max_synced: u32,
}

impl Verify<'_> {
    fn finding(&mut self, severity: Severity, file: &str, offset: Option<u64>, what: String) {
        self.report.findings.push(Finding {
            severity,
            file: (!file.is_empty()).then(|| file.to_string()),
            offset,
            what,
        });
    }

    fn damage(&mut self, file: &str, offset: Option<u64>, what: String) {
        self.finding(Severity::Damage, file, offset, what);
    }

    fn notice(&mut self, file: &str, offset: Option<u64>, what: &str) {
        self.finding(Severity::Notice, file, offset, what.to_string());
    }

    /// A file-level error (a header open refuses) as a finding.
    fn error(&mut self, e: Error) {
        match e {
            Error::Corrupt {
                file,
                offset,
                detail,
            } => self.damage(&file, Some(offset), detail),
            Error::UnsupportedVersion {
                file,
                found,
                supported,
            } => self.damage(
                &file,
                Some(8),
                format!("format version {found}; this build reads only version {supported}"),
            ),
            other => self.damage("", None, other.to_string()),
        }
    }

    fn sizes(&mut self, files: &Files) -> Result<u64> {
        let mut total = 0;
        for name in names_of(files) {
            total += file_len(self.storage, &name)?.unwrap_or(0);
        }
        Ok(total)
    }

    /// Read a file for checking, counting its bytes; `None` (and a notice)
    /// when it vanished.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let (storage, done, total) = (self.storage, &mut self.done, self.total);
        let progress = &mut *self.progress;
        let bytes = read_if_present(storage, name, &mut |n| {
            *done += n;
            progress(*done, total);
        })?;
        match &bytes {
            Some(b) => self.report.bytes += b.len() as u64,
            None => self.vanished(name),
        }
        Ok(bytes)
    }

    /// Judge a header as open does; anything but `Good` leaves nothing more
    /// to check in the file.
    fn header(&mut self, name: &str, kind: FileKind, number: u64) -> Result<Header> {
        match recovery::check_header(self.storage, name, kind) {
            Ok(Some(h)) if h.id != number => {
                self.damage(
                    name,
                    Some(16),
                    format!("the header names file {} but the file name {number}", h.id),
                );
                Ok(Header::Good)
            }
            Ok(Some(_)) => Ok(Header::Good),
            Ok(None) => {
                self.notice(
                    name,
                    Some(0),
                    "blank file (created, never initialised, holds no data); open removes it",
                );
                self.skip(name)?;
                Ok(Header::Blank)
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(name);
                Ok(Header::Gone)
            }
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                self.error(e);
                self.skip(name)?;
                Ok(Header::Refused)
            }
            Err(e) => Err(e),
        }
    }

    /// A file its owner removed during the check: a notice, and what was
    /// expected in it is not checked (see `unmatched`).
    fn vanished(&mut self, name: &str) {
        self.notice(
            name,
            None,
            "removed while being checked (its owner is working)",
        );
    }

    /// Count a file that is not read as done.
    fn skip(&mut self, name: &str) -> Result<()> {
        self.done += file_len(self.storage, name)?.unwrap_or(0);
        (self.progress)(self.done, self.total);
        Ok(())
    }

    fn expect_live(&mut self, s: &Scanned) {
        let mut expected = BTreeMap::new();
        s.index.snapshot(|id, _, loc, _, _, _| {
            expected.insert((loc.segment, loc.offset), id);
        });
        self.report.live_messages = s.index.live_count();
        self.expected = expected;
        for &(id, seg) in &s.missing {
            self.damage(
                &segment::name(seg),
                None,
                format!("message {id} is live but its segment file is missing: it is lost"),
            );
        }
        for name in &s.report.files_removed {
            if segment::parse_name(name).is_some() {
                self.notice(
                    name,
                    None,
                    "holds no live message; its owner or the next open removes it",
                );
            }
        }
    }

    /// Check the checkpoints; returns the newest one's fields.
    fn checkpoints(&mut self, numbers: &[u64]) -> Result<Newest> {
        let mut newest = Newest::None;
        for &n in numbers.iter().rev() {
            let name = recovery::checkpoint_name(n);
            if newest != Newest::None {
                self.notice(
                    &name,
                    None,
                    "superseded by a newer checkpoint; open removes it",
                );
                self.skip(&name)?;
                continue;
            }
            match self.header(&name, FileKind::Checkpoint, n)? {
                Header::Good => {}
                // Open looks at the next older one.
                Header::Blank => continue,
                Header::Gone => {
                    newest = Newest::Unknown;
                    continue;
                }
                Header::Refused => {
                    newest = Newest::Damaged;
                    continue;
                }
            }
            let Some(bytes) = self.read(&name)? else {
                newest = Newest::Unknown;
                continue;
            };
            let mut ids = Vec::new();
            let decoded = checkpoint::decode(&bytes, |_, _| {}, |m| ids.push(m.id), |_, _| {});
            let m = match decoded {
                Ok(m) => m,
                Err(e) => {
                    let detail = match e {
                        checkpoint::CheckpointError::Header(h) => format!("bad header: {h:?}"),
                        checkpoint::CheckpointError::Body(d) => d.to_string(),
                    };
                    self.damage(
                        &name,
                        Some(0),
                        format!("does not decode ({detail}); open refuses the directory"),
                    );
                    // Still the newest: older ones do not stand in for it.
                    newest = Newest::Damaged;
                    continue;
                }
            };
            self.report.files.push(FileCheck {
                name: name.clone(),
                kind: FileKind::Checkpoint,
                bytes: bytes.len() as u64,
                frames: ids.len() as u64,
                data_end: bytes.len() as u64,
            });
            ids.sort_unstable();
            if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                self.damage(&name, None, format!("holds message {} twice", w[0]));
            }
            if let Some(&max) = ids.last().filter(|&&max| max >= m.next_id) {
                self.damage(
                    &name,
                    Some(32),
                    format!(
                        "its next id {} is not above message {max} it holds: ids could be reused",
                        m.next_id
                    ),
                );
            }
            if m.journal_file == 0 || m.journal_offset < header::SIZE as u32 {
                self.damage(
                    &name,
                    Some(40),
                    format!(
                        "resumes replay at journal file {} offset {}, before any entry",
                        m.journal_file, m.journal_offset
                    ),
                );
            }
            newest = if m.journal_file == 0 {
                Newest::Damaged
            } else {
                Newest::Found(m)
            };
        }
        Ok(newest)
    }

    fn segments(&mut self, ids: &[u32], meta: Option<&CheckpointMeta>) -> Result<()> {
        for &id in ids {
            let name = segment::name(id);
            if self.header(&name, FileKind::Segment, u64::from(id))? != Header::Good {
                continue;
            }
            let Some(bytes) = self.read(&name)? else {
                continue;
            };
            self.read_segments.insert(id);
            let size = len32(&bytes);
            if u64::from(size) < MIN_SEGMENT_SIZE {
                self.damage(
                    &name,
                    Some(u64::from(size)),
                    format!(
                        "{size} bytes, shorter than any segment the queue makes \
                         ({MIN_SEGMENT_SIZE}): the file was truncated"
                    ),
                );
            }
            if let Some(m) = meta.filter(|m| m.head_segment == u64::from(id)) {
                if m.head_offset > size {
                    self.damage(
                        &name,
                        Some(u64::from(m.head_offset)),
                        format!(
                            "the checkpoint says records up to offset {} were in it, past its end",
                            m.head_offset
                        ),
                    );
                }
            }
            let max_len = self.max_len.max(size as usize);
            let s = recovery::scan_segment(&bytes, header::SIZE, max_len);
            for (offset, h) in &s.frames {
                if let Some(want) = self.expected.remove(&(id, *offset)) {
                    if want != h.id {
                        self.damage(
                            &name,
                            Some(u64::from(*offset)),
                            format!(
                                "message {want} should be here, but the record is message {}",
                                h.id
                            ),
                        );
                    }
                }
            }
            self.report.records += s.frames.len() as u64;
            let facts = ScanFacts {
                damaged: s.damaged.clone(),
                torn: s.torn.clone(),
                dropped: s.dropped_frames,
                end: s.end,
                frames: s.frames.len() as u64,
                max_synced: s
                    .frames
                    .iter()
                    .map(|(_, h)| h.synced_end)
                    .max()
                    .unwrap_or(0),
            };
            let describe = |at: usize| match record::decode(&bytes[at..], max_len) {
                Err(e) => match record::decode_header(&bytes[at..], max_len) {
                    Ok(h) => format!(
                        "the record at {at} (its unverified header says message {}) \
                         does not decode: {e}",
                        h.id
                    ),
                    Err(_) => format!("the record at {at} does not decode: {e}"),
                },
                Ok((h, _)) => format!("the record at {at} (message {}) is out of id order", h.id),
            };
            let what = |n: usize| format!("{n} records");
            self.judge(
                &name,
                FileKind::Segment,
                &bytes,
                facts,
                false,
                &describe,
                &what,
            );
        }
        Ok(())
    }

    fn journals(&mut self, numbers: &[u64], newest: Newest) -> Result<()> {
        let meta = match &newest {
            Newest::Found(m) => Some(m),
            _ => None,
        };
        // Where replay starts; unknown when the checkpoint that says is
        // damaged or vanished.
        let first = match newest {
            Newest::Found(m) => Some(m.journal_file),
            Newest::None => Some(1),
            Newest::Damaged | Newest::Unknown => None,
        };
        let mut present = Vec::new();
        for &n in numbers {
            let name = journal::name(n);
            let superseded = first.is_some_and(|first| n < first);
            if superseded {
                self.notice(
                    &name,
                    None,
                    "superseded by the checkpoint (not replayed); open removes it",
                );
            } else {
                present.push(n);
            }
            if self.header(&name, FileKind::Journal, n)? != Header::Good {
                continue;
            }
            let Some(bytes) = self.read(&name)? else {
                continue;
            };
            let size = len32(&bytes);
            if u64::from(size) < MIN_JOURNAL_FILE_SIZE {
                self.finding(
                    if superseded {
                        Severity::Notice
                    } else {
                        Severity::Damage
                    },
                    &name,
                    Some(u64::from(size)),
                    format!(
                        "{size} bytes, shorter than any journal file the queue makes \
                         ({MIN_JOURNAL_FILE_SIZE}): the file was truncated"
                    ),
                );
            }
            if let Some(m) = meta.filter(|m| m.journal_file == n && m.journal_offset > size) {
                self.damage(
                    &name,
                    Some(u64::from(m.journal_offset)),
                    format!(
                        "the checkpoint resumes replay at offset {}, past its end",
                        m.journal_offset
                    ),
                );
            }
            let s = recovery::scan_journal(&bytes, header::SIZE);
            self.report.entries += s.frames.len() as u64;
            let facts = ScanFacts {
                damaged: s.damaged.clone(),
                torn: s.torn.clone(),
                dropped: s.dropped_frames,
                end: s.end,
                frames: s.frames.len() as u64,
                max_synced: s.frames.iter().map(|(_, (_, se))| *se).max().unwrap_or(0),
            };
            let describe = |at: usize| match entry::decode(&bytes[at..]) {
                Err(e) => format!("the entry at {at} does not decode: {e}"),
                Ok(_) => format!("the entry at {at} follows bad bytes"),
            };
            let what = |n: usize| format!("{n} entries");
            self.judge(
                &name,
                FileKind::Journal,
                &bytes,
                facts,
                superseded,
                &describe,
                &what,
            );
        }
        // Replay needs every file from the checkpoint's on, without gaps.
        let Some(first) = first else {
            return Ok(());
        };
        let last = present.last().copied().unwrap_or(first).max(first);
        for n in first..=last {
            if present.binary_search(&n).is_err() {
                let why = match meta {
                    Some(_) if n == first => "the checkpoint resumes replay in it",
                    Some(_) => "journal files after the checkpoint's must follow each other",
                    None => "with no checkpoint, replay needs every journal file from 1 on",
                };
                self.damage(
                    &journal::name(n),
                    None,
                    format!("missing: {why}; the state changes it held are lost"),
                );
            }
        }
        Ok(())
    }

    /// Turn a scan of a segment or journal file into findings.
    #[expect(clippy::too_many_arguments, reason = "one call site per file kind")]
    fn judge(
        &mut self,
        name: &str,
        kind: FileKind,
        bytes: &[u8],
        s: ScanFacts,
        superseded: bool,
        describe: &dyn Fn(usize) -> String,
        frames: &dyn Fn(usize) -> String,
    ) {
        let size = len32(bytes);
        let severity = if superseded {
            Severity::Notice
        } else {
            Severity::Damage
        };
        let lost = match kind {
            FileKind::Segment => "open skips them and never delivers what they held",
            _ => "open skips them; the state changes they held are lost",
        };
        self.damaged
            .entry(name.to_string())
            .or_default()
            .extend(s.damaged.iter().cloned());
        for d in &s.damaged {
            self.finding(
                severity,
                name,
                Some(u64::from(d.start)),
                format!(
                    "{} bad bytes ({}..{}) inside durable data: {}; {lost}",
                    d.end - d.start,
                    d.start,
                    d.end,
                    describe(d.start as usize)
                ),
            );
        }
        if let Some(t) = &s.torn {
            let at = t.start as usize;
            // The slice runs to the end of the file, so a frame that needs
            // more bytes than it has runs past the end of the file.
            let cut_by_eof = matches!(
                match kind {
                    FileKind::Segment => record::decode(&bytes[at..], usize::MAX).map(|_| ()).err(),
                    _ => entry::decode(&bytes[at..]).map(|_| ()).err(),
                },
                Some(DecodeError::Incomplete)
            );
            if cut_by_eof {
                self.finding(
                    severity,
                    name,
                    Some(u64::from(t.start)),
                    format!(
                        "the file ends inside the frame at {}: it was truncated \
                         (the queue never writes past a file's end)",
                        t.start
                    ),
                );
            } else {
                let dropped = if s.dropped > 0 {
                    format!(
                        ", with {} after it that were never durable",
                        frames(s.dropped)
                    )
                } else {
                    String::new()
                };
                self.finding(
                    Severity::Notice,
                    name,
                    Some(u64::from(t.start)),
                    format!(
                        "torn tail: bytes {}..{} past the last complete frame{dropped} \
                         (what a crash or a write in progress leaves); open zeroes them",
                        t.start, t.end
                    ),
                );
            }
        }
        if s.max_synced > size {
            self.finding(
                severity,
                name,
                Some(u64::from(size)),
                format!(
                    "a frame says bytes up to {} were synced, past the end of the \
                     {size}-byte file: it was truncated",
                    s.max_synced
                ),
            );
        }
        self.report.files.push(FileCheck {
            name: name.to_string(),
            kind,
            bytes: u64::from(size),
            frames: s.frames,
            data_end: u64::from(s.end),
        });
    }

    /// Live messages whose record was not found where the index says.
    fn unmatched(&mut self) {
        let left = std::mem::take(&mut self.expected);
        for ((seg, offset), id) in left {
            let name = segment::name(seg);
            if !self.read_segments.contains(&seg) {
                // Removed by its owner meanwhile (its messages finished or
                // moved), or refused for a damaged header (reported).
                continue;
            }
            let inside = self
                .damaged
                .get(&name)
                .is_some_and(|ranges| ranges.iter().any(|r| r.contains(&offset)));
            let why = if inside {
                "the bytes there are damaged"
            } else {
                "no record starts there"
            };
            self.damage(
                &name,
                Some(u64::from(offset)),
                format!("message {id} is live and its record should be here, but {why}"),
            );
        }
    }
}

/// How a header check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// Good: check the rest of the file.
    Good,
    /// Blank: it holds no data (open removes it).
    Blank,
    /// The owner removed the file during the check.
    Gone,
    /// Open would refuse it (a finding says why).
    Refused,
}

/// The newest checkpoint, as the check found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Newest {
    /// There is none: replay starts at journal file 1.
    None,
    /// Its fields.
    Found(CheckpointMeta),
    /// It does not decode (a finding says why).
    Damaged,
    /// Its owner removed it during the check.
    Unknown,
}

/// Every segment, journal and checkpoint file name.
fn names_of(files: &Files) -> Vec<String> {
    files
        .segments
        .iter()
        .map(|&id| segment::name(id))
        .chain(files.journals.iter().map(|&n| journal::name(n)))
        .chain(
            files
                .checkpoints
                .iter()
                .map(|&n| recovery::checkpoint_name(n)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::MemoryStorage;
    use crate::{Durability, Queue};

    const START: Timestamp = Timestamp(1_700_000_000_000);

    fn queue(mem: &MemoryStorage, clock: &ManualClock) -> Queue {
        QueueOptions::new()
            .segment_size(1 << 20)
            .journal_file_size(64 << 10)
            .durability(Durability::Immediate)
            .visibility_timeout(Duration::from_secs(30))
            .max_deliveries(0)
            .clock(Arc::new(clock.clone()))
            .open_storage(Arc::new(mem.clone()))
            .expect("open")
    }

    fn inspect(mem: &MemoryStorage, clock: &ManualClock) -> Inspector {
        Inspector::open_storage(Arc::new(mem.clone()), Arc::new(clock.clone())).expect("inspect")
    }

    fn image(mem: &MemoryStorage) -> Vec<(String, Vec<u8>)> {
        let mut names = mem.file_names();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let b = mem.read_file(&n).expect("file");
                (n, b)
            })
            .collect()
    }

    #[test]
    fn an_empty_storage_is_not_a_queue_directory() {
        let err = Inspector::open_storage(
            Arc::new(MemoryStorage::new()),
            Arc::new(ManualClock::new(START)),
        )
        .expect_err("no files");
        assert!(matches!(err, Error::BadDirectory { .. }), "{err}");
    }

    #[test]
    fn stats_peek_and_dead_letters_match_the_queue_and_change_nothing() {
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = queue(&mem, &clock);
        q.enqueue(b"low", 0).expect("enqueue");
        let urgent = q.enqueue(b"urgent", 9).expect("enqueue");
        q.enqueue(b"mid-a", 5).expect("enqueue");
        q.enqueue(b"mid-b", 5).expect("enqueue");
        q.enqueue_delayed(b"later", 5, Duration::from_secs(60))
            .expect("delayed");
        let poison = q.enqueue(b"poison", 1).expect("enqueue");
        let d = q.dequeue().expect("dequeue").expect("one");
        assert_eq!(d.id, urgent);
        q.ack(d.receipt).expect("ack");
        // Lease one, so one stays in flight.
        let leased = q.dequeue().expect("dequeue").expect("one");
        clock.advance(Duration::from_secs(1));
        let want = q.stats();
        let before = image(&mem);
        let ins = inspect(&mem, &clock);
        assert_eq!(ins.stats().expect("stats"), {
            let mut w = want.clone();
            w.bytes_on_disk = ins.snapshot.bytes_on_disk;
            w
        });
        assert_eq!(want.in_flight, 1);
        let peeked: Vec<u64> = ins
            .peek(None, 10)
            .expect("peek")
            .iter()
            .map(|p| p.id.0)
            .collect();
        let lane5: Vec<Peeked> = ins.peek(Some(5), 10).expect("peek");
        assert_eq!(lane5.len(), 1);
        assert_eq!(lane5[0].payload, b"mid-b");
        assert_eq!(lane5[0].enqueued_at, START);
        assert!(ins.peek(Some(200), 10).expect("peek").is_empty());
        assert_eq!(ins.peek(None, 1).expect("peek").len(), 1);
        assert!(image(&mem) == before, "inspecting wrote nothing");
        // The queue delivers exactly in peek's order.
        let mut order = Vec::new();
        while let Some(d) = q.dequeue().expect("dequeue") {
            order.push(d.id.0);
            if d.id == poison {
                q.dead_letter(d.receipt, "bad input").expect("dead letter");
            } else {
                q.ack(d.receipt).expect("ack");
            }
        }
        assert_eq!(order, peeked);
        q.ack(leased.receipt).expect("ack");
        let ins = inspect(&mem, &clock);
        let dead = ins.dead_letters().expect("dead");
        assert_eq!(dead, q.dead_letters().expect("dead"));
        assert_eq!(dead[0].reason, "bad input");
        assert!(ins.verify(|_, _| {}).expect("verify").is_clean());
    }

    #[test]
    fn explain_tells_every_step_and_when_history_was_trimmed() {
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = queue(&mem, &clock);
        let id = q.enqueue(b"job", 3).expect("enqueue");
        let d = q.dequeue().expect("dequeue").expect("one");
        q.nack(d.receipt, Duration::ZERO).expect("nack");
        let _lost = q.dequeue().expect("dequeue").expect("again");
        clock.advance(Duration::from_secs(31));
        let d = q.dequeue().expect("dequeue").expect("after expiry");
        assert_eq!(d.attempt, 3);
        let ins = inspect(&mem, &clock);
        let h = ins.explain(id).expect("explain");
        assert!(matches!(
            h.state,
            MessageState::InFlight {
                priority: 3,
                attempt: 3,
                ..
            }
        ));
        q.ack(d.receipt).expect("ack");
        let h = inspect(&mem, &clock).explain(id).expect("explain");
        let names: Vec<&str> = h.events.iter().map(Event::name).collect();
        assert_eq!(
            names,
            [
                "delivered",
                "nacked",
                "delivered",
                "expired",
                "delivered",
                "acked"
            ]
        );
        assert_eq!(
            h.events.iter().map(|e| e.attempt).collect::<Vec<_>>(),
            [1, 1, 2, 2, 3, 3]
        );
        assert_eq!(h.events[0].time, START.plus(Duration::from_secs(30)));
        assert_eq!(h.state, MessageState::Acked);
        assert_eq!(h.records.len(), 1);
        assert_eq!(h.records[0].enqueued_at, START);
        assert_eq!(h.records[0].size, 3);
        assert!(h.is_complete());
        assert!(matches!(
            inspect(&mem, &clock).explain(MessageId(999)),
            Err(Error::Unknown)
        ));

        // A close writes a checkpoint and drops the journal before it.
        let other = q.enqueue(b"kept", 1).expect("enqueue");
        q.close().expect("close");
        let h = inspect(&mem, &clock).explain(other).expect("explain");
        assert!(!h.is_complete());
        assert!(h.events.is_empty());
        let c = h.checkpoint.expect("in the checkpoint");
        assert_eq!(c.state, CheckpointState::Pending);
        assert_eq!(
            h.state,
            MessageState::Ready {
                priority: 1,
                attempts: 0
            }
        );
    }

    #[test]
    fn verify_finds_a_flipped_byte_and_a_truncated_journal_without_writing() {
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = queue(&mem, &clock);
        for i in 0..10u8 {
            q.enqueue(&[i; 50], i % 3).expect("enqueue");
        }
        // The queue stays open: inspecting never needs the lock.
        let ins = inspect(&mem, &clock);
        let mut calls = Vec::new();
        let clean = ins
            .verify(|done, total| calls.push((done, total)))
            .expect("verify");
        assert!(clean.is_clean(), "{:?}", clean.findings);
        assert_eq!(clean.records, 10);
        assert_eq!(clean.live_messages, 10);
        let total = calls.last().expect("progress").1;
        assert_eq!(calls.last(), Some(&(total, total)));
        assert_eq!(clean.bytes, total);

        // Record 4 starts at 32 + 4 * 90; flip a payload byte in it.
        let seg = segment::name(1);
        let at = 32 + 4 * 90 + 45;
        let old = mem.read_file(&seg).expect("segment")[at];
        mem.write_file_raw(&seg, at as u64, &[old ^ 0x10])
            .expect("flip");
        let before = image(&mem);
        let r = inspect(&mem, &clock).verify(|_, _| {}).expect("verify");
        assert!(image(&mem) == before, "verify wrote nothing");
        assert!(!r.is_clean());
        let damage: Vec<&Finding> = r.damage().collect();
        assert!(
            damage
                .iter()
                .any(|f| f.file.as_deref() == Some(&*seg) && f.offset == Some(32 + 4 * 90)),
            "{damage:?}"
        );
        assert!(
            damage.iter().any(|f| f.what.contains("message 5")),
            "{damage:?}"
        );
        let h = inspect(&mem, &clock)
            .explain(MessageId(5))
            .expect("explain");
        assert_eq!(h.state, MessageState::Lost { segment: None });
        assert_eq!(h.records.len(), 1);
        assert_eq!(h.records[0].offset, 32 + 4 * 90);
        assert!(h.records[0].damage.is_some());

        let (jnl, end) = r
            .files
            .iter()
            .rev()
            .find(|f| f.kind == FileKind::Journal && f.data_end > 32)
            .map(|f| (f.name.clone(), f.data_end))
            .expect("a journal with entries");
        mem.set_file_len_raw(&jnl, end - 7).expect("truncate");
        let r = inspect(&mem, &clock).verify(|_, _| {}).expect("verify");
        assert!(
            r.damage().any(|f| f.file.as_deref() == Some(&*jnl)
                && f.what.contains("truncated")
                && f.offset.is_some()),
            "{:?}",
            r.findings
        );
        q.enqueue(b"still works", 0)
            .expect("the owner is unaffected");
    }
}
