//! Read-only inspection of a queue directory: counters, the stored
//! attributes, the next messages, dead letters, one message's history, and
//! a full check of every file.
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
//!    `Index::apply` calls, with the stored attributes adopted as open
//!    adopts them (`attrs::read`); a stored attributes file open would
//!    refuse makes every state-reading method fail as open would. Nothing
//!    decodes bytes apart from `codec`.
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
//!
//! The module's parts: this file holds the [`Inspector`], [`lock_state`],
//! the pinned snapshot the inspector reads through (a [`Storage`] adapter
//! that refuses every change) and the one place file names are told apart;
//! `report` the public types it answers with; `explain` a message's
//! history; `verify` the full check of every file.

mod explain;
mod report;
mod verify;

pub use report::{
    CheckpointInfo, CheckpointState, Event, EventKind, FileCheck, FileKind, Finding, History,
    LockState, MessageState, Peeked, RecordInfo, Severity, StoredAttributes, VerifyReport,
};

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::{QueueOptions, MAX_SEGMENT_SIZE};
use crate::error::{Error, Result};
use crate::message::{DeadLetter, MessageId, RecoveryReport, Stats};
use crate::recovery::{self, Scanned};
use crate::storage::{DiskStorage, Storage, StorageFile};
use crate::{attrs, layout, segment};

/// How many times a scan of a directory another process has open starts
/// over when a file vanished under it (a busy owner removes files often).
const SCAN_ATTEMPTS: usize = 10;

/// Files are read in pieces of this size, so progress moves smoothly.
const READ_CHUNK: usize = 4 << 20;

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
    let files = layout::Files::from_names(storage.list()?);
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

/// A segment, journal, checkpoint or attributes file (names are the
/// layout's; see `crate::layout`).
fn is_queue_file(name: &str) -> bool {
    matches!(
        layout::FileName::classify(name),
        Some(
            layout::FileName::Segment(_)
                | layout::FileName::Journal(_)
                | layout::FileName::Checkpoint(_)
                | layout::FileName::Attributes
        )
    )
}

/// One reading of a directory.
#[derive(Debug)]
struct Snapshot {
    /// The files as they were listed, held open.
    files: Arc<Pinned>,
    /// The file names seen, sorted.
    names: Vec<String>,
    bytes_on_disk: u64,
    /// The stored attributes (`None`: the directory has none); an error
    /// (a damaged file) is kept, as open would refuse the directory.
    attributes: std::result::Result<Option<StoredAttributes>, Error>,
    /// What open would rebuild, with the stored attributes adopted; an
    /// error (a damaged header, say) is kept so that `verify` can still
    /// check every file.
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
            if is_queue_file(&name) && pinning {
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
        // Open reads the attributes first and refuses a damaged file.
        self.snapshot.attributes.as_ref().map_err(copy_error)?;
        self.snapshot.scan.as_ref().map_err(copy_error)
    }

    /// The attributes stored in the directory (`attributes.lla`), which
    /// every opener, the `lanelog` tool included, uses for the options it
    /// does not name. `None` when the directory has none: one written by
    /// format version 1 only (see [`Inspector::format_version`]), whose
    /// openers use the defaults, or one whose first open was cut short.
    ///
    /// # Errors
    /// The error open would fail with when the file is damaged or of an
    /// unknown version ([`Error::Corrupt`], [`Error::UnsupportedVersion`]),
    /// or holds values open refuses.
    pub fn attributes(&self) -> Result<Option<StoredAttributes>> {
        self.snapshot
            .attributes
            .as_ref()
            .cloned()
            .map_err(copy_error)
    }

    /// The newest format version among the files open would keep (its
    /// segments and its newest journal file): 1 for a directory only
    /// format version 1 wrote, which stores no attributes.
    ///
    /// # Errors
    /// As [`Inspector::recovery_report`].
    pub fn format_version(&self) -> Result<u32> {
        let s = self.scanned()?;
        let segments = s.segments.values().map(segment::Segment::version);
        let journal = s.last_journal.as_ref().map(|j| j.version);
        Ok(segments
            .chain(journal)
            .max()
            .unwrap_or(crate::codec::FORMAT_VERSION))
    }

    /// The counters [`crate::Queue::stats`] gives, as of the reading.
    ///
    /// `segments` counts the segments an open would keep; `bytes_on_disk`
    /// is the size of every segment, journal, checkpoint and attributes
    /// file present.
    /// Messages still leased count as in flight.
    ///
    /// # Errors
    /// As [`Inspector::recovery_report`].
    pub fn stats(&self) -> Result<Stats> {
        let s = self.scanned()?;
        let now = self.clock.now();
        let oldest = s.index.oldest_ready().and_then(|(_, loc)| {
            let seg = s.segments.get(&loc.segment)?;
            segment::read_header(&**seg.file(), loc.offset, self.limit(seg.size()))
        });
        Ok(s.index.stats(
            s.segments.len() as u64,
            self.snapshot.bytes_on_disk,
            oldest.map(|h| now.since(Timestamp(h.enqueued_ms))),
        ))
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
            let (enqueued, payload, key, damage) = match s.segments.get(&c.loc.segment) {
                None => (
                    0,
                    Vec::new(),
                    Vec::new(),
                    Some("its segment is missing".to_string()),
                ),
                Some(seg) => {
                    let max = self.limit(seg.size());
                    match segment::read_record(&**seg.file(), c.loc.offset, max, seg.seed()) {
                        Ok(r) => (r.header.enqueued_ms, r.payload, r.key, None),
                        Err(segment::ReadError::Io(e)) => return Err(e.into()),
                        Err(segment::ReadError::Corrupt(e)) => {
                            let enqueued = segment::read_header(&**seg.file(), c.loc.offset, max)
                                .map_or(0, |h| h.enqueued_ms);
                            let what = format!(
                                "the record at {} offset {} is damaged ({e})",
                                crate::layout::segment_name(c.loc.segment),
                                c.loc.offset
                            );
                            (enqueued, Vec::new(), Vec::new(), Some(what))
                        }
                    }
                }
            };
            out.push(Peeked {
                id: MessageId(c.id),
                priority: c.priority,
                attempts: c.attempt,
                enqueued_at: Timestamp(enqueued),
                deadline: (c.deadline > 0).then_some(Timestamp(c.deadline)),
                key: (!key.is_empty()).then(|| String::from_utf8_lossy(&key).into_owned()),
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
        Ok(s.index
            .dead_letter_list(|loc| segment::enqueued_ms(&s.segments, loc.segment, loc.offset)))
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
    let mut attempt = 1;
    loop {
        let files = Arc::new(Pinned::new(storage.clone())?);
        let names = files.names.clone();
        let bytes_on_disk = queue_bytes(&*files, &names)?;
        let mut opts = QueueOptions::new();
        let attributes = read_attributes(&*files, &names, &mut opts);
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
            attributes,
            scan,
        });
    }
}

/// Read the stored attributes as open does (`attrs::read`, then the same
/// check of their values) and adopt them into `opts`, so the scan is the
/// one open would make.
fn read_attributes(
    storage: &dyn Storage,
    names: &[String],
    opts: &mut QueueOptions,
) -> std::result::Result<Option<StoredAttributes>, Error> {
    let files = layout::Files::from_names(names.iter().cloned());
    let Some((a, revision)) = attrs::read(storage, files.attributes)? else {
        return Ok(None);
    };
    let mut adopted = opts.clone();
    adopted.adopt(&a);
    adopted.validate().map_err(|e| Error::Corrupt {
        file: layout::ATTRIBUTES_NAME.to_string(),
        offset: 0,
        detail: format!("stored attributes are not valid options: {e}"),
    })?;
    *opts = adopted;
    // The header's time; the header itself was checked by `attrs::read`.
    let mut head = [0u8; crate::codec::header::SIZE];
    let written = storage
        .open(layout::ATTRIBUTES_NAME)
        .and_then(|f| f.read_at(0, &mut head))
        .ok()
        .and_then(|()| {
            crate::codec::header::FileHeader::decode(
                crate::codec::header::FileKind::Attributes,
                &head,
            )
            .ok()
        })
        .map_or(0, |h| h.created_ms);
    let max = opts.max_message_bytes() as u64;
    Ok(Some(StoredAttributes::from_codec(
        &a, revision, written, max,
    )))
}

/// Bytes of every segment, journal, checkpoint and attributes file present.
fn queue_bytes(storage: &dyn Storage, names: &[String]) -> Result<u64> {
    let mut total = 0;
    for name in names {
        if is_queue_file(name) {
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

#[cfg(test)]
mod tests {
    //! The inspector over a queue in memory; `explain` and `verify` have
    //! their own tests beside them, using the helpers here.

    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::MemoryStorage;
    use crate::{Durability, Queue};

    pub(super) const START: Timestamp = Timestamp(1_700_000_000_000);

    /// A queue with small files, leases of 30 s and no delivery limit.
    pub(super) fn queue(mem: &MemoryStorage, clock: &ManualClock) -> Queue {
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

    pub(super) fn inspect(mem: &MemoryStorage, clock: &ManualClock) -> Inspector {
        Inspector::open_storage(Arc::new(mem.clone()), Arc::new(clock.clone())).expect("inspect")
    }

    /// Every file's name and bytes, to show that nothing was written.
    pub(super) fn image(mem: &MemoryStorage) -> Vec<(String, Vec<u8>)> {
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
    fn attributes_read_as_stored_and_a_damaged_file_refuses_as_open_does() {
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = QueueOptions::new()
            .segment_size(1 << 20)
            .journal_file_size(64 << 10)
            .max_deliveries(0)
            .retention(Duration::from_secs(3600))
            .dedup_window(Duration::from_secs(60))
            .default_wait(Duration::from_millis(20))
            .clock(Arc::new(clock.clone()))
            .open_storage(Arc::new(mem.clone()))
            .expect("open");
        q.enqueue(b"job", 1).expect("enqueue");
        let ins = inspect(&mem, &clock);
        let a = ins.attributes().expect("read").expect("stored");
        assert_eq!((a.revision, a.written_at), (1, START));
        assert_eq!(a.segment_size, 1 << 20);
        assert_eq!(a.max_message_size, (1 << 20) - 32 - 40);
        assert_eq!(a.max_deliveries, 0);
        assert_eq!(a.visibility_timeout, Duration::from_secs(30));
        assert_eq!(a.retention, Some(Duration::from_secs(3600)));
        assert_eq!(a.dead_letter_retention, None);
        assert_eq!(a.dedup_window, Duration::from_secs(60));
        assert_eq!(a.default_delay, Duration::ZERO);
        assert_eq!(a.default_wait, Duration::from_millis(20));
        assert_eq!(ins.format_version().expect("version"), 2);
        assert!(
            ins.stats().expect("stats").bytes_on_disk
                >= (1 << 20) + crate::codec::attributes::SIZE as u64
        );
        drop(q);

        // A flipped bit: open refuses the directory, and so does every
        // method that reads its state; verify says why.
        let name = layout::ATTRIBUTES_NAME;
        let old = mem.read_file(name).expect("attributes")[70];
        mem.write_file_raw(name, 70, &[old ^ 1]).expect("flip");
        let ins = inspect(&mem, &clock);
        let refused = |e: Error| matches!(e, Error::Corrupt { ref file, .. } if file == name);
        assert!(refused(ins.attributes().expect_err("damaged")));
        assert!(refused(ins.stats().expect_err("damaged")));
        assert!(refused(ins.peek(None, 1).expect_err("damaged")));
        let r = ins.verify(|_, _| {}).expect("verify");
        let damage: Vec<&Finding> = r.damage().collect();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!(damage[0].file.as_deref(), Some(name));
        assert!(r.files.iter().all(|f| f.kind != FileKind::Attributes));
        assert!(QueueOptions::new()
            .clock(Arc::new(clock.clone()))
            .open_storage(Arc::new(mem.clone()))
            .is_err());
    }
}
