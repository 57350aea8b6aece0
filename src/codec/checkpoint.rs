//! The checkpoint (the bitcask "hint file"): every live message, stored
//! result, remembered key and retention mark, and where replay must resume,
//! so open time follows live state, not history.
//!
//! Version 2:
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
//!     64    8 acked total (u64): messages acked or completed, lifetime
//!     72    8 deadline missed total (u64)
//!     80    8 expired total (u64): messages and results removed by
//!             retention
//!     88    8 dead letters expired total (u64)
//!     96    8 segment count S
//!    104    8 message count N
//!    112    8 reason section length in bytes R
//!    120    8 key section length in bytes K
//!    128    8 mark count M
//!    136 12*S segments, each: segment id (u32), records appended (u32),
//!             largest payload appended (u32)
//!      .. 40*N messages, each:
//!               0  8 id (u64)
//!               8  8 time (u64, ms): ready-at for a pending message,
//!                    dead-lettered-at for a dead letter, lease deadline
//!                    in flight, completed-at for a result
//!              16  8 deadline (u64, ms; 0 = none)
//!              24  4 segment id (u32)
//!              28  4 offset of the record in the segment (u32); for a
//!                    result: of the result record
//!              32  4 attempt (u32): deliveries so far
//!              36  1 priority (u8)
//!              37  1 state: 0 pending, 1 dead letter, 2 in flight (ready
//!                    again once replay ends), 3 completed with a result
//!              38  2 reserved, zero
//!      ..     R reasons of dead letters, each: id (u64), length (u16), UTF-8
//!      ..     K keys, each: id (u64), first seen at (u64, ms), length (u8,
//!             1..=128), key bytes
//!      .. 16*M retention marks, each: end id (u64: every id below it was
//!             enqueued by the time that follows), enqueued at (u64, ms)
//!      ..     4 CRC-32 of every byte from offset 32 to here
//! ```
//!
//! Version 1 (read by [`decode_v1`]) had no counters but acked total, no
//! deadlines, keys, marks or results, 8-byte segment entries (no largest
//! payload) and 32-byte message entries; its table is in docs/format.md.

use super::entry::MAX_REASON_BYTES;
use super::header::{FileHeader, FileKind, HeaderError, SIZE as HEADER};
use super::record::MAX_KEY_BYTES;
use super::{crc, u16_at, u32_at, u64_at, MAX_ID};

const FIXED: usize = 104;
/// Bytes per message entry.
pub const MESSAGE_SIZE: usize = 40;
const SEGMENT_SIZE: usize = 12;
const MARK_SIZE: usize = 16;

/// Where a checkpoint stands in history, and the lifetime counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointMeta {
    /// The checkpoint's number (newest wins).
    pub number: u64,
    /// When it was written, ms since the Unix epoch.
    pub created_ms: u64,
    /// The format version it was written in.
    pub version: u32,
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
    /// Messages acked or completed over the queue's life.
    pub acked_total: u64,
    /// Messages whose deadline passed before delivery, lifetime.
    pub deadline_missed_total: u64,
    /// Messages and results removed by retention, lifetime.
    pub expired_total: u64,
    /// Dead letters removed by dead-letter retention, lifetime.
    pub dead_expired_total: u64,
}

/// One segment in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSegment {
    /// Segment id.
    pub id: u32,
    /// Records ever appended to it, relocated copies included.
    pub records: u32,
    /// The largest payload appended to it (0 when unknown: version 1).
    pub largest: u32,
}

/// One live message (or stored result) in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMessage {
    /// Message id.
    pub id: u64,
    /// Ready-at, dead-lettered-at, lease deadline or completed-at, ms.
    pub time_ms: u64,
    /// Deadline, ms; 0 for none.
    pub deadline_ms: u64,
    /// Segment holding the record.
    pub segment: u32,
    /// Record offset in the segment.
    pub offset: u32,
    /// Deliveries so far.
    pub attempt: u32,
    /// Priority.
    pub priority: u8,
    /// Pending, dead, in flight or completed.
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
    /// Completed; the record named is its result.
    Completed = 3,
}

/// An idempotency key remembered in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointKey<'a> {
    /// The id the key's first enqueue returned.
    pub id: u64,
    /// When the key was first seen, ms.
    pub at_ms: u64,
    /// The key.
    pub key: &'a [u8],
}

/// What a checkpoint holds besides its meta.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointBody<'a> {
    /// Every open segment.
    pub segments: &'a [CheckpointSegment],
    /// Every live message and stored result.
    pub messages: &'a [CheckpointMessage],
    /// Reasons of dead letters.
    pub reasons: &'a [(u64, &'a str)],
    /// Remembered keys.
    pub keys: &'a [CheckpointKey<'a>],
    /// Retention marks: (end id, enqueued at ms), ids ascending.
    pub marks: &'a [(u64, u64)],
}

/// Where decoding hands each part of a checkpoint.
pub trait CheckpointSink {
    /// A segment.
    fn segment(&mut self, s: CheckpointSegment);
    /// A message.
    fn message(&mut self, m: CheckpointMessage);
    /// A dead letter's reason.
    fn reason(&mut self, id: u64, reason: String);
    /// A remembered key.
    fn key(&mut self, k: CheckpointKey<'_>);
    /// A retention mark.
    fn mark(&mut self, end_id: u64, at_ms: u64);
}

/// A sink that keeps nothing (for checks that only need the meta).
#[derive(Debug, Default)]
pub struct Discard;

impl CheckpointSink for Discard {
    fn segment(&mut self, _: CheckpointSegment) {}
    fn message(&mut self, _: CheckpointMessage) {}
    fn reason(&mut self, _: u64, _: String) {}
    fn key(&mut self, _: CheckpointKey<'_>) {}
    fn mark(&mut self, _: u64, _: u64) {}
}

/// Encode a whole version 2 checkpoint.
pub fn encode(meta: &CheckpointMeta, body: &CheckpointBody<'_>) -> Vec<u8> {
    let reason_len: usize = body.reasons.iter().map(|(_, r)| 10 + cut(r).len()).sum();
    let key_len: usize = body.keys.iter().map(|k| 17 + k.key.len()).sum();
    let size = HEADER
        + FIXED
        + body.segments.len() * SEGMENT_SIZE
        + body.messages.len() * MESSAGE_SIZE
        + reason_len
        + key_len
        + body.marks.len() * MARK_SIZE
        + 4;
    let mut b = Vec::with_capacity(size);
    let header = FileHeader::new(FileKind::Checkpoint, meta.number, meta.created_ms);
    b.extend_from_slice(&header.encode());
    for v in [meta.next_id, meta.journal_file] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&meta.journal_offset.to_le_bytes());
    b.extend_from_slice(&meta.head_offset.to_le_bytes());
    for v in [
        meta.head_segment,
        meta.acked_total,
        meta.deadline_missed_total,
        meta.expired_total,
        meta.dead_expired_total,
        body.segments.len() as u64,
        body.messages.len() as u64,
        reason_len as u64,
        key_len as u64,
        body.marks.len() as u64,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for s in body.segments {
        for v in [s.id, s.records, s.largest] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    for m in body.messages {
        for v in [m.id, m.time_ms, m.deadline_ms] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [m.segment, m.offset, m.attempt] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[m.priority, m.state as u8, 0, 0]);
    }
    for &(id, r) in body.reasons {
        let r = cut(r);
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&(r.len() as u16).to_le_bytes());
        b.extend_from_slice(r.as_bytes());
    }
    for k in body.keys {
        debug_assert!((1..=MAX_KEY_BYTES).contains(&k.key.len()));
        b.extend_from_slice(&k.id.to_le_bytes());
        b.extend_from_slice(&k.at_ms.to_le_bytes());
        b.push(k.key.len() as u8);
        b.extend_from_slice(k.key);
    }
    for &(id, at) in body.marks {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&at.to_le_bytes());
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

/// Check the header and the trailing checksum; returns the header and the
/// bytes between them.
fn open(b: &[u8], fixed: usize) -> Result<(FileHeader, &[u8]), CheckpointError> {
    let header = FileHeader::decode(FileKind::Checkpoint, b).map_err(CheckpointError::Header)?;
    if b.len() < HEADER + fixed + 4 {
        return Err(CheckpointError::Body("shorter than its fixed part"));
    }
    let (body, tail) = b.split_at(b.len() - 4);
    if u32_at(tail, 0) != crc(&[&body[HEADER..]]) {
        return Err(CheckpointError::Body("checksum mismatch"));
    }
    Ok((header, &body[HEADER..]))
}

/// Decode the reason section.
fn reasons(mut r: &[u8], sink: &mut dyn CheckpointSink) -> Result<(), CheckpointError> {
    while !r.is_empty() {
        if r.len() < 10 {
            return Err(CheckpointError::Body("truncated reason"));
        }
        let id = u64_at(r, 0);
        let n = u16_at(r, 8) as usize;
        if n > MAX_REASON_BYTES {
            return Err(CheckpointError::Body("reason too long"));
        }
        let text = r
            .get(10..10 + n)
            .ok_or(CheckpointError::Body("truncated reason"))?;
        sink.reason(id, String::from_utf8_lossy(text).into_owned());
        r = &r[10 + n..];
    }
    Ok(())
}

/// Decode a checkpoint of either version, handing each part to `sink`;
/// nothing is allocated in proportion to counts the bytes claim before the
/// checksum over them has passed.
pub fn decode(b: &[u8], sink: &mut dyn CheckpointSink) -> Result<CheckpointMeta, CheckpointError> {
    let header = FileHeader::decode(FileKind::Checkpoint, b).map_err(CheckpointError::Header)?;
    if header.version == 1 {
        return decode_v1(b, sink);
    }
    let (_, f) = open(b, FIXED)?;
    let meta = CheckpointMeta {
        number: header.id,
        created_ms: header.created_ms,
        version: header.version,
        next_id: u64_at(f, 0),
        journal_file: u64_at(f, 8),
        journal_offset: u32_at(f, 16),
        head_offset: u32_at(f, 20),
        head_segment: u64_at(f, 24),
        acked_total: u64_at(f, 32),
        deadline_missed_total: u64_at(f, 40),
        expired_total: u64_at(f, 48),
        dead_expired_total: u64_at(f, 56),
    };
    if meta.next_id > MAX_ID {
        return Err(CheckpointError::Body("next id out of range"));
    }
    let (s, n, r, k, m) = (
        u64_at(f, 64),
        u64_at(f, 72),
        u64_at(f, 80),
        u64_at(f, 88),
        u64_at(f, 96),
    );
    let rest = &f[FIXED..];
    let expected = s
        .checked_mul(SEGMENT_SIZE as u64)
        .and_then(|x| x.checked_add(n.checked_mul(MESSAGE_SIZE as u64)?))
        .and_then(|x| x.checked_add(r))
        .and_then(|x| x.checked_add(k))
        .and_then(|x| x.checked_add(m.checked_mul(MARK_SIZE as u64)?));
    if expected != Some(rest.len() as u64) {
        return Err(CheckpointError::Body("section lengths do not add up"));
    }
    let (segs, rest) = rest.split_at(s as usize * SEGMENT_SIZE);
    for e in segs.chunks_exact(SEGMENT_SIZE) {
        sink.segment(CheckpointSegment {
            id: u32_at(e, 0),
            records: u32_at(e, 4),
            largest: u32_at(e, 8),
        });
    }
    let (msgs, rest) = rest.split_at(n as usize * MESSAGE_SIZE);
    for e in msgs.chunks_exact(MESSAGE_SIZE) {
        let state = match e[37] {
            0 => CheckpointState::Pending,
            1 => CheckpointState::Dead,
            2 => CheckpointState::InFlight,
            3 => CheckpointState::Completed,
            _ => return Err(CheckpointError::Body("bad message entry")),
        };
        if e[38] != 0 || e[39] != 0 || u64_at(e, 0) >= MAX_ID {
            return Err(CheckpointError::Body("bad message entry"));
        }
        sink.message(CheckpointMessage {
            id: u64_at(e, 0),
            time_ms: u64_at(e, 8),
            deadline_ms: u64_at(e, 16),
            segment: u32_at(e, 24),
            offset: u32_at(e, 28),
            attempt: u32_at(e, 32),
            priority: e[36],
            state,
        });
    }
    let (reason_bytes, rest) = rest.split_at(r as usize);
    reasons(reason_bytes, sink)?;
    let (mut keys, marks) = rest.split_at(k as usize);
    while !keys.is_empty() {
        let len = *keys.get(16).ok_or(CheckpointError::Body("truncated key"))? as usize;
        if !(1..=MAX_KEY_BYTES).contains(&len) || u64_at(keys, 0) >= MAX_ID {
            return Err(CheckpointError::Body("bad key entry"));
        }
        let key = keys
            .get(17..17 + len)
            .ok_or(CheckpointError::Body("truncated key"))?;
        sink.key(CheckpointKey {
            id: u64_at(keys, 0),
            at_ms: u64_at(keys, 8),
            key,
        });
        keys = &keys[17 + len..];
    }
    let mut last = None;
    for e in marks.chunks_exact(MARK_SIZE) {
        let id = u64_at(e, 0);
        if id > MAX_ID || last.is_some_and(|l| id <= l) {
            return Err(CheckpointError::Body("marks out of order"));
        }
        last = Some(id);
        sink.mark(id, u64_at(e, 8));
    }
    Ok(meta)
}

/// Decode a version 1 checkpoint (see docs/format.md, "Version 1").
pub fn decode_v1(
    b: &[u8],
    sink: &mut dyn CheckpointSink,
) -> Result<CheckpointMeta, CheckpointError> {
    const FIXED_V1: usize = 64;
    const MESSAGE_V1: usize = 32;
    let (header, f) = open(b, FIXED_V1)?;
    let meta = CheckpointMeta {
        number: header.id,
        created_ms: header.created_ms,
        version: header.version,
        next_id: u64_at(f, 0),
        journal_file: u64_at(f, 8),
        journal_offset: u32_at(f, 16),
        head_offset: u32_at(f, 20),
        head_segment: u64_at(f, 24),
        acked_total: u64_at(f, 32),
        ..CheckpointMeta::default()
    };
    if meta.next_id > MAX_ID {
        return Err(CheckpointError::Body("next id out of range"));
    }
    let count = u64_at(f, 40);
    let reason_len = u64_at(f, 48);
    let segment_count = u64_at(f, 56);
    let rest = &f[FIXED_V1..];
    let expected = count
        .checked_mul(MESSAGE_V1 as u64)
        .and_then(|m| m.checked_add(reason_len))
        .and_then(|m| m.checked_add(segment_count.checked_mul(8)?));
    if expected != Some(rest.len() as u64) {
        return Err(CheckpointError::Body("section lengths do not add up"));
    }
    let (segs, rest) = rest.split_at(segment_count as usize * 8);
    for s in segs.chunks_exact(8) {
        sink.segment(CheckpointSegment {
            id: u32_at(s, 0),
            records: u32_at(s, 4),
            largest: 0,
        });
    }
    let (msgs, reason_bytes) = rest.split_at(count as usize * MESSAGE_V1);
    for m in msgs.chunks_exact(MESSAGE_V1) {
        if m[29] > 2 || m[30] != 0 || m[31] != 0 || u64_at(m, 0) >= MAX_ID {
            return Err(CheckpointError::Body("bad message entry"));
        }
        sink.message(CheckpointMessage {
            id: u64_at(m, 0),
            time_ms: u64_at(m, 8),
            deadline_ms: 0,
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
    reasons(reason_bytes, sink)?;
    Ok(meta)
}

/// A sink that collects everything (tests, inspection).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Segments in file order.
    pub segments: Vec<CheckpointSegment>,
    /// Messages in file order.
    pub messages: Vec<CheckpointMessage>,
    /// Reasons in file order.
    pub reasons: Vec<(u64, String)>,
    /// Keys: (id, first seen, key).
    pub keys: Vec<(u64, u64, Vec<u8>)>,
    /// Marks.
    pub marks: Vec<(u64, u64)>,
}

impl CheckpointSink for Collected {
    fn segment(&mut self, s: CheckpointSegment) {
        self.segments.push(s);
    }
    fn message(&mut self, m: CheckpointMessage) {
        self.messages.push(m);
    }
    fn reason(&mut self, id: u64, reason: String) {
        self.reasons.push((id, reason));
    }
    fn key(&mut self, k: CheckpointKey<'_>) {
        self.keys.push((k.id, k.at_ms, k.key.to_vec()));
    }
    fn mark(&mut self, end_id: u64, at_ms: u64) {
        self.marks.push((end_id, at_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            number: 3,
            created_ms: 4,
            version: super::super::FORMAT_VERSION,
            next_id: 100,
            journal_file: 2,
            journal_offset: 64,
            head_segment: 5,
            head_offset: 4096,
            acked_total: 77,
            deadline_missed_total: 6,
            expired_total: 5,
            dead_expired_total: 4,
        }
    }

    fn msg(id: u64, state: CheckpointState, deadline_ms: u64) -> CheckpointMessage {
        CheckpointMessage {
            id,
            time_ms: 9,
            deadline_ms,
            segment: 4,
            offset: 32 + id as u32,
            attempt: 5,
            priority: 3,
            state,
        }
    }

    #[test]
    fn round_trip_and_every_byte_checked() {
        let segments = [
            CheckpointSegment {
                id: 4,
                records: 9,
                largest: 1024,
            },
            CheckpointSegment {
                id: 5,
                records: 1,
                largest: 3,
            },
        ];
        let messages = [
            msg(10, CheckpointState::Pending, 0),
            msg(11, CheckpointState::Dead, 0),
            msg(12, CheckpointState::InFlight, 1000),
            msg(13, CheckpointState::Completed, 0),
        ];
        let keys = [CheckpointKey {
            id: 10,
            at_ms: 8,
            key: b"request-8c1f",
        }];
        let body = CheckpointBody {
            segments: &segments,
            messages: &messages,
            reasons: &[(11, "boom")],
            keys: &keys,
            marks: &[(10, 1), (12, 2)],
        };
        let b = encode(&meta(), &body);
        let mut got = Collected::default();
        assert_eq!(decode(&b, &mut got), Ok(meta()));
        assert_eq!(got.segments, segments);
        assert_eq!(got.messages, messages);
        assert_eq!(got.reasons, vec![(11, "boom".to_string())]);
        assert_eq!(got.keys, vec![(10, 8, b"request-8c1f".to_vec())]);
        assert_eq!(got.marks, vec![(10, 1), (12, 2)]);
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, &mut Discard).is_err(), "byte {i}");
        }
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], &mut Discard).is_err());
        }
    }

    #[test]
    fn a_version_1_checkpoint_decodes() {
        // The first format's layout, built by hand: one pending message and
        // one dead letter with its reason.
        let mut b = FileHeader {
            version: 1,
            ..FileHeader::new(FileKind::Checkpoint, 3, 4)
        }
        .encode()
        .to_vec();
        for v in [100u64, 2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&64u32.to_le_bytes());
        b.extend_from_slice(&4096u32.to_le_bytes());
        for v in [5u64, 77, 2, 14, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&9u32.to_le_bytes());
        for (id, state) in [(10u64, 0u8), (11, 1)] {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&9u64.to_le_bytes());
            for v in [4u32, 32 + id as u32, 5] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&[3, state, 0, 0]);
        }
        b.extend_from_slice(&11u64.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(b"boom");
        let c = crc(&[&b[HEADER..]]);
        b.extend_from_slice(&c.to_le_bytes());
        let mut got = Collected::default();
        let m = decode(&b, &mut got).unwrap();
        assert_eq!(
            m,
            CheckpointMeta {
                version: 1,
                deadline_missed_total: 0,
                expired_total: 0,
                dead_expired_total: 0,
                ..meta()
            }
        );
        assert_eq!(
            got.messages,
            vec![
                msg(10, CheckpointState::Pending, 0),
                msg(11, CheckpointState::Dead, 0)
            ]
        );
        assert_eq!(got.reasons, vec![(11, "boom".to_string())]);
        assert_eq!(got.segments[0].largest, 0);
    }
}
