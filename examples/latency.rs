//! Enqueue-to-dequeue latency with a consumer already waiting: one producer
//! enqueues a message stamped with its send time, one consumer blocked in
//! `dequeue_timeout` takes it, acks it and notes how long it travelled.
//! Messages are sent one at a time (the next after the previous arrived),
//! so each sample sees an idle consumer. Prints p50/p99/p99.9/max per
//! durability mode, and the same ping-pong over a std channel (a value
//! handed to a blocked receiver) as the yardstick, with the ratios.
//!
//! Run: `cargo run --release --example latency [samples]` (default 20000).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lanelog::{Durability, QueueOptions};

/// p50, p99, p99.9 and max of sorted samples.
fn percentiles(lat: &mut [Duration]) -> [Duration; 4] {
    lat.sort();
    let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    [at(0.50), at(0.99), at(0.999), lat[lat.len() - 1]]
}

/// The yardstick: the same ping-pong with a std channel instead of a queue.
fn channel_latency(n: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let base = Instant::now();
    let (send, recv) = mpsc::channel::<u64>();
    let (arrived, next) = mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            let Ok(sent) = recv.recv() else { break };
            lat.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
            let _ = arrived.send(());
        }
        lat
    });
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..n {
        send.send(base.elapsed().as_nanos() as u64)?;
        next.recv()?;
    }
    Ok(consumer.join().map_err(|_| "consumer panicked")?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples: usize = std::env::args().nth(1).map_or(Ok(20_000), |a| a.parse())?;
    let [c50, c99, c999, cmax] = percentiles(&mut channel_latency(samples)?);
    println!(
        "  channel: {samples} samples, send->recv p50 {c50:?}, p99 {c99:?}, p99.9 {c999:?}, max {cmax:?}"
    );
    for (name, durability) in [
        ("None", Durability::None),
        ("Immediate", Durability::Immediate),
    ] {
        let n = if durability == Durability::None {
            samples
        } else {
            samples / 10
        };
        let dir = tempfile::tempdir()?;
        let q = QueueOptions::new()
            .durability(durability)
            .open(dir.path())?;
        let base = Instant::now();
        let (arrived, next) = mpsc::channel::<()>();
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || -> lanelog::Result<Vec<Duration>> {
                let mut lat = Vec::with_capacity(n);
                while lat.len() < n {
                    let Some(d) = q.dequeue_timeout(Duration::from_secs(5))? else {
                        continue;
                    };
                    let now = base.elapsed();
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&d.payload[..8]);
                    lat.push(now.saturating_sub(Duration::from_nanos(u64::from_le_bytes(sent))));
                    q.ack(d.receipt)?;
                    let _ = arrived.send(());
                }
                Ok(lat)
            })
        };
        // Let the consumer fall asleep before the first message.
        std::thread::sleep(Duration::from_millis(20));
        let mut payload = [0u8; 128];
        for _ in 0..n {
            let sent = base.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            q.enqueue(&payload, 0)?;
            next.recv()?;
        }
        let mut lat = consumer.join().map_err(|_| "consumer panicked")??;
        let count = lat.len();
        let [p50, p99, p999, max] = percentiles(&mut lat);
        println!(
            "{name:>9}: {count} samples, enqueue->dequeue p50 {p50:?}, p99 {p99:?}, p99.9 {p999:?}, max {max:?} \
             (channel x{:.2} p50, x{:.2} p99)",
            p50.as_secs_f64() / c50.as_secs_f64(),
            p99.as_secs_f64() / c99.as_secs_f64()
        );
        q.close()?;
    }
    Ok(())
}
