//! The reference model of the queue: what a correct queue holds after the
//! calls that returned `Ok`, and what a crash may therefore leave.
//!
//! **Live state.** Every message the queue handed out an id for, with its
//! lane (priority), payload tag and length, enqueue time, deadline, key,
//! deliveries so far and where it is: ready, delayed until `t`, in flight
//! until `t` under one receipt, a dead letter (when and why), completed
//! with a stored result (its tag and length), or gone (acked, or removed by
//! retention).
//!
//! *Order.* Ready order is the highest lane first; within a lane, messages
//! with a deadline first, earliest deadline first (ties by id), then the
//! others by id. A message keeps its deadline when it comes back (nack,
//! lease expiry, a reopen) and loses it when it becomes a dead letter, so a
//! redriven message is served as one without a deadline.
//!
//! *Dequeue.* A dequeue first expires the leases and matures the delays
//! that are due ([`Model::tick`]), then takes the next message again and
//! again: one whose deadline is at or before now becomes a dead letter
//! (reason [`DEADLINE_MISSED`], attempts kept, counted in
//! `deadline_missed_total`); one that reached `max_deliveries` becomes a
//! dead letter (reason [`auto_reason`]); the rest are leased.
//! [`Model::dequeue_ok`] checks a real dequeue against that prediction
//! (ids, lanes, attempts, payloads, enqueue times).
//!
//! *Enqueue with options.* A deadline at or before now, or before the delay
//! ends, refuses the call ([`Refusal::BadDeadline`]). A key remembered
//! (first admitted less than `dedup_window` ago) returns the id of its
//! first enqueue and writes nothing; a key repeated in one batch is
//! admitted once and every occurrence gets that id; a call that would make
//! more than `max_keys` keys remembered is refused ([`Refusal::TooManyKeys`]).
//! Nothing is written on a refusal. Keys are remembered whatever happens to
//! their message (acked, expired), until their window passes, across
//! reopens.
//!
//! *Complete.* `complete(receipt, result)` with a current receipt stores
//! the result and finishes the message in one step (counted in
//! `acked_total` and `results`); `result(id)` returns it byte for byte
//! until retention removes it.
//!
//! *Time-driven removals* ([`Model::expire`]): what the queue's background
//! thread does when it runs at time `now`: forget keys past their window,
//! mature delays, dead-letter every ready message whose deadline is at or
//! before now ([`DEADLINE_MISSED`], dead at `now`), remove every message
//! that is not a dead letter (ready, delayed, in flight) and every stored
//! result whose enqueue is `retention` old (counted in `expired_total`),
//! and remove every dead letter that has been one for
//! `dead_letter_retention` (`dead_expired_total`). Deadlines go first: a
//! message whose deadline passed is a dead letter, so retention leaves it.
//! Retention is enforced with a granularity `g` (a 64th of the retention,
//! at most a minute): a message is kept while its age is below the
//! retention and removed once its age is `retention + g` or more; in
//! between either is right, and [`Model::expire`] refuses to guess
//! ([`Err`]): harnesses choose the retention and their clock steps so that
//! no age ever falls in that band. [`Model::pending`] says whether a
//! removal is due (what the harnesses wait for).
//!
//! `acked_total` counts acks and completes. Ids only grow, across crashes
//! too.
//!
//! **Crash views.** Every op gets a sequence number, and each message keeps
//! a history of the states a reopen could show for it ([`Seen`]), stamped
//! with the op that produced them. A crash view has a durable point `L`,
//! the last op whose `Ok` promised durability for that view:
//!
//! - [`View::Process`] (a process crash keeps every write): every op that
//!   returned `Ok`.
//! - [`View::Power`] (power loss): under `Immediate`, every `Ok` op that
//!   wrote and synced (not a dequeue: its delivery record is not synced;
//!   not an enqueue whose keys were all remembered: it wrote nothing);
//!   under `None`, only `sync()`, a clean `close()` and a run of the
//!   background thread (it commits what it writes, which syncs every
//!   file written before).
//!
//! After a crash, a message may show its state as of `L` or any state it
//! passed through after `L` (unsynced journal entries survive as a prefix,
//! so the recovered state is one the message really had), plus the possible
//! effects of the op that failed (`doubt`). Ready, delayed and in-flight all
//! show as `Waiting(attempts)`: a reopen releases leases. The messages of
//! one `enqueue_batch` come back all or none. A completed message shows as
//! [`Seen::Done`]: its result present and the message gone, never one
//! without the other. The lifetime counters stay between what the durable
//! ops add up to and what all ops (and doubtful ones) add up to
//! ([`Model::bounds`]). A key whose (latest) admission is durable in the
//! view is remembered with that admission's id ([`Model::key_expect`]); one
//! whose admission was not may be admitted again. [`Model::recovered`] rebases the model on
//! what a reopen showed, so a run can go on after a crash.
//!
//! A harness drives the model op by op: [`Model::begin`], the queue call,
//! then the matching `*_ok` (or `*_doubt` when the call failed), then
//! [`Model::ok`] with whether the call promised durability.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use lanelog::{Delivery, Receipt, Timestamp};

use crate::workload::{payload, Item, Timers};

/// The reason of a dead letter whose deadline passed before delivery.
pub const DEADLINE_MISSED: &str = "deadline missed";

/// A message's state as a reopen shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seen {
    /// Its enqueue is not (yet) part of the image: absent.
    NotYet,
    /// Acked, removed by retention (or lost and rebased away): absent for
    /// good, and no result.
    Gone,
    /// Ready, delayed or in flight, with this many deliveries behind it.
    Waiting(u32),
    /// A dead letter with this many deliveries.
    Dead(u32),
    /// Completed: absent, its result stored.
    Done,
}

impl Seen {
    /// The message itself is there (waiting or dead).
    pub fn present(self) -> bool {
        matches!(self, Seen::Waiting(_) | Seen::Dead(_))
    }
}

/// Where the live queue has a message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Ready,
    /// Delayed until this time (ms).
    Delayed(u64),
    /// Leased until this time (ms).
    InFlight(u64),
    Dead,
    /// Completed with a stored result.
    Done,
    Gone,
}

/// One message of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u64,
    pub priority: u8,
    pub len: usize,
    /// The clock when the enqueue ran (ms).
    pub enqueued_at: u64,
    /// Its deadline now (0: none); a dead letter has none.
    pub deadline: u64,
    /// The deadline it was enqueued with (0: none).
    pub deadline_set: u64,
    /// Its idempotency key, if it was enqueued with one.
    pub key: Option<u64>,
    /// Deliveries so far.
    pub attempt: u32,
    pub at: At,
    /// The receipt of the current lease (in flight only).
    pub lease: Option<Receipt>,
    /// When it became a dead letter and why (dead only; `None` when the
    /// reason is not known: a record that could not be read).
    pub dead: Option<(u64, String)>,
    /// The `enqueue_batch` call it came from, if it came in a batch.
    pub batch: Option<u64>,
    /// The (tag, length) of the result ([`crate::workload::result_payload`])
    /// it was completed with (or a failed `complete` tried), kept after
    /// retention removed it.
    pub result: Option<(u64, usize)>,
    /// Redriven at least once (its deadline dropped).
    pub redriven: bool,
    /// Dead-lettered for a missed deadline at least once.
    pub missed_deadline: bool,
    /// `(op, state)`: the states a reopen could show, see the module docs.
    pub hist: Vec<(u64, Seen)>,
}

impl Msg {
    pub fn seen(&self) -> Seen {
        match self.at {
            At::Ready | At::Delayed(_) | At::InFlight(_) => Seen::Waiting(self.attempt),
            At::Dead => Seen::Dead(self.attempt),
            At::Done => Seen::Done,
            At::Gone => Seen::Gone,
        }
    }

    /// Its place in the ready order (lane, deadline or none, id).
    fn ready_key(&self, id: u64) -> ReadyKey {
        let d = if self.deadline > 0 {
            self.deadline
        } else {
            u64::MAX
        };
        (Reverse(self.priority), d, id)
    }

    /// Everything but the history: what the live queue shows of it.
    fn same_live(&self, o: &Msg) -> bool {
        (
            self.tag,
            self.priority,
            self.len,
            self.enqueued_at,
            self.deadline,
            self.attempt,
            self.at,
            self.lease,
            &self.dead,
            self.batch,
            self.result,
        ) == (
            o.tag,
            o.priority,
            o.len,
            o.enqueued_at,
            o.deadline,
            o.attempt,
            o.at,
            o.lease,
            &o.dead,
            o.batch,
            o.result,
        )
    }
}

/// (lane, highest first; deadline, `u64::MAX` for none; id).
type ReadyKey = (Reverse<u8>, u64, u64);

/// Which crash the image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Process,
    Power,
}

/// Why the queue must refuse an enqueue (nothing written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A deadline at or before now, or before the delay ends
    /// (`Error::InvalidArgument`).
    BadDeadline,
    /// More than `max_keys` keys would be remembered (`Error::TooManyKeys`).
    TooManyKeys,
}

/// A lifetime counter: its value, and the op of each step it made (for its
/// bounds after a crash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u64,
    seqs: Vec<u64>,
    /// Steps failed ops may have made.
    doubt: u64,
}

impl Tally {
    fn add(&mut self, seq: u64) {
        self.total += 1;
        self.seqs.push(seq);
    }

    /// Bounds after a crash whose durable point is `l`.
    fn bounds(&self, l: u64) -> (u64, u64) {
        let lo = self.seqs.iter().filter(|&&s| s <= l).count() as u64;
        (lo, self.seqs.len() as u64 + self.doubt)
    }

    fn rebase(&mut self, total: u64, seq: u64) {
        self.total = total;
        self.seqs = vec![seq; usize::try_from(total).unwrap_or(usize::MAX)];
        self.doubt = 0;
    }
}

/// The lifetime counters of `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// `acked_total`: acks and completes.
    Acked,
    /// `deadline_missed_total`.
    Missed,
    /// `expired_total`: messages and results removed by retention.
    Expired,
    /// `dead_expired_total`: dead letters removed by their retention.
    DeadExpired,
}

/// The lifetime counters as a reopen reports them (to rebase on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub acked: u64,
    pub missed: u64,
    pub expired: u64,
    pub dead_expired: u64,
}

/// What the live queue's `stats()` must report (`keys` aside: see
/// [`Model::keys_bounds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Ready now, delays that are due included.
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
    pub acked_total: u64,
    pub results: u64,
    pub deadline_missed_total: u64,
    pub expired_total: u64,
    pub dead_expired_total: u64,
    /// `(lane, ready)`, highest lane first, lanes with nothing ready left
    /// out.
    pub ready_per_lane: Vec<(u8, u64)>,
}

impl Counts {
    /// The counts `stats()` reported.
    pub fn of(s: &lanelog::Stats) -> Counts {
        Counts {
            ready: s.ready,
            in_flight: s.in_flight,
            delayed: s.delayed,
            dead: s.dead,
            acked_total: s.acked_total,
            results: s.results,
            deadline_missed_total: s.deadline_missed_total,
            expired_total: s.expired_total,
            dead_expired_total: s.dead_expired_total,
            ready_per_lane: s
                .ready_per_lane
                .iter()
                .map(|l| (l.priority, l.ready))
                .collect(),
        }
    }
}

/// One admission of a key: the message it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRec {
    /// The id its (latest) first enqueue returned.
    pub id: u64,
    /// When that enqueue ran (ms).
    pub at: u64,
    /// The op of that enqueue.
    pub seq: u64,
    /// Whether the live queue surely remembers it (after a crash, a key
    /// whose enqueue was not durable may be remembered or not, until an
    /// enqueue with it tells).
    pub certain: bool,
    /// The ids of every admission of the key, oldest first.
    pub ids: Vec<u64>,
}

/// What a reopen must answer for a key (see [`Model::key_expect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyExpect {
    /// Remembered: an enqueue with it returns this id and writes nothing.
    Must(u64),
    /// One of these ids, or admitted again (a new id).
    Any(Vec<u64>),
}

/// A dead letter as the model has it: id, lane, attempts, reason,
/// enqueued at, dead at.
pub type DeadRow = (u64, u8, u32, String, u64, u64);

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub msgs: BTreeMap<u64, Msg>,
    ready: BTreeSet<ReadyKey>,
    delayed: BTreeSet<(u64, u64)>,
    in_flight: BTreeMap<u64, u64>,
    dead: BTreeSet<u64>,
    done: BTreeSet<u64>,
    /// Receipts that may be used (current, lease not past its deadline), in
    /// delivery order.
    pub outstanding: Vec<(u64, Receipt)>,
    pub seq: u64,
    durable: [u64; 2],
    pub acked: Tally,
    pub missed: Tally,
    pub expired: Tally,
    pub dead_expired: Tally,
    /// The largest id handed out so far.
    pub max_id: u64,
    batches: u64,
    /// Possible effects of failed ops on known messages.
    pub doubt: Vec<(u64, Seen)>,
    /// Messages of failed enqueues, one list per call: each call's messages
    /// may all exist or none.
    pub doubt_items: Vec<Vec<Item>>,
    pub max_deliveries: u32,
    pub visibility_ms: u64,
    pub timers: Timers,
    /// Every key admitted, by key number.
    pub keys: BTreeMap<u64, KeyRec>,
    /// Keys first seen at or before this are surely forgotten by the live
    /// queue (the cutoff of the last forgetting the model knows of).
    keys_forgot: u64,
    /// Whether a read of a record may fail (a fault plan is set): then a
    /// dequeue may skip a message and dead-letter it. Without faults a skip
    /// is a divergence.
    pub reads_may_fail: bool,
    /// Healthy messages a dequeue dead-lettered instead of delivering (a
    /// read of their record failed).
    pub read_error_dead: u64,
    /// The clock as of the last op.
    pub now: u64,
}

/// The reason the queue gives a message it dead-letters for reaching
/// `max_deliveries`.
pub fn auto_reason(attempt: u32, max_deliveries: u32) -> String {
    format!("delivered {attempt} times without an ack (max_deliveries = {max_deliveries})")
}

impl Model {
    /// An empty queue with these options (and default timers) at time
    /// `now`.
    pub fn new(max_deliveries: u32, visibility_ms: u64, now: u64) -> Model {
        Model {
            max_deliveries,
            visibility_ms,
            now,
            ..Model::default()
        }
    }

    /// The same model with these time-driven options.
    pub fn with_timers(mut self, timers: Timers) -> Model {
        self.timers = timers;
        self
    }

    /// The same model, for a run with a fault plan: a read of a record may
    /// fail, so a dequeue may skip a message and dead-letter it.
    pub fn reads_may_fail(mut self) -> Model {
        self.reads_may_fail = true;
        self
    }

    /// Whether the live states agree (histories and crash bookkeeping
    /// aside): two candidates the proptest need not keep apart.
    pub fn same_state(&self, o: &Model) -> bool {
        let totals = |m: &Model| {
            (
                m.acked.total,
                m.missed.total,
                m.expired.total,
                m.dead_expired.total,
            )
        };
        let keys = |m: &Model| -> Vec<(u64, u64, u64)> {
            m.keys.iter().map(|(&k, r)| (k, r.id, r.at)).collect()
        };
        totals(self) == totals(o)
            && keys(self) == keys(o)
            && self.msgs.len() == o.msgs.len()
            && self
                .msgs
                .iter()
                .zip(&o.msgs)
                .all(|((a, x), (b, y))| a == b && x.same_live(y))
    }

    /// Start an op.
    pub fn begin(&mut self, now: u64) {
        self.seq += 1;
        self.now = now;
    }

    /// The current op returned `Ok`; `synced` if that promises power-loss
    /// durability of everything before it.
    pub fn ok(&mut self, synced: bool) {
        self.durable[0] = self.seq;
        if synced {
            self.durable[1] = self.seq;
        }
    }

    fn durable(&self, view: View) -> u64 {
        match view {
            View::Process => self.durable[0],
            View::Power => self.durable[1],
        }
    }

    /// Forget the possible effects of failed ops (the queue kept going, so
    /// by its contract they had none).
    pub fn clear_doubt(&mut self) {
        self.doubt.clear();
        self.doubt_items.clear();
        for t in [
            &mut self.acked,
            &mut self.missed,
            &mut self.expired,
            &mut self.dead_expired,
        ] {
            t.doubt = 0;
        }
    }

    fn change(&mut self, id: u64, f: impl FnOnce(&mut Msg)) {
        let seq = self.seq;
        let m = self.msgs.get_mut(&id).expect("model knows the message");
        let before = m.seen();
        f(m);
        let after = m.seen();
        if after != before {
            m.hist.push((seq, after));
        }
    }

    fn unplace(&mut self, id: u64) {
        let m = &self.msgs[&id];
        match m.at {
            At::Ready => {
                self.ready.remove(&m.ready_key(id));
            }
            At::Delayed(t) => {
                self.delayed.remove(&(t, id));
            }
            At::InFlight(_) => {
                self.in_flight.remove(&id);
                self.outstanding.retain(|(i, _)| *i != id);
            }
            At::Dead => {
                self.dead.remove(&id);
            }
            At::Done => {
                self.done.remove(&id);
            }
            At::Gone => {}
        }
    }

    fn place(&mut self, id: u64, at: At) {
        self.unplace(id);
        if at == At::Dead {
            // A dead letter keeps no deadline.
            self.msgs.get_mut(&id).expect("known").deadline = 0;
        }
        match at {
            At::Ready => {
                let k = self.msgs[&id].ready_key(id);
                self.ready.insert(k);
            }
            At::Delayed(t) => {
                self.delayed.insert((t, id));
            }
            At::InFlight(d) => {
                self.in_flight.insert(id, d);
            }
            At::Dead => {
                self.dead.insert(id);
            }
            At::Done => {
                self.done.insert(id);
            }
            At::Gone => {}
        }
        self.change(id, |m| {
            m.at = at;
            m.lease = None;
            if at != At::Dead {
                m.dead = None;
            }
        });
    }

    /// The id a live key was first admitted with: remembered while less
    /// than `dedup_window` has passed since.
    fn live_key(&self, k: u64) -> Option<&KeyRec> {
        self.keys
            .get(&k)
            .filter(|r| self.now.saturating_sub(r.at) < self.timers.dedup_window_ms)
    }

    /// Keys within their window at `now`: (surely remembered, maybe).
    fn live_keys_at(&self, now: u64) -> (u64, u64) {
        let w = self.timers.dedup_window_ms;
        let live = self.keys.values().filter(|r| now.saturating_sub(r.at) < w);
        let (mut sure, mut all) = (0, 0);
        for r in live {
            all += 1;
            sure += u64::from(r.certain);
        }
        (sure, all)
    }

    /// Keys within their window now (the last op's time).
    fn live_keys(&self) -> (u64, u64) {
        self.live_keys_at(self.now)
    }

    /// The queue forgot keys past their window at `now`.
    fn forget_keys(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.timers.dedup_window_ms);
        self.keys_forgot = self.keys_forgot.max(cutoff);
    }

    /// Bounds of `stats().keys` at `now`: the keys within their window,
    /// and those the queue may not have forgotten yet (it forgets lazily:
    /// when an enqueue with options, its background thread or a checkpoint
    /// runs).
    pub fn keys_bounds(&self, now: u64) -> (u64, u64) {
        let hi = self
            .keys
            .values()
            .filter(|r| r.at > self.keys_forgot)
            .count() as u64;
        let (sure, all) = self.live_keys_at(now);
        (sure, hi.max(all))
    }

    /// What the queue may answer an enqueue of `items` now: `None` (it
    /// enqueues) or why it refuses. One answer, unless keys are uncertain
    /// after a crash.
    pub fn refusals(&self, items: &[Item]) -> Vec<Option<Refusal>> {
        for it in items {
            if it.deadline > 0
                && (it.deadline <= self.now || it.deadline <= self.now + u64::from(it.delay_ms))
            {
                return vec![Some(Refusal::BadDeadline)];
            }
        }
        let mut out = Vec::new();
        // Uncertain keys all remembered, or all forgotten.
        for remembered in [true, false] {
            let mut new_keys = BTreeSet::new();
            for it in items {
                if let Some(k) = it.key {
                    let live = self.live_key(k).is_some_and(|r| r.certain || remembered);
                    if !live {
                        new_keys.insert(k);
                    }
                }
            }
            let (sure, all) = self.live_keys();
            let kept = if remembered { all } else { sure };
            let r = (!new_keys.is_empty()
                && kept + new_keys.len() as u64 > self.timers.max_keys as u64)
                .then_some(Refusal::TooManyKeys);
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// An enqueue of `items` returned `ids` (call [`Model::begin`] first;
    /// `refusal` must have been `None`). Checks each id: an item whose key
    /// is remembered gets its first id, one whose key came earlier in the
    /// batch gets that item's id, every other item a new id larger than
    /// every id before. Returns whether the call wrote anything (a call
    /// whose keys were all remembered did not).
    pub fn enqueue_ok(&mut self, items: &[Item], ids: &[u64]) -> Result<bool, String> {
        if ids.len() != items.len() {
            return Err(format!(
                "enqueue of {} items returned {} ids",
                items.len(),
                ids.len()
            ));
        }
        let now = self.now;
        if items.iter().any(Item::has_options) {
            self.forget_keys(now);
        }
        // Which items were written: first pass, checking the ids of the
        // others.
        let mut fresh: Vec<usize> = Vec::new();
        let mut in_batch: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            let id = ids[i];
            if let Some(k) = it.key {
                if let Some(&j) = in_batch.get(&k) {
                    if id != ids[j] {
                        return Err(format!(
                            "key {k} twice in one batch: ids {} and {id}",
                            ids[j]
                        ));
                    }
                    continue;
                }
                if let Some(r) = self.live_key(k) {
                    if r.certain || id == r.id {
                        if id != r.id {
                            return Err(format!(
                                "key {k} (remembered as {}) enqueued again as {id}",
                                r.id
                            ));
                        }
                        let r = self.keys.get_mut(&k).expect("live");
                        r.certain = true;
                        in_batch.insert(k, i);
                        continue;
                    }
                }
                in_batch.insert(k, i);
            }
            fresh.push(i);
        }
        let batch = (fresh.len() > 1).then(|| {
            self.batches += 1;
            self.batches
        });
        for &i in &fresh {
            let (id, it) = (ids[i], items[i]);
            if id <= self.max_id {
                return Err(format!(
                    "id {id} handed out after id {} (ids must never repeat)",
                    self.max_id
                ));
            }
            self.max_id = id;
            let at = if it.delay_ms > 0 {
                At::Delayed(now + u64::from(it.delay_ms))
            } else {
                At::Ready
            };
            self.msgs.insert(
                id,
                Msg {
                    tag: it.tag,
                    priority: it.priority,
                    len: it.len,
                    enqueued_at: now,
                    deadline: it.deadline,
                    deadline_set: it.deadline,
                    key: it.key,
                    attempt: 0,
                    at: At::Gone,
                    lease: None,
                    dead: None,
                    batch,
                    result: None,
                    redriven: false,
                    missed_deadline: false,
                    hist: Vec::new(),
                },
            );
            self.place(id, at);
            if let Some(k) = it.key {
                let seq = self.seq;
                let r = self.keys.entry(k).or_insert_with(|| KeyRec {
                    id,
                    at: now,
                    seq,
                    certain: true,
                    ids: Vec::new(),
                });
                r.id = id;
                r.at = now;
                r.seq = seq;
                r.certain = true;
                r.ids.push(id);
            }
        }
        Ok(!fresh.is_empty())
    }

    /// An enqueue of `items` failed: the ones it would have written may
    /// all exist or none. (One whose key may or may not be remembered,
    /// after a crash, is a group of its own.)
    pub fn enqueue_doubt(&mut self, items: &[Item]) {
        let mut seen = BTreeSet::new();
        let mut fresh = Vec::new();
        for it in items {
            match it.key.map(|k| (seen.insert(k), self.live_key(k))) {
                None | Some((true, None)) => fresh.push(*it),
                Some((true, Some(r))) if !r.certain => self.doubt_items.push(vec![*it]),
                Some(_) => {}
            }
        }
        if !fresh.is_empty() {
            self.doubt_items.push(fresh);
        }
    }

    /// What a dequeue does before it leases: expire leases, mature delays.
    /// Neither changes what a reopen shows, so it is applied whatever the
    /// dequeue's outcome.
    pub fn tick(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.place(id, At::Ready);
        }
        self.mature(now);
    }

    fn mature(&mut self, now: u64) {
        let due: Vec<u64> = self
            .delayed
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            self.place(id, At::Ready);
        }
    }

    /// Receipts whose lease ran out are stale once a dequeue expires them;
    /// a workload that only settles outstanding receipts forgets them.
    pub fn forget_expiring_receipts(&mut self, now: u64) {
        let in_flight = &self.in_flight;
        self.outstanding
            .retain(|(id, _)| in_flight.get(id).is_some_and(|&d| d > now));
    }

    fn auto_dead(&self, id: u64) -> bool {
        self.max_deliveries > 0 && self.msgs[&id].attempt >= self.max_deliveries
    }

    /// Whether message `id` (ready) must become a dead letter for its
    /// deadline at `now`.
    fn doomed(&self, id: u64, now: u64) -> bool {
        let d = self.msgs[&id].deadline;
        d > 0 && d <= now
    }

    fn dead_by_limit(&mut self, id: u64) {
        let reason = auto_reason(self.msgs[&id].attempt, self.max_deliveries);
        let now = self.now;
        self.place(id, At::Dead);
        self.msgs.get_mut(&id).expect("known").dead = Some((now, reason));
    }

    fn miss(&mut self, id: u64) {
        let now = self.now;
        self.place(id, At::Dead);
        let m = self.msgs.get_mut(&id).expect("known");
        m.dead = Some((now, DEADLINE_MISSED.into()));
        m.missed_deadline = true;
        self.missed.add(self.seq);
    }

    /// The message a dequeue leases next (delays and leases as of the last
    /// [`Model::tick`]).
    pub fn next_ready(&self) -> Option<u64> {
        self.ready.first().map(|&(_, _, id)| id)
    }

    /// A dequeue of up to `n` returned `got` (call [`Model::tick`] with the
    /// dequeue's time first). Checks each delivery against the model's
    /// prediction (order as in the module docs; missed deadlines and
    /// messages past `max_deliveries` dead-lettered on the way; attempt,
    /// lane, payload and enqueue time) and applies it. With
    /// `reads_may_fail`, a message the queue skipped is taken as unreadable
    /// and dead-lettered.
    pub fn dequeue_ok(&mut self, n: usize, got: &[Delivery]) -> Result<(), String> {
        if got.len() > n {
            return Err(format!("dequeue of up to {n} gave {}", got.len()));
        }
        let now = self.now;
        let deadline = now + self.visibility_ms;
        for d in got {
            let id = u64::from(d.id);
            loop {
                let Some(c) = self.next_ready() else {
                    return Err(format!("delivered {id}, model has nothing ready"));
                };
                if self.doomed(c, now) {
                    if c == id {
                        return Err(format!(
                            "delivered {id}, whose deadline {} passed (now {now})",
                            self.msgs[&c].deadline
                        ));
                    }
                    self.miss(c);
                    continue;
                }
                if self.auto_dead(c) {
                    self.dead_by_limit(c);
                    continue;
                }
                if c != id {
                    if !self.reads_may_fail {
                        return Err(format!("delivered {id}, model predicted {c} next"));
                    }
                    // Skipped: its record could not be read, so the queue
                    // parked it as a dead letter (the delivery counted).
                    self.skip_unreadable(c);
                    continue;
                }
                let m = &self.msgs[&c];
                if d.attempt != m.attempt + 1 || d.priority != m.priority {
                    return Err(format!(
                        "delivery of {id}: attempt {} priority {}, model {} {}",
                        d.attempt,
                        d.priority,
                        m.attempt + 1,
                        m.priority
                    ));
                }
                if d.payload != payload(m.tag, m.len) {
                    return Err(format!(
                        "delivery of {id}: payload differs (CORRUPT; {} bytes, enqueued {})",
                        d.payload.len(),
                        m.len
                    ));
                }
                if d.enqueued_at != Timestamp(m.enqueued_at) {
                    return Err(format!(
                        "delivery of {id}: enqueued_at {:?}, enqueued at {}",
                        d.enqueued_at, m.enqueued_at
                    ));
                }
                self.change(c, |m| m.attempt += 1);
                self.place(c, At::InFlight(deadline));
                self.msgs.get_mut(&c).expect("known").lease = Some(d.receipt);
                self.outstanding.push((c, d.receipt));
                break;
            }
        }
        if got.len() < n {
            // The queue ran out of ready messages: the rest were dead-lettered.
            while let Some(c) = self.next_ready() {
                if self.doomed(c, now) {
                    self.miss(c);
                } else if self.auto_dead(c) {
                    self.dead_by_limit(c);
                } else if self.reads_may_fail {
                    self.skip_unreadable(c);
                } else {
                    return Err(format!(
                        "dequeue of up to {n} gave {}, model has {c} ready",
                        got.len()
                    ));
                }
            }
        }
        Ok(())
    }

    fn skip_unreadable(&mut self, id: u64) {
        self.read_error_dead += 1;
        // Delivered, then dead-lettered: the delivery entry may survive a
        // crash without the dead-letter entry, so both states are history.
        self.change(id, |m| m.attempt += 1);
        self.place(id, At::Dead);
    }

    /// How many messages a dequeue at `now` finds ready after it expires
    /// leases and matures delays, and how many of them missed their
    /// deadline (a workload that wants the dequeue itself to dead-letter
    /// every one of those takes at least all of them).
    pub fn ready_after_tick(&self, now: u64) -> (usize, usize) {
        let mut ready = self.ready.len();
        let mut doomed = self
            .ready
            .iter()
            .filter(|&&(_, _, id)| self.doomed(id, now))
            .count();
        for (&id, &d) in &self.in_flight {
            if d <= now {
                ready += 1;
                doomed += usize::from(self.doomed(id, now));
            }
        }
        for &(t, id) in &self.delayed {
            if t > now {
                break;
            }
            ready += 1;
            doomed += usize::from(self.doomed(id, now));
        }
        (ready, doomed)
    }

    /// Messages whose deadline passed that are ready (or delayed and due)
    /// at `now`: work for the queue's background thread, or for the next
    /// dequeue that reaches them.
    pub fn ready_doomed(&self, now: u64) -> usize {
        let ready = self
            .ready
            .iter()
            .filter(|&&(_, _, id)| self.doomed(id, now))
            .count();
        let delayed = self
            .delayed
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter(|(_, id)| self.doomed(*id, now))
            .count();
        ready + delayed
    }

    /// A dequeue of up to `n` failed: what it may have done.
    pub fn dequeue_doubt(&mut self, n: usize) {
        let now = self.now;
        let mut leased = 0;
        let ready: Vec<u64> = self.ready.iter().map(|&(_, _, id)| id).collect();
        for id in ready {
            if leased >= 2 * n {
                break;
            }
            let a = self.msgs[&id].attempt;
            if self.doomed(id, now) {
                self.doubt.push((id, Seen::Dead(a)));
                self.missed.doubt += 1;
            } else if self.auto_dead(id) {
                self.doubt.push((id, Seen::Dead(a)));
            } else {
                leased += 1;
                self.doubt.push((id, Seen::Waiting(a + 1)));
                self.doubt.push((id, Seen::Dead(a + 1)));
            }
        }
    }

    /// Whether `r` is the receipt of the current lease of `id`: a
    /// settlement with it must succeed, any other must be refused as stale.
    pub fn current(&self, id: u64, r: &Receipt) -> bool {
        self.msgs
            .get(&id)
            .is_some_and(|m| matches!(m.at, At::InFlight(_)) && m.lease.as_ref() == Some(r))
    }

    pub fn ack_ok(&mut self, ids: &[u64]) {
        for &id in ids {
            self.acked.add(self.seq);
            self.place(id, At::Gone);
        }
    }

    pub fn ack_doubt(&mut self, ids: &[u64]) {
        for &id in ids {
            self.doubt.push((id, Seen::Gone));
            self.acked.doubt += 1;
        }
    }

    /// `complete` of message `id` (current receipt) with the result
    /// `(tag, len)` returned `Ok`.
    pub fn complete_ok(&mut self, id: u64, result: (u64, usize)) {
        self.acked.add(self.seq);
        self.place(id, At::Done);
        self.msgs.get_mut(&id).expect("known").result = Some(result);
    }

    /// Undo the `complete` of message `id` (completed): it is back where it
    /// was before, with the attempts it had. For a power loss under
    /// `Durability::None`: a result is a segment record, and the queue can
    /// sync the journal alone (reserving ids), so journal entries written
    /// after a result may survive it. Returns whether `id` was completed.
    pub fn uncomplete(&mut self, id: u64) -> bool {
        let Some(m) = self.msgs.get(&id) else {
            return false;
        };
        if m.at != At::Done {
            return false;
        }
        let attempt = m
            .hist
            .iter()
            .rev()
            .find_map(|&(_, st)| match st {
                Seen::Waiting(a) => Some(a),
                _ => None,
            })
            .unwrap_or(0);
        let done_at = m
            .hist
            .iter()
            .rev()
            .find(|(_, st)| *st == Seen::Done)
            .map(|&(seq, _)| seq);
        let found = done_at.and_then(|seq| self.acked.seqs.iter().rposition(|&s| s == seq));
        if let Some(i) = found {
            self.acked.seqs.remove(i);
        }
        self.acked.total = self.acked.total.saturating_sub(1);
        self.change(id, |m| m.attempt = attempt);
        self.place(id, At::Ready);
        true
    }

    /// Ids of the messages completed in this state but not in `earlier`,
    /// in the order they were completed.
    pub fn completed_since(&self, earlier: &Model) -> Vec<u64> {
        let mut out: Vec<(u64, u64)> = self
            .done
            .iter()
            .filter(|id| !earlier.done.contains(id))
            .map(|&id| {
                let seq = self.msgs[&id]
                    .hist
                    .iter()
                    .rev()
                    .find(|(_, st)| *st == Seen::Done)
                    .map_or(0, |&(s, _)| s);
                (seq, id)
            })
            .collect();
        out.sort_unstable();
        out.into_iter().map(|(_, id)| id).collect()
    }

    /// `complete` of message `id` with the result `(tag, len)` failed.
    pub fn complete_doubt(&mut self, id: u64, result: (u64, usize)) {
        self.doubt.push((id, Seen::Done));
        self.acked.doubt += 1;
        self.msgs.get_mut(&id).expect("known").result = Some(result);
    }

    /// The result `result(id)` must return: its (tag, length), or `None`.
    pub fn result_of(&self, id: u64) -> Option<(u64, usize)> {
        self.msgs
            .get(&id)
            .filter(|m| m.at == At::Done)
            .and_then(|m| m.result)
    }

    pub fn nack_ok(&mut self, id: u64, delay_ms: u64) {
        let at = if delay_ms == 0 {
            At::Ready
        } else {
            At::Delayed(self.now + delay_ms)
        };
        self.place(id, at);
    }

    pub fn dead_letter_ok(&mut self, id: u64, reason: &str) {
        let now = self.now;
        self.place(id, At::Dead);
        self.msgs.get_mut(&id).expect("known").dead = Some((now, reason.to_string()));
    }

    pub fn dead_letter_doubt(&mut self, id: u64) {
        let a = self.msgs[&id].attempt;
        self.doubt.push((id, Seen::Dead(a)));
    }

    pub fn dead_count(&self) -> u64 {
        self.dead.len() as u64
    }

    /// When the oldest dead letter's message was enqueued, if any.
    pub fn oldest_dead_enqueue(&self) -> Option<u64> {
        self.dead.iter().map(|id| self.msgs[id].enqueued_at).min()
    }

    /// `redrive_all` returned `n`: every dead letter is ready again with no
    /// deliveries behind it and no deadline.
    pub fn redrive_ok(&mut self, n: u64) -> Result<(), String> {
        if n != self.dead.len() as u64 {
            return Err(format!(
                "redrive_all moved {n}, model has {} dead letters",
                self.dead.len()
            ));
        }
        let dead: Vec<u64> = self.dead.iter().copied().collect();
        for id in dead {
            self.change(id, |m| {
                m.attempt = 0;
                m.redriven = true;
            });
            self.place(id, At::Ready);
        }
        Ok(())
    }

    pub fn redrive_doubt(&mut self) {
        let dead: Vec<u64> = self.dead.iter().copied().collect();
        for id in dead {
            self.doubt.push((id, Seen::Waiting(0)));
        }
    }

    /// Where retention puts a message enqueued at `at` at time `now`:
    /// `Some(true)` removed, `Some(false)` kept, `None` either (its age is
    /// in `[retention, retention + granularity)`).
    fn retained(&self, at: u64, now: u64) -> Option<bool> {
        let Some(r) = self.timers.retention_ms else {
            return Some(false);
        };
        let age = now.saturating_sub(at);
        if age < r {
            Some(false)
        } else if age >= r + self.timers.granularity() {
            Some(true)
        } else {
            None
        }
    }

    /// Messages (not dead letters) and results retention removes at `now`.
    fn retention_due(&self, now: u64) -> Result<Vec<u64>, String> {
        let mut out = Vec::new();
        if self.timers.retention_ms.is_none() {
            return Ok(out);
        }
        let live = self
            .ready
            .iter()
            .map(|&(_, _, id)| id)
            .chain(self.delayed.iter().map(|&(_, id)| id))
            .chain(self.in_flight.keys().copied())
            .chain(self.done.iter().copied());
        for id in live {
            let m = &self.msgs[&id];
            match self.retained(m.enqueued_at, now) {
                Some(true) => out.push(id),
                Some(false) => {}
                None => {
                    return Err(format!(
                    "retention of {id} is ambiguous at {now}: enqueued at {}, age {} in [{}, {}) \
                         (choose the retention and the clock steps so no age falls there)",
                    m.enqueued_at,
                    now - m.enqueued_at,
                    self.timers.retention_ms.unwrap_or(0),
                    self.timers.retention_ms.unwrap_or(0) + self.timers.granularity()
                ))
                }
            }
        }
        Ok(out)
    }

    /// Dead letters dead-letter retention removes at `now`.
    fn dead_retention_due(&self, now: u64) -> Vec<u64> {
        let Some(r) = self.timers.dead_retention_ms else {
            return Vec::new();
        };
        self.dead
            .iter()
            .copied()
            .filter(|id| {
                self.msgs[id]
                    .dead
                    .as_ref()
                    .is_some_and(|(at, _)| now.saturating_sub(*at) >= r)
            })
            .collect()
    }

    /// Whether a time-driven removal is due at `now`: a ready message (or a
    /// delayed one that is due) whose deadline passed, a message or result
    /// retention removes, a dead letter past its retention. `Err` when
    /// retention is ambiguous (see the module docs).
    pub fn pending(&self, now: u64) -> Result<bool, String> {
        let doomed = |id: &u64| self.doomed(*id, now);
        let ready_doomed = self.ready.iter().any(|&(_, _, id)| doomed(&id));
        let delayed_doomed = self
            .delayed
            .iter()
            .take_while(|(t, _)| *t <= now)
            .any(|(_, id)| doomed(id));
        Ok(ready_doomed
            || delayed_doomed
            || !self.retention_due(now)?.is_empty()
            || !self.dead_retention_due(now).is_empty())
    }

    /// The queue's background thread ran at `now` (call [`Model::begin`]
    /// first): see the module documentation. `Err` (and nothing changed)
    /// when retention is ambiguous.
    pub fn expire(&mut self, now: u64) -> Result<(), String> {
        let cut = self.retention_due(now)?;
        let dead_due = self.dead_retention_due(now);
        self.forget_keys(now);
        self.mature(now);
        let doomed: Vec<u64> = self
            .ready
            .iter()
            .map(|&(_, _, id)| id)
            .filter(|&id| self.doomed(id, now))
            .collect();
        for id in doomed {
            self.miss(id);
        }
        for id in cut {
            // A message whose deadline just passed is a dead letter now:
            // retention leaves it.
            if self.msgs[&id].at != At::Dead {
                self.place(id, At::Gone);
                self.expired.add(self.seq);
            }
        }
        for id in dead_due {
            self.place(id, At::Gone);
            self.dead_expired.add(self.seq);
        }
        Ok(())
    }

    /// (`deadline_missed_total`, `expired_total`, `dead_expired_total`).
    pub fn removal_totals(&self) -> (u64, u64, u64) {
        (
            self.missed.total,
            self.expired.total,
            self.dead_expired.total,
        )
    }

    /// The queue was reopened (nothing lost): leases released with their
    /// attempts kept, due delays matured, keys past their window forgotten.
    pub fn reopened(&mut self, now: u64) {
        let leased: Vec<u64> = self.in_flight.keys().copied().collect();
        for id in leased {
            self.place(id, At::Ready);
        }
        self.outstanding.clear();
        self.forget_keys(now);
        self.tick(now);
    }

    /// A reopen after a crash showed `seen` (every message present or
    /// completed, and its state) and these counters: make that the model's
    /// state, durable in every view (the image a reopen found is on the
    /// disk), then [`Model::reopened`]. Known messages not in `seen` are
    /// gone for good. Keys whose enqueue was not durable under `view` and
    /// whose message is not back become uncertain. Call after judging the
    /// reopen against [`Model::possible`].
    pub fn recovered(&mut self, now: u64, view: View, seen: &BTreeMap<u64, Seen>, totals: Totals) {
        let l = self.durable(view);
        self.begin(now);
        let ids: Vec<u64> = self.msgs.keys().copied().collect();
        for id in ids {
            let state = seen.get(&id).copied().unwrap_or(Seen::Gone);
            match state {
                Seen::Waiting(a) => {
                    let was = self.msgs[&id].at;
                    let m = &self.msgs[&id];
                    let deadline = if back_from_before_dead(&m.hist, a) {
                        // Back from before it was first dead-lettered (no
                        // state since shows `a` deliveries), whatever came
                        // after (a redrive, another delivery): with the
                        // deadline it had then.
                        m.deadline_set
                    } else if matches!(was, At::Dead | At::Done | At::Gone) {
                        // Back from before it was dead-lettered, completed
                        // or acked: with the deadline it had then (a
                        // redriven message is taken to be back from after
                        // its redrive, without one; a harness that can read
                        // the directory says which, `deadline_seen`).
                        if m.redriven {
                            0
                        } else {
                            m.deadline_set
                        }
                    } else {
                        m.deadline
                    };
                    self.set_deadline(id, deadline);
                    self.change(id, |m| m.attempt = a);
                    if !matches!(was, At::Ready | At::Delayed(_)) {
                        self.place(id, At::Ready);
                    }
                }
                Seen::Dead(a) => {
                    self.change(id, |m| m.attempt = a);
                    if self.msgs[&id].at != At::Dead {
                        self.place(id, At::Dead);
                    }
                }
                Seen::Done => {
                    if self.msgs[&id].at != At::Done {
                        self.place(id, At::Done);
                    }
                }
                Seen::Gone | Seen::NotYet => {
                    if self.msgs[&id].at != At::Gone {
                        self.place(id, At::Gone);
                    }
                }
            }
        }
        for r in self.keys.values_mut() {
            let back = seen
                .get(&r.id)
                .is_some_and(|s| s.present() || *s == Seen::Done);
            if r.seq > l && !back {
                r.certain = false;
            }
        }
        self.clear_doubt();
        let seq = self.seq;
        self.acked.rebase(totals.acked, seq);
        self.missed.rebase(totals.missed, seq);
        self.expired.rebase(totals.expired, seq);
        self.dead_expired.rebase(totals.dead_expired, seq);
        self.durable = [self.seq; 2];
        self.reopened(now);
    }

    /// A reopen shows message `id` waiting with `deadline` (0 for none),
    /// read from the reopened directory: the model takes it if it is one
    /// the message had (the one it was enqueued with, back from before a
    /// dead letter; none, after a redrive), and fails otherwise.
    pub fn deadline_seen(&mut self, id: u64, deadline: u64) -> Result<(), String> {
        let Some(m) = self.msgs.get(&id) else {
            return Err(format!("message {id} is unknown"));
        };
        if deadline == m.deadline || deadline == m.deadline_set || (deadline == 0 && m.redriven) {
            self.set_deadline(id, deadline);
            return Ok(());
        }
        Err(format!(
            "message {id} came back with deadline {deadline}; it was enqueued with {}{}",
            m.deadline_set,
            if m.redriven { " and redriven" } else { "" }
        ))
    }

    /// Set message `id`'s deadline, keeping its place in the ready order
    /// (which deadlines lead) right.
    fn set_deadline(&mut self, id: u64, deadline: u64) {
        let m = &self.msgs[&id];
        if m.deadline == deadline {
            return;
        }
        let ready = m.at == At::Ready;
        if ready {
            let k = m.ready_key(id);
            self.ready.remove(&k);
        }
        let m = self.msgs.get_mut(&id).expect("known");
        m.deadline = deadline;
        if ready {
            let k = m.ready_key(id);
            self.ready.insert(k);
        }
    }

    /// Whether any message was ever redriven (its deadline dropped).
    pub fn any_redriven(&self) -> bool {
        self.msgs.values().any(|m| m.redriven)
    }

    /// Any receipt may be used; `k` picks one.
    pub fn receipt(&self, k: u64) -> Option<(u64, Receipt)> {
        let n = self.outstanding.len() as u64;
        (n > 0).then(|| self.outstanding[(k % n) as usize])
    }

    /// The states a reopen under `view` may show for message `id`.
    pub fn possible(&self, id: u64, view: View) -> Vec<Seen> {
        let l = self.durable(view);
        let m = &self.msgs[&id];
        let base = m
            .hist
            .iter()
            .rev()
            .find(|(s, _)| *s <= l)
            .map_or(Seen::NotYet, |&(_, st)| st);
        let mut out = vec![base];
        out.extend(m.hist.iter().filter(|(s, _)| *s > l).map(|&(_, st)| st));
        out.extend(
            self.doubt
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|&(_, st)| st),
        );
        out
    }

    /// Whether the message was ever acked, completed or removed, or may
    /// have been.
    pub fn maybe_gone(&self, id: u64) -> bool {
        let gone = |s: &Seen| matches!(s, Seen::Gone | Seen::Done);
        self.msgs[&id].hist.iter().any(|(_, s)| gone(s))
            || self.doubt.iter().any(|(i, s)| *i == id && gone(s))
    }

    /// Bounds of a lifetime counter after a crash under `view`.
    pub fn bounds(&self, c: Counter, view: View) -> (u64, u64) {
        let l = self.durable(view);
        match c {
            Counter::Acked => &self.acked,
            Counter::Missed => &self.missed,
            Counter::Expired => &self.expired,
            Counter::DeadExpired => &self.dead_expired,
        }
        .bounds(l)
    }

    /// Bounds of `acked_total` after a crash under `view`.
    pub fn acked_bounds(&self, view: View) -> (u64, u64) {
        self.bounds(Counter::Acked, view)
    }

    /// What an enqueue with key `k` must return after a reopen under `view`
    /// with a dedup window longer than the run (the oracles' reopen): the
    /// id of its latest admission when that enqueue is durable in the view
    /// and within the window now; otherwise any admission's id, or a new
    /// one.
    pub fn key_expect(&self, k: u64, view: View) -> KeyExpect {
        let r = &self.keys[&k];
        let within = self.now.saturating_sub(r.at) < self.timers.dedup_window_ms;
        if r.seq <= self.durable(view) && r.certain && within {
            KeyExpect::Must(r.id)
        } else {
            KeyExpect::Any(r.ids.clone())
        }
    }

    /// Counts as of the last tick: ready, in flight, delayed, dead.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.ready.len() as u64,
            self.in_flight.len() as u64,
            self.delayed.len() as u64,
            self.dead.len() as u64,
        )
    }

    /// What `stats()` must report at time `now`: a delay that is due counts
    /// as ready even before a dequeue matures it; a lease past its deadline
    /// is in flight until a dequeue expires it.
    pub fn stats(&self, now: u64) -> Counts {
        let mut lanes: BTreeMap<Reverse<u8>, u64> = BTreeMap::new();
        for &(p, _, _) in &self.ready {
            *lanes.entry(p).or_default() += 1;
        }
        let mut delayed = 0;
        for &(t, id) in &self.delayed {
            if t <= now {
                *lanes.entry(Reverse(self.msgs[&id].priority)).or_default() += 1;
            } else {
                delayed += 1;
            }
        }
        Counts {
            ready: lanes.values().sum(),
            in_flight: self.in_flight.len() as u64,
            delayed,
            dead: self.dead.len() as u64,
            acked_total: self.acked.total,
            results: self.done.len() as u64,
            deadline_missed_total: self.missed.total,
            expired_total: self.expired.total,
            dead_expired_total: self.dead_expired.total,
            ready_per_lane: lanes.into_iter().map(|(Reverse(p), n)| (p, n)).collect(),
        }
    }

    /// The dead letters, by id, as `dead_letters()` must list them (a
    /// message dead for an unknown reason lists an empty reason).
    pub fn dead_letters(&self) -> Vec<DeadRow> {
        self.dead
            .iter()
            .map(|id| {
                let m = &self.msgs[id];
                let (at, reason) = m.dead.clone().unwrap_or_default();
                (*id, m.priority, m.attempt, reason, m.enqueued_at, at)
            })
            .collect()
    }

    /// Ids of completed messages (results stored), ascending.
    pub fn completed(&self) -> impl Iterator<Item = u64> + '_ {
        self.done.iter().copied()
    }
}

/// Whether a message whose states were `hist` and that a reopen shows
/// waiting after `a` deliveries is back from before its first dead
/// letter: it was dead-lettered, and no state since then shows `a`
/// deliveries (a redrive starts the count again from 0).
fn back_from_before_dead(hist: &[(u64, Seen)], a: u32) -> bool {
    hist.iter()
        .position(|(_, st)| matches!(st, Seen::Dead(_)))
        .is_some_and(|d| !hist[d..].iter().any(|(_, st)| *st == Seen::Waiting(a)))
}
