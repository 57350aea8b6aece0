//! Goal: no call waits forever on a service whose queue failed: after a
//! failed sync poisons the jobs queue, `wait` and `parallel_infer`-style
//! waits return `InferError::Stalled` naming the failure, within a bounded
//! time, and a new submission is refused. Method: the service's queues on
//! a `MemoryStorage` whose syncs start failing (EIO) once a run is
//! submitted.

use std::sync::Arc;
use std::time::Duration;

use lanelog::storage::{Fault, FaultKind, FaultOps, MemoryStorage, Storage};
use lanelog::worker::{InferError, Model, ModelError, PoolOptions, RunOptions, ServiceOptions};

struct Echo;

impl Model for Echo {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "echo"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<u32>, ModelError> {
        Ok(rows.to_vec())
    }
}

#[test]
fn a_failed_sync_stalls_every_wait_with_its_cause() {
    let jobs = MemoryStorage::new();
    let runs = MemoryStorage::new();
    let service = ServiceOptions::new()
        .pool(
            PoolOptions::new()
                .max_batch(4)
                .linger(Duration::from_millis(1)),
        )
        .open_storage(
            Arc::new(jobs.clone()) as Arc<dyn Storage>,
            Arc::new(runs.clone()) as Arc<dyn Storage>,
        )
        .unwrap();
    let m = service.register(Arc::new(Echo));
    // Every sync of the jobs queue from now on fails: the first commit of a
    // result poisons it.
    jobs.set_fault(Some(Fault {
        at_call: jobs.calls_matching(FaultOps::Sync),
        kind: FaultKind::Eio,
        forever: true,
        only: FaultOps::Sync,
    }));
    let rows: Vec<u32> = (0..40).collect();
    // The submission's own sync fails, or a commit does: either way the
    // caller hears why, and nothing waits forever.
    let err = match service.submit(&m, &rows, &RunOptions::new()) {
        Ok(run) => run.wait_timeout(Duration::from_secs(60)).unwrap_err(),
        Err(e) => e,
    };
    match &err {
        InferError::Stalled(why) => assert!(why.contains("jobs queue failed"), "{why}"),
        InferError::Queue(e) => assert!(
            matches!(e, lanelog::Error::Io(_) | lanelog::Error::Poisoned),
            "{e:?}"
        ),
        other => panic!("expected Stalled or a queue error, got {other:?}"),
    }
    // Once poisoned, a new run is refused and a single row fails fast.
    assert!(service.submit(&m, &rows, &RunOptions::new()).is_err());
    assert!(service.infer_one(&m, &1, &RunOptions::new()).is_err());
    let _ = service.close();
}

/// Echoes; its first call waits until the test has set the fault.
struct Gated {
    gate: std::sync::Barrier,
    first: std::sync::Once,
}

impl Model for Gated {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "gated"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<u32>, ModelError> {
        self.first.call_once(|| {
            self.gate.wait();
        });
        Ok(rows.to_vec())
    }
}

#[test]
fn a_run_under_way_stalls_when_its_results_cannot_be_stored() {
    let jobs = MemoryStorage::new();
    let service = ServiceOptions::new()
        .pool(
            PoolOptions::new()
                .num_parallel(1)
                .max_batch(4)
                .linger(Duration::from_millis(1)),
        )
        .open_storage(
            Arc::new(jobs.clone()) as Arc<dyn Storage>,
            Arc::new(MemoryStorage::new()) as Arc<dyn Storage>,
        )
        .unwrap();
    let model = Arc::new(Gated {
        gate: std::sync::Barrier::new(2),
        first: std::sync::Once::new(),
    });
    let m = service.register(model.clone());
    let rows: Vec<u32> = (0..40).collect();
    let run = service.submit(&m, &rows, &RunOptions::new()).unwrap();
    // The submission is durable and the first call is under way; from now
    // on every sync fails, so its result cannot be stored.
    jobs.set_fault(Some(Fault {
        at_call: jobs.calls_matching(FaultOps::Sync),
        kind: FaultKind::Eio,
        forever: true,
        only: FaultOps::Sync,
    }));
    model.gate.wait();
    match run.wait_timeout(Duration::from_secs(60)) {
        Err(InferError::Stalled(why)) => assert!(why.contains("jobs queue failed"), "{why}"),
        other => panic!("expected Stalled, got {other:?}"),
    }
    // No result is handed out: none can be made durable.
    assert!(matches!(run.wait(), Err(InferError::Stalled(_))));
    let _ = service.close();
}
