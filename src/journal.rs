//! The journal: rotating, preallocated files of state-change entries (layout
//! in `codec::entry`), the bitcask-style index WAL.
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
use crate::layout::{self, create_with_header, CreateError};
use crate::storage::{Storage, StorageFile};

/// A position in the journal: file number, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct JournalPos {
    pub file: u64,
    pub offset: u32,
}

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
}

impl Journal {
    /// Create journal file `number` (invariant A).
    pub fn create(
        storage: &dyn Storage,
        number: u64,
        size: u32,
        now_ms: u64,
    ) -> Result<Arc<dyn StorageFile>, CreateError> {
        let h = FileHeader {
            kind: FileKind::Journal,
            id: number,
            created_ms: now_ms,
        };
        create_with_header(storage, &layout::journal_name(number), size, &h)
    }

    /// A journal appending to an existing file at `end`.
    pub fn resume(
        number: u64,
        file: Arc<dyn StorageFile>,
        (size, end): (u32, u32),
        new_size: u32,
        files: Vec<u64>,
    ) -> Journal {
        Journal {
            number,
            file,
            size,
            end,
            synced: end,
            new_size,
            files,
        }
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

    /// The position after the last entry written.
    pub fn pos(&self) -> JournalPos {
        JournalPos {
            file: self.number,
            offset: self.end,
        }
    }

    /// Whether `bytes` more fit in the current file.
    pub fn fits(&self, bytes: usize) -> bool {
        bytes <= self.size.saturating_sub(self.end) as usize
    }

    /// Largest batch of bytes a new file can take.
    pub fn capacity(&self) -> usize {
        self.new_size as usize - header::SIZE
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
        Ok(old)
    }

    /// Encode entries for the current file into `out`.
    pub fn encode(&self, entries: &[Entry], out: &mut Vec<u8>) {
        for e in entries {
            entry::encode(e, self.synced, out);
        }
    }

    /// Write encoded entries; the caller checked they fit.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(self.fits(bytes.len()));
        self.file.write_at(u64::from(self.end), bytes)?;
        self.end += bytes.len() as u32;
        Ok(())
    }
}

impl Frame for (Entry, u32) {
    fn synced_end(&self) -> u32 {
        self.1
    }
}

/// Scan a journal file's bytes from `start`: each entry with the synced
/// end it was stamped with.
pub(crate) fn scan(buf: &[u8], start: usize) -> Scan<(Entry, u32)> {
    scan::scan(
        buf,
        start,
        entry::MAGIC.to_le_bytes(),
        |b| entry::decode(b).map(|(e, s, n)| ((e, s), n)),
        |_| None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order() {
        assert!(
            JournalPos {
                file: 1,
                offset: 900
            } < JournalPos {
                file: 2,
                offset: 32
            }
        );
    }
}
