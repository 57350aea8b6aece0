//! The pure decoders over arbitrary bytes: no panic, nothing read outside
//! the input, and whatever is accepted re-encodes to exactly the bytes it
//! came from (so no two byte strings decode to the same frame, and a frame
//! cannot carry bytes the checksum does not cover). The exceptions are
//! named where they are checked: reasons are decoded lossily by design, and
//! a few fields the format ignores (an overlong varint in a batch frame, a
//! retention value whose flag is clear) are not kept; for those, one more
//! round trip is exact.
//!
//! Besides decoding the input as it is, `decode_record`, `decode_entry` and
//! `decode_attributes` also build values from the input bytes (read with
//! [`Bytes`]) and check that encoding then decoding them gives them back.
//!
//! Raw inputs carry no file around them, so the targets supply what the
//! format takes from the file: records are tried with the seed of version 1
//! (none) and of segment [`SEGMENT_ID`] in version 2, batch frames with
//! journal file number [`JOURNAL_FILE`] (the seed corpora are written with
//! these). A whole file given to `decode_checkpoint` (the scanners) uses the
//! id in its header.

use std::ops::Range;

use lanelog::codec::attributes::{self, Attributes};
use lanelog::codec::batch;
use lanelog::codec::checkpoint::{
    self, CheckpointBody, CheckpointKey, CheckpointMeta, CheckpointState, Collected, Discard,
};
use lanelog::codec::entry::{self, Entry, Kind};
use lanelog::codec::header::{self, FileHeader, FileKind};
use lanelog::codec::record::{self, RecordHeader, Seed};
use lanelog::codec::scan::{self, Frame, Scan};
use lanelog::codec::{DecodeError, FORMAT_VERSION, MAX_ID, OLDEST_READ_VERSION};
use lanelog::{MAX_KEY_BYTES, MAX_REASON_BYTES};

use super::Bytes;

/// Payload limits tried on every input: none, tiny, header-sized, page,
/// a small segment, unlimited.
const MAX_LENS: [usize; 6] = [0, 1, 40, 4096, 1 << 20, usize::MAX];

/// The segment id whose seed raw records are tried with (version 2).
pub const SEGMENT_ID: u32 = 1;

/// The journal file number raw batch frames are decoded as.
pub const JOURNAL_FILE: u64 = 1;

/// The seeds a raw record is tried with: version 1 (none), and version 2
/// in segment [`SEGMENT_ID`].
pub fn seeds() -> [Seed; 2] {
    [Seed::of(1, SEGMENT_ID), Seed::of(2, SEGMENT_ID)]
}

fn u64_of(r: &mut Bytes<'_>) -> u64 {
    u64::from(r.u32()) | u64::from(r.u32()) << 32
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// ---------------------------------------------------------------- records

/// Target `decode_record`: the file header decoder for each kind;
/// `record::decode_with_key`, `decode` and `decode_header` with several
/// limits and both seeds; and records built from the input (any flags,
/// key, deadline, either seed) round trip.
pub fn record(data: &[u8]) {
    file_headers(data);
    for seed in seeds() {
        for max in MAX_LENS {
            record_with(data, max, seed);
        }
    }
    built_record(data);
}

fn file_headers(data: &[u8]) {
    for kind in [
        FileKind::Segment,
        FileKind::Journal,
        FileKind::Checkpoint,
        FileKind::Attributes,
    ] {
        if let Ok(h) = FileHeader::decode(kind, data) {
            assert_eq!(h.kind, kind);
            assert!((OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&h.version));
            assert_eq!(
                &h.encode()[..],
                &data[..header::SIZE],
                "file header re-encodes"
            );
            if h.version == FORMAT_VERSION {
                assert_eq!(FileHeader::new(kind, h.id, h.created_ms), h);
            }
        }
    }
}

fn record_with(data: &[u8], max: usize, seed: Seed) {
    let head = record::decode_header(data, max);
    match record::decode_with_key(data, max, seed) {
        Ok((h, key, payload)) => {
            assert_eq!(head, Ok(h), "decode and decode_header agree");
            assert_eq!(record::decode(data, max, seed), Ok((h, payload)));
            assert_eq!(payload.len(), h.len as usize);
            assert_eq!(key.len(), usize::from(h.key_len));
            assert!(payload.len() <= max, "limit {max} ignored");
            assert!(key.len() <= MAX_KEY_BYTES);
            assert!(h.frame_len() <= data.len());
            assert!(h.id < MAX_ID);
            let known = record::FLAG_RELOCATED | record::FLAG_MORE | record::FLAG_RESULT;
            assert_eq!(h.flags & !known, 0);
            if h.result() {
                assert!(key.is_empty() && h.deadline_ms == 0 && h.delay_ms == 0 && !h.more());
            }
            // The extension flags byte says exactly whether a deadline follows.
            assert_eq!(data[39], u8::from(h.deadline_ms > 0));
            let mut out = Vec::new();
            record::encode_with_key(&h, key, payload, seed, &mut out);
            assert_eq!(out, &data[..h.frame_len()], "record re-encodes");
            if key.is_empty() {
                out.clear();
                record::encode(&h, payload, seed, &mut out);
                assert_eq!(out, &data[..h.frame_len()], "keyless record re-encodes");
            }
            // The fixed header alone: the deadline is known to exist.
            let fixed = record::decode_header(&data[..record::HEADER_SIZE], max)
                .expect("the fixed header of an accepted record");
            assert_eq!(
                fixed,
                RecordHeader {
                    deadline_ms: u64::from(h.deadline_ms > 0),
                    ..h
                }
            );
            // The limit is exact.
            assert!(record::decode(data, h.len as usize, seed).is_ok());
            if h.len > 0 {
                assert_eq!(
                    record::decode(data, h.len as usize - 1, seed).err(),
                    Some(DecodeError::BadLength)
                );
            }
        }
        Err(e) => match head {
            // The header was fine: only the rest can be missing or wrong.
            Ok(_) => assert!(
                matches!(e, DecodeError::Incomplete | DecodeError::BadChecksum),
                "{e:?}"
            ),
            Err(he) => assert_eq!(e, he),
        },
    }
}

/// A record built from the input: `sel` u8 (bits 0-2 flags, bit 3 a
/// deadline, bit 4 the version 1 seed), key length u8 (mod 129), priority
/// u8, id u64 (mod MAX_ID), enqueued at u64, delay u32, synced end u32,
/// deadline u64, segment id u32, the key, then the payload (the rest).
/// A result record gets no key, deadline, delay or batch flag, as the
/// format requires.
fn built_record(data: &[u8]) {
    let mut r = Bytes::new(data);
    let sel = r.u8();
    let mut key_len = r.u8() % (MAX_KEY_BYTES as u8 + 1);
    let priority = r.u8();
    let id = u64_of(&mut r) % MAX_ID;
    let enqueued_ms = u64_of(&mut r);
    let mut delay_ms = r.u32();
    let synced_end = r.u32();
    let mut deadline_ms = if sel & 8 != 0 {
        u64_of(&mut r).max(1)
    } else {
        0
    };
    let segment = r.u32();
    let mut flags = sel & 7;
    if flags & record::FLAG_RESULT != 0 {
        key_len = 0;
        deadline_ms = 0;
        delay_ms = 0;
        flags &= !record::FLAG_MORE;
    }
    let key = r.take(usize::from(key_len)).to_vec();
    let payload = r.take(usize::MAX);
    let seed = Seed::of(if sel & 16 != 0 { 1 } else { 2 }, segment);
    let h = RecordHeader {
        id,
        enqueued_ms,
        delay_ms,
        synced_end,
        len: payload.len() as u32,
        priority,
        flags,
        deadline_ms,
        key_len: key.len() as u8,
    };
    let mut out = Vec::new();
    record::encode_with_key(&h, &key, payload, seed, &mut out);
    assert_eq!(out.len(), h.frame_len());
    let got = record::decode_with_key(&out, payload.len(), seed);
    assert_eq!(got, Ok((h, &key[..], payload)), "built record round trips");
    // Bytes after the frame are not part of it.
    out.extend_from_slice(&[0xA5; 3]);
    assert_eq!(
        record::decode_with_key(&out, usize::MAX, seed),
        Ok((h, &key[..], payload))
    );
}

// ---------------------------------------------------------------- entries

/// Target `decode_entry`: the input as a version 2 batch frame of journal
/// file [`JOURNAL_FILE`] (`batch::decode`) and as a version 1 entry
/// (`entry::decode_v1`), each re-encoded; and entries built from the input,
/// encoded into a batch frame (with a frame limit) and as version 1 entries,
/// decoded back.
pub fn entry(data: &[u8]) {
    batch_frame(data, JOURNAL_FILE);
    entry_v1(data);
    built_entries(data);
}

/// What a decoded entry's fields must satisfy in any version.
fn check_entry(e: &Entry) {
    assert!(e.id <= MAX_ID);
    if e.kind != Kind::DeadLettered {
        assert!(e.reason.is_empty());
    }
}

fn batch_frame(data: &[u8], file: u64) {
    let Ok((entries, synced, n)) = batch::decode(data, file) else {
        return;
    };
    assert!(n > batch::HEADER_SIZE && n <= data.len(), "{n}");
    assert_eq!(n, batch::HEADER_SIZE + u32_at(data, 12) as usize);
    assert_eq!(synced, u32_at(data, 8));
    assert!(!entries.is_empty(), "a frame with a body holds an entry");
    assert!(entries.len() <= n - batch::HEADER_SIZE);
    for e in &entries {
        check_entry(e);
        if e.kind.names_message() {
            assert!(e.id < MAX_ID);
        } else {
            assert_eq!((e.priority, e.attempt), (0, 0));
        }
    }
    let mut out = Vec::new();
    let taken = batch::encode(&entries, synced, usize::MAX, file, &mut out);
    assert_eq!(taken, entries.len(), "an unlimited frame takes every entry");
    if canonical_body(&data[batch::HEADER_SIZE..n]) {
        assert_eq!(out, &data[..n], "batch frame re-encodes");
    }
    // Whatever was lossy or overlong, the re-encoded frame decodes to the
    // same entries (reasons as the encoder keeps them), and once more is
    // exact.
    let (again, synced2, n2) = batch::decode(&out, file).expect("a re-encoded frame decodes");
    assert_eq!((synced2, n2), (synced, out.len()));
    assert_eq!(again, kept(&entries));
    let mut twice = Vec::new();
    batch::encode(&again, synced, usize::MAX, file, &mut twice);
    assert_eq!(twice, out, "second round trip");
    // The frame limit is exact.
    let mut limited = Vec::new();
    assert_eq!(
        batch::encode(&entries, synced, out.len(), file, &mut limited),
        entries.len()
    );
    assert_eq!(limited, out);
    limited.clear();
    let fewer = batch::encode(&entries, synced, out.len() - 1, file, &mut limited);
    assert!(fewer < entries.len());
    assert!(limited.len() < out.len());
}

/// Whether a body the decoder accepted is in the form the encoder writes:
/// every varint at its shortest and every reason valid UTF-8. An
/// independent walk over the layout in `codec::batch`.
fn canonical_body(body: &[u8]) -> bool {
    fn varint(b: &[u8], at: &mut usize) -> Option<(u64, bool)> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                // The shortest form never ends in a zero byte (but 0 itself).
                return Some((v, shift == 0 || byte != 0));
            }
            shift += 7;
        }
    }
    let mut at = 0;
    while at < body.len() {
        let Some(kind) = Kind::from_u8(body[at]) else {
            return false;
        };
        at += 1;
        if kind.names_message() {
            at += 1;
        }
        let fields = if kind.names_message() { 3 } else { 2 };
        for _ in 0..fields {
            match varint(body, &mut at) {
                Some((_, true)) => {}
                _ => return false,
            }
        }
        if kind == Kind::DeadLettered {
            let Some((len, true)) = varint(body, &mut at) else {
                return false;
            };
            let Some(text) = body.get(at..at + len as usize) else {
                return false;
            };
            if std::str::from_utf8(text).is_err() {
                return false;
            }
            at += len as usize;
        }
    }
    at == body.len()
}

/// The entries as a frame keeps them: no priority or attempt for an id
/// bound, no reason but a dead letter's, reasons cut at
/// [`MAX_REASON_BYTES`] (lossily when the cut is inside a character).
fn kept(entries: &[Entry]) -> Vec<Entry> {
    entries
        .iter()
        .map(|e| {
            let mut k = e.clone();
            if !e.kind.names_message() {
                k.priority = 0;
                k.attempt = 0;
            }
            k.reason = if e.kind == Kind::DeadLettered {
                let b = e.reason.as_bytes();
                String::from_utf8_lossy(&b[..b.len().min(MAX_REASON_BYTES)]).into_owned()
            } else {
                String::new()
            };
            k
        })
        .collect()
}

fn entry_v1(data: &[u8]) {
    let Ok((e, synced, n)) = entry::decode_v1(data) else {
        return;
    };
    check_entry(&e);
    assert!(
        (e.kind as u8) <= Kind::IdsReserved as u8,
        "a version 2 kind"
    );
    assert!((entry::HEADER_SIZE..=data.len()).contains(&n));
    let tail = &data[entry::HEADER_SIZE..n];
    assert!(tail.len() <= MAX_REASON_BYTES);
    let mut out = Vec::new();
    entry::encode_v1(&e, synced, &mut out);
    if std::str::from_utf8(tail).is_ok() {
        assert_eq!(e.reason.as_bytes(), tail);
        assert_eq!(e.frame_len(), n);
        assert_eq!(out, &data[..n], "entry re-encodes");
    } else {
        // The reason is decoded lossily by design (a cut reason may end
        // inside a character); the rest must survive a round trip.
        let (again, synced2, n2) = entry::decode_v1(&out).expect("a re-encoded entry decodes");
        assert_eq!(n2, out.len());
        assert_eq!(synced2, synced);
        assert_eq!(fields(&again), fields(&e));
    }
}

fn fields(e: &Entry) -> (Kind, u64, u64, u32, u8) {
    (e.kind, e.id, e.time_ms, e.attempt, e.priority)
}

/// Entries built from the input: `max_frame` u16, synced end u32, then
/// entries while bytes remain (at most 64): kind u8 (mod 12, plus 1),
/// priority u8, id u64 (mod MAX_ID, or MAX_ID itself for an id bound when
/// the byte after the kind is 0xFF), time u64, attempt u32, and for a dead
/// letter a reason length u16 (mod 1100) and its bytes.
fn built_entries(data: &[u8]) {
    let mut r = Bytes::new(data);
    let max_frame = usize::from(r.u16());
    let synced = r.u32();
    let mut entries = Vec::new();
    while !r.is_empty() && entries.len() < 64 {
        let kind = Kind::from_u8(r.u8() % 12 + 1).expect("kinds 1..=12");
        let priority = r.u8();
        let mut id = u64_of(&mut r) % MAX_ID;
        if !kind.names_message() && priority == 0xFF {
            id = MAX_ID;
        }
        let mut e = Entry::new(kind, id, priority, u64_of(&mut r), r.u32());
        if kind == Kind::DeadLettered {
            let len = usize::from(r.u16() % 1100);
            e.reason = String::from_utf8_lossy(r.take(len)).into_owned();
        }
        entries.push(e);
    }
    // One frame, as much as fits.
    let mut out = Vec::new();
    let taken = batch::encode(&entries, synced, max_frame, JOURNAL_FILE, &mut out);
    assert!(taken <= entries.len());
    if taken == 0 {
        assert!(out.is_empty(), "a frame taking nothing writes nothing");
    } else {
        assert!(out.len() <= max_frame, "frame over its limit");
        let got = batch::decode(&out, JOURNAL_FILE).expect("an encoded frame decodes");
        assert_eq!(got, (kept(&entries[..taken]), synced, out.len()));
    }
    if taken < entries.len() {
        // The next entry would not have fitted.
        let mut more = Vec::new();
        batch::encode(
            &entries[..=taken],
            synced,
            usize::MAX,
            JOURNAL_FILE,
            &mut more,
        );
        assert!(more.len() > max_frame, "an entry that fits was left out");
    }
    // Version 1: one entry each, the kinds version 1 knew.
    for e in entries.iter().filter(|e| (e.kind as u8) <= 9) {
        let mut out = Vec::new();
        entry::encode_v1(e, synced, &mut out);
        let (got, s, n) = entry::decode_v1(&out).expect("an encoded v1 entry decodes");
        assert_eq!((s, n), (synced, out.len()));
        assert_eq!(fields(&got), fields(e));
        let b = e.reason.as_bytes();
        let reason = String::from_utf8_lossy(&b[..b.len().min(MAX_REASON_BYTES)]);
        assert_eq!(got.reason, reason);
    }
}

// ----------------------------------------------------- checkpoints, scans

/// Target `decode_checkpoint`: `checkpoint::decode` on the input (version 1
/// or 2, by its header) through a collecting sink, and `decode_v1` on its
/// own; and `scan::scan` over the input with the record, version 1 entry
/// and batch frame decoders.
pub fn checkpoint_and_scan(data: &[u8]) {
    checkpoint(data);
    scans(data);
}

fn decode_checkpoint(b: &[u8]) -> Result<(CheckpointMeta, Collected), checkpoint::CheckpointError> {
    let mut got = Collected::default();
    let meta = checkpoint::decode(b, &mut got)?;
    Ok((meta, got))
}

fn encode_checkpoint(meta: &CheckpointMeta, c: &Collected) -> Vec<u8> {
    let reasons: Vec<(u64, &str)> = c.reasons.iter().map(|(id, r)| (*id, r.as_str())).collect();
    let keys: Vec<CheckpointKey<'_>> = c
        .keys
        .iter()
        .map(|(id, at_ms, key)| CheckpointKey {
            id: *id,
            at_ms: *at_ms,
            key,
        })
        .collect();
    checkpoint::encode(
        meta,
        &CheckpointBody {
            segments: &c.segments,
            messages: &c.messages,
            reasons: &reasons,
            keys: &keys,
            marks: &c.marks,
        },
    )
}

fn checkpoint(data: &[u8]) {
    // The version 1 decoder on any input: no panic.
    let v1 = {
        let mut got = Collected::default();
        checkpoint::decode_v1(data, &mut got).map(|m| (m, got))
    };
    let Ok((meta, got)) = decode_checkpoint(data) else {
        return;
    };
    let h = FileHeader::decode(FileKind::Checkpoint, data).expect("a checkpoint has a header");
    assert_eq!(
        (meta.number, meta.created_ms, meta.version),
        (h.id, h.created_ms, h.version)
    );
    assert!(meta.next_id <= MAX_ID);
    let version1 = meta.version == 1;
    if version1 {
        assert_eq!(v1.as_ref().ok(), Some(&(meta, got.clone())), "decode_v1");
        assert_eq!(
            (
                meta.deadline_missed_total,
                meta.expired_total,
                meta.dead_expired_total
            ),
            (0, 0, 0)
        );
        assert!(got.keys.is_empty() && got.marks.is_empty());
        assert!(got.segments.iter().all(|s| s.largest == 0));
        assert!(got
            .messages
            .iter()
            .all(|m| m.deadline_ms == 0 && m.state != CheckpointState::Completed));
    }
    // Nothing the body claims can exceed the bytes that carry it.
    let (fixed, segment, message) = if version1 { (64, 8, 32) } else { (104, 12, 40) };
    let claimed = header::SIZE
        + fixed
        + got.segments.len() * segment
        + got.messages.len() * message
        + got.reasons.len() * 10
        + got.keys.iter().map(|k| 17 + k.2.len()).sum::<usize>()
        + got.marks.len() * 16
        + 4;
    assert!(claimed <= data.len(), "{claimed} > {}", data.len());
    assert!(got.messages.iter().all(|m| m.id < MAX_ID));
    for (id, _, key) in &got.keys {
        assert!(*id < MAX_ID && (1..=MAX_KEY_BYTES).contains(&key.len()));
    }
    assert!(got.marks.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(got.marks.iter().all(|m| m.0 <= MAX_ID));

    // Re-encoded (in version 2, whatever the input's version).
    let out = encode_checkpoint(&meta, &got);
    let exact = got
        .reasons
        .iter()
        .all(|(_, r)| r.len() <= MAX_REASON_BYTES && !r.contains('\u{FFFD}'));
    if exact && !version1 {
        assert_eq!(out, data, "checkpoint re-encodes");
    }
    // Whatever was lossy, cut or version 1, the re-encoded checkpoint
    // holds the same, and one more round trip is exact.
    let (meta2, got2) = decode_checkpoint(&out).expect("a re-encoded checkpoint decodes");
    assert_eq!(
        meta2,
        CheckpointMeta {
            version: FORMAT_VERSION,
            ..meta
        }
    );
    if exact {
        assert_eq!(got2, got);
    } else {
        let ids = |c: &Collected| c.reasons.iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(ids(&got2), ids(&got));
        assert_eq!(
            (&got2.segments, &got2.messages, &got2.keys, &got2.marks),
            (&got.segments, &got.messages, &got.keys, &got.marks)
        );
    }
    assert_eq!(encode_checkpoint(&meta2, &got2), out, "second round trip");
    let mut discard = Discard;
    assert_eq!(checkpoint::decode(&out, &mut discard), Ok(meta2));
}

/// A version 1 journal entry as a scanned frame.
struct V1Entry(u32);

impl Frame for V1Entry {
    fn synced_end(&self) -> u32 {
        self.0
    }
}

fn scans(data: &[u8]) {
    // Records: with the seed of the segment the header names, else both
    // seeds raw records are tried with.
    let seeds = match FileHeader::decode(FileKind::Segment, data) {
        Ok(h) => vec![Seed::of(h.version, h.id as u32)],
        Err(_) => seeds().to_vec(),
    };
    let file = FileHeader::decode(FileKind::Journal, data).map_or(JOURNAL_FILE, |h| h.id);
    for start in [0, header::SIZE] {
        for &seed in &seeds {
            for max in [4096, usize::MAX] {
                let dec = |b: &[u8]| record::decode(b, max, seed).map(|(h, _)| (h, h.frame_len()));
                let s = scan::scan(data, start, record::MAGIC.to_le_bytes(), dec, |h| {
                    (!h.relocated() && !h.result()).then_some(h.id)
                });
                check_scan(data, start, &s, dec);
                let mut last = None;
                for (_, h) in s
                    .frames
                    .iter()
                    .filter(|(_, h)| !h.relocated() && !h.result())
                {
                    assert!(last < Some(h.id), "record ids not increasing");
                    last = Some(h.id);
                }
            }
        }
        let dec = |b: &[u8]| entry::decode_v1(b).map(|(_, s, n)| (V1Entry(s), n));
        let s = scan::scan(data, start, entry::MAGIC.to_le_bytes(), dec, |_| None);
        check_scan(data, start, &s, dec);
        let dec = |b: &[u8]| batch::decode(b, file).map(|(e, s, n)| ((e, s), n));
        let s = scan::scan(data, start, batch::MAGIC.to_le_bytes(), dec, |_| None);
        check_scan(data, start, &s, dec);
    }
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

// ------------------------------------------------------------- attributes

/// Target `decode_attributes`: `attributes::decode` never panics, and what
/// it accepts re-encodes exactly, except what the format ignores (a header
/// of version 1, a retention value whose flag is clear); and attributes
/// built from the input (all fields, either retention present or not) round
/// trip.
pub fn attributes(data: &[u8]) {
    if let Ok((a, revision)) = attributes::decode(data) {
        assert_eq!(data.len(), attributes::SIZE);
        let h = FileHeader::decode(FileKind::Attributes, data).expect("accepted with its header");
        assert_eq!(h.id, revision);
        let out = attributes::encode(&a, revision, h.created_ms);
        let ignored = |set: bool, at: usize| !set && data[at..at + 8].iter().any(|&b| b != 0);
        let canonical = h.version == FORMAT_VERSION
            && !ignored(a.retention_ms.is_some(), 64)
            && !ignored(a.dead_letter_retention_ms.is_some(), 72);
        if canonical {
            assert_eq!(out, data, "attributes re-encode");
        }
        assert_eq!(attributes::decode(&out), Ok((a, revision)));
    }
    let mut r = Bytes::new(data);
    let sel = r.u8();
    let revision = u64_of(&mut r);
    let created_ms = u64_of(&mut r);
    let a = Attributes {
        segment_size: u64_of(&mut r),
        max_message_size: u64_of(&mut r),
        visibility_timeout_ms: u64_of(&mut r),
        max_deliveries: r.u32(),
        retention_ms: Some(u64_of(&mut r)).filter(|_| sel & 1 != 0),
        dead_letter_retention_ms: Some(u64_of(&mut r)).filter(|_| sel & 2 != 0),
        dedup_window_ms: u64_of(&mut r),
        default_delay_ms: u64_of(&mut r),
        default_wait_ms: u64_of(&mut r),
    };
    let out = attributes::encode(&a, revision, created_ms);
    assert_eq!(out.len(), attributes::SIZE);
    assert_eq!(
        attributes::decode(&out),
        Ok((a, revision)),
        "built attributes round trip"
    );
}

// ------------------------------------------------------------------ seeds

/// Helpers for seeds: one encoded record (no key) written with `seed`.
pub fn encode_record(h: &RecordHeader, payload: &[u8], seed: Seed) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(h, payload, seed, &mut out);
    out
}

/// Helpers for seeds: one encoded record with its key.
pub fn encode_record_with_key(h: &RecordHeader, key: &[u8], payload: &[u8], seed: Seed) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_with_key(h, key, payload, seed, &mut out);
    out
}
