//! The worker pool: [`PoolOptions`], the [`WorkerPool`] handle that starts
//! and stops the threads, and the workers. Each of `num_parallel` workers
//! leases micro-batches of jobs, runs the model on its own runner thread
//! under a timeout (see `runner.rs`), decides each job's fate (ack, retry,
//! dead letter, or split into one-row jobs) and hands the settled batch to
//! the pool's one committer (see `committer.rs`), which stores the results
//! and then settles the jobs.
//!
//! Invariants:
//! - A worker never acks, nacks or dead-letters a job whose rows ran: it
//!   only hands the job over, so no job is settled before its results are
//!   stored. (Jobs that cannot run at all, undecodable or empty, are
//!   dead-lettered by the worker directly: they have no results.)
//! - A job's leases are renewed while the model runs on it, and a job left
//!   unsettled (a timeout, an error, a worker that died) stays leased and
//!   comes back when its lease ends.
//! - Retries and dead letters are per row: a job of several rows runs once;
//!   its failed rows, or all of them if its worker died, are split off into
//!   one-row jobs carrying their attempts and last error.
//! - Shutdown stops the workers first, then the committer, which exits only
//!   after it has committed every batch the workers handed over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::codec::{self, done_record};
use super::committer::{Committer, Record, Settled, Then};
use super::runner::Runner;
use super::{note, wall_ms, InferError, JobRecord, Model, ModelError, RowOutcome};
use crate::{Delivery, DequeueOptions, Error, Queue, Receipt};

/// How a [`WorkerPool`] runs.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub(crate) num_parallel: usize,
    pub(crate) max_batch: usize,
    pub(crate) linger: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) lease: Duration,
    pub(crate) rows_per_job: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolOptions {
    /// Two workers, batches of up to 64 rows with a 2 ms linger, a 30 s
    /// timeout per batch, 2 retries with backoff from 100 ms up to 10 s,
    /// and 30 s leases (renewed while a batch runs).
    pub fn new() -> Self {
        PoolOptions {
            num_parallel: 2,
            max_batch: 64,
            linger: Duration::from_millis(2),
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            rows_per_job: 1,
        }
    }

    /// Workers running at once (1..=1024). Default = 2.
    #[must_use]
    pub fn num_parallel(mut self, n: usize) -> Self {
        self.num_parallel = n;
        self
    }

    /// Most rows per model call (1..=65536). Default = 64.
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Longest wait for a batch to fill once it has a row. Default = 2 ms.
    #[must_use]
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Longest a model call may take; an overrun releases the jobs for a
    /// retry and its late result is discarded. Default = 30 s.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Retries after the first failure before a job is dead-lettered.
    /// Default = 2.
    #[must_use]
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// First retry delay; doubles each retry (with jitter) up to
    /// `max_backoff`. Default = 100 ms, up to 10 s.
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    /// Lease per batch, renewed while the model runs. Default = 30 s.
    #[must_use]
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// Rows a job usually holds ([`JobRecord::inputs`]): a worker leases
    /// `max_batch / rows_per_job` jobs at a time (at least one), so a model
    /// call holds about `max_batch` rows. `parallel_infer` sets it to the
    /// size of the jobs it makes. Default = 1.
    #[must_use]
    pub fn rows_per_job(mut self, n: usize) -> Self {
        self.rows_per_job = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), InferError> {
        let bad = |s: &str| Err(InferError::InvalidArgument(s.to_string()));
        if !(1..=1024).contains(&self.num_parallel) {
            return bad("num_parallel must be in 1..=1024");
        }
        if !(1..=65536).contains(&self.max_batch) {
            return bad("max_batch must be in 1..=65536");
        }
        if !(1..=65536).contains(&self.rows_per_job) {
            return bad("rows_per_job must be in 1..=65536");
        }
        if self.timeout.is_zero() {
            return bad("timeout must be above zero");
        }
        if self.lease < Duration::from_millis(30) {
            return bad("lease must be at least 30 ms");
        }
        if self.backoff > self.max_backoff {
            return bad("backoff must not be above max_backoff");
        }
        Ok(())
    }
}

/// A running pool of workers; see the module docs.
#[derive(Debug)]
pub struct WorkerPool {
    stop: Arc<AtomicBool>,
    /// Woken on shutdown so idle workers stop waiting for jobs at once.
    jobs: Queue,
    threads: Vec<JoinHandle<()>>,
    /// Exits once every worker (and so every sender) is gone, after
    /// committing what they handed over.
    committer: Option<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl WorkerPool {
    /// Start `num_parallel` workers taking jobs from `jobs` and storing
    /// results in `results`.
    ///
    /// # Errors
    /// [`InferError::InvalidArgument`] for options out of range;
    /// [`InferError::Spawn`] when a thread cannot be started.
    pub fn start<M: Model>(
        model: Arc<M>,
        jobs: Queue,
        results: Queue,
        opts: PoolOptions,
    ) -> Result<WorkerPool, InferError> {
        opts.validate()?;
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        // Room for many batches per worker: while the committer syncs, the
        // workers go on, and the next commit takes all they settled.
        let (commits, inbox) =
            mpsc::sync_channel::<Vec<Settled>>(opts.num_parallel.saturating_mul(COMMIT_QUEUE));
        let committer = Committer {
            jobs: jobs.clone(),
            results,
            errors: errors.clone(),
            model: (model.name().to_string(), model.version().to_string()),
        };
        let committer = std::thread::Builder::new()
            .name("lanelog-committer".into())
            .spawn(move || committer.run(&inbox))
            .map_err(InferError::Spawn)?;
        let mut threads = Vec::with_capacity(opts.num_parallel);
        for i in 0..opts.num_parallel {
            let worker = Worker {
                model: model.clone(),
                jobs: jobs.clone(),
                commits: commits.clone(),
                opts: opts.clone(),
                stop: stop.clone(),
                errors: errors.clone(),
                seed: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(wall_ms() | 1),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("lanelog-worker-{i}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    drop(commits);
                    for t in threads {
                        let _ = t.join();
                    }
                    let _ = committer.join();
                    return Err(InferError::Spawn(e));
                }
            }
        }
        Ok(WorkerPool {
            stop,
            jobs,
            threads,
            committer: Some(committer),
            errors,
        })
    }

    /// Errors the workers met and survived (queue errors, model panics),
    /// most recent last, at most 100.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().clone()
    }

    /// Stop taking jobs, let each worker finish (or time out) its current
    /// batch, wait for the workers, then for the committer to store their
    /// last results and ack their jobs.
    ///
    /// # Errors
    /// [`InferError::Panicked`] counting the pool's threads that panicked
    /// (their leased jobs return to the queue when their leases expire).
    pub fn shutdown(mut self) -> Result<(), InferError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), InferError> {
        self.stop.store(true, Ordering::SeqCst);
        self.jobs.wake_waiters();
        let mut panicked = 0;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                panicked += 1;
            }
        }
        // The workers' senders are gone: the committer drains and exits.
        if let Some(c) = self.committer.take() {
            if c.join().is_err() {
                panicked += 1;
            }
        }
        if panicked > 0 {
            return Err(InferError::Panicked { threads: panicked });
        }
        Ok(())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

struct Worker<M: Model> {
    model: Arc<M>,
    jobs: Queue,
    commits: SyncSender<Vec<Settled>>,
    opts: PoolOptions,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    seed: u64,
}

/// A leased job, decoded.
struct Job<I> {
    delivery: Delivery,
    record: JobRecord<I>,
}

impl<I> Job<I> {
    /// Deliveries of these rows so far, this one included.
    fn attempt(&self) -> u32 {
        self.record
            .prior_attempts
            .saturating_add(self.delivery.attempt)
    }
}

/// What became of one row.
enum Fate<O> {
    Done(O),
    Failed(String),
}

/// The fate of each row of one job, with the model time of its batch (µs)
/// and that batch's rows.
type Fates<O> = Vec<(Fate<O>, u64, u32)>;

impl<M: Model> Worker<M> {
    fn run(mut self) {
        let mut runner = Runner::new(self.model.clone());
        let take = DequeueOptions::new()
            .max((self.opts.max_batch / self.opts.rows_per_job).max(1))
            // Short, so a shutdown is noticed quickly; the wait is not a poll:
            // an enqueue wakes the worker at once, and so does shutdown.
            .wait(Duration::from_millis(10))
            .linger(self.opts.linger)
            .visibility(self.opts.lease);
        while !self.stop.load(Ordering::SeqCst) {
            let batch = match self.jobs.dequeue_with(&take) {
                Ok(b) => b,
                Err(e) => {
                    let fatal = matches!(e, Error::Closed | Error::Poisoned);
                    self.note(format!("dequeue failed: {e}"));
                    if fatal {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            if !batch.is_empty() {
                if let Err(e) = self.process(batch, &mut runner) {
                    self.note(format!("storing results failed: {e}"));
                }
            }
        }
    }

    fn note(&self, message: String) {
        note(&self.errors, message);
    }

    fn process(&mut self, batch: Vec<Delivery>, runner: &mut Runner<M>) -> Result<(), InferError> {
        let mut settled = Vec::with_capacity(batch.len());
        let mut runnable = Vec::with_capacity(batch.len());
        for d in batch {
            let job = match codec::decode::<JobRecord<M::Input>>(&d.payload) {
                Ok(record) if !record.inputs.is_empty() => Job {
                    delivery: d,
                    record,
                },
                Ok(_) => {
                    self.jobs.dead_letter(d.receipt, "a job with no rows")?;
                    continue;
                }
                Err(e) => {
                    self.jobs
                        .dead_letter(d.receipt, &format!("undecodable job: {e}"))?;
                    continue;
                }
            };
            if job.record.inputs.len() > 1 && job.delivery.attempt > 1 {
                // Its worker died or timed out on it: find the culprit row
                // by row, without running the rest together again.
                let why = job.record.last_error.clone().unwrap_or_else(|| {
                    "its worker stopped before storing a result (lease expired)".into()
                });
                let rows = (0..job.record.inputs.len()).map(|i| (i, why.clone(), Duration::ZERO));
                // This delivery ran nothing: it does not count as a try.
                let tried = job.attempt() - 1;
                settled.push(self.split(&job, tried, rows, Vec::new())?);
            } else if job.attempt() > self.opts.retries + 1 {
                // Delivered too often (its workers crashed): fails unrun.
                let why = match &job.record.last_error {
                    Some(e) => e.clone(),
                    None => format!(
                        "gave up after {} deliveries without a result",
                        job.attempt() - 1
                    ),
                };
                let fates = job
                    .record
                    .inputs
                    .iter()
                    .map(|_| (Fate::Failed(why.clone()), 0, 0))
                    .collect();
                settled.push(self.settle(&job, fates)?);
            } else {
                runnable.push(job);
            }
        }
        for (job, fates) in self.run_model(runner, &runnable).into_iter().enumerate() {
            settled.push(self.settle(&runnable[job], fates)?);
        }
        // Unsettled jobs stay leased and come back when their leases end.
        // The committer leaves early only by panicking.
        self.commits
            .send(settled)
            .map_err(|_| InferError::Panicked { threads: 1 })
    }

    /// Run the model over every row of `jobs` in calls of at most
    /// `max_batch` rows; a failed call is retried row by row to find the
    /// failing rows. One list of fates per job.
    fn run_model(&self, runner: &mut Runner<M>, jobs: &[Job<M::Input>]) -> Vec<Fates<M::Output>> {
        let mut fates: Vec<Fates<M::Output>> = jobs
            .iter()
            .map(|j| Vec::with_capacity(j.record.inputs.len()))
            .collect();
        let rows: Vec<(usize, &M::Input)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| job.record.inputs.iter().map(move |i| (j, i)))
            .collect();
        for call in rows.chunks(self.opts.max_batch) {
            let receipts: Vec<Receipt> = {
                let mut r: Vec<Receipt> = call
                    .iter()
                    .map(|(j, _)| jobs[*j].delivery.receipt)
                    .collect();
                r.dedup();
                r
            };
            let inputs: Vec<M::Input> = call.iter().map(|(_, i)| (*i).clone()).collect();
            let n = call.len() as u32;
            let started = Instant::now();
            let outcome = self.infer(runner, inputs, &receipts);
            let us = started.elapsed().as_micros() as u64;
            match outcome {
                Ok(outputs) => {
                    for ((j, _), o) in call.iter().zip(outputs) {
                        fates[*j].push((Fate::Done(o), us, n));
                    }
                }
                Err(e) if call.len() > 1 && !e.0.starts_with("timed out") => {
                    // Find the failing rows: run each alone.
                    for (j, input) in call {
                        let receipt = [jobs[*j].delivery.receipt];
                        let started = Instant::now();
                        let one = self.infer(runner, vec![(*input).clone()], &receipt);
                        let us = started.elapsed().as_micros() as u64;
                        let fate = match one {
                            Ok(mut o) => Fate::Done(o.remove(0)),
                            Err(e) => Fate::Failed(e.0),
                        };
                        fates[*j].push((fate, us, 1));
                    }
                }
                Err(e) => {
                    for (j, _) in call {
                        fates[*j].push((Fate::Failed(e.0.clone()), us, n));
                    }
                }
            }
        }
        fates
    }

    /// Run the model on the runner thread, renewing the leases of
    /// `receipts` while it runs.
    fn infer(
        &self,
        runner: &mut Runner<M>,
        inputs: Vec<M::Input>,
        receipts: &[Receipt],
    ) -> Result<Vec<M::Output>, ModelError> {
        let rows = inputs.len();
        let renew_every = self.opts.lease / 3;
        let outputs = runner.call(inputs, self.opts.timeout, renew_every, || {
            for r in receipts {
                // A lease already lost is settled by whoever has it now.
                let _ = self.jobs.extend_lease(*r, self.opts.lease);
            }
        })?;
        if outputs.len() != rows {
            return Err(ModelError(format!(
                "model returned {} outputs for {rows} rows",
                outputs.len()
            )));
        }
        Ok(outputs)
    }

    /// What to store for one job and what to do with it then: a one-row
    /// job is acked, retried (nack with backoff) or dead-lettered; a job of
    /// several rows is acked when every row succeeded, else its failed rows
    /// are split off into one-row jobs.
    fn settle(
        &mut self,
        job: &Job<M::Input>,
        fates: Fates<M::Output>,
    ) -> Result<Settled, InferError> {
        let now = wall_ms();
        let attempt = job.attempt();
        let out_of_retries = attempt > self.opts.retries;
        let stamp = |row: u64, output, infer_us, batch_rows| RowOutcome {
            run: job.record.run,
            row,
            output,
            attempt,
            finished_ms: now,
            queue_us: now.saturating_sub(job.record.enqueued_ms) * 1000,
            infer_us,
            batch_rows,
        };
        let first = job.record.row;
        if job.record.inputs.len() == 1 {
            let Some((fate, us, n)) = fates.into_iter().next() else {
                return Err(InferError::InvalidArgument(
                    "a job's row has no outcome".into(),
                ));
            };
            let (output, then) = match fate {
                Fate::Done(o) => (Ok(o), Then::Ack),
                Fate::Failed(e) if out_of_retries => {
                    let why = format!("failed past its retries: {e}");
                    (Err(e), Then::DeadLetter(why))
                }
                Fate::Failed(e) => {
                    let delay = self.backoff(attempt);
                    self.note(format!("retrying in {delay:?}: {e}"));
                    return Ok(Settled {
                        receipt: job.delivery.receipt,
                        priority: job.delivery.priority,
                        results: Vec::new(),
                        then: Then::Retry(delay),
                    });
                }
            };
            let results = self.records(vec![stamp(first, output, us, n)])?;
            return Ok(Settled {
                receipt: job.delivery.receipt,
                priority: job.delivery.priority,
                results,
                then,
            });
        }
        let mut outcomes = Vec::with_capacity(fates.len());
        let mut failed = Vec::new();
        for (i, (fate, us, n)) in fates.into_iter().enumerate() {
            match fate {
                Fate::Done(o) => outcomes.push(stamp(first + i as u64, Ok(o), us, n)),
                Fate::Failed(e) if out_of_retries => {
                    // Its failed result now; the one-row job split off
                    // carries the error to the dead letters.
                    outcomes.push(stamp(first + i as u64, Err(e.clone()), us, n));
                    failed.push((i, e, Duration::ZERO));
                }
                Fate::Failed(e) => {
                    let delay = self.backoff(attempt);
                    self.note(format!(
                        "retrying row {} in {delay:?}: {e}",
                        first + i as u64
                    ));
                    failed.push((i, e, delay));
                }
            }
        }
        if failed.is_empty() {
            let results = self.records(outcomes)?;
            return Ok(Settled {
                receipt: job.delivery.receipt,
                priority: job.delivery.priority,
                results,
                then: Then::Ack,
            });
        }
        self.split(job, attempt, failed.into_iter(), outcomes)
    }

    /// Store `outcomes`, then replace `job` by one-row jobs for `rows`
    /// (index in the job, last error, delay before it is ready), each
    /// carrying `tried` attempts.
    fn split(
        &self,
        job: &Job<M::Input>,
        tried: u32,
        rows: impl Iterator<Item = (usize, String, Duration)>,
        outcomes: Vec<RowOutcome<M::Output>>,
    ) -> Result<Settled, InferError> {
        let now = wall_ms();
        let mut jobs = Vec::new();
        for (i, error, delay) in rows {
            let one = JobRecord {
                run: job.record.run,
                row: job.record.row + i as u64,
                enqueued_ms: now,
                prior_attempts: tried,
                last_error: Some(error),
                inputs: vec![job.record.inputs[i].clone()],
            };
            jobs.push((codec::encode(&one)?, delay));
        }
        Ok(Settled {
            receipt: job.delivery.receipt,
            priority: job.delivery.priority,
            results: self.records(outcomes)?,
            then: Then::Split(jobs),
        })
    }

    /// `outcomes` as result records of at most [`RECORD_BYTES`] each (one
    /// outcome larger than that is a record of its own), each with the
    /// first row it holds.
    fn records(&self, outcomes: Vec<RowOutcome<M::Output>>) -> Result<Vec<Record>, InferError> {
        let model = (self.model.name(), self.model.version());
        let stamp = |o: &RowOutcome<M::Output>| (o.run, o.row, o.attempt);
        let mut records = Vec::new();
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut first = 0;
        let mut bytes = 0;
        for (i, o) in outcomes.iter().enumerate() {
            let one = codec::encode(o)?;
            if !pending.is_empty() && bytes + one.len() > RECORD_BYTES {
                records.push(Record {
                    bytes: done_record(model, &pending),
                    first: stamp(&outcomes[first]),
                });
                pending.clear();
                bytes = 0;
                first = i;
            }
            bytes += one.len();
            pending.push(one);
        }
        if !pending.is_empty() {
            records.push(Record {
                bytes: done_record(model, &pending),
                first: stamp(&outcomes[first]),
            });
        }
        Ok(records)
    }

    /// Exponential backoff with jitter: half fixed, half random.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.opts.max_backoff);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = capped / 2;
        let jitter = half.mul_f64((self.seed % 1000) as f64 / 1000.0);
        half + jitter
    }
}

/// Most bytes of outcomes per result record.
const RECORD_BYTES: usize = 64 << 10;

/// Settled batches per worker the committer may have waiting.
const COMMIT_QUEUE: usize = 32;
