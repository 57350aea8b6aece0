//! The crash-safety battery's own harness (`crash_sweep`, `io_error_sweep`;
//! `model_proptest` uses its knobs), on top of the shared test kit
//! (`testkit/`), which holds the reference model, the oracles, the payloads
//! and the generator.
//!
//! - [`workload`]: the battery's seeded workloads and the
//!   [`workload::Driver`] that runs one on a fresh `MemoryStorage`,
//!   optionally with a fault plan, keeping `testkit::model::Model` in step
//!   with what the queue returned.
//! - [`model`]: `testkit::model` (per-message history of observable states
//!   and the durable point of each crash view).
//! - [`verify`]: `testkit::oracle`, with `check` taking a workload: open an
//!   image (panics caught), drain it, and count lost, resurrected, holes,
//!   corrupt and wrong-state messages.
//! - [`traced`]: `testkit::traced`, a `Storage` wrapper that logs every
//!   counted call, so a sweep knows which call index is a sync and can name
//!   the call it broke, and watches the queue's background thread.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use testkit::traced;
pub mod verify;
pub mod workload;

// Each test binary that includes the battery uses a part of these.
#[allow(unused_imports)]
pub use testkit::model;
#[allow(unused_imports)]
pub use testkit::workload::{options, payload, T0, VISIBILITY_MS};
#[allow(unused_imports)]
pub use testkit::{mix, rng};

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
        d.unexpected.is_empty()
            && d.tender_stuck.is_empty()
            && d.errors == 0
            && d.model.read_error_dead == 0,
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
    let summary = if w.timed {
        let m = &d.model;
        let dups = m.keys.values().map(|k| k.ids.len()).sum::<usize>();
        format!(
            "{summary}; {} deadline misses, {} expired, {} dead letters expired, {} completed ({} results at the end), {} keys ({} admissions), {} tender runs waited for ({:.1?})",
            m.missed.total,
            m.expired.total,
            m.dead_expired.total,
            m.msgs.values().filter(|x| x.result.is_some()).count(),
            m.completed().count(),
            m.keys.len(),
            dups,
            d.settles,
            d.settle_time
        )
    } else {
        summary
    };
    (log.len() as u64, summary)
}
