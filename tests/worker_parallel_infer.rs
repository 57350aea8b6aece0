//! Goal: `parallel_infer` returns every row's result once, in input order,
//! through retries, timeouts, panics and restarts. Method: test models that
//! fail, stall or panic on chosen rows, run with several pool shapes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanelog::worker::{
    parallel_infer, Column, InferError, InferOptions, Model, ModelError, PoolOptions,
};

/// Squares its input; fails, stalls or panics on the rows it is told to.
#[derive(Default)]
struct Square {
    fail_always: Vec<u32>,
    fail_first: Vec<u32>,
    stall_first: Vec<u32>,
    panic_on: Vec<u32>,
    calls: AtomicU32,
    seen_fail: parking_lot::Mutex<Vec<u32>>,
    seen_stall: parking_lot::Mutex<Vec<u32>>,
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
        self.calls.fetch_add(1, Ordering::SeqCst);
        for r in rows {
            if self.panic_on.contains(r) {
                panic!("row {r} makes the model panic");
            }
            if self.fail_always.contains(r) {
                return Err(ModelError::permanent(format!("row {r} is invalid")));
            }
            if self.fail_first.contains(r) && !self.seen_fail.lock().contains(r) {
                self.seen_fail.lock().push(*r);
                return Err(ModelError::transient(format!("row {r} failed once")));
            }
            if self.stall_first.contains(r) && !self.seen_stall.lock().contains(r) {
                self.seen_stall.lock().push(*r);
                std::thread::sleep(Duration::from_secs(3));
            }
        }
        Ok(rows.iter().map(|&x| u64::from(x) * u64::from(x)).collect())
    }
}

fn fast_pool() -> PoolOptions {
    PoolOptions::new()
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .linger(Duration::from_millis(1))
}

fn outputs(r: &lanelog::worker::InferResult<u32, u64>) -> Vec<Result<u64, String>> {
    r.rows
        .iter()
        .map(|row| row.output.clone().unwrap().map_err(|e| e.message))
        .collect()
}

#[test]
fn results_come_back_in_input_order_for_any_pool_shape() {
    let rows: Vec<u32> = (0..500).collect();
    let want: Vec<Result<u64, String>> = rows
        .iter()
        .map(|&x| Ok(u64::from(x) * u64::from(x)))
        .collect();
    for (workers, batch) in [(1, 1), (2, 7), (4, 64), (3, 1000)] {
        let opts = InferOptions::new()
            .pool(fast_pool().num_parallel(workers).max_batch(batch))
            .dataset_include(&[Column::Metadata]);
        let out = parallel_infer(Arc::new(Square::default()), &rows, &opts).unwrap();
        assert_eq!(outputs(&out), want, "{workers} workers, batches of {batch}");
        assert_eq!(out.failed, 0);
        let meta = out.rows[0].metadata.as_ref().unwrap();
        assert_eq!(
            (&*meta.model_name, &*meta.model_version, meta.attempt),
            ("square", "v1", 1)
        );
        assert!(meta.batch_rows as usize <= batch);
    }
}

#[test]
fn failures_retry_then_dead_letter_and_the_rest_completes() {
    // Batches of 1 (one job per row) and of 8 (jobs of 8 rows, whose
    // failed rows are split off into one-row jobs).
    for batch in [1, 8] {
        let model = Square {
            fail_always: vec![3],
            fail_first: vec![5],
            panic_on: vec![8],
            ..Square::default()
        };
        let rows: Vec<u32> = (0..20).collect();
        let dir = tempfile::tempdir().unwrap();
        let opts = InferOptions::new()
            .dataset_include(&[Column::Metadata])
            .pool(fast_pool().max_batch(batch).retries(2))
            .dir(dir.path());
        let out = parallel_infer(Arc::new(model), &rows, &opts).unwrap();
        let outs = outputs(&out);
        assert_eq!(outs[3], Err("row 3 is invalid".into()), "batch {batch}");
        assert!(
            outs[8].as_ref().unwrap_err().contains("panicked"),
            "{:?}",
            outs[8]
        );
        assert_eq!(outs[5], Ok(25), "a row failing once succeeds on retry");
        assert_eq!(out.rows[5].metadata.as_ref().unwrap().attempt, 2);
        // Row 3 fails permanently: never retried. Row 8 panics (transient):
        // 1 try + 2 retries.
        assert_eq!(
            out.rows[3].metadata.as_ref().unwrap().attempt,
            1,
            "batch {batch}"
        );
        assert_eq!(
            out.rows[3].output.clone().unwrap().unwrap_err().kind,
            lanelog::worker::ErrorKind::Permanent
        );
        assert_eq!(
            out.rows[8].metadata.as_ref().unwrap().attempt,
            3,
            "1 try + 2 retries (batch {batch})"
        );
        assert_eq!(out.failed, 2);
        for (i, o) in outs.iter().enumerate().filter(|(i, _)| ![3, 8].contains(i)) {
            assert_eq!(*o, Ok((i * i) as u64));
        }
        // Each failed row is a dead letter of its own, with the error.
        let jobs = lanelog::Queue::open(dir.path().join("jobs")).unwrap();
        let mut reasons: Vec<String> = jobs
            .dead_letters()
            .unwrap()
            .into_iter()
            .map(|d| d.reason)
            .collect();
        reasons.sort();
        assert_eq!(reasons.len(), 2, "batch {batch}: {reasons:?}");
        // Each reason names the kind of failure, then the model's error.
        assert_eq!(reasons[0], "permanent: row 3 is invalid");
        assert!(
            reasons[1].starts_with("transient: model panicked: row 8 makes the model panic"),
            "{reasons:?}"
        );
        assert_eq!(jobs.stats().ready + jobs.stats().in_flight, 0);
    }
}

#[test]
fn a_stalled_batch_times_out_and_is_retried() {
    for batch in [1, 8] {
        let model = Square {
            stall_first: vec![2],
            ..Square::default()
        };
        let rows: Vec<u32> = (0..6).collect();
        let opts = InferOptions::new()
            .dataset_include(&[Column::Metadata])
            .pool(
                fast_pool()
                    .max_batch(batch)
                    .timeout(Duration::from_millis(200))
                    .lease(Duration::from_millis(90)),
            );
        let out = parallel_infer(Arc::new(model), &rows, &opts).unwrap();
        let want: Vec<Result<u64, String>> = (0..6u64).map(|x| Ok(x * x)).collect();
        assert_eq!(outputs(&out), want, "batch {batch}");
        assert_eq!(out.rows[2].metadata.as_ref().unwrap().attempt, 2);
    }
}

#[test]
fn failure_budget_stops_early() {
    let model = Square {
        fail_always: (0..50).collect(),
        ..Square::default()
    };
    let rows: Vec<u32> = (0..100).collect();
    let opts = InferOptions::new()
        .pool(fast_pool().retries(0))
        .failure_budget(0.1);
    match parallel_infer(Arc::new(model), &rows, &opts) {
        Err(InferError::FailureBudget { failed, rows }) => assert!(failed > 10 && rows == 100),
        other => panic!("expected FailureBudget, got {other:?}"),
    }
}

#[test]
fn columns_validations_and_bad_options() {
    let rows: Vec<u32> = (0..10).collect();
    let opts = InferOptions::new()
        .pool(fast_pool())
        .validation("big", |o: &u64| *o > 50)
        .validation("odd", |o: &u64| o % 2 == 1)
        .dataset_exclude(&[Column::Input, Column::Metadata]);
    let out = parallel_infer(Arc::new(Square::default()), &rows, &opts).unwrap();
    let r9 = &out.rows[9];
    assert!(r9.input.is_none() && r9.metadata.is_none());
    assert_eq!(r9.anomaly_count, Some(2));
    assert_eq!(
        r9.anomalies.as_deref(),
        Some(&["big".to_string(), "odd".to_string()][..])
    );
    assert_eq!(out.rows[2].anomaly_count, Some(0));
    let only_time = InferOptions::new().pool(fast_pool()).dataset(&[]);
    let out = parallel_infer(Arc::new(Square::default()), &rows, &only_time).unwrap();
    assert!(out.rows.iter().all(|r| r.output.is_none() && r.time.0 > 0));
    // The default dataset is Wallaroo's "*": time, in, out, anomaly;
    // metadata only when asked for.
    let default = InferOptions::new().pool(fast_pool());
    let out = parallel_infer(Arc::new(Square::default()), &rows, &default).unwrap();
    let r = &out.rows[3];
    assert!(r.input.is_some() && r.output.is_some() && r.anomaly_count.is_some());
    assert!(r.metadata.is_none());
    let with_meta = default.clone().dataset_include(&[Column::Metadata]);
    let out = parallel_infer(Arc::new(Square::default()), &rows, &with_meta).unwrap();
    let m = out.rows[3].metadata.clone().unwrap();
    assert_eq!((&*m.model_name, m.model_sha.as_deref()), ("square", None));
    assert!(m.partition.starts_with("worker-") && m.pipeline_version.starts_with("lanelog-"));
    // Excluding time is an error, as in Wallaroo.
    let no_time = InferOptions::new()
        .pool(fast_pool())
        .dataset_exclude(&[Column::Time]);
    match parallel_infer(Arc::new(Square::default()), &rows, &no_time) {
        Err(InferError::InvalidArgument(m)) => assert!(m.contains("time"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    for bad in [
        fast_pool().num_parallel(0),
        fast_pool().max_batch(0),
        fast_pool().worker_nice(20),
    ] {
        let opts = InferOptions::new().pool(bad);
        assert!(matches!(
            parallel_infer(Arc::new(Square::default()), &rows, &opts),
            Err(InferError::InvalidArgument(_))
        ));
    }
}

#[test]
fn a_resumed_call_collects_stored_results_once() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<u32> = (0..300).collect();
    let opts = InferOptions::new().pool(fast_pool()).dir(dir.path());
    let first = parallel_infer(Arc::new(Square::default()), &rows, &opts).unwrap();
    assert_eq!(first.resumed, 0);
    // The same table again is the same run: its stored results come back
    // and nothing is computed again.
    let model = Arc::new(Square::default());
    let again = parallel_infer(model.clone(), &rows, &opts).unwrap();
    assert_eq!(outputs(&again), outputs(&first));
    assert_eq!(again.resumed, 300);
    assert_eq!(again.run, first.run);
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
    // Another table is another run.
    let other: Vec<u32> = (1..301).collect();
    let third = parallel_infer(model.clone(), &other, &opts).unwrap();
    assert_ne!(third.run, first.run);
    assert_eq!(third.resumed, 0);
}

/// Sums the bytes of each row.
struct ByteSum;

impl Model for ByteSum {
    type Input = Vec<u8>;
    type Output = u64;
    fn name(&self) -> &str {
        "byte-sum"
    }
    fn version(&self) -> &str {
        "v1"
    }
    fn infer(&self, rows: &[Vec<u8>]) -> Result<Vec<u64>, ModelError> {
        Ok(rows
            .iter()
            .map(|r| r.iter().map(|&b| u64::from(b)).sum())
            .collect())
    }
}

#[test]
fn a_table_larger_than_a_segment_runs_through_durable_queues() {
    // 2,000 rows of 5 KiB: 10 MB of jobs, more than one 4 MiB segment
    // holds (a batch of 1,024 such rows would be refused as too large), so
    // the jobs must go in in several smaller batches.
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Vec<u8>> = (0..2000u32).map(|i| vec![(i % 251) as u8; 5120]).collect();
    let opts = InferOptions::new()
        .pool(fast_pool().max_batch(256))
        .dir(dir.path());
    let out = parallel_infer(Arc::new(ByteSum), &rows, &opts).unwrap();
    assert_eq!(out.failed, 0);
    for (i, row) in out.rows.iter().enumerate() {
        let want = u64::from((i % 251) as u8) * 5120;
        assert_eq!(row.output.clone().unwrap(), Ok(want), "row {i}");
    }
}

/// Returns 2 MB for row 1 (more than the run's 1 MiB segments hold), 10
/// bytes for the others.
struct Blob;

impl Model for Blob {
    type Input = u32;
    type Output = Vec<u8>;
    fn name(&self) -> &str {
        "blob"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<Vec<u8>>, ModelError> {
        Ok(rows
            .iter()
            .map(|&r| vec![r as u8; if r == 1 { 2_000_000 } else { 10 }])
            .collect())
    }
}

#[test]
fn a_result_too_large_to_store_fails_its_row_and_the_rest_completes() {
    for batch in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<u32> = (0..6).collect();
        let opts = InferOptions::new()
            .pool(fast_pool().max_batch(batch))
            .dir(dir.path());
        let out = parallel_infer(Arc::new(Blob), &rows, &opts).unwrap();
        let err = out.rows[1].output.clone().unwrap().err();
        let err = err.expect("row 1 failed (its 2 MB result was not stored)");
        assert!(err.message.contains("too large to store"), "{err}");
        assert_eq!(err.kind, lanelog::worker::ErrorKind::Permanent);
        for i in [0usize, 2, 3, 4, 5] {
            assert_eq!(out.rows[i].output.clone().unwrap(), Ok(vec![i as u8; 10]));
        }
        assert_eq!(out.failed, 1, "batch {batch}");
        // Its job completed (the other rows' results are stored with it).
        let jobs = lanelog::Queue::open(dir.path().join("jobs")).unwrap();
        assert!(jobs.dead_letters().unwrap().is_empty(), "batch {batch}");
        assert_eq!(jobs.stats().ready + jobs.stats().in_flight, 0);
    }
}

/// Outputs vectors of one to three numbers (by row); fails any call that
/// holds row 13, so that call's rows run alone and their outputs, of
/// several widths, are stored together.
struct Ragged;

impl Model for Ragged {
    type Input = u32;
    type Output = Vec<f32>;
    fn name(&self) -> &str {
        "ragged"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
        if rows.contains(&13) {
            return Err(ModelError::permanent("row 13"));
        }
        Ok(rows
            .iter()
            .map(|&x| (0..=x % 3).map(|k| (x * 10 + k) as f32).collect())
            .collect())
    }
}

#[test]
fn rows_run_alone_with_outputs_of_several_widths_come_back_whole() {
    let rows: Vec<u32> = (0..40).collect();
    let opts = InferOptions::new().pool(fast_pool().max_batch(8).retries(0));
    let out = parallel_infer(Arc::new(Ragged), &rows, &opts).unwrap();
    assert_eq!(out.failed, 1);
    for (x, r) in rows.iter().zip(&out.rows) {
        let got = r.output.clone().unwrap();
        if *x == 13 {
            assert_eq!(got.unwrap_err().kind, lanelog::worker::ErrorKind::Permanent);
        } else {
            let want: Vec<f32> = (0..=x % 3).map(|k| (x * 10 + k) as f32).collect();
            assert_eq!(got, Ok(want), "row {x}");
        }
    }
}

/// Squares its input, but a call with row 3 in it never returns (a model
/// stuck for good: a deadlock in its runtime, a device that never
/// answers).
struct NeverReturnsOn3;

impl Model for NeverReturnsOn3 {
    type Input = u32;
    type Output = u64;
    fn name(&self) -> &str {
        "never-returns"
    }
    fn version(&self) -> &str {
        "v1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<u64>, ModelError> {
        if rows.contains(&3) {
            loop {
                std::thread::park();
            }
        }
        Ok(rows.iter().map(|&x| u64::from(x) * u64::from(x)).collect())
    }
}

#[test]
fn a_call_that_never_returns_is_given_up_on_and_its_worker_replaced() {
    // A hang here is the bug this test is for: fail it by name.
    let _bound = testkit::watchdog::Watchdog::arm(
        "a_call_that_never_returns_is_given_up_on_and_its_worker_replaced",
        Duration::from_secs(120),
    );
    let rows: Vec<u32> = (0..8).collect();
    for batch in [1, 4] {
        // One worker: every row after the stuck call is computed by the
        // workers that replace it.
        let opts = InferOptions::new().pool(
            fast_pool()
                .num_parallel(1)
                .max_batch(batch)
                .timeout(Duration::from_millis(100))
                .timeout_backoff(Duration::from_millis(1), Duration::from_millis(5))
                .retries(1),
        );
        let out = parallel_infer(Arc::new(NeverReturnsOn3), &rows, &opts).unwrap();
        for (i, row) in outputs(&out).into_iter().enumerate() {
            if i == 3 {
                let e = row.expect_err("row 3 never gets a result");
                assert!(e.starts_with("timed out after 100ms"), "{e}");
            } else {
                assert_eq!(
                    row,
                    Ok((i * i) as u64),
                    "row {i}, batch {batch}: {:?}",
                    outputs(&out)
                );
            }
        }
        assert_eq!(out.failed, 1, "batch {batch}");
    }
}

/// The nice value of the calling thread (field 19 of its stat line).
#[cfg(target_os = "linux")]
fn thread_nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}

/// Answers every row with the nice value of the thread it ran on.
#[cfg(target_os = "linux")]
struct NiceProbe;

#[cfg(target_os = "linux")]
impl Model for NiceProbe {
    type Input = u32;
    type Output = i64;
    fn name(&self) -> &str {
        "nice-probe"
    }
    fn version(&self) -> &str {
        "v1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<i64>, ModelError> {
        Ok(rows.iter().map(|_| thread_nice()).collect())
    }
}

#[test]
#[cfg(target_os = "linux")]
fn worker_nice_lowers_the_model_threads_priority_and_no_other() {
    let caller = thread_nice();
    let rows: Vec<u32> = (0..40).collect();
    for (nice, want) in [(0, caller), (4, (caller + 4).min(19)), (19, 19)] {
        let opts = InferOptions::new().pool(fast_pool().worker_nice(nice));
        let out = parallel_infer(Arc::new(NiceProbe), &rows, &opts).unwrap();
        assert_eq!(out.failed, 0);
        for r in &out.rows {
            assert_eq!(r.output, Some(Ok(want)), "worker_nice({nice})");
        }
        assert_eq!(thread_nice(), caller, "the caller's priority is its own");
    }
}
