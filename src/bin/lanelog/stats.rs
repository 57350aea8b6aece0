//! `lanelog stats`: the counters `Queue::stats` gives, read without the
//! lock, as a table or JSON.

use std::path::Path;

use lanelog::Stats;
use serde_json::{json, Value};

use crate::format::{bytes, duration, row, table};
use crate::{inspector, lib_error, lock_json, to_json, Failure, Output};

pub(crate) fn stats(dir: &Path, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let s = ins.stats().map_err(|e| lib_error(dir, e))?;
    if as_json {
        let (locked, pid) = lock_json(ins.lock_state());
        let lanes: Vec<Value> = s
            .ready_per_lane
            .iter()
            .map(|l| json!({"lane": l.priority, "ready": l.ready}))
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
    for l in &s.ready_per_lane {
        rows.push(row([
            &format!("  lane {}", l.priority),
            &l.ready.to_string(),
        ]));
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
