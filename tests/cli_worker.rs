//! Goal: `lanelog worker` processes compute the runs `lanelog infer --nats`
//! submits: two workers share one run, each row computed once; a worker
//! killed with SIGKILL gives its jobs back when their lease ends and
//! another worker computes them; every row comes back with the bundled
//! model's predictions. A server that is not there is a one-line error
//! naming its URL, not a hang.
//! Method: a real nats-server on loopback (`testkit::nats`), the real
//! binary, the CSV output checked row by row against the model called
//! directly; the kill comes once the run's 20th job has a stored
//! result (read from the jobs stream by `lanelog::nats`). Every wait is
//! bounded.
#![cfg(all(feature = "infer-cli", feature = "nats"))]

mod cli_support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::digits::*;
use cli_support::{lanelog, p};
use lanelog::nats::NatsOptions;
use lanelog::{JobQueue, MessageId, MessageStatus};
use testkit::nats::{free_port, Server};
use testkit::watchdog::Watchdog;

/// Past this a test has hung (each passes in seconds to a minute).
const HUNG_AFTER: Duration = Duration::from_secs(300);

/// A child process killed (SIGKILL) when dropped, so a failed test leaves
/// none behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Wait for the exit, at most `limit`; its status, stdout and stderr.
    fn finish(mut self, limit: Duration) -> (i32, String, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                let mut out = String::new();
                let mut err = String::new();
                use std::io::Read as _;
                if let Some(mut o) = self.0.stdout.take() {
                    o.read_to_string(&mut out).expect("stdout");
                }
                if let Some(mut e) = self.0.stderr.take() {
                    e.read_to_string(&mut err).expect("stderr");
                }
                return (status.code().unwrap_or(-1), out, err);
            }
            assert!(
                Instant::now() < end,
                "the process did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_lanelog"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lanelog"),
    )
}

/// The lease every process of these tests uses: short, so a killed
/// worker's jobs come back soon.
const LEASE: &str = "2s";

/// `command` with what every process of one deployment shares: the
/// server, the prefix, the lease and the model file.
fn shared<'a>(command: &'a str, url: &'a str) -> Vec<&'a str> {
    vec![
        command, "--nats", url, "--prefix", "w", "--lease", LEASE, "--model", MODEL,
    ]
}

/// A `lanelog worker` on `url`; returns once it says it is serving (its
/// queues are made), with the rest of its stderr left to read.
fn worker(url: &str, extra: &[&str]) -> Proc {
    let mut args = shared("worker", url);
    args.extend_from_slice(&["--parallel", "1", "--batch", "64"]);
    args.extend_from_slice(extra);
    let mut w = spawn(&args);
    let stderr: ChildStderr = w.0.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .next()
        .expect("the worker says it runs")
        .expect("read stderr");
    assert!(first.contains("running model digits_mlp"), "{first}");
    // The rest of its stderr is drained so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    w
}

/// `lanelog infer --nats` of `input` into `output`, computing nothing
/// itself (`--parallel 0`): every row is a worker's.
fn submit(url: &str, input: &Path, output: &Path) -> Proc {
    let mut args = shared("infer", url);
    args.extend_from_slice(&["--parallel", "0", "--batch", "4"]);
    args.extend_from_slice(&["--input", p(input), "--output", p(output)]);
    spawn(&args)
}

/// The rows a worker's summary says it computed.
fn computed(stdout: &str) -> usize {
    let n = stdout
        .strip_prefix("worker: ")
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("a worker summary: {stdout:?}"));
    n.parse().expect("a count")
}

/// An input table: its file, its rows, and the model's predictions for
/// the digits (row `k`'s are `want[k % want.len()]`).
struct Table {
    path: std::path::PathBuf,
    rows: Vec<(String, Vec<u8>, u8)>,
    want: Vec<Vec<f32>>,
}

impl Table {
    /// `n` digit rows written as CSV in `dir`.
    fn new(dir: &Path, n: usize) -> Table {
        let digits = digits();
        let rows: Vec<(String, Vec<u8>, u8)> = table(&digits, n, "r")
            .into_iter()
            .map(|(id, px, l)| (id, px.to_vec(), l))
            .collect();
        let want = direct(&digits.iter().map(|d| d.0.clone()).collect::<Vec<_>>());
        let path = dir.join("in.csv");
        write_csv(&path, &Table::borrowed(&rows), false);
        Table { path, rows, want }
    }

    fn borrowed(rows: &[(String, Vec<u8>, u8)]) -> Vec<(String, &[u8], u8)> {
        rows.iter()
            .map(|(i, px, l)| (i.clone(), &px[..], *l))
            .collect()
    }

    /// `output` has every row, in order, with its prediction.
    fn check(&self, output: &Path) {
        check_csv(output, &Table::borrowed(&self.rows), &self.want, false);
    }
}

#[test]
fn two_workers_share_one_run_each_row_once() {
    let _hung = Watchdog::arm("two_workers_share_one_run_each_row_once", HUNG_AFTER);
    let server = Server::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = Table::new(tmp.path(), 3000);
    let out = tmp.path().join("out.csv");
    let a = worker(&url, &["--exit-when-idle", "3s"]);
    let b = worker(&url, &["--exit-when-idle", "3s"]);
    let (code, stdout, stderr) = submit(&url, &t.path, &out).finish(Duration::from_secs(120));
    assert_eq!(code, 0, "stdout {stdout} stderr {stderr}");
    t.check(&out);
    let (ca, sa, ea) = a.finish(Duration::from_secs(60));
    let (cb, sb, eb) = b.finish(Duration::from_secs(60));
    assert_eq!((ca, cb), (0, 0), "a: {sa} {ea}; b: {sb} {eb}");
    let (na, nb) = (computed(&sa), computed(&sb));
    println!("worker a computed {na} rows, worker b {nb}");
    assert_eq!(na + nb, t.rows.len(), "each row computed once: {sa} {sb}");
    assert!(na > 0 && nb > 0, "both workers computed rows: {na}, {nb}");
}

#[test]
fn a_killed_workers_jobs_are_computed_by_another() {
    let _hung = Watchdog::arm("a_killed_workers_jobs_are_computed_by_another", HUNG_AFTER);
    let server = Server::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = Table::new(tmp.path(), 3000);
    let out = tmp.path().join("out.csv");
    // Worker a alone, until the run's 20th job has its result stored:
    // then a has acked jobs and holds others, and is killed with some of
    // them unfinished.
    let a = worker(&url, &[]);
    let jobs = NatsOptions::new()
        .prefix("w_jobs")
        .visibility_timeout(Duration::from_secs(2))
        .max_deliveries(0)
        .open(&url)
        .expect("open the jobs queue");
    let submitter = submit(&url, &t.path, &out);
    let end = Instant::now() + Duration::from_secs(60);
    // The 20th job, not the first: a worker stores a job's result, then
    // acks it, so a kill right after the first result may leave that job
    // unacked (redelivered and computed again by b, its stored result
    // standing). By the 20th result, a has acked the jobs of its earlier
    // takes.
    while jobs.status(MessageId::from(20)).expect("status") != MessageStatus::Completed {
        assert!(Instant::now() < end, "worker a computed nothing in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(a); // SIGKILL
    jobs.close().expect("close");
    let b = worker(&url, &["--exit-when-idle", "4s"]);
    let (code, stdout, stderr) = submitter.finish(Duration::from_secs(120));
    assert_eq!(code, 0, "stdout {stdout} stderr {stderr}");
    t.check(&out);
    let (cb, sb, eb) = b.finish(Duration::from_secs(60));
    assert_eq!(cb, 0, "{sb} {eb}");
    let nb = computed(&sb);
    println!(
        "after the kill, worker b computed {nb} of {} rows",
        t.rows.len()
    );
    assert!(
        nb < t.rows.len(),
        "worker a's rows stored before the kill stand: {nb}"
    );
}

#[test]
fn no_server_is_a_clear_error_naming_the_url() {
    let _hung = Watchdog::arm("no_server_is_a_clear_error_naming_the_url", HUNG_AFTER);
    let url = format!("nats://127.0.0.1:{}", free_port());
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = Table::new(tmp.path(), 10);
    let inp = &t.path;
    let out = tmp.path().join("out.csv");
    let started = Instant::now();
    let r = lanelog(&[
        "worker",
        "--nats",
        &url,
        "--model",
        MODEL,
        "--parallel",
        "1",
    ]);
    assert_eq!(r.code, 9, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    let r = lanelog(&[
        "infer",
        "--nats",
        &url,
        "--model",
        MODEL,
        "--input",
        p(inp),
        "--output",
        p(&out),
    ]);
    assert_eq!(r.code, 9, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert!(!out.exists());
    println!("both refused in {:?}", started.elapsed());
    // Usage: worker needs --nats; --parallel 0 needs --nats; --dir and
    // --nats are exclusive.
    let r = lanelog(&["worker", "--model", MODEL]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--nats URL"), "{}", r.stderr);
    let r = lanelog(&[
        "infer",
        "--model",
        MODEL,
        "--input",
        p(inp),
        "--output",
        p(&out),
        "--parallel",
        "0",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--parallel 0"), "{}", r.stderr);
    let d = tmp.path().join("d");
    let r = lanelog(&[
        "infer",
        "--nats",
        &url,
        "--dir",
        p(&d),
        "--model",
        MODEL,
        "--input",
        p(inp),
        "--output",
        p(&out),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--dir and --nats"), "{}", r.stderr);
    assert!(!out.exists());
}
