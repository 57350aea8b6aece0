//! Shared helpers: every scenario runs once on real files and once on the
//! in-memory storage.
#![allow(dead_code)]

use std::sync::Arc;

use lanelog::storage::{MemoryStorage, Storage};
use lanelog::{Queue, QueueOptions};

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
