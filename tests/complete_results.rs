//! `complete`: the result is stored and the message acked in one durable
//! record. Read back with `result` until retention removes it; counted in
//! stats and on disk; bad calls change nothing; no crash separates the ack
//! from the result.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::files::{assert_same_files, crash_image, snapshot};
use common::{both, small};
use lanelog::storage::{CrashPolicy, Fault, FaultKind, FaultOps, MemoryStorage, Storage};
use lanelog::{Durability, Error, MessageId, QueueOptions};

#[test]
fn a_result_is_stored_with_the_ack_and_read_back_after_reopen() {
    both(|place| {
        let q = place.open(small()).unwrap();
        let id = q.enqueue(b"2 + 2", 4).unwrap();
        let other = q.enqueue(b"3 + 3", 4).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, id);
        q.complete(d.receipt, b"4").unwrap();
        let s = q.stats();
        assert_eq!((s.acked_total, s.results, s.ready), (1, 1, 1), "{s:?}");
        assert_eq!(q.result(id).unwrap(), Some(b"4".to_vec()));
        assert_eq!(q.result(other).unwrap(), None, "not completed");
        assert_eq!(q.result(MessageId::from(999)).unwrap(), None, "unknown");
        // Never delivered again.
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, other);
        q.ack(d.receipt).unwrap();
        assert_eq!(q.result(other).unwrap(), None, "acked without a result");
        // By replay and from a checkpoint.
        let img = crash_image(place);
        let replayed = img.open(small()).unwrap();
        assert_eq!(replayed.result(id).unwrap(), Some(b"4".to_vec()));
        assert_eq!(replayed.stats().acked_total, 2);
        drop(replayed);
        q.close().unwrap();
        let q = place.open(small()).unwrap();
        assert!(q.recovery_report().checkpoint.is_some());
        assert_eq!(q.result(id).unwrap(), Some(b"4".to_vec()));
        let s = q.stats();
        assert_eq!((s.acked_total, s.results, s.ready), (2, 1, 0), "{s:?}");
    });
}

#[test]
fn stale_oversized_and_poisoned_completes_change_nothing() {
    both(|place| {
        let q = place.open(small().max_message_size(100)).unwrap();
        q.enqueue(b"job", 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        let before = snapshot(place);
        let stats = q.stats();
        match q.complete(d.receipt, &[0u8; 101]) {
            Err(Error::TooLarge {
                size: 101,
                max: 100,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_same_files(&before, &snapshot(place), place.name());
        assert_eq!(q.stats(), stats);
        // The lease runs out and the message is delivered again: the first
        // receipt is stale.
        q.nack(d.receipt, Duration::ZERO).unwrap();
        let again = q.dequeue().unwrap().unwrap();
        let mid = snapshot(place);
        assert!(matches!(
            q.complete(d.receipt, b"late"),
            Err(Error::StaleReceipt)
        ));
        assert_same_files(&mid, &snapshot(place), place.name());
        assert_eq!(q.result(again.id).unwrap(), None);
        q.complete(again.receipt, &[7u8; 100]).unwrap();
        assert!(matches!(
            q.complete(again.receipt, b"twice"),
            Err(Error::StaleReceipt)
        ));
        assert_eq!(q.result(again.id).unwrap(), Some(vec![7u8; 100]));
    });
}

#[test]
fn a_poisoned_queue_refuses_complete() {
    let mem = MemoryStorage::new();
    let q = small()
        .open_storage(Arc::new(mem.clone()) as Arc<dyn Storage>)
        .unwrap();
    q.enqueue(b"job", 0).unwrap();
    let d = q.dequeue().unwrap().unwrap();
    // Every sync fails from now on: the first complete poisons the queue.
    mem.set_fault(Some(Fault {
        at_call: mem.calls_matching(FaultOps::Sync),
        kind: FaultKind::Eio,
        forever: true,
        only: FaultOps::Sync,
    }));
    assert!(q.complete(d.receipt, b"r").is_err());
    assert!(matches!(q.complete(d.receipt, b"r"), Err(Error::Poisoned)));
    drop(q);
    mem.set_fault(None);
    // The message is either completed with its result or still pending.
    let q = small()
        .open_storage(Arc::new(mem.crash(CrashPolicy::DropUnsynced)) as Arc<dyn Storage>)
        .unwrap();
    let s = q.stats();
    assert_eq!(s.acked_total, s.results, "{s:?}");
    assert_eq!(s.ready + s.results, 1, "{s:?}");
}

/// Under `Immediate`, after `complete` returns no crash leaves the message
/// acked without its result or the result stored with the message pending;
/// before it returns, either is allowed but never half of it.
#[test]
fn no_power_loss_separates_the_ack_from_the_result() {
    let mem = MemoryStorage::new();
    let opts = || small().durability(Durability::Immediate);
    let q = opts()
        .open_storage(Arc::new(mem.clone()) as Arc<dyn Storage>)
        .unwrap();
    let mut completed = BTreeMap::new();
    for i in 0..30u64 {
        q.enqueue(&common::files::payload(i, 50), (i % 3) as u8)
            .unwrap();
    }
    for i in 0..20u64 {
        let d = q.dequeue().unwrap().unwrap();
        let result = common::files::payload(1000 + i, 20 + i as usize);
        q.complete(d.receipt, &result).unwrap();
        completed.insert(d.id, result);
    }
    // A lease still open at the crash: the message is pending after it.
    q.dequeue().unwrap().unwrap();
    let policy_images: Vec<MemoryStorage> = (0..60)
        .map(|seed| mem.crash(CrashPolicy::PowerLoss { seed, torn: true }))
        .collect();
    drop(q);
    for (seed, img) in policy_images.into_iter().enumerate() {
        let q = opts()
            .open_storage(Arc::new(img) as Arc<dyn Storage>)
            .unwrap();
        for (id, want) in &completed {
            assert_eq!(
                q.result(*id).unwrap().as_ref(),
                Some(want),
                "seed {seed} id {id}"
            );
        }
        let s = q.stats();
        assert_eq!(s.results, 20, "seed {seed}: {s:?}");
        assert_eq!(s.acked_total, 20, "seed {seed}");
        // Everything else is pending and delivered; nothing completed is.
        let mut left = 0;
        while let Some(d) = q.dequeue().unwrap() {
            assert!(
                !completed.contains_key(&d.id),
                "seed {seed}: {} again",
                d.id
            );
            left += 1;
            q.ack(d.receipt).unwrap();
        }
        assert_eq!(left, 10, "seed {seed}");
    }
}

#[test]
fn results_count_on_disk_and_are_relocated_and_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        QueueOptions::new()
            .segment_size(1 << 20)
            .durability(Durability::None)
            .prepare_ahead(false)
    };
    let q = opts().open(dir.path()).unwrap();
    let big = vec![1u8; 2000];
    // Fill several segments, completing one message in twenty with a
    // result, so the old segments hold little but results: relocation
    // copies those forward and deletes the segments.
    let mut kept = Vec::new();
    for round in 0..4000u64 {
        let id = q.enqueue(&big, 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, id);
        if round % 20 == 0 {
            let r = round.to_le_bytes();
            q.complete(d.receipt, &r).unwrap();
            kept.push((id, r.to_vec()));
        } else {
            q.ack(d.receipt).unwrap();
        }
    }
    q.sync().unwrap();
    let s = q.stats();
    assert_eq!(s.results, 200);
    // About eight segments were written, each left holding only results.
    assert!(s.segments <= 4, "old segments reclaimed: {s:?}");
    for (id, r) in &kept {
        assert_eq!(q.result(*id).unwrap().as_ref(), Some(r), "id {id}");
    }
    q.close().unwrap();
    let q = opts().open(dir.path()).unwrap();
    for (id, r) in &kept {
        assert_eq!(
            q.result(*id).unwrap().as_ref(),
            Some(r),
            "reopened, id {id}"
        );
    }
}

/// A message and its result in one segment, found by a scan after a crash
/// (no checkpoint): the segment counts one live record, the result, so
/// once retention removes the result the segment is reclaimed.
#[test]
fn a_replayed_result_leaves_its_segment_reclaimable() {
    use lanelog::{ManualClock, Timestamp};
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let hour = Duration::from_secs(3600);
    let opts = || {
        small()
            .clock(clock.clone())
            .retention(hour)
            .prepare_ahead(false)
    };
    let dir = tempfile::tempdir().unwrap();
    let place = common::Place::Disk(dir);
    let q = place.open(opts()).unwrap();
    let id = q.enqueue(b"job", 0).unwrap();
    let d = q.dequeue().unwrap().unwrap();
    q.complete(d.receipt, b"done").unwrap();
    let img = crash_image(&place);
    drop(q);
    let q = img.open(opts()).unwrap();
    assert!(q.recovery_report().checkpoint.is_none());
    assert_eq!(q.result(id).unwrap(), Some(b"done".to_vec()));
    // Fill past the first segment, then let retention take everything.
    let filler = vec![0u8; 100_000];
    for _ in 0..12 {
        q.enqueue(&filler, 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        q.ack(d.receipt).unwrap();
    }
    clock.advance(2 * hour);
    let start = std::time::Instant::now();
    while q.stats().results > 0 || q.stats().segments > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "segment 1 never reclaimed: {:?}",
            q.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
        // Writes run the maintenance that deletes drained segments.
        q.sync().unwrap();
    }
}
