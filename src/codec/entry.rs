//! One state-change entry of the journal, and its version 1 encoding: a
//! 36-byte header, then an optional tail (the reason text of a dead
//! letter). Version 2 journal files hold entries packed into batches
//! (`codec::batch`); version 1 files are read entry by entry with
//! [`decode_v1`].
//!
//! ```text
//! offset size field
//!      0    4 magic 0x454A4C4C (bytes "LLJE"); never zero
//!      4    4 CRC-32 of bytes 8..36 and the tail
//!      8    8 message id (u64); for IdsReserved: the first id not reserved
//!     16    8 time (u64, ms since the Unix epoch): lease deadline,
//!             ready-at time or event time, per kind
//!     24    4 attempt (u32): deliveries so far, counting this one
//!     28    4 synced end (u32): journal-file offset made durable by a
//!             completed sync when this entry was written
//!     32    1 kind (see `Kind`)
//!     33    1 priority (u8) of the message
//!     34    2 tail length (u16), at most MAX_REASON_BYTES
//!     36    n tail
//! ```

use super::{crc, u16_at, u32_at, u64_at, DecodeError, MAX_ID};

/// Entry header size in bytes.
pub const HEADER_SIZE: usize = 36;

/// Longest dead-letter reason kept, in bytes; longer reasons are cut at a
/// character boundary.
pub const MAX_REASON_BYTES: usize = 1024;

/// The entry marker.
pub const MAGIC: u32 = u32::from_le_bytes(*b"LLJE");

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Leased to a consumer; `time` is the lease deadline, `attempt` counts
    /// this delivery.
    Delivered = 1,
    /// Acknowledged: done for good.
    Acked = 2,
    /// Returned by the consumer; ready again at `time`.
    Nacked = 3,
    /// Its lease expired at `time`; ready again.
    Expired = 4,
    /// Moved to the dead letters at `time`; the tail is the reason.
    DeadLettered = 5,
    /// Taken from the dead letters back to ready at `time`, attempts reset.
    Redriven = 6,
    /// A dead letter removed for good.
    Purged = 7,
    /// The lease was extended to `time`.
    LeaseExtended = 8,
    /// Every id below `id` may have been handed out; the next open starts
    /// at `id` or above, so no id is ever reused after a crash.
    IdsReserved = 9,
    /// Its deadline passed before it was delivered: a dead letter with the
    /// reason "deadline missed" since `time` (version 2).
    DeadlineMissed = 10,
    /// Retention: every live message and stored result with an id below
    /// `id` is removed, dead letters excepted (version 2).
    RetentionCut = 11,
    /// A dead letter removed by `dead_letter_retention` (version 2).
    DeadExpired = 12,
}

/// The reason a [`Kind::DeadlineMissed`] message carries as a dead letter.
pub const DEADLINE_MISSED: &str = "deadline missed";

impl Kind {
    /// The kind with this byte value, in version 2.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            10 => Kind::DeadlineMissed,
            11 => Kind::RetentionCut,
            12 => Kind::DeadExpired,
            b => return Kind::from_u8_v1(b),
        })
    }

    /// Whether `id` names a message (not an id bound).
    pub fn names_message(self) -> bool {
        !matches!(self, Kind::IdsReserved | Kind::RetentionCut)
    }

    /// The kinds version 1 knew.
    fn from_u8_v1(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Delivered,
            2 => Kind::Acked,
            3 => Kind::Nacked,
            4 => Kind::Expired,
            5 => Kind::DeadLettered,
            6 => Kind::Redriven,
            7 => Kind::Purged,
            8 => Kind::LeaseExtended,
            9 => Kind::IdsReserved,
            _ => return None,
        })
    }
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What happened.
    pub kind: Kind,
    /// The message (or, for `IdsReserved`, the first unreserved id).
    pub id: u64,
    /// Deadline, ready-at or event time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Attempt number.
    pub attempt: u32,
    /// The message's priority (lets replay find it without a lookup).
    pub priority: u8,
    /// Dead-letter reason (empty for other kinds).
    pub reason: String,
}

impl Entry {
    /// An entry with no reason.
    pub fn new(kind: Kind, id: u64, priority: u8, time_ms: u64, attempt: u32) -> Entry {
        Entry {
            kind,
            id,
            time_ms,
            attempt,
            priority,
            reason: String::new(),
        }
    }

    /// Bytes on disk.
    pub fn frame_len(&self) -> usize {
        HEADER_SIZE + self.reason.len().min(MAX_REASON_BYTES)
    }
}

/// Append the version 1 encoding of `e` to `out`; `synced_end` as in the
/// table above. This build writes version 2 batches; the version 1 encoder
/// stays for tests and fuzzers that build version 1 files.
pub fn encode_v1(e: &Entry, synced_end: u32, out: &mut Vec<u8>) {
    let tail = &e.reason.as_bytes()[..e.reason.len().min(MAX_REASON_BYTES)];
    // The fixed part is built on the stack and appended once (one capacity
    // check instead of ten).
    let mut head = [0u8; HEADER_SIZE];
    head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    head[8..16].copy_from_slice(&e.id.to_le_bytes());
    head[16..24].copy_from_slice(&e.time_ms.to_le_bytes());
    head[24..28].copy_from_slice(&e.attempt.to_le_bytes());
    head[28..32].copy_from_slice(&synced_end.to_le_bytes());
    head[32] = e.kind as u8;
    head[33] = e.priority;
    head[34..36].copy_from_slice(&(tail.len() as u16).to_le_bytes());
    let c = crc(&[&head[8..], tail]);
    head[4..8].copy_from_slice(&c.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(tail);
}

/// Decode and verify the version 1 entry at the start of `b`; returns the
/// entry, its `synced end` field and its length on disk.
pub fn decode_v1(b: &[u8]) -> Result<(Entry, u32, usize), DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Incomplete);
    }
    if u32_at(b, 0) != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if b.len() < HEADER_SIZE {
        return Err(DecodeError::Incomplete);
    }
    let tail_len = u16_at(b, 34) as usize;
    if tail_len > MAX_REASON_BYTES {
        return Err(DecodeError::BadLength);
    }
    let frame = b
        .get(..HEADER_SIZE + tail_len)
        .ok_or(DecodeError::Incomplete)?;
    if u32_at(b, 4) != crc(&[&frame[8..]]) {
        return Err(DecodeError::BadChecksum);
    }
    let kind = Kind::from_u8_v1(b[32]).ok_or(DecodeError::BadField)?;
    // `IdsReserved` carries the first id not reserved, so MAX_ID itself.
    if u64_at(b, 8) > MAX_ID {
        return Err(DecodeError::BadField);
    }
    // A cut reason may end inside a character; keep what is valid.
    let reason = String::from_utf8_lossy(&frame[HEADER_SIZE..]).into_owned();
    let e = Entry {
        kind,
        id: u64_at(b, 8),
        time_ms: u64_at(b, 16),
        attempt: u32_at(b, 24),
        priority: b[33],
        reason,
    };
    Ok((e, u32_at(b, 28), frame.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_reason() {
        let mut e = Entry::new(Kind::Delivered, 9, 4, 123, 2);
        let mut out = Vec::new();
        encode_v1(&e, 77, &mut out);
        assert_eq!(out.len(), HEADER_SIZE);
        assert_eq!(decode_v1(&out).unwrap(), (e.clone(), 77, HEADER_SIZE));
        e.kind = Kind::DeadLettered;
        e.reason = "model failed: shape".into();
        out.clear();
        encode_v1(&e, 0, &mut out);
        assert_eq!(decode_v1(&out).unwrap().0, e);
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let mut e = Entry::new(Kind::DeadLettered, 1, 0, 2, 3);
        e.reason = "x".into();
        let mut out = Vec::new();
        encode_v1(&e, 5, &mut out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x04;
            assert!(decode_v1(&bad).is_err(), "byte {i}");
        }
        for cut in 0..out.len() {
            assert!(decode_v1(&out[..cut]).is_err());
        }
    }

    #[test]
    fn long_reasons_are_cut_to_the_limit() {
        let mut e = Entry::new(Kind::DeadLettered, 1, 0, 2, 3);
        e.reason = "é".repeat(MAX_REASON_BYTES);
        let mut out = Vec::new();
        encode_v1(&e, 0, &mut out);
        assert_eq!(out.len(), HEADER_SIZE + MAX_REASON_BYTES);
        assert!(decode_v1(&out).is_ok());
    }
}
