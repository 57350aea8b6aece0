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
//! F. A write of journal entries that fails without poisoning the queue
//!    wrote nothing: every journal file it needs is made before any of it
//!    is written, so a full disk never leaves entries durable that the
//!    index never applied (a crash would bring them back).
//!
//! Lock order: `core`, then `sync`; the preparer's state after both.

mod checkpoint;
mod commit;
mod delivery;
mod expiry;
mod space;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::attrs;
use crate::clock::duration_ms;
use crate::clock::Timestamp;
use crate::codec::attributes::Attributes;
use crate::codec::entry::{Entry, Kind};
use crate::codec::header;
use crate::codec::record::{self, RecordHeader};
use crate::codec::MAX_ID;
use crate::config::{Durability, EnqueueOptions, QueueOptions, MAX_DELAY};
use crate::error::{Error, Result};
use crate::index::{Index, Loc};
use crate::journal::Journal;
use crate::lanes::Scheduler;
use crate::layout::{self, CreateError};
use crate::message::{DeadLetter, RecoveryReport, Stats};
use crate::prepare::{Preparer, Want};
use crate::recovery;
use crate::segment::{self, Segment};
use crate::storage::{LockGuard, Storage};

pub(crate) use checkpoint::Position;
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
    /// Milliseconds before it may be delivered; `None` = the queue's
    /// `default_delay`.
    pub delay_ms: Option<u32>,
    /// Not delivered after this time (queue clock ms); 0 for none.
    pub deadline_ms: u64,
    /// Idempotency key; empty for none.
    pub key: &'a [u8],
}

impl<'a> NewMessage<'a> {
    /// A message with a priority only.
    pub(crate) fn new(payload: &'a [u8], priority: u8) -> Self {
        NewMessage {
            payload,
            priority,
            delay_ms: None,
            deadline_ms: 0,
            key: &[],
        }
    }

    /// A message with options, checked for what needs no clock (the
    /// deadline is checked against the queue's clock under the lock).
    pub(crate) fn with(payload: &'a [u8], opts: &'a EnqueueOptions) -> Result<Self> {
        let delay_ms = match opts.delay {
            Some(d) if d > MAX_DELAY => {
                return Err(Error::InvalidArgument(format!(
                    "delay {d:?} is over the maximum {MAX_DELAY:?}"
                )))
            }
            Some(d) => Some(duration_ms(d) as u32),
            None => None,
        };
        let key = opts.key.as_deref().unwrap_or(&[]);
        if opts.key.is_some() && (key.is_empty() || key.len() > record::MAX_KEY_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "an idempotency key must be 1 to {} bytes, not {}",
                record::MAX_KEY_BYTES,
                key.len()
            )));
        }
        Ok(NewMessage {
            payload,
            priority: opts.priority,
            delay_ms,
            deadline_ms: opts.deadline.map_or(0, |t| t.0.max(1)),
            key,
        })
    }

    /// Bytes of its record.
    fn frame_len(&self) -> usize {
        record::HEADER_SIZE
            + if self.deadline_ms > 0 { 8 } else { 0 }
            + self.key.len()
            + self.payload.len()
    }
}

/// What [`Inner::admit`] decided for a batch.
struct Admitted<'a> {
    /// The items to write, delays filled in.
    fresh: Vec<NewMessage<'a>>,
    /// For each item of the batch, where its id comes from.
    slots: Vec<Slot>,
}

/// Where one enqueued item's id comes from.
enum Slot {
    /// The `n`th item written.
    Fresh(usize),
    /// A key already remembered: the first enqueue's id.
    Known(u64),
}

/// Everything one open queue shares between its handles and threads.
pub(crate) struct Inner {
    core: Mutex<Core>,
    /// Consumers waiting in `dequeue` sleep here, paired with `core`.
    ready: Condvar,
    /// Bumped whenever messages become ready: a consumer about to park
    /// spins on it briefly first (when the machine has a core to spare).
    ready_epoch: std::sync::atomic::AtomicU64,
    /// How long a consumer spins before it parks; zero on one core.
    spin: std::time::Duration,
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
    /// The background thread that runs time-driven removals.
    tender: Arc<expiry::Tender>,
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
    /// Writes with a sequence number up to this are durable.
    durable_seq: u64,
    /// Sealed segments with nothing live, and the write (`write_seq`) that
    /// must be durable before they may go: the journal entry or result
    /// record that finished their last live record.
    drained: Vec<(u32, u64)>,
    /// Segments holding idempotency keys no checkpoint holds yet: deleting
    /// one waits for a checkpoint, or a reopen would forget its keys.
    unsaved_keys: std::collections::BTreeSet<u32>,
    /// Segments holding records a retention cut removed that no checkpoint
    /// holds (replay counts them in the lifetime counters): deleting one
    /// takes a checkpoint first, or a reopen would count less than the
    /// live queue showed (see `space::Inner::saved` for a full disk).
    unsaved_cuts: std::collections::BTreeSet<u32>,
    /// The head segment of the newest checkpoint (0 without one): records
    /// in older segments are all held by it.
    checkpoint_head: u32,
    /// Where the newest checkpoint says replay resumes (`None` without
    /// one): `close` writes none if the queue is still there.
    checkpointed: Option<checkpoint::Position>,
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
        let (opts, stored) = adopt_attributes(&*storage, opts)?;
        let mut rec = recovery::recover(&*storage, &opts, now)?;
        let mut segments = std::mem::take(&mut rec.segments);
        // Records are appended only to a segment of this build's format
        // version: a directory of an older version gets a new segment.
        let newest = segments
            .iter()
            .next_back()
            .map(|(&id, s)| (id, s.version() == crate::codec::FORMAT_VERSION));
        let mut unlisted = rec.journal_made;
        let active = match newest {
            Some((id, true)) => id,
            other => {
                let id = other.map_or(1, |(id, _)| id + 1);
                let seg = Segment::create_unlisted(&*storage, id, opts.segment_size as u32, now)
                    .map_err(std::io::Error::from)?;
                segments.insert(id, seg);
                unlisted = true;
                id
            }
        };
        // The attributes are stored once recovery accepted the directory
        // with them (an override it refuses changes nothing). Their
        // directory sync also makes the entries of the journal and the
        // segment just made durable, before anything is written to them
        // (invariant C of `layout`): one directory sync for a fresh queue.
        let wanted = opts.attributes();
        match stored {
            Some((a, _)) if a == wanted => {
                if unlisted {
                    storage.sync_dir()?;
                }
            }
            Some((_, revision)) => attrs::write(&*storage, &wanted, revision + 1, now)?,
            None => attrs::write(&*storage, &wanted, 1, now)?,
        }
        rec.index.promote_due(now);
        rec.index
            .forget_keys(now.saturating_sub(duration_ms(opts.dedup_window)));
        // Segments recovery kept with nothing live (an older version's
        // last segment, segments holding keys no checkpoint has yet): the
        // first maintenance pass deletes them.
        let idle: Vec<(u32, u64)> = segments
            .keys()
            .filter(|&&id| id != active && rec.index.live_in(id) == 0)
            .map(|&id| (id, 0))
            .collect();
        // No sync here: the active segment and the journal start with their
        // recovered end as `synced` (stamped into new records and frames,
        // invariant C of `segment`), and that is true already. Recovery
        // synced every file whose scan kept bytes a killed process may have
        // left only in the page cache, and the bytes before where a scan
        // starts were durable before the checkpoint naming that place was
        // written (invariant D of `recovery`). A segment made just now was
        // synced when it was made.
        let poison = Poison::default();
        let prep = match opts.prepare_ahead {
            Some(true) => Some(Preparer::start(
                storage.clone(),
                poison.flag(),
                opts.durability == Durability::None,
            )?),
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
            durable_seq: 0,
            unsaved_keys: rec.keyed_segments.into_iter().collect(),
            unsaved_cuts: rec.cut_segments.into_iter().collect(),
            checkpoint_head: rec.checkpoint_head,
            checkpointed: rec.checkpoint_position,
            maintenance_due: !idle.is_empty(),
            drained: idle,
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
            ready_epoch: std::sync::atomic::AtomicU64::new(0),
            spin: spin_before_park(),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            poison,
            storage,
            opts,
            flusher: Mutex::new(None),
            prep,
            report: rec.report,
            tender: Arc::default(),
            #[cfg(feature = "tokio")]
            waker: std::sync::OnceLock::new(),
        });
        if let Durability::Periodic(every) = inner.opts.durability {
            commit::start_flusher(&inner, every)?;
        }
        expiry::start_tender(&inner)?;
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
    /// one sync; returns their ids (for a key seen within the dedup window,
    /// the first enqueue's id, and nothing is written for it).
    pub(crate) fn enqueue(&self, items: &[NewMessage<'_>]) -> Result<Vec<u64>> {
        let (ids, written) = self.enqueue_unsynced(items)?;
        if let Some(w) = written {
            self.finish_write(w)?;
        }
        Ok(ids)
    }

    /// As [`Inner::enqueue`] without the sync: the write, and what the
    /// caller must make durable (`None` when nothing was written).
    pub(crate) fn enqueue_unsynced(
        &self,
        items: &[NewMessage<'_>],
    ) -> Result<(Vec<u64>, Option<Written>)> {
        let max = self.opts.max_message_bytes();
        if let Some(big) = items.iter().find(|i| i.payload.len() > max) {
            return Err(Error::TooLarge {
                size: big.payload.len(),
                max,
            });
        }
        if items.is_empty() {
            return Ok((Vec::new(), None));
        }
        // A batch is one write into one segment, so it is all or none.
        let total: usize = items.iter().map(NewMessage::frame_len).sum();
        let capacity = seg_capacity(self.opts.segment_size);
        if total > capacity {
            return Err(Error::TooLarge {
                size: total,
                max: capacity,
            });
        }
        let default_delay = duration_ms(self.opts.default_delay) as u32;
        // The common case (no key, no deadline, no default delay to fill
        // in) writes `items` as they are, without a copy.
        let plain =
            default_delay == 0 && items.iter().all(|i| i.key.is_empty() && i.deadline_ms == 0);
        let (ids, written) = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            let now = self.opts.clock.now().0;
            let admitted;
            let (fresh, slots) = if plain {
                (items, None)
            } else {
                admitted = self.admit(&mut core, items, default_delay, now)?;
                (&admitted.fresh[..], Some(admitted.slots))
            };
            let (fresh_ids, written) = if fresh.is_empty() {
                (Vec::new(), None)
            } else {
                self.reserve_ids(&mut core, fresh.len() as u64, now)?;
                let bytes = fresh.iter().map(NewMessage::frame_len).sum();
                self.prepare_segments(&mut core, bytes, now)?;
                let (fresh_ids, written) = self.append_records(&mut core, fresh, now)?;
                self.ask_ahead(&mut core, now);
                let delay = |i: &NewMessage<'_>| i.delay_ms.unwrap_or(0);
                if let Some(d) = fresh.iter().map(delay).filter(|&d| d > 0).min() {
                    self.timer_at(now.saturating_add(u64::from(d)));
                }
                let deadlines = fresh.iter().map(|i| i.deadline_ms).filter(|&d| d > 0);
                if let Some(first) = deadlines.min() {
                    self.tender.deadline_at(first);
                }
                self.wake(&core, fresh.iter().filter(|i| delay(i) == 0).count());
                (fresh_ids, Some(written))
            };
            let ids = match slots {
                None => fresh_ids,
                Some(slots) => slots
                    .into_iter()
                    .map(|s| match s {
                        Slot::Fresh(i) => fresh_ids[i],
                        Slot::Known(id) => id,
                    })
                    .collect(),
            };
            (ids, written)
        };
        Ok((ids, written))
    }

    /// Check deadlines against the queue's clock, fill in the default
    /// delay, and look up keys: which items are new (written) and which
    /// name a key already remembered (or repeated in the batch). Changes
    /// nothing but forgetting keys past their window.
    fn admit<'a>(
        &self,
        core: &mut Core,
        items: &[NewMessage<'a>],
        default_delay: u32,
        now: u64,
    ) -> Result<Admitted<'a>> {
        let window = duration_ms(self.opts.dedup_window);
        core.index.forget_keys(now.saturating_sub(window));
        let mut fresh: Vec<NewMessage<'a>> = Vec::with_capacity(items.len());
        let mut slots = Vec::with_capacity(items.len());
        // Keys first written by this batch: key -> index in `fresh`.
        let mut batch_keys: std::collections::HashMap<&[u8], usize> =
            std::collections::HashMap::new();
        for item in items {
            let mut m = *item;
            let delay = m.delay_ms.unwrap_or(default_delay);
            m.delay_ms = Some(delay);
            if m.deadline_ms > 0 {
                if m.deadline_ms <= now {
                    return Err(Error::InvalidArgument(format!(
                        "deadline {} is already past (now {now}, ms since the Unix epoch)",
                        m.deadline_ms
                    )));
                }
                if m.deadline_ms <= now.saturating_add(u64::from(delay)) {
                    return Err(Error::InvalidArgument(format!(
                        "deadline {} comes before the delay of {delay} ms ends",
                        m.deadline_ms
                    )));
                }
            }
            if !m.key.is_empty() {
                if let Some(id) = core.index.keys().get(m.key) {
                    slots.push(Slot::Known(id));
                    continue;
                }
                if let Some(&i) = batch_keys.get(m.key) {
                    slots.push(Slot::Fresh(i));
                    continue;
                }
                batch_keys.insert(m.key, fresh.len());
            }
            slots.push(Slot::Fresh(fresh.len()));
            fresh.push(m);
        }
        let remembered = core.index.keys().len();
        if remembered + batch_keys.len() > self.opts.max_keys && !batch_keys.is_empty() {
            return Err(Error::TooManyKeys {
                max: self.opts.max_keys,
            });
        }
        Ok(Admitted { fresh, slots })
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
                self.seal_active(core)?;
                rotated = true;
            }
            buf.clear();
            let seg = core.active();
            let (start, synced, seg_id, seed) = (seg.end(), seg.synced(), seg.id(), seg.seed());
            let mut placed = Vec::with_capacity(range.len());
            let last = range.end - 1;
            let mut largest = 0;
            for i in range {
                let m = items[i];
                let id = core.next_id + ids.len() as u64 + placed.len() as u64;
                let h = RecordHeader {
                    id,
                    enqueued_ms: now,
                    delay_ms: m.delay_ms.unwrap_or(0),
                    synced_end: synced,
                    len: m.payload.len() as u32,
                    priority: m.priority,
                    flags: if i < last { record::FLAG_MORE } else { 0 },
                    deadline_ms: m.deadline_ms,
                    key_len: m.key.len() as u8,
                };
                largest = largest.max(h.len);
                placed.push((h, m.key, start + buf.len() as u32));
                record::encode_with_key(&h, m.key, m.payload, seed, buf);
            }
            let seg = core.active();
            seg.append(buf, placed.len() as u32, largest)
                .map_err(|e| self.poison(e))?;
            let (file, end) = (seg.file().clone(), seg.end());
            core.mark_dirty(&file, Target::Segment(seg_id), end);
            let mut live = 0;
            let mut keyed = false;
            for (h, key, offset) in placed {
                let loc = Loc {
                    segment: seg_id,
                    offset,
                };
                if core.index.place_record(&h, key, loc) {
                    live += 1;
                }
                keyed |= !key.is_empty();
                ids.push(h.id);
            }
            core.index.count_live(seg_id, live);
            if keyed {
                // Its keys live only in this segment until a checkpoint
                // holds them (see `space`).
                core.unsaved_keys.insert(seg_id);
            }
        }
        Ok(rotated)
    }

    /// Seal the active segment and move to the next one (made by
    /// [`Inner::prepare_segments`]). The old segment's tail must be durable
    /// before any record in the next one can be, or a power loss under
    /// `None` could keep a later message and lose an earlier one.
    fn seal_active(&self, core: &mut Core) -> Result<()> {
        let sealed = core.active().file().clone();
        sealed.sync_data().map_err(|e| self.poison(e))?;
        if !core.rotate_segment() {
            return Err(Error::Io(std::io::Error::other(
                "no prepared segment to rotate to",
            )));
        }
        Ok(())
    }

    /// Wake up to `n` sleeping consumers (one per newly ready message, so an
    /// enqueue of one message does not stampede every waiter).
    fn wake(&self, core: &Core, n: usize) {
        if n > 0 {
            // For consumers spinning before they park (see `delivery`).
            self.ready_epoch
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
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
            started = w
                .start(owner.clone(), self.opts.clock.clone(), Inner::fire_timers)
                .and_then(|()| w.start_syncer(owner, Inner::sync_for_async));
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

    /// Reserve the next block of ids now, if none is left, so that the
    /// first enqueue needs no sync of its own for it: for an opener that
    /// will enqueue and has a sync to overlap this one with (the service
    /// opens its two queues side by side).
    pub(crate) fn reserve_ids_ahead(&self) -> Result<()> {
        let mut core = self.core.lock();
        self.writable(&core)?;
        let now = self.opts.clock.now().0;
        self.reserve_ids(&mut core, 1, now)
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
        // Under the lock since the append: every byte of it is durable.
        core.journal_synced_whole();
        core.reserved_until = up_to;
        Ok(())
    }

    /// Create the segment a write of `bytes` will need before writing any
    /// of it, so a full disk fails the whole batch and changes nothing.
    fn prepare_segments(&self, core: &mut Core, bytes: usize, now: u64) -> Result<()> {
        let room = core.segments[&core.active].room() as usize;
        let needed = u32::from(bytes > room);
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

    /// The body of `append_entries`: one batch frame per run of entries
    /// that fits in the current journal file, rotating to a new file when
    /// the current one is full or of an older format version. Every file
    /// the write needs is made before any of it is written (invariant F).
    fn append_entry_chunks(
        &self,
        core: &mut Core,
        entries: &[Entry],
        now: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.clear();
        let first = if core.journal.appendable() {
            core.journal.encode(entries, core.journal.room(), buf)
        } else {
            0
        };
        let mut rest = &entries[first..];
        let ahead = if rest.is_empty() {
            Vec::new()
        } else {
            self.make_journal_files(core, rest, now)?
        };
        if first > 0 {
            self.write_frame(core, buf, now)?;
        }
        for file in ahead {
            let old = self.created(core.journal.rotate(&*self.storage, now, Some(file)))?;
            let old_number = core.journal.number() - 1;
            core.mark_dirty(&old, Target::Journal(old_number), 0);
            core.maintenance_due = true;
            buf.clear();
            let take = core.journal.encode(rest, core.journal.room(), buf);
            debug_assert!(take > 0, "make_journal_files counted the frames");
            self.write_frame(core, buf, now)?;
            rest = &rest[take..];
        }
        debug_assert!(rest.is_empty());
        Ok(())
    }

    /// Make the journal files that `rest` (the entries not fitting in the
    /// current file) will fill, numbered after the current one. On a
    /// failure the files already made are removed (a later rotation makes
    /// them again) and nothing was written: a full disk fails the write
    /// without poisoning the queue.
    fn make_journal_files(
        &self,
        core: &mut Core,
        mut rest: &[Entry],
        now: u64,
    ) -> Result<Vec<Arc<dyn crate::storage::StorageFile>>> {
        // Frame lengths do not depend on the file's number or synced end:
        // encoding against the current file counts the fresh ones.
        let room = (core.journal.new_size() as usize).saturating_sub(header::SIZE);
        let mut scratch = Vec::new();
        let mut needed = 0u64;
        while !rest.is_empty() {
            scratch.clear();
            let take = core.journal.encode(rest, room, &mut scratch);
            if take == 0 {
                // Entries are at most batch::MAX_ENTRY_BYTES and a journal
                // file at least MIN_JOURNAL_FILE_SIZE: unreachable unless
                // those limits change, but never a silent spin.
                return Err(Error::InvalidArgument(format!(
                    "a journal entry of {} bytes is larger than a journal file",
                    rest[0].frame_len()
                )));
            }
            needed += 1;
            rest = &rest[take..];
        }
        let size = core.journal.new_size();
        let mut made = Vec::new();
        for k in 1..=needed {
            let number = core.journal.number() + k;
            let ahead = match &self.prep {
                Some(p) if k == 1 => p.take(Want::Journal(number)),
                _ => Ok(None),
            };
            let file = ahead.and_then(|ahead| match ahead {
                Some(file) => Ok(file),
                None => Journal::create(&*self.storage, number, size, now),
            });
            match file {
                Ok(file) => made.push(file),
                Err(e) => {
                    let first = core.journal.number() + 1;
                    let removed = (first..number)
                        .try_for_each(|n| self.storage.remove(&layout::journal_name(n)))
                        .and_then(|()| self.storage.sync_dir());
                    if let Err(gone) = removed {
                        // A made file left behind would block the rotation
                        // that makes it again.
                        return Err(self.poison(gone));
                    }
                    return self.created(Err(e));
                }
            }
        }
        Ok(made)
    }

    /// Write one encoded frame at the end of the current journal file.
    fn write_frame(&self, core: &mut Core, frame: &[u8], now: u64) -> Result<()> {
        core.journal.write(frame).map_err(|e| self.poison(e))?;
        core.journal_bytes_since_checkpoint += frame.len() as u64;
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
        let mut drained = Vec::new();
        for e in entries {
            core.index.apply(e, &mut drained);
        }
        // Records a retention cut removed that the newest checkpoint does
        // not hold: replay counts them from their segment (invariant D of
        // `index`), which must therefore outlive the next checkpoint.
        for seg in core.index.take_cut_segments() {
            if seg >= core.checkpoint_head && core.segments.contains_key(&seg) {
                core.unsaved_cuts.insert(seg);
            }
        }
        core.note_drained(drained);
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
        let oldest = core.index.oldest_ready().and_then(|(_, loc)| {
            let seg = core.segments.get(&loc.segment)?;
            segment::read_header(&**seg.file(), loc.offset, seg.size() as usize)
        });
        let seg_bytes: u64 = core.segments.values().map(|s| u64::from(s.size())).sum();
        let journal_bytes = core.journal.files().len() as u64 * u64::from(core.journal.size());
        core.index.stats(
            core.segments.len() as u64,
            // Open always leaves an attributes file.
            seg_bytes
                + journal_bytes
                + core.checkpoint_file_bytes
                + crate::codec::attributes::SIZE as u64,
            oldest.map(|h| now.since(Timestamp(h.enqueued_ms))),
        )
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
                // A redriven message older than the retention is due for a
                // cut now: no nap of the tender may delay it.
                if let Some(at) = self.next_expiry(&core) {
                    self.tender.deadline_at(at);
                }
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
        expiry::stop_tender(self);
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
            // A checkpoint makes the next open read it instead of replaying,
            // and sync nothing (invariant D of `recovery`): it names the end
            // of every file. It does not rotate the journal, which would
            // cost a new file's syncs (invariant C of `checkpoint`). A queue
            // that wrote nothing since its newest checkpoint needs no new
            // one.
            if self.changed_since_checkpoint(&core) {
                self.checkpoint(&mut core, false)?;
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
    /// Segments whose last live record just finished: deleted once the
    /// journal position now reached is durable (the active one stays).
    fn note_drained(&mut self, drained: Vec<u32>) {
        for seg in drained {
            if seg != self.active {
                self.drained.push((seg, self.write_seq));
                self.maintenance_due = true;
            }
        }
    }

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
            self.drained.push((old, self.write_seq));
        }
        // A newly sealed segment may be drained or worth relocating, and
        // older ones may have become so since the last pass: each roll
        // runs one maintenance pass.
        self.maintenance_due = true;
        true
    }
}

/// Take the attributes stored in the directory for every option the caller
/// did not name; returns the options to open with and what was stored.
fn adopt_attributes(
    storage: &dyn Storage,
    mut opts: QueueOptions,
) -> Result<(QueueOptions, Option<(Attributes, u64)>)> {
    let files = layout::list(storage)?;
    let stored = attrs::read(storage, files.attributes)?;
    if let Some((a, _)) = &stored {
        // Stored attributes that are not valid on their own are damage (the
        // file is checksummed) or a foreign writer's.
        let mut alone = QueueOptions::new();
        alone.adopt(a);
        alone.validate().map_err(|e| Error::Corrupt {
            file: layout::ATTRIBUTES_NAME.to_string(),
            offset: 0,
            detail: format!("stored attributes are not valid options: {e}"),
        })?;
        // Valid alone, but not with what the caller named: the caller's
        // override is what cannot be honoured.
        opts.adopt(a);
        opts.validate().map_err(|e| match e {
            Error::InvalidArgument(why) => Error::InvalidArgument(format!(
                "{why} (with the attributes stored in the directory for the options not named)"
            )),
            other => other,
        })?;
    }
    Ok((opts, stored))
}

/// Where a batch's records go, as (items, starts a new segment) chunks: the
/// whole batch into the active segment if it fits, else into a fresh one
/// (`enqueue` refuses batches larger than a segment, so a batch is always
/// one write and all-or-none).
fn plan_chunks(items: &[NewMessage<'_>], room: usize) -> Vec<(std::ops::Range<usize>, bool)> {
    if items.is_empty() {
        return Vec::new();
    }
    let total: usize = items.iter().map(NewMessage::frame_len).sum();
    vec![(0..items.len(), total > room)]
}

/// Bytes of records a fresh segment holds.
fn seg_capacity(segment_size: u64) -> usize {
    segment_size as usize - header::SIZE
}

/// How long a consumer spins before it parks: only with another core to
/// hand it work. The core count is asked once per process (it reads
/// cgroup files, too slow for every queue an inference call opens).
fn spin_before_park() -> std::time::Duration {
    static SPIN: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| match std::thread::available_parallelism() {
        Ok(n) if n.get() > 1 => delivery::SPIN_BEFORE_PARK,
        _ => std::time::Duration::ZERO,
    })
}
