//! Seeded workloads and the driver that runs one against a queue on a fresh
//! `MemoryStorage` (optionally with a fault plan), keeping the test kit's
//! [`Model`] of what every call returned.
//!
//! Ops are drawn one at a time from the workload's weights and the model's
//! state (an ack needs an outstanding receipt), so two runs with the same
//! seed make exactly the same calls up to the first fault, and the storage
//! call indices of a fault-free run name the same calls in a faulted one.
//!
//! Workloads with deadlines, keys, results and retention (`timed`) keep
//! that determinism with the queue's background thread (the tender) at
//! work: every clock step is an op of three parts (a pacemaker enqueue,
//! the step, then waiting for the tender's write and a `sync()`; see
//! `testkit::workload`), so the tender writes only inside that op; and the
//! other ops never leave it work of its own: a dequeue that would find a
//! message whose deadline passed takes every ready message (so it
//! dead-letters them itself), no nack makes such a message ready, and a
//! reopen that releases one waits for the tender like a clock step. Reads
//! the driver makes to compare counters are not counted (`quietly`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::storage::{Fault, MemoryStorage};
use lanelog::{Durability, Error, ManualClock, Queue, Receipt, Timestamp};
use testkit::model::Model;
use testkit::traced::{quietly, Traced};
use testkit::workload::{self, removal_totals, Item, Timers, SETTLE_LIMIT};
use testkit::SplitMix64;

use super::{options, T0, VISIBILITY_MS};

/// Relative weights of the random ops. The ops after `sync` are the ones
/// of format version 2; a weight of 0 draws nothing, so older workloads
/// make the same draws as before.
#[derive(Debug, Clone, Copy, Default)]
pub struct Weights {
    pub enqueue: u64,
    pub batch: u64,
    pub delayed: u64,
    pub dequeue: u64,
    pub ack: u64,
    pub nack: u64,
    pub dead: u64,
    pub redrive: u64,
    pub advance: u64,
    pub sync: u64,
    /// One message with a deadline and/or a key (`enqueue_with`).
    pub with: u64,
    /// A batch of such messages (`enqueue_batch_with`), keys repeating.
    pub batch_with: u64,
    /// `complete` an outstanding delivery with a result.
    pub complete: u64,
}

/// A workload: what to do, how often, with which options.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub seed: u64,
    /// Random ops (the prelude and the final close not counted).
    pub ops: usize,
    pub durability: Durability,
    pub max_deliveries: u32,
    pub checkpoint_bytes: u64,
    /// Close cleanly and reopen before this op.
    pub reopen_at: Option<usize>,
    /// Close cleanly after the last op.
    pub close_at_end: bool,
    pub weights: Weights,
    pub batch_max: u64,
    pub len_max: u64,
    pub priorities: &'static [u8],
    pub dequeue_max: u64,
    /// Largest `ack_batch` (a third of the acks are single).
    pub ack_max: u64,
    pub reason_max: u64,
    pub advance_max_ms: u64,
    /// Start with dead letters and a long-delayed message, so they sit in
    /// the first segment while traffic flows past them (relocation).
    pub prelude: bool,
    /// Deadlines, keys, results or retention: clock steps are multiples of
    /// `step_ms` and wait for the tender (see the module documentation).
    pub timed: bool,
    pub timers: Timers,
    /// Clock steps are multiples of this (so no message's age falls in
    /// retention's granularity band).
    pub step_ms: u64,
    /// Deadlines are this far ahead at most.
    pub deadline_max_ms: u64,
    /// Keys are drawn from this many.
    pub keys: u64,
}

/// One step of a workload.
#[derive(Debug, Clone)]
pub enum Op {
    Enqueue(Vec<Item>),
    Dequeue(usize),
    Ack(Vec<(u64, Receipt)>),
    Nack(u64, Receipt, u64),
    DeadLetter(u64, Receipt, usize),
    /// `complete(receipt, result_payload(tag, len))`.
    Complete(u64, Receipt, u64, usize),
    RedriveAll,
    Advance(u64),
    Sync,
    Reopen,
}

/// What to do when a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The machine died: stop at the first error (crash sweep).
    StopAtFirstError,
    /// Keep going after `Error::Io`; stop at `Error::Poisoned` (I/O-error
    /// sweep).
    UntilPoisoned,
}

/// Runs a workload; see the module documentation.
pub struct Driver {
    pub w: Workload,
    pub storage: MemoryStorage,
    pub traced: Traced,
    pub clock: ManualClock,
    pub q: Option<Queue>,
    pub model: Model,
    rng: SplitMix64,
    next_tag: u64,
    mode: Mode,
    pub stopped: bool,
    /// The run ended at `Error::Poisoned`.
    pub poisoned: bool,
    /// Ops that returned `Error::Io` (or whose background write failed).
    pub errors: u64,
    /// Divergences from the model and errors of a kind no fault explains.
    pub unexpected: Vec<String>,
    /// Calls that returned `Ok` after a sync had failed (and before a
    /// successful reopen).
    pub ok_after_failed_sync: Vec<String>,
    failed_sync_pending: bool,
    /// The last op failed with `Error::Io`; its effects are in doubt.
    in_error: bool,
    consecutive_errors: u32,
    pub ops_done: usize,
    /// Runs of the tender waited for, and how long that took.
    pub settles: u64,
    pub settle_time: Duration,
    /// A storage call of the tender failed, the queue was not poisoned,
    /// and the tender's retries did not make the removals due within
    /// [`RETRY_LIMIT`] (the fault lasts): the run ended there.
    pub tender_stuck: Vec<String>,
}

const PRELUDE: usize = 9;

/// How long a run waits for the tender's retry after a pass of it failed
/// without poisoning the queue: its backoff doubles from 10 ms up to its
/// longest nap (1 s), so a fault that is gone is retried well within it.
const RETRY_LIMIT: Duration = Duration::from_secs(3);

impl Driver {
    fn new(w: &Workload, storage: MemoryStorage, mode: Mode, log: bool) -> Driver {
        let clock = ManualClock::new(Timestamp(T0));
        Driver {
            traced: Traced::new(storage.clone(), log),
            storage,
            clock,
            q: None,
            model: Model::new(w.max_deliveries, VISIBILITY_MS, T0)
                .with_timers(w.timers)
                .reads_may_fail(),
            rng: testkit::rng(w.seed),
            next_tag: 1,
            mode,
            stopped: false,
            poisoned: false,
            errors: 0,
            unexpected: Vec::new(),
            ok_after_failed_sync: Vec::new(),
            failed_sync_pending: false,
            in_error: false,
            consecutive_errors: 0,
            ops_done: 0,
            settles: 0,
            settle_time: Duration::ZERO,
            tender_stuck: Vec::new(),
            w: w.clone(),
        }
    }

    fn now(&self) -> u64 {
        lanelog::Clock::now(&self.clock).0
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag - 1
    }

    fn item(&mut self, delay_ms: u32) -> Item {
        let tag = self.tag();
        let priorities = self.w.priorities;
        let priority = priorities[self.rng.below(priorities.len() as u64) as usize];
        // A tenth tiny, the rest spread over 0..=len_max with a lean to the
        // upper half (so segments roll in few calls).
        let max = self.w.len_max;
        let len = match self.rng.below(20) {
            0 | 1 => self.rng.below(9),
            2..=10 => self.rng.below(max + 1),
            _ => self.rng.within(max / 2, max),
        } as usize;
        Item {
            delay_ms,
            ..Item::plain(tag, priority, len)
        }
    }

    /// An item with options: a deadline (two thirds), a key (half; keys
    /// repeat, so some are remembered), now and then a delay.
    fn item_with(&mut self) -> Item {
        let delay = if self.rng.chance(1, 6) {
            self.rng.within(1, 8_000) as u32
        } else {
            0
        };
        let mut it = self.item(delay);
        if self.rng.chance(2, 3) {
            let ahead = self.rng.within(1, self.w.deadline_max_ms);
            it.deadline = self.now() + u64::from(delay) + ahead;
        }
        if self.rng.chance(1, 2) || it.deadline == 0 {
            it.key = Some(self.rng.below(self.w.keys.max(1)));
        }
        it
    }

    fn prelude(&mut self, i: usize) -> Option<Op> {
        let first = |m: &Model| m.outstanding.first().copied();
        Some(match i {
            0 => Op::Enqueue((0..6).map(|_| self.item(0)).collect()),
            1 => Op::Enqueue(vec![self.item(3_600_000)]),
            2 => Op::Dequeue(6),
            3..=5 => {
                let (id, r) = first(&self.model)?;
                Op::DeadLetter(id, r, 40)
            }
            _ => Op::Ack(vec![first(&self.model)?]),
        })
    }

    /// The next op (`i` counts ops from 0).
    pub fn gen(&mut self, i: usize) -> Op {
        if self.w.prelude && i < PRELUDE {
            if let Some(op) = self.prelude(i) {
                return op;
            }
        }
        if self.w.reopen_at == Some(i) {
            return Op::Reopen;
        }
        let wt = self.w.weights;
        let table = [
            wt.enqueue,
            wt.batch,
            wt.delayed,
            wt.dequeue,
            wt.ack,
            wt.nack,
            wt.dead,
            wt.redrive,
            wt.advance,
            wt.sync,
            wt.with,
            wt.batch_with,
            wt.complete,
        ];
        let total: u64 = table.iter().sum();
        loop {
            let mut r = self.rng.below(total);
            let mut c = 0;
            while r >= table[c] {
                r -= table[c];
                c += 1;
            }
            let has = !self.model.outstanding.is_empty();
            return match c {
                0 => Op::Enqueue(vec![self.item(0)]),
                1 => {
                    let k = self.rng.within(2, self.w.batch_max.max(2));
                    Op::Enqueue((0..k).map(|_| self.item(0)).collect())
                }
                2 => {
                    let d = self.rng.within(1, 20_000) as u32;
                    Op::Enqueue(vec![self.item(d)])
                }
                3 => {
                    let mut n = self.rng.within(1, self.w.dequeue_max) as usize;
                    if self.w.timed {
                        // Take every ready message when one missed its
                        // deadline: the dequeue dead-letters them all, and
                        // none is left for the tender.
                        let (ready, doomed) = self.model.ready_after_tick(self.now());
                        if doomed > 0 {
                            n = n.max(ready + 1);
                        }
                    }
                    Op::Dequeue(n)
                }
                4 if has => {
                    let n = self.model.outstanding.len() as u64;
                    let k = if self.rng.chance(2, 3) {
                        self.rng.within(1, n.min(self.w.ack_max))
                    } else {
                        1
                    };
                    let start = self.rng.below(n);
                    let picks = (0..k)
                        .map(|j| self.model.outstanding[((start + j) % n) as usize])
                        .collect();
                    Op::Ack(picks)
                }
                5 if has => {
                    let (id, r) = self.model.receipt(self.rng.next_u64()).expect("has");
                    let mut delay = if self.rng.chance(1, 2) {
                        0
                    } else {
                        self.rng.within(1, 15_000)
                    };
                    let deadline = self.model.msgs[&id].deadline;
                    if delay == 0 && deadline > 0 && deadline <= self.now() {
                        // Ready again past its deadline would be work for
                        // the tender at a time of its choosing.
                        delay = self.w.step_ms;
                    }
                    Op::Nack(id, r, delay)
                }
                6 if has => {
                    let (id, r) = self.model.receipt(self.rng.next_u64()).expect("has");
                    let len = self.rng.below(self.w.reason_max + 1) as usize;
                    Op::DeadLetter(id, r, len)
                }
                7 if self.model.dead_count() > 0 => Op::RedriveAll,
                8 => {
                    let ms = self.rng.within(100, self.w.advance_max_ms);
                    let step = self.w.step_ms.max(1);
                    Op::Advance(ms.div_ceil(step) * step)
                }
                9 => Op::Sync,
                10 => Op::Enqueue(vec![self.item_with()]),
                11 => {
                    let k = self.rng.within(2, self.w.batch_max.max(2));
                    Op::Enqueue((0..k).map(|_| self.item_with()).collect())
                }
                12 if has => {
                    let (id, r) = self.model.receipt(self.rng.next_u64()).expect("has");
                    let tag = self.model.msgs[&id].tag;
                    let len = self.rng.below(self.w.len_max + 1) as usize;
                    Op::Complete(id, r, tag, len)
                }
                _ => continue,
            };
        }
    }

    fn opts(&self) -> lanelog::QueueOptions {
        let o = options(
            &self.clock,
            self.w.durability,
            self.w.max_deliveries,
            self.w.checkpoint_bytes,
        );
        if self.w.timed {
            self.w.timers.apply(o)
        } else {
            o
        }
    }

    /// Open (or reopen) the queue; a few tries when faults are transient.
    fn open(&mut self) {
        for _ in 0..3 {
            let now = self.now();
            self.model.begin(now);
            let mark = self.mark();
            match self.opts().open_storage(Arc::new(self.traced.clone())) {
                Ok(q) => {
                    self.q = Some(q);
                    self.model.reopened(now);
                    if self.w.timed {
                        // The tender's first look happens at once.
                    }
                    self.failed_sync_pending = false;
                    // Leases released past their deadline: the tender's
                    // first look dead-letters them.
                    if self.w.timed && self.due() {
                        self.settle("reopen", mark);
                    }
                    return;
                }
                Err(Error::Io(_)) => {
                    self.errors += 1;
                    if self.mode == Mode::StopAtFirstError {
                        break;
                    }
                }
                Err(e) => {
                    self.unexpected.push(format!("open: unexpected error {e}"));
                    break;
                }
            }
        }
        self.stopped = true;
    }

    /// Whether the model has a removal due now (a retention it cannot
    /// judge stops the run).
    fn due(&mut self) -> bool {
        match self.model.pending(self.now()) {
            Ok(due) => due,
            Err(e) => {
                self.unexpected.push(format!("{}: {e}", self.w.name));
                self.stopped = true;
                false
            }
        }
    }

    /// The tender's write and failure counts now: taken before what gives
    /// it work (it may write before the driver looks).
    fn mark(&self) -> (u64, u64) {
        (self.traced.tender_writes(), self.traced.tender_failed())
    }

    /// The tender has work at the current time: wait until it wrote (or a
    /// call of it failed) since `mark`, then `sync()` (its commit is done
    /// when the sync returns), and compare the removal counters with the
    /// model's.
    fn settle(&mut self, why: &str, (w0, f0): (u64, u64)) {
        let Some(q) = self.q.clone() else {
            self.stopped = true;
            return;
        };
        let now = self.now();
        self.model.begin(now);
        if let Err(e) = self.model.expire(now) {
            self.unexpected.push(format!("{}: {e}", self.w.name));
            self.stopped = true;
            return;
        }
        self.settles += 1;
        let start = Instant::now();
        let wrote = loop {
            if self.traced.tender_failed() > f0 {
                break false;
            }
            if self.traced.tender_writes() > w0 {
                break true;
            }
            if start.elapsed() > SETTLE_LIMIT {
                let got = quietly(|| removal_totals(&q.stats()));
                self.unexpected.push(format!(
                    "{} op {} ({why}): the tender did not write within {SETTLE_LIMIT:?}; removals {got:?}, model {:?}",
                    self.w.name,
                    self.ops_done,
                    self.model.removal_totals()
                ));
                self.stopped = true;
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let failed0 = self.traced.failed_syncs();
        let r = q.sync();
        self.settle_time += start.elapsed();
        self.after_sync_check(failed0, r.is_ok(), why);
        let tender_failed = self.traced.tender_failed() > f0;
        match r {
            Ok(()) if tender_failed => {
                // Its pass failed without poisoning the queue, so it wrote
                // nothing; the tender tries again after a backoff, and its
                // retry must make the removals the model expects.
                let want = self.model.removal_totals();
                let start = Instant::now();
                let mut got = quietly(|| removal_totals(&q.stats()));
                while got != want && start.elapsed() < RETRY_LIMIT {
                    std::thread::sleep(Duration::from_millis(1));
                    got = quietly(|| removal_totals(&q.stats()));
                }
                let failed0 = self.traced.failed_syncs();
                let r = q.sync();
                self.after_sync_check(failed0, r.is_ok(), why);
                if got == want && r.is_ok() {
                    self.model.ok(!self.failed_sync_pending);
                } else {
                    self.tender_stuck.push(format!(
                        "{} op {} ({why}): a storage call of the tender failed, the queue is not poisoned, and no retry made the removals {want:?} within {RETRY_LIMIT:?} (got {got:?}, sync {r:?})",
                        self.w.name, self.ops_done
                    ));
                    self.errors += 1;
                    self.stopped = true;
                }
            }
            Ok(()) => {
                let got = quietly(|| removal_totals(&q.stats()));
                let want = self.model.removal_totals();
                if got != want {
                    self.unexpected.push(format!(
                        "{} op {} ({why}, tender wrote: {wrote}): removals (deadline missed, expired, dead expired) {got:?}, model {want:?}",
                        self.w.name, self.ops_done
                    ));
                    self.stopped = true;
                }
                self.model.ok(!self.failed_sync_pending);
            }
            Err(Error::Io(_) | Error::Poisoned) if tender_failed || self.errors > 0 => {
                self.errors += 1;
                self.poisoned = true;
                self.stopped = true;
            }
            Err(Error::Io(_)) => {
                self.errors += 1;
                self.stopped = true;
            }
            Err(e) => {
                self.unexpected.push(format!(
                    "{} ({why}): sync: unexpected error {e}",
                    self.w.name
                ));
                self.stopped = true;
            }
        }
    }

    /// Close cleanly; returns whether the run goes on.
    fn close(&mut self) -> bool {
        if self.in_error && !self.stopped {
            // Settle the failed op first: a healthy queue syncs (and so had
            // nothing in doubt), a poisoned one says so and the run ends.
            // (A poisoned queue's close returns Ok without syncing.)
            self.exec(Op::Sync);
        }
        if self.stopped {
            return false;
        }
        let Some(q) = self.q.take() else {
            self.stopped = true;
            return false;
        };
        let now = self.now();
        self.model.begin(now);
        let failed0 = self.traced.failed_syncs();
        let r = q.close();
        self.after_sync_check(failed0, r.is_ok(), "close");
        match r {
            Ok(()) => {
                let synced = !self.failed_sync_pending;
                self.model.ok(synced);
                true
            }
            Err(Error::Io(_)) => {
                self.errors += 1;
                if self.mode == Mode::StopAtFirstError {
                    self.stopped = true;
                    return false;
                }
                // The directory is released anyway; a reopen recovers.
                true
            }
            Err(e) => {
                self.unexpected.push(format!("close: unexpected error {e}"));
                self.stopped = true;
                false
            }
        }
    }

    fn after_sync_check(&mut self, failed0: u64, ok: bool, what: &str) {
        if self.traced.failed_syncs() > failed0 {
            self.failed_sync_pending = true;
        }
        if ok && self.failed_sync_pending {
            self.ok_after_failed_sync.push(format!(
                "{} op {}: {what} returned Ok after a failed sync",
                self.w.name, self.ops_done
            ));
        }
    }

    /// A clock step: in a timed workload, a pacemaker first and the
    /// tender's run after (see the module documentation).
    fn advance(&mut self, ms: u64) {
        if !self.w.timed || ms == 0 {
            self.clock.advance(Duration::from_millis(ms));
            let now = self.now();
            self.model.forget_expiring_receipts(now);
            return;
        }
        let tag = self.tag();
        let pacer = workload::pacemaker(tag, self.w.priorities[0], self.now());
        self.exec(Op::Enqueue(vec![pacer]));
        if self.in_error || self.stopped {
            // Without its pacemaker the tender would run when its nap
            // ends: this run ends here instead.
            self.stopped = true;
            return;
        }
        let mark = self.mark();
        self.clock.advance(Duration::from_millis(ms));
        let now = self.now();
        self.model.forget_expiring_receipts(now);
        self.settle("clock step", mark);
    }

    /// Run one op against the queue and the model.
    pub fn exec(&mut self, op: Op) {
        self.ops_done += 1;
        match op {
            Op::Advance(ms) => {
                self.advance(ms);
                return;
            }
            Op::Reopen => {
                if self.close() {
                    self.open();
                }
                return;
            }
            _ => {}
        }
        let Some(q) = self.q.clone() else {
            self.stopped = true;
            return;
        };
        let now = self.now();
        self.model.begin(now);
        let mark = self.mark();
        let failed0 = self.traced.failed_syncs();
        let imm = self.w.durability == Durability::Immediate;
        let what = format!("{op:?}");
        let what = &what[..what.len().min(60)];
        // Ops that may make a message past its deadline ready (leases that
        // expired, nacks, redrives) or one past its retention live again.
        let may_leave_work = matches!(op, Op::Dequeue(_) | Op::Nack(..) | Op::RedriveAll);
        // Ok(true): the op wrote and, under its durability, promised it.
        let r: Result<bool, Error> = match op {
            Op::Enqueue(items) => {
                let may = self.model.refusals(&items);
                if !may.contains(&None) {
                    self.unexpected.push(format!(
                        "{}: the workload made a refused enqueue ({may:?})",
                        self.w.name
                    ));
                    self.stopped = true;
                    return;
                }
                match workload::enqueue(&q, &items) {
                    Ok(ids) => {
                        let ids: Vec<u64> = ids.into_iter().map(u64::from).collect();
                        match self.model.enqueue_ok(&items, &ids) {
                            Ok(wrote) => Ok(imm && wrote),
                            Err(msg) => {
                                self.unexpected.push(format!("{}: {msg}", self.w.name));
                                self.stopped = true;
                                Ok(false)
                            }
                        }
                    }
                    Err(e) => {
                        self.model.enqueue_doubt(&items);
                        Err(e)
                    }
                }
            }
            Op::Dequeue(n) => {
                self.model.tick(now);
                match workload::dequeue(&q, n) {
                    Ok(got) => {
                        if let Err(msg) = self.model.dequeue_ok(n, &got) {
                            self.unexpected.push(format!("{}: {msg}", self.w.name));
                            self.stopped = true;
                        }
                        Ok(false)
                    }
                    Err(e) => {
                        self.model.dequeue_doubt(n);
                        Err(e)
                    }
                }
            }
            Op::Ack(picks) => {
                let ids: Vec<u64> = picks.iter().map(|p| p.0).collect();
                let receipts: Vec<Receipt> = picks.iter().map(|p| p.1).collect();
                let r = if receipts.len() == 1 {
                    q.ack(receipts[0])
                } else {
                    q.ack_batch(&receipts)
                };
                match r {
                    Ok(()) => {
                        self.model.ack_ok(&ids);
                        Ok(imm)
                    }
                    Err(e) => {
                        self.model.ack_doubt(&ids);
                        Err(e)
                    }
                }
            }
            Op::Complete(id, receipt, tag, len) => {
                match q.complete(receipt, &workload::result_payload(tag, len)) {
                    Ok(()) => {
                        self.model.complete_ok(id, (tag, len));
                        Ok(imm)
                    }
                    Err(e) => {
                        self.model.complete_doubt(id, (tag, len));
                        Err(e)
                    }
                }
            }
            Op::Nack(id, receipt, delay) => match q.nack(receipt, Duration::from_millis(delay)) {
                Ok(()) => {
                    self.model.nack_ok(id, delay);
                    Ok(imm)
                }
                // A nack changes nothing a reopen shows (a released lease
                // keeps its attempts too).
                Err(e) => Err(e),
            },
            Op::DeadLetter(id, receipt, len) => {
                let reason: String = (0..len).map(|j| (b'a' + (j % 26) as u8) as char).collect();
                match q.dead_letter(receipt, &reason) {
                    Ok(()) => {
                        self.model.dead_letter_ok(id, &reason);
                        Ok(imm)
                    }
                    Err(e) => {
                        self.model.dead_letter_doubt(id);
                        Err(e)
                    }
                }
            }
            Op::RedriveAll => match q.redrive_all() {
                Ok(n) => {
                    if let Err(msg) = self.model.redrive_ok(n) {
                        self.unexpected.push(format!("{}: {msg}", self.w.name));
                        self.stopped = true;
                    }
                    Ok(imm && n > 0)
                }
                Err(e) => {
                    self.model.redrive_doubt();
                    Err(e)
                }
            },
            Op::Sync => q.sync().map(|()| true),
            Op::Advance(_) | Op::Reopen => unreachable!("handled above"),
        };
        self.after_sync_check(failed0, r.is_ok(), what);
        match r {
            Ok(promised) => {
                self.model.ok(promised && !self.failed_sync_pending);
                if self.in_error {
                    // The queue kept going: by its contract the failed op
                    // changed nothing.
                    self.model.clear_doubt();
                    self.in_error = false;
                }
                self.consecutive_errors = 0;
            }
            Err(Error::Io(_)) => {
                self.errors += 1;
                self.consecutive_errors += 1;
                self.in_error = true;
                // A timed workload stops too: what a failed call did to a
                // message past its deadline (a dequeue dead-letters it
                // before a read fails) the model cannot tell, and the
                // tender may act on it when its nap ends.
                if self.mode == Mode::StopAtFirstError
                    || self.consecutive_errors > 20
                    || self.w.timed
                {
                    self.stopped = true;
                }
            }
            Err(Error::Poisoned) if self.errors > 0 || self.traced.failed() > 0 => {
                self.errors += 1;
                self.poisoned = true;
                self.stopped = true;
            }
            Err(e) => {
                self.unexpected.push(format!(
                    "{} op {}: {what}: unexpected error {e}",
                    self.w.name, self.ops_done
                ));
                self.stopped = true;
            }
        }
        if self.w.timed && !self.stopped && may_leave_work && self.due() {
            // The workload should never leave the tender work of its own:
            // wait for it (up to its nap) so the run stays in step.
            self.settle(what, mark);
        }
    }

    /// Run `w` on a fresh storage with `fault` planned. Panics are caught
    /// and returned as `Err` (with the driver lost).
    pub fn run(w: &Workload, fault: Option<Fault>, mode: Mode) -> Result<Driver, String> {
        Driver::run_logged(w, fault, mode, false)
    }

    /// As [`Driver::run`]; `log` keeps the storage call sequence.
    pub fn run_logged(
        w: &Workload,
        fault: Option<Fault>,
        mode: Mode,
        log: bool,
    ) -> Result<Driver, String> {
        let storage = MemoryStorage::new();
        storage.set_fault(fault);
        let mut d = Driver::new(w, storage, mode, log);
        let r = catch_unwind(AssertUnwindSafe(|| {
            d.open();
            let mut i = 0;
            while !d.stopped && i < w.ops + if w.prelude { PRELUDE } else { 0 } {
                let op = d.gen(i);
                d.exec(op);
                i += 1;
            }
            if !d.stopped && w.close_at_end && d.close() {
                d.stopped = true;
            }
        }));
        match r {
            Ok(()) => Ok(d),
            Err(p) => Err(panic_text(&*p)),
        }
    }
}

pub use testkit::panic_text;
