//! Goal: the queue behaves exactly like a small reference model under random
//! op sequences, including clean reopens, process crashes and power losses:
//! every dequeue returns the ids, priorities, payloads, attempts and
//! enqueue times the model predicts (lanes, deadlines earliest first,
//! missed deadlines dead-lettered), every enqueue with options the ids the
//! model predicts (a remembered key returns its first id; a bad deadline
//! or too many keys is refused), every result reads back byte for byte,
//! and after every op the stats (ready, in flight, delayed, dead,
//! acked_total, results, keys, deadline_missed_total, expired_total,
//! dead_expired_total, ready per lane) and the dead letters (ids,
//! attempts, reasons, times) match. Ids never repeat, not even across
//! crashes.
//!
//! Method: proptest generates a durability mode (`Immediate` or `None`),
//! whether the queue has retention (retention 20.1 s, dead-letter
//! retention 25 s; then clock steps are multiples of 500 ms, so no
//! message's age falls in retention's granularity band), and up to 100 ops:
//! Enqueue(priority, size), EnqueueDelayed, EnqueueBatch, EnqueueWith
//! (delay, deadline, key; deadlines now and then already past), EnqueueBatchWith,
//! Dequeue(n), Ack / Nack(delay) / DeadLetter / Complete(result size) of
//! the k-th receipt handed out since the last reopen (receipts that went
//! stale by lease expiry or retention stay in the pool, so stale
//! settlements are checked too), ReadResult of the k-th id, RedriveAll,
//! AdvanceClock(ms) on a ManualClock, Sync, CleanReopen, CrashReopen
//! (`crash(ProcessCrash)`) and PowerLossReopen (`crash(DropUnsynced)`). The
//! model is the test kit's reference model (`testkit::model::Model`). The
//! dedup window is 15 s and at most 10 keys are remembered.
//!
//! The queue's background thread removes what falls due on its own time.
//! The harness makes that happen at known points: every clock step is
//! preceded by a pacemaker enqueue (a message due 1 ms later, which wakes
//! the thread: its deadline is earlier than any look the thread planned)
//! and followed by waiting until the thread ran (its write, and the
//! pacemaker's missed deadline in the stats), then `sync()`; after a
//! redrive that makes a message older than the retention ready, the
//! thread's run (a cut is due at once) is waited for the same way; and
//! when an op leaves a message past its deadline ready (a
//! nack, a reopen releasing it, a dequeue that did not reach it), the
//! harness dequeues everything, which dead-letters such messages whoever
//! gets there first.
//!
//! A power loss keeps what the last sync covered, which the model cannot
//! always pin down (`Immediate` syncs every write but a dequeue's delivery
//! record: "a message delivered since the last sync may come back with its
//! old attempt count"; under `None` the queue also syncs on its own for
//! segment rolls, maintenance and its background thread). So the model
//! keeps the state after every op since the last sync it knows of, a power
//! loss turns each of them into a candidate, and every later observation
//! discards the candidates that predicted otherwise; a case fails when
//! none is left. Under `None` a result (a segment record) may also be lost
//! while journal entries written after it survive (the queue syncs the
//! journal alone when it reserves ids, at the first enqueue after an
//! open): each candidate comes also with any suffix of its completes since
//! the last sync undone.
//!
//! Scale: 1,000 cases by default; `PROPTEST_CASES=n` sets the count, else
//! `LANELOG_BATTERY_SCALE=n` multiplies it.

mod battery;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::storage::{CrashPolicy, MemoryStorage};
use lanelog::{DeadLetter, Durability, Error, ManualClock, MessageId, Queue, Receipt, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use testkit::model::{Counts as ModelCounts, DeadRow, Model, Refusal};
use testkit::traced::Traced;
use testkit::workload::{self, Item, Timers, SETTLE_LIMIT};

const MAX_DELIVERIES: u32 = 3;
const VISIBILITY_MS: u64 = 5_000;
/// Clock steps of a case with retention are multiples of this.
const STEP_MS: u64 = 500;

/// The timers of a case: with retention (20.1 s, granularity 314 ms: with
/// 500 ms steps every age is clearly under 20.1 s or at least 20.5 s) or
/// without; keys remembered 15 s, at most 10.
fn timers(retention: bool) -> Timers {
    Timers {
        retention_ms: retention.then_some(20_100),
        dead_retention_ms: retention.then_some(25_000),
        dedup_window_ms: 15_000,
        max_keys: 10,
    }
}

/// An item with options: `(priority, size, delay ms, deadline ms ahead of
/// the delay's end (0: already due, refused), key)`.
type WithSpec = (u8, usize, u64, Option<u64>, Option<u8>);

#[derive(Debug, Clone)]
enum Op {
    Enqueue(u8, usize),
    EnqueueDelayed(u8, usize, u64),
    EnqueueBatch(Vec<(u8, usize)>),
    EnqueueWith(WithSpec),
    EnqueueBatchWith(Vec<WithSpec>),
    Dequeue(usize),
    Ack(usize),
    Nack(usize, u64),
    DeadLetter(usize),
    Complete(usize, usize),
    ReadResult(usize),
    RedriveAll,
    AdvanceClock(u64),
    Sync,
    CleanReopen,
    CrashReopen,
    PowerLossReopen,
}

fn priority() -> impl Strategy<Value = u8> {
    prop_oneof![8 => 0u8..4, 1 => Just(255u8)]
}

/// Mostly small payloads; now and then one big enough that a few roll a
/// 1 MiB segment.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..64,
        3 => 64usize..2048,
        1 => 150_000usize..450_000,
    ]
}

fn with_spec() -> impl Strategy<Value = WithSpec> {
    (
        priority(),
        prop_oneof![4 => 0usize..64, 1 => 64usize..2048],
        prop_oneof![4 => Just(0u64), 1 => 1u64..8_000],
        prop_oneof![1 => Just(None), 4 => (1u64..20_000).prop_map(Some), 1 => Just(Some(0))],
        prop_oneof![1 => Just(None), 2 => (0u8..12).prop_map(Some)],
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (priority(), size()).prop_map(|(p, s)| Op::Enqueue(p, s)),
        1 => (priority(), size(), 1u64..20_000).prop_map(|(p, s, d)| Op::EnqueueDelayed(p, s, d)),
        2 => prop::collection::vec((priority(), size()), 1..8).prop_map(Op::EnqueueBatch),
        4 => with_spec().prop_map(Op::EnqueueWith),
        2 => prop::collection::vec(with_spec(), 1..6).prop_map(Op::EnqueueBatchWith),
        8 => (1usize..5).prop_map(Op::Dequeue),
        4 => (0usize..64).prop_map(Op::Ack),
        2 => (0usize..64, prop_oneof![Just(0u64), 1u64..10_000]).prop_map(|(k, d)| Op::Nack(k, d)),
        2 => (0usize..64).prop_map(Op::DeadLetter),
        3 => (0usize..64, prop_oneof![Just(0usize), 1usize..3000]).prop_map(|(k, s)| Op::Complete(k, s)),
        1 => (0usize..64).prop_map(Op::ReadResult),
        1 => Just(Op::RedriveAll),
        3 => (0u64..12_000).prop_map(Op::AdvanceClock),
        2 => Just(Op::Sync),
        1 => Just(Op::CleanReopen),
        1 => Just(Op::CrashReopen),
        1 => Just(Op::PowerLossReopen),
    ]
}

fn case() -> impl Strategy<Value = (bool, bool, Vec<Op>)> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(op(), 1..=100),
    )
}

/// A candidate: the live state and every state since the last sync known
/// to have covered everything (the first one).
#[derive(Debug, Clone)]
struct Cand {
    live: Model,
    since_sync: Vec<Model>,
}

impl Cand {
    fn same(&self, o: &Cand) -> bool {
        self.live.same_state(&o.live)
            && self.since_sync.len() == o.since_sync.len()
            && self
                .since_sync
                .iter()
                .zip(&o.since_sync)
                .all(|(a, b)| a.same_state(b))
    }
}

/// How one case went, for the summary.
#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    deliveries: AtomicU64,
    reopens: AtomicU64,
    power_losses: AtomicU64,
    ambiguous: AtomicU64,
    keyed: AtomicU64,
    refused: AtomicU64,
    results: AtomicU64,
    missed: AtomicU64,
    expired: AtomicU64,
    dead_expired: AtomicU64,
    tender_runs: AtomicU64,
    /// Microseconds spent waiting for the background thread.
    tender_wait_us: AtomicU64,
    /// Pacemakers enqueued again because the first did not wake it.
    kicks: AtomicU64,
    sweeps: AtomicU64,
}

struct Harness<'a> {
    durability: Durability,
    timers: Timers,
    clock: ManualClock,
    storage: MemoryStorage,
    traced: Traced,
    q: Option<Queue>,
    cands: Vec<Cand>,
    receipts: Vec<(u64, Receipt)>,
    /// Every id handed out, in order (ReadResult picks one).
    ids: Vec<u64>,
    next_tag: u64,
    max_id: u64,
    counts: &'a Counts,
    log: Vec<String>,
}

fn fail(h: &Harness<'_>, what: String) -> TestCaseError {
    let tail: Vec<&String> = h.log.iter().rev().take(8).collect();
    TestCaseError::fail(format!("{what}\n  last ops (newest first): {tail:#?}"))
}

impl Harness<'_> {
    fn now(&self) -> u64 {
        lanelog::Clock::now(&self.clock).0
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().expect("open")
    }

    /// Open a queue on `m` (through a [`Traced`] wrapper, kept to watch
    /// the background thread's writes).
    fn open(&mut self, m: MemoryStorage) -> Queue {
        let traced = Traced::new(m, false);
        self.traced = traced.clone();
        let opts = battery::options(&self.clock, self.durability, MAX_DELIVERIES, 64 << 10)
            .visibility_timeout(Duration::from_millis(VISIBILITY_MS));
        self.timers
            .apply(opts)
            .open_storage(Arc::new(traced))
            .expect("open")
    }

    /// Keep the candidates for which `keep` holds; fail if none does.
    fn prune(
        &mut self,
        what: &str,
        keep: impl Fn(&Cand) -> Result<(), String>,
    ) -> Result<(), TestCaseError> {
        let mut why = None;
        let before = self.cands.len();
        self.cands.retain(|c| match keep(c) {
            Ok(()) => true,
            Err(e) => {
                why.get_or_insert(e);
                false
            }
        });
        if self.cands.is_empty() {
            let why = why.unwrap_or_default();
            return Err(fail(
                self,
                format!("{what}: no model state explains it ({before} candidates); e.g. {why}"),
            ));
        }
        Ok(())
    }

    /// Apply `f` to every candidate's live state; drop those it refuses.
    fn apply(
        &mut self,
        what: &str,
        f: impl Fn(&mut Model) -> Result<(), String>,
    ) -> Result<(), TestCaseError> {
        let now = self.now();
        let mut why = None;
        let before = self.cands.len();
        self.cands.retain_mut(|c| {
            c.live.begin(now);
            match f(&mut c.live) {
                Ok(()) => true,
                Err(e) => {
                    why.get_or_insert(e);
                    false
                }
            }
        });
        if self.cands.is_empty() {
            return Err(fail(
                self,
                format!(
                    "{what}: no model state explains it ({before} candidates); e.g. {}",
                    why.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Returns whether the queue wrote anything (a refused call, an
    /// oversized batch or one whose keys were all remembered wrote nothing,
    /// so it syncs nothing either).
    fn enqueue(&mut self, items: Vec<Item>) -> Result<bool, TestCaseError> {
        // A batch must fit in one segment; a larger one is refused whole and
        // changes nothing.
        if !workload::fits(&items) {
            return match workload::enqueue(self.q(), &items) {
                Err(lanelog::Error::TooLarge { .. }) => Ok(false),
                other => Err(fail(
                    self,
                    format!("oversized batch of {} messages: {other:?}", items.len()),
                )),
            };
        }
        if items.iter().any(|i| i.key.is_some()) {
            self.counts.keyed.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.now();
        let got = workload::enqueue(self.q(), &items);
        let refused = match &got {
            Ok(_) => None,
            Err(Error::InvalidArgument(_)) => Some(Refusal::BadDeadline),
            Err(Error::TooManyKeys { .. }) => Some(Refusal::TooManyKeys),
            Err(e) => return Err(fail(self, format!("enqueue failed: {e}"))),
        };
        self.prune(&format!("enqueue -> refused {refused:?}"), |c| {
            let mut m = c.live.clone();
            m.begin(now);
            match m.refusals(&items) {
                r if r.contains(&refused) => Ok(()),
                r => Err(format!("it predicted {r:?}")),
            }
        })?;
        let Ok(ids) = got else {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        };
        let ids: Vec<u64> = ids.into_iter().map(u64::from).collect();
        for &id in &ids {
            if id > self.max_id {
                self.max_id = id;
                self.ids.push(id);
            } else if !self.ids.contains(&id) {
                return Err(fail(
                    self,
                    format!(
                        "id {id} handed out after id {} (ids must never repeat)",
                        self.max_id
                    ),
                ));
            }
        }
        let wrote = std::cell::Cell::new(false);
        self.apply(&format!("enqueue -> {ids:?}"), |m| {
            wrote.set(m.enqueue_ok(&items, &ids)? || wrote.get());
            Ok(())
        })?;
        Ok(wrote.get())
    }

    fn item(&mut self, (priority, len, delay, deadline, key): WithSpec) -> Item {
        let tag = self.tag();
        let now = self.now();
        Item {
            tag,
            priority,
            len,
            delay_ms: u32::try_from(delay).expect("delays are short"),
            deadline: deadline.map_or(0, |d| now + delay + d),
            key: key.map(u64::from),
        }
    }

    fn dequeue(&mut self, n: usize) -> Result<(), TestCaseError> {
        let now = self.now();
        let got = workload::dequeue(self.q(), n)
            .map_err(|e| fail(self, format!("dequeue failed: {e}")))?;
        self.counts
            .deliveries
            .fetch_add(got.len() as u64, Ordering::Relaxed);
        let mut next = Vec::new();
        let mut why = None;
        for c in &self.cands {
            let mut live = c.live.clone();
            live.begin(now);
            live.tick(now);
            if let Err(e) = live.dequeue_ok(n, &got) {
                why.get_or_insert(e);
                continue;
            }
            next.push(Cand {
                live,
                since_sync: c.since_sync.clone(),
            });
        }
        if next.is_empty() {
            let actual: Vec<(u64, u8, u32)> = got
                .iter()
                .map(|d| (u64::from(d.id), d.priority, d.attempt))
                .collect();
            return Err(fail(
                self,
                format!(
                    "dequeue({n}) gave (id, priority, attempt) {actual:?}; e.g. a model state: {}",
                    why.unwrap_or_default()
                ),
            ));
        }
        self.cands = next;
        for d in &got {
            self.receipts.push((u64::from(d.id), d.receipt));
        }
        Ok(())
    }

    /// Settle the k-th receipt; each candidate predicts Ok or stale.
    fn settle(&mut self, k: usize, op: &Op) -> Result<bool, TestCaseError> {
        if self.receipts.is_empty() {
            return Ok(false);
        }
        let (id, r) = self.receipts.remove(k % self.receipts.len());
        let reason = format!("reason {k}");
        let result = match op {
            Op::Complete(_, len) => Some((self.tag(), *len)),
            _ => None,
        };
        let outcome = match op {
            Op::Ack(_) => self.q().ack(r),
            Op::Nack(_, delay) => self.q().nack(r, Duration::from_millis(*delay)),
            Op::DeadLetter(_) => self.q().dead_letter(r, &reason),
            Op::Complete(..) => {
                let (tag, len) = result.expect("a result");
                self.q().complete(r, &workload::result_payload(tag, len))
            }
            _ => unreachable!("not a settlement"),
        };
        let ok = match outcome {
            Ok(()) => true,
            Err(Error::StaleReceipt) => false,
            Err(e) => return Err(fail(self, format!("{op:?} of {id}: {e}"))),
        };
        self.prune(&format!("{op:?} of {id} -> ok={ok}"), |c| {
            if c.live.current(id, &r) == ok {
                Ok(())
            } else {
                Err(format!("it predicted ok={}", !ok))
            }
        })?;
        if ok {
            self.apply(&format!("{op:?}"), |m| {
                match op {
                    Op::Ack(_) => m.ack_ok(&[id]),
                    Op::Nack(_, delay) => m.nack_ok(id, *delay),
                    Op::Complete(..) => m.complete_ok(id, result.expect("a result")),
                    _ => m.dead_letter_ok(id, &reason),
                }
                Ok(())
            })?;
            if result.is_some() {
                self.counts.results.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(ok)
    }

    fn read_result(&mut self, k: usize) -> Result<(), TestCaseError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let id = self.ids[k % self.ids.len()];
        let got = self
            .q()
            .result(MessageId::from(id))
            .map_err(|e| fail(self, format!("result({id}): {e}")))?;
        self.prune(&format!("result({id})"), |c| {
            let want = c
                .live
                .result_of(id)
                .map(|(tag, len)| workload::result_payload(tag, len));
            if want == got {
                Ok(())
            } else {
                Err(format!(
                    "result {:?} bytes, model {:?} bytes",
                    got.as_ref().map(Vec::len),
                    want.as_ref().map(Vec::len)
                ))
            }
        })
    }

    fn redrive(&mut self) -> Result<bool, TestCaseError> {
        let n = self
            .q()
            .redrive_all()
            .map_err(|e| fail(self, format!("redrive_all: {e}")))?;
        self.prune(&format!("redrive_all -> {n}"), |c| {
            let dead = c.live.dead_letters().len() as u64;
            if dead == n {
                Ok(())
            } else {
                Err(format!("it had {dead} dead letters"))
            }
        })?;
        self.apply("redrive_all", |m| m.redrive_ok(n))?;
        Ok(n > 0)
    }

    /// Step the clock by `ms`: a pacemaker first, then wait for the
    /// background thread's run, `sync()` (see the module documentation).
    /// Returns whether that happened (it synced).
    fn advance(&mut self, ms: u64) -> Result<bool, TestCaseError> {
        if ms == 0 {
            return Ok(false);
        }
        let tag = self.tag();
        let pacer = workload::pacemaker(tag, 0, self.now());
        self.enqueue(vec![pacer])?;
        let missed0 = self.q().stats().deadline_missed_total;
        let writes0 = self.traced().tender_writes();
        self.clock.advance(Duration::from_millis(ms));
        // The pacemaker's deadline passed: the thread's run shows as a
        // write and a missed deadline.
        let start = Instant::now();
        let mut kicked = start;
        while self.traced().tender_writes() == writes0
            || self.q().stats().deadline_missed_total == missed0
        {
            if start.elapsed() > SETTLE_LIMIT {
                return Err(fail(
                    self,
                    format!("the background thread did not run within {SETTLE_LIMIT:?}"),
                ));
            }
            if kicked.elapsed() > Duration::from_millis(20) {
                // Not woken (it should have been: a pacemaker's deadline is
                // earlier than any look it planned): try another one.
                kicked = Instant::now();
                self.counts.kicks.fetch_add(1, Ordering::Relaxed);
                let tag = self.tag();
                let pacer = workload::pacemaker(tag, 0, self.now());
                self.enqueue(vec![pacer])?;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.q()
            .sync()
            .map_err(|e| fail(self, format!("sync after the background thread: {e}")))?;
        self.counts.tender_runs.fetch_add(1, Ordering::Relaxed);
        self.counts
            .tender_wait_us
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        let now = self.now();
        self.apply("background thread", |m| m.expire(now))?;
        Ok(true)
    }

    /// After a redrive with retention: a redriven message older than the
    /// retention is due for a cut at once, so wait for the background
    /// thread's run (a write since `writes0`), `sync()`, and expire in the
    /// model. Candidates that disagree on whether it was due go by whether
    /// the thread wrote. Returns whether that happened (it synced).
    fn expire_redriven(&mut self, writes0: u64) -> Result<bool, TestCaseError> {
        let now = self.now();
        let mut due = Vec::new();
        for c in &self.cands {
            let mut live = c.live.clone();
            live.begin(now);
            due.push(live.pending(now).map_err(|e| fail(self, e))?);
        }
        if !due.contains(&true) {
            return Ok(false);
        }
        // When every candidate has one due the thread writes; otherwise
        // it is given a while.
        let limit = if due.contains(&false) {
            Duration::from_millis(500)
        } else {
            SETTLE_LIMIT
        };
        let start = Instant::now();
        while self.traced().tender_writes() == writes0 && start.elapsed() < limit {
            std::thread::sleep(Duration::from_micros(100));
        }
        let wrote = self.traced().tender_writes() != writes0;
        let mut i = 0;
        self.cands.retain(|_| {
            i += 1;
            due[i - 1] == wrote
        });
        if self.cands.is_empty() {
            return Err(fail(
                self,
                format!("after a redrive the background thread wrote: {wrote}; no model state predicts that"),
            ));
        }
        if !wrote {
            return Ok(false);
        }
        self.q()
            .sync()
            .map_err(|e| fail(self, format!("sync after the background thread: {e}")))?;
        self.counts.tender_runs.fetch_add(1, Ordering::Relaxed);
        self.apply("background thread after a redrive", |m| m.expire(now))?;
        Ok(true)
    }

    /// The `Traced` storage of the open queue.
    fn traced(&self) -> Traced {
        self.traced.clone()
    }

    /// A message past its deadline is ready in some candidate (after a
    /// nack, a reopen, a dequeue that stopped before it): dequeue
    /// everything, so it is dead-lettered now (by that dequeue or by the
    /// background thread, the same either way).
    fn sweep_missed(&mut self) -> Result<bool, TestCaseError> {
        let now = self.now();
        let doomed = self.cands.iter().any(|c| c.live.ready_doomed(now) > 0);
        if doomed {
            self.counts.sweeps.fetch_add(1, Ordering::Relaxed);
            self.log
                .push("(dequeue everything: a deadline passed)".into());
            self.dequeue(100_000)?;
        }
        Ok(doomed)
    }

    fn reopen(&mut self, how: &Op) -> Result<(), TestCaseError> {
        let q = self.q.take().expect("open");
        let storage = match how {
            Op::CleanReopen => {
                q.close().map_err(|e| fail(self, format!("close: {e}")))?;
                self.storage.clone()
            }
            Op::CrashReopen => {
                let img = self.storage.crash(CrashPolicy::ProcessCrash);
                drop(q);
                img
            }
            _ => {
                let img = self.storage.crash(CrashPolicy::DropUnsynced);
                drop(q);
                img
            }
        };
        self.counts.reopens.fetch_add(1, Ordering::Relaxed);
        let power = matches!(how, Op::PowerLossReopen);
        if power {
            self.counts.power_losses.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.now();
        let mut next: Vec<Cand> = Vec::new();
        for c in &self.cands {
            let states: Vec<&Model> = if power {
                c.since_sync.iter().collect()
            } else {
                vec![&c.live]
            };
            for s in states {
                // Under `None` a power loss may also lose results (segment
                // records) written before journal entries it keeps: any
                // suffix of the completes since the last full sync.
                let mut variants = vec![s.clone()];
                if power && self.durability == Durability::None {
                    let undo = s.completed_since(&c.since_sync[0]);
                    for t in 1..=undo.len() {
                        let mut v = s.clone();
                        for id in &undo[undo.len() - t..] {
                            v.uncomplete(*id);
                        }
                        variants.push(v);
                    }
                }
                for mut live in variants {
                    live.begin(now);
                    live.reopened(now);
                    let cand = Cand {
                        since_sync: vec![live.clone()],
                        live,
                    };
                    if !next.iter().any(|x| x.same(&cand)) {
                        next.push(cand);
                    }
                }
            }
        }
        if next.len() > 1 {
            self.counts.ambiguous.fetch_add(1, Ordering::Relaxed);
        }
        self.cands = next;
        self.receipts.clear();
        self.storage = storage.clone();
        let q = self.open(storage);
        self.q = Some(q);
        Ok(())
    }

    /// Compare stats, dead letters and results with every candidate.
    fn observe(&mut self) -> Result<(), TestCaseError> {
        let now = self.now();
        let s = self.q().stats();
        let dead: Vec<DeadRow> = self
            .q()
            .dead_letters()
            .map_err(|e| fail(self, format!("dead_letters: {e}")))?
            .into_iter()
            .map(|d: DeadLetter| {
                (
                    u64::from(d.id),
                    d.priority,
                    d.attempts,
                    d.reason,
                    d.enqueued_at.0,
                    d.dead_at.0,
                )
            })
            .collect();
        let actual = ModelCounts::of(&s);
        let keys = s.keys;
        // Results of every message some candidate completed.
        let completed: BTreeSet<u64> = self
            .cands
            .iter()
            .flat_map(|c| c.live.completed().collect::<Vec<_>>())
            .collect();
        let mut results = Vec::new();
        for id in completed {
            let r = self
                .q()
                .result(MessageId::from(id))
                .map_err(|e| fail(self, format!("result({id}): {e}")))?;
            results.push((id, r));
        }
        self.prune("stats, dead letters and results", |c| {
            let want = c.live.stats(now);
            if want != actual {
                return Err(format!("stats {actual:?}, model {want:?}"));
            }
            let (lo, hi) = c.live.keys_bounds(now);
            if !(lo..=hi).contains(&keys) {
                return Err(format!("stats().keys {keys}, model {lo}..={hi}"));
            }
            let want = c.live.dead_letters();
            if want != dead {
                return Err(format!("dead letters {dead:?}, model {want:?}"));
            }
            for (id, got) in &results {
                let want = c
                    .live
                    .result_of(*id)
                    .map(|(tag, len)| workload::result_payload(tag, len));
                if want != *got {
                    return Err(format!(
                        "result({id}): {:?} bytes, model {:?} bytes",
                        got.as_ref().map(Vec::len),
                        want.as_ref().map(Vec::len)
                    ));
                }
            }
            Ok(())
        })
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.counts.ops.fetch_add(1, Ordering::Relaxed);
        self.log.push(format!("{op:?}"));
        let imm = self.durability == Durability::Immediate;
        let quantum = if self.timers.retention_ms.is_some() {
            STEP_MS
        } else {
            1
        };
        // Whether this op made everything before it durable.
        let synced = match op {
            Op::Enqueue(p, s) => {
                let it = self.item((*p, *s, 0, None, None));
                self.enqueue(vec![it])? && imm
            }
            Op::EnqueueDelayed(p, s, d) => {
                let it = self.item((*p, *s, *d, None, None));
                self.enqueue(vec![it])? && imm
            }
            Op::EnqueueBatch(items) => {
                let items: Vec<Item> = items
                    .iter()
                    .map(|&(p, s)| self.item((p, s, 0, None, None)))
                    .collect();
                self.enqueue(items)? && imm
            }
            Op::EnqueueWith(spec) => {
                let it = self.item(*spec);
                self.enqueue(vec![it])? && imm
            }
            Op::EnqueueBatchWith(specs) => {
                let items: Vec<Item> = specs.iter().map(|&s| self.item(s)).collect();
                self.enqueue(items)? && imm
            }
            Op::Dequeue(n) => {
                self.dequeue(*n)?;
                false
            }
            Op::Ack(k) | Op::Nack(k, _) | Op::DeadLetter(k) | Op::Complete(k, _) => {
                self.settle(*k, op)? && imm
            }
            Op::ReadResult(k) => {
                self.read_result(*k)?;
                false
            }
            Op::RedriveAll if self.timers.retention_ms.is_some() => {
                let writes0 = self.traced().tender_writes();
                let moved = self.redrive()?;
                self.expire_redriven(writes0)? || (moved && imm)
            }
            Op::RedriveAll => self.redrive()? && imm,
            Op::AdvanceClock(ms) => self.advance(ms.div_ceil(quantum) * quantum)?,
            Op::Sync => {
                self.q()
                    .sync()
                    .map_err(|e| fail(self, format!("sync: {e}")))?;
                true
            }
            Op::CleanReopen | Op::CrashReopen | Op::PowerLossReopen => {
                self.reopen(op)?;
                true
            }
        };
        self.record(synced);
        // Its state first, then the sweep's (a dequeue: never a sync).
        if self.sweep_missed()? {
            self.record(false);
        }
        self.observe()
    }

    /// Note each candidate's state after an op: a sync makes it the only
    /// one a power loss may go back to.
    fn record(&mut self, synced: bool) {
        for c in &mut self.cands {
            if synced {
                c.since_sync = vec![c.live.clone()];
            } else if !c.since_sync.last().is_some_and(|l| l.same_state(&c.live)) {
                c.since_sync.push(c.live.clone());
            }
        }
    }
}

fn run_case(
    immediate: bool,
    retention: bool,
    ops: &[Op],
    counts: &Counts,
) -> Result<(), TestCaseError> {
    let durability = if immediate {
        Durability::Immediate
    } else {
        Durability::None
    };
    let clock = ManualClock::new(Timestamp(battery::T0));
    let storage = MemoryStorage::new();
    let timers = timers(retention);
    let model = Model::new(MAX_DELIVERIES, VISIBILITY_MS, battery::T0).with_timers(timers);
    let mut h = Harness {
        durability,
        timers,
        clock,
        storage: storage.clone(),
        traced: Traced::new(MemoryStorage::new(), false),
        q: None,
        cands: vec![Cand {
            live: model.clone(),
            since_sync: vec![model],
        }],
        receipts: Vec::new(),
        ids: Vec::new(),
        next_tag: 0,
        max_id: 0,
        counts,
        log: vec![format!("open {durability:?}, retention {retention}")],
    };
    let q = h.open(storage);
    h.q = Some(q);
    for op in ops {
        h.step(op)?;
    }
    if let Some(c) = h.cands.first() {
        let (missed, expired, dead_expired) = c.live.removal_totals();
        counts.missed.fetch_add(missed, Ordering::Relaxed);
        counts.expired.fetch_add(expired, Ordering::Relaxed);
        counts
            .dead_expired
            .fetch_add(dead_expired, Ordering::Relaxed);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000 * battery::scale() as u32)
}

#[test]
fn queue_matches_the_model() {
    battery::tune_allocator();
    let started = Instant::now();
    let counts = Counts::default();
    let config = Config {
        cases: cases(),
        // Failing seeds are kept here and replayed first on the next run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/model_proptest.txt",
        ))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |(immediate, retention, ops)| {
        run_case(immediate, retention, &ops, &counts)
    });
    let verdict = match &result {
        Ok(()) => "0 divergences".to_string(),
        Err(_) => "DIVERGED".to_string(),
    };
    let c = |a: &AtomicU64| battery::n(a.load(Ordering::Relaxed));
    println!(
        "model-proptest: {} cases, {} ops, {} deliveries, {} reopens ({} power losses, {} of them leaving more than one candidate state), {} keyed enqueues ({} refused calls), {} results stored, {} deadlines missed, {} messages and results expired, {} dead letters expired, {} background-thread runs waited for ({} ms, {} second pacemakers), {} dequeue-everything sweeps, {verdict} ({:.1?})",
        cases(),
        c(&counts.ops),
        c(&counts.deliveries),
        c(&counts.reopens),
        c(&counts.power_losses),
        c(&counts.ambiguous),
        c(&counts.keyed),
        c(&counts.refused),
        c(&counts.results),
        c(&counts.missed),
        c(&counts.expired),
        c(&counts.dead_expired),
        c(&counts.tender_runs),
        battery::n(counts.tender_wait_us.load(Ordering::Relaxed) / 1000),
        c(&counts.kicks),
        c(&counts.sweeps),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("the queue diverged from the model: {e}");
    }
}

// Bugs the model found, each minimized to a deterministic test that failed
// until the bug was fixed (see docs/testing.md, "Open bugs", for how an open
// one is kept).

/// A queue on a fresh memory storage, the clock at `T0`, with `opts` on
/// top of the battery's options (`Immediate`).
fn fresh(
    clock: &ManualClock,
    m: &MemoryStorage,
    opts: impl Fn(lanelog::QueueOptions) -> lanelog::QueueOptions,
) -> Queue {
    opts(battery::options(clock, Durability::Immediate, 0, 64 << 20))
        .open_storage(Arc::new(m.clone()))
        .expect("open")
}

/// Wait (up to 3 s) until `pred` holds.
fn eventually(mut pred: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    pred()
}

/// Found by the proptest (minimal case: enqueue with key k, 15 s pass,
/// enqueue with k again, crash). A key admitted again after its window
/// passed is remembered by a reopen that replays its records: replay keeps
/// the key's record with the highest id (its latest admission), not the
/// first one met, which is past its window; otherwise a third enqueue with
/// it within the window would be admitted as a new message (under
/// `Immediate`, after the second enqueue returned `Ok`).
#[test]
fn readmitted_key_survives_a_crash() {
    use lanelog::EnqueueOptions;
    let clock = ManualClock::new(Timestamp(battery::T0));
    let m = MemoryStorage::new();
    let window = |o: lanelog::QueueOptions| o.dedup_window(Duration::from_secs(15));
    let q = fresh(&clock, &m, window);
    let k = EnqueueOptions::new().key("k");
    let first = q.enqueue_with(b"a", &k).expect("enqueue");
    clock.advance(Duration::from_secs(15));
    let second = q.enqueue_with(b"b", &k).expect("enqueue");
    assert_ne!(first, second, "the window passed: admitted again");
    assert_eq!(q.enqueue_with(b"c", &k).expect("enqueue"), second);
    let img = m.crash(CrashPolicy::ProcessCrash);
    drop(q);
    let q = fresh(&clock, &img, window);
    assert_eq!(q.stats().keys, 1, "the key's second admission is 0 s old");
    assert_eq!(
        q.enqueue_with(b"d", &k).expect("enqueue"),
        second,
        "a key whose enqueue returned Ok under Immediate was admitted twice"
    );
}

/// Found by the proptest (after a crash `expired_total` went from 8 to 0).
/// A reopen that replays a `RetentionCut` counts the messages it still
/// finds, so a segment the cut removed records from, once drained, is
/// deleted only after a checkpoint holds the counter; otherwise a crash
/// before the next checkpoint would bring the lifetime counter back lower.
#[test]
fn expired_total_survives_a_crash_after_segments_are_deleted() {
    let clock = ManualClock::new(Timestamp(battery::T0));
    let m = MemoryStorage::new();
    let retention = |o: lanelog::QueueOptions| o.retention(Duration::from_secs(10));
    let q = fresh(&clock, &m, retention);
    q.enqueue(b"small", 0).expect("enqueue");
    for _ in 0..3 {
        // Each rolls a 1 MiB segment.
        q.enqueue(&vec![7u8; 600 << 10], 0).expect("enqueue");
    }
    clock.advance(Duration::from_secs(11));
    assert!(
        eventually(|| q.stats().expired_total == 4),
        "{:?}",
        q.stats()
    );
    q.sync().expect("sync");
    let img = m.crash(CrashPolicy::ProcessCrash);
    drop(q);
    let q = fresh(&clock, &img, retention);
    assert_eq!(q.stats().expired_total, 4, "expired_total after a crash");
}

/// Found by the fuzzer (`acked_total 0 below the 1 durable acks` after a
/// power loss). `acked_total` counts a complete when replay finds its
/// result record; once retention removed the result, its segment is
/// deleted only after a checkpoint holds the counter, or a crash would
/// forget the complete (an ack is a journal entry and always counts, see
/// `io_error_sweep::acked_total_survives_a_crash_after_a_segment_is_deleted`).
#[test]
fn acked_total_counts_a_complete_after_its_segment_is_deleted() {
    let clock = ManualClock::new(Timestamp(battery::T0));
    let m = MemoryStorage::new();
    let retention = |o: lanelog::QueueOptions| o.retention(Duration::from_secs(10));
    let q = fresh(&clock, &m, retention);
    q.enqueue(b"small", 0).expect("enqueue");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.complete(d.receipt, b"result").expect("complete");
    for _ in 0..2 {
        q.enqueue(&vec![7u8; 600 << 10], 0).expect("enqueue");
    }
    assert_eq!(q.stats().acked_total, 1);
    clock.advance(Duration::from_secs(11));
    assert!(
        eventually(|| q.stats().expired_total == 3),
        "{:?}",
        q.stats()
    );
    q.sync().expect("sync");
    let img = m.crash(CrashPolicy::ProcessCrash);
    drop(q);
    let q = fresh(&clock, &img, retention);
    assert_eq!(q.stats().acked_total, 1, "acked_total after a crash");
}

/// Found by the proptest (minimal case: a message with a deadline 1 ms
/// away, 1 ms passes, redrive it, dequeue, complete, crash). Replay applies
/// the result record found by the segment scan before the journal's
/// `DeadlineMissed` entry, which then finds no message: the entry counts
/// all the same (one per message the live queue dead-lettered so), or
/// `deadline_missed_total` would go from 1 to 0.
#[test]
fn deadline_missed_total_survives_a_crash_after_a_redriven_message_is_completed() {
    use lanelog::EnqueueOptions;
    let clock = ManualClock::new(Timestamp(battery::T0));
    let m = MemoryStorage::new();
    let q = fresh(&clock, &m, |o| o);
    let due = EnqueueOptions::new().deadline(Timestamp(battery::T0 + 1));
    q.enqueue_with(b"late", &due).expect("enqueue");
    clock.advance(Duration::from_millis(5));
    assert!(
        q.dequeue().expect("dequeue").is_none(),
        "missed its deadline"
    );
    assert_eq!(q.stats().deadline_missed_total, 1);
    q.redrive_all().expect("redrive");
    let d = q.dequeue().expect("dequeue").expect("redriven");
    q.complete(d.receipt, b"done").expect("complete");
    let img = m.crash(CrashPolicy::ProcessCrash);
    drop(q);
    let q = fresh(&clock, &img, |o| o);
    assert_eq!(
        q.stats().deadline_missed_total,
        1,
        "deadline_missed_total after a crash"
    );
}

/// A dead letter is exempt from retention, but once redriven it is a ready
/// message like any other, and its enqueue is older than the retention:
/// it must be removed within the granularity, not when a younger message's
/// retention passes (for ever if none comes). The queue keeps a dead
/// letter's retention mark through cuts and checkpoints, and a redrive
/// below the last cut lowers the cut bound, so the next cut is due with
/// the redriven message's own mark.
#[test]
fn redriven_dead_letter_outlives_its_retention() {
    let clock = ManualClock::new(Timestamp(battery::T0));
    let m = MemoryStorage::new();
    let q = fresh(&clock, &m, |o| o.retention(Duration::from_secs(10)));
    let id = q.enqueue(b"old", 0).expect("enqueue");
    let d = q.dequeue().expect("dequeue").expect("ready");
    q.dead_letter(d.receipt, "bad").expect("dead letter");
    // A pacemaker: its deadline, 1 ms away, makes the background thread
    // run right after the clock step (and shows when it did).
    let soon = lanelog::EnqueueOptions::new().deadline(Timestamp(battery::T0 + 1));
    q.enqueue_with(b"pacemaker", &soon).expect("enqueue");
    clock.advance(Duration::from_secs(11));
    assert!(eventually(|| q.stats().deadline_missed_total == 1));
    // That run's cut passed over the dead letter.
    assert_eq!(q.stats().dead, 2, "dead letters follow their own retention");
    q.redrive(id).expect("redrive");
    assert!(
        eventually(|| q.stats().ready == 0),
        "a ready message enqueued 11 s ago outlives a 10 s retention: {:?}",
        q.stats()
    );
    assert_eq!(q.stats().expired_total, 1);
}

/// A delayed message whose deadline passes is dead-lettered by the
/// background thread once it matures, with nothing else due and nobody
/// promoting it (a dequeue, `stats()`; `dead_letters()` does not): the
/// thread's next look counts delayed messages' deadlines too
/// (`Index::next_deadline`). The harnesses step the clock with a
/// pacemaker, which makes the thread run (and promote) at every step.
#[test]
fn delayed_message_past_its_deadline_is_dead_lettered_without_a_look() {
    use lanelog::EnqueueOptions;
    let clock = ManualClock::new(Timestamp(battery::T0));
    let m = MemoryStorage::new();
    let q = fresh(&clock, &m, |o| o);
    let opts = EnqueueOptions::new()
        .delay(Duration::from_secs(5))
        .deadline(Timestamp(battery::T0 + 10_000));
    q.enqueue_with(b"delayed", &opts).expect("enqueue");
    clock.advance(Duration::from_secs(20));
    assert!(
        eventually(|| q.dead_letters().expect("dead letters").len() == 1),
        "20 s on, the message whose deadline was 10 s is still not a dead letter"
    );
}
