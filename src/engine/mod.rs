//! The engine behind [`crate::Queue`]: the locked state (`Core`), the write
//! path, and the roles split into one file each: `commit` (group commit,
//! the flusher, the one poisoning path), `delivery` (leases, reads,
//! settling), `space` (deleting and relocating segments) and `checkpoint`.
//!
//! Invariants:
//!
//! A. Every state change is written (to a segment or the journal) and
//!    applied to the index under the core lock, so other threads see it only
//!    once it is written: a process crash loses nothing a call returned.
//! B. Group commit: a caller that needs durability waits until a sync that
//!    started after its write has finished. One caller (the leader) syncs
//!    every file written since the last sync, oldest first, without holding
//!    the core lock; the others wait for its result.
//! C. The first failed sync, write or file creation poisons the queue
//!    through [`Inner::poison`], the only place that does: the caller and
//!    every waiter get an error, and every later write fails with
//!    [`Error::Poisoned`] until the queue is reopened and recovery rebuilds
//!    the truth.
//! D. A segment is deleted only after the journal entries that finished its
//!    last message are durable; a checkpoint is written only when every
//!    file it describes has just been synced.
//! E. Ids are reserved in blocks by a durable journal entry before any id
//!    of the block is handed out, so no id is reused after a crash.
//!
//! Lock order: `core`, then `sync`; the preparer's state after both.

mod checkpoint;
mod commit;
mod delivery;
mod space;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::clock::Timestamp;
use crate::codec::entry::{Entry, Kind};
use crate::codec::header;
use crate::codec::record::{self, RecordHeader};
use crate::codec::MAX_ID;
use crate::config::{Durability, QueueOptions};
use crate::error::{Error, Result};
use crate::index::{Index, Loc};
use crate::journal::{Journal, JournalPos};
use crate::lanes::Scheduler;
use crate::layout::{self, CreateError};
use crate::message::{DeadLetter, LaneCount, RecoveryReport, Stats};
use crate::prepare::{Preparer, Want};
use crate::recovery;
use crate::segment::{self, Segment};
use crate::storage::{LockGuard, Storage};

use commit::{Dirty, Poison, StopSignal, SyncState, Target, Written};
pub(crate) use delivery::Settlement;

/// Ids reserved by one durable journal entry.
const ID_BLOCK: u64 = 1 << 20;

/// Bytes written to the active segment between background syncs under
/// `Durability::None` and `Periodic` (see `prepare`).
const WRITE_BEHIND: u32 = 8 << 20;

/// One message to enqueue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewMessage<'a> {
    pub payload: &'a [u8],
    pub priority: u8,
    /// Milliseconds before it may be delivered; 0 for at once.
    pub delay_ms: u32,
}

/// Everything one open queue shares between its handles and threads.
pub(crate) struct Inner {
    core: Mutex<Core>,
    /// Consumers waiting in `dequeue` sleep here, paired with `core`.
    ready: Condvar,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Set once by [`Inner::poison`] (and by the preparer's background
    /// sync); never cleared while the queue is open (invariant C).
    poison: Poison,
    storage: Arc<dyn Storage>,
    opts: QueueOptions,
    flusher: Mutex<Option<Arc<StopSignal>>>,
    /// Makes next files ahead of need (`QueueOptions::prepare_ahead`).
    prep: Option<Arc<Preparer>>,
    report: RecoveryReport,
    /// Async wake-ups, made on the first async dequeue.
    #[cfg(feature = "tokio")]
    waker: std::sync::OnceLock<crate::waker::AsyncWaker>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// Whether the queue still takes calls. Poisoning is not a state here: it
/// is the one flag in [`Inner::poison`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Open,
    Closed,
}

/// The state changed under the core lock.
struct Core {
    index: Index,
    segments: BTreeMap<u32, Segment>,
    /// The segment appended to: always the newest.
    active: u32,
    journal: Journal,
    next_id: u64,
    reserved_until: u64,
    dirty: Vec<Dirty>,
    write_seq: u64,
    /// Journal position up to which entries are durable.
    journal_durable: JournalPos,
    /// Sealed segments with nothing live, and the journal position that
    /// must be durable before they may go.
    drained: Vec<(u32, JournalPos)>,
    /// Work for the next sync's maintenance: drained segments or a
    /// checkpoint due.
    maintenance_due: bool,
    journal_bytes_since_checkpoint: u64,
    checkpoint_number: u64,
    /// The size of the newest checkpoint file.
    checkpoint_file_bytes: u64,
    health: Health,
    /// Consumers asleep on `Inner::ready`.
    waiting: usize,
    /// Bumped by `wake_waiters`: a blocking dequeue that sees it change
    /// while asleep returns what it has.
    interrupts: u64,
    /// Segments relocation found unreadable live records in.
    unmovable: std::collections::HashSet<u32>,
    scheduler: Scheduler,
    /// Reused encode buffer.
    scratch: Vec<u8>,
    /// The directory's owner lock; released by `close` or on drop.
    lock: Option<LockGuard>,
    /// The segment and its end when a background sync was last asked for.
    behind_at: (u32, u32),
}

impl Inner {
    /// Recover the directory in `storage` (locked here) and start the
    /// queue's threads.
    pub(crate) fn open(storage: Arc<dyn Storage>, opts: QueueOptions) -> Result<Arc<Inner>> {
        let lock = storage.lock().map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked,
            _ => Error::Io(e),
        })?;
        let now = opts.clock.now().0;
        let mut rec = recovery::recover(&*storage, &opts, now)?;
        rec.index.promote_due(now);
        let mut segments = rec.segments;
        let active = match segments.keys().next_back() {
            Some(&id) => id,
            None => {
                let seg = Segment::create(&*storage, 1, opts.segment_size as u32, now)
                    .map_err(std::io::Error::from)?;
                segments.insert(1, seg);
                1
            }
        };
        // What a killed process left in the page cache becomes durable now,
        // so the `synced end` stamped into new frames is true (invariant C of
        // `segment`).
        segments[&active].file().sync_data()?;
        rec.journal.file().sync_data()?;
        let journal_durable = rec.journal.pos();
        let poison = Poison::default();
        let prep = match opts.prepare_ahead {
            Some(true) => Some(Preparer::start(storage.clone(), poison.flag())?),
            _ => None,
        };
        let core = Core {
            index: rec.index,
            segments,
            active,
            journal: rec.journal,
            next_id: rec.next_id,
            reserved_until: rec.next_id,
            dirty: Vec::new(),
            write_seq: 0,
            journal_durable,
            drained: Vec::new(),
            maintenance_due: false,
            journal_bytes_since_checkpoint: 0,
            checkpoint_number: rec.checkpoint_number,
            checkpoint_file_bytes: rec.checkpoint_bytes,
            health: Health::Open,
            waiting: 0,
            interrupts: 0,
            unmovable: std::collections::HashSet::new(),
            scheduler: Scheduler::new(opts.scheduling),
            scratch: Vec::new(),
            lock: Some(lock),
            behind_at: (0, 0),
        };
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            ready: Condvar::new(),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            poison,
            storage,
            opts,
            flusher: Mutex::new(None),
            prep,
            report: rec.report,
            #[cfg(feature = "tokio")]
            waker: std::sync::OnceLock::new(),
        });
        if let Durability::Periodic(every) = inner.opts.durability {
            commit::start_flusher(&inner, every)?;
        }
        Ok(inner)
    }

    /// What recovery found when this queue was opened.
    pub(crate) fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Refuse calls once the queue is closed or poisoned.
    fn writable(&self, core: &Core) -> Result<()> {
        if core.health == Health::Closed {
            return Err(Error::Closed);
        }
        if self.poison.is_set() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Enqueue `items` with one write (all or none) and, under `Immediate`,
    /// one sync; returns their ids.
    pub(crate) fn enqueue(&self, items: &[NewMessage<'_>]) -> Result<Vec<u64>> {
        let max = self.opts.max_message_bytes();
        if let Some(big) = items.iter().find(|i| i.payload.len() > max) {
            return Err(Error::TooLarge {
                size: big.payload.len(),
                max,
            });
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // A batch is one write into one segment, so it is all or none.
        let total: usize = items
            .iter()
            .map(|i| record::HEADER_SIZE + i.payload.len())
            .sum();
        let capacity = seg_capacity(self.opts.segment_size);
        if total > capacity {
            return Err(Error::TooLarge {
                size: total,
                max: capacity,
            });
        }
        let (ids, written) = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            self.reserve_ids(&mut core, items.len() as u64, now)?;
            self.prepare_segments(&mut core, items, now)?;
            let appended = self.append_records(&mut core, items, now)?;
            self.ask_ahead(&mut core, now);
            if let Some(d) = items.iter().map(|i| i.delay_ms).filter(|&d| d > 0).min() {
                self.timer_at(now.saturating_add(u64::from(d)));
            }
            self.wake(&core, items.iter().filter(|i| i.delay_ms == 0).count());
            appended
        };
        self.finish_write(written)?;
        Ok(ids)
    }

    /// After an append: ask the preparer for the next segment early, and
    /// sync the active one behind the writer when no call syncs it.
    fn ask_ahead(&self, core: &mut Core, now: u64) {
        let Some(p) = &self.prep else { return };
        let id = core.active;
        let newest = core.segments.keys().next_back() == Some(&id);
        let (end, size) = (core.segments[&id].end(), core.segments[&id].size());
        // Ask early: at a fast writer's pace, making a segment's zeros can
        // take longer than filling half of one. New segments get the
        // configured size (a reopened queue may have been given another).
        if end > size / 8 && newest {
            p.ask(Want::Segment(id + 1), self.opts.segment_size as u32, now);
        }
        // Write-behind: without a sync per write, keep what sealing this
        // segment must flush small.
        if self.opts.durability != Durability::Immediate {
            let since = if core.behind_at.0 == id {
                core.behind_at.1
            } else {
                0
            };
            if end - since > WRITE_BEHIND {
                core.behind_at = (id, end);
                p.sync_behind(core.segments[&id].file().clone());
            }
        }
    }

    /// Write records for `items` into the segments `plan_chunks` chose (and
    /// `prepare_segments` made), and index them. Each chunk is one write
    /// whose records all but the last carry `FLAG_MORE`, so recovery drops a
    /// chunk that was only partly written.
    fn append_records(
        &self,
        core: &mut Core,
        items: &[NewMessage<'_>],
        now: u64,
    ) -> Result<(Vec<u64>, Written)> {
        let mut ids = Vec::with_capacity(items.len());
        let mut buf = std::mem::take(&mut core.scratch);
        let result = self.append_chunks(core, items, now, &mut ids, &mut buf);
        core.scratch = buf;
        let rotated = result?;
        core.next_id += ids.len() as u64;
        Ok((
            ids,
            Written {
                seq: core.write_seq,
                maintenance: rotated || core.maintenance_due,
            },
        ))
    }

    /// The body of `append_records`; returns whether a segment was sealed.
    fn append_chunks(
        &self,
        core: &mut Core,
        items: &[NewMessage<'_>],
        now: u64,
        ids: &mut Vec<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<bool> {
        let room = core.active().room() as usize;
        let mut rotated = false;
        for (range, new_segment) in plan_chunks(items, room) {
            if new_segment {
                // Seal: the old segment's tail must be durable before any
                // record in the next one can be, or a power loss under
                // `None` could keep a later message and lose an earlier one.
                let sealed = core.active().file().clone();
                sealed.sync_data().map_err(|e| self.poison(e))?;
                if !core.rotate_segment() {
                    return Err(Error::Io(std::io::Error::other(
                        "no prepared segment to rotate to",
                    )));
                }
                rotated = true;
            }
            buf.clear();
            let seg = core.active();
            let (start, synced, seg_id) = (seg.end(), seg.synced(), seg.id());
            let mut placed = Vec::with_capacity(range.len());
            let last = range.end - 1;
            for i in range {
                let m = items[i];
                let id = core.next_id + ids.len() as u64 + placed.len() as u64;
                let h = RecordHeader {
                    id,
                    enqueued_ms: now,
                    delay_ms: m.delay_ms,
                    synced_end: synced,
                    len: m.payload.len() as u32,
                    priority: m.priority,
                    flags: if i < last { record::FLAG_MORE } else { 0 },
                };
                placed.push((h, start + buf.len() as u32));
                record::encode(&h, m.payload, buf);
            }
            let seg = core.active();
            seg.append(buf, placed.len() as u32)
                .map_err(|e| self.poison(e))?;
            let (file, end) = (seg.file().clone(), seg.end());
            core.mark_dirty(&file, Target::Segment(seg_id), end);
            for (h, offset) in placed {
                let loc = Loc {
                    segment: seg_id,
                    offset,
                };
                core.index.add(h.id, h.priority, loc, h.ready_at(), 0);
                ids.push(h.id);
            }
        }
        Ok(rotated)
    }

    /// Wake up to `n` sleeping consumers (one per newly ready message, so an
    /// enqueue of one message does not stampede every waiter).
    fn wake(&self, core: &Core, n: usize) {
        for _ in 0..n.min(core.waiting) {
            self.ready.notify_one();
        }
        #[cfg(feature = "tokio")]
        if n > 0 {
            if let Some(w) = self.waker.get() {
                w.notify.notify_waiters();
            }
        }
    }

    /// A delay or lease deadline at `at` now exists (for the async timer).
    fn timer_at(&self, at: u64) {
        #[cfg(feature = "tokio")]
        if let Some(w) = self.waker.get() {
            w.hint(at);
        }
        #[cfg(not(feature = "tokio"))]
        let _ = at;
    }

    /// Mature delays and expire leases now, and wake whoever waits; returns
    /// the next deadline, or `None` when the queue is closed (timer thread).
    #[cfg(feature = "tokio")]
    fn fire_timers(&self) -> Option<Option<u64>> {
        let mut core = self.core.lock();
        self.writable(&core).ok()?;
        let now = self.opts.clock.now().0;
        self.expire_leases(&mut core, now).ok()?;
        core.index.promote_due(now);
        self.ready.notify_all();
        let next = core.index.next_timer();
        drop(core);
        if let Some(w) = self.waker.get() {
            w.notify.notify_waiters();
        }
        Some(next)
    }

    /// The async wake-ups, started on first use.
    #[cfg(feature = "tokio")]
    pub(crate) fn async_waker(self: &Arc<Inner>) -> Result<&crate::waker::AsyncWaker> {
        let mut started = Ok(());
        let waker = self.waker.get_or_init(|| {
            let w = crate::waker::AsyncWaker::default();
            let owner = Arc::downgrade(self);
            started = w.start(owner, self.opts.clock.clone(), Inner::fire_timers);
            w
        });
        started?;
        if let Some(t) = self.core.lock().index.next_timer() {
            waker.hint(t);
        }
        Ok(waker)
    }

    /// Wake every blocked dequeue: each returns what it has.
    pub(crate) fn wake_waiters(&self) {
        let mut core = self.core.lock();
        core.interrupts = core.interrupts.wrapping_add(1);
        drop(core);
        self.ready.notify_all();
    }

    /// Reserve ids durably so that `n` more can be handed out (invariant E).
    fn reserve_ids(&self, core: &mut Core, n: u64, now: u64) -> Result<()> {
        if core.next_id + n <= core.reserved_until {
            return Ok(());
        }
        // Ids read at open are below MAX_ID (the codecs refuse others) and
        // `n` is a batch length, so these sums cannot overflow.
        if core.next_id + n > MAX_ID {
            return Err(Error::Corrupt {
                file: layout::journal_name(core.journal.number()),
                offset: 0,
                detail: format!("message ids exhausted: the next id would pass {MAX_ID}"),
            });
        }
        let up_to = (core.next_id + n + ID_BLOCK).min(MAX_ID);
        let e = Entry::new(Kind::IdsReserved, up_to, 0, now, 0);
        self.append_entries(core, std::slice::from_ref(&e), now)?;
        // This sync happens under the lock, once per block of ids.
        let journal_file = core.journal.file().clone();
        journal_file.sync_data().map_err(|e| self.poison(e))?;
        let end = core.journal.end();
        core.journal.mark_synced(end);
        core.reserved_until = up_to;
        Ok(())
    }

    /// Create the segments a batch will need before writing any of it, so a
    /// full disk fails the whole batch and changes nothing.
    fn prepare_segments(&self, core: &mut Core, items: &[NewMessage<'_>], now: u64) -> Result<()> {
        let room = core.segments[&core.active].room() as usize;
        let needed = plan_chunks(items, room).iter().filter(|c| c.1).count() as u32;
        let newest = *core.segments.keys().next_back().unwrap_or(&core.active);
        let prepared = newest - core.active;
        let size = self.opts.segment_size as u32;
        for k in prepared..needed {
            let id = core.active + k + 1;
            let ahead = match &self.prep {
                Some(p) => self.created(p.take(Want::Segment(id)))?,
                None => None,
            };
            let seg = match ahead {
                Some(file) => Segment::made(id, file, size),
                None => self.created(Segment::create(&*self.storage, id, size, now))?,
            };
            core.segments.insert(id, seg);
        }
        Ok(())
    }

    /// Pass a file creation's result on; a failure after the file existed
    /// (a failed write or sync) poisons the queue, a failure to make it (a
    /// full disk) does not.
    fn created<T>(&self, made: std::result::Result<T, CreateError>) -> Result<T> {
        match made {
            Ok(t) => Ok(t),
            Err(CreateError::NotMade(e)) => Err(e.into()),
            Err(CreateError::Failed(e)) => Err(self.poison(e)),
        }
    }

    /// Append journal entries, rotating the journal file when they do not
    /// fit, and mark the files dirty.
    fn append_entries(&self, core: &mut Core, entries: &[Entry], now: u64) -> Result<()> {
        let mut buf = std::mem::take(&mut core.scratch);
        let result = self.append_entry_chunks(core, entries, now, &mut buf);
        core.scratch = buf;
        result
    }

    /// The body of `append_entries`: one write per run of entries that fits
    /// in the current journal file.
    fn append_entry_chunks(
        &self,
        core: &mut Core,
        entries: &[Entry],
        now: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let mut rest = entries;
        while !rest.is_empty() {
            let mut take = 0;
            let mut bytes = 0;
            let capacity = core.journal.capacity();
            while take < rest.len() && bytes + rest[take].frame_len() <= capacity {
                bytes += rest[take].frame_len();
                take += 1;
            }
            if take == 0 {
                // Entries are at most 36 + MAX_REASON_BYTES bytes and a
                // journal file at least MIN_JOURNAL_FILE_SIZE: unreachable
                // unless those limits change, but never a silent spin.
                return Err(Error::InvalidArgument(format!(
                    "a journal entry of {} bytes is larger than a journal file",
                    rest[0].frame_len()
                )));
            }
            if !core.journal.fits(bytes) {
                let next = Want::Journal(core.journal.number() + 1);
                let ahead = match &self.prep {
                    Some(p) => self.created(p.take(next))?,
                    None => None,
                };
                let rotated = core.journal.rotate(&*self.storage, now, ahead);
                let old = self.created(rotated)?;
                let old_number = core.journal.number() - 1;
                core.mark_dirty(&old, Target::Journal(old_number), 0);
                core.maintenance_due = true;
            }
            buf.clear();
            core.journal.encode(&rest[..take], buf);
            core.journal.write(buf).map_err(|e| self.poison(e))?;
            core.journal_bytes_since_checkpoint += buf.len() as u64;
            let (file, number, end) = (
                core.journal.file().clone(),
                core.journal.number(),
                core.journal.end(),
            );
            core.mark_dirty(&file, Target::Journal(number), end);
            if let Some(p) = &self.prep {
                if end > core.journal.new_size() / 8 {
                    p.ask(Want::Journal(number + 1), core.journal.new_size(), now);
                }
            }
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Append entries and apply them to the index (journal first, then
    /// memory), noting segments they finish.
    fn write_entries(&self, core: &mut Core, entries: &[Entry], now: u64) -> Result<Written> {
        self.append_entries(core, entries, now)?;
        self.apply_entries(core, entries);
        Ok(Written {
            seq: core.write_seq,
            maintenance: core.maintenance_due,
        })
    }

    fn apply_entries(&self, core: &mut Core, entries: &[Entry]) {
        for e in entries {
            if let Some(seg) = core.index.apply(e) {
                if seg != core.active {
                    let pos = core.journal.pos();
                    core.drained.push((seg, pos));
                    core.maintenance_due = true;
                }
            }
        }
        if self.checkpoint_due(core) {
            core.maintenance_due = true;
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let mut core = self.core.lock();
        let now = self.opts.clock.now();
        // Delays that matured count as ready (promotion is not journaled).
        core.index.promote_due(now.0);
        let (ready, in_flight, delayed, dead) = core.index.counts();
        let oldest = core.index.oldest_ready().and_then(|(_, loc)| {
            let seg = core.segments.get(&loc.segment)?;
            segment::read_header(&**seg.file(), loc.offset, seg.size() as usize)
        });
        let seg_bytes: u64 = core.segments.values().map(|s| u64::from(s.size())).sum();
        let journal_bytes = core.journal.files().len() as u64 * u64::from(core.journal.size());
        Stats {
            ready_per_lane: core
                .index
                .ready_per_lane()
                .into_iter()
                .map(|(priority, ready)| LaneCount { priority, ready })
                .collect(),
            ready,
            in_flight,
            delayed,
            dead,
            acked_total: core.index.acked_total(),
            segments: core.segments.len() as u64,
            bytes_on_disk: seg_bytes + journal_bytes + core.checkpoint_file_bytes,
            oldest_ready_age: oldest.map(|h| now.since(Timestamp(h.enqueued_ms))),
        }
    }

    /// All dead letters, in id order.
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let core = self.core.lock();
        if core.health == Health::Closed {
            return Err(Error::Closed);
        }
        Ok(core
            .index
            .dead_letter_list(|loc| segment::enqueued_ms(&core.segments, loc.segment, loc.offset)))
    }

    /// Redrive (`Kind::Redriven`) or purge (`Kind::Purged`) one dead letter
    /// or all; returns how many.
    pub(crate) fn dead_letter_op(&self, kind: Kind, only: Option<u64>) -> Result<u64> {
        let (n, written) = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            let entries: Vec<Entry> = match only {
                Some(id) => {
                    let d = core.index.dead(id).ok_or(Error::Unknown)?;
                    vec![Entry::new(kind, id, d.priority, now, 0)]
                }
                None => core
                    .index
                    .dead_letters()
                    .map(|(id, d)| Entry::new(kind, id, d.priority, now, 0))
                    .collect(),
            };
            if entries.is_empty() {
                return Ok(0);
            }
            let written = self.write_entries(&mut core, &entries, now)?;
            if kind == Kind::Redriven {
                self.wake(&core, entries.len());
            }
            (entries.len() as u64, written)
        };
        self.finish_write(written)?;
        Ok(n)
    }

    /// Stop the threads, sync, checkpoint and release the directory.
    pub(crate) fn shutdown(&self) -> Result<()> {
        if let Some(p) = &self.prep {
            p.stop();
        }
        commit::stop_flusher(self);
        #[cfg(feature = "tokio")]
        if let Some(w) = self.waker.get() {
            w.stop();
        }
        let seq = {
            let mut core = self.core.lock();
            if core.health == Health::Closed || self.poison.is_set() {
                core.health = Health::Closed;
                core.lock = None;
                return Ok(());
            }
            core.write_seq
        };
        let synced = self.commit(seq);
        let mut core = self.core.lock();
        let result = synced.and_then(|()| {
            if core.health != Health::Open || self.poison.is_set() {
                return Ok(());
            }
            // A checkpoint makes the next open read it instead of replaying.
            if core.journal.end() as usize > header::SIZE || core.journal.files().len() > 1 {
                self.checkpoint(&mut core)?;
            }
            Ok(())
        });
        core.health = Health::Closed;
        core.lock = None;
        self.ready.notify_all();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the caller who wants the error calls `close`.
        let _ = self.shutdown();
    }
}

impl Core {
    /// The segment appended to.
    fn active(&mut self) -> &mut Segment {
        self.segments
            .get_mut(&self.active)
            .expect("the active segment is always open")
    }

    /// Make the next prepared segment active; the old one is sealed.
    fn rotate_segment(&mut self) -> bool {
        let next = self
            .segments
            .range(self.active + 1..)
            .next()
            .map(|(&id, _)| id);
        let Some(next) = next else { return false };
        let old = self.active;
        self.active = next;
        if self.index.live_in(old) == 0 {
            self.drained.push((old, self.journal.pos()));
            self.maintenance_due = true;
        }
        true
    }
}

/// Where a batch's records go, as (items, starts a new segment) chunks: the
/// whole batch into the active segment if it fits, else into a fresh one
/// (`enqueue` refuses batches larger than a segment, so a batch is always
/// one write and all-or-none).
fn plan_chunks(items: &[NewMessage<'_>], room: usize) -> Vec<(std::ops::Range<usize>, bool)> {
    if items.is_empty() {
        return Vec::new();
    }
    let total: usize = items
        .iter()
        .map(|i| record::HEADER_SIZE + i.payload.len())
        .sum();
    vec![(0..items.len(), total > room)]
}

/// Bytes of records a fresh segment holds.
fn seg_capacity(segment_size: u64) -> usize {
    segment_size as usize - header::SIZE
}
