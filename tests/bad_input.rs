//! Goal: input the queue refuses (oversized payloads, bad receipts, options out of range, unusable directories, unknown format versions, a second owner) gets a clear error and changes nothing, in memory and on disk.
//! Method: snapshot stats and every file byte before the refused call and compare after; cross-process locking is checked with flock(1) and by re-running this test binary as a child.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::files::{assert_same_files, crash_image, newest, read_file, records, snapshot, tamper};
use common::{both, Place};
use lanelog::storage::{MemoryStorage, Storage};
use lanelog::{
    Durability, Error, ManualClock, Queue, QueueOptions, Timestamp, MAX_DELAY, MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
};

/// Stats and every file's bytes: what "nothing changed" compares.
struct State(lanelog::Stats, BTreeMap<String, Vec<u8>>);

fn state(place: &Place, q: &Queue) -> State {
    State(q.stats(), snapshot(place))
}

fn same(a: &State, b: &State, ctx: &str) {
    assert_eq!(a.0, b.0, "{ctx}: stats");
    assert_same_files(&a.1, &b.1, ctx);
}

/// Options with a clock that stands still, so stats compare exactly.
fn small() -> QueueOptions {
    common::small().clock(Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))))
}

#[test]
fn oversized_payload_is_refused_and_nothing_written() {
    both(|place| {
        let q = place.open(small().max_message_size(1000)).unwrap();
        q.enqueue(b"first", 0).unwrap();
        let before = state(place, &q);
        let big = vec![1u8; 1001];
        match q.enqueue(&big, 0) {
            Err(Error::TooLarge { size, max }) => assert_eq!((size, max), (1001, 1000)),
            other => panic!("{}: {other:?}", place.name()),
        }
        let ok = [5u8; 10];
        let batch: Vec<(&[u8], u8)> = vec![(&ok, 1), (&big, 1), (&ok, 1)];
        assert!(matches!(
            q.enqueue_batch(&batch),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            q.enqueue_delayed(&big, 0, Duration::from_secs(1)),
            Err(Error::TooLarge { .. })
        ));
        same(&before, &state(place, &q), place.name());
        // Exactly the limit is fine.
        q.enqueue(&vec![2u8; 1000], 0).unwrap();
        assert_eq!(q.stats().ready, 2);
        drop(q);

        // Reopened without a limit, the stored one holds.
        let q = place.open(small()).unwrap();
        assert!(matches!(
            q.enqueue(&big, 0),
            Err(Error::TooLarge { max: 1000, .. })
        ));
        drop(q);
    });
    both(|place| {
        // Without an explicit limit, the default shrinks to fit a 1 MiB
        // segment with its headers.
        let q = place.open(small()).unwrap();
        q.enqueue(b"first", 0).unwrap();
        let room = (MIN_SEGMENT_SIZE - 32 - 40) as usize;
        let before = state(place, &q);
        assert!(matches!(
            q.enqueue(&vec![3u8; room + 1], 0),
            Err(Error::TooLarge { max, .. }) if max == room
        ));
        same(&before, &state(place, &q), place.name());
        q.enqueue(&vec![3u8; room], 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.payload, b"first", "oldest first");
    });
}

#[test]
fn misuse_of_calls_is_invalid_argument() {
    both(|place| {
        let q = place.open(small()).unwrap();
        assert!(matches!(q.dequeue_up_to(0), Err(Error::InvalidArgument(_))));
        let over = MAX_DELAY + Duration::from_millis(1);
        let before = state(place, &q);
        assert!(matches!(
            q.enqueue_delayed(b"x", 0, over),
            Err(Error::InvalidArgument(_))
        ));
        same(&before, &state(place, &q), place.name());
        q.enqueue(b"x", 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        let before = state(place, &q);
        assert!(matches!(
            q.nack(d.receipt, over),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            q.extend_lease(d.receipt, Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
        same(&before, &state(place, &q), place.name());
        // The receipt is still current after the refused calls.
        q.ack(d.receipt).unwrap();
        assert!(q.enqueue_batch::<&[u8]>(&[]).unwrap().is_empty());
        q.ack_batch(&[]).unwrap();
    });
}

#[test]
fn receipt_from_another_queue_is_refused() {
    both(|place| {
        let q = place.open(small()).unwrap();
        q.enqueue(b"mine", 0).unwrap();
        let mine = q.dequeue().unwrap().unwrap();
        let other = Place::memory();
        let oq = other.open(small()).unwrap();
        for i in 0..5u8 {
            oq.enqueue(&[i], 0).unwrap();
        }
        let theirs = oq.dequeue_up_to(5).unwrap();
        assert_eq!(theirs[0].id, mine.id, "ids collide across queues");

        let before = state(place, &q);
        // An id this queue never handed out.
        assert!(
            matches!(q.ack(theirs[4].receipt), Err(Error::Unknown)),
            "{}",
            place.name()
        );
        assert!(matches!(
            q.nack(theirs[4].receipt, Duration::ZERO),
            Err(Error::Unknown)
        ));
        // The same id as our in-flight message, another delivery.
        let r = q.ack(theirs[0].receipt);
        assert!(
            matches!(r, Err(Error::StaleReceipt | Error::Unknown)),
            "{r:?}"
        );
        assert!(q.ack_batch(&[mine.receipt, theirs[4].receipt]).is_err());
        same(&before, &state(place, &q), place.name());
        assert_eq!(q.stats().in_flight, 1);
        q.ack(mine.receipt).unwrap();
    });
}

#[test]
fn stale_and_double_settlement_change_nothing() {
    both(|place| {
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let opts = small()
            .visibility_timeout(Duration::from_secs(30))
            .clock(Arc::new(clock.clone()));
        let q = place.open(opts).unwrap();
        q.enqueue(b"a", 0).unwrap();
        let old = q.dequeue().unwrap().unwrap();
        clock.advance(Duration::from_secs(30));
        let new = q.dequeue().unwrap().unwrap();
        assert_eq!((new.id, new.attempt), (old.id, 2));
        let before = state(place, &q);
        assert!(matches!(q.ack(old.receipt), Err(Error::StaleReceipt)));
        assert!(matches!(
            q.dead_letter(old.receipt, "late"),
            Err(Error::StaleReceipt)
        ));
        same(
            &before,
            &state(place, &q),
            &format!("{}: stale", place.name()),
        );

        q.ack(new.receipt).unwrap();
        let before = state(place, &q);
        assert!(matches!(q.ack(new.receipt), Err(Error::StaleReceipt)));
        assert!(matches!(
            q.nack(new.receipt, Duration::ZERO),
            Err(Error::StaleReceipt)
        ));
        same(
            &before,
            &state(place, &q),
            &format!("{}: double ack", place.name()),
        );
        assert_eq!(q.stats().acked_total, 1);
    });
}

#[test]
fn ack_batch_with_one_bad_receipt_acks_none() {
    both(|place| {
        let q = place.open(small()).unwrap();
        for i in 0..4u8 {
            q.enqueue(&[i], 0).unwrap();
        }
        let ds = q.dequeue_up_to(3).unwrap();
        let spare = q.dequeue().unwrap().unwrap();
        q.ack(spare.receipt).unwrap();
        let before = state(place, &q);
        let r: Vec<_> = ds.iter().map(|d| d.receipt).collect();
        for bad in [
            vec![r[0], spare.receipt, r[2]],
            vec![r[0], r[1], r[2], r[1]],
            vec![spare.receipt],
        ] {
            assert!(
                matches!(q.ack_batch(&bad), Err(Error::StaleReceipt)),
                "{}",
                place.name()
            );
            same(
                &before,
                &state(place, &q),
                &format!("{}: {bad:?}", place.name()),
            );
        }
        assert_eq!(q.stats().in_flight, 3);
        q.ack_batch(&r).unwrap();
        let s = q.stats();
        assert_eq!((s.in_flight, s.acked_total), (0, 4));
    });
}

/// Options that must be refused before anything is created.
fn bad_options() -> Vec<(&'static str, QueueOptions)> {
    vec![
        ("segment_size 1000", small().segment_size(1000)),
        (
            "segment_size below min",
            small().segment_size(MIN_SEGMENT_SIZE - 1),
        ),
        (
            "segment_size above max",
            small().segment_size(MAX_SEGMENT_SIZE + 1),
        ),
        ("journal_file_size 10", small().journal_file_size(10)),
        (
            "max_message_size bigger than a segment",
            small().max_message_size(2 << 20),
        ),
        (
            "max_message_size one over the room",
            small().max_message_size((MIN_SEGMENT_SIZE - 72 + 1) as usize),
        ),
        (
            "zero visibility timeout",
            small().visibility_timeout(Duration::ZERO),
        ),
        (
            "Periodic(0)",
            small().durability(Durability::Periodic(Duration::ZERO)),
        ),
    ]
}

#[test]
fn options_out_of_range_are_refused_and_nothing_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    for (what, opts) in bad_options() {
        let err = opts.clone().open(&path).expect_err(what);
        assert!(matches!(err, Error::InvalidArgument(_)), "{what}: {err:?}");
        assert!(!path.exists(), "{what}: directory created");
        let m = MemoryStorage::new();
        let err = opts
            .open_storage(Arc::new(m.clone()) as Arc<dyn Storage>)
            .expect_err(what);
        assert!(matches!(err, Error::InvalidArgument(_)), "{what}: {err:?}");
        assert!(m.file_names().is_empty(), "{what}: files created");
    }
    // The limits themselves are accepted.
    let ok = small()
        .segment_size(MIN_SEGMENT_SIZE)
        .max_message_size((MIN_SEGMENT_SIZE - 72) as usize)
        .durability(Durability::Periodic(Duration::from_millis(1)));
    ok.open(&path).unwrap().close().unwrap();
}

#[test]
fn missing_parent_directory_is_an_error_and_nothing_created() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("missing");
    let err = Queue::open(parent.join("q")).expect_err("missing parent");
    assert!(matches!(err, Error::BadDirectory { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&parent.display().to_string()),
        "the message names the parent: {err}"
    );
    assert!(!parent.exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_file_is_not_a_queue_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, b"not a queue").unwrap();
    let err = Queue::open(&file).expect_err("a file");
    assert!(matches!(err, Error::BadDirectory { .. }), "{err:?}");
    assert_eq!(fs::read(&file).unwrap(), b"not a queue");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Whether the current user can write into a directory whose mode forbids
/// it (root can).
fn writes_despite_mode(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let wrote = fs::write(&probe, b"x").is_ok();
    let _ = fs::remove_file(&probe);
    wrote
}

#[test]
fn read_only_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    fs::create_dir(&q).unwrap();
    let parent = dir.path().join("ro-parent");
    fs::create_dir(&parent).unwrap();
    for d in [&q, &parent] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o555)).unwrap();
    }
    if writes_despite_mode(&q) {
        eprintln!("skipped: this user writes into read-only directories (root?)");
    } else {
        // An existing read-only queue directory.
        let err = Queue::open(&q).expect_err("read-only dir");
        assert!(
            matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
                || matches!(err, Error::BadDirectory { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read_dir(&q).unwrap().count(), 0, "no files created");
        // A queue directory to create inside a read-only parent.
        let err = Queue::open(parent.join("q")).expect_err("read-only parent");
        assert!(matches!(err, Error::BadDirectory { .. }), "{err:?}");
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0);
    }
    for d in [&q, &parent] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A closed queue with a segment, a journal file and a checkpoint.
fn closed_queue(place: &Place) {
    let q = place.open(small()).unwrap();
    for i in 0..10u8 {
        q.enqueue(&[i; 100], i % 3).unwrap();
    }
    let d = q.dequeue().unwrap().unwrap();
    q.ack(d.receipt).unwrap();
    q.close().unwrap();
}

#[test]
fn unknown_format_version_is_refused_untouched() {
    for prefix in ["segment-", "journal-", "checkpoint-"] {
        both(|place| {
            closed_queue(place);
            let name = newest(place, prefix);
            tamper(place, &name, 8, &99u32.to_le_bytes());
            let before = snapshot(place);
            match place.open(small()) {
                Err(Error::UnsupportedVersion {
                    file,
                    found,
                    supported,
                }) => {
                    assert_eq!(file, name, "{}", place.name());
                    assert_eq!((found, supported), (99, lanelog::codec::FORMAT_VERSION));
                }
                other => panic!("{} {prefix}: {other:?}", place.name()),
            }
            assert_same_files(
                &before,
                &snapshot(place),
                &format!("{} {prefix}", place.name()),
            );
            // Put the version back: the queue is whole again.
            tamper(
                place,
                &name,
                8,
                &lanelog::codec::FORMAT_VERSION.to_le_bytes(),
            );
            let q = place.open(small()).unwrap();
            assert_eq!(q.stats().ready, 9, "{} {prefix}", place.name());
        });
    }
}

/// Recovery judges every file before it changes any: a torn tail in one
/// file is not cut when another file has an unknown version.
#[test]
fn refused_open_does_not_cut_torn_tails_first() {
    both(|place| {
        let q = place.open(small().durability(Durability::None)).unwrap();
        for i in 0..5u8 {
            q.enqueue(&[i + 1; 64], 0).unwrap();
        }
        let img = crash_image(place);
        drop(q);
        let seg = newest(&img, "segment-");
        let (off, len, _) = *records(&read_file(&img, &seg)).last().unwrap();
        tamper(
            &img,
            &seg,
            (off + len / 2) as u64,
            &vec![0u8; len - len / 2],
        );
        let jnl = newest(&img, "journal-");
        tamper(&img, &jnl, 8, &7u32.to_le_bytes());
        let before = snapshot(&img);
        let err = img.open(small()).expect_err("unknown version");
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 7, .. }),
            "{err:?}"
        );
        assert_same_files(&before, &snapshot(&img), img.name());
    });
}

#[test]
fn damaged_checkpoint_is_refused_untouched() {
    both(|place| {
        closed_queue(place);
        let name = newest(place, "checkpoint-");
        let len = read_file(place, &name).len();
        common::files::flip(place, &name, len - 10, 0x01);
        let before = snapshot(place);
        let err = place.open(small()).expect_err("damaged checkpoint");
        assert!(
            matches!(&err, Error::Corrupt { file, .. } if *file == name),
            "{}: {err:?}",
            place.name()
        );
        assert_same_files(&before, &snapshot(place), place.name());
    });
}

#[test]
fn second_open_in_this_process_is_locked() {
    both(|place| {
        let q = place.open(small()).unwrap();
        q.enqueue(b"x", 0).unwrap();
        let before = snapshot(place);
        assert!(matches!(place.open(small()), Err(Error::Locked)));
        assert_same_files(&before, &snapshot(place), place.name());
        // The first owner is unaffected; a clone shares its ownership.
        let clone = q.clone();
        assert_eq!(clone.dequeue().unwrap().unwrap().payload, b"x");
        drop(clone);
        q.close().unwrap();
        // Free again at once, even if another test thread forked a child
        // while the lock was held (the drop unlocks before closing).
        place.open(small()).unwrap();
    });
}

#[test]
fn calls_after_close_are_closed() {
    both(|place| {
        let q = place.open(small()).unwrap();
        q.enqueue(b"x", 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        let other = q.clone();
        q.close().unwrap();
        assert!(matches!(other.enqueue(b"y", 0), Err(Error::Closed)));
        assert!(matches!(other.dequeue(), Err(Error::Closed)));
        assert!(matches!(other.ack(d.receipt), Err(Error::Closed)));
        assert!(matches!(other.sync(), Err(Error::Closed)));
        assert!(matches!(other.dead_letters(), Err(Error::Closed)));
        assert!(matches!(other.redrive_all(), Err(Error::Closed)));
        // The directory is free for a new owner even with `other` alive.
        let q = place.open(small()).unwrap();
        assert_eq!(q.stats().ready, 1, "{}", place.name());
    });
}

const CHILD_DIR: &str = "LANELOG_TEST_LOCK_PROBE_DIR";

/// Not a test on its own: when run as a child with `CHILD_DIR` set, try
/// to open that queue and report through the exit code (10 = Locked,
/// 11 = opened, 12 = another error).
#[test]
fn lock_probe_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let code = match Queue::open(&dir) {
        Err(Error::Locked) => 10,
        Ok(q) => {
            q.close().unwrap();
            11
        }
        Err(e) => {
            eprintln!("child: {e}");
            12
        }
    };
    std::process::exit(code);
}

fn probe_from_child(dir: &Path) -> i32 {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_probe_child",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    status.code().expect("child exited")
}

#[test]
fn second_open_from_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(probe_from_child(dir.path()), 10, "child must see Locked");
    q.close().unwrap();
    assert_eq!(probe_from_child(dir.path()), 11, "free after close");
    let q = Queue::open(dir.path()).unwrap();
    assert_eq!(probe_from_child(dir.path()), 10, "locked again");
    drop(q);
    assert_eq!(probe_from_child(dir.path()), 11, "free after drop");
}

#[test]
fn lock_is_a_flock_other_tools_see() {
    let have_flock = Command::new("sh")
        .args(["-c", "command -v flock"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_flock {
        eprintln!("skipped: flock(1) not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(common::files::LOCK_FILE);
    let try_lock = || {
        Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    let q = Queue::open(dir.path()).unwrap();
    assert!(lock.exists());
    assert!(!try_lock(), "flock -n must fail while the queue is open");
    q.close().unwrap();
    assert!(try_lock(), "flock -n must succeed after close");
}
