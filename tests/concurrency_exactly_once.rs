//! Goal: with many producers and consumers and no lease expiry, every
//! message is delivered and acked exactly once. Method: 8 producers and 8
//! consumers on random lanes; consumers record every id they see.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanelog::{Durability, QueueOptions};

#[test]
fn eight_producers_eight_consumers_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueueOptions::new()
        .durability(Durability::Immediate)
        .segment_size(1 << 20)
        .open(dir.path())
        .unwrap();
    let per_producer = 500u32;
    let done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..8u32)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..per_producer {
                    let lane = ((t * 31 + i * 17) % 5) as u8;
                    let payload = (t * per_producer + i).to_le_bytes();
                    ids.push(u64::from(q.enqueue(&payload, lane).unwrap()));
                }
                ids
            })
        })
        .collect();
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let q = q.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    let batch = q.dequeue_batch(16, Duration::from_millis(20)).unwrap();
                    if batch.is_empty() && done.load(Ordering::SeqCst) {
                        return seen;
                    }
                    let receipts: Vec<_> = batch.iter().map(|d| d.receipt).collect();
                    seen.extend(batch.iter().map(|d| (u64::from(d.id), d.attempt)));
                    q.ack_batch(&receipts).unwrap();
                }
            })
        })
        .collect();
    let enqueued: HashSet<u64> = producers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    done.store(true, Ordering::SeqCst);
    let mut delivered = HashSet::new();
    for c in consumers {
        for (id, attempt) in c.join().unwrap() {
            assert_eq!(attempt, 1);
            assert!(delivered.insert(id), "id {id} delivered twice");
        }
    }
    assert_eq!(delivered, enqueued);
    let s = q.stats();
    assert_eq!(
        (s.ready, s.in_flight, s.acked_total),
        (0, 0, u64::from(8 * per_producer))
    );
}
