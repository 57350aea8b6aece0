//! `lanelog redrive` and `lanelog purge-dead`: the commands that change
//! a queue.
//!
//! Invariants: they open the queue the normal way (its lock, its recovery)
//! and never create a directory; a queue another process holds is refused
//! before anything changes; `purge-dead` without `--yes` changes nothing.
//! They name no stored attribute (no `QueueOptions` setter that marks one:
//! segment size, max message size, visibility timeout, max deliveries,
//! retention, dead-letter retention, dedup window, default delay, default
//! wait), so the queue opens with the attributes its directory stores and
//! the attributes file is left as it is.

use std::path::Path;

use lanelog::inspect::{self, Inspector, LockState};
use lanelog::{Error, MessageId, QueueOptions};

use crate::format::plural;
use crate::{fail, lib_error, Failure, Output, LOCKED, UNKNOWN, USAGE};

fn open_owned(dir: &Path, what: &str) -> Result<lanelog::Queue, Failure> {
    if let LockState::Held { pid, .. } = inspect::lock_state(dir).map_err(|e| lib_error(dir, e))? {
        let by = pid.map_or(String::new(), |p| format!(" (pid {p})"));
        return Err(fail(
            LOCKED,
            format!(
                "{}: the queue is open in another process{by}; {what} needs it closed",
                dir.display()
            ),
        ));
    }
    // No setters: every attribute comes from the directory (see above).
    QueueOptions::new().open(dir).map_err(|e| match e {
        Error::Locked => fail(
            LOCKED,
            format!(
                "{}: the queue is open in another process; {what} needs it closed",
                dir.display()
            ),
        ),
        e => lib_error(dir, e),
    })
}

fn close(dir: &Path, q: lanelog::Queue) -> Result<(), Failure> {
    q.close().map_err(|e| lib_error(dir, e))
}

pub(crate) fn redrive(dir: &Path, id: Option<u64>, all: bool) -> Result<Output, Failure> {
    let q = open_owned(dir, "redrive")?;
    let text = match (id, all) {
        (Some(id), false) => match q.redrive(MessageId::from(id)) {
            Ok(()) => format!("redriven message {id}: ready again, attempts reset\n"),
            Err(Error::Unknown) => {
                close(dir, q)?;
                return Err(fail(
                    UNKNOWN,
                    format!("message {id} is not a dead letter in {}", dir.display()),
                ));
            }
            Err(e) => return Err(lib_error(dir, e)),
        },
        _ => {
            let n = q.redrive_all().map_err(|e| lib_error(dir, e))?;
            format!("redriven {n} dead letter{}\n", plural(n))
        }
    };
    close(dir, q)?;
    Ok(Output::ok(text))
}

pub(crate) fn purge_dead(dir: &Path, yes: bool) -> Result<Output, Failure> {
    if !yes {
        let ins = Inspector::open(dir).map_err(|e| lib_error(dir, e))?;
        let n = ins.dead_letters().map_err(|e| lib_error(dir, e))?.len() as u64;
        return Err(fail(
            USAGE,
            format!(
                "purge-dead would delete {n} dead letter{} for good; run it again with --yes",
                plural(n)
            ),
        ));
    }
    let q = open_owned(dir, "purge-dead")?;
    let n = q.purge_dead_letters().map_err(|e| lib_error(dir, e))?;
    close(dir, q)?;
    Ok(Output::ok(format!("purged {n} dead letter{}\n", plural(n))))
}
