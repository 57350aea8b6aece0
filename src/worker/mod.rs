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
//!    [`JobRecord`] (run id, row number, typed input), encoded by the one
//!    codec in this module (bincode 1.3, fixed-width integers, size-limited).
//! 2. A worker leases up to `max_batch` jobs (waiting at most `linger` for
//!    the batch to fill), runs the model on the batch on a runner thread,
//!    renews the leases while it runs, and gives up on it after `timeout`.
//! 3. Each result is enqueued durably in the *results* queue **before** its
//!    job is acked. A crash in between redelivers the job and computes it
//!    again; the duplicate result carries the same run and row, and the
//!    collector keeps the first one it sees. So a job is never acked without
//!    its result, and a duplicate is always recognised.
//! 4. A failure is retried with exponential backoff and jitter (`nack` with
//!    a delay); past `retries` the job gets a failed result carrying the
//!    error and goes to the dead letters with the same error.

#[cfg(feature = "arrow")]
mod arrow;
mod infer;
#[cfg(feature = "onnx")]
mod onnx;
mod pool;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(feature = "arrow")]
pub use arrow::{parallel_infer_arrow, FromArrow, InferTable, ToArrow};
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

/// A job: one row of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord<I> {
    /// The run (table) this row belongs to.
    pub run: u64,
    /// The row's position in its table.
    pub row: u64,
    /// When the job was enqueued, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// The input.
    pub input: I,
}

/// What the results queue holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ResultRecord<O> {
    /// Every row of `run` was enqueued as a job (written after the jobs, so
    /// a resumed run knows not to enqueue them again).
    Started {
        /// The run.
        run: u64,
        /// Its number of rows.
        rows: u64,
    },
    /// A row finished.
    Done(RowOutcome<O>),
}

/// A finished row, successful or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowOutcome<O> {
    /// The run.
    pub run: u64,
    /// The row.
    pub row: u64,
    /// The output, or the error that exhausted the retries.
    pub output: Result<O, String>,
    /// The delivery that produced this outcome (1 on the first).
    pub attempt: u32,
    /// When it finished, ms since the Unix epoch.
    pub finished_ms: u64,
    /// Time spent waiting in the queue, in microseconds.
    pub queue_us: u64,
    /// Time the model took for this row's batch, in microseconds.
    pub infer_us: u64,
    /// Rows in the batch this row was inferred in.
    pub batch_rows: u32,
    /// The model's name and version.
    pub model: (String, String),
}

/// Largest encoded job or result accepted by the codec: 16 MiB.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// The one codec for job and result payloads (bincode 1.3, fixed-width
/// integers, at most [`MAX_RECORD_BYTES`]): what a [`WorkerPool`] fed by
/// hand expects in its jobs queue ([`JobRecord`]) and writes to its results
/// queue ([`ResultRecord`]).
pub mod codec {
    use bincode::Options;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    fn options() -> impl Options {
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(super::MAX_RECORD_BYTES)
    }

    /// Encode a record.
    ///
    /// # Errors
    /// A record over the size limit, or one serde cannot encode.
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        options()
            .serialize(value)
            .map_err(|e| format!("cannot encode: {e}"))
    }

    /// Decode a record; bounded, never panics.
    ///
    /// # Errors
    /// Bytes that are not an encoded `T`.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        options()
            .deserialize(bytes)
            .map_err(|e| format!("cannot decode: {e}"))
    }
}

/// Milliseconds since the Unix epoch, for stamps in records.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_refuses_garbage() {
        let job = JobRecord {
            run: 1,
            row: 2,
            enqueued_ms: 3,
            input: vec![1.5f32, 2.5],
        };
        let bytes = codec::encode(&job).unwrap();
        assert_eq!(codec::decode::<JobRecord<Vec<f32>>>(&bytes).unwrap(), job);
        assert!(codec::decode::<JobRecord<Vec<f32>>>(&bytes[..5]).is_err());
        // A length prefix claiming 2^40 elements must fail, not allocate.
        let mut evil = bytes.clone();
        evil[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(codec::decode::<JobRecord<Vec<f32>>>(&evil).is_err());
    }
}
