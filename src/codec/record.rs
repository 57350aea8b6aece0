//! One message record in a segment: a 40-byte header, then the payload.
//!
//! ```text
//! offset size field
//!      0    4 magic 0x43524C4C (bytes "LLRC"); never zero, so zero fill
//!             cannot pass for a record
//!      4    4 CRC-32 of bytes 8..40 and the payload
//!      8    8 message id (u64)
//!     16    8 enqueued at (u64, ms since the Unix epoch)
//!     24    4 delay (u32, ms after `enqueued at` before it may be delivered)
//!     28    4 synced end (u32): the segment offset up to which a completed
//!             sync had made the segment durable when this record was
//!             written; recovery uses it to tell a torn tail from damage
//!     32    4 payload length (u32), at most the queue's max_message_size
//!     36    1 priority (u8, higher is served first)
//!     37    1 flags: bit 0 = relocated copy of a record from an older
//!             segment (keeps its original id); bit 1 = more records of the
//!             same batch follow in this segment (a batch whose last record
//!             is missing was never completely written); other bits zero
//!     38    2 reserved, zero
//!     40    n payload
//! ```

use super::{crc, u16_at, u32_at, u64_at, DecodeError, MAX_ID};

/// Record header size in bytes.
pub const HEADER_SIZE: usize = 40;
/// The record marker.
pub const MAGIC: u32 = u32::from_le_bytes(*b"LLRC");
/// Flag bit: this record is a relocated copy.
pub const FLAG_RELOCATED: u8 = 1;
/// Flag bit: more records of the same batch follow in this segment.
pub const FLAG_MORE: u8 = 2;

/// The fixed fields of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Message id.
    pub id: u64,
    /// Enqueue time, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Delay after the enqueue time, in ms.
    pub delay_ms: u32,
    /// Segment offset known durable when the record was written.
    pub synced_end: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Priority, higher first.
    pub priority: u8,
    /// Flag bits ([`FLAG_RELOCATED`]).
    pub flags: u8,
}

impl RecordHeader {
    /// Total bytes of the record on disk.
    pub fn frame_len(&self) -> usize {
        HEADER_SIZE + self.len as usize
    }

    /// Whether more records of its batch follow it.
    pub fn more(&self) -> bool {
        self.flags & FLAG_MORE != 0
    }

    /// When the message may first be delivered: 0 (at once) without a
    /// delay, else its enqueue time plus the delay.
    pub fn ready_at(&self) -> u64 {
        if self.delay_ms > 0 {
            self.enqueued_ms.saturating_add(u64::from(self.delay_ms))
        } else {
            0
        }
    }

    /// Whether this is a relocated copy of an older record.
    pub fn relocated(&self) -> bool {
        self.flags & FLAG_RELOCATED != 0
    }
}

/// Append the encoded record (header and payload) to `out`.
pub fn encode(h: &RecordHeader, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(h.len as usize, payload.len());
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&h.id.to_le_bytes());
    out.extend_from_slice(&h.enqueued_ms.to_le_bytes());
    out.extend_from_slice(&h.delay_ms.to_le_bytes());
    out.extend_from_slice(&h.synced_end.to_le_bytes());
    out.extend_from_slice(&h.len.to_le_bytes());
    out.push(h.priority);
    out.push(h.flags);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(payload);
    let c = crc(&[&out[start + 8..start + HEADER_SIZE], payload]);
    out[start + 4..start + 8].copy_from_slice(&c.to_le_bytes());
}

/// Decode the header at the start of `b` without checking the checksum
/// (which needs the payload). Refuses lengths over `max_len`.
pub fn decode_header(b: &[u8], max_len: usize) -> Result<RecordHeader, DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Incomplete);
    }
    if u32_at(b, 0) != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if b.len() < HEADER_SIZE {
        return Err(DecodeError::Incomplete);
    }
    let h = RecordHeader {
        id: u64_at(b, 8),
        enqueued_ms: u64_at(b, 16),
        delay_ms: u32_at(b, 24),
        synced_end: u32_at(b, 28),
        len: u32_at(b, 32),
        priority: b[36],
        flags: b[37],
    };
    if h.len as usize > max_len {
        return Err(DecodeError::BadLength);
    }
    if h.flags & !(FLAG_RELOCATED | FLAG_MORE) != 0 || u16_at(b, 38) != 0 || h.id >= MAX_ID {
        return Err(DecodeError::BadField);
    }
    Ok(h)
}

/// Decode and verify the whole record at the start of `b`; returns the
/// header and the payload bytes (borrowed from `b`).
pub fn decode(b: &[u8], max_len: usize) -> Result<(RecordHeader, &[u8]), DecodeError> {
    let h = decode_header(b, max_len)?;
    let payload = b
        .get(HEADER_SIZE..h.frame_len())
        .ok_or(DecodeError::Incomplete)?;
    verify(b, payload)?;
    Ok((h, payload))
}

/// Check the checksum of a record whose first 40 bytes are `header` and
/// whose payload is `payload` (a private copy, so bytes cannot change
/// between the check and their use).
pub fn verify(header: &[u8], payload: &[u8]) -> Result<(), DecodeError> {
    if header.len() < HEADER_SIZE {
        return Err(DecodeError::Incomplete);
    }
    if u32_at(header, 4) != crc(&[&header[8..HEADER_SIZE], payload]) {
        return Err(DecodeError::BadChecksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordHeader {
        RecordHeader {
            id: 42,
            enqueued_ms: 1_700_000_000_000,
            delay_ms: 5,
            synced_end: 32,
            len: 3,
            priority: 7,
            flags: 0,
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode(&sample(), b"abc", &mut out);
        assert_eq!(out.len(), HEADER_SIZE + 3);
        let (h, p) = decode(&out, 100).unwrap();
        assert_eq!(h, sample());
        assert_eq!(p, b"abc");
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let mut out = Vec::new();
        encode(&sample(), b"abc", &mut out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 100).is_err(), "byte {i}");
        }
    }

    #[test]
    fn zero_fill_and_truncation_and_limits() {
        assert_eq!(decode(&[0u8; 64], 100).unwrap_err(), DecodeError::BadMagic);
        let mut out = Vec::new();
        encode(&sample(), b"abc", &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut], 100).is_err());
        }
        assert_eq!(decode(&out, 2).unwrap_err(), DecodeError::BadLength);
    }
}
