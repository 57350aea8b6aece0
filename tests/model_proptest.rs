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
//! (`crash(DropUnsynced)`). The model: messages by id with priority,
//! payload tag, attempts and a state (ready, delayed until t, in flight
//! until t with its receipt, dead with time and reason); ready order is
//! priority, then id; leases expire when a dequeue runs; `max_deliveries`
//! dead-letters on the next pick.
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

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::storage::{CrashPolicy, MemoryStorage};
use lanelog::{DeadLetter, Delivery, Durability, Error, ManualClock, Queue, Receipt, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum St {
    Ready,
    Delayed(u64),
    /// Leased until `deadline`; the receipt is filled in from the delivery.
    InFlight {
        deadline: u64,
        receipt: Option<Receipt>,
    },
    Dead {
        at: u64,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    priority: u8,
    tag: u64,
    len: usize,
    enqueued_at: u64,
    attempt: u32,
    st: St,
}

/// One possible state of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct State {
    msgs: BTreeMap<u64, Msg>,
    acked_total: u64,
}

/// What a dequeue should hand out: id, priority, attempt.
type Predicted = Vec<(u64, u8, u32)>;

fn auto_reason(attempt: u32) -> String {
    format!("delivered {attempt} times without an ack (max_deliveries = {MAX_DELIVERIES})")
}

impl State {
    /// What a dequeue does first: expire leases, mature delays.
    fn tick(&mut self, now: u64) {
        for m in self.msgs.values_mut() {
            match m.st {
                St::InFlight { deadline, .. } if deadline <= now => m.st = St::Ready,
                St::Delayed(at) if at <= now => m.st = St::Ready,
                _ => {}
            }
        }
    }

    fn next_ready(&self) -> Option<u64> {
        self.msgs
            .iter()
            .filter(|(_, m)| m.st == St::Ready)
            .min_by_key(|(&id, m)| (Reverse(m.priority), id))
            .map(|(&id, _)| id)
    }

    /// Lease up to `n`; messages out of deliveries go to the dead letters.
    /// Receipts are filled in from the real deliveries.
    fn dequeue(&mut self, now: u64, n: usize) -> Predicted {
        self.tick(now);
        let mut out = Vec::new();
        while out.len() < n {
            let Some(id) = self.next_ready() else { break };
            let m = self.msgs.get_mut(&id).expect("ready");
            if m.attempt >= MAX_DELIVERIES {
                m.st = St::Dead {
                    at: now,
                    reason: auto_reason(m.attempt),
                };
                continue;
            }
            m.attempt += 1;
            m.st = St::InFlight {
                deadline: now + VISIBILITY_MS,
                receipt: None,
            };
            out.push((id, m.priority, m.attempt));
        }
        out
    }

    /// Whether `r` is the receipt of the current lease of `id`.
    fn current(&self, id: u64, r: &Receipt) -> bool {
        matches!(
            self.msgs.get(&id),
            Some(Msg { st: St::InFlight { receipt: Some(x), .. }, .. }) if x == r
        )
    }

    /// After a reopen: leases released (attempts kept).
    fn reopened(&self) -> State {
        let mut s = self.clone();
        for m in s.msgs.values_mut() {
            if matches!(m.st, St::InFlight { .. }) {
                m.st = St::Ready;
            }
        }
        s
    }

    fn stats(&self, now: u64) -> (u64, u64, u64, u64, u64, Vec<(u8, u64)>) {
        let (mut ready, mut in_flight, mut delayed, mut dead) = (0, 0, 0, 0);
        let mut lanes: BTreeMap<Reverse<u8>, u64> = BTreeMap::new();
        for m in self.msgs.values() {
            match m.st {
                St::Ready => {}
                St::Delayed(at) if at <= now => {}
                St::Delayed(_) => {
                    delayed += 1;
                    continue;
                }
                St::InFlight { .. } => {
                    in_flight += 1;
                    continue;
                }
                St::Dead { .. } => {
                    dead += 1;
                    continue;
                }
            }
            ready += 1;
            *lanes.entry(Reverse(m.priority)).or_default() += 1;
        }
        let lanes = lanes.into_iter().map(|(Reverse(p), n)| (p, n)).collect();
        (ready, in_flight, delayed, dead, self.acked_total, lanes)
    }

    fn dead_letters(&self) -> Vec<(u64, u8, u32, String, u64, u64)> {
        self.msgs
            .iter()
            .filter_map(|(&id, m)| match &m.st {
                St::Dead { at, reason } => Some((
                    id,
                    m.priority,
                    m.attempt,
                    reason.clone(),
                    m.enqueued_at,
                    *at,
                )),
                _ => None,
            })
            .collect()
    }
}

/// A candidate: the live state and every state since the last sync known
/// to have covered everything (the first one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cand {
    live: State,
    since_sync: Vec<State>,
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
        let tags: Vec<u64> = items
            .iter()
            .map(|_| {
                self.next_tag += 1;
                self.next_tag
            })
            .collect();
        let payloads: Vec<Vec<u8>> = items
            .iter()
            .zip(&tags)
            .map(|(it, &t)| battery::payload(t, it.1))
            .collect();
        let ids = if items.len() == 1 && items[0].2 > 0 {
            self.q()
                .enqueue_delayed(&payloads[0], items[0].0, Duration::from_millis(items[0].2))
                .map(|id| vec![id])
        } else if items.len() == 1 {
            self.q()
                .enqueue(&payloads[0], items[0].0)
                .map(|id| vec![id])
        } else {
            let pairs: Vec<(&[u8], u8)> = payloads
                .iter()
                .zip(items)
                .map(|(p, it)| (p.as_slice(), it.0))
                .collect();
            // A batch must fit in one segment (40 header bytes per record);
            // a larger one is refused whole and changes nothing.
            let total: usize = items.iter().map(|it| 40 + it.1).sum();
            if total > (1 << 20) - 32 {
                return match self.q().enqueue_batch(&pairs) {
                    Err(lanelog::Error::TooLarge { .. }) => Ok(false),
                    other => Err(fail(
                        self,
                        format!("oversized batch of {total} bytes: {other:?}"),
                    )),
                };
            }
            self.q().enqueue_batch(&pairs)
        }
        .map_err(|e| fail(self, format!("enqueue failed: {e}")))?;
        for (i, id) in ids.iter().enumerate() {
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
            for c in &mut self.cands {
                let (priority, len, delay) = items[i];
                c.live.msgs.insert(
                    id,
                    Msg {
                        priority,
                        tag: tags[i],
                        len,
                        enqueued_at: now,
                        attempt: 0,
                        st: if delay > 0 {
                            St::Delayed(now + delay)
                        } else {
                            St::Ready
                        },
                    },
                );
            }
        }
        Ok(true)
    }

    fn dequeue(&mut self, n: usize) -> Result<(), TestCaseError> {
        let now = self.now();
        let got: Vec<Delivery> = if n == 1 {
            self.q().dequeue().map(|d| d.into_iter().collect())
        } else {
            self.q().dequeue_up_to(n)
        }
        .map_err(|e| fail(self, format!("dequeue failed: {e}")))?;
        self.counts
            .deliveries
            .fetch_add(got.len() as u64, Ordering::Relaxed);
        let actual: Predicted = got
            .iter()
            .map(|d| (u64::from(d.id), d.priority, d.attempt))
            .collect();
        let mut next = Vec::new();
        let mut why = None;
        for c in &self.cands {
            let mut live = c.live.clone();
            let predicted = live.dequeue(now, n);
            if predicted != actual {
                why.get_or_insert(format!("e.g. a model state predicted {predicted:?}"));
                continue;
            }
            for d in &got {
                let m = live.msgs.get_mut(&u64::from(d.id)).expect("delivered");
                if let St::InFlight { receipt, .. } = &mut m.st {
                    *receipt = Some(d.receipt);
                }
            }
            next.push(Cand {
                live,
                since_sync: c.since_sync.clone(),
            });
        }
        if next.is_empty() {
            return Err(fail(
                self,
                format!(
                    "dequeue({n}) gave (id, priority, attempt) {actual:?}; {}",
                    why.unwrap_or_default()
                ),
            ));
        }
        self.cands = next;
        let c = &self.cands[0].live;
        for d in &got {
            let m = &c.msgs[&u64::from(d.id)];
            if d.payload != battery::payload(m.tag, m.len) {
                return Err(fail(self, format!("payload of {} differs (CORRUPT)", d.id)));
            }
            if d.enqueued_at != Timestamp(m.enqueued_at) {
                return Err(fail(
                    self,
                    format!(
                        "{}: enqueued_at {:?}, enqueued at {}",
                        d.id, d.enqueued_at, m.enqueued_at
                    ),
                ));
            }
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
                match op {
                    Op::Ack(_) => {
                        c.live.msgs.remove(&id);
                        c.live.acked_total += 1;
                    }
                    Op::Nack(_, delay) => {
                        let m = c.live.msgs.get_mut(&id).expect("leased");
                        m.st = if *delay == 0 {
                            St::Ready
                        } else {
                            St::Delayed(now + delay)
                        };
                    }
                    _ => {
                        let m = c.live.msgs.get_mut(&id).expect("leased");
                        m.st = St::Dead {
                            at: now,
                            reason: reason.clone(),
                        };
                    }
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
        for c in &mut self.cands {
            for m in c.live.msgs.values_mut() {
                if matches!(m.st, St::Dead { .. }) {
                    m.st = St::Ready;
                    m.attempt = 0;
                }
            }
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
        let mut next: Vec<Cand> = Vec::new();
        for c in &self.cands {
            let states: Vec<&State> = if power {
                c.since_sync.iter().collect()
            } else {
                vec![&c.live]
            };
            for s in states {
                let live = s.reopened();
                let cand = Cand {
                    since_sync: vec![live.clone()],
                    live,
                };
                if !next.contains(&cand) {
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
        let dead: Vec<(u64, u8, u32, String, u64, u64)> = self
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
        let actual = (
            s.ready,
            s.in_flight,
            s.delayed,
            s.dead,
            s.acked_total,
            s.ready_per_lane
                .iter()
                .map(|l| (l.priority, l.ready))
                .collect::<Vec<_>>(),
        );
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
            } else if c.since_sync.last() != Some(&c.live) {
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
            live: State::default(),
            since_sync: vec![State::default()],
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
