//! Goal: higher priority first, enqueue order within a priority, in both
//! scheduling modes, before and after a reopen. Method: enqueue a shuffled
//! mix of priorities and compare the delivery order with a sorted model.

mod common;
use common::{both, small};
use lanelog::{weighted_wait_bound, Scheduling};

fn mix() -> Vec<(u32, u8)> {
    // A fixed pseudo-random mix of 600 messages over 6 priorities.
    let mut x = 0x9E37_79B9u32;
    (0..600u32)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (i, [0u8, 1, 7, 100, 254, 255][(x % 6) as usize])
        })
        .collect()
}

#[test]
fn strict_order_across_and_within_lanes_survives_reopen() {
    both(|place| {
        let q = place.open(small()).unwrap();
        let items = mix();
        for (i, p) in &items[..300] {
            q.enqueue(&i.to_le_bytes(), *p).unwrap();
        }
        let batch: Vec<([u8; 4], u8)> = items[300..]
            .iter()
            .map(|(i, p)| (i.to_le_bytes(), *p))
            .collect();
        let refs: Vec<(&[u8], u8)> = batch.iter().map(|(b, p)| (&b[..], *p)).collect();
        q.enqueue_batch(&refs).unwrap();
        let mut expected = items.clone();
        expected.sort_by_key(|&(i, p)| (std::cmp::Reverse(p), i));
        // Half now, half after a reopen.
        let mut got = Vec::new();
        for _ in 0..300 {
            let d = q.dequeue().unwrap().unwrap();
            got.push((
                u32::from_le_bytes(d.payload[..4].try_into().unwrap()),
                d.priority,
            ));
            q.ack(d.receipt).unwrap();
        }
        q.close().unwrap();
        let q = place.open(small()).unwrap();
        assert_eq!(q.stats().ready, 300);
        while let Some(d) = q.dequeue().unwrap() {
            got.push((
                u32::from_le_bytes(d.payload[..4].try_into().unwrap()),
                d.priority,
            ));
            q.ack(d.receipt).unwrap();
        }
        assert_eq!(got, expected, "{}", place.name());
    });
}

#[test]
fn weighted_mode_serves_every_lane_within_the_bound() {
    both(|place| {
        let q = place
            .open(small().scheduling(Scheduling::Weighted))
            .unwrap();
        for i in 0..200u32 {
            q.enqueue(&i.to_le_bytes(), 9).unwrap();
            q.enqueue(&i.to_le_bytes(), 0).unwrap();
        }
        let bound = weighted_wait_bound(0, &[0, 9]);
        let mut since_low = 0;
        let mut last_in_lane = [None::<u32>; 256];
        while let Some(d) = q.dequeue().unwrap() {
            let i = u32::from_le_bytes(d.payload[..4].try_into().unwrap());
            let lane = usize::from(d.priority);
            assert!(
                last_in_lane[lane].is_none_or(|l| l < i),
                "FIFO within a lane"
            );
            last_in_lane[lane] = Some(i);
            if d.priority == 0 {
                since_low = 0;
            } else if q.stats().ready_per_lane.iter().any(|l| l.priority == 0) {
                since_low += 1;
                assert!(since_low <= bound, "low lane waited {since_low} > {bound}");
            }
            q.ack(d.receipt).unwrap();
        }
    });
}
