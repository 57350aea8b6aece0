//! Cost of one dequeue (lease + ack, no sync) with 1, 16 and 256 lanes in
//! use: picking the lane must not grow with the number of lanes.
//!
//! Run: `cargo bench --bench lanes`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lanelog::{Durability, QueueOptions, Scheduling};

fn dequeue_with_lanes(c: &mut Criterion) {
    let mut group = c.benchmark_group("dequeue_one");
    group.measurement_time(Duration::from_secs(4));
    for scheduling in [Scheduling::Strict, Scheduling::Weighted] {
        for lanes in [1u32, 16, 256] {
            let dir = tempfile::tempdir().unwrap();
            let q = QueueOptions::new()
                .durability(Durability::None)
                .scheduling(scheduling)
                .open(dir.path())
                .unwrap();
            let payload = [7u8; 128];
            let refill = |q: &lanelog::Queue| {
                let batch: Vec<(&[u8], u8)> = (0..10_000u32)
                    .map(|i| (&payload[..], ((i % lanes) * (256 / lanes)) as u8))
                    .collect();
                q.enqueue_batch(&batch).unwrap();
            };
            refill(&q);
            let id = BenchmarkId::new(format!("{scheduling:?}"), lanes);
            group.bench_with_input(id, &lanes, |b, _| {
                b.iter(|| {
                    let d = match q.dequeue().unwrap() {
                        Some(d) => d,
                        None => {
                            refill(&q);
                            q.dequeue().unwrap().unwrap()
                        }
                    };
                    q.ack(d.receipt).unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dequeue_with_lanes);
criterion_main!(benches);
