//! The worker pool: [`PoolOptions`], the threads of a service ([`Pool`])
//! and the workers. Each of `num_parallel` workers leases micro-batches of
//! jobs, runs each job on its own run's model, inline on its own thread
//! under the watchdog's timeout (see `watchdog.rs`), decides each job's
//! fate (complete, retry, dead letter, or split into one-row jobs) and
//! hands the settled batch to
//! the pool's one committer (see `committer.rs`), which stores the results
//! and then tells the runs.
//!
//! Invariants:
//! - A job is run only on the model registered under its exact
//!   [`ModelKey`]; a job no registered model takes (another model, another
//!   row type, another program's payload) is never run: it is held leased
//!   until a model for it is registered or the service closes
//!   ([`Unclaimed::Wait`]), or parked as a dead letter
//!   ([`Unclaimed::DeadLetter`]). Either way it blocks no other job.
//! - A worker never settles a job whose rows ran: it hands the job over, so
//!   no job is acked before its result is stored.
//! - A job's leases are renewed while the model runs on it, and a job left
//!   unsettled (a timeout, an error, a worker that died) stays leased and
//!   comes back when its lease ends.
//! - Retries and dead letters are per row: a job of several rows runs once;
//!   its failed rows, or all of them if its worker died, are split off into
//!   one-row jobs carrying their attempts and last error.
//! - A permanent failure is never retried; transient failures and timeouts
//!   are, each with its own backoff, up to `retries`.
//!
//! [`ModelKey`]: super::job::ModelKey

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::committer::{Committer, Settled, Then, ToCommitter};
use super::job::{Computed, Job, ModelKey, RowNote};
use super::registry::{Erased, Registry};
use super::rows::RowBlock;
use super::run::{Tracker, POLL};
use super::service::Unclaimed;
use super::stats::Recorder;
use super::watchdog::{Abandoned, Slot, Watchdog};
use super::{note, wall_ms, ErrorKind, InferError, ModelError, RowError};
use crate::{Delivery, DequeueOptions, Error, JobQueue, Queue, Receipt};

/// How a service's workers run.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub(crate) num_parallel: usize,
    pub(crate) max_batch: usize,
    pub(crate) linger: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) timeout_backoff: (Duration, Duration),
    pub(crate) lease: Duration,
    pub(crate) worker_nice: u8,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolOptions {
    /// Two workers, batches of up to 64 rows with a 2 ms linger, a 15 s
    /// timeout per row item, 2 retries with backoff from 100 ms up to 10 s
    /// (from 1 s up to 60 s after a timeout), and 30 s leases (renewed
    /// while a batch runs).
    pub fn new() -> Self {
        PoolOptions {
            num_parallel: 2,
            max_batch: 64,
            linger: Duration::from_millis(2),
            timeout: Duration::from_secs(15),
            retries: 2,
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            timeout_backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            lease: Duration::from_secs(30),
            worker_nice: 0,
        }
    }

    /// Workers running at once (0..=1024). Default = 2. Zero makes a
    /// submitter only, for a remote queue whose workers run in other
    /// processes (a service over the embedded queue refuses it: nobody
    /// else can reach its directory).
    #[must_use]
    pub fn num_parallel(mut self, n: usize) -> Self {
        self.num_parallel = n;
        self
    }

    /// Most rows per model call (1..=65536), and the rows a run puts in
    /// one job. Default = 64.
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

    /// Longest a model call may take, by default (a run may set its own,
    /// [`RunOptions::timeout`](super::RunOptions::timeout)); an overrun
    /// fails the call with [`ErrorKind::Timeout`], its late result is
    /// discarded. Default = 15 s.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Retries after the first failure before a row is dead-lettered
    /// (permanent failures are never retried). Default = 2.
    #[must_use]
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// First delay before retrying a transient failure; doubles each retry
    /// (with jitter) up to `max`. Default = 100 ms, up to 10 s.
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    /// As [`PoolOptions::backoff`], after a timeout. Default = 1 s, up to
    /// 60 s.
    #[must_use]
    pub fn timeout_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.timeout_backoff = (first, max);
        self
    }

    /// Lease per batch, renewed while the model runs. Default = 30 s.
    #[must_use]
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// Lower each worker thread's OS scheduling priority by `n` (its nice
    /// value goes up by `n`, at most to 19; Linux only). Default = 0.
    ///
    /// Workers run the model and keep both cores busy during a bulk run;
    /// the threads that feed and drain them (a caller's submit and wait,
    /// the committer that stores results) then wait for a time slice. A
    /// lower worker priority lets those run first, so an urgent
    /// single-row request beside a bulk run is answered in a fraction of
    /// the time, at some cost to the bulk run's throughput
    /// (docs/benchmarks.md gives both). A priority once lowered cannot be
    /// raised again without privileges: a worker keeps it for its life.
    #[must_use]
    pub fn worker_nice(mut self, n: u8) -> Self {
        self.worker_nice = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), InferError> {
        let bad = |s: &str| Err(InferError::InvalidArgument(s.to_string()));
        if self.num_parallel > 1024 {
            return bad("num_parallel must be in 0..=1024");
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
        if self.backoff.0 > self.backoff.1 || self.timeout_backoff.0 > self.timeout_backoff.1 {
            return bad("a first backoff must not be above its maximum");
        }
        if self.worker_nice > 19 {
            return bad("worker_nice must be in 0..=19");
        }
        if self.worker_nice > 0 && !super::priority::SUPPORTED {
            return bad("worker_nice is supported on Linux only (elsewhere a thread's priority is the whole process's)");
        }
        Ok(())
    }
}

/// How long a job no registered model takes is held leased: until a model
/// for it is registered or the service closes, in practice.
const HOLD: Duration = Duration::from_secs(30 * 86_400);

/// What the workers, the committer and the service share.
pub(crate) struct Shared<Q: JobQueue = Queue> {
    pub jobs: Q,
    /// The lease of every job: the jobs queue's fixed lease when it has
    /// one (JetStream: the consumers' ack wait), else `opts.lease`.
    pub lease: Duration,
    /// How often held jobs' leases are renewed: `None` when one
    /// extension holds them ([`HOLD`]); a third of the lease when the
    /// queue's lease is fixed (an extension only restarts it).
    pub renew_held: Option<Duration>,
    /// Longest wait of a worker's dequeue before it looks at its stop
    /// flag: short on the embedded queue (a look is cheap), longer on a
    /// remote one (each look is requests to the server).
    pub dequeue_wait: Duration,
    /// Whether the queue is remote ([`JobQueue::remote`]): other
    /// processes may settle the jobs of runs held here.
    pub remote: bool,
    pub registry: Registry,
    pub tracker: Tracker,
    pub health: Health,
    pub recorder: Arc<Recorder>,
    pub opts: PoolOptions,
    /// Stamped on every result (the service's pipeline version).
    pub pipeline_version: String,
    pub unclaimed: Unclaimed,
    /// Whether the committer syncs each commit (`Immediate`).
    pub sync_commits: bool,
    /// Jobs held because no registered model takes them.
    pub held: Mutex<Vec<(Receipt, Option<ModelKey>)>>,
}

impl<Q: JobQueue> Shared<Q> {
    /// Whether this service had workers and every one is gone (a
    /// submitter only, `num_parallel` 0, never had any).
    pub fn workers_gone(&self) -> bool {
        self.opts.num_parallel > 0 && self.health.workers() == 0
    }

    /// Give back the held jobs a model registered now takes (all of them
    /// with `None`), ready at once.
    pub fn release_held(&self, for_model: Option<&ModelKey>) {
        let mut held = self.held.lock();
        held.retain(|(receipt, key)| {
            let release = match (for_model, key) {
                (None, _) => true,
                (Some(m), Some(k)) => m == k,
                (Some(_), None) => false,
            };
            if release {
                // A lease already lost is settled by whoever has it now.
                let _ = self.jobs.nack(*receipt, Duration::ZERO);
            }
            !release
        });
    }

    /// Extend the lease of every held job again (a queue whose lease is
    /// fixed restarts it at its full length); a job whose lease was lost
    /// meanwhile (another process took it) is no longer held here.
    pub fn renew_held_leases(&self) {
        self.held.lock().retain(|(receipt, _)| {
            match self.jobs.extend_lease(*receipt, HOLD) {
                Ok(()) => true,
                // Transient: the next renewal tries again, in time while
                // the lease has two thirds left.
                Err(Error::Unavailable { .. }) => true,
                Err(e) => {
                    self.health
                        .note(format!("job {} is no longer held: {e}", receipt.id()));
                    false
                }
            }
        });
    }
}

/// Whether the pool can make progress: the first fatal error (a poisoned
/// or closed queue), the workers still running, the errors survived.
#[derive(Default)]
pub(crate) struct Health {
    fatal: Mutex<Option<String>>,
    /// Workers running, not counting threads the watchdog gave up on.
    workers: Mutex<usize>,
    /// Signalled when a worker leaves.
    left: Condvar,
    errors: Mutex<Vec<String>>,
}

impl Health {
    pub fn fail(&self, why: String) {
        let mut f = self.fatal.lock();
        if f.is_none() {
            *f = Some(why);
        }
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    pub fn workers(&self) -> usize {
        *self.workers.lock()
    }

    fn worker_started(&self) {
        *self.workers.lock() += 1;
    }

    fn worker_left(&self) {
        let mut n = self.workers.lock();
        *n = n.saturating_sub(1);
        self.left.notify_all();
    }

    /// Wait until no worker runs, calling `wake` now and again meanwhile:
    /// a worker that looked at its stop flag just before it was set, and
    /// then began its dequeue's wait after the first wake-up, would
    /// otherwise sleep its whole wait (the wake-ups back off, up to 50 ms,
    /// as each may be a request to a server).
    fn wait_workers_gone(&self, wake: impl Fn()) {
        let mut again = Duration::from_micros(200);
        let mut n = self.workers.lock();
        while *n > 0 {
            wake();
            self.left.wait_for(&mut n, again);
            again = (again * 2).min(Duration::from_millis(50));
        }
    }

    pub fn note(&self, message: String) {
        note(&self.errors, message);
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().clone()
    }
}

/// Counts a worker as running for as long as it lives, panics included,
/// unless the watchdog gave up on it (its replacement counts instead).
struct Alive<Q: JobQueue> {
    crew: Arc<Crew<Q>>,
    slot: Arc<Slot<Batch>>,
}

impl<Q: JobQueue> Drop for Alive<Q> {
    fn drop(&mut self) {
        self.crew.watchdog.leave(&self.slot);
        if !self.slot.abandoned() {
            self.crew.shared.health.worker_left();
        }
    }
}

/// What starts workers: the pool at its start, and the watcher in place of
/// a worker whose model call it gave up on.
struct Crew<Q: JobQueue> {
    shared: Arc<Shared<Q>>,
    commits: SyncSender<ToCommitter>,
    stop: AtomicBool,
    watchdog: Arc<Watchdog<Batch>>,
    /// The workers to join at stop; the handle of a thread given up on is
    /// let go (it is never joined: its model call may never return).
    threads: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicUsize,
}

impl<Q: JobQueue> Crew<Q> {
    /// Start a worker. `inherited`: the batch of a worker whose call the
    /// watchdog gave up on, and the call's timeout; the new worker settles
    /// the call's jobs as timed out and runs the rest of the batch before
    /// it takes any job.
    fn spawn(self: &Arc<Self>, inherited: Option<(Batch, Duration)>) -> std::io::Result<()> {
        let i = self.started.fetch_add(1, Ordering::SeqCst);
        self.shared.health.worker_started();
        let crew = self.clone();
        // Held across the spawn, so the handle is listed before the
        // watcher can look for it.
        let mut threads = self.threads.lock();
        let spawned = std::thread::Builder::new()
            .name(format!("lanelog-worker-{i}"))
            .spawn(move || {
                let nice = crew.shared.opts.worker_nice;
                if nice > 0 {
                    if let Err(e) = super::priority::lower_this_thread(nice) {
                        // The worker still runs, at the usual priority.
                        crew.shared.health.note(format!(
                            "worker-{i}: could not lower its priority by {nice}: {e}"
                        ));
                    }
                }
                let slot = crew.watchdog.join();
                let worker = Worker {
                    seed: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(wall_ms() | 1),
                    jobs_per_take: 1,
                    job_rows_hint: 0,
                    partition: Arc::from(format!("worker-{i}")),
                    slot,
                    crew,
                };
                worker.run(inherited);
            });
        match spawned {
            Ok(t) => {
                threads.push(t);
                Ok(())
            }
            Err(e) => {
                self.shared.health.worker_left();
                Err(e)
            }
        }
    }

    /// Let go of the threads whose calls the watchdog gave up on and start
    /// their replacements.
    fn replace(self: &Arc<Self>, abandoned: Vec<Abandoned<Batch>>) {
        for a in abandoned {
            self.threads.lock().retain(|t| t.thread().id() != a.thread);
            self.shared.health.note(format!(
                "a model call overran its timeout of {:?}: its worker is replaced",
                a.timeout
            ));
            // The replacement counts first, so the count never reads zero
            // while one is on its way.
            if let Err(e) = self.spawn(Some((a.held, a.timeout))) {
                // Its jobs come back when their leases end.
                self.shared.health.note(format!(
                    "cannot start a worker in place of a stuck one: {e}"
                ));
            }
            // The stuck thread no longer counts.
            self.shared.health.worker_left();
        }
    }
}

/// The threads of a service: the workers and the committer.
pub(crate) struct Pool<Q: JobQueue = Queue> {
    crew: Arc<Crew<Q>>,
    /// Exits on [`ToCommitter::Finish`], after committing what the workers
    /// handed over.
    committer: Option<JoinHandle<()>>,
    /// Asks the queue about the jobs of runs waited for (see `run.rs`) and
    /// watches the workers' model calls (see `watchdog.rs`).
    watcher: Option<JoinHandle<()>>,
}

impl<Q: JobQueue> Pool<Q> {
    /// Start the committer, the watcher and `num_parallel` workers.
    pub fn start(shared: Arc<Shared<Q>>) -> Result<Pool<Q>, InferError> {
        let opts = shared.opts.clone();
        // Room for many batches per worker: while the committer syncs, the
        // workers go on, and the next commit takes all they settled.
        let (commits, inbox) = mpsc::sync_channel::<ToCommitter>(
            opts.num_parallel.max(1).saturating_mul(COMMIT_QUEUE),
        );
        let committer = Committer::new(shared.clone());
        let committer = std::thread::Builder::new()
            .name("lanelog-committer".into())
            .spawn(move || committer.run(&inbox))
            .map_err(InferError::Spawn)?;
        let crew = Arc::new(Crew {
            shared: shared.clone(),
            commits,
            stop: AtomicBool::new(false),
            watchdog: Arc::default(),
            threads: Mutex::new(Vec::with_capacity(opts.num_parallel)),
            started: AtomicUsize::new(0),
        });
        let mut pool = Pool {
            crew: crew.clone(),
            committer: Some(committer),
            watcher: None,
        };
        let watcher = {
            let crew = crew.clone();
            std::thread::Builder::new()
                .name("lanelog-watcher".into())
                .spawn(move || watch(&crew))
        };
        match watcher {
            Ok(w) => {
                crew.watchdog.set_watcher(w.thread().clone());
                pool.watcher = Some(w);
            }
            Err(e) => {
                let _ = pool.stop_and_join();
                return Err(InferError::Spawn(e));
            }
        }
        for _ in 0..opts.num_parallel {
            if let Err(e) = crew.spawn(None) {
                let _ = pool.stop_and_join();
                return Err(InferError::Spawn(e));
            }
        }
        Ok(pool)
    }

    /// Stop taking jobs, let each worker finish (or be given up on in) its
    /// current batch, wait for the workers, then for the committer to store
    /// their last results; give back the held jobs.
    pub fn stop_and_join(&mut self) -> Result<(), InferError> {
        let crew = &self.crew;
        let shared = &crew.shared;
        crew.stop.store(true, Ordering::SeqCst);
        // The watcher still runs: a worker stuck in its model is given up
        // on (and its replacement, seeing the stop, leaves at once).
        shared
            .health
            .wait_workers_gone(|| shared.jobs.wake_waiters());
        let mut panicked = 0;
        let threads = std::mem::take(&mut *crew.threads.lock());
        for t in threads {
            if t.join().is_err() {
                panicked += 1;
            }
        }
        if let Some(w) = self.watcher.take() {
            w.thread().unpark();
            if w.join().is_err() {
                panicked += 1;
            }
        }
        // A thread given up on may still send later: the committer stops
        // on this message, not when every sender is gone.
        let _ = crew.commits.send(ToCommitter::Finish);
        if let Some(c) = self.committer.take() {
            if c.join().is_err() {
                panicked += 1;
            }
        }
        shared.release_held(None);
        // Waiters look again, and find the workers gone.
        for run in shared.tracker.live() {
            run.notify();
        }
        if panicked > 0 {
            return Err(InferError::Panicked { threads: panicked });
        }
        Ok(())
    }
}

impl<Q: JobQueue> Drop for Pool<Q> {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// The watcher thread: sweeps the workers' model calls (renewing their
/// jobs' leases, replacing a worker whose call overran), and every
/// [`POLL`], for each run a caller waits for, asks the queue about its
/// jobs (what no worker here reports: a missed deadline, results of an
/// earlier process), then wakes its waiters to check the service's health
/// too.
fn watch<Q: JobQueue>(crew: &Arc<Crew<Q>>) {
    let shared = &crew.shared;
    let mut renewed = Instant::now();
    let mut polled = Instant::now();
    loop {
        let lease = shared.lease;
        let (abandoned, next_call) = crew.watchdog.sweep(|receipts| {
            for r in receipts {
                // A lease already lost is settled by whoever has it now.
                let _ = shared.jobs.extend_lease(*r, lease);
            }
        });
        crew.replace(abandoned);
        let stopping = crew.stop.load(Ordering::SeqCst);
        // While stopping, only the workers' calls are watched, until the
        // pool joins this thread (after the last worker left).
        if stopping && shared.health.workers() == 0 {
            return;
        }
        if polled.elapsed() >= POLL {
            polled = Instant::now();
            if !stopping {
                poll_runs(shared, &mut renewed);
            }
        }
        let until_poll = POLL.saturating_sub(polled.elapsed());
        let wait = next_call.map_or(until_poll, |at| {
            at.saturating_duration_since(Instant::now()).min(until_poll)
        });
        std::thread::park_timeout(wait);
    }
}

/// The watcher's look every [`POLL`]: held jobs' leases, and the runs
/// waited for.
fn poll_runs<Q: JobQueue>(shared: &Shared<Q>, renewed: &mut Instant) {
    if shared
        .renew_held
        .is_some_and(|every| renewed.elapsed() >= every)
    {
        *renewed = Instant::now();
        shared.renew_held_leases();
    }
    let healthy = shared.health.fatal().is_none() && !shared.workers_gone();
    for run in shared.tracker.live() {
        if !run.watched() {
            continue;
        }
        if healthy {
            // On a remote queue another process's committer may have
            // dead-lettered a job: only the queue can tell.
            let waiting = !shared.remote;
            if let Err(e) = run.refresh(&shared.jobs, shared.sync_commits, waiting) {
                shared.health.note(format!(
                    "asking about the jobs of run {} failed: {e}",
                    run.id()
                ));
            }
        }
        run.notify();
    }
}

struct Worker<Q: JobQueue> {
    crew: Arc<Crew<Q>>,
    /// Where this worker's model calls are watched.
    slot: Arc<Slot<Batch>>,
    seed: u64,
    /// Jobs to lease at once: about `max_batch` rows' worth at the size of
    /// the largest job seen lately (`job_rows_hint`).
    jobs_per_take: usize,
    /// Rows of the largest job seen lately: the largest of the last take,
    /// or this decayed by an eighth per take, whichever is more. Not the
    /// last take's average: after a take of one small job (an interactive
    /// row) that would lease dozens of a bulk run's jobs at once, held by
    /// this worker for many model calls while urgent work waits.
    job_rows_hint: usize,
    /// This worker's name in results' metadata.
    partition: Arc<str>,
}

/// A leased job, decoded, with the model that runs it.
struct Leased {
    delivery: Delivery,
    /// The job, its rows taken out into `rows`.
    job: Job,
    /// The job's rows (shared by the calls that take them).
    rows: Arc<RowBlock>,
    model: Arc<dyn Erased>,
    /// Time to decode the job.
    decode_ns: u64,
}

impl Leased {
    /// Deliveries of these rows so far, this one included.
    fn attempt(&self) -> u32 {
        self.job
            .prior_attempts
            .saturating_add(self.delivery.attempt)
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether its rows' last call timed out: then it runs alone, as a call
    /// that hangs for good would time out every row beside it again.
    fn runs_alone(&self) -> bool {
        self.job
            .last_error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::Timeout)
    }
}

/// A worker's jobs while it makes a model call: the call's, and those it
/// has yet to run. The watchdog holds them during the call, so a worker
/// replacing a stuck one takes them all over.
struct Batch {
    call: Vec<Leased>,
    rest: VecDeque<Leased>,
}

/// After a take whose largest job had `largest` rows: the new largest-job
/// hint (that, or the old hint less an eighth) and how many jobs to lease
/// next, about `max_batch` rows' worth of jobs that large.
fn next_take(max_batch: usize, hint: usize, largest: usize) -> (usize, usize) {
    let hint = largest.max(hint - hint.div_ceil(8));
    (hint, (max_batch / hint.max(1)).clamp(1, max_batch))
}

/// What the model calls made of a job's rows.
enum Fate {
    /// Every row computed by one call: the outputs, the call's model time
    /// (µs) and its rows.
    Batch {
        outputs: RowBlock,
        infer_us: u64,
        batch_rows: u32,
    },
    /// The call failed and each row ran alone: its output and model time,
    /// or its error.
    Rows(Vec<Result<(RowBlock, u64), RowError>>),
    /// Every row failed with this error (a timeout, or a one-row call).
    Failed(RowError),
}

impl<Q: JobQueue> Worker<Q> {
    fn run(mut self, inherited: Option<(Batch, Duration)>) {
        let _alive = Alive {
            crew: self.crew.clone(),
            slot: self.slot.clone(),
        };
        if let Some((batch, timeout)) = inherited {
            let e = RowError::from(ModelError::timed_out(timeout));
            let mut settled: Vec<Settled> = batch
                .call
                .iter()
                .map(|l| self.settle(l, Fate::Failed(e.clone())))
                .collect();
            let given_up = self.run_jobs(batch.rest, &mut settled);
            if !self.hand_over(settled) || given_up {
                return;
            }
        }
        while !self.crew.stop.load(Ordering::SeqCst) {
            let take = DequeueOptions::new()
                .max(self.jobs_per_take)
                // Short, so a shutdown is noticed quickly; the wait is not a
                // poll: an enqueue wakes the worker at once, and so does
                // shutdown (see `Shared::dequeue_wait`).
                .wait(self.crew.shared.dequeue_wait)
                .linger(self.crew.shared.opts.linger)
                .visibility(self.crew.shared.lease);
            let batch = match self.crew.shared.jobs.dequeue_with(&take) {
                Ok(b) => b,
                Err(e @ (Error::Closed | Error::Poisoned)) => {
                    self.crew
                        .shared
                        .health
                        .fail(format!("the jobs queue failed: {e}"));
                    return;
                }
                Err(e) => {
                    self.crew.shared.health.note(format!("dequeue failed: {e}"));
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            let (settled, given_up) = self.process(batch);
            if !self.hand_over(settled) || given_up {
                return;
            }
        }
    }

    /// Send settled jobs to the committer; false when it is gone (which,
    /// but for a thread the watchdog gave up on, stops the pool).
    fn hand_over(&self, settled: Vec<Settled>) -> bool {
        if self
            .crew
            .commits
            .send(ToCommitter::Settled(settled))
            .is_ok()
        {
            return true;
        }
        if !self.slot.abandoned() {
            // The committer leaves early only by panicking.
            self.crew
                .shared
                .health
                .fail("the committer thread is gone".into());
        }
        false
    }

    /// Decide the fate of each job leased: run the runnable ones, settle
    /// the others. Also says whether the watchdog gave up on this thread
    /// meanwhile (then the jobs it did not run are its replacement's).
    fn process(&mut self, batch: Vec<Delivery>) -> (Vec<Settled>, bool) {
        let mut settled = Vec::with_capacity(batch.len());
        let mut runnable: Vec<Leased> = Vec::with_capacity(batch.len());
        let mut largest = 0;
        for d in batch {
            let decoding = Instant::now();
            let decoded = Job::decode(&d.payload);
            let decode_ns = decoding.elapsed().as_nanos() as u64;
            let Some(mut job) = decoded else {
                settled.extend(self.unclaimed(
                    d,
                    None,
                    "a payload that is not a job of this format".into(),
                ));
                continue;
            };
            largest = largest.max(job.rows.len().max(1));
            let Some(model) = self.crew.shared.registry.get(&job.model) else {
                let why = format!("no model {} for its row type is registered", job.model);
                let key = Some(job.model.clone());
                settled.extend(self.unclaimed(d, key, why));
                continue;
            };
            let job_rows = Arc::new(std::mem::replace(&mut job.rows, RowBlock::none()));
            let leased = Leased {
                delivery: d,
                job,
                rows: job_rows,
                model,
                decode_ns,
            };
            let attempt = leased.attempt();
            let last = leased.job.last_error.clone();
            let n = leased.len();
            if self.crew.shared.tracker.is_cancelled(leased.job.run) {
                let why = RowError::new(ErrorKind::Cancelled, "its run was cancelled");
                let computed = all_noted(n, |_| RowNote::Failed(why.clone()));
                settled.push(self.complete(&leased, computed, Vec::new(), 0));
            } else if n == 0 {
                settled.push(self.complete(
                    &leased,
                    all_noted(0, |_| RowNote::Moved(0)),
                    Vec::new(),
                    0,
                ));
            } else if n > 1 && leased.delivery.attempt > 1 {
                // Its worker died or timed out on it: find the culprit row
                // by row, without running the rest together again. This
                // delivery ran nothing: it does not count as a try.
                let why = last.unwrap_or_else(|| {
                    RowError::new(
                        ErrorKind::Transient,
                        "its worker stopped before storing a result (lease expired)",
                    )
                });
                let failed = (0..n).map(|i| (i, why.clone(), Duration::ZERO)).collect();
                let computed = all_noted(n, |_| RowNote::Moved(0));
                settled.push(self.split(&leased, attempt - 1, failed, computed, 0));
            } else if let Some(e) = last.filter(|e| {
                e.kind == ErrorKind::Permanent || attempt > self.crew.shared.opts.retries + 1
            }) {
                // Failed for good before this delivery: parked unrun (this
                // delivery is not a try).
                settled.push(self.dead(&leased, e, attempt - 1));
            } else if attempt > self.crew.shared.opts.retries + 1 {
                let why = RowError::new(
                    ErrorKind::Transient,
                    format!("gave up after {} deliveries without a result", attempt - 1),
                );
                settled.push(self.dead(&leased, why, attempt - 1));
            } else {
                runnable.push(leased);
            }
        }
        (self.job_rows_hint, self.jobs_per_take) =
            next_take(self.crew.shared.opts.max_batch, self.job_rows_hint, largest);
        // One model at a time, in the order the queue gave the jobs.
        let mut queue = VecDeque::with_capacity(runnable.len());
        while !runnable.is_empty() {
            let key = runnable[0].job.model.clone();
            let (group, rest): (Vec<Leased>, Vec<Leased>) =
                runnable.into_iter().partition(|l| l.job.model == key);
            queue.extend(group);
            runnable = rest;
        }
        let given_up = self.run_jobs(queue, &mut settled);
        (settled, given_up)
    }

    /// Hold or park a job no model here takes (see [`Unclaimed`]).
    fn unclaimed(&self, d: Delivery, key: Option<ModelKey>, why: String) -> Option<Settled> {
        match self.crew.shared.unclaimed {
            Unclaimed::Wait => {
                match self.crew.shared.jobs.extend_lease(d.receipt, HOLD) {
                    Ok(()) => self.crew.shared.held.lock().push((d.receipt, key.clone())),
                    Err(e) => self
                        .crew
                        .shared
                        .health
                        .note(format!("cannot hold job {}: {e}", d.id)),
                }
                // A model registered while this one was being held.
                if let Some(k) = &key {
                    if self.crew.shared.registry.has(k) {
                        self.crew.shared.release_held(Some(k));
                    }
                }
                None
            }
            Unclaimed::DeadLetter => Some(Settled {
                receipt: d.receipt,
                run: None,
                priority: d.priority,
                enqueued_ms: 0,
                then: Then::Park(why),
            }),
        }
    }

    /// Run `queue`'s jobs in order: consecutive jobs of one model and one
    /// row layout share a call of up to `max_batch` rows (a job is never
    /// cut across calls). A failed call of several rows runs each row
    /// alone to find the failing ones. Each job is settled into `settled`,
    /// in order. Returns whether the watchdog gave up on this thread: then
    /// the call's jobs and the rest of the queue are its replacement's.
    fn run_jobs(&mut self, mut queue: VecDeque<Leased>, settled: &mut Vec<Settled>) -> bool {
        while let Some(first) = queue.pop_front() {
            let model = first.model.clone();
            let mut rows = first.len();
            let solo = first.runs_alone();
            let mut call = vec![first];
            while let Some(next) = queue.front() {
                if solo
                    || next.runs_alone()
                    || next.job.model != call[0].job.model
                    || !next.rows.same_layout(&call[0].rows)
                    || rows + next.len() > self.crew.shared.opts.max_batch
                {
                    break;
                }
                rows += next.len();
                call.extend(queue.pop_front());
            }
            // What is settled goes to the committer before the next call,
            // which might never return.
            if !settled.is_empty() {
                self.hand_over(std::mem::take(settled));
            }
            // The shortest timeout of the jobs in the call: no row waits
            // longer than its own run allows.
            let timeout = call
                .iter()
                .map(|l| Duration::from_millis(l.job.timeout_ms.max(1)))
                .min()
                .unwrap_or(self.crew.shared.opts.timeout);
            let block = if call.len() == 1 {
                call[0].rows.clone()
            } else {
                Arc::new(RowBlock::concat(
                    &call.iter().map(|l| &*l.rows).collect::<Vec<_>>(),
                ))
            };
            let started = Instant::now();
            let mut batch = Batch { call, rest: queue };
            let outcome;
            (batch, outcome) = match self.infer(batch, &model, &block, timeout) {
                Some(back) => back,
                None => return true,
            };
            let infer_us = started.elapsed().as_micros() as u64;
            let mut fates = Vec::with_capacity(batch.call.len());
            match outcome {
                Ok(outputs) if batch.call.len() == 1 => fates.push(Fate::Batch {
                    outputs,
                    infer_us,
                    batch_rows: rows as u32,
                }),
                Ok(outputs) => {
                    let mut at = 0;
                    for l in &batch.call {
                        fates.push(Fate::Batch {
                            outputs: outputs.slice(at, at + l.len()),
                            infer_us,
                            batch_rows: rows as u32,
                        });
                        at += l.len();
                    }
                }
                Err(e) if rows > 1 && e.kind() != ErrorKind::Timeout => {
                    // Find the failing rows: run each alone.
                    for j in 0..batch.call.len() {
                        let mut alone = Vec::with_capacity(batch.call[j].len());
                        for i in 0..batch.call[j].len() {
                            let row = batch.call[j].rows.slice(i, i + 1);
                            let started = Instant::now();
                            let one;
                            (batch, one) = match self.infer(batch, &model, &row, timeout) {
                                Some(back) => back,
                                None => return true,
                            };
                            let us = started.elapsed().as_micros() as u64;
                            alone.push(one.map(|o| (o, us)).map_err(RowError::from));
                        }
                        fates.push(Fate::Rows(alone));
                    }
                }
                Err(e) => {
                    let e = RowError::from(e);
                    fates.extend(batch.call.iter().map(|_| Fate::Failed(e.clone())));
                }
            }
            for (leased, fate) in batch.call.iter().zip(fates) {
                settled.push(self.settle(leased, fate));
            }
            queue = batch.rest;
        }
        false
    }

    /// One model call on `batch.call`, inline, watched by the watchdog
    /// (which renews the leases of the call's jobs while it runs). Gives
    /// `batch` back with the outcome, or `None` if the watchdog gave up on
    /// the call (then `batch` went to the worker replacing this one).
    fn infer(
        &self,
        batch: Batch,
        model: &Arc<dyn Erased>,
        rows: &RowBlock,
        timeout: Duration,
    ) -> Option<(Batch, Result<RowBlock, ModelError>)> {
        let receipts = batch.call.iter().map(|l| l.delivery.receipt).collect();
        self.crew.watchdog.call(
            &self.slot,
            batch,
            receipts,
            timeout,
            self.crew.shared.lease / 3,
            || model.infer(rows),
        )
    }

    /// A job's fate after its model call: complete it, retry it, park it,
    /// or complete the rows done and split off the failed ones.
    fn settle(&mut self, leased: &Leased, fate: Fate) -> Settled {
        let attempt = leased.attempt();
        let queue_us = wall_ms().saturating_sub(leased.job.enqueued_ms) * 1000;
        let out_of_retries = attempt > self.crew.shared.opts.retries;
        let n = leased.len();
        let rows: Vec<Result<(RowBlock, u64), RowError>> = match fate {
            Fate::Batch {
                outputs,
                infer_us,
                batch_rows,
            } => {
                let computed = Computed {
                    rows: n as u32,
                    infer_us,
                    batch_rows,
                    outputs,
                    notes: Vec::new(),
                };
                return self.complete(leased, computed, Vec::new(), queue_us);
            }
            // A one-row job's error decides the job: retried whole, or
            // parked.
            Fate::Rows(mut rows) if n == 1 => match rows.pop() {
                Some(Ok((outputs, infer_us))) => {
                    let computed = Computed {
                        rows: 1,
                        infer_us,
                        batch_rows: 1,
                        outputs,
                        notes: Vec::new(),
                    };
                    return self.complete(leased, computed, Vec::new(), queue_us);
                }
                Some(Err(e)) => return self.one_failed(leased, e),
                None => {
                    let e =
                        RowError::new(ErrorKind::Permanent, "the model gave the row no outcome");
                    return self.one_failed(leased, e);
                }
            },
            Fate::Failed(e) if n == 1 => return self.one_failed(leased, e),
            Fate::Failed(e) => (0..n).map(|_| Err(e.clone())).collect(),
            Fate::Rows(rows) => rows,
        };
        let mut outputs = Vec::with_capacity(rows.len());
        let mut notes = Vec::new();
        let mut failed = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            match row {
                Ok((output, infer_us)) => {
                    outputs.push(output);
                    notes.push((i as u32, RowNote::Alone { infer_us }));
                }
                Err(e) => {
                    let delay = if e.kind == ErrorKind::Permanent || out_of_retries {
                        Duration::ZERO
                    } else {
                        self.backoff(e.kind, attempt)
                    };
                    // Replaced by the child's id when it is enqueued.
                    notes.push((i as u32, RowNote::Moved(0)));
                    failed.push((i, e, delay));
                }
            }
        }
        let computed = Computed {
            rows: n as u32,
            infer_us: 0,
            batch_rows: 1,
            outputs: RowBlock::concat(&outputs.iter().collect::<Vec<_>>()),
            notes,
        };
        if failed.is_empty() {
            return self.complete(leased, computed, Vec::new(), queue_us);
        }
        self.split(leased, attempt, failed, computed, queue_us)
    }

    /// A one-row job failed: retry it whole after a backoff, or park it
    /// (a permanent error, or out of retries).
    fn one_failed(&mut self, leased: &Leased, e: RowError) -> Settled {
        let attempt = leased.attempt();
        if e.kind == ErrorKind::Permanent || attempt > self.crew.shared.opts.retries {
            return self.dead(leased, e, attempt);
        }
        let delay = self.backoff(e.kind, attempt);
        self.crew.shared.health.note(format!(
            "retrying job {} in {delay:?}: {e}",
            leased.delivery.id
        ));
        Settled {
            receipt: leased.delivery.receipt,
            run: Some((leased.job.run, leased.delivery.id.into())),
            priority: leased.delivery.priority,
            enqueued_ms: leased.job.enqueued_ms,
            then: Then::Retry(delay),
        }
    }

    /// Complete a job with the rows it computed, its failed rows split
    /// off into one-row jobs (their ids filled in by the committer).
    fn split(
        &self,
        leased: &Leased,
        tried: u32,
        failed: Vec<(usize, RowError, Duration)>,
        computed: Computed,
        queue_us: u64,
    ) -> Settled {
        let now = wall_ms();
        let children = failed
            .into_iter()
            .map(|(i, e, delay)| {
                let child = leased
                    .job
                    .split_off(leased.rows.slice(i, i + 1), i, tried, e, now);
                (i, child, delay)
            })
            .collect();
        self.complete(leased, computed, children, queue_us)
    }

    fn complete(
        &self,
        leased: &Leased,
        computed: Computed,
        children: Vec<(usize, Job, Duration)>,
        queue_us: u64,
    ) -> Settled {
        Settled {
            receipt: leased.delivery.receipt,
            run: Some((leased.job.run, leased.delivery.id.into())),
            priority: leased.delivery.priority,
            enqueued_ms: leased.job.enqueued_ms,
            then: Then::Complete {
                model: leased.model.clone(),
                attempt: leased.attempt(),
                queue_us,
                decode_ns: leased.decode_ns,
                partition: self.partition.clone(),
                computed,
                children,
            },
        }
    }

    fn dead(&self, leased: &Leased, error: RowError, attempt: u32) -> Settled {
        Settled {
            receipt: leased.delivery.receipt,
            run: Some((leased.job.run, leased.delivery.id.into())),
            priority: leased.delivery.priority,
            enqueued_ms: leased.job.enqueued_ms,
            then: Then::DeadLetter {
                error,
                attempt,
                model: leased.model.clone(),
            },
        }
    }

    fn backoff(&mut self, kind: ErrorKind, attempt: u32) -> Duration {
        let (first, max) = match kind {
            ErrorKind::Timeout => self.crew.shared.opts.timeout_backoff,
            _ => self.crew.shared.opts.backoff,
        };
        let exp = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(max);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = capped / 2;
        let jitter = half.mul_f64((self.seed % 1000) as f64 / 1000.0);
        half + jitter
    }
}

/// Settled batches per worker the committer may have waiting.
const COMMIT_QUEUE: usize = 32;

/// A job of `n` rows none of which was computed, each noted by `note`.
fn all_noted(n: usize, note: impl Fn(usize) -> RowNote) -> Computed {
    Computed {
        rows: n as u32,
        infer_us: 0,
        batch_rows: 0,
        outputs: RowBlock::none(),
        notes: (0..n).map(|i| (i as u32, note(i))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::next_take;

    #[test]
    fn a_take_follows_the_largest_job_seen_lately_not_the_last_average() {
        // A bulk run's jobs of 64 rows: one job per take.
        let (hint, jobs) = next_take(64, 0, 64);
        assert_eq!((hint, jobs), (64, 1));
        // One urgent row: the next take still leases one job, not 64 of
        // the bulk run's (4,096 rows held while urgent work waits).
        let (hint, jobs) = next_take(64, hint, 1);
        assert_eq!((hint, jobs), (56, 1));
        // Only small jobs for a while: the takes grow back to a full batch.
        let mut h = hint;
        let mut takes = 0;
        while next_take(64, h, 1).1 < 64 {
            h = next_take(64, h, 1).0;
            takes += 1;
        }
        assert!(takes < 40, "{takes} takes to batch small jobs again");
        // Nothing decodable in a take: the hint only decays.
        assert_eq!(next_take(64, 1, 0), (0, 64));
    }
}
