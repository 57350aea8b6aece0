//! `lanelog`: look into, check and tend a lanelog queue directory, and
//! measure the queue on this machine.
//!
//! Read-only commands (`stats`, `peek`, `verify`, `explain`,
//! `dead-letters`) go through [`lanelog::inspect`]: they take no lock, so
//! they work on a queue another process has open and never block or break
//! it. Commands that change the queue (`redrive`, `purge-dead`) open it the
//! normal way and so need it closed everywhere else. Every failure is one
//! line on stderr and a distinct exit status (see `EXIT_STATUS`).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lanelog::inspect::{self, History, Inspector, LockState, MessageState, Severity, VerifyReport};
use lanelog::{DeadLetter, Durability, Error, MessageId, QueueOptions, Stats, Timestamp};
use serde_json::{json, Value};

/// Success.
const OK: i32 = 0;
/// `verify` found damage.
const DAMAGED: i32 = 1;
/// Bad usage (clap uses 2 for its own errors too).
const USAGE: i32 = 2;
/// The path is missing or is not a queue directory.
const NOT_A_QUEUE: i32 = 3;
/// An unknown message id or lane.
const UNKNOWN: i32 = 4;
/// The queue is open in another process (commands that change it).
const LOCKED: i32 = 5;
/// An i/o error, or a file the queue cannot read.
const IO: i32 = 6;

const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  verify found damage
  2  usage error (also: a destructive command without --yes)
  3  the path does not exist or is not a lanelog queue directory
  4  unknown message id or lane
  5  the queue is open in another process (redrive, purge-dead)
  6  i/o error, or a queue file that cannot be read

Read-only commands (stats, peek, verify, explain, dead-letters) take no lock
and change nothing: they work while another process has the queue open, and
then say so on stderr (what they show may be a moment old).";

#[derive(Parser, Debug)]
#[command(
    name = "lanelog",
    version,
    about = "Inspect, check and tend lanelog queue directories",
    long_about = "Inspect, check and tend lanelog queue directories.\n\n\
                  Counters, the next messages, one message's history, a full check of \
                  every file, and the dead letters, read without taking the queue's \
                  lock; redrive and purge dead letters; measure the queue on this machine.",
    after_help = EXIT_STATUS,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Counters: ready messages per lane, in flight, delayed, dead, acked, disk use
    #[command(after_help = EXIT_STATUS)]
    Stats {
        /// The queue directory
        dir: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// The next messages that would be delivered, without leasing them
    ///
    /// In strict scheduling order: higher lane first, by id within a lane.
    /// Delays that have passed count as ready; leased messages are not shown.
    #[command(after_help = EXIT_STATUS)]
    Peek {
        /// The queue directory
        dir: PathBuf,
        /// Only this lane (priority 0-255)
        #[arg(long, value_name = "P", allow_negative_numbers = true)]
        lane: Option<i64>,
        /// How many messages to show
        #[arg(long, value_name = "N", default_value_t = 10)]
        limit: usize,
        /// Print JSON (payloads in full, as hex and as text when UTF-8)
        #[arg(long)]
        json: bool,
    },
    /// Check every segment, journal and checkpoint file; exit 1 if damaged
    ///
    /// Checks headers, every record's and entry's checksum and id order,
    /// torn tails against damage as recovery judges them, file sizes, the
    /// journal's file sequence, the checkpoint, and that every live message
    /// points at its record. Never modifies anything. A progress bar over
    /// the bytes goes to stderr when it is a terminal.
    #[command(after_help = EXIT_STATUS)]
    Verify {
        /// The queue directory
        dir: PathBuf,
        /// Print JSON instead of a report
        #[arg(long)]
        json: bool,
    },
    /// A message's whole history: its record, checkpoint entry and journal entries
    ///
    /// Shows the enqueue, each delivery with its attempt and lease, nacks,
    /// expiries, dead-lettering, redrives and the ack. Entries older than
    /// the newest checkpoint may have been removed; the output says so.
    #[command(after_help = EXIT_STATUS)]
    Explain {
        /// The queue directory
        dir: PathBuf,
        /// The message id
        id: u64,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// List the dead letters: id, lane, attempts, times and reason
    #[command(after_help = EXIT_STATUS)]
    DeadLetters {
        /// The queue directory
        dir: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to ready, attempts reset (one by id, or --all)
    ///
    /// Opens the queue, so no other process may have it open.
    #[command(
        after_help = EXIT_STATUS,
        override_usage = "lanelog redrive <DIR> <ID|--all>",
        group(ArgGroup::new("which").required(true).args(["id", "all"]))
    )]
    Redrive {
        /// The queue directory
        dir: PathBuf,
        /// The dead letter to redrive
        id: Option<u64>,
        /// Redrive every dead letter
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter for good (needs --yes)
    ///
    /// Opens the queue, so no other process may have it open. Without --yes
    /// it only says how many dead letters it would delete.
    #[command(after_help = EXIT_STATUS)]
    PurgeDead {
        /// The queue directory
        dir: PathBuf,
        /// Confirm: the dead letters are deleted and cannot be recovered
        #[arg(long)]
        yes: bool,
    },
    /// Measure enqueue, and dequeue+ack, in a temporary directory
    ///
    /// Producer threads enqueue the messages one call each (latency per
    /// call: p50, p99, p99.9), then one consumer dequeues and acks them in
    /// batches of 256. The directory is removed afterwards.
    #[command(after_help = EXIT_STATUS)]
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// immediate (sync every call), periodic:MS (sync every MS ms), or none
    #[arg(long, value_name = "MODE", default_value = "immediate", value_parser = parse_durability)]
    durability: Durability,
    /// Payload size: bytes, or with a K or M suffix (KiB, MiB)
    #[arg(long, value_name = "BYTES", default_value = "128", value_parser = parse_size)]
    size: usize,
    /// Producer threads
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Messages in all [default: 2000 with immediate durability, else 200000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: Option<u64>,
    /// Where to make the temporary directory (default: the system's)
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "immediate" => Ok(Durability::Immediate),
        "none" => Ok(Durability::None),
        "periodic" => Ok(Durability::Periodic(Duration::from_millis(100))),
        _ => match s.strip_prefix("periodic:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(Durability::Periodic(Duration::from_millis(ms))),
            _ => Err("expected immediate, none, or periodic:MS with MS > 0".to_string()),
        },
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 128, 1K, 4M)"))?;
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("{s:?}: unknown unit (use K or M)")),
    };
    let bytes = n
        .checked_mul(unit)
        .filter(|&b| b <= lanelog::DEFAULT_MAX_MESSAGE_SIZE)
        .ok_or_else(|| {
            format!(
                "{s:?} is over the largest payload ({} bytes)",
                lanelog::DEFAULT_MAX_MESSAGE_SIZE
            )
        })?;
    Ok(bytes)
}

/// A failure: its exit status and its one line.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// A library error about directory `dir`, as a failure.
fn lib_error(dir: &Path, e: Error) -> Failure {
    let d = dir.display();
    match e {
        Error::BadDirectory { path, detail } => {
            fail(NOT_A_QUEUE, format!("{}: {detail}", path.display()))
        }
        Error::Locked => fail(
            LOCKED,
            format!("{d}: the queue is open in another process; close it there first"),
        ),
        Error::Unknown => fail(UNKNOWN, format!("{d}: unknown message")),
        Error::InvalidArgument(what) => fail(USAGE, format!("invalid argument: {what}")),
        e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. }) => fail(
            IO,
            format!("{d}: {e} (run `lanelog verify {d}` for a full report)"),
        ),
        e => fail(IO, format!("{d}: {e}")),
    }
}

/// What a command prints on stdout, and its exit status.
struct Output {
    text: String,
    code: i32,
}

impl Output {
    fn ok(text: String) -> Output {
        Output { text, code: OK }
    }
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unexpected failure".to_string());
        eprintln!("lanelog: internal error: {what}");
    }));
    let cli = Cli::parse();
    let code = match run(cli.command) {
        Ok(out) => {
            let mut stdout = io::stdout().lock();
            match stdout
                .write_all(out.text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                // A closed pipe (`lanelog peek q | head`) is not an error.
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    eprintln!("lanelog: cannot write the output: {e}");
                    IO
                }
                _ => out.code,
            }
        }
        Err(f) => {
            eprintln!("lanelog: {}", f.message);
            f.code
        }
    };
    std::process::exit(code);
}

fn run(command: Command) -> Result<Output, Failure> {
    match command {
        Command::Stats { dir, json } => stats(&dir, json),
        Command::Peek {
            dir,
            lane,
            limit,
            json,
        } => peek(&dir, lane, limit, json),
        Command::Verify { dir, json } => verify(&dir, json),
        Command::Explain { dir, id, json } => explain(&dir, id, json),
        Command::DeadLetters { dir, json } => dead_letters(&dir, json),
        Command::Redrive { dir, id, all } => redrive(&dir, id, all),
        Command::PurgeDead { dir, yes } => purge_dead(&dir, yes),
        Command::Bench(args) => bench(&args),
    }
}

/// Open `dir` read-only and say on stderr when a queue has it open.
fn inspector(dir: &Path) -> Result<Inspector, Failure> {
    let ins = Inspector::open(dir).map_err(|e| lib_error(dir, e))?;
    match ins.lock_state() {
        LockState::Held { pid } => {
            let by = pid.map_or(String::new(), |p| format!(" (pid {p})"));
            eprintln!(
                "lanelog: note: {} is open in another process{by}: read without its lock, \
                 so this may be a moment old",
                dir.display()
            );
        }
        LockState::Unknown => eprintln!(
            "lanelog: note: cannot tell whether another process has {} open; if one has, \
             this may be a moment old",
            dir.display()
        ),
        LockState::Free => {}
    }
    Ok(ins)
}

fn lock_json(lock: LockState) -> (Value, Value) {
    match lock {
        LockState::Free => (json!(false), Value::Null),
        LockState::Held { pid } => (json!(true), json!(pid)),
        LockState::Unknown => (Value::Null, Value::Null),
    }
}

fn to_json(v: &Value) -> String {
    // Serialising a `Value` cannot fail.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

// ---- stats ----

fn stats(dir: &Path, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let s = ins.stats().map_err(|e| lib_error(dir, e))?;
    if as_json {
        let (locked, pid) = lock_json(ins.lock_state());
        let lanes: Vec<Value> = s
            .ready_per_lane
            .iter()
            .map(|&(lane, ready)| json!({"lane": lane, "ready": ready}))
            .collect();
        let v = json!({
            "dir": dir.display().to_string(),
            "locked": locked,
            "lock_pid": pid,
            "ready": s.ready,
            "ready_per_lane": lanes,
            "in_flight": s.in_flight,
            "delayed": s.delayed,
            "dead": s.dead,
            "acked_total": s.acked_total,
            "segments": s.segments,
            "bytes_on_disk": s.bytes_on_disk,
            "oldest_ready_age_ms": s.oldest_ready_age.map(|d| d.as_millis() as u64),
        });
        return Ok(Output::ok(to_json(&v)));
    }
    Ok(Output::ok(stats_text(dir, &s)))
}

fn stats_text(dir: &Path, s: &Stats) -> String {
    let mut rows = vec![row(["queue", &dir.display().to_string()])];
    rows.push(row(["ready", &s.ready.to_string()]));
    for (lane, n) in &s.ready_per_lane {
        rows.push(row([&format!("  lane {lane}"), &n.to_string()]));
    }
    rows.push(row(["in flight", &s.in_flight.to_string()]));
    rows.push(row(["delayed", &s.delayed.to_string()]));
    rows.push(row(["dead", &s.dead.to_string()]));
    rows.push(row(["acked (all time)", &s.acked_total.to_string()]));
    rows.push(row(["segments", &s.segments.to_string()]));
    rows.push(row(["on disk", &bytes(s.bytes_on_disk)]));
    let oldest = s
        .oldest_ready_age
        .map_or("-".to_string(), |d| format!("{} ago", duration(d)));
    rows.push(row(["oldest ready", &oldest]));
    table(&rows, &[])
}

// ---- peek ----

fn peek(dir: &Path, lane: Option<i64>, limit: usize, as_json: bool) -> Result<Output, Failure> {
    let lane = match lane {
        None => None,
        Some(p) => Some(u8::try_from(p).map_err(|_| {
            fail(
                UNKNOWN,
                format!("unknown lane {p}: lanes are numbered 0 to 255"),
            )
        })?),
    };
    let ins = inspector(dir)?;
    let msgs = ins.peek(lane, limit).map_err(|e| lib_error(dir, e))?;
    if as_json {
        let (locked, pid) = lock_json(ins.lock_state());
        let list: Vec<Value> = msgs
            .iter()
            .map(|m| {
                json!({
                    "id": u64::from(m.id),
                    "lane": m.priority,
                    "attempts": m.attempts,
                    "enqueued_at_ms": m.enqueued_at.0,
                    "enqueued_at": time(m.enqueued_at),
                    "size": m.payload.len(),
                    "payload_text": std::str::from_utf8(&m.payload).ok(),
                    "payload_hex": hex(&m.payload),
                    "damage": m.damage,
                })
            })
            .collect();
        let v = json!({
            "dir": dir.display().to_string(),
            "locked": locked,
            "lock_pid": pid,
            "lane": lane,
            "messages": list,
        });
        return Ok(Output::ok(to_json(&v)));
    }
    if msgs.is_empty() {
        let text = match lane {
            Some(p) => format!("lane {p} has no ready message\n"),
            None => "no ready message\n".to_string(),
        };
        return Ok(Output::ok(text));
    }
    let mut rows = vec![row([
        "ID", "LANE", "ATTEMPTS", "ENQUEUED", "SIZE", "PAYLOAD",
    ])];
    for m in &msgs {
        let payload = match &m.damage {
            Some(d) => format!("DAMAGED: {d}"),
            None => preview(&m.payload),
        };
        rows.push(row([
            &u64::from(m.id).to_string(),
            &m.priority.to_string(),
            &m.attempts.to_string(),
            &time(m.enqueued_at),
            &m.payload.len().to_string(),
            &payload,
        ]));
    }
    Ok(Output::ok(table(&rows, &[0, 1, 2, 4])))
}

// ---- verify ----

fn verify(dir: &Path, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "verifying [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let report = ins.verify(|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report.map_err(|e| lib_error(dir, e))?;
    let code = if report.is_clean() { OK } else { DAMAGED };
    let text = if as_json {
        let (locked, pid) = lock_json(ins.lock_state());
        to_json(&verify_json(dir, &report, locked, pid))
    } else {
        verify_text(dir, &report)
    };
    Ok(Output { text, code })
}

fn kind_name(kind: lanelog::codec::header::FileKind) -> &'static str {
    match kind {
        lanelog::codec::header::FileKind::Segment => "segment",
        lanelog::codec::header::FileKind::Journal => "journal",
        lanelog::codec::header::FileKind::Checkpoint => "checkpoint",
    }
}

fn frames_name(kind: lanelog::codec::header::FileKind) -> &'static str {
    match kind {
        lanelog::codec::header::FileKind::Segment => "records",
        lanelog::codec::header::FileKind::Journal => "entries",
        lanelog::codec::header::FileKind::Checkpoint => "messages",
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Damage => "damage",
        Severity::Notice => "notice",
    }
}

fn verify_json(dir: &Path, r: &VerifyReport, locked: Value, pid: Value) -> Value {
    let files: Vec<Value> = r
        .files
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": kind_name(f.kind),
                "bytes": f.bytes,
                "frames": f.frames,
                "data_end": f.data_end,
            })
        })
        .collect();
    let findings: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            json!({
                "severity": severity_name(f.severity),
                "file": f.file,
                "offset": f.offset,
                "what": f.what,
            })
        })
        .collect();
    json!({
        "dir": dir.display().to_string(),
        "locked": locked,
        "lock_pid": pid,
        "clean": r.is_clean(),
        "bytes": r.bytes,
        "records": r.records,
        "entries": r.entries,
        "live_messages": r.live_messages,
        "files": files,
        "findings": findings,
    })
}

fn verify_text(dir: &Path, r: &VerifyReport) -> String {
    let mut rows = vec![row(["FILE", "KIND", "SIZE", "FRAMES", "DATA END"])];
    for f in &r.files {
        rows.push(row([
            &f.name,
            kind_name(f.kind),
            &bytes(f.bytes),
            &format!("{} {}", f.frames, frames_name(f.kind)),
            &f.data_end.to_string(),
        ]));
    }
    let mut out = table(&rows, &[2, 4]);
    if !r.findings.is_empty() {
        out.push('\n');
    }
    for f in &r.findings {
        let place = match (&f.file, f.offset) {
            (Some(file), Some(at)) => format!("{file} at byte {at}: "),
            (Some(file), None) => format!("{file}: "),
            _ => String::new(),
        };
        let _ = writeln!(out, "{:<7}{place}{}", severity_name(f.severity), f.what);
    }
    let damage = r.damage().count();
    let summary = format!(
        "{} files, {}, {} records, {} entries, {} live messages checked",
        r.files.len(),
        bytes(r.bytes),
        r.records,
        r.entries,
        r.live_messages
    );
    let _ = if damage == 0 {
        writeln!(out, "\nclean: {} ({summary})", dir.display())
    } else {
        writeln!(
            out,
            "\nDAMAGED: {} has {damage} problem{} ({summary})",
            dir.display(),
            if damage == 1 { "" } else { "s" }
        )
    };
    out
}

// ---- explain ----

fn explain(dir: &Path, id: u64, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let h = ins.explain(MessageId::from(id)).map_err(|e| match e {
        Error::Unknown => fail(
            UNKNOWN,
            format!(
                "message {id}: no trace of it in {} (never enqueued, or finished long ago \
                 and its history removed by a checkpoint)",
                dir.display()
            ),
        ),
        e => lib_error(dir, e),
    })?;
    if as_json {
        return Ok(Output::ok(to_json(&explain_json(&h))));
    }
    Ok(Output::ok(explain_text(dir, &h)))
}

fn state_json(s: &MessageState) -> Value {
    match s {
        MessageState::Ready { priority, attempts } => {
            json!({"state": "ready", "lane": priority, "attempts": attempts})
        }
        MessageState::Delayed {
            priority,
            attempts,
            until,
        } => json!({"state": "delayed", "lane": priority, "attempts": attempts,
                    "until_ms": until.0, "until": time(*until)}),
        MessageState::InFlight {
            priority,
            attempt,
            lease_deadline,
        } => json!({"state": "in_flight", "lane": priority, "attempt": attempt,
                    "lease_deadline_ms": lease_deadline.0, "lease_deadline": time(*lease_deadline)}),
        MessageState::Dead {
            priority,
            attempts,
            reason,
            since,
        } => json!({"state": "dead", "lane": priority, "attempts": attempts,
                    "reason": reason, "since_ms": since.0, "since": time(*since)}),
        MessageState::Acked => json!({"state": "acked"}),
        MessageState::Purged => json!({"state": "purged"}),
        MessageState::Finished => json!({"state": "finished"}),
        MessageState::Lost { segment } => json!({"state": "lost", "segment": segment}),
    }
}

fn state_text(s: &MessageState) -> String {
    match s {
        MessageState::Ready { priority, attempts } => {
            format!("ready in lane {priority} ({attempts} deliveries so far)")
        }
        MessageState::Delayed {
            priority,
            attempts,
            until,
        } => format!(
            "delayed until {} in lane {priority} ({attempts} deliveries so far)",
            time(*until)
        ),
        MessageState::InFlight {
            priority,
            attempt,
            lease_deadline,
        } => format!(
            "in flight: delivery {attempt} in lane {priority}, leased until {}",
            time(*lease_deadline)
        ),
        MessageState::Dead {
            priority,
            attempts,
            reason,
            since,
        } => format!(
            "dead letter since {} after {attempts} deliveries, lane {priority}: {reason}",
            time(*since)
        ),
        MessageState::Acked => "acked (finished)".to_string(),
        MessageState::Purged => "purged from the dead letters (finished)".to_string(),
        MessageState::Finished => {
            "finished (acked or purged; the entry saying which was removed by a checkpoint)"
                .to_string()
        }
        MessageState::Lost {
            segment: Some(segment),
        } => format!(
            "LOST: not finished, but its segment {segment} is missing: it can never be delivered"
        ),
        MessageState::Lost { segment: None } => {
            "LOST: not finished, but its record is damaged or gone: it can never be delivered"
                .to_string()
        }
    }
}

fn explain_json(h: &History) -> Value {
    let records: Vec<Value> = h
        .records
        .iter()
        .map(|r| {
            json!({
                "file": r.file,
                "offset": r.offset,
                "lane": r.priority,
                "size": r.size,
                "enqueued_at_ms": r.enqueued_at.0,
                "enqueued_at": time(r.enqueued_at),
                "delay_ms": r.delay.as_millis() as u64,
                "relocated": r.relocated,
                "current": r.current,
                "damage": r.damage,
            })
        })
        .collect();
    let checkpoint = h.checkpoint.as_ref().map(|c| {
        json!({
            "number": c.number,
            "state": checkpoint_state(c.state),
            "time_ms": c.time.0,
            "attempts": c.attempts,
            "lane": c.priority,
            "reason": c.reason,
        })
    });
    let events: Vec<Value> = h
        .events
        .iter()
        .map(|e| {
            json!({
                "event": e.name(),
                "attempt": e.attempt,
                "time_ms": e.time.0,
                "time": time(e.time),
                "reason": (!e.reason.is_empty()).then_some(&e.reason),
                "file": e.file,
                "offset": e.offset,
            })
        })
        .collect();
    json!({
        "id": u64::from(h.id),
        "state": state_json(&h.state),
        "records": records,
        "checkpoint": checkpoint,
        "events": events,
        "complete": h.is_complete(),
        "first_journal_file": h.first_journal_file,
    })
}

fn checkpoint_state(s: lanelog::codec::checkpoint::CheckpointState) -> &'static str {
    match s {
        lanelog::codec::checkpoint::CheckpointState::Pending => "pending",
        lanelog::codec::checkpoint::CheckpointState::Dead => "dead",
        lanelog::codec::checkpoint::CheckpointState::InFlight => "in_flight",
    }
}

fn explain_text(dir: &Path, h: &History) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "message {} in {}", h.id, dir.display());
    let _ = writeln!(out, "state       {}", state_text(&h.state));
    for r in &h.records {
        let delay = if r.delay.is_zero() {
            String::new()
        } else {
            format!(", delayed {}", duration(r.delay))
        };
        let copy = if r.relocated { ", relocated copy" } else { "" };
        let damage = r
            .damage
            .as_ref()
            .map_or(String::new(), |d| format!(", DAMAGED: {d}"));
        let _ = writeln!(
            out,
            "record      {} at byte {}: lane {}, {} bytes{delay}{copy}{damage}",
            r.file, r.offset, r.priority, r.size
        );
    }
    if h.records.is_empty() {
        let _ = writeln!(out, "record      none found on disk");
    }
    if let Some(c) = &h.checkpoint {
        let what = match c.state {
            lanelog::codec::checkpoint::CheckpointState::Pending if c.time.0 == 0 => {
                "pending, ready".to_string()
            }
            lanelog::codec::checkpoint::CheckpointState::Pending => {
                format!("pending, ready at {}", time(c.time))
            }
            lanelog::codec::checkpoint::CheckpointState::Dead => format!(
                "dead letter since {}: {}",
                time(c.time),
                c.reason.as_deref().unwrap_or("")
            ),
            lanelog::codec::checkpoint::CheckpointState::InFlight => {
                format!("in flight, leased until {}", time(c.time))
            }
        };
        let _ = writeln!(
            out,
            "checkpoint  {}: {what} ({} deliveries so far)",
            c.number, c.attempts
        );
    }
    out.push('\n');
    let mut rows = vec![row(["EVENT", "ATTEMPT", "DETAIL", "WHERE"])];
    if let Some(r) = h
        .records
        .iter()
        .find(|r| !r.relocated)
        .or(h.records.first())
    {
        rows.push(row([
            "enqueued",
            "-",
            &format!(
                "at {}, lane {}, {} bytes",
                time(r.enqueued_at),
                r.priority,
                r.size
            ),
            &format!("{}@{}", r.file, r.offset),
        ]));
    }
    for e in &h.events {
        let detail = match e.kind {
            lanelog::codec::entry::Kind::Delivered => format!("leased until {}", time(e.time)),
            lanelog::codec::entry::Kind::LeaseExtended => {
                format!("lease extended to {}", time(e.time))
            }
            lanelog::codec::entry::Kind::Nacked if e.time.0 == 0 => "ready again at once".into(),
            lanelog::codec::entry::Kind::Nacked => format!("ready again at {}", time(e.time)),
            lanelog::codec::entry::Kind::Expired => {
                format!("lease expired (seen at {})", time(e.time))
            }
            lanelog::codec::entry::Kind::DeadLettered => {
                format!("at {}: {}", time(e.time), e.reason)
            }
            lanelog::codec::entry::Kind::Redriven => {
                format!("at {}, attempts reset", time(e.time))
            }
            lanelog::codec::entry::Kind::Purged => format!("at {}", time(e.time)),
            _ => String::new(),
        };
        rows.push(row([
            e.name(),
            &e.attempt.to_string(),
            &detail,
            &format!("{}@{}", e.file, e.offset),
        ]));
    }
    out.push_str(&table(&rows, &[1]));
    if !h.is_complete() {
        let _ = writeln!(
            out,
            "\nnote: journal files before {} were removed after a checkpoint covered them; \
             entries about this message older than that are gone",
            journal_name(h.first_journal_file.unwrap_or(0))
        );
    }
    out
}

fn journal_name(n: u64) -> String {
    format!("journal-{n:010}.jnl")
}

// ---- dead letters ----

fn dead_letters(dir: &Path, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let dead = ins.dead_letters().map_err(|e| lib_error(dir, e))?;
    if as_json {
        let (locked, pid) = lock_json(ins.lock_state());
        let list: Vec<Value> = dead.iter().map(dead_json).collect();
        let v = json!({
            "dir": dir.display().to_string(),
            "locked": locked,
            "lock_pid": pid,
            "dead_letters": list,
        });
        return Ok(Output::ok(to_json(&v)));
    }
    if dead.is_empty() {
        return Ok(Output::ok("no dead letters\n".to_string()));
    }
    let mut rows = vec![row([
        "ID",
        "LANE",
        "ATTEMPTS",
        "ENQUEUED",
        "DEAD SINCE",
        "REASON",
    ])];
    for d in &dead {
        rows.push(row([
            &d.id.to_string(),
            &d.priority.to_string(),
            &d.attempts.to_string(),
            &time(d.enqueued_at),
            &time(d.dead_at),
            &d.reason,
        ]));
    }
    Ok(Output::ok(table(&rows, &[0, 1, 2])))
}

fn dead_json(d: &DeadLetter) -> Value {
    json!({
        "id": u64::from(d.id),
        "lane": d.priority,
        "attempts": d.attempts,
        "reason": d.reason,
        "enqueued_at_ms": d.enqueued_at.0,
        "enqueued_at": time(d.enqueued_at),
        "dead_at_ms": d.dead_at.0,
        "dead_at": time(d.dead_at),
    })
}

// ---- redrive, purge-dead ----

/// Open the queue to change it: the path must be a queue directory (never
/// created here) that no other process has open.
fn open_owned(dir: &Path, what: &str) -> Result<lanelog::Queue, Failure> {
    if let LockState::Held { pid } = inspect::lock_state(dir).map_err(|e| lib_error(dir, e))? {
        let by = pid.map_or(String::new(), |p| format!(" (pid {p})"));
        return Err(fail(
            LOCKED,
            format!(
                "{}: the queue is open in another process{by}; {what} needs it closed",
                dir.display()
            ),
        ));
    }
    QueueOptions::new().open(dir).map_err(|e| match e {
        Error::Locked => fail(
            LOCKED,
            format!(
                "{}: the queue is open in another process; {what} needs it closed",
                dir.display()
            ),
        ),
        e => lib_error(dir, e),
    })
}

fn close(dir: &Path, q: lanelog::Queue) -> Result<(), Failure> {
    q.close().map_err(|e| lib_error(dir, e))
}

fn redrive(dir: &Path, id: Option<u64>, all: bool) -> Result<Output, Failure> {
    let q = open_owned(dir, "redrive")?;
    let text = match (id, all) {
        (Some(id), false) => match q.redrive(MessageId::from(id)) {
            Ok(()) => format!("redriven message {id}: ready again, attempts reset\n"),
            Err(Error::Unknown) => {
                close(dir, q)?;
                return Err(fail(
                    UNKNOWN,
                    format!("message {id} is not a dead letter in {}", dir.display()),
                ));
            }
            Err(e) => return Err(lib_error(dir, e)),
        },
        _ => {
            let n = q.redrive_all().map_err(|e| lib_error(dir, e))?;
            format!("redriven {n} dead letter{}\n", plural(n))
        }
    };
    close(dir, q)?;
    Ok(Output::ok(text))
}

fn purge_dead(dir: &Path, yes: bool) -> Result<Output, Failure> {
    if !yes {
        let ins = Inspector::open(dir).map_err(|e| lib_error(dir, e))?;
        let n = ins.dead_letters().map_err(|e| lib_error(dir, e))?.len() as u64;
        return Err(fail(
            USAGE,
            format!(
                "purge-dead would delete {n} dead letter{} for good; run it again with --yes",
                plural(n)
            ),
        ));
    }
    let q = open_owned(dir, "purge-dead")?;
    let n = q.purge_dead_letters().map_err(|e| lib_error(dir, e))?;
    close(dir, q)?;
    Ok(Output::ok(format!("purged {n} dead letter{}\n", plural(n))))
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

// ---- bench ----

fn durability_name(d: Durability) -> String {
    match d {
        Durability::Immediate => "immediate".to_string(),
        Durability::Periodic(every) => format!("periodic:{}", every.as_millis()),
        Durability::None => "none".to_string(),
    }
}

fn histogram() -> Result<Histogram<u64>, Failure> {
    // Nanoseconds, 1 ns to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .map_err(|e| fail(IO, format!("cannot make a histogram: {e}")))
}

fn bench(a: &BenchArgs) -> Result<Output, Failure> {
    let parent = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("lanelog-bench-")
        .tempdir_in(&parent)
        .map_err(|e| {
            fail(
                NOT_A_QUEUE,
                format!("{}: cannot make a directory there: {e}", parent.display()),
            )
        })?;
    let dir = tmp.path().join("queue");
    let q = QueueOptions::new()
        .durability(a.durability)
        .open(&dir)
        .map_err(|e| lib_error(&dir, e))?;
    let threads = u64::from(a.threads);
    let messages = a.messages.unwrap_or(match a.durability {
        Durability::Immediate => 2_000,
        _ => 200_000,
    });
    eprintln!("lanelog bench: in {}", tmp.path().display());
    let title = format!(
        "{messages} messages of {} B, {threads} producer thread{}, durability {}\n",
        a.size,
        plural(threads),
        durability_name(a.durability),
    );
    let payload = vec![0xA5u8; a.size];
    let bar = ProgressBar::with_draw_target(Some(messages), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("enqueue");
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<Result<Histogram<u64>, Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (q, payload, bar, next, dir) = (&q, &payload, &bar, &next, &dir);
                scope.spawn(move || -> Result<Histogram<u64>, Failure> {
                    let mut h = histogram()?;
                    let mut pending = 0;
                    // Threads take messages from one counter, so all finish together.
                    while next.fetch_add(1, Ordering::Relaxed) < messages {
                        let t0 = Instant::now();
                        q.enqueue(payload, (t % 4) as u8)
                            .map_err(|e| lib_error(dir, e))?;
                        h.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
                        pending += 1;
                        if pending == 64 {
                            bar.inc(pending);
                            pending = 0;
                        }
                    }
                    bar.inc(pending);
                    Ok(h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(fail(IO, "a producer thread failed")))
            })
            .collect()
    });
    let enqueue_time = started.elapsed();
    bar.finish_and_clear();
    let mut latency = histogram()?;
    for r in results {
        latency
            .add(r?)
            .map_err(|e| fail(IO, format!("cannot merge histograms: {e}")))?;
    }

    let bar = ProgressBar::with_draw_target(Some(messages), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("dequeue+ack");
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < messages {
        let batch = q.dequeue_up_to(256).map_err(|e| lib_error(&dir, e))?;
        if batch.is_empty() {
            break;
        }
        let receipts: Vec<_> = batch.iter().map(|d| d.receipt).collect();
        q.ack_batch(&receipts).map_err(|e| lib_error(&dir, e))?;
        consumed += receipts.len() as u64;
        bar.inc(receipts.len() as u64);
    }
    let consume_time = started.elapsed();
    bar.finish_and_clear();
    q.close().map_err(|e| lib_error(&dir, e))?;
    drop(tmp);

    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(1e-9);
    let mb = |n: u64, t: Duration| rate(n, t) * a.size as f64 / 1e6;
    let ns = |q: f64| duration(Duration::from_nanos(latency.value_at_quantile(q)));
    let mut rows = vec![row([
        "enqueue",
        &format!("{:.0} msgs/s", rate(messages, enqueue_time)),
        &format!("{:.2} MB/s", mb(messages, enqueue_time)),
        &format!("in {}", duration(enqueue_time)),
    ])];
    rows.push(row([
        "  latency",
        &format!("p50 {}", ns(0.5)),
        &format!("p99 {}", ns(0.99)),
        &format!(
            "p99.9 {}   max {}",
            ns(0.999),
            duration(Duration::from_nanos(latency.max()))
        ),
    ]));
    rows.push(row([
        "dequeue+ack",
        &format!("{:.0} msgs/s", rate(consumed, consume_time)),
        &format!("{:.2} MB/s", mb(consumed, consume_time)),
        &format!("in {}", duration(consume_time)),
    ]));
    Ok(Output::ok(title + &table(&rows, &[1, 2])))
}

// ---- formatting ----

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Rows as aligned columns (two spaces apart); columns in `right` are
/// right-aligned. The last column is never padded.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i] - c.chars().count();
            if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if d.as_secs() < 120 {
        format!("{:.2} s", d.as_secs_f64())
    } else if d.as_secs() < 7200 {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{} h {} min", d.as_secs() / 3600, d.as_secs() / 60 % 60)
    }
}

/// A time as UTC, "2026-05-02 10:31:07.123Z"; "-" for 0 (unknown).
fn time(t: Timestamp) -> String {
    if t.0 == 0 {
        return "-".to_string();
    }
    let ms = t.0 % 1000;
    let secs = t.0 / 1000;
    let (day, sod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(day as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The proleptic Gregorian date of day `z` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A payload for a table cell: quoted text when it is printable UTF-8,
/// else hex; cut to about 48 characters.
fn preview(b: &[u8]) -> String {
    const MAX: usize = 48;
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => {
            let cut: String = s.chars().take(MAX).collect();
            let more = if cut.len() < s.len() { "…" } else { "" };
            format!("{cut:?}{more}")
        }
        _ => {
            let cut = &b[..b.len().min(MAX / 2)];
            let more = if cut.len() < b.len() { "…" } else { "" };
            format!("0x{}{more}", hex(cut))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(Timestamp(1)), "1970-01-01 00:00:00.001Z");
        assert_eq!(
            time(Timestamp(1_700_000_000_123)),
            "2023-11-14 22:13:20.123Z"
        );
        assert_eq!(time(Timestamp(951_782_400_000)), "2000-02-29 00:00:00.000Z");
        assert_eq!(time(Timestamp(0)), "-");
    }

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_size("128"), Ok(128));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("5M").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(
            parse_durability("periodic:5"),
            Ok(Durability::Periodic(Duration::from_millis(5)))
        );
        assert!(parse_durability("periodic:0").is_err());
        assert!(parse_durability("sometimes").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(&[row(["A", "BB", "C"]), row(["xxx", "1", "tail"])], &[1]);
        assert_eq!(t, "A    BB  C\nxxx   1  tail\n");
        assert_eq!(preview(b"hi"), "\"hi\"");
        assert_eq!(preview(&[0, 1]), "0x0001");
    }
}
