//! Throughput of the queue's main paths, for 128 B and 1 KiB payloads and
//! each durability mode: enqueue (one message, a batch of 100), dequeue+ack
//! (one, a batch of 100), one producer and one consumer together, group
//! commit with 1/4/8/16 producer threads under `Immediate`, and open
//! (recovery) time with 100k and 1M pending messages. The lane-pick cost is
//! in `benches/lanes.rs`.
//!
//! Run: `cargo bench --bench throughput` (HTML reports in
//! `target/criterion/`); one group: `cargo bench --bench throughput -- enqueue_batch`.
//! The durable cells are bound by fdatasync, whose cost on a virtual disk
//! can change by an order of magnitude for minutes at a time: compare cells
//! from one run, and see `compare/` for the side-by-side table with a disk
//! probe (and docs/benchmarks.md for the probes recorded so far).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lanelog::{Delivery, Durability, Queue, QueueOptions};

const SIZES: [usize; 2] = [128, 1024];

fn modes() -> [(&'static str, Durability); 3] {
    [
        ("immediate", Durability::Immediate),
        (
            "periodic-10ms",
            Durability::Periodic(Duration::from_millis(10)),
        ),
        ("none", Durability::None),
    ]
}

fn open(dir: &std::path::Path, durability: Durability) -> Queue {
    QueueOptions::new()
        .durability(durability)
        .open(dir)
        .expect("open")
}

/// Enqueue `n` messages untimed (no sync per batch, one at the end).
fn fill(q: &Queue, n: u64, payload: &[u8]) {
    let batch: Vec<(&[u8], u8)> = vec![(payload, 0); 1000];
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        q.enqueue_batch(&batch[..k]).expect("fill");
        left -= k as u64;
    }
    q.sync().expect("sync");
}

/// Ack a dequeued batch with one call.
fn ack_all(q: &Queue, ds: &[Delivery]) {
    let receipts: Vec<_> = ds.iter().map(|d| d.receipt).collect();
    q.ack_batch(&receipts).expect("ack");
}

fn enqueue(c: &mut Criterion) {
    for (group, per) in [("enqueue_single", 1usize), ("enqueue_batch100", 100)] {
        let mut g = c.benchmark_group(group);
        g.measurement_time(Duration::from_secs(3)).sample_size(20);
        for size in SIZES {
            g.throughput(Throughput::Elements(per as u64));
            for (name, durability) in modes() {
                let dir = tempfile::tempdir().expect("tempdir");
                let q = open(dir.path(), durability);
                let payload = vec![7u8; size];
                let batch: Vec<(&[u8], u8)> = vec![(&payload[..], 0); per];
                g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                    b.iter(|| {
                        if per == 1 {
                            q.enqueue(&payload, 0).expect("enqueue");
                        } else {
                            q.enqueue_batch(&batch).expect("enqueue");
                        }
                    })
                });
            }
        }
        g.finish();
    }
}

fn dequeue_ack(c: &mut Criterion) {
    for (group, per) in [
        ("dequeue_ack_single", 1usize),
        ("dequeue_ack_batch100", 100),
    ] {
        let mut g = c.benchmark_group(group);
        g.measurement_time(Duration::from_secs(3)).sample_size(20);
        for size in SIZES {
            g.throughput(Throughput::Elements(per as u64));
            for (name, durability) in modes() {
                let dir = tempfile::tempdir().expect("tempdir");
                let q = open(dir.path(), durability);
                let payload = vec![7u8; size];
                g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                    b.iter_custom(|iters| {
                        fill(&q, iters * per as u64, &payload);
                        let t = Instant::now();
                        for _ in 0..iters {
                            ack_all(&q, &q.dequeue_up_to(per).expect("dequeue"));
                        }
                        t.elapsed()
                    })
                });
            }
        }
        g.finish();
    }
}

fn mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("mixed_1p1c_batch100");
    g.measurement_time(Duration::from_secs(3)).sample_size(15);
    for size in SIZES {
        g.throughput(Throughput::Elements(100));
        for (name, durability) in modes() {
            let dir = tempfile::tempdir().expect("tempdir");
            let q = open(dir.path(), durability);
            let payload = vec![7u8; size];
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter_custom(|iters| {
                    let total = iters as usize * 100;
                    let t = Instant::now();
                    std::thread::scope(|s| {
                        s.spawn(|| {
                            let batch: Vec<(&[u8], u8)> = vec![(&payload[..], 0); 100];
                            for _ in 0..iters {
                                q.enqueue_batch(&batch).expect("enqueue");
                            }
                        });
                        let mut got = 0;
                        while got < total {
                            let ds = q
                                .dequeue_batch(100, Duration::from_millis(50))
                                .expect("dequeue");
                            got += ds.len();
                            ack_all(&q, &ds);
                        }
                    });
                    t.elapsed()
                })
            });
        }
    }
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_commit_immediate_single");
    g.measurement_time(Duration::from_secs(3)).sample_size(15);
    g.throughput(Throughput::Elements(1));
    for threads in [1u64, 4, 8, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(dir.path(), Durability::Immediate);
        let payload = [7u8; 128];
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads);
                let start = Barrier::new(threads as usize + 1);
                // The scope joins every producer before it returns.
                let released = std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            start.wait();
                            for _ in 0..per {
                                q.enqueue(&payload, 0).expect("enqueue");
                            }
                        });
                    }
                    start.wait();
                    Instant::now()
                });
                released.elapsed()
            })
        });
    }
    g.finish();
}

fn open_time(c: &mut Criterion) {
    let mut g = c.benchmark_group("open_pending");
    g.measurement_time(Duration::from_secs(5)).sample_size(10);
    for size in SIZES {
        for pending in [100_000u64, 1_000_000] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let q = open(dir.path(), Durability::None);
                fill(&q, pending, &vec![7u8; size]);
                q.close().expect("close");
            }
            let id = BenchmarkId::new(format!("{size}B"), pending);
            g.bench_with_input(id, &pending, |b, _| {
                b.iter(|| {
                    let q = open(dir.path(), Durability::Immediate);
                    assert_eq!(q.stats().ready, pending);
                    drop(q);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    enqueue,
    dequeue_ack,
    mixed,
    group_commit,
    open_time
);
criterion_main!(benches);
