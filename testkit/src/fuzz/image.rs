//! Target `open_image`: a whole queue directory from arbitrary bytes.
//!
//! Input format (every byte string means some directory):
//!
//! ```text
//! flags  u8      bit 0: nack some deliveries instead of acking them
//!                bit 1: enqueue after the drain and require the message
//!                       back after a clean close and reopen
//!                bit 2: complete some deliveries with a result (a result
//!                       record) instead of acking them, and read the
//!                       result back
//!                bit 3: with bit 1, the message enqueued after the drain
//!                       also carries an idempotency key and a deadline
//!                bit 7: extended tags (tag bit 5 below); inputs without
//!                       it mean what they meant before format version 2
//! file*  tag u8  bits 0-1: 0 segment, 1 journal, 2 checkpoint,
//!                          3 unfinished checkpoint (.tmp)
//!                bit 2:    recompute checksums (headers, records, batch
//!                          frames or version 1 entries, checkpoint,
//!                          attributes), each as the version in the file's
//!                          header says, so mutations reach the logic
//!                          behind the checksums
//!                bits 3-4: length: 0 the bytes as given, 1 zero-padded to
//!                          64 KiB, 2 to 1 MiB, 3 plus 4 KiB of zeros
//!                bit 5:    with flags bit 7: the file is `attributes.lla`
//!                          (bits 0-1 and the id are then ignored)
//!        id  u32 segment id / journal number / checkpoint number
//!        len u16, then len bytes (fewer at the end of the input)
//! ```
//!
//! Files of either format version can be given: the header of each says
//! which, and the queue reads version 1 files as they are. Version 2
//! segments hold records whose checksum is seeded with the segment id,
//! version 2 journal files hold batch frames seeded with the file number,
//! and a version 2 directory may hold its stored attributes.
//!
//! At most [`MAX_FILES`] files. The files are created with the storage API
//! (`create`, `write_at`, `sync_data`, then `sync_dir`) on a fresh
//! `MemoryStorage`, a queue is opened on it with a manual clock and drained
//! (dequeue and ack everything, time moved on so delays mature and leases
//! expire, dead letters redriven and purged) in a bounded loop.
//!
//! Oracle: no panic, bounded work and allocation (run with `-timeout` and
//! `-malloc_limit_mb`), every delivered payload length within the limit;
//! and once an image opened, the queue's own writes keep the directory
//! openable: a clean close and reopen succeeds, and (flag bit 1) a message
//! enqueued after the drain comes back intact; (flag bit 2) a result
//! stored with `complete` reads back as it was given.

use std::sync::Arc;
use std::time::Duration;

use lanelog::codec::{attributes, batch, entry, header, record};
use lanelog::storage::{MemoryStorage, Storage};
use lanelog::{Clock, EnqueueOptions, ManualClock, Queue, QueueOptions, Timestamp};

use super::Bytes;

/// Files per image.
pub const MAX_FILES: usize = 8;
/// Segment size of the queue opened on the image (the minimum).
pub const SEGMENT_SIZE: u64 = 1 << 20;
/// Journal file size of the queue opened on the image (the minimum).
pub const JOURNAL_SIZE: u64 = 64 << 10;
/// The clock's reading at open, ms.
pub const T0: u64 = 1_700_000_000_000;

/// The kinds of file an image can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `segment-N.seg`
    Segment,
    /// `journal-N.jnl`
    Journal,
    /// `checkpoint-N.ckp`
    Checkpoint,
    /// `checkpoint-N.tmp`
    TempCheckpoint,
    /// `attributes.lla` (format version 2; needs flags bit 7)
    Attributes,
}

/// One file of an image.
#[derive(Debug, Clone)]
pub struct File {
    /// Its kind.
    pub kind: Kind,
    /// Its number.
    pub id: u32,
    /// Recompute checksums.
    pub fix: bool,
    /// Padding class (tag bits 3-4).
    pub pad: u8,
    /// Its leading bytes.
    pub bytes: Vec<u8>,
}

impl File {
    /// The file's name in the directory.
    pub fn name(&self) -> String {
        let id = self.id;
        match self.kind {
            Kind::Segment => format!("segment-{id:010}.seg"),
            Kind::Journal => format!("journal-{id:010}.jnl"),
            Kind::Checkpoint => format!("checkpoint-{id:010}.ckp"),
            Kind::TempCheckpoint => format!("checkpoint-{id:010}.tmp"),
            Kind::Attributes => "attributes.lla".to_string(),
        }
    }

    /// The file's full contents.
    pub fn contents(&self) -> Vec<u8> {
        let mut b = self.bytes.clone();
        let len = match self.pad & 3 {
            0 => b.len(),
            1 => b.len().max(JOURNAL_SIZE as usize),
            2 => b.len().max(SEGMENT_SIZE as usize),
            _ => b.len() + 4096,
        };
        b.resize(len, 0);
        if self.fix {
            fix_checksums(self.kind, self.id, &mut b);
        }
        b
    }
}

/// Parse an image.
pub fn parse(data: &[u8]) -> (u8, Vec<File>) {
    let mut r = Bytes::new(data);
    let flags = r.u8();
    let mut files = Vec::new();
    while !r.is_empty() && files.len() < MAX_FILES {
        let tag = r.u8();
        let id = r.u32();
        let len = r.u16() as usize;
        let kind = match tag & 3 {
            _ if flags & EXTENDED != 0 && tag & 0x20 != 0 => Kind::Attributes,
            0 => Kind::Segment,
            1 => Kind::Journal,
            2 => Kind::Checkpoint,
            _ => Kind::TempCheckpoint,
        };
        files.push(File {
            kind,
            id,
            fix: tag & 4 != 0,
            pad: (tag >> 3) & 3,
            bytes: r.take(len).to_vec(),
        });
    }
    (flags, files)
}

/// Flags bit 7: extended tags.
pub const EXTENDED: u8 = 0x80;

/// Encode an image (for seeds); `parse(&encode(f, files))` gives them back
/// when each file has at most 65535 leading bytes. An attributes file sets
/// flags bit 7 ([`EXTENDED`]).
pub fn encode(mut flags: u8, files: &[File]) -> Vec<u8> {
    if files.iter().any(|f| f.kind == Kind::Attributes) {
        flags |= EXTENDED;
    }
    let mut out = vec![flags];
    for f in files {
        let kind = match f.kind {
            Kind::Segment => 0,
            Kind::Journal => 1,
            Kind::Checkpoint => 2,
            Kind::TempCheckpoint => 3,
            Kind::Attributes => 0x20,
        };
        out.push(kind | (u8::from(f.fix) << 2) | ((f.pad & 3) << 3));
        out.extend_from_slice(&f.id.to_le_bytes());
        let n = f.bytes.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&f.bytes[..n]);
    }
    out
}

fn crc(parts: &[&[u8]]) -> u32 {
    // CRC-32 (IEEE), as `lanelog::codec` computes it; bitwise, as images
    // are small.
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
    }
    !c
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Make every checksum in `b`, the contents of file number `id`, match its
/// bytes: the file header's, then the frames from offset 32 on while each
/// starts with its magic and fits, or the trailing CRC of a checkpoint or
/// an attributes file. Frames are fixed as the header's version writes
/// them: version 1 records unseeded, version 2 records seeded with the
/// segment id; version 1 journal entries, version 2 batch frames seeded
/// with the journal file number. The version is read before the header is
/// fixed (a file too short to hold one counts as version 2).
pub fn fix_checksums(kind: Kind, id: u32, b: &mut [u8]) {
    let version = if b.len() >= 12 { u32_at(b, 8) } else { 2 };
    if b.len() >= header::SIZE {
        let c = crc(&[&b[0..12], &b[16..32]]);
        put_u32(b, 12, c);
    }
    let mut pos = header::SIZE;
    match kind {
        Kind::Segment => {
            let seed = record::Seed::of(version, id);
            while pos + record::HEADER_SIZE <= b.len() && u32_at(b, pos) == record::MAGIC {
                let deadline = if b[pos + 39] & 1 != 0 { 8 } else { 0 };
                let ext = deadline + usize::from(b[pos + 38]);
                let end = pos + record::HEADER_SIZE + ext + u32_at(b, pos + 32) as usize;
                if end > b.len() {
                    break;
                }
                let c = seed.crc(&[&b[pos + 8..end]]);
                put_u32(b, pos + 4, c);
                pos = end;
            }
        }
        Kind::Journal if version == 1 => {
            while pos + entry::HEADER_SIZE <= b.len() && u32_at(b, pos) == entry::MAGIC {
                let tail = u16::from_le_bytes([b[pos + 34], b[pos + 35]]) as usize;
                let end = pos + entry::HEADER_SIZE + tail;
                if end > b.len() {
                    break;
                }
                let c = crc(&[&b[pos + 8..end]]);
                put_u32(b, pos + 4, c);
                pos = end;
            }
        }
        Kind::Journal => {
            let file = u64::from(id).to_le_bytes();
            while pos + batch::HEADER_SIZE <= b.len() && u32_at(b, pos) == batch::MAGIC {
                let end = pos + batch::HEADER_SIZE + u32_at(b, pos + 12) as usize;
                if end > b.len() {
                    break;
                }
                let c = crc(&[&file, &b[pos + 8..end]]);
                put_u32(b, pos + 4, c);
                pos = end;
            }
        }
        Kind::Checkpoint | Kind::TempCheckpoint | Kind::Attributes => {
            if b.len() >= header::SIZE + 4 {
                let n = b.len() - 4;
                let c = crc(&[&b[header::SIZE..n]]);
                put_u32(b, n, c);
            }
        }
    }
}

/// Write the image's files into a fresh storage through the storage API.
pub fn build(files: &[File]) -> MemoryStorage {
    let storage = MemoryStorage::new();
    for f in files {
        let bytes = f.contents();
        // A name given twice keeps its first file.
        let Ok(file) = storage.create(&f.name(), bytes.len() as u64) else {
            continue;
        };
        file.write_at(0, &bytes).expect("memory write");
        file.sync_data().expect("memory sync");
    }
    storage.sync_dir().expect("memory sync_dir");
    storage
}

/// Options of every queue opened on an image.
pub fn options(clock: &ManualClock) -> QueueOptions {
    QueueOptions::new()
        .segment_size(SEGMENT_SIZE)
        .journal_file_size(JOURNAL_SIZE)
        .max_deliveries(3)
        .checkpoint_bytes(8 << 10)
        .clock(Arc::new(clock.clone()))
}

/// Rounds of the drain loop; each leases at most [`BATCH`] messages.
const ROUNDS: usize = 48;
const BATCH: usize = 16;

/// The target.
pub fn run(data: &[u8]) {
    let (flags, files) = parse(data);
    let storage = build(&files);
    let clock = ManualClock::new(Timestamp(T0));
    let opts = options(&clock);
    // The stored attributes' size limit applies when the directory has
    // them (the options do not name one; 0 stored = the default). The
    // first file of a name is the one built.
    let stored = files
        .iter()
        .find(|f| f.kind == Kind::Attributes)
        .and_then(|f| attributes::decode(&f.contents()).ok());
    let max = match stored {
        Some((a, _)) if a.max_message_size > 0 => {
            usize::try_from(a.max_message_size).unwrap_or(usize::MAX)
        }
        _ => opts.max_message_bytes(),
    };
    let Ok(q) = opts
        .clone()
        .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
    else {
        return;
    };
    let _ = q.recovery_report().found_damage();
    let _ = q.stats();
    let _ = q.dead_letters();
    let retention = stored.and_then(|(a, _)| a.retention_ms);
    let healthy = drain(&q, &clock, flags, max, retention);
    // Named with no delay, so a stored default delay does not apply.
    let mut extra = Vec::new();
    if healthy && flags & 2 != 0 {
        let plain = EnqueueOptions::new().priority(255).delay(Duration::ZERO);
        if flags & 8 != 0 {
            let now = clock.now().0;
            let keyed = plain
                .clone()
                .key(b"open_image: after the drain")
                .deadline(Timestamp(now.saturating_add(86_400_000)));
            let k = q.enqueue_with(b"after the drain", &keyed);
            let p = q.enqueue_with(b"after the drain", &plain);
            if let (Ok(k), Ok(p)) = (k, p) {
                // The keyed one is new (not a key the image remembers)
                // when its id comes right before the plain one's.
                if u64::from(k) + 1 == u64::from(p) {
                    extra.push(k);
                }
                extra.push(p);
            }
        } else if let Ok(id) = q.enqueue_with(b"after the drain", &plain) {
            extra.push(id);
        }
    }
    if q.close().is_err() {
        return;
    }
    // The queue's own writes must leave a directory it can open again.
    let q = match opts.open_storage(Arc::new(storage) as Arc<dyn Storage>) {
        Ok(q) => q,
        Err(e) => panic!("the directory the queue itself closed does not reopen: {e}"),
    };
    if !extra.is_empty() {
        for _ in 0..ROUNDS {
            let Ok(batch) = q.dequeue_up_to(BATCH) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            for d in batch {
                if extra.contains(&d.id) {
                    assert_eq!(
                        d.payload, b"after the drain",
                        "enqueued after open, corrupt"
                    );
                    extra.retain(|&id| id != d.id);
                }
                let _ = q.ack(d.receipt);
            }
            if extra.is_empty() {
                break;
            }
        }
        assert!(
            extra.is_empty(),
            "a message enqueued (Ok) before a clean close is gone: {extra:?}"
        );
    }
    let _ = q.close();
}

/// Dequeue and settle everything, letting time pass when nothing is ready.
/// Returns whether every call succeeded and the queue ran dry. `retention`
/// is the stored retention (ms), if any.
fn drain(q: &Queue, clock: &ManualClock, flags: u8, max: usize, retention: Option<u64>) -> bool {
    let (nack_some, complete_some) = (flags & 1 != 0, flags & 4 != 0);
    let mut idle = 0;
    let mut dry = false;
    for _ in 0..ROUNDS {
        let batch = match q.dequeue_up_to(BATCH) {
            Ok(b) => b,
            Err(_) => return false,
        };
        if batch.is_empty() {
            idle += 1;
            if idle > 2 {
                dry = true;
                break;
            }
            // Mature delays (up to 49.7 days) and expire leases.
            clock.advance(Duration::from_secs(60 * 60 * 24 * 50));
            continue;
        }
        for d in batch {
            assert!(d.payload.len() <= max, "payload over the limit delivered");
            assert!(d.attempt >= 1);
            let settled = if nack_some && d.attempt < 2 && u64::from(d.id) % 3 == 0 {
                q.nack(d.receipt, Duration::ZERO)
            } else if complete_some && u64::from(d.id) % 2 == 0 {
                let result = u64::from(d.id).to_le_bytes();
                let done = q.complete(d.receipt, &result);
                if done.is_ok() {
                    // Retention counts from the enqueue, so a result of a
                    // message enqueued longer ago than that may already
                    // be gone (the tender runs at any time); no other.
                    let old = retention
                        .is_some_and(|r| d.enqueued_at.0.saturating_add(r) <= clock.now().0);
                    match q.result(d.id) {
                        Ok(Some(r)) => assert_eq!(r, result, "a stored result reads back changed"),
                        Ok(None) if !old => panic!(
                            "a result stored with complete (Ok) is gone (enqueued at {})",
                            d.enqueued_at.0
                        ),
                        Ok(None) | Err(_) => {}
                    }
                }
                done
            } else {
                q.ack(d.receipt)
            };
            if settled.is_err() {
                return false;
            }
        }
    }
    let ok = q.redrive_all().is_ok();
    if let Ok(batch) = q.dequeue_up_to(BATCH) {
        for d in batch {
            let _ = q.ack(d.receipt);
        }
    }
    ok && dry && q.purge_dead_letters().is_ok()
}
