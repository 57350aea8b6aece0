//! Goal: the queue behaves exactly like a small reference model under random
//! op sequences, including clean reopens, process crashes and power losses:
//! every dequeue returns the ids, priorities, payloads, attempts and
//! enqueue times the model predicts, and after every op the stats (ready,
//! in flight, delayed, dead, acked_total, ready per lane) and the dead
//! letters (ids, attempts, reasons, times) match. Ids never repeat, not
//! even across crashes.
//!
//! Method: proptest generates a durability mode (`Immediate` or `None`)
//! and up to 100 ops: Enqueue(priority, size), EnqueueDelayed, EnqueueBatch,
//! Dequeue(n), Ack / Nack(delay) / DeadLetter of the k-th receipt handed out
//! since the last reopen (receipts that went stale by lease expiry stay in
//! the pool, so stale settlements are checked too), RedriveAll,
//! AdvanceClock(ms) on a ManualClock, Sync, CleanReopen,
//! CrashReopen (`crash(ProcessCrash)`) and PowerLossReopen
//! (`crash(DropUnsynced)`). The model is the test kit's reference model
//! (`testkit::model::Model`): messages by id with priority, payload tag,
//! attempts and a state (ready, delayed until t, in flight until t with its
//! receipt, dead with time and reason); ready order is priority, then id;
//! leases expire when a dequeue runs; `max_deliveries` dead-letters on the
//! next pick.
//!
//! A power loss keeps what the last sync covered, which the model cannot
//! always pin down (`Immediate` syncs every write but a dequeue's delivery
//! record: "a message delivered since the last sync may come back with its
//! old attempt count"; under `None` the queue also syncs on its own for
//! segment rolls and maintenance). So the model keeps the state after every
//! op since the last sync it knows of, a power loss turns each of them into
//! a candidate, and every later observation discards the candidates that
//! predicted otherwise; a case fails when none is left.
//!
//! Scale: 1,000 cases by default; `PROPTEST_CASES=n` sets the count, else
//! `LANELOG_BATTERY_SCALE=n` multiplies it.

mod battery;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::storage::{CrashPolicy, MemoryStorage};
use lanelog::{DeadLetter, Durability, Error, ManualClock, Queue, Receipt, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use testkit::model::{Counts as ModelCounts, DeadRow, Model};
use testkit::workload::{self, Item};

const MAX_DELIVERIES: u32 = 3;
const VISIBILITY_MS: u64 = 5_000;

#[derive(Debug, Clone)]
enum Op {
    Enqueue(u8, usize),
    EnqueueDelayed(u8, usize, u64),
    EnqueueBatch(Vec<(u8, usize)>),
    Dequeue(usize),
    Ack(usize),
    Nack(usize, u64),
    DeadLetter(usize),
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

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (priority(), size()).prop_map(|(p, s)| Op::Enqueue(p, s)),
        1 => (priority(), size(), 1u64..20_000).prop_map(|(p, s, d)| Op::EnqueueDelayed(p, s, d)),
        3 => prop::collection::vec((priority(), size()), 1..8).prop_map(Op::EnqueueBatch),
        8 => (1usize..5).prop_map(Op::Dequeue),
        5 => (0usize..64).prop_map(Op::Ack),
        2 => (0usize..64, prop_oneof![Just(0u64), 1u64..10_000]).prop_map(|(k, d)| Op::Nack(k, d)),
        2 => (0usize..64).prop_map(Op::DeadLetter),
        1 => Just(Op::RedriveAll),
        3 => (0u64..12_000).prop_map(Op::AdvanceClock),
        2 => Just(Op::Sync),
        1 => Just(Op::CleanReopen),
        1 => Just(Op::CrashReopen),
        1 => Just(Op::PowerLossReopen),
    ]
}

fn case() -> impl Strategy<Value = (bool, Vec<Op>)> {
    (any::<bool>(), prop::collection::vec(op(), 1..=100))
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

fn open(m: MemoryStorage, durability: Durability, clock: &ManualClock) -> Queue {
    battery::options(clock, durability, MAX_DELIVERIES, 64 << 10)
        .visibility_timeout(Duration::from_millis(VISIBILITY_MS))
        .open_storage(Arc::new(m))
        .expect("open")
}

/// How one case went, for the summary.
#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    deliveries: AtomicU64,
    reopens: AtomicU64,
    power_losses: AtomicU64,
    ambiguous: AtomicU64,
}

struct Harness<'a> {
    durability: Durability,
    clock: ManualClock,
    storage: MemoryStorage,
    q: Option<Queue>,
    cands: Vec<Cand>,
    receipts: Vec<(u64, Receipt)>,
    next_tag: u64,
    max_id: u64,
    counts: &'a Counts,
    log: Vec<String>,
}

fn fail(h: &Harness<'_>, what: String) -> TestCaseError {
    let tail: Vec<&String> = h.log.iter().rev().take(6).collect();
    TestCaseError::fail(format!("{what}\n  last ops (newest first): {tail:#?}"))
}

impl Harness<'_> {
    fn now(&self) -> u64 {
        lanelog::Clock::now(&self.clock).0
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().expect("open")
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

    /// Returns whether the queue wrote anything (an oversized batch is
    /// refused before any write, so it syncs nothing either).
    fn enqueue(&mut self, items: &[(u8, usize, u64)]) -> Result<bool, TestCaseError> {
        let now = self.now();
        let items: Vec<Item> = items
            .iter()
            .map(|&(priority, len, delay)| {
                self.next_tag += 1;
                Item {
                    tag: self.next_tag,
                    priority,
                    len,
                    delay_ms: u32::try_from(delay).expect("delays are short"),
                }
            })
            .collect();
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
        let ids = workload::enqueue(self.q(), &items)
            .map_err(|e| fail(self, format!("enqueue failed: {e}")))?;
        for id in &ids {
            let id = u64::from(*id);
            if id <= self.max_id {
                return Err(fail(
                    self,
                    format!(
                        "id {id} handed out after id {} (ids must never repeat)",
                        self.max_id
                    ),
                ));
            }
            self.max_id = id;
        }
        for c in &mut self.cands {
            c.live.begin(now);
            let batch = (items.len() > 1).then(|| c.live.new_batch());
            for (id, it) in ids.iter().zip(&items) {
                if let Err(e) = c.live.add(u64::from(*id), *it, batch) {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
        Ok(true)
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
        let now = self.now();
        let reason = format!("reason {k}");
        let result = match op {
            Op::Ack(_) => self.q().ack(r),
            Op::Nack(_, delay) => self.q().nack(r, Duration::from_millis(*delay)),
            Op::DeadLetter(_) => self.q().dead_letter(r, &reason),
            _ => unreachable!("not a settlement"),
        };
        let ok = match result {
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
            for c in &mut self.cands {
                c.live.begin(now);
                match op {
                    Op::Ack(_) => c.live.ack_ok(&[id]),
                    Op::Nack(_, delay) => c.live.nack_ok(id, *delay),
                    _ => c.live.dead_letter_ok(id, &reason),
                }
            }
        }
        Ok(ok)
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
        let now = self.now();
        for c in &mut self.cands {
            c.live.begin(now);
            c.live
                .redrive_ok(n)
                .map_err(|e| TestCaseError::fail(format!("redrive_all: {e}")))?;
        }
        Ok(n > 0)
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
                let mut live = s.clone();
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
        if next.len() > 1 {
            self.counts.ambiguous.fetch_add(1, Ordering::Relaxed);
        }
        self.cands = next;
        self.receipts.clear();
        self.storage = storage.clone();
        self.q = Some(open(storage, self.durability, &self.clock));
        Ok(())
    }

    /// Compare stats and dead letters with every candidate.
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
        let actual = ModelCounts {
            ready: s.ready,
            in_flight: s.in_flight,
            delayed: s.delayed,
            dead: s.dead,
            acked_total: s.acked_total,
            ready_per_lane: s
                .ready_per_lane
                .iter()
                .map(|l| (l.priority, l.ready))
                .collect(),
        };
        self.prune("stats and dead letters", |c| {
            let want = c.live.stats(now);
            if want != actual {
                return Err(format!(
                    "stats (ready, in flight, delayed, dead, acked_total, lanes) {actual:?}, model {want:?}"
                ));
            }
            let want = c.live.dead_letters();
            if want != dead {
                return Err(format!("dead letters {dead:?}, model {want:?}"));
            }
            Ok(())
        })
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.counts.ops.fetch_add(1, Ordering::Relaxed);
        self.log.push(format!("{op:?}"));
        let imm = self.durability == Durability::Immediate;
        // Whether this op made everything before it durable.
        let synced = match op {
            Op::Enqueue(p, s) => {
                self.enqueue(&[(*p, *s, 0)])?;
                imm
            }
            Op::EnqueueDelayed(p, s, d) => {
                self.enqueue(&[(*p, *s, *d)])?;
                imm
            }
            Op::EnqueueBatch(items) => {
                let items: Vec<(u8, usize, u64)> = items.iter().map(|&(p, s)| (p, s, 0)).collect();
                self.enqueue(&items)? && imm
            }
            Op::Dequeue(n) => {
                self.dequeue(*n)?;
                false
            }
            Op::Ack(k) | Op::Nack(k, _) | Op::DeadLetter(k) => self.settle(*k, op)? && imm,
            Op::RedriveAll => self.redrive()? && imm,
            Op::AdvanceClock(ms) => {
                self.clock.advance(Duration::from_millis(*ms));
                false
            }
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
        for c in &mut self.cands {
            if synced {
                c.since_sync = vec![c.live.clone()];
            } else if !c.since_sync.last().is_some_and(|l| l.same_state(&c.live)) {
                c.since_sync.push(c.live.clone());
            }
        }
        self.observe()
    }
}

fn run_case(immediate: bool, ops: &[Op], counts: &Counts) -> Result<(), TestCaseError> {
    let durability = if immediate {
        Durability::Immediate
    } else {
        Durability::None
    };
    let clock = ManualClock::new(Timestamp(battery::T0));
    let storage = MemoryStorage::new();
    let q = open(storage.clone(), durability, &clock);
    let mut h = Harness {
        durability,
        clock,
        storage,
        q: Some(q),
        cands: vec![Cand {
            live: Model::new(MAX_DELIVERIES, VISIBILITY_MS, battery::T0),
            since_sync: vec![Model::new(MAX_DELIVERIES, VISIBILITY_MS, battery::T0)],
        }],
        receipts: Vec::new(),
        next_tag: 0,
        max_id: 0,
        counts,
        log: vec![format!("open {durability:?}")],
    };
    for op in ops {
        h.step(op)?;
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
    let result = runner.run(&case(), |(immediate, ops)| {
        run_case(immediate, &ops, &counts)
    });
    let verdict = match &result {
        Ok(()) => "0 divergences".to_string(),
        Err(_) => "DIVERGED".to_string(),
    };
    println!(
        "model-proptest: {} cases, {} ops, {} deliveries, {} reopens ({} power losses, {} of them leaving more than one candidate state), {verdict} ({:.1?})",
        cases(),
        battery::n(counts.ops.load(Ordering::Relaxed)),
        battery::n(counts.deliveries.load(Ordering::Relaxed)),
        battery::n(counts.reopens.load(Ordering::Relaxed)),
        battery::n(counts.power_losses.load(Ordering::Relaxed)),
        battery::n(counts.ambiguous.load(Ordering::Relaxed)),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("the queue diverged from the model: {e}");
    }
}
