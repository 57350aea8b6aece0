//! The files of a [`Place`]: process-crash images, raw file access and
//! tampering, frame walkers, and what the crash, tamper and replay tests
//! compare (snapshots, drains, non-zero payloads).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use lanelog::codec::{batch, entry, header, record};
use lanelog::storage::CrashPolicy;
use lanelog::{Delivery, Queue};

use super::Place;

/// Name of the directory's lock file on disk (not queue data).
pub const LOCK_FILE: &str = "LOCK";

/// The image a process crash leaves now, as a new place; the original keeps
/// running. In memory: `crash(ProcessCrash)`. On disk: a copy of every file
/// as the page cache shows it, which is exactly what a killed process leaves.
pub fn crash_image(place: &Place) -> Place {
    match place {
        Place::Memory(m) => Place::Memory(m.crash(CrashPolicy::ProcessCrash)),
        Place::Disk(d) => {
            let to = tempfile::tempdir().expect("temp dir");
            for entry in fs::read_dir(d.path()).expect("read dir") {
                let entry = entry.expect("dir entry");
                if entry.file_type().expect("file type").is_file() && entry.file_name() != LOCK_FILE
                {
                    fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
                }
            }
            Place::Disk(to)
        }
    }
}

/// Queue file names (the lock file left out), sorted.
pub fn file_names(place: &Place) -> Vec<String> {
    match place {
        Place::Memory(m) => m.file_names(),
        Place::Disk(d) => {
            let mut names: Vec<String> = fs::read_dir(d.path())
                .expect("read dir")
                .map(|e| e.expect("dir entry"))
                .filter(|e| e.file_type().expect("file type").is_file())
                .map(|e| e.file_name().into_string().expect("utf-8 name"))
                .filter(|n| n != LOCK_FILE)
                .collect();
            names.sort();
            names
        }
    }
}

/// The current bytes of one file.
pub fn read_file(place: &Place, name: &str) -> Vec<u8> {
    match place {
        Place::Memory(m) => m.read_file(name).expect("file exists"),
        Place::Disk(d) => fs::read(d.path().join(name)).expect("read file"),
    }
}

/// Every queue file and its bytes.
pub fn snapshot(place: &Place) -> BTreeMap<String, Vec<u8>> {
    file_names(place)
        .into_iter()
        .map(|n| {
            let b = read_file(place, &n);
            (n, b)
        })
        .collect()
}

/// Total bytes of all queue files.
pub fn used_bytes(place: &Place) -> u64 {
    file_names(place)
        .iter()
        .map(|n| match place {
            Place::Memory(m) => m.read_file(n).map_or(0, |b| b.len() as u64),
            Place::Disk(d) => fs::metadata(d.path().join(n)).map_or(0, |m| m.len()),
        })
        .sum()
}

/// Overwrite bytes of a file in place, as damage would: `write_file_raw` in
/// memory, `std::fs` with seek and write on disk.
pub fn tamper(place: &Place, name: &str, offset: u64, bytes: &[u8]) {
    match place {
        Place::Memory(m) => m.write_file_raw(name, offset, bytes).expect("raw write"),
        Place::Disk(d) => {
            let mut f = OpenOptions::new()
                .write(true)
                .open(d.path().join(name))
                .expect("open for tamper");
            f.seek(SeekFrom::Start(offset)).expect("seek");
            f.write_all(bytes).expect("write");
            f.sync_all().expect("sync");
        }
    }
}

/// Flip the bits of `mask` in one byte of a file.
pub fn flip(place: &Place, name: &str, offset: usize, mask: u8) {
    let b = read_file(place, name)[offset];
    tamper(place, name, offset as u64, &[b ^ mask]);
}

/// Names of files with this prefix, sorted (ids are zero-padded, so the
/// last is the newest).
pub fn names_with_prefix(place: &Place, prefix: &str) -> Vec<String> {
    file_names(place)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

pub fn newest(place: &Place, prefix: &str) -> String {
    names_with_prefix(place, prefix)
        .pop()
        .unwrap_or_else(|| panic!("no {prefix} file in {:?}", file_names(place)))
}

/// The valid records of a segment from its header on, up to the first bad
/// frame: (offset, frame length, header).
pub fn records(bytes: &[u8]) -> Vec<(usize, usize, record::RecordHeader)> {
    let mut out = Vec::new();
    let mut at = header::SIZE;
    let h = header::FileHeader::decode(header::FileKind::Segment, bytes).expect("a segment");
    let seed = record::Seed::of(h.version, h.id as u32);
    while let Ok((h, _)) = record::decode(&bytes[at..], bytes.len(), seed) {
        out.push((at, h.frame_len(), h));
        at += h.frame_len();
    }
    out
}

/// The valid entries of a (format version 2) journal file from its header
/// on, up to the first bad frame: (offset, frame length, entry) of each
/// entry, with its frame's offset and length (a frame holds one call's
/// entries).
pub fn entries(bytes: &[u8]) -> Vec<(usize, usize, entry::Entry)> {
    let mut out = Vec::new();
    let mut at = header::SIZE;
    let file = header::FileHeader::decode(header::FileKind::Journal, bytes)
        .expect("a journal file")
        .id;
    while let Ok((es, _, n)) = batch::decode(&bytes[at..], file) {
        out.extend(es.into_iter().map(|e| (at, n, e)));
        at += n;
    }
    out
}

/// A payload of `len` bytes, none of them zero, distinct per `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|j| ((seed.wrapping_mul(31).wrapping_add(j * 7)) % 255 + 1) as u8)
        .collect()
}

/// Dequeue and ack everything ready now; returns the deliveries in order.
pub fn drain(q: &Queue) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = q.dequeue().expect("dequeue") {
        q.ack(d.receipt).expect("ack");
        out.push(d);
    }
    out
}

/// Where two file snapshots differ, in a few words (never whole files).
pub fn diff(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    if names(a) != names(b) {
        return Some(format!("files {:?} became {:?}", names(a), names(b)));
    }
    for (name, x) in a {
        let y = &b[name];
        if x.len() != y.len() {
            return Some(format!("{name}: length {} became {}", x.len(), y.len()));
        }
        if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
            return Some(format!("{name}: byte {i} changed {} -> {}", x[i], y[i]));
        }
    }
    None
}

/// Panic with a short description if the snapshots differ.
pub fn assert_same_files(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>, ctx: &str) {
    if let Some(d) = diff(a, b) {
        panic!("{ctx}: {d}");
    }
}
