//! The main job: durable, parallel inference over a real table with a real
//! model, end to end, with no set-up.
//!
//! Run: `cargo run --release --all-features --example infer` (the README's
//! command: one build with the test suite's; it needs only `onnx`)
//! (`-- --copies N` takes the table N times over; default 2).
//!
//! It loads the bundled scikit-learn digits model (models/digits_mlp.onnx),
//! takes the digits table twice over (3,594 real rows of 64 features), and
//! runs it: one row per model call (sequential), the model called directly
//! on micro-batches from the same number of threads (the floor for any
//! queue), `parallel_infer` through durable lanelog queues in a fresh
//! directory (which makes the queues' files), and then as a service would:
//! an `InferService` on that directory running the table as a bulk run,
//! alone and then with a stream of single high-priority requests
//! (`infer_one`, priority 9) beside it. It prints the times, the bulk rows/s
//! with and without the interactive traffic, the interactive latency
//! (p50/p99), a sample of the result table and the per-step timings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::worker::{
    parallel_infer, Column, InferOptions, InferService, Model, OnnxModel, PoolOptions, RunOptions,
    ServiceOptions,
};

#[path = "support/direct.rs"]
mod direct;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.onnx");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits.bin");
const BATCH: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = Arc::new(OnnxModel::load(MODEL, 64, "probabilities")?);
    let bytes = std::fs::read(DATA)?;
    let table: Vec<(Vec<f32>, u8)> = bytes
        .chunks(65)
        .map(|r| (r[..64].iter().map(|&b| f32::from(b)).collect(), r[64]))
        .collect();
    let copies = copies()?;
    let rows: Vec<Vec<f32>> = (0..copies)
        .flat_map(|_| table.iter().map(|(r, _)| r.clone()))
        .collect();
    let labels: Vec<u8> = (0..copies)
        .flat_map(|_| table.iter().map(|(_, l)| *l))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "model {} ({}), {} rows, {threads} threads, micro-batches of {BATCH}\n",
        model.name(),
        model.version(),
        rows.len()
    );

    // 1. Sequential: one row per call.
    let t = Instant::now();
    for r in &rows {
        model.infer(std::slice::from_ref(r))?;
    }
    let sequential = t.elapsed();

    // 2. The model called directly on micro-batches, same threads.
    let direct = direct::run_direct(&*model, &rows, BATCH, threads)?;

    // 3. parallel_infer through durable queues in a fresh directory.
    let dir = tempfile::tempdir()?;
    let opts = InferOptions::new()
        .pool(
            PoolOptions::new()
                .num_parallel(threads)
                .max_batch(BATCH)
                .linger(Duration::from_millis(1)),
        )
        .validation("low_confidence", |p: &Vec<f32>| {
            p.iter().copied().fold(0.0, f32::max) < 0.6
        })
        .dataset_include(&[Column::Metadata]);
    // LANELOG_INFER_IN_MEMORY=1 keeps the queues in memory, to show what
    // the durable queues cost.
    let in_memory = std::env::var_os("LANELOG_INFER_IN_MEMORY").is_some();
    let opts = if in_memory {
        opts
    } else {
        opts.dir(dir.path())
    };
    let out = parallel_infer(model.clone(), &rows, &opts)?;
    let cold = out.elapsed;

    // 4. The same table as a service runs it: a bulk run on queues already
    // made, alone, then with interactive requests beside it.
    // Workers at a lower OS priority: the interactive requests' submit,
    // commit and wake-up run ahead of model calls on busy cores.
    let pool = PoolOptions::new()
        .num_parallel(threads)
        .max_batch(BATCH)
        .linger(Duration::from_millis(1))
        .worker_nice(if cfg!(target_os = "linux") { 10 } else { 0 });
    let service = if in_memory {
        ServiceOptions::new().pool(pool).open_in_memory()?
    } else {
        ServiceOptions::new().pool(pool).open(dir.path())?
    };
    let m = service.register(model.clone());
    // Long enough for a stream of interactive requests beside it: the
    // table ten times over.
    let bulk_rows: Vec<Vec<f32>> = (0..10).flat_map(|_| rows.iter().cloned()).collect();
    let t = Instant::now();
    service.submit(&m, &bulk_rows, &RunOptions::new())?.wait()?;
    let bulk_alone = t.elapsed();
    // Bulk runs with requests beside them until a hundred requests are
    // timed (at most five runs), so the p99 is not just the slowest few.
    let (mut mixed_runs, mut latencies) = (Vec::new(), Vec::new());
    while latencies.len() < 100 && mixed_runs.len() < 5 {
        let (took, asked) = with_interactive(&service, &m, &bulk_rows)?;
        mixed_runs.push(took);
        latencies.extend(asked);
    }
    latencies.sort();
    mixed_runs.sort();
    let bulk_mixed = mixed_runs[mixed_runs.len() / 2];
    service.close()?;
    let parallel = bulk_alone.div_f64(10.0);

    let rate = |d: Duration| rows.len() as f64 / d.as_secs_f64();
    println!(
        "sequential, 1 row per call      {:>9.1} ms  {:>9.0} rows/s",
        ms(sequential),
        rate(sequential)
    );
    println!(
        "model direct, batches, {threads} thr    {:>9.1} ms  {:>9.0} rows/s",
        ms(direct),
        rate(direct)
    );
    let how = if in_memory { "in memory" } else { "durable" };
    let made = if in_memory {
        "first call"
    } else {
        "new queues"
    };
    println!(
        "parallel_infer ({how}, {made:>10}) {:>6.1} ms  {:>9.0} rows/s",
        ms(cold),
        rate(cold)
    );
    let bulk_rate = |d: Duration| bulk_rows.len() as f64 / d.as_secs_f64();
    println!(
        "service, {} rows ({how}), alone     {:>6.1} ms  {:>9.0} rows/s",
        bulk_rows.len(),
        ms(bulk_alone),
        bulk_rate(bulk_alone)
    );
    println!(
        "service, {} rows, with interactive {:>6.1} ms  {:>9.0} rows/s (median run)",
        bulk_rows.len(),
        ms(bulk_mixed),
        bulk_rate(bulk_mixed)
    );
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "interactive requests (priority 9) during {} bulk runs: {}, latency p50 {:.2} ms, p99 {:.2} ms",
        mixed_runs.len(),
        latencies.len(),
        ms(pct(0.5)),
        ms(pct(0.99))
    );
    println!(
        "speed-up over sequential: {:.1}x; service bulk run (per table) / direct: {:.2}x\n",
        sequential.as_secs_f64() / parallel.as_secs_f64(),
        parallel.as_secs_f64() / direct.as_secs_f64()
    );

    println!(
        "{:<4} {:>15} {:>5} {:>5} {:>6} {:>7} {:>9} {:>9} {:>5} {:>3}",
        "row", "time (ms)", "label", "pred", "p", "anomaly", "queue ms", "infer ms", "batch", "try"
    );
    for (i, r) in out.rows.iter().enumerate().take(8) {
        let p = r
            .output
            .as_ref()
            .and_then(|o| o.as_ref().ok())
            .ok_or("row failed")?;
        let (pred, best) = p
            .iter()
            .enumerate()
            .fold((0, 0.0f32), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
        let m = r.metadata.as_ref().ok_or("no metadata")?;
        println!(
            "{i:<4} {:>15} {:>5} {pred:>5} {best:>6.3} {:>7} {:>9.2} {:>9.2} {:>5} {:>3}",
            r.time.0,
            labels[i],
            r.anomaly_count.unwrap_or(0),
            ms(m.elapsed.queue_wait),
            ms(m.elapsed.inference),
            m.batch_rows,
            m.attempt
        );
    }
    let correct = out
        .rows
        .iter()
        .zip(&labels)
        .filter(|(r, &l)| {
            r.output
                .as_ref()
                .and_then(|o| o.as_ref().ok())
                .is_some_and(|p| {
                    p.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(k, _)| k)
                        == Some(usize::from(l))
                })
        })
        .count();
    let metas: Vec<_> = out
        .rows
        .iter()
        .filter_map(|r| r.metadata.as_ref())
        .collect();
    let avg = |f: &dyn Fn(&lanelog::worker::Metadata) -> Duration| {
        metas.iter().map(|m| ms(f(m))).sum::<f64>() / metas.len() as f64
    };
    let anomalies: u32 = out.rows.iter().filter_map(|r| r.anomaly_count).sum();
    println!(
        "\naccuracy {correct}/{} ({:.1}%), failed rows {}, low-confidence rows {anomalies}",
        rows.len(),
        100.0 * correct as f64 / rows.len() as f64,
        out.failed
    );
    println!(
        "per-step timings (mean per row): waiting in the queue {:.2} ms, model call for its batch {:.2} ms, batch size {:.1}",
        avg(&|m| m.elapsed.queue_wait),
        avg(&|m| m.elapsed.inference),
        metas.iter().map(|m| f64::from(m.batch_rows)).sum::<f64>() / metas.len() as f64
    );
    Ok(())
}

/// Run `rows` as a bulk run while another thread sends one row at a time
/// at priority 9 (`infer_one`, a new request as soon as the last is
/// answered, 1 ms apart); the bulk run's time and every request's latency.
fn with_interactive(
    service: &InferService,
    m: &lanelog::worker::ModelRef<OnnxModel>,
    rows: &[Vec<f32>],
) -> Result<(Duration, Vec<Duration>), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let bulk = service.submit(m, rows, &RunOptions::new())?;
    let latencies = std::thread::scope(|s| {
        let asker = s.spawn(|| -> Result<Vec<Duration>, String> {
            let urgent = RunOptions::new().priority(9);
            let mut latencies = Vec::new();
            let mut i = 0;
            while !bulk.is_finished() {
                let asked = Instant::now();
                let one = service.infer_one(m, &rows[i % rows.len()], &urgent);
                one.map_err(|e| e.to_string())?
                    .output
                    .map_err(|e| e.to_string())?;
                latencies.push(asked.elapsed());
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(latencies)
        });
        bulk.wait()?;
        asker
            .join()
            .map_err(|_| "the interactive thread panicked")?
            .map_err(Box::<dyn std::error::Error>::from)
    });
    let bulk_time = t.elapsed();
    let mut latencies = latencies?;
    if latencies.is_empty() {
        // The bulk run was done before the first request: one more, alone.
        let asked = Instant::now();
        service.infer_one(m, &rows[0], &RunOptions::new().priority(9))?;
        latencies.push(asked.elapsed());
    }
    Ok((bulk_time, latencies))
}

/// `--copies N` (1..=1000): how many times over to take the table.
fn copies() -> Result<usize, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(2),
        [flag, n] if flag == "--copies" => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("--copies takes a whole number from 1 to 1000, not {n:?}")),
        _ => Err(format!("usage: infer [--copies N]; got {args:?}")),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
