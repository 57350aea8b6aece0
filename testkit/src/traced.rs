//! A `Storage` that forwards to a `MemoryStorage` and watches every call the
//! memory storage counts: how many were made, which syncs failed, which
//! calls the queue's background thread (the "tender") made and whether one
//! failed, and (when asked) the whole sequence, so call index `k` of a fault
//! plan can be named ("sync_data journal-0000000001.jnl").
//!
//! [`quietly`] runs a closure whose reads are served from the memory
//! storage's contents without being counted (nor faulted): a harness reads
//! `stats()` (which may read a record header) without moving the call
//! indices a fault plan names.

use std::cell::Cell;
use std::io;
use std::sync::{Arc, Mutex};

use lanelog::storage::{LockGuard, MemoryStorage, Storage, StorageFile};

/// The name of the queue's background thread.
pub const TENDER_THREAD: &str = "lanelog-tender";

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with this thread's reads through any [`Traced`] served from the
/// memory storage's contents, uncounted and never faulted.
pub fn quietly<T>(f: impl FnOnce() -> T) -> T {
    QUIET.with(|q| q.set(true));
    let out = f();
    QUIET.with(|q| q.set(false));
    out
}

fn quiet() -> bool {
    QUIET.with(Cell::get)
}

fn on_tender() -> bool {
    std::thread::current().name() == Some(TENDER_THREAD)
}

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
    /// Calls that returned an error.
    failed: u64,
    /// Calls the tender made.
    tender_calls: u64,
    /// Writes (`write_at`) the tender made.
    tender_writes: u64,
    /// Calls of the tender that returned an error.
    tender_failed: u64,
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

    /// Calls that returned an error.
    pub fn failed(&self) -> u64 {
        self.watch.lock().expect("watch").failed
    }

    /// Calls the queue's background thread made.
    pub fn tender_calls(&self) -> u64 {
        self.watch.lock().expect("watch").tender_calls
    }

    /// Calls made by other threads than the queue's background thread.
    pub fn calls_not_tender(&self) -> u64 {
        let w = self.watch.lock().expect("watch");
        w.calls - w.tender_calls
    }

    /// `write_at` calls the queue's background thread made.
    pub fn tender_writes(&self) -> u64 {
        self.watch.lock().expect("watch").tender_writes
    }

    /// Calls of the queue's background thread that returned an error.
    pub fn tender_failed(&self) -> u64 {
        self.watch.lock().expect("watch").tender_failed
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
            storage: self.inner.clone(),
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
    if r.is_err() {
        w.failed += 1;
    }
    if on_tender() {
        w.tender_calls += 1;
        w.tender_writes += u64::from(kind == "write_at");
        w.tender_failed += u64::from(r.is_err());
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
    storage: MemoryStorage,
    watch: Shared,
}

impl StorageFile for TracedFile {
    fn len(&self) -> io::Result<u64> {
        note(&self.watch, "len", &self.name, self.inner.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if quiet() {
            let data = self.storage.read_file(&self.name).unwrap_or_default();
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(buf.len());
            return match data.get(start..end) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            };
        }
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
