//! Goal: `lanelog verify` passes a clean directory (exit 0), finds damage
//! in the middle of a segment and a truncated journal (exit 1, naming each
//! file and offset, in text and in JSON), works while the queue is open in
//! this process, and never changes a byte.
//! Method: prepare directories with the library, damage copies of their
//! files by hand, run the real binary, and compare every file's bytes
//! before and after.
#![cfg(feature = "cli")]

use std::path::Path;

use lanelog::{Durability, Queue, QueueOptions};
use serde_json::Value;

mod cli_support;
use cli_support::{files, lanelog, p};

fn opts() -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
        .durability(Durability::Immediate)
        .prepare_ahead(false)
}

/// 20 messages of 60 bytes in four lanes (each enqueue synced, so every
/// record's `synced end` covers the ones before it); half delivered and
/// acked, two nacked. Returns the open queue.
fn fill(dir: &Path) -> Queue {
    let q = opts().open(dir).expect("open");
    for i in 0..20u8 {
        q.enqueue(&[b'a' + i; 60], i % 4).expect("enqueue");
    }
    for i in 0..12 {
        let d = q.dequeue().expect("dequeue").expect("one");
        if i % 5 == 4 {
            q.nack(d.receipt, std::time::Duration::ZERO).expect("nack");
        } else {
            q.ack(d.receipt).expect("ack");
        }
    }
    q
}

fn verify_json(dir: &Path) -> (i32, Value) {
    let r = lanelog(&["verify", p(dir), "--json"]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    (r.code, serde_json::from_str(&r.stdout).expect("json"))
}

#[test]
fn a_clean_directory_passes_open_or_closed_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("q");
    let q = fill(&dir);

    // Open in this process: verify works, says so, and writes nothing.
    let before = files(&dir);
    let r = lanelog(&["verify", p(&dir)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("open in another process"), "{}", r.stderr);
    assert!(r.stdout.contains("clean: "), "{}", r.stdout);
    assert!(files(&dir) == before, "verify wrote nothing");
    q.enqueue(b"after verify", 0)
        .expect("the owner is unaffected");
    drop(q);

    let before = files(&dir);
    let (code, v) = verify_json(&dir);
    assert_eq!(code, 0);
    assert_eq!(v["clean"], true);
    assert_eq!(v["locked"], false);
    assert!(v["records"].as_u64().expect("records") >= 9);
    assert!(v["live_messages"].as_u64().expect("live") >= 9);
    let kinds: Vec<&str> = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["kind"].as_str().expect("kind"))
        .collect();
    assert!(
        kinds.contains(&"segment") && kinds.contains(&"journal"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"checkpoint"), "close wrote one: {kinds:?}");
    let damage = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "damage")
        .count();
    assert_eq!(damage, 0, "{v}");
    assert!(files(&dir) == before, "verify wrote nothing");
}

#[test]
fn a_flipped_byte_and_a_truncated_journal_are_found_by_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("q");
    let q = fill(&dir);
    // Leave the directory as a killed owner would: every entry still in
    // journal file 1, no checkpoint.
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).expect("mkdir");
    for (name, bytes) in files(&dir) {
        std::fs::write(image.join(name), bytes).expect("copy");
    }
    drop(q);

    // Record 10 of 20 (100 bytes each, from offset 32): a payload byte.
    let seg = "segment-0000000001.seg";
    let record = 32 + 10 * 100;
    let mut bytes = std::fs::read(image.join(seg)).expect("read");
    bytes[record + 70] ^= 0x08;
    std::fs::write(image.join(seg), &bytes).expect("write");
    // The journal loses its tail, cut inside an entry.
    let jnl = "journal-0000000001.jnl";
    let (_, v) = verify_json(&image);
    let end = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["name"] == jnl)
        .expect("journal checked")["data_end"]
        .as_u64()
        .expect("end");
    // Where the last frame (one call's entries) starts.
    let journal = std::fs::read(image.join(jnl)).expect("read");
    let mut last = 32;
    let mut at = 32;
    while let Ok((_, _, n)) = lanelog::codec::batch::decode(&journal[at..], 1) {
        last = at;
        at += n;
    }
    assert_eq!(at as u64, end, "the frames end where verify says");
    let cut = end - 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(image.join(jnl))
        .expect("open")
        .set_len(cut)
        .expect("truncate");

    let before = files(&image);
    let r = lanelog(&["verify", p(&image)]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("DAMAGED"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("damage segment-0000000001.seg at byte {record}:")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("journal-0000000001.jnl at byte"),
        "{}",
        r.stdout
    );

    let (code, v) = verify_json(&image);
    assert_eq!(code, 1);
    assert_eq!(v["clean"], false);
    let damage: Vec<&Value> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "damage")
        .collect();
    assert!(
        damage
            .iter()
            .any(|f| f["file"] == seg && f["offset"] == record as u64),
        "{damage:?}"
    );
    assert!(
        damage.iter().any(|f| f["file"] == jnl
            && f["offset"] == last as u64
            && f["what"].as_str().is_some_and(|w| w.contains("truncated"))),
        "the entry cut by the end of the file: {damage:?}"
    );
    assert!(
        damage
            .iter()
            .any(|f| f["file"] == jnl && f["offset"] == cut),
        "the file's size: {damage:?}"
    );
    assert!(files(&image) == before, "verify wrote nothing");

    // What verify calls damage is what open reports (and repairs).
    let q = opts()
        .open(&image)
        .expect("open repairs (the image was never locked)");
    let report = q.recovery_report().clone();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].file, seg);
    assert_eq!(report.damaged[0].range, record as u64..record as u64 + 100);
}
