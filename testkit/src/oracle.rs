//! The crash oracles: open a crash image (panics caught) or drain a
//! reopened queue, read everything it holds, and judge it against the
//! [`Model`] under a crash [`View`].
//!
//! - **lost**: a message whose enqueue returned `Ok` and which no state the
//!   view allows shows as absent (it was not, and may not have been, acked,
//!   completed or removed).
//! - **resurrected**: present although every state the view allows is
//!   "acked" or "removed by retention" (nothing expired comes back).
//! - **hole**: a message the model must not miss is missing while a later
//!   message of the same lane (by id, the enqueue order) survives; later
//!   survivors include messages of a failed enqueue. Such a message is also
//!   lost, so a hole is a loss that broke the lane's order.
//! - **prefix hole**: a message whose loss the
//!   view allows (an enqueue not yet synced under `Durability::None`) is
//!   missing while a later message of its lane survives (`Durability`
//!   promises each lane keeps a prefix).
//! - **corrupt**: a delivered payload or priority differs from what was
//!   enqueued, a stored result differs from what `complete` stored (or
//!   exists for a message never completed), a message nobody enqueued shows
//!   up, or a record fails its checksum on delivery (the queue parks it as
//!   a "corrupt" dead letter).
//! - **torn complete**: `complete` is one durable record: a message whose
//!   result is stored while the message itself is still there, or a message
//!   whose complete was durable that is gone without its result.
//! - **key admitted twice**: an enqueue with a key whose first enqueue was
//!   durable (and is within the dedup window) returns a new id or another
//!   message's, or a key whose message is back is not remembered.
//! - **wrong state**: present in a state the view does not allow (attempts
//!   out of range, dead instead of waiting or back), delivered twice,
//!   delivered out of order (lane, then deadlines first, then id) or past
//!   its deadline, counters that disagree with what was drained, or a
//!   lifetime counter (`acked_total`, `deadline_missed_total`,
//!   `expired_total`, `dead_expired_total`) out of its bounds.
//! - **unopenable**: `open` returned an error; **panic**: it or the drain
//!   panicked; **damage**: recovery reported damage to durable data, which a
//!   crash never causes (it only loses unsynced writes).
//! - **partial batch**: some but not all messages of an `enqueue_batch`
//!   survive (the API says "all or none"): of a failed call, some of its
//!   messages are found and not all; of a call that returned `Ok`, a member
//!   is found while another one, which can only have been acked if the
//!   batch survived, is missing and was never acked.
//!
//! **How an image is read** ([`observe`]): it is opened with retention,
//! dead-letter retention and the dedup window overridden to
//! [`crate::workload::FOREVER`] (so opening removes nothing by time and
//! forgets no key), on a clock 1 ms after the model's last op (`t_a`); every
//! ready message is leased (with a lease longer than the run), then the
//! clock moves 30 days on (`t_b`, past every delay) and the rest is leased.
//! A message whose deadline passes at `t_a` or `t_b` becomes a dead letter
//! ("deadline missed", dead at that time) instead: it was waiting when the
//! image was opened. Then `stats()`, the dead letters, `result(id)` of every
//! message the model knows, and (optionally) an enqueue with every key the
//! model knows. [`observe_live`] does the same on a queue a harness goes on
//! using, at its own clock and options, without the second phase or keys.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use lanelog::storage::MemoryStorage;
use lanelog::{
    DeadLetter, Delivery, DequeueOptions, Durability, EnqueueOptions, ManualClock, MessageId,
    Queue, RecoveryReport, Stats, Timestamp,
};

use crate::model::{Counter, KeyExpect, Model, Seen, Totals, View, DEADLINE_MISSED};
use crate::panic_text;
use crate::workload::{key_bytes, options, payload, result_payload, timeless, FOREVER};

/// How far past the model's clock the second phase of [`observe`] looks.
pub const LATER_MS: u64 = 30 * 86_400_000;

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
    /// A completed message whose result and message are both there, or
    /// whose durable complete left neither.
    pub torn_completes: u64,
    /// A durable key admitted again (or answered with another message's
    /// id), or a key whose message is back that is not remembered.
    pub keys_readmitted: u64,
    /// Results read back (and compared byte for byte).
    pub results_checked: u64,
    /// Keys probed with an enqueue.
    pub keys_checked: u64,
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
        self.torn_completes += o.torn_completes;
        self.keys_readmitted += o.keys_readmitted;
        self.results_checked += o.results_checked;
        self.keys_checked += o.keys_checked;
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
            + self.torn_completes
            + self.keys_readmitted
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
            "{} wrong-state, {} unopenable, {} damage reports, {} double-crash divergences; {} partial batches, {} prefix holes, {} acked_total undercounts, {} torn-header refusals; {} torn completes, {} keys admitted twice ({} results and {} keys checked)",
            self.wrong_state,
            self.unopenable,
            self.damage,
            self.diverged,
            self.partial_batches,
            self.prefix_holes,
            self.acked_total_undercounts,
            self.torn_header_refusals,
            self.torn_completes,
            self.keys_readmitted,
            self.results_checked,
            self.keys_checked
        )
    }
}

/// What a reopened image holds.
#[derive(Debug)]
pub struct Observed {
    pub report: RecoveryReport,
    /// `stats()` right after the open (the queue's background thread may
    /// have run already).
    pub stats_open: Stats,
    /// `stats()` after the drain.
    pub stats: Stats,
    /// The dead letters after the drain.
    pub dead: Vec<DeadLetter>,
    /// Every message leased by the drain, in order: the first phase, then
    /// (from `phase_b` on) the second.
    pub delivered: Vec<Delivery>,
    pub phase_b: usize,
    /// The clock of each phase (equal for [`observe_live`]).
    pub t_a: u64,
    pub t_b: u64,
    /// `result(id)` of every message the model completed (or tried to)
    /// that has one, and the errors `result` returned.
    pub results: BTreeMap<u64, Vec<u8>>,
    pub result_errors: Vec<(u64, String)>,
    /// `(key, id)`: what an enqueue with each key the model knows returned
    /// (an error as its text).
    pub keys: Vec<(u64, Result<u64, String>)>,
}

impl Observed {
    /// Whether a dead letter was made while the image was observed (its
    /// deadline passed at `t_a` or `t_b`, or its record failed its check);
    /// such a message was waiting when the image was opened.
    pub fn made_here(&self, d: &DeadLetter) -> bool {
        d.dead_at.0 == self.t_a || d.dead_at.0 == self.t_b
    }

    /// Every message and its state, and the lifetime counters as the image
    /// had them: what a double crash must reproduce.
    pub fn state(&self) -> (BTreeMap<u64, Seen>, Totals) {
        let mut m: BTreeMap<u64, Seen> = self
            .delivered
            .iter()
            .map(|d| (u64::from(d.id), Seen::Waiting(d.attempt - 1)))
            .collect();
        let mut missed_here = 0;
        for d in &self.dead {
            let here = self.made_here(d);
            let st = if here && d.reason == DEADLINE_MISSED {
                missed_here += 1;
                Seen::Waiting(d.attempts)
            } else if here && d.reason.starts_with("corrupt") {
                // Parked as corrupt on delivery: the delivery counted.
                Seen::Waiting(d.attempts.saturating_sub(1))
            } else {
                Seen::Dead(d.attempts)
            };
            m.insert(u64::from(d.id), st);
        }
        for id in self.results.keys() {
            m.entry(*id).or_insert(Seen::Done);
        }
        let s = &self.stats;
        (
            m,
            Totals {
                acked: s.acked_total,
                missed: s.deadline_missed_total - missed_here.min(s.deadline_missed_total),
                expired: s.expired_total,
                dead_expired: s.dead_expired_total,
            },
        )
    }
}

/// The outcome of opening an image.
#[derive(Debug)]
pub enum Outcome {
    Opened(Box<Observed>),
    Failed(String),
    Panicked(String),
}

/// Open `img` and read everything (see the module documentation); with
/// `probe_keys`, end with an enqueue per key the model knows. Panics are
/// caught.
pub fn observe(
    img: MemoryStorage,
    checkpoint_bytes: u64,
    model: &Model,
    probe_keys: bool,
) -> Outcome {
    let t_a = model.now + 1;
    let clock = ManualClock::new(Timestamp(t_a));
    let opts = timeless(options(&clock, Durability::None, 0, checkpoint_bytes));
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<Observed, String> {
        let q = opts
            .open_storage(Arc::new(img))
            .map_err(|e| format!("open: {e}"))?;
        let report = q.recovery_report().clone();
        let stats_open = q.stats();
        let mut delivered = lease_all(&q, FOREVER)?;
        let phase_b = delivered.len();
        let t_b = model.now + LATER_MS;
        clock.set(Timestamp(t_b));
        delivered.extend(lease_all(&q, FOREVER)?);
        let mut o = finish(
            &q,
            model,
            report,
            stats_open,
            delivered,
            phase_b,
            (t_a, t_b),
        )?;
        if probe_keys {
            o.keys = probe(&q, model);
        }
        drop(q);
        Ok(o)
    }));
    match r {
        Ok(Ok(o)) => Outcome::Opened(Box::new(o)),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(p) => Outcome::Panicked(panic_text(&*p)),
    }
}

/// Read a queue just opened at the model's clock (a harness goes on using
/// it): stats, then lease every ready message `per_call` at a time with the
/// queue's lease (without settling them), then stats, dead letters and the
/// results of every message the model knows.
pub fn observe_live(q: &Queue, model: &Model, per_call: usize) -> Result<Observed, String> {
    let report = q.recovery_report().clone();
    let stats_open = q.stats();
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
    let n = delivered.len();
    finish(
        q,
        model,
        report,
        stats_open,
        delivered,
        n,
        (model.now, model.now),
    )
}

/// Lease every ready message with leases of `lease`.
fn lease_all(q: &Queue, lease: Duration) -> Result<Vec<Delivery>, String> {
    let opts = DequeueOptions::new()
        .max(1024)
        .wait(Duration::ZERO)
        .visibility(lease);
    let mut out = Vec::new();
    loop {
        let batch = q.dequeue_with(&opts).map_err(|e| format!("drain: {e}"))?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

fn finish(
    q: &Queue,
    model: &Model,
    report: RecoveryReport,
    stats_open: Stats,
    delivered: Vec<Delivery>,
    phase_b: usize,
    (t_a, t_b): (u64, u64),
) -> Result<Observed, String> {
    let stats = q.stats();
    let dead = q.dead_letters().map_err(|e| format!("dead_letters: {e}"))?;
    let mut results = BTreeMap::new();
    let mut result_errors = Vec::new();
    // Only a message completed (or tried) can have a result; one that has
    // a result otherwise shows in `stats().results`.
    let completed = model.msgs.iter().filter(|(_, m)| m.result.is_some());
    for (&id, _) in completed {
        match q.result(MessageId::from(id)) {
            Ok(Some(r)) => {
                results.insert(id, r);
            }
            Ok(None) => {}
            Err(e) => result_errors.push((id, e.to_string())),
        }
    }
    Ok(Observed {
        report,
        stats_open,
        stats,
        dead,
        delivered,
        phase_b,
        t_a,
        t_b,
        results,
        result_errors,
        keys: Vec::new(),
    })
}

/// Enqueue a probe with every key the model knows (and every key of a
/// failed enqueue); returns what each returned.
fn probe(q: &Queue, model: &Model) -> Vec<(u64, Result<u64, String>)> {
    let mut keys: Vec<u64> = model.keys.keys().copied().collect();
    for b in &model.doubt_items {
        keys.extend(b.iter().filter_map(|it| it.key));
    }
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let opts = EnqueueOptions::new().key(key_bytes(k));
            let r = q
                .enqueue_with(&payload(u64::MAX - k, 8), &opts)
                .map(u64::from)
                .map_err(|e| e.to_string());
            (k, r)
        })
        .collect()
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
    match observe(img, checkpoint_bytes, model, true) {
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

/// The deadline the queue holds for model message `id` if it is waiting
/// after a reopen: `None` when the model cannot tell (a redriven message).
fn deadline_of(model: &Model, id: u64) -> Option<u64> {
    let m = model.msgs.get(&id)?;
    (!m.redriven).then_some(m.deadline_set)
}

/// Judge an observation against the model (see the module documentation).
pub fn judge(model: &Model, view: View, o: &Observed, ctx: &str, f: &mut Findings) {
    let wrong = |f: &mut Findings, s: String| {
        f.wrong_state += 1;
        f.note(format!("WRONG-STATE {ctx}: {s}"));
    };
    // What the image held, per message: the states it may have had (a
    // dead letter made at the model's own clock while observing may have
    // been one already), and its lane.
    let mut seen: BTreeMap<u64, (Vec<Seen>, u8)> = BTreeMap::new();
    let mut delivered: BTreeMap<u64, &Delivery> = BTreeMap::new();
    for d in &o.delivered {
        let id = u64::from(d.id);
        if seen
            .insert(id, (vec![Seen::Waiting(d.attempt - 1)], d.priority))
            .is_some()
        {
            wrong(f, format!("{id} delivered twice"));
        }
        delivered.insert(id, d);
    }
    // Dead letters made while observing: deadlines that passed then
    // (waiting at the open), records that failed their check.
    let mut missed_here = (0u64, 0u64);
    for d in &o.dead {
        let id = u64::from(d.id);
        let here = o.made_here(d);
        let states = if here && d.reason == DEADLINE_MISSED {
            if let Some(dl) = deadline_of(model, id).filter(|&dl| dl == 0 || dl > d.dead_at.0) {
                wrong(
                    f,
                    format!(
                        "{id} dead-lettered as deadline missed at {} (its deadline: {dl})",
                        d.dead_at.0
                    ),
                );
            }
            if d.dead_at.0 == model.now {
                // The model's own clock: it may have been one already.
                missed_here.1 += 1;
                vec![Seen::Waiting(d.attempts), Seen::Dead(d.attempts)]
            } else {
                missed_here.0 += 1;
                vec![Seen::Waiting(d.attempts)]
            }
        } else if here && d.reason.starts_with("corrupt") {
            f.corrupt += 1;
            f.note(format!(
                "CORRUPT {ctx}: {} failed its check on delivery: {}",
                d.id, d.reason
            ));
            vec![Seen::Waiting(d.attempts.saturating_sub(1))]
        } else {
            vec![Seen::Dead(d.attempts)]
        };
        if seen.insert(id, (states, d.priority)).is_some() {
            wrong(f, format!("{id} both dead and ready"));
        }
    }
    for (&id, r) in &o.results {
        if let Some((states, _)) = seen.get(&id) {
            f.torn_completes += 1;
            f.note(format!(
                "TORN-COMPLETE {ctx}: {id} has its result stored and is still there ({states:?})"
            ));
            continue;
        }
        f.results_checked += 1;
        let m = &model.msgs[&id];
        match m.result {
            Some((tag, len)) if *r == result_payload(tag, len) => {}
            Some((_, len)) => {
                f.corrupt += 1;
                f.note(format!(
                    "CORRUPT {ctx}: result of {id} differs ({} bytes, stored {len})",
                    r.len()
                ));
            }
            None => {
                f.corrupt += 1;
                f.note(format!("CORRUPT {ctx}: {id} has a result, never completed"));
            }
        }
        seen.insert(id, (vec![Seen::Done], m.priority));
    }
    for (id, e) in &o.result_errors {
        f.corrupt += 1;
        f.note(format!("CORRUPT {ctx}: result({id}): {e}"));
    }

    // Order of each phase: lane, then deadlines first (earliest first),
    // then id; never a message whose deadline passed.
    let deadline = |d: &Delivery| -> Option<u64> {
        let id = u64::from(d.id);
        if model.msgs.contains_key(&id) {
            return deadline_of(model, id);
        }
        model
            .doubt_items
            .iter()
            .flatten()
            .find(|it| it.priority == d.priority && it.payload() == d.payload)
            .map(|it| it.deadline)
    };
    for (phase, at) in [
        (&o.delivered[..o.phase_b], o.t_a),
        (&o.delivered[o.phase_b..], o.t_b),
    ] {
        let keys: Vec<(Reverse<u8>, Option<u64>, u64)> = phase
            .iter()
            .map(|d| {
                let dl = deadline(d).map(|x| if x == 0 { u64::MAX } else { x });
                (Reverse(d.priority), dl, u64::from(d.id))
            })
            .collect();
        for (d, k) in phase.iter().zip(&keys) {
            if k.1.is_some_and(|dl| dl <= at) {
                wrong(
                    f,
                    format!("{} delivered at {at} past its deadline {:?}", d.id, k.1),
                );
            }
        }
        let bad = keys.windows(2).find(|w| {
            let (a, b) = (&w[0], &w[1]);
            match (a.1, b.1) {
                (Some(x), Some(y)) => (a.0, x, a.2) > (b.0, y, b.2),
                _ => a.0 > b.0,
            }
        });
        if let Some(w) = bad {
            wrong(f, format!("drain order: {:?} before {:?}", w[0], w[1]));
        }
    }

    let s = &o.stats;
    let dead_count = o.dead.len() as u64;
    if s.ready != 0
        || s.delayed != 0
        || s.in_flight != o.delivered.len() as u64
        || s.dead != dead_count
        || s.results != o.results.len() as u64
    {
        wrong(
            f,
            format!(
                "stats after the drain: ready {} in flight {} delayed {} dead {} results {}, but {} delivered, {} dead letters, {} results",
                s.ready,
                s.in_flight,
                s.delayed,
                s.dead,
                s.results,
                o.delivered.len(),
                dead_count,
                o.results.len()
            ),
        );
    }
    let so = &o.stats_open;
    let at_open = so.ready + so.delayed + so.in_flight + so.dead;
    if at_open != o.delivered.len() as u64 + dead_count || so.results != s.results {
        wrong(
            f,
            format!(
                "stats at open: ready {} delayed {} in flight {} dead {} results {}, but the drain found {} delivered, {} dead letters, {} results",
                so.ready,
                so.delayed,
                so.in_flight,
                so.dead,
                so.results,
                o.delivered.len(),
                dead_count,
                s.results
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
    // The other lifetime counters: what the image had is the count minus
    // the deadlines missed while observing (those at the model's clock may
    // have been missed before).
    let missed = s.deadline_missed_total;
    let had = (
        missed.saturating_sub(missed_here.0 + missed_here.1),
        missed.saturating_sub(missed_here.0),
    );
    for (name, c, (a, b)) in [
        ("deadline_missed_total", Counter::Missed, had),
        (
            "expired_total",
            Counter::Expired,
            (s.expired_total, s.expired_total),
        ),
        (
            "dead_expired_total",
            Counter::DeadExpired,
            (s.dead_expired_total, s.dead_expired_total),
        ),
    ] {
        let (lo, hi) = model.bounds(c, view);
        if b < lo || a > hi {
            wrong(
                f,
                format!("{name} {a}..={b} outside the bounds {lo}..={hi} of the ops made"),
            );
        }
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
                let absent = |s: &Seen| matches!(s, Seen::NotYet | Seen::Gone);
                if allowed.iter().any(absent) {
                    if !model.maybe_gone(id) {
                        may_miss.entry(m.priority).or_default().push(id);
                    }
                } else if allowed.contains(&Seen::Done) {
                    f.torn_completes += 1;
                    f.note(format!(
                        "TORN-COMPLETE {ctx}: {id} is gone without its result, allowed {allowed:?}"
                    ));
                    must_have.entry(m.priority).or_default().push(id);
                } else {
                    f.lost += 1;
                    f.note(format!(
                        "LOST {ctx}: {id} (p{}, tag {}) allowed {allowed:?}",
                        m.priority, m.tag
                    ));
                    must_have.entry(m.priority).or_default().push(id);
                }
            }
            Some((states, prio)) => {
                if states[0] != Seen::Done {
                    let e = newest.entry(*prio).or_insert(id);
                    *e = (*e).max(id);
                }
                if *prio != m.priority {
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
                if !states.iter().any(|st| allowed.contains(st)) {
                    let st = states[0];
                    if allowed.iter().all(|s| !s.present() && *s != Seen::Done)
                        && allowed.contains(&Seen::Gone)
                    {
                        f.resurrected += 1;
                        f.note(format!(
                            "RESURRECTED {ctx}: acked or expired {id} came back as {st:?}"
                        ));
                    } else {
                        wrong(f, format!("{id} is {states:?}, allowed {allowed:?}"));
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
    for (&id, (states, prio)) in &seen {
        if model.msgs.contains_key(&id) {
            continue;
        }
        let dead_here = o
            .dead
            .iter()
            .find(|d| u64::from(d.id) == id)
            .filter(|d| o.made_here(d) && d.reason == DEADLINE_MISSED);
        let hit = model.doubt_items.iter().enumerate().find_map(|(b, batch)| {
            batch
                .iter()
                .enumerate()
                .position(|(i, it)| {
                    !used[b][i]
                        && it.priority == *prio
                        && match (delivered.get(&id), dead_here) {
                            (Some(d), _) => it.payload() == d.payload,
                            // Missed its deadline while observed: no payload
                            // to compare, but it had a deadline, and was
                            // ready at the first look (then it missed it
                            // there) or delayed past it.
                            (None, Some(d)) => {
                                let ready_at = d.enqueued_at.0 + u64::from(it.delay_ms);
                                it.deadline > 0
                                    && if d.dead_at.0 == o.t_a {
                                        ready_at <= o.t_a && it.deadline <= o.t_a
                                    } else {
                                        ready_at > o.t_a
                                    }
                            }
                            _ => false,
                        }
                })
                .map(|i| (b, i))
        });
        match hit {
            Some((b, i)) if states.contains(&Seen::Waiting(0)) => {
                used[b][i] = true;
                let e = newest.entry(*prio).or_insert(id);
                *e = (*e).max(id);
            }
            _ => {
                f.corrupt += 1;
                f.note(format!(
                    "CORRUPT {ctx}: unknown message {id} ({states:?}, p{prio}) matches no failed enqueue"
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
    // so a member missing must have been acked, completed or removed.
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

    // Keys: a durable key is remembered with its first id; any answer is
    // an id of the key's own admissions or a new one; a key whose message
    // is back (and within the window) is remembered.
    let known_ids: std::collections::BTreeSet<u64> = seen.keys().copied().collect();
    for (k, r) in &o.keys {
        f.keys_checked += 1;
        let got = match r {
            Ok(id) => *id,
            Err(e) => {
                wrong(f, format!("enqueue with key {k}: {e}"));
                continue;
            }
        };
        let Some(rec) = model.keys.get(k) else {
            // A key only a failed enqueue used: its message or a new one.
            if model.msgs.contains_key(&got) {
                f.keys_readmitted += 1;
                f.note(format!(
                    "KEY-READMITTED {ctx}: key {k} (of a failed enqueue) answered {got}, another message"
                ));
            }
            continue;
        };
        // Not a message the model knows: admitted by the probe, or by a
        // failed enqueue whose record survived.
        let fresh = !model.msgs.contains_key(&got);
        match model.key_expect(*k, view) {
            KeyExpect::Must(id) if got != id => {
                f.keys_readmitted += 1;
                f.note(format!(
                    "KEY-READMITTED {ctx}: key {k}, durably admitted as {id}, answered {got}"
                ));
            }
            KeyExpect::Any(ids) if !ids.contains(&got) && !fresh => {
                f.keys_readmitted += 1;
                f.note(format!(
                    "KEY-READMITTED {ctx}: key {k} (admitted as {ids:?}) answered {got}, another message"
                ));
            }
            _ => {}
        }
        let within = model.now.saturating_sub(rec.at) < model.timers.dedup_window_ms;
        let admitted = fresh && !known_ids.contains(&got);
        if admitted && within && seen.contains_key(&rec.id) {
            f.keys_readmitted += 1;
            f.note(format!(
                "KEY-READMITTED {ctx}: key {k}: its message {} is back but the key was admitted again as {got}",
                rec.id
            ));
        }
    }
}
