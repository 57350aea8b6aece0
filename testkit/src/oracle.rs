//! The crash oracles: open a crash image (panics caught) or drain a
//! reopened queue, read everything it holds, and judge it against the
//! [`Model`] under a crash [`View`].
//!
//! - **lost**: a message whose enqueue returned `Ok` and which no state the
//!   view allows shows as absent (it was not, and may not have been, acked).
//! - **resurrected**: present although every state the view allows is
//!   "acked".
//! - **hole**: a message the model must not miss is missing while a later
//!   message of the same lane (by id, the enqueue order) survives; later
//!   survivors include messages of a failed enqueue. Such a message is also
//!   lost, so a hole is a loss that broke the lane's order.
//! - **prefix hole**: a message whose loss the
//!   view allows (an enqueue not yet synced under `Durability::None`) is
//!   missing while a later message of its lane survives (`Durability`
//!   promises each lane keeps a prefix).
//! - **corrupt**: a delivered payload or priority differs from what was
//!   enqueued, a message nobody enqueued shows up, or a record fails its
//!   checksum on delivery (the queue parks it as a "corrupt" dead letter).
//! - **wrong state**: present in a state the view does not allow (attempts
//!   out of range, dead instead of waiting or back), delivered twice,
//!   delivered out of priority/id order, counters that disagree with what
//!   was delivered, or `acked_total` out of its bounds.
//! - **unopenable**: `open` returned an error; **panic**: it or the drain
//!   panicked; **damage**: recovery reported damage to durable data, which a
//!   crash never causes (it only loses unsynced writes).
//! - **partial batch**: some but not all messages of an `enqueue_batch`
//!   survive (the API says "all or none"): of a failed call, some of its
//!   messages are found and not all; of a call that returned `Ok`, a member
//!   is found while another one, which can only have been acked if the
//!   batch survived, is missing and was never acked.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use lanelog::storage::MemoryStorage;
use lanelog::{DeadLetter, Delivery, Durability, ManualClock, RecoveryReport, Stats, Timestamp};

use crate::model::{Model, Seen, View};
use crate::panic_text;
use crate::workload::{options, payload};

/// Counters of one or many verified crash states.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub states: u64,
    pub lost: u64,
    pub resurrected: u64,
    pub holes: u64,
    pub corrupt: u64,
    pub panics: u64,
    pub wrong_state: u64,
    pub unopenable: u64,
    pub damage: u64,
    pub partial_batches: u64,
    /// Holes of messages whose loss itself was allowed (enqueues not yet
    /// made durable under `Durability::None`): what survives is not a
    /// prefix of each lane.
    pub prefix_holes: u64,
    /// `acked_total` below what durable acks add up to (a fixed bug,
    /// `io_error_sweep::acked_total_survives_a_crash_after_a_segment_is_deleted`).
    pub acked_total_undercounts: u64,
    /// Unopenable because a new file's header write was cut short before a
    /// process crash (a fixed bug,
    /// `io_error_sweep::crash_after_a_short_header_write_leaves_an_openable_directory`).
    pub torn_header_refusals: u64,
    /// Double crash: the state after a crash during recovery differs from
    /// the state a clean recovery of the same image gives.
    pub diverged: u64,
    /// Examples, a few per kind.
    pub notes: Vec<String>,
}

impl Findings {
    pub fn add(&mut self, o: &Findings) {
        self.states += o.states;
        self.lost += o.lost;
        self.resurrected += o.resurrected;
        self.holes += o.holes;
        self.corrupt += o.corrupt;
        self.panics += o.panics;
        self.wrong_state += o.wrong_state;
        self.unopenable += o.unopenable;
        self.damage += o.damage;
        self.partial_batches += o.partial_batches;
        self.prefix_holes += o.prefix_holes;
        self.acked_total_undercounts += o.acked_total_undercounts;
        self.torn_header_refusals += o.torn_header_refusals;
        self.diverged += o.diverged;
        for n in &o.notes {
            self.note(n.clone());
        }
    }

    /// Every oracle violation.
    pub fn failures(&self) -> u64 {
        self.lost
            + self.resurrected
            + self.holes
            + self.corrupt
            + self.panics
            + self.wrong_state
            + self.unopenable
            + self.damage
            + self.diverged
            + self.partial_batches
            + self.prefix_holes
            + self.acked_total_undercounts
            + self.torn_header_refusals
    }

    /// Keep an example: at most four of each kind (the first word).
    pub fn note(&mut self, s: String) {
        let kind = |n: &str| n.split(' ').next().unwrap_or("").to_string();
        let k = kind(&s);
        if self.notes.iter().filter(|n| kind(n) == k).count() < 4 {
            self.notes.push(s);
        }
    }

    /// `N lost, N resurrected, N holes, N corrupt, N panics`.
    pub fn headline(&self) -> String {
        format!(
            "{} lost, {} resurrected, {} holes, {} corrupt, {} panics",
            self.lost, self.resurrected, self.holes, self.corrupt, self.panics
        )
    }

    /// The other counters.
    pub fn details(&self) -> String {
        format!(
            "{} wrong-state, {} unopenable, {} damage reports, {} double-crash divergences; {} partial batches, {} prefix holes, {} acked_total undercounts, {} torn-header refusals",
            self.wrong_state,
            self.unopenable,
            self.damage,
            self.diverged,
            self.partial_batches,
            self.prefix_holes,
            self.acked_total_undercounts,
            self.torn_header_refusals
        )
    }
}

/// What a reopened image holds.
#[derive(Debug)]
pub struct Observed {
    pub report: RecoveryReport,
    pub stats: Stats,
    pub dead: Vec<DeadLetter>,
    pub delivered: Vec<Delivery>,
    pub dead_after: Vec<DeadLetter>,
}

impl Observed {
    /// Every message and its state, and `acked_total`: what a double crash
    /// must reproduce.
    pub fn state(&self) -> (BTreeMap<u64, Seen>, u64) {
        let mut m: BTreeMap<u64, Seen> = self
            .delivered
            .iter()
            .map(|d| (u64::from(d.id), Seen::Waiting(d.attempt - 1)))
            .collect();
        for d in &self.dead {
            m.insert(u64::from(d.id), Seen::Dead(d.attempts));
        }
        (m, self.stats.acked_total)
    }
}

/// The outcome of opening an image.
#[derive(Debug)]
pub enum Outcome {
    Opened(Box<Observed>),
    Failed(String),
    Panicked(String),
}

/// Open `img` with a clock far past every delay and no delivery limit
/// (the workload's `checkpoint_bytes` kept), record stats and dead letters,
/// and drain every ready message (without acking). Panics are caught.
pub fn observe(img: MemoryStorage, checkpoint_bytes: u64, now: u64) -> Outcome {
    let clock = ManualClock::new(Timestamp(now + 30 * 86_400_000));
    let opts = options(&clock, Durability::None, 0, checkpoint_bytes);
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<Observed, String> {
        let q = opts
            .open_storage(Arc::new(img))
            .map_err(|e| format!("open: {e}"))?;
        let o = drain(&q, 1024)?;
        drop(q);
        Ok(o)
    }));
    match r {
        Ok(Ok(o)) => Outcome::Opened(Box::new(o)),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(p) => Outcome::Panicked(panic_text(&*p)),
    }
}

/// Record the recovery report, stats and dead letters of a queue just
/// opened, then lease every ready message, `per_call` at a time (without
/// settling them).
pub fn drain(q: &lanelog::Queue, per_call: usize) -> Result<Observed, String> {
    let report = q.recovery_report().clone();
    let stats = q.stats();
    let dead = q.dead_letters().map_err(|e| format!("dead_letters: {e}"))?;
    let mut delivered = Vec::new();
    loop {
        let batch = q
            .dequeue_up_to(per_call)
            .map_err(|e| format!("drain: {e}"))?;
        if batch.is_empty() {
            break;
        }
        delivered.extend(batch);
    }
    let dead_after = q.dead_letters().map_err(|e| format!("dead_letters: {e}"))?;
    Ok(Observed {
        report,
        stats,
        dead,
        delivered,
        dead_after,
    })
}

/// Observe and judge one image; returns the observation if it opened.
pub fn check(
    img: MemoryStorage,
    checkpoint_bytes: u64,
    model: &Model,
    view: View,
    ctx: &str,
    f: &mut Findings,
) -> Option<Box<Observed>> {
    f.states += 1;
    match observe(img, checkpoint_bytes, model.now) {
        Outcome::Opened(o) => {
            judge(model, view, &o, ctx, f);
            Some(o)
        }
        Outcome::Failed(e) if e.contains("bad file header") => {
            f.torn_header_refusals += 1;
            f.note(format!("KNOWN-BUG(torn-header) {ctx}: {e}"));
            None
        }
        Outcome::Failed(e) => {
            f.unopenable += 1;
            f.note(format!("UNOPENABLE {ctx}: {e}"));
            None
        }
        Outcome::Panicked(p) => {
            f.panics += 1;
            f.note(format!("PANIC {ctx}: {p}"));
            None
        }
    }
}

/// Judge an observation against the model (see the module documentation).
pub fn judge(model: &Model, view: View, o: &Observed, ctx: &str, f: &mut Findings) {
    let wrong = |f: &mut Findings, s: String| {
        f.wrong_state += 1;
        f.note(format!("WRONG-STATE {ctx}: {s}"));
    };
    let mut seen: BTreeMap<u64, (Seen, u8)> = BTreeMap::new();
    let mut delivered: BTreeMap<u64, &Delivery> = BTreeMap::new();
    for d in &o.delivered {
        let id = u64::from(d.id);
        if seen
            .insert(id, (Seen::Waiting(d.attempt - 1), d.priority))
            .is_some()
        {
            wrong(f, format!("{id} delivered twice"));
        }
        delivered.insert(id, d);
    }
    for d in &o.dead {
        let id = u64::from(d.id);
        if seen
            .insert(id, (Seen::Dead(d.attempts), d.priority))
            .is_some()
        {
            wrong(f, format!("{id} both dead and ready"));
        }
    }
    let parked = o.dead_after.len().saturating_sub(o.dead.len());
    for d in o
        .dead_after
        .iter()
        .filter(|d| d.reason.starts_with("corrupt"))
    {
        if !o.dead.iter().any(|x| x.id == d.id) {
            f.corrupt += 1;
            f.note(format!(
                "CORRUPT {ctx}: {} failed its check on delivery: {}",
                d.id, d.reason
            ));
        }
    }
    let key = |d: &Delivery| (Reverse(d.priority), d.id);
    if let Some(w) = o.delivered.windows(2).find(|w| key(&w[0]) > key(&w[1])) {
        wrong(
            f,
            format!(
                "drain order: {} (p{}) before {} (p{})",
                w[0].id, w[0].priority, w[1].id, w[1].priority
            ),
        );
    }
    let s = &o.stats;
    if s.ready != (o.delivered.len() + parked) as u64
        || s.in_flight != 0
        || s.delayed != 0
        || s.dead != o.dead.len() as u64
    {
        wrong(
            f,
            format!(
                "stats ready {} in flight {} delayed {} dead {}, but {} delivered, {} parked, {} dead",
                s.ready,
                s.in_flight,
                s.delayed,
                s.dead,
                o.delivered.len(),
                parked,
                o.dead.len()
            ),
        );
    }
    let (lo, hi) = model.acked_bounds(view);
    if s.acked_total < lo {
        f.acked_total_undercounts += 1;
        f.note(format!(
            "KNOWN-BUG(acked_total) {ctx}: acked_total {} below the {lo} durable acks",
            s.acked_total
        ));
    } else if s.acked_total > hi {
        wrong(
            f,
            format!("acked_total {} above the {hi} acks made", s.acked_total),
        );
    }
    if o.report.found_damage() {
        f.damage += 1;
        f.note(format!(
            "DAMAGE {ctx}: damaged {:?}, missing {}",
            o.report.damaged, o.report.missing_messages
        ));
    }

    // Known messages.
    let mut must_have: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    let mut may_miss: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    let mut newest: BTreeMap<u8, u64> = BTreeMap::new();
    for (&id, m) in &model.msgs {
        let allowed = model.possible(id, view);
        match seen.get(&id) {
            None => {
                let lost = !allowed
                    .iter()
                    .any(|s| matches!(s, Seen::NotYet | Seen::Gone));
                if lost {
                    f.lost += 1;
                    f.note(format!(
                        "LOST {ctx}: {id} (p{}, tag {}) allowed {allowed:?}",
                        m.priority, m.tag
                    ));
                    must_have.entry(m.priority).or_default().push(id);
                } else if !model.maybe_gone(id) {
                    may_miss.entry(m.priority).or_default().push(id);
                }
            }
            Some(&(st, prio)) => {
                let e = newest.entry(prio).or_insert(id);
                *e = (*e).max(id);
                if prio != m.priority {
                    f.corrupt += 1;
                    f.note(format!(
                        "CORRUPT {ctx}: {id} priority {prio}, enqueued {}",
                        m.priority
                    ));
                }
                if let Some(d) = delivered.get(&id) {
                    if d.payload != payload(m.tag, m.len) {
                        f.corrupt += 1;
                        f.note(format!(
                            "CORRUPT {ctx}: payload of {id} ({} bytes, enqueued {})",
                            d.payload.len(),
                            m.len
                        ));
                    }
                }
                if !allowed.contains(&st) {
                    if allowed.iter().all(|s| !s.present()) && allowed.contains(&Seen::Gone) {
                        f.resurrected += 1;
                        f.note(format!("RESURRECTED {ctx}: acked {id} came back as {st:?}"));
                    } else {
                        wrong(f, format!("{id} is {st:?}, allowed {allowed:?}"));
                    }
                }
            }
        }
    }

    // Messages the model does not know: only a failed enqueue's may exist,
    // and of each failed call either all or none.
    let mut used: Vec<Vec<bool>> = model
        .doubt_items
        .iter()
        .map(|b| vec![false; b.len()])
        .collect();
    for (&id, &(st, prio)) in &seen {
        if model.msgs.contains_key(&id) {
            continue;
        }
        let hit = delivered.get(&id).and_then(|d| {
            model.doubt_items.iter().enumerate().find_map(|(b, batch)| {
                batch
                    .iter()
                    .enumerate()
                    .position(|(i, it)| {
                        !used[b][i] && it.priority == d.priority && it.payload() == d.payload
                    })
                    .map(|i| (b, i))
            })
        });
        match hit {
            Some((b, i)) if st == Seen::Waiting(0) => {
                used[b][i] = true;
                let e = newest.entry(prio).or_insert(id);
                *e = (*e).max(id);
            }
            _ => {
                f.corrupt += 1;
                f.note(format!(
                    "CORRUPT {ctx}: unknown message {id} ({st:?}, p{prio}) matches no failed enqueue"
                ));
            }
        }
    }
    for batch in &used {
        let matched = batch.iter().filter(|&&u| u).count();
        if matched > 0 && matched < batch.len() {
            f.partial_batches += 1;
            f.note(format!(
                "PARTIAL-BATCH {ctx}: {matched} of {} messages of a failed batch survive",
                batch.len()
            ));
        }
    }

    // Batches that returned Ok: if any member is back, the batch survived,
    // so a member missing must have been acked.
    let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (&id, m) in &model.msgs {
        if let Some(b) = m.batch {
            batches.entry(b).or_default().push(id);
        }
    }
    for (b, members) in batches {
        let Some(&back) = members.iter().find(|id| seen.contains_key(id)) else {
            continue;
        };
        for &id in members.iter().filter(|id| !seen.contains_key(id)) {
            if !model.possible(id, view).contains(&Seen::Gone) {
                f.partial_batches += 1;
                f.note(format!(
                    "PARTIAL-BATCH {ctx}: batch {b}: {back} is back, {id} (never acked) is not"
                ));
            }
        }
    }

    for (promised, missing) in [(true, must_have), (false, may_miss)] {
        for (prio, ids) in missing {
            let Some(&top) = newest.get(&prio) else {
                continue;
            };
            for id in ids.into_iter().filter(|&id| id < top) {
                if promised {
                    f.holes += 1;
                    f.note(format!(
                        "HOLE {ctx}: lane {prio} misses {id} while {top} survives"
                    ));
                } else {
                    f.prefix_holes += 1;
                    f.note(format!(
                        "PREFIX-HOLE {ctx}: lane {prio} misses {id} (never synced) while the later {top} survives"
                    ));
                }
            }
        }
    }
}
