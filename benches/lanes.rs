//! Cost of one dequeue (lease + ack, no sync) with 1, 16 and 256 lanes in
//! use: picking the lane must not grow with the number of lanes; and with
//! every message carrying a deadline (earliest-deadline-first within each
//! lane, a B-tree per lane): picking must stay logarithmic in the messages
//! waiting, whatever the number of lanes.
//!
//! Run: `cargo bench --bench lanes`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lanelog::{Durability, EnqueueOptions, QueueOptions, Scheduling, Timestamp};

/// One dequeue and its ack, refilling the queue when it runs dry.
fn dequeue_and_ack(q: &lanelog::Queue, refill: &dyn Fn(&lanelog::Queue)) {
    let d = match q.dequeue().unwrap() {
        Some(d) => d,
        None => {
            refill(q);
            q.dequeue().unwrap().unwrap()
        }
    };
    q.ack(d.receipt).unwrap();
}

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
            group.bench_function(id, |b| b.iter(|| dequeue_and_ack(&q, &refill)));
        }
    }
    group.finish();
}

fn dequeue_with_deadlines(c: &mut Criterion) {
    let mut group = c.benchmark_group("dequeue_one_deadline");
    group.measurement_time(Duration::from_secs(4));
    for lanes in [1u32, 256] {
        for waiting in [10_000u64, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let q = QueueOptions::new()
                .durability(Durability::None)
                .open(dir.path())
                .unwrap();
            let payload = [7u8; 128];
            // Deadlines a day ahead, spread so each enqueue lands mid-lane.
            let far = Timestamp::now().plus(Duration::from_secs(86_400));
            let refill = |q: &lanelog::Queue| {
                let batch: Vec<(&[u8], EnqueueOptions)> = (0..waiting)
                    .map(|i| {
                        let opts = EnqueueOptions::new()
                            .priority(((i as u32 % lanes) * (256 / lanes)) as u8)
                            .deadline(Timestamp(far.0 + (i * 7919) % 3_600_000));
                        (&payload[..], opts)
                    })
                    .collect();
                for chunk in batch.chunks(5_000) {
                    q.enqueue_batch_with(chunk).unwrap();
                }
            };
            refill(&q);
            let id = BenchmarkId::new(format!("lanes {lanes}"), waiting);
            group.bench_function(id, |b| b.iter(|| dequeue_and_ack(&q, &refill)));
        }
    }
    group.finish();
}

criterion_group!(benches, dequeue_with_lanes, dequeue_with_deadlines);
criterion_main!(benches);
