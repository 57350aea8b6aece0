//! Goal: messages survive a clean reopen and a process crash, in order.
//! Method: enqueue, close or drop, reopen, and compare every delivery.

mod common;
use common::{both, small};
use lanelog::Error;

#[test]
fn round_trip_across_reopen() {
    both(|place| {
        let q = place.open(small()).unwrap();
        let mut ids = Vec::new();
        for i in 0..100u32 {
            ids.push(q.enqueue(&i.to_le_bytes(), 0).unwrap());
        }
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!(d.id, ids[0]);
        assert_eq!(d.attempt, 1);
        q.ack(d.receipt).unwrap();
        q.close().unwrap();

        let q = place.open(small()).unwrap();
        let s = q.stats();
        assert_eq!(s.ready, 99, "{}", place.name());
        assert_eq!(s.acked_total, 1);
        for (i, id) in ids.iter().enumerate().skip(1) {
            let d = q.dequeue().unwrap().unwrap();
            assert_eq!(d.id, *id);
            assert_eq!(d.payload, (i as u32).to_le_bytes());
            q.ack(d.receipt).unwrap();
        }
        assert!(q.dequeue().unwrap().is_none());
        let next = q.enqueue(b"x", 0).unwrap();
        assert!(u64::from(next) > u64::from(ids[99]), "ids never reused");
    });
}

#[test]
fn in_flight_messages_are_ready_again_after_reopen() {
    both(|place| {
        let q = place.open(small()).unwrap();
        q.enqueue(b"a", 0).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        drop(q);
        let q = place.open(small()).unwrap();
        assert_eq!(q.recovery_report().in_flight_released, 1);
        let again = q.dequeue().unwrap().unwrap();
        assert_eq!(again.id, d.id);
        assert_eq!(again.attempt, 2);
        assert!(matches!(q.ack(d.receipt), Err(Error::StaleReceipt)));
        q.ack(again.receipt).unwrap();
    });
}

#[test]
fn second_open_is_locked() {
    both(|place| {
        let q = place.open(small()).unwrap();
        assert!(matches!(place.open(small()), Err(Error::Locked)));
        q.close().unwrap();
        place.open(small()).unwrap();
    });
}

#[test]
fn zero_length_payloads_round_trip() {
    both(|place| {
        let q = place.open(small()).unwrap();
        let id = q.enqueue(b"", 3).unwrap();
        q.enqueue_batch(&[(&b""[..], 0), (&b"x"[..], 0)]).unwrap();
        drop(q);
        let q = place.open(small()).unwrap();
        let d = q.dequeue().unwrap().unwrap();
        assert_eq!((d.id, d.payload.len(), d.priority), (id, 0, 3));
        assert_eq!(q.dequeue().unwrap().unwrap().payload, b"");
        assert_eq!(q.dequeue().unwrap().unwrap().payload, b"x");
    });
}
