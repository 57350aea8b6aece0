//! Idempotency keys: an enqueue with a key seen within `dedup_window`
//! writes nothing and returns the first enqueue's id, across reopen,
//! process crash and power loss (within each durability mode's promise);
//! after the window the key is new again; the number of remembered keys is
//! capped with a clear error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::files::{assert_same_files, crash_image, snapshot};
use common::{both, small, Place};
use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{Durability, EnqueueOptions, Error, ManualClock, QueueOptions, Timestamp};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn opts(clock: &Arc<ManualClock>) -> QueueOptions {
    small()
        .clock(clock.clone())
        .dedup_window(Duration::from_secs(300))
}

fn key(k: &str) -> EnqueueOptions {
    EnqueueOptions::new().key(k)
}

#[test]
fn a_repeated_key_returns_the_first_id_and_writes_nothing() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(opts(&clock)).unwrap();
        let first = q.enqueue_with(b"job", &key("request-1")).unwrap();
        let before = snapshot(place);
        let stats = q.stats();
        // Another payload, priority or deadline does not matter: the key does.
        let again = key("request-1").priority(9);
        assert_eq!(q.enqueue_with(b"other", &again).unwrap(), first);
        assert_same_files(&before, &snapshot(place), place.name());
        assert_eq!(q.stats(), stats);
        assert_eq!(q.stats().keys, 1);
        // The key stays taken after its message is finished.
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.payload, b"job");
        q.ack(d.receipt).unwrap();
        assert_eq!(q.enqueue_with(b"job", &key("request-1")).unwrap(), first);
        assert!(q.dequeue().unwrap().is_none());
        // In a batch: the known key and a key repeated inside the batch.
        let batch = [
            (&b"a"[..], key("request-1")),
            (&b"b"[..], key("request-2")),
            (&b"c"[..], key("request-2")),
            (&b"d"[..], EnqueueOptions::new()),
        ];
        let ids = q.enqueue_batch_with(&batch).unwrap();
        assert_eq!(ids[0], first);
        assert_eq!(ids[1], ids[2]);
        assert_ne!(ids[1], ids[3]);
        let got: Vec<Vec<u8>> = common::files::drain(&q)
            .into_iter()
            .map(|d| d.payload)
            .collect();
        assert_eq!(got, vec![b"b".to_vec(), b"d".to_vec()]);
    });
}

#[test]
fn keys_are_remembered_across_reopen_and_crash() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(opts(&clock)).unwrap();
        let a = q.enqueue_with(b"a", &key("a")).unwrap();
        q.close().unwrap();
        // From the checkpoint.
        let q = place.open(opts(&clock)).unwrap();
        assert_eq!(q.enqueue_with(b"a", &key("a")).unwrap(), a);
        let b = q.enqueue_with(b"b", &key("b")).unwrap();
        // From the segment scan (no checkpoint holds "b").
        let img = crash_image(place);
        drop(q);
        let q = img.open(opts(&clock)).unwrap();
        assert_eq!(q.enqueue_with(b"a", &key("a")).unwrap(), a);
        assert_eq!(q.enqueue_with(b"b", &key("b")).unwrap(), b);
        assert_eq!(q.stats().ready, 2);
    });
}

#[test]
fn after_the_window_a_key_is_new_again() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(opts(&clock)).unwrap();
        let first = q.enqueue_with(b"x", &key("k")).unwrap();
        clock.advance(Duration::from_secs(299));
        assert_eq!(q.enqueue_with(b"x", &key("k")).unwrap(), first);
        clock.advance(Duration::from_secs(2));
        let second = q.enqueue_with(b"x", &key("k")).unwrap();
        assert_ne!(second, first);
        drop(q);
        // A reopen past the window forgets it too.
        clock.advance(Duration::from_secs(301));
        let q = place.open(opts(&clock)).unwrap();
        assert_eq!(q.stats().keys, 0);
        assert_ne!(q.enqueue_with(b"x", &key("k")).unwrap(), second);
    });
}

/// Under `Immediate`, a keyed enqueue that returned is durable: no power
/// loss admits the key twice, however the unsynced rest is cut.
#[test]
fn a_durable_key_survives_every_power_loss() {
    let clock = Arc::new(ManualClock::new(T0));
    let mem = MemoryStorage::new();
    let storage = Arc::new(mem.clone()) as Arc<dyn Storage>;
    let q = opts(&clock)
        .durability(Durability::Immediate)
        .open_storage(storage)
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(q.enqueue_with(b"job", &key(&format!("k{i}"))).unwrap());
        // Traffic after it, some of it never synced.
        q.enqueue(b"noise", 0).unwrap();
    }
    for seed in 0..40 {
        let img = mem.crash(CrashPolicy::PowerLoss { seed, torn: true });
        let q2 = opts(&clock)
            .durability(Durability::Immediate)
            .open_storage(Arc::new(img) as Arc<dyn Storage>)
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            let again = q2.enqueue_with(b"job", &key(&format!("k{i}"))).unwrap();
            assert_eq!(again, *id, "seed {seed} key k{i}");
        }
    }
    drop(q);
}

#[test]
fn the_key_cap_refuses_with_a_clear_error_and_writes_nothing() {
    let place = Place::memory();
    let clock = Arc::new(ManualClock::new(T0));
    let q = place.open(opts(&clock).max_keys(3)).unwrap();
    for k in ["a", "b", "c"] {
        q.enqueue_with(b"x", &key(k)).unwrap();
    }
    let before = snapshot(&place);
    match q.enqueue_with(b"x", &key("d")) {
        Err(Error::TooManyKeys { max: 3 }) => {}
        other => panic!("{other:?}"),
    }
    // A known key and a message without one still go through.
    q.enqueue_with(b"x", &key("a")).unwrap();
    assert_same_files(&before, &snapshot(&place), "known key");
    q.enqueue(b"plain", 0).unwrap();
    // Once the window passes, room comes back.
    clock.advance(Duration::from_secs(301));
    q.enqueue_with(b"x", &key("d")).unwrap();
    assert_eq!(q.stats().keys, 1);
}

#[test]
fn bad_keys_are_refused() {
    let place = Place::memory();
    let clock = Arc::new(ManualClock::new(T0));
    let q = place.open(opts(&clock)).unwrap();
    for k in [String::new(), "x".repeat(129)] {
        match q.enqueue_with(b"x", &EnqueueOptions::new().key(&k)) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("key"), "{why}"),
            other => panic!("{} bytes: {other:?}", k.len()),
        }
    }
    q.enqueue_with(b"x", &EnqueueOptions::new().key("y".repeat(128)))
        .unwrap();
    assert_eq!(q.stats().ready, 1);
}

/// A segment whose only records are finished but whose keys no checkpoint
/// holds survives an open, so a second crash before any checkpoint still
/// remembers the keys.
#[test]
fn keys_survive_two_crashes_before_a_checkpoint() {
    both(|place| {
        let clock = Arc::new(ManualClock::new(T0));
        let q = place.open(opts(&clock)).unwrap();
        let id = q.enqueue_with(b"keyed", &key("k")).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        q.ack(d.receipt).unwrap();
        // Fill the first segment so the keyed one is sealed and drained.
        let filler = vec![0u8; 100_000];
        for _ in 0..12 {
            let f = q.enqueue(&filler, 0).unwrap();
            let d = q.dequeue().unwrap().unwrap();
            assert_eq!(d.id, f);
            q.ack(d.receipt).unwrap();
        }
        let first = crash_image(place);
        drop(q);
        let q = first.open(opts(&clock)).unwrap();
        let second = crash_image(&first);
        drop(q);
        let q = second.open(opts(&clock)).unwrap();
        assert_eq!(
            q.enqueue_with(b"keyed", &key("k")).unwrap(),
            id,
            "{}",
            place.name()
        );
    });
}
