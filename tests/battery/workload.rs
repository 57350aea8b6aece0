//! Seeded workloads and the driver that runs one against a queue on a fresh
//! `MemoryStorage` (optionally with a fault plan), keeping the test kit's
//! [`Model`] of what every call returned.
//!
//! Ops are drawn one at a time from the workload's weights and the model's
//! state (an ack needs an outstanding receipt), so two runs with the same
//! seed make exactly the same calls up to the first fault, and the storage
//! call indices of a fault-free run name the same calls in a faulted one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use lanelog::storage::{Fault, MemoryStorage};
use lanelog::{Durability, Error, ManualClock, Queue, Receipt, Timestamp};
use testkit::model::Model;
use testkit::workload::{self, Item};
use testkit::SplitMix64;

use super::traced::Traced;
use super::{options, T0, VISIBILITY_MS};

/// Relative weights of the random ops.
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
}

/// One step of a workload.
#[derive(Debug, Clone)]
pub enum Op {
    Enqueue(Vec<Item>),
    Dequeue(usize),
    Ack(Vec<(u64, Receipt)>),
    Nack(u64, Receipt, u64),
    DeadLetter(u64, Receipt, usize),
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
    /// Ops that returned `Error::Io`.
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
}

const PRELUDE: usize = 9;

impl Driver {
    fn new(w: &Workload, storage: MemoryStorage, mode: Mode, log: bool) -> Driver {
        let clock = ManualClock::new(Timestamp(T0));
        Driver {
            traced: Traced::new(storage.clone(), log),
            storage,
            clock,
            q: None,
            model: Model::new(w.max_deliveries, VISIBILITY_MS, T0).reads_may_fail(),
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
            w: w.clone(),
        }
    }

    fn now(&self) -> u64 {
        lanelog::Clock::now(&self.clock).0
    }

    fn item(&mut self, delay_ms: u32) -> Item {
        let tag = self.next_tag;
        self.next_tag += 1;
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
            tag,
            priority,
            len,
            delay_ms,
        }
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
            wt.enqueue, wt.batch, wt.delayed, wt.dequeue, wt.ack, wt.nack, wt.dead, wt.redrive,
            wt.advance, wt.sync,
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
                3 => Op::Dequeue(self.rng.within(1, self.w.dequeue_max) as usize),
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
                    let delay = if self.rng.chance(1, 2) {
                        0
                    } else {
                        self.rng.within(1, 15_000)
                    };
                    Op::Nack(id, r, delay)
                }
                6 if has => {
                    let (id, r) = self.model.receipt(self.rng.next_u64()).expect("has");
                    let len = self.rng.below(self.w.reason_max + 1) as usize;
                    Op::DeadLetter(id, r, len)
                }
                7 if self.model.dead_count() > 0 => Op::RedriveAll,
                8 => Op::Advance(self.rng.within(100, self.w.advance_max_ms)),
                9 => Op::Sync,
                _ => continue,
            };
        }
    }

    /// Open (or reopen) the queue; a few tries when faults are transient.
    fn open(&mut self) {
        for _ in 0..3 {
            let now = self.now();
            self.model.begin(now);
            let opts = options(
                &self.clock,
                self.w.durability,
                self.w.max_deliveries,
                self.w.checkpoint_bytes,
            );
            match opts.open_storage(Arc::new(self.traced.clone())) {
                Ok(q) => {
                    self.q = Some(q);
                    self.model.reopened(now);
                    self.failed_sync_pending = false;
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

    /// Run one op against the queue and the model.
    pub fn exec(&mut self, op: Op) {
        self.ops_done += 1;
        match op {
            Op::Advance(ms) => {
                self.clock.advance(Duration::from_millis(ms));
                let now = self.now();
                self.model.forget_expiring_receipts(now);
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
        let failed0 = self.traced.failed_syncs();
        let imm = self.w.durability == Durability::Immediate;
        let what = format!("{op:?}");
        let what = &what[..what.len().min(60)];
        // Ok(true): the op wrote and, under its durability, promised it.
        let r: Result<bool, Error> = match op {
            Op::Enqueue(items) => match workload::enqueue(&q, &items) {
                Ok(ids) => {
                    let batch = (items.len() > 1).then(|| self.model.new_batch());
                    for (id, it) in ids.iter().zip(&items) {
                        if let Err(msg) = self.model.add(u64::from(*id), *it, batch) {
                            self.unexpected.push(format!("{}: {msg}", self.w.name));
                            self.stopped = true;
                        }
                    }
                    Ok(imm)
                }
                Err(e) => {
                    self.model.doubt_items.push(items);
                    Err(e)
                }
            },
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
                if self.mode == Mode::StopAtFirstError || self.consecutive_errors > 20 {
                    self.stopped = true;
                }
            }
            Err(Error::Poisoned) if self.errors > 0 => {
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
