//! lanelog itself.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use lanelog::{DequeueOptions, Durability, Queue, QueueOptions};

use super::{Handle, Opened, Store};
use crate::util::{mem_of, Payloads};

pub struct LanelogStore {
    q: Queue,
}

impl LanelogStore {
    pub fn open(dir: &Path, durable: bool) -> Result<Self> {
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let q = QueueOptions::new()
            .durability(durability)
            .open(dir.join("q"))?;
        Ok(LanelogStore { q })
    }
}

impl Store for LanelogStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(LanelogHandle { q: self.q.clone() }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.q.close()?;
        Ok(())
    }
}

struct LanelogHandle {
    q: Queue,
}

impl Handle for LanelogHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        if let [one] = items {
            self.q.enqueue(one, 0)?;
        } else {
            let batch: Vec<(&[u8], u8)> = items.iter().map(|p| (*p, 0)).collect();
            self.q.enqueue_batch(&batch)?;
        }
        Ok(())
    }

    fn dequeue(&mut self, max: usize, wait: bool) -> Result<usize> {
        let got = if wait {
            self.q.dequeue_with(
                &DequeueOptions::new()
                    .max(max)
                    .wait(Duration::from_millis(100)),
            )?
        } else {
            self.q.dequeue_up_to(max)?
        };
        if got.is_empty() {
            return Ok(0);
        }
        let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
        self.q.ack_batch(&receipts)?;
        Ok(got.len())
    }

    fn blocks(&self) -> bool {
        true
    }
}

pub fn fill(dir: &Path, n: u64, size: usize) -> Result<()> {
    let q = QueueOptions::new()
        .durability(Durability::None)
        .open(dir.join("q"))?;
    let mut gen = Payloads::new(size, 1000, 0);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        let batch: Vec<(&[u8], u8)> = gen.batch(k).into_iter().map(|p| (p, 0)).collect();
        q.enqueue_batch(&batch)?;
        left -= k as u64;
    }
    q.close()?;
    Ok(())
}

pub fn open_only(dir: &Path, n: u64) -> Result<Opened> {
    let t = Instant::now();
    let q = QueueOptions::new().open(dir.join("q"))?;
    let secs = t.elapsed().as_secs_f64();
    let mem = mem_of("self");
    let stats = q.stats();
    ensure!(
        stats.ready == n,
        "lanelog found {} ready messages, expected {n}",
        stats.ready
    );
    let report = q.recovery_report();
    let note = format!(
        "ready={} checkpoint={:?} replayed={} scanned={}",
        stats.ready, report.checkpoint, report.entries_replayed, report.records_scanned
    );
    drop(q);
    Ok(Opened { secs, mem, note })
}
