//! Every on-disk byte layout: file headers, segment records, journal entries,
//! checkpoints, and the scanner that finds the true end of a preallocated
//! file. Pure functions over byte slices: no files, no time, no queue state,
//! so the fuzzers and recovery share exactly this code.
//!
//! All integers are little-endian and fixed-width. `docs/format.md` mirrors
//! the byte tables in `header.rs`, `record.rs`, `entry.rs` and
//! `checkpoint.rs`; change both together.

pub mod attributes;
pub mod batch;
pub mod checkpoint;
pub mod entry;
pub mod header;
pub mod record;
pub mod scan;

/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this build reads: version 1 segments are read
/// as they are (their records are version 2 records without extensions),
/// version 1 journal files and checkpoints by their own decoders
/// (`entry::decode_v1`, `checkpoint::decode_v1`).
pub const OLDEST_READ_VERSION: u32 = 1;

/// Message ids are below this bound (2^62, more ids than a queue taking ten
/// million messages a second uses in 14,000 years). A record or entry
/// carrying a larger id is invalid, like one with a bad field, so no id
/// read from disk can make id arithmetic overflow.
pub const MAX_ID: u64 = 1 << 62;

/// Why a frame did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the frame does.
    Incomplete,
    /// The marker at the frame's start is wrong (zero fill reads this way).
    BadMagic,
    /// A length field is out of its allowed range.
    BadLength,
    /// A reserved field is not zero or a kind is unknown.
    BadField,
    /// The checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Incomplete => "truncated",
            DecodeError::BadMagic => "bad magic",
            DecodeError::BadLength => "length out of range",
            DecodeError::BadField => "bad field",
            DecodeError::BadChecksum => "checksum mismatch",
        })
    }
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// CRC-32 (IEEE, via `crc32fast`) of several byte slices in sequence.
pub(crate) fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}
