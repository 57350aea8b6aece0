//! Goal: `Queue::status` names where a message is in every state it can be
//! in (ready in its lane, delayed until a time, in flight on an attempt, a
//! dead letter with its reason, "deadline missed" included, completed, gone
//! after an ack and for an id never enqueued), across a reopen; and
//! `Queue::key_id` finds the id a key was enqueued as, across a reopen,
//! writes nothing, knows no unknown key and forgets a key once its dedup
//! window has passed. Method: one message driven through each state on a
//! `ManualClock`, on disk and in memory, checking `status` (and `key_id`)
//! after every step.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{both, eventually, small, Place};
use lanelog::{
    EnqueueOptions, Error, ManualClock, MessageId, MessageStatus, QueueOptions, Timestamp,
    DEADLINE_MISSED,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn clocked(clock: &Arc<ManualClock>) -> QueueOptions {
    small().clock(clock.clone())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn ready_delayed_and_in_flight_name_their_lane_time_and_attempt() {
    both(|place| {
        let ctx = place.name();
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let ready = q.enqueue(b"ready", 3).unwrap();
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::Ready { priority: 3 },
            "{ctx}"
        );
        let delayed = q
            .enqueue_with(
                b"delayed",
                &EnqueueOptions::new().priority(2).delay(secs(10)),
            )
            .unwrap();
        assert_eq!(
            q.status(delayed).unwrap(),
            MessageStatus::Delayed {
                priority: 2,
                until: T0.plus(secs(10))
            },
            "{ctx}"
        );
        // Leased: in flight on its first delivery.
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, ready, "{ctx}");
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::InFlight {
                priority: 3,
                attempt: 1
            },
            "{ctx}"
        );
        // Nacked at once: ready again; leased again: its second attempt.
        q.nack(d.receipt, Duration::ZERO).unwrap();
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::Ready { priority: 3 },
            "{ctx}"
        );
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!((d.id, d.attempt), (ready, 2), "{ctx}");
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::InFlight {
                priority: 3,
                attempt: 2
            },
            "{ctx}"
        );
        // Nacked with a delay: delayed until then, in its own lane.
        clock.advance(secs(1));
        q.nack(d.receipt, secs(5)).unwrap();
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::Delayed {
                priority: 3,
                until: T0.plus(secs(6))
            },
            "{ctx}"
        );
        // A delay that has passed reads as ready, without a dequeue.
        clock.advance(secs(5));
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::Ready { priority: 3 },
            "{ctx}"
        );
        assert!(
            matches!(q.status(delayed).unwrap(), MessageStatus::Delayed { .. }),
            "{ctx}: not due until T0 + 10 s"
        );
        clock.advance(secs(4));
        assert_eq!(
            q.status(delayed).unwrap(),
            MessageStatus::Ready { priority: 2 },
            "{ctx}"
        );
        // A lease that ended and was given to the next consumer: the new
        // attempt.
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!((d.id, d.attempt), (ready, 3), "{ctx}");
        clock.advance(secs(31));
        let again = q.dequeue().unwrap().unwrap();
        assert_eq!((again.id, again.attempt), (ready, 4), "{ctx}");
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::InFlight {
                priority: 3,
                attempt: 4
            },
            "{ctx}"
        );
    });
}

#[test]
fn dead_letters_completed_and_gone() {
    both(|place| {
        let ctx = place.name();
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let dead = q.enqueue(b"dead", 4).unwrap();
        let done = q.enqueue(b"done", 4).unwrap();
        let acked = q.enqueue(b"acked", 4).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, dead);
        q.dead_letter(d.receipt, "bad input: row 7").unwrap();
        assert_eq!(
            q.status(dead).unwrap(),
            MessageStatus::Dead {
                reason: "bad input: row 7".into()
            },
            "{ctx}"
        );
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, done);
        q.complete(d.receipt, b"the result").unwrap();
        assert_eq!(q.status(done).unwrap(), MessageStatus::Completed, "{ctx}");
        assert_eq!(q.result(done).unwrap().as_deref(), Some(&b"the result"[..]));
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, acked);
        q.ack(d.receipt).unwrap();
        assert_eq!(q.status(acked).unwrap(), MessageStatus::Gone, "{ctx}");
        // Ids never enqueued: past the last one, zero, the largest.
        for never in [u64::from(acked) + 1, u64::from(acked) + 1000, 0, u64::MAX] {
            assert_eq!(
                q.status(MessageId::from(never)).unwrap(),
                MessageStatus::Gone,
                "{ctx}: id {never}"
            );
        }
        // A clean reopen keeps each state (and the dead letter's reason).
        q.close().unwrap();
        let q = place.open(clocked(&clock)).unwrap();
        assert_eq!(
            q.status(dead).unwrap(),
            MessageStatus::Dead {
                reason: "bad input: row 7".into()
            },
            "{ctx}"
        );
        assert_eq!(q.status(done).unwrap(), MessageStatus::Completed, "{ctx}");
        assert_eq!(q.status(acked).unwrap(), MessageStatus::Gone, "{ctx}");
        // Redriven: ready in its lane again; purged: gone.
        q.redrive(dead).unwrap();
        assert_eq!(
            q.status(dead).unwrap(),
            MessageStatus::Ready { priority: 4 },
            "{ctx}"
        );
        let d = q.dequeue().unwrap().unwrap();
        q.dead_letter(d.receipt, "again").unwrap();
        assert_eq!(q.purge_dead_letters().unwrap(), 1);
        assert_eq!(q.status(dead).unwrap(), MessageStatus::Gone, "{ctx}");
    });
}

#[test]
fn a_missed_deadline_reads_as_a_dead_letter_with_its_reason() {
    assert_eq!(DEADLINE_MISSED, "deadline missed");
    both(|place| {
        let ctx = place.name();
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let due = |secs_ahead: u64| {
            EnqueueOptions::new()
                .priority(6)
                .deadline(T0.plus(secs(secs_ahead)))
        };
        let late = q.enqueue_with(b"late", &due(1)).unwrap();
        let on_time = q.enqueue_with(b"on time", &due(100)).unwrap();
        assert_eq!(
            q.status(late).unwrap(),
            MessageStatus::Ready { priority: 6 },
            "{ctx}"
        );
        clock.advance(secs(2));
        // Nobody dequeues: the queue's background thread parks it.
        eventually(&q, "the deadline missed", |s| s.deadline_missed_total == 1);
        assert_eq!(
            q.status(late).unwrap(),
            MessageStatus::Dead {
                reason: DEADLINE_MISSED.into()
            },
            "{ctx}"
        );
        assert_eq!(
            q.status(on_time).unwrap(),
            MessageStatus::Ready { priority: 6 },
            "{ctx}"
        );
        // A deadline that passes while the message is leased does not
        // touch the lease.
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, on_time);
        clock.advance(secs(200));
        assert_eq!(
            q.status(on_time).unwrap(),
            MessageStatus::InFlight {
                priority: 6,
                attempt: 1
            },
            "{ctx}"
        );
        q.ack(d.receipt).unwrap();
        // Kept across a reopen.
        q.close().unwrap();
        let q = place.open(clocked(&clock)).unwrap();
        assert_eq!(
            q.status(late).unwrap(),
            MessageStatus::Dead {
                reason: DEADLINE_MISSED.into()
            },
            "{ctx}"
        );
        assert_eq!(q.status(on_time).unwrap(), MessageStatus::Gone, "{ctx}");
    });
}

#[test]
fn states_after_a_reopen() {
    both(|place| {
        let ctx = place.name();
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        let leased = q.enqueue(b"leased", 1).unwrap();
        let delayed = q
            .enqueue_with(
                b"delayed",
                &EnqueueOptions::new().priority(5).delay(secs(60)),
            )
            .unwrap();
        let ready = q.enqueue(b"ready", 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, leased);
        q.close().unwrap();
        let q = place.open(clocked(&clock)).unwrap();
        // A lease does not outlive its queue: ready again, in its lane.
        assert_eq!(
            q.status(leased).unwrap(),
            MessageStatus::Ready { priority: 1 },
            "{ctx}"
        );
        assert_eq!(
            q.status(delayed).unwrap(),
            MessageStatus::Delayed {
                priority: 5,
                until: T0.plus(secs(60))
            },
            "{ctx}"
        );
        assert_eq!(
            q.status(ready).unwrap(),
            MessageStatus::Ready { priority: 0 },
            "{ctx}"
        );
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!((d.id, d.attempt), (leased, 2), "{ctx}");
        assert_eq!(
            q.status(leased).unwrap(),
            MessageStatus::InFlight {
                priority: 1,
                attempt: 2
            },
            "{ctx}"
        );
    });
}

#[test]
fn status_and_key_id_on_a_closed_queue_are_refused() {
    let place = Place::disk();
    let q = place.open(small()).unwrap();
    let id = q
        .enqueue_with(b"x", &EnqueueOptions::new().key("k"))
        .unwrap();
    let other = q.clone();
    q.close().unwrap();
    assert!(matches!(other.status(id), Err(Error::Closed)));
    assert!(matches!(other.key_id("k"), Err(Error::Closed)));
}

#[test]
fn key_id_finds_the_first_enqueue_of_a_key_and_nothing_else() {
    both(|place| {
        let ctx = place.name();
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(clocked(&clock)).unwrap();
        assert_eq!(q.key_id("order-17").unwrap(), None, "{ctx}");
        let id = q
            .enqueue_with(b"first", &EnqueueOptions::new().key("order-17"))
            .unwrap();
        assert_eq!(q.key_id("order-17").unwrap(), Some(id), "{ctx}");
        assert_eq!(q.key_id(b"order-17").unwrap(), Some(id), "{ctx}: bytes");
        // Unknown keys, prefixes and extensions of a known one: none.
        for unknown in ["order-18", "order-1", "order-170", "ORDER-17", ""] {
            assert_eq!(q.key_id(unknown).unwrap(), None, "{ctx}: {unknown:?}");
        }
        // A second enqueue with the key returns the first id and writes
        // nothing; key_id still names the first.
        let again = q
            .enqueue_with(b"second", &EnqueueOptions::new().key("order-17"))
            .unwrap();
        assert_eq!(again, id, "{ctx}");
        assert_eq!(q.key_id("order-17").unwrap(), Some(id), "{ctx}");
        // Keys of a batch, and a key of the longest length.
        let long = "k".repeat(lanelog::MAX_KEY_BYTES);
        let batch = [
            (&b"a"[..], EnqueueOptions::new().key("batch-a")),
            (&b"b"[..], EnqueueOptions::new().key(&long)),
        ];
        let ids = q.enqueue_batch_with(&batch).unwrap();
        assert_eq!(q.key_id("batch-a").unwrap(), Some(ids[0]), "{ctx}");
        assert_eq!(q.key_id(&long).unwrap(), Some(ids[1]), "{ctx}");
        // key_id writes nothing: asking about a key does not take it.
        let keys = q.stats().keys;
        assert_eq!(q.key_id("asked-only").unwrap(), None, "{ctx}");
        assert_eq!(q.stats().keys, keys, "{ctx}");
        let fresh = q
            .enqueue_with(b"fresh", &EnqueueOptions::new().key("asked-only"))
            .unwrap();
        assert!(fresh > ids[1], "{ctx}: a new message");
        // The key outlives its message: acked, the key still names it.
        while let Some(d) = q.dequeue().unwrap() {
            q.ack(d.receipt).unwrap();
        }
        assert_eq!(q.status(id).unwrap(), MessageStatus::Gone, "{ctx}");
        assert_eq!(q.key_id("order-17").unwrap(), Some(id), "{ctx}");
        // Across a clean reopen.
        q.close().unwrap();
        let q = place.open(clocked(&clock)).unwrap();
        assert_eq!(q.key_id("order-17").unwrap(), Some(id), "{ctx}");
        assert_eq!(q.key_id("batch-a").unwrap(), Some(ids[0]), "{ctx}");
        assert_eq!(q.key_id(&long).unwrap(), Some(ids[1]), "{ctx}");
        assert_eq!(q.key_id("asked-only").unwrap(), Some(fresh), "{ctx}");
        assert_eq!(q.key_id("order-18").unwrap(), None, "{ctx}");
        // Across a process crash (the files as a killed process leaves
        // them).
        let image = common::files::crash_image(place);
        drop(q);
        let q = image.open(clocked(&clock)).unwrap();
        assert_eq!(q.key_id("order-17").unwrap(), Some(id), "{ctx} crash");
        assert_eq!(q.key_id("asked-only").unwrap(), Some(fresh), "{ctx} crash");
    });
}

#[test]
fn key_id_forgets_a_key_once_its_dedup_window_has_passed() {
    both(|place| {
        let ctx = place.name();
        let clock = Arc::new(ManualClock::new(T0));
        let window = secs(60);
        let opts = || clocked(&clock).dedup_window(window);
        let q = place.open(opts()).unwrap();
        let early = q
            .enqueue_with(b"early", &EnqueueOptions::new().key("early"))
            .unwrap();
        clock.advance(secs(30));
        let later = q
            .enqueue_with(b"later", &EnqueueOptions::new().key("later"))
            .unwrap();
        // Just inside the window of the first key.
        clock.advance(secs(29));
        assert_eq!(q.key_id("early").unwrap(), Some(early), "{ctx}");
        assert_eq!(q.key_id("later").unwrap(), Some(later), "{ctx}");
        // Past it: forgotten, while the later key is still remembered.
        clock.advance(secs(2));
        assert_eq!(q.key_id("early").unwrap(), None, "{ctx}");
        assert_eq!(q.key_id("later").unwrap(), Some(later), "{ctx}");
        // A forgotten key is admitted again as a new message, which the
        // key names from then on.
        let again = q
            .enqueue_with(b"early again", &EnqueueOptions::new().key("early"))
            .unwrap();
        assert_ne!(again, early, "{ctx}");
        assert_eq!(q.key_id("early").unwrap(), Some(again), "{ctx}");
        // A reopen after the later key's window forgets it too, and keeps
        // the one readmitted.
        q.close().unwrap();
        clock.advance(secs(30));
        let q = place.open(opts()).unwrap();
        assert_eq!(q.key_id("later").unwrap(), None, "{ctx}");
        assert_eq!(q.key_id("early").unwrap(), Some(again), "{ctx}");
        clock.advance(secs(60));
        assert_eq!(q.key_id("early").unwrap(), None, "{ctx}");
    });
}
