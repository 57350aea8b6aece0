//! Writes the seed corpora under `fuzz/corpus/<target>/` from real queues
//! (on a `MemoryStorage` with a manual clock, so the bytes are the same on
//! every run), from frames built with the codec, and from the version 1
//! fixtures in `tests/fixtures/` (so version 1 inputs stay in the corpora).
//! Run from `fuzz/`: `cargo run --example gen_corpus [TARGET...]` (all
//! targets when none is named). A target's old `seed-*` files are removed
//! first, so its corpus is exactly what this writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lanelog::codec::attributes::{self, Attributes};
use lanelog::codec::batch;
use lanelog::codec::entry::{self, Entry, Kind};
use lanelog::codec::header::{FileHeader, FileKind};
use lanelog::codec::record::{self, RecordHeader, Seed};
use lanelog::codec::MAX_ID;
use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{EnqueueOptions, ManualClock, Queue, QueueOptions, Timestamp};
use testkit::fuzz::decode::{encode_record, encode_record_with_key, JOURNAL_FILE, SEGMENT_ID};
use testkit::fuzz::image::{self, File};

type Seeds = Vec<(&'static str, Vec<u8>)>;
/// A target and the function making its seeds.
type Target = (&'static str, fn() -> Seeds);
/// The files of a directory: (name, bytes).
type Dir = Vec<(String, Vec<u8>)>;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let all: [Target; 6] = [
        ("decode_record", record_seeds),
        ("decode_entry", entry_seeds),
        ("decode_checkpoint", checkpoint_seeds),
        ("decode_attributes", attributes_seeds),
        ("open_image", image_seeds),
        ("ops_with_crashes", ops_seeds),
    ];
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    for w in &wanted {
        assert!(
            all.iter().any(|(t, _)| t == w),
            "unknown target {w}; known: {:?}",
            all.map(|(t, _)| t)
        );
    }
    let mut total = 0;
    for (target, seeds) in all {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == target) {
            continue;
        }
        let seeds = seeds();
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for old in std::fs::read_dir(&dir).expect("corpus dir") {
            let old = old.expect("corpus entry").path();
            if old
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
            {
                std::fs::remove_file(&old).expect("remove old seed");
            }
        }
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

// ---------------------------------------------------------------- records

fn rec(id: u64, len: u32, priority: u8, flags: u8) -> RecordHeader {
    RecordHeader {
        id,
        enqueued_ms: image::T0,
        delay_ms: 0,
        synced_end: 32,
        len,
        priority,
        flags,
        ..RecordHeader::default()
    }
}

fn record_seeds() -> Seeds {
    let v1 = Seed::of(1, SEGMENT_ID);
    let v2 = Seed::of(2, SEGMENT_ID);
    let two = |seed| {
        let mut two = encode_record(&rec(1, 5, 3, 0), b"hello", seed);
        two.extend(encode_record(&rec(2, 0, 0, 0), b"", seed));
        two
    };
    let mut delayed = rec(9, 3, 255, 0);
    delayed.delay_ms = 60_000;
    let keyed = RecordHeader {
        key_len: 9,
        ..rec(4, 5, 2, 0)
    };
    let deadline = RecordHeader {
        deadline_ms: image::T0 + 3_600_000,
        ..rec(5, 5, 4, 0)
    };
    let both = RecordHeader {
        deadline_ms: image::T0 + 60_000,
        key_len: 128,
        delay_ms: 1_000,
        ..rec(6, 3, 1, 0)
    };
    // A batch of three: the first two say more follow.
    let mut batch = Vec::new();
    for (id, more) in [(10, true), (11, true), (12, false)] {
        let flags = if more { record::FLAG_MORE } else { 0 };
        let h = RecordHeader {
            key_len: if id == 11 { 3 } else { 0 },
            ..rec(id, 4, 7, flags)
        };
        let key: &[u8] = if id == 11 { b"k11" } else { b"" };
        batch.extend(encode_record_with_key(&h, key, b"item", v2));
    }
    let mut result = rec(3, 4, 0, record::FLAG_RESULT);
    result.enqueued_ms = image::T0 + 5_000;
    vec![
        // Version 1: no seed, no extension.
        ("v1-small", encode_record(&rec(1, 5, 3, 0), b"hello", v1)),
        ("v1-empty", encode_record(&rec(7, 0, 0, 0), b"", v1)),
        (
            "v1-relocated",
            encode_record(&rec(3, 64, 9, record::FLAG_RELOCATED), &[0xA5; 64], v1),
        ),
        ("v1-delayed", encode_record(&delayed, b"abc", v1)),
        ("v1-two", two(v1)),
        // Version 2: seeded with segment SEGMENT_ID.
        ("small", encode_record(&rec(1, 5, 3, 0), b"hello", v2)),
        ("empty", encode_record(&rec(7, 0, 0, 0), b"", v2)),
        (
            "relocated",
            encode_record(&rec(3, 64, 9, record::FLAG_RELOCATED), &[0xA5; 64], v2),
        ),
        ("delayed", encode_record(&delayed, b"abc", v2)),
        ("two", two(v2)),
        (
            "keyed",
            encode_record_with_key(&keyed, b"request-1", b"hello", v2),
        ),
        ("deadline", encode_record(&deadline, b"hurry", v2)),
        (
            "key-deadline-delay",
            encode_record_with_key(&both, &[b'k'; 128], b"abc", v2),
        ),
        ("batch", batch),
        ("result", encode_record(&result, b"done", v2)),
        ("segment-header", file_header(FileKind::Segment, 1).to_vec()),
        ("journal-header", file_header(FileKind::Journal, 1).to_vec()),
        (
            "checkpoint-header",
            file_header(FileKind::Checkpoint, 2).to_vec(),
        ),
        (
            "attributes-header",
            file_header(FileKind::Attributes, 1).to_vec(),
        ),
        (
            "segment-header-v1",
            FileHeader {
                version: 1,
                ..FileHeader::new(FileKind::Segment, 1, image::T0)
            }
            .encode()
            .to_vec(),
        ),
    ]
}

fn file_header(kind: FileKind, id: u64) -> [u8; 32] {
    FileHeader::new(kind, id, image::T0).encode()
}

// ---------------------------------------------------------------- entries

fn entry_seeds() -> Seeds {
    let v1 = |e: &Entry, synced: u32| {
        let mut out = Vec::new();
        entry::encode_v1(e, synced, &mut out);
        out
    };
    let frame = |entries: &[Entry], synced: u32| {
        let mut out = Vec::new();
        let n = batch::encode(entries, synced, usize::MAX, JOURNAL_FILE, &mut out);
        assert_eq!(n, entries.len());
        out
    };
    let mut dead = Entry::new(Kind::DeadLettered, 4, 2, image::T0, 5);
    dead.reason = "model failed: shape mismatch".into();
    let mixed = vec![
        Entry::new(Kind::Delivered, 10, 7, image::T0 + 30_000, 1),
        Entry::new(Kind::Delivered, 11, 7, image::T0 + 30_000, 1),
        Entry::new(Kind::Acked, 9, 0, 0, 2),
        dead.clone(),
        Entry::new(Kind::IdsReserved, 1 << 20, 0, image::T0, 0),
        Entry::new(Kind::RetentionCut, 5, 0, image::T0 + 700, 0),
        Entry::new(Kind::DeadlineMissed, 13, 255, image::T0 + 800, 0),
        Entry::new(Kind::DeadExpired, 2, 1, image::T0 + 900, 0),
        Entry::new(Kind::Nacked, 1, 0, image::T0 + 5, 2),
        Entry::new(Kind::Expired, 12, 3, image::T0 + 1_000, 1),
        Entry::new(Kind::Redriven, 4, 2, image::T0 + 1_100, 0),
        Entry::new(Kind::Purged, 3, 0, image::T0 + 1_200, 0),
        Entry::new(Kind::LeaseExtended, 10, 7, image::T0 + 60_000, 1),
    ];
    let acks: Vec<Entry> = (1000..1040)
        .map(|id| Entry::new(Kind::Acked, id, 3, 0, 1))
        .collect();
    let mut long = Entry::new(Kind::DeadLettered, 8, 0, image::T0, 3);
    long.reason = "é".repeat(entry::MAX_REASON_BYTES / 2);
    vec![
        // Version 1: one entry each.
        (
            "v1-delivered",
            v1(
                &Entry::new(Kind::Delivered, 1, 3, image::T0 + 30_000, 1),
                32,
            ),
        ),
        ("v1-acked", v1(&Entry::new(Kind::Acked, 1, 3, 0, 1), 68)),
        ("v1-dead", v1(&dead, 104)),
        (
            "v1-ids-reserved",
            v1(&Entry::new(Kind::IdsReserved, 1 << 20, 0, image::T0, 0), 32),
        ),
        (
            "v1-nacked",
            v1(&Entry::new(Kind::Nacked, 2, 0, image::T0 + 5, 2), 0),
        ),
        // Version 2: batch frames of journal file JOURNAL_FILE.
        ("batch-mixed", frame(&mixed, 32)),
        ("batch-acks", frame(&acks, 4096)),
        ("batch-dead", frame(&[dead], 200)),
        ("batch-long-reason", frame(&[long], 0)),
        (
            "batch-delivered",
            frame(
                &[Entry::new(Kind::Delivered, 1, 3, image::T0 + 30_000, 1)],
                32,
            ),
        ),
        (
            "batch-bounds",
            frame(
                &[
                    Entry::new(Kind::IdsReserved, MAX_ID, 0, image::T0, 0),
                    Entry::new(Kind::RetentionCut, MAX_ID - 1, 0, u64::MAX, 0),
                    Entry::new(Kind::Nacked, 1, 0, 0, u32::MAX),
                ],
                u32::MAX,
            ),
        ),
    ]
}

// ----------------------------------------------------- real directories

/// Options of the seed queues: `open_image`'s (so the images open the same
/// way there) with retention, so checkpoints carry retention marks and
/// directories stored attributes.
fn seed_options(clock: &ManualClock) -> QueueOptions {
    image::options(clock)
        .retention(Duration::from_secs(7 * 24 * 3600))
        .dead_letter_retention(Duration::from_secs(30 * 24 * 3600))
}

/// A queue on a fresh storage.
fn queue(storage: &MemoryStorage, opts: QueueOptions) -> Queue {
    opts.open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
        .expect("open")
}

/// Leading bytes of a file: trailing zeros cut.
fn trimmed(b: &[u8]) -> Vec<u8> {
    let end = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    b[..end].to_vec()
}

/// The files of a directory: (name, bytes).
fn read_dir(storage: &MemoryStorage) -> Dir {
    storage
        .file_names()
        .into_iter()
        .map(|n| {
            let b = storage.read_file(&n).expect("listed file");
            (n, b)
        })
        .collect()
}

/// A version 1 fixture directory from `tests/fixtures/`.
fn fixture(name: &str) -> Dir {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let mut files: Dir = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("fixture entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("file name")
                .to_string();
            (name, std::fs::read(&path).expect("fixture file"))
        })
        .collect();
    files.sort();
    files
}

/// A directory as image files: trailing zeros cut and restored by padding.
/// Files `open_image` cannot name (the lock file) are left out.
fn files_of(dir: &[(String, Vec<u8>)], fix: bool) -> Vec<File> {
    let mut files = Vec::new();
    for (name, bytes) in dir {
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
        } else if name == "attributes.lla" {
            (image::Kind::Attributes, "0000000000")
        } else {
            continue;
        };
        let id: u32 = rest[..10].parse().expect("numbered file");
        let pad = match bytes.len() as u64 {
            image::SEGMENT_SIZE => 2,
            image::JOURNAL_SIZE => 1,
            _ => 0,
        };
        let lead = if pad == 0 {
            bytes.clone()
        } else {
            trimmed(bytes)
        };
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

/// A closed queue with live, acked, delayed, keyed, deadline, completed
/// (stored result) and dead messages (checkpoint with keys, deadlines,
/// results, reasons and retention marks; attributes stored).
fn closed_queue() -> MemoryStorage {
    busy_queue(true)
}

/// The workload of [`closed_queue`]; closed, or left as a process crash
/// would (no checkpoint: the journal holds every batch frame).
fn busy_queue(close: bool) -> MemoryStorage {
    let storage = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(image::T0));
    let q = queue(&storage, seed_options(&clock));
    q.enqueue(b"low", 0).expect("enqueue");
    q.enqueue(b"urgent", 9).expect("enqueue");
    q.enqueue_delayed(b"later", 3, Duration::from_secs(60))
        .expect("enqueue");
    q.enqueue(&[7; 100], 1).expect("enqueue");
    let keyed = EnqueueOptions::new().priority(2).key("request-8c1f");
    let first = q.enqueue_with(b"keyed", &keyed).expect("enqueue");
    assert_eq!(q.enqueue_with(b"keyed", &keyed).expect("dedup"), first);
    q.enqueue_with(
        b"hurry",
        &EnqueueOptions::new()
            .priority(9)
            .deadline(Timestamp(image::T0 + 3_600_000)),
    )
    .expect("enqueue");
    clock.advance(Duration::from_secs(1));
    q.enqueue_batch_with(&[
        (
            &b"batch-a"[..],
            EnqueueOptions::new()
                .priority(5)
                .key("batch-a")
                .deadline(Timestamp(image::T0 + 7_200_000)),
        ),
        (&b"batch-b"[..], EnqueueOptions::new().priority(5)),
    ])
    .expect("enqueue batch");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.ack(d.receipt).expect("ack");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.dead_letter(d.receipt, "bad input").expect("dead letter");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.complete(d.receipt, b"the result").expect("complete");
    let _leased = q.dequeue().expect("dequeue").expect("ready");
    if !close {
        let image = storage.crash(CrashPolicy::ProcessCrash);
        drop(q);
        return image;
    }
    q.close().expect("close");
    storage
}

/// A queue that crashed (power loss, torn writes) mid-work: no checkpoint,
/// torn tails.
fn crashed_queue(seed: u64) -> MemoryStorage {
    let storage = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(image::T0));
    let q = queue(
        &storage,
        seed_options(&clock).durability(lanelog::Durability::None),
    );
    for i in 0..6u8 {
        let mut opts = EnqueueOptions::new().priority(i % 3);
        if i % 2 == 1 {
            opts = opts.key(format!("key-{i}"));
        }
        if i == 4 {
            opts = opts.deadline(Timestamp(image::T0 + 600_000));
        }
        q.enqueue_with(&[i; 40], &opts).expect("enqueue");
        if i == 2 {
            q.sync().expect("sync");
        }
    }
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.nack(d.receipt, Duration::from_secs(5)).expect("nack");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.ack(d.receipt).expect("ack");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.complete(d.receipt, b"result").expect("complete");
    let image = storage.crash(CrashPolicy::PowerLoss { seed, torn: true });
    drop(q);
    image
}

/// An empty queue, closed.
fn empty_queue() -> MemoryStorage {
    let storage = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(image::T0));
    queue(&storage, image::options(&clock))
        .close()
        .expect("close");
    storage
}

// ----------------------------------------------------- checkpoints, scans

fn checkpoint_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    // (directory, [checkpoint, segment, journal] seed names); the crashed
    // fixture's segment is the closed one's, so it is left out.
    let dirs: [(Dir, [&'static str; 3]); 5] = [
        (
            read_dir(&closed_queue()),
            ["checkpoint", "segment", "journal"],
        ),
        (read_dir(&busy_queue(false)), ["", "", "journal-live"]),
        (
            read_dir(&crashed_queue(3)),
            ["", "segment-torn", "journal-torn"],
        ),
        (
            fixture("v1-closed"),
            ["v1-checkpoint", "v1-segment", "v1-journal"],
        ),
        (fixture("v1-crashed"), ["", "", "v1-journal-crashed"]),
    ];
    for (files, names) in dirs {
        for (name, b) in files {
            let (seed, b) = if name.ends_with(".ckp") {
                (names[0], b)
            } else if name.starts_with("segment-") {
                (names[1], trimmed(&b))
            } else if name.starts_with("journal-") {
                (names[2], trimmed(&b))
            } else {
                continue;
            };
            if !seed.is_empty() {
                seeds.push((seed, b));
            }
        }
    }
    seeds
}

// ------------------------------------------------------------- attributes

fn attributes_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    for (name, b) in read_dir(&closed_queue()) {
        if name == "attributes.lla" {
            seeds.push(("queue", b));
        }
    }
    assert_eq!(seeds.len(), 1, "the closed queue stores its attributes");
    let a = Attributes {
        segment_size: 1 << 20,
        max_message_size: 4096,
        visibility_timeout_ms: 30_000,
        max_deliveries: 5,
        retention_ms: Some(86_400_000),
        dead_letter_retention_ms: None,
        dedup_window_ms: 300_000,
        default_delay_ms: 0,
        default_wait_ms: 20_000,
    };
    seeds.push(("retention", attributes::encode(&a, 7, image::T0)));
    let b = Attributes {
        retention_ms: None,
        dead_letter_retention_ms: Some(u64::MAX),
        max_deliveries: 0,
        ..a
    };
    seeds.push(("dead-retention", attributes::encode(&b, 1, image::T0)));
    seeds.push(("defaults", attributes::encode(&Attributes::default(), 1, 0)));
    seeds
}

// ---------------------------------------------------------------- images

fn image_seeds() -> Seeds {
    let closed = read_dir(&closed_queue());
    let crashed = read_dir(&crashed_queue(3));
    let empty = read_dir(&empty_queue());
    let live = read_dir(&busy_queue(false));
    let v1_closed = fixture("v1-closed");
    let v1_crashed = fixture("v1-crashed");
    vec![
        ("closed", image::encode(0, &files_of(&closed, false))),
        ("closed-fix", image::encode(3, &files_of(&closed, true))),
        ("crashed", image::encode(2, &files_of(&crashed, false))),
        ("crashed-fix", image::encode(1, &files_of(&crashed, true))),
        ("empty", image::encode(2, &files_of(&empty, false))),
        ("live", image::encode(1, &files_of(&live, false))),
        ("live-fix", image::encode(2 | 4 | 8, &files_of(&live, true))),
        (
            "closed-complete",
            image::encode(2 | 4 | 8, &files_of(&closed, false)),
        ),
        ("v1-closed", image::encode(2, &files_of(&v1_closed, false))),
        (
            "v1-closed-fix",
            image::encode(1, &files_of(&v1_closed, true)),
        ),
        (
            "v1-crashed",
            image::encode(3, &files_of(&v1_crashed, false)),
        ),
    ]
}

// ------------------------------------------------------------------- ops

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
