//! The directory layout: every file name the queue writes, how names are
//! read back, the limits on file numbers, and how a file is made with its
//! header. Nothing else spells a file name or parses one.
//!
//! A queue directory holds:
//!
//! - `segment-NNNNNNNNNN.seg`: message records (`codec::record`);
//! - `journal-NNNNNNNNNN.jnl`: state-change entries (`codec::entry`);
//! - `checkpoint-NNNNNNNNNN.ckp`: the newest durable snapshot
//!   (`codec::checkpoint`), written as `checkpoint-N.tmp` then renamed;
//! - `segment-N.seg.prep`, `journal-N.jnl.prep`: files made ahead of need
//!   (`prepare`), renamed into place when needed;
//! - `LOCK`: the owner lock (`storage`).
//!
//! Invariants:
//!
//! A. A number is written with at least ten decimal digits, zero-padded to
//!    ten, and read back only in that form, so every name has one spelling
//!    and sorting numbers sorts files.
//! B. Open refuses numbers above [`MAX_FILE_NUMBER`] and segment ids above
//!    [`MAX_SEGMENT_ID`], so adding one to any number found never overflows.
//! C. A file made by [`create_with_header`] has its header and directory
//!    entry durable before anything else is written to it. One made by
//!    [`create_unlisted`] has its header durable; its maker syncs the
//!    directory before anything else is written to it (an open makes a
//!    fresh queue's journal and segment so, and syncs the directory once
//!    for both and the attributes).

use std::io;
use std::sync::Arc;

use crate::codec::header::FileHeader;
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageFile};

/// Open refuses a directory with a journal or checkpoint number above this
/// (10^18; a queue rotating a journal file every millisecond reaches it in
/// 30 million years), so adding one to a file number never overflows.
pub(crate) const MAX_FILE_NUMBER: u64 = 1_000_000_000_000_000_000;

/// Open refuses a directory with a segment id above this (2^31 segments of
/// at least 1 MiB are 2 PiB), so the next segment id never overflows.
pub(crate) const MAX_SEGMENT_ID: u32 = 1 << 31;

/// The suffix of a file made ahead of need, before it is renamed into place.
pub(crate) const PREPARED_SUFFIX: &str = ".prep";

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u32) -> String {
    format!("segment-{id:010}.seg")
}

/// The file name of journal file `n`.
pub(crate) fn journal_name(n: u64) -> String {
    format!("journal-{n:010}.jnl")
}

/// The file name of checkpoint `n`.
pub(crate) fn checkpoint_name(n: u64) -> String {
    format!("checkpoint-{n:010}.ckp")
}

/// The name checkpoint `n` is written under before it is renamed into place.
pub(crate) fn checkpoint_temp_name(n: u64) -> String {
    format!("checkpoint-{n:010}.tmp")
}

/// The id in a segment file name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    u32::try_from(parse_number(
        name.strip_prefix("segment-")?.strip_suffix(".seg")?,
    )?)
    .ok()
}

/// The number in a journal file name.
pub(crate) fn parse_journal_name(name: &str) -> Option<u64> {
    parse_number(name.strip_prefix("journal-")?.strip_suffix(".jnl")?)
}

/// The number in a checkpoint file name.
pub(crate) fn parse_checkpoint_name(name: &str) -> Option<u64> {
    parse_number(name.strip_prefix("checkpoint-")?.strip_suffix(".ckp")?)
}

/// The number in a file name, as the names above write it (invariant A).
fn parse_number(digits: &str) -> Option<u64> {
    let canonical = digits.len() == 10 || (digits.len() > 10 && !digits.starts_with('0'));
    if !canonical || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether a directory entry is a prepared file left by a crash.
pub(crate) fn is_prepared_name(name: &str) -> bool {
    name.strip_suffix(PREPARED_SUFFIX).is_some_and(|base| {
        parse_segment_name(base).is_some() || parse_journal_name(base).is_some()
    })
}

/// The queue's stored attributes (format version 2, `codec::attributes`).
pub(crate) const ATTRIBUTES_NAME: &str = "attributes.lla";
/// The attributes file while it is rewritten; renamed over the real one.
pub(crate) const ATTRIBUTES_TMP: &str = "attributes.lla.tmp";

/// What a directory entry is, by its name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileName {
    Segment(u32),
    Journal(u64),
    Checkpoint(u64),
    /// The stored attributes.
    Attributes,
    /// A checkpoint being written or a file made ahead: never holds data a
    /// queue depends on, so open removes it unread.
    Temporary,
}

impl FileName {
    /// Classify a name; `None` for a file that is not the queue's (the lock
    /// file, or anything a user put there), which the queue leaves alone.
    pub(crate) fn classify(name: &str) -> Option<FileName> {
        if let Some(id) = parse_segment_name(name) {
            Some(FileName::Segment(id))
        } else if let Some(n) = parse_journal_name(name) {
            Some(FileName::Journal(n))
        } else if let Some(n) = parse_checkpoint_name(name) {
            Some(FileName::Checkpoint(n))
        } else if name == ATTRIBUTES_NAME {
            Some(FileName::Attributes)
        } else if (name.starts_with("checkpoint-") && name.ends_with(".tmp"))
            || is_prepared_name(name)
            || name == ATTRIBUTES_TMP
        {
            Some(FileName::Temporary)
        } else {
            None
        }
    }
}

/// A directory's file names, classified and sorted by number.
#[derive(Debug, Default)]
pub(crate) struct Files {
    pub segments: Vec<u32>,
    pub journals: Vec<u64>,
    pub checkpoints: Vec<u64>,
    pub temporary: Vec<String>,
    /// Whether the attributes file exists.
    pub attributes: bool,
}

impl Files {
    /// Classify a listing's names; the queue's files sorted by number.
    pub(crate) fn from_names(names: impl IntoIterator<Item = String>) -> Files {
        let mut f = Files::default();
        for name in names {
            match FileName::classify(&name) {
                Some(FileName::Segment(id)) => f.segments.push(id),
                Some(FileName::Journal(n)) => f.journals.push(n),
                Some(FileName::Checkpoint(n)) => f.checkpoints.push(n),
                Some(FileName::Temporary) => f.temporary.push(name),
                Some(FileName::Attributes) => f.attributes = true,
                None => {}
            }
        }
        f.segments.sort_unstable();
        f.journals.sort_unstable();
        f.checkpoints.sort_unstable();
        f
    }

    /// Every segment, journal and checkpoint file name, in that order.
    pub(crate) fn names(&self) -> Vec<String> {
        let segments = self.segments.iter().map(|&id| segment_name(id));
        let journals = self.journals.iter().map(|&n| journal_name(n));
        let checkpoints = self.checkpoints.iter().map(|&n| checkpoint_name(n));
        segments.chain(journals).chain(checkpoints).collect()
    }
}

/// List and classify the queue's files in `storage`.
pub(crate) fn list(storage: &dyn Storage) -> io::Result<Files> {
    Ok(Files::from_names(storage.list()?))
}

/// Refuse file numbers the queue could not go on from (invariant B).
pub(crate) fn check_numbers(files: &Files) -> Result<()> {
    let out_of_range = |file: String| Error::Corrupt {
        file,
        offset: 0,
        detail: "file number out of range".into(),
    };
    if let Some(&id) = files.segments.last().filter(|&&id| id > MAX_SEGMENT_ID) {
        return Err(out_of_range(segment_name(id)));
    }
    if let Some(&n) = files.journals.last().filter(|&&n| n > MAX_FILE_NUMBER) {
        return Err(out_of_range(journal_name(n)));
    }
    if let Some(&n) = files.checkpoints.last().filter(|&&n| n > MAX_FILE_NUMBER) {
        return Err(out_of_range(checkpoint_name(n)));
    }
    Ok(())
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
/// it (invariant C). A half-made file is removed.
///
/// One sync of the file, after the header: it makes the header, the size
/// and the allocation durable together (a sync of the empty allocation
/// first would cost a second fdatasync per file for nothing: until this
/// one, recovery may find the file absent, empty, or all zeros, and reads
/// each as a file never made).
pub(crate) fn create_with_header(
    storage: &dyn Storage,
    name: &str,
    size: u32,
    header: &FileHeader,
) -> std::result::Result<Arc<dyn StorageFile>, CreateError> {
    make(storage, name, size, header, true)
}

/// How a file with a header is made: [`create_with_header`] or
/// [`create_unlisted`].
pub(crate) type Create = fn(
    &dyn Storage,
    &str,
    u32,
    &FileHeader,
) -> std::result::Result<Arc<dyn StorageFile>, CreateError>;

/// As [`create_with_header`] without the directory's sync: the caller
/// syncs the directory before it writes anything else to the file
/// (invariant C), once for every file it made so.
pub(crate) fn create_unlisted(
    storage: &dyn Storage,
    name: &str,
    size: u32,
    header: &FileHeader,
) -> std::result::Result<Arc<dyn StorageFile>, CreateError> {
    make(storage, name, size, header, false)
}

/// As [`create_unlisted`], for a file made by a background thread ahead of
/// need ([`Storage::create_ahead`], or with `allocate_only`
/// [`Storage::create_ahead_allocated`]): renamed into place and the
/// directory synced by the writer that takes it.
pub(crate) fn create_ahead(
    storage: &dyn Storage,
    name: &str,
    size: u32,
    header: &FileHeader,
    allocate_only: bool,
) -> std::result::Result<Arc<dyn StorageFile>, CreateError> {
    let new_file: NewFile = match allocate_only {
        true => |s, n, l| s.create_ahead_allocated(n, l),
        false => |s, n, l| s.create_ahead(n, l),
    };
    make_with(storage, name, size, header, false, new_file)
}

fn make(
    storage: &dyn Storage,
    name: &str,
    size: u32,
    header: &FileHeader,
    sync_dir: bool,
) -> std::result::Result<Arc<dyn StorageFile>, CreateError> {
    make_with(storage, name, size, header, sync_dir, |s, n, l| {
        s.create_to_overwrite(n, l)
    })
}

/// How the file of [`make_with`] is created.
type NewFile = fn(&dyn Storage, &str, u64) -> std::io::Result<Arc<dyn StorageFile>>;

fn make_with(
    storage: &dyn Storage,
    name: &str,
    size: u32,
    header: &FileHeader,
    sync_dir: bool,
    new_file: NewFile,
) -> std::result::Result<Arc<dyn StorageFile>, CreateError> {
    let file = new_file(storage, name, u64::from(size)).map_err(CreateError::NotMade)?;
    let made = (|| {
        file.write_at(0, &header.encode())?;
        file.sync_data()?;
        match sync_dir {
            true => storage.sync_dir(),
            false => Ok(()),
        }
    })();
    if let Err(e) = made {
        let _ = storage.remove(name);
        return Err(CreateError::Failed(e));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("segment-x.seg"), None);
        assert_eq!(parse_segment_name("journal-0000000001.jnl"), None);
        assert_eq!(parse_journal_name(&journal_name(7)), Some(7));
        assert_eq!(parse_checkpoint_name(&checkpoint_name(3)), Some(3));
        assert_eq!(parse_segment_name("segment-00000000042.seg"), None);
        assert_eq!(
            parse_journal_name(&journal_name(12_345_678_901)),
            Some(12_345_678_901)
        );
    }

    #[test]
    fn classifies_every_kind() {
        assert_eq!(
            FileName::classify(&segment_name(1)),
            Some(FileName::Segment(1))
        );
        assert_eq!(
            FileName::classify(&checkpoint_temp_name(2)),
            Some(FileName::Temporary)
        );
        assert!(is_prepared_name("segment-0000000002.seg.prep"));
        assert!(!is_prepared_name("segment-2.seg.prep"));
        assert_eq!(FileName::classify("LOCK"), None);
        assert_eq!(FileName::classify("notes.txt"), None);
    }
}
