//! Shared harness of the crash-safety battery (`crash_sweep`,
//! `io_error_sweep`): a seeded workload driver, a model of what every call
//! that returned `Ok` promised, and the oracles that judge a reopened crash
//! image against that model.
//!
//! - [`workload`]: the workloads and the [`workload::Driver`] that runs one
//!   on a fresh `MemoryStorage`, optionally with a fault plan, keeping the
//!   model in step with what the queue returned.
//! - [`model`]: per-message history of observable states, stamped with the
//!   op that caused them, and the durable point of each crash view.
//! - [`verify`]: open an image (panics caught), drain it, and count lost,
//!   resurrected, holes, corrupt and wrong-state messages.
//! - [`traced`]: a `Storage` wrapper that logs every counted call, so a
//!   sweep knows which call index is a sync and can name the call it broke.
#![allow(dead_code)]

pub mod model;
pub mod traced;
pub mod verify;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use lanelog::{Durability, ManualClock, QueueOptions};

/// The workload clock's start (ms since the epoch).
pub const T0: u64 = 1_700_000_000_000;

/// Lease of every delivery in the workloads.
pub const VISIBILITY_MS: u64 = 10_000;

/// Keep freed buffers in the allocator instead of returning them to the
/// kernel. Every crash image copies whole preallocated 1 MiB segments, and
/// with glibc's defaults each copy is a fresh `mmap` whose pages fault in
/// and are zeroed, then are unmapped again: most of a sweep's time. Raising
/// the mmap and trim thresholds makes the buffers reuse warm heap memory.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tuning parameters; it is
        // called once, before the sweep's threads allocate anything large.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// `LANELOG_BATTERY_SCALE` (an integer multiplier, default 1).
pub fn scale() -> u64 {
    std::env::var("LANELOG_BATTERY_SCALE")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u64| n >= 1)
        .unwrap_or(1)
}

/// Worker threads for a sweep: at most 2 (the CI machine has 2 shared
/// cores); `LANELOG_BATTERY_THREADS` overrides.
pub fn threads() -> usize {
    std::env::var("LANELOG_BATTERY_THREADS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &usize| n >= 1)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(2)
        })
}

/// Run `work(i)` for every `i` in `0..n` on [`threads`] threads, each
/// thread folding its results into its own accumulator; returns them all.
pub fn parallel<A: Send + Default>(n: u64, work: impl Fn(u64, &mut A) + Sync) -> Vec<A> {
    let next = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads())
            .map(|_| {
                s.spawn(|| {
                    let mut acc = A::default();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return acc;
                        }
                        work(i, &mut acc);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep worker panicked"))
            .collect()
    })
}

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1A4_F87D)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next().checked_rem(n).unwrap_or(0)
    }

    /// A value in `lo..=hi`.
    pub fn within(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// Mix two numbers into a seed.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut r = Rng::new(a.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ b);
    r.next()
}

/// The payload of the message tagged `tag`: the tag's little-endian bytes
/// (as many as fit), then a pattern derived from the tag and the length, so
/// any damage, truncation or mix-up is caught by regenerating it.
pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&tag.to_le_bytes());
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (len as u64) ^ 0xA5A5;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Options shared by the workloads: 1 MiB segments, 64 KiB journal files,
/// a small checkpoint threshold, a 10 s lease.
pub fn options(
    clock: &ManualClock,
    durability: Durability,
    max_deliveries: u32,
    checkpoint_bytes: u64,
) -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
        .checkpoint_bytes(checkpoint_bytes)
        .durability(durability)
        .visibility_timeout(Duration::from_millis(VISIBILITY_MS))
        .max_deliveries(max_deliveries)
        .clock(Arc::new(clock.clone()))
}

/// `x` with thousands separators, for the summary lines.
pub fn n(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a fault-free run of `w` does, from its storage call log: the number
/// of storage calls (the crash points a sweep covers) and a summary line.
/// Panics if the run does not match the model.
pub fn profile(w: &workload::Workload, mode: workload::Mode) -> (u64, String) {
    let d = workload::Driver::run_logged(w, None, mode, true).expect("no panic");
    assert!(
        d.unexpected.is_empty() && d.errors == 0 && d.model.read_error_dead == 0,
        "{}: the fault-free run must match the model: {:?}",
        w.name,
        d.unexpected
    );
    let log = d.traced.log();
    let count = |kind: &str, prefix: &str| {
        log.iter()
            .filter(|c| c.kind == kind && c.file.starts_with(prefix))
            .count()
    };
    let (ready, in_flight, delayed, dead) = d.model.counts();
    let summary = format!(
        "{} calls ({} syncs, {} writes, {} reads), {} segments made / {} removed ({} whole-segment reads), {} journal files, {} checkpoints, {} messages, {} acked; at the end {ready} ready, {in_flight} in flight, {delayed} delayed, {dead} dead",
        log.len(),
        log.iter().filter(|c| c.is_sync()).count(),
        count("write_at", ""),
        count("read_at", ""),
        count("create", "segment-"),
        count("remove", "segment-"),
        count("len", "segment-"),
        count("create", "journal-"),
        count("rename", "checkpoint-"),
        d.model.msgs.len(),
        d.model.acked_bounds(model::View::Process).0,
    );
    (log.len() as u64, summary)
}
