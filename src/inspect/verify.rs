//! [`Inspector::verify`]: a check of every segment, journal, checkpoint and
//! attributes file the inspector listed, with findings instead of errors.
//!
//! Invariants:
//!
//! A. Nothing is written, and only the inspector's snapshot is read (the
//!    files pinned when it opened); a file its owner removes meanwhile is a
//!    notice, and what was expected in it is not checked.
//! B. Files are judged as open judges them, with recovery's own header
//!    check, number check and scanners, so `verify` and open never disagree
//!    about what is a torn tail and what is damage.
//! C. Damage is never an error: it is a [`Severity::Damage`] finding, and
//!    only a failed read fails the call. What a crash or a running owner
//!    normally leaves (a torn tail, a blank, leftover or superseded file, a
//!    segment with no live message) is a [`Severity::Notice`], and so is
//!    damage in a journal file replay no longer reads.
//! D. Findings come damage first, then in the order found (a stable sort
//!    by severity).
//! E. Progress is counted in bytes of the files listed: each file counts
//!    once, whether it is read or skipped.
//! F. The attributes file is judged as open judges it (`codec::attributes`
//!    decode, then the values checked as options): anything open refuses
//!    is damage. A result record is never an orphan: one whose message id
//!    never existed, or was cut by retention, is simply not live.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;

use super::{
    file_len, len32, read_if_present, FileCheck, FileKind, Finding, Inspector, Severity,
    VerifyReport,
};
use crate::codec::attributes::{self, AttributesError};
use crate::codec::checkpoint::{self, CheckpointMeta};
use crate::codec::{header, record, DecodeError};
use crate::config::{QueueOptions, MIN_JOURNAL_FILE_SIZE, MIN_SEGMENT_SIZE};
use crate::error::{Error, Result};
use crate::layout::Files;
use crate::recovery::{self, Scanned};
use crate::storage::Storage;
use crate::{layout, segment};

impl Inspector {
    /// Check every segment, journal, checkpoint and attributes file:
    /// headers, every record's and entry's checksum and id order, torn
    /// tails against damage as recovery judges them (a torn tail is a
    /// notice: it is what a crash leaves), file sizes, the journal's file
    /// sequence, the newest checkpoint's checksum and fields, the stored
    /// attributes' checksum and values, and that every live message (and
    /// stored result) points at a record with its id in an existing
    /// segment. Never modifies anything.
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
        let files = layout::Files::from_names(snap.names.iter().cloned());
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
            if name == layout::ATTRIBUTES_TMP {
                v.notice(
                    name,
                    None,
                    "leftover attributes rewrite a crash cut short (the stored attributes \
                     are the revision before it); open removes it",
                );
            } else {
                v.notice(name, None, "leftover temporary file; open removes it");
            }
        }
        if let Err(e) = crate::layout::check_numbers(&files) {
            v.error(e);
        }
        if files.attributes {
            v.attributes()?;
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

/// The file an error names, if any.
fn error_file(e: &Error) -> Option<&str> {
    match e {
        Error::Corrupt { file, .. } | Error::UnsupportedVersion { file, .. } => Some(file),
        _ => None,
    }
}

/// The state of one `verify` pass.
struct Verify<'a> {
    storage: &'a dyn Storage,
    max_len: usize,
    report: VerifyReport,
    /// Where live messages' records must be: (segment, offset) → id, and
    /// whether it is a stored result's record.
    expected: BTreeMap<(u32, u32), (u64, bool)>,
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
    /// The torn frame, if any, needs more bytes than the file has.
    torn_cut_by_eof: bool,
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
        let attributes = files
            .attributes
            .then(|| layout::ATTRIBUTES_NAME.to_string());
        for name in files.names().into_iter().chain(attributes) {
            total += file_len(self.storage, &name)?.unwrap_or(0);
        }
        Ok(total)
    }

    /// Check the stored attributes as open reads them: header, length,
    /// flags and checksum, then the values as options.
    fn attributes(&mut self) -> Result<()> {
        let name = layout::ATTRIBUTES_NAME;
        let Some(bytes) = self.read(name)? else {
            return Ok(());
        };
        let refuses = "open refuses the directory";
        let a = match attributes::decode(&bytes) {
            Ok((a, _)) => a,
            Err(AttributesError::Header(header::HeaderError::Version(found))) => {
                self.damage(
                    name,
                    Some(8),
                    format!(
                        "format version {found}; this build reads only version {}",
                        crate::codec::FORMAT_VERSION
                    ),
                );
                return Ok(());
            }
            Err(e) => {
                let detail = match e {
                    AttributesError::Header(h) => format!("bad header: {h:?}"),
                    AttributesError::Body(d) => d.to_string(),
                };
                let offset = match e {
                    AttributesError::Header(_) => 0,
                    AttributesError::Body(_) => header::SIZE as u64,
                };
                self.damage(
                    name,
                    Some(offset),
                    format!("the stored attributes do not decode ({detail}); {refuses}"),
                );
                return Ok(());
            }
        };
        let mut opts = QueueOptions::new();
        opts.adopt(&a);
        if let Err(e) = opts.validate() {
            self.damage(
                name,
                Some(header::SIZE as u64),
                format!("the stored attributes are not valid options ({e}); {refuses}"),
            );
        }
        self.report.files.push(FileCheck {
            name: name.to_string(),
            kind: FileKind::Attributes,
            bytes: bytes.len() as u64,
            // Segment size, max message size, visibility timeout, max
            // deliveries, retention, dead-letter retention, dedup window,
            // default delay, default wait.
            frames: 9,
            data_end: bytes.len() as u64,
        });
        Ok(())
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
        match recovery::check_header(self.storage, name, kind.to_codec()) {
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
        s.index.locations(|id, loc, result| {
            expected.insert((loc.segment, loc.offset), (id, result));
        });
        // The locations to check (the index's per-segment live counts
        // steer compaction and are not a count of these).
        self.report.live_messages = expected.len() as u64;
        self.expected = expected;
        for &(id, seg) in &s.missing {
            self.damage(
                &crate::layout::segment_name(seg),
                None,
                format!("message {id} is live but its segment file is missing: it is lost"),
            );
        }
        for name in &s.report.files_removed {
            if crate::layout::parse_segment_name(name).is_some() {
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
            let name = crate::layout::checkpoint_name(n);
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
            let decoded = checkpoint::decode(&bytes, &mut Ids(&mut ids));
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
            let name = crate::layout::segment_name(id);
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
            let seed = segment::seed_of(&bytes, id);
            let s = segment::scan(&bytes, header::SIZE, max_len, seed);
            for (offset, h) in &s.frames {
                if let Some((want, result)) = self.expected.remove(&(id, *offset)) {
                    let what = |result: bool, id: u64| {
                        if result {
                            format!("the stored result of message {id}")
                        } else {
                            format!("message {id}")
                        }
                    };
                    if want != h.id || result != h.result() {
                        self.damage(
                            &name,
                            Some(u64::from(*offset)),
                            format!(
                                "{} should be here, but the record is {}",
                                what(result, want),
                                what(h.result(), h.id)
                            ),
                        );
                    }
                }
            }
            self.report.records += s.frames.len() as u64;
            self.report.results += s.frames.iter().filter(|(_, h)| h.result()).count() as u64;
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
                torn_cut_by_eof: s.torn.as_ref().is_some_and(|t| {
                    record::decode(&bytes[t.start as usize..], usize::MAX, seed).err()
                        == Some(DecodeError::Incomplete)
                }),
            };
            let describe = |at: usize| match record::decode(&bytes[at..], max_len, seed) {
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
            let name = crate::layout::journal_name(n);
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
            let version = header::FileHeader::decode(header::FileKind::Journal, &bytes)
                .map_or(crate::codec::FORMAT_VERSION, |h| h.version);
            let s = crate::journal::scan(&bytes, header::SIZE, version, n);
            self.report.entries += s
                .frames
                .iter()
                .map(|(_, (e, _))| e.len() as u64)
                .sum::<u64>();
            let facts = ScanFacts {
                damaged: s.damaged.clone(),
                torn: s.torn.clone(),
                dropped: s.dropped_frames,
                end: s.end,
                frames: s.frames.len() as u64,
                max_synced: s.frames.iter().map(|(_, (_, se))| *se).max().unwrap_or(0),
                torn_cut_by_eof: s.torn.as_ref().is_some_and(|t| {
                    crate::journal::decode_frame(&bytes[t.start as usize..], version, n).err()
                        == Some(DecodeError::Incomplete)
                }),
            };
            let describe = |at: usize| match crate::journal::decode_frame(&bytes[at..], version, n)
            {
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
                    &crate::layout::journal_name(n),
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
            if s.torn_cut_by_eof {
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
        for ((seg, offset), (id, result)) in left {
            let name = crate::layout::segment_name(seg);
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
            let whose = if result {
                format!("message {id} is completed and its stored result's record")
            } else {
                format!("message {id} is live and its record")
            };
            self.damage(
                &name,
                Some(u64::from(offset)),
                format!("{whose} should be here, but {why}"),
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

/// Collects the ids of a checkpoint's messages.
struct Ids<'a>(&'a mut Vec<u64>);

impl checkpoint::CheckpointSink for Ids<'_> {
    fn segment(&mut self, _: checkpoint::CheckpointSegment) {}
    fn message(&mut self, m: checkpoint::CheckpointMessage) {
        self.0.push(m.id);
    }
    fn reason(&mut self, _: u64, _: String) {}
    fn key(&mut self, _: checkpoint::CheckpointKey<'_>) {}
    fn mark(&mut self, _: u64, _: u64) {}
}

#[cfg(test)]
mod tests {
    use super::super::tests::{image, inspect, queue, START};
    use super::super::*;
    use crate::clock::ManualClock;
    use crate::storage::MemoryStorage;

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
        let seg = crate::layout::segment_name(1);
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

    #[test]
    fn verify_checks_the_attributes_file_and_counts_result_records() {
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = queue(&mem, &clock);
        let done = q.enqueue(b"job", 1).expect("enqueue");
        q.enqueue(b"other", 0).expect("enqueue");
        let d = q.dequeue().expect("dequeue").expect("job");
        assert_eq!(d.id, done);
        q.complete(d.receipt, b"result").expect("complete");
        let r = inspect(&mem, &clock).verify(|_, _| {}).expect("verify");
        assert!(r.is_clean(), "{:?}", r.findings);
        assert_eq!((r.records, r.results), (3, 1));
        let attrs = r
            .files
            .iter()
            .find(|f| f.kind == FileKind::Attributes)
            .expect("checked");
        assert_eq!(attrs.name, crate::layout::ATTRIBUTES_NAME);
        assert_eq!(attrs.bytes, crate::codec::attributes::SIZE as u64);
        assert_eq!(r.bytes, {
            let mut total = 0;
            for (_, b) in image(&mem) {
                total += b.len() as u64;
            }
            total
        });

        // A leftover rewrite is a notice; a wrong version is damage.
        crate::storage::Storage::create(&mem, crate::layout::ATTRIBUTES_TMP, 7)
            .and_then(|f| f.write_at(0, b"partial"))
            .expect("tmp");
        let r = inspect(&mem, &clock).verify(|_, _| {}).expect("verify");
        assert!(r.is_clean(), "{:?}", r.findings);
        assert!(r.findings.iter().any(|f| f.severity == Severity::Notice
            && f.file.as_deref() == Some(crate::layout::ATTRIBUTES_TMP)));
        let name = crate::layout::ATTRIBUTES_NAME;
        mem.write_file_raw(name, 8, &9u32.to_le_bytes())
            .expect("version");
        let r = inspect(&mem, &clock).verify(|_, _| {}).expect("verify");
        let damage: Vec<&Finding> = r.damage().collect();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!(damage[0].file.as_deref(), Some(name));
        assert!(damage[0].what.contains("format version 9"), "{damage:?}");
    }
}
