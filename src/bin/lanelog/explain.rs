//! `lanelog explain`: one message's whole history (its record, its
//! checkpoint entry, every journal entry about it) as a table or JSON.
//!
//! Invariants: every event is printed with the file and offset it was read
//! from, and when older journal files are gone the text says so, naming
//! the oldest file left.

use std::fmt::Write as _;
use std::path::Path;

use lanelog::inspect::{CheckpointState, EventKind, History, MessageState};
use lanelog::{Error, MessageId};
use serde_json::{json, Value};

use crate::format::{duration, row, table, time};
use crate::{fail, inspector, lib_error, to_json, Failure, Output, UNKNOWN};

pub(crate) fn explain(dir: &Path, id: u64, as_json: bool) -> Result<Output, Failure> {
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
        MessageState::Ready {
            priority, attempts, ..
        } => {
            json!({"state": "ready", "lane": priority, "attempts": attempts})
        }
        MessageState::Delayed {
            priority,
            attempts,
            until,
            ..
        } => json!({"state": "delayed", "lane": priority, "attempts": attempts,
                    "until_ms": until.0, "until": time(*until)}),
        MessageState::InFlight {
            priority,
            attempt,
            lease_deadline,
            ..
        } => json!({"state": "in_flight", "lane": priority, "attempt": attempt,
                    "lease_deadline_ms": lease_deadline.0, "lease_deadline": time(*lease_deadline)}),
        MessageState::Dead {
            priority,
            attempts,
            reason,
            since,
            ..
        } => json!({"state": "dead", "lane": priority, "attempts": attempts,
                    "reason": reason, "since_ms": since.0, "since": time(*since)}),
        MessageState::Acked => json!({"state": "acked"}),
        MessageState::Purged => json!({"state": "purged"}),
        MessageState::Finished => json!({"state": "finished"}),
        MessageState::Lost { segment, .. } => json!({"state": "lost", "segment": segment}),
        _ => json!({"state": "unknown"}),
    }
}

fn state_text(s: &MessageState) -> String {
    match s {
        MessageState::Ready {
            priority, attempts, ..
        } => {
            format!("ready in lane {priority} ({attempts} deliveries so far)")
        }
        MessageState::Delayed {
            priority,
            attempts,
            until,
            ..
        } => format!(
            "delayed until {} in lane {priority} ({attempts} deliveries so far)",
            time(*until)
        ),
        MessageState::InFlight {
            priority,
            attempt,
            lease_deadline,
            ..
        } => format!(
            "in flight: delivery {attempt} in lane {priority}, leased until {}",
            time(*lease_deadline)
        ),
        MessageState::Dead {
            priority,
            attempts,
            reason,
            since,
            ..
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
            ..
        } => format!(
            "LOST: not finished, but its segment {segment} is missing: it can never be delivered"
        ),
        MessageState::Lost { segment: None, .. } => {
            "LOST: not finished, but its record is damaged or gone: it can never be delivered"
                .to_string()
        }
        _ => "in a state this build of lanelog cannot name".to_string(),
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
            "state": c.state.to_string(),
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
            CheckpointState::Pending if c.time.0 == 0 => "pending, ready".to_string(),
            CheckpointState::Pending => {
                format!("pending, ready at {}", time(c.time))
            }
            CheckpointState::Dead => format!(
                "dead letter since {}: {}",
                time(c.time),
                c.reason.as_deref().unwrap_or("")
            ),
            CheckpointState::InFlight => {
                format!("in flight, leased until {}", time(c.time))
            }
            other => format!("{other} at {}", time(c.time)),
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
            EventKind::Delivered => format!("leased until {}", time(e.time)),
            EventKind::LeaseExtended => {
                format!("lease extended to {}", time(e.time))
            }
            EventKind::Nacked if e.time.0 == 0 => "ready again at once".into(),
            EventKind::Nacked => format!("ready again at {}", time(e.time)),
            EventKind::Expired => {
                format!("lease expired (seen at {})", time(e.time))
            }
            EventKind::DeadLettered => {
                format!("at {}: {}", time(e.time), e.reason)
            }
            EventKind::Redriven => {
                format!("at {}, attempts reset", time(e.time))
            }
            EventKind::Purged => format!("at {}", time(e.time)),
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
            h.first_journal_file_name().unwrap_or_default()
        );
    }
    out
}
