//! `rawlog`: the physical limit. One file; a batch is one pwrite of
//! length-prefixed payloads plus one fdatasync; an ack is an 8-byte record
//! plus one fdatasync; the index is a deque of (offset, length) in memory.
//! No checksums, no leases, no checkpoint: open scans the whole file.
//!
//! Record headers are a little-endian u32: `len + 1` for a message (so a
//! zero means unwritten, preallocated space), `u32::MAX` for an ack record
//! followed by a u32 count of messages acked from the front.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, ensure, Result};

use super::{Handle, Opened, Store};
use crate::util::{mem_of, zero_fill, Payloads};

/// Growth step of the preallocated variant (lanelog's default segment size).
const CHUNK: u64 = 64 << 20;
const ACK: u32 = u32::MAX;

pub struct RawLog {
    file: File,
    end: u64,
    /// End of the preallocated, zero-written space (prealloc variant).
    alloc: Option<u64>,
    index: VecDeque<(u64, u32)>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl RawLog {
    fn create(path: &Path, prealloc: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut log = RawLog {
            file,
            end: 0,
            alloc: prealloc.then_some(0),
            index: VecDeque::new(),
            buf: Vec::new(),
            scratch: Vec::new(),
        };
        log.reserve(1)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(log)
    }

    /// Open and rebuild the index by scanning the file.
    fn open(path: &Path, prealloc: bool) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let mut r = BufReader::with_capacity(1 << 20, file.try_clone()?);
        let mut index = VecDeque::new();
        let mut at = 0u64;
        let mut word = [0u8; 4];
        while at + 4 <= len {
            r.read_exact(&mut word)?;
            let h = u32::from_le_bytes(word);
            if h == 0 {
                break; // preallocated space: the end
            }
            if h == ACK {
                r.read_exact(&mut word)?;
                let k = u32::from_le_bytes(word) as usize;
                ensure!(k <= index.len(), "ack record past the index at {at}");
                index.drain(..k);
                at += 8;
                continue;
            }
            let plen = h - 1;
            if at + 4 + u64::from(plen) > len {
                break; // torn tail
            }
            index.push_back((at + 4, plen));
            r.seek_relative(i64::from(plen))?;
            at += 4 + u64::from(plen);
        }
        Ok(RawLog {
            file,
            end: at,
            alloc: prealloc.then_some(len),
            index,
            buf: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Make room for `extra` bytes past the end (prealloc variant only).
    fn reserve(&mut self, extra: u64) -> Result<()> {
        if let Some(alloc) = self.alloc.as_mut() {
            while self.end + extra > *alloc {
                zero_fill(&self.file, *alloc, *alloc + CHUNK)?;
                self.file.sync_all()?;
                *alloc += CHUNK;
            }
        }
        Ok(())
    }

    fn append(&mut self, items: &[&[u8]], sync: bool) -> Result<()> {
        self.buf.clear();
        let mut at = self.end;
        for p in items {
            let len = u32::try_from(p.len())
                .ok()
                .filter(|&l| l < ACK - 1)
                .ok_or_else(|| anyhow!("payload too large"))?;
            self.buf.extend_from_slice(&(len + 1).to_le_bytes());
            self.buf.extend_from_slice(p);
            self.index.push_back((at + 4, len));
            at += 4 + u64::from(len);
        }
        self.reserve(self.buf.len() as u64)?;
        self.file.write_all_at(&self.buf, self.end)?;
        self.end = at;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Read up to `max` payloads from the front, then ack them durably.
    fn take(&mut self, max: usize) -> Result<Vec<Vec<u8>>> {
        let k = max.min(self.index.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let first = self.index[0].0;
        let (last, last_len) = self.index[k - 1];
        let span = (last + u64::from(last_len) - first) as usize;
        self.scratch.resize(span, 0);
        self.file.read_exact_at(&mut self.scratch, first)?;
        let out: Vec<Vec<u8>> = self
            .index
            .drain(..k)
            .map(|(off, len)| {
                let s = (off - first) as usize;
                self.scratch[s..s + len as usize].to_vec()
            })
            .collect();
        let mut rec = [0u8; 8];
        rec[..4].copy_from_slice(&ACK.to_le_bytes());
        rec[4..].copy_from_slice(&(k as u32).to_le_bytes());
        self.reserve(8)?;
        self.file.write_all_at(&rec, self.end)?;
        self.end += 8;
        self.file.sync_data()?;
        Ok(out)
    }
}

pub struct RawStore {
    log: Arc<Mutex<RawLog>>,
}

impl RawStore {
    pub fn create(dir: &Path, prealloc: bool) -> Result<Self> {
        Ok(RawStore {
            log: Arc::new(Mutex::new(RawLog::create(&dir.join("raw.log"), prealloc)?)),
        })
    }
}

impl Store for RawStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(RawHandle {
            log: self.log.clone(),
        }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.log
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .file
            .sync_data()?;
        Ok(())
    }
}

struct RawHandle {
    log: Arc<Mutex<RawLog>>,
}

impl Handle for RawHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        self.log
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .append(items, true)
    }

    fn dequeue(&mut self, max: usize, _wait: bool) -> Result<usize> {
        let got = self
            .log
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .take(max)?;
        Ok(got.len())
    }
}

pub fn fill(dir: &Path, n: u64, size: usize, prealloc: bool) -> Result<()> {
    let mut log = RawLog::create(&dir.join("raw.log"), prealloc)?;
    let mut gen = Payloads::new(size, 1000, 0);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        log.append(&gen.batch(k), false)?;
        left -= k as u64;
    }
    log.file.sync_all()?;
    Ok(())
}

pub fn open_only(dir: &Path, n: u64, prealloc: bool) -> Result<Opened> {
    let t = Instant::now();
    let log = RawLog::open(&dir.join("raw.log"), prealloc)?;
    let secs = t.elapsed().as_secs_f64();
    let mem = mem_of("self");
    ensure!(
        log.index.len() as u64 == n,
        "rawlog found {} messages, expected {n}",
        log.index.len()
    );
    Ok(Opened {
        secs,
        mem,
        note: format!("scanned {} bytes", log.end),
    })
}
