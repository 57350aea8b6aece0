//! What the workload was told, and what a crash may therefore leave.
//!
//! Every op gets a sequence number. Each message keeps a history of the
//! states a reopen could show for it (`Seen`), each stamped with the op that
//! produced it. A crash view has a durable point `L`, the last op whose `Ok`
//! promised durability for that view:
//!
//! - `View::Process` (a process crash keeps every write): every op that
//!   returned `Ok`.
//! - `View::Power` (power loss): under `Immediate`, every `Ok` op that
//!   wrote and synced (not a dequeue: its delivery record is not synced);
//!   under `None`, only `sync()` and a clean `close()`.
//!
//! After a crash, a message may show its state as of `L` or any state it
//! passed through after `L` (unsynced journal entries survive as a prefix,
//! so the recovered state is one the message really had), plus the possible
//! effects of the op that failed (`doubt`). Ready, delayed and in-flight all
//! show as `Waiting(attempts)`: a reopen releases leases and the oracles
//! open with a clock past every delay.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use lanelog::{Delivery, Receipt};

use super::payload;

/// A message's state as a reopen shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seen {
    /// Its enqueue is not (yet) part of the image: absent.
    NotYet,
    /// Acked: absent for good.
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
    Delayed(u64),
    InFlight(u64),
    Dead,
    Gone,
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u64,
    pub priority: u8,
    pub len: usize,
    /// Deliveries so far.
    pub attempt: u32,
    pub at: At,
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
}

/// Which crash the image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Process,
    Power,
}

/// A message to enqueue (its id is known only once the enqueue returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub tag: u64,
    pub priority: u8,
    pub len: usize,
    pub delay_ms: u32,
}

impl Item {
    pub fn payload(&self) -> Vec<u8> {
        payload(self.tag, self.len)
    }
}

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
    /// Possible effects of failed ops on known messages.
    pub doubt: Vec<(u64, Seen)>,
    /// Messages of failed enqueues, one list per call: each call's messages
    /// may all exist or none.
    pub doubt_items: Vec<Vec<Item>>,
    pub doubt_acks: u64,
    pub max_deliveries: u32,
    pub visibility_ms: u64,
    /// Healthy messages a dequeue dead-lettered instead of delivering (a
    /// read of their record failed).
    pub read_error_dead: u64,
    /// The clock as of the last op.
    pub now: u64,
}

impl Model {
    pub fn new(max_deliveries: u32, visibility_ms: u64, now: u64) -> Model {
        Model {
            max_deliveries,
            visibility_ms,
            now,
            ..Model::default()
        }
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
        self.change(id, |m| m.at = at);
    }

    /// An enqueue returned this id for `item`.
    pub fn add(&mut self, id: u64, item: Item) {
        let at = if item.delay_ms > 0 {
            At::Delayed(self.now + u64::from(item.delay_ms))
        } else {
            At::Ready
        };
        assert!(
            !self.msgs.contains_key(&id),
            "id {id} handed out twice (model: {:?})",
            self.msgs[&id]
        );
        self.msgs.insert(
            id,
            Msg {
                tag: item.tag,
                priority: item.priority,
                len: item.len,
                attempt: 0,
                at: At::Gone,
                hist: Vec::new(),
            },
        );
        self.place(id, at);
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
    /// the workload never uses them again.
    pub fn forget_expiring_receipts(&mut self, now: u64) {
        let in_flight = &self.in_flight;
        self.outstanding
            .retain(|(id, _)| in_flight.get(id).is_some_and(|&d| d > now));
    }

    fn auto_dead(&self, id: u64) -> bool {
        self.max_deliveries > 0 && self.msgs[&id].attempt >= self.max_deliveries
    }

    /// A dequeue of up to `n` returned `got`. Checks each delivery against
    /// the model's prediction (strict priority, then id order; messages past
    /// `max_deliveries` dead-lettered on the way) and applies it.
    pub fn dequeue_ok(&mut self, n: usize, got: &[Delivery]) -> Result<(), String> {
        let deadline = self.now + self.visibility_ms;
        for d in got {
            let id = u64::from(d.id);
            loop {
                let Some(&(_, c)) = self.ready.first() else {
                    return Err(format!("delivered {id}, model has nothing ready"));
                };
                if self.auto_dead(c) {
                    self.place(c, At::Dead);
                    continue;
                }
                if c != id {
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
                    return Err(format!("delivery of {id}: payload differs (CORRUPT)"));
                }
                self.change(c, |m| m.attempt += 1);
                self.place(c, At::InFlight(deadline));
                self.outstanding.push((c, d.receipt));
                break;
            }
        }
        if got.len() < n {
            // The queue ran out of ready messages: the rest were dead-lettered.
            while let Some(&(_, c)) = self.ready.first() {
                if self.auto_dead(c) {
                    self.place(c, At::Dead);
                } else {
                    self.skip_unreadable(c);
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

    pub fn ack_ok(&mut self, ids: &[u64]) {
        for &id in ids {
            self.acks.push(self.seq);
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

    pub fn dead_letter_ok(&mut self, id: u64) {
        self.place(id, At::Dead);
    }

    pub fn dead_letter_doubt(&mut self, id: u64) {
        let a = self.msgs[&id].attempt;
        self.doubt.push((id, Seen::Dead(a)));
    }

    pub fn dead_count(&self) -> u64 {
        self.dead.len() as u64
    }

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

    /// The queue was reopened: leases released, due delays matured.
    pub fn reopened(&mut self, now: u64) {
        let leased: Vec<u64> = self.in_flight.keys().copied().collect();
        for id in leased {
            self.place(id, At::Ready);
        }
        self.outstanding.clear();
        self.tick(now);
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

    /// Counts the live queue should report: ready (due now), in flight,
    /// delayed, dead.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.ready.len() as u64,
            self.in_flight.len() as u64,
            self.delayed.len() as u64,
            self.dead.len() as u64,
        )
    }
}
