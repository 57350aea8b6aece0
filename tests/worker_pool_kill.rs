//! Goal: a service stopped mid-run loses no row, never acks a job without
//! its result, and the run found again later comes back with every row's
//! result exactly once. Method: (1) an `InferService` dropped without
//! `close` while a slow model works through a run, then a second service
//! on the directory finding the run by its key and finishing it; (2) a
//! child process running `parallel_infer` into a directory, killed with
//! SIGKILL mid-run (once its directory holds a stored result, read through
//! the lock-free `Inspector`), then the same call again in this process.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::worker::{
    parallel_infer, InferOptions, Model, ModelError, PoolOptions, RunOptions, ServiceOptions,
};

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

#[test]
fn dropping_a_service_mid_run_loses_no_row_and_acks_none_without_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<u64> = (0..400).collect();
    let service_opts = || ServiceOptions::new().pool(pool_opts());
    let first_id = {
        let service = service_opts().open(dir.path()).unwrap();
        let model = Arc::new(Slow::new(false));
        let m = service.register(model.clone());
        let run = service
            .submit(&m, &rows, &RunOptions::new().key("nightly"))
            .unwrap();
        let t = Instant::now();
        while model.rows.load(Ordering::SeqCst) < 40 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let id = run.id();
        drop(run);
        drop(service);
        id
    };
    // Mid-run: some jobs done, some not; every job that left the queue
    // left it with its result (complete), none by a bare ack.
    {
        let jobs = lanelog::Queue::open(dir.path().join("jobs")).unwrap();
        let s = jobs.stats();
        assert!(s.ready + s.in_flight > 0 && s.results > 0, "{s:?}");
        assert_eq!(s.acked_total, s.results, "{s:?}");
        jobs.close().unwrap();
    }
    // A new service finds the run by its key and finishes it.
    let service = service_opts().open(dir.path()).unwrap();
    let model = Arc::new(Slow::new(false));
    let m = service.register(model.clone());
    let run = service
        .find_run(&m, "nightly")
        .unwrap()
        .expect("the run is stored");
    assert_eq!(run.id(), first_id);
    let before = run.progress();
    assert!(before.done > 0 && before.done < rows.len(), "{before:?}");
    let out = run.wait_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(out.resumed, before.done);
    assert_eq!(out.failed, 0);
    for (i, r) in out.rows.iter().enumerate() {
        assert_eq!(r.output, Ok(3 * i as u64 + 1), "row {i}");
    }
    // Only the rows not done before were computed (a job in flight at the
    // drop may run twice; its first result is kept).
    let computed = model.rows.load(Ordering::SeqCst) as usize;
    assert!(
        computed + before.done >= rows.len() && computed < rows.len(),
        "{computed} computed, {} done before",
        before.done
    );
    // The same run by id gives the same table.
    // (The time to store a result is known only to the process that
    // stored it; the rest of each row is as stored.)
    let again = service.run(&m, first_id).unwrap().wait().unwrap();
    let outputs = |o: &lanelog::worker::RunOutput<u64>| -> Vec<_> {
        o.rows.iter().map(|r| (r.output.clone(), r.time)).collect()
    };
    assert!(outputs(&again) == outputs(&out), "the stored table differs");
    service.close().unwrap();
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
    for (cycle, batches_before_kill) in [10usize, 25, 40].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = testkit::kill::Child::spawn(TEST_NAME, &[(CHILD_ENV, dir.path())]);
        let mut seen = 0;
        child.wait_for(Duration::from_secs(60), |l| {
            seen += usize::from(l == "@batch");
            seen >= batches_before_kill
        });
        // A kill before any result is stored would resume nothing (a slow
        // disk can hold the first commit back past many model calls): wait
        // until the directory shows one, then kill.
        assert!(
            wait_until_stored(dir.path(), Duration::from_secs(60)),
            "cycle {cycle}: no result stored in 60 s"
        );
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
        assert!(
            out.resumed > 0,
            "cycle {cycle}: a stored result was not resumed"
        );
        // Stored: the same call again computes nothing.
        let model = Arc::new(Slow::new(false));
        let again = parallel_infer(model.clone(), &rows, &opts(dir.path())).unwrap();
        assert_eq!(again.resumed, rows.len(), "cycle {cycle}");
        assert_eq!(model.rows.load(Ordering::SeqCst), 0, "cycle {cycle}");
    }
}

/// Whether, within `timeout`, the run in `dir` (written by another process)
/// has its manifest and at least one job's result stored: then a resume
/// finds the run and something done.
fn wait_until_stored(dir: &Path, timeout: Duration) -> bool {
    let stats =
        |queue: &str| lanelog::inspect::Inspector::open(dir.join(queue)).and_then(|i| i.stats());
    let t = Instant::now();
    while t.elapsed() < timeout {
        // A read beside the writer may see a half-written tail and fail:
        // that is a read to try again, not an answer.
        if let (Ok(jobs), Ok(runs)) = (stats("jobs"), stats("runs")) {
            if jobs.results > 0 && runs.ready + runs.in_flight + runs.acked_total > 0 {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}
