//! Target `ops_with_crashes`: operation sequences on a `MemoryStorage`,
//! with crashes and reopens, checked against a model. Deterministic: a
//! manual clock, seeded crash images, and the queue's background thread
//! (which removes what falls due) made to run at known points (see
//! "Time" below).
//!
//! Input format:
//!
//! ```text
//! mode  u8   bit 0: Durability::None (else Immediate)
//!            bit 1: retention 20.1 s and dead-letter retention 25 s
//!                   (then no redrive: a dead letter redriven after a
//!                   crash whose relocated record was placed out of id
//!                   order by replay is cut by a later retention mark
//!                   than the model's granularity allows, and the model
//!                   does not know when a dead letter a crash brings back
//!                   became one)
//! op*   u8   op % 24:
//!        0-4  enqueue       + u8 lane (& 7) + u8 size (see `size`)
//!        5-7  dequeue
//!        8-9  ack           + u8 which held delivery
//!        10   nack (now)    + u8 which held delivery
//!        11   sync
//!        12   crash+reopen  + u8 policy: % 4 = process crash, power loss,
//!                             torn power loss, drop unsynced; the byte and
//!                             the op count seed the power loss
//!        13   close+reopen
//!        14   let 31 s pass (every lease expires)
//!        15   enqueue batch + u8 count (% 4 + 1), each + lane + size
//!        16   enqueue with options + `with` (below)
//!        17   complete      + u8 which held delivery + u8 result size
//!        18   read a result + u8 which id
//!        19   let time pass + u8: (byte % 40 + 1) × 500 ms
//!        20   batch with options + u8 count (% 4 + 1), each + `with`
//!        21   dead-letter   + u8 which held delivery
//!        22   redrive all (not with retention)
//!        23   dequeue up to + u8 (% 8 + 1)
//! with  = u8 lane (& 7) + u8 size + u8 flags (bit 0: deadline, bit 1:
//!         key, bit 2: delay) + u8 deadline ((b + 1) × 250 ms after the
//!         delay ends) + u8 key (% 16) + u8 delay ((b + 1) × 100 ms)
//! ```
//!
//! Model: the shared test kit's reference model (`testkit::model::Model`):
//! per message its tag and length (the payload is derived from them), lane,
//! enqueue time, deadline, key, deliveries, state and result, the history
//! of the states a crash may bring back (an op is durable under
//! `Immediate` when it returns and wrote, under `None` at the next
//! successful `sync`, close or background-thread run; a process crash
//! keeps every write), the keys and the lifetime counters. The dedup
//! window is 15 s.
//!
//! Time: every clock step is preceded by a pacemaker (a message due 1 ms
//! later, whose enqueue wakes the queue's background thread) and followed
//! by waiting until the pacemaker's deadline shows as missed (the thread
//! applies all it removes at once), then `sync()` (which returns after the
//! thread's commit); the model's `expire` says what that run removed
//! (missed deadlines, retention, dead-letter retention) and the counters
//! must agree. Steps are multiples of 500 ms, so with the retention of
//! 20.1 s (granularity 314 ms) no age is ever in its granularity band.
//! When a nack or a dequeue leaves a message past its deadline ready,
//! everything ready is dequeued (and put back): that dequeue dead-letters
//! it, whoever gets there first.
//!
//! Checked: every call returns `Ok`; ids only grow, even across crashes;
//! `dequeue` returns the ready message of the highest lane, earliest
//! deadline, lowest id first, with its attempt, payload and enqueue time
//! intact, never one whose deadline passed, and `None` only when nothing
//! is ready; a remembered key returns its first id and writes nothing;
//! `result` returns exactly what `complete` stored; after every reopen
//! (which releases leases) the test kit's crash oracles
//! (`testkit::oracle::judge`, on a copy of the directory read whole by
//! `testkit::oracle::observe`, with an enqueue per key) find nothing: every durable unacked enqueue
//! present, no durably acked, completed or expired message back, results
//! byte-exact and never beside their message, attempts in range, a
//! waiting message's deadline one it had (read from the directory once a
//! message was redriven: back from before its dead letter it has the one
//! it was enqueued with, after its redrive none), nothing
//! unknown, drain order, stats and the lifetime counters within bounds,
//! no damage reported, each batch back whole or not at all, every key
//! whose enqueue was durable remembered with its first id; the reopened
//! queue then delivers what the model predicts, and after that drain is
//! put back, `stats()` matches the model (keys within bounds); a
//! batch over one segment's room is refused (`TooLarge`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{Counts, Model, View};
use crate::oracle::{judge, observe, Findings, Outcome};
use crate::workload::{self, Item, Timers, SETTLE_LIMIT};
use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{Clock, Durability, ManualClock, MessageId, Queue, QueueOptions, Timestamp};

use super::Bytes;

/// Ops per input.
pub const MAX_OPS: usize = 256;
/// The clock's start, ms.
const T0: u64 = workload::T0;
/// The lease of every delivery, ms (the op "let 31 s pass" expires them).
const VISIBILITY_MS: u64 = 30_000;
/// Clock steps are multiples of this.
const STEP_MS: u64 = 500;

/// The size of a payload from one byte: class in the top two bits.
pub fn size(z: u8) -> usize {
    let n = usize::from(z & 63);
    match z >> 6 {
        0 => n,
        1 => n * 64,
        2 => n * 1024,
        _ => n * 16 * 1024,
    }
}

/// The time-driven options: retention (or not), keys remembered 15 s.
fn timers(retention: bool) -> Timers {
    Timers {
        retention_ms: retention.then_some(20_100),
        dead_retention_ms: retention.then_some(25_000),
        dedup_window_ms: 15_000,
        ..Timers::default()
    }
}

struct Run {
    storage: MemoryStorage,
    clock: ManualClock,
    durability: Durability,
    timers: Timers,
    q: Option<Queue>,
    model: Model,
    next_tag: u64,
    /// Every id handed out, in order (op 18 picks one).
    ids: Vec<u64>,
    step: u64,
}

impl Run {
    fn options(&self) -> QueueOptions {
        let o = workload::options(&self.clock, self.durability, 0, 8 << 10)
            .visibility_timeout(Duration::from_millis(VISIBILITY_MS));
        self.timers.apply(o)
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().expect("queue is open")
    }

    fn immediate(&self) -> bool {
        self.durability == Durability::Immediate
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// Start an op in the model.
    fn begin(&mut self) {
        let now = self.now();
        self.model.begin(now);
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn plain(&mut self, (priority, len): (u8, usize)) -> Item {
        let tag = self.tag();
        Item::plain(tag, priority, len)
    }

    /// An item with options from its bytes (see the module documentation).
    fn with(&mut self, r: &mut Bytes<'_>) -> Item {
        let lane = r.u8() & 7;
        let len = size(r.u8());
        let flags = r.u8();
        let (deadline, key, delay) = (r.u8(), r.u8(), r.u8());
        let mut it = self.plain((lane, len));
        if flags & 4 != 0 {
            it.delay_ms = (u32::from(delay) + 1) * 100;
        }
        if flags & 1 != 0 {
            it.deadline = self.now() + u64::from(it.delay_ms) + (u64::from(deadline) + 1) * 250;
        }
        if flags & 2 != 0 {
            it.key = Some(u64::from(key % 16));
        }
        it
    }

    fn enqueue(&mut self, items: Vec<Item>) {
        // A batch is one write into one segment: all or none, so a batch
        // larger than a segment's room is refused whole.
        if !workload::fits(&items) {
            let refused = workload::enqueue(self.q(), &items);
            assert!(
                matches!(refused, Err(lanelog::Error::TooLarge { .. })),
                "a batch over a segment: {refused:?}"
            );
            return;
        }
        self.begin();
        let may = self.model.refusals(&items);
        assert_eq!(may, vec![None], "the target makes no refused enqueue");
        let ids: Vec<u64> = workload::enqueue(self.q(), &items)
            .expect("enqueue")
            .into_iter()
            .map(u64::from)
            .collect();
        for &id in &ids {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
        let wrote = match self.model.enqueue_ok(&items, &ids) {
            Ok(wrote) => wrote,
            Err(e) => panic!("enqueue: {e}"),
        };
        let imm = self.immediate();
        self.model.ok(imm && wrote);
    }

    fn dequeue(&mut self, n: usize) {
        self.begin();
        let now = self.now();
        self.model.tick(now);
        let got = workload::dequeue(self.q(), n).expect("dequeue");
        if let Err(e) = self.model.dequeue_ok(n, &got) {
            panic!("dequeue: {e}");
        }
        self.model.ok(false);
        // Leases it expired may have left a message past its deadline
        // ready in a lane it did not reach.
        self.sweep_missed();
    }

    /// `how`: 0 ack, 1 nack, 2 dead-letter, 3 complete with a result of
    /// `len` bytes.
    fn settle(&mut self, which: u8, how: u8, len: usize) {
        let Some((id, receipt)) = self.model.receipt(u64::from(which)) else {
            return;
        };
        assert!(
            self.model.current(id, &receipt),
            "{id}: receipt not current"
        );
        self.begin();
        match how {
            0 => {
                self.q().ack(receipt).expect("ack");
                self.model.ack_ok(&[id]);
            }
            1 => {
                self.q().nack(receipt, Duration::ZERO).expect("nack");
                self.model.nack_ok(id, 0);
            }
            2 => {
                self.q().dead_letter(receipt, "fuzz").expect("dead_letter");
                self.model.dead_letter_ok(id, "fuzz");
            }
            _ => {
                let tag = self.tag();
                self.q()
                    .complete(receipt, &workload::result_payload(tag, len))
                    .expect("complete");
                self.model.complete_ok(id, (tag, len));
            }
        }
        let imm = self.immediate();
        self.model.ok(imm);
        if how == 1 {
            self.sweep_missed();
        }
    }

    /// A message past its deadline is ready (a nack): dequeue everything
    /// (the dequeue dead-letters it, or the background thread did) and put
    /// the rest back.
    fn sweep_missed(&mut self) {
        let now = self.now();
        if self.model.ready_doomed(now) == 0 {
            return;
        }
        self.begin();
        self.model.tick(now);
        let got = self.q().dequeue_up_to(100_000).expect("dequeue");
        if let Err(e) = self.model.dequeue_ok(100_000, &got) {
            panic!("dequeue after a nack past a deadline: {e}");
        }
        self.model.ok(false);
        let imm = self.immediate();
        for d in &got {
            self.begin();
            self.q().nack(d.receipt, Duration::ZERO).expect("nack");
            self.model.nack_ok(u64::from(d.id), 0);
            self.model.ok(imm);
        }
    }

    fn read_result(&mut self, which: u8) {
        if self.ids.is_empty() {
            return;
        }
        let id = self.ids[usize::from(which) % self.ids.len()];
        let got = self.q().result(MessageId::from(id)).expect("result");
        let want = self
            .model
            .result_of(id)
            .map(|(tag, len)| workload::result_payload(tag, len));
        assert!(got == want, "result({id}): {got:?}, model {want:?}");
    }

    fn redrive(&mut self) {
        if self.timers.retention_ms.is_some() {
            return;
        }
        self.begin();
        let n = self.q().redrive_all().expect("redrive_all");
        if let Err(e) = self.model.redrive_ok(n) {
            panic!("{e}");
        }
        let imm = self.immediate();
        self.model.ok(imm && n > 0);
    }

    fn sync(&mut self) {
        self.begin();
        self.q().sync().expect("sync");
        self.model.ok(true);
    }

    /// Let `ms` pass: a pacemaker, the step, the background thread's run
    /// (see the module documentation).
    fn advance(&mut self, ms: u64) {
        let tag = self.tag();
        let pacer = workload::pacemaker(tag, 0, self.now());
        self.enqueue(vec![pacer]);
        let missed0 = self.q().stats().deadline_missed_total;
        self.clock.advance(Duration::from_millis(ms));
        let now = self.now();
        self.model.forget_expiring_receipts(now);
        // Its run shows as the pacemaker's missed deadline (every removal
        // of the run is applied at once); the sync below waits for its
        // commit.
        let start = Instant::now();
        while self.q().stats().deadline_missed_total == missed0 {
            assert!(
                start.elapsed() < SETTLE_LIMIT,
                "the background thread did not run within {SETTLE_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        self.begin();
        self.q().sync().expect("sync after the background thread");
        if let Err(e) = self.model.expire(now) {
            panic!("{e}");
        }
        self.model.ok(true);
        let got = workload::removal_totals(&self.q().stats());
        assert_eq!(
            got,
            self.model.removal_totals(),
            "removals (deadline missed, expired, dead expired) after {ms} ms"
        );
    }

    fn crash(&mut self, p: u8) {
        let policy = match p % 4 {
            0 => CrashPolicy::ProcessCrash,
            1 | 2 => CrashPolicy::PowerLoss {
                seed: u64::from(p) << 32 | self.step,
                torn: p % 4 == 2,
            },
            _ => CrashPolicy::DropUnsynced,
        };
        let view = if policy == CrashPolicy::ProcessCrash {
            View::Process
        } else {
            View::Power
        };
        let image = self.storage.crash(policy);
        // The old queue still writes to the old storage as it drops; the
        // image is independent of it.
        drop(self.q.take());
        self.storage = image;
        self.reopen(view, &format!("op {} {policy:?}", self.step));
    }

    /// Give the model the deadline of every message the directory holds
    /// waiting (read without opening a queue on it).
    fn deadlines_seen(&mut self, ctx: &str) {
        let copy = self.storage.crash(CrashPolicy::ProcessCrash);
        let clock = Arc::new(ManualClock::new(Timestamp(self.now()))) as Arc<dyn Clock>;
        let peeked = lanelog::inspect::Inspector::open_storage(Arc::new(copy), clock)
            .and_then(|i| i.peek(None, usize::MAX));
        let peeked = match peeked {
            Ok(p) => p,
            Err(e) => panic!("{ctx}: peek after reopen failed: {e}"),
        };
        for p in peeked {
            let deadline = p.deadline.map_or(0, |t| t.0);
            if let Err(e) = self.model.deadline_seen(u64::from(p.id), deadline) {
                panic!("{ctx}: {e}");
            }
        }
    }

    fn close_reopen(&mut self) {
        self.begin();
        self.q.take().expect("open").close().expect("close");
        self.model.ok(true);
        self.reopen(View::Power, &format!("op {} close", self.step));
    }

    /// Judge what `self.storage` holds against the model under `view` (on a
    /// copy: opened with nothing removed by time and read whole, delayed
    /// messages too; see `testkit::oracle::observe`), make that the model's
    /// state, then open it, lease everything ready and put it back.
    fn reopen(&mut self, view: View, ctx: &str) {
        let copy = self.storage.crash(CrashPolicy::ProcessCrash);
        let o = match observe(copy, 8 << 10, &self.model, true) {
            Outcome::Opened(o) => o,
            Outcome::Failed(e) => panic!("{ctx}: open failed: {e}"),
            Outcome::Panicked(e) => panic!("{ctx}: open panicked: {e}"),
        };
        let mut f = Findings::default();
        judge(&self.model, view, &o, ctx, &mut f);
        assert!(
            f.failures() == 0,
            "{ctx}: the reopened queue breaks the model: {}; {}\n{}",
            f.headline(),
            f.details(),
            f.notes.join("\n")
        );
        let now = self.now();
        let (seen, totals) = o.state();
        self.model.recovered(now, view, &seen, totals);
        if self.model.any_redriven() {
            // A redriven message may be back from before or after its
            // redrive, with its deadline or without; where the delivery
            // count cannot tell, the directory does.
            self.deadlines_seen(ctx);
        }
        let q = match self
            .options()
            .open_storage(Arc::new(self.storage.clone()) as Arc<dyn Storage>)
        {
            Ok(q) => q,
            Err(e) => panic!("{ctx}: open failed: {e}"),
        };
        self.q = Some(q);
        // Lease everything ready (the background thread may dead-letter a
        // released message whose deadline passed before this does: the
        // same either way), check it, and put it back.
        self.begin();
        self.model.tick(now);
        let got = lease_all(self.q());
        let n = got.len() + 1;
        if let Err(e) = self.model.dequeue_ok(n, &got) {
            panic!("{ctx}: drain after reopen: {e}");
        }
        self.model.ok(false);
        let imm = self.immediate();
        for d in &got {
            self.begin();
            self.q()
                .nack(d.receipt, Duration::ZERO)
                .expect("nack after reopen");
            self.model.nack_ok(u64::from(d.id), 0);
            self.model.ok(imm);
        }
        let s = self.q().stats();
        assert_eq!(
            Counts::of(&s),
            self.model.stats(now),
            "{ctx}: stats after reopen"
        );
        let (lo, hi) = self.model.keys_bounds(now);
        assert!(
            (lo..=hi).contains(&s.keys),
            "{ctx}: stats().keys {} outside {lo}..={hi}",
            s.keys
        );
    }
}

/// Lease every ready message.
fn lease_all(q: &Queue) -> Vec<lanelog::Delivery> {
    let mut out = Vec::new();
    loop {
        let batch = q.dequeue_up_to(64).expect("drain");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let threads_before = threads();
    let mut r = Bytes::new(data);
    let mode = r.u8();
    let timers = timers(mode & 2 != 0);
    let mut run = Run {
        storage: MemoryStorage::new(),
        clock: ManualClock::new(Timestamp(T0)),
        durability: if mode & 1 == 1 {
            Durability::None
        } else {
            Durability::Immediate
        },
        timers,
        q: None,
        model: Model::new(0, VISIBILITY_MS, T0).with_timers(timers),
        next_tag: 0,
        ids: Vec::new(),
        step: 0,
    };
    run.reopen(View::Power, "first open");
    // `LANELOG_FUZZ_TRACE=1`: print each op (to read a failing input).
    let trace = std::env::var_os("LANELOG_FUZZ_TRACE").is_some();
    while !r.is_empty() && (run.step as usize) < MAX_OPS {
        run.step += 1;
        let op = r.u8() % 24;
        if trace {
            eprintln!("op {}: {op} (now {})", run.step, run.now());
        }
        match op {
            0..=4 => {
                let lane = r.u8() & 7;
                let len = size(r.u8());
                let it = run.plain((lane, len));
                run.enqueue(vec![it]);
            }
            5..=7 => run.dequeue(1),
            8 | 9 => {
                let which = r.u8();
                run.settle(which, 0, 0);
            }
            10 => {
                let which = r.u8();
                run.settle(which, 1, 0);
            }
            11 => run.sync(),
            12 => {
                let p = r.u8();
                run.crash(p);
            }
            13 => run.close_reopen(),
            14 => run.advance(VISIBILITY_MS + 1_000),
            15 => {
                let n = usize::from(r.u8() % 4) + 1;
                let items: Vec<Item> = (0..n)
                    .map(|_| {
                        let lane = r.u8() & 7;
                        let len = size(r.u8());
                        run.plain((lane, len))
                    })
                    .collect();
                run.enqueue(items);
            }
            16 => {
                let it = run.with(&mut r);
                run.enqueue(vec![it]);
            }
            17 => {
                let which = r.u8();
                let len = size(r.u8());
                run.settle(which, 3, len);
            }
            18 => {
                let which = r.u8();
                run.read_result(which);
            }
            19 => {
                let steps = u64::from(r.u8() % 40) + 1;
                run.advance(steps * STEP_MS);
            }
            20 => {
                let n = usize::from(r.u8() % 4) + 1;
                let items: Vec<Item> = (0..n).map(|_| run.with(&mut r)).collect();
                run.enqueue(items);
            }
            21 => {
                let which = r.u8();
                run.settle(which, 2, 0);
            }
            22 => run.redrive(),
            _ => {
                let n = usize::from(r.u8() % 8) + 1;
                run.dequeue(n);
            }
        }
    }
    // A final crash of each kind must also recover.
    run.crash(1);
    run.crash(0);
    drop(run);
    // Every queue dropped stops its background thread, which then exits on
    // its own: let those exits finish within this input, or LeakSanitizer
    // may check while one is freeing its thread-locals and report them as
    // leaked.
    let start = Instant::now();
    while threads() > threads_before && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Threads of this process (Linux; 0 elsewhere).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}
