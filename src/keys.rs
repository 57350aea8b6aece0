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
//! Invariants:
//!
//! A. Every key in the map has exactly one entry in `order` sharing the
//!    map's allocation of the key (its *current* entry); any other entry for
//!    it holds an allocation of its own and is stale (left by a newer
//!    admission replacing an older one, below), skipped and dropped when it
//!    reaches the front. `order` is in insertion order, which is time order
//!    while the clock does not step back (a step back only makes a key live
//!    longer, never shorter).
//! B. Of the records carrying one key, the one with the highest id is the
//!    admission the queue remembers: an enqueue is admitted with a key only
//!    once the key's earlier admission was forgotten (its window passed),
//!    and a relocated copy keeps its original's id. So replay, which meets
//!    a key's records in any order (checkpoint, then segments, copies
//!    last), keeps the highest id.

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

    /// Remember `key` as enqueued with `id` at `at_ms`, unless it is
    /// remembered with this id or a higher one (invariant B: a later
    /// admission replaces an earlier one, a copy or a repeat changes
    /// nothing).
    pub fn insert(&mut self, key: &[u8], id: u64, at_ms: u64) {
        if self.map.get(key).is_some_and(|&(old, _)| old >= id) {
            return;
        }
        // A fresh allocation: an old entry in `order` goes stale
        // (invariant A).
        self.map.remove(key);
        let k: Arc<[u8]> = Arc::from(key);
        self.map.insert(k.clone(), (id, at_ms));
        self.order.push_back((at_ms, k));
    }

    /// The id and time of `k` (an entry of `order`) if it is its key's
    /// current entry (invariant A).
    fn current(&self, k: &Arc<[u8]>) -> Option<(u64, u64)> {
        let (mk, &v) = self.map.get_key_value(&k[..])?;
        Arc::ptr_eq(mk, k).then_some(v)
    }

    /// Forget keys first seen at or before `cutoff_ms`.
    pub fn expire(&mut self, cutoff_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if *at > cutoff_ms {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                if self.current(&k).is_some() {
                    self.map.remove(&k);
                }
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
            let (id, at) = self.current(k)?;
            Some((id, at, &k[..]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_remembered_until_the_window_passes() {
        let mut k = Keys::default();
        k.insert(b"a", 1, 100);
        k.insert(b"a", 1, 100);
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

    #[test]
    fn a_later_admission_replaces_an_earlier_one_in_any_order() {
        // Replay meets a key's first admission (past its window), its second
        // and a relocated copy of the first: the second is remembered.
        let mut k = Keys::default();
        k.insert(b"a", 1, 100);
        k.insert(b"b", 2, 150);
        k.insert(b"a", 5, 400);
        k.insert(b"a", 1, 100);
        assert_eq!((k.get(b"a"), k.len()), (Some(5), 2));
        assert_eq!(
            k.iter().collect::<Vec<_>>(),
            vec![(2, 150, &b"b"[..]), (5, 400, &b"a"[..])]
        );
        // The stale entry of the first admission forgets nothing.
        k.expire(300);
        assert_eq!((k.get(b"a"), k.get(b"b"), k.len()), (Some(5), None, 1));
        k.expire(400);
        assert_eq!((k.get(b"a"), k.len()), (None, 0));
        // Replaced at the same time (a clock stepped back): still one.
        k.insert(b"c", 7, 500);
        k.insert(b"c", 8, 500);
        assert_eq!(k.iter().collect::<Vec<_>>(), vec![(8, 500, &b"c"[..])]);
    }
}
