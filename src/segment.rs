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

use std::io;
use std::sync::Arc;

use crate::codec::header::{self, FileHeader, FileKind};
use crate::codec::record::{self, RecordHeader};
use crate::codec::DecodeError;
use crate::storage::{Storage, StorageFile};

/// The file name of segment `id`.
pub(crate) fn name(id: u32) -> String {
    format!("segment-{id:010}.seg")
}

/// The id in a segment file name.
pub(crate) fn parse_name(name: &str) -> Option<u32> {
    u32::try_from(parse_number(
        name.strip_prefix("segment-")?.strip_suffix(".seg")?,
    )?)
    .ok()
}

/// The number in a file name, as `name` writes it: at least ten decimal
/// digits, zero-padded to ten, never with a leading zero past ten.
pub(crate) fn parse_number(digits: &str) -> Option<u64> {
    let canonical = digits.len() == 10 || (digits.len() > 10 && !digits.starts_with('0'));
    if !canonical || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Open refuses a directory with a journal or checkpoint number above this
/// (10^18; a queue rotating a journal file every millisecond reaches it in
/// 30 million years), so adding one to a file number never overflows.
pub(crate) const MAX_FILE_NUMBER: u64 = 1_000_000_000_000_000_000;

/// Open refuses a directory with a segment id above this (2^31 segments of
/// at least 1 MiB are 2 PiB), so the next segment id never overflows.
pub(crate) const MAX_SEGMENT_ID: u32 = 1 << 31;

/// An open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u32,
    pub file: Arc<dyn StorageFile>,
    /// The file's fixed size.
    pub size: u32,
    /// Where the next record goes.
    pub end: u32,
    /// Offset known durable.
    pub synced: u32,
    /// Records appended over the segment's life (relocated copies
    /// included); with the index's live count it gives the live share.
    pub records: u32,
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
        let file = create_with_header(storage, &name(id), size, &h)?;
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

    /// Bytes still free.
    pub fn room(&self) -> u32 {
        self.size - self.end
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

/// Why creating a file failed.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// The file could not be made (a full disk, say): nothing changed.
    NotMade(io::Error),
    /// Writing or syncing it failed: after a failed sync the storage can no
    /// longer be trusted, so the queue must be poisoned.
    Failed(io::Error),
}

impl From<CreateError> for io::Error {
    fn from(e: CreateError) -> io::Error {
        match e {
            CreateError::NotMade(e) | CreateError::Failed(e) => e,
        }
    }
}

/// Create a preallocated file, write and sync its header, and sync the
/// directory, so that its entry is durable before anything is written to
/// it. A half-made file is removed.
pub(crate) fn create_with_header(
    storage: &dyn Storage,
    name: &str,
    size: u32,
    header: &FileHeader,
) -> Result<Arc<dyn StorageFile>, CreateError> {
    let file = storage
        .create(name, u64::from(size))
        .map_err(CreateError::NotMade)?;
    let made = (|| {
        file.write_at(0, &header.encode())?;
        file.sync_data()?;
        storage.sync_dir()
    })();
    if let Err(e) = made {
        let _ = storage.remove(name);
        return Err(CreateError::Failed(e));
    }
    Ok(file)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&name(42)), Some(42));
        assert_eq!(parse_name("segment-x.seg"), None);
        assert_eq!(parse_name("journal-0000000001.jnl"), None);
    }
}
