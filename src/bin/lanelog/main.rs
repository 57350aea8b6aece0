//! `lanelog`: look into, check and tend a lanelog queue directory, measure
//! the queue on this machine, run an ONNX model over a table file
//! (`infer`, feature `infer-cli`), and serve runs queued on NATS JetStream
//! (`worker`, features `infer-cli` and `nats`).
//!
//! Read-only commands (`stats`, `peek`, `verify`, `explain`,
//! `dead-letters`) go through [`lanelog::inspect`]: they take no lock, so
//! they work on a queue another process has open and never block or break
//! it. Commands that change the queue (`redrive`, `purge-dead`) open it the
//! normal way and so need it closed everywhere else. Every failure is one
//! line on stderr and a distinct exit status (see `EXIT_STATUS`).
//!
//! This file holds the command line, the exit statuses, the mapping from
//! library errors to them, and the dispatch; each command has its own file
//! (`tend` holds `redrive` and `purge-dead`; `worker` also the `--nats`
//! options `infer` shares), and `format` the table, size,
//! duration, time, hex and payload helpers they print with.
//!
//! Invariants: a command returns its whole stdout text and its exit status
//! as one `Output`, or one `Failure`; only `main` writes to stdout, and
//! a command writes to stderr only for notes and progress bars. Read-only
//! commands open the directory through `inspector`, never as a queue.

#![forbid(unsafe_code)]

mod bench;
mod dead_letters;
mod explain;
mod format;
#[cfg(feature = "infer-cli")]
mod infer;
mod peek;
mod stats;
mod tend;
mod verify;
#[cfg(feature = "infer-cli")]
mod worker;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Parser, Subcommand};
use lanelog::inspect::{Inspector, LockState};
use lanelog::Error;
use serde_json::{json, Value};

use bench::BenchArgs;

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
  5  the queue is open in another process (redrive, purge-dead; infer: --dir)
  6  i/o error, or a queue file that cannot be read (infer: also a missing
     or unreadable model or input file)
  7  infer: the model or the input cannot be used (not ONNX, CSV or Arrow;
     a missing or non-numeric column; rows of the wrong width)
  8  infer: the output was written, but some rows failed (see out.error)
  9  infer --nats, worker: the NATS server cannot be reached or refused

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
                  lock; redrive and purge dead letters; measure the queue on this machine; \
                  run an ONNX model over a CSV or Arrow file (infer).",
    after_help = EXIT_STATUS,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Counters (ready per lane, in flight, delayed, dead, results, keys, totals, disk use) and the stored attributes
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
    /// In strict scheduling order: higher lane first, deadlines first within
    /// a lane, then by id. Delays that have passed count as ready; leased
    /// messages are not shown. Deadlines and idempotency keys are shown when
    /// a message has one.
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
    /// Check every segment, journal, checkpoint and attributes file; exit 1 if damaged
    ///
    /// Checks headers, every record's and entry's checksum and id order,
    /// torn tails against damage as recovery judges them, file sizes, the
    /// journal's file sequence, the checkpoint, the stored attributes, and
    /// that every live message and stored result points at its record.
    /// Never modifies anything. A progress bar over
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
    /// Shows the deadline and idempotency key, the enqueue, each delivery
    /// with its attempt and lease, nacks, expiries, dead-lettering (a missed
    /// deadline included), redrives, the ack or the completion with its
    /// stored result, removals by retention, and when retention will remove
    /// it. Entries older than the newest checkpoint may have been removed;
    /// the output says so.
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
    /// Run an ONNX model over every row of a CSV or Arrow IPC file; resumable with --dir
    ///
    /// Reads --input, runs the model through an inference service (on --dir,
    /// or on a temporary directory removed at the end) and writes --output:
    /// `time`, the input columns as `in.<name>`, the prediction as
    /// `out.<output>` (a list column in Arrow, `out.<output>.<i>` columns in
    /// CSV) and `out.error` (null, or why the row failed), in input order.
    /// With --dir, the same command run again after a kill or Ctrl-C finds
    /// its run (by the model's and the input's hashes) and computes only the
    /// rows not stored yet; the priority and deadline of the first try stay.
    /// Nothing is written to --output unless the whole table is done.
    #[cfg(feature = "infer-cli")]
    #[command(after_help = EXIT_STATUS)]
    Infer(infer::InferArgs),
    /// Run an ONNX model over a CSV or Arrow file (not in this build: needs the `infer-cli` feature)
    #[cfg(not(feature = "infer-cli"))]
    #[command(disable_help_flag = true)]
    Infer {
        #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Compute the rows of runs queued on NATS JetStream with an ONNX model, until Ctrl-C
    ///
    /// Runs --parallel workers of the model against the queues of --nats URL
    /// and --prefix: the runs `lanelog infer --nats` submits there, from any
    /// host, with the same model file. Start as many workers, on as many
    /// hosts, as the load needs; a worker killed or cut off gives its jobs
    /// back when their --lease ends. Ctrl-C or SIGTERM stops it cleanly (the
    /// jobs it holds go back at once); --exit-when-idle stops it once no row
    /// has come for that long. Prints its counts when it stops.
    #[cfg(feature = "infer-cli")]
    #[command(after_help = EXIT_STATUS)]
    Worker(worker::WorkerArgs),
    /// Compute runs queued on NATS JetStream (not in this build: needs the `infer-cli` and `nats` features)
    #[cfg(not(feature = "infer-cli"))]
    #[command(disable_help_flag = true)]
    Worker {
        #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        Command::Stats { dir, json } => stats::stats(&dir, json),
        Command::Peek {
            dir,
            lane,
            limit,
            json,
        } => peek::peek(&dir, lane, limit, json),
        Command::Verify { dir, json } => verify::verify(&dir, json),
        Command::Explain { dir, id, json } => explain::explain(&dir, id, json),
        Command::DeadLetters { dir, json } => dead_letters::dead_letters(&dir, json),
        Command::Redrive { dir, id, all } => tend::redrive(&dir, id, all),
        Command::PurgeDead { dir, yes } => tend::purge_dead(&dir, yes),
        Command::Bench(args) => bench::bench(&args),
        #[cfg(feature = "infer-cli")]
        Command::Infer(args) => infer::infer(&args),
        #[cfg(not(feature = "infer-cli"))]
        Command::Infer { .. } => Err(fail(
            USAGE,
            "infer is not in this build of lanelog: build it with the `infer-cli` feature \
             (cargo install --path . --features infer-cli)",
        )),
        #[cfg(feature = "infer-cli")]
        Command::Worker(args) => worker::worker(&args),
        #[cfg(not(feature = "infer-cli"))]
        Command::Worker { .. } => Err(fail(
            USAGE,
            "worker is not in this build of lanelog: build it with the `infer-cli` and `nats` \
             features (cargo install --path . --features infer-cli,nats)",
        )),
    }
}

/// Open `dir` read-only and say on stderr when a queue has it open.
fn inspector(dir: &Path) -> Result<Inspector, Failure> {
    let ins = Inspector::open(dir).map_err(|e| lib_error(dir, e))?;
    match ins.lock_state() {
        LockState::Held { pid, .. } => {
            let by = pid.map_or(String::new(), |p| format!(" (pid {p})"));
            eprintln!(
                "lanelog: note: {} is open in another process{by}: read without its lock, \
                 so this may be a moment old",
                dir.display()
            );
        }
        LockState::Free => {}
        // Unknown (or a state this build does not name): say so.
        _ => eprintln!(
            "lanelog: note: cannot tell whether another process has {} open; if one has, \
             this may be a moment old",
            dir.display()
        ),
    }
    Ok(ins)
}

/// The JSON `locked` and `lock_pid` fields for a lock state (both null
/// when it is unknown).
fn lock_json(lock: LockState) -> (Value, Value) {
    match lock {
        LockState::Free => (json!(false), Value::Null),
        LockState::Held { pid, .. } => (json!(true), json!(pid)),
        _ => (Value::Null, Value::Null),
    }
}

/// Pretty JSON and a newline.
fn to_json(v: &Value) -> String {
    // Serialising a `Value` cannot fail.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}
