//! lanelog-compare: the same queue workloads on lanelog and on its peers,
//! in one run, with ratios. See README.md beside Cargo.toml.
//!
//! The parent process only plans, probes the disk and writes the report;
//! every run happens in a fresh child process (this binary re-executed with
//! the hidden `__child` subcommand) in a fresh temporary directory, and
//! returns its figures as one `RESULT` line on stdout.

mod peers;
mod report;
mod util;
mod workloads;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use workloads::Workload;

/// Compare lanelog with SQLite, Redis, fjall, yaque and a raw
/// append+fdatasync file on the same workloads, in one run.
#[derive(Parser, Debug, Clone)]
#[command(name = "lanelog-compare", version, about)]
pub struct Args {
    /// Runs per cell (each a fresh child process and directory); cells are
    /// interleaved: run r of every cell before run r+1. [default: 3, or 1
    /// with --quick]
    #[arg(long)]
    runs: Option<usize>,
    /// Rows to run, comma separated: full names (redis-list-always) or
    /// families (redis, sqlite, rawlog, yaque, lanelog, jetstream). [default: all]
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Workloads: enqueue, fsync1, fsync8, dequeue, mixed, open.
    /// [default: all]
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "128,1024")]
    sizes: Vec<usize>,
    /// Messages per run of enqueue, dequeue and mixed. [default: 200000,
    /// or 20000 with --quick]
    #[arg(long)]
    n: Option<u64>,
    /// Messages per run of fsync1 and fsync8. [default: 2000, or 200 with
    /// --quick]
    #[arg(long)]
    n_fsync: Option<u64>,
    /// Pending messages (128 B) for the open workload. [default: 10000000,
    /// or 100000 with --quick]
    #[arg(long)]
    pending: Option<u64>,
    /// Messages per batch (enqueue, dequeue, mixed).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Small N for a smoke run (see the defaults above).
    #[arg(long)]
    quick: bool,
    /// A run whose fdatasync probe reads above this many microseconds is a
    /// slow-phase run; medians use fast-phase runs when a cell has any.
    #[arg(long, default_value_t = 1000.0)]
    slow_us: f64,
    /// Seconds before a throughput run is killed (open runs get 4x).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Markdown report. [default: compare-results.md beside this crate's
    /// Cargo.toml, which compare/.gitignore ignores]
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The settings after defaults.
#[derive(Debug, Clone)]
pub struct Plan {
    pub runs: usize,
    pub peers: Vec<&'static peers::PeerInfo>,
    pub workloads: Vec<Workload>,
    pub sizes: Vec<usize>,
    pub n: u64,
    pub n_fsync: u64,
    pub pending: u64,
    pub batch: usize,
    pub slow_us: f64,
    pub timeout: Duration,
    pub out: PathBuf,
    pub redis_found: bool,
}

/// One cell: a row, a workload, a payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub peer: &'static str,
    pub w: Workload,
    pub size: usize,
}

/// Figures of the open workload.
#[derive(Debug, Clone, Default)]
pub struct OpenFigures {
    pub secs: f64,
    pub rss0: u64,
    pub rss1: u64,
    pub hwm1: u64,
    pub anon0: u64,
    pub anon1: u64,
    pub file0: u64,
    pub file1: u64,
    pub note: String,
}

/// What one run of one cell gave.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok {
        secs: f64,
        n: u64,
        /// Peak RSS of the child (plus the server's for Redis rows).
        hwm: u64,
        open: Option<OpenFigures>,
    },
    Error(String),
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct RunRec {
    pub run: usize,
    pub probe_us: f64,
    pub outcome: Outcome,
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let first = argv.next();
    let result = match first.as_deref() {
        Some("__child") => child_main(&argv.collect::<Vec<_>>()),
        Some("__open") => open_main(&argv.collect::<Vec<_>>()),
        _ => parent_main(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- child side

/// `__child PEER WORKLOAD SIZE N BATCH DIR`: one run; prints one RESULT line.
fn child_main(a: &[String]) -> Result<()> {
    let [peer, w, size, n, batch, dir] = a else {
        bail!("usage: __child PEER WORKLOAD SIZE N BATCH DIR");
    };
    let w = Workload::parse(w).ok_or_else(|| anyhow!("unknown workload {w}"))?;
    let size: usize = size.parse()?;
    let n: u64 = n.parse()?;
    let batch: usize = batch.parse()?;
    let dir = Path::new(dir);
    let line = match child_run(peer, w, size, n, batch, dir) {
        Ok(line) => format!("RESULT ok {line}"),
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.contains(peers::redisq::NOT_FOUND) {
                format!("RESULT skipped {}", peers::redisq::NOT_FOUND)
            } else {
                format!("RESULT error {}", msg.replace('\n', " "))
            }
        }
    };
    println!("{line}");
    Ok(())
}

fn child_run(
    peer: &str,
    w: Workload,
    size: usize,
    n: u64,
    batch: usize,
    dir: &Path,
) -> Result<String> {
    if w != Workload::Open {
        let out = workloads::run(peer, w, size, n, batch, dir)?;
        let hwm = util::mem_of("self").hwm + out.server_hwm.unwrap_or(0);
        return Ok(format!("secs={} n={} hwm={hwm}", out.secs, out.n));
    }
    if let Some(zset) = match peer {
        "redis-list-always" => Some(false),
        "redis-zset-always" => Some(true),
        _ => None,
    } {
        let r = peers::redisq::open_cycle(dir, zset, n, size)?;
        return Ok(format!(
            "secs={} n={n} hwm={} rss0={} rss1={} hwm1={} anon0={} anon1={} file0={} file1={} note=time from spawning redis-server on the AOF until {} answers {n}; memory of the server process",
            r.secs,
            r.loaded.hwm,
            r.empty.rss,
            r.loaded.rss,
            r.loaded.hwm,
            r.empty.anon,
            r.loaded.anon,
            r.empty.file,
            r.loaded.file,
            if zset { "ZCARD" } else { "LLEN" }
        ));
    }
    let t = Instant::now();
    peers::fill_pending(peer, dir, n, size)?;
    eprintln!("filled {n} messages in {:.1} s", t.elapsed().as_secs_f64());
    // The open itself happens in a fresh process that does nothing else.
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["__open", peer, &n.to_string()])
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("open process gave no result ({})", out.status))?;
    match line.split_once(' ') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some((_, rest)) => bail!("{rest}"),
        None => bail!("bad open result {line}"),
    }
}

/// `__open PEER N DIR`: open a filled queue in a process that does nothing
/// else, and report time and memory.
fn open_main(a: &[String]) -> Result<()> {
    let [peer, n, dir] = a else {
        bail!("usage: __open PEER N DIR");
    };
    let n: u64 = n.parse()?;
    let before = util::mem_of("self");
    match peers::open_only(peer, Path::new(dir), n) {
        Ok(o) => {
            let after = util::mem_of("self");
            println!(
                "RESULT ok secs={} n={n} hwm={} rss0={} rss1={} hwm1={} anon0={} anon1={} file0={} file1={} note={}",
                o.secs,
                after.hwm,
                before.rss,
                o.mem.rss,
                after.hwm.max(o.mem.hwm),
                before.anon,
                o.mem.anon,
                before.file,
                o.mem.file,
                o.note.replace('\n', " ")
            );
        }
        Err(e) => println!("RESULT error {}", format!("{e:#}").replace('\n', " ")),
    }
    Ok(())
}

// --------------------------------------------------------------- parent side

fn plan(args: &Args) -> Result<Plan> {
    let quick = args.quick;
    let mut chosen = Vec::new();
    if args.peers.is_empty() {
        chosen.extend(peers::PEERS.iter());
    } else {
        for want in &args.peers {
            let found: Vec<_> = peers::PEERS
                .iter()
                .filter(|p| p.name == want || p.name.starts_with(&format!("{want}-")))
                .collect();
            if found.is_empty() {
                let names: Vec<_> = peers::PEERS.iter().map(|p| p.name).collect();
                bail!("unknown peer {want}; rows: {}", names.join(", "));
            }
            for p in found {
                if !chosen.iter().any(|c: &&peers::PeerInfo| c.name == p.name) {
                    chosen.push(p);
                }
            }
        }
        // Keep the table order.
        chosen.sort_by_key(|p| peers::PEERS.iter().position(|q| q.name == p.name));
    }
    let workloads = if args.workloads.is_empty() {
        workloads::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for w in &args.workloads {
            v.push(Workload::parse(w).ok_or_else(|| {
                anyhow!("unknown workload {w}; use enqueue, fsync1, fsync8, dequeue, mixed, open")
            })?);
        }
        v.sort_by_key(|w| workloads::ALL.iter().position(|x| x == w));
        v.dedup();
        v
    };
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        bail!("--sizes needs sizes above 0");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("compare-results.md"));
    Ok(Plan {
        runs: args.runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
        peers: chosen,
        workloads,
        sizes: args.sizes.clone(),
        n: args.n.unwrap_or(if quick { 20_000 } else { 200_000 }),
        n_fsync: args.n_fsync.unwrap_or(if quick { 200 } else { 2_000 }),
        pending: args
            .pending
            .unwrap_or(if quick { 100_000 } else { 10_000_000 }),
        batch: args.batch,
        slow_us: args.slow_us,
        timeout: Duration::from_secs(args.timeout.max(1)),
        out,
        redis_found: util::on_path("redis-server"),
    })
}

/// The cells in the order they run within a round: workload, size, row, so
/// the rows of one cell run close together in time.
pub fn cells(p: &Plan) -> Vec<Cell> {
    let mut v = Vec::new();
    for &w in &p.workloads {
        let sizes: &[usize] = if w == Workload::Open {
            &[128]
        } else {
            &p.sizes
        };
        for &size in sizes {
            for peer in &p.peers {
                v.push(Cell {
                    peer: peer.name,
                    w,
                    size,
                });
            }
        }
    }
    v
}

/// Cells that are not run, with the reason shown in their place.
pub fn not_run(p: &Plan, c: &Cell) -> Option<Outcome> {
    let info = peers::info(c.peer)?;
    if c.w == Workload::Open {
        if let Some(as_) = info.open_as {
            return Some(Outcome::Skipped(format!("n/a: same files as {as_}")));
        }
        if info.jetstream {
            return Some(Outcome::Skipped(
                "n/a: a server's start, not a queue's open".to_string(),
            ));
        }
    }
    if info.redis && !p.redis_found {
        return Some(Outcome::Skipped(peers::redisq::NOT_FOUND.to_string()));
    }
    None
}

fn parent_main() -> Result<()> {
    let args = Args::parse();
    let plan = plan(&args)?;
    let cells = cells(&plan);
    let started = Instant::now();
    let when = util::utc_now();
    eprintln!(
        "lanelog-compare: {} rows, {} cells, {} runs each; N={} (fsync N={}), pending={}, batch={}; report -> {}",
        plan.peers.len(),
        cells.len(),
        plan.runs,
        plan.n,
        plan.n_fsync,
        plan.pending,
        plan.batch,
        plan.out.display()
    );
    if !plan.redis_found && plan.peers.iter().any(|p| p.redis) {
        eprintln!("note: redis-server is not on PATH: the Redis rows are shown as skipped");
    }
    let mut results: Vec<(Cell, Vec<RunRec>)> = cells.iter().map(|c| (*c, Vec::new())).collect();
    let todo = cells.iter().filter(|c| not_run(&plan, c).is_none()).count();
    for run in 0..plan.runs {
        let mut k = 0;
        for (cell, recs) in results.iter_mut() {
            if let Some(o) = not_run(&plan, cell) {
                if run == 0 {
                    recs.push(RunRec {
                        run,
                        probe_us: f64::NAN,
                        outcome: o,
                    });
                }
                continue;
            }
            k += 1;
            eprint!(
                "[run {}/{}] [{k}/{todo}] {:<20} {:<8} {:>5} B ... ",
                run + 1,
                plan.runs,
                cell.peer,
                cell.w.name(),
                cell.size
            );
            let rec = run_cell(&plan, cell, run);
            eprintln!("{}", report::brief(&rec, cell));
            recs.push(rec);
        }
    }
    let md = report::markdown(&plan, &results, &when, started.elapsed());
    std::fs::write(&plan.out, &md).with_context(|| format!("writing {}", plan.out.display()))?;
    // Stdout: the same report without the per-run appendix.
    let cut = md.find(report::APPENDIX).unwrap_or(md.len());
    println!("{}", &md[..cut]);
    eprintln!(
        "done in {:.1} min; report written to {}",
        started.elapsed().as_secs_f64() / 60.0,
        plan.out.display()
    );
    Ok(())
}

/// One run of one cell: a fresh directory, the probe, a fresh child.
fn run_cell(plan: &Plan, cell: &Cell, run: usize) -> RunRec {
    let dir = match tempfile::Builder::new()
        .prefix("lanelog-compare-")
        .tempdir_in(std::env::temp_dir())
    {
        Ok(d) => d,
        Err(e) => {
            return RunRec {
                run,
                probe_us: f64::NAN,
                outcome: Outcome::Error(format!("temporary directory: {e}")),
            }
        }
    };
    let probe_us = util::fsync_probe(dir.path()).unwrap_or(f64::NAN);
    let n = match cell.w {
        Workload::Fsync1 | Workload::Fsync8 => plan.n_fsync,
        Workload::Open => plan.pending,
        _ => plan.n,
    };
    let timeout = if cell.w == Workload::Open {
        plan.timeout * 4
    } else {
        plan.timeout
    };
    let outcome = spawn_child(cell, n, plan.batch, dir.path(), timeout)
        .unwrap_or_else(|e| Outcome::Error(format!("{e:#}")));
    // A server the child started must not outlive it (it normally stops it).
    kill_leftover_server(dir.path());
    drop(dir);
    RunRec {
        run,
        probe_us,
        outcome,
    }
}

fn spawn_child(
    cell: &Cell,
    n: u64,
    batch: usize,
    dir: &Path,
    timeout: Duration,
) -> Result<Outcome> {
    let exe = std::env::current_exe()?;
    let err_path = dir.join("child.stderr");
    let mut child = Command::new(exe)
        .arg("__child")
        .args([
            cell.peer,
            cell.w.name(),
            &cell.size.to_string(),
            &n.to_string(),
            &batch.to_string(),
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Outcome::Error(format!(
                "timeout: killed after {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text)?;
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Ok(Outcome::Error(format!("child failed ({status}): {last}")));
    };
    parse_result(line)
}

/// Parse `ok k=v k=v ... note=free text`, `error reason`, `skipped reason`.
fn parse_result(line: &str) -> Result<Outcome> {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    match kind {
        "error" => return Ok(Outcome::Error(rest.to_string())),
        "skipped" => return Ok(Outcome::Skipped(rest.to_string())),
        "ok" => {}
        other => bail!("bad child result {other}"),
    }
    let (fields, note) = match rest.split_once(" note=") {
        Some((f, n)) => (f, Some(n.to_string())),
        None => (rest, None),
    };
    let mut secs = f64::NAN;
    let mut n = 0;
    let mut hwm = 0;
    let mut open = OpenFigures::default();
    let mut is_open = note.is_some();
    for kv in fields.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("bad field {kv}"))?;
        let int = || v.parse::<u64>().map_err(|e| anyhow!("{k}: {e}"));
        match k {
            "secs" => secs = v.parse()?,
            "n" => n = int()?,
            "hwm" => hwm = int()?,
            "rss0" => open.rss0 = int()?,
            "rss1" => open.rss1 = int()?,
            "hwm1" => open.hwm1 = int()?,
            "anon0" => open.anon0 = int()?,
            "file0" => open.file0 = int()?,
            "file1" => open.file1 = int()?,
            "anon1" => {
                open.anon1 = int()?;
                is_open = true;
            }
            _ => {}
        }
    }
    open.secs = secs;
    open.note = note.unwrap_or_default();
    Ok(Outcome::Ok {
        secs,
        n,
        hwm,
        open: is_open.then_some(open),
    })
}

fn kill_leftover_server(dir: &Path) {
    let pid_file = peers::redisq::pid_file(dir);
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    // Only a redis-server still running from this directory's pid file.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("redis-server") {
        eprintln!("(stopping leftover redis-server {pid})");
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}
