//! yaque 0.6: as shipped (never fsyncs), and with the harness's fdatasync
//! of the newest segment after a send and of `recv-metadata` after a commit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Result};
use futures::executor::block_on;
use yaque::{Receiver, Sender, TryRecvError};

use super::{Handle, Opened, Store};
use crate::util::{mem_of, Payloads};

pub struct YaqueStore {
    tx: Arc<Mutex<Sender>>,
    rx: Arc<Mutex<Receiver>>,
    dir: PathBuf,
    fsync: bool,
}

impl YaqueStore {
    pub fn open(dir: &Path, fsync: bool) -> Result<Self> {
        let dir = dir.join("q");
        let (tx, rx) = yaque::channel(&dir)?;
        Ok(YaqueStore {
            tx: Arc::new(Mutex::new(tx)),
            rx: Arc::new(Mutex::new(rx)),
            dir,
            fsync,
        })
    }
}

impl Store for YaqueStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(YaqueHandle {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            dir: self.dir.clone(),
            fsync: self.fsync,
            segment: None,
            meta: None,
        }))
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

struct YaqueHandle {
    tx: Arc<Mutex<Sender>>,
    rx: Arc<Mutex<Receiver>>,
    dir: PathBuf,
    fsync: bool,
    /// The newest segment seen and an open file on it.
    segment: Option<(u64, File)>,
    meta: Option<File>,
}

impl YaqueHandle {
    /// fdatasync the newest segment (segments are `N.q`, numbered upward).
    fn sync_newest_segment(&mut self) -> Result<()> {
        let mut n = self.segment.as_ref().map_or(0, |(n, _)| *n);
        let mut moved = self.segment.is_none();
        while self.dir.join(format!("{}.q", n + 1)).exists() {
            n += 1;
            moved = true;
        }
        if moved {
            self.segment = Some((n, File::open(self.dir.join(format!("{n}.q")))?));
        }
        if let Some((_, f)) = &self.segment {
            f.sync_data()?;
        }
        Ok(())
    }
}

impl Handle for YaqueHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        let tx = self.tx.clone();
        let mut tx = tx.lock().map_err(|_| anyhow!("poisoned"))?;
        block_on(tx.send_batch(items.iter().copied()))?;
        if self.fsync {
            // Under the sender lock, so no later batch moves to a segment
            // this sync would miss.
            self.sync_newest_segment()?;
        }
        Ok(())
    }

    fn dequeue(&mut self, max: usize, _wait: bool) -> Result<usize> {
        let mut rx = self.rx.lock().map_err(|_| anyhow!("poisoned"))?;
        let n = match rx.try_recv_batch_up_to(max) {
            Ok(guard) => {
                let n = guard.len();
                guard.commit()?;
                n
            }
            Err(TryRecvError::QueueEmpty) => 0,
            Err(TryRecvError::Io(e)) => return Err(e.into()),
        };
        if n > 0 && self.fsync {
            rx.save()?;
            if self.meta.is_none() {
                self.meta = Some(File::open(self.dir.join("recv-metadata"))?);
            }
            if let Some(f) = &self.meta {
                f.sync_data()?;
            }
        }
        Ok(n)
    }
}

pub fn fill(dir: &Path, n: u64, size: usize) -> Result<()> {
    let mut tx = Sender::open(dir.join("q"))?;
    let mut gen = Payloads::new(size, 1000, 0);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        block_on(tx.send_batch(gen.batch(k)))?;
        left -= k as u64;
    }
    drop(tx);
    Ok(())
}

pub fn open_only(dir: &Path) -> Result<Opened> {
    let t = Instant::now();
    let rx = Receiver::open(dir.join("q"))?;
    let secs = t.elapsed().as_secs_f64();
    let mem = mem_of("self");
    drop(rx);
    Ok(Opened {
        secs,
        mem,
        note: "yaque keeps no index: open reads only the receiver position".into(),
    })
}
