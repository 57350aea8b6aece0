//! Remembered idempotency keys: which id a key's first enqueue returned,
//! for `dedup_window` after it.
//!
//! Keys are chosen by callers, so the map hashes with std's SipHash (keyed
//! per process) rather than the fast Fx hash the id maps use. Each key is
//! stored once, shared by the map and the expiry queue.
//!
//! Memory per remembered key: the map entry (a 16-byte fat pointer, the id
//! and the time, plus the table's control byte at 7/8 load), the queue
//! entry (the time and another fat pointer) and the shared allocation (a
//! 16-byte header and the key): about 90 bytes plus the key's length.
//!
//! Invariant: every key in the map has exactly one entry in `order`, and
//! `order` is in insertion order, which is time order while the clock does
//! not step back (a step back only makes a key live longer, never shorter).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    map: HashMap<Arc<[u8]>, (u64, u64)>,
    order: VecDeque<(u64, Arc<[u8]>)>,
}

impl Keys {
    /// The id `key` was first enqueued as, if it is remembered.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(key).map(|&(id, _)| id)
    }

    /// Remember `key` as enqueued with `id` at `at_ms`, unless it already
    /// is (the first enqueue wins).
    pub fn insert(&mut self, key: &[u8], id: u64, at_ms: u64) {
        if self.map.contains_key(key) {
            return;
        }
        let k: Arc<[u8]> = Arc::from(key);
        self.map.insert(k.clone(), (id, at_ms));
        self.order.push_back((at_ms, k));
    }

    /// Forget keys first seen at or before `cutoff_ms`.
    pub fn expire(&mut self, cutoff_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if *at > cutoff_ms {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.map.remove(&k);
            }
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every remembered key as (id, first seen, key), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &[u8])> + '_ {
        self.order.iter().filter_map(|(_, k)| {
            let &(id, at) = self.map.get(k)?;
            Some((id, at, &k[..]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_enqueue_wins_until_the_window_passes() {
        let mut k = Keys::default();
        k.insert(b"a", 1, 100);
        k.insert(b"a", 2, 150);
        k.insert(b"b", 3, 200);
        assert_eq!((k.get(b"a"), k.get(b"b"), k.len()), (Some(1), Some(3), 2));
        k.expire(99);
        assert_eq!(k.len(), 2);
        k.expire(100);
        assert_eq!((k.get(b"a"), k.get(b"b")), (None, Some(3)));
        k.insert(b"a", 4, 300);
        assert_eq!(k.get(b"a"), Some(4));
        assert_eq!(
            k.iter().collect::<Vec<_>>(),
            vec![(3, 200, &b"b"[..]), (4, 300, &b"a"[..])]
        );
    }
}
