//! Goal: dead letters, delayed messages and starved lanes never pin old
//! segments. Method: park a few long-lived messages early, push 20 segments
//! of traffic through, and check the segment count stays small and the
//! long-lived messages survive a reopen intact.

mod common;
use std::time::Duration;

use common::{both, small};

#[test]
fn long_lived_messages_do_not_pin_segments() {
    both(|place| {
        let q = place.open(small().max_deliveries(0)).unwrap();
        q.enqueue(b"poison", 5).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        q.dead_letter(d.receipt, "bad input").unwrap();
        q.enqueue_delayed(b"later", 5, Duration::from_secs(3600))
            .unwrap();
        let payload = vec![7u8; 4000];
        let mut max_segments = 0;
        for round in 0..5000 {
            let batch: Vec<(&[u8], u8)> = vec![(&payload[..], 9); 1];
            q.enqueue_batch(&batch).unwrap();
            let d = q.dequeue().unwrap().unwrap();
            assert_eq!(d.priority, 9, "round {round}");
            q.ack(d.receipt).unwrap();
            max_segments = max_segments.max(q.stats().segments);
        }
        // 5000 * 4 KiB = 20 segments of 1 MiB went through.
        assert!(
            max_segments <= 4,
            "{}: {max_segments} segments at peak",
            place.name()
        );
        q.close().unwrap();

        let q = place.open(small()).unwrap();
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "bad input");
        assert_eq!(q.stats().delayed, 1);
        assert!(q.stats().segments <= 4);
        q.redrive_all().unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.payload, b"poison");
        assert_eq!(d.attempt, 1);
    });
}
