//! Target `open_image`: a whole queue directory from arbitrary bytes.
//!
//! Input format (every byte string means some directory):
//!
//! ```text
//! flags  u8      bit 0: nack some deliveries instead of acking them
//!                bit 1: enqueue after the drain and require the message
//!                       back after a clean close and reopen
//! file*  tag u8  bits 0-1: 0 segment, 1 journal, 2 checkpoint,
//!                          3 unfinished checkpoint (.tmp)
//!                bit 2:    recompute checksums (headers, records, entries,
//!                          checkpoint), so mutations reach the logic
//!                          behind the checksums
//!                bits 3-4: length: 0 the bytes as given, 1 zero-padded to
//!                          64 KiB, 2 to 1 MiB, 3 plus 4 KiB of zeros
//!        id  u32 segment id / journal number / checkpoint number
//!        len u16, then len bytes (fewer at the end of the input)
//! ```
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
//! enqueued after the drain comes back intact.

use std::sync::Arc;
use std::time::Duration;

use lanelog::codec::{entry, header, record};
use lanelog::storage::{MemoryStorage, Storage};
use lanelog::{ManualClock, Queue, QueueOptions, Timestamp};

use crate::Bytes;

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
            fix_checksums(self.kind, &mut b);
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

/// Encode an image (for seeds); `parse(&encode(f, files))` gives them back
/// when each file has at most 65535 leading bytes.
pub fn encode(flags: u8, files: &[File]) -> Vec<u8> {
    let mut out = vec![flags];
    for f in files {
        let kind = match f.kind {
            Kind::Segment => 0,
            Kind::Journal => 1,
            Kind::Checkpoint => 2,
            Kind::TempCheckpoint => 3,
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

/// Make every checksum in `b` match its bytes: the file header's, then the
/// frames from offset 32 on while each starts with its magic and fits, or
/// a checkpoint's trailing CRC.
pub fn fix_checksums(kind: Kind, b: &mut [u8]) {
    if b.len() >= header::SIZE {
        let c = crc(&[&b[0..12], &b[16..32]]);
        put_u32(b, 12, c);
    }
    let mut pos = header::SIZE;
    match kind {
        Kind::Segment => {
            while pos + record::HEADER_SIZE <= b.len() && u32_at(b, pos) == record::MAGIC {
                let end = pos + record::HEADER_SIZE + u32_at(b, pos + 32) as usize;
                if end > b.len() {
                    break;
                }
                let c = crc(&[&b[pos + 8..end]]);
                put_u32(b, pos + 4, c);
                pos = end;
            }
        }
        Kind::Journal => {
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
        Kind::Checkpoint | Kind::TempCheckpoint => {
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
    let max = opts.max_message_bytes();
    let Ok(q) = opts
        .clone()
        .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
    else {
        return;
    };
    let _ = q.recovery_report().found_damage();
    let _ = q.stats();
    let _ = q.dead_letters();
    let healthy = drain(&q, &clock, flags & 1 != 0, max);
    let extra = if healthy && flags & 2 != 0 {
        q.enqueue(b"after the drain", 255).ok()
    } else {
        None
    };
    if q.close().is_err() {
        return;
    }
    // The queue's own writes must leave a directory it can open again.
    let q = match opts.open_storage(Arc::new(storage) as Arc<dyn Storage>) {
        Ok(q) => q,
        Err(e) => panic!("the directory the queue itself closed does not reopen: {e}"),
    };
    if let Some(id) = extra {
        let mut found = false;
        for _ in 0..ROUNDS {
            let Ok(batch) = q.dequeue_up_to(BATCH) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            for d in batch {
                if d.id == id {
                    assert_eq!(
                        d.payload, b"after the drain",
                        "enqueued after open, corrupt"
                    );
                    found = true;
                }
                let _ = q.ack(d.receipt);
            }
            if found {
                break;
            }
        }
        assert!(
            found,
            "a message enqueued (Ok) before a clean close is gone"
        );
    }
    let _ = q.close();
}

/// Dequeue and settle everything, letting time pass when nothing is ready.
/// Returns whether every call succeeded and the queue ran dry.
fn drain(q: &Queue, clock: &ManualClock, nack_some: bool, max: usize) -> bool {
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
