//! What the workloads of the battery, the proptest and the fuzzers share:
//! the clock's start, the queue options (and the time-driven ones,
//! [`Timers`]), self-checking payloads and results, idempotency keys, and
//! one call that enqueues one message, a delayed one, one with options
//! (deadline, key), or a batch.
//!
//! Each harness keeps its own way of choosing operations (seeded weights in
//! the battery, proptest strategies, fuzzer bytes); they all describe a
//! message to enqueue as an [`Item`] and run it through [`enqueue`], so the
//! three agree on what a call with those items means.
//!
//! **Time.** The queue's background thread (the "tender") removes what
//! falls due on the queue's clock: missed deadlines, retention, dead-letter
//! retention. With a `ManualClock` it notices a step of the clock only when
//! its nap (up to a second of real time, or until the next thing it knows
//! is due) ends, or when an enqueue with a deadline earlier than its next
//! planned look wakes it. The harnesses
//! make every removal happen at a known point: before a clock step that
//! makes something due they enqueue a [`pacemaker`] (a message due 1 ms
//! later, which wakes the tender and keeps its nap at 1 ms), step the clock,
//! then wait until the tender ran and `sync()` (which returns only after
//! the tender's own commit, so no storage call of the tender overlaps a
//! later op). Every clock step of such a harness gets its pacemaker: the
//! tender plans its next look in queue-clock time, so after a step without
//! one, a new deadline may look later than that (stale) plan and not wake
//! it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lanelog::codec::{header, record};
use lanelog::{
    Delivery, Durability, EnqueueOptions, ManualClock, MessageId, Queue, QueueOptions, Stats,
    Timestamp,
};

use crate::SplitMix64;

/// The workload clock's start (ms since the epoch).
pub const T0: u64 = 1_700_000_000_000;

/// Lease of every delivery under [`options`].
pub const VISIBILITY_MS: u64 = 10_000;

/// Segment size under [`options`] (the smallest the queue accepts).
pub const SEGMENT_SIZE: u64 = 1 << 20;

/// Longest payload [`payload`] makes.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Options shared by the workloads: 1 MiB segments, 64 KiB journal files,
/// the given checkpoint threshold, a 10 s lease, the workload's clock.
pub fn options(
    clock: &ManualClock,
    durability: Durability,
    max_deliveries: u32,
    checkpoint_bytes: u64,
) -> QueueOptions {
    QueueOptions::new()
        .segment_size(SEGMENT_SIZE)
        .journal_file_size(64 << 10)
        .checkpoint_bytes(checkpoint_bytes)
        .durability(durability)
        .visibility_timeout(Duration::from_millis(VISIBILITY_MS))
        .max_deliveries(max_deliveries)
        .clock(Arc::new(clock.clone()))
}

/// Bytes of a seeded splitmix64 stream, made once per process: payloads are
/// slices of it, so making and checking one costs a copy (under a fuzzer a
/// per-byte loop would also run under its comparison tracing).
fn pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = MAX_PAYLOAD + (1 << 16);
        let mut out = Vec::with_capacity(n + 8);
        let mut rng = SplitMix64::new(0x5EED_0F1A_4E10_6000);
        while out.len() < n {
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        out
    })
}

/// The payload of the message tagged `tag`, `len` bytes (at most
/// [`MAX_PAYLOAD`]): the tag's little-endian bytes (as many as fit), then
/// pseudo-random bytes from an offset the tag picks. A checker that knows
/// (tag, len) tells any change, truncation, shift or swap of payloads.
pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    assert!(len <= MAX_PAYLOAD, "payloads are at most 1 MiB");
    let at = (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize;
    let mut out = Vec::with_capacity(len.max(8));
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&pool()[at..at + len.saturating_sub(8)]);
    out.truncate(len);
    out
}

/// The tag bit that marks a result's payload (see [`result_payload`]), so a
/// result is never taken for a message's payload or the other way round.
pub const RESULT_TAG: u64 = 1 << 62;

/// The result a harness completes message `tag` with: [`payload`] of the
/// tag with [`RESULT_TAG`] set, `len` bytes.
pub fn result_payload(tag: u64, len: usize) -> Vec<u8> {
    payload(tag | RESULT_TAG, len)
}

/// The bytes of idempotency key number `k`.
pub fn key_bytes(k: u64) -> Vec<u8> {
    format!("key-{k:x}").into_bytes()
}

/// A message to enqueue (its id is known only once the enqueue returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub tag: u64,
    pub priority: u8,
    pub len: usize,
    /// 0: ready at once.
    pub delay_ms: u32,
    /// Deadline on the queue's clock (ms since the epoch); 0: none.
    pub deadline: u64,
    /// Idempotency key number ([`key_bytes`]); `None`: no key.
    pub key: Option<u64>,
}

impl Item {
    /// A message without delay, deadline or key.
    pub fn plain(tag: u64, priority: u8, len: usize) -> Item {
        Item {
            tag,
            priority,
            len,
            delay_ms: 0,
            deadline: 0,
            key: None,
        }
    }

    /// Its payload: [`payload`] of its tag and length.
    pub fn payload(&self) -> Vec<u8> {
        payload(self.tag, self.len)
    }

    /// Whether it needs `EnqueueOptions` (a deadline or a key).
    pub fn has_options(&self) -> bool {
        self.deadline > 0 || self.key.is_some()
    }

    /// Its options, as `enqueue_with` takes them.
    pub fn options(&self) -> EnqueueOptions {
        let mut o = EnqueueOptions::new().priority(self.priority);
        if self.delay_ms > 0 {
            o = o.delay(Duration::from_millis(u64::from(self.delay_ms)));
        }
        if self.deadline > 0 {
            o = o.deadline(Timestamp(self.deadline));
        }
        if let Some(k) = self.key {
            o = o.key(key_bytes(k));
        }
        o
    }

    /// Bytes of its record (what a batch must fit in one segment).
    pub fn frame_len(&self) -> usize {
        record::HEADER_SIZE
            + if self.deadline > 0 { 8 } else { 0 }
            + self.key.map_or(0, |k| key_bytes(k).len())
            + self.len
    }
}

/// Whether `items`, enqueued together, can be accepted: a batch is one
/// write into one segment (all or none), so one larger than a segment's
/// room after its header is refused whole with `Error::TooLarge` (every
/// item counts, also one whose key is already remembered). A single message
/// is never judged here: its limit is the queue's `max_payload`.
pub fn fits(items: &[Item]) -> bool {
    let total: usize = items.iter().map(Item::frame_len).sum();
    items.len() <= 1 || total <= SEGMENT_SIZE as usize - header::SIZE
}

/// Enqueue `items` the way a user would: items with a deadline or a key
/// through `enqueue_with` (one) or `enqueue_batch_with` (several), and so
/// a batch with delays; otherwise one item with a delay through
/// `enqueue_delayed`, one without through `enqueue`, several through
/// `enqueue_batch`.
pub fn enqueue(q: &Queue, items: &[Item]) -> lanelog::Result<Vec<MessageId>> {
    let payloads: Vec<Vec<u8>> = items.iter().map(Item::payload).collect();
    let batch_delays = items.len() > 1 && items.iter().any(|i| i.delay_ms > 0);
    if batch_delays || items.iter().any(Item::has_options) {
        if items.len() == 1 {
            return q
                .enqueue_with(&payloads[0], &items[0].options())
                .map(|id| vec![id]);
        }
        let with: Vec<(&[u8], EnqueueOptions)> = payloads
            .iter()
            .zip(items)
            .map(|(p, it)| (p.as_slice(), it.options()))
            .collect();
        return q.enqueue_batch_with(&with);
    }
    if items.len() == 1 && items[0].delay_ms > 0 {
        let d = Duration::from_millis(u64::from(items[0].delay_ms));
        q.enqueue_delayed(&payloads[0], items[0].priority, d)
            .map(|id| vec![id])
    } else if items.len() == 1 {
        q.enqueue(&payloads[0], items[0].priority)
            .map(|id| vec![id])
    } else {
        let pairs: Vec<(&[u8], u8)> = payloads
            .iter()
            .zip(items)
            .map(|(p, it)| (p.as_slice(), it.priority))
            .collect();
        q.enqueue_batch(&pairs)
    }
}

/// Lease up to `n`: `dequeue` when `n` is 1, else `dequeue_up_to`.
pub fn dequeue(q: &Queue, n: usize) -> lanelog::Result<Vec<Delivery>> {
    if n == 1 {
        q.dequeue().map(|d| d.into_iter().collect())
    } else {
        q.dequeue_up_to(n)
    }
}

/// The time-driven options of a queue, as the model needs them: retention,
/// dead-letter retention, the dedup window and the key cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// `QueueOptions::retention` in ms; `None`: kept for ever.
    pub retention_ms: Option<u64>,
    /// `QueueOptions::dead_letter_retention` in ms; `None`: kept for ever.
    pub dead_retention_ms: Option<u64>,
    /// `QueueOptions::dedup_window` in ms.
    pub dedup_window_ms: u64,
    /// `QueueOptions::max_keys`.
    pub max_keys: usize,
}

impl Default for Timers {
    /// The queue's defaults: no retention, a 5-minute dedup window,
    /// 1,000,000 keys.
    fn default() -> Self {
        Timers {
            retention_ms: None,
            dead_retention_ms: None,
            dedup_window_ms: 300_000,
            max_keys: 1_000_000,
        }
    }
}

impl Timers {
    /// The granularity retention is enforced with: a 64th of the retention,
    /// between 1 ms and a minute (`QueueOptions::mark_granularity`).
    pub fn granularity(&self) -> u64 {
        self.retention_ms
            .map_or(60_000, |r| (r / 64).clamp(1, 60_000))
    }

    /// `opts` with these timers named.
    pub fn apply(&self, mut opts: QueueOptions) -> QueueOptions {
        if let Some(r) = self.retention_ms {
            opts = opts.retention(Duration::from_millis(r));
        }
        if let Some(r) = self.dead_retention_ms {
            opts = opts.dead_letter_retention(Duration::from_millis(r));
        }
        opts.dedup_window(Duration::from_millis(self.dedup_window_ms))
            .max_keys(self.max_keys)
    }
}

/// Longer than any run: what the oracles open crash images with, so that
/// reopening removes nothing by time and forgets no key (an override of the
/// attributes stored in the image).
pub const FOREVER: Duration = Duration::from_secs(10 * 365 * 86_400);

/// `opts` with retention, dead-letter retention and the dedup window set to
/// [`FOREVER`].
pub fn timeless(opts: QueueOptions) -> QueueOptions {
    opts.retention(FOREVER)
        .dead_letter_retention(FOREVER)
        .dedup_window(FOREVER)
}

/// A pacemaker: a message (of lane `priority`, 8 bytes) whose deadline is
/// 1 ms after `now`. Its enqueue wakes the queue's tender, which then naps
/// 1 ms at a time until a clock step makes the deadline pass; see the
/// module documentation.
pub fn pacemaker(tag: u64, priority: u8, now: u64) -> Item {
    Item {
        deadline: now + 1,
        ..Item::plain(tag, priority, 8)
    }
}

/// The lifetime counters the tender moves: (`deadline_missed_total`,
/// `expired_total`, `dead_expired_total`).
pub fn removal_totals(s: &Stats) -> (u64, u64, u64) {
    (
        s.deadline_missed_total,
        s.expired_total,
        s.dead_expired_total,
    )
}

/// How long a harness waits for the tender before it gives up: far above
/// its 1 ms nap after a pacemaker, and above its longest nap (1 s) with
/// room for a loaded machine.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10);
