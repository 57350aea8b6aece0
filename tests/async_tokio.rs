//! Goal: async consumers under tokio get every message exactly once even
//! when their futures are cancelled mid-wait, and wake for enqueues and for
//! maturing delays. Method: consumers race `dequeue_async` against short
//! timeouts (cancelling it again and again) while a producer trickles in
//! messages; then count deliveries and check nothing is left leased.
#![cfg(feature = "tokio")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waits_lose_nothing() {
    let (_dir, q) = common::temp_queue();
    let total = 300u32;
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let q = q.clone();
        consumers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut idle = 0;
            while idle < 100 {
                match tokio::time::timeout(Duration::from_millis(3), q.dequeue_async()).await {
                    Ok(d) => {
                        let d = d.unwrap();
                        seen.push(u64::from(d.id));
                        q.ack(d.receipt).unwrap();
                        idle = 0;
                    }
                    Err(_cancelled) => idle += 1,
                }
            }
            seen
        }));
    }
    for i in 0..total {
        q.enqueue(&i.to_le_bytes(), (i % 3) as u8).unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut all = HashSet::new();
    for c in consumers {
        for id in c.await.unwrap() {
            assert!(all.insert(id), "delivered twice: {id}");
        }
    }
    assert_eq!(all.len(), total as usize);
    let s = q.stats();
    assert_eq!(
        (s.ready, s.in_flight, s.acked_total),
        (0, 0, u64::from(total))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_waiter_wakes_for_a_maturing_delay() {
    let (_dir, q) = common::temp_queue();
    q.enqueue_delayed(b"later", 0, Duration::from_millis(30))
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(60), q.dequeue_async())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.payload, b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_batch_takes_what_is_ready() {
    let (_dir, q) = common::temp_queue();
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.dequeue_batch_async(8).await.unwrap().len() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.enqueue_batch(&[(&b"a"[..], 0), (&b"b"[..], 0), (&b"c"[..], 0)])
        .unwrap();
    assert!((1..=3).contains(&waiter.await.unwrap()));
}
