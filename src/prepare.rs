//! Files made ahead of need. A new segment is megabytes of zeros written
//! and synced (see `storage::disk`), and so is a new journal file; made
//! inline, that stalls the one write that fills the old file for tens of
//! milliseconds. Instead, once the active segment or journal file is an
//! eighth full, a background thread makes the next one under a temporary
//! name (`segment-N.seg.prep`, `journal-N.jnl.prep`): preallocated, header
//! written and synced. Its zeros go to the device a MiB at a time as they
//! are written (`Storage::create_ahead`): left for the file's sync, tens of
//! MiB would go out at once and every sync of the writer meanwhile would
//! wait behind them. Under `Durability::None` the zeros are not written at
//! all, only the space allocated (`Storage::create_ahead_allocated`):
//! nothing waits for a sync there, and the zeros would double the bytes
//! written, to the page cache and to the device. The write that needs it
//! renames it into place and syncs the directory (invariant A of `segment`
//! and `journal`: the entry is durable before anything is written to the
//! file).
//!
//! A crash leaves at most `.prep` files, which recovery removes unread. A
//! prepared file that is not the one needed (the writer got there first
//! and made it inline) is removed. Failures here only mean the writer makes
//! the file itself: a file that never held data loses nothing.
//!
//! Under `Durability::None` and `Periodic`, the same thread also syncs the
//! active segment in the background every few megabytes written
//! (write-behind), so sealing it when it is full (which must sync it) has
//! little left to flush. A failed background sync is a failed sync: the
//! thread sets the poison flag the queue handed it at start, and the queue is
//! poisoned.
//!
//! The thread holds the storage, not the queue, and never takes the core
//! lock; the queue calls it with the core lock held (lock order: core, then
//! this module's state).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::codec::header::{FileHeader, FileKind};
use crate::layout::{self, create_ahead, CreateError};
use crate::storage::{Storage, StorageFile};

/// What to make: a segment or a journal file, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Segment(u32),
    Journal(u64),
}

impl Want {
    /// The final name of the file.
    pub fn name(self) -> String {
        match self {
            Want::Segment(id) => layout::segment_name(id),
            Want::Journal(n) => layout::journal_name(n),
        }
    }

    /// The temporary name it is made under.
    pub fn temp_name(self) -> String {
        self.name() + layout::PREPARED_SUFFIX
    }

    fn header(self, now_ms: u64) -> FileHeader {
        let (kind, id) = match self {
            Want::Segment(id) => (FileKind::Segment, u64::from(id)),
            Want::Journal(n) => (FileKind::Journal, n),
        };
        FileHeader::new(kind, id, now_ms)
    }

    fn slot(self) -> usize {
        match self {
            Want::Segment(_) => 0,
            Want::Journal(_) => 1,
        }
    }
}

#[derive(Default)]
struct State {
    /// Per slot (segment, journal): asked for, with its size and time.
    asked: [Option<(Want, u32, u64)>; 2],
    /// Per slot: made and waiting under its temporary name.
    ready: [Option<(Want, Arc<dyn StorageFile>)>; 2],
    /// A file to sync in the background.
    sync: Option<Arc<dyn StorageFile>>,
    stop: bool,
}

/// The background maker of next files.
pub(crate) struct Preparer {
    storage: Arc<dyn Storage>,
    state: Mutex<State>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    sync_failed: Arc<AtomicBool>,
    /// Make files with their space allocated but no zeros written
    /// (`Storage::create_ahead_allocated`).
    allocate_only: bool,
}

impl std::fmt::Debug for Preparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preparer").finish_non_exhaustive()
    }
}

impl Preparer {
    /// Start the thread; a failed background sync sets `sync_failed` (the
    /// queue's poison flag). With `allocate_only` (for a queue whose writes
    /// are not synced as they are made), files are made with their space
    /// allocated and no zeros written: the zeros would double the bytes a
    /// writer that never waits for a sync puts through the page cache.
    pub fn start(
        storage: Arc<dyn Storage>,
        sync_failed: Arc<AtomicBool>,
        allocate_only: bool,
    ) -> std::io::Result<Arc<Preparer>> {
        let p = Arc::new(Preparer {
            storage,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            thread: Mutex::new(None),
            sync_failed,
            allocate_only,
        });
        let worker = p.clone();
        let handle = std::thread::Builder::new()
            .name("lanelog-prepare".into())
            .spawn(move || worker.run())?;
        *p.thread.lock() = Some(handle);
        Ok(p)
    }

    fn run(&self) {
        let mut s = self.state.lock();
        loop {
            if s.stop {
                return;
            }
            if let Some(file) = s.sync.take() {
                drop(s);
                if file.sync_data().is_err() {
                    self.sync_failed.store(true, Ordering::SeqCst);
                }
                s = self.state.lock();
                continue;
            }
            let Some(slot) = (0..2).find(|&i| s.asked[i].is_some() && s.ready[i].is_none()) else {
                self.wake.wait(&mut s);
                continue;
            };
            let Some((want, size, now_ms)) = s.asked[slot] else {
                continue;
            };
            drop(s);
            // Made unlisted: the writer that takes it renames it into
            // place and syncs the directory then (invariant A).
            let made = create_ahead(
                &*self.storage,
                &want.temp_name(),
                size,
                &want.header(now_ms),
                self.allocate_only,
            );
            s = self.state.lock();
            if s.asked[slot].map(|a| a.0) == Some(want) {
                s.asked[slot] = None;
            }
            match made {
                Ok(file) if !s.stop => s.ready[slot] = Some((want, file)),
                Ok(_) => {
                    let _ = self.storage.remove(&want.temp_name());
                }
                // `create_ahead` removed what it made; the writer
                // will make the file itself.
                Err(_) => {}
            }
        }
    }

    /// Ask for `want` (a file of `size` bytes) unless it is asked for or
    /// made already.
    pub fn ask(&self, want: Want, size: u32, now_ms: u64) {
        let mut s = self.state.lock();
        let slot = want.slot();
        if s.stop
            || s.asked[slot].map(|a| a.0) == Some(want)
            || s.ready[slot].as_ref().map(|r| r.0) == Some(want)
        {
            return;
        }
        // A file made for a number the writer since made itself is stale.
        if let Some((stale, _)) = s.ready[slot].take() {
            let _ = self.storage.remove(&stale.temp_name());
        }
        s.asked[slot] = Some((want, size, now_ms));
        self.wake.notify_one();
    }

    /// Sync `file` in the background (replacing an earlier request not yet
    /// started).
    pub fn sync_behind(&self, file: Arc<dyn StorageFile>) {
        let mut s = self.state.lock();
        if !s.stop {
            s.sync = Some(file);
            self.wake.notify_one();
        }
    }

    /// Take `want` if it is made: renamed into place and the directory
    /// synced, so records may be written to it. `Ok(None)` when it is not
    /// ready (the caller makes it); a prepared file for another number is
    /// removed.
    pub fn take(&self, want: Want) -> Result<Option<Arc<dyn StorageFile>>, CreateError> {
        let ready = self.state.lock().ready[want.slot()].take();
        let Some((made, file)) = ready else {
            return Ok(None);
        };
        if made != want {
            let _ = self.storage.remove(&made.temp_name());
            return Ok(None);
        }
        // A failed rename changed nothing; a failed directory sync is a
        // failed sync, which poisons the queue.
        self.storage
            .rename(&want.temp_name(), &want.name())
            .map_err(CreateError::NotMade)?;
        self.storage.sync_dir().map_err(CreateError::Failed)?;
        Ok(Some(file))
    }

    /// Stop the thread, wait for it, and remove prepared files.
    pub fn stop(&self) {
        {
            let mut s = self.state.lock();
            s.stop = true;
            self.wake.notify_all();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        let ready = std::mem::take(&mut self.state.lock().ready);
        for (want, _) in ready.into_iter().flatten() {
            let _ = self.storage.remove(&want.temp_name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn wait_ready(p: &Preparer, slot: usize) {
        for _ in 0..2000 {
            if p.state.lock().ready[slot].is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("nothing prepared");
    }

    #[test]
    fn prepares_renames_and_discards() {
        let s = MemoryStorage::new();
        let p = Preparer::start(Arc::new(s.clone()), Arc::default(), false).unwrap();
        p.ask(Want::Segment(2), 1 << 20, 5);
        wait_ready(&p, 0);
        assert!(s
            .list()
            .unwrap()
            .contains(&"segment-0000000002.seg.prep".to_string()));
        assert!(layout::is_prepared_name("segment-0000000002.seg.prep"));
        assert!(!layout::is_prepared_name("segment-2.seg.prep"));
        let f = p.take(Want::Segment(2)).unwrap().expect("ready");
        assert_eq!(f.len().unwrap(), 1 << 20);
        assert_eq!(
            s.list().unwrap(),
            vec!["segment-0000000002.seg".to_string()]
        );

        // Made for a number no longer wanted: removed, not used.
        p.ask(Want::Journal(7), 64 << 10, 5);
        wait_ready(&p, 1);
        assert!(p.take(Want::Journal(8)).unwrap().is_none());
        assert!(!s
            .list()
            .unwrap()
            .iter()
            .any(|n| n.ends_with(layout::PREPARED_SUFFIX)));

        // Stopping removes what was made and not taken.
        p.ask(Want::Journal(9), 64 << 10, 5);
        wait_ready(&p, 1);
        p.stop();
        assert!(!s
            .list()
            .unwrap()
            .iter()
            .any(|n| n.ends_with(layout::PREPARED_SUFFIX)));
    }

    #[test]
    fn a_crash_leaves_prepared_files_that_open_removes() {
        use crate::storage::CrashPolicy;
        use crate::QueueOptions;
        let s = MemoryStorage::new();
        let opts = QueueOptions::new()
            .segment_size(1 << 20)
            .journal_file_size(64 << 10)
            .prepare_ahead(true);
        let q = opts.clone().open_storage(Arc::new(s.clone())).unwrap();
        let payload = vec![1u8; 4096];
        let prep = |s: &MemoryStorage| {
            s.list()
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(layout::PREPARED_SUFFIX))
                .count()
        };
        let mut ids = Vec::new();
        for _ in 0..2000 {
            ids.push(q.enqueue(&payload, 0).unwrap());
            if prep(&s) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(prep(&s) > 0, "nothing was prepared ahead");
        let image = s.crash(CrashPolicy::ProcessCrash);
        std::mem::forget(q);
        let q = opts.open_storage(Arc::new(image.clone())).unwrap();
        assert!(q
            .recovery_report()
            .files_removed
            .iter()
            .any(|n| n.ends_with(layout::PREPARED_SUFFIX)));
        assert_eq!(q.stats().ready, ids.len() as u64);
        assert_eq!(prep(&image), 0);
        q.close().unwrap();
    }

    #[test]
    fn segments_made_ahead_take_the_configured_size_after_a_reopen() {
        use crate::QueueOptions;
        let s = MemoryStorage::new();
        let opts = |size: u64| {
            QueueOptions::new()
                .segment_size(size)
                .journal_file_size(64 << 10)
                .prepare_ahead(true)
        };
        let payload = vec![3u8; 64 << 10];
        let q = opts(1 << 20).open_storage(Arc::new(s.clone())).unwrap();
        for _ in 0..4 {
            q.enqueue(&payload, 0).unwrap();
        }
        q.close().unwrap();
        // Reopened with bigger segments: the ones made from now on (ahead
        // or inline) are 2 MiB, and every message survives the rolls.
        let q = opts(2 << 20).open_storage(Arc::new(s.clone())).unwrap();
        for _ in 0..60 {
            q.enqueue(&payload, 0).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        q.close().unwrap();
        let q = opts(2 << 20).open_storage(Arc::new(s.clone())).unwrap();
        assert_eq!(q.stats().ready, 64);
        let mut n = 0;
        while let Some(d) = q.dequeue().unwrap() {
            assert_eq!(d.payload, payload);
            q.ack(d.receipt).unwrap();
            n += 1;
        }
        assert_eq!(n, 64);
        for name in s.list().unwrap() {
            if name.starts_with("segment-") && name != "segment-0000000001.seg" {
                assert_eq!(s.open(&name).unwrap().len().unwrap(), 2 << 20, "{name}");
            }
        }
    }

    /// A memory storage that notes which kind of background creation made
    /// each file.
    #[derive(Debug, Clone, Default)]
    struct Noting {
        inner: MemoryStorage,
        made: Arc<Mutex<Vec<(&'static str, String)>>>,
    }

    impl Storage for Noting {
        fn lock(&self) -> std::io::Result<crate::storage::LockGuard> {
            self.inner.lock()
        }
        fn list(&self) -> std::io::Result<Vec<String>> {
            self.inner.list()
        }
        fn open(&self, name: &str) -> std::io::Result<Arc<dyn StorageFile>> {
            self.inner.open(name)
        }
        fn create(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn StorageFile>> {
            self.inner.create(name, len)
        }
        fn create_ahead(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn StorageFile>> {
            self.made.lock().push(("zeros", name.to_string()));
            self.inner.create_ahead(name, len)
        }
        fn create_ahead_allocated(
            &self,
            name: &str,
            len: u64,
        ) -> std::io::Result<Arc<dyn StorageFile>> {
            self.made.lock().push(("allocated", name.to_string()));
            self.inner.create_ahead_allocated(name, len)
        }
        fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, name: &str) -> std::io::Result<()> {
            self.inner.remove(name)
        }
        fn sync_dir(&self) -> std::io::Result<()> {
            self.inner.sync_dir()
        }
    }

    #[test]
    fn files_are_made_without_zeros_only_under_durability_none() {
        use crate::{Durability, QueueOptions};
        for (durability, kind) in [
            (Durability::None, "allocated"),
            (Durability::Immediate, "zeros"),
        ] {
            let s = Noting::default();
            let q = QueueOptions::new()
                .segment_size(1 << 20)
                .journal_file_size(64 << 10)
                .durability(durability)
                .prepare_ahead(true)
                .open_storage(Arc::new(s.clone()))
                .unwrap();
            let payload = vec![5u8; 4096];
            let mut n = 0u64;
            while s.made.lock().is_empty() && n < 2000 {
                q.enqueue(&payload, 0).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let made = s.made.lock().clone();
            assert!(!made.is_empty(), "{durability:?}: nothing was prepared");
            assert!(
                made.iter().all(|(k, _)| *k == kind),
                "{durability:?}: {made:?}"
            );
            q.close().unwrap();
            let q = QueueOptions::new()
                .segment_size(1 << 20)
                .open_storage(Arc::new(s.inner.clone()))
                .unwrap();
            assert_eq!(q.stats().ready, n);
            q.close().unwrap();
        }
    }

    #[test]
    fn a_queue_under_none_rolls_onto_allocated_segments_on_disk() {
        use crate::{Durability, QueueOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = || {
            QueueOptions::new()
                .segment_size(1 << 20)
                .journal_file_size(64 << 10)
                .durability(Durability::None)
                .prepare_ahead(true)
        };
        let q = opts().open(dir.path()).unwrap();
        // About five segments, slowly enough for the thread to make most.
        let mut sent = Vec::new();
        for i in 0..1200u32 {
            let mut p = vec![(i % 251) as u8; 4000];
            p[..4].copy_from_slice(&i.to_le_bytes());
            q.enqueue(&p, 0).unwrap();
            sent.push(p);
            if i % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        q.sync().unwrap();
        q.close().unwrap();
        let q = opts().open(dir.path()).unwrap();
        for want in &sent {
            let d = q.dequeue().unwrap().expect("a message");
            assert_eq!(&d.payload, want);
            q.ack(d.receipt).unwrap();
        }
        assert!(q.dequeue().unwrap().is_none());
        q.close().unwrap();
    }
}
