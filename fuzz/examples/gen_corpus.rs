//! Writes the seed corpora under `fuzz/corpus/<target>/` from real queues
//! (on a `MemoryStorage` with a manual clock, so the bytes are the same on
//! every run). Run from `fuzz/`: `cargo run --example gen_corpus`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lanelog::codec::entry::{self, Entry, Kind};
use lanelog::codec::header::{FileHeader, FileKind};
use lanelog::codec::record::{self, RecordHeader};
use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{ManualClock, Queue, Timestamp};
use lanelog_fuzz::decode::encode_record;
use lanelog_fuzz::image::{self, File};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (target, seeds) in [
        ("decode_record", record_seeds()),
        ("decode_entry", entry_seeds()),
        ("decode_checkpoint", checkpoint_seeds()),
        ("open_image", image_seeds()),
        ("ops_with_crashes", ops_seeds()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        let mut bytes = 0;
        for (name, data) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
            bytes += data.len();
        }
        println!("{target}: {} seeds, {bytes} bytes", seeds.len());
        total += bytes;
    }
    println!("total {total} bytes");
}

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn rec(id: u64, len: u32, priority: u8, flags: u8) -> RecordHeader {
    RecordHeader {
        id,
        enqueued_ms: image::T0,
        delay_ms: 0,
        synced_end: 32,
        len,
        priority,
        flags,
    }
}

fn record_seeds() -> Seeds {
    let mut two = encode_record(&rec(1, 5, 3, 0), b"hello");
    two.extend(encode_record(&rec(2, 0, 0, 0), b""));
    let mut delayed = rec(9, 3, 255, 0);
    delayed.delay_ms = 60_000;
    vec![
        ("small", encode_record(&rec(1, 5, 3, 0), b"hello")),
        ("empty", encode_record(&rec(7, 0, 0, 0), b"")),
        (
            "relocated",
            encode_record(&rec(3, 64, 9, record::FLAG_RELOCATED), &[0xA5; 64]),
        ),
        ("delayed", encode_record(&delayed, b"abc")),
        ("two", two),
        ("segment-header", file_header(FileKind::Segment, 1).to_vec()),
        ("journal-header", file_header(FileKind::Journal, 1).to_vec()),
        (
            "checkpoint-header",
            file_header(FileKind::Checkpoint, 2).to_vec(),
        ),
    ]
}

fn file_header(kind: FileKind, id: u64) -> [u8; 32] {
    FileHeader {
        kind,
        id,
        created_ms: image::T0,
    }
    .encode()
}

fn entry_seeds() -> Seeds {
    let enc = |e: &Entry, synced: u32| {
        let mut out = Vec::new();
        entry::encode(e, synced, &mut out);
        out
    };
    let mut dead = Entry::new(Kind::DeadLettered, 4, 2, image::T0, 5);
    dead.reason = "model failed: shape mismatch".into();
    vec![
        (
            "delivered",
            enc(
                &Entry::new(Kind::Delivered, 1, 3, image::T0 + 30_000, 1),
                32,
            ),
        ),
        ("acked", enc(&Entry::new(Kind::Acked, 1, 3, 0, 1), 68)),
        ("dead", enc(&dead, 104)),
        (
            "ids-reserved",
            enc(&Entry::new(Kind::IdsReserved, 1 << 20, 0, image::T0, 0), 32),
        ),
        (
            "nacked",
            enc(&Entry::new(Kind::Nacked, 2, 0, image::T0 + 5, 2), 0),
        ),
    ]
}

/// A queue on a fresh storage, with the options `open_image` uses.
fn queue(storage: &MemoryStorage, clock: &ManualClock) -> Queue {
    image::options(clock)
        .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
        .expect("open")
}

/// Leading bytes of a file: trailing zeros cut.
fn trimmed(b: &[u8]) -> Vec<u8> {
    let end = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    b[..end].to_vec()
}

/// A directory as image files: trailing zeros cut and restored by padding.
fn files_of(storage: &MemoryStorage, fix: bool) -> Vec<File> {
    let mut files = Vec::new();
    for name in storage.file_names() {
        let bytes = storage.read_file(&name).expect("listed file");
        let (kind, rest) = if let Some(r) = name.strip_prefix("segment-") {
            (image::Kind::Segment, r)
        } else if let Some(r) = name.strip_prefix("journal-") {
            (image::Kind::Journal, r)
        } else if let Some(r) = name.strip_prefix("checkpoint-") {
            if name.ends_with(".tmp") {
                (image::Kind::TempCheckpoint, r)
            } else {
                (image::Kind::Checkpoint, r)
            }
        } else {
            continue;
        };
        let id: u32 = rest[..10].parse().expect("numbered file");
        let pad = match bytes.len() as u64 {
            image::SEGMENT_SIZE => 2,
            image::JOURNAL_SIZE => 1,
            _ => 0,
        };
        let lead = if pad == 0 { bytes } else { trimmed(&bytes) };
        files.push(File {
            kind,
            id,
            fix,
            pad,
            bytes: lead,
        });
    }
    files
}

/// A closed queue with live, acked, delayed and dead messages (checkpoint).
fn closed_queue() -> MemoryStorage {
    let storage = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(image::T0));
    let q = queue(&storage, &clock);
    q.enqueue(b"low", 0).expect("enqueue");
    q.enqueue(b"urgent", 9).expect("enqueue");
    q.enqueue_delayed(b"later", 3, Duration::from_secs(60))
        .expect("enqueue");
    q.enqueue(&[7; 100], 1).expect("enqueue");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.ack(d.receipt).expect("ack");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.dead_letter(d.receipt, "bad input").expect("dead letter");
    let _leased = q.dequeue().expect("dequeue").expect("ready");
    q.close().expect("close");
    storage
}

/// A queue that crashed (power loss, torn writes) mid-work: no checkpoint,
/// torn tails.
fn crashed_queue(seed: u64) -> MemoryStorage {
    let storage = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(image::T0));
    let q = lanelog::QueueOptions::new()
        .segment_size(image::SEGMENT_SIZE)
        .journal_file_size(image::JOURNAL_SIZE)
        .durability(lanelog::Durability::None)
        .clock(Arc::new(clock.clone()))
        .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
        .expect("open");
    for i in 0..6u8 {
        q.enqueue(&[i; 40], i % 3).expect("enqueue");
        if i == 2 {
            q.sync().expect("sync");
        }
    }
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.nack(d.receipt, Duration::from_secs(5)).expect("nack");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.ack(d.receipt).expect("ack");
    let image = storage.crash(CrashPolicy::PowerLoss { seed, torn: true });
    drop(q);
    image
}

fn checkpoint_seeds() -> Seeds {
    let closed = closed_queue();
    let crashed = crashed_queue(3);
    let mut seeds = Seeds::new();
    for name in closed.file_names() {
        let b = closed.read_file(&name).expect("file");
        if name.ends_with(".ckp") {
            seeds.push(("checkpoint", b));
        } else if name.starts_with("segment-") {
            seeds.push(("segment", trimmed(&b)));
        } else if name.starts_with("journal-") {
            seeds.push(("journal", trimmed(&b)));
        }
    }
    for name in crashed.file_names() {
        let b = crashed.read_file(&name).expect("file");
        if name.starts_with("segment-") {
            seeds.push(("segment-torn", trimmed(&b)));
        } else if name.starts_with("journal-") {
            seeds.push(("journal-torn", trimmed(&b)));
        }
    }
    seeds
}

fn image_seeds() -> Seeds {
    let closed = closed_queue();
    let crashed = crashed_queue(3);
    let empty = {
        let storage = MemoryStorage::new();
        let clock = ManualClock::new(Timestamp(image::T0));
        queue(&storage, &clock).close().expect("close");
        storage
    };
    vec![
        ("closed", image::encode(0, &files_of(&closed, false))),
        ("closed-fix", image::encode(3, &files_of(&closed, true))),
        ("crashed", image::encode(2, &files_of(&crashed, false))),
        ("crashed-fix", image::encode(1, &files_of(&crashed, true))),
        ("empty", image::encode(2, &files_of(&empty, false))),
    ]
}

fn ops_seeds() -> Seeds {
    vec![
        // Immediate: enqueue in lanes, dequeue, ack, nack, crash (power
        // loss), close and reopen, leases expire.
        (
            "immediate",
            vec![
                0, 0, 1, 10, 1, 3, 70, 2, 0, 0x85, 5, 5, 8, 0, 10, 1, 12, 1, 5, 9, 0, 13, 5, 14, 6,
                15, 2, 1, 4, 2, 200,
            ],
        ),
        // None: unsynced writes lost or torn by power loss.
        (
            "none-power-loss",
            vec![
                1, 0, 2, 20, 1, 1, 30, 11, 2, 0, 40, 5, 8, 0, 12, 2, 3, 5, 0, 10, 12, 3, 5, 9, 0,
                12, 0,
            ],
        ),
        // None: batches (all or none across a crash) and torn power loss.
        (
            "none-batch",
            vec![
                1, 15, 2, 1, 10, 2, 20, 3, 30, 15, 1, 0, 200, 1, 0xC5, 12, 2, 5, 15, 0, 4, 5, 15,
                3, 0, 1, 0, 2, 0, 3, 0, 4, 11, 15, 1, 7, 7, 7, 8, 12, 1,
            ],
        ),
        // Big payloads roll segments; acks drain them (segment deletion,
        // relocation, checkpoints).
        (
            "roll",
            vec![
                0, 0, 1, 0xE8, 1, 2, 0xE8, 2, 3, 0xE8, 3, 0, 1, 5, 5, 8, 0, 8, 0, 5, 13, 5, 9, 0,
                12, 2,
            ],
        ),
    ]
}
