//! The committer: the one thread of a pool that stores the workers' results
//! durably and then settles their jobs (ack, nack, dead letter, or split
//! into one-row jobs).
//!
//! Workers hand each settled batch over a channel and go on to the next at
//! once, so the model runs while earlier results are synced; the committer
//! merges every batch waiting into one durable write (one sync for many
//! batches).
//!
//! Invariants:
//! - A job is acked only after the write of its results returned, and a job
//!   split into one-row jobs only after those jobs are enqueued and synced:
//!   no crash leaves a job acked without its results or its rows.
//! - Every merged write is at most [`MERGE_BYTES`], so the results queue
//!   never refuses it as too large; a single result the queue cannot hold
//!   is stored as a failed row instead and its job parked with the reason.
//! - A commit that fails leaves its jobs leased: they come back when their
//!   leases end, and results already stored are recognised as duplicates.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::codec::{self, done_record};
use super::{note, wall_ms, InferError, RowOutcome};
use crate::{Error, Queue, Receipt};

/// One settled job: its result records to store, then what to do with it.
pub(super) struct Settled {
    pub(super) receipt: Receipt,
    pub(super) priority: u8,
    pub(super) results: Vec<Record>,
    pub(super) then: Then,
}

/// An encoded result record and the (run, row, attempt) of its first
/// outcome.
pub(super) struct Record {
    pub(super) bytes: Vec<u8>,
    pub(super) first: (u64, u64, u32),
}

/// What to do with a job once its results are stored.
pub(super) enum Then {
    /// Done; ack it.
    Ack,
    /// Failed past its retries, with this reason (its error is also in
    /// its stored result).
    DeadLetter(String),
    /// Failed; ready again after the delay (nothing stored).
    Retry(Duration),
    /// Replaced by these one-row jobs (each ready after its delay), then
    /// acked.
    Split(Vec<(Vec<u8>, Duration)>),
    /// Settled by the committer already (dead-lettered).
    Settled,
}

/// Most result bytes per durable write: a quarter of the smallest segment,
/// so a merged write is never refused as too large.
const MERGE_BYTES: usize = (crate::config::MIN_SEGMENT_SIZE / 4) as usize;

/// Stores the workers' results and settles their jobs (see the module
/// docs).
pub(super) struct Committer {
    pub(super) jobs: Queue,
    pub(super) results: Queue,
    pub(super) errors: Arc<Mutex<Vec<String>>>,
    /// The model's name and version, for the failed results it writes.
    pub(super) model: (String, String),
}

impl Committer {
    /// Commit what arrives until every sender (every worker) is gone.
    pub(super) fn run(self, inbox: &Receiver<Vec<Settled>>) {
        while let Ok(mut group) = inbox.recv() {
            // Merge whatever else is waiting: one sync for all of it.
            while let Ok(more) = inbox.try_recv() {
                group.extend(more);
            }
            if let Err(e) = self.commit(group) {
                // The jobs stay leased and return when their leases end;
                // results already stored are recognised then as duplicates.
                note(&self.errors, format!("storing results failed: {e}"));
            }
        }
    }

    fn commit(&self, mut group: Vec<Settled>) -> Result<(), InferError> {
        // Results first, in writes of at most MERGE_BYTES: a job is never
        // acked without its results.
        let records: Vec<(usize, usize)> = group
            .iter()
            .enumerate()
            .flat_map(|(s, settled)| (0..settled.results.len()).map(move |r| (s, r)))
            .collect();
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len() {
                let (s, r) = records[end];
                let len = group[s].results[r].bytes.len();
                if end > start && bytes + len > MERGE_BYTES {
                    break;
                }
                bytes += len;
                end += 1;
            }
            let refs: Vec<(&[u8], u8)> = records[start..end]
                .iter()
                .map(|&(s, r)| (&group[s].results[r].bytes[..], group[s].priority))
                .collect();
            match self.results.enqueue_batch(&refs) {
                Ok(_) => {}
                // One result the results queue cannot hold (a record that
                // large holds one row): store that the row failed, and
                // park its job with the reason.
                Err(Error::TooLarge { .. }) if end - start == 1 => {
                    let (s, r) = records[start];
                    let (run, row, attempt) = group[s].results[r].first;
                    let why =
                        format!("its result of {bytes} bytes is too large for the results queue");
                    let failed = RowOutcome::<()> {
                        run,
                        row,
                        output: Err(why.clone()),
                        attempt,
                        finished_ms: wall_ms(),
                        queue_us: 0,
                        infer_us: 0,
                        batch_rows: 0,
                    };
                    let one = codec::encode(&failed)?;
                    let record = done_record((&self.model.0, &self.model.1), &[one]);
                    self.results.enqueue(&record, group[s].priority)?;
                    match group[s].then {
                        // Its failed rows still need their one-row jobs.
                        Then::Split(_) => note(&self.errors, format!("row {row}: {why}")),
                        Then::Settled => {}
                        _ => {
                            self.jobs
                                .dead_letter(group[s].receipt, &format!("row {row}: {why}"))?;
                            group[s].then = Then::Settled;
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            start = end;
        }
        // One-row jobs split off before their job is acked, made durable
        // even when the jobs queue does not sync by itself.
        let mut split = false;
        for s in &group {
            if let Then::Split(jobs) = &s.then {
                for (bytes, delay) in jobs {
                    self.jobs.enqueue_delayed(bytes, s.priority, *delay)?;
                    split = true;
                }
            }
        }
        if split {
            self.jobs.sync()?;
        }
        let acks: Vec<Receipt> = group
            .iter()
            .filter(|s| matches!(s.then, Then::Ack | Then::Split(_)))
            .map(|s| s.receipt)
            .collect();
        self.jobs.ack_batch(&acks)?;
        for s in &group {
            match s.then {
                Then::Ack | Then::Settled | Then::Split(_) => {}
                Then::DeadLetter(ref why) => self.jobs.dead_letter(s.receipt, why)?,
                Then::Retry(delay) => self.jobs.nack(s.receipt, delay)?,
            }
        }
        Ok(())
    }
}
