//! Durability: the files written since the last sync, group commit
//! (invariant B of `engine`), the periodic flusher, and the one poisoning
//! path (invariant C).
//!
//! A writer bumps `write_seq` with every write and records the file in
//! `dirty`; a caller that needs its writes durable calls `commit(seq)`.
//! The first caller to find no sync running becomes the leader: it takes
//! the dirty list under the core lock, syncs every file without it, marks
//! them synced and runs maintenance that became due. Callers that arrive
//! meanwhile wait for the leader's result, or lead the next sync if theirs
//! came after the list was taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Core, Health, Inner};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::storage::StorageFile;

/// Group commit's shared state, under `Inner::sync`.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Writes with a sequence number up to this are durable.
    synced_seq: u64,
    /// A leader is syncing.
    leading: bool,
}

/// The queue's poison flag: set once, by [`Inner::poison`] or by the
/// preparer's background sync (which holds the same flag), and read by
/// every write and every commit.
#[derive(Debug, Default, Clone)]
pub(super) struct Poison(Arc<AtomicBool>);

impl Poison {
    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The flag itself, for the preparer to set when a background sync
    /// fails.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// A file written since the last sync.
pub(super) struct Dirty {
    file: Arc<dyn StorageFile>,
    target: Target,
    end: u32,
}

/// What a dirty file is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Segment(u32),
    Journal(u64),
}

/// What a write under the lock asks of the caller once the lock is gone.
pub(crate) struct Written {
    pub seq: u64,
    pub maintenance: bool,
}

/// Tells the flusher thread to stop.
pub(super) type StopSignal = (Mutex<bool>, Condvar);

impl Inner {
    /// Poison the queue (invariant C) and pass the error on. Every failed
    /// sync, write or file creation comes here; nothing else sets the flag
    /// but the preparer's background sync, through the same flag.
    pub(super) fn poison(&self, err: impl Into<Error>) -> Error {
        self.poison.set();
        err.into()
    }

    /// After a write: wait for durability if the mode asks, and run
    /// maintenance that became due.
    pub(super) fn finish_write(&self, w: Written) -> Result<()> {
        if self.opts.durability == Durability::Immediate || w.maintenance {
            self.commit(w.seq)?;
        }
        Ok(())
    }

    /// As [`Inner::finish_write`], awaiting the sync instead of making it
    /// on the caller's thread.
    #[cfg(feature = "tokio")]
    pub(crate) async fn finish_write_async(self: &Arc<Inner>, w: Written) -> Result<()> {
        if self.opts.durability == Durability::Immediate || w.maintenance {
            self.commit_async(w.seq).await?;
        }
        Ok(())
    }

    /// As [`Inner::sync`], awaiting the sync.
    #[cfg(feature = "tokio")]
    pub(crate) async fn sync_async(self: &Arc<Inner>) -> Result<()> {
        let seq = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            core.write_seq += 1;
            core.write_seq
        };
        self.commit_async(seq).await
    }

    /// Group commit for async callers: return once writes up to `seq` are
    /// durable, having asked the syncer thread for the sync and awaited its
    /// signal (or a blocking leader's), never syncing on this thread.
    #[cfg(feature = "tokio")]
    async fn commit_async(self: &Arc<Inner>, seq: u64) -> Result<()> {
        let waker = self.async_waker()?;
        loop {
            let mut synced = std::pin::pin!(waker.synced.notified());
            // Register before looking, so a sync that ends between the look
            // and the await still wakes this future.
            synced.as_mut().enable();
            {
                let s = self.sync.lock();
                if self.poison.is_set() {
                    return Err(Error::Poisoned);
                }
                if s.synced_seq >= seq {
                    return Ok(());
                }
            }
            if self.core.lock().health == Health::Closed {
                return Err(Error::Closed);
            }
            waker.want_sync(seq);
            synced.await;
        }
    }

    /// The syncer thread's sync: writes up to `seq` made durable (an error
    /// poisons the queue, which its waiters see); `false` once the queue is
    /// closed.
    #[cfg(feature = "tokio")]
    pub(super) fn sync_for_async(&self, seq: u64) -> bool {
        let _ = self.commit(seq);
        self.core.lock().health != Health::Closed
    }

    /// Make everything written so far durable now.
    pub(crate) fn sync(&self) -> Result<()> {
        let seq = {
            let mut core = self.core.lock();
            self.writable(&core)?;
            core.write_seq += 1;
            core.write_seq
        };
        self.commit(seq)
    }

    /// Group commit (invariant B): return once writes up to `seq` are
    /// durable.
    pub(super) fn commit(&self, seq: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if self.poison.is_set() {
                return Err(Error::Poisoned);
            }
            if s.synced_seq >= seq {
                return Ok(());
            }
            if s.leading {
                self.synced.wait(&mut s);
                continue;
            }
            s.leading = true;
            drop(s);
            // Let writers that were woken with us (their previous sync just
            // ended) write before this sync starts, so it covers them rather
            // than leaving them for the next one.
            std::thread::yield_now();
            let result = self.sync_once();
            s = self.sync.lock();
            s.leading = false;
            if let Ok(upto) = &result {
                s.synced_seq = s.synced_seq.max(*upto);
            }
            self.synced.notify_all();
            #[cfg(feature = "tokio")]
            if let Some(w) = self.waker.get() {
                w.synced.notify_waiters();
            }
            result?;
        }
    }

    /// One leader's sync: every dirty file, oldest first, without the core
    /// lock; then maintenance under it.
    fn sync_once(&self) -> Result<u64> {
        let (seq, dirty) = {
            let mut core = self.core.lock();
            (core.write_seq, std::mem::take(&mut core.dirty))
        };
        for d in &dirty {
            d.file.sync_data().map_err(|e| self.poison(e))?;
        }
        let mut core = self.core.lock();
        if self.poison.is_set() {
            // A background sync failed: nothing written since can be known
            // durable.
            return Err(Error::Poisoned);
        }
        core.mark_synced(&dirty, seq);
        if core.maintenance_due && core.health == Health::Open {
            self.maintain(&mut core).map_err(|e| self.poison(e))?;
        }
        Ok(seq)
    }

    /// Sync every dirty file while holding the core lock (maintenance only;
    /// its caller poisons on failure).
    pub(super) fn sync_inline(&self, core: &mut Core) -> Result<()> {
        let dirty = std::mem::take(&mut core.dirty);
        for d in &dirty {
            d.file.sync_data()?;
        }
        let seq = core.write_seq;
        core.mark_synced(&dirty, seq);
        Ok(())
    }
}

impl Core {
    /// The current journal file was just synced with nothing written to it
    /// since (the core lock held throughout): all of it is durable, and the
    /// next commit need not sync it again.
    pub(super) fn journal_synced_whole(&mut self) {
        let end = self.journal.end();
        self.journal.mark_synced(end);
        let current = Target::Journal(self.journal.number());
        self.dirty.retain(|d| d.target != current);
    }

    /// Note a write to `file` ending at `end`, for the next sync.
    pub(super) fn mark_dirty(&mut self, file: &Arc<dyn StorageFile>, target: Target, end: u32) {
        match self.dirty.iter_mut().find(|d| d.target == target) {
            Some(d) => d.end = end,
            None => self.dirty.push(Dirty {
                file: file.clone(),
                target,
                end,
            }),
        }
        self.write_seq += 1;
    }

    /// A sync of `dirty` (taken when writes up to `seq` had been made)
    /// completed.
    fn mark_synced(&mut self, dirty: &[Dirty], seq: u64) {
        for d in dirty {
            match d.target {
                Target::Segment(id) => {
                    if let Some(s) = self.segments.get_mut(&id) {
                        s.mark_synced(d.end);
                    }
                }
                Target::Journal(n) if n == self.journal.number() => {
                    self.journal.mark_synced(d.end);
                }
                Target::Journal(_) => {}
            }
        }
        self.durable_seq = self.durable_seq.max(seq);
    }
}

/// Start the `Durability::Periodic` thread: a commit every `every`.
pub(super) fn start_flusher(inner: &Arc<Inner>, every: Duration) -> std::io::Result<()> {
    let signal = Arc::new((Mutex::new(false), Condvar::new()));
    *inner.flusher.lock() = Some(signal.clone());
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new()
        .name("lanelog-flusher".into())
        .spawn(move || loop {
            {
                let mut stop = signal.0.lock();
                if !*stop {
                    signal.1.wait_for(&mut stop, every);
                }
                if *stop {
                    return;
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            let seq = inner.core.lock().write_seq;
            // A failure poisons the queue; the next call reports it.
            let _ = inner.commit(seq);
        });
    spawned.map(|_| ())
}

/// Tell the flusher thread, if any, to stop.
pub(super) fn stop_flusher(inner: &Inner) {
    if let Some(f) = inner.flusher.lock().take() {
        *f.0.lock() = true;
        f.1.notify_all();
    }
}
