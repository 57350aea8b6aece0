//! A `Storage` that forwards to a `MemoryStorage` and watches every call the
//! memory storage counts: how many were made, which syncs failed, and (when
//! asked) the whole sequence, so call index `k` of a fault plan can be named
//! ("sync_data journal-0000000001.jnl").

use std::io;
use std::sync::{Arc, Mutex};

use lanelog::storage::{LockGuard, MemoryStorage, Storage, StorageFile};

/// One counted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: &'static str,
    pub file: String,
}

impl Call {
    /// `sync_data` or `sync_dir`: what `FaultOps::Sync` counts.
    pub fn is_sync(&self) -> bool {
        matches!(self.kind, "sync_data" | "sync_dir")
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.file)
    }
}

#[derive(Debug, Default)]
struct Watch {
    calls: u64,
    failed_syncs: u64,
    log: Option<Vec<Call>>,
}

type Shared = Arc<Mutex<Watch>>;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Traced {
    inner: MemoryStorage,
    watch: Shared,
}

impl Traced {
    /// Watch `inner`; `log` keeps the whole call sequence too.
    pub fn new(inner: MemoryStorage, log: bool) -> Traced {
        let watch = Watch {
            log: log.then(Vec::new),
            ..Watch::default()
        };
        Traced {
            inner,
            watch: Arc::new(Mutex::new(watch)),
        }
    }

    pub fn inner(&self) -> &MemoryStorage {
        &self.inner
    }

    /// Calls made through this wrapper.
    pub fn calls(&self) -> u64 {
        self.watch.lock().expect("watch").calls
    }

    /// `sync_data` and `sync_dir` calls that returned an error.
    pub fn failed_syncs(&self) -> u64 {
        self.watch.lock().expect("watch").failed_syncs
    }

    /// The call sequence, if logged.
    pub fn log(&self) -> Vec<Call> {
        self.watch
            .lock()
            .expect("watch")
            .log
            .clone()
            .unwrap_or_default()
    }

    fn wrap(&self, name: &str, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(TracedFile {
            inner: file,
            name: name.to_string(),
            watch: self.watch.clone(),
        })
    }
}

/// Note one call and its outcome.
fn note<T>(watch: &Shared, kind: &'static str, file: &str, r: io::Result<T>) -> io::Result<T> {
    let mut w = watch.lock().expect("watch");
    w.calls += 1;
    if matches!(kind, "sync_data" | "sync_dir") && r.is_err() {
        w.failed_syncs += 1;
    }
    if let Some(log) = &mut w.log {
        log.push(Call {
            kind,
            file: file.to_string(),
        });
    }
    r
}

impl Storage for Traced {
    fn lock(&self) -> io::Result<LockGuard> {
        self.inner.lock()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        note(&self.watch, "list", "", self.inner.list())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let r = self.inner.open(name).map(|f| self.wrap(name, f));
        note(&self.watch, "open", name, r)
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let r = self.inner.create(name, len).map(|f| self.wrap(name, f));
        note(&self.watch, "create", name, r)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let r = self.inner.rename(from, to);
        note(&self.watch, "rename", &format!("{from} -> {to}"), r)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        note(&self.watch, "remove", name, self.inner.remove(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        note(&self.watch, "sync_dir", "", self.inner.sync_dir())
    }
}

#[derive(Debug)]
struct TracedFile {
    inner: Arc<dyn StorageFile>,
    name: String,
    watch: Shared,
}

impl StorageFile for TracedFile {
    fn len(&self) -> io::Result<u64> {
        note(&self.watch, "len", &self.name, self.inner.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.inner.read_at(offset, buf);
        note(&self.watch, "read_at", &self.name, r)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let r = self.inner.write_at(offset, data);
        note(&self.watch, "write_at", &self.name, r)
    }

    fn sync_data(&self) -> io::Result<()> {
        note(&self.watch, "sync_data", &self.name, self.inner.sync_data())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        note(&self.watch, "set_len", &self.name, self.inner.set_len(len))
    }
}
