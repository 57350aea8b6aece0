//! Goal: blocked consumers wake when work arrives, not by polling, and a
//! batch fills the way inference servers fill one. Method: park consumers
//! in long waits, enqueue from another thread, and check they return with
//! the message long before their wait ends (wake-up latency is printed).

mod common;

use std::time::{Duration, Instant};

use lanelog::DequeueOptions;

#[test]
fn long_poll_wakes_on_enqueue_from_another_thread() {
    let (_dir, q) = common::temp_queue();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let d = q.dequeue_timeout(Duration::from_secs(120)).unwrap();
            (d, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let sent = Instant::now();
    q.enqueue(b"wake", 0).unwrap();
    let (d, woke) = consumer.join().unwrap();
    assert_eq!(d.unwrap().payload, b"wake");
    println!("long-poll wake-up latency: {:?}", woke.duration_since(sent));
}

#[test]
fn many_waiters_each_get_one_message() {
    let (_dir, q) = common::temp_queue();
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || q.dequeue_timeout(Duration::from_secs(120)).unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..8u8 {
        q.enqueue(&[i], 0).unwrap();
    }
    let mut got: Vec<u8> = consumers
        .into_iter()
        .map(|c| c.join().unwrap().unwrap().payload[0])
        .collect();
    got.sort();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
}

#[test]
fn batch_returns_when_full_or_after_linger() {
    let (_dir, q) = common::temp_queue();
    assert!(q
        .dequeue_batch(4, Duration::from_millis(20))
        .unwrap()
        .is_empty());
    for i in 0..3u8 {
        q.enqueue(&[i], 0).unwrap();
    }
    // Three ready, four wanted: returns the three after the linger.
    assert_eq!(
        q.dequeue_batch(4, Duration::from_millis(20)).unwrap().len(),
        3
    );
    // A producer completes the batch while the consumer lingers.
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..4u8 {
                std::thread::sleep(Duration::from_millis(5));
                q.enqueue(&[i], 0).unwrap();
            }
        })
    };
    let batch = q
        .dequeue_with(
            &DequeueOptions::new()
                .max(4)
                .wait(Duration::from_secs(120))
                .linger(Duration::from_secs(120)),
        )
        .unwrap();
    assert_eq!(batch.len(), 4, "returned as soon as the batch was full");
    producer.join().unwrap();
    assert!(matches!(
        q.dequeue_batch(0, Duration::ZERO),
        Err(lanelog::Error::InvalidArgument(_))
    ));
}

#[test]
fn a_waiter_wakes_when_a_lease_expires() {
    let (_dir, q) = common::temp_queue();
    q.enqueue(b"x", 0).unwrap();
    let first = q
        .dequeue_with(&DequeueOptions::new().visibility(Duration::from_millis(30)))
        .unwrap();
    assert_eq!(first.len(), 1);
    let again = q
        .dequeue_timeout(Duration::from_secs(120))
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 2);
}

#[test]
fn wake_waiters_returns_blocked_consumers_with_what_they_have() {
    let (_dir, q) = common::temp_queue();
    // One consumer waits for a first message, one lingers with one in hand.
    let idle = {
        let q = q.clone();
        std::thread::spawn(move || q.dequeue_timeout(Duration::from_secs(3600)).unwrap())
    };
    q.enqueue(b"only", 0).unwrap();
    let lingering = {
        let q = q.clone();
        std::thread::spawn(move || {
            q.dequeue_with(
                &DequeueOptions::new()
                    .max(64)
                    .wait(Duration::from_secs(3600))
                    .linger(Duration::from_secs(3600)),
            )
            .unwrap()
        })
    };
    // Neither returns on its own for an hour; keep waking until both have
    // (a consumer that was not asleep yet when woken goes to sleep after).
    while !(idle.is_finished() && lingering.is_finished()) {
        q.wake_waiters();
        std::thread::sleep(Duration::from_millis(5));
    }
    let got_idle = idle.join().unwrap();
    let got_lingering = lingering.join().unwrap();
    // The one message went to exactly one of them.
    let payloads: Vec<Vec<u8>> = got_idle
        .into_iter()
        .chain(got_lingering)
        .map(|d| d.payload)
        .collect();
    assert_eq!(payloads, vec![b"only".to_vec()]);
    // A later dequeue is not affected by the earlier wake-ups.
    q.enqueue(b"next", 0).unwrap();
    let d = q.dequeue_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(d.payload, b"next");
}

/// Ping-pong between a producer and a consumer blocked in
/// `dequeue_timeout`: every message wakes the consumer, whether it arrives
/// while the consumer spins before parking, just as it stops spinning, or
/// once it sleeps. A lost wake-up shows as a `None` after the long wait.
#[test]
fn no_wake_up_is_lost_between_spinning_and_parking() {
    let (_dir, q) = common::temp_queue();
    let (arrived, next) = std::sync::mpsc::channel::<()>();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..3000u32 {
                let d = q
                    .dequeue_timeout(std::time::Duration::from_secs(30))
                    .expect("dequeue")
                    .unwrap_or_else(|| panic!("message {i} never woke the consumer"));
                q.ack(d.receipt).expect("ack");
                arrived.send(()).expect("send");
            }
        })
    };
    for i in 0..3000u32 {
        // Vary the moment the message arrives relative to the spin.
        if i % 3 == 1 {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(i % 7) * 20));
        }
        q.enqueue(&i.to_le_bytes(), 0).expect("enqueue");
        next.recv().expect("consumer alive");
    }
    consumer.join().expect("consumer");
}
