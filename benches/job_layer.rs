//! The job layer's cost per row: `parallel_infer` against the same model
//! called directly on the same micro-batches from the same number of
//! threads, in memory and durable, with the model costing W = 0 and
//! W = 10 µs of extra CPU per row. The added cost per row is
//! (parallel_infer − direct) ÷ rows of one group; `examples/overhead` is
//! the end-to-end check on the bundled ONNX model.
//!
//! The model is a dense layer (64 features → 10 scores, softmax), written
//! here so the bench needs no feature: it takes the batch as one tensor
//! (`Batch::tensor`) and gives its outputs back as one (`Outputs::tensor`),
//! as `OnnxModel` does.
//!
//! Also: encoding a table into one block (`Batch::from_rows`), the first
//! step of every submission; and with the feature `nats`, a long-lived
//! service's runs on the embedded queue against the same over JetStream.
//!
//! Run: `cargo bench --bench job_layer` (`--features nats` for the
//! JetStream rows)

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lanelog::worker::{
    parallel_infer, Batch, InferOptions, Model, ModelError, Outputs, PoolOptions,
};
use lanelog::Durability;

const FEATURES: usize = 64;
const CLASSES: usize = 10;
const ROWS: usize = 3_594;
const BATCH: usize = 64;
const THREADS: usize = 2;

/// A dense layer and a softmax, plus `per_row` of busy CPU per row.
struct Dense {
    weights: Vec<f32>,
    per_row: Duration,
    version: String,
}

impl Dense {
    fn new(per_row: Duration) -> Dense {
        Dense {
            weights: (0..FEATURES * CLASSES)
                .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
                .collect(),
            per_row,
            version: format!("dense-w{}us", per_row.as_micros()),
        }
    }

    /// Scores of `rows` rows of `FEATURES` values, row after row.
    fn scores(&self, flat: &[f32]) -> Vec<f32> {
        let rows = flat.len() / FEATURES;
        let mut out = vec![0f32; rows * CLASSES];
        for (x, y) in flat
            .chunks_exact(FEATURES)
            .zip(out.chunks_exact_mut(CLASSES))
        {
            for (k, w) in self.weights.chunks_exact(FEATURES).enumerate() {
                y[k] = x.iter().zip(w).map(|(a, b)| a * b).sum();
            }
            let max = y.iter().copied().fold(f32::MIN, f32::max);
            let sum: f32 = y
                .iter_mut()
                .map(|v| {
                    *v = (*v - max).exp();
                    *v
                })
                .sum();
            y.iter_mut().for_each(|v| *v /= sum);
        }
        let until = Instant::now() + self.per_row * rows as u32;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        out
    }
}

impl Model for Dense {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn name(&self) -> &str {
        "dense"
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Ok(self
            .scores(&flat)
            .chunks(CLASSES)
            .map(<[f32]>::to_vec)
            .collect())
    }

    fn infer_batch(&self, batch: &Batch<'_, Vec<f32>>) -> Result<Outputs<Vec<f32>>, ModelError> {
        match batch.tensor::<f32>() {
            Some(t) if t.width() == FEATURES => {
                Outputs::tensor(t.rows(), CLASSES, self.scores(t.as_slice()))
            }
            _ => Ok(Outputs::rows(self.infer(batch.rows()?)?)),
        }
    }
}

/// The table: `ROWS` rows of `FEATURES` values; `salt` makes each table
/// another run (a run's key is a hash of its rows).
fn table(salt: u32) -> Vec<Vec<f32>> {
    (0..ROWS)
        .map(|r| {
            (0..FEATURES)
                .map(|f| {
                    ((r * 31 + f * 17) % 16) as f32
                        + if r == 0 && f == 0 { salt as f32 } else { 0.0 }
                })
                .collect()
        })
        .collect()
}

/// The model on micro-batches of `BATCH` rows, split evenly over
/// `THREADS` scoped threads, as a worker pool would run them with no
/// queue: the floor for `parallel_infer`.
fn direct(model: &Dense, rows: &[Vec<f32>]) {
    let chunks: Vec<&[Vec<f32>]> = rows.chunks(BATCH).collect();
    let per = chunks.len().div_ceil(THREADS);
    std::thread::scope(|s| {
        for part in chunks.chunks(per) {
            s.spawn(move || {
                for c in part {
                    let batch = Batch::from_rows(c).unwrap();
                    std::hint::black_box(model.infer_batch(&batch).unwrap());
                }
            });
        }
    });
}

fn options(durability: Durability) -> InferOptions<Vec<f32>> {
    InferOptions::new()
        .pool(
            PoolOptions::new()
                .num_parallel(THREADS)
                .max_batch(BATCH)
                .linger(Duration::from_millis(1)),
        )
        .durability(durability)
}

fn job_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("job_layer");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(ROWS as u64));
    let rows = table(0);
    for w in [0u64, 10] {
        let model = Arc::new(Dense::new(Duration::from_micros(w)));
        group.bench_function(BenchmarkId::new("direct", format!("w{w}us")), |b| {
            b.iter(|| direct(&model, &rows))
        });
        group.bench_function(BenchmarkId::new("memory", format!("w{w}us")), |b| {
            let opts = options(Durability::None);
            b.iter(|| parallel_infer(model.clone(), &rows, &opts).unwrap())
        });
        // Durable, the queues already made: each call a new table (so a
        // new run) in one directory.
        group.bench_function(BenchmarkId::new("durable", format!("w{w}us")), |b| {
            let dir = tempfile::tempdir().unwrap();
            let opts = options(Durability::Immediate).dir(dir.path());
            let mut salt = 0;
            b.iter_batched(
                || {
                    salt += 1;
                    table(salt)
                },
                |t| parallel_infer(model.clone(), &t, &opts).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
        // Durable in a new directory each call: making the queues' files.
        group.bench_function(
            BenchmarkId::new("durable_new_dir", format!("w{w}us")),
            |b| {
                b.iter_batched(
                    || tempfile::tempdir().unwrap(),
                    |dir| {
                        let opts = options(Durability::Immediate).dir(dir.path());
                        parallel_infer(model.clone(), &rows, &opts).unwrap();
                        dir
                    },
                    criterion::BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("job_layer_encode");
    group.throughput(Throughput::Elements(ROWS as u64));
    let rows = table(0);
    group.bench_function("table_into_one_block", |b| {
        b.iter(|| Batch::from_rows(&rows).unwrap())
    });
    group.finish();
}

/// A long-lived service, one run after another (each a new table): on the
/// embedded queue, durable, against lanelog's JetStream backend on a
/// nats-server on loopback (one node, `sync_interval: always`, the
/// official 2.15.1 binary found or installed by `testkit::nats`) and on
/// three such nodes with R3 streams. W = 10 µs. Feature `nats`.
#[cfg(feature = "nats")]
fn service(c: &mut Criterion) {
    use lanelog::nats::NatsOptions;
    use lanelog::worker::{InferService, RunOptions, ServiceOptions};
    use lanelog::JobQueue;
    use testkit::nats::{Cluster, Server};

    fn runs<Q: JobQueue>(
        b: &mut criterion::Bencher<'_>,
        service: &InferService<Q>,
        model: &Arc<Dense>,
    ) {
        let m = service.register(model.clone());
        let mut salt = 0;
        b.iter_batched(
            || {
                salt += 1;
                table(salt)
            },
            |t| {
                service
                    .submit(&m, &t, &RunOptions::new())
                    .unwrap()
                    .wait()
                    .unwrap()
            },
            criterion::BatchSize::LargeInput,
        )
    }
    let pool = || {
        PoolOptions::new()
            .num_parallel(THREADS)
            .max_batch(BATCH)
            .linger(Duration::from_millis(1))
    };
    let nats = |url: &str, replicas: usize| {
        // A fresh cluster may still be electing its meta leader.
        let mut tries = 0;
        loop {
            let opened = ServiceOptions::new()
                .pool(pool())
                .open_nats(url, &NatsOptions::new().prefix("bench").replicas(replicas));
            match opened {
                Ok(s) => return s,
                Err(e) if tries < 60 => {
                    tries += 1;
                    eprintln!("open: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("open {url}: {e}"),
            }
        }
    };
    let mut group = c.benchmark_group("job_layer_service");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(ROWS as u64));
    let model = Arc::new(Dense::new(Duration::from_micros(10)));
    group.bench_function("embedded_durable/w10us", |b| {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceOptions::new().pool(pool()).open(dir.path()).unwrap();
        runs(b, &service, &model);
        service.close().unwrap();
    });
    group.bench_function("jetstream_1_always/w10us", |b| {
        let server = Server::start().unwrap();
        let service = nats(&server.url(), 1);
        runs(b, &service, &model);
        service.close().unwrap();
    });
    group.bench_function("jetstream_3_always/w10us", |b| {
        let cluster = Cluster::start(3).unwrap();
        let service = nats(&cluster.url(), 3);
        runs(b, &service, &model);
        service.close().unwrap();
    });
    group.finish();
}

#[cfg(not(feature = "nats"))]
criterion_group!(benches, job_layer, encode);
#[cfg(feature = "nats")]
criterion_group!(benches, job_layer, encode, service);
criterion_main!(benches);
