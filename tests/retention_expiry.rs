//! Retention: messages (ready, delayed, in flight) and stored results older
//! than `retention` are removed, dead letters older than
//! `dead_letter_retention` are purged; each removal is journaled, counted in
//! `stats()`, survives a reopen, and frees space as an ack does, whether or
//! not anyone reads the queue.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::files::crash_image;
use common::{both, eventually, small};
use lanelog::{Error, ManualClock, QueueOptions, Timestamp};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const HOUR: Duration = Duration::from_secs(3600);

fn opts(clock: &Arc<ManualClock>) -> QueueOptions {
    small()
        .clock(clock.clone())
        .retention(HOUR)
        .dead_letter_retention(2 * HOUR)
}

#[test]
fn old_messages_and_results_expire_in_every_state() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(opts(&clock)).unwrap();
        let ready = q.enqueue(b"ready", 0).unwrap();
        q.enqueue_delayed(b"delayed", 0, 10 * HOUR).unwrap();
        q.enqueue(b"leased", 1).unwrap();
        q.enqueue(b"completed", 2).unwrap();
        q.enqueue(b"dead", 3).unwrap();
        let done = q.dequeue().unwrap().unwrap();
        assert_eq!(done.payload, b"dead");
        q.dead_letter(done.receipt, "bad input").unwrap();
        let c = q.dequeue().unwrap().unwrap();
        q.complete(c.receipt, b"the result").unwrap();
        let leased = q.dequeue_with(&lanelog::DequeueOptions::new().visibility(20 * HOUR));
        assert_eq!(leased.unwrap()[0].payload, b"leased");
        // Younger than retention: all kept.
        clock.advance(HOUR / 2);
        let fresh = q.enqueue(b"fresh", 0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.stats().expired_total, 0);
        // Past retention (plus its granularity, a 64th): every message and
        // the stored result from before are gone, the dead letter stays.
        clock.advance(HOUR / 2 + HOUR / 32);
        eventually(&q, "four removed", |s| s.expired_total == 4);
        let s = q.stats();
        assert_eq!(
            (s.ready, s.delayed, s.in_flight, s.results, s.dead),
            (1, 0, 0, 0, 1),
            "{} {s:?}",
            place.name()
        );
        assert_eq!(q.result(c.id).unwrap(), None);
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, fresh);
        q.ack(d.receipt).unwrap();
        assert!(q.dequeue().unwrap().is_none());
        let _ = ready;
        // The dead letter goes after its own retention, counted apart.
        clock.advance(2 * HOUR);
        eventually(&q, "dead letter purged", |s| s.dead_expired_total == 1);
        assert!(q.dead_letters().unwrap().is_empty());
        let s = q.stats();
        drop(q);
        let q = place.open(opts(&clock)).unwrap();
        let again = q.stats();
        assert_eq!(
            (
                again.expired_total,
                again.dead_expired_total,
                again.ready,
                again.dead
            ),
            (s.expired_total, s.dead_expired_total, 0, 0),
            "counted once, and nothing comes back after a reopen"
        );
    });
}

#[test]
fn expiry_survives_a_crash_and_nothing_expired_comes_back() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(opts(&clock)).unwrap();
        for i in 0..50u64 {
            q.enqueue(&common::files::payload(i, 64), 0).unwrap();
        }
        clock.advance(2 * HOUR);
        eventually(&q, "all expired", |s| s.expired_total == 50);
        q.sync().unwrap();
        let img = crash_image(place);
        drop(q);
        let q = img.open(opts(&clock)).unwrap();
        let s = q.stats();
        assert_eq!(
            (s.ready, s.expired_total),
            (0, 50),
            "{} {s:?}",
            place.name()
        );
        assert!(q.dequeue().unwrap().is_none());
    });
}

#[test]
fn a_queue_nobody_reads_shrinks() {
    let clock = Arc::new(ManualClock::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let q = opts(&clock)
        .segment_size(1 << 20)
        .prepare_ahead(false)
        .open(dir.path())
        .unwrap();
    let payload = vec![7u8; 4000];
    for _ in 0..1000 {
        q.enqueue(&payload, 0).unwrap();
    }
    let full = q.stats();
    assert!(full.segments >= 4, "{full:?}");
    clock.advance(2 * HOUR);
    eventually(&q, "segments reclaimed", |s| {
        s.expired_total == 1000 && s.segments == 1
    });
    let s = q.stats();
    assert!(
        s.bytes_on_disk < full.bytes_on_disk / 3,
        "{} -> {}",
        full.bytes_on_disk,
        s.bytes_on_disk
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn zero_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        QueueOptions::new().retention(Duration::ZERO),
        QueueOptions::new().dead_letter_retention(Duration::ZERO),
        QueueOptions::new().dedup_window(Duration::ZERO),
    ] {
        match opts.open(dir.path()) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("above zero"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing made"
    );
}

/// Without retention, the marks that map times to ids follow the live
/// messages, not history: a long-running queue's checkpoint stays small.
#[test]
fn retention_marks_do_not_grow_with_history() {
    let clock = Arc::new(ManualClock::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let plain = || small().clock(clock.clone());
    let q = plain().open(dir.path()).unwrap();
    // A thousand minutes of traffic, each message acked at once.
    for _ in 0..1000 {
        q.enqueue(b"x", 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        q.ack(d.receipt).unwrap();
        clock.advance(Duration::from_secs(61));
    }
    q.close().unwrap();
    let checkpoint: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ckp"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // The fixed part and a mark or two, not one mark per minute (16 KB).
    assert!(checkpoint < 1024, "checkpoint of {checkpoint} bytes");
}
