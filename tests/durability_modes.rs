//! Goal: each durability mode keeps its promise. Method: on the in-memory
//! storage, build the image a power loss would leave (only synced bytes) and
//! the image a process kill would leave (everything written), and reopen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{Durability, QueueOptions};

fn opts(d: Durability) -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
        .durability(d)
}

fn open(m: &MemoryStorage, d: Durability) -> lanelog::Queue {
    opts(d)
        .open_storage(Arc::new(m.clone()) as Arc<dyn Storage>)
        .unwrap()
}

#[test]
fn immediate_survives_power_loss_with_concurrent_producers() {
    let m = MemoryStorage::new();
    let q = open(&m, Durability::Immediate);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..100u8 {
                    q.enqueue(&[t, i], t).unwrap();
                }
                100
            })
        })
        .collect();
    let enqueued: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let image = m.crash(CrashPolicy::DropUnsynced);
    drop(q);
    let q = open(&image, Durability::Immediate);
    assert_eq!(q.stats().ready as usize, enqueued);
}

#[test]
fn acks_under_immediate_survive_power_loss() {
    let m = MemoryStorage::new();
    let q = open(&m, Durability::Immediate);
    for i in 0..10u8 {
        q.enqueue(&[i], 0).unwrap();
    }
    for _ in 0..4 {
        let d = q.dequeue().unwrap().unwrap();
        q.ack(d.receipt).unwrap();
    }
    let image = m.crash(CrashPolicy::DropUnsynced);
    drop(q);
    let q = open(&image, Durability::Immediate);
    let s = q.stats();
    assert_eq!((s.ready, s.acked_total), (6, 4));
    assert_eq!(q.dequeue().unwrap().unwrap().payload, [4]);
}

#[test]
fn none_keeps_everything_on_process_crash_and_sync_makes_it_durable() {
    let m = MemoryStorage::new();
    let q = open(&m, Durability::None);
    q.enqueue(b"a", 0).unwrap();
    let killed = m.crash(CrashPolicy::ProcessCrash);
    assert_eq!(open(&killed, Durability::None).stats().ready, 1);
    q.enqueue(b"b", 0).unwrap();
    q.sync().unwrap();
    let image = m.crash(CrashPolicy::DropUnsynced);
    drop(q);
    assert_eq!(open(&image, Durability::None).stats().ready, 2);
}

#[test]
fn periodic_flushes_in_the_background() {
    let m = MemoryStorage::new();
    let q = open(&m, Durability::Periodic(Duration::from_millis(5)));
    q.enqueue(b"a", 0).unwrap();
    let start = Instant::now();
    loop {
        let image = m.crash(CrashPolicy::DropUnsynced);
        if open(&image, Durability::None).stats().ready == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the flusher never synced"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// After a reopen, the first enqueue under `Immediate` syncs the journal
/// once (the reservation of a block of ids, synced before any id of it is
/// handed out) and the segment once (the record): the reservation's own
/// sync leaves nothing of the journal for the commit to sync again.
#[test]
fn the_first_enqueue_after_a_reopen_syncs_each_file_once() {
    let m = MemoryStorage::new();
    let o = || opts(Durability::Immediate).prepare_ahead(false);
    let q = o()
        .open_storage(Arc::new(m.clone()) as Arc<dyn Storage>)
        .unwrap();
    q.enqueue(b"a", 0).unwrap();
    q.close().unwrap();
    let traced = Arc::new(testkit::traced::Traced::new(m.clone(), true));
    let q = o()
        .open_storage(traced.clone() as Arc<dyn Storage>)
        .unwrap();
    let before = traced.log().len();
    q.enqueue(b"b", 0).unwrap();
    let synced: Vec<String> = traced.log()[before..]
        .iter()
        .filter(|c| c.is_sync())
        .map(|c| c.file.clone())
        .collect();
    assert_eq!(
        synced,
        ["journal-0000000001.jnl", "segment-0000000001.seg"],
        "{synced:?}"
    );
    q.close().unwrap();
    let q = o()
        .open_storage(Arc::new(m.crash(CrashPolicy::DropUnsynced)) as Arc<dyn Storage>)
        .unwrap();
    assert_eq!(q.stats().ready, 2);
}
