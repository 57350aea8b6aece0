//! Runs: what a caller holds ([`Run`]), what it gets back ([`RunOutput`],
//! [`RowOutput`], [`Metadata`], [`Progress`]), and how a run learns what
//! became of its jobs ([`RunState`], [`Tracker`]).
//!
//! A run learns of its jobs two ways, both idempotent (a job is applied
//! once, when it leaves the outstanding set):
//! - the committer tells it of every job this process settled, after the
//!   sync that made the outcome durable;
//! - while a caller waits, the pool's watcher thread asks the queue every
//!   [`POLL`] about the run's outstanding jobs (and the jobs split off
//!   them), for what it did not hear, and wakes the waiters (blocking and
//!   async) to check the service's health: jobs the queue dead-lettered for a missed deadline, jobs removed
//!   or damaged, jobs settled before the run was registered here (a run
//!   found again after a restart reads the results stored by `complete`).
//!
//! Invariant: every row of a run is either filled (done or failed) or
//! covered by exactly one outstanding job, so a run finishes exactly when
//! no job is outstanding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::job::{JobResult, JobSpan, ModelKey, RowFate};
use super::pool::Shared;
use super::stats::Recorder;
use super::{ErrorKind, InferError, Model, RowError};
use crate::{JobQueue, MessageId, MessageStatus, Queue, Timestamp};

/// How often the watcher asks the queue about the jobs of runs waited for,
/// and waiters check the service's health.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// A run's id: the id of its manifest in the service's runs queue, stable
/// across restarts ([`InferService::run`](super::InferService::run) finds
/// it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How far a run is: rows whose results are stored, made durable by the
/// pool's next group commit (at most a few tens of milliseconds later) or
/// by the wait that returns them, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Rows finished, failed ones included.
    pub done: usize,
    /// Rows that failed for good.
    pub failed: usize,
    /// Rows in the run.
    pub total: usize,
}

/// Time a row spent in each step, as Wallaroo's `metadata.elapsed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Elapsed {
    /// Decoding the job that held the row.
    pub decode: Duration,
    /// From the row's enqueue to its model call.
    pub queue_wait: Duration,
    /// The model call holding the row (decoding its rows included).
    pub inference: Duration,
    /// Storing the result (written with its ack; zero for a result read
    /// back from the directory rather than stored by this process).
    pub store: Duration,
}

/// Timings and provenance of one row.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metadata {
    /// The model's name (`last_model.model_name`). The strings here are
    /// shared by the rows of a job (one allocation per job, not per row).
    pub model_name: Arc<str>,
    /// The model's version (the hash it is registered under).
    pub model_version: Arc<str>,
    /// The SHA-256 of the model file in hex (`last_model.model_sha`), when
    /// the model has a file.
    pub model_sha: Option<Arc<str>>,
    /// The service's pipeline version
    /// ([`ServiceOptions::pipeline_version`](super::ServiceOptions::pipeline_version)).
    pub pipeline_version: Arc<str>,
    /// The worker that computed the row (`worker-<n>`).
    pub partition: Arc<str>,
    /// Which delivery produced the result (1 on the first).
    pub attempt: u32,
    /// Time per step.
    pub elapsed: Elapsed,
    /// Rows in the model call that held this row.
    pub batch_rows: u32,
}

/// One row of a run's results.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RowOutput<O> {
    /// When the row finished.
    pub time: Timestamp,
    /// The output, or why the row failed.
    pub output: Result<O, RowError>,
    /// Timings and provenance (`None` for a row that never ran).
    pub metadata: Option<Metadata>,
}

/// A finished run: one row per input row, in input order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunOutput<O> {
    /// The run.
    pub run: RunId,
    /// The rows, in input order.
    pub rows: Vec<RowOutput<O>>,
    /// Rows that failed for good.
    pub failed: usize,
    /// Rows whose results were stored before this handle was made (by an
    /// earlier process, or before a resubmission with the same key).
    pub resumed: usize,
}

/// Who failed a row for good, for its metadata.
pub(crate) struct DeadMeta {
    pub model_name: String,
    pub model_version: String,
    pub attempt: u32,
}

/// What a job's rows share: their metadata, less the per-row parts.
struct JobMeta {
    model_name: Arc<str>,
    model_version: Arc<str>,
    model_sha: Option<Arc<str>>,
    pipeline_version: Arc<str>,
    partition: Arc<str>,
    attempt: u32,
    finished_ms: u64,
    queue_us: u64,
    decode_ns: u64,
    store_ns: u64,
}

/// A job whose result a run holds: its metadata and its outputs, still
/// encoded (decoded all at once when the run's output is made).
struct JobOut {
    meta: Arc<JobMeta>,
    result: Arc<JobResult>,
}

/// A row's outcome, small: a computed row points at its job's outputs.
enum Slot {
    /// Not finished.
    Empty,
    /// Output `index` of job `job` (in [`State::jobs`]).
    Done {
        job: u32,
        index: u32,
        infer_us: u64,
        batch_rows: u32,
    },
    Failed(Box<Failed>),
}

/// A row failed for good.
struct Failed {
    error: RowError,
    meta: Option<Arc<JobMeta>>,
    finished_ms: u64,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    /// The jobs whose outputs the slots point at.
    jobs: Vec<JobOut>,
    done: usize,
    failed: usize,
    /// Job id -> (first row, rows).
    outstanding: BTreeMap<u64, (u64, u32)>,
    /// Set by a cancel: the rows not done fail with it.
    cancelled: Option<RowError>,
    resumed: usize,
    /// Whether every job of the run is in `outstanding` (or done).
    sealed: bool,
    /// Whether the run's end was counted in the stats.
    counted: bool,
    /// News of jobs heard before they were expected (while not sealed).
    early: Vec<(u64, Early)>,
}

/// What a run heard of a job it did not expect yet.
enum Early {
    Done(Arc<JobResult>, u64),
    Dead(RowError, Option<DeadMeta>),
}

impl State {
    /// Fill row `row` if it is not filled yet (a row computed twice keeps
    /// the first result applied).
    fn fill(&mut self, row: u64, slot: Slot) {
        let Some(s) = self.slots.get_mut(row as usize) else {
            return;
        };
        if !matches!(s, Slot::Empty) {
            return;
        }
        self.done += 1;
        if matches!(slot, Slot::Failed(_)) {
            self.failed += 1;
        }
        *s = slot;
    }

    fn finished(&self) -> bool {
        (self.sealed && self.outstanding.is_empty()) || self.cancelled.is_some()
    }
}

/// The live state of one run (shared by its handles and the tracker).
pub(crate) struct RunState {
    recorder: Arc<Recorder>,
    pub tag: u64,
    /// The manifest's id once written (0 before).
    id: AtomicU64,
    pub model: ModelKey,
    total: usize,
    budget: Option<usize>,
    state: Mutex<State>,
    changed: Condvar,
    /// Async waiters' wake-up, signalled with `changed`.
    #[cfg(feature = "tokio")]
    changed_async: tokio::sync::Notify,
    /// Callers waiting now (the watcher looks only at runs waited for).
    waiters: AtomicUsize,
}

impl RunState {
    pub fn new(
        recorder: Arc<Recorder>,
        tag: u64,
        model: ModelKey,
        total: usize,
        budget: Option<f64>,
    ) -> RunState {
        RunState {
            recorder,
            tag,
            id: AtomicU64::new(0),
            model,
            total,
            budget: budget.map(|b| (b * total as f64).floor() as usize),
            state: Mutex::new(State {
                slots: std::iter::repeat_with(|| Slot::Empty).take(total).collect(),
                ..State::default()
            }),
            changed: Condvar::new(),
            #[cfg(feature = "tokio")]
            changed_async: tokio::sync::Notify::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Wake every waiter, blocking and async, to look again.
    pub fn notify(&self) {
        self.changed.notify_all();
        #[cfg(feature = "tokio")]
        self.changed_async.notify_waiters();
    }

    /// Whether a caller waits for it and it has jobs to hear of.
    pub fn watched(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0 && !self.state.lock().finished()
    }

    pub fn id(&self) -> RunId {
        RunId(self.id.load(Ordering::Acquire))
    }

    pub fn set_id(&self, id: RunId) {
        self.id.store(id.0, Ordering::Release);
    }

    /// Jobs of the run just enqueued. A worker may have settled one
    /// already (it was ready the moment it was enqueued): what it heard
    /// before is applied now.
    pub fn expect(&self, jobs: &[JobSpan]) {
        let early = {
            let mut s = self.state.lock();
            for j in jobs {
                s.outstanding.insert(j.id, (j.first_row, j.rows));
            }
            std::mem::take(&mut s.early)
        };
        for (id, heard) in early {
            match heard {
                Early::Done(r, store_ns) => self.apply_done(id, r, store_ns),
                Early::Dead(e, meta) => self.apply_dead(id, e, meta),
            }
        }
    }

    /// Every job is expected: from now on, news of a job not outstanding
    /// is a duplicate.
    pub fn seal(&self) {
        let mut s = self.state.lock();
        s.sealed = true;
        s.early.clear();
        self.count_end(&mut s);
    }

    /// Rows already finished count as resumed (and a run already
    /// finished is not counted again as finishing here).
    pub fn mark_resumed(&self) {
        let mut s = self.state.lock();
        s.resumed = s.done;
        if s.outstanding.is_empty() {
            s.counted = true;
        }
    }

    /// Count the run's end in the stats, once, if it just ended. Called
    /// with the state locked, after each change.
    fn count_end(&self, s: &mut State) {
        if s.counted || !s.finished() {
            return;
        }
        s.counted = true;
        self.recorder
            .run_finished(s.failed > 0 || s.cancelled.is_some());
    }

    /// Whether rows are done and rows are to go (`Some(true)`), none are
    /// done yet (`Some(false)`), or the run is over (`None`).
    pub fn running(&self) -> Option<bool> {
        let s = self.state.lock();
        if s.finished() {
            return None;
        }
        Some(s.done > 0)
    }

    pub fn progress(&self) -> Progress {
        let s = self.state.lock();
        Progress {
            done: s.done,
            failed: s.failed,
            total: self.total,
        }
    }

    /// Job `id` completed with `result`.
    /// Job `id` completed with `result`, stored in `store_ns` (0 when read
    /// back).
    pub fn apply_done(&self, id: u64, result: Arc<JobResult>, store_ns: u64) {
        let mut s = self.state.lock();
        let Some((first, _)) = s.outstanding.remove(&id) else {
            if !s.sealed {
                s.early.push((id, Early::Done(result, store_ns)));
            }
            return;
        };
        let shared = |t: &str| -> Arc<str> { Arc::from(t) };
        let meta = Arc::new(JobMeta {
            model_name: shared(&result.model_name),
            model_version: shared(&result.model_version),
            model_sha: (!result.model_sha.is_empty()).then(|| shared(&result.model_sha)),
            pipeline_version: shared(&result.pipeline_version),
            partition: shared(&result.partition),
            attempt: result.attempt,
            finished_ms: result.finished_ms,
            queue_us: result.queue_us,
            decode_ns: result.decode_ns,
            store_ns,
        });
        let job = s.jobs.len() as u32;
        let failed_before = s.failed;
        for (i, fate) in result.fates().enumerate() {
            let at = first + i as u64;
            match fate {
                RowFate::Done {
                    index,
                    infer_us,
                    batch_rows,
                } => s.fill(
                    at,
                    Slot::Done {
                        job,
                        index: index as u32,
                        infer_us,
                        batch_rows,
                    },
                ),
                RowFate::Failed(e) => s.fill(
                    at,
                    Slot::Failed(Box::new(Failed {
                        error: e.clone(),
                        meta: Some(meta.clone()),
                        finished_ms: meta.finished_ms,
                    })),
                ),
                RowFate::Moved(child) => {
                    s.outstanding.insert(child, (at, 1));
                }
            }
        }
        s.jobs.push(JobOut {
            meta,
            result: result.clone(),
        });
        self.count_end(&mut s);
        // Waiters look only for the end, and for failures (the budget).
        let wake = s.finished() || s.failed > failed_before;
        drop(s);
        if wake {
            self.notify();
        }
    }

    pub fn apply_dead(&self, id: u64, e: RowError, dead: Option<DeadMeta>) {
        let mut s = self.state.lock();
        let Some((first, rows)) = s.outstanding.remove(&id) else {
            if !s.sealed {
                s.early.push((id, Early::Dead(e, dead)));
            }
            return;
        };
        let now = super::wall_ms();
        let empty: Arc<str> = Arc::from("");
        let meta = dead.map(|d| {
            Arc::new(JobMeta {
                model_name: Arc::from(d.model_name),
                model_version: Arc::from(d.model_version),
                model_sha: None,
                pipeline_version: empty.clone(),
                partition: empty.clone(),
                attempt: d.attempt,
                finished_ms: now,
                queue_us: 0,
                decode_ns: 0,
                store_ns: 0,
            })
        });
        for i in 0..u64::from(rows) {
            s.fill(
                first + i,
                Slot::Failed(Box::new(Failed {
                    error: e.clone(),
                    meta: meta.clone(),
                    finished_ms: now,
                })),
            );
        }
        self.count_end(&mut s);
        drop(s);
        self.notify();
    }

    fn cancel(&self, why: RowError) {
        let mut s = self.state.lock();
        if s.cancelled.is_none() && !s.outstanding.is_empty() {
            s.cancelled = Some(why);
        }
        self.count_end(&mut s);
        drop(s);
        self.notify();
    }

    /// Ask the queue about every outstanding job, and about the jobs
    /// split off the ones it reads, until none is left to ask about: dead
    /// letters, jobs gone and completed jobs are applied. With
    /// `sync_first`, a dead letter or completed job this run did not hear
    /// of is applied only after a sync (the committer may not have synced
    /// it yet, and an outcome a caller sees must survive a crash).
    ///
    /// While a caller waits (`waiting`), dead letters written by a worker
    /// are left to the committer, which tells the run after its sync and
    /// with the row's metadata; only the queue's own (a missed deadline)
    /// are applied here. A run found again (`!waiting`) applies them all:
    /// they were written before it was registered.
    pub fn refresh<Q: JobQueue>(
        &self,
        jobs: &Q,
        sync_first: bool,
        waiting: bool,
    ) -> crate::Result<()> {
        let mut asked: HashSet<u64> = HashSet::new();
        let mut synced = !sync_first;
        loop {
            let ids: Vec<u64> = self
                .state
                .lock()
                .outstanding
                .keys()
                .copied()
                .filter(|id| !asked.contains(id))
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            for id in ids {
                asked.insert(id);
                match jobs.status(MessageId::from(id))? {
                    MessageStatus::Dead { reason }
                        if !waiting || reason == crate::DEADLINE_MISSED =>
                    {
                        if !synced {
                            jobs.sync()?;
                            synced = true;
                        }
                        self.apply_dead(id, RowError::from_reason(&reason), None)
                    }
                    MessageStatus::Gone => self.apply_dead(
                        id,
                        RowError::new(
                            ErrorKind::Lost,
                            "its job left the queue without a result (acked, or removed by retention)",
                        ),
                        None,
                    ),
                    MessageStatus::Completed => {
                        if !synced {
                            jobs.sync()?;
                            synced = true;
                        }
                        let read = jobs
                            .result(MessageId::from(id))
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.ok_or_else(|| "its result is gone".to_string()))
                            .and_then(|b| JobResult::decode(&b).map_err(|e| e.to_string()));
                        match read {
                            Ok(r) => self.apply_done(id, Arc::new(r), 0),
                            Err(e) => self.apply_dead(
                                id,
                                RowError::new(
                                    ErrorKind::Lost,
                                    format!("its stored result cannot be read: {e}"),
                                ),
                                None,
                            ),
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Which runs are live in this process, by tag, for the committer to tell;
/// and which are cancelled, for the workers to skip.
#[derive(Default)]
pub(crate) struct Tracker {
    runs: Mutex<HashMap<u64, Vec<Weak<RunState>>>>,
    cancelled: RwLock<HashSet<u64>>,
}

impl Tracker {
    pub fn add(&self, run: &Arc<RunState>) {
        let mut runs = self.runs.lock();
        // Forget runs nobody holds any more, now and then.
        if runs.len() >= 64 && runs.len().is_power_of_two() {
            runs.retain(|_, states| {
                states.retain(|w| w.strong_count() > 0);
                !states.is_empty()
            });
        }
        runs.entry(run.tag).or_default().push(Arc::downgrade(run));
    }

    /// Every live state of run `tag` (one per handle found separately).
    fn get(&self, tag: u64) -> Vec<Arc<RunState>> {
        self.runs
            .lock()
            .get(&tag)
            .map(|states| states.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    pub fn job_done(&self, tag: u64, id: u64, result: Arc<JobResult>, store_ns: u64) {
        for run in self.get(tag) {
            run.apply_done(id, result.clone(), store_ns);
        }
    }

    pub fn job_dead(&self, tag: u64, id: u64, e: RowError, meta: Option<DeadMeta>) {
        for run in self.get(tag) {
            let meta = meta.as_ref().map(|m| DeadMeta {
                model_name: m.model_name.clone(),
                model_version: m.model_version.clone(),
                attempt: m.attempt,
            });
            run.apply_dead(id, e.clone(), meta);
        }
    }

    /// Every live state of every run.
    pub fn live(&self) -> Vec<Arc<RunState>> {
        self.runs
            .lock()
            .values()
            .flat_map(|states| states.iter().filter_map(Weak::upgrade))
            .collect()
    }

    /// Runs held here not started yet, and running.
    pub fn live_counts(&self) -> (usize, usize) {
        let runs = self.runs.lock();
        let (mut queued, mut running) = (0, 0);
        for states in runs.values() {
            // One run found twice counts once: by its first live state.
            if let Some(r) = states.iter().find_map(Weak::upgrade) {
                match r.running() {
                    Some(true) => running += 1,
                    Some(false) => queued += 1,
                    None => {}
                }
            }
        }
        (queued, running)
    }

    pub fn is_cancelled(&self, tag: u64) -> bool {
        let c = self.cancelled.read();
        !c.is_empty() && c.contains(&tag)
    }

    pub fn cancel(&self, run: &RunState, why: RowError) {
        self.cancelled.write().insert(run.tag);
        run.cancel(why);
    }
}

/// A run submitted to an [`InferService`](super::InferService), or found
/// again: wait for it, watch its progress, cancel it.
pub struct Run<M: Model, Q: JobQueue = Queue> {
    pub(crate) state: Arc<RunState>,
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) _model: PhantomData<fn() -> M>,
}

impl<M: Model, Q: JobQueue> std::fmt::Debug for Run<M, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.state.id())
            .field("model", &self.state.model.to_string())
            .field("progress", &self.state.progress())
            .finish()
    }
}

impl<M: Model, Q: JobQueue> Run<M, Q> {
    /// The run's id (find it again with
    /// [`InferService::run`](super::InferService::run)).
    pub fn id(&self) -> RunId {
        self.state.id()
    }

    /// Rows done, failed and in all.
    pub fn progress(&self) -> Progress {
        self.state.progress()
    }

    /// Whether every row is done (or the run was cancelled).
    pub fn is_finished(&self) -> bool {
        self.state.state.lock().finished()
    }

    /// Stop the run: its rows not started fail with
    /// [`ErrorKind::Cancelled`] and are not computed by this service (the
    /// workers drop its jobs as they meet them); rows done keep their
    /// results. Waiting callers return at once.
    pub fn cancel(&self) {
        self.shared.tracker.cancel(
            &self.state,
            RowError::new(ErrorKind::Cancelled, "its run was cancelled"),
        );
    }

    /// Wait until every row is done, then return the results in input
    /// order.
    ///
    /// # Errors
    /// As [`Run::wait_timeout`], but never [`InferError::WaitTimedOut`].
    pub fn wait(&self) -> Result<RunOutput<M::Output>, InferError> {
        self.wait_until(None, true)
    }

    /// [`Run::wait`], the rows' [`Metadata`] left out unless `metadata`
    /// (`parallel_infer` without [`Column::Metadata`](super::Column::Metadata)
    /// would only drop it).
    pub(crate) fn wait_rows(&self, metadata: bool) -> Result<RunOutput<M::Output>, InferError> {
        self.wait_until(None, metadata)
    }

    /// Wait at most `timeout` for every row to be done, then return the
    /// results in input order.
    ///
    /// # Errors
    /// [`InferError::WaitTimedOut`] when rows are still pending after
    /// `timeout` (the run goes on); [`InferError::FailureBudget`] when more
    /// rows failed than the run's budget allows (the run is then
    /// cancelled); [`InferError::Stalled`] when the service cannot make
    /// progress (its queue failed, every worker is gone, or the run's model
    /// is not registered), naming why; [`InferError::Queue`] when reading
    /// the queue fails.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<RunOutput<M::Output>, InferError> {
        self.wait_until(Some(Instant::now() + timeout), true)
    }

    /// Wait for every row to be done, asynchronously: the same as
    /// [`Run::wait`], but the task awaits instead of blocking its thread
    /// (the pool's threads and its watcher wake it). Bound it with
    /// `tokio::time::timeout` if you need a limit; dropping the future only
    /// stops the wait (the run goes on).
    ///
    /// # Errors
    /// As [`Run::wait`].
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) -> Result<RunOutput<M::Output>, InferError> {
        let _waiting = Waiting::new(&self.state);
        loop {
            let mut changed = std::pin::pin!(self.state.changed_async.notified());
            // Register before looking, so a change between the look and the
            // await still wakes this future.
            changed.as_mut().enable();
            if self.settled()? {
                // What the caller is about to see is durable first.
                if self.shared.sync_commits {
                    durable(self.shared.jobs.sync_async().await)?;
                }
                return Ok(self.output(true));
            }
            changed.await;
        }
    }

    /// The run's output if it is over; an error if it cannot go on or went
    /// over its failure budget (cancelling it); `None` to wait more.
    /// Whether the run is finished; an error when it went over its
    /// failure budget or can make no progress.
    fn settled(&self) -> Result<bool, InferError> {
        let run = &self.state;
        let (finished, failed) = {
            let s = run.state.lock();
            (s.finished(), s.failed)
        };
        if run.budget.is_some_and(|b| failed > b) {
            self.shared.tracker.cancel(
                run,
                RowError::new(ErrorKind::Cancelled, "its run went over its failure budget"),
            );
            return Err(InferError::FailureBudget {
                failed,
                rows: run.total,
            });
        }
        if finished {
            return Ok(true);
        }
        self.check_live()?;
        Ok(false)
    }

    fn wait_until(
        &self,
        until: Option<Instant>,
        metadata: bool,
    ) -> Result<RunOutput<M::Output>, InferError> {
        let run = &self.state;
        let _waiting = Waiting::new(run);
        loop {
            if self.settled()? {
                // What the caller is about to see is durable first (one
                // group commit for every result stored since the last).
                if self.shared.sync_commits {
                    durable(self.shared.jobs.sync())?;
                }
                return Ok(self.output(metadata));
            }
            let mut wait = POLL;
            if let Some(until) = until {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let p = run.progress();
                    return Err(InferError::WaitTimedOut {
                        done: p.done,
                        rows: p.total,
                    });
                }
                wait = wait.min(left);
            }
            let mut s = run.state.lock();
            if !s.finished() {
                run.changed.wait_for(&mut s, wait);
            }
        }
    }

    /// An error naming why the service cannot finish this run, if it
    /// cannot.
    fn check_live(&self) -> Result<(), InferError> {
        let health = &self.shared.health;
        if let Some(why) = health.fatal() {
            return Err(InferError::Stalled(why));
        }
        if self.shared.workers_gone() {
            return Err(InferError::Stalled(
                "every worker of the service is gone (stopped or panicked)".into(),
            ));
        }
        if !self.shared.registry.has(&self.state.model) {
            return Err(InferError::Stalled(format!(
                "no model {} for its row type is registered",
                self.state.model
            )));
        }
        Ok(())
    }

    /// The results so far, in input order; rows not done failed with the
    /// cancel's error. Rows carry their [`Metadata`] if `with_metadata`.
    fn output(&self, with_metadata: bool) -> RunOutput<M::Output> {
        let s = self.state.state.lock();
        let unfinished = s
            .cancelled
            .clone()
            .unwrap_or_else(|| RowError::new(ErrorKind::Lost, "the row has no outcome"));
        // Each job's outputs decoded at once, then moved to their rows.
        let mut outputs: Vec<Result<Vec<Option<M::Output>>, RowError>> = s
            .jobs
            .iter()
            .map(|j| {
                j.result
                    .outputs
                    .decode::<M::Output>()
                    .map(|v| v.into_iter().map(Some).collect())
                    .map_err(|e| {
                        RowError::new(
                            ErrorKind::Lost,
                            format!("its stored output cannot be read: {e}"),
                        )
                    })
            })
            .collect();
        let mut failed = 0;
        let rows = s
            .slots
            .iter()
            .map(|slot| {
                let row = match slot {
                    Slot::Empty => RowOutput {
                        time: Timestamp(super::wall_ms()),
                        output: Err(unfinished.clone()),
                        metadata: None,
                    },
                    Slot::Done {
                        job,
                        index,
                        infer_us,
                        batch_rows,
                    } => {
                        let meta = &s.jobs[*job as usize].meta;
                        let output = match &mut outputs[*job as usize] {
                            Ok(values) => values
                                .get_mut(*index as usize)
                                .and_then(Option::take)
                                .ok_or_else(|| {
                                    RowError::new(ErrorKind::Lost, "its stored output is missing")
                                }),
                            Err(e) => Err(e.clone()),
                        };
                        RowOutput {
                            time: Timestamp(meta.finished_ms),
                            output,
                            metadata: with_metadata.then(|| metadata(meta, *infer_us, *batch_rows)),
                        }
                    }
                    Slot::Failed(f) => RowOutput {
                        time: Timestamp(f.finished_ms),
                        output: Err(f.error.clone()),
                        metadata: f
                            .meta
                            .as_ref()
                            .filter(|_| with_metadata)
                            .map(|m| metadata(m, 0, 0)),
                    },
                };
                if row.output.is_err() {
                    failed += 1;
                }
                row
            })
            .collect();
        RunOutput {
            run: self.state.id(),
            rows,
            failed,
            resumed: s.resumed,
        }
    }
}

struct Waiting<'a>(&'a RunState);

impl<'a> Waiting<'a> {
    fn new(run: &'a RunState) -> Waiting<'a> {
        run.waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(run)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The outcome of a run's sync before its results are given out: a queue
/// closed since was synced by its close, so that is no error.
fn durable(synced: crate::Result<()>) -> Result<(), InferError> {
    match synced {
        Ok(()) | Err(crate::Error::Closed) => Ok(()),
        Err(e) => Err(InferError::Stalled(format!(
            "the jobs queue failed: {e} (the run's results cannot be made durable)"
        ))),
    }
}

/// A row's metadata: its job's, with the row's own model time and call.
fn metadata(m: &JobMeta, infer_us: u64, batch_rows: u32) -> Metadata {
    Metadata {
        model_name: m.model_name.clone(),
        model_version: m.model_version.clone(),
        model_sha: m.model_sha.clone(),
        pipeline_version: m.pipeline_version.clone(),
        partition: m.partition.clone(),
        attempt: m.attempt,
        elapsed: Elapsed {
            decode: Duration::from_nanos(m.decode_ns),
            queue_wait: Duration::from_micros(m.queue_us),
            inference: Duration::from_micros(infer_us),
            store: Duration::from_nanos(m.store_ns),
        },
        batch_rows,
    }
}
