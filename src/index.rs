//! The in-memory index (the bitcask "keydir"): where every live message is
//! and what state it is in.
//!
//! Invariants:
//!
//! A. The index changes only through [`Index::place_record`] (a message
//!    record found in a segment or just appended), [`Index::add_result`] (a
//!    result record: the message is completed) and [`Index::apply`] (a
//!    journal entry). The same calls run live and during replay, so the
//!    state after recovery is the state the live queue had, minus what was
//!    never durable. Time-driven changes that are not journaled (matured
//!    delays, forgotten keys) are recomputed from the clock after replay.
//! B. Each live message is in exactly one place: a ready lane, the delayed
//!    set, the in-flight set, the dead letters or the completed results.
//!    The per-segment live count counts exactly those messages' records.
//! C. Within a lane, messages with a deadline leave first, earliest
//!    deadline first (ties by id); then the others, lowest id first, so
//!    never-delivered messages leave in enqueue order.
//! D. The lifetime counters count each journal entry and result record
//!    once: an `Acked`, `DeadlineMissed` or `DeadExpired` entry counts
//!    whether or not the message is found (its segment may be gone, or a
//!    result record replayed first finished it), and a result record counts
//!    unless it is a copy of one already held. A retention cut counts what
//!    it finds, so the engine keeps the segments it cut from until a
//!    checkpoint holds the counters ([`Index::take_cut_segments`]).
//!
//! Memory: a ready message without a deadline costs one 16-byte slot (id,
//! segment, offset) in its lane; everything else about it (payload, times)
//! stays on disk. Only messages that were delivered before keep an attempt
//! count in a side map. A message with a deadline costs a B-tree entry in
//! its lane's deadline order and one in the deadline side map instead
//! (about 64 bytes), and one more B-tree entry while it is delayed.
//! Retention needs no per-message memory: ids grow with time, so a short
//! list of marks (end id, time) maps a retention cutoff to an id bound
//! ([`Marks`]).
//! `apply` is lenient: an entry about a message the index does not hold (its
//! record was never durable, or it is already finished) changes no message
//! (but counts, invariant D).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Maps keyed by message id: ids are the queue's own sequential numbers, not
/// attacker-chosen keys, so the fast multiplicative Fx hash is safe here
/// and cheaper than SipHash on the dequeue and ack paths.
type IdMap<V> = rustc_hash::FxHashMap<u64, V>;

use crate::clock::Timestamp;
use crate::codec::checkpoint::{CheckpointMessage, CheckpointState};
use crate::codec::entry::{Entry, Kind, DEADLINE_MISSED};
use crate::codec::record::RecordHeader;
use crate::keys::Keys;
use crate::message::{DeadLetter, LaneCount, MessageId, Stats};

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

/// One priority's ready messages: `urgent` holds those with a deadline in
/// (deadline, id) order and leaves first; `fresh` holds never-delivered
/// messages in id order (appends only); `others` holds messages that came
/// back (nacks, expiries, matured delays, redrives), also ordered by id.
#[derive(Debug, Default)]
struct Lane {
    urgent: BTreeMap<(u64, u64), Loc>,
    fresh: VecDeque<Slot>,
    others: BTreeMap<u64, Loc>,
}

impl Lane {
    /// Insert a message; `deadline` is 0 for none.
    fn insert(&mut self, id: u64, loc: Loc, deadline: u64) {
        if deadline > 0 {
            self.urgent.insert((deadline, id), loc);
        } else if self.fresh.back().is_none_or(|b| b.id < id) {
            self.fresh.push_back(Slot { id, loc });
        } else {
            self.others.insert(id, loc);
        }
    }

    /// The next message: the earliest deadline, else the lowest id.
    fn peek(&self) -> Option<(u64, Loc)> {
        if let Some((&(_, id), &loc)) = self.urgent.first_key_value() {
            return Some((id, loc));
        }
        let f = self.fresh.front().map(|s| (s.id, s.loc));
        let o = self.others.first_key_value().map(|(&id, &loc)| (id, loc));
        match (f, o) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Remove the entry [`Lane::peek`] gives, whatever its key.
    fn pop_head(&mut self) -> Option<(u64, Loc)> {
        if let Some(((_, id), loc)) = self.urgent.pop_first() {
            return Some((id, loc));
        }
        let f = self.fresh.front().map(|s| s.id);
        let o = self.others.first_key_value().map(|(&id, _)| id);
        match (f, o) {
            (Some(a), Some(b)) if b < a => self.others.pop_first(),
            (Some(_), _) => self.fresh.pop_front().map(|s| (s.id, s.loc)),
            (None, Some(_)) => self.others.pop_first(),
            (None, None) => None,
        }
    }

    fn find(&self, id: u64, deadline: u64) -> Option<Loc> {
        if deadline > 0 {
            return self.urgent.get(&(deadline, id)).copied();
        }
        if let Some(loc) = self.others.get(&id) {
            return Some(*loc);
        }
        let i = self.fresh.binary_search_by_key(&id, |s| s.id).ok()?;
        self.fresh.get(i).map(|s| s.loc)
    }

    fn remove(&mut self, id: u64, deadline: u64) -> Option<Loc> {
        if deadline > 0 {
            return self.urgent.remove(&(deadline, id));
        }
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
        self.urgent.len() + self.fresh.len() + self.others.len()
    }

    /// Remove every message with an id below `below`; returns them.
    fn cut(&mut self, below: u64) -> Vec<(u64, Loc, u64)> {
        let mut out = Vec::new();
        while self.fresh.front().is_some_and(|s| s.id < below) {
            if let Some(s) = self.fresh.pop_front() {
                out.push((s.id, s.loc, 0));
            }
        }
        let keep = self.others.split_off(&below);
        out.extend(self.others.iter().map(|(&id, &loc)| (id, loc, 0)));
        self.others = keep;
        self.urgent.retain(|&(deadline, id), loc| {
            let gone = id < below;
            if gone {
                out.push((id, *loc, deadline));
            }
            !gone
        });
        out
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

    fn insert(&mut self, priority: u8, id: u64, loc: Loc, deadline: u64) {
        self.lanes[usize::from(priority)].insert(id, loc, deadline);
        self.nonempty[usize::from(priority / 64)] |= 1 << (priority % 64);
        self.count += 1;
    }

    fn remove(&mut self, priority: u8, id: u64, deadline: u64) -> Option<Loc> {
        let lane = &mut self.lanes[usize::from(priority)];
        let loc = lane.remove(id, deadline)?;
        self.after_removal(priority, 1);
        Some(loc)
    }

    fn after_removal(&mut self, priority: u8, n: u64) {
        if self.lanes[usize::from(priority)].len() == 0 {
            self.nonempty[usize::from(priority / 64)] &= !(1 << (priority % 64));
        }
        self.count -= n;
    }

    /// The non-empty lanes, highest first.
    fn nonempty_lanes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8)
            .rev()
            .filter(|&p| self.nonempty[usize::from(p / 64)] & (1 << (p % 64)) != 0)
    }
}

/// Retention marks: (end id, time) pairs, ids ascending, meaning "every
/// message with an id below `end` was enqueued at or before `time`". A new
/// mark starts once the enqueue time has moved `granularity` past the last
/// one; until then the last mark grows. So a retention cutoff maps to an id
/// bound with one search, at the cost of keeping a message up to
/// `granularity` past its retention.
///
/// Marks are forgotten once no message a cut could remove needs them, but
/// a mark whose group holds a dead letter is kept: dead letters are exempt
/// from retention, yet a redriven one is removed by its own mark, within
/// the granularity, not by a later one. So at most one mark per dead letter
/// outlives the cuts.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    marks: VecDeque<(u64, u64)>,
    /// When the last mark's group started; `None` when the last mark is
    /// one kept for a dead letter after its group's successors went (a new
    /// enqueue must not stretch its time).
    last_start: Option<u64>,
    granularity: u64,
}

impl Marks {
    /// Marks whose groups span at most `granularity` ms.
    pub fn new(granularity: u64) -> Marks {
        Marks {
            marks: VecDeque::new(),
            last_start: None,
            granularity,
        }
    }

    /// Note that ids below `end` were enqueued by `at`. Times are kept
    /// monotonic (a clock stepped back makes a mark later, so retention
    /// keeps messages longer, never shorter), so a cutoff maps to a bound
    /// by binary search.
    pub fn note(&mut self, end: u64, at: u64) {
        let at = at.max(self.marks.back().map_or(0, |m| m.1));
        let within = self
            .last_start
            .is_some_and(|start| at < start.saturating_add(self.granularity));
        match self.marks.back_mut() {
            Some(last) if within || end <= last.0 => {
                last.0 = last.0.max(end);
                last.1 = last.1.max(at);
            }
            _ => {
                self.marks.push_back((end, at));
                self.last_start = Some(at);
            }
        }
    }

    /// A mark read from a checkpoint (ids ascending; a damaged one is not
    /// trusted to keep ids and times ascending).
    pub fn restore(&mut self, end: u64, at: u64) {
        let (last_end, last_at) = self.marks.back().copied().unwrap_or((0, 0));
        let at = at.max(last_at);
        if end <= last_end {
            return;
        }
        self.marks.push_back((end, at));
        self.last_start = Some(at);
    }

    /// The id bound below which every message was enqueued at or before
    /// `cutoff`.
    pub fn bound(&self, cutoff: u64) -> u64 {
        let i = self.marks.partition_point(|&(_, at)| at <= cutoff);
        if i == 0 {
            0
        } else {
            self.marks[i - 1].0
        }
    }

    /// When the next mark's messages all pass `retention` (for the timer).
    pub fn next_due(&self, after_bound: u64, retention: u64) -> Option<u64> {
        self.marks
            .iter()
            .find(|&&(end, _)| end > after_bound)
            .map(|&(_, at)| at.saturating_add(retention))
    }

    /// Forget the marks ending at or below `bound`, but those whose group
    /// holds an id `dead` names (a dead letter: see the type's docs). A
    /// group is the ids from the previous mark's end to its own.
    fn forget_below(&mut self, bound: u64, dead: impl Fn(std::ops::Range<u64>) -> bool) {
        let mut kept = Vec::new();
        let mut from = 0;
        let last = self.marks.back().copied();
        while let Some(&(end, at)) = self.marks.front() {
            if end > bound {
                break;
            }
            self.marks.pop_front();
            if dead(from..end) {
                kept.push((end, at));
            }
            from = end;
        }
        for m in kept.into_iter().rev() {
            self.marks.push_front(m);
        }
        if self.marks.back().copied() != last {
            self.last_start = None;
        }
    }

    /// The marks, ids ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.marks.iter().copied()
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

/// A completed message's stored result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completed {
    /// The result record.
    pub loc: Loc,
    pub priority: u8,
    pub attempt: u32,
    /// When it was completed.
    pub at: u64,
}

/// A message a consumer may take next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: u64,
    pub priority: u8,
    pub loc: Loc,
    /// Deliveries it had so far.
    pub attempt: u32,
    /// Its deadline; 0 for none.
    pub deadline: u64,
}

/// Lifetime counters, kept in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Messages acked or completed.
    pub acked: u64,
    /// Messages whose deadline passed before delivery.
    pub deadline_missed: u64,
    /// Messages and results removed by retention.
    pub expired: u64,
    /// Dead letters removed by dead-letter retention.
    pub dead_expired: u64,
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
    /// Deadlines of live, unfinished messages that have one.
    deadlines_of: IdMap<u64>,
    /// Delayed messages in ready-at order, and each one's ready-at time.
    delayed: BTreeMap<(u64, u64), Delayed>,
    delayed_at: IdMap<u64>,
    /// Delayed messages that have a deadline, by when it will have passed
    /// with the message ready (the later of its deadline and its ready-at),
    /// then id: the tender's next look at deadlines may be for one of them.
    delayed_due: BTreeSet<(u64, u64)>,
    in_flight: IdMap<Lease>,
    /// In-flight messages in lease-deadline order.
    lease_order: BTreeSet<(u64, u64)>,
    dead: BTreeMap<u64, Dead>,
    /// Dead letters in dead-lettered-at order (for dead-letter retention).
    dead_order: BTreeSet<(u64, u64)>,
    completed: BTreeMap<u64, Completed>,
    /// Live records per segment.
    live: BTreeMap<u32, u64>,
    totals: Totals,
    /// No message or result a retention cut could remove has an id below
    /// this: the bound of the last cut applied, lowered by a redrive below
    /// it (the next cut is due with the redriven message's mark).
    cut_below: u64,
    /// Segments that retention cuts removed records from, since the owner
    /// last took them ([`Index::take_cut_segments`]).
    cut_from: BTreeSet<u32>,
    marks: Marks,
    keys: Keys,
    /// The highest id ever placed here (any state): a record with a higher
    /// id cannot be one the index holds, so only lower ones are looked up
    /// (see [`Index::place_record`]).
    highest_placed: u64,
}

impl Index {
    /// An empty index whose retention marks span `granularity` ms.
    pub fn new(totals: Totals, granularity: u64) -> Self {
        Index {
            ready: Ready::new(),
            attempts: IdMap::default(),
            deadlines_of: IdMap::default(),
            delayed: BTreeMap::new(),
            delayed_at: IdMap::default(),
            delayed_due: BTreeSet::new(),
            in_flight: IdMap::default(),
            lease_order: BTreeSet::new(),
            dead: BTreeMap::new(),
            dead_order: BTreeSet::new(),
            completed: BTreeMap::new(),
            live: BTreeMap::new(),
            totals,
            cut_below: 0,
            cut_from: BTreeSet::new(),
            marks: Marks::new(granularity),
            keys: Keys::default(),
            highest_placed: 0,
        }
    }

    /// A message record (not a relocated copy, not a result) at `loc`, just
    /// appended or found by a scan; `key` is its idempotency key (empty for
    /// none). Returns whether it is live; the caller counts live records
    /// per segment once per run (see [`Index::count_live`]).
    pub fn place_record(&mut self, h: &RecordHeader, key: &[u8], loc: Loc) -> bool {
        self.marks.note(h.id + 1, h.enqueued_ms);
        if !key.is_empty() {
            self.keys.insert(key, h.id, h.enqueued_ms);
        }
        if h.id < self.cut_below {
            // Below a retention cut already applied: not live.
            return false;
        }
        // Ids are unique: a second record of an id the index holds (the
        // checkpoint's, or an earlier segment's) is damage, and placing it
        // would leave the message in two places, each delivery finding it
        // ready again. The first one found stands. Records come in id
        // order, so this looks up only after damage.
        if h.id <= self.highest_placed && self.find(h.id).is_some() {
            return false;
        }
        self.place(h.id, h.priority, loc, h.ready_at(), 0, h.deadline_ms);
        true
    }

    /// A result record for message `id` at `loc`: the message is completed
    /// (acked) with this result, wherever it was. A relocated copy of a
    /// result only moves it.
    pub fn add_result(&mut self, id: u64, priority: u8, loc: Loc, at: u64, drained: &mut Vec<u32>) {
        if id < self.cut_below {
            return;
        }
        // Wherever the message is: a scan applies results before the
        // journal entries that came before them (which then find nothing).
        let found = self
            .take_any(id, priority)
            .or_else(|| self.take_dead(id).map(|d| (d.loc, d.attempt)));
        let attempt = match found {
            Some((old, attempt)) => {
                self.finish(old, drained);
                attempt
            }
            None => 0,
        };
        if let Some(old) = self.completed.remove(&id) {
            self.finish(old.loc, drained);
        } else {
            self.totals.acked = self.totals.acked.saturating_add(1);
        }
        self.count_live(loc.segment, 1);
        self.highest_placed = self.highest_placed.max(id);
        self.completed.insert(
            id,
            Completed {
                loc,
                priority,
                attempt,
                at,
            },
        );
    }

    /// Count `n` more live records in `segment`: bulk loaders place a run
    /// of messages of one segment with the `place*` calls and count them
    /// once, saving a map lookup per message when opening a large queue.
    pub fn count_live(&mut self, segment: u32, n: u64) {
        if n > 0 {
            *self.live.entry(segment).or_insert(0) += n;
        }
    }

    /// Place a message among the waiting without the live count (see
    /// [`Index::count_live`]): for bulk loading, and for a message counted
    /// live already that goes back among the waiting. `deadline` 0 = none.
    pub fn place(
        &mut self,
        id: u64,
        priority: u8,
        loc: Loc,
        ready_at: u64,
        attempt: u32,
        deadline: u64,
    ) {
        self.highest_placed = self.highest_placed.max(id);
        if attempt > 0 {
            self.attempts.insert(id, attempt);
        }
        if deadline > 0 {
            self.deadlines_of.insert(id, deadline);
        }
        if ready_at > 0 {
            self.delayed
                .insert((ready_at, id), Delayed { loc, priority });
            self.delayed_at.insert(id, ready_at);
            if deadline > 0 {
                self.delayed_due.insert((ready_at.max(deadline), id));
            }
        } else {
            self.ready.insert(priority, id, loc, deadline);
        }
    }

    /// Set the lifetime counters and the retention bound (from a
    /// checkpoint).
    pub fn set_totals(&mut self, totals: Totals) {
        self.totals = totals;
    }

    /// The lifetime counters.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// No message or result a retention cut could remove has an id below
    /// this.
    pub fn cut_below(&self) -> u64 {
        self.cut_below
    }

    /// Raise the cut bound to the lowest id a retention cut could remove
    /// (or `next_id` when none), after recovery rebuilt the index: replay
    /// knows only the cuts after the checkpoint, and marks kept for dead
    /// letters or finished messages below that id are no cut's business.
    pub fn settle_cut_below(&mut self, next_id: u64) {
        let lowest = self.lowest_cuttable().unwrap_or(next_id);
        self.cut_below = self.cut_below.max(lowest);
    }

    /// The lowest id of a ready, delayed or in-flight message or a stored
    /// result. Walks the sets not in id order: recovery only.
    fn lowest_cuttable(&self) -> Option<u64> {
        let ready = self.ready.lanes.iter().flat_map(|l| {
            let urgent = l.urgent.keys().map(|&(_, id)| id).min();
            let fresh = l.fresh.front().map(|s| s.id);
            let others = l.others.keys().next().copied();
            [urgent, fresh, others].into_iter().flatten()
        });
        let delayed = self.delayed_at.keys().copied();
        let leased = self.in_flight.keys().copied();
        let done = self.completed.keys().next().copied();
        ready.chain(delayed).chain(leased).chain(done).min()
    }

    /// The segments retention cuts removed records from since the last
    /// call. A cut is counted in `expired_total` (and a result it removes
    /// was counted in `acked_total`) over the records replay finds, so a
    /// segment whose records a checkpoint does not hold must outlive the
    /// next checkpoint, or a crash would forget them in the counters.
    pub fn take_cut_segments(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.cut_from)
    }

    /// The retention marks.
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Forget retention marks that only cover ids below `bound` (no message
    /// or result a retention cut could remove has such an id), but those a
    /// dead letter's group needs (see [`Marks`]).
    pub fn forget_marks_below(&mut self, bound: u64) {
        let dead = &self.dead;
        self.marks
            .forget_below(bound, |ids| dead.range(ids).next().is_some());
    }

    /// A retention mark from a checkpoint.
    pub fn restore_mark(&mut self, end: u64, at: u64) {
        self.marks.restore(end, at);
    }

    /// The remembered idempotency keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A key from a checkpoint, or one found while enqueueing.
    pub fn remember_key(&mut self, key: &[u8], id: u64, at: u64) {
        self.keys.insert(key, id, at);
    }

    /// Forget keys first seen at or before `cutoff` (the dedup window has
    /// passed). Not journaled: recomputed from the clock after replay.
    pub fn forget_keys(&mut self, cutoff: u64) {
        self.keys.expire(cutoff);
    }

    /// Set a dead letter's reason (checkpoints store reasons apart).
    pub fn set_reason(&mut self, id: u64, reason: String) {
        if let Some(d) = self.dead.get_mut(&id) {
            d.reason = reason;
        }
    }

    /// Where a live record is: the message's, or its stored result's when
    /// `result`.
    pub fn locate(&self, id: u64, priority: u8, result: bool) -> Option<Loc> {
        if result {
            return self.completed.get(&id).map(|c| c.loc);
        }
        if let Some(l) = self.in_flight.get(&id) {
            return Some(l.loc);
        }
        if let Some(d) = self.dead.get(&id) {
            return Some(d.loc);
        }
        if let Some(at) = self.delayed_at.get(&id) {
            return self.delayed.get(&(*at, id)).map(|d| d.loc);
        }
        self.ready.lanes[usize::from(priority)].find(id, self.deadline_of(id))
    }

    fn forget_deadline(&mut self, id: u64) {
        if !self.deadlines_of.is_empty() {
            self.deadlines_of.remove(&id);
        }
    }

    fn deadline_of(&self, id: u64) -> u64 {
        // Most queues carry no deadlines: skip the hashing then.
        if self.deadlines_of.is_empty() {
            return 0;
        }
        self.deadlines_of.get(&id).copied().unwrap_or(0)
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
        lease_deadline: u64,
        deadline: u64,
    ) {
        self.highest_placed = self.highest_placed.max(id);
        if deadline > 0 {
            self.deadlines_of.insert(id, deadline);
        }
        self.put_lease(id, loc, priority, attempt, lease_deadline);
    }

    /// A dead letter restored from a checkpoint. Not counted live: see
    /// [`Index::count_live`].
    pub fn place_dead(&mut self, id: u64, dead: Dead) {
        self.highest_placed = self.highest_placed.max(id);
        self.dead_order.insert((dead.at, id));
        self.dead.insert(id, dead);
    }

    /// A stored result restored from a checkpoint. Not counted live: see
    /// [`Index::count_live`].
    pub fn place_completed(&mut self, id: u64, c: Completed) {
        self.highest_placed = self.highest_placed.max(id);
        self.completed.insert(id, c);
    }

    /// Apply one journal entry; segments whose last live record it
    /// finished are pushed onto `drained`.
    pub fn apply(&mut self, e: &Entry, drained: &mut Vec<u32>) {
        match e.kind {
            Kind::Delivered => {
                // A message still leased here was released by a restart in
                // between (releases at open are not journaled).
                let loc = match self.take_lease(e.id) {
                    Some(l) => l.loc,
                    None => match self.take_waiting(e.id, e.priority) {
                        Some((loc, _)) => loc,
                        None => {
                            // Replay meets a completed message's deliveries
                            // after its result record (segments are scanned
                            // first); the last one names the attempt it was
                            // completed on, which the record does not store.
                            if let Some(c) = self.completed.get_mut(&e.id) {
                                c.attempt = e.attempt;
                            }
                            return;
                        }
                    },
                };
                self.put_lease(e.id, loc, e.priority, e.attempt, e.time_ms);
            }
            Kind::LeaseExtended => {
                let Some(lease) = self.in_flight.get_mut(&e.id) else {
                    return;
                };
                self.lease_order.remove(&(lease.deadline, e.id));
                lease.deadline = e.time_ms;
                self.lease_order.insert((e.time_ms, e.id));
            }
            Kind::Nacked | Kind::Expired => {
                let Some(lease) = self.take_lease(e.id) else {
                    return;
                };
                let ready_at = if e.kind == Kind::Nacked { e.time_ms } else { 0 };
                // A nack carries the attempt count to keep: the lease's, or
                // the one before it when a delivery is given back unread.
                let attempt = if e.kind == Kind::Nacked {
                    e.attempt.min(lease.attempt)
                } else {
                    lease.attempt
                };
                let deadline = self.deadline_of(e.id);
                self.place(e.id, lease.priority, lease.loc, ready_at, attempt, deadline);
            }
            Kind::Acked => {
                // Counted even when the message's record is gone (its
                // segment was deleted): each message is acked at most once.
                self.totals.acked = self.totals.acked.saturating_add(1);
                if let Some((loc, _)) = self.take_any(e.id, e.priority) {
                    self.finish(loc, drained);
                } else if let Some(d) = self.dead.remove(&e.id) {
                    self.dead_order.remove(&(d.at, e.id));
                    self.finish(d.loc, drained);
                }
            }
            Kind::DeadLettered | Kind::DeadlineMissed => {
                if e.kind == Kind::DeadlineMissed {
                    // Counted even when the message is not found (replay
                    // met its result record first, or its segment was
                    // deleted): the live queue writes one such entry per
                    // message it dead-letters so, and none for another.
                    self.totals.deadline_missed = self.totals.deadline_missed.saturating_add(1);
                }
                let (loc, attempt) = match self.take_lease(e.id) {
                    Some(l) => (l.loc, l.attempt),
                    None => match self.take_waiting(e.id, e.priority) {
                        Some(w) => w,
                        None => return,
                    },
                };
                // A dead letter keeps no deadline: a redriven message is
                // served as one without.
                self.forget_deadline(e.id);
                let reason = if e.kind == Kind::DeadlineMissed {
                    DEADLINE_MISSED.to_string()
                } else {
                    e.reason.clone()
                };
                let dead = Dead {
                    loc,
                    priority: e.priority,
                    attempt,
                    at: e.time_ms,
                    reason,
                };
                self.place_dead(e.id, dead);
            }
            Kind::Redriven => {
                let Some(d) = self.take_dead(e.id) else {
                    return;
                };
                self.ready.insert(d.priority, e.id, d.loc, 0);
                // A cut passed over it as a dead letter; as a ready message
                // it is cut by its own mark, kept for it (see `Marks`).
                self.cut_below = self.cut_below.min(e.id);
            }
            Kind::Purged | Kind::DeadExpired => {
                if e.kind == Kind::DeadExpired {
                    // Counted even when the dead letter is not found, as
                    // `DeadlineMissed` is.
                    self.totals.dead_expired = self.totals.dead_expired.saturating_add(1);
                }
                let Some(d) = self.take_dead(e.id) else {
                    return;
                };
                self.finish(d.loc, drained);
            }
            Kind::RetentionCut => self.cut(e.id, drained),
            Kind::IdsReserved => {}
        }
    }

    /// Retention: remove every live message and stored result with an id
    /// below `below`, dead letters excepted. Walks the sets that are not
    /// in id order (in flight, delayed, deadlines); cuts run at most once
    /// per retention mark.
    fn cut(&mut self, below: u64, drained: &mut Vec<u32>) {
        if below <= self.cut_below {
            return;
        }
        self.cut_below = below;
        let mut gone: Vec<Loc> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        let lanes: Vec<u8> = self.ready.nonempty_lanes().collect();
        for p in lanes {
            let removed = self.ready.lanes[usize::from(p)].cut(below);
            if !removed.is_empty() {
                self.ready.after_removal(p, removed.len() as u64);
            }
            for (id, loc, _) in removed {
                ids.push(id);
                gone.push(loc);
            }
        }
        let delayed: Vec<(u64, u64)> = self
            .delayed_at
            .iter()
            .filter(|&(&id, _)| id < below)
            .map(|(&id, &at)| (id, at))
            .collect();
        for (id, at) in delayed {
            self.delayed_at.remove(&id);
            self.forget_delayed_due(id, at);
            if let Some(d) = self.delayed.remove(&(at, id)) {
                ids.push(id);
                gone.push(d.loc);
            }
        }
        let leased: Vec<u64> = self
            .in_flight
            .keys()
            .copied()
            .filter(|&id| id < below)
            .collect();
        for id in leased {
            if let Some(l) = self.take_lease(id) {
                ids.push(id);
                gone.push(l.loc);
            }
        }
        let keep = self.completed.split_off(&below);
        let done = std::mem::replace(&mut self.completed, keep);
        gone.extend(done.values().map(|c| c.loc));
        let n = gone.len() as u64;
        for id in ids {
            self.attempts.remove(&id);
            self.forget_deadline(id);
        }
        for loc in gone {
            self.cut_from.insert(loc.segment);
            self.finish(loc, drained);
        }
        self.totals.expired = self.totals.expired.saturating_add(n);
        self.forget_marks_below(below);
    }

    fn put_lease(&mut self, id: u64, loc: Loc, priority: u8, attempt: u32, deadline: u64) {
        let lease = NEXT_LEASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lease_order.insert((deadline, id));
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
        self.lease_order.remove(&(lease.deadline, id));
        Some(lease)
    }

    fn take_dead(&mut self, id: u64) -> Option<Dead> {
        let d = self.dead.remove(&id)?;
        self.dead_order.remove(&(d.at, id));
        Some(d)
    }

    /// Remove a ready or delayed message; returns its location and attempts.
    fn take_waiting(&mut self, id: u64, priority: u8) -> Option<(Loc, u32)> {
        let deadline = self.deadline_of(id);
        let loc = match self.ready.remove(priority, id, deadline) {
            Some(loc) => loc,
            None => {
                let at = self.delayed_at.remove(&id)?;
                self.forget_delayed_due(id, at);
                self.delayed.remove(&(at, id))?.loc
            }
        };
        Some((loc, self.attempts.remove(&id).unwrap_or(0)))
    }

    /// A delayed message ready at `at` leaves the delayed set.
    fn forget_delayed_due(&mut self, id: u64, at: u64) {
        let deadline = self.deadline_of(id);
        if deadline > 0 {
            self.delayed_due.remove(&(at.max(deadline), id));
        }
    }

    /// Remove an unfinished message (ready, delayed or in flight) for good;
    /// returns its location and attempts. Dead letters stay.
    fn take_any(&mut self, id: u64, priority: u8) -> Option<(Loc, u32)> {
        let found = match self.take_lease(id) {
            Some(l) => Some((l.loc, l.attempt)),
            None => self.take_waiting(id, priority),
        };
        if found.is_some() {
            self.forget_deadline(id);
        }
        found
    }

    fn finish(&mut self, loc: Loc, drained: &mut Vec<u32>) {
        let Some(n) = self.live.get_mut(&loc.segment) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.live.remove(&loc.segment);
            drained.push(loc.segment);
        }
    }

    /// Move delayed messages whose time has come to their lanes.
    pub fn promote_due(&mut self, now: u64) {
        while let Some((&(at, id), _)) = self.delayed.first_key_value() {
            if at > now {
                break;
            }
            if let Some(d) = self.delayed.remove(&(at, id)) {
                self.delayed_at.remove(&id);
                self.forget_delayed_due(id, at);
                let deadline = self.deadline_of(id);
                self.ready.insert(d.priority, id, d.loc, deadline);
            }
        }
    }

    /// The earliest delay or lease deadline, when a waiting consumer must
    /// look again.
    pub fn next_timer(&self) -> Option<u64> {
        let delay = self.delayed.first_key_value().map(|(&(at, _), _)| at);
        let lease = self.lease_order.first().map(|&(at, _)| at);
        match (delay, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next missed deadline is due: the earliest deadline among
    /// ready messages (one look per non-empty lane), or a delayed message's
    /// deadline once it has matured (the later of the two), if earlier.
    pub fn next_deadline(&self) -> Option<u64> {
        let ready = self.ready.nonempty_lanes().filter_map(|p| {
            let lane = &self.ready.lanes[usize::from(p)];
            lane.urgent.first_key_value().map(|(&(d, _), _)| d)
        });
        let delayed = self.delayed_due.first().map(|&(at, _)| at);
        ready.chain(delayed).min()
    }

    /// Ready messages whose deadline is at or before `now`: (id, priority,
    /// attempts). One look per non-empty lane, then one per message found.
    pub fn missed_deadlines(&self, now: u64) -> Vec<(u64, u8, u32)> {
        let mut out = Vec::new();
        for p in self.ready.nonempty_lanes() {
            let lane = &self.ready.lanes[usize::from(p)];
            for (&(_, id), _) in lane.urgent.range(..=(now, u64::MAX)) {
                out.push((id, p, self.attempt_of(id)));
            }
        }
        out
    }

    /// Dead letters dead since at or before `cutoff`, oldest first.
    pub fn dead_since(&self, cutoff: u64) -> Vec<(u64, u8)> {
        self.dead_order
            .range(..=(cutoff, u64::MAX))
            .filter_map(|&(_, id)| self.dead.get(&id).map(|d| (id, d.priority)))
            .collect()
    }

    /// When the oldest dead letter became one.
    pub fn oldest_dead(&self) -> Option<u64> {
        self.dead_order.first().map(|&(at, _)| at)
    }

    /// Leases whose deadline is at or before `now`, earliest first.
    pub fn expired(&self, now: u64) -> Vec<(u64, Lease)> {
        self.lease_order
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

    /// Drop lane `priority`'s head entry, which names a message that is not
    /// ready there (see `Inner::lease`): only the entry goes, the message
    /// stays wherever else the index holds it.
    pub fn drop_stale_head(&mut self, priority: u8) {
        if self.ready.lanes[usize::from(priority)].pop_head().is_some() {
            self.ready.after_removal(priority, 1);
        }
    }

    /// The next message of lane `priority`, without taking it.
    pub fn peek_lane(&self, priority: u8) -> Option<Candidate> {
        let (id, loc) = self.ready.lanes[usize::from(priority)].peek()?;
        Some(self.candidate(id, priority, loc))
    }

    fn candidate(&self, id: u64, priority: u8, loc: Loc) -> Candidate {
        Candidate {
            id,
            priority,
            loc,
            attempt: self.attempt_of(id),
            deadline: self.deadline_of(id),
        }
    }

    /// The lease of an in-flight message.
    pub fn lease(&self, id: u64) -> Option<&Lease> {
        self.in_flight.get(&id)
    }

    /// A dead letter.
    pub fn dead(&self, id: u64) -> Option<&Dead> {
        self.dead.get(&id)
    }

    /// A stored result.
    pub fn completed(&self, id: u64) -> Option<&Completed> {
        self.completed.get(&id)
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
        self.lease_order.clear();
        let n = leases.len() as u64;
        for (id, l) in leases {
            let deadline = self.deadline_of(id);
            self.place(id, l.priority, l.loc, 0, l.attempt, deadline);
        }
        n
    }

    /// A live record moved to `to` (relocation): the message's, or its
    /// result's when `result`.
    pub fn relocate(&mut self, id: u64, priority: u8, to: Loc, result: bool) -> bool {
        let from = if result {
            match self.completed.get_mut(&id) {
                Some(c) => std::mem::replace(&mut c.loc, to),
                None => return false,
            }
        } else if let Some(l) = self.in_flight.get_mut(&id) {
            std::mem::replace(&mut l.loc, to)
        } else if let Some(d) = self.dead.get_mut(&id) {
            std::mem::replace(&mut d.loc, to)
        } else if let Some(&at) = self.delayed_at.get(&id) {
            match self.delayed.get_mut(&(at, id)) {
                Some(d) => std::mem::replace(&mut d.loc, to),
                None => return false,
            }
        } else {
            let deadline = self.deadline_of(id);
            let lane = &mut self.ready.lanes[usize::from(priority)];
            match lane.remove(id, deadline) {
                Some(old) => {
                    lane.insert(id, to, deadline);
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

    /// Segments holding live records.
    pub fn segments_with_live(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.keys().copied()
    }

    /// Forget every message and result whose record is in `segment` (the
    /// file is gone); returns how many. Walks the whole index: recovery
    /// only.
    pub fn drop_segment(&mut self, segment: u32) -> u64 {
        let mut gone = Vec::new();
        self.snapshot(|m| {
            if m.segment == segment {
                gone.push((m.id, m.priority, m.state));
            }
        });
        for &(id, priority, state) in &gone {
            match state {
                CheckpointState::Completed => {
                    self.completed.remove(&id);
                }
                CheckpointState::Dead => {
                    self.take_dead(id);
                }
                _ => {
                    self.take_any(id, priority);
                }
            }
            self.attempts.remove(&id);
        }
        self.live.remove(&segment);
        gone.len() as u64
    }

    /// Live records in `segment`.
    pub fn live_in(&self, segment: u32) -> u64 {
        self.live.get(&segment).copied().unwrap_or(0)
    }

    /// Counts for stats.
    pub fn counts(&self) -> Counts {
        Counts {
            ready: self.ready.count,
            in_flight: self.in_flight.len() as u64,
            delayed: self.delayed.len() as u64,
            dead: self.dead.len() as u64,
            results: self.completed.len() as u64,
            keys: self.keys.len() as u64,
        }
    }

    /// The queue's counters, with what only the caller knows: segment
    /// files, bytes on disk and the oldest ready message's age.
    pub fn stats(
        &self,
        segments: u64,
        bytes_on_disk: u64,
        oldest_ready_age: Option<std::time::Duration>,
    ) -> Stats {
        let c = self.counts();
        Stats {
            ready_per_lane: self
                .ready_per_lane()
                .into_iter()
                .map(|(priority, ready)| LaneCount { priority, ready })
                .collect(),
            ready: c.ready,
            in_flight: c.in_flight,
            delayed: c.delayed,
            dead: c.dead,
            acked_total: self.totals.acked,
            results: c.results,
            keys: c.keys,
            deadline_missed_total: self.totals.deadline_missed,
            expired_total: self.totals.expired,
            dead_expired_total: self.totals.dead_expired,
            segments,
            bytes_on_disk,
            oldest_ready_age,
        }
    }

    /// Ready messages per non-empty lane, highest priority first.
    pub fn ready_per_lane(&self) -> Vec<(u8, u64)> {
        self.ready
            .nonempty_lanes()
            .map(|p| (p, self.ready.lanes[usize::from(p)].len() as u64))
            .collect()
    }

    /// The lowest-id ready message (the oldest), if any.
    pub fn oldest_ready(&self) -> Option<(u64, Loc)> {
        self.ready
            .lanes
            .iter()
            .flat_map(|l| {
                let urgent = l
                    .urgent
                    .iter()
                    .map(|(&(_, id), &loc)| (id, loc))
                    .min_by_key(|&(id, _)| id);
                let rest = {
                    let f = l.fresh.front().map(|s| (s.id, s.loc));
                    let o = l.others.first_key_value().map(|(&id, &loc)| (id, loc));
                    f.into_iter().chain(o).min_by_key(|&(id, _)| id)
                };
                urgent.into_iter().chain(rest)
            })
            .min_by_key(|&(id, _)| id)
    }

    /// Every live message and stored result as a checkpoint stores it.
    /// Ready messages come lane by lane in id order, so a reload appends
    /// them in order.
    pub fn snapshot(&self, mut out: impl FnMut(CheckpointMessage)) {
        let mut emit = |id, priority, loc: Loc, attempt, state, time_ms, deadline_ms| {
            out(CheckpointMessage {
                id,
                time_ms,
                deadline_ms,
                segment: loc.segment,
                offset: loc.offset,
                attempt,
                priority,
                state,
            })
        };
        use CheckpointState::{Completed as Done, Dead as D, InFlight, Pending};
        for (p, lane) in self.ready.lanes.iter().enumerate() {
            let p = p as u8;
            for (&(deadline, id), &loc) in &lane.urgent {
                emit(id, p, loc, self.attempt_of(id), Pending, 0, deadline);
            }
            for s in &lane.fresh {
                emit(s.id, p, s.loc, self.attempt_of(s.id), Pending, 0, 0);
            }
            for (&id, &loc) in &lane.others {
                emit(id, p, loc, self.attempt_of(id), Pending, 0, 0);
            }
        }
        for (&(at, id), d) in &self.delayed {
            let (a, dl) = (self.attempt_of(id), self.deadline_of(id));
            emit(id, d.priority, d.loc, a, Pending, at, dl);
        }
        for (&id, l) in &self.in_flight {
            let dl = self.deadline_of(id);
            emit(id, l.priority, l.loc, l.attempt, InFlight, l.deadline, dl);
        }
        for (&id, d) in &self.dead {
            emit(id, d.priority, d.loc, d.attempt, D, d.at, 0);
        }
        for (&id, c) in &self.completed {
            emit(id, c.priority, c.loc, c.attempt, Done, c.at, 0);
        }
    }

    /// Every live record's id, location and whether it is a result.
    pub fn locations(&self, mut out: impl FnMut(u64, Loc, bool)) {
        self.snapshot(|m| {
            out(
                m.id,
                Loc {
                    segment: m.segment,
                    offset: m.offset,
                },
                m.state == CheckpointState::Completed,
            )
        });
    }

    fn attempt_of(&self, id: u64) -> u32 {
        self.attempts.get(&id).copied().unwrap_or(0)
    }

    /// Number of live records.
    pub fn live_count(&self) -> u64 {
        self.live.values().sum()
    }

    /// Ready messages in the order strict scheduling delivers them: the
    /// highest priority first, within a lane deadlines first, then by id;
    /// only lane `only` when given. Read-only (for inspection).
    pub fn ready_in_order(&self, only: Option<u8>) -> impl Iterator<Item = Candidate> + '_ {
        let lanes: Vec<u8> = match only {
            Some(p) => vec![p],
            None => (0..=255u8).rev().collect(),
        };
        lanes.into_iter().flat_map(move |p| {
            let lane = &self.ready.lanes[usize::from(p)];
            let urgent = lane.urgent.iter().map(|(&(_, id), &loc)| (id, loc));
            let mut fresh = lane.fresh.iter().map(|s| (s.id, s.loc)).peekable();
            let mut others = lane.others.iter().map(|(&id, &loc)| (id, loc)).peekable();
            let merged = std::iter::from_fn(move || {
                let take_fresh = match (fresh.peek(), others.peek()) {
                    (Some(a), Some(b)) => a.0 < b.0,
                    (a, _) => a.is_some(),
                };
                if take_fresh {
                    fresh.next()
                } else {
                    others.next()
                }
            });
            urgent
                .chain(merged)
                .map(move |(id, loc)| self.candidate(id, p, loc))
        })
    }

    /// The highest id ever placed here, in any state (0 for none).
    pub fn highest_placed(&self) -> u64 {
        self.highest_placed
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
        if let Some(c) = self.completed.get(&id) {
            return Some(Found::Completed(c));
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
        let deadline = self.deadline_of(id);
        (0..=255u8).find_map(|p| {
            let loc = self.ready.lanes[usize::from(p)].find(id, deadline)?;
            Some(Found::Ready {
                priority: p,
                loc,
                attempt: self.attempt_of(id),
            })
        })
    }
}

/// Message counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
    pub results: u64,
    pub keys: u64,
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
    /// Completed, with a stored result.
    Completed(&'a Completed),
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Index {
        /// A message record with no deadline or key, counted live.
        fn add(&mut self, id: u64, priority: u8, loc: Loc, ready_at: u64, attempt: u32) {
            self.place(id, priority, loc, ready_at, attempt, 0);
            self.count_live(loc.segment, 1);
        }

        /// Apply one entry; the segment it drained, if any.
        fn apply_one(&mut self, e: &Entry) -> Option<u32> {
            let mut drained = Vec::new();
            self.apply(e, &mut drained);
            drained.pop()
        }
    }

    impl Counts {
        fn four(self) -> (u64, u64, u64, u64) {
            (self.ready, self.in_flight, self.delayed, self.dead)
        }
    }

    fn loc(o: u32) -> Loc {
        Loc {
            segment: 1,
            offset: o,
        }
    }

    #[test]
    fn higher_priority_first_then_id_order() {
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 0, loc(1), 0, 0);
        ix.add(2, 9, loc(2), 0, 0);
        ix.add(3, 9, loc(3), 0, 0);
        ix.add(4, 200, loc(4), 0, 0);
        let mut order = Vec::new();
        while let Some(c) = ix.peek() {
            order.push(c.id);
            ix.apply_one(&Entry::new(Kind::Delivered, c.id, c.priority, 100, 1));
        }
        assert_eq!(order, vec![4, 2, 3, 1]);
        assert_eq!(ix.counts().four(), (0, 4, 0, 0));
    }

    #[test]
    fn expired_message_returns_in_id_order_with_its_attempts() {
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 0, loc(1), 0, 0);
        ix.add(2, 0, loc(2), 0, 0);
        ix.apply_one(&Entry::new(Kind::Delivered, 1, 0, 100, 1));
        ix.apply_one(&Entry::new(Kind::Expired, 1, 0, 100, 1));
        let c = ix.peek().unwrap();
        assert_eq!((c.id, c.attempt), (1, 1));
    }

    #[test]
    fn ack_finishes_segment_and_unknown_entries_change_no_message() {
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 0, loc(1), 0, 0);
        // An ack of a message whose record is gone (its segment was deleted)
        // still counts: the live queue writes one Acked entry per message.
        assert_eq!(ix.apply_one(&Entry::new(Kind::Acked, 99, 0, 0, 0)), None);
        assert_eq!(ix.totals().acked, 1);
        assert_eq!(ix.counts().four(), (1, 0, 0, 0));
        ix.apply_one(&Entry::new(Kind::Delivered, 1, 0, 100, 1));
        assert_eq!(ix.apply_one(&Entry::new(Kind::Acked, 1, 0, 0, 0)), Some(1));
        assert_eq!(ix.totals().acked, 2);
        assert_eq!(ix.counts().four(), (0, 0, 0, 0));
    }

    #[test]
    fn nack_with_delay_waits_then_promotes() {
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 3, loc(1), 0, 0);
        ix.apply_one(&Entry::new(Kind::Delivered, 1, 3, 100, 1));
        ix.apply_one(&Entry::new(Kind::Nacked, 1, 3, 500, 1));
        assert!(ix.peek().is_none());
        assert_eq!(ix.counts().four(), (0, 0, 1, 0));
        ix.promote_due(499);
        assert!(ix.peek().is_none());
        ix.promote_due(500);
        assert_eq!(ix.peek().unwrap().id, 1);
    }

    #[test]
    fn ready_in_order_follows_strict_delivery_and_find_sees_every_state() {
        let mut ix = Index::new(Totals::default(), 60_000);
        for (id, p) in [(1, 0), (2, 9), (3, 9), (4, 200), (5, 9)] {
            ix.add(id, p, loc(id as u32), 0, 0);
        }
        // 2 comes back after 3 was fresh: served by id among the lane.
        ix.apply_one(&Entry::new(Kind::Delivered, 2, 9, 100, 1));
        ix.apply_one(&Entry::new(Kind::Nacked, 2, 9, 0, 1));
        let order: Vec<u64> = ix.ready_in_order(None).map(|c| c.id).collect();
        assert_eq!(order, vec![4, 2, 3, 5, 1]);
        let mut strict = Vec::new();
        while let Some(c) = ix.peek() {
            strict.push(c.id);
            ix.apply_one(&Entry::new(Kind::Delivered, c.id, c.priority, 100, 1));
        }
        assert_eq!(strict, order);
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 3, loc(1), 0, 0);
        ix.add(2, 3, loc(2), 500, 0);
        ix.add(3, 3, loc(3), 0, 0);
        ix.apply_one(&Entry::new(Kind::Delivered, 3, 3, 100, 1));
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
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 0, loc(1), 0, 0);
        let mut e = Entry::new(Kind::DeadLettered, 1, 0, 7, 0);
        e.reason = "bad".into();
        ix.apply_one(&e);
        assert_eq!(ix.dead(1).unwrap().reason, "bad");
        ix.apply_one(&Entry::new(Kind::Redriven, 1, 0, 8, 0));
        assert_eq!(ix.peek().unwrap().attempt, 0);
        ix.apply_one(&e);
        assert_eq!(ix.apply_one(&Entry::new(Kind::Purged, 1, 0, 9, 0)), Some(1));
    }
    #[test]
    fn deadlines_leave_first_within_a_lane_earliest_first_ties_by_id() {
        let mut ix = Index::new(Totals::default(), 60_000);
        ix.add(1, 5, loc(1), 0, 0);
        for (id, deadline) in [(2, 900), (3, 500), (4, 500), (5, 700)] {
            ix.place(id, 5, loc(id as u32), 0, 0, deadline);
            ix.count_live(1, 1);
        }
        ix.add(6, 5, loc(6), 0, 0);
        ix.add(7, 9, loc(7), 0, 0);
        let order: Vec<u64> = ix.ready_in_order(None).map(|c| c.id).collect();
        assert_eq!(order, vec![7, 3, 4, 5, 2, 1, 6]);
        let mut strict = Vec::new();
        while let Some(c) = ix.peek() {
            strict.push((c.id, c.deadline));
            ix.apply_one(&Entry::new(Kind::Delivered, c.id, c.priority, 100, 1));
        }
        assert_eq!(
            strict,
            vec![
                (7, 0),
                (3, 500),
                (4, 500),
                (5, 700),
                (2, 900),
                (1, 0),
                (6, 0)
            ]
        );
        // A nack puts it back among the deadlines, not the plain ones.
        ix.apply_one(&Entry::new(Kind::Nacked, 2, 5, 0, 1));
        ix.apply_one(&Entry::new(Kind::Nacked, 1, 5, 0, 1));
        assert_eq!(ix.peek().map(|c| c.id), Some(2));
        assert_eq!(ix.missed_deadlines(899), vec![]);
        assert_eq!(ix.missed_deadlines(900), vec![(2, 5, 1)]);
        assert_eq!(ix.next_deadline(), Some(900));
        // A delayed message's deadline is due once it has matured too.
        ix.place(8, 5, loc(8), 600, 0, 800);
        ix.place(9, 5, loc(9), 700, 0, 650);
        ix.count_live(1, 2);
        assert_eq!(ix.next_deadline(), Some(700));
        ix.promote_due(700);
        assert_eq!(
            ix.next_deadline(),
            Some(650),
            "9 is ready, past its deadline"
        );
        assert_eq!(ix.missed_deadlines(700), vec![(9, 5, 0)]);
        // One taken from the delayed set otherwise leaves no trace.
        ix.place(10, 5, loc(10), 2_000, 0, 500);
        ix.count_live(1, 1);
        ix.apply_one(&Entry::new(Kind::DeadLettered, 10, 5, 700, 0));
        ix.apply_one(&Entry::new(Kind::DeadLettered, 9, 5, 700, 0));
        ix.apply_one(&Entry::new(Kind::DeadLettered, 8, 5, 700, 0));
        assert_eq!(ix.next_deadline(), Some(900));
    }

    #[test]
    fn a_retention_cut_removes_every_state_but_dead_letters() {
        let mut ix = Index::new(Totals::default(), 60_000);
        for id in 1..=6 {
            ix.add(id, 0, loc(id as u32), 0, 0);
        }
        ix.place(7, 0, loc(7), 0, 0, 5_000);
        ix.count_live(1, 1);
        ix.add(8, 0, loc(8), 0, 0);
        // 2 in flight, 3 delayed by a nack, 4 dead, 5 completed.
        ix.apply_one(&Entry::new(Kind::Delivered, 2, 0, 100, 1));
        ix.apply_one(&Entry::new(Kind::Delivered, 3, 0, 100, 1));
        ix.apply_one(&Entry::new(Kind::Nacked, 3, 0, 9_000, 1));
        ix.apply_one(&Entry::new(Kind::DeadLettered, 4, 0, 50, 0));
        let mut drained = Vec::new();
        ix.add_result(5, 0, loc(100), 60, &mut drained);
        assert_eq!(ix.counts().results, 1);
        let mut drained = Vec::new();
        ix.apply(&Entry::new(Kind::RetentionCut, 8, 0, 70, 0), &mut drained);
        let c = ix.counts();
        assert_eq!(
            (c.ready, c.in_flight, c.delayed, c.dead, c.results),
            (1, 0, 0, 1, 0)
        );
        assert_eq!(ix.totals().expired, 6, "1, 2, 3, 5's result, 6, 7");
        assert_eq!(ix.peek().map(|c| c.id), Some(8));
        assert_eq!(ix.live_in(1), 2, "the dead letter and 8");
        // A cut below one already applied changes nothing.
        ix.apply(&Entry::new(Kind::RetentionCut, 5, 0, 80, 0), &mut drained);
        assert_eq!(ix.totals().expired, 6);
    }

    #[test]
    fn a_redriven_dead_letter_is_cut_by_its_own_mark() {
        let mut ix = Index::new(Totals::default(), 1_000);
        for (id, at) in [(1, 0), (2, 5_000), (3, 9_000)] {
            let h = RecordHeader {
                id,
                enqueued_ms: at,
                ..RecordHeader::default()
            };
            assert!(ix.place_record(&h, &[], loc(id as u32)));
            ix.count_live(1, 1);
        }
        ix.apply_one(&Entry::new(Kind::DeadLettered, 1, 0, 100, 0));
        assert_eq!(ix.marks().bound(5_000), 3);
        ix.apply_one(&Entry::new(Kind::RetentionCut, 3, 0, 200, 0));
        assert_eq!(ix.totals().expired, 1, "2; the dead letter stays");
        // The dead letter's mark outlives the cut; 2's goes.
        assert_eq!(ix.marks().iter().collect::<Vec<_>>(), [(2, 0), (4, 9_000)]);
        // Redriven, it is cut when its own mark is due, not 3's.
        ix.apply_one(&Entry::new(Kind::Redriven, 1, 0, 300, 0));
        assert_eq!(ix.cut_below(), 1);
        assert_eq!(ix.marks().next_due(ix.cut_below(), 10_000), Some(10_000));
        assert_eq!(ix.marks().bound(0), 2);
        ix.apply_one(&Entry::new(Kind::RetentionCut, 2, 0, 400, 0));
        assert_eq!((ix.totals().expired, ix.counts().ready), (2, 1));
        assert_eq!(ix.marks().iter().collect::<Vec<_>>(), [(4, 9_000)]);
        // A checkpoint's forgetting keeps a dead letter's mark too.
        ix.apply_one(&Entry::new(Kind::DeadLettered, 3, 0, 500, 0));
        ix.forget_marks_below(10);
        assert_eq!(ix.marks().iter().collect::<Vec<_>>(), [(4, 9_000)]);
        ix.apply_one(&Entry::new(Kind::Purged, 3, 0, 600, 0));
        ix.forget_marks_below(10);
        assert_eq!(ix.marks().iter().count(), 0);
    }

    #[test]
    fn after_recovery_the_cut_bound_is_the_lowest_cuttable_id() {
        let mut ix = Index::new(Totals::default(), 1_000);
        ix.settle_cut_below(9);
        assert_eq!(ix.cut_below(), 9, "nothing to cut: next_id");
        let mut ix = Index::new(Totals::default(), 1_000);
        for id in [3, 4, 5, 6] {
            ix.add(id, 0, loc(id as u32), 0, 0);
        }
        ix.place(2, 7, loc(2), 0, 0, 900);
        ix.count_live(1, 1);
        ix.apply_one(&Entry::new(Kind::DeadLettered, 3, 0, 100, 0));
        ix.apply_one(&Entry::new(Kind::Delivered, 4, 0, 100, 1));
        ix.settle_cut_below(9);
        assert_eq!(ix.cut_below(), 2, "2 has a deadline");
        ix.apply_one(&Entry::new(Kind::DeadLettered, 2, 7, 100, 0));
        let mut drained = Vec::new();
        ix.add_result(5, 0, loc(50), 100, &mut drained);
        ix.settle_cut_below(9);
        assert_eq!(
            ix.cut_below(),
            4,
            "in flight; the dead letters below no cut's business"
        );
    }

    #[test]
    fn a_result_completes_its_message_wherever_it_is() {
        let mut ix = Index::new(Totals::default(), 60_000);
        for id in 1..=3 {
            ix.add(id, 2, loc(id as u32), 0, 0);
        }
        ix.apply_one(&Entry::new(Kind::Delivered, 2, 2, 100, 1));
        ix.apply_one(&Entry::new(Kind::DeadLettered, 3, 2, 50, 0));
        let mut drained = Vec::new();
        for id in 1..=3 {
            ix.add_result(
                id,
                2,
                Loc {
                    segment: 2,
                    offset: id as u32,
                },
                70,
                &mut drained,
            );
        }
        assert_eq!(drained, vec![1], "segment 1 held only the three messages");
        let c = ix.counts();
        assert_eq!((c.ready, c.in_flight, c.dead, c.results), (0, 0, 0, 3));
        assert_eq!(ix.totals().acked, 3);
        // Entries about it replayed after its result find nothing.
        ix.apply_one(&Entry::new(Kind::Expired, 2, 2, 0, 1));
        ix.apply_one(&Entry::new(Kind::Redriven, 3, 2, 0, 0));
        assert_eq!(ix.counts().results, 3);
        assert!(ix.peek().is_none());
        assert_eq!(ix.completed(2).map(|c| c.attempt), Some(1));
        // But a delivery replayed after the result (written before it)
        // gives the attempt the message was completed on; the last wins.
        assert_eq!(ix.completed(1).map(|c| c.attempt), Some(0));
        ix.apply_one(&Entry::new(Kind::Delivered, 1, 2, 100, 3));
        ix.apply_one(&Entry::new(Kind::Delivered, 1, 2, 100, 1));
        assert_eq!(ix.completed(1).map(|c| c.attempt), Some(1));
        assert!(ix.lease(1).is_none());
        assert_eq!(ix.counts().in_flight, 0);
    }
}
