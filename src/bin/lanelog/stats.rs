//! `lanelog stats`: the counters `Queue::stats` gives and the attributes
//! the directory stores, read without the lock, as a table or JSON.
//!
//! Invariants: a directory without stored attributes says why (format
//! version 1, or a first open cut short) and that the defaults apply; JSON
//! durations are whole milliseconds, `null` where an attribute means "for
//! ever".

use std::path::Path;

use lanelog::inspect::StoredAttributes;
use lanelog::Stats;
use serde_json::{json, Value};

use crate::format::{bytes, duration, row, span, table, time};
use crate::{inspector, lib_error, lock_json, to_json, Failure, Output};

pub(crate) fn stats(dir: &Path, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let s = ins.stats().map_err(|e| lib_error(dir, e))?;
    let attrs = ins.attributes().map_err(|e| lib_error(dir, e))?;
    let version = ins.format_version().map_err(|e| lib_error(dir, e))?;
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
            "results": s.results,
            "keys": s.keys,
            "acked_total": s.acked_total,
            "deadline_missed_total": s.deadline_missed_total,
            "expired_total": s.expired_total,
            "dead_expired_total": s.dead_expired_total,
            "segments": s.segments,
            "bytes_on_disk": s.bytes_on_disk,
            "oldest_ready_age_ms": s.oldest_ready_age.map(|d| d.as_millis() as u64),
            "format_version": version,
            "attributes": attrs.as_ref().map(attributes_json),
        });
        return Ok(Output::ok(to_json(&v)));
    }
    Ok(Output::ok(stats_text(dir, &s, attrs.as_ref(), version)))
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn attributes_json(a: &StoredAttributes) -> Value {
    json!({
        "revision": a.revision,
        "written_at_ms": a.written_at.0,
        "written_at": time(a.written_at),
        "segment_size": a.segment_size,
        "max_message_size": a.max_message_size,
        "max_message_size_derived": a.max_message_size_derived,
        "visibility_timeout_ms": ms(a.visibility_timeout),
        "max_deliveries": a.max_deliveries,
        "retention_ms": a.retention.map(ms),
        "dead_letter_retention_ms": a.dead_letter_retention.map(ms),
        "dedup_window_ms": ms(a.dedup_window),
        "default_delay_ms": ms(a.default_delay),
        "default_wait_ms": ms(a.default_wait),
    })
}

fn stats_text(dir: &Path, s: &Stats, a: Option<&StoredAttributes>, version: u32) -> String {
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
    rows.push(row(["results", &s.results.to_string()]));
    rows.push(row(["keys", &s.keys.to_string()]));
    rows.push(row(["acked (all time)", &s.acked_total.to_string()]));
    rows.push(row([
        "deadline missed (all time)",
        &s.deadline_missed_total.to_string(),
    ]));
    rows.push(row(["expired (all time)", &s.expired_total.to_string()]));
    rows.push(row([
        "dead expired (all time)",
        &s.dead_expired_total.to_string(),
    ]));
    rows.push(row(["segments", &s.segments.to_string()]));
    rows.push(row(["on disk", &bytes(s.bytes_on_disk)]));
    let oldest = s
        .oldest_ready_age
        .map_or("-".to_string(), |d| format!("{} ago", duration(d)));
    rows.push(row(["oldest ready", &oldest]));
    match a {
        None if version < 2 => rows.push(row([
            "attributes",
            &format!("not stored (format version {version} directory; defaults apply)"),
        ])),
        None => rows.push(row([
            "attributes",
            "not stored (defaults apply; the next open stores them)",
        ])),
        Some(a) => {
            rows.push(row([
                "attributes",
                &format!("revision {}, written {}", a.revision, time(a.written_at)),
            ]));
            attribute_rows(&mut rows, a);
        }
    }
    table(&rows, &[])
}

fn attribute_rows(rows: &mut Vec<Vec<String>>, a: &StoredAttributes) {
    let forever = |d: Option<std::time::Duration>| d.map_or("kept for ever".to_string(), span);
    let deliveries = match a.max_deliveries {
        0 => "no limit".to_string(),
        n => n.to_string(),
    };
    let max_size = if a.max_message_size_derived {
        format!(
            "{} (default for the segment size)",
            bytes(a.max_message_size)
        )
    } else {
        bytes(a.max_message_size)
    };
    for (name, value) in [
        ("segment size", bytes(a.segment_size)),
        ("max message size", max_size),
        ("visibility timeout", span(a.visibility_timeout)),
        ("max deliveries", deliveries),
        ("retention", forever(a.retention)),
        ("dead-letter retention", forever(a.dead_letter_retention)),
        ("dedup window", span(a.dedup_window)),
        ("default delay", span(a.default_delay)),
        ("default wait", span(a.default_wait)),
    ] {
        rows.push(row([&format!("  {name}"), &value]));
    }
}
