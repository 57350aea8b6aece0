//! How much of `parallel_infer`'s time is the queue, as the model gets
//! costlier. The bundled ONNX model is wrapped so that each row also costs a
//! busy wait of W µs (standing in for a bigger model: the CPU stays busy, as
//! it would computing); for each W the same table runs
//!
//! - directly: the model on micro-batches of 64 rows, one scoped thread per
//!   core, no queue (the best any worker loop could do), and
//! - through `parallel_infer` with its queues in memory (the queue's CPU
//!   work without a disk), and
//! - through `parallel_infer` with durable queues (`Durability::Immediate`
//!   results) in a fresh directory, twice: the first call makes the queues;
//!   the second computes the rows in reverse order in them (the same table
//!   again would be the same run, its stored results collected).
//!
//! and the ratios to the direct run are printed (durable: the second call).
//!
//! Run: `cargo run --release --features onnx --example overhead [copies]`
//! (copies of the 1,797-row digits table, default 2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::worker::{parallel_infer, InferOptions, Model, ModelError, OnnxModel, PoolOptions};

#[path = "support/direct.rs"]
mod direct;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.onnx");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits.bin");
const BATCH: usize = 64;

/// The bundled model plus `per_row` of busy CPU per row.
struct Costly {
    inner: Arc<OnnxModel>,
    per_row: Duration,
}

impl Model for Costly {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    fn output_name(&self) -> &str {
        self.inner.output_name()
    }

    fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let out = self.inner.infer(rows)?;
        let until = Instant::now() + self.per_row * rows.len() as u32;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(out)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let copies: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("usage: overhead [copies]; got {a:?}"))?,
        None => 2,
    };
    if copies == 0 {
        return Err("copies must be at least 1".into());
    }
    let inner = Arc::new(OnnxModel::load(MODEL, 64, "probabilities")?);
    let bytes = std::fs::read(DATA)?;
    let table: Vec<Vec<f32>> = bytes
        .chunks(65)
        .map(|r| r[..64].iter().map(|&b| f32::from(b)).collect())
        .collect();
    let rows: Vec<Vec<f32>> = (0..copies).flat_map(|_| table.iter().cloned()).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "{} rows, {threads} threads, micro-batches of {BATCH}; model {} plus W µs of CPU per row\n",
        rows.len(),
        inner.name()
    );
    println!(
        "{:>6} {:>9} {:>12} {:>13} {:>13} {:>13} {:>13}",
        "W (µs)",
        "direct ms",
        "in memory ms",
        "durable new ms",
        "durable ms",
        "memory/direct",
        "durable/direct"
    );
    let reversed: Vec<Vec<f32>> = rows.iter().rev().cloned().collect();
    for per_row_us in [0u64, 2, 5, 10, 20, 50] {
        let model = Arc::new(Costly {
            inner: inner.clone(),
            per_row: Duration::from_micros(per_row_us),
        });
        let direct = direct::run_direct(&*model, &rows, BATCH, threads)?;

        let dir = tempfile::tempdir()?;
        let in_memory = InferOptions::new().pool(
            PoolOptions::new()
                .num_parallel(threads)
                .max_batch(BATCH)
                .linger(Duration::from_millis(1)),
        );
        let durable = in_memory.clone().dir(dir.path());
        let memory = parallel_infer(model.clone(), &rows, &in_memory)?;
        let first = parallel_infer(model.clone(), &rows, &durable)?;
        // The same table again would be the same run (its key is the rows'
        // hash), collected, not computed: the same rows in reverse order
        // are the same work under another key.
        let again = parallel_infer(model, &reversed, &durable)?;
        let failed = memory.failed + first.failed + again.failed;
        if failed > 0 {
            return Err(format!("{failed} rows failed").into());
        }
        if again.resumed > 0 {
            return Err("the second durable call collected stored results".into());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let ratio = |d: Duration| d.as_secs_f64() / direct.as_secs_f64();
        println!(
            "{per_row_us:>6} {:>9.1} {:>12.1} {:>13.1} {:>13.1} {:>12.2}x {:>13.2}x",
            ms(direct),
            ms(memory.elapsed),
            ms(first.elapsed),
            ms(again.elapsed),
            ratio(memory.elapsed),
            ratio(again.elapsed)
        );
    }
    Ok(())
}
