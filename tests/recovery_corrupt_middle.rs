//! Goal: damage inside durable data (a flipped byte in a record or journal entry that later frames prove was synced) is reported and skipped, never delivered with wrong bytes, and never truncates the messages after it.
//! Method: enqueue with Immediate durability, take a crash image (or close cleanly), flip one payload or header byte in the middle, reopen on disk and in memory and compare every delivery.

mod common;

use std::collections::BTreeMap;

use common::files::{crash_image, drain, entries, flip, newest, payload, read_file, records};
use common::{both, small, Place};
use lanelog::codec::entry::Kind;
use lanelog::{Durability, MessageId, Queue, QueueOptions};

const N: u64 = 40;

fn opts() -> QueueOptions {
    small().durability(Durability::Immediate)
}

type Sent = BTreeMap<MessageId, Vec<u8>>;

/// `N` messages, each enqueue synced, so every record's `synced end` covers
/// the records before it.
fn fill(place: &Place) -> (Queue, Sent) {
    let q = place.open(opts()).unwrap();
    let mut sent = Sent::new();
    for i in 0..N {
        let p = payload(i, 60 + (i as usize % 7) * 11);
        sent.insert(q.enqueue(&p, (i % 4) as u8).unwrap(), p);
    }
    (q, sent)
}

/// Deliver everything; every delivery must be one of `sent` with its exact
/// bytes, and the set delivered must be `sent` without `lost`. Damaged
/// messages may instead be parked as dead letters whose reason starts with
/// "corrupt".
fn check_deliveries(q: &Queue, sent: &Sent, lost: &[MessageId], ctx: &str) {
    let mut seen = Sent::new();
    for d in drain(q) {
        assert!(!lost.contains(&d.id), "{ctx}: damaged {} delivered", d.id);
        assert_eq!(
            Some(&d.payload),
            sent.get(&d.id),
            "{ctx}: bytes of {}",
            d.id
        );
        assert!(seen.insert(d.id, d.payload).is_none(), "{ctx}: twice");
    }
    let mut want = sent.clone();
    for id in lost {
        want.remove(id);
    }
    assert_eq!(seen, want, "{ctx}: the messages around the damage");
    for dead in q.dead_letters().unwrap() {
        assert!(lost.contains(&dead.id), "{ctx}: {dead:?}");
        assert!(dead.reason.starts_with("corrupt"), "{ctx}: {dead:?}");
    }
}

/// Flip `byte` (an offset inside record `j`) in a crash image and reopen.
fn damaged_record_in_crash_image(place: &Place, j: usize, byte: usize) {
    let (q, sent) = fill(place);
    let img = crash_image(place);
    drop(q);
    let seg = newest(&img, "segment-");
    let recs = records(&read_file(&img, &seg));
    assert_eq!(recs.len() as u64, N);
    let (off, len, h) = recs[j];
    assert!(byte < len);
    let next = recs[j + 1].0;
    flip(&img, &seg, off + byte, 0x10);
    let ctx = format!("{} record {j} byte {byte}", place.name());

    let q = img.open(opts()).unwrap();
    let r = q.recovery_report().clone();
    assert!(r.found_damage(), "{ctx}: {r:?}");
    assert_eq!(
        pairs(&r.damaged),
        vec![(seg.clone(), off as u64..next as u64)],
        "{ctx}"
    );
    assert!(r.torn_tails.is_empty(), "{ctx}: not a tail: {r:?}");
    assert_eq!(r.frames_dropped, 0, "{ctx}: {r:?}");
    assert_eq!(r.records_scanned, N - 1, "{ctx}: {r:?}");
    assert_eq!(q.stats().ready, N - 1, "{ctx}");
    check_deliveries(&q, &sent, &[MessageId::from(h.id)], &ctx);

    // The damage stays reported (it is durable data, not a tail to cut),
    // and the queue keeps working past it.
    let fresh = q.enqueue(b"new", 0).unwrap();
    let again = crash_image(&img);
    drop(q);
    let q = again.open(opts()).unwrap();
    assert_eq!(q.recovery_report().damaged.len(), 1, "{ctx}");
    let got = drain(&q);
    assert_eq!(got.len(), 1, "{ctx}");
    assert_eq!((got[0].id, &got[0].payload[..]), (fresh, &b"new"[..]));
}

#[test]
fn flipped_payload_byte_is_reported_and_skipped() {
    both(|place| damaged_record_in_crash_image(place, 20, 40 + 17));
}

#[test]
fn flipped_header_byte_is_reported_and_skipped() {
    both(|place| damaged_record_in_crash_image(place, 20, 8));
}

#[test]
fn every_header_byte_and_some_payload_bytes() {
    for byte in (0..40).chain([40, 41, 63, 99]) {
        damaged_record_in_crash_image(&Place::memory(), 13, byte);
    }
}

#[test]
fn two_damaged_records_are_both_reported() {
    both(|place| {
        let (q, sent) = fill(place);
        let img = crash_image(place);
        drop(q);
        let seg = newest(&img, "segment-");
        let recs = records(&read_file(&img, &seg));
        let mut lost = Vec::new();
        let mut ranges = Vec::new();
        for j in [5, 30] {
            let (off, len, h) = recs[j];
            flip(&img, &seg, off + len - 1, 0x01);
            lost.push(MessageId::from(h.id));
            ranges.push((seg.clone(), off as u64..recs[j + 1].0 as u64));
        }
        let q = img.open(opts()).unwrap();
        assert_eq!(
            pairs(&q.recovery_report().damaged),
            ranges,
            "{}",
            place.name()
        );
        check_deliveries(&q, &sent, &lost, place.name());
    });
}

/// After a clean close the checkpoint describes every message, so recovery
/// does not read the records again; the damage is found when the record is
/// read for delivery and the message is parked as a corrupt dead letter.
fn damaged_after_clean_close(place: &Place, byte: usize) {
    let (q, sent) = fill(place);
    q.close().unwrap();
    let seg = newest(place, "segment-");
    let recs = records(&read_file(place, &seg));
    let (off, _, h) = recs[20];
    let id = MessageId::from(h.id);
    flip(place, &seg, off + byte, 0x10);
    let ctx = format!("{} byte {byte}", place.name());

    let q = place.open(opts()).unwrap();
    let r = q.recovery_report().clone();
    assert!(r.checkpoint.is_some(), "{ctx}: {r:?}");
    check_deliveries(&q, &sent, &[id], &ctx);
    let dead = q.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{ctx}: {dead:?}");
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].priority, h.priority);
    // Recovery may or may not list it (it trusts the checkpoint and does not
    // reread covered records); either way it is parked, never delivered.
    assert!(dead[0].reason.starts_with("corrupt"), "{ctx}: {dead:?}");

    // Redriving it cannot make it deliverable: it is parked again.
    q.redrive(id).unwrap();
    assert!(q.dequeue().unwrap().is_none(), "{ctx}");
    assert_eq!(q.dead_letters().unwrap().len(), 1, "{ctx}");
    q.close().unwrap();
    let q = place.open(opts()).unwrap();
    let dead = q.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{ctx}: survives reopen");
    assert!(dead[0].reason.starts_with("corrupt"), "{ctx}: {dead:?}");
    assert!(q.dequeue().unwrap().is_none(), "{ctx}");
}

#[test]
fn payload_damage_after_clean_close_is_never_delivered() {
    both(|place| damaged_after_clean_close(place, 40 + 3));
}

#[test]
fn header_damage_after_clean_close_is_never_delivered() {
    both(|place| damaged_after_clean_close(place, 0));
    both(|place| damaged_after_clean_close(place, 32));
}

/// A damaged entry in the middle of the journal (an ack that later entries
/// prove was synced) is reported and skipped; its message is delivered
/// again rather than lost, and the entries after it still apply.
#[test]
fn damaged_journal_entry_in_the_middle() {
    both(|place| {
        let (q, sent) = fill(place);
        let mut acked = Vec::new();
        for _ in 0..10 {
            let d = q.dequeue().unwrap().unwrap();
            q.ack(d.receipt).unwrap();
            acked.push(d.id);
        }
        let img = crash_image(place);
        drop(q);
        let jnl = newest(&img, "journal-");
        let es = entries(&read_file(&img, &jnl));
        let acks: Vec<_> = es.iter().filter(|e| e.2.kind == Kind::Acked).collect();
        assert_eq!(acks.len(), 10);
        let (off, len, e) = acks[4];
        let victim = MessageId::from(e.id);
        flip(&img, &jnl, off + 10, 0x40);

        let q = img.open(opts()).unwrap();
        let r = q.recovery_report().clone();
        assert!(r.found_damage(), "{}: {r:?}", place.name());
        assert_eq!(
            pairs(&r.damaged),
            vec![(jnl.clone(), *off as u64..(off + len) as u64)]
        );
        assert!(r.torn_tails.is_empty(), "{r:?}");
        assert_eq!(q.stats().acked_total, 9);
        let mut seen = Sent::new();
        for d in drain(&q) {
            let want_attempt = if d.id == victim { 2 } else { 1 };
            assert_eq!(d.attempt, want_attempt, "id {}", d.id);
            assert_eq!(Some(&d.payload), sent.get(&d.id));
            seen.insert(d.id, d.payload);
        }
        let mut want = sent.clone();
        for id in acked.iter().filter(|&&id| id != victim) {
            want.remove(id);
        }
        assert_eq!(seen, want, "{}", place.name());
    });
}

/// A report's ranges as (file, range) pairs, to compare with expected ones.
fn pairs(ranges: &[lanelog::FileRange]) -> Vec<(String, std::ops::Range<u64>)> {
    ranges
        .iter()
        .map(|r| (r.file.clone(), r.range.clone()))
        .collect()
}
