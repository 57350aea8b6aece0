//! `lanelog peek`: the next messages strict scheduling would deliver, read
//! without leasing them, as a table (payload previews) or JSON (payloads
//! in full).
//!
//! Invariants: the table has DEADLINE and KEY columns only when a message
//! shown has a deadline or a key ("-" for those without); JSON always has
//! the fields (`null` when absent).

use std::path::Path;

use serde_json::{json, Value};

use crate::format::{hex, preview, table, time};
use crate::{fail, inspector, lib_error, lock_json, to_json, Failure, Output, UNKNOWN};

pub(crate) fn peek(
    dir: &Path,
    lane: Option<i64>,
    limit: usize,
    as_json: bool,
) -> Result<Output, Failure> {
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
                    "deadline_ms": m.deadline.map(|t| t.0),
                    "deadline": m.deadline.map(time),
                    "key": m.key,
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
    let deadlines = msgs.iter().any(|m| m.deadline.is_some());
    let keys = msgs.iter().any(|m| m.key.is_some());
    let mut head = vec!["ID", "LANE", "ATTEMPTS", "ENQUEUED"];
    head.extend(deadlines.then_some("DEADLINE"));
    head.extend(keys.then_some("KEY"));
    head.extend(["SIZE", "PAYLOAD"]);
    let size_col = head.len() - 2;
    let mut rows = vec![head.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for m in &msgs {
        let payload = match &m.damage {
            Some(d) => format!("DAMAGED: {d}"),
            None => preview(&m.payload),
        };
        let mut cells = vec![
            u64::from(m.id).to_string(),
            m.priority.to_string(),
            m.attempts.to_string(),
            time(m.enqueued_at),
        ];
        if deadlines {
            cells.push(m.deadline.map_or("-".to_string(), time));
        }
        if keys {
            cells.push(m.key.as_deref().map_or("-".to_string(), key_cell));
        }
        cells.push(m.payload.len().to_string());
        cells.push(payload);
        rows.push(cells);
    }
    Ok(Output::ok(table(&rows, &[0, 1, 2, size_col])))
}

/// A key for a table cell: quoted, cut like a payload preview.
fn key_cell(key: &str) -> String {
    preview(key.as_bytes())
}
