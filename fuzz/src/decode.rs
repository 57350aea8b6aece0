//! The pure decoders over arbitrary bytes: no panic, nothing read outside
//! the input, and whatever is accepted re-encodes to exactly the bytes it
//! came from (so no two byte strings decode to the same frame, and a frame
//! cannot carry bytes the checksum does not cover).

use std::ops::Range;

use lanelog::codec::checkpoint::{self, CheckpointMessage};
use lanelog::codec::entry::{self, Entry};
use lanelog::codec::header::{self, FileHeader, FileKind};
use lanelog::codec::record::{self, RecordHeader};
use lanelog::codec::scan::{self, Frame, Scan};
use lanelog::codec::DecodeError;
use lanelog::MAX_REASON_BYTES;

/// Payload limits tried on every input: none, tiny, header-sized, page,
/// a small segment, unlimited.
const MAX_LENS: [usize; 6] = [0, 1, 40, 4096, 1 << 20, usize::MAX];

/// Target `decode_record`: `record::decode` and `decode_header` with several
/// limits, and the file header decoder for each kind.
pub fn record(data: &[u8]) {
    for kind in [FileKind::Segment, FileKind::Journal, FileKind::Checkpoint] {
        if let Ok(h) = FileHeader::decode(kind, data) {
            assert_eq!(h.kind, kind);
            assert_eq!(
                &h.encode()[..],
                &data[..header::SIZE],
                "file header re-encodes"
            );
        }
    }
    for max in MAX_LENS {
        let head = record::decode_header(data, max);
        match record::decode(data, max) {
            Ok((h, payload)) => {
                assert_eq!(head, Ok(h), "decode and decode_header agree");
                assert_eq!(payload.len(), h.len as usize);
                assert!(payload.len() <= max, "limit {max} ignored");
                assert!(h.frame_len() <= data.len());
                assert_eq!(h.flags & !(record::FLAG_RELOCATED | record::FLAG_MORE), 0);
                let mut out = Vec::new();
                record::encode(&h, payload, &mut out);
                assert_eq!(out, &data[..h.frame_len()], "record re-encodes");
                assert_eq!(
                    record::verify(&data[..record::HEADER_SIZE], payload),
                    Ok(())
                );
                // The limit is exact.
                assert!(record::decode(data, h.len as usize).is_ok());
                if h.len > 0 {
                    assert_eq!(
                        record::decode(data, h.len as usize - 1).err(),
                        Some(DecodeError::BadLength)
                    );
                }
            }
            Err(e) => match head {
                // The header was fine: only the body can be missing or wrong.
                Ok(_) => assert!(
                    matches!(e, DecodeError::Incomplete | DecodeError::BadChecksum),
                    "{e:?}"
                ),
                Err(he) => assert_eq!(e, he),
            },
        }
    }
}

/// Target `decode_entry`: `entry::decode`.
pub fn entry(data: &[u8]) {
    let Ok((e, synced, n)) = entry::decode(data) else {
        return;
    };
    assert!((entry::HEADER_SIZE..=data.len()).contains(&n));
    let tail = &data[entry::HEADER_SIZE..n];
    assert!(tail.len() <= MAX_REASON_BYTES);
    let mut out = Vec::new();
    entry::encode(&e, synced, &mut out);
    if std::str::from_utf8(tail).is_ok() {
        assert_eq!(e.reason.as_bytes(), tail);
        assert_eq!(e.frame_len(), n);
        assert_eq!(out, &data[..n], "entry re-encodes");
    } else {
        // The reason is decoded lossily by design (a cut reason may end
        // inside a character); the rest must survive a round trip.
        let (again, synced2, n2) = entry::decode(&out).expect("a re-encoded entry decodes");
        assert_eq!(n2, out.len());
        assert_eq!(synced2, synced);
        assert_eq!(fields(&again), fields(&e));
    }
}

fn fields(e: &Entry) -> (entry::Kind, u64, u64, u32, u8) {
    (e.kind, e.id, e.time_ms, e.attempt, e.priority)
}

type Decoded = (
    checkpoint::CheckpointMeta,
    Vec<(u32, u32)>,
    Vec<CheckpointMessage>,
    Vec<(u64, String)>,
);

fn decode_checkpoint(b: &[u8]) -> Result<Decoded, checkpoint::CheckpointError> {
    let mut segments = Vec::new();
    let mut messages = Vec::new();
    let mut reasons = Vec::new();
    let meta = checkpoint::decode(
        b,
        |id, n| segments.push((id, n)),
        |m| messages.push(m),
        |id, r| reasons.push((id, r)),
    )?;
    Ok((meta, segments, messages, reasons))
}

fn encode_checkpoint(d: &Decoded) -> Vec<u8> {
    let reasons: Vec<(u64, &str)> = d.3.iter().map(|(id, r)| (*id, r.as_str())).collect();
    checkpoint::encode(&d.0, &d.1, &d.2, &reasons)
}

/// Target `decode_checkpoint`: `checkpoint::decode` on the input, and
/// `scan::scan` over it with the record and the entry decoders.
pub fn checkpoint_and_scan(data: &[u8]) {
    checkpoint(data);
    for start in [0, header::SIZE] {
        for max in [4096, usize::MAX] {
            let s = scan::scan(
                data,
                start,
                record::MAGIC.to_le_bytes(),
                |b| record::decode(b, max).map(|(h, _)| (h, h.frame_len())),
                |h| (!h.relocated()).then_some(h.id),
            );
            check_scan(data, start, &s, |b| {
                record::decode(b, max).map(|(h, _)| (h, h.frame_len()))
            });
            let mut last = None;
            for (_, h) in s.frames.iter().filter(|(_, h)| !h.relocated()) {
                assert!(last < Some(h.id), "record ids not increasing");
                last = Some(h.id);
            }
        }
        let s = scan::scan(
            data,
            start,
            entry::MAGIC.to_le_bytes(),
            |b| entry::decode(b).map(|(e, s, n)| ((e, s), n)),
            |_| None,
        );
        check_scan(data, start, &s, |b| {
            entry::decode(b).map(|(e, s, n)| ((e, s), n))
        });
    }
}

fn checkpoint(data: &[u8]) {
    let Ok(d) = decode_checkpoint(data) else {
        return;
    };
    // Nothing the body claims can exceed the bytes that carry it.
    let claimed = d.1.len() * 8 + d.2.len() * checkpoint::MESSAGE_SIZE;
    assert!(claimed + header::SIZE + 64 + 4 <= data.len());
    let out = encode_checkpoint(&d);
    let exact =
        d.3.iter()
            .all(|(_, r)| r.len() <= MAX_REASON_BYTES && !r.contains('\u{FFFD}'));
    if exact {
        assert_eq!(out, data, "checkpoint re-encodes");
    }
    // Whatever was lossy or cut, one more round trip is exact.
    let again = decode_checkpoint(&out).expect("a re-encoded checkpoint decodes");
    assert_eq!(again.0, d.0);
    assert_eq!(again.1, d.1);
    assert_eq!(again.2, d.2);
    assert_eq!(encode_checkpoint(&again), out, "second round trip");
}

/// What must hold for any scan of any buffer.
fn check_scan<F: Frame>(
    buf: &[u8],
    start: usize,
    s: &Scan<F>,
    decode: impl Fn(&[u8]) -> Result<(F, usize), DecodeError>,
) {
    let start = start.min(buf.len());
    let end = s.end as usize;
    assert!(end <= buf.len(), "end {end} past the buffer");
    let mut prev = start;
    for (off, _) in &s.frames {
        let off = *off as usize;
        assert!(off >= prev, "frames overlap or precede the start");
        let (_, n) = decode(&buf[off..]).expect("a kept frame decodes where it was found");
        prev = off + n;
        assert!(prev <= buf.len());
    }
    assert_eq!(end, prev, "end is the end of the last kept frame");
    let durable = s
        .frames
        .iter()
        .map(|(_, f)| f.synced_end() as usize)
        .max()
        .unwrap_or(0);
    let mut last_damage = start;
    for d in &s.damaged {
        let d: Range<usize> = d.start as usize..d.end as usize;
        assert!(
            d.start >= last_damage && d.start < d.end && d.end <= end,
            "{d:?}"
        );
        // Frames dropped after a torn cut also vouch for durability, so
        // the kept frames alone bound it only when none were dropped.
        if s.dropped_frames == 0 {
            assert!(d.start < durable, "damage reported outside durable data");
        }
        last_damage = d.end;
    }
    match &s.torn {
        Some(t) => {
            let t: Range<usize> = t.start as usize..t.end as usize;
            assert_eq!(t.start, end);
            assert!(t.start < t.end && t.end <= buf.len());
            assert_ne!(buf[t.end - 1], 0, "torn range ends at a non-zero byte");
            assert!(buf[t.end..].iter().all(|&b| b == 0));
        }
        None => {
            assert!(
                buf[end..].iter().all(|&b| b == 0),
                "non-zero bytes after end"
            );
            assert_eq!(s.dropped_frames, 0);
        }
    }
}

/// Helpers for seeds: one encoded record.
pub fn encode_record(h: &RecordHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(h, payload, &mut out);
    out
}
