//! Goal: a queue that keeps up with its producer uses bounded space: finished segments are deleted and the journal is trimmed by checkpoints while 20 segments' worth of payload flows through.
//! Method: 1 MiB segments, a steady enqueue/ack loop with a small backlog; measure the directory (file sizes on disk, used_bytes in memory) throughout and at the end.

mod common;

use common::files::{file_names, payload, used_bytes};
use common::{both, small, Place};
use lanelog::{Durability, QueueOptions, MIN_SEGMENT_SIZE};

const SEGMENT: u64 = MIN_SEGMENT_SIZE;
const JOURNAL_FILE: u64 = 64 << 10;
/// Journal bytes between checkpoints: well under the ~370 KiB of journal
/// the loop writes, so the journal must be trimmed to stay in bounds.
const CHECKPOINT_BYTES: u64 = 64 << 10;
const PAYLOAD: usize = 4000;
const BACKLOG: usize = 40;

fn opts(place: &Place) -> QueueOptions {
    // On disk a sync per call would make 10k fdatasyncs; the space rules
    // do not depend on the durability mode.
    let durability = match place {
        Place::Disk(_) => Durability::None,
        Place::Memory(_) => Durability::Immediate,
    };
    small()
        .segment_size(SEGMENT)
        .journal_file_size(JOURNAL_FILE)
        .checkpoint_bytes(CHECKPOINT_BYTES)
        .durability(durability)
}

/// The most the directory may hold at any time: the active segment, the
/// one being drained and one prepared or waiting for its deletion to be
/// safe; the journal files a checkpoint period spans plus rotation slack;
/// one checkpoint of the backlog.
fn bound() -> u64 {
    let segments = 3 * SEGMENT;
    let journal = (CHECKPOINT_BYTES / JOURNAL_FILE + 2) * JOURNAL_FILE;
    let checkpoint = 64 << 10;
    segments + journal + checkpoint
}

#[test]
fn steady_traffic_uses_bounded_space() {
    both(|place| {
        let q = place.open(opts(place)).unwrap();
        let total = 20 * SEGMENT as usize;
        let rounds = total / PAYLOAD;
        let mut backlog = std::collections::VecDeque::new();
        let (mut peak, mut peak_files, mut peak_segments, mut peak_journals) = (0, 0, 0, 0);
        for i in 0..rounds {
            let p = payload(i as u64, PAYLOAD);
            let id = q.enqueue(&p, (i % 3) as u8).unwrap();
            backlog.push_back((id, p));
            if backlog.len() > BACKLOG {
                let d = q.dequeue().unwrap().unwrap();
                let pos = backlog.iter().position(|(id, _)| *id == d.id).unwrap();
                let (_, want) = backlog.remove(pos).unwrap();
                assert_eq!(d.payload, want, "{}", place.name());
                q.ack(d.receipt).unwrap();
            }
            if i % 16 == 0 {
                let used = used_bytes(place);
                peak = peak.max(used);
                peak_files = peak_files.max(file_names(place).len());
                peak_segments = peak_segments.max(q.stats().segments);
                let journals = common::files::names_with_prefix(place, "journal-").len();
                peak_journals = peak_journals.max(journals);
                assert!(
                    used <= bound(),
                    "{}: {used} bytes after {} MiB of payload (bound {}); files {:?}",
                    place.name(),
                    (i * PAYLOAD) >> 20,
                    bound(),
                    file_names(place)
                );
            }
        }
        assert!(
            peak_segments <= 3,
            "{}: {peak_segments} segments",
            place.name()
        );
        assert!(
            peak_journals <= 3,
            "{}: {peak_journals} journal files",
            place.name()
        );
        assert!(peak_files <= 7, "{}: {peak_files} files", place.name());
        eprintln!(
            "{}: peak {peak} bytes, {peak_files} files, {peak_segments} segments, {peak_journals} journal files",
            place.name()
        );

        // Drain: everything delivered, and the space stays bounded.
        while let Some(d) = q.dequeue().unwrap() {
            let pos = backlog.iter().position(|(id, _)| *id == d.id).unwrap();
            assert_eq!(d.payload, backlog.remove(pos).unwrap().1);
            q.ack(d.receipt).unwrap();
        }
        assert!(backlog.is_empty());
        let s = q.stats();
        assert_eq!((s.ready, s.in_flight, s.acked_total), (0, 0, rounds as u64));
        assert!(used_bytes(place) <= bound(), "{}", place.name());
        q.close().unwrap();
        let end = used_bytes(place);
        assert!(
            end <= 2 * SEGMENT + 2 * JOURNAL_FILE + (64 << 10),
            "{}: {end} bytes after close; files {:?}",
            place.name(),
            file_names(place)
        );

        // And after a reopen the directory is as small.
        let q = place.open(opts(place)).unwrap();
        assert!(q.dequeue().unwrap().is_none());
        assert!(q.stats().segments <= 2, "{}", place.name());
        assert!(used_bytes(place) <= end + JOURNAL_FILE, "{}", place.name());
    });
}

#[test]
fn stats_bytes_on_disk_matches_the_directory() {
    both(|place| {
        // Files made ahead in the background appear at moments of their
        // own; `prepared_files_stay_within_one_of_each` covers them.
        let q = place.open(opts(place).prepare_ahead(false)).unwrap();
        let p = payload(1, PAYLOAD);
        for i in 0..2000 {
            q.enqueue(&p, 0).unwrap();
            if i % 2 == 0 {
                let d = q.dequeue().unwrap().unwrap();
                q.ack(d.receipt).unwrap();
            }
            if i % 250 == 0 {
                assert_eq!(
                    q.stats().bytes_on_disk,
                    used_bytes(place),
                    "{} step {i}: files {:?}",
                    place.name(),
                    file_names(place)
                );
            }
        }
    });
}

#[test]
fn prepared_files_stay_within_one_of_each() {
    both(|place| {
        let q = place.open(opts(place).prepare_ahead(true)).unwrap();
        let p = payload(1, PAYLOAD);
        for i in 0..2000 {
            q.enqueue(&p, 0).unwrap();
            let d = q.dequeue().unwrap().unwrap();
            q.ack(d.receipt).unwrap();
            if i % 250 == 0 {
                let (counted, used) = (q.stats().bytes_on_disk, used_bytes(place));
                assert!(
                    counted <= used && used <= counted + SEGMENT + JOURNAL_FILE,
                    "{} step {i}: stats {counted}, directory {used}: files {:?}",
                    place.name(),
                    file_names(place)
                );
            }
        }
        q.close().unwrap();
        assert!(
            !file_names(place).iter().any(|n| n.ends_with(".prep")),
            "{}: close leaves no prepared file: {:?}",
            place.name(),
            file_names(place)
        );
    });
}
