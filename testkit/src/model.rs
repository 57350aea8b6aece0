//! The reference model of the queue: what a correct queue holds after the
//! calls that returned `Ok`, and what a crash may therefore leave.
//!
//! **Live state.** Every message the queue handed out an id for, with its
//! lane (priority), payload tag and length, enqueue time, deliveries so far
//! and where it is: ready, delayed until `t`, in flight until `t` under one
//! receipt, a dead letter (when and why), or gone (acked). Ready order is
//! the highest lane first, then the lowest id. A dequeue first expires the
//! leases and matures the delays that are due, dead-letters a message that
//! reached `max_deliveries` when it would be picked, and leases the rest;
//! [`Model::dequeue_ok`] checks a real dequeue against that prediction
//! (ids, lanes, attempts, payloads, enqueue times). `acked_total` counts the
//! acks. Ids only grow, across crashes too.
//!
//! **Crash views.** Every op gets a sequence number, and each message keeps
//! a history of the states a reopen could show for it ([`Seen`]), stamped
//! with the op that produced them. A crash view has a durable point `L`,
//! the last op whose `Ok` promised durability for that view:
//!
//! - [`View::Process`] (a process crash keeps every write): every op that
//!   returned `Ok`.
//! - [`View::Power`] (power loss): under `Immediate`, every `Ok` op that
//!   wrote and synced (not a dequeue: its delivery record is not synced);
//!   under `None`, only `sync()` and a clean `close()`.
//!
//! After a crash, a message may show its state as of `L` or any state it
//! passed through after `L` (unsynced journal entries survive as a prefix,
//! so the recovered state is one the message really had), plus the possible
//! effects of the op that failed (`doubt`). Ready, delayed and in-flight all
//! show as `Waiting(attempts)`: a reopen releases leases. The messages of
//! one `enqueue_batch` come back all or none. [`Model::recovered`] rebases
//! the model on what a reopen showed, so a run can go on after a crash.
//!
//! A harness drives the model op by op: [`Model::begin`], the queue call,
//! then the matching `*_ok` (or `*_doubt` when the call failed), then
//! [`Model::ok`] with whether the call promised durability.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use lanelog::{Delivery, Receipt, Timestamp};

use crate::workload::{payload, Item};

/// A message's state as a reopen shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seen {
    /// Its enqueue is not (yet) part of the image: absent.
    NotYet,
    /// Acked (or lost and rebased away): absent for good.
    Gone,
    /// Ready, delayed or in flight, with this many deliveries behind it.
    Waiting(u32),
    /// A dead letter with this many deliveries.
    Dead(u32),
}

impl Seen {
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
    /// `(op, state)`: the states a reopen could show, see the module docs.
    pub hist: Vec<(u64, Seen)>,
}

impl Msg {
    pub fn seen(&self) -> Seen {
        match self.at {
            At::Ready | At::Delayed(_) | At::InFlight(_) => Seen::Waiting(self.attempt),
            At::Dead => Seen::Dead(self.attempt),
            At::Gone => Seen::Gone,
        }
    }

    /// Everything but the history: what the live queue shows of it.
    fn same_live(&self, o: &Msg) -> bool {
        (
            self.tag,
            self.priority,
            self.len,
            self.enqueued_at,
            self.attempt,
            self.at,
            self.lease,
            &self.dead,
            self.batch,
        ) == (
            o.tag,
            o.priority,
            o.len,
            o.enqueued_at,
            o.attempt,
            o.at,
            o.lease,
            &o.dead,
            o.batch,
        )
    }
}

/// Which crash the image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Process,
    Power,
}

/// What the live queue's `stats()` must report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Ready now, delays that are due included.
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
    pub acked_total: u64,
    /// `(lane, ready)`, highest lane first, lanes with nothing ready left
    /// out.
    pub ready_per_lane: Vec<(u8, u64)>,
}

/// A dead letter as the model has it: id, lane, attempts, reason,
/// enqueued at, dead at.
pub type DeadRow = (u64, u8, u32, String, u64, u64);

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub msgs: BTreeMap<u64, Msg>,
    ready: BTreeSet<(Reverse<u8>, u64)>,
    delayed: BTreeSet<(u64, u64)>,
    in_flight: BTreeMap<u64, u64>,
    dead: BTreeSet<u64>,
    /// Receipts that may be used (current, lease not past its deadline), in
    /// delivery order.
    pub outstanding: Vec<(u64, Receipt)>,
    pub seq: u64,
    durable: [u64; 2],
    /// The op of each `Ok` ack (one per message).
    acks: Vec<u64>,
    /// Acks that returned `Ok`.
    pub acked_total: u64,
    /// The largest id handed out so far.
    pub max_id: u64,
    batches: u64,
    /// Possible effects of failed ops on known messages.
    pub doubt: Vec<(u64, Seen)>,
    /// Messages of failed enqueues, one list per call: each call's messages
    /// may all exist or none.
    pub doubt_items: Vec<Vec<Item>>,
    pub doubt_acks: u64,
    pub max_deliveries: u32,
    pub visibility_ms: u64,
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
    /// An empty queue with these options at time `now`.
    pub fn new(max_deliveries: u32, visibility_ms: u64, now: u64) -> Model {
        Model {
            max_deliveries,
            visibility_ms,
            now,
            ..Model::default()
        }
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
        self.acked_total == o.acked_total
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
        self.doubt_acks = 0;
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
                self.ready.remove(&(Reverse(m.priority), id));
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
            At::Gone => {}
        }
    }

    fn place(&mut self, id: u64, at: At) {
        self.unplace(id);
        let prio = self.msgs[&id].priority;
        match at {
            At::Ready => {
                self.ready.insert((Reverse(prio), id));
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

    /// A number for the next `enqueue_batch` call (see [`Model::add`]).
    pub fn new_batch(&mut self) -> u64 {
        self.batches += 1;
        self.batches
    }

    /// An enqueue returned this id for `item` (`batch`: the number of its
    /// `enqueue_batch` call). Ids must be larger than every id before them.
    pub fn add(&mut self, id: u64, item: Item, batch: Option<u64>) -> Result<(), String> {
        if id <= self.max_id {
            return Err(format!(
                "id {id} handed out after id {} (ids must never repeat)",
                self.max_id
            ));
        }
        self.max_id = id;
        let at = if item.delay_ms > 0 {
            At::Delayed(self.now + u64::from(item.delay_ms))
        } else {
            At::Ready
        };
        self.msgs.insert(
            id,
            Msg {
                tag: item.tag,
                priority: item.priority,
                len: item.len,
                enqueued_at: self.now,
                attempt: 0,
                at: At::Gone,
                lease: None,
                dead: None,
                batch,
                hist: Vec::new(),
            },
        );
        self.place(id, at);
        Ok(())
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

    fn dead_by_limit(&mut self, id: u64) {
        let reason = auto_reason(self.msgs[&id].attempt, self.max_deliveries);
        let now = self.now;
        self.place(id, At::Dead);
        self.msgs.get_mut(&id).expect("known").dead = Some((now, reason));
    }

    /// The message a dequeue leases next (delays and leases as of the last
    /// [`Model::tick`]).
    pub fn next_ready(&self) -> Option<u64> {
        self.ready.first().map(|&(_, id)| id)
    }

    /// A dequeue of up to `n` returned `got` (call [`Model::tick`] with the
    /// dequeue's time first). Checks each delivery against the model's
    /// prediction (highest lane, then lowest id; messages past
    /// `max_deliveries` dead-lettered on the way; attempt, lane, payload and
    /// enqueue time) and applies it. With `reads_may_fail`, a message the
    /// queue skipped is taken as unreadable and dead-lettered.
    pub fn dequeue_ok(&mut self, n: usize, got: &[Delivery]) -> Result<(), String> {
        if got.len() > n {
            return Err(format!("dequeue of up to {n} gave {}", got.len()));
        }
        let deadline = self.now + self.visibility_ms;
        for d in got {
            let id = u64::from(d.id);
            loop {
                let Some(c) = self.next_ready() else {
                    return Err(format!("delivered {id}, model has nothing ready"));
                };
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
                if self.auto_dead(c) {
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

    /// A dequeue of up to `n` failed: what it may have done.
    pub fn dequeue_doubt(&mut self, n: usize) {
        let mut leased = 0;
        for &(_, id) in self.ready.iter() {
            if leased >= 2 * n {
                break;
            }
            let a = self.msgs[&id].attempt;
            if self.auto_dead(id) {
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
            self.acks.push(self.seq);
            self.acked_total += 1;
            self.place(id, At::Gone);
        }
    }

    pub fn ack_doubt(&mut self, ids: &[u64]) {
        for &id in ids {
            self.doubt.push((id, Seen::Gone));
            self.doubt_acks += 1;
        }
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

    /// `redrive_all` returned `n`: every dead letter is ready again with no
    /// deliveries behind it.
    pub fn redrive_ok(&mut self, n: u64) -> Result<(), String> {
        if n != self.dead.len() as u64 {
            return Err(format!(
                "redrive_all moved {n}, model has {} dead letters",
                self.dead.len()
            ));
        }
        let dead: Vec<u64> = self.dead.iter().copied().collect();
        for id in dead {
            self.change(id, |m| m.attempt = 0);
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

    /// The queue was reopened (nothing lost): leases released with their
    /// attempts kept, due delays matured.
    pub fn reopened(&mut self, now: u64) {
        let leased: Vec<u64> = self.in_flight.keys().copied().collect();
        for id in leased {
            self.place(id, At::Ready);
        }
        self.outstanding.clear();
        self.tick(now);
    }

    /// A reopen after a crash showed `seen` (every message present, and its
    /// state) and this `acked_total`: make that the model's state, durable
    /// in every view (the image a reopen found is on the disk), then
    /// [`Model::reopened`]. Known messages not in `seen` are gone for good.
    /// Call after judging the reopen against [`Model::possible`].
    pub fn recovered(&mut self, now: u64, seen: &BTreeMap<u64, Seen>, acked_total: u64) {
        self.begin(now);
        let ids: Vec<u64> = self.msgs.keys().copied().collect();
        for id in ids {
            match seen.get(&id).copied().unwrap_or(Seen::Gone) {
                Seen::Waiting(a) => {
                    self.change(id, |m| m.attempt = a);
                    if !matches!(self.msgs[&id].at, At::Ready | At::Delayed(_)) {
                        self.place(id, At::Ready);
                    }
                }
                Seen::Dead(a) => {
                    self.change(id, |m| m.attempt = a);
                    if self.msgs[&id].at != At::Dead {
                        self.place(id, At::Dead);
                    }
                }
                Seen::Gone | Seen::NotYet => {
                    if self.msgs[&id].at != At::Gone {
                        self.place(id, At::Gone);
                    }
                }
            }
        }
        self.clear_doubt();
        self.acked_total = acked_total;
        self.acks = vec![self.seq; usize::try_from(acked_total).unwrap_or(usize::MAX)];
        self.durable = [self.seq; 2];
        self.reopened(now);
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

    /// Whether the message was ever acked, or may have been.
    pub fn maybe_gone(&self, id: u64) -> bool {
        self.msgs[&id].hist.iter().any(|(_, s)| *s == Seen::Gone)
            || self.doubt.contains(&(id, Seen::Gone))
    }

    /// Bounds of `acked_total` after a crash under `view`.
    pub fn acked_bounds(&self, view: View) -> (u64, u64) {
        let l = self.durable(view);
        let lo = self.acks.iter().filter(|&&s| s <= l).count() as u64;
        (lo, self.acks.len() as u64 + self.doubt_acks)
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
        for &(p, _) in &self.ready {
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
            acked_total: self.acked_total,
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
}
