//! The workloads, run inside a child process on one row.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::peers::{self, Handle, Store};
use crate::util::Payloads;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// (a) durable batches of `batch`.
    Enqueue,
    /// (b) one durable call per message, 1 producer.
    Fsync1,
    /// (b) one durable call per message, 8 producer threads.
    Fsync8,
    /// (c) dequeue + ack in batches after an untimed prefill.
    Dequeue,
    /// (d) 1 producer + 1 consumer thread, batches of `batch`.
    Mixed,
    /// (e) open time and memory with `pending` messages.
    Open,
}

pub const ALL: [Workload; 6] = [
    Workload::Enqueue,
    Workload::Fsync1,
    Workload::Fsync8,
    Workload::Dequeue,
    Workload::Mixed,
    Workload::Open,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Enqueue => "enqueue",
            Workload::Fsync1 => "fsync1",
            Workload::Fsync8 => "fsync8",
            Workload::Dequeue => "dequeue",
            Workload::Mixed => "mixed",
            Workload::Open => "open",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        ALL.into_iter().find(|w| w.name() == s)
    }

    /// Column heading.
    pub fn title(self) -> &'static str {
        match self {
            Workload::Enqueue => "enqueue (batch)",
            Workload::Fsync1 => "fsync/msg 1 thr",
            Workload::Fsync8 => "fsync/msg 8 thr",
            Workload::Dequeue => "dequeue+ack",
            Workload::Mixed => "1 prod + 1 cons",
            Workload::Open => "open",
        }
    }
}

/// What a throughput run measured.
pub struct RunOut {
    pub secs: f64,
    pub n: u64,
    /// Peak resident memory of the server process (Redis rows).
    pub server_hwm: Option<u64>,
}

/// Run one throughput workload on a fresh queue of row `peer` in `dir`.
pub fn run(
    peer: &str,
    w: Workload,
    size: usize,
    n: u64,
    batch: usize,
    dir: &std::path::Path,
) -> Result<RunOut> {
    let store = peers::open(peer, dir)?;
    let secs = match w {
        Workload::Enqueue => enqueue(&*store, size, n, batch)?,
        Workload::Fsync1 => producers(&*store, size, n, 1)?,
        Workload::Fsync8 => producers(&*store, size, n, 8)?,
        Workload::Dequeue => dequeue(&*store, size, n, batch)?,
        Workload::Mixed => mixed(&*store, size, n, batch)?,
        Workload::Open => bail!("open is not a throughput workload"),
    };
    let server_hwm = store.server_hwm();
    store.close()?;
    Ok(RunOut {
        secs,
        n,
        server_hwm,
    })
}

fn enqueue(store: &dyn Store, size: usize, n: u64, batch: usize) -> Result<f64> {
    let mut h = store.handle()?;
    let mut gen = Payloads::new(size, batch, 0);
    let t = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(batch as u64) as usize;
        h.enqueue(&gen.batch(k))?;
        left -= k as u64;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `threads` producers, each enqueueing its share one message per call.
fn producers(store: &dyn Store, size: usize, n: u64, threads: u64) -> Result<f64> {
    let handles: Vec<Box<dyn Handle>> = (0..threads)
        .map(|_| store.handle())
        .collect::<Result<_>>()?;
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let joins: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, mut h)| {
            let start = start.clone();
            let share = n / threads + u64::from((i as u64) < n % threads);
            thread::spawn(move || -> Result<()> {
                let mut gen = Payloads::new(size, 1, (i as u64) << 40);
                start.wait();
                for _ in 0..share {
                    h.enqueue(&gen.batch(1))?;
                }
                Ok(())
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for j in joins {
        j.join().map_err(|_| anyhow!("producer panicked"))??;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn dequeue(store: &dyn Store, size: usize, n: u64, batch: usize) -> Result<f64> {
    let mut h = store.handle()?;
    // Untimed prefill, in the row's own durable batches of 1000.
    let mut gen = Payloads::new(size, 1000, 0);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        h.enqueue(&gen.batch(k))?;
        left -= k as u64;
    }
    drop(gen);
    let t = Instant::now();
    let mut got = 0u64;
    while got < n {
        let k = h.dequeue(batch, false)?;
        if k == 0 {
            bail!("queue empty after {got} of {n} messages");
        }
        got += k as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    if got != n {
        bail!("dequeued {got} messages, expected {n}");
    }
    Ok(secs)
}

fn mixed(store: &dyn Store, size: usize, n: u64, batch: usize) -> Result<f64> {
    let mut producer = store.handle()?;
    let mut consumer = store.handle()?;
    let start = Arc::new(Barrier::new(3));
    let p_start = start.clone();
    let prod = thread::spawn(move || -> Result<()> {
        let mut gen = Payloads::new(size, batch, 0);
        p_start.wait();
        let mut left = n;
        while left > 0 {
            let k = left.min(batch as u64) as usize;
            producer.enqueue(&gen.batch(k))?;
            left -= k as u64;
        }
        Ok(())
    });
    let c_start = start.clone();
    let cons = thread::spawn(move || -> Result<u64> {
        c_start.wait();
        let blocks = consumer.blocks();
        let mut got = 0u64;
        let mut last_progress = Instant::now();
        while got < n {
            let k = consumer.dequeue(batch, true)?;
            if k == 0 {
                if last_progress.elapsed() > Duration::from_secs(60) {
                    bail!("consumer stalled at {got} of {n}");
                }
                if !blocks {
                    thread::sleep(Duration::from_micros(50));
                }
            } else {
                got += k as u64;
                last_progress = Instant::now();
            }
        }
        Ok(got)
    });
    start.wait();
    let t = Instant::now();
    let got = cons.join().map_err(|_| anyhow!("consumer panicked"))??;
    let secs = t.elapsed().as_secs_f64();
    prod.join().map_err(|_| anyhow!("producer panicked"))??;
    if got != n {
        bail!("consumed {got} messages, expected {n}");
    }
    Ok(secs)
}
