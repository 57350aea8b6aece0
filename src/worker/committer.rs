//! The committer: the one thread of a pool that settles the jobs the
//! workers ran (complete with the result, retry, dead letter, or split
//! into one-row jobs), tells the runs, and makes it durable.
//!
//! Workers hand each settled batch over a channel and go on to the next at
//! once; the committer merges every batch waiting into one commit. Under
//! `Immediate` it syncs at most every `SYNC_AT_LEAST_EVERY` and at least
//! that soon after a write: a sync per commit would cost a run one
//! fdatasync per few micro-batches, while a caller only sees results when
//! its wait returns, and the wait syncs first.
//!
//! Invariants:
//! - A job's result and its ack are one record (`complete`), so no crash
//!   leaves a job acked without its result.
//! - One-row jobs split off a job are enqueued and synced before the job is
//!   completed with their ids: no crash loses a row.
//! - A caller gets a run's results only after a sync that covers them
//!   (`Run::wait` syncs first, under `Immediate`), so a result a caller
//!   saw survives a crash. A result written but not yet synced that a
//!   crash loses leaves its job pending: it is computed again, never lost.
//! - A job whose settling fails stays leased: it comes back when its lease
//!   ends. A poisoned or closed queue stops the pool (reported to every
//!   waiting run by its health).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::{Computed, Job, JobResult, Provenance, RowNote};
use super::pool::Shared;
use super::registry::Erased;
use super::run::DeadMeta;
use super::stats::JobRows;
use super::{wall_ms, ErrorKind, RowError};
use crate::{EnqueueOptions, Error, JobQueue, Receipt, Timestamp};

/// One settled job: its receipt, its run's tag and its id, and what to do.
pub(super) struct Settled {
    pub(super) receipt: Receipt,
    /// `None` for a payload that is not a job.
    pub(super) run: Option<(u64, u64)>,
    /// Its lane.
    pub(super) priority: u8,
    /// When its rows were enqueued, ms since the Unix epoch.
    pub(super) enqueued_ms: u64,
    pub(super) then: Then,
}

/// What the committer is told: a worker's settled jobs, or that the
/// workers are done (a thread the watchdog gave up on may still hold a
/// sender, so the committer does not wait for every sender to go).
pub(super) enum ToCommitter {
    Settled(Vec<Settled>),
    Finish,
}

/// What to do with a job.
pub(super) enum Then {
    /// Store the result and ack; first enqueue `children`, (index in the
    /// job, the one-row job, its delay), whose rows read `Moved(0)` until
    /// their ids are known.
    Complete {
        model: Arc<dyn Erased>,
        attempt: u32,
        queue_us: u64,
        decode_ns: u64,
        partition: Arc<str>,
        computed: Computed,
        children: Vec<(usize, Job, Duration)>,
    },
    /// A one-row job failed for good, on its `attempt`-th delivery.
    DeadLetter {
        error: RowError,
        attempt: u32,
        model: Arc<dyn Erased>,
    },
    /// A one-row job failed; ready again after the delay.
    Retry(Duration),
    /// Not a job any model here takes, parked with the reason.
    Park(String),
}

/// How close to its deadline a split-off row may still be enqueued: a
/// deadline this near counts as missed.
const DEADLINE_MARGIN_MS: u64 = 50;

/// Stores the workers' results and settles their jobs (see the module
/// docs).
pub(super) struct Committer<Q: JobQueue> {
    shared: Arc<Shared<Q>>,
    /// When the committer last synced the jobs queue.
    last_sync: Instant,
    /// Whether results were written since.
    unsynced: bool,
}

/// Longest a written result waits for the committer's sync when nobody
/// waits for its run (a waiter syncs at once, see `Run::wait`).
const SYNC_AT_LEAST_EVERY: Duration = Duration::from_millis(20);

/// What the stats learn of one settled job.
struct Seen {
    model: (String, String),
    lane: u8,
    enqueued_ms: u64,
    queue_us: u64,
    done: u64,
    failed: u64,
    infer_us: Vec<(u64, u64)>,
}

impl<Q: JobQueue> Committer<Q> {
    /// A committer for the pool sharing `shared`, nothing written yet.
    pub(super) fn new(shared: Arc<Shared<Q>>) -> Committer<Q> {
        Committer {
            shared,
            last_sync: Instant::now(),
            unsynced: false,
        }
    }

    /// Commit what arrives until [`ToCommitter::Finish`] (or until every
    /// sender is gone), then sync.
    pub(super) fn run(mut self, inbox: &Receiver<ToCommitter>) {
        loop {
            // With results written but not synced, wait only until they
            // are due to be synced.
            let next = if self.unsynced {
                let due = SYNC_AT_LEAST_EVERY.saturating_sub(self.last_sync.elapsed());
                match inbox.recv_timeout(due) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(ToCommitter::Finish),
                }
            } else {
                Some(inbox.recv().unwrap_or(ToCommitter::Finish))
            };
            let mut group = match next {
                None => {
                    self.sync_now();
                    continue;
                }
                Some(ToCommitter::Finish) => {
                    self.sync_now();
                    return;
                }
                Some(ToCommitter::Settled(group)) => group,
            };
            // Merge whatever else is waiting: one commit for all of it.
            let mut finish = false;
            while let Ok(more) = inbox.try_recv() {
                match more {
                    ToCommitter::Settled(more) => group.extend(more),
                    ToCommitter::Finish => {
                        finish = true;
                        break;
                    }
                }
            }
            if let Err(e) = self.commit(group) {
                self.shared
                    .health
                    .fail(format!("the jobs queue failed: {e}"));
            }
            if finish {
                self.sync_now();
                return;
            }
        }
    }

    /// Sync what was written (a failure poisons the queue, which stops the
    /// pool: reported to every waiting run by its health).
    fn sync_now(&mut self) {
        if !self.unsynced {
            return;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        if let Err(e) = self.shared.jobs.sync() {
            self.shared
                .health
                .fail(format!("the jobs queue failed: {e}"));
        }
    }

    /// Settle `group`; an error returned is fatal (a poisoned or closed
    /// queue), others are noted and leave their job leased.
    fn commit(&mut self, mut group: Vec<Settled>) -> Result<(), Error> {
        let jobs = &self.shared.jobs;
        let started = Instant::now();
        let now = wall_ms();
        // Highest lane first (arrival order within a lane), and each run
        // told as soon as its job is stored: an urgent row does not wait
        // behind a bulk run's backlog of results. (A waiter syncs before
        // it returns what it was told, so telling before the group's sync
        // shows nothing a crash could take back.)
        group.sort_by_key(|s| std::cmp::Reverse(s.priority));
        let mut seen = Vec::with_capacity(group.len());
        let mut failed = vec![false; group.len()];
        self.enqueue_children(&mut group, &mut failed, now)?;
        for (s, settled) in group.into_iter().enumerate() {
            if failed[s] {
                continue;
            }
            let outcome = match settled.then {
                Then::Complete {
                    model,
                    attempt,
                    queue_us,
                    decode_ns,
                    partition,
                    computed,
                    ..
                } => {
                    let key = model.key();
                    let provenance = Provenance {
                        model_name: key.name.clone(),
                        model_version: key.version.clone(),
                        model_sha: model.sha256().to_string(),
                        pipeline_version: self.shared.pipeline_version.clone(),
                        partition: partition.to_string(),
                        attempt,
                        finished_ms: now,
                        queue_us,
                        decode_ns,
                    };
                    let mut result = JobResult::new(provenance, computed);
                    let done = self.complete(settled.receipt, &mut result);
                    if done.is_ok() {
                        let (done, failed) = result.counts();
                        seen.push(Seen {
                            model: (key.name.clone(), key.version.clone()),
                            lane: settled.priority,
                            enqueued_ms: settled.enqueued_ms,
                            queue_us,
                            done,
                            failed,
                            infer_us: result.infer_times(),
                        });
                    }
                    if let (Ok(()), Some((tag, id))) = (&done, settled.run) {
                        let store_ns = started.elapsed().as_nanos() as u64;
                        self.shared
                            .tracker
                            .job_done(tag, id, Arc::new(result), store_ns);
                    }
                    done
                }
                Then::DeadLetter {
                    error,
                    attempt,
                    model,
                } => {
                    let done = jobs.dead_letter(settled.receipt, &error.reason());
                    if done.is_ok() {
                        seen.push(Seen {
                            model: (model.key().name.clone(), model.key().version.clone()),
                            lane: settled.priority,
                            enqueued_ms: settled.enqueued_ms,
                            queue_us: 0,
                            done: 0,
                            failed: 1,
                            infer_us: Vec::new(),
                        });
                    }
                    if let (Ok(()), Some((tag, id))) = (&done, settled.run) {
                        let meta = DeadMeta {
                            model_name: model.key().name.clone(),
                            model_version: model.key().version.clone(),
                            attempt,
                        };
                        self.shared.tracker.job_dead(tag, id, error, Some(meta));
                    }
                    done
                }
                Then::Retry(delay) => jobs.nack(settled.receipt, delay),
                Then::Park(why) => jobs.dead_letter(settled.receipt, &why),
            };
            match outcome {
                Ok(()) => {}
                Err(e @ (Error::Poisoned | Error::Closed | Error::Io(_))) => return Err(e),
                // Settled elsewhere: another process completed the job, or
                // an earlier complete of this one stored its result but its
                // answer was lost (a remote queue's `Unavailable`). The
                // stored result stands; the run reads it from the queue.
                Err(Error::StaleReceipt) => self.shared.health.note(format!(
                    "job {} was settled elsewhere (its stored result stands)",
                    settled.receipt.id()
                )),
                // A lease lost meanwhile: whoever has the job now settles it.
                // A remote queue unavailable: the job stays leased and comes
                // back when its lease ends.
                Err(e) => self
                    .shared
                    .health
                    .note(format!("settling a job failed: {e}")),
            }
        }
        if self.shared.sync_commits {
            if self.last_sync.elapsed() >= SYNC_AT_LEAST_EVERY {
                jobs.sync()?;
                self.last_sync = Instant::now();
                self.unsynced = false;
            } else {
                self.unsynced = true;
            }
        }
        let stored = wall_ms();
        for s in &seen {
            self.shared.recorder.job(&JobRows {
                model: (&s.model.0, &s.model.1),
                lane: s.lane,
                done: s.done,
                failed: s.failed,
                queue_us: s.queue_us,
                infer_us: &s.infer_us,
                end_to_end_us: stored.saturating_sub(s.enqueued_ms) * 1000,
            });
        }
        Ok(())
    }

    /// Enqueue every one-row job split off, fill in their ids, and sync;
    /// a row whose deadline is (nearly) past fails instead. On a non-fatal
    /// error the jobs concerned are marked `failed` and stay leased.
    fn enqueue_children(
        &self,
        group: &mut [Settled],
        failed: &mut [bool],
        now: u64,
    ) -> Result<(), Error> {
        let mut items: Vec<(Vec<u8>, EnqueueOptions)> = Vec::new();
        let mut back: Vec<(usize, usize)> = Vec::new();
        for (s, settled) in group.iter_mut().enumerate() {
            let priority = &settled.priority;
            let Then::Complete {
                computed, children, ..
            } = &mut settled.then
            else {
                continue;
            };
            for (i, job, delay) in children.drain(..) {
                let ready = now.saturating_add(delay.as_millis() as u64);
                if job.deadline_ms != 0 && job.deadline_ms <= ready + DEADLINE_MARGIN_MS {
                    computed.note(
                        i,
                        RowNote::Failed(RowError::new(
                            ErrorKind::DeadlineMissed,
                            format!(
                            "its deadline passed before it could be tried again (last error: {})",
                            job.last_error
                                .as_ref()
                                .map_or_else(String::new, ToString::to_string)
                        ),
                        )),
                    );
                    continue;
                }
                let bytes = match job.encode() {
                    Ok(b) => b,
                    Err(e) => {
                        computed.note(
                            i,
                            RowNote::Failed(RowError::new(
                                ErrorKind::Permanent,
                                format!("cannot store its retry: {e}"),
                            )),
                        );
                        continue;
                    }
                };
                let mut opts = EnqueueOptions::new().priority(*priority).delay(delay);
                if job.deadline_ms != 0 {
                    opts = opts.deadline(Timestamp(job.deadline_ms));
                }
                items.push((bytes, opts));
                back.push((s, i));
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let refs: Vec<(&[u8], EnqueueOptions)> =
            items.iter().map(|(b, o)| (&b[..], o.clone())).collect();
        match self.shared.jobs.enqueue_batch_with(&refs) {
            Ok(ids) => {
                self.shared.jobs.sync()?;
                for ((s, i), id) in back.into_iter().zip(ids) {
                    if let Then::Complete { computed, .. } = &mut group[s].then {
                        computed.note(i, RowNote::Moved(id.into()));
                    }
                }
                Ok(())
            }
            Err(e @ (Error::Poisoned | Error::Closed | Error::Io(_))) => Err(e),
            Err(e) => {
                self.shared
                    .health
                    .note(format!("cannot enqueue the rows split off: {e}"));
                for (s, _) in back {
                    failed[s] = true;
                }
                Ok(())
            }
        }
    }

    /// `complete` with `result`. A result over the queue's message size
    /// limit fails its largest outputs (permanent: no retry stores them)
    /// until the rest fits.
    fn complete(&self, receipt: Receipt, result: &mut JobResult) -> Result<(), Error> {
        loop {
            let bytes = result
                .encode()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            let max = match self.shared.jobs.complete(receipt, &bytes) {
                Err(Error::TooLarge { max, .. }) => max,
                other => return other,
            };
            if !result.fail_largest(max) {
                return Err(Error::TooLarge {
                    size: bytes.len(),
                    max,
                });
            }
        }
    }
}
