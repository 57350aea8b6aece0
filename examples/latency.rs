//! Enqueue-to-dequeue latency with a consumer already waiting: one producer
//! enqueues a message stamped with its send time, one consumer blocked in
//! `dequeue_timeout` takes it, acks it and notes how long it travelled.
//! Messages are sent one at a time (the next after the previous arrived),
//! so each sample sees an idle consumer. Prints p50/p99/p99.9/max per
//! durability mode.
//!
//! Run: `cargo run --release --example latency [samples]` (default 20000).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lanelog::{Durability, QueueOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples: usize = std::env::args().nth(1).map_or(Ok(20_000), |a| a.parse())?;
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
        lat.sort();
        let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "{name:>9}: {} samples, enqueue->dequeue p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
            lat.len(),
            at(0.50),
            at(0.99),
            at(0.999),
            lat[lat.len() - 1]
        );
        q.close()?;
    }
    Ok(())
}
