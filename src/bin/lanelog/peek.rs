//! `lanelog peek`: the next messages strict scheduling would deliver, read
//! without leasing them, as a table (payload previews) or JSON (payloads
//! in full).

use std::path::Path;

use serde_json::{json, Value};

use crate::format::{hex, preview, row, table, time};
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
    let mut rows = vec![row([
        "ID", "LANE", "ATTEMPTS", "ENQUEUED", "SIZE", "PAYLOAD",
    ])];
    for m in &msgs {
        let payload = match &m.damage {
            Some(d) => format!("DAMAGED: {d}"),
            None => preview(&m.payload),
        };
        rows.push(row([
            &u64::from(m.id).to_string(),
            &m.priority.to_string(),
            &m.attempts.to_string(),
            &time(m.enqueued_at),
            &m.payload.len().to_string(),
            &payload,
        ]));
    }
    Ok(Output::ok(table(&rows, &[0, 1, 2, 4])))
}
