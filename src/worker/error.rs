//! The inference layer's error type, kept apart from the queue's
//! [`crate::Error`]: a queue error reaches the caller wrapped, unchanged, in
//! [`InferError::Queue`]; everything else here is about the service, its
//! pool and its runs.

use super::codec::CodecError;

/// What can go wrong opening or closing an
/// [`InferService`](super::InferService), submitting or waiting for a run,
/// or in a [`parallel_infer`] call.
///
/// A row the model fails on is not an error: it comes back as a failed row
/// (its output is `Err` with a [`RowError`](super::RowError)), unless more
/// rows fail than the failure budget allows.
///
/// [`parallel_infer`]: super::parallel_infer
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// An operation on the jobs or runs queue failed; the queue's error,
    /// unchanged (its message too).
    #[error(transparent)]
    Queue(#[from] crate::Error),

    /// An option is out of range, or an input cannot be read (an Arrow
    /// column of a type the model's input does not take, a null), named in
    /// the message.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A row or a result cannot be encoded (over
    /// [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES), or one serde cannot
    /// encode).
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// A run stopped early: more rows failed than its failure budget
    /// allows. The run is cancelled; the results stored so far are kept.
    #[error("{failed} of {rows} rows failed, over the failure budget")]
    FailureBudget {
        /// Rows that failed past their retries.
        failed: usize,
        /// Rows in the table.
        rows: usize,
    },

    /// A submission names a model not registered with the service
    /// (name and version given).
    #[error("no model {0} for its row type is registered with this service")]
    UnknownModel(String),

    /// No run with this id is stored (never submitted to this directory,
    /// or removed by retention).
    #[error("no run {0} is stored")]
    UnknownRun(super::RunId),

    /// The service cannot finish the run: its queue failed (a failed sync
    /// poisons it), every worker is gone, or the run's model is not
    /// registered. The message names which.
    #[error("the run cannot make progress: {0}")]
    Stalled(String),

    /// A wait with a timeout ran out before every row was done; the run
    /// goes on.
    #[error("{done} of {rows} rows done when the wait timed out")]
    WaitTimedOut {
        /// Rows done so far.
        done: usize,
        /// Rows in the run.
        rows: usize,
    },

    /// A thread of the pool (a worker or the committer) could not be
    /// started; the threads already started were stopped.
    #[error("cannot start a pool thread")]
    Spawn(#[source] std::io::Error),

    /// Threads of the pool (workers or the committer) panicked. The jobs
    /// they held return to the queue when their leases expire.
    #[error("{threads} pool thread(s) panicked")]
    Panicked {
        /// How many threads panicked.
        threads: usize,
    },
}
