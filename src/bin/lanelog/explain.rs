//! `lanelog explain`: one message's whole history (its record, its
//! checkpoint entry, every journal entry about it) as a table or JSON.
//!
//! Invariants: every event is printed with the file and offset it was read
//! from, and when older journal files are gone the text says so, naming
//! the oldest file left. The deadline and key shown are the message
//! record's (a result record has neither); the completion comes from the
//! result record, which the journal does not repeat.

use std::fmt::Write as _;
use std::path::Path;

use lanelog::inspect::{CheckpointState, EventKind, History, MessageState, RecordInfo};
use lanelog::{Error, MessageId};
use serde_json::{json, Value};

use crate::format::{duration, preview, row, span, table, time};
use crate::{fail, inspector, lib_error, to_json, Failure, Output, UNKNOWN};

pub(crate) fn explain(dir: &Path, id: u64, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let attrs = ins.attributes().map_err(|e| lib_error(dir, e))?;
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
    // What removes it when, as the stored attributes say.
    let rule = match (&h.state, &attrs) {
        (MessageState::Dead { .. }, Some(a)) => a
            .dead_letter_retention
            .map(|r| ("dead_letter_retention", r)),
        (_, Some(a)) => a.retention.map(|r| ("retention", r)),
        (_, None) => None,
    };
    let expiry = h
        .expires_at
        .zip(rule)
        .map(|(at, (by, r))| Expiry { at, by, r });
    if as_json {
        return Ok(Output::ok(to_json(&explain_json(&h, expiry.as_ref()))));
    }
    Ok(Output::ok(explain_text(dir, &h, expiry.as_ref())))
}

/// When the queue removes the message, and by which attribute.
struct Expiry {
    at: lanelog::Timestamp,
    /// "retention" or "dead_letter_retention".
    by: &'static str,
    r: std::time::Duration,
}

/// The message's own record (not a result record), the original rather
/// than a relocated copy when both are there.
fn message_record(h: &History) -> Option<&RecordInfo> {
    let own = || h.records.iter().filter(|r| !r.result);
    own().find(|r| !r.relocated).or_else(|| own().next())
}

/// The stored result's record, the current one when known.
fn result_record(h: &History) -> Option<&RecordInfo> {
    let results = || h.records.iter().filter(|r| r.result);
    results()
        .find(|r| r.current)
        .or_else(|| results().find(|r| !r.relocated))
        .or_else(|| results().next())
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
        MessageState::Completed {
            priority,
            attempts,
            at,
            result_size,
            ..
        } => json!({"state": "completed", "lane": priority, "attempts": attempts,
                    "completed_at_ms": at.0, "completed_at": time(*at),
                    "result_size": result_size}),
        MessageState::Acked => json!({"state": "acked"}),
        MessageState::Purged => json!({"state": "purged"}),
        MessageState::Expired => json!({"state": "expired"}),
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
        MessageState::Completed {
            priority,
            attempts,
            at,
            result_size,
            ..
        } => format!(
            "completed at {} after {attempts} deliver{}, lane {priority}: \
             a result of {result_size} bytes is stored",
            time(*at),
            if *attempts == 1 { "y" } else { "ies" }
        ),
        MessageState::Acked => "acked (finished)".to_string(),
        MessageState::Purged => "purged from the dead letters (finished)".to_string(),
        MessageState::Expired => "expired: removed by retention (finished)".to_string(),
        MessageState::Finished => "finished (acked, purged or expired; the entry saying which \
                                   was removed by a checkpoint)"
            .to_string(),
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

fn explain_json(h: &History, expiry: Option<&Expiry>) -> Value {
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
                "deadline_ms": r.deadline.map(|t| t.0),
                "deadline": r.deadline.map(time),
                "key": r.key,
                "result": r.result,
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
            "time": time(c.time),
            "deadline_ms": c.deadline.map(|t| t.0),
            "deadline": c.deadline.map(time),
            "attempts": c.attempts,
            "lane": c.priority,
            "reason": c.reason,
        })
    });
    let own = message_record(h);
    let deadline = own.and_then(|r| r.deadline);
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
        "deadline_ms": deadline.map(|t| t.0),
        "deadline": deadline.map(time),
        "key": own.and_then(|r| r.key.clone()),
        "expires_at_ms": expiry.map(|e| e.at.0),
        "expires_at": expiry.map(|e| time(e.at)),
        "expires_by": expiry.map(|e| e.by),
        "records": records,
        "checkpoint": checkpoint,
        "events": events,
        "complete": h.is_complete(),
        "first_journal_file": h.first_journal_file,
    })
}

fn explain_text(dir: &Path, h: &History, expiry: Option<&Expiry>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "message {} in {}", h.id, dir.display());
    let _ = writeln!(out, "state       {}", state_text(&h.state));
    let own = message_record(h);
    if let Some(d) = own.and_then(|r| r.deadline) {
        let _ = writeln!(out, "deadline    {}", time(d));
    }
    if let Some(k) = own.and_then(|r| r.key.as_deref()) {
        let _ = writeln!(out, "key         {}", preview(k.as_bytes()));
    }
    if let Some(e) = expiry {
        let rule = match e.by {
            "dead_letter_retention" => {
                format!("dead-letter retention {} after it became one", span(e.r))
            }
            _ => format!("retention {} after its enqueue", span(e.r)),
        };
        let _ = writeln!(out, "expires     {} ({rule})", time(e.at));
    }
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
        let _ = if r.result {
            writeln!(
                out,
                "result      {} at byte {}: {} bytes, stored at {}{copy}{damage}",
                r.file,
                r.offset,
                r.size,
                time(r.enqueued_at)
            )
        } else {
            writeln!(
                out,
                "record      {} at byte {}: lane {}, {} bytes{delay}{copy}{damage}",
                r.file, r.offset, r.priority, r.size
            )
        };
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
            CheckpointState::Completed => format!("completed at {}", time(c.time)),
            other => format!("{other} at {}", time(c.time)),
        };
        let deadline = c
            .deadline
            .map_or(String::new(), |d| format!(", deadline {}", time(d)));
        let _ = writeln!(
            out,
            "checkpoint  {}: {what} ({} deliveries so far){deadline}",
            c.number, c.attempts
        );
    }
    out.push('\n');
    let mut rows = vec![row(["EVENT", "ATTEMPT", "DETAIL", "WHERE"])];
    if let Some(r) = own {
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
    let completed = result_record(h).map(|r| {
        row([
            "completed",
            "-",
            &format!(
                "at {}, result of {} bytes stored",
                time(r.enqueued_at),
                r.size
            ),
            &format!("{}@{}", r.file, r.offset),
        ])
    });
    // The completion finished the message: only a retention cut follows it.
    let cut_at = h
        .events
        .iter()
        .position(|e| e.kind == EventKind::RetentionExpired)
        .unwrap_or(h.events.len());
    let mut completed = completed.into_iter();
    for (i, e) in h.events.iter().enumerate() {
        if i == cut_at {
            rows.extend(completed.by_ref());
        }
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
            EventKind::DeadlineMissed => format!(
                "deadline passed before delivery: dead letter since {}",
                time(e.time)
            ),
            EventKind::RetentionExpired => format!("removed by retention at {}", time(e.time)),
            EventKind::DeadExpired => format!(
                "dead letter removed by dead-letter retention at {}",
                time(e.time)
            ),
            _ => String::new(),
        };
        rows.push(row([
            e.name(),
            &e.attempt.to_string(),
            &detail,
            &format!("{}@{}", e.file, e.offset),
        ]));
    }
    rows.extend(completed);
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
