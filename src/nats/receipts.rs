//! The receipt table: lanelog's `Copy` [`Receipt`] on one side, the
//! JetStream delivery it stands for (the ack subject and the delivery
//! count) on the other.
//!
//! Invariants:
//! - A receipt is in the table from its delivery until it is settled,
//!   until a newer delivery of the same message reaches this handle, or
//!   until its lease has been over for longer than one more lease (then
//!   the server has redelivered it or will). That bounds the table by the
//!   deliveries in flight.
//! - A receipt number is issued once per handle; a receipt missing from
//!   the table but issued here is stale, one never issued is unknown.
//!
//! Only this process's deliveries are in the table: a delivery that
//! another process took over is not fenced here (JetStream accepts late
//! acks); `complete`'s create-if-absent result is the fence that keeps a
//! job from counting twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{Error, Receipt, Result};

/// One delivery held by this handle.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The message's lanelog id.
    pub id: u64,
    /// Its jobs stream sequence (where a dead letter reads the payload).
    pub seq: u64,
    /// The subject an ack, nak, in-progress or term is published to.
    pub reply: String,
    /// The delivery count the server reported, less an early delivery.
    pub attempt: u32,
    /// When the server will redeliver it unless told otherwise.
    pub lease_end: Instant,
}

#[derive(Debug)]
pub(crate) struct Table {
    held: HashMap<u64, Held>,
    /// Message id → the receipt number of its current delivery here.
    current: HashMap<u64, u64>,
    /// Receipt numbers issued here are `first + 1 ..= next`.
    first: u64,
    next: u64,
}

impl Table {
    /// A table issuing receipt numbers after `first`. Handles start at
    /// different numbers, so a receipt passed to a handle that did not
    /// issue it is very likely `Unknown` there rather than naming one of
    /// its own deliveries.
    pub(crate) fn new(first: u64) -> Table {
        Table {
            held: HashMap::new(),
            current: HashMap::new(),
            first,
            next: first,
        }
    }

    /// Hold a new delivery; a previous delivery of the same message held
    /// here becomes stale.
    pub(crate) fn insert(&mut self, held: Held) -> Receipt {
        self.next += 1;
        let lease = self.next;
        if let Some(old) = self.current.insert(held.id, lease) {
            self.held.remove(&old);
        }
        let id = held.id;
        self.held.insert(lease, held);
        Receipt { id, lease }
    }

    /// The delivery `receipt` names.
    ///
    /// # Errors
    /// `StaleReceipt` for a receipt issued here and no longer current,
    /// `Unknown` for one never issued here.
    pub(crate) fn get(&self, receipt: Receipt) -> Result<&Held> {
        match self.held.get(&receipt.lease) {
            Some(h) if h.id == receipt.id => Ok(h),
            Some(_) => Err(Error::Unknown),
            None if receipt.lease > self.first && receipt.lease <= self.next => {
                Err(Error::StaleReceipt)
            }
            None => Err(Error::Unknown),
        }
    }

    pub(crate) fn get_mut(&mut self, receipt: Receipt) -> Result<&mut Held> {
        self.get(receipt)?;
        Ok(self
            .held
            .get_mut(&receipt.lease)
            .expect("get found it under the same lock"))
    }

    /// Forget a delivery (settled).
    pub(crate) fn remove(&mut self, receipt: Receipt) -> Option<Held> {
        let held = self.held.remove(&receipt.lease)?;
        if self.current.get(&held.id) == Some(&receipt.lease) {
            self.current.remove(&held.id);
        }
        Some(held)
    }

    /// Whether message `id` is held here, leased.
    pub(crate) fn holds(&self, id: u64, now: Instant) -> Option<u32> {
        let lease = self.current.get(&id)?;
        let h = self.held.get(lease)?;
        (h.lease_end > now).then_some(h.attempt)
    }

    /// Drop deliveries whose lease ended more than `grace` ago.
    pub(crate) fn sweep(&mut self, now: Instant, grace: Duration) {
        let current = &mut self.current;
        self.held.retain(|lease, h| {
            let keep = h.lease_end + grace > now;
            if !keep && current.get(&h.id) == Some(lease) {
                current.remove(&h.id);
            }
            keep
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: u64, lease_end: Instant) -> Held {
        Held {
            id,
            seq: id,
            reply: format!("$JS.ACK.{id}"),
            attempt: 1,
            lease_end,
        }
    }

    #[test]
    fn a_newer_delivery_makes_the_older_receipt_stale() {
        let now = Instant::now();
        let mut t = Table::new(1 << 40);
        let first = t.insert(held(7, now + Duration::from_secs(1)));
        let second = t.insert(held(7, now + Duration::from_secs(1)));
        assert!(matches!(t.get(first), Err(Error::StaleReceipt)));
        assert_eq!(t.get(second).unwrap().id, 7);
        assert!(t.remove(second).is_some());
        assert!(matches!(t.get(second), Err(Error::StaleReceipt)));
        assert!(matches!(
            t.get(Receipt { id: 7, lease: 99 }),
            Err(Error::Unknown)
        ));
        assert!(matches!(
            t.get(Receipt {
                id: 7,
                lease: (1 << 40) + 99
            }),
            Err(Error::Unknown)
        ));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn sweep_bounds_the_table() {
        let now = Instant::now();
        let mut t = Table::new(1 << 40);
        let r = t.insert(held(1, now));
        t.insert(held(2, now + Duration::from_secs(60)));
        t.sweep(now + Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(t.len(), 1);
        assert!(matches!(t.get(r), Err(Error::StaleReceipt)));
        assert_eq!(t.holds(2, now), Some(1));
        assert_eq!(t.holds(1, now), None);
    }
}
