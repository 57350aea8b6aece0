//! What the workloads of the battery, the proptest and the fuzzers share:
//! the clock's start, the queue options, self-checking payloads, and one
//! call that enqueues one message, a delayed one, or a batch.
//!
//! Each harness keeps its own way of choosing operations (seeded weights in
//! the battery, proptest strategies, fuzzer bytes); they all describe a
//! message to enqueue as an [`Item`] and run it through [`enqueue`], so the
//! three agree on what a call with those items means.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lanelog::codec::{header, record};
use lanelog::{Delivery, Durability, ManualClock, MessageId, Queue, QueueOptions};

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

/// A message to enqueue (its id is known only once the enqueue returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub tag: u64,
    pub priority: u8,
    pub len: usize,
    /// 0: ready at once.
    pub delay_ms: u32,
}

impl Item {
    /// Its payload: [`payload`] of its tag and length.
    pub fn payload(&self) -> Vec<u8> {
        payload(self.tag, self.len)
    }
}

/// Whether `items`, enqueued together, can be accepted: a batch is one
/// write into one segment (all or none), so one larger than a segment's
/// room after its header is refused whole with `Error::TooLarge`. A single
/// message is never judged here: its limit is the queue's `max_payload`.
pub fn fits(items: &[Item]) -> bool {
    let total: usize = items.iter().map(|it| record::HEADER_SIZE + it.len).sum();
    items.len() <= 1 || total <= SEGMENT_SIZE as usize - header::SIZE
}

/// Enqueue `items` the way a user would: one item with a delay through
/// `enqueue_delayed`, one without through `enqueue`, several through
/// `enqueue_batch` (delays ignored).
pub fn enqueue(q: &Queue, items: &[Item]) -> lanelog::Result<Vec<MessageId>> {
    let payloads: Vec<Vec<u8>> = items.iter().map(Item::payload).collect();
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
