//! The inference service: [`InferService`] over one directory and one
//! worker pool, its options ([`ServiceOptions`], [`RunOptions`],
//! [`Unclaimed`]) and typed handles to its models ([`ModelRef`]).
//!
//! A service directory holds two queues: `jobs` (one message per
//! micro-batch of a run's rows, in the lane of the run's priority and with
//! its deadline; each job's result is stored with its ack by `complete`)
//! and `runs` (one manifest per run, naming its model and its jobs, stored
//! as the manifest message's own result so it can be read back by id).
//!
//! Invariants:
//! - A run's manifest is written only after every one of its jobs is
//!   enqueued and synced, so a run found by id or key has all its jobs; a
//!   crash before that leaves jobs no run names, which are computed and
//!   then removed by retention.
//! - Submissions are serialized (one lock), so between the check of a key
//!   and the manifest that takes it, no other submission can take it.
//! - Every manifest is completed (made readable) before the submission
//!   that wrote it returns; a manifest a crash left pending is completed
//!   when the service opens.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::job::{content_hash, Job, JobSpan, Manifest, ModelKey};
use super::pool::{Health, Pool, PoolOptions, Shared};
use super::registry::Registry;
use super::rows::RowBlock;
use super::run::{RowOutput, Run, RunId, RunState, Tracker};
use super::stats::ServiceStats;
use super::{wall_ms, InferError, Model};
use crate::storage::{DiskStorage, MemoryStorage, Storage};
use crate::{
    DequeueOptions, Durability, EnqueueOptions, Error, JobQueue, MessageId, Queue, QueueOptions,
    Timestamp,
};

/// What the workers do with a job no registered model takes (another
/// model or version, another row type, a payload of another program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unclaimed {
    /// Hold it, leased, until a model for it is registered (then it runs)
    /// or the service closes (then it is ready again for the next service
    /// on the directory). Each service that held it counts one delivery.
    /// The default.
    Wait,
    /// Park it as a dead letter naming why (redrive it once a service that
    /// has its model runs).
    DeadLetter,
}

/// How an [`InferService`] runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub(crate) pool: PoolOptions,
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    /// The `runs` queue's segment size when not `segment_size`: it holds
    /// only manifests, so a one-off run (`parallel_infer`) makes it no
    /// larger than they need (a new segment's zeros are written and
    /// synced on the call's path).
    pub(crate) runs_segment_size: Option<u64>,
    pub(crate) unclaimed: Unclaimed,
    pub(crate) retention: Duration,
    pub(crate) prepare_ahead: bool,
    pub(crate) pipeline_version: String,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceOptions {
    /// The pool's defaults ([`PoolOptions::new`]), `Immediate` durability,
    /// 16 MiB segments, unclaimed jobs held ([`Unclaimed::Wait`]), runs and
    /// results kept 7 days.
    pub fn new() -> Self {
        ServiceOptions {
            pool: PoolOptions::new(),
            durability: Durability::Immediate,
            segment_size: 16 << 20,
            runs_segment_size: None,
            unclaimed: Unclaimed::Wait,
            retention: Duration::from_secs(7 * 86_400),
            prepare_ahead: true,
            pipeline_version: concat!("lanelog-", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// Worker and batching options.
    #[must_use]
    pub fn pool(mut self, pool: PoolOptions) -> Self {
        self.pool = pool;
        self
    }

    /// When submissions and results are durable. Under `Immediate` a
    /// submission returns once its jobs and manifest are synced, and a
    /// row's result reaches its run only once synced (one sync per commit
    /// of the pool, shared by many jobs). Default = `Immediate`.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Segment size of the service's queues (see
    /// [`QueueOptions::segment_size`]). Default = 16 MiB.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// What happens to jobs no registered model takes. Default =
    /// [`Unclaimed::Wait`].
    #[must_use]
    pub fn unclaimed(mut self, u: Unclaimed) -> Self {
        self.unclaimed = u;
        self
    }

    /// How long runs, their jobs and their results are kept, and how long
    /// a run's key finds it ([`InferService::find_run`]). Default = 7 days.
    #[must_use]
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// The version stamped on every result's metadata
    /// (`pipeline_version`), to tell results of one deployment from
    /// another's. Default = `lanelog-<crate version>`.
    #[must_use]
    pub fn pipeline_version(mut self, v: impl Into<String>) -> Self {
        self.pipeline_version = v.into();
        self
    }

    /// Open the service on `dir` (made if missing, not its parents) and
    /// start its workers.
    ///
    /// # Errors
    /// [`InferError::InvalidArgument`] for options out of range;
    /// [`InferError::Queue`] when a queue cannot be opened
    /// ([`Error::Locked`] when another process has the directory);
    /// [`InferError::Spawn`].
    pub fn open(self, dir: impl AsRef<Path>) -> Result<InferService, InferError> {
        let dir = dir.as_ref();
        let bad = |e: std::io::Error| Error::BadDirectory {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        };
        let storage = DiskStorage::open(dir).map_err(bad)?;
        // Side by side: the two queues' syncs (their files' making in a new
        // directory, their first id reservations, which a submission would
        // otherwise make one after the other) overlap.
        let open = |which: Queues, name: &str| {
            let queue = self.queue_options(which).open(dir.join(name))?;
            queue.reserve_ids_ahead()?;
            Ok::<_, Error>(queue)
        };
        let (runs, jobs) =
            side_by_side(|| open(Queues::Runs, "runs"), || open(Queues::Jobs, "jobs"));
        let (jobs, runs) = (jobs?, runs?);
        // Each queue's open made its own entry here durable; this makes the
        // service directory's entry durable, if it was just made.
        storage.sync_entry().map_err(Error::Io)?;
        InferService::start(self, jobs, runs)
    }

    /// A service whose queues live in memory (nothing survives the
    /// process).
    ///
    /// # Errors
    /// As [`ServiceOptions::open`].
    pub fn open_in_memory(self) -> Result<InferService, InferError> {
        let mem = || -> Arc<dyn Storage> { Arc::new(MemoryStorage::volatile()) };
        self.open_storage(mem(), mem())
    }

    /// A service whose `jobs` and `runs` queues live on the storages given
    /// (for tests that inject faults with
    /// [`MemoryStorage`](crate::storage::MemoryStorage)).
    ///
    /// # Errors
    /// As [`ServiceOptions::open`].
    pub fn open_storage(
        self,
        jobs: Arc<dyn Storage>,
        runs: Arc<dyn Storage>,
    ) -> Result<InferService, InferError> {
        let jobs = self.queue_options(Queues::Jobs).open_storage(jobs)?;
        let runs = self.queue_options(Queues::Runs).open_storage(runs)?;
        InferService::start(self, jobs, runs)
    }

    /// A service over two queues opened by the caller, of any backend
    /// ([`JobQueue`]): `jobs` for the jobs and their results, `runs` for
    /// the runs' manifests. Both must be distinct queues, opened with
    /// unlimited deliveries (the workers count attempts themselves) and a
    /// dedup window as long as a run's key should find it. Every process
    /// that opens a service on the same two queues shares its runs' work.
    ///
    /// # Errors
    /// As [`ServiceOptions::open`] (the queues are closed with the
    /// service).
    pub fn open_queues<Q: JobQueue>(self, jobs: Q, runs: Q) -> Result<InferService<Q>, InferError> {
        InferService::start(self, jobs, runs)
    }

    /// A service over NATS JetStream at `url` (see `docs/nats.md`): two
    /// queues, prefixed `<prefix>_jobs` and `<prefix>_runs` from `nats`'s
    /// prefix, each with `nats`'s other settings, unlimited deliveries,
    /// and a dedup window and result retention of the service's
    /// retention. The pool's lease is the queues' visibility timeout.
    /// Workers on other machines open the same URL and prefix.
    ///
    /// # Errors
    /// As [`NatsOptions::open`](crate::nats::NatsOptions::open) and
    /// [`ServiceOptions::open`].
    #[cfg(feature = "nats")]
    pub fn open_nats(
        self,
        url: &str,
        nats: &crate::nats::NatsOptions,
    ) -> Result<InferService<crate::nats::JetStreamQueue>, InferError> {
        let open = |role: &str| {
            nats.clone()
                .prefix(format!("{}_{role}", nats.prefix_name()))
                .max_deliveries(0)
                .dedup_window(self.retention)
                .result_retention(self.retention)
                .open(url)
        };
        let jobs = open("jobs")?;
        let runs = open("runs")?;
        self.open_queues(jobs, runs)
    }

    fn queue_options(&self, which: Queues) -> QueueOptions {
        // Under `Immediate` the service syncs both queues itself, once per
        // step that needs it (the committer's group commit and the wait's
        // sync for results; one sync per submission for its jobs and one
        // for its manifest), so neither queue syncs every call.
        let durability = match self.durability {
            Durability::Immediate => Durability::None,
            d => d,
        };
        QueueOptions::new()
            .durability(durability)
            .max_deliveries(0)
            .segment_size(match which {
                Queues::Jobs => self.segment_size,
                Queues::Runs => self.runs_segment_size.unwrap_or(self.segment_size),
            })
            .journal_file_size(256 << 10)
            .prepare_ahead(self.prepare_ahead)
            .retention(self.retention)
            .dedup_window(self.retention)
    }
}

/// `a` on a thread of its own while `b` runs on this one (`a` after `b`
/// on this one, if no thread can be started); both results.
fn side_by_side<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    // Taken by whichever runs it: the thread, or this one if the thread
    // could not be started (a failed spawn drops only the borrow).
    let slot = parking_lot::Mutex::new(Some(a));
    let run_a = || {
        let f = slot.lock().take();
        f.map(|f| f())
    };
    std::thread::scope(|s| {
        let beside = std::thread::Builder::new()
            .name("lanelog-beside".into())
            .spawn_scoped(s, run_a);
        let b = b();
        let a = match beside {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => run_a(),
        };
        (a.expect("`a` ran on one thread or the other"), b)
    })
}

/// The service's two queues.
#[derive(Debug, Clone, Copy)]
enum Queues {
    Jobs,
    Runs,
}

/// Per-run options of [`InferService::submit`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub(crate) priority: u8,
    pub(crate) deadline: Option<Timestamp>,
    pub(crate) key: Option<String>,
    pub(crate) failure_budget: Option<f64>,
    pub(crate) timeout: Option<Duration>,
}

impl RunOptions {
    /// Priority 0, no deadline, no key, no failure budget, the pool's
    /// timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lane of the run's rows: a run of higher priority is served
    /// before the rows of lower ones still waiting. Default = 0.
    #[must_use]
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }

    /// Rows not started by then are not computed: they fail with
    /// [`ErrorKind::DeadlineMissed`](super::ErrorKind::DeadlineMissed) and
    /// the run still completes. Rows with a deadline go ahead of those
    /// without in their lane, earliest first.
    #[must_use]
    pub fn deadline(mut self, at: Timestamp) -> Self {
        self.deadline = Some(at);
        self
    }

    /// An idempotency key (1 to 128 bytes): a second submission with it
    /// and the same rows returns the first run (with what it has done so
    /// far) instead of a new one; with other rows it is refused. Found
    /// again after a restart by [`InferService::find_run`].
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// [`Run::wait`] stops with [`InferError::FailureBudget`] (and cancels
    /// the run) once more than this share (0.0..=1.0) of the rows failed.
    #[must_use]
    pub fn failure_budget(mut self, share: f64) -> Self {
        self.failure_budget = Some(share);
        self
    }

    /// Longest a model call holding this run's rows may take. Default =
    /// the pool's ([`PoolOptions::timeout`]).
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), InferError> {
        let bad = |s: String| Err(InferError::InvalidArgument(s));
        if let Some(k) = &self.key {
            if k.is_empty() || k.len() > crate::MAX_KEY_BYTES {
                return bad(format!(
                    "a run key must be 1 to {} bytes, not {}",
                    crate::MAX_KEY_BYTES,
                    k.len()
                ));
            }
        }
        if let Some(b) = self.failure_budget {
            if !(0.0..=1.0).contains(&b) {
                return bad(format!("failure_budget must be in 0.0..=1.0, not {b}"));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return bad("a run's timeout must be above zero".into());
        }
        if let Some(d) = self.deadline {
            let now = wall_ms();
            if d.0 <= now {
                return bad(format!(
                    "deadline {} is already past (now {now}, ms since the Unix epoch)",
                    d.0
                ));
            }
        }
        Ok(())
    }
}

/// A registered model: pass it to [`InferService::submit`]. Cheap to
/// clone.
pub struct ModelRef<M: Model> {
    key: ModelKey,
    _model: PhantomData<fn() -> M>,
}

impl<M: Model> Clone for ModelRef<M> {
    fn clone(&self) -> Self {
        ModelRef {
            key: self.key.clone(),
            _model: PhantomData,
        }
    }
}

impl<M: Model> std::fmt::Debug for ModelRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelRef({})", self.key)
    }
}

impl<M: Model> ModelRef<M> {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The model's version.
    pub fn version(&self) -> &str {
        &self.key.version
    }
}

/// A long-lived inference service over one directory: register models,
/// submit runs from any thread, wait for them; see the module docs of
/// [`crate::worker`] and `docs/service.md`.
///
/// ```
/// use std::sync::Arc;
/// use lanelog::worker::{InferService, Model, ModelError, RunOptions, ServiceOptions};
///
/// struct Double;
/// impl Model for Double {
///     type Input = f32;
///     type Output = f32;
///     fn name(&self) -> &str { "double" }
///     fn version(&self) -> &str { "1" }
///     fn infer(&self, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
///         Ok(rows.iter().map(|x| x * 2.0).collect())
///     }
/// }
///
/// # fn main() -> Result<(), lanelog::worker::InferError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let service = ServiceOptions::new().open(dir.path())?;
/// let double = service.register(Arc::new(Double));
/// let bulk = service.submit(&double, &[1.0, 2.0, 3.0], &RunOptions::new())?;
/// let urgent = service.infer_one(&double, &10.0, &RunOptions::new().priority(9))?;
/// assert_eq!(urgent.output.unwrap(), 20.0);
/// let out = bulk.wait()?;
/// let values: Vec<f32> = out.rows.into_iter().map(|r| r.output.unwrap()).collect();
/// assert_eq!(values, vec![2.0, 4.0, 6.0]);
/// service.close()?;
/// # Ok(()) }
/// ```
pub struct InferService<Q: JobQueue = Queue> {
    shared: Arc<Shared<Q>>,
    runs: Q,
    /// Serializes submissions (see the module invariants).
    submitting: OneAtATime,
    pool: Mutex<Option<Pool<Q>>>,
    /// Most bytes of jobs per enqueue (a quarter segment: a batch is one
    /// write into one segment).
    batch_bytes: usize,
    next_tag: AtomicU64,
}

impl<Q: JobQueue> std::fmt::Debug for InferService<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferService")
            .field("models", &self.shared.registry.keys().len())
            .field("workers", &self.shared.health.workers())
            .finish()
    }
}

/// Most bytes of rows per job.
const JOB_BYTES: usize = 64 << 10;

/// Rows per job: a micro-batch (`max_batch`), fewer if rows are large
/// (the largest `largest` bytes encoded).
pub(crate) fn rows_per_job(max_batch: usize, largest: usize) -> usize {
    max_batch.min(JOB_BYTES / largest.max(1)).max(1)
}

impl InferService {
    /// [`ServiceOptions::new`] opened on `dir`.
    ///
    /// # Errors
    /// As [`ServiceOptions::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<InferService, InferError> {
        ServiceOptions::new().open(dir)
    }
}

impl<Q: JobQueue> InferService<Q> {
    fn start(opts: ServiceOptions, jobs: Q, runs: Q) -> Result<InferService<Q>, InferError> {
        opts.pool.validate()?;
        if opts.pool.num_parallel == 0 && !jobs.remote() {
            return Err(InferError::InvalidArgument(
                "num_parallel 0 (a submitter only) needs a remote queue whose workers run \
                 in other processes; no other process can reach an embedded queue"
                    .into(),
            ));
        }
        let jobs_remote = jobs.remote();
        let shared = Arc::new(Shared {
            lease: jobs.fixed_lease().unwrap_or(opts.pool.lease),
            renew_held: jobs.fixed_lease().map(|l| l / 3),
            dequeue_wait: if jobs.remote() {
                REMOTE_DEQUEUE_WAIT
            } else {
                Duration::from_millis(10)
            },
            remote: jobs.remote(),
            jobs,
            registry: Registry::default(),
            tracker: Tracker::default(),
            health: Health::default(),
            recorder: Arc::default(),
            opts: opts.pool.clone(),
            pipeline_version: opts.pipeline_version.clone(),
            unclaimed: opts.unclaimed,
            // A remote queue confirms each write before its call returns:
            // its syncs would add nothing.
            sync_commits: opts.durability == Durability::Immediate && !jobs_remote,
            held: Mutex::new(Vec::new()),
        });
        let service = InferService {
            shared: shared.clone(),
            runs,
            submitting: OneAtATime::default(),
            pool: Mutex::new(None),
            batch_bytes: (opts.segment_size / 4) as usize,
            next_tag: AtomicU64::new(wall_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        };
        service.settle_manifests()?;
        *service.pool.lock() = Some(Pool::start(shared)?);
        Ok(service)
    }

    /// Register `model`: from now on the workers run the jobs that name it
    /// (name, version and row type), including jobs of earlier processes
    /// held or waiting for it. Registering it again replaces the instance.
    pub fn register<M: Model>(&self, model: Arc<M>) -> ModelRef<M> {
        let key = self.shared.registry.register(model);
        self.shared.release_held(Some(&key));
        ModelRef {
            key,
            _model: PhantomData,
        }
    }

    /// Submit `rows` as a run of `model`; returns at once (after the jobs
    /// and the manifest are durable, under `Immediate`) with a handle.
    ///
    /// # Errors
    /// [`InferError::InvalidArgument`] for options out of range, a deadline
    /// already past, a key reused for other rows, or a table too large for
    /// one run; [`InferError::UnknownModel`] for a model not registered
    /// here; [`InferError::Codec`] for a row that cannot be encoded;
    /// [`InferError::Queue`] for queue errors. Nothing is enqueued on any
    /// of them. (A queue error part-way through a large table's enqueues
    /// leaves the jobs already enqueued with no run naming them: they are
    /// computed and then removed by retention.)
    pub fn submit<M: Model>(
        &self,
        model: &ModelRef<M>,
        rows: &[M::Input],
        opts: &RunOptions,
    ) -> Result<Run<M, Q>, InferError> {
        self.submit_block(model, RowBlock::encode(rows)?, None, opts)
    }

    /// [`InferService::submit`] of rows already in one block, whose
    /// content hash may be known (`parallel_infer` made it for its key).
    pub(crate) fn submit_block<M: Model>(
        &self,
        model: &ModelRef<M>,
        block: RowBlock,
        content: Option<u64>,
        opts: &RunOptions,
    ) -> Result<Run<M, Q>, InferError> {
        let checked = self.check(model, &block, content, opts)?;
        let _turn = self.submitting.lock();
        if let Some(key) = &opts.key {
            if let Some(id) = self.runs.key_id(key)? {
                return self.resume(
                    model,
                    id.into(),
                    Some(checked.content),
                    opts.failure_budget,
                    self.shared.sync_commits,
                );
            }
        }
        let mut plan = self.plan(model, &block, opts, checked)?;
        for batch in std::mem::take(&mut plan.batches) {
            let ids = self
                .shared
                .jobs
                .enqueue_batch_with(&plan.items(&batch))
                .map_err(refused)?;
            plan.enqueued(batch, ids);
        }
        // The manifest names the jobs: they are durable first.
        self.shared.jobs.sync()?;
        let id = self
            .runs
            .enqueue_with(&plan.manifest()?, &plan.manifest_opts)?;
        self.settle_manifests()?;
        Ok(self.handle(plan.finish(id)))
    }

    /// [`InferService::submit`] for async callers: the same submission,
    /// whose syncs are awaited (made by the queues' syncer threads), never
    /// made on the caller's thread; submissions still go one at a time.
    ///
    /// # Errors
    /// As [`InferService::submit`].
    #[cfg(feature = "tokio")]
    pub async fn submit_async<M: Model>(
        &self,
        model: &ModelRef<M>,
        rows: &[M::Input],
        opts: &RunOptions,
    ) -> Result<Run<M, Q>, InferError> {
        let block = RowBlock::encode(rows)?;
        let checked = self.check(model, &block, None, opts)?;
        let _turn = self.submitting.lock_async().await;
        if let Some(key) = &opts.key {
            if let Some(id) = self.runs.key_id(key)? {
                // What the run reads of its jobs is durable first.
                if self.shared.sync_commits {
                    self.shared.jobs.sync_async().await?;
                }
                return self.resume(
                    model,
                    id.into(),
                    Some(checked.content),
                    opts.failure_budget,
                    false,
                );
            }
        }
        let mut plan = self.plan(model, &block, opts, checked)?;
        for batch in std::mem::take(&mut plan.batches) {
            let ids = self
                .shared
                .jobs
                .enqueue_batch_with_async(&plan.items(&batch))
                .await
                .map_err(refused)?;
            plan.enqueued(batch, ids);
        }
        self.shared.jobs.sync_async().await?;
        let id = self
            .runs
            .enqueue_with_async(&plan.manifest()?, &plan.manifest_opts)
            .await?;
        let take = manifests_to_settle(&self.runs);
        loop {
            let pending = self.runs.dequeue_with(&take)?;
            if pending.is_empty() {
                break;
            }
            for d in pending {
                self.runs.complete_async(d.receipt, &d.payload).await?;
            }
        }
        if self.shared.sync_commits {
            self.runs.sync_async().await?;
        }
        Ok(self.handle(plan.finish(id)))
    }

    /// Check a submission before anything is written: options, the model,
    /// the size of its manifest; hash its rows unless `content` is given.
    fn check<M: Model>(
        &self,
        model: &ModelRef<M>,
        block: &RowBlock,
        content: Option<u64>,
        opts: &RunOptions,
    ) -> Result<Checked, InferError> {
        opts.validate()?;
        self.check_registered(&model.key)?;
        let chunk = rows_per_job(self.shared.opts.max_batch, block.largest_row());
        let n_jobs = block.len().div_ceil(chunk);
        if Manifest::size_for(n_jobs, &model.key) > crate::DEFAULT_MAX_MESSAGE_SIZE {
            return Err(InferError::InvalidArgument(format!(
                "a table of {} rows in {n_jobs} jobs is too large for one run: submit it in parts",
                block.len()
            )));
        }
        Ok(Checked {
            content: content.unwrap_or_else(|| content_hash(&model.key.version, block)),
            chunk,
        })
    }

    /// The run's state (registered, so no news of its jobs is missed) and
    /// its jobs, encoded, in batches of at most a quarter segment (a batch
    /// is one write into one segment).
    fn plan<M: Model>(
        &self,
        model: &ModelRef<M>,
        block: &RowBlock,
        opts: &RunOptions,
        checked: Checked,
    ) -> Result<Plan, InferError> {
        let tag = self.tag();
        let now = wall_ms();
        let total = block.len();
        let state = Arc::new(RunState::new(
            self.shared.recorder.clone(),
            tag,
            model.key.clone(),
            total,
            opts.failure_budget,
        ));
        self.shared.tracker.add(&state);
        let timeout = opts.timeout.unwrap_or(self.shared.opts.timeout);
        let deadline_ms = opts.deadline.map_or(0, |d| d.0);
        let mut enqueue = EnqueueOptions::new().priority(opts.priority);
        if let Some(d) = opts.deadline {
            enqueue = enqueue.deadline(d);
        }
        let mut batches = Vec::new();
        let mut batch: Vec<(Vec<u8>, JobSpan)> = Vec::new();
        let mut bytes = 0;
        let mut first = 0u64;
        while (first as usize) < total {
            let end = (first as usize + checked.chunk).min(total);
            let part = block.slice(first as usize, end);
            let n = part.len() as u32;
            let job = Job::new(
                tag,
                first,
                model.key.clone(),
                now,
                timeout.as_millis() as u64,
                deadline_ms,
                part,
            )
            .encode()?;
            if !batch.is_empty() && (bytes + job.len() > self.batch_bytes || batch.len() >= 4096) {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += job.len();
            let span = JobSpan {
                id: 0,
                first_row: first,
                rows: n,
            };
            batch.push((job, span));
            first += u64::from(n);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let mut manifest_opts = EnqueueOptions::new();
        if let Some(key) = &opts.key {
            manifest_opts = manifest_opts.key(key);
        }
        Ok(Plan {
            manifest: Manifest::new(
                tag,
                model.key.clone(),
                total as u64,
                checked.content,
                opts.priority,
                deadline_ms,
                now,
                Vec::new(),
            ),
            state,
            batches,
            enqueue,
            manifest_opts,
        })
    }

    /// Run one row at once and wait for its result: for interactive
    /// requests. The row is a run of its own (priority, deadline and
    /// timeout from `opts`) that is not recorded for finding again after a
    /// restart; use [`InferService::submit`] with a key for that.
    ///
    /// # Errors
    /// As [`InferService::submit`] (a key is refused) and [`Run::wait`].
    pub fn infer_one<M: Model>(
        &self,
        model: &ModelRef<M>,
        row: &M::Input,
        opts: &RunOptions,
    ) -> Result<RowOutput<M::Output>, InferError> {
        opts.validate()?;
        if opts.key.is_some() {
            return Err(InferError::InvalidArgument(
                "infer_one takes no key: submit a run with a key to find it again".into(),
            ));
        }
        let (job, enqueue_opts, state) = self.one(model, row, opts)?;
        let id = self
            .shared
            .jobs
            .enqueue_with(&job, &enqueue_opts)
            .map_err(refused)?;
        let run: Run<M, Q> = self.handle(one_enqueued(state, id));
        let mut out = run.wait()?;
        out.rows
            .pop()
            .ok_or_else(|| InferError::InvalidArgument("the row has no result".into()))
    }

    /// [`InferService::infer_one`] for async callers: the enqueue and the
    /// wait are awaited, never blocking the caller's thread.
    ///
    /// # Errors
    /// As [`InferService::infer_one`].
    #[cfg(feature = "tokio")]
    pub async fn infer_one_async<M: Model>(
        &self,
        model: &ModelRef<M>,
        row: &M::Input,
        opts: &RunOptions,
    ) -> Result<RowOutput<M::Output>, InferError> {
        let (job, enqueue_opts, state) = self.one(model, row, opts)?;
        let id = self
            .shared
            .jobs
            .enqueue_with_async(&job, &enqueue_opts)
            .await
            .map_err(refused)?;
        let run: Run<M, Q> = self.handle(one_enqueued(state, id));
        let mut out = run.wait_async().await?;
        out.rows
            .pop()
            .ok_or_else(|| InferError::InvalidArgument("the row has no result".into()))
    }

    /// A one-row run: its job, how to enqueue it, its state (registered).
    fn one<M: Model>(
        &self,
        model: &ModelRef<M>,
        row: &M::Input,
        opts: &RunOptions,
    ) -> Result<(Vec<u8>, EnqueueOptions, Arc<RunState>), InferError> {
        opts.validate()?;
        if opts.key.is_some() {
            return Err(InferError::InvalidArgument(
                "infer_one takes no key: submit a run with a key to find it again".into(),
            ));
        }
        self.check_registered(&model.key)?;
        let row = RowBlock::encode(std::slice::from_ref(row))?;
        let tag = self.tag();
        let state = Arc::new(RunState::new(
            self.shared.recorder.clone(),
            tag,
            model.key.clone(),
            1,
            None,
        ));
        self.shared.tracker.add(&state);
        let timeout = opts.timeout.unwrap_or(self.shared.opts.timeout);
        let deadline_ms = opts.deadline.map_or(0, |d| d.0);
        let job = Job::new(
            tag,
            0,
            model.key.clone(),
            wall_ms(),
            timeout.as_millis() as u64,
            deadline_ms,
            row,
        )
        .encode()?;
        let mut enqueue_opts = EnqueueOptions::new().priority(opts.priority);
        if let Some(d) = opts.deadline {
            enqueue_opts = enqueue_opts.deadline(d);
        }
        Ok((job, enqueue_opts, state))
    }

    /// The run with id `id`, as stored: rows done so far come back as
    /// stored, the rest are computed (by this service, once `model` is
    /// registered here).
    ///
    /// # Errors
    /// [`InferError::UnknownRun`] when no run `id` is stored (never
    /// submitted here, or removed by retention);
    /// [`InferError::InvalidArgument`] when it is a run of another model;
    /// [`InferError::Queue`].
    pub fn run<M: Model>(&self, model: &ModelRef<M>, id: RunId) -> Result<Run<M, Q>, InferError> {
        self.resume(model, id.0, None, None, self.shared.sync_commits)
    }

    /// The run submitted with idempotency key `key`, while the key is
    /// remembered (the service's retention), or `None`.
    ///
    /// # Errors
    /// As [`InferService::run`].
    pub fn find_run<M: Model>(
        &self,
        model: &ModelRef<M>,
        key: &str,
    ) -> Result<Option<Run<M, Q>>, InferError> {
        match self.runs.key_id(key)? {
            Some(id) => self
                .resume(model, id.into(), None, None, self.shared.sync_commits)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Errors the workers met and survived (queue errors, retries, model
    /// panics), most recent last, at most 100.
    pub fn errors(&self) -> Vec<String> {
        self.shared.health.errors()
    }

    /// Runs by state, rows per model and lane, and latency percentiles
    /// (queue wait, inference, end to end) since the service opened. With
    /// the `metrics` feature the same figures go to the `metrics` facade
    /// ([`METRIC_NAMES`](super::METRIC_NAMES)).
    pub fn stats(&self) -> ServiceStats {
        let (queued, running) = self.shared.tracker.live_counts();
        self.shared.recorder.snapshot(
            queued,
            running,
            self.shared.held.lock().len(),
            self.shared.health.workers(),
        )
    }

    /// The models registered, as (name, version).
    pub fn models(&self) -> Vec<(String, String)> {
        let mut m: Vec<_> = self
            .shared
            .registry
            .keys()
            .into_iter()
            .map(|k| (k.name, k.version))
            .collect();
        m.sort();
        m
    }

    /// Stop the workers (each finishes or times out its current batch, and
    /// their results are stored), give back held jobs, and close the
    /// queues. Waiting callers get [`InferError::Stalled`].
    ///
    /// # Errors
    /// [`InferError::Panicked`] when pool threads panicked;
    /// [`InferError::Queue`] when closing a queue fails.
    pub fn close(self) -> Result<(), InferError> {
        self.shut_down()
    }

    /// Stop the pool, then close both queues (other handles, such as the
    /// queue a `Run` holds, get `Closed` after, and the directory is free).
    /// The first call does it all; later ones do nothing.
    fn shut_down(&self) -> Result<(), InferError> {
        let Some(mut pool) = self.pool.lock().take() else {
            return Ok(());
        };
        let stopped = pool.stop_and_join();
        drop(pool);
        // Side by side, as at open: each close syncs and checkpoints.
        let (runs, jobs) = side_by_side(
            || self.runs.clone().close(),
            || self.shared.jobs.clone().close(),
        );
        stopped?;
        jobs?;
        runs?;
        Ok(())
    }

    fn check_registered(&self, key: &ModelKey) -> Result<(), InferError> {
        if self.shared.registry.has(key) {
            return Ok(());
        }
        Err(InferError::UnknownModel(key.to_string()))
    }

    fn tag(&self) -> u64 {
        // Unique per submission in this process, and across processes by
        // the start time mixed in.
        let n = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let mut h = n ^ (u64::from(std::process::id()) << 32);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }

    fn handle<M: Model>(&self, state: Arc<RunState>) -> Run<M, Q> {
        Run {
            state,
            shared: self.shared.clone(),
            _model: PhantomData,
        }
    }

    /// The stored run `id`, checked against `model` (and `content`, the
    /// rows of a resubmission); with `sync_first`, what it reads of its
    /// jobs is synced first.
    fn resume<M: Model>(
        &self,
        model: &ModelRef<M>,
        id: u64,
        content: Option<u64>,
        budget: Option<f64>,
        sync_first: bool,
    ) -> Result<Run<M, Q>, InferError> {
        let bytes = self
            .runs
            .result(MessageId::from(id))?
            .ok_or(InferError::UnknownRun(RunId(id)))?;
        let manifest = Manifest::decode(&bytes).map_err(|e| {
            InferError::InvalidArgument(format!("run {id}: its stored manifest is unreadable: {e}"))
        })?;
        if manifest.model != model.key {
            return Err(InferError::InvalidArgument(format!(
                "run {id} is a run of {}, not of {}",
                manifest.model, model.key
            )));
        }
        if content.is_some_and(|c| c != manifest.content) {
            return Err(InferError::InvalidArgument(format!(
                "the key of run {id} was used for other rows"
            )));
        }
        let state = Arc::new(RunState::new(
            self.shared.recorder.clone(),
            manifest.tag,
            manifest.model.clone(),
            manifest.rows as usize,
            budget,
        ));
        state.set_id(RunId(id));
        self.shared.tracker.add(&state);
        state.expect(&manifest.jobs);
        state.refresh(&self.shared.jobs, sync_first, false)?;
        state.mark_resumed();
        state.seal();
        Ok(self.handle(state))
    }

    /// Complete every manifest still pending (the one just enqueued, or
    /// ones a crash left), so each can be read back by its id.
    fn settle_manifests(&self) -> Result<(), InferError> {
        let take = manifests_to_settle(&self.runs);
        loop {
            let batch = self.runs.dequeue_with(&take)?;
            if batch.is_empty() {
                // The manifests (and the keys that find them) are durable
                // before a submission returns.
                if self.shared.sync_commits {
                    self.runs.sync()?;
                }
                return Ok(());
            }
            for d in batch {
                self.runs.complete(d.receipt, &d.payload)?;
            }
        }
    }
}

/// One submission at a time, for threads and async tasks alike: an async
/// submission holds its turn across its awaits, which a mutex guard cannot.
#[derive(Default)]
struct OneAtATime {
    busy: Mutex<bool>,
    freed: parking_lot::Condvar,
    #[cfg(feature = "tokio")]
    freed_async: tokio::sync::Notify,
}

/// A turn of [`OneAtATime`], given back when dropped.
struct Turn<'a>(&'a OneAtATime);

impl OneAtATime {
    fn lock(&self) -> Turn<'_> {
        let mut busy = self.busy.lock();
        while *busy {
            self.freed.wait(&mut busy);
        }
        *busy = true;
        Turn(self)
    }

    #[cfg(feature = "tokio")]
    async fn lock_async(&self) -> Turn<'_> {
        loop {
            let mut freed = std::pin::pin!(self.freed_async.notified());
            // Register before looking, so a turn given back between the
            // look and the await still wakes this task.
            freed.as_mut().enable();
            {
                let mut busy = self.busy.lock();
                if !*busy {
                    *busy = true;
                    return Turn(self);
                }
            }
            freed.await;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock() = false;
        self.0.freed.notify_one();
        #[cfg(feature = "tokio")]
        self.0.freed_async.notify_waiters();
    }
}

/// What [`InferService::check`] found: the rows' content hash and the rows
/// per job.
struct Checked {
    content: u64,
    chunk: usize,
}

/// A submission under way (see [`InferService::plan`]).
struct Plan {
    state: Arc<RunState>,
    /// Jobs not enqueued yet, in enqueue batches.
    batches: Vec<Vec<(Vec<u8>, JobSpan)>>,
    enqueue: EnqueueOptions,
    /// The manifest, its jobs filled in as they are enqueued.
    manifest: Manifest,
    manifest_opts: EnqueueOptions,
}

impl Plan {
    /// A batch's jobs as enqueue items.
    fn items<'a>(&self, batch: &'a [(Vec<u8>, JobSpan)]) -> Vec<(&'a [u8], EnqueueOptions)> {
        batch
            .iter()
            .map(|(b, _)| (&b[..], self.enqueue.clone()))
            .collect()
    }

    /// A batch was enqueued as `ids`: the run expects those jobs.
    fn enqueued(&mut self, batch: Vec<(Vec<u8>, JobSpan)>, ids: Vec<MessageId>) {
        let spans: Vec<JobSpan> = batch
            .into_iter()
            .zip(ids)
            .map(|((_, span), id)| JobSpan {
                id: id.into(),
                ..span
            })
            .collect();
        self.state.expect(&spans);
        self.manifest.jobs.extend(spans);
    }

    fn manifest(&self) -> Result<Vec<u8>, InferError> {
        Ok(self.manifest.encode()?)
    }

    /// The manifest is stored as run `id`: the run is whole.
    fn finish(self, id: MessageId) -> Arc<RunState> {
        self.state.set_id(RunId(id.into()));
        self.state.seal();
        self.state
    }
}

/// A one-row run's job was enqueued as `id` (also the run's id): the run
/// is whole.
fn one_enqueued(state: Arc<RunState>, id: MessageId) -> Arc<RunState> {
    state.set_id(RunId(id.into()));
    state.expect(&[JobSpan {
        id: id.into(),
        first_row: 0,
        rows: 1,
    }]);
    state.seal();
    state
}

/// How pending manifests are taken to be completed: leased an hour, or
/// for the queue's fixed lease (which it refuses to change).
fn manifests_to_settle<Q: JobQueue>(runs: &Q) -> DequeueOptions {
    DequeueOptions::new()
        .max(64)
        .wait(Duration::ZERO)
        .visibility(runs.fixed_lease().unwrap_or(Duration::from_secs(3600)))
}

/// A worker's dequeue wait on a remote queue: each look costs requests,
/// and a shutdown still wakes the worker at once (`wake_waiters`).
const REMOTE_DEQUEUE_WAIT: Duration = Duration::from_millis(500);

/// A queue's refusal of an argument (a deadline that passed between the
/// check and the enqueue) as the service's own.
fn refused(e: Error) -> InferError {
    match e {
        Error::InvalidArgument(m) => InferError::InvalidArgument(m),
        e => InferError::Queue(e),
    }
}

impl<Q: JobQueue> Drop for InferService<Q> {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::side_by_side;

    #[test]
    fn side_by_side_runs_both_and_passes_a_panic_on() {
        let here = std::thread::current().id();
        let (a, b) = side_by_side(
            || (std::thread::current().id(), 1),
            || (std::thread::current().id(), 2),
        );
        assert_eq!((a.1, b.1), (1, 2));
        assert_ne!(a.0, here, "`a` ran on a thread of its own");
        assert_eq!(b.0, here);
        let caught = std::panic::catch_unwind(|| side_by_side(|| panic!("in a"), || 2));
        assert!(caught.is_err());
    }
}
