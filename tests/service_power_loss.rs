//! Goal: under `Immediate`, what the service told a caller survives a
//! power loss, though it syncs once per step rather than once per write: a
//! submission that returned is found again by its key with every row, and
//! results a wait returned are read back, not computed again.
//! Method: the service's two queues on `MemoryStorage`s; the images a
//! power loss would leave (nothing unsynced survives) taken right after
//! the submission, and right after the wait, opened by a new service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::worker::{InferService, Model, ModelError, PoolOptions, RunOptions, ServiceOptions};

/// Adds one; counts the rows it computes.
#[derive(Default)]
struct Inc {
    rows: AtomicUsize,
}

impl Model for Inc {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "inc"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[u64]) -> Result<Vec<u64>, ModelError> {
        // Calls spread over tens of milliseconds, so the run's last results
        // are written after the committer's latest group commit.
        std::thread::sleep(Duration::from_millis(3));
        self.rows.fetch_add(rows.len(), Ordering::SeqCst);
        Ok(rows.iter().map(|x| x + 1).collect())
    }
}

fn open(jobs: &MemoryStorage, runs: &MemoryStorage) -> InferService {
    ServiceOptions::new()
        .pool(
            PoolOptions::new()
                .num_parallel(1)
                .max_batch(8)
                .linger(Duration::from_millis(1)),
        )
        .open_storage(
            Arc::new(jobs.clone()) as Arc<dyn Storage>,
            Arc::new(runs.clone()) as Arc<dyn Storage>,
        )
        .unwrap()
}

/// What a power loss leaves of both queues: only what was synced.
fn power_loss(jobs: &MemoryStorage, runs: &MemoryStorage) -> (MemoryStorage, MemoryStorage) {
    (
        jobs.crash(CrashPolicy::DropUnsynced),
        runs.crash(CrashPolicy::DropUnsynced),
    )
}

#[test]
fn a_returned_submission_and_a_returned_wait_survive_a_power_loss() {
    let rows: Vec<u64> = (0..100).collect();
    let want: Vec<u64> = rows.iter().map(|x| x + 1).collect();
    let (jobs, runs) = (MemoryStorage::new(), MemoryStorage::new());
    let service = open(&jobs, &runs);
    let model = Arc::new(Inc::default());
    let m = service.register(model.clone());
    let run = service
        .submit(&m, &rows, &RunOptions::new().key("k"))
        .unwrap();
    // The power goes the moment the submission returns.
    let (jobs_after_submit, runs_after_submit) = power_loss(&jobs, &runs);
    let out = run.wait_timeout(Duration::from_secs(60)).unwrap();
    let got: Vec<u64> = out.rows.iter().map(|r| r.output.clone().unwrap()).collect();
    assert_eq!(got, want);
    // ... or the moment the wait returns.
    let (jobs_after_wait, runs_after_wait) = power_loss(&jobs, &runs);
    service.close().unwrap();

    // After the submission: the run is found by its key, with all its rows.
    let again = open(&jobs_after_submit, &runs_after_submit);
    let m = again.register(Arc::new(Inc::default()));
    let found = again.find_run(&m, "k").unwrap().expect("the run survives");
    assert_eq!(found.id(), run.id());
    let out = found.wait_timeout(Duration::from_secs(60)).unwrap();
    let got: Vec<u64> = out.rows.iter().map(|r| r.output.clone().unwrap()).collect();
    assert_eq!(got, want);
    again.close().unwrap();

    // After the wait: every result is read back, none computed again.
    let again = open(&jobs_after_wait, &runs_after_wait);
    let fresh = Arc::new(Inc::default());
    let m = again.register(fresh.clone());
    let found = again.find_run(&m, "k").unwrap().expect("the run survives");
    let out = found.wait_timeout(Duration::from_secs(60)).unwrap();
    let got: Vec<u64> = out.rows.iter().map(|r| r.output.clone().unwrap()).collect();
    assert_eq!(got, want);
    assert_eq!(out.resumed, rows.len());
    assert_eq!(fresh.rows.load(Ordering::SeqCst), 0, "a result was lost");
    again.close().unwrap();
}
