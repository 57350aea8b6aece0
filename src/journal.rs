//! The journal: rotating, preallocated files of state-change entries (batch
//! frames, layout in `codec::batch`; version 1 files hold single entries,
//! `codec::entry`), the bitcask-style index WAL.
//!
//! Invariants:
//!
//! A. A journal file's header and directory entry are durable before any
//!    entry is written to it.
//! B. Entries are appended in the order they were applied to the index, and
//!    a batch is written with one positional write.
//! C. Files are only removed after a durable checkpoint covers them.
//!
//! The journal never reads payloads and never decides what an entry means.

use std::io;
use std::sync::Arc;

use crate::codec::entry::{self, Entry};
use crate::codec::header::{self, FileHeader, FileKind};
use crate::codec::scan::{self, Frame, Scan};
use crate::codec::DecodeError;
use crate::codec::{batch, FORMAT_VERSION};
use crate::layout::{self, create_unlisted, create_with_header, CreateError};
use crate::storage::{Storage, StorageFile};

/// The file being appended to. Its fields are private so that only its own
/// methods move `end` and `synced` and change the list of files.
#[derive(Debug)]
pub(crate) struct Journal {
    number: u64,
    file: Arc<dyn StorageFile>,
    /// This file's size (a file found at open may be shorter than the
    /// configured size).
    size: u32,
    end: u32,
    /// Offset of this file known durable (stamped into new entries).
    synced: u32,
    /// The configured size: new files get it.
    new_size: u32,
    /// Journal files on disk (including this one), oldest first.
    files: Vec<u64>,
    /// The format version of this file's header: entries are appended only
    /// to a file of this build's version (the engine rotates first).
    version: u32,
}

impl Journal {
    /// Create journal file `number` (invariant A).
    pub fn create(
        storage: &dyn Storage,
        number: u64,
        size: u32,
        now_ms: u64,
    ) -> Result<Arc<dyn StorageFile>, CreateError> {
        Journal::make(storage, number, size, now_ms, create_with_header)
    }

    /// As [`Journal::create`] without the directory's sync (invariant C
    /// of `layout`: the caller syncs it before the first frame).
    pub fn create_unlisted(
        storage: &dyn Storage,
        number: u64,
        size: u32,
        now_ms: u64,
    ) -> Result<Arc<dyn StorageFile>, CreateError> {
        Journal::make(storage, number, size, now_ms, create_unlisted)
    }

    fn make(
        storage: &dyn Storage,
        number: u64,
        size: u32,
        now_ms: u64,
        create: layout::Create,
    ) -> Result<Arc<dyn StorageFile>, CreateError> {
        let h = FileHeader::new(FileKind::Journal, number, now_ms);
        create(storage, &layout::journal_name(number), size, &h)
    }

    /// A journal appending to an existing file at `end`, durable up to
    /// there (a file found at open: invariant D of `recovery`).
    pub fn resume(
        number: u64,
        file: Arc<dyn StorageFile>,
        (size, end): (u32, u32),
        new_size: u32,
        files: Vec<u64>,
        version: u32,
    ) -> Journal {
        Journal {
            number,
            file,
            size,
            end,
            synced: end,
            new_size,
            files,
            version,
        }
    }

    /// Whether entries may be appended to the current file: it is of this
    /// build's format version.
    pub fn appendable(&self) -> bool {
        self.version == FORMAT_VERSION
    }

    /// Bytes still free in the current file.
    pub fn room(&self) -> usize {
        self.size.saturating_sub(self.end) as usize
    }

    /// The number of the file being appended to.
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    /// This file's size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Where the next entry goes in this file.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// Offset of this file known durable.
    pub fn synced(&self) -> u32 {
        self.synced
    }

    /// The size new files get.
    pub fn new_size(&self) -> u32 {
        self.new_size
    }

    /// Journal files on disk (including this one), oldest first.
    pub fn files(&self) -> &[u64] {
        &self.files
    }

    /// A sync of this file that started when it ended at `end` has
    /// completed.
    pub fn mark_synced(&mut self, end: u32) {
        debug_assert!(end <= self.end);
        self.synced = self.synced.max(end);
    }

    /// Forget files older than `number` once they are removed (invariant C:
    /// the caller removed them after a durable checkpoint covered them).
    pub fn forget_files_before(&mut self, number: u64) {
        self.files.retain(|&n| n >= number);
    }

    /// Whether `bytes` more fit in the current file.
    pub fn fits(&self, bytes: usize) -> bool {
        bytes <= self.size.saturating_sub(self.end) as usize
    }

    /// Switch to a new file of the configured size; returns the old file
    /// (still to be synced).
    /// `prepared` is the next file made ahead (see `prepare`), if any.
    pub fn rotate(
        &mut self,
        storage: &dyn Storage,
        now_ms: u64,
        prepared: Option<Arc<dyn StorageFile>>,
    ) -> Result<Arc<dyn StorageFile>, CreateError> {
        // Open refuses file numbers above MAX_FILE_NUMBER, so this cannot
        // overflow.
        let next = self.number + 1;
        let file = match prepared {
            Some(file) => file,
            None => Journal::create(storage, next, self.new_size, now_ms)?,
        };
        let old = std::mem::replace(&mut self.file, file);
        self.number = next;
        self.size = self.new_size;
        self.end = header::SIZE as u32;
        self.synced = self.end;
        self.files.push(next);
        self.version = FORMAT_VERSION;
        Ok(old)
    }

    /// Encode into `out` one batch frame of as many of `entries` as fit in
    /// `max_frame` bytes, stamped with this file's synced offset; returns
    /// how many.
    pub fn encode(&self, entries: &[Entry], max_frame: usize, out: &mut Vec<u8>) -> usize {
        batch::encode(entries, self.synced, max_frame, self.number, out)
    }

    /// Write encoded entries; the caller checked they fit.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(self.fits(bytes.len()));
        self.file.write_at(u64::from(self.end), bytes)?;
        self.end += bytes.len() as u32;
        Ok(())
    }
}

impl Frame for (Vec<Entry>, u32) {
    fn synced_end(&self) -> u32 {
        self.1
    }
}

/// Decode and verify the frame at the start of `b` of journal file number
/// `file`, of format `version`: its entries (one in a version 1 file), the
/// synced end it was stamped with, and its length.
pub(crate) fn decode_frame(
    b: &[u8],
    version: u32,
    file: u64,
) -> Result<(Vec<Entry>, u32, usize), DecodeError> {
    if version == 1 {
        entry::decode_v1(b).map(|(e, s, n)| (vec![e], s, n))
    } else {
        batch::decode(b, file)
    }
}

/// Scan the bytes of journal file number `file` from `start`: each frame's
/// entries with the synced end it was stamped with. `version` is the file
/// header's.
pub(crate) fn scan(buf: &[u8], start: usize, version: u32, file: u64) -> Scan<(Vec<Entry>, u32)> {
    let magic = if version == 1 {
        entry::MAGIC
    } else {
        batch::MAGIC
    };
    scan::scan(
        buf,
        start,
        magic.to_le_bytes(),
        |b| decode_frame(b, version, file).map(|(e, s, n)| ((e, s), n)),
        |_| None,
    )
}
