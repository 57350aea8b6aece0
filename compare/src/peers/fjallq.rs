//! fjall 3 as a queue: u64 sequence keys (big endian), WriteBatch with
//! PersistMode::SyncAll per call; dequeue ranges from an in-memory cursor
//! (valid because keys only grow) so it never rescans tombstones.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Handle, Opened, Store};
use crate::util::{mem_of, Payloads};

fn open_db(dir: &Path) -> Result<(Database, Keyspace)> {
    let db = Database::builder(dir.join("db")).open()?;
    let ks = db.keyspace("q", KeyspaceCreateOptions::default)?;
    Ok((db, ks))
}

pub struct FjallStore {
    db: Database,
    ks: Keyspace,
    seq: Arc<AtomicU64>,
}

impl FjallStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let (db, ks) = open_db(dir)?;
        Ok(FjallStore {
            db,
            ks,
            seq: Arc::new(AtomicU64::new(0)),
        })
    }
}

impl Store for FjallStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(FjallHandle {
            db: self.db.clone(),
            ks: self.ks.clone(),
            seq: self.seq.clone(),
            cursor: 0,
        }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

struct FjallHandle {
    db: Database,
    ks: Keyspace,
    seq: Arc<AtomicU64>,
    cursor: u64,
}

impl Handle for FjallHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
        let first = self.seq.fetch_add(items.len() as u64, Ordering::Relaxed);
        for (i, p) in items.iter().enumerate() {
            b.insert(&self.ks, &(first + i as u64).to_be_bytes()[..], *p);
        }
        b.commit()?;
        Ok(())
    }

    fn dequeue(&mut self, max: usize, _wait: bool) -> Result<usize> {
        let mut keys = Vec::with_capacity(max);
        let mut last = None;
        for g in self.ks.range(self.cursor.to_be_bytes()..).take(max) {
            let (k, v) = g.into_inner()?;
            let payload: Vec<u8> = v.to_vec();
            std::hint::black_box(payload);
            last = Some(u64::from_be_bytes(
                k[..8].try_into().context("key is not 8 bytes")?,
            ));
            keys.push(k);
        }
        let Some(last) = last else { return Ok(0) };
        let n = keys.len();
        let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
        for k in keys {
            b.remove(&self.ks, k);
        }
        b.commit()?;
        self.cursor = last + 1;
        Ok(n)
    }
}

pub fn fill(dir: &Path, n: u64, size: usize) -> Result<()> {
    let (db, ks) = open_db(dir)?;
    let mut gen = Payloads::new(size, 1000, 0);
    let mut seq = 0u64;
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        let mut b = db.batch();
        for p in gen.batch(k) {
            b.insert(&ks, &seq.to_be_bytes()[..], p);
            seq += 1;
        }
        b.commit()?;
        left -= k as u64;
    }
    db.persist(PersistMode::SyncAll)?;
    drop(ks);
    drop(db);
    Ok(())
}

pub fn open_only(dir: &Path) -> Result<Opened> {
    let t = Instant::now();
    let (db, ks) = open_db(dir)?;
    let first = ks.first_key_value().map(|g| g.key()).transpose()?;
    let secs = t.elapsed().as_secs_f64();
    let mem = mem_of("self");
    let note = format!(
        "first key {:?}, approximate_len {}, {} tables",
        first.map(|k| k.to_vec()),
        ks.approximate_len(),
        ks.table_count()
    );
    drop(ks);
    drop(db);
    Ok(Opened { secs, mem, note })
}
