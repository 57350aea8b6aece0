//! The 32-byte header at the start of every file.
//!
//! ```text
//! offset size field
//!      0    8 magic: b"LLSEGMNT", b"LLJOURNL", b"LLCHKPNT" or b"LLATTRIB"
//!      8    4 format version (u32), FORMAT_VERSION
//!     12    4 CRC-32 of bytes 0..12 and 16..32
//!     16    8 file id (u64): segment id, journal file number, checkpoint number
//!     24    8 created at (u64, ms since the Unix epoch)
//! ```

use super::{crc, u32_at, u64_at, FORMAT_VERSION, OLDEST_READ_VERSION};

/// Header size in bytes; the first frame starts here.
pub const SIZE: usize = 32;

/// What kind of file a header opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A segment of message records.
    Segment,
    /// A journal file of state-change entries.
    Journal,
    /// A checkpoint of the live index.
    Checkpoint,
    /// The queue's stored attributes (version 2).
    Attributes,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Segment => b"LLSEGMNT",
            FileKind::Journal => b"LLJOURNL",
            FileKind::Checkpoint => b"LLCHKPNT",
            FileKind::Attributes => b"LLATTRIB",
        }
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// The file's kind.
    pub kind: FileKind,
    /// Segment id, journal file number or checkpoint number.
    pub id: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// The format version the file was written in: [`FORMAT_VERSION`] for
    /// every file this build makes, [`OLDEST_READ_VERSION`] or above for
    /// the files it reads.
    pub version: u32,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// All 32 bytes are zero: the file was created but its header never
    /// reached the disk, so it can hold no data.
    Blank,
    /// The magic is not the expected one.
    WrongMagic,
    /// The version is not one this build reads
    /// ([`OLDEST_READ_VERSION`]..=[`FORMAT_VERSION`]).
    Version(u32),
    /// The checksum does not match.
    BadChecksum,
    /// Fewer than 32 bytes.
    Short,
}

impl FileHeader {
    /// The header of a new file of this build's version.
    pub fn new(kind: FileKind, id: u64, created_ms: u64) -> FileHeader {
        FileHeader {
            kind,
            id,
            created_ms,
            version: FORMAT_VERSION,
        }
    }

    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        b[0..8].copy_from_slice(self.kind.magic());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        let c = crc(&[&b[0..12], &b[16..32]]);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Decode and check a header of the expected kind.
    pub fn decode(kind: FileKind, b: &[u8]) -> Result<FileHeader, HeaderError> {
        let b = b.get(..SIZE).ok_or(HeaderError::Short)?;
        if b.iter().all(|&x| x == 0) {
            return Err(HeaderError::Blank);
        }
        if &b[0..8] != kind.magic() {
            return Err(HeaderError::WrongMagic);
        }
        let version = u32_at(b, 8);
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        if u32_at(b, 12) != crc(&[&b[0..12], &b[16..32]]) {
            return Err(HeaderError::BadChecksum);
        }
        Ok(FileHeader {
            kind,
            id: u64_at(b, 16),
            created_ms: u64_at(b, 24),
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let h = FileHeader::new(FileKind::Journal, 7, 99);
        let mut b = h.encode();
        assert_eq!(FileHeader::decode(FileKind::Journal, &b), Ok(h));
        let old = FileHeader { version: 1, ..h };
        assert_eq!(
            FileHeader::decode(FileKind::Journal, &old.encode()),
            Ok(old)
        );
        let zero = FileHeader { version: 0, ..h };
        assert_eq!(
            FileHeader::decode(FileKind::Journal, &zero.encode()),
            Err(HeaderError::Version(0))
        );
        assert_eq!(
            FileHeader::decode(FileKind::Segment, &b),
            Err(HeaderError::WrongMagic)
        );
        assert_eq!(
            FileHeader::decode(FileKind::Journal, &[0u8; 32]),
            Err(HeaderError::Blank)
        );
        assert_eq!(
            FileHeader::decode(FileKind::Journal, &b[..10]),
            Err(HeaderError::Short)
        );
        b[20] ^= 1;
        assert_eq!(
            FileHeader::decode(FileKind::Journal, &b),
            Err(HeaderError::BadChecksum)
        );
        b[8] = 9;
        assert_eq!(
            FileHeader::decode(FileKind::Journal, &b),
            Err(HeaderError::Version(9))
        );
    }
}
