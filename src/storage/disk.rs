//! Real files under one directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockWriteGuard};

use super::mmap::{self, ReadMap, Zeros};
use super::{LockGuard, Storage, StorageFile};

/// Name of the file whose `flock` is the directory's owner lock. It is never
/// removed: deleting it would let a second owner lock a fresh inode while the
/// first still holds the old one.
const LOCK_FILE: &str = "LOCK";

/// A queue directory on a real file system.
#[derive(Debug)]
pub struct DiskStorage {
    path: PathBuf,
    /// Made by [`DiskStorage::open_read_only`]: files are opened for reading
    /// only and read without maps; every change and the lock are refused.
    read_only: bool,
    /// This storage made the directory and its entry in the parent is not
    /// yet known durable: the first [`Storage::sync_dir`] syncs the parent
    /// too, or a power loss could take the whole directory, and every file
    /// synced in it, away.
    parent_unsynced: AtomicBool,
}

impl DiskStorage {
    /// Use the directory at `path`, creating it (one level only) if missing.
    ///
    /// Fails with `NotFound` naming the parent when the parent directory does
    /// not exist (nothing is created), and with `NotADirectory` when `path`
    /// exists but is not a directory.
    pub fn open(path: &Path) -> io::Result<DiskStorage> {
        let made = ensure_dir(path)?;
        Ok(DiskStorage {
            path: path.to_path_buf(),
            read_only: false,
            parent_unsynced: AtomicBool::new(made),
        })
    }

    /// Use the existing directory at `path` for reading only, as an
    /// inspector of a queue that another process may have open does.
    ///
    /// Nothing is created, written, removed or locked: [`Storage::lock`],
    /// `create`, `rename`, `remove`, `sync_dir` and every file's `write_at`,
    /// `set_len` and `sync_data` fail with `PermissionDenied`. Files are
    /// opened read-only and read with plain positional reads, never mapped,
    /// so another process writing (or removing) them cannot fault a reader;
    /// what is read may be a moment old or, at the very end of a file being
    /// appended to, half written.
    ///
    /// Fails with `NotFound` when `path` does not exist and with
    /// `NotADirectory` when it is not a directory.
    pub fn open_read_only(path: &Path) -> io::Result<DiskStorage> {
        require_dir(path, &fs::metadata(path)?)?;
        Ok(DiskStorage {
            path: path.to_path_buf(),
            read_only: true,
            parent_unsynced: AtomicBool::new(false),
        })
    }

    /// Make the directory's entry in its parent durable, if
    /// [`DiskStorage::open`] created the directory and no sync has done
    /// it yet ([`Storage::sync_dir`] does it too). A directory that holds
    /// only other directories (as a service's holds its queues') needs
    /// this once they are made.
    pub fn sync_entry(&self) -> io::Result<()> {
        if !self.parent_unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        File::open(parent_dir(&self.path))
            .and_then(|d| d.sync_all())
            .inspect_err(|_| {
                self.parent_unsynced.store(true, Ordering::Release);
            })
    }

    /// Whether this storage was opened with [`DiskStorage::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The processes holding the directory's owner lock, without taking it
    /// (taking it, even briefly, could make the owner's open fail).
    ///
    /// On Linux this reads `/proc/locks` and matches the `LOCK` file's device
    /// and inode; the pids are as listed there (an empty list: nobody holds
    /// it, or there is no `LOCK` file). Elsewhere, and when `/proc/locks`
    /// cannot be read, it fails with `Unsupported`.
    pub fn lock_holders(&self) -> io::Result<Vec<i64>> {
        let meta = match fs::metadata(self.path.join(LOCK_FILE)) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        lock_holders_of(&meta)
    }

    fn refuse(&self) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        Ok(())
    }

    /// The directory this storage works in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create `name` preallocated to `len` bytes, its zeros written as
    /// `zeros` says; with `sync`, its contents and size durable too.
    fn create_file(
        &self,
        name: &str,
        len: u64,
        zeros: Zeros,
        sync: bool,
    ) -> io::Result<Arc<dyn StorageFile>> {
        self.refuse()?;
        let path = self.file_path(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = mmap::preallocate(&file, len, zeros).and_then(|()| match sync {
            true => file.sync_all(),
            false => Ok(()),
        });
        if let Err(err) = made {
            // Best effort: the caller needs the original error, and a leftover
            // file is only wasted space that a retry will report as existing.
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        Ok(Arc::new(DiskFile::new(file)))
    }

    fn file_path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.path.join(name))
    }
}

fn read_only_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "queue directory opened read-only",
    )
}

#[cfg(target_os = "linux")]
fn lock_holders_of(meta: &fs::Metadata) -> io::Result<Vec<i64>> {
    use std::os::unix::fs::MetadataExt;
    let locks = fs::read_to_string("/proc/locks")
        .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
    // glibc's encoding of a dev_t into major and minor numbers.
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Ok(parse_proc_locks(&locks, major, minor, meta.ino()))
}

#[cfg(not(target_os = "linux"))]
fn lock_holders_of(_meta: &fs::Metadata) -> io::Result<Vec<i64>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "lock holders can only be listed on Linux",
    ))
}

/// The pids of granted locks on the file `major:minor:inode` in the text of
/// `/proc/locks` ("1: FLOCK  ADVISORY  WRITE 1234 fe:00:24694 0 EOF"; lines
/// with "->" are waiters, not holders).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_locks(text: &str, major: u64, minor: u64, inode: u64) -> Vec<i64> {
    let mut pids = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            continue;
        }
        let Some(at) = fields.iter().position(|f| f.matches(':').count() == 2) else {
            continue;
        };
        let mut parts = fields[at].split(':');
        let (Some(ma), Some(mi), Some(ino)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let same = u64::from_str_radix(ma, 16).ok() == Some(major)
            && u64::from_str_radix(mi, 16).ok() == Some(minor)
            && ino.parse::<u64>().ok() == Some(inode);
        if same {
            if let Some(pid) = at.checked_sub(1).and_then(|i| fields[i].parse().ok()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The directory holding `path` (`.` for a bare relative name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Make sure `path` is a directory, creating it if it does not exist;
/// returns whether this call created it.
fn ensure_dir(path: &Path) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => return require_dir(path, &meta).map(|()| false),
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        Err(_) => {}
    }
    match fs::create_dir(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(missing_parent(path)),
        // Someone created it between the two calls: judge what is there now.
        // (Its entry may not be durable yet either: sync the parent.)
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            require_dir(path, &fs::metadata(path)?).map(|()| true)
        }
        Err(err) => Err(err),
        Ok(()) => Ok(true),
    }
}

fn require_dir(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_dir() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{} exists but is not a directory", path.display()),
    ))
}

fn missing_parent(path: &Path) -> io::Error {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "cannot create {}: parent directory {} does not exist",
            path.display(),
            parent.display()
        ),
    )
}

/// Reject names that are not a single plain file name, so a name can never
/// reach outside the directory. Shared with the memory storage so both accept
/// exactly the same names.
pub(super) fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}"),
        ));
    }
    Ok(())
}

/// The locked `LOCK` file. Dropping it unlocks explicitly before closing:
/// a child process forked by another thread while the lock is held shares
/// the open file description until its `exec`, and closing only our
/// descriptor would leave the lock held by that child for the moment.
struct HeldLock(File);

impl Drop for HeldLock {
    fn drop(&mut self) {
        // If unlocking fails, closing still releases the lock once no
        // process refers to the description any more.
        let _ = self.0.unlock();
    }
}

impl Storage for DiskStorage {
    fn lock(&self) -> io::Result<LockGuard> {
        self.refuse()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(LockGuard::new(Box::new(HeldLock(file)))),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another handle", self.path.display()),
            )),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }

    /// Regular files only; the lock file is left out so the names seen are
    /// the same as on a [`super::MemoryStorage`] and nothing above ever
    /// mistakes it for queue data. Names that are not UTF-8 cannot be
    /// addressed through this API and are skipped.
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                if name != LOCK_FILE {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        if self.read_only {
            let file = File::open(self.file_path(name)?)?;
            return Ok(Arc::new(DiskFile::read_only(file)));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.file_path(name)?)?;
        Ok(Arc::new(DiskFile::new(file)))
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.create_file(name, len, Zeros::Cached, true)
    }

    fn create_to_overwrite(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        // The caller's `fdatasync` after its write makes the data and the
        // size durable (both are needed to read the data back).
        self.create_file(name, len, Zeros::Cached, false)
    }

    fn create_ahead(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.create_file(name, len, Zeros::WrittenOut, false)
    }

    fn create_ahead_allocated(&self, name: &str, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.create_file(name, len, Zeros::Allocated, false)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.refuse()?;
        fs::rename(self.file_path(from)?, self.file_path(to)?)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.refuse()?;
        fs::remove_file(self.file_path(name)?)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.refuse()?;
        File::open(&self.path)?.sync_all()?;
        // After the directory's own sync, which on a journaling file system
        // has most often committed the parent's change already (so this
        // one is cheap).
        self.sync_entry()
    }
}

/// One open file. Reads are served from a read-only map made on first use;
/// writes go through `pwrite`, which the map sees at once (same page cache).
#[derive(Debug)]
struct DiskFile {
    file: File,
    /// Readers copy out under the read lock; `set_len` takes the write lock
    /// and drops the map before truncating, so no read can touch mapped pages
    /// past a new, shorter end.
    map: RwLock<Option<ReadMap>>,
    /// Opened read-only (see [`DiskStorage::open_read_only`]): never mapped,
    /// never written.
    read_only: bool,
}

impl DiskFile {
    fn new(file: File) -> DiskFile {
        DiskFile {
            file,
            map: RwLock::new(None),
            read_only: false,
        }
    }

    fn read_only(file: File) -> DiskFile {
        DiskFile {
            file,
            map: RwLock::new(None),
            read_only: true,
        }
    }

    /// Fill `buf` from `offset` out of the current map if it covers the range.
    fn read_mapped(&self, offset: u64, buf: &mut [u8]) -> bool {
        self.map
            .read()
            .as_ref()
            .is_some_and(|map| copy_from(map, offset, buf))
    }

    /// The range is not in the map: check it against the file's length,
    /// (re)map if the file has grown, and read.
    fn read_remapped(&self, offset: u64, end: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut slot = self.map.write();
        let len = self.file.metadata()?.len();
        if end > len {
            return Err(past_end(offset, buf.len(), len));
        }
        let stale = slot
            .as_ref()
            .is_none_or(|map| (map.bytes().len() as u64) < len);
        if stale && len > 0 {
            *slot = Some(mmap::map_read(&self.file)?);
        }
        let slot = RwLockWriteGuard::downgrade(slot);
        match slot.as_ref() {
            Some(map) if copy_from(map, offset, buf) => Ok(()),
            _ => self.file.read_exact_at(buf, offset),
        }
    }
}

/// `map[offset..offset + len]`, if the map covers it.
fn mapped(map: &ReadMap, offset: u64, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    map.bytes().get(start..start.checked_add(len)?)
}

/// Copy `map[offset..offset + buf.len()]` into `buf`; false if the map does
/// not cover it.
fn copy_from(map: &ReadMap, offset: u64, buf: &mut [u8]) -> bool {
    match mapped(map, offset, buf.len()) {
        Some(src) => {
            buf.copy_from_slice(src);
            true
        }
        None => false,
    }
}

fn past_end(offset: u64, want: usize, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {want} bytes at offset {offset} is past the end of a {len}-byte file"),
    )
}

impl StorageFile for DiskFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| past_end(offset, buf.len(), u64::MAX))?;
        if self.read_only {
            // Another process may own and write this file: no maps.
            return self.file.read_exact_at(buf, offset).map_err(|e| {
                match (e.kind(), self.file.metadata()) {
                    (io::ErrorKind::UnexpectedEof, Ok(m)) => past_end(offset, buf.len(), m.len()),
                    _ => e,
                }
            });
        }
        if self.read_mapped(offset, buf) {
            return Ok(());
        }
        self.read_remapped(offset, end, buf)
    }

    fn read_vec_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if !self.read_only {
            let slot = self.map.read();
            if let Some(src) = slot.as_ref().and_then(|map| mapped(map, offset, len)) {
                return Ok(src.to_vec());
            }
        }
        super::read_zeroed(self, offset, len)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        self.file.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        self.file.sync_data()
    }

    fn read_whole(&self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        if self.read_only {
            // Another process may be writing: copy, never map.
            let bytes = super::read_all(self)?;
            f(&bytes);
            return Ok(());
        }
        let len = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
        if len == 0 {
            f(&[]);
            return Ok(());
        }
        {
            let slot = self.map.read();
            if let Some(bytes) = slot.as_ref().and_then(|m| m.bytes().get(..len)) {
                f(bytes);
                return Ok(());
            }
        }
        let mut slot = self.map.write();
        *slot = Some(mmap::map_read(&self.file)?);
        let slot = RwLockWriteGuard::downgrade(slot);
        if let Some(bytes) = slot.as_ref().and_then(|m| m.bytes().get(..len)) {
            f(bytes);
            return Ok(());
        }
        // Shrunk from outside between the two looks: read what is there.
        drop(slot);
        let bytes = super::read_all(self)?;
        f(&bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        let mut slot = self.map.write();
        *slot = None;
        self.file.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn storage() -> (tempfile::TempDir, DiskStorage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = DiskStorage::open(&dir.path().join("q")).expect("open");
        (dir, storage)
    }

    #[test]
    fn a_directory_it_made_has_its_entry_synced_once_and_one_it_found_none() {
        let (dir, made) = storage();
        assert!(made.parent_unsynced.load(Ordering::Acquire));
        made.sync_dir().expect("sync dir and parent");
        assert!(!made.parent_unsynced.load(Ordering::Acquire));
        made.sync_entry().expect("nothing left to sync");
        let found = DiskStorage::open(&dir.path().join("q")).expect("open again");
        assert!(!found.parent_unsynced.load(Ordering::Acquire));
        let service = DiskStorage::open(&dir.path().join("svc")).expect("open");
        service.sync_entry().expect("sync the parent");
        assert!(!service.parent_unsynced.load(Ordering::Acquire));
        assert_eq!(parent_dir(Path::new("q")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/q")), Path::new("/a"));
        assert_eq!(parent_dir(Path::new("a/q")), Path::new("a"));
    }

    fn read(file: &dyn StorageFile, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        file.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    #[test]
    fn round_trip_through_reopen() {
        let (_dir, s) = storage();
        let f = s.create("seg-1", 4096).expect("create");
        f.write_at(100, b"payload").expect("write");
        f.sync_data().expect("sync");
        s.sync_dir().expect("sync dir");
        drop(f);
        let f = s.open("seg-1").expect("open");
        assert_eq!(f.len().expect("len"), 4096);
        assert_eq!(read(&*f, 100, 7).expect("read"), b"payload");
        assert_eq!(read(&*f, 0, 4).expect("read"), [0; 4]);
    }

    #[test]
    fn reads_see_writes_made_after_mapping_and_growth() {
        let (_dir, s) = storage();
        let f = s.create("f", 16).expect("create");
        assert_eq!(read(&*f, 0, 16).expect("read"), [0; 16]);
        f.write_at(0, b"abcd").expect("write");
        assert_eq!(read(&*f, 0, 4).expect("read"), b"abcd");
        f.write_at(16, b"tail").expect("grow");
        assert_eq!(read(&*f, 14, 6).expect("read"), b"\0\0tail");
    }

    #[test]
    fn dropping_the_lock_frees_it_while_a_duplicate_description_lives() {
        // A child forked while the lock is held shares the locked file's
        // description until its exec; a clone of the handle is the same.
        let (_dir, s) = storage();
        let guard_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(s.path().join(LOCK_FILE))
            .expect("lock file");
        guard_file.try_lock().expect("lock");
        let child_copy = guard_file.try_clone().expect("dup");
        assert!(s.lock().is_err(), "held");
        drop(HeldLock(guard_file));
        drop(s.lock().expect("free once the holder dropped, dup or not"));
        drop(child_copy);
    }

    #[test]
    fn whole_file_view_matches_reads_and_sees_growth() {
        let (_dir, s) = storage();
        let f = s.create("f", 64).expect("create");
        f.write_at(3, b"abc").expect("write");
        let seen = crate::storage::with_contents(&*f, |b| b.to_vec()).expect("view");
        assert_eq!(seen, read(&*f, 0, 64).expect("read"));
        f.write_at(64, b"more").expect("grow");
        let seen = crate::storage::with_contents(&*f, |b| b.to_vec()).expect("view");
        assert_eq!(seen.len(), 68);
        assert_eq!(&seen[64..], b"more");
        let empty = s.create("empty", 0).expect("create");
        assert_eq!(
            crate::storage::with_contents(&*empty, <[u8]>::len).expect("view"),
            0
        );
    }

    fn map_len(f: &DiskFile) -> Option<usize> {
        f.map.read().as_ref().map(|map| map.bytes().len())
    }

    #[test]
    fn reads_are_served_from_a_map_that_follows_growth() {
        let (_dir, s) = storage();
        drop(s.create("f", 64).expect("create"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(s.path().join("f"))
            .expect("open");
        let f = DiskFile::new(file);
        assert_eq!(map_len(&f), None, "mapped lazily");
        f.write_at(8, b"mapped").expect("write");
        assert_eq!(read(&f, 8, 6).expect("read"), b"mapped");
        assert_eq!(map_len(&f), Some(64));
        f.write_at(64, b"more").expect("grow");
        assert_eq!(read(&f, 64, 4).expect("read"), b"more");
        assert_eq!(map_len(&f), Some(68), "remapped after growth");
        f.set_len(4).expect("shrink");
        assert_eq!(map_len(&f), None, "shrinking drops the map");
    }

    #[test]
    fn concurrent_reads_and_resizes_never_see_a_stale_map() {
        let (_dir, s) = storage();
        let f = s.create("f", 1 << 16).expect("create");
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut buf = [0u8; 4096];
                for i in 0..2000u64 {
                    match f.read_at((i * 4096) % (1 << 16), &mut buf) {
                        Ok(()) => {}
                        Err(err) => assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof),
                    }
                }
            });
            for i in 0..200 {
                let len = if i % 2 == 0 { 4096 } else { 1 << 16 };
                f.set_len(len).expect("resize");
            }
            reader.join().expect("reader");
        });
    }

    #[test]
    fn read_past_end_is_unexpected_eof() {
        let (_dir, s) = storage();
        let f = s.create("f", 10).expect("create");
        let err = read(&*f, 8, 3).expect_err("past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read(&*f, u64::MAX, 1).expect_err("overflow");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(read(&*f, 10, 0).expect("empty read at end").is_empty());
    }

    #[test]
    fn empty_file_reads() {
        let (_dir, s) = storage();
        let f = s.create("empty", 0).expect("create");
        assert_eq!(f.len().expect("len"), 0);
        assert!(read(&*f, 0, 0).expect("empty").is_empty());
        let err = read(&*f, 0, 1).expect_err("past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn shrinking_drops_the_map() {
        let (_dir, s) = storage();
        let f = s.create("f", 8192).expect("create");
        f.write_at(0, b"keep").expect("write");
        assert_eq!(read(&*f, 0, 4).expect("read"), b"keep");
        f.set_len(2).expect("shrink");
        assert_eq!(f.len().expect("len"), 2);
        let err = read(&*f, 0, 4).expect_err("past new end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read(&*f, 0, 2).expect("read"), b"ke");
        f.set_len(6).expect("extend");
        assert_eq!(read(&*f, 0, 6).expect("read"), b"ke\0\0\0\0");
    }

    #[test]
    fn create_preallocates_and_refuses_existing() {
        let (_dir, s) = storage();
        let len = 1 << 20;
        drop(s.create("f", len).expect("create"));
        let meta = fs::metadata(s.path().join("f")).expect("metadata");
        assert_eq!(meta.len(), len);
        assert!(
            meta.blocks() * 512 >= len,
            "not allocated: {}",
            meta.blocks()
        );
        let err = s.create("f", 10).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::metadata(s.path().join("f")).expect("kept").len(), len);
    }

    #[test]
    fn failed_create_leaves_no_file() {
        let (_dir, s) = storage();
        // Past the largest file size ext4/xfs/tmpfs allow: preallocation fails.
        let err = s.create("huge", 1 << 62).expect_err("too large");
        assert!(err.raw_os_error().is_some(), "{err}");
        assert!(!s.path().join("huge").exists());
        let err = s
            .create_to_overwrite("huge", 1 << 62)
            .expect_err("too large");
        assert!(err.raw_os_error().is_some(), "{err}");
        assert!(!s.path().join("huge").exists());
    }

    #[test]
    fn create_to_overwrite_preallocates_and_refuses_existing() {
        let (_dir, s) = storage();
        type Make = fn(&DiskStorage, &str, u64) -> io::Result<Arc<dyn StorageFile>>;
        let makers: [(&str, Make); 3] = [
            ("to_overwrite", |s, n, l| s.create_to_overwrite(n, l)),
            ("ahead", |s, n, l| s.create_ahead(n, l)),
            ("ahead_allocated", |s, n, l| s.create_ahead_allocated(n, l)),
        ];
        for (name, make) in makers {
            let f = make(&s, name, 4096).expect("create");
            assert_eq!(
                fs::metadata(s.path().join(name)).expect("metadata").len(),
                4096
            );
            f.write_at(0, &[7; 4096]).expect("write");
            f.sync_data().expect("sync");
            assert_eq!(crate::storage::read_all(&*f).expect("read"), vec![7; 4096]);
            let err = make(&s, name, 10).expect_err("exists");
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{name}");
        }
    }

    #[test]
    fn list_rename_remove() {
        let (_dir, s) = storage();
        let _guard = s.lock().expect("lock");
        drop(s.create("a", 1).expect("create"));
        drop(s.create("b", 1).expect("create"));
        fs::create_dir(s.path().join("subdir")).expect("mkdir");
        let mut names = s.list().expect("list");
        names.sort();
        assert_eq!(names, ["a", "b"]);
        s.rename("a", "b").expect("rename");
        assert_eq!(s.list().expect("list"), ["b"]);
        s.remove("b").expect("remove");
        assert!(s.list().expect("list").is_empty());
        assert_eq!(
            s.open("b").expect_err("gone").kind(),
            io::ErrorKind::NotFound
        );
        s.sync_dir().expect("sync dir");
    }

    #[test]
    fn removed_file_stays_readable_through_open_handle() {
        let (_dir, s) = storage();
        let f = s.create("f", 4).expect("create");
        f.write_at(0, b"data").expect("write");
        s.remove("f").expect("remove");
        assert_eq!(read(&*f, 0, 4).expect("read"), b"data");
    }

    #[test]
    fn bad_names_are_rejected() {
        let (_dir, s) = storage();
        for name in ["", ".", "..", "a/b", "../x", "nul\0"] {
            let err = s.create(name, 1).expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn lock_conflicts_between_two_storages_of_one_directory() {
        let (_dir, s) = storage();
        let other = DiskStorage::open(s.path()).expect("open again");
        let guard = s.lock().expect("first lock");
        let err = other.lock().expect_err("second lock");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            s.lock().expect_err("same storage").kind(),
            io::ErrorKind::WouldBlock
        );
        drop(guard);
        let _guard = other.lock().expect("lock after release");
        assert!(s.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn read_only_storage_reads_without_maps_and_refuses_every_change() {
        let (_dir, s) = storage();
        let f = s.create("f", 16).expect("create");
        f.write_at(0, b"data").expect("write");
        let before = fs::read(s.path().join("f")).expect("read");
        let missing = s.path().join("nope");
        assert_eq!(
            DiskStorage::open_read_only(&missing)
                .expect_err("missing")
                .kind(),
            io::ErrorKind::NotFound
        );
        assert!(!missing.exists(), "nothing created");
        let ro = DiskStorage::open_read_only(s.path()).expect("read-only");
        assert!(ro.is_read_only() && !s.is_read_only());
        let g = ro.open("f").expect("open");
        assert_eq!(read(&*g, 0, 4).expect("read"), b"data");
        let err = read(&*g, 14, 4).expect_err("past end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let denied = io::ErrorKind::PermissionDenied;
        assert_eq!(g.write_at(0, b"x").expect_err("write").kind(), denied);
        assert_eq!(g.set_len(1).expect_err("set_len").kind(), denied);
        assert_eq!(g.sync_data().expect_err("sync").kind(), denied);
        assert_eq!(ro.lock().expect_err("lock").kind(), denied);
        assert_eq!(ro.create("g", 1).expect_err("create").kind(), denied);
        assert_eq!(ro.rename("f", "g").expect_err("rename").kind(), denied);
        assert_eq!(ro.remove("f").expect_err("remove").kind(), denied);
        assert_eq!(ro.sync_dir().expect_err("sync dir").kind(), denied);
        assert_eq!(fs::read(s.path().join("f")).expect("read"), before);
        assert!(!s.path().join(LOCK_FILE).exists(), "no lock file made");
        // A written file is seen at once by the read-only handle.
        f.write_at(4, b"more").expect("write");
        assert_eq!(read(&*g, 0, 8).expect("read"), b"datamore");
    }

    #[test]
    fn lock_holders_are_listed_without_taking_the_lock() {
        let (_dir, s) = storage();
        let ro = DiskStorage::open_read_only(s.path()).expect("read-only");
        match ro.lock_holders() {
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::Unsupported),
            Ok(pids) => {
                assert!(pids.is_empty(), "no LOCK file yet: {pids:?}");
                let guard = s.lock().expect("lock");
                let me = i64::from(std::process::id());
                assert_eq!(ro.lock_holders().expect("holders"), vec![me]);
                drop(guard);
                assert!(ro.lock_holders().expect("holders").is_empty());
                // Listing never took the lock: the owner can still lock.
                let _guard = s.lock().expect("lock again");
            }
        }
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 fe:00:246951 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 77 fe:00:246951 0 EOF\n\
                    2: POSIX  ADVISORY  READ 99 08:01:246951 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 5 fe:00:1 0 EOF\n";
        assert_eq!(parse_proc_locks(text, 0xfe, 0, 246951), vec![4242]);
        assert_eq!(parse_proc_locks(text, 8, 1, 246951), vec![99]);
        assert!(parse_proc_locks(text, 8, 1, 2).is_empty());
        assert!(parse_proc_locks("garbage\n: x\n", 0, 0, 0).is_empty());
    }

    #[test]
    fn open_creates_one_level_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("q");
        let err = DiskStorage::open(&path).expect_err("missing parent");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let parent = dir.path().join("missing");
        assert!(
            err.to_string().contains(&parent.display().to_string()),
            "{err}"
        );
        assert!(!parent.exists());
    }

    #[test]
    fn open_rejects_a_regular_file_and_accepts_an_existing_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        fs::write(&file, b"x").expect("write");
        let err = DiskStorage::open(&file).expect_err("not a dir");
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        assert!(err.to_string().contains("not a directory"), "{err}");
        let s = DiskStorage::open(dir.path()).expect("existing dir");
        assert_eq!(s.path(), dir.path());
    }
}
