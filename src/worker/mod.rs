//! The inference layer on top of the queue: a [`Model`] trait, an
//! [`InferService`] that runs registered models over submitted runs with a
//! pool of workers, and [`parallel_infer`], a whole table in and its
//! results back in input order (a submit and a wait on a service opened for
//! the call). `docs/service.md` is the guide.
//!
//! This module uses only the queue seam ([`JobQueue`](crate::JobQueue)),
//! so it could live in its own crate, and runs over any backend of it: the
//! service, its pool, its runs and [`parallel_infer_on`] take the queue
//! type as a parameter whose default is the embedded
//! [`Queue`](crate::Queue). On a remote queue
//! ([`JobQueue::remote`](crate::JobQueue::remote), JetStream) the lease is
//! the queue's fixed one, held jobs are renewed every third of it, the
//! service makes no syncs of its own (each write is confirmed), and runs
//! hear of jobs other processes settled by asking the queue.
//!
//! # How a run flows
//!
//! 1. [`InferService::submit`] encodes the rows once into one block (a
//!    tensor for rows of numbers, else each row by the one codec here,
//!    bincode 1.3) and enqueues its slices as *jobs* of up to `max_batch`
//!    consecutive rows (fewer if rows are large) in the service's `jobs`
//!    queue: in the lane of the run's priority, with its deadline. Each job
//!    names its model by name, version and row type. Once they are synced
//!    it writes the run's manifest (its model and its jobs' ids) to the
//!    `runs` queue, keyed by the run's idempotency key if it has one.
//! 2. A worker leases jobs for up to `max_batch` rows (waiting at most
//!    `linger` for them), runs each job only on the model registered under
//!    its exact key, on the worker's own thread, watched by the pool's
//!    watcher: the leases are renewed while it runs, and a call past the
//!    run's timeout is given up on (its jobs fail as timed out, the worker
//!    is replaced). A failed call is run again row by row to
//!    find the failing rows. A job no registered model takes is held (or
//!    parked, see [`Unclaimed`]), never run.
//! 3. The worker hands the batch to the committer, which completes each job
//!    with its result (`complete`: result and ack in one record), syncs once
//!    for all of them, and then tells the runs waiting here. A crash before
//!    the complete redelivers the job and computes it again.
//! 4. A row that fails with a [`ErrorKind::Transient`] error or a timeout
//!    is retried with backoff and jitter; past `retries`, or at once for a
//!    [`ErrorKind::Permanent`] error, it becomes a dead letter whose reason
//!    is its error. A one-row job is retried with `nack`; a job of several
//!    rows runs once: its failed rows (or all of them, if its worker died)
//!    are split off into one-row jobs, enqueued and synced before the job
//!    is completed naming them. So retries and dead letters are per row.
//! 5. A run learns what became of its jobs from the committer, and by
//!    asking the queue ([`Queue::status`](crate::Queue::status)) while its
//!    caller waits: dead letters (a missed deadline is one, dead-lettered
//!    by the queue itself), and results stored before it was found again.
//!
//! # Files
//!
//! - `mod.rs`: the [`Model`] trait, [`ModelError`], [`ErrorKind`],
//!   [`RowError`].
//! - `codec.rs`: the one encoding of rows, outputs and records ([`codec`]).
//! - `rows.rs`: rows as blocks (a tensor for rows of numbers), what a
//!   model sees of a batch ([`Batch`], [`TensorView`]) and gives back
//!   ([`Outputs`]).
//! - `job.rs`: the records stored: a job, its result, a run's manifest.
//! - `registry.rs`: the registered models behind one object-safe face.
//! - `error.rs`: [`InferError`], what the inference layer returns.
//! - `service.rs`: [`InferService`], [`ServiceOptions`], [`RunOptions`],
//!   [`ModelRef`], [`Unclaimed`]: submitting and finding runs.
//! - `run.rs`: [`Run`] and what it returns; how a run tracks its jobs.
//! - `pool.rs`: [`PoolOptions`], the workers (lease, run, settle each
//!   job's rows) and the pool's health.
//! - `committer.rs`: the committer thread (complete, retry, dead-letter or
//!   split jobs; sync; tell the runs).
//! - `watchdog.rs`: model calls inline on the workers' threads, watched:
//!   leases renewed, an overrun given up on, panics caught.
//! - `stats.rs`: [`ServiceStats`] and, with the `metrics` feature, their
//!   export through the `metrics` facade.
//! - `infer.rs`: [`parallel_infer`] (and [`parallel_infer_on`], over
//!   queues the caller opened), its options and its result table.
//! - `arrow.rs` (feature `arrow`): `parallel_infer_arrow`, Arrow tables in
//!   and out.
//! - `onnx.rs` (feature `onnx`): `OnnxModel`, an ONNX file run by tract.

#[cfg(feature = "arrow")]
mod arrow;
pub mod codec;
mod committer;
mod error;
mod infer;
mod job;
#[cfg(feature = "onnx")]
mod onnx;
mod pool;
mod priority;
mod registry;
mod rows;
mod run;
mod service;
mod stats;
mod watchdog;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(feature = "arrow")]
pub use arrow::{
    parallel_infer_arrow, parallel_infer_arrow_batches, FromArrow, InferTable, InferTables, ToArrow,
};
pub use codec::MAX_RECORD_BYTES;
pub use error::InferError;
pub use infer::{parallel_infer, parallel_infer_on, Column, InferOptions, InferResult, InferRow};
#[cfg(feature = "onnx")]
pub use onnx::{OnnxModel, OnnxOutputs};
pub use pool::PoolOptions;
pub use rows::{Batch, Elem, Element, Outputs, TensorView};
pub use run::{Elapsed, Metadata, Progress, RowOutput, Run, RunId, RunOutput};
pub use service::{InferService, ModelRef, RunOptions, ServiceOptions, Unclaimed};
pub use stats::{Latency, RowCount, ServiceStats, METRIC_NAMES};

/// A model that maps input rows to output rows in batches.
pub trait Model: Send + Sync + 'static {
    /// One input row.
    type Input: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// One output row.
    type Output: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The model's name.
    fn name(&self) -> &str;

    /// The model's version: a hash of the model file.
    fn version(&self) -> &str;

    /// The name of the output, for result tables (`out.<name>`).
    fn output_name(&self) -> &str {
        "output"
    }

    /// The names of the model's outputs, for result tables: one
    /// `out.<name>` column each. A model of several outputs returns them
    /// together as one [`Model::Output`] (for example one vector per
    /// output, `OnnxOutputs` with the `onnx` feature). Default = `[output_name()]`.
    fn output_names(&self) -> Vec<String> {
        vec![self.output_name().to_string()]
    }

    /// The SHA-256 of the model file, in hex, for a row's metadata
    /// (`last_model.model_sha`); `None` for a model without a file.
    fn sha256(&self) -> Option<&str> {
        None
    }

    /// Run the model on a batch; one output per input, in order.
    ///
    /// # Errors
    /// A [`ModelError`] fails the whole batch; the worker then runs the rows
    /// one by one to find the failing ones. Its [`ErrorKind`] decides what
    /// happens next: a [`ErrorKind::Transient`] failure is retried with
    /// backoff, a [`ErrorKind::Permanent`] one is not.
    fn infer(&self, rows: &[Self::Input]) -> Result<Vec<Self::Output>, ModelError>;

    /// Run the model on a micro-batch as the workers hold it: what they
    /// call. A job's rows are one block; when they are numbers of one
    /// width, [`Batch::tensor`] gives them as one tensor (rows × width) to
    /// hand to a runtime without a copy per row, and [`Outputs::tensor`]
    /// takes the outputs back as one. Default: [`Model::infer`] on the
    /// rows decoded ([`Batch::rows`]).
    ///
    /// # Errors
    /// As [`Model::infer`].
    fn infer_batch(
        &self,
        batch: &Batch<'_, Self::Input>,
    ) -> Result<Outputs<Self::Output>, ModelError> {
        Ok(Outputs::rows(self.infer(batch.rows()?)?))
    }
}

/// Why a row failed, which decides whether it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Worth retrying (a resource busy, out of memory, a lost device):
    /// retried with backoff up to [`PoolOptions::retries`].
    Transient,
    /// Not worth retrying (bad input, a shape mismatch, an undecodable
    /// row): fails at once, never retried.
    Permanent,
    /// The model call ran past its timeout (set by the worker, never by a
    /// model): retried with the timeout backoff.
    Timeout,
    /// The row's deadline passed before it started (set by the queue).
    DeadlineMissed,
    /// The run was cancelled (or went over its failure budget) before the
    /// row ran.
    Cancelled,
    /// The row's job left the queue without a result a run can read (its
    /// stored result is damaged, or it was acked or removed by retention).
    Lost,
}

impl ErrorKind {
    /// The kind's name, as it prefixes a dead letter's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DeadlineMissed => "deadline missed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Lost => "lost",
        }
    }

    fn from_name(name: &str) -> Option<ErrorKind> {
        [
            ErrorKind::Transient,
            ErrorKind::Permanent,
            ErrorKind::Timeout,
            ErrorKind::DeadlineMissed,
            ErrorKind::Cancelled,
            ErrorKind::Lost,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model failed on a batch: a [`ErrorKind::Transient`] or a
/// [`ErrorKind::Permanent`] failure with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    kind: ErrorKind,
    message: String,
}

impl ModelError {
    /// A failure worth retrying: resource busy, out of memory.
    pub fn transient(message: impl Into<String>) -> ModelError {
        ModelError {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    /// A failure not worth retrying: bad input, a shape mismatch.
    pub fn permanent(message: impl Into<String>) -> ModelError {
        ModelError {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// A call given up after `after` (the worker's timeout).
    pub(crate) fn timed_out(after: std::time::Duration) -> ModelError {
        ModelError {
            kind: ErrorKind::Timeout,
            message: format!("timed out after {after:?}"),
        }
    }

    /// Whether it is worth retrying, and how.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Why one row of a run failed: the kind and the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
#[non_exhaustive]
pub struct RowError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The model's message, or what the queue reported.
    pub message: String,
}

impl RowError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> RowError {
        RowError {
            kind,
            message: message.into(),
        }
    }

    /// The row error a dead letter's reason stands for: `<kind>: <message>`
    /// as the workers write it, [`crate::DEADLINE_MISSED`] from the queue,
    /// anything else (an operator's reason) a permanent failure.
    pub(crate) fn from_reason(reason: &str) -> RowError {
        if reason == crate::DEADLINE_MISSED {
            return RowError::new(
                ErrorKind::DeadlineMissed,
                "its deadline passed before it started",
            );
        }
        match reason.split_once(": ") {
            Some((kind, message)) if ErrorKind::from_name(kind).is_some() => RowError::new(
                ErrorKind::from_name(kind).unwrap_or(ErrorKind::Permanent),
                message,
            ),
            _ => RowError::new(ErrorKind::Permanent, reason),
        }
    }

    /// This error as a dead letter's reason, cut to the reason's limit.
    pub(crate) fn reason(&self) -> String {
        let mut r = self.to_string();
        if r.len() > crate::MAX_REASON_BYTES {
            let mut end = crate::MAX_REASON_BYTES;
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            r.truncate(end);
        }
        r
    }
}

impl From<ModelError> for RowError {
    fn from(e: ModelError) -> RowError {
        RowError::new(e.kind, e.message)
    }
}

/// Milliseconds since the Unix epoch, for stamps in records.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Most errors a pool keeps for [`WorkerPool::errors`].
const KEPT_ERRORS: usize = 100;

/// Keep an error a worker or the committer survived: the last
/// [`KEPT_ERRORS`].
fn note(errors: &parking_lot::Mutex<Vec<String>>, message: String) {
    let mut errors = errors.lock();
    if errors.len() >= KEPT_ERRORS {
        errors.remove(0);
    }
    errors.push(message);
}
