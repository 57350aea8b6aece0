//! What a service reports about itself: [`ServiceStats`] from
//! [`InferService::stats`](super::InferService::stats), recorded by
//! [`Recorder`] as the committer settles jobs and as runs finish, and, with
//! the `metrics` feature, exported through the `metrics` facade under the
//! names in [`METRIC_NAMES`].
//!
//! Invariant: every row settled by this process is recorded once, when the
//! committer has made its outcome durable; rows read back from the queue
//! (a run found again) are not recorded again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// The metric names exported with the `metrics` feature: counters
/// `lanelog_rows_total` (labels `model`, `lane`, `outcome` = `done` or
/// `failed`) and `lanelog_runs_total` (label `outcome` = `done` or
/// `failed`); histograms in seconds `lanelog_queue_wait_seconds`,
/// `lanelog_inference_seconds` and `lanelog_end_to_end_seconds` (label
/// `model`).
pub const METRIC_NAMES: [&str; 5] = [
    "lanelog_rows_total",
    "lanelog_runs_total",
    "lanelog_queue_wait_seconds",
    "lanelog_inference_seconds",
    "lanelog_end_to_end_seconds",
];

/// Rows settled for one model in one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowCount {
    /// The model's name.
    pub model: String,
    /// Its version.
    pub version: String,
    /// The lane (the run's priority).
    pub lane: u8,
    /// Rows computed.
    pub done: u64,
    /// Rows failed for good.
    pub failed: u64,
}

/// A latency distribution, summarized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Rows measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// A service's counters since it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStats {
    /// Runs held by a caller here with no row done yet.
    pub runs_queued: usize,
    /// Runs held by a caller here with rows done and rows to go.
    pub runs_running: usize,
    /// Runs finished with every row computed.
    pub runs_done: u64,
    /// Runs finished with failed rows, cancelled or over their failure
    /// budget.
    pub runs_failed: u64,
    /// Rows settled, per model and lane.
    pub rows: Vec<RowCount>,
    /// From a row's enqueue to its model call.
    pub queue_wait: Latency,
    /// The model call holding the row.
    pub inference: Latency,
    /// From a row's enqueue to its result stored.
    pub end_to_end: Latency,
    /// Jobs held because no registered model takes them.
    pub held_jobs: usize,
    /// Workers running.
    pub workers: usize,
}

/// µs histograms: 1 µs to one hour, 2 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

fn summarize(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
    Latency {
        count: h.len(),
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: Duration::from_micros(h.max()),
    }
}

struct Histograms {
    queue_wait: Histogram<u64>,
    inference: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

/// (model name, version, lane) -> (rows done, rows failed).
type RowTotals = BTreeMap<(String, String, u8), (u64, u64)>;

/// Records what the committer settles and how runs end.
pub(crate) struct Recorder {
    rows: Mutex<RowTotals>,
    latency: Mutex<Histograms>,
    runs_done: AtomicU64,
    runs_failed: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            rows: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histograms {
                queue_wait: histogram(),
                inference: histogram(),
                end_to_end: histogram(),
            }),
            runs_done: AtomicU64::new(0),
            runs_failed: AtomicU64::new(0),
        }
    }
}

/// One settled job's rows, for [`Recorder::job`].
pub(crate) struct JobRows<'a> {
    pub model: (&'a str, &'a str),
    pub lane: u8,
    pub done: u64,
    pub failed: u64,
    pub queue_us: u64,
    /// The model time of the calls that computed the rows, as (µs, rows
    /// computed by calls of that time).
    pub infer_us: &'a [(u64, u64)],
    pub end_to_end_us: u64,
}

impl Recorder {
    pub fn job(&self, j: &JobRows<'_>) {
        if j.done + j.failed == 0 {
            return;
        }
        {
            let mut rows = self.rows.lock();
            let e = rows
                .entry((j.model.0.to_string(), j.model.1.to_string(), j.lane))
                .or_default();
            e.0 += j.done;
            e.1 += j.failed;
        }
        {
            let mut h = self.latency.lock();
            let n = j.done + j.failed;
            let _ = h.queue_wait.record_n(j.queue_us.max(1), n);
            let _ = h.end_to_end.record_n(j.end_to_end_us.max(1), n);
            for &(us, n) in j.infer_us {
                let _ = h.inference.record_n(us.max(1), n);
            }
        }
        #[cfg(feature = "metrics")]
        export(j);
    }

    pub fn run_finished(&self, failed: bool) {
        let counter = if failed {
            &self.runs_failed
        } else {
            &self.runs_done
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("lanelog_runs_total", "outcome" => if failed { "failed" } else { "done" })
            .increment(1);
    }

    /// Counters so far; the caller fills in the live parts.
    pub fn snapshot(
        &self,
        runs_queued: usize,
        runs_running: usize,
        held_jobs: usize,
        workers: usize,
    ) -> ServiceStats {
        let rows = self
            .rows
            .lock()
            .iter()
            .map(|((model, version, lane), &(done, failed))| RowCount {
                model: model.clone(),
                version: version.clone(),
                lane: *lane,
                done,
                failed,
            })
            .collect();
        let h = self.latency.lock();
        ServiceStats {
            runs_queued,
            runs_running,
            runs_done: self.runs_done.load(Ordering::Relaxed),
            runs_failed: self.runs_failed.load(Ordering::Relaxed),
            rows,
            queue_wait: summarize(&h.queue_wait),
            inference: summarize(&h.inference),
            end_to_end: summarize(&h.end_to_end),
            held_jobs,
            workers,
        }
    }
}

#[cfg(feature = "metrics")]
fn export(j: &JobRows<'_>) {
    let model = j.model.0.to_string();
    let lane = j.lane.to_string();
    for (outcome, n) in [("done", j.done), ("failed", j.failed)] {
        if n > 0 {
            metrics::counter!("lanelog_rows_total", "model" => model.clone(), "lane" => lane.clone(), "outcome" => outcome)
                .increment(n);
        }
    }
    let secs = |us: u64| us as f64 / 1e6;
    let n = (j.done + j.failed) as usize;
    let queue = metrics::histogram!("lanelog_queue_wait_seconds", "model" => model.clone());
    let e2e = metrics::histogram!("lanelog_end_to_end_seconds", "model" => model.clone());
    for _ in 0..n {
        queue.record(secs(j.queue_us));
        e2e.record(secs(j.end_to_end_us));
    }
    let infer = metrics::histogram!("lanelog_inference_seconds", "model" => model);
    for &(us, n) in j.infer_us {
        for _ in 0..n {
            infer.record(secs(us));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_latencies_add_up() {
        let r = Recorder::default();
        r.job(&JobRows {
            model: ("m", "1"),
            lane: 3,
            done: 2,
            failed: 1,
            queue_us: 1_000,
            infer_us: &[(500, 2)],
            end_to_end_us: 2_000,
        });
        r.job(&JobRows {
            model: ("m", "1"),
            lane: 3,
            done: 1,
            failed: 0,
            queue_us: 3_000,
            infer_us: &[(700, 1)],
            end_to_end_us: 4_000,
        });
        r.run_finished(false);
        r.run_finished(true);
        let s = r.snapshot(1, 2, 3, 4);
        assert_eq!(s.rows.len(), 1);
        assert_eq!(
            (s.rows[0].lane, s.rows[0].done, s.rows[0].failed),
            (3, 3, 1)
        );
        assert_eq!(s.queue_wait.count, 4);
        assert_eq!(s.inference.count, 3);
        // Two significant digits: within 1%.
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        assert!(
            (ms(s.end_to_end.max) - 4.0).abs() < 0.05,
            "{:?}",
            s.end_to_end
        );
        assert!(
            (ms(s.queue_wait.p50) - 1.0).abs() < 0.02,
            "{:?}",
            s.queue_wait
        );
        assert_eq!((s.runs_done, s.runs_failed), (1, 1));
        assert_eq!(
            (s.runs_queued, s.runs_running, s.held_jobs, s.workers),
            (1, 2, 3, 4)
        );
    }
}
