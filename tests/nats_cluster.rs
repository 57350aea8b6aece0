//! JetStream on a 3-node cluster (streams replicated three times) losing
//! its stream leader to `kill -9` while jobs are enqueued and completed.
//! What must hold: every enqueue that returned `Ok` ends with exactly one
//! stored result, nothing lost, and the queue keeps serving after the
//! failover (enqueues and completions continue on the survivors).
//!
//! Method: a producer enqueues keyed jobs in batches, retrying a failed
//! batch with the same keys (so a retry adds nothing twice); a consumer
//! thread dequeues and completes, treating a server error as "try again"
//! and a refused complete (`StaleReceipt`) as someone else's result. The
//! leader dies after the first half is enqueued. Every wait is bounded.

#![cfg(feature = "nats")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::nats::{JetStreamQueue, NatsOptions};
use lanelog::{DequeueOptions, EnqueueOptions, Error, JobQueue, MessageId};
use testkit::nats::Cluster;
use testkit::watchdog::Watchdog;

/// Past this a test has hung (each passes in seconds to a minute).
const HUNG_AFTER: Duration = Duration::from_secs(300);

const JOBS: u64 = 400;
const BATCH: u64 = 20;
/// The whole test's bound; a failover takes seconds.
const LIMIT: Duration = Duration::from_secs(120);

fn open(url: &str) -> JetStreamQueue {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match NatsOptions::new()
            .prefix("cluster")
            .replicas(3)
            .visibility_timeout(Duration::from_secs(3))
            .max_deliveries(0)
            .request_timeout(Duration::from_secs(2))
            .open(url)
        {
            Ok(q) => return q,
            // Streams with three replicas need every peer known to the
            // meta leader; right after start that can take a moment.
            Err(e @ (Error::Unavailable { .. } | Error::Backend { .. }))
                if Instant::now() < deadline =>
            {
                eprintln!("open: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("open {url}: {e}"),
        }
    }
}

fn payload(n: u64) -> Vec<u8> {
    format!("job-{n}").into_bytes()
}

#[test]
fn killing_the_stream_leader_loses_no_acknowledged_job() {
    let _hung = Watchdog::arm(
        "killing_the_stream_leader_loses_no_acknowledged_job",
        HUNG_AFTER,
    );
    let start = Instant::now();
    let mut cluster = Cluster::start(3).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let producer = open(&url);
    let consumer = open(&url);
    let leader = producer
        .stream_leader()
        .expect("stream info")
        .expect("an R3 stream has a leader");
    println!(
        "cluster up in {:?}; jobs stream leader: {leader}",
        start.elapsed()
    );

    let done = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let worker = {
        let (q, done, completed, refused, errors) = (
            consumer.clone(),
            done.clone(),
            completed.clone(),
            refused.clone(),
            errors.clone(),
        );
        std::thread::spawn(move || {
            let mut results: BTreeMap<MessageId, u32> = BTreeMap::new();
            while !done.load(Ordering::SeqCst) && start.elapsed() < LIMIT {
                let batch = match q.dequeue_with(
                    &DequeueOptions::new()
                        .max(16)
                        .wait(Duration::from_millis(200)),
                ) {
                    Ok(b) => b,
                    Err(Error::Unavailable { .. }) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Err(e) => panic!("dequeue: {e}"),
                };
                for d in batch {
                    match q.complete(d.receipt, &d.payload) {
                        Ok(()) => {
                            *results.entry(d.id).or_default() += 1;
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::StaleReceipt) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        // The delivery comes back after its lease.
                        Err(Error::Unavailable { .. }) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("complete: {e}"),
                    }
                }
            }
            results
        })
    };

    let mut ids: BTreeMap<u64, MessageId> = BTreeMap::new();
    let mut enqueue_errors = 0;
    let mut killed_at = None;
    let mut n = 0;
    while n < JOBS {
        assert!(start.elapsed() < LIMIT, "enqueue did not finish in time");
        if n == JOBS / 2 && killed_at.is_none() {
            cluster
                .node_mut(&leader)
                .expect("the leader is one of the nodes")
                .kill();
            killed_at = Some(Instant::now());
            println!("killed {leader} (kill -9) after {n} acknowledged enqueues");
        }
        let items: Vec<(Vec<u8>, EnqueueOptions)> = (n..n + BATCH)
            .map(|i| (payload(i), EnqueueOptions::new().key(format!("job-{i}"))))
            .collect();
        match producer.enqueue_batch_with(&items) {
            Ok(got) => {
                for (i, id) in (n..n + BATCH).zip(got) {
                    ids.insert(i, id);
                }
                n += BATCH;
            }
            Err(Error::Unavailable { .. }) => {
                enqueue_errors += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("enqueue: {e}"),
        }
    }
    let killed_at = killed_at.expect("the leader was killed");
    let new_leader = producer.stream_leader().ok().flatten();
    println!(
        "all {JOBS} enqueues acknowledged {:?} after the kill ({enqueue_errors} failed batches retried); new leader: {new_leader:?}",
        killed_at.elapsed()
    );
    assert_ne!(new_leader.as_deref(), Some(leader.as_str()));

    // Wait for every job's result, bounded.
    let distinct: BTreeSet<MessageId> = ids.values().copied().collect();
    assert_eq!(distinct.len() as u64, JOBS, "keys gave each job one id");
    let mut missing: Vec<MessageId> = distinct.iter().copied().collect();
    while !missing.is_empty() && start.elapsed() < LIMIT {
        missing.retain(|id| !matches!(producer.result(*id), Ok(Some(_))));
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    done.store(true, Ordering::SeqCst);
    consumer.wake_waiters();
    let per_job = worker.join().expect("worker thread");
    assert!(
        missing.is_empty(),
        "{} acknowledged jobs have no result after {LIMIT:?}: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (i, id) in &ids {
        assert_eq!(
            producer.result(*id).expect("result"),
            Some(payload(*i)),
            "job {i} (id {id}) has its own result"
        );
    }
    let twice: Vec<_> = per_job.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    // A complete that failed with `Unavailable` may still have stored its
    // result (the answer was lost, not the write); its redelivery's
    // complete is then refused. So `Ok` completes number at most one per
    // job, and every job has its one result (checked above).
    let ok = completed.load(Ordering::SeqCst);
    assert!(ok <= JOBS, "{ok} successful completes for {JOBS} jobs");
    println!(
        "{JOBS} jobs, each with exactly one result: {ok} completes returned Ok, {} stale completes refused, {} server errors retried, in {:?}",
        refused.load(Ordering::SeqCst),
        errors.load(Ordering::SeqCst),
        start.elapsed()
    );
    // The queue still serves after the failover.
    let id = producer
        .enqueue_with(b"after", &EnqueueOptions::new())
        .expect("enqueue after failover");
    let d = consumer
        .dequeue_with(&DequeueOptions::new().wait(Duration::from_secs(10)))
        .expect("dequeue after failover")
        .pop()
        .expect("delivered after failover");
    assert_eq!(d.id, id);
    consumer.complete(d.receipt, b"ok").expect("complete");

    // The killed node comes back on its store and the queue serves on.
    cluster
        .node_mut(&leader)
        .expect("the old leader")
        .restart()
        .unwrap_or_else(|e| panic!("{e}"));
    let id = producer
        .enqueue_with(b"after restart", &EnqueueOptions::new())
        .expect("enqueue after the restart");
    assert_eq!(producer.result(id).expect("result"), None);
    println!("{leader} restarted on its store; the queue still serves");
}
