//! The inference service and `parallel_infer` over NATS JetStream, against
//! real servers started on loopback (`testkit::nats`).
//!
//! Goals: the same rows come back over JetStream as over the embedded
//! queue; two services on the same two queues share one run's work and
//! the run still has each row once; a 3-node cluster with R3 streams that
//! loses its jobs stream's leader to `kill -9` in the middle of a run
//! still completes it, every row's result present once and right. Every
//! wait is bounded.

#![cfg(feature = "nats")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::nats::{JetStreamQueue, NatsOptions};
use lanelog::worker::{
    parallel_infer, parallel_infer_on, InferOptions, InferService, Model, ModelError, PoolOptions,
    RunOptions, ServiceOptions,
};
use lanelog::Error;
use testkit::nats::{Cluster, Server};
use testkit::watchdog::Watchdog;

/// Past this a test has hung (each passes in seconds to a minute).
const HUNG_AFTER: Duration = Duration::from_secs(300);

/// Squares its input, slowly enough (`pause` per call) that a run spans
/// several calls; fails row 13 for good.
struct Square {
    pause: Duration,
}

impl Model for Square {
    type Input = u32;
    type Output = u64;
    fn name(&self) -> &str {
        "square"
    }
    fn version(&self) -> &str {
        "v1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<u64>, ModelError> {
        std::thread::sleep(self.pause);
        if rows.contains(&13) {
            return Err(ModelError::permanent("row 13 is invalid"));
        }
        Ok(rows.iter().map(|&x| u64::from(x) * u64::from(x)).collect())
    }
}

fn pool() -> PoolOptions {
    PoolOptions::new()
        .num_parallel(2)
        .max_batch(8)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
}

/// One queue of a service, `role` under `prefix`, retried while a fresh
/// cluster settles its meta leader.
fn queue(url: &str, prefix: &str, role: &str, replicas: usize) -> JetStreamQueue {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match NatsOptions::new()
            .prefix(format!("{prefix}_{role}"))
            .replicas(replicas)
            .visibility_timeout(Duration::from_secs(3))
            .max_deliveries(0)
            .request_timeout(Duration::from_secs(2))
            .open(url)
        {
            Ok(q) => return q,
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

/// What a row came back as: its value, or its error's text.
fn outcome<E: std::fmt::Display>(r: &Result<u64, E>) -> Result<u64, String> {
    r.as_ref().map(|v| *v).map_err(|e| e.to_string())
}

#[test]
fn parallel_infer_over_one_node_gives_the_embedded_queues_rows() {
    let _hung = Watchdog::arm(
        "parallel_infer_over_one_node_gives_the_embedded_queues_rows",
        HUNG_AFTER,
    );
    let server = Server::start().unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<u32> = (0..100).collect();
    let model = Arc::new(Square {
        pause: Duration::ZERO,
    });
    let opts = InferOptions::new().pool(pool());
    let started = Instant::now();
    let embedded = parallel_infer(model.clone(), &rows, &opts).expect("embedded");
    let url = server.url();
    let over_nats = parallel_infer_on(
        queue(&url, "single", "jobs", 1),
        queue(&url, "single", "runs", 1),
        model,
        &rows,
        &opts,
    )
    .expect("over JetStream");
    let a: Vec<_> = embedded
        .rows
        .iter()
        .map(|r| outcome(r.output.as_ref().expect("output column")))
        .collect();
    let b: Vec<_> = over_nats
        .rows
        .iter()
        .map(|r| outcome(r.output.as_ref().expect("output column")))
        .collect();
    assert_eq!(a.len(), 100);
    assert_eq!(a, b, "the same rows over JetStream as embedded");
    assert_eq!(b[12], Ok(144));
    assert!(b[13]
        .as_ref()
        .is_err_and(|e| e.contains("row 13 is invalid")));
    assert_eq!(over_nats.failed, 1);
    println!("both runs in {:?}", started.elapsed());
}

#[test]
fn two_services_on_the_same_queues_share_one_run() {
    let _hung = Watchdog::arm("two_services_on_the_same_queues_share_one_run", HUNG_AFTER);
    let server = Server::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let open = |name: &str| -> InferService<JetStreamQueue> {
        ServiceOptions::new()
            .pool(pool())
            .pipeline_version(name)
            .open_nats(
                &url,
                &NatsOptions::new()
                    .prefix("shared")
                    .visibility_timeout(Duration::from_secs(3)),
            )
            .expect("open the service")
    };
    let a = open("a");
    let b = open("b");
    let model = Arc::new(Square {
        pause: Duration::from_millis(20),
    });
    let on_a = a.register(model.clone());
    let _on_b = b.register(model);
    let rows: Vec<u32> = (0..400).collect();
    let run = a
        .submit(&on_a, &rows, &RunOptions::new().key("shared-run"))
        .expect("submit");
    let out = run.wait_timeout(Duration::from_secs(60)).expect("the run");
    assert_eq!(out.rows.len(), rows.len());
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for (i, row) in out.rows.iter().enumerate() {
        if i == 13 {
            assert!(row.output.is_err(), "row 13 fails");
            continue;
        }
        assert_eq!(row.output.as_ref().ok(), Some(&(i as u64 * i as u64)));
        let meta = row.metadata.as_ref().expect("a computed row has metadata");
        *by.entry(meta.pipeline_version.to_string()).or_default() += 1;
    }
    println!("rows computed per service: {by:?}");
    assert_eq!(by.values().sum::<usize>(), 399);
    assert!(
        by.len() == 2,
        "both services computed rows of the run: {by:?}"
    );
    // The other service finds the same run by its key, every row stored.
    let on_b = b.register(Arc::new(Square {
        pause: Duration::ZERO,
    }));
    let again = b
        .find_run(&on_b, "shared-run")
        .expect("find")
        .expect("the run is found by its key");
    let again = again.wait_timeout(Duration::from_secs(30)).expect("read");
    let first: Vec<_> = out.rows.iter().map(|r| outcome(&r.output)).collect();
    let second: Vec<_> = again.rows.iter().map(|r| outcome(&r.output)).collect();
    assert_eq!(first, second);
    a.close().expect("close a");
    b.close().expect("close b");
}

#[test]
fn a_run_survives_killing_the_jobs_stream_leader() {
    let _hung = Watchdog::arm("a_run_survives_killing_the_jobs_stream_leader", HUNG_AFTER);
    let start = Instant::now();
    let mut cluster = Cluster::start(3).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let jobs = queue(&url, "failover", "jobs", 3);
    let runs = queue(&url, "failover", "runs", 3);
    let leader = jobs
        .stream_leader()
        .expect("stream info")
        .expect("an R3 stream has a leader");
    let service = ServiceOptions::new()
        .pool(pool())
        .open_queues(jobs.clone(), runs)
        .expect("open the service");
    let model = service.register(Arc::new(Square {
        pause: Duration::from_millis(10),
    }));
    let rows: Vec<u32> = (0..800).collect();
    let run = service
        .submit(&model, &rows, &RunOptions::new().key("failover-run"))
        .expect("submit");
    // Kill the leader once part of the run is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.progress().done < 200 {
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = run.progress();
    cluster
        .node_mut(&leader)
        .expect("the leader is one of the nodes")
        .kill();
    println!(
        "killed {leader} (kill -9) at {before:?}, {:?} after start",
        start.elapsed()
    );
    let out = run
        .wait_timeout(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("the run after the failover: {e}; {:?}", service.errors()));
    assert_eq!(out.rows.len(), rows.len(), "one result per row");
    for (i, row) in out.rows.iter().enumerate() {
        if i == 13 {
            assert!(row.output.is_err(), "row 13 fails");
        } else {
            assert_eq!(
                row.output.as_ref().ok(),
                Some(&(i as u64 * i as u64)),
                "row {i} has its own result"
            );
        }
    }
    println!(
        "run of {} rows complete {:?} after start; new leader {:?}; errors survived: {}",
        rows.len(),
        start.elapsed(),
        jobs.stream_leader().ok().flatten(),
        service.errors().len()
    );
    service.close().expect("close");
}
