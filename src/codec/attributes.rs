//! The queue's stored attributes (format version 2): the options a queue
//! carries with its directory, as an SQS queue carries its attributes, so
//! every opener (the CLI included) uses them unless it overrides them.
//!
//! ```text
//! offset size field
//!      0   32 file header (kind LLATTRIB, id = revision, counting from 1)
//!     32    8 segment size (u64, bytes)
//!     40    8 max message size (u64, bytes; 0 = not named: the default,
//!             derived from the segment size)
//!     48    8 visibility timeout (u64, ms)
//!     56    4 max deliveries (u32; 0 = no limit)
//!     60    4 flags (u32): bit 0 = retention set, bit 1 = dead-letter
//!             retention set; other bits zero
//!     64    8 retention (u64, ms, with flag bit 0; zero without it)
//!     72    8 dead-letter retention (u64, ms, with flag bit 1; zero
//!             without it)
//!     80    8 dedup window (u64, ms)
//!     88    8 default delay (u64, ms)
//!     96    8 default wait (u64, ms)
//!    104    4 CRC-32 of bytes 32..104
//! ```

use super::header::{FileHeader, FileKind, HeaderError, SIZE as HEADER};
use super::{crc, u32_at, u64_at};

/// Bytes in an attributes file.
pub const SIZE: usize = HEADER + 76;

const RETENTION_SET: u32 = 1;
const DEAD_RETENTION_SET: u32 = 2;

/// The stored attributes; durations in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Size of new segments.
    pub segment_size: u64,
    /// Largest payload (and result) accepted; 0 = not named (the default,
    /// derived from the segment size).
    pub max_message_size: u64,
    /// Lease length when a dequeue names none.
    pub visibility_timeout_ms: u64,
    /// Deliveries before a message becomes a dead letter; 0 = no limit.
    pub max_deliveries: u32,
    /// How long messages and results are kept; `None` = for ever.
    pub retention_ms: Option<u64>,
    /// How long dead letters are kept; `None` = for ever.
    pub dead_letter_retention_ms: Option<u64>,
    /// How long an idempotency key is remembered.
    pub dedup_window_ms: u64,
    /// Delay of an enqueue that names none.
    pub default_delay_ms: u64,
    /// Wait of a dequeue that names none.
    pub default_wait_ms: u64,
}

/// Why an attributes file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributesError {
    /// The header is bad.
    Header(HeaderError),
    /// The body is short, has unknown flags or fails its checksum.
    Body(&'static str),
}

/// Encode attributes as revision `revision` of the file.
pub fn encode(a: &Attributes, revision: u64, created_ms: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(SIZE);
    b.extend_from_slice(&FileHeader::new(FileKind::Attributes, revision, created_ms).encode());
    for v in [a.segment_size, a.max_message_size, a.visibility_timeout_ms] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&a.max_deliveries.to_le_bytes());
    let flags = if a.retention_ms.is_some() {
        RETENTION_SET
    } else {
        0
    } | if a.dead_letter_retention_ms.is_some() {
        DEAD_RETENTION_SET
    } else {
        0
    };
    b.extend_from_slice(&flags.to_le_bytes());
    for v in [
        a.retention_ms.unwrap_or(0),
        a.dead_letter_retention_ms.unwrap_or(0),
        a.dedup_window_ms,
        a.default_delay_ms,
        a.default_wait_ms,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let c = crc(&[&b[HEADER..]]);
    b.extend_from_slice(&c.to_le_bytes());
    debug_assert_eq!(b.len(), SIZE);
    b
}

/// Decode an attributes file; returns the attributes and the revision.
pub fn decode(b: &[u8]) -> Result<(Attributes, u64), AttributesError> {
    let h = FileHeader::decode(FileKind::Attributes, b).map_err(AttributesError::Header)?;
    if b.len() != SIZE {
        return Err(AttributesError::Body("wrong length"));
    }
    if u32_at(b, SIZE - 4) != crc(&[&b[HEADER..SIZE - 4]]) {
        return Err(AttributesError::Body("checksum mismatch"));
    }
    if h.version < 2 {
        // Attributes files exist from version 2 on.
        return Err(AttributesError::Header(HeaderError::Version(h.version)));
    }
    let flags = u32_at(b, 60);
    if flags & !(RETENTION_SET | DEAD_RETENTION_SET) != 0 {
        return Err(AttributesError::Body("unknown flags"));
    }
    // One encoding per value: an unset retention is stored as zero.
    if (flags & RETENTION_SET == 0 && u64_at(b, 64) != 0)
        || (flags & DEAD_RETENTION_SET == 0 && u64_at(b, 72) != 0)
    {
        return Err(AttributesError::Body("a retention without its flag"));
    }
    let a = Attributes {
        segment_size: u64_at(b, 32),
        max_message_size: u64_at(b, 40),
        visibility_timeout_ms: u64_at(b, 48),
        max_deliveries: u32_at(b, 56),
        retention_ms: (flags & RETENTION_SET != 0).then(|| u64_at(b, 64)),
        dead_letter_retention_ms: (flags & DEAD_RETENTION_SET != 0).then(|| u64_at(b, 72)),
        dedup_window_ms: u64_at(b, 80),
        default_delay_ms: u64_at(b, 88),
        default_wait_ms: u64_at(b, 96),
    };
    Ok((a, h.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_checked() {
        let a = Attributes {
            segment_size: 1 << 20,
            max_message_size: 4096,
            visibility_timeout_ms: 30_000,
            max_deliveries: 5,
            retention_ms: Some(86_400_000),
            dead_letter_retention_ms: None,
            dedup_window_ms: 300_000,
            default_delay_ms: 0,
            default_wait_ms: 20_000,
        };
        let b = encode(&a, 7, 99);
        assert_eq!(decode(&b), Ok((a, 7)));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x08;
            assert!(decode(&bad).is_err(), "byte {i}");
        }
        assert!(decode(&b[..SIZE - 1]).is_err());
    }
}
