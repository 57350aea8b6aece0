//! The main job: durable, parallel inference over a real table with a real
//! model, end to end, with no set-up.
//!
//! Run: `cargo run --release --features onnx --example infer`
//! (`-- --copies N` takes the table N times over; default 2).
//!
//! It loads the bundled scikit-learn digits model (models/digits_mlp.onnx),
//! takes the digits table twice over (3,594 real rows of 64 features), and
//! runs it three ways: one row per model call (sequential), the model called
//! directly on micro-batches from the same number of threads (the floor for
//! any queue), and `parallel_infer` through durable lanelog queues: once in
//! a fresh directory (which makes the queues' files) and once more in the
//! same directory (queues already there, as in a long-running service). It
//! prints the times, the speed-up, a sample of the result table and the
//! per-step timings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::worker::{parallel_infer, Column, InferOptions, Model, OnnxModel, PoolOptions};

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
    let first = parallel_infer(model.clone(), &rows, &opts)?;
    let out = parallel_infer(model.clone(), &rows, &opts)?;
    let (cold, parallel) = (first.elapsed, out.elapsed);

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
    println!(
        "parallel_infer ({how}, {:>10}) {:>6.1} ms  {:>9.0} rows/s",
        "again",
        ms(parallel),
        rate(parallel)
    );
    println!(
        "speed-up over sequential: {:.1}x; parallel_infer / direct: {:.2}x\n",
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
