//! The one public error type.

use std::io;
use std::path::PathBuf;

/// What can go wrong in a queue operation.
///
/// Expected outcomes are not errors: an empty queue gives `Ok(None)` from
/// [`crate::Queue::dequeue`]. Errors are I/O failures, damaged files, misuse
/// and input the queue refuses; none of them changes the queue's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage failed (a full disk is `ErrorKind::StorageFull`). The
    /// operation had no effect. If the failure was in a sync the queue is
    /// now poisoned (see [`Error::Poisoned`]).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),

    /// Another handle, in this process or another, has the directory open.
    #[error("queue directory is locked by another open queue")]
    Locked,

    /// A payload is over the configured `max_message_size`.
    #[error("payload of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The configured limit in bytes.
        max: usize,
    },

    /// The receipt names a delivery that is no longer current: its lease
    /// expired and the message was delivered again, or it was acked, nacked
    /// or dead-lettered already.
    #[error("receipt is stale: the delivery it names is no longer current")]
    StaleReceipt,

    /// The receipt or id names no message this queue knows.
    #[error("unknown message or receipt")]
    Unknown,

    /// A file was written by a format version this build cannot read.
    #[error("{file}: unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The file's name.
        file: String,
        /// The version found in its header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// A file is damaged in a way recovery cannot repair without losing
    /// acknowledged data (for example a segment header that does not parse).
    #[error("{file}: corrupt at byte {offset}: {detail}")]
    Corrupt {
        /// The file's name.
        file: String,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },

    /// An earlier sync failed; every write fails until the queue is reopened,
    /// because after a failed `fdatasync` the kernel may have dropped the
    /// data while reporting later syncs as successful.
    #[error("queue is poisoned by an earlier failed sync; reopen it to recover")]
    Poisoned,

    /// An option or argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The path is not usable as a queue directory.
    #[error("{path}: {detail}")]
    BadDirectory {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A keyed enqueue would remember more idempotency keys than
    /// [`crate::QueueOptions::max_keys`] allows; nothing was written. Keys
    /// are forgotten once their `dedup_window` passes.
    #[error("{max} idempotency keys are remembered already (max_keys); retry once older keys pass their dedup window")]
    TooManyKeys {
        /// The configured cap.
        max: usize,
    },

    /// The queue was closed with [`crate::Queue::close`].
    #[error("queue is closed")]
    Closed,

    /// A remote queue's server (JetStream, feature `nats`) could not be
    /// reached or did not answer in time. Transient: the call may be
    /// retried once the server is back; whether the call took effect is
    /// unknown (an enqueue retried with its idempotency key is not added
    /// twice).
    #[error("queue server {url} is unavailable: {detail}")]
    Unavailable {
        /// The server address the backend was opened with.
        url: String,
        /// What failed.
        detail: String,
    },

    /// A remote queue's server answered with an error (a stream or consumer
    /// it refused, a limit of its own).
    #[error("queue server {url} refused the request: {detail}")]
    Backend {
        /// The server address the backend was opened with.
        url: String,
        /// The server's answer.
        detail: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
