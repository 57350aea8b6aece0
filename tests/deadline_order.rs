//! Deadlines: within a lane, messages with a deadline leave earliest
//! deadline first, ahead of the lane's messages without one; lanes keep
//! their priority order; a message whose deadline passes before delivery
//! becomes a dead letter ("deadline missed") without anyone asking, and the
//! order and deadlines survive a reopen (from a checkpoint or by replay).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::files::crash_image;
use common::{both, eventually, small, Place};
use lanelog::{
    DequeueOptions, EnqueueOptions, Error, ManualClock, MessageId, QueueOptions, Scheduling,
    Timestamp,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn clocked(clock: &Arc<ManualClock>) -> QueueOptions {
    small().clock(clock.clone())
}

fn due(secs: u64) -> EnqueueOptions {
    EnqueueOptions::new().deadline(T0.plus(Duration::from_secs(secs)))
}

/// Payloads of every ready message, in delivery order (leased, not acked).
fn order(q: &lanelog::Queue) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(d) = q.dequeue().unwrap() {
        out.push(d.payload);
    }
    out
}

#[test]
fn earliest_deadline_first_within_a_lane_and_lanes_keep_priority() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        q.enqueue(b"p0 plain 1", 0).unwrap();
        q.enqueue_with(b"p0 due 300", &due(300)).unwrap();
        q.enqueue(b"p0 plain 2", 0).unwrap();
        q.enqueue_with(b"p0 due 100", &due(100)).unwrap();
        q.enqueue_with(b"p0 due 100 later id", &due(100)).unwrap();
        q.enqueue_with(b"p9 due 500", &due(500).priority(9))
            .unwrap();
        q.enqueue(b"p9 plain", 9).unwrap();
        let batch = [
            (&b"p5 due 200"[..], due(200).priority(5)),
            (&b"p5 plain"[..], EnqueueOptions::new().priority(5)),
            (&b"p5 due 50"[..], due(50).priority(5)),
        ];
        q.enqueue_batch_with(&batch).unwrap();
        let want: Vec<&[u8]> = vec![
            b"p9 due 500",
            b"p9 plain",
            b"p5 due 50",
            b"p5 due 200",
            b"p5 plain",
            b"p0 due 100",
            b"p0 due 100 later id",
            b"p0 due 300",
            b"p0 plain 1",
            b"p0 plain 2",
        ];
        assert_eq!(order(&q), want, "{}", place.name());
    });
}

#[test]
fn a_message_that_comes_back_keeps_its_deadline() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        q.enqueue(b"plain", 0).unwrap();
        q.enqueue_with(b"due", &due(100)).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.payload, b"due");
        q.nack(d.receipt, Duration::ZERO).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!((d.payload.as_slice(), d.attempt), (&b"due"[..], 2));
        // A lease that expires brings it back ahead of the plain one too.
        clock.advance(Duration::from_secs(31));
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!((d.payload.as_slice(), d.attempt), (&b"due"[..], 3));
    });
}

#[test]
fn a_missed_deadline_dead_letters_without_a_consumer() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let late = q.enqueue_with(b"late", &due(10).priority(3)).unwrap();
        let ok = q.enqueue_with(b"ok", &due(100).priority(3)).unwrap();
        // Delayed past its deadline's start: checked once it matures.
        let delayed = q
            .enqueue_with(
                b"delayed",
                &due(20).delay(Duration::from_secs(5)).priority(3),
            )
            .unwrap();
        q.enqueue(b"plain", 3).unwrap();
        clock.advance(Duration::from_secs(30));
        // Nobody dequeues: the background tender dead-letters both.
        eventually(&q, "two deadlines missed", |s| s.deadline_missed_total == 2);
        let s = q.stats();
        assert_eq!((s.dead, s.ready, s.delayed), (2, 2, 0), "{s:?}");
        let dead = q.dead_letters().unwrap();
        let ids: Vec<MessageId> = dead.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![late, delayed]);
        for d in &dead {
            assert_eq!(d.reason, "deadline missed");
            assert_eq!(d.attempts, 0, "never delivered");
            assert_eq!(d.priority, 3);
        }
        let got = order(&q);
        assert_eq!(got, vec![b"ok".to_vec(), b"plain".to_vec()]);
        let _ = ok;
        // A redriven message is served as one without a deadline.
        q.redrive(late).unwrap();
        assert_eq!(q.dequeue().unwrap().unwrap().id, late);
        drop(q);
        let q = place.open(clocked(&clock)).unwrap();
        assert_eq!(q.stats().deadline_missed_total, 2, "kept across reopen");
    });
}

#[test]
fn a_deadline_that_passes_between_looks_is_never_delivered() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let id = q.enqueue_with(b"late", &due(1)).unwrap();
        clock.advance(Duration::from_secs(2));
        // Whether the tender ran first or not, dequeue never hands it out.
        assert!(q.dequeue().unwrap().is_none());
        assert_eq!(q.dead_letters().unwrap()[0].id, id);
        assert_eq!(q.stats().deadline_missed_total, 1);
    });
}

#[test]
fn deadline_order_survives_checkpoint_and_replay() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        q.enqueue(b"plain", 1).unwrap();
        q.enqueue_with(b"due 300", &due(300).priority(1)).unwrap();
        q.enqueue_with(b"due 200", &due(200).priority(1)).unwrap();
        // Replay: a crash image, no checkpoint.
        let img = crash_image(place);
        drop(q);
        let want = vec![b"due 200".to_vec(), b"due 300".to_vec(), b"plain".to_vec()];
        let replayed = img.open(clocked(&clock)).unwrap();
        assert!(replayed.recovery_report().checkpoint.is_none());
        assert_eq!(order(&replayed), want, "{} replay", place.name());
        drop(replayed);
        // Checkpoint: a clean close, then open.
        let q = place.open(clocked(&clock)).unwrap();
        q.close().unwrap();
        let q = place.open(clocked(&clock)).unwrap();
        assert!(q.recovery_report().checkpoint.is_some());
        assert_eq!(order(&q), want, "{} checkpoint", place.name());
        drop(q);
        // And the deadline itself survived: past it, they are dead letters.
        clock.advance(Duration::from_secs(250));
        let q = place.open(clocked(&clock)).unwrap();
        assert!(q
            .dequeue_with(&DequeueOptions::new().max(10))
            .unwrap()
            .iter()
            .all(|d| d.payload != b"due 200"));
        eventually(&q, "due 200 missed", |s| s.deadline_missed_total == 1);
    });
}

#[test]
fn weighted_mode_serves_deadlines_first_within_each_lane() {
    let place = Place::memory();
    let clock = Arc::new(ManualClock::new(T0));
    let q = place
        .open(clocked(&clock).scheduling(Scheduling::Weighted))
        .unwrap();
    for i in 0..20u64 {
        q.enqueue(format!("low plain {i}").as_bytes(), 0).unwrap();
        q.enqueue(format!("high plain {i}").as_bytes(), 9).unwrap();
    }
    q.enqueue_with(b"low due", &due(60)).unwrap();
    let got = order(&q);
    // The low lane still gets its share, and its first message out is the
    // one with a deadline.
    let first_low = got
        .iter()
        .find(|p| p.starts_with(b"low"))
        .expect("the low lane is served");
    assert_eq!(first_low, b"low due");
    assert_eq!(got.len(), 41);
}

#[test]
fn bad_deadlines_are_refused_and_nothing_is_written() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let before = common::files::snapshot(place);
        let past = EnqueueOptions::new().deadline(Timestamp(T0.0 - 1));
        let now = EnqueueOptions::new().deadline(T0);
        let inside_delay = EnqueueOptions::new()
            .delay(Duration::from_secs(60))
            .deadline(T0.plus(Duration::from_secs(30)));
        for (what, opts) in [("past", &past), ("now", &now), ("delay", &inside_delay)] {
            match q.enqueue_with(b"x", opts) {
                Err(Error::InvalidArgument(why)) => assert!(why.contains("deadline"), "{why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        // One bad message fails its whole batch.
        let batch = [(&b"fine"[..], due(60)), (&b"bad"[..], past.clone())];
        assert!(matches!(
            q.enqueue_batch_with(&batch),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(q.stats().ready, 0);
        common::files::assert_same_files(&before, &common::files::snapshot(place), place.name());
    });
}
