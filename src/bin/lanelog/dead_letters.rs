//! `lanelog dead-letters`: the dead letters in id order, as a table or
//! JSON.

use std::path::Path;

use lanelog::DeadLetter;
use serde_json::{json, Value};

use crate::format::{row, table, time};
use crate::{inspector, lib_error, lock_json, to_json, Failure, Output};

pub(crate) fn dead_letters(dir: &Path, as_json: bool) -> Result<Output, Failure> {
    let ins = inspector(dir)?;
    let dead = ins.dead_letters().map_err(|e| lib_error(dir, e))?;
    if as_json {
        let (locked, pid) = lock_json(ins.lock_state());
        let list: Vec<Value> = dead.iter().map(dead_json).collect();
        let v = json!({
            "dir": dir.display().to_string(),
            "locked": locked,
            "lock_pid": pid,
            "dead_letters": list,
        });
        return Ok(Output::ok(to_json(&v)));
    }
    if dead.is_empty() {
        return Ok(Output::ok("no dead letters\n".to_string()));
    }
    let mut rows = vec![row([
        "ID",
        "LANE",
        "ATTEMPTS",
        "ENQUEUED",
        "DEAD SINCE",
        "REASON",
    ])];
    for d in &dead {
        rows.push(row([
            &d.id.to_string(),
            &d.priority.to_string(),
            &d.attempts.to_string(),
            &time(d.enqueued_at),
            &time(d.dead_at),
            &d.reason,
        ]));
    }
    Ok(Output::ok(table(&rows, &[0, 1, 2])))
}

fn dead_json(d: &DeadLetter) -> Value {
    json!({
        "id": u64::from(d.id),
        "lane": d.priority,
        "attempts": d.attempts,
        "reason": d.reason,
        "enqueued_at_ms": d.enqueued_at.0,
        "enqueued_at": time(d.enqueued_at),
        "dead_at_ms": d.dead_at.0,
        "dead_at": time(d.dead_at),
    })
}
