//! Read-only memory maps, space preallocation and writing a new file's
//! zeros out to the device: the only `unsafe` code in the crate, kept to
//! three small blocks (each a system call or a map, with its `SAFETY`
//! comment).
//!
//! Soundness of the maps rests on rules the rest of the crate keeps: a queue
//! directory is used only while its exclusive owner lock is held, files are
//! preallocated to their full size and only [`super::disk`] truncates them,
//! after dropping its map. Another process modifying or truncating an open
//! queue's files is documented as unsupported.
#![allow(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Size of each zero write (and of each write-out, `Zeros::WrittenOut`).
const ZERO_CHUNK: usize = 1 << 20;

/// A read-only, shared memory map of a whole file.
pub(super) struct ReadMap {
    map: memmap2::Mmap,
}

impl ReadMap {
    /// The mapped bytes: the file's contents as of now, up to its length at
    /// the time it was mapped.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl fmt::Debug for ReadMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadMap")
            .field("len", &self.map.len())
            .finish()
    }
}

/// Map `file` read-only, covering its current length.
pub(super) fn map_read(file: &File) -> io::Result<ReadMap> {
    // SAFETY: `memmap2::Mmap::map` is unsafe because the mapped bytes can
    // change or vanish (SIGBUS) if the file is modified or truncated while
    // mapped. Truncation: this crate shrinks a file only through
    // `DiskFile::set_len`, which drops the map under its write lock first,
    // and while the map is alive the file is at least as long as the map.
    // Modification: writes come only from this crate's `DiskFile::write_at`
    // (the queue holds the directory's exclusive owner lock), land in the
    // same page cache the map shows. The map is copied out of by reads, or
    // lent whole to a closure by `DiskFile::read_whole` under the map's read
    // lock (so no truncation meanwhile); never held as a long-lived
    // reference. The queue does not read bytes it is still writing, and
    // `read_whole` runs only in recovery, which has the directory to itself,
    // so no view races a write to the same range. External modification of
    // an open queue's files is documented as unsupported.
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(ReadMap { map })
}

/// How the zeros of a new file reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zeros {
    /// Left in the page cache for the caller's sync to write.
    Cached,
    /// Written out to the device a chunk at a time as they are written, for
    /// a file made in the background (see `Storage::create_ahead`).
    WrittenOut,
    /// Not written: the space is only allocated (unwritten extents, which
    /// read as zeros), for a file synced rarely (see
    /// `Storage::create_ahead_allocated`). Written as `Cached` where the
    /// file system cannot allocate without writing.
    Allocated,
}

/// Allocate disk space for the first `len` bytes of a new, empty `file` and
/// write zeros over them (but for `Zeros::Allocated`, where the file system
/// can allocate without writing).
///
/// A full disk is reported here as an error with raw os error `ENOSPC`.
pub(super) fn preallocate(file: &File, len: u64, zeros: Zeros) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, len) {
        Err(err) if needs_fallback(&err) => {
            let zeros = match zeros {
                Zeros::Allocated => Zeros::Cached,
                z => z,
            };
            zero_fill(file, file.metadata()?.len(), len, zeros)
        }
        Ok(()) if zeros == Zeros::Allocated => Ok(()),
        // fallocate leaves "unwritten" extents: every later fdatasync into
        // them must also commit the extent conversion (a metadata update).
        // Writing the zeros now, off the write path, leaves those syncs only
        // the data to flush.
        Ok(()) => zero_fill(file, 0, len, zeros),
        Err(err) => Err(err),
    }
}

/// True when the fast path is unavailable here rather than failing.
fn needs_fallback(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported
        || matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL))
}

#[cfg(target_os = "linux")]
fn fallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;

    // A length beyond `off_t` cannot be passed; report it like the kernel
    // would so the portable path gets to try (and fail) with the real size.
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the descriptor is borrowed from `file`, so it stays open for
    // the whole call; `posix_fallocate` takes only integers and touches no
    // memory of ours.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    // posix_fallocate returns the error number instead of setting errno.
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(not(target_os = "linux"))]
fn fallocate(_file: &File, _len: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Write real zero blocks over `from..len`, so the space is allocated and
/// written now rather than left as a hole or an unwritten extent.
fn zero_fill(file: &File, from: u64, len: u64, zeros: Zeros) -> io::Result<()> {
    let chunk = vec![0u8; ZERO_CHUNK];
    let mut pos = from;
    while pos < len {
        let step = usize::try_from(len - pos).map_or(ZERO_CHUNK, |rest| rest.min(ZERO_CHUNK));
        file.write_all_at(&chunk[..step], pos)?;
        if zeros == Zeros::WrittenOut {
            write_out(file, pos, step as u64)?;
        }
        pos += step as u64;
    }
    Ok(())
}

/// Write `offset..offset + len` of `file` to the device and wait for it
/// (`sync_file_range`: no cache flush, no metadata; the file's sync still
/// makes it durable). Zeros written out a chunk at a time keep at most one
/// chunk of them queued at the device ahead of another file's sync; left
/// in the cache, a whole segment's worth would go out at once when the
/// file is synced, and every sync of the writer meanwhile would wait for
/// it.
#[cfg(target_os = "linux")]
fn write_out(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;

    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        // Past what the call can name: the file's sync writes it.
        return Ok(());
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: the descriptor is borrowed from `file`, so it stays open for
    // the whole call; `sync_file_range` takes only integers and touches no
    // memory of ours.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Not a regular file, or a file system without it: nothing to
        // hurry, the file's sync writes what there is.
        Some(libc::ESPIPE | libc::EINVAL | libc::EOPNOTSUPP) => Ok(()),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn write_out(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .expect("create");
        (dir, file)
    }

    #[test]
    fn preallocate_sets_length_and_allocates_blocks() {
        let (_dir, file) = temp_file();
        preallocate(&file, 3 << 20, Zeros::Cached).expect("preallocate");
        let meta = file.metadata().expect("metadata");
        assert_eq!(meta.len(), 3 << 20);
        assert!(meta.blocks() * 512 >= 3 << 20, "blocks: {}", meta.blocks());
    }

    #[test]
    fn preallocate_zero_is_a_no_op() {
        let (_dir, file) = temp_file();
        preallocate(&file, 0, Zeros::Cached).expect("preallocate");
        assert_eq!(file.metadata().expect("metadata").len(), 0);
    }

    #[test]
    fn zero_fill_keeps_existing_bytes_and_writes_zeros() {
        let (_dir, file) = temp_file();
        file.write_all_at(b"abc", 0).expect("write");
        let len = ZERO_CHUNK as u64 + 100;
        zero_fill(&file, 3, len, Zeros::Cached).expect("zero fill");
        let meta = file.metadata().expect("metadata");
        assert_eq!(meta.len(), len);
        assert!(meta.blocks() * 512 >= len);
        let mut head = [0u8; 5];
        file.read_exact_at(&mut head, 0).expect("read");
        assert_eq!(&head, b"abc\0\0");
    }

    #[test]
    fn zero_fill_reports_a_full_device_as_enospc() {
        // /dev/full accepts positioned writes and fails every one with ENOSPC.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        for zeros in [Zeros::Cached, Zeros::WrittenOut] {
            let err = zero_fill(&full, 0, 10, zeros).expect_err("device is full");
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        }
    }

    /// A file of two chunks and a page preallocated as `zeros` says,
    /// checked to have its length, its space allocated (not a hole: a full
    /// disk shows at creation, not at a write) and to read as zeros.
    fn preallocated(zeros: Zeros) -> (tempfile::TempDir, File, u64) {
        let (dir, file) = temp_file();
        let len = 2 * ZERO_CHUNK as u64 + 4096;
        preallocate(&file, len, zeros).expect("preallocate");
        let meta = file.metadata().expect("metadata");
        assert_eq!(meta.len(), len);
        assert!(meta.blocks() * 512 >= len, "blocks: {}", meta.blocks());
        let mut back = vec![1u8; len as usize];
        file.read_exact_at(&mut back, 0).expect("read");
        assert!(back.iter().all(|&b| b == 0));
        (dir, file, len)
    }

    #[test]
    fn zeros_written_out_read_back_as_zeros_with_space_allocated() {
        let (_dir, file, len) = preallocated(Zeros::WrittenOut);
        // Written out: nothing of it is left dirty for the file's sync.
        write_out(&file, 0, len).expect("a second write-out finds nothing to do");
    }

    #[test]
    fn allocated_reads_back_as_zeros_with_space_allocated() {
        // Allocated by fallocate or, where it is unsupported, by zeros.
        let (_dir, file, _) = preallocated(Zeros::Allocated);
        file.write_all_at(b"data", 4096).expect("write");
        file.sync_data().expect("sync");
        let mut four = [0u8; 4];
        file.read_exact_at(&mut four, 4096).expect("read");
        assert_eq!(&four, b"data");
    }

    #[test]
    fn fallback_is_chosen_only_for_unsupported() {
        assert!(needs_fallback(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
        assert!(needs_fallback(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(needs_fallback(&io::ErrorKind::Unsupported.into()));
        assert!(!needs_fallback(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!needs_fallback(&io::Error::from_raw_os_error(libc::EIO)));
    }

    #[test]
    fn map_shows_file_bytes_and_later_writes() {
        let (_dir, file) = temp_file();
        file.write_all_at(b"hello world", 0).expect("write");
        let map = map_read(&file).expect("map");
        assert_eq!(map.bytes(), b"hello world");
        file.write_all_at(b"HELLO", 0).expect("write");
        assert_eq!(map.bytes(), b"HELLO world");
    }
}
