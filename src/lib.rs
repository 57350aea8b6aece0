//! # lanelog
//!
//! An embedded, durable, log-structured job queue for programs that run ML
//! inference. Link the crate, open a directory, and get a queue that
//! survives crashes and power loss, serves urgent work first through
//! priority lanes, redelivers work whose consumer died, and parks poison
//! messages as dead letters.
//!
//! ```
//! # fn main() -> Result<(), lanelog::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use lanelog::Queue;
//! let q = Queue::open(dir.path())?;
//! q.enqueue(b"low", 0)?;
//! q.enqueue(b"urgent", 9)?;
//! let d = q.dequeue()?.expect("a message");
//! assert_eq!(d.payload, b"urgent");
//! q.ack(d.receipt)?;
//! # Ok(()) }
//! ```
//!
//! It is not a server, not a distributed log and not a general key-value
//! store: one process owns a queue directory at a time.
//!
//! # Guarantees
//!
//! - **At-least-once.** Every message whose enqueue returned `Ok` is
//!   delivered until acked or dead-lettered. Duplicates happen only after a
//!   lease expiry, a nack or a crash.
//! - **Durability** as chosen by [`Durability`]: `Immediate` syncs before a
//!   write call returns (concurrent callers share one sync); `Periodic` and
//!   `None` lose nothing on a process crash.
//! - **Recovery.** After a crash at any instant, [`Queue::open`] succeeds,
//!   cuts torn tails, never delivers a damaged record, and makes in-flight
//!   messages ready again; see [`Queue::recovery_report`].
//! - **One owner.** A second open of an open directory fails with
//!   [`Error::Locked`].
//! - **Space.** Segments whose messages are all finished are deleted.
//!
//! The on-disk format is described in `docs/format.md`.
//!
//! # Layout
//!
//! Dependencies point downward only:
//!
//! - [`queue`](Queue): the public facade, one core lock and group commit.
//! - `recovery`: the open sequence (the only code that truncates or removes
//!   at open).
//! - `segment`, `journal`: the two file kinds, appending and reading.
//! - `index`: the in-memory keydir and ready lanes, changed only by `add` and
//!   `apply`, live and in replay alike.
//! - `lanes`: the scheduling policy ([`Scheduling`]), pure.
//! - [`codec`]: every byte layout, pure functions over slices.
//! - [`storage`]: the only module that touches files; [`storage::MemoryStorage`]
//!   simulates crashes and faults. Its `mmap` module is the only `unsafe` code.
//! - [`clock`](Clock): the only code that reads time.
//! - `waker` (feature `tokio`): async wake-ups and the timer thread.
//! - `config`, `message`, `error`: options, plain data, the error type.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod clock;
pub mod codec;
mod config;
mod error;
mod index;
mod journal;
mod lanes;
mod message;
mod queue;
mod recovery;
mod segment;
pub mod storage;
#[cfg(feature = "tokio")]
mod waker;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::{
    DequeueOptions, Durability, QueueOptions, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEGMENT_SIZE,
    MAX_DELAY, MAX_REASON_BYTES, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
pub use error::{Error, Result};
pub use lanes::{weighted_wait_bound, Scheduling};
pub use message::{DeadLetter, Delivery, MessageId, Receipt, RecoveryReport, Stats};
pub use queue::Queue;
