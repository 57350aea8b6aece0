//! Goal: every `lanelog` subcommand does what `docs/cli.md` says on a
//! prepared directory, `--json` output parses back to the right values,
//! bad input gets one line and its own exit status, and read-only commands
//! work on a queue held open by this process without disturbing it.
//! Method: prepare directories with the library (several lanes, acks, a
//! nack, an expiry, a dead letter, a delayed message), run the real binary
//! and check its exit status, stdout and stderr.
#![cfg(feature = "cli")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lanelog::{Clock, Durability, ManualClock, MessageId, Queue, QueueOptions, SystemClock};
use serde_json::Value;

mod cli_support;
use cli_support::{files, lanelog, p, Run};

fn json(args: &[&str]) -> Value {
    let r = lanelog(args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("json")
}

/// Open a directory this process just closed (see [`unlocked`]).
fn reopen(dir: &Path) -> Queue {
    for _ in 0..50 {
        match QueueOptions::new().open(dir) {
            Err(lanelog::Error::Locked) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other.expect("reopen"),
        }
    }
    panic!("{}: still locked", dir.display());
}

/// One line on stderr, no panic, no backtrace.
fn one_line_error(r: &Run, code: i32, contains: &str) {
    assert_eq!(r.code, code, "stdout {} stderr {}", r.stdout, r.stderr);
    // A note that the directory is locked may come first (see `unlocked`).
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| !l.starts_with("lanelog: note:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("lanelog: "), "{}", r.stderr);
    assert!(r.stderr.contains(contains), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("backtrace"));
}

struct Prepared {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    clock: ManualClock,
    q: Queue,
    job: MessageId,
    poison: MessageId,
    delayed: MessageId,
}

fn opts(clock: &ManualClock) -> QueueOptions {
    QueueOptions::new()
        .segment_size(1 << 20)
        .journal_file_size(64 << 10)
        .durability(Durability::Immediate)
        .visibility_timeout(Duration::from_secs(30))
        .clock(Arc::new(clock.clone()))
}

/// Lane 9: a job delivered, nacked, delivered and expired, delivered and
/// acked. Lane 5: three messages, the first acked. Lane 2: a message
/// dead-lettered. Lane 1: one delayed an hour. Lane 0: two messages.
/// One lane-5 message stays in flight. The queue stays open.
fn prepare() -> Prepared {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("q");
    let clock = ManualClock::new(SystemClock::new().now());
    let q = opts(&clock).open(&dir).expect("open");
    let job = q.enqueue(b"embed doc 4411", 9).expect("enqueue");
    for i in 0..3 {
        q.enqueue(format!("resize {i}").as_bytes(), 5)
            .expect("enqueue");
    }
    let poison = q.enqueue(b"\x00garbage", 2).expect("enqueue");
    let delayed = q
        .enqueue_delayed(b"nightly report", 1, Duration::from_secs(3600))
        .expect("delayed");
    q.enqueue(b"thumb a", 0).expect("enqueue");
    q.enqueue(b"thumb b", 0).expect("enqueue");

    let d = q.dequeue().expect("dequeue").expect("job");
    assert_eq!(d.id, job);
    q.nack(d.receipt, Duration::ZERO).expect("nack");
    let d = q.dequeue().expect("dequeue").expect("job again");
    assert_eq!((d.id, d.attempt), (job, 2));
    clock.advance(Duration::from_secs(31));
    let d = q.dequeue().expect("dequeue").expect("job after expiry");
    assert_eq!((d.id, d.attempt), (job, 3));
    q.ack(d.receipt).expect("ack");
    let d = q.dequeue().expect("dequeue").expect("resize 0");
    q.ack(d.receipt).expect("ack");
    let leased = q.dequeue().expect("dequeue").expect("resize 1");
    assert_eq!(leased.payload, b"resize 1");
    let _ = q.dequeue().expect("dequeue").expect("resize 2");
    let d = q.dequeue().expect("dequeue").expect("poison");
    assert_eq!(d.id, poison);
    q.dead_letter(d.receipt, "model error: bad input")
        .expect("dead letter");
    // resize 1 and resize 2 stay leased.
    Prepared {
        _tmp: tmp,
        dir,
        clock,
        q,
        job,
        poison,
        delayed,
    }
}

impl Prepared {
    /// Close the queue (it writes a checkpoint; leases stay in flight in
    /// it until the next open).
    fn close(self) -> (tempfile::TempDir, std::path::PathBuf) {
        // `close`, not a drop: the lock is released when it returns (a
        // background thread may hold the last handle for a moment).
        self.q.close().expect("close");
        (self._tmp, self.dir)
    }
}

#[test]
fn stats_peek_dead_letters_and_explain_on_a_closed_queue() {
    let prep = prepare();
    let (job, poison) = (prep.job, prep.poison);
    let (_tmp, dir) = prep.close();
    let d = p(&dir);

    let s = lanelog(&["stats", d, "--json"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    let s: Value = serde_json::from_str(&s.stdout).expect("json");
    // Closing released nothing (leases survive a close as in flight until
    // the next open); resize 2 was leased too.
    assert_eq!(s["locked"], false);
    assert_eq!(s["in_flight"], 2);
    assert_eq!(s["ready"], 2);
    assert_eq!(s["delayed"], 1);
    assert_eq!(s["dead"], 1);
    assert_eq!(s["acked_total"], 2);
    assert_eq!(s["segments"], 1);
    assert_eq!(
        s["ready_per_lane"],
        serde_json::json!([{"lane": 0, "ready": 2}])
    );
    let text = lanelog(&["stats", d]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["in", "flight", "2"])),
        "{}",
        text.stdout
    );
    assert!(text.stderr.is_empty(), "not locked: {}", text.stderr);

    let peeked = json(&["peek", d, "--json"]);
    let msgs = peeked["messages"].as_array().expect("messages");
    let payloads: Vec<&str> = msgs
        .iter()
        .map(|m| m["payload_text"].as_str().expect("text"))
        .collect();
    assert_eq!(payloads, ["thumb a", "thumb b"]);
    assert_eq!(msgs[0]["lane"], 0);
    assert_eq!(msgs[0]["attempts"], 0);
    assert_eq!(msgs[0]["payload_hex"], "7468756d622061");
    let one = json(&["peek", d, "--json", "--limit", "1"]);
    assert_eq!(one["messages"].as_array().map(Vec::len), Some(1));
    let empty = lanelog(&["peek", d, "--lane", "7"]);
    assert_eq!(empty.code, 0);
    assert_eq!(empty.stdout, "lane 7 has no ready message\n");
    let table = lanelog(&["peek", d]);
    assert!(
        table.stdout.starts_with("ID  LANE  ATTEMPTS"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("\"thumb b\""), "{}", table.stdout);

    let dead = json(&["dead-letters", d, "--json"]);
    let dead = dead["dead_letters"].as_array().expect("list").clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], u64::from(poison));
    assert_eq!(dead[0]["reason"], "model error: bad input");
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(dead[0]["lane"], 2);

    // The close wrote a checkpoint naming the journal file it ends in,
    // without rotating it: the acked job's record is still in its segment
    // and its entries in that journal, so its whole history is told.
    let h = json(&["explain", d, &u64::from(job).to_string(), "--json"]);
    assert_eq!(h["state"]["state"], "acked");
    assert_eq!(h["complete"], true);
    assert_eq!(h["records"][0]["lane"], 9);
    let text = lanelog(&["explain", d, &u64::from(job).to_string()]);
    assert!(!text.stdout.contains("were removed"), "{}", text.stdout);
}

#[test]
fn explain_tells_the_whole_history_while_the_queue_is_open() {
    let prep = prepare();
    let d = p(&prep.dir);
    let before = files(&prep.dir);
    let r = lanelog(&["explain", d, &u64::from(prep.job).to_string(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pid = std::process::id().to_string();
    assert!(r.stderr.contains("open in another process"), "{}", r.stderr);
    assert!(r.stderr.contains(&pid), "{}", r.stderr);
    let h: Value = serde_json::from_str(&r.stdout).expect("json");
    let events: Vec<(&str, u64)> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().expect("name"),
                e["attempt"].as_u64().expect("attempt"),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("delivered", 1),
            ("nacked", 1),
            ("delivered", 2),
            ("expired", 2),
            ("delivered", 3),
            ("acked", 3)
        ]
    );
    assert_eq!(h["state"]["state"], "acked");
    assert_eq!(h["complete"], true);
    assert_eq!(h["records"][0]["size"], 14);
    let enqueued = h["records"][0]["enqueued_at_ms"].as_u64().expect("time");
    // The first lease ran 30 s from the first delivery.
    let lease = h["events"][0]["time_ms"].as_u64().expect("lease");
    assert!((enqueued + 30_000..enqueued + 31_000).contains(&lease));

    let text = lanelog(&["explain", d, &u64::from(prep.job).to_string()]);
    for word in [
        "enqueued",
        "delivered",
        "nacked",
        "expired",
        "acked",
        "leased until",
    ] {
        assert!(text.stdout.contains(word), "{word}: {}", text.stdout);
    }

    // The dead letter, the delayed one and a message in flight.
    let h = json(&["explain", d, &u64::from(prep.poison).to_string(), "--json"]);
    assert_eq!(h["state"]["state"], "dead");
    assert_eq!(h["state"]["reason"], "model error: bad input");
    assert_eq!(h["events"][1]["event"], "dead-lettered");
    let h = json(&["explain", d, &u64::from(prep.delayed).to_string(), "--json"]);
    assert_eq!(h["state"]["state"], "delayed");
    assert_eq!(h["records"][0]["delay_ms"], 3_600_000);
    let s = json(&["stats", d, "--json"]);
    assert_eq!(s["locked"], true);
    assert_eq!(s["lock_pid"], std::process::id());
    let _ = json(&["peek", d, "--json"]);
    let _ = json(&["dead-letters", d, "--json"]);
    assert!(
        files(&prep.dir) == before,
        "read-only commands wrote nothing"
    );

    // The owner never noticed.
    let q = &prep.q;
    let id = q.enqueue(b"after", 200).expect("enqueue");
    let del = q.dequeue().expect("dequeue").expect("one");
    assert_eq!(del.id, id);
    q.ack(del.receipt).expect("ack");
    prep.clock.advance(Duration::from_secs(1));
    let reopened = {
        let (_tmp, dir) = prep.close();
        let q = reopen(&dir);
        let r = q.recovery_report().clone();
        (r, _tmp)
    };
    assert!(!reopened.0.found_damage(), "{:?}", reopened.0);
}

#[test]
fn redrive_and_purge_change_the_queue_and_refuse_a_locked_one() {
    let prep = prepare();
    let d = p(&prep.dir).to_string();
    let poison = u64::from(prep.poison).to_string();
    // Held open by this process: both refuse, and change nothing.
    let before = files(&prep.dir);
    let r = lanelog(&["redrive", &d, &poison]);
    one_line_error(&r, 5, "open in another process");
    let r = lanelog(&["purge-dead", &d, "--yes"]);
    one_line_error(&r, 5, "open in another process");
    assert!(files(&prep.dir) == before);
    prep.q.enqueue(b"still mine", 0).expect("owner unaffected");
    let job = u64::from(prep.job).to_string();
    let (_tmp, dir) = prep.close();

    let r = lanelog(&["redrive", &d, &job]);
    one_line_error(&r, 4, "not a dead letter");
    let r = lanelog(&["redrive", &d]);
    assert_eq!(r.code, 2, "id or --all is required: {}", r.stderr);
    let r = lanelog(&["redrive", &d, &poison]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("redriven message {poison}")));
    assert_eq!(json(&["stats", &d, "--json"])["dead"], 0);

    // Dead-letter it again through the library, then purge.
    {
        let q = reopen(&dir);
        while let Some(del) = q.dequeue().expect("dequeue") {
            if u64::from(del.id).to_string() == poison {
                q.dead_letter(del.receipt, "still bad").expect("dead");
            } else {
                q.ack(del.receipt).expect("ack");
            }
        }
    }
    let before = files(&dir);
    let r = lanelog(&["purge-dead", &d]);
    one_line_error(&r, 2, "would delete 1 dead letter for good");
    assert!(files(&dir) == before, "nothing purged without --yes");
    let r = lanelog(&["purge-dead", &d, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "purged 1 dead letter\n");
    assert_eq!(
        json(&["dead-letters", &d, "--json"])["dead_letters"],
        serde_json::json!([])
    );
    let r = lanelog(&["redrive", &d, "--all"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "redriven 0 dead letters\n")
    );
}

#[test]
fn bad_input_gets_one_line_and_its_exit_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing");
    let r = lanelog(&["stats", p(&missing)]);
    one_line_error(&r, 3, "no such directory");
    assert!(!missing.exists(), "nothing created");
    let r = lanelog(&["redrive", p(&missing), "--all"]);
    one_line_error(&r, 3, "no such directory");
    assert!(!missing.exists(), "mutating commands create nothing either");
    let plain = tmp.path().join("plain");
    std::fs::write(&plain, b"x").expect("write");
    one_line_error(&lanelog(&["verify", p(&plain)]), 3, "not a directory");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    one_line_error(
        &lanelog(&["peek", p(&empty)]),
        3,
        "not a lanelog queue directory",
    );
    one_line_error(
        &lanelog(&["purge-dead", p(&empty), "--yes"]),
        3,
        "not a lanelog queue directory",
    );
    assert_eq!(std::fs::read_dir(&empty).expect("list").count(), 0);

    let prep = prepare();
    let (_tmp, dir) = prep.close();
    let d = p(&dir);
    one_line_error(&lanelog(&["explain", d, "999999"]), 4, "no trace");
    one_line_error(
        &lanelog(&["peek", d, "--lane", "256"]),
        4,
        "unknown lane 256",
    );
    one_line_error(&lanelog(&["peek", d, "--lane", "-1"]), 4, "unknown lane -1");
    assert_eq!(lanelog(&["explain", d, "abc"]).code, 2);
    assert_eq!(lanelog(&["frobnicate", d]).code, 2);

    // A damaged segment header: open would refuse the directory.
    let seg = dir.join("segment-0000000001.seg");
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    for cmd in ["stats", "peek", "dead-letters"] {
        one_line_error(&lanelog(&[cmd, d]), 6, "segment-0000000001.seg");
    }
    let r = lanelog(&["verify", d]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains("segment-0000000001.seg at byte 0"),
        "{}",
        r.stdout
    );
}

#[test]
fn help_is_there_for_every_command() {
    let r = lanelog(&["--help"]);
    assert_eq!(r.code, 0);
    for cmd in [
        "stats",
        "peek",
        "verify",
        "explain",
        "dead-letters",
        "redrive",
        "purge-dead",
        "bench",
    ] {
        assert!(r.stdout.contains(cmd), "{cmd}");
        let h = lanelog(&[cmd, "--help"]);
        assert_eq!(h.code, 0, "{cmd}");
        assert!(h.stdout.contains("Usage: lanelog"), "{cmd}");
        assert!(h.stdout.contains("Exit status:"), "{cmd}");
    }
    assert!(r.stdout.contains("5  the queue is open in another process"));
    assert_eq!(lanelog(&["--version"]).code, 0);
}

#[test]
fn bench_runs_and_reports_throughput_and_latency() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = lanelog(&[
        "bench",
        "--messages",
        "400",
        "--threads",
        "2",
        "--size",
        "1K",
        "--durability",
        "periodic:5",
        "--dir",
        p(tmp.path()),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for word in [
        "enqueue",
        "msgs/s",
        "MB/s",
        "p50",
        "p99",
        "p99.9",
        "dequeue+ack",
    ] {
        assert!(r.stdout.contains(word), "{word}: {}", r.stdout);
    }
    assert!(
        r.stdout
            .starts_with("400 messages of 1024 B, 2 producer threads, durability periodic:5\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("list").count(),
        0,
        "the temporary directory is removed"
    );
    let r = lanelog(&["bench", "--durability", "sometimes"]);
    assert_eq!(r.code, 2);
    let r = lanelog(&["bench", "--size", "5M"]);
    assert_eq!(r.code, 2);
}
