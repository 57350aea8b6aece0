//! The open sequence: find the files, load the newest checkpoint, scan the
//! segments written after it, replay the journal after it into the index,
//! cut torn tails, and release in-flight messages.
//!
//! Invariants:
//!
//! A. Nothing is modified until every file has been read and judged: a
//!    directory with an unknown format version or unrepairable damage is
//!    refused untouched.
//! B. Recovery only removes what holds no live message (blank files, files
//!    whose messages all finished, superseded checkpoints and journal files)
//!    and only zeroes bytes past the true end of a file, so a crash during
//!    recovery leaves a directory that recovers to the same state.
//! C. The state rebuilt is what `Index::add` and `Index::apply` make of the
//!    durable records and entries, the same calls the live queue makes.
//! D. A segment or journal file is synced only when its scan kept a frame
//!    (a record or journal frame past where the scan started) or found a
//!    torn tail to zero (the zeroing is synced). Where a scan starts, every
//!    byte before is durable already:
//!    - the checkpoint's journal offset in its journal file and its head
//!      offset in its head segment: a checkpoint is written only after every
//!      file it describes was synced (invariant A of `engine::checkpoint`).
//!      That holds whether or not the checkpoint's own rename is durable
//!      yet: if it is lost, the older checkpoint found instead names
//!      positions synced earlier still, and what the newer one supersedes is
//!      removed only after its rename was synced;
//!    - the header of every later file: a segment's or journal file's header
//!      and directory entry are durable before anything is written to it
//!      (invariant A of `segment` and of `journal`). A later segment is never
//!      written before the one before it is sealed, synced, so segments
//!      below the head are durable whole and are not scanned.
//!
//!    Past a scan's end, reads see zeros (a clean end) or a torn tail that
//!    is zeroed and synced. The only zeros ever written over data are this
//!    zeroing, and a new file is durably zero, so the disk holds zeros there
//!    too. Hence when a scan keeps nothing, the file is durable up to its
//!    end: the `synced` offset a recovered segment or journal starts with
//!    (its end) is true with no sync (invariant C of `segment`), and
//!    nothing decided from what was read (a removal, a later checkpoint)
//!    rests on bytes a killed process left only in the page cache. When a
//!    scan keeps a frame, those bytes may be only in the page cache, so the
//!    file is synced before anything else is changed. Open after a clean
//!    close (a checkpoint at the very end of every file) therefore makes no
//!    sync at all.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::codec::checkpoint::{
    self, CheckpointError, CheckpointKey, CheckpointMessage, CheckpointMeta, CheckpointSegment,
    CheckpointSink, CheckpointState,
};
use crate::codec::header::{self, FileHeader, FileKind, HeaderError};
use crate::codec::record;
use crate::codec::scan::Scan;
use crate::config::QueueOptions;
use crate::error::{Error, Result};
use crate::index::{Completed, Dead, Index, Loc, Totals};
use crate::journal::{self, Journal};
use crate::layout::{self, checkpoint_name, Files};
use crate::message::{range64, FileRange, RecoveryReport};
use crate::segment::{self, Segment};
use crate::storage::{read_all, with_contents, Storage, StorageFile};
use crate::{codec::FORMAT_VERSION, config::MAX_SEGMENT_SIZE};

/// Everything the queue needs to resume.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub index: Index,
    pub segments: BTreeMap<u32, Segment>,
    pub journal: Journal,
    /// Whether recovery made the journal file (a fresh directory): its
    /// directory entry is not synced yet (the open syncs it).
    pub journal_made: bool,
    pub next_id: u64,
    pub checkpoint_number: u64,
    pub checkpoint_bytes: u64,
    /// Segments holding keyed records no checkpoint has seen yet.
    pub keyed_segments: Vec<u32>,
    /// Segments holding records a replayed retention cut removed that the
    /// checkpoint does not hold.
    pub cut_segments: Vec<u32>,
    /// The head segment of the checkpoint loaded (0 without one).
    pub checkpoint_head: u32,
    /// Where the checkpoint loaded says replay resumes.
    pub checkpoint_position: Option<crate::engine::Position>,
    pub report: RecoveryReport,
}

/// What reading a directory found, before recovery changes anything.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub index: Index,
    pub segments: BTreeMap<u32, Segment>,
    /// The newest journal file: number, file, size, end of its entries.
    pub last_journal: Option<LastJournal>,
    pub journal_files: Vec<u64>,
    /// The journal file the checkpoint names (where a new journal starts).
    pub checkpoint_journal: u64,
    pub next_id: u64,
    pub checkpoint_number: u64,
    pub checkpoint_bytes: u64,
    pub keyed_segments: Vec<u32>,
    pub cut_segments: Vec<u32>,
    pub checkpoint_head: u32,
    pub checkpoint_position: Option<crate::engine::Position>,
    pub report: RecoveryReport,
    /// Live messages whose segment file is gone (id, segment); the report
    /// counts them in `missing_messages`.
    pub missing: Vec<(u64, u32)>,
    /// The changes recovery makes next (the report lists them).
    fixes: Vec<Fix>,
}

/// The newest journal file found, where appends resume.
#[derive(Debug)]
pub(crate) struct LastJournal {
    pub number: u64,
    pub file: Arc<dyn StorageFile>,
    pub size: u32,
    /// The end of its valid entries.
    pub end: u32,
    /// Its header's format version.
    pub version: u32,
}

/// A change recovery will make once everything has been read (invariant A).
#[derive(Debug)]
enum Fix {
    Remove(String),
    Zero(Arc<dyn StorageFile>, Range<u64>),
    /// A file whose scan kept frames past its known-durable start: what a
    /// killed process left in the page cache must be durable before
    /// anything decided from it (removing a finished segment, a later
    /// checkpoint, a new frame claiming it synced) can be (invariant D).
    Sync(Arc<dyn StorageFile>),
}

/// A segment or journal file's size; refuses one larger than any the queue
/// makes (positions inside these files are 32-bit).
fn file_size(name: &str, file: &dyn StorageFile) -> Result<u32> {
    let len = file.len()?;
    if len > MAX_SEGMENT_SIZE {
        return Err(Error::Corrupt {
            file: name.to_string(),
            offset: MAX_SEGMENT_SIZE,
            detail: format!("{len} bytes: larger than any file the queue makes"),
        });
    }
    Ok(len as u32)
}

fn header_error(file: &str, e: HeaderError) -> Error {
    match e {
        HeaderError::Version(found) => Error::UnsupportedVersion {
            file: file.to_string(),
            found,
            supported: FORMAT_VERSION,
        },
        other => Error::Corrupt {
            file: file.to_string(),
            offset: 0,
            detail: format!("bad file header: {other:?}"),
        },
    }
}

/// Check the header of every file before touching anything; returns the
/// names of blank files (created, never initialised) and the format version
/// of every other one.
fn check_headers(
    storage: &dyn Storage,
    files: &Files,
) -> Result<(Vec<String>, BTreeMap<String, u32>)> {
    let mut blank = Vec::new();
    let mut versions = BTreeMap::new();
    let named = files
        .segments
        .iter()
        .map(|&id| (layout::segment_name(id), FileKind::Segment))
        .chain(
            files
                .journals
                .iter()
                .map(|&n| (layout::journal_name(n), FileKind::Journal)),
        )
        .chain(
            files
                .checkpoints
                .iter()
                .map(|&n| (checkpoint_name(n), FileKind::Checkpoint)),
        );
    for (name, kind) in named {
        match check_header(storage, &name, kind)? {
            None => blank.push(name),
            Some(h) => {
                versions.insert(name, h.version);
            }
        }
    }
    Ok((blank, versions))
}

/// Judge one file's header as open does: `None` for a blank file (created,
/// never initialised, so it holds no data), the header otherwise.
pub(crate) fn check_header(
    storage: &dyn Storage,
    name: &str,
    kind: FileKind,
) -> Result<Option<FileHeader>> {
    let file = storage.open(name)?;
    let mut b = [0u8; header::SIZE];
    let len = file.len()?;
    if len < header::SIZE as u64 {
        if len == 0 {
            return Ok(None);
        }
        return Err(header_error(name, HeaderError::Short));
    }
    file.read_at(0, &mut b)?;
    let h = match FileHeader::decode(kind, &b) {
        Ok(h) => h,
        Err(HeaderError::Blank) => return Ok(None),
        // A header torn while the file was being made (its write is
        // synced before any frame goes in): nothing else was written.
        Err(HeaderError::BadChecksum | HeaderError::WrongMagic)
            if kind != FileKind::Checkpoint && only_zeros_after_header(&*file)? =>
        {
            return Ok(None)
        }
        Err(e) => return Err(header_error(name, e)),
    };
    if kind != FileKind::Checkpoint && len > MAX_SEGMENT_SIZE {
        return Err(Error::Corrupt {
            file: name.to_string(),
            offset: 0,
            detail: format!("file of {len} bytes is over the 2 GiB limit"),
        });
    }
    Ok(Some(h))
}

fn only_zeros_after_header(file: &dyn StorageFile) -> io::Result<bool> {
    let bytes = read_all(file)?;
    Ok(bytes
        .get(header::SIZE..)
        .is_none_or(|rest| rest.iter().all(|&b| b == 0)))
}

/// Note what a scan found in the report, schedule its torn tail to be
/// zeroed, and schedule the file to be synced if the scan kept frames
/// (invariant D: nothing before the scan's start needs it, and zeroing a
/// torn tail syncs the file anyway).
fn judge<F>(
    name: &str,
    file: &Arc<dyn StorageFile>,
    s: &Scan<F>,
    report: &mut RecoveryReport,
    fixes: &mut Vec<Fix>,
) {
    for d in &s.damaged {
        report.damaged.push(FileRange {
            file: name.to_string(),
            range: range64(d.clone()),
        });
    }
    if let Some(t) = &s.torn {
        report.torn_tails.push(FileRange {
            file: name.to_string(),
            range: range64(t.clone()),
        });
        report.frames_dropped += s.dropped_frames as u64;
        fixes.push(Fix::Zero(file.clone(), range64(t.clone())));
    } else if !s.frames.is_empty() {
        fixes.push(Fix::Sync(file.clone()));
    }
}

/// Run the open sequence on a locked directory.
pub(crate) fn recover(
    storage: &dyn Storage,
    opts: &QueueOptions,
    now_ms: u64,
) -> Result<Recovered> {
    let s = scan_directory(storage, opts, true)?;
    // An override that stored data cannot honour is refused before
    // anything is changed.
    if opts.names_max_message_size() {
        let largest = largest_stored(&s.segments)?;
        if largest as usize > opts.max_message_bytes() {
            return Err(Error::InvalidArgument(format!(
                "max_message_size {} is below the largest message stored ({largest} bytes)",
                opts.max_message_bytes()
            )));
        }
    }
    apply_fixes(storage, s.fixes)?;
    let new_size = opts.journal_file_size as u32;
    let journal_made = s.last_journal.is_none();
    let journal = match s.last_journal {
        Some(j) => Journal::resume(
            j.number,
            j.file,
            (j.size, j.end),
            new_size,
            s.journal_files,
            j.version,
        ),
        None => {
            let n = s.checkpoint_journal.max(1);
            // Its directory entry is synced by the open, before it writes
            // (with the fresh segment's and the attributes').
            let file = Journal::create_unlisted(storage, n, new_size, now_ms)
                .map_err(std::io::Error::from)?;
            let v = crate::codec::FORMAT_VERSION;
            Journal::resume(
                n,
                file,
                (new_size, header::SIZE as u32),
                new_size,
                vec![n],
                v,
            )
        }
    };
    Ok(Recovered {
        index: s.index,
        segments: s.segments,
        journal,
        journal_made,
        next_id: s.next_id,
        checkpoint_number: s.checkpoint_number,
        checkpoint_bytes: s.checkpoint_bytes,
        keyed_segments: s.keyed_segments,
        cut_segments: s.cut_segments,
        checkpoint_head: s.checkpoint_head,
        checkpoint_position: s.checkpoint_position,
        report: s.report,
    })
}

/// Read a directory the way open does, and change nothing: the index,
/// segments and report, plus the fixes `recover` would apply. With
/// `release_in_flight` (open), messages leased before a crash are ready
/// again; without (inspecting a queue another process may own), they stay
/// in flight as the journal left them.
pub(crate) fn scan_directory(
    storage: &dyn Storage,
    opts: &QueueOptions,
    release_in_flight: bool,
) -> Result<Scanned> {
    let files = layout::list(storage)?;
    layout::check_numbers(&files)?;
    let (blank, versions) = check_headers(storage, &files)?;
    let mut report = RecoveryReport::default();
    let mut fixes: Vec<Fix> = Vec::new();
    for name in blank.iter().chain(&files.temporary) {
        fixes.push(Fix::Remove(name.clone()));
        report.files_removed.push(name.clone());
    }
    let is_blank = |n: &str| blank.iter().any(|b| b == n);

    // The newest checkpoint, if any; older ones are superseded.
    let mut meta = CheckpointMeta::default();
    let mut index = Index::new(Totals::default(), opts.mark_granularity());
    let mut checkpoint_bytes = 0;
    let mut records_per_segment: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    // Checkpointed messages go in first; a relocated copy found by the
    // segment scan below updates them.
    let live_checkpoints: Vec<u64> = files
        .checkpoints
        .iter()
        .copied()
        .filter(|&n| !is_blank(&checkpoint_name(n)))
        .collect();
    if let Some(&n) = live_checkpoints.last() {
        let name = checkpoint_name(n);
        let mut sink = Loader {
            index: &mut index,
            run: (0, 0),
            reasons: Vec::new(),
            segments: &mut records_per_segment,
        };
        let decoded = with_contents(&*storage.open(&name)?, |bytes| {
            checkpoint_bytes = bytes.len() as u64;
            checkpoint::decode(bytes, &mut sink)
        })?;
        let (run, dead_reasons) = (sink.run, sink.reasons);
        index.count_live(run.0, run.1);
        meta = decoded.map_err(|e| match e {
            CheckpointError::Header(h) => header_error(&name, h),
            CheckpointError::Body(d) => Error::Corrupt {
                file: name.clone(),
                offset: 0,
                detail: d.to_string(),
            },
        })?;
        for (id, r) in dead_reasons {
            index.set_reason(id, r);
        }
        if meta.journal_file > layout::MAX_FILE_NUMBER {
            return Err(Error::Corrupt {
                file: name,
                offset: 0,
                detail: format!("journal file number {} out of range", meta.journal_file),
            });
        }
        if meta.version == 1 {
            // A version 1 checkpoint has no retention marks: every message
            // in it was enqueued by the time it was written.
            index.restore_mark(meta.next_id, meta.created_ms);
        }
        index.set_totals(Totals {
            acked: meta.acked_total,
            deadline_missed: meta.deadline_missed_total,
            expired: meta.expired_total,
            dead_expired: meta.dead_expired_total,
        });
        report.checkpoint = Some(n);
        for old in &live_checkpoints[..live_checkpoints.len() - 1] {
            fixes.push(Fix::Remove(checkpoint_name(*old)));
            report.files_removed.push(checkpoint_name(*old));
        }
    }
    let has_checkpoint = report.checkpoint.is_some();
    // No id below a retention mark may be handed out again: a cut by that
    // mark would remove the new message (a checkpoint's marks never pass
    // its next id, but a damaged one is not trusted to keep that).
    let marks_end = index.marks().iter().map(|(end, _)| end).max().unwrap_or(0);
    let mut next_id = meta.next_id.max(marks_end.min(crate::codec::MAX_ID));

    // Segments: open all, scan those newer than the checkpoint's head.
    let mut segments = BTreeMap::new();
    let mut keyed_segments = Vec::new();
    // Results are applied before the journal entries that came before them
    // (which then find nothing): the segments freed show in the live counts.
    let mut drained = Vec::new();
    for &id in &files.segments {
        let name = layout::segment_name(id);
        if is_blank(&name) {
            continue;
        }
        let file = storage.open(&name)?;
        let size = file_size(&name, &*file)?;
        let covered = has_checkpoint && u64::from(id) < meta.head_segment;
        // The count only steers compaction; a checksummed checkpoint
        // claiming more records than the file can hold (a frame is at least
        // a record header) is capped rather than trusted.
        let (mut records, mut largest) = records_per_segment.get(&id).map_or((0, 0), |&(n, l)| {
            (n.min(size / record::HEADER_SIZE as u32), l)
        });
        let version = versions.get(&name).copied().unwrap_or(FORMAT_VERSION);
        let mut end = size;
        if !covered {
            let start = if has_checkpoint && u64::from(id) == meta.head_segment {
                (meta.head_offset as usize).max(header::SIZE)
            } else {
                header::SIZE
            };
            let max = opts.max_message_bytes().max(size as usize);
            let (s, keys) = with_contents(&*file, |buf| {
                let s = segment::scan(buf, start, max, record::Seed::of(version, id));
                let keys: BTreeMap<u32, Vec<u8>> = s
                    .frames
                    .iter()
                    .filter(|(_, h)| h.key_len > 0)
                    .map(|(o, h)| {
                        let r = h.key_range();
                        let at = *o as usize;
                        (*o, buf[at + r.start..at + r.end].to_vec())
                    })
                    .collect();
                (s, keys)
            })?;
            judge(&name, &file, &s, &mut report, &mut fixes);
            report.records_scanned += s.frames.len() as u64;
            if !keys.is_empty() {
                keyed_segments.push(id);
            }
            let mut added = 0;
            for (offset, h) in &s.frames {
                let loc = Loc {
                    segment: id,
                    offset: *offset,
                };
                next_id = next_id.max(h.id + 1);
                largest = largest.max(h.len);
                if h.relocated() && index.relocate(h.id, h.priority, loc, h.result()) {
                    continue;
                }
                if h.result() {
                    // Its message may be in this segment, among the records
                    // not counted yet: count them first, so finishing it
                    // takes it off the count.
                    index.count_live(id, std::mem::take(&mut added));
                    index.add_result(h.id, h.priority, loc, h.enqueued_ms, &mut drained);
                    continue;
                }
                let key = keys.get(offset).map_or(&[][..], Vec::as_slice);
                if index.place_record(h, key, loc) {
                    added += 1;
                }
            }
            index.count_live(id, added);
            end = s.end;
            records = records.saturating_add(s.frames.len() as u32);
        }
        let seg = Segment::recovered(id, file, size, end, (records, largest), version);
        segments.insert(id, seg);
    }

    // Journal: replay every file from the checkpoint's position on.
    let mut journal_files: Vec<u64> = Vec::new();
    let mut last: Option<LastJournal> = None;
    for &n in &files.journals {
        let name = layout::journal_name(n);
        if is_blank(&name) {
            continue;
        }
        if has_checkpoint && n < meta.journal_file {
            fixes.push(Fix::Remove(name.clone()));
            report.files_removed.push(name);
            continue;
        }
        let file = storage.open(&name)?;
        let size = file_size(&name, &*file)?;
        let start = if has_checkpoint && n == meta.journal_file {
            (meta.journal_offset as usize).max(header::SIZE)
        } else {
            header::SIZE
        };
        let version = versions.get(&name).copied().unwrap_or(FORMAT_VERSION);
        let s = with_contents(&*file, |buf| journal::scan(buf, start, version, n))?;
        judge(&name, &file, &s, &mut report, &mut fixes);
        for (_, (entries, _)) in &s.frames {
            for e in entries {
                report.entries_replayed += 1;
                if e.kind.names_message() {
                    next_id = next_id.max(e.id + 1);
                } else {
                    next_id = next_id.max(e.id);
                }
                index.apply(e, &mut drained);
            }
        }
        journal_files.push(n);
        last = Some(LastJournal {
            number: n,
            file,
            size,
            end: s.end,
            version,
        });
    }
    // A segment a replayed cut removed records from that the checkpoint
    // does not hold: the counters count them from it (invariant D of
    // `index`), so it outlives the next checkpoint.
    let checkpoint_head = if has_checkpoint {
        meta.head_segment.min(u64::from(u32::MAX)) as u32
    } else {
        0
    };
    let cut_segments: Vec<u32> = index
        .take_cut_segments()
        .into_iter()
        .filter(|&id| id >= checkpoint_head && segments.contains_key(&id))
        .collect();
    if release_in_flight {
        report.in_flight_released = index.release_all_in_flight();
    }
    // Live messages whose segment is gone cannot be delivered.
    let lost: Vec<u32> = index
        .segments_with_live()
        .filter(|id| !segments.contains_key(id))
        .collect();
    let mut missing = Vec::new();
    for id in lost {
        index.locations(|m, loc, _| {
            if loc.segment == id {
                missing.push((m, id));
            }
        });
        report.missing_messages += index.drop_segment(id);
    }

    // No id the index holds may be handed out again. A checkpoint's
    // messages are all below its next id, but a damaged one is not trusted
    // to keep that: a new message would share an id with a held one, or,
    // below the lowest held one (which the cut bound settles on next), be
    // taken for one a retention cut removed and dropped as it is enqueued.
    let held_end = index.highest_placed().saturating_add(1);
    next_id = next_id.max(held_end.min(crate::codec::MAX_ID));

    // Marks kept for dead letters, or left by finished messages, below the
    // lowest message a cut could remove call for no cut now.
    index.settle_cut_below(next_id);

    // Segments with nothing live are finished, except the newest, which
    // takes the next appends, and those holding what replay needs that no
    // checkpoint holds yet: the open queue deletes those after its next
    // checkpoint (invariant D of `engine::space`).
    let newest = segments.keys().next_back().copied();
    let finished: Vec<u32> = segments
        .keys()
        .copied()
        .filter(|&id| {
            Some(id) != newest
                && index.live_in(id) == 0
                && !keyed_segments.contains(&id)
                && !cut_segments.contains(&id)
        })
        .collect();
    for id in finished {
        segments.remove(&id);
        fixes.push(Fix::Remove(layout::segment_name(id)));
        report.files_removed.push(layout::segment_name(id));
    }

    Ok(Scanned {
        index,
        segments,
        last_journal: last,
        journal_files,
        checkpoint_journal: meta.journal_file,
        next_id: next_id.max(1),
        checkpoint_number: report.checkpoint.unwrap_or(0),
        checkpoint_bytes,
        keyed_segments,
        cut_segments,
        checkpoint_head,
        checkpoint_position: has_checkpoint.then(|| meta.position()),
        report,
        missing,
        fixes,
    })
}

/// The largest payload (message or result) stored in `segments`. A
/// version 1 segment's recorded largest payload covers at most the records
/// scanned since a version 1 checkpoint (which did not keep it), so such a
/// segment is read whole.
fn largest_stored(segments: &BTreeMap<u32, Segment>) -> Result<u32> {
    let mut largest = 0;
    for s in segments.values() {
        let here = if s.version() == 1 {
            with_contents(&**s.file(), |buf| {
                let scan = segment::scan(buf, header::SIZE, buf.len(), s.seed());
                scan.frames.iter().map(|(_, h)| h.len).max().unwrap_or(0)
            })?
        } else {
            s.largest()
        };
        largest = largest.max(here);
    }
    Ok(largest)
}

/// Loads a checkpoint into the index. `run` counts consecutive records of
/// one segment, handed to [`Index::count_live`] when the segment changes
/// (and once more by the caller at the end).
struct Loader<'a> {
    index: &'a mut Index,
    run: (u32, u64),
    reasons: Vec<(u64, String)>,
    segments: &'a mut BTreeMap<u32, (u32, u32)>,
}

impl CheckpointSink for Loader<'_> {
    fn segment(&mut self, s: CheckpointSegment) {
        self.segments.insert(s.id, (s.records, s.largest));
    }

    fn message(&mut self, m: CheckpointMessage) {
        let index = &mut *self.index;
        if self.run.0 != m.segment {
            index.count_live(self.run.0, self.run.1);
            self.run = (m.segment, 0);
        }
        self.run.1 += 1;
        let loc = Loc {
            segment: m.segment,
            offset: m.offset,
        };
        let (id, p, a) = (m.id, m.priority, m.attempt);
        match m.state {
            CheckpointState::Pending => index.place(id, p, loc, m.time_ms, a, m.deadline_ms),
            CheckpointState::InFlight => {
                index.place_in_flight(id, p, loc, a, m.time_ms, m.deadline_ms)
            }
            CheckpointState::Dead => {
                let dead = Dead {
                    loc,
                    priority: p,
                    attempt: a,
                    at: m.time_ms,
                    reason: String::new(),
                };
                index.place_dead(id, dead);
            }
            CheckpointState::Completed => {
                let c = Completed {
                    loc,
                    priority: p,
                    attempt: a,
                    at: m.time_ms,
                };
                index.place_completed(id, c);
            }
        }
    }

    fn reason(&mut self, id: u64, reason: String) {
        self.reasons.push((id, reason));
    }

    fn key(&mut self, k: CheckpointKey<'_>) {
        self.index.remember_key(k.key, k.id, k.at_ms);
    }

    fn mark(&mut self, end: u64, at_ms: u64) {
        self.index.restore_mark(end, at_ms);
    }
}

/// Make the changes recovery decided on: syncs first, so that nothing read
/// from the page cache is relied on before it is durable (invariant D),
/// then zeroing (synced), then removals, made durable by one directory sync.
fn apply_fixes(storage: &dyn Storage, fixes: Vec<Fix>) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    for fix in &fixes {
        if let Fix::Sync(file) = fix {
            file.sync_data()?;
        }
    }
    for fix in &fixes {
        if let Fix::Zero(file, range) = fix {
            let mut at = range.start;
            while at < range.end {
                let n = (range.end - at).min(zeros.len() as u64) as usize;
                file.write_at(at, &zeros[..n])?;
                at += n as u64;
            }
            file.sync_data()?;
        }
    }
    let mut removed = false;
    for fix in &fixes {
        if let Fix::Remove(name) = fix {
            match storage.remove(name) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            removed = true;
        }
    }
    if removed {
        storage.sync_dir()?;
    }
    Ok(())
}
