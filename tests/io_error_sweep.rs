//! Goal: whatever single storage call fails, and however (EIO, ENOSPC, a
//! short write; once or from then on), the queue reports it as `Error::Io`
//! or `Error::Poisoned`, never returns Ok for a write after a failed sync,
//! and a reopen after a process crash or a power loss holds exactly what
//! the calls that returned Ok promised: 0 lost, 0 resurrected, 0 holes,
//! 0 corrupt, 0 panics (the oracles of `battery::verify`).
//!
//! Method (SQLite's I/O-error tests): four seeded workloads (enqueue-heavy
//! with segment rolls; dequeue/ack-heavy with journal rolls under
//! `Durability::None` and explicit syncs; a mix with dead letters and a
//! delayed message parked early, checkpoints and relocation under heavy
//! traffic; `timed`, with deadlines, keys, `complete` and retention, whose
//! runs stop at their first error: what a failed call did to a message past
//! its deadline the model cannot tell). A fault-free run counts the storage calls; then for EVERY call
//! index N the workload runs again with call N failing as EIO, ENOSPC and
//! a short write, once and forever (6 runs). The workload keeps going after
//! `Error::Io` (an error from a queue that is not poisoned must have had no
//! effect) and stops at `Error::Poisoned`. Then both `crash(ProcessCrash)`
//! (every Ok promise holds) and `crash(DropUnsynced)` (only the promises
//! of the durability mode hold) images are reopened with faults off and
//! judged. Any Ok after a failed `sync_data`/`sync_dir` (before a reopen)
//! is counted: "0 Ok after failed fsync".
//!
//! Scale: `LANELOG_BATTERY_SCALE=n` runs n workload seeds of each kind.
//! Run with `--nocapture` to see figures.

mod battery;

use std::sync::Arc;
use std::time::Instant;

use battery::model::View;
use battery::verify::{check, Findings};
use battery::workload::{Driver, Mode, Weights, Workload};
use battery::{n, parallel, profile, scale};
use lanelog::storage::{CrashPolicy, Fault, FaultKind, FaultOps, MemoryStorage};
use lanelog::{Durability, ManualClock, Timestamp};
use testkit::workload::Timers;

fn enqueue_heavy(seed: u64) -> Workload {
    Workload {
        name: "enqueue-heavy",
        seed,
        ops: 120,
        durability: Durability::Immediate,
        max_deliveries: 3,
        checkpoint_bytes: 64 << 10,
        reopen_at: Some(60),
        close_at_end: true,
        weights: Weights {
            enqueue: 2,
            batch: 8,
            delayed: 1,
            dequeue: 2,
            ack: 2,
            nack: 1,
            dead: 0,
            redrive: 0,
            advance: 1,
            sync: 0,
            ..Weights::default()
        },
        batch_max: 10,
        len_max: 16 << 10,
        priorities: &[0, 1, 5],
        dequeue_max: 4,
        ack_max: 4,
        reason_max: 16,
        advance_max_ms: 5_000,
        prelude: false,
        timed: false,
        timers: Timers::default(),
        step_ms: 1,
        deadline_max_ms: 0,
        keys: 0,
    }
}

fn dequeue_heavy(seed: u64) -> Workload {
    Workload {
        name: "dequeue-heavy",
        seed,
        ops: 260,
        durability: Durability::None,
        checkpoint_bytes: 1 << 20,
        reopen_at: Some(130),
        weights: Weights {
            enqueue: 1,
            batch: 3,
            delayed: 1,
            dequeue: 8,
            ack: 6,
            nack: 2,
            dead: 5,
            redrive: 2,
            advance: 1,
            sync: 1,
            ..Weights::default()
        },
        batch_max: 12,
        len_max: 48,
        priorities: &[0, 2, 4],
        dequeue_max: 8,
        ack_max: 6,
        reason_max: 1024,
        advance_max_ms: 12_000,
        ..enqueue_heavy(seed)
    }
}

fn mix(seed: u64) -> Workload {
    Workload {
        name: "mix",
        seed,
        ops: 300,
        durability: Durability::Immediate,
        checkpoint_bytes: 8 << 10,
        reopen_at: Some(150),
        weights: Weights {
            enqueue: 3,
            batch: 4,
            delayed: 1,
            dequeue: 10,
            ack: 12,
            nack: 2,
            dead: 1,
            redrive: 0,
            advance: 2,
            sync: 0,
            ..Weights::default()
        },
        batch_max: 8,
        len_max: 16 << 10,
        priorities: &[0, 3, 6],
        dequeue_max: 6,
        ack_max: 6,
        reason_max: 200,
        advance_max_ms: 8_000,
        prelude: true,
        ..enqueue_heavy(seed)
    }
}

/// Deadlines, keys, `complete` and retention (see `crash_sweep::timed`),
/// with small journal files so the background thread's writes roll them
/// too.
fn timed(seed: u64) -> Workload {
    Workload {
        name: "timed",
        seed,
        ops: 140,
        durability: Durability::Immediate,
        checkpoint_bytes: 16 << 10,
        reopen_at: Some(70),
        weights: Weights {
            enqueue: 1,
            batch: 1,
            delayed: 1,
            dequeue: 10,
            ack: 6,
            nack: 2,
            dead: 1,
            redrive: 0,
            advance: 3,
            sync: 0,
            with: 6,
            batch_with: 2,
            complete: 6,
        },
        batch_max: 6,
        len_max: 4 << 10,
        priorities: &[0, 3, 6],
        dequeue_max: 6,
        ack_max: 6,
        reason_max: 64,
        advance_max_ms: 6_000,
        prelude: false,
        timed: true,
        timers: Timers {
            retention_ms: Some(20_100),
            dead_retention_ms: Some(25_000),
            dedup_window_ms: 15_000,
            max_keys: 1_000_000,
        },
        step_ms: 500,
        deadline_max_ms: 15_000,
        keys: 16,
        ..enqueue_heavy(seed)
    }
}

/// The workloads of one seed index.
fn workloads(s: u64) -> [Workload; 4] {
    [
        enqueue_heavy(0x10 + s),
        dequeue_heavy(0x20 + s),
        mix(0x30 + s),
        timed(0x40 + s),
    ]
}

const KINDS: [(FaultKind, bool); 6] = [
    (FaultKind::Eio, false),
    (FaultKind::Eio, true),
    (FaultKind::Enospc, false),
    (FaultKind::Enospc, true),
    (FaultKind::ShortWrite, false),
    (FaultKind::ShortWrite, true),
];

#[derive(Default)]
struct Tally {
    f: Findings,
    runs: u64,
    covered: u64,
    unexpected: u64,
    ok_after_failed_sync: u64,
    read_error_dead: u64,
    poisoned_runs: u64,
    /// Runs in which a `sync_data` or `sync_dir` failed.
    failed_sync_runs: u64,
    /// Runs in which a storage call of the tender failed without poisoning
    /// the queue and no retry made the removals due (the fault lasted).
    tender_stuck: u64,
    /// Tender runs waited for.
    settles: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.f.add(&o.f);
        self.runs += o.runs;
        self.covered += o.covered;
        self.unexpected += o.unexpected;
        self.ok_after_failed_sync += o.ok_after_failed_sync;
        self.read_error_dead += o.read_error_dead;
        self.poisoned_runs += o.poisoned_runs;
        self.failed_sync_runs += o.failed_sync_runs;
        self.tender_stuck += o.tender_stuck;
        self.settles += o.settles;
    }

    /// Every oracle violation, partial batches included (each failed
    /// enqueue call's messages are checked as one all-or-none group).
    fn failures(&self) -> u64 {
        self.f.failures() + self.unexpected + self.ok_after_failed_sync
    }
}

fn sweep(w: &Workload, calls: u64) -> Tally {
    let parts = parallel(calls, |at, t: &mut Tally| {
        let mut covered = true;
        for (kind, forever) in KINDS {
            let fault = Fault {
                at_call: at,
                kind,
                forever,
                only: FaultOps::Any,
            };
            let ctx = format!(
                "{} seed {} call {at} {kind:?}{}",
                w.name,
                w.seed,
                if forever { " forever" } else { " once" }
            );
            t.runs += 1;
            let d = match Driver::run(w, Some(fault), Mode::UntilPoisoned) {
                Ok(d) => d,
                Err(p) => {
                    t.f.panics += 1;
                    t.f.note(format!("PANIC {ctx}: {p}"));
                    continue;
                }
            };
            covered &= d.storage.calls() > at;
            t.poisoned_runs += u64::from(d.poisoned);
            t.failed_sync_runs += u64::from(d.traced.failed_syncs() > 0);
            t.read_error_dead += d.model.read_error_dead;
            for u in &d.unexpected {
                t.unexpected += 1;
                t.f.note(format!("UNEXPECTED {ctx}: {u}"));
            }
            for u in &d.ok_after_failed_sync {
                t.ok_after_failed_sync += 1;
                t.f.note(format!("OK-AFTER-FAILED-FSYNC {ctx}: {u}"));
            }
            for u in &d.tender_stuck {
                t.tender_stuck += 1;
                t.f.note(format!("TENDER-STUCK {ctx}: {u}"));
            }
            t.settles += d.settles;
            for (policy, view) in [
                (CrashPolicy::ProcessCrash, View::Process),
                (CrashPolicy::DropUnsynced, View::Power),
            ] {
                let img = d.storage.crash(policy);
                check(
                    img,
                    w,
                    &d.model,
                    view,
                    &format!("{ctx} {policy:?}"),
                    &mut t.f,
                );
            }
        }
        t.covered += u64::from(covered);
    });
    let mut total = Tally::default();
    for p in &parts {
        total.add(p);
    }
    total
}

#[test]
fn every_storage_call_fails_in_every_way() {
    battery::tune_allocator();
    let started = Instant::now();
    let mut all = Tally::default();
    for s in 0..scale() {
        for w in workloads(s) {
            let t0 = Instant::now();
            let (calls, summary) = profile(&w, Mode::UntilPoisoned);
            println!("io-sweep: {} seed {}: {summary}", w.name, w.seed);
            let t = sweep(&w, calls);
            println!(
                "io-sweep: {}: {} calls covered x 6 fault kinds, {} verify failures ({} runs, {} images: {}; {}; {} runs ended poisoned, {} unexpected errors or divergences, {} Ok after failed fsync in {} runs with a failed sync; {} healthy messages dead-lettered after a failed read; {} tender runs waited for, {} runs in which the tender's retries did not get through) ({:.1?})",
                w.name,
                n(t.covered),
                t.failures(),
                n(t.runs),
                n(t.f.states),
                t.f.headline(),
                t.f.details(),
                n(t.poisoned_runs),
                t.unexpected,
                t.ok_after_failed_sync,
                n(t.failed_sync_runs),
                t.read_error_dead,
                n(t.settles),
                t.tender_stuck,
                t0.elapsed()
            );
            assert_eq!(t.covered, calls, "{}: every call index is hit", w.name);
            all.add(&t);
        }
    }
    for note in &all.f.notes {
        println!("  {note}");
    }
    println!(
        "io-sweep: {} calls covered x 6 fault kinds, {} verify failures, {} Ok after failed fsync ({} runs with a failed sync), {} runs in which the tender's retries did not get through (the fault lasted; not counted as failures) ({:.1?})",
        n(all.covered),
        all.failures(),
        all.ok_after_failed_sync,
        n(all.failed_sync_runs),
        all.tender_stuck,
        started.elapsed()
    );
    assert_eq!(
        all.failures(),
        0,
        "I/O-error sweep found violations (see above)"
    );
}

/// The fault-free runs match the model; prints what each workload exercises.
#[test]
fn workloads_match_the_model_without_faults() {
    let seeds = (0..scale()).flat_map(workloads);
    for w in seeds {
        let t = Instant::now();
        let (_, summary) = profile(&w, Mode::UntilPoisoned);
        println!(
            "{} seed {}: {summary} ({:.1?})",
            w.name,
            w.seed,
            t.elapsed()
        );
    }
}

fn fresh(m: &MemoryStorage, durability: Durability) -> lanelog::Queue {
    let clock = ManualClock::new(Timestamp(battery::T0));
    battery::options(&clock, durability, 0, 64 << 20)
        .open_storage(Arc::new(m.clone()))
        .expect("open")
}

/// Found by the sweep (a read fault once, during a dequeue): the record is
/// fine, one `read_at` failed with EIO. The dequeue returns Ok without the
/// message and parks it as a dead letter ("corrupt: record could not be
/// read"), spending a delivery attempt; nothing brings it back but a manual
/// redrive. Expected: `Err(Io)` (or a later redelivery), never a dead letter
/// for a transient I/O error.
#[test]
fn transient_read_error_does_not_dead_letter_a_healthy_message() {
    let m = MemoryStorage::new();
    let q = fresh(&m, Durability::Immediate);
    let id = q.enqueue(b"healthy payload", 0).expect("enqueue");
    // The dequeue's first call is its journal write, then the two reads of
    // the record (header, payload): fail the first read once.
    m.set_fault(Some(Fault {
        at_call: m.calls() + 1,
        kind: FaultKind::Eio,
        forever: false,
        only: FaultOps::Any,
    }));
    let got = q.dequeue();
    m.set_fault(None);
    let dead = q.dead_letters().expect("dead letters");
    assert!(
        dead.is_empty(),
        "dequeue returned {got:?} and parked the healthy message {id} as {:?}",
        dead[0].reason
    );
    assert!(
        got.is_err() || q.dequeue().expect("dequeue").is_some(),
        "the message is still deliverable"
    );
}

/// Found by the sweep (a short write, then the process dies): creating a
/// segment or journal file writes its 32-byte header into the zero-filled
/// file; if that write is cut short and the process dies before removing
/// the file, every later open fails with `Error::Corrupt` ("bad file
/// header: BadChecksum"), although the file never held data. An all-zero
/// header is treated as blank and removed; a partial one is not.
#[test]
fn crash_after_a_short_header_write_leaves_an_openable_directory() {
    let mut refused = Vec::new();
    for k in 0..12 {
        let m = MemoryStorage::new();
        m.set_fault(Some(Fault {
            at_call: k,
            kind: FaultKind::ShortWrite,
            forever: true,
            only: FaultOps::Any,
        }));
        let clock = ManualClock::new(Timestamp(battery::T0));
        let opened = battery::options(&clock, Durability::Immediate, 0, 64 << 20)
            .open_storage(Arc::new(m.clone()));
        drop(opened);
        let img = m.crash(CrashPolicy::ProcessCrash);
        let clock = ManualClock::new(Timestamp(battery::T0));
        if let Err(e) =
            battery::options(&clock, Durability::Immediate, 0, 64 << 20).open_storage(Arc::new(img))
        {
            refused.push(format!("short write at call {k} of the first open: {e}"));
        }
    }
    assert!(refused.is_empty(), "{refused:#?}");
}

/// Found by the sweep (mix workload, crash after a relocation removed
/// segment 1 and before the next checkpoint): `acked_total` went down from
/// 175 to 158 across the crash. Mechanism: replay counts an `Acked` entry
/// only if the message is in the index; a message enqueued after the last
/// checkpoint into a segment that was deleted since (all its messages
/// finished) has no record left, so its ack is not counted. The next
/// checkpoint then persists the lower total.
#[test]
fn acked_total_survives_a_crash_after_a_segment_is_deleted() {
    let m = MemoryStorage::new();
    let q = fresh(&m, Durability::Immediate);
    q.enqueue(b"a", 0).expect("enqueue a");
    q.close().expect("close writes checkpoint 1");
    let q = fresh(&m, Durability::Immediate);
    q.enqueue(b"b", 0)
        .expect("enqueue b: segment 1, after the checkpoint");
    for _ in 0..2 {
        let d = q.dequeue().expect("dequeue").expect("ready");
        q.ack(d.receipt).expect("ack");
    }
    // Too big for what is left of segment 1: roll; segment 1 is drained and
    // deleted at the commit.
    // (A fresh 1 MiB segment holds 1 MiB - 32 - 40 bytes of payload.)
    let big = vec![7u8; (1 << 20) - 32 - 40 - 16];
    q.enqueue(&big, 0).expect("enqueue big");
    assert_eq!(q.stats().acked_total, 2);
    assert!(!m
        .file_names()
        .contains(&"segment-0000000001.seg".to_string()));
    let img = m.crash(CrashPolicy::ProcessCrash);
    let q2 = fresh(&img, Durability::Immediate);
    assert_eq!(
        q2.stats().acked_total,
        2,
        "acked_total after a process crash"
    );
}

/// Queue and memory storage for the tender tests: 64 KiB journal files and
/// 20,000 messages whose deadline is 1 s away (their `DeadlineMissed`
/// entries take more than a journal file), then the disk is full (no new
/// file can be made), 2 s pass, and the background thread's write fails.
fn tender_on_a_full_disk() -> (MemoryStorage, ManualClock, lanelog::Queue) {
    use lanelog::EnqueueOptions;
    use std::time::Duration;
    use testkit::traced::Traced;
    let m = MemoryStorage::new();
    let traced = Traced::new(m.clone(), false);
    let clock = ManualClock::new(Timestamp(battery::T0));
    let q = battery::options(&clock, Durability::Immediate, 0, 64 << 20)
        .open_storage(Arc::new(traced.clone()))
        .expect("open");
    let due = EnqueueOptions::new().deadline(Timestamp(battery::T0 + 1_000));
    let items: Vec<(&[u8], EnqueueOptions)> =
        (0..20_000).map(|_| (&b""[..], due.clone())).collect();
    q.enqueue_batch_with(&items).expect("enqueue");
    // A deadline 1 ms away wakes the thread and keeps its naps at 1 ms.
    let soon = EnqueueOptions::new().deadline(Timestamp(battery::T0 + 1));
    q.enqueue_with(b"soon", &soon).expect("enqueue");
    m.set_capacity(Some(m.used_bytes()));
    clock.advance(Duration::from_secs(2));
    assert!(
        eventually(|| traced.tender_failed() > 0),
        "the background thread's write did not fail"
    );
    (m, clock, q)
}

/// Wait (up to 3 s) until `pred` holds.
fn eventually(mut pred: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(3) {
        if pred() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    pred()
}

/// Found by the I/O-error sweep's tender accounting (and minimized here): a
/// write of the background thread that needs a new journal file fails
/// when the file cannot be made (a full disk: `CreateError::NotMade`, which
/// does not poison the queue). The thread must not end there (nothing
/// would remove what falls due until a reopen): it tries again after a
/// backoff, and once the disk has room again its pass goes through.
#[test]
fn tender_stops_after_a_failed_journal_rotation() {
    let (m, _clock, q) = tender_on_a_full_disk();
    assert!(q.sync().is_ok(), "a full disk does not poison the queue");
    m.set_capacity(None);
    assert!(
        eventually(|| q.stats().deadline_missed_total == 20_001),
        "room again, yet no deadline is enforced: {:?}",
        q.stats()
    );
}

/// The same failed write as `tender_stops_after_a_failed_journal_rotation`
/// must leave nothing behind: the queue, not poisoned, shows none of its
/// entries (and its call failed, so it promised nothing), so a crash must
/// not bring back the ones that fit in the current journal file (it did:
/// thousands of messages dead-lettered). A journal write makes every file
/// it needs before it writes any of its frames, so a full disk fails it
/// whole; any multi-file journal write (an `ack_batch` too) is covered.
#[test]
fn failed_journal_rotation_leaves_no_entries_behind() {
    let (m, _clock, q) = tender_on_a_full_disk();
    let live = q.stats().deadline_missed_total;
    let img = m.crash(CrashPolicy::ProcessCrash);
    drop(q);
    // Reopened on a clock before the deadlines, so nothing more is
    // dead-lettered: what it shows is what the journal holds.
    let early = ManualClock::new(Timestamp(battery::T0));
    let q = battery::options(&early, Durability::Immediate, 0, 64 << 20)
        .open_storage(Arc::new(img))
        .expect("open");
    assert_eq!(
        q.stats().deadline_missed_total,
        live,
        "dead-lettered by a write that failed (the live queue shows {live})"
    );
}

/// A consumer's journal write that needs more than the current journal file
/// (an `ack_batch` of 20,000 receipts, 64 KiB files) on a full disk fails
/// whole, without poisoning the queue: nothing is acked, live or after a
/// crash, and with room again the same batch goes through.
#[test]
fn an_ack_batch_spanning_journal_files_is_all_or_nothing_on_a_full_disk() {
    let m = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(battery::T0));
    let q = battery::options(&clock, Durability::Immediate, 0, 64 << 20)
        .open_storage(Arc::new(m.clone()))
        .expect("open");
    let items: Vec<(&[u8], u8)> = (0..20_000).map(|_| (&b""[..], 0)).collect();
    q.enqueue_batch(&items).expect("enqueue");
    let leased = q.dequeue_up_to(20_000).expect("dequeue");
    assert_eq!(leased.len(), 20_000);
    let receipts: Vec<_> = leased.iter().map(|d| d.receipt).collect();
    q.sync().expect("sync");
    m.set_capacity(Some(m.used_bytes()));
    assert!(
        q.ack_batch(&receipts).is_err(),
        "no journal file can be made"
    );
    assert!(q.sync().is_ok(), "a full disk does not poison the queue");
    let s = q.stats();
    assert_eq!((s.acked_total, s.in_flight), (0, 20_000));
    let img = m.crash(CrashPolicy::ProcessCrash);
    let reopened = battery::options(&clock, Durability::Immediate, 0, 64 << 20)
        .open_storage(Arc::new(img))
        .expect("open the crash image");
    let s = reopened.stats();
    assert_eq!(
        (s.acked_total, s.ready),
        (0, 20_000),
        "a crash brings back acks of a write that failed"
    );
    drop(reopened);
    m.set_capacity(None);
    q.ack_batch(&receipts).expect("room again");
    assert_eq!(q.stats().acked_total, 20_000);
}

/// Retention on a full disk still frees space: a segment whose records a
/// retention cut removed is deleted only after a checkpoint (its records
/// count in the lifetime counters at replay), but when no checkpoint can be
/// written (no room for a new journal file) it is deleted all the same, and
/// the queue is not poisoned.
#[test]
fn retention_frees_cut_segments_on_a_full_disk() {
    use std::time::Duration;
    let m = MemoryStorage::new();
    let clock = ManualClock::new(Timestamp(battery::T0));
    let q = battery::options(&clock, Durability::Immediate, 0, 64 << 20)
        .retention(Duration::from_secs(10))
        .open_storage(Arc::new(m.clone()))
        .expect("open");
    q.enqueue(b"small", 0).expect("enqueue");
    for _ in 0..3 {
        q.enqueue(&vec![7u8; 600 << 10], 0).expect("enqueue");
    }
    let segments = |m: &MemoryStorage| {
        m.file_names()
            .iter()
            .filter(|n| n.starts_with("segment-") && n.ends_with(".seg"))
            .count()
    };
    // Two in the first 1 MiB segment, one in each of the next two.
    assert_eq!(segments(&m), 3);
    m.set_capacity(Some(m.used_bytes()));
    clock.advance(Duration::from_secs(11));
    assert!(
        eventually(|| q.stats().expired_total == 4),
        "{:?}",
        q.stats()
    );
    assert!(q.sync().is_ok(), "a full disk does not poison the queue");
    assert!(
        eventually(|| segments(&m) == 1),
        "the drained segments are still there: {:?}",
        m.file_names()
    );
}
