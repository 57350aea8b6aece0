//! Helpers of the scenario tests (one `tests/<area>_<behaviour>.rs` each):
//! where a queue lives and how it is opened. Every scenario that takes a
//! [`Place`] runs once on real files and once on the in-memory storage;
//! [`files`] reads, copies and damages a place's files. (The crash-safety
//! battery has its own harness in `tests/battery/`, the CLI tests theirs in
//! `tests/cli_support/`; the reference model, payloads, generator and
//! kill-child harness are in the `testkit` crate.)
#![allow(dead_code)]

pub mod files;

use std::sync::Arc;

use lanelog::storage::{MemoryStorage, Storage};
use lanelog::{Durability, Queue, QueueOptions};

/// Where a scenario runs.
pub enum Place {
    Disk(tempfile::TempDir),
    Memory(MemoryStorage),
}

impl Place {
    pub fn disk() -> Place {
        Place::Disk(tempfile::tempdir().expect("temp dir"))
    }

    pub fn memory() -> Place {
        Place::Memory(MemoryStorage::new())
    }

    pub fn open(&self, opts: QueueOptions) -> lanelog::Result<Queue> {
        match self {
            Place::Disk(d) => opts.open(d.path()),
            Place::Memory(m) => opts.open_storage(Arc::new(m.clone()) as Arc<dyn Storage>),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Place::Disk(_) => "disk",
            Place::Memory(_) => "memory",
        }
    }
}

/// Small segments so tests roll files often.
pub fn small() -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
}

/// Run `f` on disk and in memory.
pub fn both(f: impl Fn(&Place)) {
    for place in [Place::disk(), Place::memory()] {
        f(&place);
    }
}

/// A queue with `Durability::None` and 1 MiB segments in a new temporary
/// directory (kept alive by the returned guard).
pub fn temp_queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = QueueOptions::new()
        .durability(Durability::None)
        .segment_size(1 << 20)
        .open(dir.path())
        .expect("open");
    (dir, q)
}

/// Wait, bounded, until `pred` holds of the queue's stats: for what the
/// queue's background thread does (missed deadlines, retention) after a
/// clock moves. Fails with `what` and the stats after 20 s.
pub fn eventually(q: &Queue, what: &str, pred: impl Fn(&lanelog::Stats) -> bool) {
    let start = std::time::Instant::now();
    while !pred(&q.stats()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{what}: {:?}",
            q.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
