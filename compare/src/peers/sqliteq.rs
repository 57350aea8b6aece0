//! SQLite as a queue: one table indexed by (state, priority, id), one
//! transaction per batch, in WAL mode (the rows table of compare/README.md).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Result};
use rusqlite::{params, Connection};

use super::{Handle, Opened, Store};
use crate::util::{mem_of, Payloads};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS q(
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL,
    payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS q_ready ON q(state, priority, id);";

/// Priorities are stored as 255 - p so that `ORDER BY priority, id` serves
/// the highest priority first, as lanelog does; every message here is 0.
const STORED_PRIORITY: i64 = 255;

const INSERT: &str = "INSERT INTO q(priority, state, payload) VALUES (?1, 0, ?2)";
const TAKE: &str = "DELETE FROM q WHERE id IN (SELECT id FROM q WHERE state = 0 ORDER BY priority, id LIMIT ?1) RETURNING payload";

fn connect(path: &Path, synchronous: &str) -> Result<Connection> {
    let c = Connection::open(path)?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
    c.execute_batch(&format!(
        "PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=10000;"
    ))?;
    c.execute_batch(SCHEMA)?;
    Ok(c)
}

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub fn open(dir: &Path, full: bool) -> Result<Self> {
        let c = connect(&dir.join("q.db"), if full { "FULL" } else { "NORMAL" })?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(c)),
        })
    }
}

impl Store for SqliteStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(SqliteHandle {
            conn: self.conn.clone(),
        }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        let c = Arc::try_unwrap(self.conn)
            .map_err(|_| anyhow!("connection still shared"))?
            .into_inner()
            .map_err(|_| anyhow!("poisoned"))?;
        c.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

struct SqliteHandle {
    conn: Arc<Mutex<Connection>>,
}

fn enqueue(c: &Connection, items: &[&[u8]]) -> Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| -> Result<()> {
        let mut st = c.prepare_cached(INSERT)?;
        for p in items {
            st.execute(params![STORED_PRIORITY, p])?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => c.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

impl Handle for SqliteHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        let c = self.conn.lock().map_err(|_| anyhow!("poisoned"))?;
        enqueue(&c, items)
    }

    fn dequeue(&mut self, max: usize, _wait: bool) -> Result<usize> {
        let c = self.conn.lock().map_err(|_| anyhow!("poisoned"))?;
        c.execute_batch("BEGIN IMMEDIATE")?;
        let r = (|| -> Result<usize> {
            let mut st = c.prepare_cached(TAKE)?;
            let mut rows = st.query([max as i64])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                let payload: Vec<u8> = row.get(0)?;
                n += usize::from(!payload.is_empty());
            }
            Ok(n)
        })();
        match r {
            Ok(n) => {
                c.execute_batch("COMMIT")?;
                Ok(n)
            }
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

pub fn fill(dir: &Path, n: u64, size: usize) -> Result<()> {
    let c = connect(&dir.join("q.db"), "OFF")?;
    let mut gen = Payloads::new(size, 1000, 0);
    let mut left = n;
    while left > 0 {
        c.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut st = c.prepare_cached(INSERT)?;
            for _ in 0..100 {
                if left == 0 {
                    break;
                }
                let k = left.min(1000) as usize;
                for p in gen.batch(k) {
                    st.execute(params![STORED_PRIORITY, p])?;
                }
                left -= k as u64;
            }
        }
        c.execute_batch("COMMIT")?;
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    c.close().map_err(|(_, e)| e)?;
    Ok(())
}

pub fn open_only(dir: &Path) -> Result<Opened> {
    let t = Instant::now();
    let c = connect(&dir.join("q.db"), "FULL")?;
    // Ready to serve: the first message can be found.
    let first: Option<i64> = c
        .query_row(
            "SELECT id FROM q WHERE state = 0 ORDER BY priority, id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok();
    let secs = t.elapsed().as_secs_f64();
    let mem = mem_of("self");
    Ok(Opened {
        secs,
        mem,
        note: format!("first id {first:?} (SQLite opens lazily: no count is taken)"),
    })
}
