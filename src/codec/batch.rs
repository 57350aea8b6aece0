//! A batch of journal entries (format version 2): one frame, one checksum,
//! the entries packed with variable-length integers. A dequeue or settle of
//! a hundred messages journals one frame of a few hundred bytes instead of
//! a hundred 36-byte entries with a checksum each.
//!
//! ```text
//! offset size field
//!      0    4 magic 0x424A4C4C (bytes "LLJB"); never zero
//!      4    4 CRC-32 of the journal file's number (u64 LE), then bytes
//!             8..16+n: a frame left in a file from an earlier life never
//!             verifies in a later one
//!      8    4 synced end (u32): journal-file offset made durable by a
//!             completed sync when this frame was written
//!     12    4 body length n (u32), at least 1
//!     16    n entries, each:
//!             kind (u8, `entry::Kind`)
//!             priority (u8)                      if the kind names a message
//!             id: zigzag varint of (id - previous id), wrapping; the
//!                 previous id of the frame's first entry is 0
//!             time: zigzag varint of (time - previous time), wrapping,
//!                 likewise from 0
//!             attempt (varint u32)               if the kind names a message
//!             reason length (varint) and UTF-8   DeadLettered only
//! ```
//!
//! Varints are LEB128: seven bits per byte, low first, the high bit set on
//! every byte but the last; at most 10 bytes, the shortest form only (a
//! last byte of zero after the first is refused), and a value that does not
//! fit its type is refused. A frame is all or none: the checksum covers every
//! entry, so a torn frame loses the whole batch and nothing else.

use super::entry::{Entry, Kind, MAX_REASON_BYTES};
use super::{crc, u32_at, DecodeError, MAX_ID};

/// The frame marker.
pub const MAGIC: u32 = u32::from_le_bytes(*b"LLJB");
/// Bytes before the body.
pub const HEADER_SIZE: usize = 16;

/// The most bytes one entry takes in a body (a reason of the longest kept
/// length, every varint at its longest).
pub const MAX_ENTRY_BYTES: usize = 1 + 1 + 10 + 10 + 5 + 2 + MAX_REASON_BYTES;

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(delta: u64) -> u64 {
    let d = delta as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    ((z >> 1) as i64 ^ -((z & 1) as i64)) as u64
}

/// The reason bytes kept for `e`: cut at [`MAX_REASON_BYTES`] (the caller
/// cuts at a character boundary; a cut inside one decodes lossily).
fn reason_of(e: &Entry) -> &[u8] {
    if e.kind == Kind::DeadLettered {
        &e.reason.as_bytes()[..e.reason.len().min(MAX_REASON_BYTES)]
    } else {
        &[]
    }
}

/// The CRC of a frame of journal file `file`: the file number, then `body`.
fn frame_crc(file: u64, body: &[u8]) -> u32 {
    crc(&[&file.to_le_bytes(), body])
}

/// Append to `out` one frame of journal file `file` holding as many of
/// `entries`, from the first, as fit in `max_frame` bytes; returns how many
/// it holds (0, writing nothing, when not even the first fits).
pub fn encode(
    entries: &[Entry],
    synced_end: u32,
    max_frame: usize,
    file: u64,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&synced_end.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let (mut prev_id, mut prev_time) = (0u64, 0u64);
    let mut taken = 0;
    for e in entries {
        let before = out.len();
        out.push(e.kind as u8);
        if e.kind.names_message() {
            out.push(e.priority);
        }
        put_varint(zigzag(e.id.wrapping_sub(prev_id)), out);
        put_varint(zigzag(e.time_ms.wrapping_sub(prev_time)), out);
        if e.kind.names_message() {
            put_varint(u64::from(e.attempt), out);
        }
        if e.kind == Kind::DeadLettered {
            let r = reason_of(e);
            put_varint(r.len() as u64, out);
            out.extend_from_slice(r);
        }
        if out.len() - start > max_frame {
            out.truncate(before);
            break;
        }
        prev_id = e.id;
        prev_time = e.time_ms;
        taken += 1;
    }
    if taken == 0 {
        out.truncate(start);
        return 0;
    }
    let body = (out.len() - start - HEADER_SIZE) as u32;
    out[start + 12..start + 16].copy_from_slice(&body.to_le_bytes());
    let c = frame_crc(file, &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&c.to_le_bytes());
    taken
}

/// A cursor over a body.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let v = *self.b.get(self.at).ok_or(DecodeError::BadLength)?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may carry only the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(DecodeError::BadField);
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                // One encoding per value: a last byte of zero after the
                // first is an overlong form.
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::BadField);
                }
                return Ok(v);
            }
        }
        Err(DecodeError::BadField)
    }
}

/// Decode and verify the frame of journal file `file` at the start of
/// `b`; returns its entries, its `synced end` field and its length on disk.
pub fn decode(b: &[u8], file: u64) -> Result<(Vec<Entry>, u32, usize), DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Incomplete);
    }
    if u32_at(b, 0) != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if b.len() < HEADER_SIZE {
        return Err(DecodeError::Incomplete);
    }
    let n = u32_at(b, 12) as usize;
    if n == 0 {
        return Err(DecodeError::BadLength);
    }
    let frame = b.get(..HEADER_SIZE + n).ok_or(DecodeError::Incomplete)?;
    if u32_at(b, 4) != frame_crc(file, &frame[8..]) {
        return Err(DecodeError::BadChecksum);
    }
    let mut r = Reader {
        b: &frame[HEADER_SIZE..],
        at: 0,
    };
    let (mut id, mut time) = (0u64, 0u64);
    let mut entries = Vec::new();
    while r.at < n {
        let kind = Kind::from_u8(r.byte()?).ok_or(DecodeError::BadField)?;
        let priority = if kind.names_message() { r.byte()? } else { 0 };
        id = id.wrapping_add(unzigzag(r.varint()?));
        time = time.wrapping_add(unzigzag(r.varint()?));
        // Bounds (IdsReserved, RetentionCut) may be MAX_ID itself.
        if id > MAX_ID || (kind.names_message() && id == MAX_ID) {
            return Err(DecodeError::BadField);
        }
        let attempt = if kind.names_message() {
            u32::try_from(r.varint()?).map_err(|_| DecodeError::BadField)?
        } else {
            0
        };
        let reason = if kind == Kind::DeadLettered {
            let len = r.varint()?;
            if len > MAX_REASON_BYTES as u64 {
                return Err(DecodeError::BadLength);
            }
            let len = len as usize;
            let text = r.b.get(r.at..r.at + len).ok_or(DecodeError::BadLength)?;
            r.at += len;
            String::from_utf8_lossy(text).into_owned()
        } else {
            String::new()
        };
        entries.push(Entry {
            kind,
            id,
            time_ms: time,
            attempt,
            priority,
            reason,
        });
    }
    Ok((entries, u32_at(b, 8), frame.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        let mut dead = Entry::new(Kind::DeadLettered, 12, 3, 1_700_000_000_500, 4);
        dead.reason = "model failed: shape".into();
        vec![
            Entry::new(Kind::Delivered, 10, 7, 1_700_000_030_000, 1),
            Entry::new(Kind::Delivered, 11, 7, 1_700_000_030_000, 1),
            Entry::new(Kind::Acked, 9, 0, 0, 2),
            dead,
            Entry::new(Kind::IdsReserved, MAX_ID, 0, 1_700_000_000_600, 0),
            Entry::new(Kind::RetentionCut, 5, 0, 1_700_000_000_700, 0),
            Entry::new(Kind::DeadlineMissed, 13, 255, 1_700_000_000_800, 0),
            Entry::new(Kind::DeadExpired, 2, 1, 1_700_000_000_900, 0),
            Entry::new(Kind::Nacked, 1, 0, u64::MAX, u32::MAX),
        ]
    }

    #[test]
    fn round_trip_is_compact() {
        let entries = sample();
        let mut out = Vec::new();
        assert_eq!(encode(&entries, 77, usize::MAX, 3, &mut out), entries.len());
        let (got, synced, len) = decode(&out, 3).unwrap();
        assert_eq!((got, synced, len), (entries, 77, out.len()));
        // A hundred acks of consecutive ids: five bytes each (kind,
        // priority, id and time deltas, attempt), the first id two more.
        let acks: Vec<Entry> = (1000..1100)
            .map(|id| Entry::new(Kind::Acked, id, 3, 0, 1))
            .collect();
        out.clear();
        encode(&acks, 32, usize::MAX, 3, &mut out);
        assert!(
            out.len() <= HEADER_SIZE + 100 * 5 + 2,
            "{} bytes",
            out.len()
        );
        assert_eq!(decode(&out, 3).unwrap().0, acks);
    }

    #[test]
    fn every_single_byte_change_and_every_cut_is_caught() {
        let mut out = Vec::new();
        encode(&sample(), 5, usize::MAX, 3, &mut out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x04;
            assert!(decode(&bad, 3).is_err(), "byte {i}");
        }
        for cut in 0..out.len() {
            assert!(decode(&out[..cut], 3).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn a_frame_of_another_file_does_not_verify() {
        let mut out = Vec::new();
        encode(&sample(), 0, usize::MAX, 3, &mut out);
        assert!(decode(&out, 3).is_ok());
        assert_eq!(decode(&out, 4).unwrap_err(), DecodeError::BadChecksum);
    }

    #[test]
    fn a_frame_holds_what_fits() {
        let entries = sample();
        let mut whole = Vec::new();
        encode(&entries[..3], 0, usize::MAX, 3, &mut whole);
        let mut out = Vec::new();
        assert_eq!(encode(&entries, 0, whole.len(), 3, &mut out), 3);
        assert_eq!(out, whole);
        out.clear();
        assert_eq!(encode(&entries, 0, HEADER_SIZE, 3, &mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn varints_refuse_overflow() {
        let mut r = Reader {
            b: &[0xff; 11],
            at: 0,
        };
        assert_eq!(r.varint(), Err(DecodeError::BadField));
        let mut v = Vec::new();
        put_varint(u64::MAX, &mut v);
        assert_eq!(Reader { b: &v, at: 0 }.varint(), Ok(u64::MAX));
        for d in [0u64, 1, u64::MAX, 1 << 63, 12345] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
    }
}
