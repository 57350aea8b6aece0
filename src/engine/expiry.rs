//! Time-driven removals: messages whose deadline passed before delivery
//! become dead letters, retention removes old messages and results, dead
//! letters past their retention are purged, and keys past the dedup window
//! are forgotten. A background thread (the tender) runs them when they
//! fall due, so a queue nobody reads still shrinks.
//!
//! Invariants:
//!
//! A. Every removal is a journal entry applied through `Index::apply`
//!    (`DeadlineMissed`, `RetentionCut`, `DeadExpired`), so replay repeats
//!    it; forgetting keys is the one change not journaled (a reopen drops
//!    them again from their times).
//! B. The tender commits what it wrote, so the segments it drained are
//!    deleted without any other call.
//! C. Expiry never runs under a poisoned or closed queue.
//! D. The tender ends only when the queue closes or is poisoned. A failed
//!    pass that left the queue healthy (a journal file that could not be
//!    made on a full disk) wrote nothing (invariant F of `engine`); the
//!    tender tries again after a backoff that doubles up to its longest
//!    nap, so what falls due is removed once there is room again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Core, Inner, Written};
use crate::clock::duration_ms;
use crate::codec::entry::{Entry, Kind};
use crate::error::Result;

/// The longest the tender sleeps between looks: a bound on how late a
/// removal runs when its due time was not known when the tender went to
/// sleep (a clock stepped by hand, an option changed at reopen).
const MAX_NAP: Duration = Duration::from_secs(1);

/// The tender's first wait after a failed pass; each further failure in a
/// row doubles it, up to [`MAX_NAP`].
const FIRST_RETRY: Duration = Duration::from_millis(10);

/// The tender's shared state.
#[derive(Debug)]
pub(super) struct Tender {
    stop: Mutex<bool>,
    wake: Condvar,
    /// When (queue clock ms) the tender will look next: a new deadline
    /// earlier than this wakes it, later ones do not (so enqueues with
    /// deadlines cost no wake-up each).
    next_look: AtomicU64,
    /// The thread, joined when the queue closes.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Default for Tender {
    fn default() -> Self {
        Tender {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            next_look: AtomicU64::new(0),
            thread: Mutex::new(None),
        }
    }
}

impl Tender {
    /// A message with deadline `at` was enqueued: wake the tender if it
    /// would otherwise look too late.
    pub(super) fn deadline_at(&self, at: u64) {
        if at < self.next_look.load(Ordering::Acquire) {
            self.next_look.store(at, Ordering::Release);
            // Under the lock the tender checks `next_look` and starts to
            // wait under: it sees the new value or gets this wake-up.
            let _stop = self.stop.lock();
            self.wake.notify_all();
        }
    }
}

impl Inner {
    /// Run every removal due at the queue clock's now; returns how many
    /// messages, results and dead letters it removed or dead-lettered.
    pub(crate) fn expire_due(&self) -> Result<u64> {
        let (n, written) = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            self.expire_locked(&mut core, now)?
        };
        if let Some(w) = written {
            self.commit(w.seq)?;
        }
        Ok(n)
    }

    /// The body of [`Inner::expire_due`], under the core lock. (Dequeue
    /// does not run it: leasing checks each candidate's deadline itself.)
    pub(super) fn expire_locked(
        &self,
        core: &mut Core,
        now: u64,
    ) -> Result<(u64, Option<Written>)> {
        let window = duration_ms(self.opts.dedup_window);
        core.index.forget_keys(now.saturating_sub(window));
        core.index.promote_due(now);
        let mut entries: Vec<Entry> = core
            .index
            .missed_deadlines(now)
            .into_iter()
            .map(|(id, priority, attempt)| {
                Entry::new(Kind::DeadlineMissed, id, priority, now, attempt)
            })
            .collect();
        let mut removed = entries.len() as u64;
        if let Some(r) = self.opts.retention {
            let cutoff = now.saturating_sub(duration_ms(r));
            // Never past the ids handed out: a cut applies to ids only.
            let below = core.index.marks().bound(cutoff).min(core.next_id);
            if below > core.index.cut_below() {
                // What it removes is counted once applied.
                entries.push(Entry::new(Kind::RetentionCut, below, 0, now, 0));
            }
        }
        if let Some(r) = self.opts.dead_letter_retention {
            let cutoff = now.saturating_sub(duration_ms(r));
            for (id, priority) in core.index.dead_since(cutoff) {
                entries.push(Entry::new(Kind::DeadExpired, id, priority, now, 0));
                removed += 1;
            }
        }
        if entries.is_empty() {
            return Ok((0, None));
        }
        let expired_before = core.index.totals().expired;
        let written = self.write_entries(core, &entries, now)?;
        removed += core.index.totals().expired - expired_before;
        Ok((removed, Some(written)))
    }

    /// When the next removal falls due (queue clock ms), if any is known.
    pub(super) fn next_expiry(&self, core: &Core) -> Option<u64> {
        // Delayed messages count too: one whose deadline passes while it
        // waits is due once it matures.
        let deadline = core.index.next_deadline();
        let retention = self.opts.retention.and_then(|r| {
            core.index
                .marks()
                .next_due(core.index.cut_below(), duration_ms(r))
        });
        let dead = self
            .opts
            .dead_letter_retention
            .and_then(|r| Some(core.index.oldest_dead()?.saturating_add(duration_ms(r))));
        [deadline, retention, dead].into_iter().flatten().min()
    }
}

/// Start the tender thread; it holds only a weak handle, so dropping the
/// last queue handle still closes the queue.
pub(super) fn start_tender(inner: &Arc<Inner>) -> std::io::Result<()> {
    let tender = inner.tender.clone();
    let weak: Weak<Inner> = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("lanelog-tender".into())
        .spawn(move || {
            // Set when a pass found something due but removed nothing (a
            // cut that only passed finished ids): the next nap is a full
            // one, so no state can make this thread spin.
            let mut idle_pass = false;
            // Failed passes in a row (invariant D).
            let mut failures: u32 = 0;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let core = inner.core.lock();
                let now = inner.opts.clock.now().0;
                let due = inner.next_expiry(&core);
                if !idle_pass && due.is_some_and(|at| at <= now) {
                    drop(core);
                    match inner.expire_due() {
                        Ok(removed) => {
                            idle_pass = removed == 0;
                            failures = 0;
                            continue;
                        }
                        // Poisoned or closed: the next call reports it.
                        Err(_) if inner.writable(&inner.core.lock()).is_err() => return,
                        Err(_) => failures = failures.saturating_add(1),
                    }
                    let backoff = FIRST_RETRY
                        .saturating_mul(1 << (failures - 1).min(16))
                        .min(MAX_NAP);
                    // No deadline wakes it early: a full disk would turn
                    // every enqueue with a deadline into another try.
                    inner.tender.next_look.store(0, Ordering::Release);
                    drop(inner);
                    let mut stop = tender.stop.lock();
                    if !*stop {
                        tender.wake.wait_for(&mut stop, backoff);
                    }
                    if *stop {
                        return;
                    }
                    continue;
                }
                let nap = match due {
                    Some(at) if !idle_pass => {
                        Duration::from_millis(at.saturating_sub(now)).min(MAX_NAP)
                    }
                    _ => MAX_NAP,
                };
                idle_pass = false;
                let look = now.saturating_add(duration_ms(nap));
                // Under the core lock, so an enqueue (which reads it under
                // the same lock) sees this look or the next.
                inner.tender.next_look.store(look, Ordering::Release);
                drop(core);
                drop(inner);
                let mut stop = tender.stop.lock();
                // An earlier deadline arrived since `look` was chosen: look again.
                if !*stop && tender.next_look.load(Ordering::Acquire) >= look {
                    tender.wake.wait_for(&mut stop, nap);
                }
                if *stop {
                    return;
                }
            }
        })
        .map(|handle| *inner.tender.thread.lock() = Some(handle))
}

/// Tell the tender to stop and wait for it, so a closed queue leaves no
/// thread behind (unless this runs on the tender itself: it may hold the
/// last handle when the queue is dropped).
pub(super) fn stop_tender(inner: &Inner) {
    *inner.tender.stop.lock() = true;
    inner.tender.wake.notify_all();
    let handle = inner.tender.thread.lock().take();
    if let Some(h) = handle {
        if h.thread().id() != std::thread::current().id() {
            let _ = h.join();
        }
    }
}
