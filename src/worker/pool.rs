//! The worker pool: `num_parallel` workers, each leasing micro-batches of
//! jobs and running the model on a runner thread under a timeout, and one
//! committer that stores the results durably, then acks their jobs.
//!
//! Workers hand each settled batch to the committer and go on to the next
//! batch at once, so the model runs while earlier results are synced; the
//! committer merges every batch waiting into one durable write (one sync
//! for many batches). A job is acked only after its result's write
//! returned, so no job is ever acked without its result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{codec, wall_ms, JobRecord, Model, ModelError, ResultRecord, RowOutcome};
use crate::{Delivery, DequeueOptions, Error, Queue, Receipt, Result};

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

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(Error::InvalidArgument(s.to_string()));
        if !(1..=1024).contains(&self.num_parallel) {
            return bad("num_parallel must be in 1..=1024");
        }
        if !(1..=65536).contains(&self.max_batch) {
            return bad("max_batch must be in 1..=65536");
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
    /// [`Error::InvalidArgument`] for options out of range; [`Error::Io`]
    /// when a thread cannot be started.
    pub fn start<M: Model>(
        model: Arc<M>,
        jobs: Queue,
        results: Queue,
        opts: PoolOptions,
    ) -> Result<WorkerPool> {
        opts.validate()?;
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (commits, inbox) = mpsc::sync_channel::<Vec<Settled>>(opts.num_parallel);
        let committer = Committer {
            jobs: jobs.clone(),
            results,
            errors: errors.clone(),
        };
        let committer = std::thread::Builder::new()
            .name("lanelog-committer".into())
            .spawn(move || committer.run(&inbox))
            .map_err(Error::Io)?;
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
                    return Err(Error::Io(e));
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
    /// [`Error::InvalidArgument`] naming a worker thread that panicked (its
    /// leased jobs return to the queue when their leases expire).
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
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
            return Err(Error::InvalidArgument(format!(
                "{panicked} worker thread(s) panicked"
            )));
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

/// A job, what became of it, and the model time of its batch (µs).
type Ran<M> = (Job<<M as Model>::Input>, Fate<<M as Model>::Output>, u64);

/// What became of one job in a batch.
enum Fate<O> {
    Done(O),
    Failed(String),
}

impl<M: Model> Worker<M> {
    fn run(mut self) {
        let mut runner = Runner::new(self.model.clone());
        let take = DequeueOptions::new()
            .max(self.opts.max_batch)
            // Short, so a shutdown is noticed quickly; the wait is not a poll:
            // an enqueue wakes the worker at once.
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

    fn process(&mut self, batch: Vec<Delivery>, runner: &mut Runner<M>) -> Result<()> {
        let mut jobs = Vec::with_capacity(batch.len());
        for d in batch {
            match codec::decode::<JobRecord<M::Input>>(&d.payload) {
                Ok(record) => jobs.push(Job {
                    delivery: d,
                    record,
                }),
                Err(e) => self
                    .jobs
                    .dead_letter(d.receipt, &format!("undecodable job: {e}"))?,
            }
        }
        // Jobs delivered too often (their workers crashed) fail unrun.
        let limit = self.opts.retries + 1;
        let (runnable, exhausted): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|j| j.delivery.attempt <= limit);
        let mut fates: Vec<Ran<M>> = exhausted
            .into_iter()
            .map(|j| {
                let why = format!(
                    "gave up after {} deliveries without a result",
                    j.delivery.attempt - 1
                );
                (j, Fate::Failed(why), 0)
            })
            .collect();
        let started = Instant::now();
        let outcome = self.infer(runner, &runnable);
        let infer_us = started.elapsed().as_micros() as u64;
        match outcome {
            Ok(outputs) => {
                for (j, o) in runnable.into_iter().zip(outputs) {
                    fates.push((j, Fate::Done(o), infer_us));
                }
            }
            Err(e) if runnable.len() > 1 && !e.0.starts_with("timed out") => {
                // Find the failing rows: run each alone.
                for j in runnable {
                    let started = Instant::now();
                    let one = self.infer(runner, std::slice::from_ref(&j));
                    let us = started.elapsed().as_micros() as u64;
                    let fate = match one {
                        Ok(mut o) => Fate::Done(o.remove(0)),
                        Err(e) => Fate::Failed(e.0),
                    };
                    fates.push((j, fate, us));
                }
            }
            Err(e) => {
                for j in runnable {
                    fates.push((j, Fate::Failed(e.0.clone()), infer_us));
                }
            }
        }
        self.settle(fates)
    }

    /// Run the model on the runner thread, renewing leases while it runs.
    fn infer(
        &self,
        runner: &mut Runner<M>,
        jobs: &[Job<M::Input>],
    ) -> Result<Vec<M::Output>, ModelError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<M::Input> = jobs.iter().map(|j| j.record.input.clone()).collect();
        let renew_every = self.opts.lease / 3;
        let receipts: Vec<_> = jobs.iter().map(|j| j.delivery.receipt).collect();
        let outputs = runner.call(inputs, self.opts.timeout, renew_every, || {
            for r in &receipts {
                // A lease already lost is settled by whoever has it now.
                let _ = self.jobs.extend_lease(*r, self.opts.lease);
            }
        })?;
        if outputs.len() != jobs.len() {
            return Err(ModelError(format!(
                "model returned {} outputs for {} rows",
                outputs.len(),
                jobs.len()
            )));
        }
        Ok(outputs)
    }

    /// Encode each result and hand the batch to the committer, which
    /// stores results durably, then acks; failures are retried or
    /// dead-lettered there too.
    fn settle(&mut self, fates: Vec<Ran<M>>) -> Result<()> {
        let now = wall_ms();
        let model = (
            self.model.name().to_string(),
            self.model.version().to_string(),
        );
        let batch_rows = fates.len() as u32;
        let mut settled = Vec::with_capacity(fates.len());
        for (job, fate, infer_us) in fates {
            let d = &job.delivery;
            let final_failure = match &fate {
                Fate::Done(_) => false,
                Fate::Failed(_) => d.attempt > self.opts.retries,
            };
            let output = match fate {
                Fate::Done(o) => Ok(o),
                Fate::Failed(e) if final_failure => Err(e),
                Fate::Failed(e) => {
                    let delay = self.backoff(d.attempt);
                    self.note(format!("retrying in {delay:?}: {e}"));
                    settled.push(Settled {
                        receipt: d.receipt,
                        result: None,
                        then: Then::Retry(delay),
                    });
                    continue;
                }
            };
            let failed = output.is_err();
            let outcome = RowOutcome {
                run: job.record.run,
                row: job.record.row,
                output,
                attempt: d.attempt,
                finished_ms: now,
                queue_us: now.saturating_sub(job.record.enqueued_ms) * 1000,
                infer_us,
                batch_rows,
                model: model.clone(),
            };
            let bytes =
                codec::encode(&ResultRecord::Done(outcome)).map_err(Error::InvalidArgument)?;
            settled.push(Settled {
                receipt: d.receipt,
                result: Some((bytes, d.priority)),
                then: if failed { Then::DeadLetter } else { Then::Ack },
            });
        }
        // Unsettled jobs stay leased and come back when their leases end.
        self.commits
            .send(settled)
            .map_err(|_| Error::InvalidArgument("the pool's committer thread is gone".into()))
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

/// One job of a settled batch: its result to store, then what to do with
/// the job.
struct Settled {
    receipt: Receipt,
    result: Option<(Vec<u8>, u8)>,
    then: Then,
}

enum Then {
    Ack,
    /// Failed past its retries: the error is in its stored result.
    DeadLetter,
    /// Failed; ready again after the delay (nothing stored).
    Retry(Duration),
    /// Settled by the committer already (dead-lettered).
    Settled,
}

/// Most result bytes per durable write: a quarter of the smallest segment,
/// so a merged write is never refused as too large.
const MERGE_BYTES: usize = (crate::config::MIN_SEGMENT_SIZE / 4) as usize;

/// Stores the workers' results and settles their jobs (see the module
/// docs).
struct Committer {
    jobs: Queue,
    results: Queue,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Committer {
    fn run(self, inbox: &Receiver<Vec<Settled>>) {
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

    fn commit(&self, mut group: Vec<Settled>) -> Result<()> {
        // Results first, in writes of at most MERGE_BYTES: a job is never
        // acked without its result.
        let mut start = 0;
        while start < group.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < group.len() {
                let len = group[end].result.as_ref().map_or(0, |(b, _)| b.len());
                if end > start && bytes + len > MERGE_BYTES {
                    break;
                }
                bytes += len;
                end += 1;
            }
            let refs: Vec<(&[u8], u8)> = group[start..end]
                .iter()
                .filter_map(|s| s.result.as_ref().map(|(b, p)| (&b[..], *p)))
                .collect();
            match self.results.enqueue_batch(&refs) {
                Ok(_) => {}
                // One result the results queue cannot hold: park its job.
                Err(Error::TooLarge { .. }) if refs.len() == 1 => {
                    let s = group[start..end]
                        .iter_mut()
                        .find(|s| s.result.is_some())
                        .expect("the one result");
                    self.jobs.dead_letter(
                        s.receipt,
                        &format!("its result of {bytes} bytes is too large for the results queue"),
                    )?;
                    s.then = Then::Settled;
                    s.result = None;
                }
                Err(e) => return Err(e),
            }
            start = end;
        }
        let acks: Vec<Receipt> = group
            .iter()
            .filter(|s| matches!(s.then, Then::Ack))
            .map(|s| s.receipt)
            .collect();
        self.jobs.ack_batch(&acks)?;
        for s in &group {
            match s.then {
                Then::Ack | Then::Settled => {}
                Then::DeadLetter => self.jobs.dead_letter(
                    s.receipt,
                    "inference failed past its retries; the error is in its result",
                )?,
                Then::Retry(delay) => self.jobs.nack(s.receipt, delay)?,
            }
        }
        Ok(())
    }
}

/// Keep an error a worker or the committer survived: the last 100.
fn note(errors: &Mutex<Vec<String>>, message: String) {
    let mut errors = errors.lock();
    if errors.len() >= 100 {
        errors.remove(0);
    }
    errors.push(message);
}

type Reply<O> = std::result::Result<Vec<O>, ModelError>;

/// A thread that runs the model, so a call that hangs can be abandoned.
struct Runner<M: Model> {
    model: Arc<M>,
    tx: SyncSender<Vec<M::Input>>,
    rx: Receiver<Reply<M::Output>>,
}

impl<M: Model> Runner<M> {
    fn new(model: Arc<M>) -> Runner<M> {
        let (tx, inbox) = mpsc::sync_channel::<Vec<M::Input>>(1);
        let (outbox, rx) = mpsc::sync_channel::<Reply<M::Output>>(1);
        let m = model.clone();
        let spawned = std::thread::Builder::new()
            .name("lanelog-runner".into())
            .spawn(move || {
                while let Ok(inputs) = inbox.recv() {
                    let reply =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.infer(&inputs)))
                            .unwrap_or_else(|p| {
                                Err(ModelError(format!("model panicked: {}", panic_text(&p))))
                            });
                    if outbox.send(reply).is_err() {
                        return;
                    }
                }
            });
        // Without a thread the channel is closed and every call reports it.
        drop(spawned);
        Runner { model, tx, rx }
    }

    fn call(
        &mut self,
        inputs: Vec<M::Input>,
        timeout: Duration,
        renew_every: Duration,
        mut renew: impl FnMut(),
    ) -> Reply<M::Output> {
        if self.tx.send(inputs).is_err() {
            *self = Runner::new(self.model.clone());
            return Err(ModelError("the model runner thread is gone".into()));
        }
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            match self.rx.recv_timeout(left.min(renew_every)) {
                Ok(reply) => return reply,
                Err(RecvTimeoutError::Timeout) if left <= renew_every => {
                    // Abandon the stuck thread; its late reply goes nowhere.
                    *self = Runner::new(self.model.clone());
                    return Err(ModelError(format!("timed out after {timeout:?}")));
                }
                Err(RecvTimeoutError::Timeout) => renew(),
                Err(RecvTimeoutError::Disconnected) => {
                    *self = Runner::new(self.model.clone());
                    return Err(ModelError("the model runner thread died".into()));
                }
            }
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
