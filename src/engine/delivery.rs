//! Delivery: leasing ready messages (and dead-lettering those past
//! `max_deliveries`), reading them outside the core lock, expiring leases,
//! and settling deliveries by receipt.
//!
//! Invariants:
//!
//! A. A message is leased (its `Delivered` entry applied and appended)
//!    under the core lock, and its record read after the lock is dropped:
//!    consumers never read payloads while holding the lock.
//! B. A damaged record is never delivered: it becomes a dead letter. A
//!    transient read error gives back every delivery of the call, so a
//!    failed dequeue neither hides a message nor delivers part of a batch.
//! C. Settling checks every receipt before writing anything, so one stale
//!    receipt in a batch changes nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::{Core, Health, Inner, Target, Written};
use crate::clock::Timestamp;
use crate::codec::entry::MAX_REASON_BYTES;
use crate::codec::entry::{Entry, Kind};
use crate::codec::record::{self, RecordHeader, Seed};
use crate::config::DequeueOptions;
use crate::error::{Error, Result};
use crate::index::{Candidate, Found, Loc};
use crate::message::{Delivery, MessageId, MessageStatus, Receipt};
use crate::segment::{self, ReadError};
use crate::storage::StorageFile;

/// How long a consumer about to park spins first: about a wake-up of an
/// idle CPU, so a message that arrives within it is handed over without
/// one, while an idle consumer costs one such spin per wait.
pub(super) const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

/// What settling a delivery does.
#[derive(Debug, Clone)]
pub(crate) enum Settlement {
    /// Done: never delivered again.
    Ack,
    /// Ready again after the delay (zero for at once), attempts kept.
    Nack(Duration),
    /// The lease runs for this long from now.
    Extend(Duration),
    /// Straight to the dead letters with this reason.
    DeadLetter(String),
}

/// A message leased under the lock, to be read outside it.
struct Leased {
    c: Candidate,
    lease: u64,
    /// The segment file, its records' seed and its size; `None` if the
    /// segment is gone (never after a clean recovery).
    file: Option<(Arc<dyn StorageFile>, Seed, u32)>,
}

/// What reading leased records found besides the deliveries.
struct ReadOutcome {
    /// Damaged records, with why.
    corrupt: Vec<(Leased, String)>,
    /// Records an I/O error kept from being read.
    unreadable: Vec<(Leased, std::io::Error)>,
}

/// A delivery to give back: ready again at once, the delivery not counted.
struct GiveBack {
    id: u64,
    priority: u8,
    lease: u64,
    /// The attempts to keep.
    attempt: u32,
}

impl Inner {
    /// Lease up to `opts.max` messages, waiting as `opts` says.
    pub(crate) fn dequeue(&self, opts: &DequeueOptions) -> Result<Vec<Delivery>> {
        opts.validate()?;
        let visibility = opts.visibility.unwrap_or(self.opts.visibility_timeout);
        let start = Instant::now();
        let first_deadline = start + opts.wait.unwrap_or(self.opts.default_wait);
        let mut fill_deadline: Option<Instant> = None;
        let mut out = Vec::new();
        let mut core = self.core.lock();
        let interrupts = core.interrupts;
        loop {
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            self.expire_leases(&mut core, now)?;
            core.index.promote_due(now);
            let leased = self.lease(&mut core, opts.max - out.len(), now, visibility)?;
            if !leased.is_empty() {
                drop(core);
                let read = self.read_deliveries(leased, &mut out);
                if !read.corrupt.is_empty() {
                    // Damaged records are never delivered: park them, look again.
                    self.dead_letter_corrupt(read.corrupt)?;
                }
                if let Some((_, e)) = read.unreadable.first() {
                    // Invariant B: not damage, so give back and report.
                    let error = Error::Io(std::io::Error::new(e.kind(), e.to_string()));
                    let back = read
                        .unreadable
                        .iter()
                        .map(|(l, _)| GiveBack {
                            id: l.c.id,
                            priority: l.c.priority,
                            lease: l.lease,
                            attempt: l.c.attempt,
                        })
                        .chain(out.iter().map(|d| GiveBack {
                            id: d.id.0,
                            priority: d.priority,
                            lease: d.receipt.lease,
                            attempt: d.attempt - 1,
                        }))
                        .collect::<Vec<_>>();
                    self.release(&back)?;
                    return Err(error);
                }
                if out.len() >= opts.max {
                    break;
                }
                if !out.is_empty() && fill_deadline.is_none() {
                    let linger_end = Instant::now() + opts.linger;
                    fill_deadline = Some(if opts.linger_within_wait {
                        first_deadline
                    } else {
                        linger_end
                    });
                }
                core = self.core.lock();
                continue;
            }
            let deadline = fill_deadline.unwrap_or(first_deadline);
            let now_instant = Instant::now();
            if now_instant >= deadline {
                break;
            }
            // Sleep until the deadline, an enqueue (notified), or the next
            // delay or lease expiry, whichever comes first.
            let wake = match core.index.next_timer() {
                Some(at) => {
                    deadline.min(now_instant + Duration::from_millis(at.saturating_sub(now)))
                }
                None => deadline,
            };
            if self.spin_for_ready(&mut core, wake) {
                continue;
            }
            core.waiting += 1;
            self.ready.wait_until(&mut core, wake);
            core.waiting -= 1;
            if core.interrupts != interrupts {
                break;
            }
        }
        Ok(out)
    }

    /// Before parking, spin without the lock for up to `self.spin` (and
    /// not past `until`) in case a message becomes ready at once: handing
    /// it over then costs no sleep and wake-up of an idle CPU. Returns
    /// whether one did.
    fn spin_for_ready(&self, core: &mut MutexGuard<'_, Core>, until: Instant) -> bool {
        if self.spin.is_zero() {
            return false;
        }
        // Read and re-read under the core lock, which every `wake` holds:
        // a message made ready while the lock was let go is seen here, so
        // the caller never parks past it (it counts as waiting, and so is
        // notified, only once it parks).
        let epoch = self.ready_epoch.load(Ordering::Acquire);
        MutexGuard::unlocked(core, || {
            let end = until.min(Instant::now() + self.spin);
            while self.ready_epoch.load(Ordering::Acquire) == epoch && Instant::now() < end {
                std::hint::spin_loop();
            }
        });
        self.ready_epoch.load(Ordering::Acquire) != epoch
    }

    /// Return expired leases to ready.
    pub(super) fn expire_leases(&self, core: &mut Core, now: u64) -> Result<()> {
        let expired = core.index.expired(now);
        if expired.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry> = expired
            .iter()
            .map(|(id, l)| Entry::new(Kind::Expired, *id, l.priority, now, l.attempt))
            .collect();
        self.write_entries(core, &entries, now).map(|_| ())
    }

    /// Lease up to `max` messages; messages past `max_deliveries` go to the
    /// dead letters instead.
    fn lease(
        &self,
        core: &mut Core,
        max: usize,
        now: u64,
        visibility: Duration,
    ) -> Result<Vec<Leased>> {
        let deadline = Timestamp(now).plus(visibility).0;
        let limit = self.opts.max_deliveries;
        let mut entries = Vec::with_capacity(max.min(1024));
        let mut leased = Vec::with_capacity(max.min(1024));
        // Leasing and dead-lettering finish no segment's last record.
        let mut drained = Vec::new();
        // The id each turn settled: a lane whose head names it again holds
        // a stale entry (a damaged directory placed the message twice), and
        // is dropped, not delivered again (which would never end).
        let mut last = None;
        while leased.len() < max {
            let Some(lane) = core.scheduler.pick(core.index.nonempty()) else {
                break;
            };
            let Some(c) = core.index.peek_lane(lane) else {
                break;
            };
            if last == Some(c.id) {
                core.index.drop_stale_head(lane);
                continue;
            }
            last = Some(c.id);
            let e = if c.deadline > 0 && c.deadline <= now {
                // The tender dead-letters missed deadlines when they pass;
                // this catches one that passed since it last ran.
                Entry::new(Kind::DeadlineMissed, c.id, c.priority, now, c.attempt)
            } else if limit > 0 && c.attempt >= limit {
                let mut e = Entry::new(Kind::DeadLettered, c.id, c.priority, now, c.attempt);
                e.reason = format!(
                    "delivered {} times without an ack (max_deliveries = {limit})",
                    c.attempt
                );
                e
            } else {
                Entry::new(
                    Kind::Delivered,
                    c.id,
                    c.priority,
                    deadline,
                    c.attempt.saturating_add(1),
                )
            };
            core.index.apply(&e, &mut drained);
            if e.kind == Kind::Delivered {
                let Some(lease) = core.index.lease(c.id).map(|l| l.lease) else {
                    // The index refused it: the message is finished or dead
                    // elsewhere, so the entry is stale (as above). Nothing
                    // changed, nothing to journal.
                    core.index.drop_stale_head(lane);
                    continue;
                };
                core.scheduler.charge(c.priority);
                let file = core
                    .segments
                    .get(&c.loc.segment)
                    .map(|s| (s.file().clone(), s.seed(), s.size()));
                leased.push(Leased { c, lease, file });
            }
            entries.push(e);
        }
        if entries.is_empty() {
            return Ok(leased);
        }
        if !leased.is_empty() {
            self.timer_at(deadline);
        }
        // The entries are already applied; if writing them fails the index
        // is ahead of the disk, so the queue must be reopened (poisoned).
        self.append_entries(core, &entries, now)
            .map_err(|e| self.poison(e))?;
        Ok(leased)
    }

    /// Read leased records outside the lock (invariant A) into `out`.
    fn read_deliveries(&self, leased: Vec<Leased>, out: &mut Vec<Delivery>) -> ReadOutcome {
        let mut corrupt = Vec::new();
        let mut unreadable = Vec::new();
        for l in leased {
            let Some((file, seed, size)) = l.file.clone() else {
                corrupt.push((l, "its segment file is missing".to_string()));
                continue;
            };
            // Bounded by the segment, not by today's max_message_size: a
            // message stored under a larger limit is still delivered.
            match segment::read_record(&*file, l.c.loc.offset, size as usize, seed) {
                Ok(r) if r.header.id == l.c.id && !r.header.result() => out.push(Delivery {
                    id: MessageId(l.c.id),
                    priority: l.c.priority,
                    attempt: l.c.attempt + 1,
                    payload: r.payload,
                    receipt: Receipt {
                        id: l.c.id,
                        lease: l.lease,
                    },
                    enqueued_at: Timestamp(r.header.enqueued_ms),
                }),
                Ok(r) => {
                    let why = format!(
                        "record at offset {} holds {} {} instead",
                        l.c.loc.offset,
                        if r.header.result() {
                            "the result of"
                        } else {
                            "id"
                        },
                        r.header.id
                    );
                    corrupt.push((l, why));
                }
                Err(ReadError::Corrupt(e)) => {
                    let why = format!("record at offset {} is damaged: {e}", l.c.loc.offset);
                    corrupt.push((l, why));
                }
                // Not damage: the read may work next time.
                Err(ReadError::Io(e)) => unreadable.push((l, e)),
            }
        }
        ReadOutcome {
            corrupt,
            unreadable,
        }
    }

    /// Give back deliveries still current.
    fn release(&self, deliveries: &[GiveBack]) -> Result<()> {
        let mut core = self.core.lock();
        self.writable(&core)?;
        let now = self.opts.clock.now().0;
        let entries: Vec<Entry> = deliveries
            .iter()
            .filter(|g| core.index.lease(g.id).is_some_and(|x| x.lease == g.lease))
            .map(|g| Entry::new(Kind::Nacked, g.id, g.priority, 0, g.attempt))
            .collect();
        self.write_entries(&mut core, &entries, now)?;
        self.wake(&core, entries.len());
        Ok(())
    }

    /// Dead-letter damaged records whose lease is still current.
    fn dead_letter_corrupt(&self, corrupt: Vec<(Leased, String)>) -> Result<()> {
        let mut core = self.core.lock();
        self.writable(&core)?;
        let now = self.opts.clock.now().0;
        let entries: Vec<Entry> = corrupt
            .into_iter()
            .filter(|(l, _)| core.index.lease(l.c.id).is_some_and(|x| x.lease == l.lease))
            .map(|(l, why)| {
                let mut e = Entry::new(
                    Kind::DeadLettered,
                    l.c.id,
                    l.c.priority,
                    now,
                    l.c.attempt + 1,
                );
                e.reason = cut_reason(&format!("corrupt: {why}"));
                e
            })
            .collect();
        self.write_entries(&mut core, &entries, now).map(|_| ())
    }

    /// Settle deliveries by receipt, all or none (invariant C).
    pub(crate) fn settle(&self, receipts: &[Receipt], how: &Settlement) -> Result<()> {
        match self.settle_unsynced(receipts, how)? {
            Some(written) => self.finish_write(written),
            None => Ok(()),
        }
    }

    /// As [`Inner::settle`] without the sync: what the caller must make
    /// durable (`None` when nothing was written).
    pub(crate) fn settle_unsynced(
        &self,
        receipts: &[Receipt],
        how: &Settlement,
    ) -> Result<Option<Written>> {
        if receipts.is_empty() {
            return Ok(None);
        }
        let written = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            let (kind, time_ms, reason) = match how {
                Settlement::Ack => (Kind::Acked, 0, String::new()),
                Settlement::Nack(delay) if delay.is_zero() => (Kind::Nacked, 0, String::new()),
                Settlement::Nack(delay) => {
                    (Kind::Nacked, Timestamp(now).plus(*delay).0, String::new())
                }
                Settlement::Extend(by) => (
                    Kind::LeaseExtended,
                    Timestamp(now).plus(*by).0,
                    String::new(),
                ),
                Settlement::DeadLetter(reason) => (Kind::DeadLettered, now, cut_reason(reason)),
            };
            let mut entries = Vec::with_capacity(receipts.len());
            // A receipt twice in one call: the second is stale. Fx, not
            // SipHash: ids are the queue's own numbers.
            let batch = receipts.len() > 1;
            let mut seen = rustc_hash::FxHashSet::default();
            if batch {
                seen.reserve(receipts.len());
            }
            for r in receipts {
                let (priority, attempt) = core.check_receipt(r)?;
                if batch && !seen.insert(r.id) {
                    return Err(Error::StaleReceipt);
                }
                let mut e = Entry::new(kind, r.id, priority, time_ms, attempt);
                e.reason.clone_from(&reason);
                entries.push(e);
            }
            let written = self.write_entries(&mut core, &entries, now)?;
            if kind == Kind::Nacked && time_ms == 0 {
                self.wake(&core, entries.len());
            } else if matches!(kind, Kind::Nacked | Kind::LeaseExtended) {
                self.timer_at(time_ms);
            }
            written
        };
        Ok(Some(written))
    }
}

impl Inner {
    /// Store `result` for the delivery `receipt` names and ack it, in one
    /// record (a result record, `FLAG_RESULT`): replay finds the result and
    /// the ack together or neither.
    pub(crate) fn complete(&self, receipt: Receipt, result: &[u8]) -> Result<()> {
        let written = self.complete_unsynced(receipt, result)?;
        self.finish_write(written)
    }

    /// As [`Inner::complete`] without the sync: what the caller must make
    /// durable.
    pub(crate) fn complete_unsynced(&self, receipt: Receipt, result: &[u8]) -> Result<Written> {
        let max = self.opts.max_message_bytes();
        if result.len() > max {
            return Err(Error::TooLarge {
                size: result.len(),
                max,
            });
        }
        let written = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            let (priority, _) = core.check_receipt(&receipt)?;
            let len = record::HEADER_SIZE + result.len();
            self.prepare_segments(&mut core, len, now)?;
            let mut maintenance = false;
            if len > core.active().room() as usize {
                self.seal_active(&mut core)?;
                maintenance = true;
            }
            let seg = core.active();
            let h = RecordHeader {
                id: receipt.id,
                enqueued_ms: now,
                synced_end: seg.synced(),
                len: result.len() as u32,
                priority,
                flags: record::FLAG_RESULT,
                ..RecordHeader::default()
            };
            let seed = seg.seed();
            let mut buf = std::mem::take(&mut core.scratch);
            buf.clear();
            record::encode(&h, result, seed, &mut buf);
            let seg = core.active();
            let appended = seg.append(&buf, 1, h.len);
            let (seg_id, file, end) = (seg.id(), seg.file().clone(), seg.end());
            core.scratch = buf;
            let offset = appended.map_err(|e| self.poison(e))?;
            core.mark_dirty(&file, Target::Segment(seg_id), end);
            let mut drained = Vec::new();
            let loc = Loc {
                segment: seg_id,
                offset,
            };
            core.index
                .add_result(receipt.id, priority, loc, now, &mut drained);
            core.note_drained(drained);
            self.ask_ahead(&mut core, now);
            Written {
                seq: core.write_seq,
                maintenance: maintenance || core.maintenance_due,
            }
        };
        Ok(written)
    }

    /// Where message `id` is now. Cheap: a few map lookups and one per
    /// lane for a ready message, under the core lock.
    pub(crate) fn status(&self, id: u64) -> Result<MessageStatus> {
        let mut core = self.core.lock();
        if core.health == Health::Closed {
            return Err(Error::Closed);
        }
        // Delays that matured are ready (promotion is not journaled).
        core.index.promote_due(self.opts.clock.now().0);
        Ok(match core.index.find(id) {
            None => MessageStatus::Gone,
            Some(Found::Ready { priority, .. }) => MessageStatus::Ready { priority },
            Some(Found::Delayed {
                priority, ready_at, ..
            }) => MessageStatus::Delayed {
                priority,
                until: Timestamp(ready_at),
            },
            Some(Found::InFlight(l)) => MessageStatus::InFlight {
                priority: l.priority,
                attempt: l.attempt,
            },
            Some(Found::Dead(d)) => MessageStatus::Dead {
                reason: d.reason.clone(),
            },
            Some(Found::Completed(_)) => MessageStatus::Completed,
        })
    }

    /// The id an enqueue with idempotency key `key` returned, while the key
    /// is remembered (within `dedup_window` of that enqueue).
    pub(crate) fn key_id(&self, key: &[u8]) -> Result<Option<u64>> {
        let mut core = self.core.lock();
        if core.health == Health::Closed {
            return Err(Error::Closed);
        }
        let window = crate::clock::duration_ms(self.opts.dedup_window);
        let now = self.opts.clock.now().0;
        core.index.forget_keys(now.saturating_sub(window));
        Ok(core.index.keys().get(key))
    }

    /// The stored result of message `id`, read outside the core lock.
    pub(crate) fn result(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let (loc, file) = {
            let core = self.core.lock();
            if core.health == Health::Closed {
                return Err(Error::Closed);
            }
            let Some(c) = core.index.completed(id) else {
                return Ok(None);
            };
            let file = core
                .segments
                .get(&c.loc.segment)
                .map(|s| (s.file().clone(), s.seed(), s.size()));
            (c.loc, file)
        };
        let name = crate::layout::segment_name(loc.segment);
        let corrupt = |detail: String| Error::Corrupt {
            file: name.clone(),
            offset: u64::from(loc.offset),
            detail,
        };
        let Some((file, seed, size)) = file else {
            return Err(corrupt("the segment holding the result is missing".into()));
        };
        match segment::read_record(&*file, loc.offset, size as usize, seed) {
            Ok(r) if r.header.id == id && r.header.result() => Ok(Some(r.payload)),
            Ok(r) => Err(corrupt(format!(
                "the result record holds id {} instead of {id}",
                r.header.id
            ))),
            Err(ReadError::Corrupt(e)) => {
                Err(corrupt(format!("the result record is damaged: {e}")))
            }
            Err(ReadError::Io(e)) => Err(Error::Io(e)),
        }
    }
}

impl Core {
    /// The (priority, attempt) of the lease a receipt names.
    fn check_receipt(&self, r: &Receipt) -> Result<(u8, u32)> {
        match self.index.lease(r.id) {
            Some(l) if l.lease == r.lease => Ok((l.priority, l.attempt)),
            Some(_) => Err(Error::StaleReceipt),
            None if r.id < self.next_id => Err(Error::StaleReceipt),
            None => Err(Error::Unknown),
        }
    }
}

/// A dead-letter reason cut to [`MAX_REASON_BYTES`] at a char boundary.
pub(super) fn cut_reason(reason: &str) -> String {
    let mut n = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    reason[..n].to_string()
}
