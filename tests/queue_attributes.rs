//! Queue attributes live in the directory: every opener uses the stored
//! segment size, max message size, visibility timeout, max deliveries,
//! retention, dedup window and defaults unless it names its own; an
//! override replaces the stored value, and one stored data cannot honour is
//! refused without changing anything.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::files::{assert_same_files, file_names, snapshot};
use common::{both, small};
use lanelog::{DequeueOptions, Error, ManualClock, QueueOptions, Timestamp};

const T0: Timestamp = Timestamp(1_700_000_000_000);

#[test]
fn a_reopen_without_options_uses_the_stored_ones() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place
            .open(
                small()
                    .clock(clock.clone())
                    .max_message_size(500)
                    .visibility_timeout(Duration::from_secs(7))
                    .max_deliveries(2)
                    .default_delay(Duration::from_secs(60)),
            )
            .unwrap();
        drop(q);
        assert!(file_names(place).contains(&"attributes.lla".to_string()));
        // Only the clock: everything else comes from the directory.
        let q = place
            .open(QueueOptions::new().clock(clock.clone()))
            .unwrap();
        assert!(matches!(
            q.enqueue(&[0u8; 501], 0),
            Err(Error::TooLarge { max: 500, .. })
        ));
        // The default delay applies to an enqueue that names none.
        let id = q.enqueue(b"later", 0).unwrap();
        assert!(q.dequeue().unwrap().is_none());
        assert_eq!(q.stats().delayed, 1);
        clock.advance(Duration::from_secs(60));
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, id);
        // The stored visibility timeout and max deliveries.
        clock.advance(Duration::from_secs(8));
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.attempt, 2);
        clock.advance(Duration::from_secs(8));
        assert!(q.dequeue().unwrap().is_none(), "dead after two deliveries");
        assert_eq!(q.stats().dead, 1);
        drop(q);
        // A named option overrides and is stored in turn.
        let q = place
            .open(small().clock(clock.clone()).max_message_size(800))
            .unwrap();
        q.enqueue(&[0u8; 700], 0).unwrap();
        drop(q);
        let q = place
            .open(QueueOptions::new().clock(clock.clone()))
            .unwrap();
        assert!(matches!(
            q.enqueue(&[0u8; 801], 0),
            Err(Error::TooLarge { max: 800, .. })
        ));
    });
}

#[test]
fn a_max_message_size_below_what_is_stored_is_refused() {
    both(|place| {
        let q = place.open(small()).unwrap();
        q.enqueue(&[9u8; 3000], 0).unwrap();
        drop(q);
        let before = snapshot(place);
        match place.open(small().max_message_size(2999)) {
            Err(Error::InvalidArgument(why)) => {
                assert!(why.contains("3000"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_same_files(&before, &snapshot(place), place.name());
        // At the stored size, it opens.
        let q = place.open(small().max_message_size(3000)).unwrap();
        assert_eq!(q.dequeue().unwrap().unwrap().payload, vec![9u8; 3000]);
    });
}

#[test]
fn default_wait_applies_to_dequeue_with_only() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueueOptions::new()
        .default_wait(Duration::from_secs(2))
        .open(dir.path())
        .unwrap();
    // The shorthands say how long they wait: never.
    let start = Instant::now();
    assert!(q.dequeue().unwrap().is_none());
    assert!(q.dequeue_up_to(4).unwrap().is_empty());
    // (Far below the 2 s wait, however slow the machine.)
    assert!(start.elapsed() < Duration::from_secs(1));
    // Options without a wait take the queue's: an enqueue from another
    // thread during the wait is delivered.
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        q2.enqueue(b"late", 0).unwrap();
    });
    let got = q.dequeue_with(&DequeueOptions::new()).unwrap();
    t.join().unwrap();
    assert_eq!(got.len(), 1);
    // And with nothing coming, it waits the default wait.
    let start = Instant::now();
    assert!(q.dequeue_with(&DequeueOptions::new()).unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_secs(2));
}

/// A queue that never named its max message size keeps the default, which
/// follows the segment size: a reopen with smaller segments is not refused
/// for the limit the larger ones allowed.
#[test]
fn an_unnamed_max_message_size_follows_the_segment_size() {
    both(|place| {
        let q = place.open(QueueOptions::new()).unwrap();
        q.enqueue(b"small", 0).unwrap();
        drop(q);
        let q = place
            .open(QueueOptions::new().segment_size(1 << 20))
            .unwrap();
        let room = (1 << 20) - 32 - 40;
        assert!(matches!(
            q.enqueue(&vec![0u8; room + 1], 0),
            Err(Error::TooLarge { max, .. }) if max == room
        ));
        assert_eq!(q.dequeue().unwrap().unwrap().payload, b"small");
        drop(q);
        // A named one that does not fit the segments asked for is the
        // caller's error.
        match place.open(
            QueueOptions::new()
                .segment_size(1 << 20)
                .max_message_size(2 << 20),
        ) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("max_message_size"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}
