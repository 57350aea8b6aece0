//! Files in RAM that model exactly what a power loss keeps, with injectable
//! faults and a capacity limit, for crash and I/O-error tests.
//!
//! Each file keeps the bytes reads see now, the bytes as of its last
//! successful `sync_data`, and the changes issued since, in order. The
//! directory keeps its current entries and the entries as of the last
//! successful `sync_dir`. [`MemoryStorage::crash`] combines these into the
//! image a crash leaves behind.
//!
//! A volatile storage ([`MemoryStorage::volatile`]) keeps only the bytes
//! reads see: nothing survives a power loss there anyway, so writes are
//! applied once and syncs cost nothing. Queues that need no disk (an
//! in-memory inference service) run on it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::disk::check_name;
use super::{LockGuard, Storage, StorageFile};

/// What kind of crash [`MemoryStorage::crash`] simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPolicy {
    /// The process dies but the machine does not: the kernel still holds
    /// every write, so everything written and every directory change survives.
    ProcessCrash,
    /// The machine loses power. Only synced directory entries survive; each
    /// file keeps its synced bytes plus a random subset of the writes and
    /// length changes issued since, chosen from `seed`.
    PowerLoss {
        /// Seed of the choices; the same seed on the same history gives the
        /// same image.
        seed: u64,
        /// When true, a surviving write may also be cut to a random prefix
        /// (half the time at a 512-byte sector boundary, half at any byte).
        torn: bool,
    },
    /// The machine loses power and no unsynced write survives at all: the
    /// synced directory entries with exactly their synced bytes.
    DropUnsynced,
}

/// A planned failure of one call, or of every call from one on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Index of the first call to fail, counting from 0 the calls made on the
    /// storage since it was created that match `only` (see
    /// [`MemoryStorage::calls_matching`]).
    pub at_call: u64,
    /// How the call fails.
    pub kind: FaultKind,
    /// Fail every matching call from `at_call` on, not just that one.
    pub forever: bool,
    /// Which calls are counted and can fail.
    pub only: FaultOps,
}

/// How a faulted call fails. A failed call changes nothing, except that a
/// [`FaultKind::ShortWrite`] applies part of its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call fails with `EIO`.
    Eio,
    /// The call fails with `ENOSPC`.
    Enospc,
    /// A `write_at` applies the first half of its bytes, then fails with
    /// `EIO`; any other call fails with `EIO` and changes nothing.
    ShortWrite,
}

/// Which calls a [`Fault`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOps {
    /// Every counted call (all calls of both traits except `lock`).
    Any,
    /// `sync_data` and `sync_dir`.
    Sync,
    /// `write_at`, `set_len` and `create`.
    Write,
}

/// The class of a counted call, for matching against [`FaultOps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Sync,
    Write,
    Other,
}

impl FaultOps {
    fn matches(self, op: Op) -> bool {
        match self {
            FaultOps::Any => true,
            FaultOps::Sync => op == Op::Sync,
            FaultOps::Write => op == Op::Write,
        }
    }
}

impl FaultKind {
    fn error(self) -> io::Error {
        match self {
            FaultKind::Eio | FaultKind::ShortWrite => io::Error::from_raw_os_error(libc::EIO),
            FaultKind::Enospc => enospc(),
        }
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
}

/// A change to a file not yet made durable by `sync_data`.
#[derive(Debug, Clone)]
enum Change {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

/// One file's contents, shared by its directory entries and open handles.
#[derive(Debug, Default)]
struct Inode {
    /// What reads see now (followed by `tail` zeros).
    data: Vec<u8>,
    /// Zeros past `data` that were never written, kept as a count: a
    /// volatile file is sparse, so a preallocated segment costs memory only
    /// for what is written into it. Always 0 in a storage that keeps a
    /// durable image (its crash images are whole byte images).
    tail: usize,
    /// The contents as of the last successful `sync_data`.
    durable: Vec<u8>,
    /// Changes since that sync, in issue order. Replaying them on `durable`
    /// gives `data` unless `raw_changed`.
    pending: Vec<Change>,
    /// A raw test helper changed both images since the last sync, so the
    /// replay above may no longer reproduce `data` exactly.
    raw_changed: bool,
}

type InodeRef = Arc<Mutex<Inode>>;

impl Inode {
    /// A file whose contents are on the platter already.
    fn settled(bytes: Vec<u8>) -> InodeRef {
        Arc::new(Mutex::new(Inode {
            durable: bytes.clone(),
            data: bytes,
            ..Inode::default()
        }))
    }

    /// Make the current contents durable. Replays the pending changes rather
    /// than copying the whole file, so frequent syncs of a large preallocated
    /// file stay cheap.
    fn settle(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let replayed = pending.iter().try_for_each(|c| apply(&mut self.durable, c));
        if replayed.is_err() || self.raw_changed {
            self.durable.clone_from(&self.data);
        }
        self.raw_changed = false;
    }

    fn change(&mut self, change: Change) -> io::Result<()> {
        apply(&mut self.data, &change)?;
        self.pending.push(change);
        Ok(())
    }

    /// The file's length: its bytes and the zeros after them.
    fn len(&self) -> usize {
        self.data.len() + self.tail
    }

    /// The whole contents, the tail's zeros included.
    fn contents(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len());
        all.extend_from_slice(&self.data);
        all.resize(self.len(), 0);
        all
    }

    /// Write `src` at `offset` of a volatile file: only the bytes up to the
    /// write's end are held; the zeros past it stay a count.
    fn write_sparse(&mut self, offset: usize, src: &[u8]) -> io::Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(src.len()).ok_or_else(efbig)?;
        let len = self.len();
        if end > self.data.len() {
            resize(&mut self.data, end)?;
        }
        self.data[offset..end].copy_from_slice(src);
        self.tail = len.saturating_sub(self.data.len());
        Ok(())
    }

    /// Apply `change` to a volatile file (see [`Inode::write_sparse`]).
    fn apply_sparse(&mut self, change: &Change) -> io::Result<()> {
        match change {
            Change::Write { offset, bytes } => self.write_sparse(*offset, bytes),
            Change::SetLen(len) if *len <= self.data.len() => {
                self.data.truncate(*len);
                self.tail = 0;
                Ok(())
            }
            Change::SetLen(len) => {
                self.tail = len - self.data.len();
                Ok(())
            }
        }
    }

    /// Hold the tail's zeros as bytes (before changing both images).
    fn fill_tail(&mut self) -> io::Result<()> {
        let len = self.len();
        resize(&mut self.data, len)?;
        self.tail = 0;
        Ok(())
    }
}

/// Apply one change to a byte image. Fails only if memory runs out.
fn apply(bytes: &mut Vec<u8>, change: &Change) -> io::Result<()> {
    match change {
        Change::Write { bytes: src, .. } if src.is_empty() => Ok(()),
        Change::Write { offset, bytes: src } => {
            let end = offset.checked_add(src.len()).ok_or_else(enospc)?;
            resize(bytes, end.max(bytes.len()))?;
            if let Some(dst) = bytes.get_mut(*offset..end) {
                dst.copy_from_slice(src);
            }
            Ok(())
        }
        Change::SetLen(len) => resize(bytes, *len),
    }
}

/// Truncate or zero-extend, reporting an impossible allocation as `ENOSPC`
/// instead of aborting the test process.
fn resize(bytes: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let extra = len.saturating_sub(bytes.len());
    bytes.try_reserve(extra).map_err(|_| enospc())?;
    bytes.resize(len, 0);
    Ok(())
}

/// A new file's zeros, in a storage that keeps a durable image (a volatile
/// one holds them as a count). `vec![0; len]` asks the allocator for zeroed
/// memory (calloc), which skips the pass of zeros when it hands out fresh
/// pages; a clone of one image for the other would touch every page. The
/// probe first makes an impossible size `ENOSPC`, not an abort.
fn zeroed(len: usize) -> io::Result<Vec<u8>> {
    Vec::<u8>::new()
        .try_reserve_exact(len)
        .map_err(|_| enospc())?;
    Ok(vec![0; len])
}

/// Sizes a real file system would refuse as too large.
fn efbig() -> io::Error {
    io::Error::from_raw_os_error(libc::EFBIG)
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| efbig())
}

/// Calls made so far, per class a [`Fault`] can count.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    any: u64,
    sync: u64,
    write: u64,
}

impl Counters {
    fn get(&self, only: FaultOps) -> u64 {
        match only {
            FaultOps::Any => self.any,
            FaultOps::Sync => self.sync,
            FaultOps::Write => self.write,
        }
    }

    fn count(&mut self, op: Op) {
        self.any += 1;
        match op {
            Op::Sync => self.sync += 1,
            Op::Write => self.write += 1,
            Op::Other => {}
        }
    }
}

/// Everything behind the storage's one mutex. Lock order: this state first,
/// then at most one inode at a time.
#[derive(Debug, Default)]
struct State {
    current: BTreeMap<String, InodeRef>,
    durable: BTreeMap<String, InodeRef>,
    counters: Counters,
    fault: Option<Fault>,
    capacity: Option<u64>,
    /// No durable image is kept (see [`MemoryStorage::volatile`]).
    volatile: bool,
}

impl State {
    /// Count one call and say how it must fail, if it must.
    fn tick(&mut self, op: Op) -> Option<FaultKind> {
        let fault = self.fault;
        let index = fault.map(|f| self.counters.get(f.only));
        self.counters.count(op);
        let (fault, index) = (fault?, index?);
        let hit = index == fault.at_call || (fault.forever && index > fault.at_call);
        (fault.only.matches(op) && hit).then_some(fault.kind)
    }

    /// Count one call and fail it if the fault plan says so.
    fn enter(&mut self, op: Op) -> io::Result<()> {
        match self.tick(op) {
            Some(kind) => Err(kind.error()),
            None => Ok(()),
        }
    }

    fn used_bytes(&self) -> u64 {
        self.current
            .values()
            .map(|inode| inode.lock().len() as u64)
            .sum()
    }

    /// The largest length `inode` may grow to under the capacity, or `None`
    /// when unlimited (no capacity, or a removed file, which is not counted).
    /// Must be called without holding any inode lock.
    fn max_len(&self, inode: &InodeRef) -> Option<u64> {
        let capacity = self.capacity?;
        let own = self
            .current
            .values()
            .find(|other| Arc::ptr_eq(other, inode))?;
        let own_len = own.lock().len() as u64;
        Some(capacity.saturating_sub(self.used_bytes().saturating_sub(own_len)))
    }

    fn room_for_new(&self, len: u64) -> io::Result<()> {
        match self.capacity {
            Some(capacity) if self.used_bytes().saturating_add(len) > capacity => Err(enospc()),
            _ => Ok(()),
        }
    }

    fn entry(&self, name: &str) -> io::Result<&InodeRef> {
        check_name(name)?;
        self.current.get(name).ok_or_else(|| not_found(name))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Held apart from `state` so a lock guard owns nothing but the flag.
    locked: Arc<AtomicBool>,
}

/// An in-memory queue directory for tests. Clones share the same files.
///
/// Beyond [`Storage`], it simulates crashes ([`MemoryStorage::crash`]), fails
/// planned calls ([`MemoryStorage::set_fault`]) and limits its total size
/// ([`MemoryStorage::set_capacity`]).
#[derive(Clone)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        MemoryStorage::new()
    }
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("files", &self.file_names())
            .finish_non_exhaustive()
    }
}

impl MemoryStorage {
    /// An empty directory with no fault planned and no capacity limit.
    pub fn new() -> MemoryStorage {
        MemoryStorage::with_state(State::default())
    }

    /// An empty directory that keeps no durable image: writes are applied
    /// once, `sync_data` and `sync_dir` change nothing, and a power-loss
    /// crash image ([`CrashPolicy::PowerLoss`],
    /// [`CrashPolicy::DropUnsynced`]) is empty. Faults and the capacity
    /// work as in [`MemoryStorage::new`].
    pub fn volatile() -> MemoryStorage {
        MemoryStorage::with_state(State {
            volatile: true,
            ..State::default()
        })
    }

    fn with_state(state: State) -> MemoryStorage {
        MemoryStorage {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                locked: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// The storage a restart after `policy` would find: a new, independent
    /// storage (unlocked, no fault planned, call counts at zero, same
    /// capacity) in which every file's contents are durable.
    #[must_use = "the crash image is a new storage; the original is unchanged"]
    pub fn crash(&self, policy: CrashPolicy) -> MemoryStorage {
        let state = self.shared.state.lock();
        let mut rng = SplitMix64::new(match policy {
            CrashPolicy::PowerLoss { seed, .. } => seed,
            _ => 0,
        });
        let entries = match policy {
            CrashPolicy::ProcessCrash => &state.current,
            // Nothing of a volatile storage was ever durable.
            _ if state.volatile => &BTreeMap::new(),
            _ => &state.durable,
        };
        let current: BTreeMap<String, InodeRef> = entries
            .iter()
            .map(|(name, inode)| {
                let bytes = survivor(&inode.lock(), policy, &mut rng);
                (name.clone(), Inode::settled(bytes))
            })
            .collect();
        MemoryStorage::with_state(State {
            durable: current.clone(),
            current,
            capacity: state.capacity,
            ..State::default()
        })
    }

    /// The storage a new process finds after this one was killed while the
    /// machine kept running: a new, independent storage (unlocked, no fault
    /// planned, call counts at zero, same capacity) where reads see every
    /// write and every directory change, but what was never synced is still
    /// only in the page cache. Unlike [`CrashPolicy::ProcessCrash`], a later
    /// power loss ([`MemoryStorage::crash`] of the returned storage) can
    /// still lose it, unless the new process syncs it first: this is what
    /// tests recovery's own syncs.
    #[must_use = "the image is a new storage; the original is unchanged"]
    pub fn kill_process(&self) -> MemoryStorage {
        let state = self.shared.state.lock();
        // One copy per inode, shared by every name that refers to it (in the
        // current and in the durable directory), as the kernel keeps them.
        let mut copies: Vec<(InodeRef, InodeRef)> = Vec::new();
        let mut copy = |inode: &InodeRef| -> InodeRef {
            if let Some((_, c)) = copies.iter().find(|(o, _)| Arc::ptr_eq(o, inode)) {
                return Arc::clone(c);
            }
            let i = inode.lock();
            let c = Arc::new(Mutex::new(Inode {
                data: i.data.clone(),
                tail: i.tail,
                durable: i.durable.clone(),
                pending: i.pending.clone(),
                raw_changed: i.raw_changed,
            }));
            copies.push((Arc::clone(inode), Arc::clone(&c)));
            c
        };
        let current = state
            .current
            .iter()
            .map(|(name, inode)| (name.clone(), copy(inode)))
            .collect();
        let durable = state
            .durable
            .iter()
            .map(|(name, inode)| (name.clone(), copy(inode)))
            .collect();
        MemoryStorage::with_state(State {
            current,
            durable,
            capacity: state.capacity,
            volatile: state.volatile,
            ..State::default()
        })
    }

    /// Number of counted calls made so far: every call of [`Storage`] and
    /// [`StorageFile`] on this storage and its files, except `lock`.
    pub fn calls(&self) -> u64 {
        self.calls_matching(FaultOps::Any)
    }

    /// Number of calls made so far that `only` matches; the next such call
    /// has this index for [`Fault::at_call`].
    pub fn calls_matching(&self, only: FaultOps) -> u64 {
        self.shared.state.lock().counters.get(only)
    }

    /// Plan a failure, or clear the plan with `None`. Call counts are not
    /// reset: [`Fault::at_call`] is an absolute index.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.state.lock().fault = fault;
    }

    /// Limit the total size of all files in the directory, or lift the limit
    /// with `None`. A `create`, `write_at` or `set_len` that would go over
    /// fails with `ENOSPC` and changes nothing.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.shared.state.lock().capacity = bytes;
    }

    /// The total size of all files in the directory (removed files still
    /// open are not counted).
    pub fn used_bytes(&self) -> u64 {
        self.shared.state.lock().used_bytes()
    }

    /// The names in the directory now, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.shared.state.lock().current.keys().cloned().collect()
    }

    /// The current contents of the file `name`, or `None` if there is none.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.shared.state.lock();
        let inode = state.current.get(name)?;
        let data = inode.lock().contents();
        Some(data)
    }

    /// Overwrite bytes of `name` in place, in both its current and durable
    /// contents, as disk corruption would; extends the file if needed.
    /// Not counted, never faulted and not limited by the capacity.
    ///
    /// Meant for files with no unsynced writes (after a crash or a sync): an
    /// unsynced write over the same bytes may still cover the damage in a
    /// later [`CrashPolicy::PowerLoss`] image.
    pub fn write_file_raw(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let change = Change::Write {
            offset: to_usize(offset)?,
            bytes: bytes.to_vec(),
        };
        self.change_raw(name, &change)
    }

    /// Set the length of `name` in both its current and durable contents, as
    /// a damaged file system might. Not counted, never faulted and not
    /// limited by the capacity.
    pub fn set_file_len_raw(&self, name: &str, len: u64) -> io::Result<()> {
        self.change_raw(name, &Change::SetLen(to_usize(len)?))
    }

    fn change_raw(&self, name: &str, change: &Change) -> io::Result<()> {
        let state = self.shared.state.lock();
        let inode = state.current.get(name).ok_or_else(|| not_found(name))?;
        let mut inode = inode.lock();
        inode.raw_changed = true;
        inode.fill_tail()?;
        apply(&mut inode.data, change)?;
        apply(&mut inode.durable, change)
    }
}

/// The contents of one file after a crash under `policy`.
fn survivor(inode: &Inode, policy: CrashPolicy, rng: &mut SplitMix64) -> Vec<u8> {
    let torn = match policy {
        CrashPolicy::ProcessCrash => return inode.contents(),
        CrashPolicy::DropUnsynced => return inode.durable.clone(),
        CrashPolicy::PowerLoss { torn, .. } => torn,
    };
    let mut bytes = inode.durable.clone();
    for change in &inode.pending {
        if !rng.coin() {
            continue;
        }
        let change = if torn {
            tear(change, rng)
        } else {
            change.clone()
        };
        // These changes fitted in memory once already, on `data`; should one
        // not fit now, losing it is a valid crash outcome anyway.
        let _ = apply(&mut bytes, &change);
    }
    bytes
}

/// Half the time, cut a write to a random shorter prefix: at a 512-byte
/// boundary or at any byte, with equal chance.
fn tear(change: &Change, rng: &mut SplitMix64) -> Change {
    let Change::Write { offset, bytes } = change else {
        return change.clone();
    };
    if bytes.is_empty() || rng.coin() {
        return change.clone();
    }
    let len = bytes.len() as u64;
    let cut = if rng.coin() {
        rng.below(len.div_ceil(512)) * 512
    } else {
        rng.below(len)
    };
    let cut = usize::try_from(cut).unwrap_or(0);
    Change::Write {
        offset: *offset,
        bytes: bytes.get(..cut).unwrap_or_default().to_vec(),
    }
}

/// The splitmix64 generator (Steele, Lea and Flood): tiny, deterministic,
/// and good enough for choosing crash outcomes. [`MemoryStorage::crash`]
/// draws its power-loss choices from one seeded with
/// `CrashPolicy::PowerLoss { seed, .. }`; tests use the same generator for
/// their seeded workloads, so a seed names one sequence everywhere.
///
/// Not for cryptography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state starts at `state` (every value is a valid
    /// state, 0 included).
    pub fn new(state: u64) -> SplitMix64 {
        SplitMix64(state)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True or false, each with probability one half.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// A value in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn within(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `num / den` (never when `den` is 0).
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        den > 0 && self.below(den) < num
    }
}

/// Releases the storage's lock flag when dropped.
struct FlagGuard(Arc<AtomicBool>);

impl Drop for FlagGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Storage for MemoryStorage {
    fn lock(&self) -> io::Result<LockGuard> {
        let flag = &self.shared.locked;
        if flag
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "memory storage is locked by another handle",
            ));
        }
        Ok(LockGuard::new(Box::new(FlagGuard(Arc::clone(flag)))))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Other)?;
        Ok(state.current.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Other)?;
        let inode = Arc::clone(state.entry(name)?);
        Ok(self.handle(inode))
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Write)?;
        check_name(name)?;
        if state.current.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("file {name:?} already exists"),
            ));
        }
        state.room_for_new(len)?;
        let len = to_usize(len)?;
        let inode = if state.volatile {
            Arc::new(Mutex::new(Inode {
                tail: len,
                ..Inode::default()
            }))
        } else {
            // Two zeroed buffers rather than a clone: a copy would touch
            // every page of a file mostly never written.
            Arc::new(Mutex::new(Inode {
                data: zeroed(len)?,
                durable: zeroed(len)?,
                ..Inode::default()
            }))
        };
        state.current.insert(name.to_owned(), Arc::clone(&inode));
        Ok(self.handle(inode))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Other)?;
        check_name(to)?;
        let inode = Arc::clone(state.entry(from)?);
        state.current.remove(from);
        state.current.insert(to.to_owned(), inode);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Other)?;
        state.entry(name)?;
        state.current.remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Sync)?;
        if !state.volatile {
            state.durable = state.current.clone();
        }
        Ok(())
    }
}

impl MemoryStorage {
    fn handle(&self, inode: InodeRef) -> Arc<dyn StorageFile> {
        Arc::new(MemoryFile {
            shared: Arc::clone(&self.shared),
            inode,
        })
    }
}

/// An open handle to an in-memory file.
struct MemoryFile {
    shared: Arc<Shared>,
    inode: InodeRef,
}

impl fmt::Debug for MemoryFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inode = self.inode.lock();
        f.debug_struct("MemoryFile")
            .field("len", &inode.len())
            .field("pending", &inode.pending.len())
            .finish()
    }
}

impl MemoryFile {
    /// Apply `change` if the capacity allows it, recording it as unsynced.
    fn change(&self, state: &State, change: Change, new_len: u64) -> io::Result<()> {
        let max_len = state.max_len(&self.inode);
        let mut inode = self.inode.lock();
        let grows = new_len > inode.len() as u64;
        if grows && max_len.is_some_and(|max| new_len > max) {
            return Err(enospc());
        }
        if state.volatile {
            return inode.apply_sparse(&change);
        }
        inode.change(change)
    }

    fn write(&self, state: &State, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let start = to_usize(offset)?;
        let end = start.checked_add(data.len()).ok_or_else(efbig)?;
        let new_len = (end as u64).max(self.len_now());
        if state.volatile && state.capacity.is_none() {
            // No record of the write to keep: one copy, in place.
            return self.inode.lock().write_sparse(start, data);
        }
        let change = Change::Write {
            offset: start,
            bytes: data.to_vec(),
        };
        self.change(state, change, new_len)
    }

    fn len_now(&self) -> u64 {
        self.inode.lock().len() as u64
    }
}

impl StorageFile for MemoryFile {
    fn len(&self) -> io::Result<u64> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Other)?;
        Ok(self.len_now())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Other)?;
        let inode = self.inode.lock();
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .filter(|r| r.end <= inode.len());
        let Some(range) = range else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {offset} is past the end of a {}-byte file",
                    buf.len(),
                    inode.len()
                ),
            ));
        };
        // The bytes held, then the tail's zeros.
        let held = inode.data.get(range.start..).unwrap_or_default();
        let n = held.len().min(buf.len());
        let (from_data, zeros) = buf.split_at_mut(n);
        from_data.copy_from_slice(&held[..n]);
        zeros.fill(0);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        match state.tick(Op::Write) {
            None => self.write(&state, offset, data),
            Some(FaultKind::ShortWrite) => {
                // The torn prefix lands if it can; the call fails either way.
                let _ = self.write(
                    &state,
                    offset,
                    data.get(..data.len() / 2).unwrap_or_default(),
                );
                Err(FaultKind::ShortWrite.error())
            }
            Some(kind) => Err(kind.error()),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Sync)?;
        if !state.volatile {
            self.inode.lock().settle();
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.enter(Op::Write)?;
        self.change(&state, Change::SetLen(to_usize(len)?), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &dyn StorageFile) -> Vec<u8> {
        let len = usize::try_from(file.len().expect("len")).expect("fits");
        let mut buf = vec![0u8; len];
        file.read_at(0, &mut buf).expect("read");
        buf
    }

    fn raw_os(err: &io::Error) -> Option<i32> {
        err.raw_os_error()
    }

    fn fault(at_call: u64, kind: FaultKind, forever: bool, only: FaultOps) -> Option<Fault> {
        Some(Fault {
            at_call,
            kind,
            forever,
            only,
        })
    }

    /// A durable file "f" holding "synced", then an unsynced write of "NEW" at 0.
    fn synced_then_written() -> MemoryStorage {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        s.sync_dir().expect("sync dir");
        f.write_at(0, b"synced").expect("write");
        f.sync_data().expect("sync");
        f.write_at(0, b"NEW").expect("write");
        s
    }

    #[test]
    fn round_trip_and_eof() {
        let s = MemoryStorage::new();
        let f = s.create("f", 4).expect("create");
        assert_eq!(read(&*f), [0; 4]);
        f.write_at(2, b"abcd").expect("write");
        assert_eq!(read(&*s.open("f").expect("open")), b"\0\0abcd");
        let mut buf = [0u8; 3];
        let err = f.read_at(4, &mut buf).expect_err("past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = f.read_at(u64::MAX, &mut buf).expect_err("overflow");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        f.set_len(3).expect("shrink");
        assert_eq!(read(&*f), b"\0\0a");
    }

    #[test]
    fn create_open_rename_remove_errors() {
        let s = MemoryStorage::new();
        drop(s.create("a", 1).expect("create"));
        let err = s.create("a", 1).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            s.open("b").expect_err("missing").kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            s.remove("b").expect_err("missing").kind(),
            io::ErrorKind::NotFound
        );
        let err = s.rename("b", "c").expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = s.create("x/y", 1).expect_err("bad name");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(s.list().expect("list"), ["a"]);
    }

    #[test]
    fn removed_file_stays_readable_through_open_handle() {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        f.write_at(0, b"data").expect("write");
        s.remove("f").expect("remove");
        assert_eq!(read(&*f), b"data");
        assert!(s.file_names().is_empty());
        assert_eq!(s.read_file("f"), None);
    }

    #[test]
    fn lock_is_shared_by_clones_and_released_on_drop() {
        let s = MemoryStorage::new();
        let clone = s.clone();
        let guard = s.lock().expect("lock");
        assert_eq!(
            clone.lock().expect_err("held").kind(),
            io::ErrorKind::WouldBlock
        );
        let crashed = s.crash(CrashPolicy::ProcessCrash);
        drop(crashed.lock().expect("a crashed copy starts unlocked"));
        drop(guard);
        drop(clone.lock().expect("released"));
        assert_eq!(s.calls(), 0, "lock is not counted");
    }

    #[test]
    fn process_crash_keeps_everything_written() {
        let s = synced_then_written();
        let f = s.create("unsynced-entry", 0).expect("create");
        f.write_at(0, b"x").expect("write");
        let c = s.crash(CrashPolicy::ProcessCrash);
        assert_eq!(c.read_file("f").expect("f"), b"NEWced");
        assert_eq!(c.read_file("unsynced-entry").expect("kept"), b"x");
    }

    #[test]
    fn drop_unsynced_keeps_exactly_the_durable_bytes() {
        let s = synced_then_written();
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.read_file("f").expect("f"), b"synced");
        assert_eq!(
            s.read_file("f").expect("f"),
            b"NEWced",
            "original untouched"
        );
    }

    #[test]
    fn crash_image_is_fully_durable_and_independent() {
        let s = synced_then_written();
        let c = s.crash(CrashPolicy::ProcessCrash);
        let again = c.crash(CrashPolicy::DropUnsynced);
        assert_eq!(again.read_file("f").expect("f"), b"NEWced");
        c.open("f")
            .expect("open")
            .write_at(0, b"zz")
            .expect("write");
        assert_eq!(s.read_file("f").expect("f"), b"NEWced");
    }

    #[test]
    fn power_loss_applies_each_unsynced_write_or_not() {
        let s = MemoryStorage::new();
        let f = s.create("f", 4).expect("create");
        s.sync_dir().expect("sync dir");
        f.write_at(0, b"a").expect("write");
        f.write_at(1, b"b").expect("write");
        f.write_at(2, b"c").expect("write");
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let c = s.crash(CrashPolicy::PowerLoss { seed, torn: false });
            let bytes = c.read_file("f").expect("f");
            assert_eq!(bytes.len(), 4);
            for (i, want) in b"abc".iter().enumerate() {
                assert!(bytes[i] == 0 || bytes[i] == *want, "{bytes:?}");
            }
            seen.insert(bytes);
        }
        assert_eq!(seen.len(), 8, "every subset of 3 writes shows up");
        let a = s.crash(CrashPolicy::PowerLoss {
            seed: 7,
            torn: false,
        });
        let b = s.crash(CrashPolicy::PowerLoss {
            seed: 7,
            torn: false,
        });
        assert_eq!(a.read_file("f"), b.read_file("f"), "deterministic per seed");
    }

    #[test]
    fn power_loss_keeps_synced_bytes_and_may_apply_set_len() {
        let s = synced_then_written();
        let f = s.open("f").expect("open");
        f.set_len(2).expect("shrink");
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let c = s.crash(CrashPolicy::PowerLoss { seed, torn: false });
            outcomes.insert(c.read_file("f").expect("f"));
        }
        let want: std::collections::BTreeSet<Vec<u8>> = [&b"synced"[..], b"NEWced", b"sy", b"NE"]
            .iter()
            .map(|b| b.to_vec())
            .collect();
        assert_eq!(outcomes, want);
    }

    #[test]
    fn torn_power_loss_cuts_writes_to_prefixes() {
        let s = MemoryStorage::new();
        let f = s.create("f", 2048).expect("create");
        s.sync_dir().expect("sync dir");
        f.write_at(0, &[0xAB; 2048]).expect("write");
        let mut lens = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let c = s.crash(CrashPolicy::PowerLoss { seed, torn: true });
            let bytes = c.read_file("f").expect("f");
            assert_eq!(bytes.len(), 2048);
            let prefix = bytes.iter().take_while(|&&b| b == 0xAB).count();
            assert!(bytes[prefix..].iter().all(|&b| b == 0), "not a prefix");
            lens.insert(prefix);
        }
        assert!(lens.contains(&0) && lens.contains(&2048), "{lens:?}");
        assert!(lens.iter().any(|l| l % 512 != 0), "any-byte cuts: {lens:?}");
        assert!(
            lens.iter().any(|&l| l % 512 == 0 && l > 0 && l < 2048),
            "{lens:?}"
        );
    }

    #[test]
    fn killed_process_leaves_unsynced_writes_losable() {
        let s = synced_then_written();
        s.create("g", 1).expect("create g");
        let k = s.kill_process();
        assert_eq!(k.read_file("f").expect("f"), b"NEWced");
        assert!(k.read_file("g").is_some(), "unsynced entries are visible");
        let lost = k.crash(CrashPolicy::DropUnsynced);
        assert_eq!(lost.read_file("f").expect("f"), b"synced");
        assert!(lost.read_file("g").is_none(), "its entry was never synced");
        // Syncs made by the new process make the old writes durable.
        k.open("f").expect("open").sync_data().expect("sync");
        k.sync_dir().expect("sync dir");
        let kept = k.crash(CrashPolicy::DropUnsynced);
        assert_eq!(kept.read_file("f").expect("f"), b"NEWced");
        assert!(kept.read_file("g").is_some());
        // The original is unchanged by the copy.
        assert_eq!(
            s.crash(CrashPolicy::DropUnsynced)
                .read_file("f")
                .expect("f"),
            b"synced"
        );
    }

    #[test]
    fn directory_entries_need_sync_dir() {
        let s = MemoryStorage::new();
        let f = s.create("f", 3).expect("create");
        f.write_at(0, b"abc").expect("write");
        f.sync_data().expect("sync");
        for policy in [
            CrashPolicy::DropUnsynced,
            CrashPolicy::PowerLoss {
                seed: 1,
                torn: true,
            },
        ] {
            assert!(s.crash(policy).file_names().is_empty(), "{policy:?}");
        }
        s.sync_dir().expect("sync dir");
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.read_file("f").expect("f"), b"abc");
    }

    #[test]
    fn created_file_is_durable_zeros_once_its_entry_is() {
        let s = MemoryStorage::new();
        drop(s.create("f", 5).expect("create"));
        s.sync_dir().expect("sync dir");
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.read_file("f").expect("f"), [0; 5]);
    }

    #[test]
    fn rename_and_remove_are_durable_only_after_sync_dir() {
        let s = MemoryStorage::new();
        drop(s.create("tmp", 1).expect("create"));
        drop(s.create("old", 1).expect("create"));
        s.sync_dir().expect("sync dir");
        s.rename("tmp", "new").expect("rename");
        s.remove("old").expect("remove");
        assert_eq!(s.file_names(), ["new"]);
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.file_names(), ["old", "tmp"]);
        s.sync_dir().expect("sync dir");
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.file_names(), ["new"]);
    }

    #[test]
    fn rename_replaces_target() {
        let s = MemoryStorage::new();
        s.create("a", 0)
            .expect("create")
            .write_at(0, b"A")
            .expect("write");
        s.create("b", 0)
            .expect("create")
            .write_at(0, b"B")
            .expect("write");
        s.rename("a", "b").expect("rename");
        assert_eq!(s.file_names(), ["b"]);
        assert_eq!(s.read_file("b").expect("b"), b"A");
    }

    #[test]
    fn calls_are_counted_per_class() {
        let s = MemoryStorage::new();
        let f = s.create("f", 1).expect("create"); // write 0
        f.write_at(0, b"x").expect("write"); // write 1
        f.sync_data().expect("sync"); // sync 0
        s.sync_dir().expect("sync dir"); // sync 1
        let mut buf = [0u8; 1];
        f.read_at(0, &mut buf).expect("read");
        f.len().expect("len");
        s.list().expect("list");
        assert!(s.open("missing").is_err(), "failed calls count too");
        assert_eq!(s.calls(), 8);
        assert_eq!(s.calls_matching(FaultOps::Write), 2);
        assert_eq!(s.calls_matching(FaultOps::Sync), 2);
    }

    #[test]
    fn eio_fails_exactly_the_chosen_call() {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        s.set_fault(fault(s.calls() + 1, FaultKind::Eio, false, FaultOps::Any));
        f.write_at(0, b"one").expect("call before");
        let err = f.write_at(3, b"two").expect_err("faulted");
        assert_eq!(raw_os(&err), Some(libc::EIO));
        f.write_at(3, b"three").expect("call after");
        assert_eq!(s.read_file("f").expect("f"), b"onethree");
    }

    #[test]
    fn forever_fails_every_matching_call_from_then_on() {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        s.set_fault(fault(1, FaultKind::Enospc, true, FaultOps::Write));
        for i in 0..3 {
            let err = f.write_at(i, b"x").expect_err("faulted");
            assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        }
        let err = f.set_len(10).expect_err("set_len is a write");
        assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        let err = s.create("g", 1).expect_err("create is a write");
        assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        f.sync_data().expect("syncs are not matched");
        s.list().expect("others are not matched");
        assert_eq!(s.read_file("f").expect("f"), b"");
        assert_eq!(s.file_names(), ["f"]);
        s.set_fault(None);
        f.write_at(0, b"ok").expect("cleared");
    }

    #[test]
    fn sync_fault_counts_only_syncs() {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        s.set_fault(fault(1, FaultKind::Eio, false, FaultOps::Sync));
        s.sync_dir().expect("sync 0");
        f.write_at(0, b"abc").expect("writes are not matched");
        let err = f.sync_data().expect_err("sync 1");
        assert_eq!(raw_os(&err), Some(libc::EIO));
        f.sync_data().expect("sync 2");
    }

    #[test]
    fn failed_sync_makes_nothing_durable() {
        let s = synced_then_written();
        s.set_fault(fault(
            s.calls_matching(FaultOps::Sync),
            FaultKind::Eio,
            false,
            FaultOps::Sync,
        ));
        let f = s.open("f").expect("open");
        assert!(f.sync_data().is_err());
        assert_eq!(
            s.crash(CrashPolicy::DropUnsynced)
                .read_file("f")
                .expect("f"),
            b"synced"
        );
        s.remove("f").expect("remove");
        s.set_fault(fault(
            s.calls_matching(FaultOps::Sync),
            FaultKind::Eio,
            false,
            FaultOps::Sync,
        ));
        assert!(s.sync_dir().is_err());
        assert_eq!(s.crash(CrashPolicy::DropUnsynced).file_names(), ["f"]);
        f.sync_data().expect("retry");
        s.sync_dir().expect("retry");
        assert!(s.crash(CrashPolicy::DropUnsynced).file_names().is_empty());
    }

    #[test]
    fn short_write_applies_half_then_fails() {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        s.set_fault(fault(0, FaultKind::ShortWrite, true, FaultOps::Any));
        let err = f.write_at(0, b"abcdef").expect_err("short");
        assert_eq!(raw_os(&err), Some(libc::EIO));
        s.set_fault(None);
        assert_eq!(s.read_file("f").expect("f"), b"abc");
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.read_file("f"), None, "never synced");
    }

    #[test]
    fn short_write_on_other_calls_is_plain_eio() {
        let s = MemoryStorage::new();
        let f = s.create("f", 0).expect("create");
        s.set_fault(fault(0, FaultKind::ShortWrite, true, FaultOps::Any));
        assert_eq!(raw_os(&f.set_len(8).expect_err("set_len")), Some(libc::EIO));
        assert_eq!(
            raw_os(&s.sync_dir().expect_err("sync_dir")),
            Some(libc::EIO)
        );
        let mut buf = [0u8; 0];
        assert_eq!(
            raw_os(&f.read_at(0, &mut buf).expect_err("read")),
            Some(libc::EIO)
        );
        assert_eq!(
            raw_os(&s.create("g", 1).expect_err("create")),
            Some(libc::EIO)
        );
        s.set_fault(None);
        assert_eq!(s.file_names(), ["f"]);
        assert_eq!(f.len().expect("len"), 0);
    }

    #[test]
    fn capacity_limits_create_write_and_set_len() {
        let s = MemoryStorage::new();
        s.set_capacity(Some(10));
        let f = s.create("f", 6).expect("create");
        let err = s.create("g", 5).expect_err("too big");
        assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        assert_eq!(s.file_names(), ["f"]);
        let err = f.write_at(4, b"abcdefg").expect_err("grows to 11");
        assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        assert_eq!(
            s.read_file("f").expect("f"),
            [0; 6],
            "failed write changed nothing"
        );
        f.write_at(4, b"abcd").expect("grows to 8");
        assert_eq!(s.used_bytes(), 8);
        let err = f.write_at(8, b"xyz").expect_err("11 > 10");
        assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        let err = f.set_len(11).expect_err("11 > 10");
        assert_eq!(raw_os(&err), Some(libc::ENOSPC));
        f.set_len(10).expect("exactly full");
        f.write_at(0, b"rewrite ok").expect("no growth");
        f.set_len(2).expect("shrinking always fits");
        assert_eq!(s.used_bytes(), 2);
        s.remove("f").expect("remove");
        assert_eq!(s.used_bytes(), 0);
        f.write_at(0, &[1; 64])
            .expect("a removed file is not counted");
        s.set_capacity(None);
        drop(s.create("g", 100).expect("unlimited"));
    }

    #[test]
    fn raw_helpers_corrupt_current_and_durable() {
        let s = MemoryStorage::new();
        let f = s.create("f", 4).expect("create");
        s.sync_dir().expect("sync dir");
        s.write_file_raw("f", 1, b"XY").expect("corrupt");
        assert_eq!(s.read_file("f").expect("f"), b"\0XY\0");
        s.set_file_len_raw("f", 2).expect("truncate");
        assert_eq!(read(&*f), b"\0X");
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.read_file("f").expect("f"), b"\0X");
        let err = s.write_file_raw("nope", 0, b"x").expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            s.calls(),
            4,
            "create, sync_dir, len, read_at; raw helpers not counted"
        );
    }

    #[test]
    fn sync_replays_pending_changes_exactly() {
        let s = MemoryStorage::new();
        let f = s.create("f", 8).expect("create");
        s.sync_dir().expect("sync dir");
        f.write_at(6, b"tail").expect("write");
        f.set_len(7).expect("shrink");
        f.write_at(0, b"ab").expect("write");
        f.set_len(9).expect("grow");
        f.sync_data().expect("sync");
        let c = s.crash(CrashPolicy::DropUnsynced);
        assert_eq!(c.read_file("f"), s.read_file("f"));
        assert_eq!(c.read_file("f").expect("f"), b"ab\0\0\0\0t\0\0");
    }

    #[test]
    fn volatile_storage_reads_back_and_loses_everything_at_power_loss() {
        let storage = MemoryStorage::volatile();
        let f = storage.create("f", 4).expect("create");
        f.write_at(2, b"abcd").expect("write");
        f.sync_data().expect("sync");
        storage.sync_dir().expect("sync dir");
        assert_eq!(read(&*f), b"\0\0abcd");
        f.set_len(3).expect("set_len");
        assert_eq!(read(&*f), b"\0\0a");
        let kept = storage.crash(CrashPolicy::ProcessCrash);
        assert_eq!(kept.read_file("f").as_deref(), Some(&b"\0\0a"[..]));
        let lost = storage.crash(CrashPolicy::DropUnsynced);
        assert!(lost.file_names().is_empty());
        // Faults still apply.
        storage.set_fault(fault(storage.calls(), FaultKind::Eio, false, FaultOps::Any));
        assert_eq!(raw_os(&f.write_at(0, b"x").unwrap_err()), Some(libc::EIO));
    }

    #[test]
    fn a_volatile_file_holds_only_what_was_written() {
        let storage = MemoryStorage::volatile();
        let f = storage
            .create("seg", 1 << 30)
            .expect("a GiB of zeros costs nothing");
        assert_eq!(f.len().unwrap(), 1 << 30);
        assert_eq!(storage.used_bytes(), 1 << 30);
        f.write_at(4, b"abc").expect("write");
        let mut buf = [9u8; 10];
        // Across the written bytes and into the zeros past them.
        f.read_at(2, &mut buf).expect("read");
        assert_eq!(&buf, b"\0\0abc\0\0\0\0\0");
        f.read_at((1 << 30) - 4, &mut buf[..4])
            .expect("read the last bytes");
        assert_eq!(&buf[..4], b"\0\0\0\0");
        assert!(
            f.read_at((1 << 30) - 3, &mut buf[..4]).is_err(),
            "past the end"
        );
        {
            let inode = storage.shared.state.lock().current["seg"].clone();
            assert_eq!(
                inode.lock().data.len(),
                7,
                "only up to the write's end is held"
            );
        }
        // Shrinking into the held bytes, growing back with zeros.
        f.set_len(5).expect("shrink");
        f.set_len(8).expect("grow");
        assert_eq!(read(&*f), b"\0\0\0\0a\0\0\0");
        let kept = storage.crash(CrashPolicy::ProcessCrash);
        assert_eq!(
            kept.read_file("seg").as_deref(),
            Some(&b"\0\0\0\0a\0\0\0"[..])
        );
        storage
            .write_file_raw("seg", 9, b"z")
            .expect("raw write past the end");
        assert_eq!(
            storage.read_file("seg").as_deref(),
            Some(&b"\0\0\0\0a\0\0\0\0z"[..])
        );
    }
}
