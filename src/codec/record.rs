//! One message record in a segment: a 40-byte header, an optional
//! extension (deadline, idempotency key), then the payload.
//!
//! ```text
//! offset size field
//!      0    4 magic 0x43524C4C (bytes "LLRC"); never zero, so zero fill
//!             cannot pass for a record
//!      4    4 CRC-32 of the seed, then bytes 8..40, the extension and the
//!             payload. The seed is the id of the segment the record was
//!             written in (u32 LE; version 2), so a record left in a file
//!             from an earlier life never verifies in a later one; version 1
//!             records have no seed
//!      8    8 message id (u64)
//!     16    8 enqueued at (u64, ms since the Unix epoch); for a result
//!             record: when the message was completed
//!     24    4 delay (u32, ms after `enqueued at` before it may be delivered)
//!     28    4 synced end (u32): the segment offset up to which a completed
//!             sync had made the segment durable when this record was
//!             written; recovery uses it to tell a torn tail from damage
//!     32    4 payload length (u32), at most the queue's max_message_size
//!     36    1 priority (u8, higher is served first)
//!     37    1 flags: bit 0 = relocated copy of a record from an older
//!             segment (keeps its original id); bit 1 = more records of the
//!             same batch follow in this segment (a batch whose last record
//!             is missing was never completely written); bit 2 = result
//!             record: the payload is the result of message `id`, and the
//!             record completes (acks) it; other bits zero
//!     38    1 key length k (u8, at most MAX_KEY_BYTES; version 2, zero in 1)
//!     39    1 extension flags: bit 0 = a deadline follows the header
//!             (version 2, zero in 1); other bits zero
//!     40    8 deadline (u64, ms since the Unix epoch), if extension bit 0
//!     ..    k idempotency key
//!     ..    n payload
//! ```
//!
//! A version 1 record is a version 2 record without an extension (bytes
//! 38..40 were reserved and zero) and without a seed, so one decoder reads
//! both.

use super::{u32_at, u64_at, DecodeError, MAX_ID};

/// Record header size in bytes (without the extension).
pub const HEADER_SIZE: usize = 40;
/// The record marker.
pub const MAGIC: u32 = u32::from_le_bytes(*b"LLRC");
/// Flag bit: this record is a relocated copy.
pub const FLAG_RELOCATED: u8 = 1;
/// Flag bit: more records of the same batch follow in this segment.
pub const FLAG_MORE: u8 = 2;
/// Flag bit: this record is the stored result of message `id`.
pub const FLAG_RESULT: u8 = 4;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Extension flag bit: a deadline follows the header.
const EXT_DEADLINE: u8 = 1;

/// What a record's checksum starts from: the id of the segment holding it
/// in version 2, nothing in version 1 (see the table above). Held as the
/// CRC state after the seed bytes, so a check costs no extra pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(u32);

impl Seed {
    /// The seed of records in segment `segment`, whose header says format
    /// `version`.
    pub fn of(version: u32, segment: u32) -> Seed {
        if version >= 2 {
            Seed(crc32fast::hash(&segment.to_le_bytes()))
        } else {
            Seed(0)
        }
    }

    /// The CRC-32 of the seed, then `parts`.
    pub fn crc(self, parts: &[&[u8]]) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(self.0);
        for p in parts.iter().filter(|p| !p.is_empty()) {
            h.update(p);
        }
        h.finalize()
    }
}

/// The fixed fields of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordHeader {
    /// Message id.
    pub id: u64,
    /// Enqueue time (completion time for a result), ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Delay after the enqueue time, in ms.
    pub delay_ms: u32,
    /// Segment offset known durable when the record was written.
    pub synced_end: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Priority, higher first.
    pub priority: u8,
    /// Flag bits ([`FLAG_RELOCATED`], [`FLAG_MORE`], [`FLAG_RESULT`]).
    pub flags: u8,
    /// Deadline, ms since the Unix epoch; 0 for none.
    pub deadline_ms: u64,
    /// Length of the idempotency key; 0 for none.
    pub key_len: u8,
}

impl RecordHeader {
    /// Bytes between the header and the payload.
    pub fn ext_len(&self) -> usize {
        let deadline = if self.deadline_ms > 0 { 8 } else { 0 };
        deadline + usize::from(self.key_len)
    }

    /// Total bytes of the record on disk.
    pub fn frame_len(&self) -> usize {
        HEADER_SIZE + self.ext_len() + self.len as usize
    }

    /// Where the payload starts, from the record's start.
    pub fn payload_offset(&self) -> usize {
        HEADER_SIZE + self.ext_len()
    }

    /// Where the key sits, from the record's start.
    pub fn key_range(&self) -> std::ops::Range<usize> {
        let at = HEADER_SIZE + if self.deadline_ms > 0 { 8 } else { 0 };
        at..at + usize::from(self.key_len)
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

    /// Whether this is a result record.
    pub fn result(&self) -> bool {
        self.flags & FLAG_RESULT != 0
    }
}

/// Append the encoded record (header and payload, no key) to `out`.
pub fn encode(h: &RecordHeader, payload: &[u8], seed: Seed, out: &mut Vec<u8>) {
    encode_with_key(h, &[], payload, seed, out);
}

/// Append the encoded record with its key to `out`; `h.key_len` must be
/// `key.len()`, at most [`MAX_KEY_BYTES`].
pub fn encode_with_key(
    h: &RecordHeader,
    key: &[u8],
    payload: &[u8],
    seed: Seed,
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(h.len as usize, payload.len());
    debug_assert_eq!(usize::from(h.key_len), key.len());
    debug_assert!(key.len() <= MAX_KEY_BYTES);
    let start = out.len();
    let mut head = [0u8; HEADER_SIZE];
    head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    head[8..16].copy_from_slice(&h.id.to_le_bytes());
    head[16..24].copy_from_slice(&h.enqueued_ms.to_le_bytes());
    head[24..28].copy_from_slice(&h.delay_ms.to_le_bytes());
    head[28..32].copy_from_slice(&h.synced_end.to_le_bytes());
    head[32..36].copy_from_slice(&h.len.to_le_bytes());
    head[36] = h.priority;
    head[37] = h.flags;
    head[38] = h.key_len;
    head[39] = if h.deadline_ms > 0 { EXT_DEADLINE } else { 0 };
    out.extend_from_slice(&head);
    if h.deadline_ms > 0 {
        out.extend_from_slice(&h.deadline_ms.to_le_bytes());
    }
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    let c = seed.crc(&[&out[start + 8..]]);
    out[start + 4..start + 8].copy_from_slice(&c.to_le_bytes());
}

/// Decode the header at the start of `b` without checking the checksum
/// (which needs the payload). Refuses lengths over `max_len`. Reads the
/// deadline when `b` holds it; a `b` of only [`HEADER_SIZE`] bytes gives a
/// header whose `deadline_ms` is 1 when it has one (its value unknown).
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
    let ext = b[39];
    let mut h = RecordHeader {
        id: u64_at(b, 8),
        enqueued_ms: u64_at(b, 16),
        delay_ms: u32_at(b, 24),
        synced_end: u32_at(b, 28),
        len: u32_at(b, 32),
        priority: b[36],
        flags: b[37],
        key_len: b[38],
        deadline_ms: 0,
    };
    if h.len as usize > max_len || usize::from(h.key_len) > MAX_KEY_BYTES {
        return Err(DecodeError::BadLength);
    }
    let known = FLAG_RELOCATED | FLAG_MORE | FLAG_RESULT;
    if h.flags & !known != 0 || ext & !EXT_DEADLINE != 0 || h.id >= MAX_ID {
        return Err(DecodeError::BadField);
    }
    // A result record carries no key, deadline or delay, and is no batch.
    if h.result() && (h.key_len > 0 || ext != 0 || h.delay_ms > 0 || h.more()) {
        return Err(DecodeError::BadField);
    }
    if ext & EXT_DEADLINE != 0 {
        h.deadline_ms = match b.get(HEADER_SIZE..HEADER_SIZE + 8) {
            Some(d) => u64_at(d, 0),
            None => 1,
        };
        // Zero means "none", so a stored deadline is never zero.
        if h.deadline_ms == 0 {
            return Err(DecodeError::BadField);
        }
    }
    Ok(h)
}

/// Decode and verify the whole record at the start of `b`, written with
/// `seed`; returns the header and the payload bytes (borrowed from `b`).
pub fn decode(b: &[u8], max_len: usize, seed: Seed) -> Result<(RecordHeader, &[u8]), DecodeError> {
    decode_with_key(b, max_len, seed).map(|(h, _, p)| (h, p))
}

/// [`decode`], also returning the key bytes.
pub fn decode_with_key(
    b: &[u8],
    max_len: usize,
    seed: Seed,
) -> Result<(RecordHeader, &[u8], &[u8]), DecodeError> {
    let h = decode_header(b, max_len)?;
    let frame = b.get(..h.frame_len()).ok_or(DecodeError::Incomplete)?;
    if u32_at(frame, 4) != seed.crc(&[&frame[8..]]) {
        return Err(DecodeError::BadChecksum);
    }
    Ok((h, &frame[h.key_range()], &frame[h.payload_offset()..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::crc;

    /// Records of segment 9 in version 2.
    fn s() -> Seed {
        Seed::of(2, 9)
    }

    fn sample() -> RecordHeader {
        RecordHeader {
            id: 42,
            enqueued_ms: 1_700_000_000_000,
            delay_ms: 5,
            synced_end: 32,
            len: 3,
            priority: 7,
            flags: 0,
            ..RecordHeader::default()
        }
    }

    #[test]
    fn key_and_deadline_round_trip_and_every_byte_is_checked() {
        let h = RecordHeader {
            deadline_ms: 1_700_000_060_000,
            key_len: 4,
            ..sample()
        };
        let mut out = Vec::new();
        encode_with_key(&h, b"k-17", b"abc", s(), &mut out);
        assert_eq!(out.len(), HEADER_SIZE + 8 + 4 + 3);
        let (d, key, p) = decode_with_key(&out, 100, s()).unwrap();
        assert_eq!((d, key, p), (h, &b"k-17"[..], &b"abc"[..]));
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 100, s()).is_err(), "byte {i}");
        }
        // Only the fixed header: the deadline is known to exist.
        assert_eq!(
            decode_header(&out[..HEADER_SIZE], 100).unwrap().deadline_ms,
            1
        );
    }

    #[test]
    fn results_carry_no_key_deadline_or_delay() {
        let mut h = RecordHeader {
            flags: FLAG_RESULT,
            delay_ms: 0,
            ..sample()
        };
        let mut out = Vec::new();
        encode(&h, b"abc", s(), &mut out);
        assert!(decode(&out, 100, s()).unwrap().0.result());
        h.delay_ms = 5;
        out.clear();
        encode(&h, b"abc", s(), &mut out);
        assert_eq!(decode(&out, 100, s()).unwrap_err(), DecodeError::BadField);
    }

    #[test]
    fn a_version_1_record_decodes() {
        // Bytes of a v1 record (bytes 38..40 reserved zero): id 42, 3-byte
        // payload, written by the first format's encoder.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"LLRC");
        v1.extend_from_slice(&[0; 4]);
        v1.extend_from_slice(&42u64.to_le_bytes());
        v1.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        v1.extend_from_slice(&5u32.to_le_bytes());
        v1.extend_from_slice(&32u32.to_le_bytes());
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(&[7, 0, 0, 0]);
        v1.extend_from_slice(b"abc");
        let c = crc(&[&v1[8..]]);
        v1[4..8].copy_from_slice(&c.to_le_bytes());
        let v1_seed = Seed::of(1, 9);
        assert_eq!(decode(&v1, 100, v1_seed).unwrap(), (sample(), &b"abc"[..]));
        assert_eq!(decode(&v1, 100, s()), Err(DecodeError::BadChecksum));
    }

    #[test]
    fn a_record_of_another_segment_does_not_verify() {
        let mut out = Vec::new();
        encode(&sample(), b"abc", s(), &mut out);
        assert!(decode(&out, 100, Seed::of(2, 9)).is_ok());
        assert_eq!(
            decode(&out, 100, Seed::of(2, 10)),
            Err(DecodeError::BadChecksum)
        );
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode(&sample(), b"abc", s(), &mut out);
        assert_eq!(out.len(), HEADER_SIZE + 3);
        let (h, p) = decode(&out, 100, s()).unwrap();
        assert_eq!(h, sample());
        assert_eq!(p, b"abc");
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let mut out = Vec::new();
        encode(&sample(), b"abc", s(), &mut out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 100, s()).is_err(), "byte {i}");
        }
    }

    #[test]
    fn zero_fill_and_truncation_and_limits() {
        assert_eq!(
            decode(&[0u8; 64], 100, s()).unwrap_err(),
            DecodeError::BadMagic
        );
        let mut out = Vec::new();
        encode(&sample(), b"abc", s(), &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut], 100, s()).is_err());
        }
        assert_eq!(decode(&out, 2, s()).unwrap_err(), DecodeError::BadLength);
    }
}
