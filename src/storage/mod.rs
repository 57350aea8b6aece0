//! The storage seam: the only code in the crate that touches files.
//!
//! Everything above this module sees a queue directory as a flat set of named
//! files, each with positional reads and writes. Two implementations exist:
//!
//! - [`DiskStorage`]: real files under one directory, with `fdatasync`,
//!   directory `fsync`, `posix_fallocate` preallocation and read-only memory
//!   maps for the read path (the maps and the one foreign call live in
//!   `mmap.rs`, the only module allowed to use `unsafe`).
//! - [`MemoryStorage`]: files in RAM that keep the bytes *written* apart from
//!   the bytes *synced*, and directory entries created apart from entries made
//!   durable by a directory sync. [`MemoryStorage::crash`] builds the image a
//!   power loss would leave, and a fault plan fails chosen calls, so crash and
//!   I/O-error tests need no real disk.
//!
//! Invariants every implementation keeps:
//!
//! A. A write reported `Ok` is visible to every later read through any handle
//!    to the same file (a process crash loses nothing that was written).
//! B. `sync_data` returning `Ok` means every write issued before it survives
//!    power loss. Nothing else is promised to survive.
//! C. A file created, renamed or removed survives power loss only after a
//!    later `sync_dir` returns `Ok`.
//! D. `create` preallocates the whole length, so a full disk is reported at
//!    creation and never later as a failed write into a hole or a `SIGBUS`.

use std::fmt;
use std::io;
use std::sync::Arc;

mod disk;
mod memory;
mod mmap;

pub use disk::DiskStorage;
pub use memory::{CrashPolicy, Fault, FaultKind, FaultOps, MemoryStorage, SplitMix64};

/// A directory of named files: the whole file-system surface of a queue.
///
/// Names are plain file names (no separators). Every method reports failures
/// as `io::Error`; the queue maps them to [`crate::Error`].
pub trait Storage: Send + Sync + fmt::Debug {
    /// Take the exclusive, non-blocking owner lock of the directory.
    ///
    /// Fails with `io::ErrorKind::WouldBlock` when another handle, in this
    /// process or another, holds it. The lock is released when the returned
    /// guard is dropped.
    fn lock(&self) -> io::Result<LockGuard>;

    /// The names of all files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Open an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;

    /// Create a new file of exactly `len` zero bytes with its space allocated,
    /// and make its contents and size durable (not its directory entry: see
    /// [`Storage::sync_dir`]). Fails with `AlreadyExists` if the name exists.
    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>>;

    /// As [`Storage::create`], for a file the caller writes and then syncs
    /// with [`StorageFile::sync_data`] before it relies on it (a temporary
    /// file renamed into place once synced, a segment whose header is
    /// written and synced before its directory entry): its contents and
    /// size need be durable only after that sync, which then also covers
    /// its size, so an implementation may skip a sync of its own here. A
    /// full disk is still reported here.
    fn create_to_overwrite(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.create(name, len)
    }

    /// As [`Storage::create_to_overwrite`], for a file made by a
    /// background thread ahead of need while the queue's writer syncs its
    /// own files: an implementation may spread the file's writing out (on
    /// disk, its zeros go to the device a MiB at a time as they are
    /// written, so the writer's syncs never wait behind a whole file of
    /// them), at the cost of making the file itself slower.
    fn create_ahead(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.create_to_overwrite(name, len)
    }

    /// As [`Storage::create_ahead`], for a file whose writes are synced
    /// rarely (a queue under `Durability::None`): an implementation may
    /// only allocate the space, without writing zeros over it, as long as
    /// the unwritten part reads as zeros (on disk, `fallocate`'s unwritten
    /// extents), so the file's bytes are written once, by its data, not
    /// twice. Each later sync into such a file also commits the conversion
    /// of the extents it wrote, which rare syncs can afford. A full disk is
    /// still reported here.
    fn create_ahead_allocated(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.create_ahead(name, len)
    }

    /// Atomically rename `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Remove a file. Handles already open stay readable.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Make every create, rename and remove issued so far durable (and,
    /// for a directory this storage created, its entry in its parent).
    fn sync_dir(&self) -> io::Result<()>;
}

/// One open file, read and written at explicit offsets.
///
/// Handles are shared (`Arc`) between writers and readers; implementations
/// are internally synchronised.
#[expect(clippy::len_without_is_empty, reason = "files are never empty-checked")]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Fill `buf` from `offset`; reading past the end is `UnexpectedEof`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Read `len` bytes from `offset` into a new vector, as
    /// [`StorageFile::read_at`] does. Implementations that map files copy
    /// straight out of the map: the provided version zeroes a buffer first,
    /// a second pass over every payload on the dequeue path.
    fn read_vec_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        read_zeroed(self, offset, len)
    }

    /// Write all of `data` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Make every write issued before this call durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Truncate or extend (with zeros) to `len`, durable once `sync_data`
    /// returns.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Call `f` once with the whole file, `[0, len)`.
    ///
    /// Implementations that map files hand `f` a view of the mapped pages
    /// (no copy: recovery reads checkpoints of hundreds of megabytes); the
    /// provided version copies through [`StorageFile::len`] and
    /// [`StorageFile::read_at`]. No write to this file may run while `f`
    /// does: only recovery, which has the directory to itself, calls it.
    fn read_whole(&self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let bytes = read_all(self)?;
        f(&bytes);
        Ok(())
    }
}

/// Proof of holding a directory's owner lock; dropping it releases the lock.
pub struct LockGuard {
    _inner: Box<dyn Send + Sync>,
}

impl LockGuard {
    /// Wrap whatever keeps the lock held (an open locked file, a flag guard).
    pub fn new(inner: Box<dyn Send + Sync>) -> Self {
        LockGuard { _inner: inner }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Read a whole file into memory.
pub(crate) fn read_all<F: StorageFile + ?Sized>(file: &F) -> io::Result<Vec<u8>> {
    let len = file.len()?;
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read"))?;
    read_zeroed(file, 0, len)
}

/// `len` bytes from `offset` through [`StorageFile::read_at`] into a
/// zeroed vector (what [`StorageFile::read_vec_at`] does by default).
pub(crate) fn read_zeroed<F: StorageFile + ?Sized>(
    file: &F,
    offset: u64,
    len: usize,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Run `f` over the whole file (a view where the storage maps files, see
/// [`StorageFile::read_whole`]) and return what it returns.
pub(crate) fn with_contents<R>(
    file: &dyn StorageFile,
    f: impl FnOnce(&[u8]) -> R,
) -> io::Result<R> {
    let mut f = Some(f);
    let mut out = None;
    file.read_whole(&mut |bytes| {
        if let Some(f) = f.take() {
            out = Some(f(bytes));
        }
    })?;
    out.ok_or_else(|| io::Error::other("read_whole did not call back"))
}
