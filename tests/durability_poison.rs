//! Goal: a failed sync poisons the queue (the failing call errors, every later write is Error::Poisoned), a reopen recovers without losing anything whose call returned Ok, and a full disk fails cleanly with StorageFull, changes nothing, and works again once space is back.
//! Method: MemoryStorage fault plans (one-shot EIO on the n-th sync, swept over every sync of a workload) and capacity limits; crash images with ProcessCrash and DropUnsynced.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use common::files::payload;
use common::{small, Place};
use lanelog::storage::{CrashPolicy, Fault, FaultKind, FaultOps, MemoryStorage};
use lanelog::{
    Delivery, Durability, Error, ManualClock, MessageId, Queue, QueueOptions, Receipt, Timestamp,
};

const EIO: i32 = 5;

fn opts(durability: Durability) -> QueueOptions {
    small()
        .durability(durability)
        .clock(Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))))
}

fn open_with(m: &MemoryStorage, durability: Durability) -> Queue {
    Place::Memory(m.clone()).open(opts(durability)).unwrap()
}

fn open(m: &MemoryStorage) -> Queue {
    open_with(m, Durability::Immediate)
}

fn sync_fault_at(m: &MemoryStorage, at_call: u64) {
    m.set_fault(Some(Fault {
        at_call,
        kind: FaultKind::Eio,
        forever: false,
        only: FaultOps::Sync,
    }));
}

fn is_eio(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.raw_os_error() == Some(EIO))
}

/// Every kind of write fails with Poisoned; `held` is a receipt that was
/// current when the queue was poisoned.
fn all_poisoned(q: &Queue, held: Option<Receipt>, ctx: &str) {
    let p = |r: lanelog::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::Poisoned)), "{ctx}: {what}: {r:?}");
    };
    p(q.enqueue(b"later", 0).map(|_| ()), "enqueue");
    p(
        q.enqueue_batch(&[(b"a", 0), (b"b", 1)]).map(|_| ()),
        "enqueue_batch",
    );
    p(
        q.enqueue_delayed(b"d", 0, Duration::from_secs(1))
            .map(|_| ()),
        "enqueue_delayed",
    );
    p(q.dequeue().map(|_| ()), "dequeue");
    p(q.dequeue_up_to(3).map(|_| ()), "dequeue_up_to");
    p(q.sync(), "sync");
    p(q.redrive_all().map(|_| ()), "redrive_all");
    p(q.purge_dead_letters().map(|_| ()), "purge_dead_letters");
    if let Some(r) = held {
        p(q.ack(r), "ack");
        p(q.ack_batch(&[r]), "ack_batch");
        p(q.nack(r, Duration::ZERO), "nack");
        p(q.extend_lease(r, Duration::from_secs(5)), "extend_lease");
        p(q.dead_letter(r, "x"), "dead_letter");
    }
}

#[test]
fn failed_sync_on_enqueue_poisons_until_reopen() {
    let m = MemoryStorage::new();
    let q = open(&m);
    let mut sent = BTreeMap::new();
    for i in 0..6u64 {
        let p = payload(i, 500);
        sent.insert(q.enqueue(&p, 1).unwrap(), p);
    }
    let done = q.dequeue().unwrap().unwrap();
    q.ack(done.receipt).unwrap();
    sent.remove(&done.id);
    let held = q.dequeue().unwrap().unwrap();

    sync_fault_at(&m, m.calls_matching(FaultOps::Sync));
    let err = q.enqueue(b"doomed", 1).expect_err("the sync fails");
    assert!(is_eio(&err), "{err:?}");
    // The fault was one-shot, yet every write is refused from now on.
    all_poisoned(&q, Some(held.receipt), "after a failed sync");
    assert!(q.stats().ready > 0, "reads still work");

    for policy in [CrashPolicy::ProcessCrash, CrashPolicy::DropUnsynced] {
        let img = m.crash(policy);
        let q = open(&img);
        let got = common::files::drain(&q);
        let mut seen = BTreeMap::new();
        for d in &got {
            if d.payload == b"doomed" {
                continue; // its enqueue failed: may or may not exist
            }
            assert_eq!(sent.get(&d.id), Some(&d.payload), "{policy:?}");
            seen.insert(d.id, d.payload.clone());
        }
        assert_eq!(seen, sent, "{policy:?}: every Ok enqueue, no Ok ack");
        q.enqueue(b"works again", 0).unwrap();
    }

    // Reopening the same directory recovers too.
    drop(q);
    let q = open(&m);
    let got: BTreeSet<MessageId> = common::files::drain(&q).iter().map(|d| d.id).collect();
    assert!(sent.keys().all(|id| got.contains(id)));
    assert!(!got.contains(&done.id));
}

/// What a workload step did, as far as its caller knows.
#[derive(Default)]
struct Model {
    /// Enqueued with Ok, by id.
    sent: BTreeMap<MessageId, Vec<u8>>,
    acked: BTreeSet<MessageId>,
    dead: BTreeSet<MessageId>,
    /// The message the failing call was about, if any: its fate is open.
    open_fate: Option<MessageId>,
    /// A receipt current when the failure happened.
    held: Option<Receipt>,
    /// The payload of the enqueue that failed, if one did: it may exist.
    failed: Option<Vec<u8>>,
}

/// Which workload a sweep runs.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Enqueues big enough to roll segments, with a settlement every other
    /// step; Immediate durability (a sync per call).
    Segments,
    /// Many small enqueue/dequeue/settle cycles that roll journal files;
    /// Durability::None (syncs only for new files and maintenance).
    Journal,
}

impl Load {
    fn durability(self) -> Durability {
        match self {
            Load::Segments => Durability::Immediate,
            Load::Journal => Durability::None,
        }
    }

    fn policies(self) -> &'static [CrashPolicy] {
        match self {
            Load::Segments => &[CrashPolicy::ProcessCrash, CrashPolicy::DropUnsynced],
            // Without syncs a power loss may lose Ok'd calls by design.
            Load::Journal => &[CrashPolicy::ProcessCrash],
        }
    }
}

/// Run `load`; stops at the first error and returns it.
fn workload(q: &Queue, model: &mut Model, load: Load) -> Option<Error> {
    let settle = |d: &Delivery, i: u64, model: &mut Model| -> lanelog::Result<()> {
        model.open_fate = Some(d.id);
        match i % 3 {
            0 => q.ack(d.receipt).map(|()| {
                model.acked.insert(d.id);
            }),
            1 => q.nack(d.receipt, Duration::ZERO),
            _ => q.dead_letter(d.receipt, "poison").map(|()| {
                model.dead.insert(d.id);
            }),
        }
    };
    let (steps, settle_every) = match load {
        Load::Segments => (40u64, 2),
        Load::Journal => (1500, 1),
    };
    for i in 0..steps {
        let p = match load {
            Load::Segments => payload(i, if i % 4 == 0 { 150_000 } else { 200 }),
            Load::Journal => payload(i, 16),
        };
        model.open_fate = None;
        match q.enqueue(&p, (i % 3) as u8) {
            Ok(id) => {
                model.sent.insert(id, p);
            }
            Err(e) => {
                model.failed = Some(p);
                return Some(e);
            }
        }
        if i % settle_every == settle_every - 1 {
            let d = match q.dequeue() {
                Ok(d) => d.expect("something ready"),
                Err(e) => return Some(e),
            };
            if let Err(e) = settle(&d, i / settle_every, model) {
                model.held = Some(d.receipt);
                return Some(e);
            }
            model.open_fate = None;
        }
    }
    None
}

/// Check a reopened queue against what the callers were told.
fn check_recovered(q: &Queue, model: &Model, ctx: &str) {
    let dead: BTreeSet<MessageId> = q.dead_letters().unwrap().iter().map(|d| d.id).collect();
    let mut delivered = BTreeSet::new();
    let mut unknown = 0;
    for d in common::files::drain(q) {
        match model.sent.get(&d.id) {
            Some(p) => assert_eq!(&d.payload, p, "{ctx}: bytes of {}", d.id),
            None => {
                // Only the enqueue that failed may have landed anyway.
                assert_eq!(Some(&d.payload), model.failed.as_ref(), "{ctx}: {}", d.id);
                unknown += 1;
            }
        }
        delivered.insert(d.id);
    }
    assert!(unknown <= 1, "{ctx}");
    for id in model.sent.keys() {
        if Some(*id) == model.open_fate {
            continue;
        }
        if model.acked.contains(id) {
            assert!(
                !delivered.contains(id) && !dead.contains(id),
                "{ctx}: acked {id} is back"
            );
        } else if model.dead.contains(id) {
            assert!(dead.contains(id), "{ctx}: dead letter {id} lost");
        } else {
            assert!(delivered.contains(id), "{ctx}: message {id} lost");
        }
    }
}

/// Fail each sync of the workload in turn (one-shot), then check the
/// durable outcome after a reopen. `poison_check` also requires every
/// later write to be refused.
/// Returns the syncs whose failure left the queue writable.
fn sweep_sync_failures(load: Load, poison_check: bool) -> Vec<u64> {
    // How many syncs does the workload make?
    let m = MemoryStorage::new();
    let q = open_with(&m, load.durability());
    let first = m.calls_matching(FaultOps::Sync);
    assert!(workload(&q, &mut Model::default(), load).is_none());
    let last = m.calls_matching(FaultOps::Sync);
    drop(q);
    assert!(last - first > 5, "{load:?}: {}", last - first);

    let mut not_poisoned = Vec::new();
    for at in first..last {
        let m = MemoryStorage::new();
        let q = open_with(&m, load.durability());
        assert_eq!(m.calls_matching(FaultOps::Sync), first);
        sync_fault_at(&m, at);
        let mut model = Model::default();
        let err = workload(&q, &mut model, load).expect("the fault hits");
        let ctx = format!("{load:?} sync #{at}");
        assert!(
            is_eio(&err),
            "{ctx}: the failing call gets the I/O error: {err:?}"
        );
        if poison_check {
            if matches!(q.enqueue(b"after", 0), Err(Error::Poisoned)) {
                all_poisoned(&q, model.held, &ctx);
            } else {
                not_poisoned.push(at);
            }
        } else {
            for &policy in load.policies() {
                let img = m.crash(policy);
                let rq = open_with(&img, load.durability());
                check_recovered(&rq, &model, &format!("{ctx} {policy:?}"));
            }
        }
        drop(q);
    }
    not_poisoned
}

#[test]
fn every_failed_sync_loses_nothing_acknowledged() {
    sweep_sync_failures(Load::Segments, false);
    sweep_sync_failures(Load::Journal, false);
}

#[test]

fn every_failed_sync_poisons() {
    let writable: Vec<(Load, Vec<u64>)> = [Load::Segments, Load::Journal]
        .into_iter()
        .map(|load| (load, sweep_sync_failures(load, true)))
        .collect();
    assert!(
        writable.iter().all(|(_, at)| at.is_empty()),
        "failed syncs that left the queue writable: {writable:?}"
    );
}

#[test]
fn full_disk_fails_cleanly_and_recovers_without_reopen() {
    let m = MemoryStorage::new();
    let q = open(&m);
    let mut sent = BTreeMap::new();
    let p = payload(1, 100_000);
    sent.insert(q.enqueue(&p, 0).unwrap(), p);
    m.set_capacity(Some(m.used_bytes() + 4096));
    let mut err = None;
    for i in 2..40u64 {
        let p = payload(i, 100_000);
        let before = (q.stats(), m.file_names());
        match q.enqueue(&p, 0) {
            Ok(id) => {
                sent.insert(id, p);
            }
            Err(e) => {
                assert_eq!((q.stats(), m.file_names()), before, "nothing changed");
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the disk fills up");
    assert!(
        sent.len() >= 5,
        "the first segment filled first: {}",
        sent.len()
    );
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == ErrorKind::StorageFull),
        "{err:?}"
    );
    // Not a sync failure: the queue is not poisoned, just full.
    let before = (q.stats(), m.file_names());
    let again = q.enqueue(&payload(99, 100_000), 0).expect_err("still full");
    assert!(matches!(&again, Error::Io(e) if e.kind() == ErrorKind::StorageFull));
    // A batch that needs a new segment is refused whole.
    let small_p = payload(7, 10);
    let big_p = payload(8, 200_000);
    let batch: Vec<(&[u8], u8)> = vec![(&small_p, 0), (&big_p, 0), (&small_p, 0)];
    let r = q.enqueue_batch(&batch);
    assert!(
        matches!(&r, Err(Error::Io(e)) if e.kind() == ErrorKind::StorageFull),
        "{r:?}"
    );
    assert_eq!((q.stats(), m.file_names()), before, "nothing changed");
    // Consumers keep working while the disk is full.
    let d = q.dequeue().unwrap().unwrap();
    q.ack(d.receipt).unwrap();
    sent.remove(&d.id);

    m.set_capacity(None);
    for i in 100..105u64 {
        let p = payload(i, 100_000);
        sent.insert(q.enqueue(&p, 0).unwrap(), p);
    }
    let got: BTreeMap<MessageId, Vec<u8>> = common::files::drain(&q)
        .into_iter()
        .map(|d| (d.id, d.payload))
        .collect();
    assert_eq!(got, sent);
    q.close().unwrap();
}
