//! Goal: `InferService::stats` counts runs by state, rows per model and
//! lane, and latencies, and with the `metrics` feature the same counts
//! reach the `metrics` facade. Method: runs of a model that fails some rows
//! for good, in two lanes; a recorder installed as the global `metrics`
//! recorder (this file's only test, so nothing else records into it).

use std::sync::Arc;
use std::time::Duration;

use lanelog::worker::{Model, ModelError, PoolOptions, RunOptions, ServiceOptions};

/// Doubles; fails row values divisible by 7 for good.
struct Double;

impl Model for Double {
    type Input = u32;
    type Output = u32;
    fn name(&self) -> &str {
        "double"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[u32]) -> Result<Vec<u32>, ModelError> {
        if let Some(r) = rows.iter().find(|r| *r % 7 == 0) {
            return Err(ModelError::permanent(format!("{r} is a multiple of 7")));
        }
        Ok(rows.iter().map(|x| x * 2).collect())
    }
}

#[cfg(feature = "metrics")]
mod capture {
    //! A `metrics` recorder that adds up counters and counts histogram
    //! samples, by name and labels.
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };
    use parking_lot::Mutex;

    pub type Totals = Arc<Mutex<BTreeMap<String, u64>>>;

    struct Slot(String, Totals);

    impl CounterFn for Slot {
        fn increment(&self, value: u64) {
            *self.1.lock().entry(self.0.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.1.lock().insert(self.0.clone(), value);
        }
    }

    impl HistogramFn for Slot {
        fn record(&self, _value: f64) {
            *self.1.lock().entry(self.0.clone()).or_default() += 1;
        }
    }

    pub struct Capture(pub Totals);

    fn name(key: &Key) -> String {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Slot(name(key), self.0.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Slot(name(key), self.0.clone())))
        }
    }
}

#[test]
fn stats_count_runs_rows_per_lane_and_latencies() {
    #[cfg(feature = "metrics")]
    let totals: capture::Totals = Arc::default();
    #[cfg(feature = "metrics")]
    metrics::set_global_recorder(capture::Capture(totals.clone())).expect("first recorder");

    let dir = tempfile::tempdir().unwrap();
    let pool = PoolOptions::new()
        .num_parallel(2)
        .max_batch(8)
        .linger(Duration::from_millis(1));
    let service = ServiceOptions::new().pool(pool).open(dir.path()).unwrap();
    let m = service.register(Arc::new(Double));
    let s = service.stats();
    assert_eq!((s.runs_queued, s.runs_running, s.runs_done), (0, 0, 0));
    assert_eq!(s.workers, 2);

    // Lane 0: 1..=20 without multiples of 7 (all computed). Lane 5: 1..=20
    // (7 and 14 fail).
    let clean: Vec<u32> = (1..=20).filter(|x| x % 7 != 0).collect();
    let all: Vec<u32> = (1..=20).collect();
    let a = service.submit(&m, &clean, &RunOptions::new()).unwrap();
    let b = service
        .submit(&m, &all, &RunOptions::new().priority(5))
        .unwrap();
    let wait = Duration::from_secs(60);
    assert_eq!(a.wait_timeout(wait).unwrap().failed, 0);
    assert_eq!(b.wait_timeout(wait).unwrap().failed, 2);

    let s = service.stats();
    assert_eq!((s.runs_done, s.runs_failed), (1, 1), "{s:?}");
    assert_eq!((s.runs_queued, s.runs_running), (0, 0), "{s:?}");
    let lane = |l: u8| s.rows.iter().find(|r| r.lane == l).cloned().unwrap();
    assert_eq!((lane(0).done, lane(0).failed), (clean.len() as u64, 0));
    assert_eq!((lane(5).done, lane(5).failed), (18, 2));
    assert_eq!(
        (lane(5).model.as_str(), lane(5).version.as_str()),
        ("double", "1")
    );
    let rows = (clean.len() + all.len()) as u64;
    assert_eq!(s.queue_wait.count, rows);
    assert_eq!(s.end_to_end.count, rows);
    assert_eq!(s.inference.count, rows - 2, "computed rows only");
    assert!(s.end_to_end.p50 <= s.end_to_end.p99 && s.end_to_end.p99 <= s.end_to_end.max);
    assert!(s.queue_wait.p50 <= s.end_to_end.max);

    // A run found again is not counted twice.
    let again = service.run(&m, a.id()).unwrap();
    assert!(again.is_finished());
    assert_eq!(service.stats().runs_done, 1);
    service.close().unwrap();

    #[cfg(feature = "metrics")]
    {
        let t = totals.lock();
        let get = |k: &str| t.get(k).copied().unwrap_or(0);
        assert_eq!(
            get("lanelog_rows_total{lane=0,model=double,outcome=done}"),
            clean.len() as u64,
            "{t:?}"
        );
        assert_eq!(
            get("lanelog_rows_total{lane=5,model=double,outcome=done}"),
            18
        );
        assert_eq!(
            get("lanelog_rows_total{lane=5,model=double,outcome=failed}"),
            2
        );
        assert_eq!(get("lanelog_runs_total{outcome=done}"), 1);
        assert_eq!(get("lanelog_runs_total{outcome=failed}"), 1);
        assert_eq!(get("lanelog_queue_wait_seconds{model=double}"), rows);
        assert_eq!(get("lanelog_end_to_end_seconds{model=double}"), rows);
        assert_eq!(get("lanelog_inference_seconds{model=double}"), rows - 2);
        for name in lanelog::worker::METRIC_NAMES {
            assert!(
                t.keys().any(|k| k.starts_with(name)),
                "{name} missing: {t:?}"
            );
        }
    }
}
