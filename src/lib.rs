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
//! store: one process owns a queue directory at a time, and payloads are
//! opaque bytes (at most `max_message_size`, 4 MiB by default).
//!
//! # Using it
//!
//! - **Enqueue** with a priority `0..=255` (higher first): [`Queue::enqueue`],
//!   [`Queue::enqueue_batch`] (one write, one sync), [`Queue::enqueue_delayed`],
//!   and with [`EnqueueOptions`] (priority, delay, deadline, idempotency key)
//!   [`Queue::enqueue_with`] and [`Queue::enqueue_batch_with`].
//! - **Deadlines**: within a lane, messages with a deadline leave earliest
//!   deadline first, ahead of the others; one whose deadline passes before
//!   it is delivered becomes a dead letter (`deadline missed`).
//! - **Idempotency keys**: a key seen within
//!   [`QueueOptions::dedup_window`] returns the first enqueue's id and
//!   writes nothing.
//! - **Dequeue** leases a message for the visibility timeout:
//!   [`Queue::dequeue`] (never blocks), [`Queue::dequeue_timeout`] (long
//!   poll), [`Queue::dequeue_batch`] (fill a batch within a linger),
//!   [`Queue::dequeue_with`] (every knob, including a per-call lease), and
//!   with the `tokio` feature `dequeue_async` / `dequeue_batch_async`.
//! - **Settle** a delivery with its [`Receipt`]: [`Queue::ack`],
//!   [`Queue::nack`] (ready again, optionally after a delay),
//!   [`Queue::extend_lease`], [`Queue::dead_letter`]. A lease that expires
//!   makes the message ready again with its attempt raised; after
//!   `max_deliveries` it goes to the dead letters instead.
//! - **Results**: [`Queue::complete`] stores a result and acks in one
//!   durable record; [`Queue::result`] reads it back.
//! - **Dead letters**: [`Queue::dead_letters`], [`Queue::redrive`],
//!   [`Queue::redrive_all`], [`Queue::purge_dead_letters`].
//! - **Retention**: [`QueueOptions::retention`] removes old messages and
//!   results, [`QueueOptions::dead_letter_retention`] old dead letters, in
//!   the background, whether or not anyone reads the queue.
//! - **Attributes** (segment size, limits, lease, retention, dedup window,
//!   default delay and wait) are stored in the directory: every opener uses
//!   them unless it names its own.
//! - **Scheduling** across lanes is [`Scheduling::Strict`] by default;
//!   [`Scheduling::Weighted`] gives lane `p` a share growing with `p + 1`
//!   and bounds how long any non-empty lane waits ([`weighted_wait_bound`]).
//!
//! # Guarantees
//!
//! - **At-least-once.** Every message whose enqueue returned `Ok` is
//!   delivered until acked or dead-lettered. Duplicates happen only after a
//!   lease expiry, a nack or a crash.
//! - **Order.** Higher priority first; within a priority, never-delivered
//!   messages leave in enqueue order (messages that came back are served by
//!   id among them).
//! - **Durability** as chosen by [`Durability`]: `Immediate` syncs before a
//!   write call returns (concurrent callers share one sync); `Periodic` and
//!   `None` lose nothing on a process crash.
//! - **Recovery.** After a crash at any instant, [`Queue::open`] succeeds,
//!   cuts torn tails, never delivers a damaged record, and makes in-flight
//!   messages ready again; see [`Queue::recovery_report`].
//! - **One owner.** A second open of an open directory fails with
//!   [`Error::Locked`].
//! - **Space.** Segments whose messages are all finished are deleted; a
//!   sealed segment with at most a quarter of its records live (dead
//!   letters, long delays, a starved lane's backlog) has them copied forward
//!   and is deleted, so disk use follows live data, not history. The one
//!   exception: a segment holding the next message of a lane is left for
//!   consumers to finish.
//!
//! The on-disk format is described in `docs/format.md`.
//!
//! # Layout
//!
//! One file per role. Dependencies point one way, top to bottom, with no
//! cycles: a module uses only modules listed below it (`worker` only the
//! public `Queue` API).
//!
//! - `worker/`: the inference worker loop, on the crate's public API only
//!   ([`worker`] lists its files).
//! - `nats/` (feature `nats`): the seam over NATS JetStream,
//!   `nats::JetStreamQueue` (the module docs list its files;
//!   `docs/nats.md` maps each part of the queue onto JetStream).
//! - `seam.rs`: the queue seam, [`JobQueue`] (what the worker layer calls
//!   on a queue) and [`DeadLetterAdmin`], implemented by [`Queue`] by
//!   forwarding.
//! - `queue.rs`: the public facade, [`Queue`] and [`QueueOptions::open`];
//!   every method checks its arguments and hands over to the engine.
//! - `inspect/`: read-only views of a directory without the lock (stats,
//!   peek, a message's history, a check of every file), for the `lanelog`
//!   command-line tool (`src/bin/lanelog/`, feature `cli`):
//!   - `mod.rs`: [`inspect::Inspector`], the lock state, the pinned
//!     read-only snapshot;
//!   - `report.rs`: the public report types;
//!   - `explain.rs`: one message's history;
//!   - `verify.rs`: the check of every file.
//! - `engine/`: the open queue behind the facade:
//!   - `mod.rs`: the locked state (`Core`), open, the write path (records,
//!     keys and deadlines checked, journal entries, id blocks, prepared
//!     segments), stats;
//!   - `commit.rs`: group commit, the periodic flusher and the one
//!     poisoning path;
//!   - `delivery.rs`: leases, reads outside the lock, lease expiry,
//!     settling by receipt, `complete` and reading results;
//!   - `expiry.rs`: time-driven removals (missed deadlines, retention,
//!     dead-letter retention, forgotten keys) and the thread that runs them;
//!   - `space.rs`: deleting finished segments; a pure choice of the segment
//!     to relocate, and relocating it;
//!   - `checkpoint.rs`: when a checkpoint is due, and writing it.
//! - `waker.rs` (feature `tokio`): async wake-ups and the timer thread.
//! - `recovery.rs`: the open sequence: read and judge every file, then fix
//!   (the only code that truncates or removes at open).
//! - `prepare.rs`: a background thread that makes the next segment and
//!   journal file before they are needed, and syncs behind the writer.
//! - `segment.rs`, `journal.rs`: the two file kinds: appending, reading,
//!   scanning; each owns its end and synced marks.
//! - `attrs.rs`: reading and replacing the stored attributes file.
//! - `index.rs`: the in-memory keydir and ready lanes, changed by
//!   `place_record`, `add_result` and `apply` live and in replay, and
//!   bulk-loaded by recovery.
//! - `keys.rs`: the remembered idempotency keys.
//! - `config.rs`: options, their defaults and limits, and the attributes
//!   a queue stores; plain data.
//! - `layout.rs`: every file name, number limit, the directory listing and
//!   how a file is made with its header.
//! - `codec/`: every byte layout, pure functions over slices (hidden from
//!   the documented API; `docs/format.md` is its prose twin).
//! - [`storage`]: the only module that touches files;
//!   [`storage::MemoryStorage`] simulates crashes and faults. Its `mmap`
//!   module is the only `unsafe` code.
//! - `lanes.rs`: the scheduling policy ([`Scheduling`]), pure.
//! - `message.rs`: ids, deliveries, stats and reports; plain data.
//! - `clock.rs` ([`Clock`]): the only code that reads time.
//! - `error.rs`: the error type.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod attrs;
mod clock;
/// Byte layouts of every file (for the fuzzers and tools); not a stable
/// API: use [`inspect`] for a supported view of a directory.
#[doc(hidden)]
pub mod codec;
mod config;
mod engine;
mod error;
mod index;
pub mod inspect;
mod journal;
mod keys;
mod lanes;
mod layout;
mod message;
#[cfg(feature = "nats")]
pub mod nats;
mod prepare;
mod queue;
mod readme_doctest;
mod recovery;
mod seam;
mod segment;
pub mod storage;
#[cfg(feature = "tokio")]
mod waker;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use codec::entry::{DEADLINE_MISSED, MAX_REASON_BYTES};
pub use codec::record::MAX_KEY_BYTES;
pub use config::{
    DequeueOptions, Durability, EnqueueOptions, QueueOptions, DEFAULT_DEDUP_WINDOW,
    DEFAULT_MAX_KEYS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEGMENT_SIZE, MAX_DELAY, MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
};
pub use error::{Error, Result};
pub use lanes::{weighted_wait_bound, Scheduling};
pub use message::{
    DeadLetter, Delivery, FileRange, LaneCount, MessageId, MessageStatus, Receipt, RecoveryReport,
    Stats,
};
pub use queue::Queue;
pub use seam::{DeadLetterAdmin, JobQueue};
