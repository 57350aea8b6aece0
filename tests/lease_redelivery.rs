//! Goal: leases expire and redeliver with the attempt raised, old receipts go stale, extensions and nack delays hold, attempts survive crashes, and a message that is never acked reaches the dead letters after max_deliveries even when every delivery ends in a crash; redrive and purge work.
//! Method: a ManualClock moves time by hand; crashes are process-crash images (MemoryStorage::crash, or a copy of the directory on disk); every scenario runs on disk and in memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::files::crash_image;
use common::{both, small};
use lanelog::{Clock, Delivery, Error, ManualClock, Queue, QueueOptions, Timestamp};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const LEASE: Duration = Duration::from_secs(30);
const MS: Duration = Duration::from_millis(1);

fn opts(clock: &ManualClock) -> QueueOptions {
    small()
        .visibility_timeout(LEASE)
        .max_deliveries(3)
        .clock(Arc::new(clock.clone()))
}

fn one(q: &Queue) -> Delivery {
    q.dequeue().unwrap().expect("a message")
}

/// Every settling call with `stale` fails with StaleReceipt and changes
/// nothing.
fn all_stale(q: &Queue, stale: &Delivery, ctx: &str) {
    let before = q.stats();
    let r = stale.receipt;
    assert!(matches!(q.ack(r), Err(Error::StaleReceipt)), "{ctx}: ack");
    assert!(
        matches!(q.nack(r, Duration::ZERO), Err(Error::StaleReceipt)),
        "{ctx}: nack"
    );
    assert!(
        matches!(q.extend_lease(r, LEASE), Err(Error::StaleReceipt)),
        "{ctx}: extend_lease"
    );
    assert!(
        matches!(q.dead_letter(r, "x"), Err(Error::StaleReceipt)),
        "{ctx}: dead_letter"
    );
    assert!(
        matches!(q.ack_batch(&[r]), Err(Error::StaleReceipt)),
        "{ctx}: ack_batch"
    );
    assert_eq!(q.stats(), before, "{ctx}: a stale receipt changed nothing");
}

#[test]
fn expired_lease_redelivers_with_attempt_raised() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue(b"job", 3).unwrap();
        let first = one(&q);
        assert_eq!((first.id, first.attempt), (id, 1));
        assert!(q.dequeue().unwrap().is_none(), "leased, so invisible");

        clock.advance(LEASE - MS);
        assert!(q.dequeue().unwrap().is_none(), "not expired 1 ms early");
        clock.advance(MS);
        let second = one(&q);
        assert_eq!((second.id, second.attempt), (id, 2), "{}", place.name());
        assert_eq!(second.payload, b"job");
        assert_eq!(second.priority, 3);
        assert_eq!(second.enqueued_at, first.enqueued_at);
        assert_ne!(second.receipt, first.receipt);
        all_stale(&q, &first, place.name());

        clock.advance(LEASE);
        let third = one(&q);
        assert_eq!(third.attempt, 3);
        all_stale(&q, &second, place.name());
        q.ack(third.receipt).unwrap();
        all_stale(&q, &third, place.name());
        assert!(q.dequeue().unwrap().is_none());
        assert_eq!(q.stats().acked_total, 1);
    });
}

#[test]
fn extend_lease_keeps_the_message_invisible() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        q.enqueue(b"long job", 0).unwrap();
        let d = one(&q);
        clock.advance(Duration::from_secs(20));
        q.extend_lease(d.receipt, Duration::from_secs(30)).unwrap();
        // The lease now ends 50 s after the dequeue, not 30 s.
        clock.advance(Duration::from_secs(29));
        assert!(q.dequeue().unwrap().is_none(), "{}", place.name());
        assert_eq!(q.stats().in_flight, 1);
        // Extending again from now; the receipt stays current.
        q.extend_lease(d.receipt, Duration::from_secs(10)).unwrap();
        clock.advance(Duration::from_secs(10) - MS);
        assert!(q.dequeue().unwrap().is_none());
        clock.advance(MS);
        let again = one(&q);
        assert_eq!(again.attempt, 2);
        all_stale(&q, &d, place.name());
        q.ack(again.receipt).unwrap();

        // An extension acked in time: never redelivered.
        q.enqueue(b"short", 0).unwrap();
        let d = one(&q);
        q.extend_lease(d.receipt, Duration::from_secs(300)).unwrap();
        clock.advance(Duration::from_secs(299));
        assert!(q.dequeue().unwrap().is_none());
        q.ack(d.receipt).unwrap();
        clock.advance(Duration::from_secs(3600));
        assert!(q.dequeue().unwrap().is_none());
        assert!(matches!(
            q.extend_lease(d.receipt, Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn nack_with_delay_hides_until_the_clock_passes_it() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue(b"retry me", 1).unwrap();
        let d = one(&q);
        q.nack(d.receipt, Duration::from_secs(10)).unwrap();
        all_stale(&q, &d, place.name());
        assert_eq!(q.stats().in_flight, 0);
        assert_eq!(q.stats().ready, 0, "{}", place.name());
        clock.advance(Duration::from_secs(10) - MS);
        assert!(q.dequeue().unwrap().is_none());
        clock.advance(MS);
        let again = one(&q);
        assert_eq!((again.id, again.attempt), (id, 2), "nack keeps attempts");

        // A nack without delay makes it ready at once.
        q.nack(again.receipt, Duration::ZERO).unwrap();
        let third = one(&q);
        assert_eq!(third.attempt, 3);

        // The delay survives a reopen.
        q.nack(third.receipt, Duration::from_secs(60)).unwrap();
        q.close().unwrap();
        let q = place.open(opts(&clock)).unwrap();
        assert!(q.dequeue().unwrap().is_none(), "{}", place.name());
        clock.advance(Duration::from_secs(60));
        // max_deliveries = 3 were used up: the next turn parks it.
        assert!(q.dequeue().unwrap().is_none());
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1, "{}", place.name());
        assert_eq!((dead[0].id, dead[0].attempts), (id, 3));
    });
}

#[test]
fn attempts_survive_a_crash() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue(b"survivor", 2).unwrap();
        let d = one(&q);
        assert_eq!(d.attempt, 1);
        let img = crash_image(place);
        drop(q);
        let q = img.open(opts(&clock)).unwrap();
        assert_eq!(
            q.recovery_report().in_flight_released,
            1,
            "{}",
            place.name()
        );
        let again = one(&q);
        assert_eq!((again.id, again.attempt), (id, 2), "{}", place.name());
        assert_eq!(again.payload, b"survivor");
        assert!(
            matches!(q.ack(d.receipt), Err(Error::StaleReceipt)),
            "a receipt from before the crash"
        );
        q.ack(again.receipt).unwrap();
    });
}

#[test]

fn crash_every_delivery_until_dead_lettered() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue(b"poison", 7).unwrap();
        let keep = q.enqueue(b"innocent", 0).unwrap();
        let mut img = crash_image(place);
        drop(q);
        // Each turn: open the last crash image, take the poison message,
        // crash while working on it.
        for attempt in 1..=3 {
            clock.advance(Duration::from_secs(1));
            let q = img.open(opts(&clock)).unwrap();
            let d = one(&q);
            assert_eq!((d.id, d.attempt), (id, attempt), "{}", place.name());
            assert_eq!(d.payload, b"poison");
            let next = crash_image(&img);
            drop(q);
            img = next;
        }
        clock.advance(Duration::from_secs(1));
        let q = img.open(opts(&clock)).unwrap();
        let d = one(&q);
        assert_eq!((d.id, d.payload.as_slice()), (keep, &b"innocent"[..]));
        q.ack(d.receipt).unwrap();
        assert!(q.dequeue().unwrap().is_none(), "{}", place.name());
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1, "{}: {dead:?}", place.name());
        assert_eq!(dead[0].id, id);
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].priority, 7);
        assert_eq!(dead[0].enqueued_at, T0);
        assert_eq!(dead[0].dead_at, clock.now());
        assert!(
            dead[0].reason.contains("max_deliveries = 3"),
            "{:?}",
            dead[0].reason
        );
        assert_eq!(q.stats().dead, 1);

        // The dead letter survives a crash too.
        let img2 = crash_image(&img);
        drop(q);
        let q = img2.open(opts(&clock)).unwrap();
        assert_eq!(q.dead_letters().unwrap(), dead, "{}", place.name());
    });
}

#[test]
fn dead_letter_redrive_and_purge() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let ids: Vec<_> = (0..4u8)
            .map(|i| q.enqueue(&[b'm', i], i).unwrap())
            .collect();
        // Park all four by hand, with reasons.
        for _ in 0..4 {
            let d = one(&q);
            q.dead_letter(d.receipt, &format!("bad {}", d.id)).unwrap();
            all_stale(&q, &d, place.name());
        }
        let dead = q.dead_letters().unwrap();
        assert_eq!(
            dead.iter().map(|d| d.id).collect::<Vec<_>>(),
            ids,
            "in id order"
        );
        for d in &dead {
            assert_eq!(d.reason, format!("bad {}", d.id));
            assert_eq!(d.attempts, 1);
        }
        assert_eq!(q.stats().dead, 4);
        assert!(q.dequeue().unwrap().is_none());

        // One back to ready with its attempts reset.
        q.redrive(ids[1]).unwrap();
        assert!(matches!(q.redrive(ids[1]), Err(Error::Unknown)));
        let d = one(&q);
        assert_eq!((d.id, d.attempt), (ids[1], 1), "{}", place.name());
        q.ack(d.receipt).unwrap();

        // Reasons, attempts and times survive a clean reopen and a crash.
        q.close().unwrap();
        let q = place.open(opts(&clock)).unwrap();
        let dead: Vec<_> = dead.into_iter().filter(|d| d.id != ids[1]).collect();
        assert_eq!(q.dead_letters().unwrap(), dead, "{}", place.name());
        let img = crash_image(place);
        let q2 = img.open(opts(&clock)).unwrap();
        assert_eq!(q2.dead_letters().unwrap(), dead, "{}: crash", place.name());
        drop(q2);
        assert!(q.dequeue().unwrap().is_none(), "only dead letters left");

        // The rest back by redrive_all, highest priority first.
        assert_eq!(q.redrive_all().unwrap(), 3);
        assert_eq!(q.stats().dead, 0);
        let got: Vec<_> = (0..3).map(|_| one(&q)).collect();
        assert_eq!(
            got.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![ids[3], ids[2], ids[0]],
            "{}",
            place.name()
        );
        for d in &got {
            assert_eq!(d.attempt, 1, "attempts reset by redrive");
            q.dead_letter(d.receipt, "for good").unwrap();
        }

        // Purge removes them for good, across a reopen.
        assert_eq!(q.purge_dead_letters().unwrap(), 3);
        assert_eq!(q.purge_dead_letters().unwrap(), 0);
        assert_eq!(q.redrive_all().unwrap(), 0);
        assert!(matches!(q.redrive(ids[0]), Err(Error::Unknown)));
        assert!(q.dead_letters().unwrap().is_empty());
        q.close().unwrap();
        let q = place.open(opts(&clock)).unwrap();
        assert!(q.dead_letters().unwrap().is_empty(), "{}", place.name());
        assert!(q.dequeue().unwrap().is_none());
        let s = q.stats();
        assert_eq!((s.ready, s.dead, s.in_flight, s.delayed), (0, 0, 0, 0));
    });
}

#[test]
fn redelivery_follows_priority_and_id_order() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let low = q.enqueue(b"low", 1).unwrap();
        let high = q.enqueue(b"high", 9).unwrap();
        let a = one(&q);
        let b = one(&q);
        assert_eq!((a.id, b.id), (high, low));
        clock.advance(LEASE);
        let newer = q.enqueue(b"newer high", 9).unwrap();
        // Both leases expired; the expired high one comes back before the
        // newer message of the same priority (lower id first).
        let order: Vec<_> = (0..3).map(|_| one(&q)).collect();
        assert_eq!(
            order.iter().map(|d| (d.id, d.attempt)).collect::<Vec<_>>(),
            vec![(high, 2), (newer, 1), (low, 2)],
            "{}",
            place.name()
        );
    });
}

#[test]

fn attempts_accumulate_across_two_crashes() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue(b"x", 0).unwrap();
        assert_eq!(one(&q).attempt, 1);
        let img1 = crash_image(place);
        drop(q);
        let q = img1.open(opts(&clock)).unwrap();
        let d = one(&q);
        assert_eq!((d.id, d.attempt), (id, 2));
        q.nack(d.receipt, Duration::ZERO).unwrap();
        let img2 = crash_image(&img1);
        drop(q);
        let q = img2.open(opts(&clock)).unwrap();
        let d = one(&q);
        assert_eq!((d.id, d.attempt), (id, 3), "{}", place.name());
    });
}

#[test]
fn expiries_count_toward_max_deliveries() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue(b"slow consumer", 4).unwrap();
        for attempt in 1..=3 {
            let d = one(&q);
            assert_eq!((d.id, d.attempt), (id, attempt), "{}", place.name());
            clock.advance(LEASE);
        }
        assert!(q.dequeue().unwrap().is_none(), "{}", place.name());
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id, dead[0].attempts), (id, 3));
        assert!(dead[0].reason.contains("max_deliveries = 3"), "{dead:?}");
        // Unlimited deliveries with max_deliveries(0).
        q.close().unwrap();
        let q = place.open(opts(&clock).max_deliveries(0)).unwrap();
        q.redrive(id).unwrap();
        for attempt in 1..=10 {
            let d = one(&q);
            assert_eq!(d.attempt, attempt);
            clock.advance(LEASE);
        }
        assert!(q.dead_letters().unwrap().is_empty());
    });
}
