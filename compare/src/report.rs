//! Medians, ratios and the Markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use crate::peers::{self, PEERS};
use crate::util::{median, thousands};
use crate::workloads::Workload;
use crate::{Cell, Outcome, Plan, RunRec};

/// Heading of the per-run appendix (stdout stops before it).
pub const APPENDIX: &str = "## Appendix: every run";

/// Summary of one cell over its runs.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Median msgs/s.
    pub msgs: Option<f64>,
    /// Median peak RSS in bytes.
    pub hwm: Option<f64>,
    /// Only slow-phase runs were available.
    pub slow_only: bool,
    /// Runs that failed while others succeeded.
    pub failed: usize,
    /// Runs the median was taken over.
    pub used: usize,
    /// Why there is no figure.
    pub problem: Option<String>,
    pub open: Option<OpenSummary>,
}

#[derive(Debug, Clone, Default)]
pub struct OpenSummary {
    pub secs: f64,
    pub n: u64,
    pub rss_after: f64,
    pub rss_per_msg: f64,
    pub peak_per_msg: f64,
    pub anon_per_msg: f64,
    pub file_per_msg: f64,
    pub note: String,
}

fn size_label(size: usize) -> String {
    match size {
        1024 => "1KiB".into(),
        s if s % 1024 == 0 => format!("{}KiB", s / 1024),
        s => format!("{s}B"),
    }
}

fn clean(s: &str, max: usize) -> String {
    let s: String = s.replace(['|', '\n'], " ").chars().take(max).collect();
    s
}

fn problem_text(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Ok { .. } => None,
        Outcome::Error(e) => Some(format!("error: {}", clean(e, 90))),
        Outcome::Skipped(r) if r.starts_with("n/a") => Some(clean(r, 90)),
        Outcome::Skipped(r) => Some(format!("skipped ({})", clean(r, 90))),
    }
}

/// The progress line's ending for one run.
pub fn brief(rec: &RunRec, cell: &Cell) -> String {
    let probe = format!("probe {:.0} µs", rec.probe_us);
    match &rec.outcome {
        Outcome::Ok {
            secs,
            n,
            open: Some(o),
            ..
        } => format!(
            "open {:.3} s, RSS {:.1} B/msg ({probe})",
            secs,
            o.rss1.saturating_sub(o.rss0) as f64 / (*n).max(1) as f64
        ),
        Outcome::Ok { secs, n, .. } => {
            let rate = *n as f64 / secs;
            format!(
                "{} msgs/s, {:.1} MB/s ({probe})",
                thousands(rate),
                rate * cell.size as f64 / 1e6
            )
        }
        other => format!("{} ({probe})", problem_text(other).unwrap_or_default()),
    }
}

pub fn summarize(plan: &Plan, recs: &[RunRec]) -> Summary {
    let oks: Vec<&RunRec> = recs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Ok { .. }))
        .collect();
    let mut s = Summary::default();
    if oks.is_empty() {
        s.problem = recs.iter().find_map(|r| problem_text(&r.outcome));
        return s;
    }
    s.failed = recs.len() - oks.len();
    let fast: Vec<&RunRec> = oks
        .iter()
        .copied()
        .filter(|r| r.probe_us.is_nan() || r.probe_us <= plan.slow_us)
        .collect();
    let chosen = if fast.is_empty() {
        s.slow_only = true;
        oks
    } else {
        fast
    };
    s.used = chosen.len();
    let field = |f: &dyn Fn(&RunRec) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = chosen.iter().filter_map(|r| f(r)).collect();
        median(&mut v)
    };
    s.msgs = field(&|r| match r.outcome {
        Outcome::Ok { secs, n, .. } => Some(n as f64 / secs),
        _ => None,
    });
    s.hwm = field(&|r| match r.outcome {
        Outcome::Ok { hwm, .. } => Some(hwm as f64),
        _ => None,
    });
    let opens: Vec<(u64, &crate::OpenFigures)> = chosen
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ok {
                n, open: Some(o), ..
            } => Some((*n, o)),
            _ => None,
        })
        .collect();
    if let Some(&(n, last)) = opens.last() {
        let per = |f: &dyn Fn(&crate::OpenFigures) -> f64| -> f64 {
            let mut v: Vec<f64> = opens.iter().map(|(_, o)| f(o)).collect();
            median(&mut v).unwrap_or(f64::NAN)
        };
        let nn = n.max(1) as f64;
        s.open = Some(OpenSummary {
            secs: per(&|o| o.secs),
            n,
            rss_after: per(&|o| o.rss1 as f64),
            rss_per_msg: per(&|o| (o.rss1 as f64 - o.rss0 as f64) / nn),
            peak_per_msg: per(&|o| (o.hwm1 as f64 - o.rss0 as f64) / nn),
            anon_per_msg: per(&|o| (o.anon1 as f64 - o.anon0 as f64) / nn),
            file_per_msg: per(&|o| (o.file1 as f64 - o.file0 as f64) / nn),
            note: last.note.clone(),
        });
    }
    s
}

struct Table<'a> {
    plan: &'a Plan,
    results: &'a [(Cell, Vec<RunRec>)],
}

impl Table<'_> {
    fn summary(&self, peer: &str, w: Workload, size: usize) -> Option<Summary> {
        self.results
            .iter()
            .find(|(c, _)| c.peer == peer && c.w == w && c.size == size)
            .map(|(_, recs)| summarize(self.plan, recs))
    }

    fn value(&self, peer: &str, w: Workload, size: usize) -> Option<f64> {
        self.summary(peer, w, size).and_then(|s| s.msgs)
    }

    fn columns(&self) -> Vec<(Workload, usize)> {
        let mut cols = Vec::new();
        for &w in &self.plan.workloads {
            if w == Workload::Open {
                continue;
            }
            for &size in &self.plan.sizes {
                cols.push((w, size));
            }
        }
        cols
    }

    fn header(&self, first: &str, extra: &[&str]) -> String {
        let cols = self.columns();
        let mut h = format!("| {first} |");
        let mut sep = String::from("|---|");
        for (w, size) in &cols {
            let _ = write!(h, " {} {} |", w.title(), size_label(*size));
            sep.push_str("---:|");
        }
        for e in extra {
            let _ = write!(h, " {e} |");
            sep.push_str("---:|");
        }
        format!("{h}\n{sep}\n")
    }
}

fn row_name(p: &peers::PeerInfo) -> String {
    if p.durable {
        p.name.to_string()
    } else {
        format!("{} ¹", p.name)
    }
}

fn ratio_text(a: Option<Summary>, b: Option<Summary>) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return "–".into();
    };
    match (a.msgs, b.msgs) {
        (Some(x), Some(y)) if y > 0.0 => format!(
            "{:.2}×{}",
            x / y,
            if a.slow_only != b.slow_only {
                " ≠"
            } else {
                ""
            }
        ),
        _ => "–".into(),
    }
}

pub fn markdown(
    plan: &Plan,
    results: &[(Cell, Vec<RunRec>)],
    when: &str,
    took: Duration,
) -> String {
    let t = Table { plan, results };
    let mut md = String::new();
    let cols = t.columns();
    let _ = writeln!(md, "# lanelog-compare results\n");
    let _ = writeln!(
        md,
        "{when}; {} run(s) per cell, interleaved, each in a fresh child process and temporary directory; took {:.1} min.  ",
        plan.runs,
        took.as_secs_f64() / 60.0
    );
    let _ = writeln!(
        md,
        "N = {} messages per throughput run (fsync-per-message: {}), batch = {}, pending for open = {}.  ",
        thousands(plan.n as f64),
        thousands(plan.n_fsync as f64),
        plan.batch,
        thousands(plan.pending as f64)
    );
    let _ = writeln!(md, "Machine: {}.  ", machine());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(
        md,
        "Command: `cargo run --release --manifest-path compare/Cargo.toml -- {}`\n",
        args.join(" ")
    );
    let _ = writeln!(
        md,
        "Medians over the fast-phase runs of each cell (fdatasync probe ≤ {:.0} µs); † = only slow-phase runs were available for that cell; ‡ = some runs of the cell failed (see the appendix). ¹ = not durable per call (see the legend): compare those rows with `lanelog-none`. In the ratio tables ≠ marks a ratio of two figures from different disk phases (one cell had fast-phase runs, the other only slow ones).\n",
        plan.slow_us
    );

    if !cols.is_empty() {
        let _ = writeln!(md, "## Throughput (msgs/s, median)\n");
        md.push_str(&t.header("row", &["peak RSS MiB"]));
        for p in &plan.peers {
            let mut line = format!("| {} |", row_name(p));
            let mut peak: f64 = 0.0;
            for &(w, size) in &cols {
                let s = t.summary(p.name, w, size).unwrap_or_default();
                let cell = match s.msgs {
                    Some(v) => format!(
                        "{}{}{}",
                        thousands(v),
                        if s.slow_only { " †" } else { "" },
                        if s.failed > 0 { " ‡" } else { "" }
                    ),
                    None => s.problem.clone().unwrap_or_else(|| "–".into()),
                };
                peak = peak.max(s.hwm.unwrap_or(0.0));
                let _ = write!(line, " {cell} |");
            }
            let _ = writeln!(
                line,
                " {} |",
                if peak > 0.0 {
                    format!("{:.0}", peak / (1 << 20) as f64)
                } else {
                    "–".into()
                }
            );
            md.push_str(&line);
        }
        let _ = writeln!(md);

        let _ = writeln!(md, "## Throughput (MB/s of payload, median)\n");
        md.push_str(&t.header("row", &[]));
        for p in &plan.peers {
            let mut line = format!("| {} |", row_name(p));
            for &(w, size) in &cols {
                let s = t.summary(p.name, w, size).unwrap_or_default();
                let cell = match s.msgs {
                    Some(v) => format!("{:.1}", v * size as f64 / 1e6),
                    None => "–".into(),
                };
                let _ = write!(line, " {cell} |");
            }
            line.push('\n');
            md.push_str(&line);
        }
        let _ = writeln!(md);

        if plan.peers.iter().any(|p| p.name == "lanelog") {
            let _ = writeln!(
                md,
                "## lanelog ÷ row (ratio of msgs/s; above 1 = lanelog is faster)\n"
            );
            md.push_str(&t.header("lanelog (Immediate) ÷", &[]));
            for p in plan.peers.iter().filter(|p| p.name != "lanelog") {
                let mut line = format!("| {} |", row_name(p));
                for &(w, size) in &cols {
                    let _ = write!(
                        line,
                        " {} |",
                        ratio_text(t.summary("lanelog", w, size), t.summary(p.name, w, size))
                    );
                }
                line.push('\n');
                md.push_str(&line);
            }
            let _ = writeln!(md);
        }
        let loose: Vec<_> = plan
            .peers
            .iter()
            .filter(|p| !p.durable && p.name != "lanelog-none")
            .collect();
        if plan.peers.iter().any(|p| p.name == "lanelog-none") && !loose.is_empty() {
            let _ = writeln!(md, "## lanelog-none ÷ the other non-durable rows\n");
            md.push_str(&t.header("lanelog-none ÷", &[]));
            for p in loose {
                let mut line = format!("| {} |", row_name(p));
                for &(w, size) in &cols {
                    let _ = write!(
                        line,
                        " {} |",
                        ratio_text(
                            t.summary("lanelog-none", w, size),
                            t.summary(p.name, w, size)
                        )
                    );
                }
                line.push('\n');
                md.push_str(&line);
            }
            let _ = writeln!(md);
        }
    }

    if plan.workloads.contains(&Workload::Open) {
        let _ = writeln!(
            md,
            "## Open with {} pending messages of 128 B (after a clean close)\n",
            thousands(plan.pending as f64)
        );
        let _ = writeln!(
            md,
            "Open time: from the open call until the queue can serve, in a fresh process that only opens (Redis: a fresh redis-server on the AOF, until LLEN/ZCARD answers). Memory from /proc/PID/status of that process: RSS after the open, and per pending message the growth of VmRSS, of VmHWM (peak) of RssAnon (heap) and of RssFile (mapped file pages) over the process before the open (Redis: over an empty server).\n"
        );
        let _ = writeln!(
            md,
            "| row | open time | RSS after open MiB | RSS B/msg | peak B/msg | anon B/msg | file-backed B/msg | what the open found |\n|---|---:|---:|---:|---:|---:|---:|---|"
        );
        for p in &plan.peers {
            let s = t.summary(p.name, Workload::Open, 128).unwrap_or_default();
            match s.open {
                Some(o) => {
                    let _ = writeln!(
                        md,
                        "| {} | {}{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                        p.name,
                        fmt_secs(o.secs),
                        if s.slow_only { " †" } else { "" },
                        o.rss_after / (1 << 20) as f64,
                        o.rss_per_msg,
                        o.peak_per_msg,
                        o.anon_per_msg,
                        o.file_per_msg,
                        clean(&o.note, 160)
                    );
                }
                None => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | | | | | | |",
                        p.name,
                        s.problem.unwrap_or_else(|| "–".into())
                    );
                }
            }
        }
        let _ = writeln!(md);
    }

    md.push_str(&targets(&t));
    md.push_str(&probes(plan, results));

    let _ = writeln!(md, "## Rows: durability and semantics\n");
    let _ = writeln!(
        md,
        "| row | durable per call | what a call does |\n|---|---|---|"
    );
    for p in &plan.peers {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            p.name,
            if p.durable { "yes" } else { "**no**" },
            p.what.replace('|', "/")
        );
    }
    let _ = writeln!(
        md,
        "\nlanelog's dequeue+ack is at-least-once (a delivered state, leases, redelivery); the SQLite, Redis and fjall rows are at-most-once (the message is gone when the pop commits), rawlog and yaque acknowledge by position. Workloads: enqueue = durable batches of {b}; fsync/msg = one durable call per message, N = {nf}, from 1 thread or 8 threads sharing the queue (lanelog: 8 threads calling `enqueue`, group commit; SQLite and rawlog: one handle behind a Mutex; Redis: a connection per thread; fjall: the shared database; yaque: the one Sender behind a Mutex); dequeue+ack = batches of {b} after an untimed prefill; 1 prod + 1 cons = two threads on one queue, batches of {b}, timed until the consumer has all N.\n",
        b = plan.batch,
        nf = plan.n_fsync
    );

    let _ = writeln!(md, "{APPENDIX}\n");
    let _ = writeln!(
        md,
        "| cell | run | probe µs | result | peak RSS MiB |\n|---|---:|---:|---|---:|"
    );
    for (cell, recs) in results {
        for r in recs {
            let (res, hwm) = match &r.outcome {
                Outcome::Ok { hwm, .. } => (
                    brief(r, cell)
                        .split(" (probe")
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    format!("{:.0}", *hwm as f64 / (1 << 20) as f64),
                ),
                o => (problem_text(o).unwrap_or_default(), String::new()),
            };
            let _ = writeln!(
                md,
                "| {} {} {} | {} | {} | {} | {} |",
                cell.peer,
                cell.w.name(),
                size_label(cell.size),
                r.run + 1,
                if r.probe_us.is_finite() {
                    format!("{:.0}", r.probe_us)
                } else {
                    "–".into()
                },
                res,
                hwm
            );
        }
    }
    md
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// The performance targets (docs/benchmarks.md, "Targets") that this run
/// can check.
fn targets(t: &Table) -> String {
    let mut out = String::new();
    let have = |name: &str| t.plan.peers.iter().any(|p| p.name == name);
    if !have("lanelog") {
        return out;
    }
    let durable_peers: Vec<&str> = PEERS
        .iter()
        .filter(|p| {
            p.durable && p.name != "lanelog" && !p.name.starts_with("rawlog") && have(p.name)
        })
        .map(|p| p.name)
        .collect();
    let best = |w: Workload, size: usize, names: &[&str]| -> Option<(f64, String)> {
        names
            .iter()
            .filter_map(|n| t.value(n, w, size).map(|v| (v, n.to_string())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let raw = |w, size| best(w, size, &["rawlog", "rawlog-prealloc"]);
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let check = |got: Option<f64>, want: f64| got.map(|g| g >= want);
    for &size in &t.plan.sizes {
        let sl = size_label(size);
        for (w, raw_want, peer_want) in [
            (Workload::Enqueue, 0.9, 1.0),
            (Workload::Dequeue, 0.9, 1.5),
            (Workload::Mixed, 0.9, 1.5),
        ] {
            if !t.plan.workloads.contains(&w) {
                continue;
            }
            let l = t.value("lanelog", w, size);
            if let (Some(l), Some((r, rn))) = (l, raw(w, size)) {
                rows.push((
                    format!("{} {sl}: ≥ {raw_want}× the raw limit", w.title()),
                    format!("{:.2}× {rn}", l / r),
                    check(Some(l / r), raw_want),
                ));
            }
            if let (Some(l), Some((b, bn))) = (l, best(w, size, &durable_peers)) {
                rows.push((
                    format!("{} {sl}: ≥ {peer_want}× the best durable peer", w.title()),
                    format!("{:.2}× {bn}", l / b),
                    check(Some(l / b), peer_want),
                ));
            }
        }
        if t.plan.workloads.contains(&Workload::Fsync8) {
            let l8 = t.value("lanelog", Workload::Fsync8, size);
            if let (Some(l8), Some(l1)) = (l8, t.value("lanelog", Workload::Fsync1, size)) {
                rows.push((
                    format!("fsync/msg {sl}: 8 producers ≥ 5× one producer"),
                    format!("{:.2}×", l8 / l1),
                    check(Some(l8 / l1), 5.0),
                ));
            }
            if let (Some(l8), Some((b, bn))) = (l8, best(Workload::Fsync8, size, &durable_peers)) {
                rows.push((
                    format!("fsync/msg {sl}, 8 producers: ≥ 3× the best durable peer"),
                    format!("{:.2}× {bn}", l8 / b),
                    check(Some(l8 / b), 3.0),
                ));
            }
        }
    }
    if let (Some(n), Some(y)) = (
        t.value("lanelog-none", Workload::Enqueue, 128),
        t.value("yaque", Workload::Enqueue, 128),
    ) {
        rows.push((
            "`Durability::None` batch enqueue 128B ≥ 1.0× yaque".into(),
            format!("{:.2}×", n / y),
            check(Some(n / y), 1.0),
        ));
    }
    if let Some(o) = t
        .summary("lanelog", Workload::Open, 128)
        .and_then(|s| s.open)
    {
        let ten_m = o.n >= 10_000_000;
        rows.push((
            format!(
                "open of 10 million pending < 1 s{}",
                if ten_m {
                    String::new()
                } else {
                    format!(" (measured at {}, not 10M)", thousands(o.n as f64))
                }
            ),
            fmt_secs(o.secs),
            if ten_m { Some(o.secs < 1.0) } else { None },
        ));
        rows.push((
            "≤ 32 bytes of RAM per pending message: heap (RssAnon) growth; whole RSS growth, which adds mapped file pages, in brackets".into(),
            format!("{:.1} B ({:.1} B)", o.anon_per_msg, o.rss_per_msg),
            Some(o.anon_per_msg <= 32.0),
        ));
    }
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(out, "## Targets this run can check (docs/benchmarks.md)\n");
    let _ = writeln!(out, "| target | lanelog | met |\n|---|---:|---|");
    for (what, fig, ok) in rows {
        let _ = writeln!(
            out,
            "| {what} | {fig} | {} |",
            match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    let _ = writeln!(out);
    out
}

fn probes(plan: &Plan, results: &[(Cell, Vec<RunRec>)]) -> String {
    let mut out = String::new();
    let all: Vec<(&Cell, &RunRec)> = results
        .iter()
        .flat_map(|(c, recs)| recs.iter().map(move |r| (c, r)))
        .filter(|(_, r)| r.probe_us.is_finite())
        .collect();
    let _ = writeln!(
        out,
        "## fdatasync probe (16 × 4 KiB into a preallocated file, median, before every run)\n"
    );
    if all.is_empty() {
        let _ = writeln!(out, "No run was probed.\n");
        return out;
    }
    let mut v: Vec<f64> = all.iter().map(|(_, r)| r.probe_us).collect();
    let med = median(&mut v).unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "{} runs: median {:.0} µs, min {:.0} µs, max {:.0} µs.  ",
        v.len(),
        med,
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN)
    );
    for run in 0..plan.runs {
        let mut r: Vec<f64> = all
            .iter()
            .filter(|(_, x)| x.run == run)
            .map(|(_, x)| x.probe_us)
            .collect();
        if let Some(m) = median(&mut r) {
            let _ = writeln!(
                out,
                "Round {}: median {m:.0} µs, min {:.0}, max {:.0}.  ",
                run + 1,
                r[0],
                r[r.len() - 1]
            );
        }
    }
    let slow: Vec<_> = all
        .iter()
        .filter(|(_, r)| r.probe_us > plan.slow_us)
        .collect();
    let _ = writeln!(
        out,
        "\nSlow-phase runs (probe > {:.0} µs): {} of {}.",
        plan.slow_us,
        slow.len(),
        all.len()
    );
    let fast: Vec<_> = all
        .iter()
        .filter(|(_, r)| r.probe_us <= plan.slow_us)
        .collect();
    // List whichever group is smaller; the appendix has every run's probe.
    let (label, group) = if slow.len() <= fast.len() {
        ("Slow-phase runs", slow)
    } else {
        ("Most runs were slow; the fast-phase runs were", fast)
    };
    if !group.is_empty() {
        let list: Vec<String> = group
            .iter()
            .map(|(c, r)| {
                format!(
                    "{} {} {} run {} ({:.0} µs)",
                    c.peer,
                    c.w.name(),
                    size_label(c.size),
                    r.run + 1,
                    r.probe_us
                )
            })
            .collect();
        let _ = writeln!(out, "{label}: {}.", list.join("; "));
    }
    let _ = writeln!(out);
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .and_then(|s| s.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "not found".into());
    format!("{cpu}, {cores} cores, Linux {kernel}, redis-server {redis}")
}
