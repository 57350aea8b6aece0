//! One producer and a pool of consumers on one durable queue, with two
//! priorities: urgent work (priority 9) overtakes bulk work (priority 0).
//!
//! Run: `cargo run --release --example basic`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::{Durability, QueueOptions};

const MESSAGES: u32 = 20_000;
const CONSUMERS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let q = QueueOptions::new()
        .durability(Durability::Immediate)
        .open(dir.path())?;
    let start = Instant::now();

    let producer = {
        let q = q.clone();
        std::thread::spawn(move || -> lanelog::Result<()> {
            for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(100) {
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

    let done = Arc::new(AtomicU32::new(0));
    let urgent = Arc::new(AtomicU32::new(0));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let (q, done, urgent) = (q.clone(), done.clone(), urgent.clone());
            std::thread::spawn(move || -> lanelog::Result<()> {
                while done.load(Ordering::SeqCst) < MESSAGES {
                    // Wait up to 5 ms for a batch of up to 100 to fill.
                    let batch = q.dequeue_batch(100, Duration::from_millis(5))?;
                    let n_urgent = batch.iter().filter(|d| d.priority == 9).count() as u32;
                    let receipts: Vec<_> = batch.iter().map(|d| d.receipt).collect();
                    q.ack_batch(&receipts)?;
                    urgent.fetch_add(n_urgent, Ordering::SeqCst);
                    done.fetch_add(batch.len() as u32, Ordering::SeqCst);
                }
                Ok(())
            })
        })
        .collect();
    producer.join().expect("producer thread")?;
    for c in consumers {
        c.join().expect("consumer thread")?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{MESSAGES} messages ({} urgent) enqueued, delivered to {CONSUMERS} consumers and acked durably in {secs:.2} s ({:.0} msgs/s)",
        urgent.load(Ordering::SeqCst),
        f64::from(MESSAGES) / secs
    );
    println!("{:?}", q.stats());
    q.close()?;
    Ok(())
}
