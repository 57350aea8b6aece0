//! Goal: a pool stopped mid-run loses no row, never acks a job without its
//! result, and a later run collects every row's result exactly once, even
//! when a job ran twice. Method: (1) a `WorkerPool` dropped without
//! `shutdown` while a slow model works through its jobs, then a second
//! pool finishing them; (2) a child process running `parallel_infer` into
//! a directory, killed with SIGKILL mid-run, then the same call again in
//! this process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::worker::{
    codec, parallel_infer, InferOptions, JobRecord, Model, ModelError, PoolOptions, ResultRecord,
    WorkerPool,
};
use lanelog::{DequeueOptions, Durability, Queue, QueueOptions};

const CHILD_ENV: &str = "LANELOG_POOL_KILL_CHILD";
const TEST_NAME: &str = "a_sigkilled_run_resumes_with_every_row_once";

/// `3x + 1`, slowly (2 ms per batch); counts the rows it computed and, in
/// the child, prints a line per batch so the parent knows it is under way.
struct Slow {
    rows: AtomicU64,
    announce: bool,
}

impl Slow {
    fn new(announce: bool) -> Slow {
        Slow {
            rows: AtomicU64::new(0),
            announce,
        }
    }
}

impl Model for Slow {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "slow"
    }
    fn version(&self) -> &str {
        "v1"
    }
    fn infer(&self, rows: &[u64]) -> Result<Vec<u64>, ModelError> {
        std::thread::sleep(Duration::from_millis(2));
        self.rows.fetch_add(rows.len() as u64, Ordering::SeqCst);
        if self.announce {
            println!("@batch");
        }
        Ok(rows.iter().map(|x| 3 * x + 1).collect())
    }
}

fn pool_opts() -> PoolOptions {
    PoolOptions::new()
        .num_parallel(2)
        .max_batch(8)
        .linger(Duration::from_millis(1))
}

fn open(dir: &Path) -> Queue {
    QueueOptions::new()
        .durability(Durability::Immediate)
        .open(dir)
        .unwrap()
}

/// Every stored result, by row: how many times it is there and its outputs.
fn stored_results(results: &Queue) -> BTreeMap<u64, Vec<u64>> {
    let mut by_row: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let take = DequeueOptions::new().max(10_000);
    loop {
        let batch = results.dequeue_with(&take).unwrap();
        if batch.is_empty() {
            return by_row;
        }
        for d in batch {
            match codec::decode::<ResultRecord<u64>>(&d.payload).unwrap() {
                ResultRecord::Done { outcomes, .. } => {
                    for o in outcomes {
                        by_row.entry(o.row).or_default().push(o.output.unwrap());
                    }
                }
                ResultRecord::Started { .. } => {}
                other => panic!("unknown result record {other:?}"),
            }
            results.ack(d.receipt).unwrap();
        }
    }
}

#[test]
fn dropping_a_pool_mid_run_loses_no_row_and_acks_none_without_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs_dir, results_dir) = (dir.path().join("jobs"), dir.path().join("results"));
    let rows = 400u64;
    {
        let jobs = open(&jobs_dir);
        let payloads: Vec<Vec<u8>> = (0..rows)
            .map(|row| codec::encode(&JobRecord::single(1, row, 0, row)).unwrap())
            .collect();
        let refs: Vec<(&[u8], u8)> = payloads.iter().map(|p| (&p[..], 0)).collect();
        jobs.enqueue_batch(&refs).unwrap();
        let results = open(&results_dir);
        let model = Arc::new(Slow::new(false));
        let pool =
            WorkerPool::start(model.clone(), jobs.clone(), results.clone(), pool_opts()).unwrap();
        let t = Instant::now();
        while model.rows.load(Ordering::SeqCst) < 40 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(pool);
        // Mid-run: some jobs done, some not.
        let left = jobs.stats().ready + jobs.stats().in_flight;
        assert!(left > 0 && left < rows, "{left} of {rows} jobs left");
        // Every acked job has its result stored.
        let done = rows - left;
        assert!(
            results.stats().ready >= done,
            "{done} jobs acked, {} results",
            results.stats().ready
        );
        jobs.close().unwrap();
        results.close().unwrap();
    }
    // Reopen and finish with a new pool.
    let jobs = open(&jobs_dir);
    let results = open(&results_dir);
    let pool = WorkerPool::start(
        Arc::new(Slow::new(false)),
        jobs.clone(),
        results.clone(),
        pool_opts(),
    )
    .unwrap();
    let t = Instant::now();
    while jobs.stats().ready + jobs.stats().in_flight > 0 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown().unwrap();
    let by_row = stored_results(&results);
    assert_eq!(by_row.len() as u64, rows, "a result for every row");
    for (row, outs) in &by_row {
        // A job that ran twice has two equal results; collectors keep one.
        assert!(
            outs.iter().all(|&o| o == 3 * row + 1),
            "row {row}: {outs:?}"
        );
    }
}

#[test]
fn a_sigkilled_run_resumes_with_every_row_once() {
    let rows: Vec<u64> = (0..600).collect();
    let opts = |dir: &Path| InferOptions::new().pool(pool_opts()).dir(dir);
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // The child: runs until killed (or to the end, if the kill is late).
        let _ = parallel_infer(Arc::new(Slow::new(true)), &rows, &opts(Path::new(&dir)));
        return;
    }
    let mut resumed_somewhere = false;
    for (cycle, batches_before_kill) in [10usize, 25, 40].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = testkit::kill::Child::spawn(TEST_NAME, &[(CHILD_ENV, dir.path())]);
        let mut seen = 0;
        child.wait_for(Duration::from_secs(60), |l| {
            seen += usize::from(l == "@batch");
            seen >= batches_before_kill
        });
        child.kill(); // SIGKILL
        let model = Arc::new(Slow::new(false));
        let out = parallel_infer(model.clone(), &rows, &opts(dir.path())).unwrap();
        assert_eq!(out.rows.len(), rows.len(), "cycle {cycle}");
        assert_eq!(out.failed, 0, "cycle {cycle}");
        for (i, r) in out.rows.iter().enumerate() {
            assert_eq!(
                r.output.clone().unwrap(),
                Ok(3 * i as u64 + 1),
                "cycle {cycle} row {i}"
            );
        }
        let computed = model.rows.load(Ordering::SeqCst) as usize;
        assert!(
            computed + out.resumed >= rows.len(),
            "cycle {cycle}: {computed} computed + {} resumed < {}",
            out.resumed,
            rows.len()
        );
        eprintln!("cycle {cycle}: killed after {seen} model batches; {} rows resumed, {computed} computed again", out.resumed);
        resumed_somewhere |= out.resumed > 0;
        // Collected once: nothing of this run is left to find again.
        let again = parallel_infer(Arc::new(Slow::new(false)), &rows, &opts(dir.path())).unwrap();
        assert_eq!(again.resumed, 0, "cycle {cycle}: results left behind");
    }
    assert!(resumed_somewhere, "no kill landed mid-run");
}
