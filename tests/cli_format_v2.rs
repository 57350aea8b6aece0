//! Goal: the `lanelog` tool shows what format version 2 stores, as
//! `docs/cli.md` says: `stats` the new counters and the stored attributes
//! (and says when a format version 1 directory has none), `peek` deadlines
//! and keys, `explain` deadlines, keys, result records, the completed and
//! expired states, the new journal events and when retention removes a
//! message; `verify` passes such a directory, checks the attributes file
//! (damage when open would refuse it, a notice for a leftover rewrite),
//! and `redrive` keeps the stored attributes.
//! Method: prepare directories with the library (a `ManualClock` near real
//! time, retention set, a keyed message with a deadline, a completed
//! message, a dead letter, a missed deadline), run the real binary, check
//! text and JSON.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanelog::{
    Clock, Durability, EnqueueOptions, ManualClock, MessageId, Queue, QueueOptions, Stats,
    SystemClock, Timestamp,
};
use serde_json::Value;

mod cli_support;
use cli_support::{files, lanelog, p};

const HOUR: Duration = Duration::from_secs(3600);

fn json(args: &[&str]) -> Value {
    let r = lanelog(args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("json")
}

fn opts(clock: &ManualClock) -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
        .durability(Durability::Immediate)
        .visibility_timeout(Duration::from_secs(30))
        .max_deliveries(3)
        .retention(HOUR)
        .dead_letter_retention(2 * HOUR)
        .dedup_window(Duration::from_secs(600))
        .default_wait(Duration::from_millis(50))
        .clock(Arc::new(clock.clone()))
}

/// Wait for the queue's background tender.
fn eventually(q: &Queue, what: &str, pred: impl Fn(&Stats) -> bool) {
    let start = Instant::now();
    while !pred(&q.stats()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            q.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A line of a two-column table: the name, spaces, the value.
fn has_row(text: &str, name: &str, value: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with("  ") && rest.trim() == value)
    })
}

struct Prepared {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    q: Queue,
    t0: Timestamp,
    keyed: MessageId,
    completed: MessageId,
    dead: MessageId,
    missed: MessageId,
}

/// Lane 9: completed with a result. Lane 8: dead-lettered by its consumer.
/// Lane 4: a message with a deadline ten minutes on and the key
/// "order-7", left ready. Lane 1: a deadline one second on, missed. The
/// queue stays open.
fn prepare() -> Prepared {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("q");
    let t0 = SystemClock::new().now();
    let clock = ManualClock::new(t0);
    let q = opts(&clock).open(&dir).expect("open");
    let completed = q.enqueue(b"resize 1", 9).expect("enqueue");
    let dead = q.enqueue(b"\x00garbage", 8).expect("enqueue");
    let keyed_opts = EnqueueOptions::new()
        .priority(4)
        .deadline(t0.plus(Duration::from_secs(600)))
        .key("order-7");
    let keyed = q
        .enqueue_with(b"charge card 7", &keyed_opts)
        .expect("keyed");
    assert_eq!(
        q.enqueue_with(b"charge card 7", &keyed_opts)
            .expect("again"),
        keyed,
        "deduplicated"
    );
    let missed = q
        .enqueue_with(
            b"too late",
            &EnqueueOptions::new()
                .priority(1)
                .deadline(t0.plus(Duration::from_secs(1))),
        )
        .expect("deadline");
    let d = q.dequeue().expect("dequeue").expect("lane 9");
    assert_eq!(d.id, completed);
    q.complete(d.receipt, b"thumb.png 200x200")
        .expect("complete");
    let d = q.dequeue().expect("dequeue").expect("lane 8");
    assert_eq!(d.id, dead);
    q.dead_letter(d.receipt, "model error: bad input")
        .expect("dead letter");
    clock.advance(Duration::from_secs(2));
    eventually(&q, "deadline missed", |s| s.deadline_missed_total == 1);
    Prepared {
        _tmp: tmp,
        dir,
        q,
        t0,
        keyed,
        completed,
        dead,
        missed,
    }
}

#[test]
fn stats_peek_and_explain_show_deadlines_keys_results_and_attributes() {
    let prep = prepare();
    let d = p(&prep.dir);
    let t0 = prep.t0.0;
    let before = files(&prep.dir);

    let s = json(&["stats", d, "--json"]);
    assert_eq!(s["ready"], 1);
    assert_eq!(s["dead"], 2);
    assert_eq!(s["results"], 1);
    assert_eq!(s["keys"], 1);
    assert_eq!(s["acked_total"], 1, "a completion counts as an ack");
    assert_eq!(s["deadline_missed_total"], 1);
    assert_eq!(s["expired_total"], 0);
    assert_eq!(s["dead_expired_total"], 0);
    assert_eq!(s["format_version"], 2);
    let a = &s["attributes"];
    assert_eq!(a["revision"], 1);
    assert_eq!(a["segment_size"], 1 << 20);
    // Not named: the default for 1 MiB segments (what fits one record).
    assert_eq!(a["max_message_size"], (1 << 20) - 32 - 40);
    assert!(a["max_message_size_derived"].is_boolean());
    assert_eq!(a["visibility_timeout_ms"], 30_000);
    assert_eq!(a["max_deliveries"], 3);
    assert_eq!(a["retention_ms"], 3_600_000);
    assert_eq!(a["dead_letter_retention_ms"], 7_200_000);
    assert_eq!(a["dedup_window_ms"], 600_000);
    assert_eq!(a["default_delay_ms"], 0);
    assert_eq!(a["default_wait_ms"], 50);
    assert_eq!(a["written_at_ms"], t0);

    let text = lanelog(&["stats", d]).stdout;
    for (name, value) in [
        ("results", "1"),
        ("keys", "1"),
        ("deadline missed (all time)", "1"),
        ("expired (all time)", "0"),
        ("dead expired (all time)", "0"),
        ("  segment size", "1.0 MiB"),
        ("  visibility timeout", "30 s"),
        ("  max deliveries", "3"),
        ("  retention", "1 h"),
        ("  dead-letter retention", "2 h"),
        ("  dedup window", "10 min"),
        ("  default delay", "none"),
        ("  default wait", "50 ms"),
    ] {
        assert!(has_row(&text, name, value), "{name}: {value}\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("  max message size") && l.contains("1023.9 KiB")),
        "{text}"
    );
    assert!(text.contains("attributes "), "{text}");
    assert!(text.contains("revision 1, written "), "{text}");

    // Peek: the keyed message, with its deadline.
    let peeked = json(&["peek", d, "--json"]);
    let m = &peeked["messages"][0];
    assert_eq!(m["id"], u64::from(prep.keyed));
    assert_eq!(m["key"], "order-7");
    assert_eq!(m["deadline_ms"], t0 + 600_000);
    assert!(m["deadline"].as_str().expect("time").ends_with('Z'));
    let table = lanelog(&["peek", d]).stdout;
    let head: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        head,
        ["ID", "LANE", "ATTEMPTS", "ENQUEUED", "DEADLINE", "KEY", "SIZE", "PAYLOAD"],
        "{table}"
    );
    assert!(table.contains("\"order-7\""), "{table}");

    // Explain the keyed message: deadline, key, and when retention takes
    // it (an hour after its enqueue).
    let keyed = u64::from(prep.keyed).to_string();
    let h = json(&["explain", d, &keyed, "--json"]);
    assert_eq!(h["state"]["state"], "ready");
    assert_eq!(h["deadline_ms"], t0 + 600_000);
    assert_eq!(h["key"], "order-7");
    assert_eq!(h["records"][0]["key"], "order-7");
    assert_eq!(h["records"][0]["deadline_ms"], t0 + 600_000);
    assert_eq!(h["records"][0]["result"], false);
    assert_eq!(h["expires_at_ms"], t0 + 3_600_000);
    assert_eq!(h["expires_by"], "retention");
    let text = lanelog(&["explain", d, &keyed]).stdout;
    assert!(text.contains("\ndeadline    "), "{text}");
    assert!(text.contains("\nkey         \"order-7\""), "{text}");
    assert!(text.contains("(retention 1 h after its enqueue)"), "{text}");

    // The completed message: its result record and when it expires.
    let completed = u64::from(prep.completed).to_string();
    let h = json(&["explain", d, &completed, "--json"]);
    assert_eq!(h["state"]["state"], "completed");
    assert_eq!(h["state"]["result_size"], 17);
    assert_eq!(h["state"]["attempts"], 1);
    assert_eq!(h["state"]["completed_at_ms"], t0);
    let records = h["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "the message and its result: {h}");
    let result: Vec<&Value> = records.iter().filter(|r| r["result"] == true).collect();
    assert_eq!(result.len(), 1, "{h}");
    assert_eq!(result[0]["size"], 17);
    assert_eq!(result[0]["current"], true);
    assert_eq!(h["expires_at_ms"], t0 + 3_600_000);
    assert_eq!(h["key"], Value::Null);
    let text = lanelog(&["explain", d, &completed]).stdout;
    assert!(text.contains("state       completed at "), "{text}");
    assert!(text.contains("a result of 17 bytes is stored"), "{text}");
    assert!(text.contains("\nresult      segment-"), "{text}");
    assert!(text.contains("result of 17 bytes stored"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let at = |name: &str| rows.iter().position(|r| *r == name);
    assert!(
        at("delivered") < at("completed") && at("completed").is_some(),
        "{text}"
    );

    // The dead letter expires by the dead-letter retention.
    let dead = u64::from(prep.dead).to_string();
    let h = json(&["explain", d, &dead, "--json"]);
    assert_eq!(h["state"]["state"], "dead");
    let since = h["state"]["since_ms"].as_u64().expect("since");
    assert_eq!(h["expires_at_ms"], since + 7_200_000);
    assert_eq!(h["expires_by"], "dead_letter_retention");
    let text = lanelog(&["explain", d, &dead]).stdout;
    assert!(
        text.contains("(dead-letter retention 2 h after it became one)"),
        "{text}"
    );

    // The missed deadline: a dead letter, and the event that made it one.
    let missed = u64::from(prep.missed).to_string();
    let h = json(&["explain", d, &missed, "--json"]);
    assert_eq!(h["state"]["state"], "dead");
    assert_eq!(h["state"]["reason"], "deadline missed");
    assert_eq!(h["deadline_ms"], t0 + 1_000);
    let events: Vec<&str> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().expect("name"))
        .collect();
    assert_eq!(events, ["deadline-missed"]);
    let text = lanelog(&["explain", d, &missed]).stdout;
    assert!(
        text.contains("deadline passed before delivery: dead letter since"),
        "{text}"
    );
    assert!(
        files(&prep.dir) == before,
        "read-only commands wrote nothing"
    );

    // Verify: clean, the attributes file checked, the result counted.
    let r = lanelog(&["verify", d, "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["results"], 1);
    let attrs: Vec<&Value> = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["kind"] == "attributes")
        .collect();
    assert_eq!(attrs.len(), 1, "{v}");
    assert_eq!(attrs[0]["name"], "attributes.lla");
    assert_eq!(attrs[0]["frames"], 9);
    let text = lanelog(&["verify", d]).stdout;
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["attributes.lla", "attributes"])),
        "{text}"
    );
    assert!(text.contains("(1 result)"), "{text}");
    prep.q.close().expect("close");
    let r = lanelog(&["verify", d]);
    assert_eq!(r.code, 0, "closed: {}{}", r.stdout, r.stderr);
}

#[test]
fn expired_messages_results_and_dead_letters_are_explained() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("q");
    // An hour and a half ago, so the clock can pass the retention without
    // running ahead of the wall clock.
    let t0 = Timestamp(SystemClock::new().now().0 - 3 * 3_600_000);
    let clock = ManualClock::new(t0);
    let q = opts(&clock).open(&dir).expect("open");
    let ready = q.enqueue(b"never read", 0).expect("enqueue");
    let done = q.enqueue(b"done", 9).expect("enqueue");
    let dead = q.enqueue(b"poison", 8).expect("enqueue");
    let d = q.dequeue().expect("dequeue").expect("done");
    q.complete(d.receipt, b"ok").expect("complete");
    let d = q.dequeue().expect("dequeue").expect("poison");
    q.dead_letter(d.receipt, "bad").expect("dead");
    clock.advance(HOUR + HOUR / 16);
    eventually(&q, "message and result expired", |s| s.expired_total == 2);
    clock.advance(HOUR);
    eventually(&q, "dead letter expired", |s| s.dead_expired_total == 1);
    let d = p(&dir);

    let s = json(&["stats", d, "--json"]);
    assert_eq!(
        (&s["expired_total"], &s["dead_expired_total"], &s["results"]),
        (&Value::from(2), &Value::from(1), &Value::from(0))
    );
    for (id, event) in [
        (ready, "retention-expired"),
        (done, "retention-expired"),
        (dead, "dead-letter-expired"),
    ] {
        let id = u64::from(id).to_string();
        let h = json(&["explain", d, &id, "--json"]);
        assert_eq!(h["state"]["state"], "expired", "{id}: {h}");
        assert_eq!(h["expires_at_ms"], Value::Null);
        let events: Vec<&str> = h["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event"].as_str().expect("name"))
            .collect();
        assert_eq!(events.last(), Some(&event), "{id}: {events:?}");
        assert_eq!(
            events.iter().filter(|e| e.ends_with("expired")).count(),
            1,
            "{id}: one removal: {events:?}"
        );
        let text = lanelog(&["explain", d, &id]).stdout;
        assert!(
            text.contains("state       expired: removed by retention (finished)"),
            "{text}"
        );
    }
    // The dead letter was never cut by the message retention.
    let h = json(&["explain", d, &u64::from(dead).to_string(), "--json"]);
    let names: Vec<&str> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["delivered", "dead-lettered", "dead-letter-expired"]);
    let text = lanelog(&["explain", d, &u64::from(done).to_string()]).stdout;
    assert!(text.contains("removed by retention at"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let completed = rows.iter().position(|r| *r == "completed");
    let cut = rows.iter().position(|r| *r == "retention-expired");
    assert!(completed.is_some() && completed < cut, "{text}");
    q.close().expect("close");
    assert_eq!(lanelog(&["verify", d]).code, 0);
}

#[test]
fn a_damaged_attributes_file_is_damage_and_a_leftover_rewrite_a_notice() {
    let prep = prepare();
    let (_tmp, dir) = (prep._tmp, prep.dir);
    prep.q.close().expect("close");
    let d = p(&dir);

    // A leftover rewrite: a notice, the directory is clean.
    let tmp_name = dir.join("attributes.lla.tmp");
    std::fs::write(&tmp_name, b"half written").expect("write");
    let (code, v) = verify_json(&dir);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["findings"].as_array().expect("findings").iter().any(|f| {
            f["severity"] == "notice"
                && f["file"] == "attributes.lla.tmp"
                && f["what"]
                    .as_str()
                    .is_some_and(|w| w.contains("open removes it"))
        }),
        "{v}"
    );
    std::fs::remove_file(&tmp_name).expect("remove");

    // One flipped bit in the retention field: checksum mismatch.
    let attrs = dir.join("attributes.lla");
    let good = std::fs::read(&attrs).expect("read");
    let mut bad = good.clone();
    bad[64] ^= 0x01;
    std::fs::write(&attrs, &bad).expect("write");
    let before = files(&dir);
    let r = lanelog(&["verify", d]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("damage attributes.lla at byte 32: the stored attributes do not decode"),
        "{}",
        r.stdout
    );
    let (code, v) = verify_json(&dir);
    assert_eq!(code, 1);
    let damage: Vec<&Value> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "damage")
        .collect();
    assert_eq!(damage.len(), 1, "only the attributes: {damage:?}");
    assert_eq!(damage[0]["file"], "attributes.lla");
    assert!(files(&dir) == before, "verify wrote nothing");
    // Open refuses it; so do the commands that read the state.
    for cmd in ["stats", "peek", "dead-letters"] {
        let r = lanelog(&[cmd, d]);
        assert_eq!(r.code, 6, "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains("attributes.lla"), "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains("lanelog verify"), "{cmd}: {}", r.stderr);
    }
    assert!(matches!(
        QueueOptions::new().open(&dir),
        Err(lanelog::Error::Corrupt { .. })
    ));

    // Values open refuses, under a good checksum: damage too.
    let mut odd = good.clone();
    odd[32..40].copy_from_slice(&1000u64.to_le_bytes()); // segment size
    let crc = crc32(&odd[32..104]);
    odd[104..108].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&attrs, &odd).expect("write");
    let (code, v) = verify_json(&dir);
    assert_eq!(code, 1);
    assert!(
        v["findings"].as_array().expect("findings").iter().any(|f| {
            f["severity"] == "damage"
                && f["file"] == "attributes.lla"
                && f["what"]
                    .as_str()
                    .is_some_and(|w| w.contains("not valid options"))
        }),
        "{v}"
    );
    std::fs::write(&attrs, &good).expect("restore");
    assert_eq!(lanelog(&["verify", d]).code, 0);
}

/// CRC-32 (IEEE), as the format uses.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn verify_json(dir: &Path) -> (i32, Value) {
    let r = lanelog(&["verify", p(dir), "--json"]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    (r.code, serde_json::from_str(&r.stdout).expect("json"))
}

#[test]
fn redrive_and_purge_keep_the_stored_attributes() {
    let prep = prepare();
    let dead = u64::from(prep.dead).to_string();
    let (_tmp, dir) = (prep._tmp, prep.dir);
    prep.q.close().expect("close");
    let d = p(&dir);
    let attrs = std::fs::read(dir.join("attributes.lla")).expect("read");
    let r = lanelog(&["redrive", d, &dead]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = lanelog(&["purge-dead", d, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "purged 1 dead letter\n", "the missed deadline");
    assert_eq!(
        std::fs::read(dir.join("attributes.lla")).expect("read"),
        attrs,
        "neither command rewrote the attributes"
    );
    let s = json(&["stats", d, "--json"]);
    assert_eq!(s["attributes"]["revision"], 1);
    assert_eq!(s["attributes"]["retention_ms"], 3_600_000);
    assert_eq!(s["attributes"]["max_deliveries"], 3);
    assert_eq!(s["attributes"]["visibility_timeout_ms"], 30_000);
    assert_eq!(s["ready"], 2, "the redriven dead letter is ready");
}

#[test]
fn a_format_version_1_directory_stores_no_attributes() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-closed");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files(&fixture) {
        std::fs::write(tmp.path().join(name), bytes).expect("copy");
    }
    let d = p(tmp.path());
    let s = json(&["stats", d, "--json"]);
    assert_eq!(s["attributes"], Value::Null);
    assert_eq!(s["format_version"], 1);
    let text = lanelog(&["stats", d]).stdout;
    assert!(
        has_row(
            &text,
            "attributes",
            "not stored (format version 1 directory; defaults apply)"
        ),
        "{text}"
    );
    let r = lanelog(&["verify", d]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("attributes.lla"), "{}", r.stdout);
}
