//! Regression tests for bugs the fuzz targets found (their inputs are in
//! `fuzz/regressions/<target>/`). Each builds a small directory on a
//! `MemoryStorage` through the storage API and states what must hold: open
//! refuses the directory with a clear error, or the queue works on it.
//! The overflow cases only panicked where overflow checks are on (as in
//! `cargo test` without `--release`); without them the sums wrapped and ids
//! were reused, which `ids_stay_fresh` catches in either build.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use lanelog::codec::checkpoint::{self, CheckpointMeta};
use lanelog::codec::entry::{self, Entry, Kind};
use lanelog::codec::header::{FileHeader, FileKind};
use lanelog::codec::record::{self, RecordHeader};
use lanelog::storage::{MemoryStorage, Storage};
use lanelog::{Queue, QueueOptions};

const T0: u64 = 1_700_000_000_000;

fn small() -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
}

/// A directory holding `files` (name, size, leading bytes), durable.
fn directory(files: &[(&str, u64, Vec<u8>)]) -> MemoryStorage {
    let s = MemoryStorage::new();
    for (name, size, bytes) in files {
        let f = s.create(name, *size).expect("create");
        f.write_at(0, bytes).expect("write");
        f.sync_data().expect("sync");
    }
    s.sync_dir().expect("sync dir");
    s
}

fn header(kind: FileKind, id: u64) -> Vec<u8> {
    FileHeader::new(kind, id, T0).encode().to_vec()
}

/// A checkpoint of an empty queue: each test changes one field.
fn meta() -> CheckpointMeta {
    CheckpointMeta {
        number: 1,
        created_ms: T0,
        next_id: 1,
        journal_file: 1,
        journal_offset: 32,
        head_segment: 1,
        head_offset: 32,
        ..CheckpointMeta::default()
    }
}

/// The file `checkpoint-0000000001.ckp` holding `meta` and no messages.
fn checkpoint_file(meta: &CheckpointMeta) -> (&'static str, u64, Vec<u8>) {
    let ckp = checkpoint::encode(meta, &checkpoint::CheckpointBody::default());
    ("checkpoint-0000000001.ckp", ckp.len() as u64, ckp)
}

/// A checkpoint's entry for segment `id` with `records` appended.
fn segment_entry(id: u32, records: u32) -> checkpoint::CheckpointSegment {
    checkpoint::CheckpointSegment {
        id,
        records,
        largest: 0,
    }
}

/// A one-byte message record in lane 0: each test changes a field.
fn record_header(id: u64) -> RecordHeader {
    RecordHeader {
        id,
        enqueued_ms: T0,
        delay_ms: 0,
        synced_end: 32,
        len: 1,
        priority: 0,
        flags: 0,
        ..RecordHeader::default()
    }
}

/// The file `segment-0000000001.seg` holding the record `h` with payload
/// `x`.
fn segment_file(h: &RecordHeader) -> (&'static str, u64, Vec<u8>) {
    let mut seg = header(FileKind::Segment, 1);
    record::encode(h, b"x", record::Seed::of(2, 1), &mut seg);
    ("segment-0000000001.seg", 1 << 20, seg)
}

fn open(s: &MemoryStorage) -> lanelog::Result<Queue> {
    small().open_storage(Arc::new(s.clone()) as Arc<dyn Storage>)
}

/// Open must refuse the directory or keep handing out fresh ids: never
/// panic (builds with overflow checks), never wrap around to ids already
/// used (builds without).
fn ids_stay_fresh(s: &MemoryStorage) {
    let Ok(q) = open(s) else { return };
    let mut last = None;
    for _ in 0..3 {
        if let Ok(id) = q.enqueue(b"x", 0) {
            assert!(last < Some(id), "id {id} after {last:?}: reused");
            last = Some(id);
        }
    }
}

// Found by fuzzing: a checkpoint with next_id near u64::MAX opens, then enqueue overflows (reserve_ids).
#[test]
fn checkpoint_next_id_near_max() {
    let meta = CheckpointMeta {
        next_id: u64::MAX,
        ..meta()
    };
    ids_stay_fresh(&directory(&[checkpoint_file(&meta)]));
}

// Found by fuzzing: a segment record with id u64::MAX panics open on `h.id + 1` (builds with overflow checks).
#[test]
fn record_id_max() {
    ids_stay_fresh(&directory(&[segment_file(&record_header(u64::MAX))]));
}

// Found by fuzzing: a journal entry with id u64::MAX panics open on `e.id + 1` (builds with overflow checks).
#[test]
fn entry_id_max() {
    // A version 1 journal file (one entry per frame); the batch frames of
    // version 2 carry ids as varints, refused above MAX_ID.
    let mut jnl = FileHeader {
        version: 1,
        ..FileHeader::new(FileKind::Journal, 1, T0)
    }
    .encode()
    .to_vec();
    entry::encode_v1(&Entry::new(Kind::Acked, u64::MAX, 0, T0, 1), 32, &mut jnl);
    ids_stay_fresh(&directory(&[("journal-0000000001.jnl", 64 << 10, jnl)]));
}

// Found by fuzzing: a checkpoint naming journal file >= 10^10 makes open create a journal name that parse_name rejects; reopen fails.
#[test]
fn journal_number_over_ten_digits() {
    let meta = CheckpointMeta {
        journal_file: 10_000_000_000,
        ..meta()
    };
    let s = directory(&[checkpoint_file(&meta)]);
    // The first open may refuse the directory; if it accepts it, the
    // files it writes itself must not stop the next open.
    let Ok(q) = open(&s) else { return };
    q.close().expect("close");
    if let Err(e) = open(&s) {
        panic!("the directory the queue itself closed does not reopen: {e}");
    }
}

// Found by fuzzing: a record with enqueued_ms near u64::MAX and a delay panics open on the ready-at sum (builds with overflow checks).
#[test]
fn record_ready_at_overflow() {
    let h = RecordHeader {
        enqueued_ms: u64::MAX,
        delay_ms: 1,
        ..record_header(1)
    };
    ids_stay_fresh(&directory(&[segment_file(&h)]));
}

// Found by fuzzing: a checkpoint with acked_total = u64::MAX panics the next ack (builds with overflow checks).
#[test]
fn acked_total_overflow() {
    let meta = CheckpointMeta {
        acked_total: u64::MAX,
        ..meta()
    };
    let s = directory(&[checkpoint_file(&meta), segment_file(&record_header(1))]);
    let q = open(&s).expect("a checkpoint at the counter's limit is valid");
    let d = q.dequeue().expect("dequeue").expect("the record is ready");
    // Counters saturate: the ack succeeds and the total stays at its limit.
    q.ack(d.receipt).expect("ack at the acked_total limit");
    assert_eq!(q.stats().acked_total, u64::MAX);
}

/// Run `f` on another thread; false if it did not finish in 10 s (the
/// thread is left spinning until the test process exits).
fn finishes(f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10)).is_ok()
}

// Found by fuzzing: a journal file shorter than one entry makes the first write loop forever (append_entries).
#[test]
fn short_journal_file_hangs_enqueue() {
    // A journal file cut to its header and 8 bytes: opens fine.
    let mut jnl = header(FileKind::Journal, 1);
    jnl.extend_from_slice(&[0; 8]);
    let s = directory(&[("journal-0000000001.jnl", 40, jnl)]);
    let done = finishes(move || {
        if let Ok(q) = open(&s) {
            let _ = q.enqueue(b"x", 0);
        }
    });
    assert!(done, "enqueue did not return within 10 s");
}

// Found by fuzzing: a journal file shorter than 1060 bytes hangs the first dead letter with a 1 KiB reason.
#[test]
fn short_journal_file_hangs_dead_letter() {
    let jnl = header(FileKind::Journal, 1);
    let s = directory(&[("journal-0000000001.jnl", 1024, jnl)]);
    let done = finishes(move || {
        let Ok(q) = open(&s) else { return };
        q.enqueue(b"x", 0).expect("enqueue fits");
        let d = q.dequeue().expect("dequeue").expect("ready");
        let _ = q.dead_letter(d.receipt, &"r".repeat(1024));
    });
    assert!(done, "dead_letter did not return within 10 s");
}

// Found by fuzzing: a checkpoint placing a message past the end of its
// segment made every dequeue that reached it fail with `Error::Io` (a read
// past the end was taken for a transient failure), so the lane, and every
// batch that included it, was stuck for good.
#[test]
fn location_past_segment_end_is_corrupt_not_transient() {
    use lanelog::codec::checkpoint::{CheckpointMessage, CheckpointState};
    let mut seg = header(FileKind::Segment, 1);
    let h = RecordHeader {
        len: 4,
        priority: 9,
        ..record_header(1)
    };
    record::encode(&h, b"good", record::Seed::of(2, 1), &mut seg);
    let meta = CheckpointMeta {
        next_id: 3,
        head_offset: seg.len() as u32,
        ..meta()
    };
    let msg = |id, offset, priority| CheckpointMessage {
        id,
        time_ms: T0,
        deadline_ms: 0,
        segment: 1,
        offset,
        attempt: 0,
        priority,
        state: CheckpointState::Pending,
    };
    let messages = [msg(1, 32, 9), msg(2, 3 << 20, 1)];
    let segments = [segment_entry(1, 2)];
    let body = checkpoint::CheckpointBody {
        segments: &segments,
        messages: &messages,
        ..Default::default()
    };
    let ckp = checkpoint::encode(&meta, &body);
    let len = ckp.len() as u64;
    let s = directory(&[
        ("checkpoint-0000000001.ckp", len, ckp),
        ("segment-0000000001.seg", 1 << 20, seg),
    ]);
    let q = open(&s).expect("open");
    let batch = q
        .dequeue_up_to(16)
        .expect("the bad location is no I/O error");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].payload, b"good");
    let dead = q.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 1, "the misplaced message is parked: {dead:?}");
    assert!(dead[0].reason.starts_with("corrupt"), "{}", dead[0].reason);
}

// Found by fuzzing: a checkpoint claiming u32::MAX records appended to the
// head segment overflowed the segment's record count on the next enqueue
// (builds with overflow checks); the count is now capped at what the file
// can hold.
#[test]
fn checkpoint_segment_record_count_overflow() {
    let segments = [segment_entry(1, u32::MAX)];
    let body = checkpoint::CheckpointBody {
        segments: &segments,
        ..Default::default()
    };
    let ckp = checkpoint::encode(&meta(), &body);
    let s = directory(&[
        ("checkpoint-0000000001.ckp", ckp.len() as u64, ckp),
        segment_file(&record_header(1)),
    ]);
    let q = open(&s).expect("a checkpoint with an impossible record count still opens");
    for _ in 0..3 {
        q.enqueue(b"more", 0).expect("enqueue");
    }
    let mut got = 0;
    while let Some(d) = q.dequeue().expect("dequeue") {
        q.ack(d.receipt).expect("ack");
        got += 1;
    }
    assert_eq!(got, 4, "the record and the three enqueued after open");
}

// Found by fuzzing (open_image): a checkpoint whose retention mark claims
// ids far past its next id. Retention then cut below that bound, and every
// message enqueued afterwards (ids below it) was taken as already cut: the
// enqueue returned Ok and the message was gone. Open now hands out no id
// below a mark, and a cut never passes the ids handed out.
#[test]
fn retention_mark_past_next_id() {
    let marks = [(1u64 << 40, T0)];
    let body = checkpoint::CheckpointBody {
        marks: &marks,
        ..Default::default()
    };
    let ckp = checkpoint::encode(&meta(), &body);
    let s = directory(&[("checkpoint-0000000001.ckp", ckp.len() as u64, ckp)]);
    let clock = Arc::new(lanelog::ManualClock::new(lanelog::Timestamp(T0)));
    let opts = || {
        small()
            .clock(clock.clone())
            .retention(Duration::from_secs(7 * 86_400))
    };
    let q = opts()
        .open_storage(Arc::new(s.clone()) as Arc<dyn Storage>)
        .expect("open");
    q.enqueue(b"before", 0).expect("enqueue");
    clock.advance(Duration::from_secs(8 * 86_400));
    // Let the retention thread run its cut.
    std::thread::sleep(Duration::from_millis(1500));
    let id = q.enqueue(b"after", 0).expect("enqueue");
    assert!(u64::from(id) >= 1 << 40, "no id below the mark: {id:?}");
    assert_eq!(q.stats().ready, 1, "{:?}", q.stats());
    let d = q
        .dequeue()
        .expect("dequeue")
        .expect("the new message is there");
    assert_eq!(d.payload, b"after");
    q.nack(d.receipt, Duration::ZERO).expect("nack");
    q.close().expect("close");
    let q = opts()
        .open_storage(Arc::new(s) as Arc<dyn Storage>)
        .expect("reopen");
    assert_eq!(q.stats().ready, 1, "still there after reopen");
}

/// `fuzz/regressions/ops_with_crashes/crash-0ddb03b6…` (a bug of the test
/// kit's model, not of the queue): a message with a deadline, dead-lettered
/// when it passed and redriven, both under `Durability::None`; a power loss
/// kept neither, so the reopened queue held it ready with its deadline, as
/// it was before, and dead-lettered it on the first look. The model had
/// taken a redriven message to come back from after its redrive, without a
/// deadline, and predicted its delivery. It now tells the states apart by
/// the delivery count (a redrive starts it again from 0).
#[test]
fn ops_redriven_message_back_from_before_its_dead_letter() {
    let input = include_bytes!(
        "../fuzz/regressions/ops_with_crashes/crash-0ddb03b6da49fcd0214c655dc015ba05ee179fc2"
    );
    testkit::fuzz::ops::run(input);
}

/// `fuzz/regressions/open_image/duplicate-id-spin` (an out-of-memory
/// report of `open_image` on format version 2): a checkpoint holds message
/// 4 ready with one deadline, and a segment past the checkpoint's position
/// holds another record of id 4 (not a relocated copy) with another
/// deadline. Recovery placed both, so the lane held the message twice; a
/// delivery removed one entry and the other stayed at the head, so one
/// `dequeue` leased it again and again, writing a journal frame each time,
/// until memory ran out (a journal file every ~700 turns). A record of an
/// id the index already holds is now ignored (the first one found stands).
#[test]
fn a_second_record_of_a_held_id_is_ignored() {
    image_input_runs_to_its_end(
        "a_second_record_of_a_held_id_is_ignored",
        include_bytes!("../fuzz/regressions/open_image/duplicate-id-spin"),
    );
}

/// `fuzz/regressions/open_image/stale-lane-head-spin` (a second
/// out-of-memory report of `open_image`, after the fix above): a directory
/// whose checkpoint holds message 1 both ready and completed. The lane kept
/// its entry while every delivery was refused (the message is finished), so
/// `dequeue` peeked the same message without end, journaling each try. A
/// lane head that names the message just settled, or one the index refuses
/// to deliver, is now dropped as stale (the message stays where else it is).
#[test]
fn a_stale_lane_entry_is_dropped_not_delivered_forever() {
    image_input_runs_to_its_end(
        "a_stale_lane_entry_is_dropped_not_delivered_forever",
        include_bytes!("../fuzz/regressions/open_image/stale-lane-head-spin"),
    );
}

/// Run an `open_image` input through the target's own checks, aborting
/// the test process if it has not ended in two minutes (these inputs made
/// a `dequeue` spin without end).
fn image_input_runs_to_its_end(name: &str, input: &[u8]) {
    let _hung = testkit::watchdog::Watchdog::arm(name, Duration::from_secs(120));
    testkit::fuzz::image::run(input);
}

/// `fuzz/regressions/open_image/held-id-above-next-id`, found by
/// `open_image` on 2026-12-06: a damaged checkpoint holding two ready messages
/// with ids above its next id. Recovery kept the stored
/// next id, and settled the retention cut bound on the lowest held id,
/// above it: the two messages the target enqueued after its drain got ids
/// below that bound, were taken for messages a cut had removed, and were
/// dropped as they were enqueued (`Ok`, then `Gone` after a clean close and
/// a reopen). Recovery now hands out ids only above every id it holds.
#[test]
fn messages_enqueued_after_the_drain_survive_a_clean_close() {
    image_input_runs_to_its_end(
        "messages_enqueued_after_the_drain_survive_a_clean_close",
        include_bytes!("../fuzz/regressions/open_image/held-id-above-next-id"),
    );
}
