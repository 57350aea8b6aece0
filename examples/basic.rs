//! A producer and a consumer on one durable queue, with two priorities.
//!
//! Run: `cargo run --release --example basic`

use std::time::Instant;

use lanelog::{Durability, QueueOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let q = QueueOptions::new()
        .durability(Durability::Immediate)
        .open(dir.path())?;

    let n = 20_000u32;
    let start = Instant::now();
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || -> lanelog::Result<()> {
            for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
                let payloads: Vec<[u8; 4]> = chunk.iter().map(|i| i.to_le_bytes()).collect();
                let batch: Vec<(&[u8], u8)> = payloads
                    .iter()
                    .zip(chunk)
                    .map(|(p, i)| (&p[..], if i % 10 == 0 { 9 } else { 0 }))
                    .collect();
                q.enqueue_batch(&batch)?;
            }
            Ok(())
        })
    };
    let mut done = 0u32;
    let mut urgent = 0u32;
    while done < n {
        let batch = q.dequeue_up_to(100)?;
        if batch.is_empty() {
            std::thread::yield_now();
            continue;
        }
        urgent += batch.iter().filter(|d| d.priority == 9).count() as u32;
        let receipts: Vec<_> = batch.iter().map(|d| d.receipt).collect();
        q.ack_batch(&receipts)?;
        done += batch.len() as u32;
    }
    producer.join().expect("producer thread")?;
    let secs = start.elapsed().as_secs_f64();
    println!("{n} messages ({urgent} urgent) enqueued, delivered and acked durably in {secs:.2} s ({:.0} msgs/s)", f64::from(n) / secs);
    println!("{:?}", q.stats());
    q.close()?;
    Ok(())
}
