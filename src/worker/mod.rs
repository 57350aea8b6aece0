//! The inference worker loop on top of the queue: a [`Model`] trait, a
//! [`WorkerPool`] that runs a model over jobs in micro-batches, and
//! [`parallel_infer`], which takes a whole table in and gives the results
//! back in input order.
//!
//! This module uses only the public [`Queue`](crate::Queue) API, so it could
//! live in its own crate.
//!
//! # How a job flows
//!
//! 1. A job is a message in the *jobs* queue whose payload is a
//!    [`JobRecord`]: a run id and one row, or a run of consecutive rows,
//!    with their typed inputs, encoded by the one codec in this module
//!    (bincode 1.3, fixed-width integers, size-limited). `parallel_infer`
//!    makes jobs of `max_batch` rows (fewer if rows are large), so the
//!    queue works per micro-batch, not per row.
//! 2. A worker leases jobs for up to `max_batch` rows (waiting at most
//!    `linger` for them), runs the model on them on a runner thread, renews
//!    the leases while it runs, and gives up on a call after `timeout`. A
//!    failed call is run again row by row to find the failing rows.
//! 3. The worker hands the batch to the committer, which stores each
//!    result durably in the *results* queue **before** it acks the job. A
//!    crash in between redelivers the job and computes it again; the
//!    duplicate result carries the same run and row, and the collector
//!    keeps the first one it sees. So a job is never acked without its
//!    results, and a duplicate is always recognised.
//! 4. A failed row is retried with exponential backoff and jitter; past
//!    `retries` it gets a failed result carrying the error and goes to the
//!    dead letters with the same error. A one-row job is retried with
//!    `nack`; a job of several rows runs once: its failed rows (or all its
//!    rows, if its worker died or timed out) are split off into one-row
//!    jobs carrying their attempts and last error, stored before the job
//!    is acked. So retries and dead letters are per row either way.
//!
//! # Files
//!
//! - `mod.rs`: the [`Model`] trait, [`ModelError`], and the records the
//!   queues carry ([`JobRecord`], [`ResultRecord`], [`RowOutcome`]).
//! - `codec.rs`: the one encoding of those records ([`codec`]), with the
//!   fast paths that write its layout around rows already encoded.
//! - `error.rs`: [`InferError`], what the worker layer returns.
//! - `pool.rs`: [`PoolOptions`], [`WorkerPool`] and the workers (lease,
//!   run, settle each job's rows).
//! - `committer.rs`: the committer thread (store results, then settle jobs).
//! - `runner.rs`: the model's thread, under a timeout, catching panics.
//! - `infer.rs`: [`parallel_infer`], its options and its result table.
//! - `arrow.rs` (feature `arrow`): `parallel_infer_arrow`, Arrow tables in
//!   and out.
//! - `onnx.rs` (feature `onnx`): `OnnxModel`, an ONNX file run by tract.

#[cfg(feature = "arrow")]
mod arrow;
pub mod codec;
mod committer;
mod error;
mod infer;
#[cfg(feature = "onnx")]
mod onnx;
mod pool;
mod runner;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(feature = "arrow")]
pub use arrow::{parallel_infer_arrow, FromArrow, InferTable, ToArrow};
pub use codec::MAX_RECORD_BYTES;
pub use error::InferError;
pub use infer::{parallel_infer, Column, InferOptions, InferResult, InferRow, Metadata};
#[cfg(feature = "onnx")]
pub use onnx::OnnxModel;
pub use pool::{PoolOptions, WorkerPool};

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

    /// Run the model on a batch; one output per input, in order.
    ///
    /// # Errors
    /// A [`ModelError`] fails the whole batch; the worker then runs the rows
    /// one by one to find the failing ones.
    fn infer(&self, rows: &[Self::Input]) -> Result<Vec<Self::Output>, ModelError>;
}

/// A model failed on a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

/// A job: one row, or a run of consecutive rows, of one run.
///
/// `parallel_infer` enqueues a table as jobs of up to `max_batch` rows, so
/// the queue works per micro-batch rather than per row. A job of several
/// rows runs once: rows that fail, and every row of a job whose worker
/// died, are split off into one-row jobs (carrying the attempts and error
/// so far), which retry and dead-letter row by row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord<I> {
    /// The run (table) these rows belong to.
    pub run: u64,
    /// The position of `inputs[0]` in its table; the rest follow in order.
    pub row: u64,
    /// When the job was enqueued, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Deliveries of these rows before they were split off a larger job.
    pub prior_attempts: u32,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<String>,
    /// The inputs.
    pub inputs: Vec<I>,
}

impl<I> JobRecord<I> {
    /// A job of one row, never attempted.
    pub fn single(run: u64, row: u64, enqueued_ms: u64, input: I) -> JobRecord<I> {
        JobRecord {
            run,
            row,
            enqueued_ms,
            prior_attempts: 0,
            last_error: None,
            inputs: vec![input],
        }
    }
}

/// What the results queue holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub enum ResultRecord<O> {
    /// Every row of `run` was enqueued as a job (written after the jobs, so
    /// a resumed run knows not to enqueue them again).
    Started {
        /// The run.
        run: u64,
        /// Its number of rows.
        rows: u64,
    },
    /// Rows finished, by the model named.
    Done {
        /// The model's name and version.
        model: (String, String),
        /// The rows' outcomes.
        outcomes: Vec<RowOutcome<O>>,
    },
}

/// A finished row, successful or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct RowOutcome<O> {
    /// The run.
    pub run: u64,
    /// The row.
    pub row: u64,
    /// The output, or the error that exhausted the retries.
    pub output: Result<O, String>,
    /// The delivery that produced this outcome (1 on the first), counting
    /// deliveries of the larger job it was split off.
    pub attempt: u32,
    /// When it finished, ms since the Unix epoch.
    pub finished_ms: u64,
    /// Time spent waiting in the queue, in microseconds.
    pub queue_us: u64,
    /// Time the model took for this row's batch, in microseconds.
    pub infer_us: u64,
    /// Rows in the batch this row was inferred in.
    pub batch_rows: u32,
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
