//! Goal: async consumers under tokio get every message exactly once even
//! when their futures are cancelled mid-wait, and wake for enqueues and for
//! maturing delays. Method: consumers race `dequeue_async` against short
//! timeouts (cancelling it again and again) while a producer trickles in
//! messages; then count deliveries and check nothing is left leased.
#![cfg(feature = "tokio")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waits_lose_nothing() {
    let (_dir, q) = common::temp_queue();
    let total = 300u32;
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let q = q.clone();
        consumers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut idle = 0;
            while idle < 100 {
                match tokio::time::timeout(Duration::from_millis(3), q.dequeue_async()).await {
                    Ok(d) => {
                        let d = d.unwrap();
                        seen.push(u64::from(d.id));
                        q.ack(d.receipt).unwrap();
                        idle = 0;
                    }
                    Err(_cancelled) => idle += 1,
                }
            }
            seen
        }));
    }
    for i in 0..total {
        q.enqueue(&i.to_le_bytes(), (i % 3) as u8).unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut all = HashSet::new();
    for c in consumers {
        for id in c.await.unwrap() {
            assert!(all.insert(id), "delivered twice: {id}");
        }
    }
    assert_eq!(all.len(), total as usize);
    let s = q.stats();
    assert_eq!(
        (s.ready, s.in_flight, s.acked_total),
        (0, 0, u64::from(total))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_waiter_wakes_for_a_maturing_delay() {
    let (_dir, q) = common::temp_queue();
    q.enqueue_delayed(b"later", 0, Duration::from_millis(30))
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(60), q.dequeue_async())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.payload, b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_batch_takes_what_is_ready() {
    let (_dir, q) = common::temp_queue();
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.dequeue_batch_async(8).await.unwrap().len() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 0), (&b"c"[..], 0)])
        .unwrap();
    assert!((1..=3).contains(&waiter.await.unwrap()));
}

/// Durable async writes on a current-thread runtime: while one task awaits
/// the syncs of its enqueues, completes and acks, another task on the same
/// thread keeps running (a write that synced on the runtime thread would
/// finish every call without yielding, and the other task would not run
/// until the writer was done); and what the async calls returned for is on
/// the disk image a power loss leaves.
#[tokio::test(flavor = "current_thread")]
async fn durable_async_writes_never_block_the_runtime_thread() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
    use lanelog::{Durability, EnqueueOptions, QueueOptions};

    // On disk, so each sync takes real time.
    let dir = tempfile::tempdir().unwrap();
    let q = QueueOptions::new()
        .durability(Durability::Immediate)
        .open(dir.path())
        .unwrap();
    let (done, beats, heartbeat) = Heartbeat::start();
    let writer = {
        let (q, done, beats) = (q.clone(), done.clone(), beats.clone());
        async move {
            let before = beats.load(Ordering::SeqCst);
            for i in 0..100u32 {
                q.enqueue_async(&i.to_le_bytes(), 0).await.unwrap();
            }
            let keyed = EnqueueOptions::new().key("async-key");
            let a = q.enqueue_with_async(b"k", &keyed).await.unwrap();
            let b = q.enqueue_with_async(b"k", &keyed).await.unwrap();
            assert_eq!(a, b);
            for _ in 0..50 {
                let d = q.dequeue().unwrap().unwrap();
                q.complete_async(d.receipt, b"result").await.unwrap();
            }
            let receipts: Vec<_> = q
                .dequeue_up_to(20)
                .unwrap()
                .iter()
                .map(|d| d.receipt)
                .collect();
            q.ack_async(&receipts).await.unwrap();
            q.sync_async().await.unwrap();
            let during = beats.load(Ordering::SeqCst) - before;
            done.store(true, Ordering::SeqCst);
            during
        }
    };
    let (during, ()) = tokio::join!(writer, heartbeat);
    assert!(
        during > 0,
        "the other task never ran while the writes awaited their syncs"
    );
    let s = q.stats();
    assert_eq!((s.acked_total, s.results, s.ready), (70, 50, 31), "{s:?}");
    q.close().unwrap();

    // What the async calls returned for is durable: a power loss that
    // drops every unsynced write keeps it all.
    let mem = MemoryStorage::new();
    let open = |s: &MemoryStorage| {
        QueueOptions::new()
            .durability(Durability::Immediate)
            .open_storage(Arc::new(s.clone()) as Arc<dyn Storage>)
            .unwrap()
    };
    let q = open(&mem);
    for i in 0..30u32 {
        q.enqueue_async(&i.to_le_bytes(), (i % 4) as u8)
            .await
            .unwrap();
    }
    let d = q.dequeue().unwrap().unwrap();
    q.complete_async(d.receipt, b"kept").await.unwrap();
    let image = mem.crash(CrashPolicy::DropUnsynced);
    drop(q);
    let q = open(&image);
    let s = q.stats();
    assert_eq!((s.ready, s.results, s.acked_total), (29, 1, 1), "{s:?}");
    assert_eq!(q.result(d.id).unwrap().as_deref(), Some(&b"kept"[..]));
}

/// The inference service from async code on a current-thread runtime:
/// `submit_async`, `wait_async` and `infer_one_async` await the pool and
/// the syncs instead of blocking the one runtime thread (a blocked thread
/// would stall the other task here, and the waits would never end), and a
/// run found again by its key comes back the same.
#[tokio::test(flavor = "current_thread")]
async fn the_service_from_async_code_never_blocks_the_runtime_thread() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use lanelog::worker::{Model, ModelError, PoolOptions, RunOptions, ServiceOptions};

    struct Triple;
    impl Model for Triple {
        type Input = u32;
        type Output = u32;
        fn name(&self) -> &str {
            "triple"
        }
        fn version(&self) -> &str {
            "1"
        }
        fn infer(&self, rows: &[u32]) -> Result<Vec<u32>, ModelError> {
            std::thread::sleep(Duration::from_millis(1));
            Ok(rows.iter().map(|x| x * 3).collect())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let pool = PoolOptions::new()
        .max_batch(8)
        .linger(Duration::from_millis(1));
    let service = ServiceOptions::new().pool(pool).open(dir.path()).unwrap();
    let m = service.register(Arc::new(Triple));
    let (done, beats, heartbeat) = Heartbeat::start();
    // Long enough (250 calls of 1 ms on 2 workers) that the run is still
    // under way when its wait starts, after the interactive request.
    let rows: Vec<u32> = (0..2000).collect();
    let work = async {
        let run = service
            .submit_async(&m, &rows, &RunOptions::new().key("async-run"))
            .await
            .unwrap();
        let one = service
            .infer_one_async(&m, &7, &RunOptions::new().priority(9))
            .await
            .unwrap();
        assert_eq!(one.output, Ok(21));
        let before = beats.load(Ordering::SeqCst);
        let out = tokio::time::timeout(Duration::from_secs(60), run.wait_async())
            .await
            .expect("the run finishes")
            .unwrap();
        let during = beats.load(Ordering::SeqCst) - before;
        for (i, r) in out.rows.iter().enumerate() {
            assert_eq!(r.output, Ok(3 * i as u32), "row {i}");
        }
        // The same key and rows: the same run, its stored results.
        let again = service
            .submit_async(&m, &rows, &RunOptions::new().key("async-run"))
            .await
            .unwrap();
        assert_eq!(again.id(), run.id());
        assert_eq!(again.wait_async().await.unwrap().resumed, rows.len());
        done.store(true, Ordering::SeqCst);
        during
    };
    let (during, ()) = tokio::join!(work, heartbeat);
    assert!(
        during > 0,
        "the other task never ran while the run was awaited"
    );
    service.close().unwrap();
}

/// A task that counts its turns on the runtime until told to stop: if it
/// counts while another task awaits, that task did not block the thread.
struct Heartbeat;

impl Heartbeat {
    #[allow(clippy::type_complexity)]
    fn start() -> (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
        impl std::future::Future<Output = ()>,
    ) {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let done = Arc::new(AtomicBool::new(false));
        let beats = Arc::new(AtomicU64::new(0));
        let beat = {
            let (done, beats) = (done.clone(), beats.clone());
            async move {
                while !done.load(Ordering::SeqCst) {
                    beats.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }
        };
        (done, beats, beat)
    }
}
