//! Goal: a simulated power loss after ANY storage call leaves a directory
//! that opens and holds exactly what the calls that returned Ok promised:
//! 0 lost, 0 resurrected, 0 holes, 0 corrupt, 0 panics; and a second crash
//! during the recovery of such an image changes nothing.
//!
//! Method: a seeded workload (batches, four priorities, payloads of 0..2 KiB
//! that encode their own tag, dequeues, acks, nacks, dead letters, redrives,
//! lease expiries on a ManualClock, 1 MiB segment rolls, 64 KiB journal
//! rolls, checkpoints, a clean close and reopen in the middle, a close at the
//! end). For every storage call index k, the workload runs again on a fresh
//! `MemoryStorage` whose call k and every later call fail with EIO (the
//! machine "dies" at k; the workload stops at its first error), then
//! `crash(PowerLoss { seed, torn })` builds survivor images for several
//! seeds, torn and not. Each image is opened with faults off and drained;
//! the oracles of `battery::verify` judge it against the model of what
//! returned Ok (`battery::model`). For a sample of images, the recovery is
//! crashed at each of its own calls (fault, then PowerLoss) and reopened:
//! same oracles, plus the state must equal a clean recovery's.
//!
//! Three workloads: `Durability::Immediate` (every Ok write is a power-loss
//! promise, except a dequeue's delivery record), `Durability::None` with
//! explicit `sync()` calls (only what a sync or clean close covered is
//! promised; holes are still checked: what survives must be a prefix), and
//! `timed` (`Immediate` with deadlines, idempotency keys, `complete` and
//! results, retention and dead-letter retention; every clock step makes the
//! background thread run at a known point, see `battery::workload`): results
//! read back byte for byte and never beside their message, durable keys
//! never admitted twice, nothing expired back, the lifetime counters within
//! bounds.
//!
//! Scale: `LANELOG_BATTERY_SCALE=n` runs n different workload seeds of each
//! kind (n times the crash states). Run with `--nocapture` to see figures.

mod battery;

use std::sync::Arc;
use std::time::Instant;

use battery::model::View;
use battery::verify::{check, Findings, Observed};
use battery::workload::{Driver, Mode, Weights, Workload};
use battery::{mix, n, options, parallel, profile, scale};
use lanelog::storage::{CrashPolicy, Fault, FaultKind, FaultOps, MemoryStorage};
use lanelog::{Durability, ManualClock, Timestamp};
use testkit::traced::Traced;
use testkit::workload::{timeless, Timers};

/// Power-loss images per crash point: torn and not, alternating.
const SEEDS: u64 = 4;
/// Crash points whose first image also gets the crash-during-recovery sweep.
const DOUBLE_EVERY: u64 = 97;

fn immediate(seed: u64) -> Workload {
    Workload {
        name: "immediate",
        seed,
        ops: 1100,
        durability: Durability::Immediate,
        max_deliveries: 3,
        checkpoint_bytes: 16 << 10,
        reopen_at: Some(550),
        close_at_end: true,
        weights: Weights {
            enqueue: 3,
            batch: 6,
            delayed: 1,
            dequeue: 14,
            ack: 22,
            nack: 2,
            dead: 1,
            redrive: 1,
            advance: 2,
            sync: 0,
            ..Weights::default()
        },
        batch_max: 14,
        len_max: 2048,
        priorities: &[0, 3, 7, 9],
        dequeue_max: 12,
        ack_max: 8,
        reason_max: 300,
        advance_max_ms: 12_000,
        prelude: true,
        timed: false,
        timers: Timers::default(),
        step_ms: 1,
        deadline_max_ms: 0,
        keys: 0,
    }
}

fn none_with_sync(seed: u64) -> Workload {
    Workload {
        name: "none+sync",
        seed,
        ops: 1000,
        durability: Durability::None,
        weights: Weights {
            sync: 2,
            ..immediate(seed).weights
        },
        reopen_at: Some(500),
        ..immediate(seed)
    }
}

/// Deadlines (earliest first, missed ones dead-lettered by the tender and
/// by dequeues), idempotency keys (repeating within and past the window),
/// `complete` with results, retention and dead-letter retention, under
/// `Immediate`. Clock steps are multiples of 500 ms and the retention
/// 20.1 s (granularity 314 ms), so every age is clearly under or past it.
fn timed(seed: u64) -> Workload {
    Workload {
        name: "timed",
        seed,
        ops: 300,
        durability: Durability::Immediate,
        max_deliveries: 3,
        checkpoint_bytes: 16 << 10,
        reopen_at: Some(150),
        close_at_end: true,
        weights: Weights {
            enqueue: 2,
            batch: 1,
            delayed: 1,
            dequeue: 12,
            ack: 8,
            nack: 2,
            dead: 1,
            redrive: 0,
            advance: 3,
            sync: 0,
            with: 6,
            batch_with: 2,
            complete: 6,
        },
        batch_max: 8,
        len_max: 2048,
        priorities: &[0, 3, 7],
        dequeue_max: 8,
        ack_max: 6,
        reason_max: 100,
        advance_max_ms: 6_000,
        prelude: false,
        timed: true,
        timers: TIMED,
        step_ms: 500,
        deadline_max_ms: 15_000,
        keys: 24,
    }
}

/// The timers of [`timed`]: retention 20.1 s, dead letters 25 s, keys 15 s.
const TIMED: Timers = Timers {
    retention_ms: Some(20_100),
    dead_retention_ms: Some(25_000),
    dedup_window_ms: 15_000,
    max_keys: 1_000_000,
};

/// Crash the recovery of `img` at each of its calls, lose power, reopen:
/// the oracles hold and the state equals that of a clean recovery.
fn double_crash(
    img: &MemoryStorage,
    reference: &Observed,
    w: &Workload,
    d: &Driver,
    ctx: &str,
    f: &mut Findings,
) {
    // As `verify::observe` opens images: at the model's clock + 1 ms,
    // nothing removed by time.
    let clock = ManualClock::new(Timestamp(d.model.now + 1));
    let opts = || timeless(options(&clock, Durability::None, 0, w.checkpoint_bytes));
    // The calls of recovery itself: the background thread starts when open
    // returns and may make its own before they are counted.
    let probe = Traced::new(img.crash(CrashPolicy::ProcessCrash), false);
    let calls = match opts().open_storage(Arc::new(probe.clone())) {
        Ok(q) => {
            let c = probe.calls_not_tender();
            drop(q);
            c
        }
        Err(_) => return, // counted by the first check already
    };
    let want = reference.state();
    for j in 0..calls {
        let c = img.crash(CrashPolicy::ProcessCrash);
        c.set_fault(Some(Fault {
            at_call: j,
            kind: FaultKind::Eio,
            forever: true,
            only: FaultOps::Any,
        }));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            opts().open_storage(Arc::new(c.clone())).map(drop)
        }));
        if let Err(p) = opened {
            f.panics += 1;
            f.note(format!(
                "PANIC {ctx} recovery call {j}: {}",
                battery::workload::panic_text(&*p)
            ));
            continue;
        }
        let policy = CrashPolicy::PowerLoss {
            seed: mix(j, 0xD0B1E),
            torn: j % 2 == 0,
        };
        let ctx2 = format!("{ctx} + crash at recovery call {j} {policy:?}");
        if let Some(o) = check(c.crash(policy), w, &d.model, View::Power, &ctx2, f) {
            if o.state() != want {
                f.diverged += 1;
                f.note(format!(
                    "DIVERGED {ctx2}: {:?} vs a clean recovery's {:?}",
                    diff(&o.state(), &want),
                    want.1
                ));
            }
        }
    }
}

type State = (
    std::collections::BTreeMap<u64, battery::model::Seen>,
    battery::model::Totals,
);

fn diff(a: &State, b: &State) -> Vec<String> {
    let mut out = Vec::new();
    if a.1 != b.1 {
        out.push(format!("counters {:?} vs {:?}", a.1, b.1));
    }
    for (id, s) in &a.0 {
        if b.0.get(id) != Some(s) {
            out.push(format!("{id}: {s:?} vs {:?}", b.0.get(id)));
        }
    }
    for (id, s) in &b.0 {
        if !a.0.contains_key(id) {
            out.push(format!("{id}: missing vs {s:?}"));
        }
    }
    out.truncate(6);
    out
}

/// Crash `w` at every call index; returns the findings, how many images had
/// their recovery crashed at every call, and the states that made.
fn sweep(w: &Workload, calls: u64) -> (Findings, u64, u64, u64) {
    let parts = parallel(calls, |k, acc: &mut (Findings, u64, u64, u64)| {
        let (f, images, doubles, stopped) = acc;
        let fault = Fault {
            at_call: k,
            kind: FaultKind::Eio,
            forever: true,
            only: FaultOps::Any,
        };
        let d = match Driver::run(w, Some(fault), Mode::StopAtFirstError) {
            Ok(d) => d,
            Err(p) => {
                f.panics += 1;
                f.note(format!("PANIC {} crash at call {k}: {p}", w.name));
                return;
            }
        };
        for u in &d.unexpected {
            f.wrong_state += 1;
            f.note(format!("WRONG-STATE {} crash at call {k}: {u}", w.name));
        }
        for u in &d.tender_stuck {
            *stopped += 1;
            f.note(format!("TENDER-STUCK {} crash at call {k}: {u}", w.name));
        }
        for s in 0..SEEDS {
            let policy = CrashPolicy::PowerLoss {
                seed: mix(w.seed, k * SEEDS + s),
                torn: s % 2 == 0,
            };
            let img = d.storage.crash(policy);
            let ctx = format!("{} seed {} crash at call {k} {policy:?}", w.name, w.seed);
            let double = s == 0 && k % DOUBLE_EVERY == DOUBLE_EVERY / 2;
            let pristine = double.then(|| img.crash(CrashPolicy::ProcessCrash));
            let obs = check(img, w, &d.model, View::Power, &ctx, f);
            if let (Some(p), Some(o)) = (pristine, obs) {
                let before = f.states;
                double_crash(&p, &o, w, &d, &ctx, f);
                *images += 1;
                *doubles += f.states - before;
            }
        }
    });
    let mut total = Findings::default();
    let (mut images, mut doubles, mut stopped) = (0, 0, 0);
    for (f, i, d, s) in parts {
        total.add(&f);
        images += i;
        doubles += d;
        stopped += s;
    }
    (total, images, doubles, stopped)
}

/// The workloads of one seed index.
fn workloads(s: u64) -> [Workload; 3] {
    [
        immediate(0xC0FFEE + s),
        none_with_sync(0xBEEF + s),
        timed(0x7143 + s),
    ]
}

#[test]
fn power_loss_at_every_storage_call() {
    battery::tune_allocator();
    let started = Instant::now();
    let mut all = Findings::default();
    let mut tender_stuck = 0;
    for s in 0..scale() {
        for w in workloads(s) {
            let t = Instant::now();
            let (calls, summary) = profile(&w, Mode::StopAtFirstError);
            println!("crash-sweep: {} seed {}: {summary}", w.name, w.seed);
            let (f, images, doubles, stopped) = sweep(&w, calls);
            println!(
                "crash-sweep: {} seed {}: {} crash points x {SEEDS} images + {} crashes during the recovery of {} of them = {} states, {}; {}; {} runs with the tender stuck ({:.1?})",
                w.name,
                w.seed,
                n(calls),
                n(doubles),
                images,
                n(f.states),
                f.headline(),
                f.details(),
                stopped,
                t.elapsed()
            );
            all.add(&f);
            tender_stuck += stopped;
        }
    }
    for note in &all.notes {
        println!("  {note}");
    }
    println!(
        "crash-sweep: {} crash states, {} ({:.1?})",
        n(all.states),
        all.headline(),
        started.elapsed()
    );
    println!("crash-sweep: {}", all.details());
    // A pass of the tender that failed without poisoning the queue is
    // retried; a crash sweep's storage fails for good, so a retry cannot get
    // through and the run ends there, which changes nothing here.
    println!(
        "crash-sweep: {tender_stuck} runs in which the tender's retries after a failed call did not get through"
    );
    assert_eq!(
        all.failures(),
        0,
        "crash sweep found violations (see above)"
    );
    assert!(all.states >= 10_000, "too few crash states: {}", all.states);
}

/// The fault-free runs match the model; prints what each workload exercises.
#[test]
fn workloads_match_the_model_without_faults() {
    let seeds = (0..scale()).flat_map(workloads);
    for w in seeds {
        let t = Instant::now();
        let (_, summary) = profile(&w, Mode::StopAtFirstError);
        println!(
            "{} seed {}: {summary} ({:.1?})",
            w.name,
            w.seed,
            t.elapsed()
        );
    }
}

/// Open `m` with the sweep's options, faults off.
fn reopen(m: MemoryStorage, durability: Durability) -> lanelog::Queue {
    let clock = ManualClock::new(Timestamp(battery::T0));
    options(&clock, durability, 0, 64 << 20)
        .open_storage(Arc::new(m))
        .expect("a crash image opens")
}

/// The tags (first 8 payload bytes) of everything ready.
fn ready_tags(q: &lanelog::Queue) -> Vec<u64> {
    let mut tags = Vec::new();
    loop {
        let batch = q.dequeue_up_to(64).expect("dequeue");
        if batch.is_empty() {
            return tags;
        }
        for d in batch {
            let mut t = [0u8; 8];
            t.copy_from_slice(&d.payload[..8]);
            tags.push(u64::from_le_bytes(t));
        }
    }
}

/// Minimal reproduction of the partial batches the sweep counts: crash at
/// every storage call of one `enqueue_batch` (EIO from there on), then
/// reopen the process-crash image and power-loss images, torn or not.
/// `enqueue_batch` promises "all or none"; some of the batch survives.
#[test]
fn failed_enqueue_batch_is_all_or_none() {
    // Three 300 KiB payloads after 500 KiB already written: the batch goes
    // whole into a fresh segment (a roll, then one write); three 1 KiB
    // payloads go in one write that a power loss may tear.
    let shapes: [(u64, usize); 2] = [(300 << 10, 3), (1 << 10, 3)];
    let mut partial = Vec::new();
    for (len, count) in shapes {
        let payloads: Vec<Vec<u8>> = (1..=count as u64)
            .map(|t| battery::payload(t, len as usize))
            .collect();
        let batch: Vec<(&[u8], u8)> = payloads.iter().map(|p| (p.as_slice(), 0)).collect();
        for k in 0.. {
            let m = MemoryStorage::new();
            let q = reopen(m.clone(), Durability::Immediate);
            if len > 1 << 10 {
                q.enqueue(&battery::payload(99, 500 << 10), 1).unwrap();
            }
            m.set_fault(Some(Fault {
                at_call: m.calls() + k,
                kind: FaultKind::Eio,
                forever: true,
                only: FaultOps::Any,
            }));
            if q.enqueue_batch(&batch).is_ok() {
                break;
            }
            let mut policies = vec![CrashPolicy::ProcessCrash];
            policies.extend((0..16).map(|seed| CrashPolicy::PowerLoss { seed, torn: true }));
            for policy in policies {
                let tags = ready_tags(&reopen(m.crash(policy), Durability::Immediate));
                let n = tags.iter().filter(|&&t| t != 99).count();
                if n != 0 && n != count {
                    partial.push(format!(
                        "{count} x {len} B, crash at batch call {k}, {policy:?}: {n} of {count} survive"
                    ));
                }
            }
        }
    }
    assert!(partial.is_empty(), "partial batches: {partial:#?}");
    // A batch larger than a segment is refused whole.
    let q = reopen(MemoryStorage::new(), Durability::Immediate);
    let big: Vec<Vec<u8>> = (1..=3).map(|t| battery::payload(t, 400 << 10)).collect();
    let batch: Vec<(&[u8], u8)> = big.iter().map(|p| (p.as_slice(), 0)).collect();
    assert!(matches!(
        q.enqueue_batch(&batch),
        Err(lanelog::Error::TooLarge { .. })
    ));
    assert_eq!(q.stats().ready, 0);
}

/// Minimal reproduction of the prefix holes the sweep counts under
/// `Durability::None`: message 1 (500 KiB) fills most of segment 1 unsynced;
/// message 2 (600 KiB) rolls to segment 2. Crash at every call of the
/// second enqueue and lose power: some images keep message 2 but not 1.
#[test]
fn power_loss_under_none_keeps_a_prefix_across_a_segment_roll() {
    let one = battery::payload(1, 500 << 10);
    let two = battery::payload(2, 600 << 10);
    let mut holes = Vec::new();
    for k in 0.. {
        let m = MemoryStorage::new();
        let q = reopen(m.clone(), Durability::None);
        q.enqueue(&one, 0).expect("enqueue 1");
        m.set_fault(Some(Fault {
            at_call: m.calls() + k,
            kind: FaultKind::Eio,
            forever: true,
            only: FaultOps::Any,
        }));
        if q.enqueue(&two, 0).is_ok() {
            break;
        }
        for seed in 0..32 {
            let policy = CrashPolicy::PowerLoss { seed, torn: false };
            let tags = ready_tags(&reopen(m.crash(policy), Durability::None));
            if tags == [2] {
                holes.push(format!("crash at call {k} of enqueue 2, {policy:?}"));
            }
        }
    }
    assert!(
        holes.is_empty(),
        "message 2 survived without message 1: {holes:#?}"
    );
}

/// What life 2 of [`power_loss_after_a_killed_process_reopened`] does
/// before its process is killed (or closed).
#[derive(Debug, Clone, Copy)]
enum Life2 {
    /// Opens and closes without writing: the close has nothing to save.
    Nothing,
    /// Opens and is killed without writing.
    KilledIdle,
    /// Enqueues, leases and acks without a sync, then is killed.
    Unsynced,
    /// As `Unsynced` with payloads that roll into new segments.
    Rolls,
    /// Syncs once, then writes more without a sync, then is killed.
    SyncedThenMore,
    /// As `Unsynced`, then closes cleanly.
    Closed,
}

/// The tags ready in a queue, leasing each (as `ready_tags`), with the
/// recovery report's damage.
fn open_and_read(m: MemoryStorage) -> (std::collections::BTreeSet<u64>, bool) {
    let q = reopen(m, Durability::None);
    let damaged = q.recovery_report().found_damage();
    (ready_tags(&q).into_iter().collect(), damaged)
}

/// Recovery syncs only what it accepted past the newest checkpoint, and open
/// syncs nothing more, so that open after a clean close makes no sync. This
/// checks the cases that rule must get right, which the power-loss images of
/// the sweep (whose files are all on the platter) cannot reach: a killed
/// process leaves its unsynced writes in the page cache, the next process
/// opens them, writes after them (its records and frames stamped with
/// "synced up to here"), and then the power fails. Everything that process
/// opened with must survive, acks included, with no damage reported and no
/// hole in what it wrote after; likewise after a clean close, and after a
/// close that had nothing to checkpoint.
#[test]
fn power_loss_after_a_killed_process_reopened() {
    let mut failures = Vec::new();
    for life2 in [
        Life2::Nothing,
        Life2::KilledIdle,
        Life2::Unsynced,
        Life2::Rolls,
        Life2::SyncedThenMore,
        Life2::Closed,
    ] {
        // Life 1: some traffic, then a clean close (a checkpoint).
        let m = MemoryStorage::new();
        let q = reopen(m.clone(), Durability::None);
        let first: Vec<Vec<u8>> = (1..=20).map(|t| battery::payload(t, 300)).collect();
        q.enqueue_batch(&first.iter().map(|p| (p.as_slice(), 0)).collect::<Vec<_>>())
            .expect("enqueue");
        let ds = q.dequeue_up_to(8).expect("dequeue");
        for (i, d) in ds.into_iter().enumerate() {
            if i % 2 == 0 {
                q.ack(d.receipt).expect("ack");
            } else {
                q.complete(d.receipt, b"result").expect("complete");
            }
        }
        q.sync().expect("sync");
        q.close().expect("close");

        // Life 2.
        let mut q = Some(reopen(m.clone(), Durability::None));
        let size = if matches!(life2, Life2::Rolls) {
            400 << 10
        } else {
            500
        };
        let more = |q: &lanelog::Queue, tags: std::ops::RangeInclusive<u64>| {
            for t in tags {
                q.enqueue(&battery::payload(t, size), 3).expect("enqueue");
            }
            let ds = q.dequeue_up_to(3).expect("dequeue");
            for d in ds {
                q.ack(d.receipt).expect("ack");
            }
        };
        let image = match life2 {
            Life2::Nothing => {
                q.take().expect("open").close().expect("close");
                m.clone()
            }
            Life2::KilledIdle => m.kill_process(),
            Life2::Unsynced | Life2::Rolls => {
                more(q.as_ref().expect("open"), 21..=28);
                m.kill_process()
            }
            Life2::SyncedThenMore => {
                let q = q.as_ref().expect("open");
                more(q, 21..=24);
                q.sync().expect("sync");
                more(q, 25..=28);
                m.kill_process()
            }
            Life2::Closed => {
                more(q.as_ref().expect("open"), 21..=28);
                q.take().expect("open").close().expect("close");
                m.clone()
            }
        };
        drop(q);

        // Life 3: open what life 2 left, write after it without a sync.
        let q = reopen(image.clone(), Durability::None);
        if q.recovery_report().found_damage() {
            failures.push(format!("{life2:?}: damage at the kill image's open"));
        }
        let opened: std::collections::BTreeSet<u64> = ready_tags(&q).into_iter().collect();
        for t in 101..=106 {
            q.enqueue(&battery::payload(t, 700), 5).expect("enqueue");
        }
        for seed in 0..48 {
            let policy = match seed {
                0 => CrashPolicy::DropUnsynced,
                _ => CrashPolicy::PowerLoss {
                    seed,
                    torn: seed % 2 == 0,
                },
            };
            let (tags, damaged) = open_and_read(image.crash(policy));
            let old: std::collections::BTreeSet<u64> =
                tags.iter().copied().filter(|&t| t <= 100).collect();
            let new: Vec<u64> = tags.iter().copied().filter(|&t| t > 100).collect();
            if damaged {
                failures.push(format!("{life2:?} {policy:?}: damage reported"));
            }
            if old != opened {
                failures.push(format!(
                    "{life2:?} {policy:?}: opened with {opened:?}, after the power loss {old:?}"
                ));
            }
            if new.iter().enumerate().any(|(i, &t)| t != 101 + i as u64) {
                failures.push(format!("{life2:?} {policy:?}: not a prefix: {new:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
