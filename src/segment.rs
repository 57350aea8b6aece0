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
use crate::codec::record::{self, RecordHeader};
use crate::codec::scan::{self, Frame, Scan};
use crate::codec::DecodeError;
use crate::layout::{self, create_with_header, CreateError};
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
        let h = FileHeader {
            kind: FileKind::Segment,
            id: u64::from(id),
            created_ms: now_ms,
        };
        let file = create_with_header(storage, &layout::segment_name(id), size, &h)?;
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
        }
    }

    /// A segment found at open: its records end at `end`, everything up to
    /// there is durable (recovery synced what it read), and `records` were
    /// appended to it over its life.
    pub fn recovered(
        id: u32,
        file: Arc<dyn StorageFile>,
        size: u32,
        end: u32,
        records: u32,
    ) -> Segment {
        Segment {
            id,
            file,
            size,
            end,
            synced: end,
            records,
        }
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

    /// Write `records` encoded records at the end; returns their offset.
    pub fn append(&mut self, bytes: &[u8], records: u32) -> io::Result<u32> {
        debug_assert!(bytes.len() <= self.room() as usize);
        let at = self.end;
        self.file.write_at(u64::from(at), bytes)?;
        self.end += bytes.len() as u32;
        self.records = self.records.saturating_add(records);
        Ok(at)
    }
}

/// Why reading a record failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Corrupt(DecodeError),
}

/// Read and verify the record at `offset`: the payload is copied out of the
/// file first and checked on the copy, so the bytes returned are the bytes
/// verified.
pub(crate) fn read_record(
    file: &dyn StorageFile,
    offset: u32,
    max_len: usize,
) -> Result<(RecordHeader, Vec<u8>), ReadError> {
    let mut head = [0u8; record::HEADER_SIZE];
    // A read past the end of the file is no transient failure: the
    // location itself is wrong (a damaged checkpoint), so it is corrupt.
    let past_end = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Corrupt(DecodeError::Incomplete),
        _ => ReadError::Io(e),
    };
    file.read_at(u64::from(offset), &mut head)
        .map_err(past_end)?;
    let h = record::decode_header(&head, max_len).map_err(ReadError::Corrupt)?;
    let at = u64::from(offset) + record::HEADER_SIZE as u64;
    let payload = file.read_vec_at(at, h.len as usize).map_err(past_end)?;
    record::verify(&head, &payload).map_err(ReadError::Corrupt)?;
    Ok((h, payload))
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

impl Frame for RecordHeader {
    fn synced_end(&self) -> u32 {
        self.synced_end
    }
}

/// Scan a segment's bytes from `start`; a batch whose last record never
/// made it (its trailing records still say more follow) was not completely
/// written, so it is cut with the torn tail: a batch is all or none.
pub(crate) fn scan(buf: &[u8], start: usize, max_len: usize) -> Scan<RecordHeader> {
    let mut s = scan::scan(
        buf,
        start,
        record::MAGIC.to_le_bytes(),
        |b| record::decode(b, max_len).map(|(h, _)| (h, h.frame_len())),
        |h| (!h.relocated()).then_some(h.id),
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
