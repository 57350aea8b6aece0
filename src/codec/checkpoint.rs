//! The checkpoint (the bitcask "hint file"): every live message and where
//! replay must resume, so open time follows live messages, not history.
//!
//! ```text
//! offset size field
//!      0   32 file header (kind LLCHKPNT, id = checkpoint number)
//!     32    8 next id (u64): ids below it may have been handed out
//!     40    8 journal file (u64): replay resumes in this journal file ...
//!     48    4 journal offset (u32): ... at this offset
//!     52    4 head offset (u32): records of the head segment at or past
//!             this offset are not in the checkpoint (scan them)
//!     56    8 head segment (u64)
//!     64    8 acked total (u64): messages acked over the queue's life
//!     72    8 message count (u64), N
//!     80    8 reason section length in bytes (u64), R
//!     88    8 segment count (u64), S
//!     96  8*S segments, each: segment id (u32), records appended (u32)
//!      .. 32*N messages, each:
//!               0  8 id (u64)
//!               8  8 time (u64, ms): ready-at for a pending message,
//!                    dead-lettered-at for a dead letter
//!              16  4 segment id (u32)
//!              20  4 offset of the record in the segment (u32)
//!              24  4 attempt (u32): deliveries so far
//!              28  1 priority (u8)
//!              29  1 state: 0 pending, 1 dead letter, 2 in flight (ready
//!                    again once replay ends)
//!              30  2 reserved, zero
//!      ..     R reasons of dead letters, each: id (u64), length (u16), UTF-8
//!      ..     4 CRC-32 of every byte from offset 32 to here
//! ```

use super::entry::MAX_REASON_BYTES;
use super::header::{FileHeader, FileKind, HeaderError, SIZE as HEADER};
use super::{crc, u16_at, u32_at, u64_at, MAX_ID};

const FIXED: usize = 64;
/// Bytes per message entry.
pub const MESSAGE_SIZE: usize = 32;

/// Where a checkpoint stands in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointMeta {
    /// The checkpoint's number (newest wins).
    pub number: u64,
    /// When it was written, ms since the Unix epoch.
    pub created_ms: u64,
    /// Ids below this may have been handed out.
    pub next_id: u64,
    /// Journal file where replay resumes.
    pub journal_file: u64,
    /// Offset in that file where replay resumes.
    pub journal_offset: u32,
    /// Head segment at checkpoint time.
    pub head_segment: u64,
    /// Records of the head segment at or past this offset are newer.
    pub head_offset: u32,
    /// Messages acked over the queue's life.
    pub acked_total: u64,
}

/// One live message in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMessage {
    /// Message id.
    pub id: u64,
    /// Ready-at (pending) or dead-lettered-at (dead), ms.
    pub time_ms: u64,
    /// Segment holding the record.
    pub segment: u32,
    /// Record offset in the segment.
    pub offset: u32,
    /// Deliveries so far.
    pub attempt: u32,
    /// Priority.
    pub priority: u8,
    /// Pending, dead or in flight.
    pub state: CheckpointState,
}

/// The state of a message in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointState {
    /// Ready, or delayed until `time_ms`.
    Pending = 0,
    /// A dead letter since `time_ms`.
    Dead = 1,
    /// Leased when the checkpoint was taken; `time_ms` is the deadline.
    InFlight = 2,
}

/// Encode a whole checkpoint; `segments` lists (segment id, records
/// appended to it).
pub fn encode(
    meta: &CheckpointMeta,
    segments: &[(u32, u32)],
    messages: &[CheckpointMessage],
    reasons: &[(u64, &str)],
) -> Vec<u8> {
    let reason_len: usize = reasons.iter().map(|(_, r)| 10 + cut(r).len()).sum();
    let size = HEADER + FIXED + segments.len() * 8 + messages.len() * MESSAGE_SIZE + reason_len + 4;
    let mut b = Vec::with_capacity(size);
    let header = FileHeader {
        kind: FileKind::Checkpoint,
        id: meta.number,
        created_ms: meta.created_ms,
    };
    b.extend_from_slice(&header.encode());
    for v in [meta.next_id, meta.journal_file] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&meta.journal_offset.to_le_bytes());
    b.extend_from_slice(&meta.head_offset.to_le_bytes());
    let counts = [
        messages.len() as u64,
        reason_len as u64,
        segments.len() as u64,
    ];
    for v in [meta.head_segment, meta.acked_total]
        .into_iter()
        .chain(counts)
    {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for &(id, records) in segments {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&records.to_le_bytes());
    }
    for m in messages {
        b.extend_from_slice(&m.id.to_le_bytes());
        b.extend_from_slice(&m.time_ms.to_le_bytes());
        b.extend_from_slice(&m.segment.to_le_bytes());
        b.extend_from_slice(&m.offset.to_le_bytes());
        b.extend_from_slice(&m.attempt.to_le_bytes());
        b.push(m.priority);
        b.push(m.state as u8);
        b.extend_from_slice(&[0, 0]);
    }
    for &(id, r) in reasons {
        let r = cut(r);
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&(r.len() as u16).to_le_bytes());
        b.extend_from_slice(r.as_bytes());
    }
    let c = crc(&[&b[HEADER..]]);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

fn cut(r: &str) -> &str {
    let mut n = r.len().min(MAX_REASON_BYTES);
    while !r.is_char_boundary(n) {
        n -= 1;
    }
    &r[..n]
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// The header is bad.
    Header(HeaderError),
    /// The body is short, inconsistent or fails its checksum.
    Body(&'static str),
}

/// Decode a checkpoint, handing each message and each reason to the
/// callbacks; nothing is allocated in proportion to counts the bytes claim
/// before the checksum over them has passed.
pub fn decode(
    b: &[u8],
    mut on_segment: impl FnMut(u32, u32),
    mut on_message: impl FnMut(CheckpointMessage),
    mut on_reason: impl FnMut(u64, String),
) -> Result<CheckpointMeta, CheckpointError> {
    let header = FileHeader::decode(FileKind::Checkpoint, b).map_err(CheckpointError::Header)?;
    if b.len() < HEADER + FIXED + 4 {
        return Err(CheckpointError::Body("shorter than its fixed part"));
    }
    let (body, tail) = b.split_at(b.len() - 4);
    if u32_at(tail, 0) != crc(&[&body[HEADER..]]) {
        return Err(CheckpointError::Body("checksum mismatch"));
    }
    let f = &body[HEADER..];
    let meta = CheckpointMeta {
        number: header.id,
        created_ms: header.created_ms,
        next_id: u64_at(f, 0),
        journal_file: u64_at(f, 8),
        journal_offset: u32_at(f, 16),
        head_offset: u32_at(f, 20),
        head_segment: u64_at(f, 24),
        acked_total: u64_at(f, 32),
    };
    if meta.next_id > MAX_ID {
        return Err(CheckpointError::Body("next id out of range"));
    }
    let count = u64_at(f, 40);
    let reason_len = u64_at(f, 48);
    let segment_count = u64_at(f, 56);
    let rest = &f[FIXED..];
    let expected = count
        .checked_mul(MESSAGE_SIZE as u64)
        .and_then(|m| m.checked_add(reason_len))
        .and_then(|m| m.checked_add(segment_count.checked_mul(8)?));
    if expected != Some(rest.len() as u64) {
        return Err(CheckpointError::Body("section lengths do not add up"));
    }
    let (segs, rest) = rest.split_at(segment_count as usize * 8);
    for s in segs.chunks_exact(8) {
        on_segment(u32_at(s, 0), u32_at(s, 4));
    }
    let (msgs, mut reasons) = rest.split_at(count as usize * MESSAGE_SIZE);
    for m in msgs.chunks_exact(MESSAGE_SIZE) {
        if m[29] > 2 || m[30] != 0 || m[31] != 0 || u64_at(m, 0) >= MAX_ID {
            return Err(CheckpointError::Body("bad message entry"));
        }
        on_message(CheckpointMessage {
            id: u64_at(m, 0),
            time_ms: u64_at(m, 8),
            segment: u32_at(m, 16),
            offset: u32_at(m, 20),
            attempt: u32_at(m, 24),
            priority: m[28],
            state: match m[29] {
                0 => CheckpointState::Pending,
                1 => CheckpointState::Dead,
                _ => CheckpointState::InFlight,
            },
        });
    }
    while !reasons.is_empty() {
        if reasons.len() < 10 {
            return Err(CheckpointError::Body("truncated reason"));
        }
        let id = u64_at(reasons, 0);
        let n = u16_at(reasons, 8) as usize;
        let text = reasons
            .get(10..10 + n)
            .ok_or(CheckpointError::Body("truncated reason"))?;
        on_reason(id, String::from_utf8_lossy(text).into_owned());
        reasons = &reasons[10 + n..];
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_checked() {
        let meta = CheckpointMeta {
            number: 3,
            created_ms: 4,
            next_id: 100,
            journal_file: 2,
            journal_offset: 64,
            head_segment: 5,
            head_offset: 4096,
            acked_total: 77,
        };
        let msgs = vec![
            CheckpointMessage {
                id: 10,
                time_ms: 0,
                segment: 4,
                offset: 32,
                attempt: 0,
                priority: 3,
                state: CheckpointState::Pending,
            },
            CheckpointMessage {
                id: 11,
                time_ms: 9,
                segment: 4,
                offset: 80,
                attempt: 5,
                priority: 0,
                state: CheckpointState::Dead,
            },
        ];
        let b = encode(&meta, &[(4, 9), (5, 1)], &msgs, &[(11u64, "boom")]);
        let mut got = Vec::new();
        let mut rs = Vec::new();
        let mut segs = Vec::new();
        let decoded = decode(
            &b,
            |id, n| segs.push((id, n)),
            |m| got.push(m),
            |id, r| rs.push((id, r)),
        );
        assert_eq!(decoded, Ok(meta));
        assert_eq!(segs, vec![(4, 9), (5, 1)]);
        assert_eq!(got, msgs);
        assert_eq!(rs, vec![(11, "boom".to_string())]);
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&bad, |_, _| {}, |_| {}, |_, _| {}).is_err(),
                "byte {i}"
            );
        }
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], |_, _| {}, |_| {}, |_, _| {}).is_err());
        }
    }
}
