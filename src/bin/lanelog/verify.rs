//! `lanelog verify`: check every file (segments, journal, checkpoint and
//! the stored attributes), with a progress bar over the bytes on stderr;
//! exit status 1 when there is damage.
//!
//! Invariants: the exit status depends only on whether the report is clean
//! (notices never fail it), and the report is printed whole either way.

use std::fmt::Write as _;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lanelog::inspect::VerifyReport;
use serde_json::{json, Value};

use crate::format::{bytes, plural, row, table};
use crate::{inspector, lib_error, lock_json, to_json, Failure, Output, DAMAGED, OK};

pub(crate) fn verify(dir: &Path, as_json: bool) -> Result<Output, Failure> {
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

fn verify_json(dir: &Path, r: &VerifyReport, locked: Value, pid: Value) -> Value {
    let files: Vec<Value> = r
        .files
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": f.kind.to_string(),
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
                "severity": f.severity.to_string(),
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
        "results": r.results,
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
            &f.kind.to_string(),
            &bytes(f.bytes),
            &format!("{} {}", f.frames, f.kind.frames_name()),
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
        let _ = writeln!(out, "{:<7}{place}{}", f.severity, f.what);
    }
    let damage = r.damage().count();
    let results = match r.results {
        0 => String::new(),
        n => format!(" ({n} result{})", plural(n)),
    };
    let summary = format!(
        "{} files, {}, {} records{results}, {} entries, {} live messages checked",
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
