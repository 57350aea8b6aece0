//! The in-memory index (the bitcask "keydir"): where every live message is
//! and what state it is in.
//!
//! Invariants:
//!
//! A. The index changes only through [`Index::add`] (a record found in a
//!    segment or just appended) and [`Index::apply`] (a journal entry). The
//!    same two calls run live and during replay, so the state after recovery
//!    is the state the live queue had, minus what was never durable.
//! B. Each live message is in exactly one place: a ready lane, the delayed
//!    set, the in-flight set or the dead letters. The per-segment live count
//!    counts exactly those messages.
//! C. Within a lane, `pop` returns the lowest id first, so never-delivered
//!    messages leave in enqueue order.
//!
//! Memory: a ready message costs one 16-byte slot (id, segment, offset) in
//! its lane; everything else about it (payload, times) stays on disk. Only
//! messages that were delivered before keep an attempt count in a side map.
//! `apply` is lenient: an entry about a message the index does not hold (its
//! record was never durable, or it is already finished) changes nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Maps keyed by message id: ids are the queue's own sequential numbers, not
/// attacker-chosen keys, so the fast multiplicative Fx hash is safe here
/// and cheaper than SipHash on the dequeue and ack paths.
type IdMap<V> = rustc_hash::FxHashMap<u64, V>;

use crate::clock::Timestamp;
use crate::codec::checkpoint::{CheckpointMessage, CheckpointState};
use crate::codec::entry::{Entry, Kind};
use crate::message::{DeadLetter, MessageId};

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub segment: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    loc: Loc,
}

/// One priority's ready messages: `fresh` holds never-delivered messages in
/// id order (appends only); `others` holds messages that came back (nacks,
/// expiries, matured delays, redrives), also ordered by id.
#[derive(Debug, Default)]
struct Lane {
    fresh: VecDeque<Slot>,
    others: BTreeMap<u64, Loc>,
}

impl Lane {
    fn insert(&mut self, id: u64, loc: Loc) {
        if self.fresh.back().is_none_or(|b| b.id < id) {
            self.fresh.push_back(Slot { id, loc });
        } else {
            self.others.insert(id, loc);
        }
    }

    fn peek(&self) -> Option<(u64, Loc)> {
        let f = self.fresh.front().map(|s| (s.id, s.loc));
        let o = self.others.first_key_value().map(|(&id, &loc)| (id, loc));
        match (f, o) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    fn find(&self, id: u64) -> Option<Loc> {
        if let Some(loc) = self.others.get(&id) {
            return Some(*loc);
        }
        let i = self.fresh.binary_search_by_key(&id, |s| s.id).ok()?;
        self.fresh.get(i).map(|s| s.loc)
    }

    fn remove(&mut self, id: u64) -> Option<Loc> {
        if self.fresh.front().is_some_and(|s| s.id == id) {
            return self.fresh.pop_front().map(|s| s.loc);
        }
        if let Some(loc) = self.others.remove(&id) {
            return Some(loc);
        }
        let i = self.fresh.binary_search_by_key(&id, |s| s.id).ok()?;
        self.fresh.remove(i).map(|s| s.loc)
    }

    fn len(&self) -> usize {
        self.fresh.len() + self.others.len()
    }
}

/// The ready lanes with a bitmap of the non-empty ones, so finding the
/// highest non-empty priority costs four word tests whatever is in use.
#[derive(Debug)]
struct Ready {
    lanes: Vec<Lane>,
    nonempty: [u64; 4],
    count: u64,
}

impl Ready {
    fn new() -> Self {
        Ready {
            lanes: (0..256).map(|_| Lane::default()).collect(),
            nonempty: [0; 4],
            count: 0,
        }
    }

    fn insert(&mut self, priority: u8, id: u64, loc: Loc) {
        self.lanes[usize::from(priority)].insert(id, loc);
        self.nonempty[usize::from(priority / 64)] |= 1 << (priority % 64);
        self.count += 1;
    }

    fn remove(&mut self, priority: u8, id: u64) -> Option<Loc> {
        let lane = &mut self.lanes[usize::from(priority)];
        let loc = lane.remove(id)?;
        if lane.len() == 0 {
            self.nonempty[usize::from(priority / 64)] &= !(1 << (priority % 64));
        }
        self.count -= 1;
        Some(loc)
    }
}

/// A leased message.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub loc: Loc,
    pub priority: u8,
    pub attempt: u32,
    pub deadline: u64,
    /// Unique per delivery in this process; receipts carry it.
    pub lease: u64,
}

#[derive(Debug, Clone)]
struct Delayed {
    loc: Loc,
    priority: u8,
}

/// A dead letter's index entry.
#[derive(Debug, Clone)]
pub(crate) struct Dead {
    pub loc: Loc,
    pub priority: u8,
    pub attempt: u32,
    pub at: u64,
    pub reason: String,
}

/// A message a consumer may take next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: u64,
    pub priority: u8,
    pub loc: Loc,
    /// Deliveries it had so far.
    pub attempt: u32,
}

/// Receipts must never match a delivery of another queue handle in this
/// process, so lease numbers come from one process-wide counter.
static NEXT_LEASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Index {
    ready: Ready,
    /// Attempts of ready or delayed messages delivered before.
    attempts: IdMap<u32>,
    /// Delayed messages in ready-at order, and each one's ready-at time.
    delayed: BTreeMap<(u64, u64), Delayed>,
    delayed_at: IdMap<u64>,
    in_flight: IdMap<Lease>,
    /// In-flight messages in deadline order.
    deadlines: BTreeSet<(u64, u64)>,
    dead: BTreeMap<u64, Dead>,
    /// Live messages per segment.
    live: BTreeMap<u32, u64>,
    acked_total: u64,
}

impl Index {
    pub fn new(acked_total: u64) -> Self {
        Index {
            ready: Ready::new(),
            attempts: IdMap::default(),
            delayed: BTreeMap::new(),
            delayed_at: IdMap::default(),
            in_flight: IdMap::default(),
            deadlines: BTreeSet::new(),
            dead: BTreeMap::new(),
            live: BTreeMap::new(),
            acked_total,
        }
    }

    /// A message record exists at `loc`: it is ready at `ready_at`
    /// (delayed until then), with `attempt` deliveries behind it.
    pub fn add(&mut self, id: u64, priority: u8, loc: Loc, ready_at: u64, attempt: u32) {
        self.count_live(loc.segment, 1);
        self.place(id, priority, loc, ready_at, attempt);
    }

    /// Count `n` more live messages in `segment`: bulk loaders place a run
    /// of messages of one segment with the `place*` calls and count them
    /// once, saving a map lookup per message when opening a large queue.
    pub fn count_live(&mut self, segment: u32, n: u64) {
        if n > 0 {
            *self.live.entry(segment).or_insert(0) += n;
        }
    }

    /// [`Index::add`] without the live count (see [`Index::count_live`]):
    /// for bulk loading, and for a message counted live already that goes
    /// back among the waiting.
    pub fn place(&mut self, id: u64, priority: u8, loc: Loc, ready_at: u64, attempt: u32) {
        if attempt > 0 {
            self.attempts.insert(id, attempt);
        }
        if ready_at > 0 {
            self.delayed
                .insert((ready_at, id), Delayed { loc, priority });
            self.delayed_at.insert(id, ready_at);
        } else {
            self.ready.insert(priority, id, loc);
        }
    }

    /// Set the lifetime acked count (from a checkpoint).
    pub fn set_acked_total(&mut self, n: u64) {
        self.acked_total = n;
    }

    /// Set a dead letter's reason (checkpoints store reasons apart).
    pub fn set_reason(&mut self, id: u64, reason: String) {
        if let Some(d) = self.dead.get_mut(&id) {
            d.reason = reason;
        }
    }

    /// Where a live message's record is, if it is live.
    pub fn locate(&self, id: u64, priority: u8) -> Option<Loc> {
        if let Some(l) = self.in_flight.get(&id) {
            return Some(l.loc);
        }
        if let Some(d) = self.dead.get(&id) {
            return Some(d.loc);
        }
        if let Some(at) = self.delayed_at.get(&id) {
            return self.delayed.get(&(*at, id)).map(|d| d.loc);
        }
        self.ready.lanes[usize::from(priority)].find(id)
    }

    /// Segments holding the next message of some lane: consumers will
    /// reach them soon, so moving their records would be wasted work.
    pub fn lane_head_segments(&self) -> Vec<u32> {
        self.ready
            .lanes
            .iter()
            .filter_map(Lane::peek)
            .map(|(_, loc)| loc.segment)
            .collect()
    }

    /// A message restored from a checkpoint as in flight: it is leased
    /// until replay ends (see [`Index::release_all_in_flight`]). Not counted
    /// live: see [`Index::count_live`].
    pub fn place_in_flight(
        &mut self,
        id: u64,
        priority: u8,
        loc: Loc,
        attempt: u32,
        deadline: u64,
    ) {
        self.put_lease(id, loc, priority, attempt, deadline);
    }

    /// A dead letter restored from a checkpoint. Not counted live: see
    /// [`Index::count_live`].
    pub fn place_dead(&mut self, id: u64, dead: Dead) {
        self.dead.insert(id, dead);
    }

    /// Apply one journal entry. Returns the segment whose last live message
    /// this entry finished, if any.
    pub fn apply(&mut self, e: &Entry) -> Option<u32> {
        match e.kind {
            Kind::Delivered => {
                // A message still leased here was released by a restart in
                // between (releases at open are not journaled).
                let loc = match self.take_lease(e.id) {
                    Some(l) => l.loc,
                    None => self.take_waiting(e.id, e.priority)?.0,
                };
                self.put_lease(e.id, loc, e.priority, e.attempt, e.time_ms);
                None
            }
            Kind::LeaseExtended => {
                let lease = self.in_flight.get_mut(&e.id)?;
                self.deadlines.remove(&(lease.deadline, e.id));
                lease.deadline = e.time_ms;
                self.deadlines.insert((e.time_ms, e.id));
                None
            }
            Kind::Nacked | Kind::Expired => {
                let lease = self.take_lease(e.id)?;
                let ready_at = if e.kind == Kind::Nacked { e.time_ms } else { 0 };
                // A nack carries the attempt count to keep: the lease's, or
                // the one before it when a delivery is given back unread.
                let attempt = if e.kind == Kind::Nacked {
                    e.attempt.min(lease.attempt)
                } else {
                    lease.attempt
                };
                self.place(e.id, lease.priority, lease.loc, ready_at, attempt);
                None
            }
            Kind::Acked => {
                // Counted even when the message's record is gone (its
                // segment was deleted): each message is acked at most once.
                self.acked_total = self.acked_total.saturating_add(1);
                let loc = self.take_any(e.id, e.priority)?;
                self.finish(loc)
            }
            Kind::DeadLettered => {
                let (loc, attempt) = match self.take_lease(e.id) {
                    Some(l) => (l.loc, l.attempt),
                    None => self.take_waiting(e.id, e.priority)?,
                };
                let dead = Dead {
                    loc,
                    priority: e.priority,
                    attempt,
                    at: e.time_ms,
                    reason: e.reason.clone(),
                };
                self.dead.insert(e.id, dead);
                None
            }
            Kind::Redriven => {
                let d = self.dead.remove(&e.id)?;
                self.ready.insert(d.priority, e.id, d.loc);
                None
            }
            Kind::Purged => {
                let d = self.dead.remove(&e.id)?;
                self.finish(d.loc)
            }
            Kind::IdsReserved => None,
        }
    }

    fn put_lease(&mut self, id: u64, loc: Loc, priority: u8, attempt: u32, deadline: u64) {
        let lease = NEXT_LEASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.deadlines.insert((deadline, id));
        self.in_flight.insert(
            id,
            Lease {
                loc,
                priority,
                attempt,
                deadline,
                lease,
            },
        );
    }

    fn take_lease(&mut self, id: u64) -> Option<Lease> {
        let lease = self.in_flight.remove(&id)?;
        self.deadlines.remove(&(lease.deadline, id));
        Some(lease)
    }

    /// Remove a ready or delayed message; returns its location and attempts.
    fn take_waiting(&mut self, id: u64, priority: u8) -> Option<(Loc, u32)> {
        let loc = match self.ready.remove(priority, id) {
            Some(loc) => loc,
            None => {
                let at = self.delayed_at.remove(&id)?;
                self.delayed.remove(&(at, id))?.loc
            }
        };
        Some((loc, self.attempts.remove(&id).unwrap_or(0)))
    }

    /// Remove a message wherever it is (acks are accepted in any state).
    fn take_any(&mut self, id: u64, priority: u8) -> Option<Loc> {
        if let Some(l) = self.take_lease(id) {
            return Some(l.loc);
        }
        if let Some(d) = self.dead.remove(&id) {
            return Some(d.loc);
        }
        self.take_waiting(id, priority).map(|(loc, _)| loc)
    }

    fn finish(&mut self, loc: Loc) -> Option<u32> {
        let n = self.live.get_mut(&loc.segment)?;
        *n -= 1;
        (*n == 0).then(|| {
            self.live.remove(&loc.segment);
            loc.segment
        })
    }

    /// Move delayed messages whose time has come to their lanes.
    pub fn promote_due(&mut self, now: u64) {
        while let Some((&(at, id), _)) = self.delayed.first_key_value() {
            if at > now {
                break;
            }
            if let Some(d) = self.delayed.remove(&(at, id)) {
                self.delayed_at.remove(&id);
                self.ready.insert(d.priority, id, d.loc);
            }
        }
    }

    /// The earliest delay or lease deadline, when a waiting consumer must
    /// look again.
    pub fn next_timer(&self) -> Option<u64> {
        let delay = self.delayed.first_key_value().map(|(&(at, _), _)| at);
        let lease = self.deadlines.first().map(|&(at, _)| at);
        match (delay, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Leases whose deadline is at or before `now`, earliest first.
    pub fn expired(&self, now: u64) -> Vec<(u64, Lease)> {
        self.deadlines
            .range(..=(now, u64::MAX))
            .filter_map(|&(_, id)| self.in_flight.get(&id).map(|l| (id, l.clone())))
            .collect()
    }

    /// The non-empty ready lanes as a 256-bit map.
    pub fn nonempty(&self) -> [u64; 4] {
        self.ready.nonempty
    }

    /// The next message of the highest non-empty lane, without taking it.
    #[cfg(test)]
    pub fn peek(&self) -> Option<Candidate> {
        self.peek_lane(crate::lanes::highest(self.ready.nonempty)?)
    }

    /// The next message of lane `priority`, without taking it.
    pub fn peek_lane(&self, priority: u8) -> Option<Candidate> {
        let (id, loc) = self.ready.lanes[usize::from(priority)].peek()?;
        let attempt = self.attempts.get(&id).copied().unwrap_or(0);
        Some(Candidate {
            id,
            priority,
            loc,
            attempt,
        })
    }

    /// The lease of an in-flight message.
    pub fn lease(&self, id: u64) -> Option<&Lease> {
        self.in_flight.get(&id)
    }

    /// A dead letter.
    pub fn dead(&self, id: u64) -> Option<&Dead> {
        self.dead.get(&id)
    }

    /// All dead letters in id order.
    pub fn dead_letters(&self) -> impl Iterator<Item = (u64, &Dead)> {
        self.dead.iter().map(|(&id, d)| (id, d))
    }

    /// The dead letters as users see them, in id order; `enqueued_ms` reads
    /// a record's enqueue time from its location (0 when unreadable).
    pub fn dead_letter_list(&self, enqueued_ms: impl Fn(Loc) -> u64) -> Vec<DeadLetter> {
        self.dead_letters()
            .map(|(id, d)| DeadLetter {
                id: MessageId(id),
                priority: d.priority,
                attempts: d.attempt,
                reason: d.reason.clone(),
                enqueued_at: Timestamp(enqueued_ms(d.loc)),
                dead_at: Timestamp(d.at),
            })
            .collect()
    }

    /// Make every in-flight message ready again (on open: its consumer is
    /// gone with the process that leased it). Returns how many.
    pub fn release_all_in_flight(&mut self) -> u64 {
        let leases: Vec<(u64, Lease)> = self.in_flight.drain().collect();
        self.deadlines.clear();
        let n = leases.len() as u64;
        for (id, l) in leases {
            self.place(id, l.priority, l.loc, 0, l.attempt);
        }
        n
    }

    /// A live message's record moved to `loc` (relocation).
    pub fn relocate(&mut self, id: u64, priority: u8, to: Loc) -> bool {
        let from = if let Some(l) = self.in_flight.get_mut(&id) {
            std::mem::replace(&mut l.loc, to)
        } else if let Some(d) = self.dead.get_mut(&id) {
            std::mem::replace(&mut d.loc, to)
        } else if let Some(&at) = self.delayed_at.get(&id) {
            match self.delayed.get_mut(&(at, id)) {
                Some(d) => std::mem::replace(&mut d.loc, to),
                None => return false,
            }
        } else {
            let lane = &mut self.ready.lanes[usize::from(priority)];
            match lane.remove(id) {
                Some(old) => {
                    lane.insert(id, to);
                    old
                }
                None => return false,
            }
        };
        if from.segment != to.segment {
            *self.live.entry(to.segment).or_insert(0) += 1;
            if let Some(n) = self.live.get_mut(&from.segment) {
                *n = n.saturating_sub(1);
            }
        }
        true
    }

    /// Segments holding live messages.
    pub fn segments_with_live(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.keys().copied()
    }

    /// Forget every message whose record is in `segment` (the file is gone);
    /// returns how many. Walks the whole index: recovery only.
    pub fn drop_segment(&mut self, segment: u32) -> u64 {
        let mut gone = Vec::new();
        self.snapshot(|m| {
            if m.segment == segment {
                gone.push((m.id, m.priority));
            }
        });
        for &(id, priority) in &gone {
            if self.take_lease(id).is_none() && self.dead.remove(&id).is_none() {
                self.take_waiting(id, priority);
            }
            self.attempts.remove(&id);
        }
        self.live.remove(&segment);
        gone.len() as u64
    }

    /// Live messages in `segment`.
    pub fn live_in(&self, segment: u32) -> u64 {
        self.live.get(&segment).copied().unwrap_or(0)
    }

    /// Counts for stats: ready, in flight, delayed, dead.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.ready.count,
            self.in_flight.len() as u64,
            self.delayed.len() as u64,
            self.dead.len() as u64,
        )
    }

    /// Ready messages per non-empty lane, highest priority first.
    pub fn ready_per_lane(&self) -> Vec<(u8, u64)> {
        (0..=255u8)
            .rev()
            .filter_map(|p| {
                let n = self.ready.lanes[usize::from(p)].len();
                (n > 0).then_some((p, n as u64))
            })
            .collect()
    }

    /// The lowest-id ready message (the oldest), if any.
    pub fn oldest_ready(&self) -> Option<(u64, Loc)> {
        self.ready
            .lanes
            .iter()
            .filter_map(Lane::peek)
            .min_by_key(|&(id, _)| id)
    }

    pub fn acked_total(&self) -> u64 {
        self.acked_total
    }

    /// Every live message as a checkpoint stores it. Ready messages come
    /// lane by lane in id order, so a reload appends them in order.
    pub fn snapshot(&self, mut out: impl FnMut(CheckpointMessage)) {
        let mut emit = |id, priority, loc: Loc, attempt, state, time_ms| {
            out(CheckpointMessage {
                id,
                time_ms,
                segment: loc.segment,
                offset: loc.offset,
                attempt,
                priority,
                state,
            })
        };
        for (p, lane) in self.ready.lanes.iter().enumerate() {
            let p = p as u8;
            for s in &lane.fresh {
                let attempt = self.attempt_of(s.id);
                emit(s.id, p, s.loc, attempt, CheckpointState::Pending, 0);
            }
            for (&id, &loc) in &lane.others {
                let attempt = self.attempt_of(id);
                emit(id, p, loc, attempt, CheckpointState::Pending, 0);
            }
        }
        for (&(at, id), d) in &self.delayed {
            let attempt = self.attempt_of(id);
            emit(id, d.priority, d.loc, attempt, CheckpointState::Pending, at);
        }
        for (&id, l) in &self.in_flight {
            let (p, loc, attempt) = (l.priority, l.loc, l.attempt);
            emit(id, p, loc, attempt, CheckpointState::InFlight, l.deadline);
        }
        for (&id, d) in &self.dead {
            emit(
                id,
                d.priority,
                d.loc,
                d.attempt,
                CheckpointState::Dead,
                d.at,
            );
        }
    }

    /// Every live message's id and location.
    pub fn locations(&self, mut out: impl FnMut(u64, Loc)) {
        self.snapshot(|m| {
            out(
                m.id,
                Loc {
                    segment: m.segment,
                    offset: m.offset,
                },
            )
        });
    }

    fn attempt_of(&self, id: u64) -> u32 {
        self.attempts.get(&id).copied().unwrap_or(0)
    }

    /// Number of live messages.
    pub fn live_count(&self) -> u64 {
        self.live.values().sum()
    }

    /// Ready messages in the order strict scheduling delivers them: the
    /// highest priority first, by id within a lane; only lane `only` when
    /// given. Read-only (for inspection).
    pub fn ready_in_order(&self, only: Option<u8>) -> impl Iterator<Item = Candidate> + '_ {
        let lanes: Vec<u8> = match only {
            Some(p) => vec![p],
            None => (0..=255u8).rev().collect(),
        };
        lanes.into_iter().flat_map(move |p| {
            let lane = &self.ready.lanes[usize::from(p)];
            let mut fresh = lane.fresh.iter().map(|s| (s.id, s.loc)).peekable();
            let mut others = lane.others.iter().map(|(&id, &loc)| (id, loc)).peekable();
            std::iter::from_fn(move || {
                let take_fresh = match (fresh.peek(), others.peek()) {
                    (Some(a), Some(b)) => a.0 < b.0,
                    (a, _) => a.is_some(),
                };
                if take_fresh {
                    fresh.next()
                } else {
                    others.next()
                }
            })
            .map(move |(id, loc)| Candidate {
                id,
                priority: p,
                loc,
                attempt: self.attempt_of(id),
            })
        })
    }

    /// Where a live message is and in what state, wherever it is. Walks the
    /// ready lanes when it is in none of the other sets: inspection only.
    pub fn find(&self, id: u64) -> Option<Found<'_>> {
        if let Some(l) = self.in_flight.get(&id) {
            return Some(Found::InFlight(l));
        }
        if let Some(d) = self.dead.get(&id) {
            return Some(Found::Dead(d));
        }
        if let Some(&at) = self.delayed_at.get(&id) {
            let d = self.delayed.get(&(at, id))?;
            return Some(Found::Delayed {
                priority: d.priority,
                loc: d.loc,
                attempt: self.attempt_of(id),
                ready_at: at,
            });
        }
        (0..=255u8).find_map(|p| {
            let loc = self.ready.lanes[usize::from(p)].find(id)?;
            Some(Found::Ready {
                priority: p,
                loc,
                attempt: self.attempt_of(id),
            })
        })
    }
}

/// A live message found by [`Index::find`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found<'a> {
    /// In lane `priority`, ready to be delivered.
    Ready {
        priority: u8,
        loc: Loc,
        attempt: u32,
    },
    /// Waiting for its delay (or a nack's delay) to pass.
    Delayed {
        priority: u8,
        loc: Loc,
        attempt: u32,
        ready_at: u64,
    },
    /// Leased to a consumer.
    InFlight(&'a Lease),
    /// A dead letter.
    Dead(&'a Dead),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(o: u32) -> Loc {
        Loc {
            segment: 1,
            offset: o,
        }
    }

    #[test]
    fn higher_priority_first_then_id_order() {
        let mut ix = Index::new(0);
        ix.add(1, 0, loc(1), 0, 0);
        ix.add(2, 9, loc(2), 0, 0);
        ix.add(3, 9, loc(3), 0, 0);
        ix.add(4, 200, loc(4), 0, 0);
        let mut order = Vec::new();
        while let Some(c) = ix.peek() {
            order.push(c.id);
            ix.apply(&Entry::new(Kind::Delivered, c.id, c.priority, 100, 1));
        }
        assert_eq!(order, vec![4, 2, 3, 1]);
        assert_eq!(ix.counts(), (0, 4, 0, 0));
    }

    #[test]
    fn expired_message_returns_in_id_order_with_its_attempts() {
        let mut ix = Index::new(0);
        ix.add(1, 0, loc(1), 0, 0);
        ix.add(2, 0, loc(2), 0, 0);
        ix.apply(&Entry::new(Kind::Delivered, 1, 0, 100, 1));
        ix.apply(&Entry::new(Kind::Expired, 1, 0, 100, 1));
        let c = ix.peek().unwrap();
        assert_eq!((c.id, c.attempt), (1, 1));
    }

    #[test]
    fn ack_finishes_segment_and_unknown_entries_change_no_message() {
        let mut ix = Index::new(0);
        ix.add(1, 0, loc(1), 0, 0);
        // An ack of a message whose record is gone (its segment was deleted)
        // still counts: the live queue writes one Acked entry per message.
        assert_eq!(ix.apply(&Entry::new(Kind::Acked, 99, 0, 0, 0)), None);
        assert_eq!(ix.acked_total(), 1);
        assert_eq!(ix.counts(), (1, 0, 0, 0));
        ix.apply(&Entry::new(Kind::Delivered, 1, 0, 100, 1));
        assert_eq!(ix.apply(&Entry::new(Kind::Acked, 1, 0, 0, 0)), Some(1));
        assert_eq!(ix.acked_total(), 2);
        assert_eq!(ix.counts(), (0, 0, 0, 0));
    }

    #[test]
    fn nack_with_delay_waits_then_promotes() {
        let mut ix = Index::new(0);
        ix.add(1, 3, loc(1), 0, 0);
        ix.apply(&Entry::new(Kind::Delivered, 1, 3, 100, 1));
        ix.apply(&Entry::new(Kind::Nacked, 1, 3, 500, 1));
        assert!(ix.peek().is_none());
        assert_eq!(ix.counts(), (0, 0, 1, 0));
        ix.promote_due(499);
        assert!(ix.peek().is_none());
        ix.promote_due(500);
        assert_eq!(ix.peek().unwrap().id, 1);
    }

    #[test]
    fn ready_in_order_follows_strict_delivery_and_find_sees_every_state() {
        let mut ix = Index::new(0);
        for (id, p) in [(1, 0), (2, 9), (3, 9), (4, 200), (5, 9)] {
            ix.add(id, p, loc(id as u32), 0, 0);
        }
        // 2 comes back after 3 was fresh: served by id among the lane.
        ix.apply(&Entry::new(Kind::Delivered, 2, 9, 100, 1));
        ix.apply(&Entry::new(Kind::Nacked, 2, 9, 0, 1));
        let order: Vec<u64> = ix.ready_in_order(None).map(|c| c.id).collect();
        assert_eq!(order, vec![4, 2, 3, 5, 1]);
        let mut strict = Vec::new();
        while let Some(c) = ix.peek() {
            strict.push(c.id);
            ix.apply(&Entry::new(Kind::Delivered, c.id, c.priority, 100, 1));
        }
        assert_eq!(strict, order);
        let mut ix = Index::new(0);
        ix.add(1, 3, loc(1), 0, 0);
        ix.add(2, 3, loc(2), 500, 0);
        ix.add(3, 3, loc(3), 0, 0);
        ix.apply(&Entry::new(Kind::Delivered, 3, 3, 100, 1));
        assert_eq!(
            ix.ready_in_order(Some(3)).map(|c| c.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(ix.ready_in_order(Some(4)).next().is_none());
        assert!(matches!(ix.find(1), Some(Found::Ready { priority: 3, .. })));
        assert!(matches!(
            ix.find(2),
            Some(Found::Delayed { ready_at: 500, .. })
        ));
        assert!(matches!(ix.find(3), Some(Found::InFlight(l)) if l.deadline == 100));
        assert!(ix.find(4).is_none());
    }

    #[test]
    fn dead_letter_redrive_and_purge() {
        let mut ix = Index::new(0);
        ix.add(1, 0, loc(1), 0, 0);
        let mut e = Entry::new(Kind::DeadLettered, 1, 0, 7, 0);
        e.reason = "bad".into();
        ix.apply(&e);
        assert_eq!(ix.dead(1).unwrap().reason, "bad");
        ix.apply(&Entry::new(Kind::Redriven, 1, 0, 8, 0));
        assert_eq!(ix.peek().unwrap().attempt, 0);
        ix.apply(&e);
        assert_eq!(ix.apply(&Entry::new(Kind::Purged, 1, 0, 9, 0)), Some(1));
    }
}
