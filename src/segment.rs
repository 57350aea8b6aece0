//! One segment: a fixed-size, preallocated, append-only file of message
//! records (layout in `codec::record`).
//!
//! Invariants:
//!
//! A. A segment's file, header and directory entry are durable before any
//!    record is appended to it, so a record made durable by `fdatasync` can
//!    never vanish with its file.
//! B. `end` only grows while the segment is open; bytes past `end` are zero
//!    (recovery zeroes any torn tail before appending again).
//! C. `synced` never exceeds what a completed sync covered; it is stamped
//!    into each new record so recovery can tell damage from a torn tail.
//!
//! A segment never decides when to rotate or to be deleted; the queue does.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use crate::codec::header::{self, FileHeader, FileKind};
use crate::codec::record::{self, RecordHeader, Seed};
use crate::codec::scan::{self, Frame, Scan};
use crate::codec::DecodeError;
use crate::layout::{self, create_unlisted, create_with_header, CreateError};
use crate::storage::{Storage, StorageFile};

/// An open segment. Its fields are private so that only its own methods
/// move `end` (invariant B) and `synced` (invariant C).
#[derive(Debug)]
pub(crate) struct Segment {
    id: u32,
    file: Arc<dyn StorageFile>,
    /// The file's fixed size.
    size: u32,
    /// Where the next record goes.
    end: u32,
    /// Offset known durable.
    synced: u32,
    /// Records appended over the segment's life (relocated copies
    /// included); with the index's live count it gives the live share.
    records: u32,
    /// The largest payload appended (0 when unknown: a version 1
    /// checkpoint did not store it).
    largest: u32,
    /// The format version of its header; records are appended only to
    /// segments of this build's version.
    version: u32,
    /// What its records' checksums start from (from `id` and `version`).
    seed: Seed,
}

impl Segment {
    /// Create segment `id` of `size` bytes: preallocate, write and sync the
    /// header, sync the directory (invariant A).
    pub fn create(
        storage: &dyn Storage,
        id: u32,
        size: u32,
        now_ms: u64,
    ) -> Result<Segment, CreateError> {
        Segment::make(storage, id, size, now_ms, create_with_header)
    }

    /// As [`Segment::create`] without the directory's sync (invariant C
    /// of `layout`: the caller syncs it before the first record).
    pub fn create_unlisted(
        storage: &dyn Storage,
        id: u32,
        size: u32,
        now_ms: u64,
    ) -> Result<Segment, CreateError> {
        Segment::make(storage, id, size, now_ms, create_unlisted)
    }

    fn make(
        storage: &dyn Storage,
        id: u32,
        size: u32,
        now_ms: u64,
        create: layout::Create,
    ) -> Result<Segment, CreateError> {
        let h = FileHeader::new(FileKind::Segment, u64::from(id), now_ms);
        let file = create(storage, &layout::segment_name(id), size, &h)?;
        Ok(Segment::made(id, file, size))
    }

    /// A segment for a file just made (header written and synced, entry
    /// durable), such as one prepared ahead.
    pub fn made(id: u32, file: Arc<dyn StorageFile>, size: u32) -> Segment {
        let start = header::SIZE as u32;
        Segment {
            id,
            file,
            size,
            end: start,
            synced: start,
            records: 0,
            largest: 0,
            version: crate::codec::FORMAT_VERSION,
            seed: Seed::of(crate::codec::FORMAT_VERSION, id),
        }
    }

    /// A segment found at open: its records end at `end`, everything up to
    /// there is durable (recovery synced every file in which it kept records
    /// past what was known durable, invariant D of `recovery`), `records` were
    /// appended to it over its life, the largest payload `largest`, and its
    /// header says format `version`.
    pub fn recovered(
        id: u32,
        file: Arc<dyn StorageFile>,
        size: u32,
        end: u32,
        counts: (u32, u32),
        version: u32,
    ) -> Segment {
        Segment {
            id,
            file,
            size,
            end,
            synced: end,
            records: counts.0,
            largest: counts.1,
            version,
            seed: Seed::of(version, id),
        }
    }

    /// The largest payload appended (0 when unknown).
    pub fn largest(&self) -> u32 {
        self.largest
    }

    /// The format version of the segment's header.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// What its records' checksums start from.
    pub fn seed(&self) -> Seed {
        self.seed
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    /// The file's fixed size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Where the next record goes.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// Offset known durable (stamped into new records).
    pub fn synced(&self) -> u32 {
        self.synced
    }

    /// Records appended over the segment's life.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Bytes still free.
    pub fn room(&self) -> u32 {
        self.size - self.end
    }

    /// A sync that started when the segment ended at `end` has completed
    /// (invariant C: `synced` only moves to what a finished sync covered).
    pub fn mark_synced(&mut self, end: u32) {
        debug_assert!(end <= self.end);
        self.synced = self.synced.max(end);
    }

    /// Write `records` encoded records, the largest payload among them
    /// `largest`, at the end; returns their offset.
    pub fn append(&mut self, bytes: &[u8], records: u32, largest: u32) -> io::Result<u32> {
        debug_assert!(bytes.len() <= self.room() as usize);
        debug_assert_eq!(self.version, crate::codec::FORMAT_VERSION);
        let at = self.end;
        self.file.write_at(u64::from(at), bytes)?;
        self.end += bytes.len() as u32;
        self.records = self.records.saturating_add(records);
        self.largest = self.largest.max(largest);
        Ok(at)
    }
}

/// Why reading a record failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Corrupt(DecodeError),
}

/// A record read whole and verified.
#[derive(Debug)]
pub(crate) struct ReadRecord {
    pub header: RecordHeader,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Read and verify the record at `offset`: the bytes are copied out of the
/// file first and checked on the copy, so the bytes returned are the bytes
/// verified.
pub(crate) fn read_record(
    file: &dyn StorageFile,
    offset: u32,
    max_len: usize,
    seed: Seed,
) -> Result<ReadRecord, ReadError> {
    let mut head = [0u8; record::HEADER_SIZE];
    // A read past the end of the file is no transient failure: the
    // location itself is wrong (a damaged checkpoint), so it is corrupt.
    let past_end = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Corrupt(DecodeError::Incomplete),
        _ => ReadError::Io(e),
    };
    file.read_at(u64::from(offset), &mut head)
        .map_err(past_end)?;
    let mut h = record::decode_header(&head, max_len).map_err(ReadError::Corrupt)?;
    let mut at = u64::from(offset) + record::HEADER_SIZE as u64;
    // The extension (deadline, key) is read apart so the payload lands in
    // its own buffer without a copy.
    let ext = match h.ext_len() {
        0 => Vec::new(),
        n => file.read_vec_at(at, n).map_err(past_end)?,
    };
    at += ext.len() as u64;
    let payload = file.read_vec_at(at, h.len as usize).map_err(past_end)?;
    let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if seed.crc(&[&head[8..], &ext, &payload]) != stored {
        return Err(ReadError::Corrupt(DecodeError::BadChecksum));
    }
    let key_at = if h.deadline_ms > 0 {
        let mut d = [0u8; 8];
        d.copy_from_slice(&ext[..8]);
        h.deadline_ms = u64::from_le_bytes(d);
        // Zero means "none", so a stored deadline is never zero.
        if h.deadline_ms == 0 {
            return Err(ReadError::Corrupt(DecodeError::BadField));
        }
        8
    } else {
        0
    };
    Ok(ReadRecord {
        header: h,
        key: ext[key_at..].to_vec(),
        payload,
    })
}

/// The enqueue time of the record at `offset` in `segment`, or 0 when it
/// cannot be read (for listings, never for delivery).
pub(crate) fn enqueued_ms(segments: &BTreeMap<u32, Segment>, segment: u32, offset: u32) -> u64 {
    segments
        .get(&segment)
        .and_then(|s| read_header(&*s.file, offset, s.size as usize))
        .map_or(0, |h| h.enqueued_ms)
}

/// Read only the header of the record at `offset` (for times and stats).
pub(crate) fn read_header(
    file: &dyn StorageFile,
    offset: u32,
    max_len: usize,
) -> Option<RecordHeader> {
    let mut head = [0u8; record::HEADER_SIZE];
    file.read_at(u64::from(offset), &mut head).ok()?;
    record::decode_header(&head, max_len).ok()
}

/// The seed of the records in a segment file's `bytes` (segment `id`), by
/// its header's version; this build's version when the header is bad (the
/// records then fail as they would at open).
pub(crate) fn seed_of(bytes: &[u8], id: u32) -> Seed {
    let version = FileHeader::decode(FileKind::Segment, bytes)
        .map_or(crate::codec::FORMAT_VERSION, |h| h.version);
    Seed::of(version, id)
}

impl Frame for RecordHeader {
    fn synced_end(&self) -> u32 {
        self.synced_end
    }
}

/// Scan a segment's bytes from `start`; a batch whose last record never
/// made it (its trailing records still say more follow) was not completely
/// written, so it is cut with the torn tail: a batch is all or none.
pub(crate) fn scan(buf: &[u8], start: usize, max_len: usize, seed: Seed) -> Scan<RecordHeader> {
    let mut s = scan::scan(
        buf,
        start,
        record::MAGIC.to_le_bytes(),
        |b| record::decode(b, max_len, seed).map(|(h, _)| (h, h.frame_len())),
        |h| (!h.relocated() && !h.result()).then_some(h.id),
    );
    let keep = s
        .frames
        .iter()
        .rposition(|(_, h)| !h.more())
        .map_or(0, |i| i + 1);
    if keep < s.frames.len() {
        let cut = s.frames[keep].0;
        let torn_end = s.torn.as_ref().map_or(s.end, |t| t.end);
        s.dropped_frames += s.frames.len() - keep;
        s.frames.truncate(keep);
        s.torn = Some(cut..torn_end.max(s.end));
        s.end = cut;
    }
    s
}
