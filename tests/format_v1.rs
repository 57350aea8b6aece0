//! Format version 1 directories under this (version 2) build: the fixtures
//! in `tests/fixtures/` were written by the version-1 code (commit 8112c03;
//! see `tests/fixtures/README.md`), one closed cleanly (`v1-closed`, read
//! from its checkpoint) and one left without a close (`v1-crashed`, its
//! journal replayed). Each test opens a copy, never the committed files:
//! opening upgrades a directory (new segments, journal files and
//! checkpoints are version 2). Also: a file of a version newer than this
//! build is refused, naming the file, with the directory left as it was.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::files;
use common::Place;
use lanelog::codec::header::{FileHeader, FileKind};
use lanelog::{
    DeadLetter, Delivery, Durability, EnqueueOptions, Error, LaneCount, ManualClock, MessageId,
    Queue, QueueOptions, Stats, Timestamp,
};

/// The fixture clock's reading when its workload started; message `n`
/// (1..=14) was enqueued at about `T0 + n` seconds.
const T0: u64 = 1_700_000_000_000;
/// The clock at the first open here: after the workload, before the delayed
/// message's hour is up.
const OPEN_AT: u64 = T0 + 100_000;
/// When the delayed message (id 14, enqueued at T0 + 14 s, one hour's
/// delay) becomes ready.
const DELAYED_READY_AT: u64 = T0 + 14_000 + 3_600_000;

/// The id of the first message enqueued after the fixture: version 1
/// reserved ids in a journaled block of 2^20 at its first enqueue, so its
/// next open (version 1's too) goes on from 1 + 1 + 2^20. Never one of the
/// fixture's ids 1..=14.
const FIRST_NEW_ID: u64 = 1_048_578;

const DEAD_REASON: &str = "shape mismatch: expected [3, 224, 224]";

/// The 300-byte binary payload of message 13: byte i = 7 * i mod 256.
fn binary_payload() -> Vec<u8> {
    (0..300u32).map(|i| (7 * i % 256) as u8).collect()
}

/// A ready (or released) message of the fixtures.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    id: u64,
    priority: u8,
    attempt: u32,
    payload: Vec<u8>,
    enqueued_at: u64,
}

fn msg(id: u64, priority: u8, attempt: u32, payload: &[u8], enqueued_s: u64) -> Msg {
    Msg {
        id,
        priority,
        attempt,
        payload: payload.to_vec(),
        enqueued_at: T0 + enqueued_s * 1000,
    }
}

impl From<&Delivery> for Msg {
    fn from(d: &Delivery) -> Msg {
        Msg {
            id: u64::from(d.id),
            priority: d.priority,
            attempt: d.attempt,
            payload: d.payload.clone(),
            enqueued_at: d.enqueued_at.0,
        }
    }
}

/// Every ready message of both fixtures after the first open, in delivery
/// order (what version 1 itself delivers from them): the message left in
/// flight (6) is released with its next attempt, the nacked one (5) keeps
/// its count.
fn fixture_ready() -> Vec<Msg> {
    vec![
        msg(6, 9, 2, b"in-flight", 9),
        msg(7, 9, 1, b"p9-a", 11),
        msg(8, 9, 1, b"p9-b", 12),
        msg(5, 5, 2, b"flaky", 7),
        msg(9, 5, 1, b"p5-a", 13),
        msg(11, 5, 1, b"p5-b", 13),
        msg(10, 0, 1, b"p0-a", 13),
        msg(12, 0, 1, b"p0-b", 13),
        msg(13, 0, 1, &binary_payload(), 13),
    ]
}

/// The delayed message, once its hour is up.
fn fixture_delayed() -> Msg {
    msg(14, 5, 1, b"delayed", 14)
}

fn lanes(pairs: &[(u8, u64)]) -> Vec<LaneCount> {
    pairs
        .iter()
        .map(|&(priority, ready)| LaneCount { priority, ready })
        .collect()
}

/// The counters a test checks, as one comparable tuple: (ready per lane,
/// ready, in flight, delayed, dead, acked_total, results).
type Counts = (Vec<LaneCount>, u64, u64, u64, u64, u64, u64);

fn counts(s: &Stats) -> Counts {
    (
        s.ready_per_lane.clone(),
        s.ready,
        s.in_flight,
        s.delayed,
        s.dead,
        s.acked_total,
        s.results,
    )
}

fn check_dead_letter(q: &Queue, ctx: &str) {
    let dead = q.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 1, "{ctx}: {dead:?}");
    let d: &DeadLetter = &dead[0];
    assert_eq!(
        (u64::from(d.id), d.priority, d.attempts, d.reason.as_str()),
        (4, 9, 1, DEAD_REASON),
        "{ctx}"
    );
    assert_eq!(
        (d.enqueued_at, d.dead_at),
        (Timestamp(T0 + 5_000), Timestamp(T0 + 6_000)),
        "{ctx}"
    );
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a committed fixture in a new temporary directory.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("temp dir");
    let from = fixture_dir(name);
    let mut copied = 0;
    for entry in fs::read_dir(&from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
        copied += 1;
    }
    assert!(copied > 0, "{} is empty", from.display());
    to
}

/// The options the fixtures were written with, on a manual clock.
fn options(clock: &ManualClock) -> QueueOptions {
    QueueOptions::new()
        .segment_size(lanelog::MIN_SEGMENT_SIZE)
        .journal_file_size(64 << 10)
        .durability(Durability::Immediate)
        .visibility_timeout(Duration::from_secs(30))
        .max_deliveries(5)
        .clock(Arc::new(clock.clone()))
}

/// The format version in the header of every segment, journal file and
/// checkpoint of `dir`, by name.
fn header_versions(dir: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("read dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        let kind = match name.rsplit('.').next() {
            Some("seg") => FileKind::Segment,
            Some("jnl") => FileKind::Journal,
            Some("ckp") => FileKind::Checkpoint,
            _ => continue,
        };
        let bytes = fs::read(dir.join(&name)).expect("read file");
        let h = FileHeader::decode(kind, &bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        out.insert(name, h.version);
    }
    out
}

fn take(q: &Queue, ctx: &str) -> Delivery {
    q.dequeue()
        .expect("dequeue")
        .unwrap_or_else(|| panic!("{ctx}: nothing ready; stats {:?}", q.stats()))
}

/// The committed fixtures are what their README says: every file of
/// format version 1, and no lock file.
#[test]
fn fixtures_are_version_1() {
    for (name, expected) in [
        (
            "v1-closed",
            &[
                "checkpoint-0000000001.ckp",
                "journal-0000000002.jnl",
                "segment-0000000001.seg",
            ][..],
        ),
        (
            "v1-crashed",
            &["journal-0000000001.jnl", "segment-0000000001.seg"][..],
        ),
    ] {
        let dir = fixture_dir(name);
        let versions = header_versions(&dir);
        let names: Vec<&str> = versions.keys().map(String::as_str).collect();
        assert_eq!(names, expected, "{name}");
        let all = fs::read_dir(&dir).expect("fixture dir").count();
        assert_eq!(all, names.len(), "{name}: no other file (no LOCK)");
        assert!(versions.values().all(|&v| v == 1), "{name}: {versions:?}");
    }
}

/// Open a copy of a fixture, check everything it holds, work on it with
/// this build (new enqueues, acks, a completion with its result, a nack, a
/// message left in flight), close, reopen, and check again through to the
/// delayed message and a third open.
fn serves_fixture(name: &str, from_checkpoint: bool) {
    let dir = copy_fixture(name);
    let clock = ManualClock::new(Timestamp(OPEN_AT));
    let open = |ctx: &str| {
        options(&clock)
            .open(dir.path())
            .unwrap_or_else(|e| panic!("{name} {ctx}: open: {e}"))
    };

    // First open, on the version 1 files.
    let q = open("first open");
    let r = q.recovery_report().clone();
    assert!(!r.found_damage(), "{name}: {r:?}");
    assert!(r.torn_tails.is_empty(), "{name}: {r:?}");
    assert_eq!(r.in_flight_released, 1, "{name}: {r:?}");
    if from_checkpoint {
        assert_eq!(r.checkpoint, Some(1), "{name}: {r:?}");
    } else {
        assert_eq!(r.checkpoint, None, "{name}: {r:?}");
        assert!(r.entries_replayed > 0, "{name}: {r:?}");
    }
    assert_eq!(
        counts(&q.stats()),
        (lanes(&[(9, 3), (5, 3), (0, 3)]), 9, 0, 1, 1, 3, 0),
        "{name}: first open, {:?}",
        q.stats()
    );
    check_dead_letter(&q, name);
    assert_eq!(q.result(MessageId::from(1)).expect("result"), None);

    // Lane 9, then the head of lane 5: exactly what version 1 wrote.
    let ready = fixture_ready();
    let got: Vec<Delivery> = (0..4).map(|_| take(&q, name)).collect();
    let got_msgs: Vec<Msg> = got.iter().map(Msg::from).collect();
    assert_eq!(got_msgs, ready[..4], "{name}: first four deliveries");
    q.complete(got[0].receipt, b"result of 6")
        .expect("complete 6");
    q.ack(got[1].receipt).expect("ack 7");
    q.nack(got[2].receipt, Duration::ZERO).expect("nack 8");
    // got[3] (id 5) is left in flight over the close.
    assert_eq!(
        q.result(MessageId::from(6)).expect("result"),
        Some(b"result of 6".to_vec())
    );
    assert_eq!(q.result(MessageId::from(7)).expect("result"), None);

    // New messages: ids go on after the fixture's reserved block.
    let new_a = q
        .enqueue_with(b"v2-a", &EnqueueOptions::new().priority(5))
        .expect("enqueue_with");
    let keyed = EnqueueOptions::new().priority(5).key("v2-key");
    let new_b = q.enqueue_with(b"v2-b", &keyed).expect("keyed enqueue");
    assert_eq!(
        q.enqueue_with(b"v2-b", &keyed).expect("keyed again"),
        new_b,
        "{name}: a repeated key"
    );
    assert_eq!(
        (u64::from(new_a), u64::from(new_b)),
        (FIRST_NEW_ID, FIRST_NEW_ID + 1),
        "{name}: new ids"
    );
    assert_eq!(
        counts(&q.stats()),
        (lanes(&[(9, 1), (5, 4), (0, 3)]), 8, 1, 1, 1, 5, 1),
        "{name}: before close, {:?}",
        q.stats()
    );
    // Lane 9's head is the nacked 8, attempt 2: put it straight back.
    let d = take(&q, name);
    assert_eq!(Msg::from(&d), msg(8, 9, 2, b"p9-b", 12), "{name}: nacked");
    q.nack(d.receipt, Duration::ZERO).expect("nack 8 again");
    q.close().expect("close");
    let versions = header_versions(dir.path());
    assert_eq!(
        versions.get("segment-0000000001.seg"),
        Some(&1),
        "{name}: the version 1 segment still holds live messages: {versions:?}"
    );
    for kind in ["segment-", "journal-", "checkpoint-"] {
        let newest = versions.iter().rfind(|(n, _)| n.starts_with(kind));
        assert!(
            newest.is_some_and(|(_, &v)| v == 2),
            "{name}: the newest {kind} file is of version 2: {versions:?}"
        );
    }

    // Second open: the directory is now part version 1, part version 2.
    let q = open("second open");
    let r = q.recovery_report().clone();
    assert!(!r.found_damage(), "{name} reopened: {r:?}");
    assert!(r.checkpoint.is_some(), "{name} reopened: {r:?}");
    assert_eq!(r.in_flight_released, 1, "{name} reopened: {r:?}");
    assert_eq!(
        counts(&q.stats()),
        (lanes(&[(9, 1), (5, 5), (0, 3)]), 9, 0, 1, 1, 5, 1),
        "{name}: reopened, {:?}",
        q.stats()
    );
    check_dead_letter(&q, &format!("{name} reopened"));
    assert_eq!(
        q.result(MessageId::from(6)).expect("result"),
        Some(b"result of 6".to_vec()),
        "{name}: reopened"
    );
    let expected = vec![
        msg(8, 9, 3, b"p9-b", 12),
        msg(5, 5, 3, b"flaky", 7),
        msg(9, 5, 1, b"p5-a", 13),
        msg(11, 5, 1, b"p5-b", 13),
        msg(FIRST_NEW_ID, 5, 1, b"v2-a", 100),
        msg(FIRST_NEW_ID + 1, 5, 1, b"v2-b", 100),
        msg(10, 0, 1, b"p0-a", 13),
        msg(12, 0, 1, b"p0-b", 13),
        msg(13, 0, 1, &binary_payload(), 13),
    ];
    let mut got = Vec::new();
    while let Some(d) = q.dequeue().expect("dequeue") {
        got.push(Msg::from(&d));
        if u64::from(d.id) == 13 {
            q.complete(d.receipt, b"result of 13").expect("complete 13");
        } else {
            q.ack(d.receipt).expect("ack");
        }
    }
    assert_eq!(got, expected, "{name}: reopened, every ready message");
    assert_eq!(q.stats().delayed, 1, "{name}: the delayed one waits");

    // The hour passes: the version 1 delayed message is delivered.
    clock.set(Timestamp(DELAYED_READY_AT - 1));
    assert!(q.dequeue().expect("dequeue").is_none(), "{name}: too early");
    clock.set(Timestamp(DELAYED_READY_AT));
    let d = take(&q, &format!("{name} after the delay"));
    assert_eq!(Msg::from(&d), fixture_delayed(), "{name}: delayed");
    q.ack(d.receipt).expect("ack 14");
    assert!(q.dequeue().expect("dequeue").is_none());
    let done = (Vec::new(), 0, 0, 0, 1, 5 + 9 + 1, 2);
    assert_eq!(counts(&q.stats()), done, "{name}: drained");
    q.close().expect("close");

    // Third open: nothing lost or revived.
    let q = open("third open");
    assert!(!q.recovery_report().found_damage(), "{name}");
    assert_eq!(counts(&q.stats()), done, "{name}: third open");
    check_dead_letter(&q, &format!("{name} third open"));
    for (id, result) in [(6, &b"result of 6"[..]), (13, b"result of 13")] {
        assert_eq!(
            q.result(MessageId::from(id)).expect("result"),
            Some(result.to_vec()),
            "{name}: result of {id} at the third open"
        );
    }
    assert!(q.dequeue().expect("dequeue").is_none());
    q.redrive(MessageId::from(4))
        .expect("redrive the v1 dead letter");
    let d = take(&q, &format!("{name} redriven"));
    assert_eq!(
        Msg::from(&d),
        msg(4, 9, 1, b"poison", 5),
        "{name}: redriven"
    );
    q.ack(d.receipt).expect("ack 4");
    q.close().expect("close");
}

#[test]
fn closed_v1_directory_is_served_and_upgraded() {
    serves_fixture("v1-closed", true);
}

#[test]
fn crashed_v1_directory_is_replayed_served_and_upgraded() {
    serves_fixture("v1-crashed", false);
}

/// Default options and the system clock: the fixture's delay ended long
/// ago, so all ten live messages are ready at once, in order.
#[test]
fn v1_directories_open_with_default_options() {
    for name in ["v1-closed", "v1-crashed"] {
        let dir = copy_fixture(name);
        let q = Queue::open(dir.path()).unwrap_or_else(|e| panic!("{name}: open: {e}"));
        let s = q.stats();
        assert_eq!(
            (s.ready_per_lane.clone(), s.delayed, s.dead, s.acked_total),
            (lanes(&[(9, 3), (5, 4), (0, 3)]), 0, 1, 3),
            "{name}: {s:?}"
        );
        check_dead_letter(&q, name);
        let mut expected = fixture_ready();
        expected.insert(6, fixture_delayed());
        let got: Vec<Msg> = files::drain(&q).iter().map(Msg::from).collect();
        assert_eq!(got, expected, "{name}");
        let id = q.enqueue(b"after", 3).expect("enqueue");
        assert_eq!(u64::from(id), FIRST_NEW_ID, "{name}");
        q.close().expect("close");
    }
}

/// Set the version field of `name`'s header (a segment) in `place` to 3,
/// with a valid checksum.
fn make_version_3(place: &Place, name: &str) {
    let bytes = files::read_file(place, name);
    let h = FileHeader::decode(FileKind::Segment, &bytes).expect("segment header");
    let v3 = FileHeader {
        version: 3,
        ..FileHeader::new(FileKind::Segment, h.id, h.created_ms)
    };
    files::tamper(place, name, 0, &v3.encode());
}

fn assert_refused_as_version_3(place: &Place, name: &str, ctx: &str) {
    let before = files::snapshot(place);
    let err = place
        .open(options(&ManualClock::new(Timestamp(OPEN_AT))))
        .expect_err("a version 3 segment must be refused");
    match err {
        Error::UnsupportedVersion {
            file,
            found,
            supported,
        } => {
            assert_eq!(file, name, "{ctx}");
            assert_eq!((found, supported), (3, 2), "{ctx}");
        }
        other => panic!("{ctx}: expected UnsupportedVersion, got {other:?}"),
    }
    files::assert_same_files(&before, &files::snapshot(place), ctx);
}

/// A version 2 directory with a segment of a newer version is refused,
/// naming the file, and left untouched.
#[test]
fn newer_segment_version_is_refused() {
    let place = Place::disk();
    let clock = ManualClock::new(Timestamp(OPEN_AT));
    let q = place.open(options(&clock)).expect("open new");
    q.enqueue(b"one", 0).expect("enqueue");
    q.enqueue(b"two", 5).expect("enqueue");
    q.close().expect("close");
    let seg = files::newest(&place, "segment-");
    make_version_3(&place, &seg);
    assert_refused_as_version_3(&place, &seg, "version 2 directory");

    // The same for a version 1 directory (the fixture's only segment).
    let dir = copy_fixture("v1-closed");
    let place = Place::Disk(dir);
    let seg = "segment-0000000001.seg";
    make_version_3(&place, seg);
    assert_refused_as_version_3(&place, seg, "version 1 directory");
}

/// A `max_message_size` below a message a version-1 directory holds (its
/// 300-byte payload) is refused, although version-1 checkpoints did not
/// record the largest payload; nothing in the directory changes.
#[test]
fn a_max_message_size_below_a_v1_message_is_refused() {
    for name in ["v1-closed", "v1-crashed"] {
        let dir = copy_fixture(name);
        let place = Place::Disk(dir);
        let before = files::snapshot(&place);
        match place.open(QueueOptions::new().max_message_size(299)) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("300"), "{name}: {why}"),
            other => panic!("{name}: {other:?}"),
        }
        files::assert_same_files(&before, &files::snapshot(&place), name);
        let q = place
            .open(QueueOptions::new().max_message_size(300))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = files::drain(&q);
        assert!(got.iter().any(|d| d.payload == binary_payload()), "{name}");
    }
}

/// Retention reaches messages a version-1 directory holds (written in
/// 2023, so long past an hour on the system clock), whether they come from
/// a version-1 checkpoint or a replay; the dead letter stays (no
/// dead-letter retention).
#[test]
fn retention_removes_v1_messages() {
    for name in ["v1-closed", "v1-crashed"] {
        let dir = copy_fixture(name);
        let q = QueueOptions::new()
            .retention(Duration::from_secs(3600))
            .open(dir.path())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        common::eventually(&q, name, |s| s.expired_total >= 10);
        let s = q.stats();
        assert_eq!(
            (s.expired_total, s.ready, s.delayed, s.dead),
            (10, 0, 0, 1),
            "{name}"
        );
        assert!(q.dequeue().unwrap().is_none(), "{name}");
    }
}
