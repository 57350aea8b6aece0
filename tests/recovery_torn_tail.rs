//! Goal: a torn tail (the last, never-synced write cut at any byte) is cut at open: every earlier message is delivered intact, nothing corrupt is delivered, and the tear is reported.
//! Method: take a process-crash image, zero the last record (or journal entry) from every byte offset on, reopen each copy on disk and in memory, and compare every delivery.

mod common;

use std::collections::BTreeMap;

use common::files::{crash_image, drain, entries, newest, payload, read_file, records, tamper};
use common::{both, small, Place};
use lanelog::codec::entry::Kind;
use lanelog::{Durability, MessageId, Queue, QueueOptions};

fn opts() -> QueueOptions {
    small().durability(Durability::None)
}

/// Messages by id.
type Sent = BTreeMap<MessageId, Vec<u8>>;

/// Deliver everything and check it against `want` exactly: same ids, same
/// bytes, first attempt.
fn expect_exactly(q: &Queue, want: &Sent, ctx: &str) {
    let got = drain(q);
    let mut seen = Sent::new();
    for d in &got {
        assert_eq!(d.attempt, 1, "{ctx}: id {} attempt", d.id);
        assert!(
            seen.insert(d.id, d.payload.clone()).is_none(),
            "{ctx}: {} delivered twice",
            d.id
        );
    }
    assert_eq!(&seen, want, "{ctx}: deliveries differ");
    assert!(q.dead_letters().unwrap().is_empty(), "{ctx}: dead letters");
}

/// Enqueue `earlier` messages and make them durable, then write `last`
/// more with one write that is never synced (a batch when `last > 1`), and
/// take the process-crash image. When `checkpointed`, the earlier messages
/// are closed into a checkpoint first, so the tail is found by the scan of
/// the head segment past the checkpoint.
fn torn_setup(place: &Place, earlier: u64, last: u64, checkpointed: bool) -> (Place, Sent, Sent) {
    let mut before = Sent::new();
    let q = place.open(opts()).unwrap();
    for i in 0..earlier {
        let p = payload(i, 20 + 13 * i as usize);
        before.insert(q.enqueue(&p, (i % 3) as u8).unwrap(), p);
    }
    q.sync().unwrap();
    let q = if checkpointed {
        q.close().unwrap();
        let q = place.open(opts()).unwrap();
        assert!(q.recovery_report().checkpoint.is_some());
        q
    } else {
        q
    };
    let tail: Vec<Vec<u8>> = (0..last)
        .map(|i| payload(100 + i, 30 + 17 * i as usize))
        .collect();
    let items: Vec<(&[u8], u8)> = tail.iter().map(|p| (&p[..], 1)).collect();
    let ids = q.enqueue_batch(&items).unwrap();
    let after: Sent = ids.into_iter().zip(tail).collect();
    let image = crash_image(place);
    drop(q);
    (image, before, after)
}

/// Cut the last write at every byte and check each reopened copy.
fn torn_every_byte(place: &Place, last: u64, checkpointed: bool) {
    let (pristine, before, after) = torn_setup(place, 8, last, checkpointed);
    let seg = newest(&pristine, "segment-");
    let bytes = read_file(&pristine, &seg);
    // The last `last` records are the unsynced write.
    let recs = records(&bytes);
    let tail = &recs[recs.len() - last as usize..];
    for ((_, _, h), (id, p)) in tail.iter().zip(&after) {
        assert_eq!(MessageId::from(h.id), *id);
        assert_eq!(h.len as usize, p.len());
    }
    let start = tail[0].0;
    let end = tail[tail.len() - 1].0 + tail[tail.len() - 1].1;
    let max_id = *after.keys().next_back().unwrap();
    for cut in start..=end {
        let ctx = format!(
            "{} last={last} checkpointed={checkpointed} cut at +{}",
            place.name(),
            cut - start
        );
        let img = crash_image(&pristine);
        if cut < end {
            tamper(&img, &seg, cut as u64, &vec![0u8; end - cut]);
        }
        let q = img.open(opts()).unwrap();
        let r = q.recovery_report().clone();
        assert!(!r.found_damage(), "{ctx}: {r:?}");
        assert!(r.damaged.is_empty(), "{ctx}: {r:?}");
        assert_eq!(r.missing_messages, 0, "{ctx}: {r:?}");
        // The write is one batch, all or none: cut anywhere before its end,
        // none of it survives; whole records before the cut are dropped with
        // the torn tail, which starts at the batch's first record.
        let whole = cut == end;
        let complete = tail.iter().filter(|(off, len, _)| off + len <= cut).count();
        if whole || cut == start {
            assert!(r.torn_tails.is_empty(), "{ctx}: {r:?}");
            assert_eq!(r.frames_dropped, 0, "{ctx}: {r:?}");
        } else {
            assert_eq!(r.torn_tails.len(), 1, "{ctx}: {r:?}");
            let lanelog::FileRange {
                file: name, range, ..
            } = &r.torn_tails[0];
            assert_eq!(name, &seg, "{ctx}");
            assert_eq!(range.start, start as u64, "{ctx}: {r:?}");
            assert!(
                range.end > range.start && range.end <= cut as u64,
                "{ctx}: {r:?}"
            );
            assert_eq!(r.frames_dropped, complete as u64, "{ctx}: {r:?}");
        }
        let mut want = before.clone();
        if whole {
            want.extend(after.iter().map(|(id, p)| (*id, p.clone())));
        }
        expect_exactly(&q, &want, &ctx);

        // The queue appends where the tail was cut, ids are never reused,
        // and a second recovery finds nothing left to cut.
        let fresh = q.enqueue(b"after the cut", 4).unwrap();
        assert!(fresh > max_id, "{ctx}: id {fresh} reused (max {max_id})");
        let again = crash_image(&img);
        drop(q);
        let q = again.open(opts()).unwrap();
        let r = q.recovery_report();
        assert!(r.torn_tails.is_empty(), "{ctx}: second open {r:?}");
        assert!(!r.found_damage(), "{ctx}: second open {r:?}");
        let mut want = Sent::new();
        want.insert(fresh, b"after the cut".to_vec());
        expect_exactly(&q, &want, &format!("{ctx}, second open"));
    }
}

#[test]
fn torn_last_record_at_every_byte() {
    both(|place| torn_every_byte(place, 1, false));
}

#[test]
fn torn_last_batch_at_every_byte() {
    let place = Place::memory();
    torn_every_byte(&place, 3, false);
}

#[test]
fn torn_record_past_checkpoint_head_at_every_byte() {
    both(|place| torn_every_byte(place, 1, true));
}

/// Zero the last journal entry from every byte on. It is the entry of
/// `kind` written (never synced) after everything else was synced.
fn torn_last_entry(place: &Place, kind: Kind) {
    let q = place.open(opts()).unwrap();
    let mut sent = Sent::new();
    for i in 0..5u64 {
        let p = payload(i, 40 + i as usize);
        sent.insert(q.enqueue(&p, 7).unwrap(), p);
    }
    let d = q.dequeue().unwrap().unwrap();
    assert_eq!(d.attempt, 1);
    q.sync().unwrap();
    let reason = "model rejected input: shape (3, 224) ≠ (3, 224, 224)";
    match kind {
        Kind::Acked => q.ack(d.receipt).unwrap(),
        Kind::DeadLettered => q.dead_letter(d.receipt, reason).unwrap(),
        other => panic!("unexpected kind {other:?}"),
    }
    let pristine = crash_image(place);
    drop(q);

    let jnl = newest(&pristine, "journal-");
    let bytes = read_file(&pristine, &jnl);
    let (off, len, e) = entries(&bytes).pop().expect("an entry");
    assert_eq!(e.kind, kind);
    assert_eq!(MessageId::from(e.id), d.id);
    for k in 0..=len {
        let ctx = format!("{} {kind:?} cut at +{k} of {len}", place.name());
        let img = crash_image(&pristine);
        // Bytes from `k` on that were zero already do not tear anything.
        let changed = bytes[off + k..off + len].iter().any(|&b| b != 0);
        if changed {
            tamper(&img, &jnl, (off + k) as u64, &vec![0u8; len - k]);
        }
        let q = img.open(opts()).unwrap();
        let r = q.recovery_report().clone();
        assert!(!r.found_damage(), "{ctx}: {r:?}");
        assert_eq!(r.frames_dropped, 0, "{ctx}: {r:?}");
        if changed && k > 0 {
            assert_eq!(r.torn_tails.len(), 1, "{ctx}: {r:?}");
            let lanelog::FileRange {
                file: name, range, ..
            } = &r.torn_tails[0];
            assert_eq!(name, &jnl, "{ctx}");
            assert_eq!(range.start, off as u64, "{ctx}: {r:?}");
            assert!(range.end <= (off + k) as u64, "{ctx}: {r:?}");
        } else {
            assert!(r.torn_tails.is_empty(), "{ctx}: {r:?}");
        }
        let got = drain(&q);
        let mut seen = Sent::new();
        for g in &got {
            assert!(seen.insert(g.id, g.payload.clone()).is_none(), "{ctx}");
            let want_attempt = if g.id == d.id { 2 } else { 1 };
            assert_eq!(g.attempt, want_attempt, "{ctx}: id {}", g.id);
        }
        let dead = q.dead_letters().unwrap();
        let mut want = sent.clone();
        if changed {
            // The settlement never happened: delivered again, intact.
            assert!(dead.is_empty(), "{ctx}: {dead:?}");
            assert_eq!(q.stats().acked_total, got.len() as u64, "{ctx}");
        } else {
            let p = want.remove(&d.id).unwrap();
            assert_eq!(p, d.payload);
            match kind {
                Kind::Acked => assert!(dead.is_empty(), "{ctx}: {dead:?}"),
                _ => {
                    assert_eq!(dead.len(), 1, "{ctx}: {dead:?}");
                    assert_eq!(dead[0].id, d.id);
                    assert_eq!(dead[0].reason, reason, "{ctx}");
                    assert_eq!(dead[0].attempts, 1, "{ctx}");
                }
            }
        }
        assert_eq!(seen, want, "{ctx}");
    }
}

#[test]
fn torn_last_ack_entry_at_every_byte() {
    both(|place| torn_last_entry(place, Kind::Acked));
}

#[test]
fn torn_last_dead_letter_entry_at_every_byte() {
    let place = Place::memory();
    torn_last_entry(&place, Kind::DeadLettered);
}

#[test]
fn zero_filled_tail_is_not_damage() {
    both(|place| {
        let opts = small().durability(Durability::Immediate);
        let q = place.open(opts.clone()).unwrap();
        let mut sent = Sent::new();
        for i in 0..20u64 {
            let p = payload(i, 100);
            sent.insert(q.enqueue(&p, 0).unwrap(), p);
        }
        let d = q.dequeue().unwrap().unwrap();
        q.ack(d.receipt).unwrap();
        sent.remove(&d.id);

        // A crash leaves the preallocated zeros after the last frame.
        let img = crash_image(place);
        let iq = img.open(opts.clone()).unwrap();
        let r = iq.recovery_report().clone();
        assert!(r.torn_tails.is_empty(), "{}: {r:?}", place.name());
        assert!(r.damaged.is_empty() && !r.found_damage(), "{r:?}");
        assert_eq!(r.frames_dropped, 0);
        assert!(r.files_removed.is_empty(), "{r:?}");
        assert_eq!(r.records_scanned, 20);
        expect_exactly(&iq, &sent, place.name());
        drop(iq);

        // So does a clean close.
        q.close().unwrap();
        let q = place.open(opts).unwrap();
        let r = q.recovery_report().clone();
        assert!(r.torn_tails.is_empty() && !r.found_damage(), "{r:?}");
        assert!(r.checkpoint.is_some(), "{r:?}");
        expect_exactly(&q, &sent, place.name());
    });
}

#[test]
fn power_loss_without_unsynced_writes_is_not_damage() {
    let m = lanelog::storage::MemoryStorage::new();
    let place = Place::Memory(m.clone());
    let opts = small().durability(Durability::Immediate);
    let q = place.open(opts.clone()).unwrap();
    let mut sent = Sent::new();
    for i in 0..20u64 {
        let p = payload(i, 64);
        sent.insert(q.enqueue(&p, 0).unwrap(), p);
    }
    let img = m.crash(lanelog::storage::CrashPolicy::DropUnsynced);
    drop(q);
    let q = Place::Memory(img).open(opts).unwrap();
    let r = q.recovery_report();
    assert!(r.torn_tails.is_empty() && !r.found_damage(), "{r:?}");
    expect_exactly(&q, &sent, "drop unsynced");
}

/// Damage to the tail after a clean close is not a torn tail (the record
/// was durable and the checkpoint covers it): it must still never be
/// delivered; it is parked as a corrupt dead letter when its turn comes.
#[test]
fn tail_damaged_after_clean_close_is_parked_not_delivered() {
    both(|place| {
        let q = place.open(opts()).unwrap();
        let mut sent = Sent::new();
        for i in 0..6u64 {
            let p = payload(i, 50);
            sent.insert(q.enqueue(&p, 0).unwrap(), p);
        }
        let last = *sent.keys().next_back().unwrap();
        q.close().unwrap();

        let seg = newest(place, "segment-");
        let bytes = read_file(place, &seg);
        let (off, len, h) = *records(&bytes).last().unwrap();
        assert_eq!(MessageId::from(h.id), last);
        // Zero the second half of the record, as a torn sector would.
        tamper(
            place,
            &seg,
            (off + len / 2) as u64,
            &vec![0u8; len - len / 2],
        );

        let q = place.open(opts()).unwrap();
        let got = drain(&q);
        let mut seen = Sent::new();
        for d in &got {
            seen.insert(d.id, d.payload.clone());
        }
        sent.remove(&last);
        assert_eq!(seen, sent, "{}", place.name());
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1, "{}: {dead:?}", place.name());
        assert_eq!(dead[0].id, last);
        assert!(
            dead[0].reason.starts_with("corrupt"),
            "{:?}",
            dead[0].reason
        );
    });
}
