//! A quick throughput and open-time run, with an fdatasync probe beside the
//! figures (the disk of the development machines switches between fast and
//! slow phases, so figures are only comparable with their probe).
//!
//! Run: `cargo run --release --example quick_bench [messages] [pending] [size]`
//! (defaults: 200000 messages per throughput cell, 1000000 pending for the
//! open-time cell, 128-byte payloads).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use lanelog::{Durability, QueueOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let pending: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let size: usize = args.next().map_or(Ok(128), |a| a.parse())?;
    let payload = vec![0xABu8; size];
    println!(
        "fdatasync probe (16 x 4 KiB appends): median {:?}",
        fsync_probe()?
    );
    for (name, durability) in [
        ("Immediate", Durability::Immediate),
        ("None", Durability::None),
    ] {
        let dir = tempfile::tempdir()?;
        let q = QueueOptions::new()
            .durability(durability)
            .open(dir.path())?;
        let batch: Vec<(&[u8], u8)> = vec![(&payload[..], 0); 100];
        let t = Instant::now();
        for _ in 0..n / 100 {
            q.enqueue_batch(&batch)?;
        }
        let enq = t.elapsed();
        let t = Instant::now();
        let mut got = 0;
        while got < n {
            let ds = q.dequeue_up_to(100)?;
            got += ds.len();
            let receipts: Vec<_> = ds.iter().map(|d| d.receipt).collect();
            q.ack_batch(&receipts)?;
        }
        let deq = t.elapsed();
        println!(
            "{name:>9}: enqueue (batches of 100 x {size} B) {:>9.0} msgs/s | dequeue+ack (batches of 100) {:>9.0} msgs/s",
            n as f64 / enq.as_secs_f64(),
            n as f64 / deq.as_secs_f64()
        );
        q.close()?;
    }
    let dir = tempfile::tempdir()?;
    let q = QueueOptions::new()
        .durability(Durability::None)
        .open(dir.path())?;
    let batch: Vec<(&[u8], u8)> = vec![(&payload[..], 0); 1000];
    for _ in 0..pending / 1000 {
        q.enqueue_batch(&batch)?;
    }
    q.close()?;
    let t = Instant::now();
    let q = QueueOptions::new().open(dir.path())?;
    let clean = t.elapsed();
    assert_eq!(q.stats().ready as usize, pending / 1000 * 1000);
    drop(q);
    println!("open with {pending} pending {size} B messages after a clean close: {clean:?}");
    Ok(())
}

/// Median of 16 appends of 4 KiB, each followed by fdatasync.
fn fsync_probe() -> std::io::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("probe"))?;
    let block = vec![1u8; 4096];
    let mut times: Vec<Duration> = (0..16)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&block)
                .and_then(|()| f.sync_data())
                .map(|()| t.elapsed())
        })
        .collect::<Result<_, _>>()?;
    times.sort();
    Ok(times[8])
}
