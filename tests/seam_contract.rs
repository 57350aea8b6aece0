//! The queue seam's contract, one suite run on every implementation: the
//! embedded `Queue` and (feature `nats`) JetStream on a `nats-server` this
//! test starts on loopback. Each scenario is a generic function over
//! `DeadLetterAdmin`; the macro at the end runs each on each backend, so
//! a backend cannot pass a weaker version of a scenario.
//!
//! Times are short but with wide margins: a lease of `LEASE`, waits of
//! several leases, never a timed assertion of speed.

use std::time::{Duration, Instant};

use lanelog::{DeadLetterAdmin, DequeueOptions, EnqueueOptions, Error, MessageStatus};

/// The lease every backend is opened with.
const LEASE: Duration = Duration::from_millis(1_000);
/// Deliveries before a dead letter.
const MAX_DELIVERIES: u32 = 2;
/// Longest any scenario waits for a message it expects.
const PATIENCE: Duration = Duration::from_secs(10);

fn take<Q: DeadLetterAdmin>(q: &Q, max: usize) -> Vec<lanelog::Delivery> {
    q.dequeue_with(&DequeueOptions::new().max(max))
        .expect("dequeue")
}

fn take_waiting<Q: DeadLetterAdmin>(q: &Q, wait: Duration) -> Option<lanelog::Delivery> {
    q.dequeue_with(&DequeueOptions::new().wait(wait))
        .expect("dequeue")
        .pop()
}

fn opts(priority: u8) -> EnqueueOptions {
    EnqueueOptions::new().priority(priority)
}

/// Higher lanes first; within a lane, enqueue order.
fn order_by_lane<Q: DeadLetterAdmin>(q: &Q) {
    let items = [
        (&b"low-1"[..], opts(0)),
        (&b"mid-1"[..], opts(100)),
        (&b"high"[..], opts(200)),
        (&b"mid-2"[..], opts(100)),
        (&b"low-2"[..], opts(0)),
    ];
    let ids = q.enqueue_batch_with(&items).expect("enqueue");
    assert_eq!(ids.len(), 5);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let d = take(q, 1).pop().expect("a message per take");
        seen.push(String::from_utf8(d.payload.clone()).unwrap());
        q.ack_batch(&[d.receipt]).expect("ack");
    }
    assert_eq!(seen, ["high", "mid-1", "mid-2", "low-1", "low-2"]);
    assert!(take(q, 10).is_empty(), "acked messages never come back");
}

/// An unsettled delivery comes back after its lease with its attempt
/// raised; the old receipt is stale.
fn lease_expiry_redelivers<Q: DeadLetterAdmin>(q: &Q) {
    let id = q.enqueue_with(b"job", &opts(5)).expect("enqueue");
    let first = take(q, 1).pop().expect("delivered");
    assert_eq!((first.id, first.attempt, first.priority), (id, 1, 5));
    assert!(take(q, 1).is_empty(), "leased, so not delivered twice");
    let second = take_waiting(q, PATIENCE).expect("redelivered after the lease");
    assert_eq!((second.id, second.attempt), (id, 2));
    assert!(matches!(
        q.ack_batch(&[first.receipt]),
        Err(Error::StaleReceipt)
    ));
    q.ack_batch(&[second.receipt])
        .expect("the current receipt acks");
    assert_eq!(q.status(id).expect("status"), MessageStatus::Gone);
}

/// Extending a lease keeps the message from coming back past the first
/// lease's end.
fn extend_lease_holds<Q: DeadLetterAdmin>(q: &Q) {
    q.enqueue_with(b"long job", &opts(0)).expect("enqueue");
    let d = take(q, 1).pop().expect("delivered");
    let start = Instant::now();
    for _ in 0..3 {
        std::thread::sleep(LEASE / 2);
        q.extend_lease(d.receipt, LEASE).expect("extend");
    }
    assert!(start.elapsed() > LEASE);
    assert!(take(q, 1).is_empty(), "still leased");
    q.ack_batch(&[d.receipt]).expect("ack");
}

/// A nack with a delay: not ready before it, ready after, attempt raised.
fn nack_delay<Q: DeadLetterAdmin>(q: &Q) {
    let id = q.enqueue_with(b"retry me", &opts(0)).expect("enqueue");
    let d = take(q, 1).pop().expect("delivered");
    let delay = Duration::from_millis(700);
    let nacked = Instant::now();
    q.nack(d.receipt, delay).expect("nack");
    assert!(take(q, 1).is_empty(), "delayed");
    let again = take_waiting(q, PATIENCE).expect("back after the delay");
    assert!(nacked.elapsed() >= delay - Duration::from_millis(50));
    assert_eq!((again.id, again.attempt), (id, 2));
    q.ack_batch(&[again.receipt]).expect("ack");
    // A nack without delay: ready at once.
    let id = q.enqueue_with(b"retry now", &opts(0)).expect("enqueue");
    let d = take(q, 1).pop().expect("delivered");
    q.nack(d.receipt, Duration::ZERO).expect("nack");
    let again = take_waiting(q, PATIENCE).expect("ready at once");
    assert_eq!((again.id, again.attempt), (id, 2));
    q.ack_batch(&[again.receipt]).expect("ack");
}

/// Past max_deliveries a message becomes a dead letter; redrive brings it
/// back with its attempts reset; dead_letter parks with a reason.
fn max_deliveries_then_redrive<Q: DeadLetterAdmin>(q: &Q) {
    let id = q.enqueue_with(b"poison", &opts(3)).expect("enqueue");
    for attempt in 1..=MAX_DELIVERIES {
        let d = take_waiting(q, PATIENCE).expect("delivered");
        assert_eq!((d.id, d.attempt), (id, attempt));
        q.nack(d.receipt, Duration::ZERO).expect("nack");
    }
    assert!(
        take(q, 1).is_empty(),
        "past max_deliveries it is not delivered"
    );
    let dead = q.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].id, dead[0].priority), (id, 3));
    assert!(dead[0].reason.contains("max_deliveries"), "{dead:?}");
    assert!(matches!(
        q.status(id).expect("status"),
        MessageStatus::Dead { .. }
    ));

    q.redrive(id).expect("redrive");
    assert!(q.dead_letters().expect("dead letters").is_empty());
    let d = take_waiting(q, PATIENCE).expect("redriven");
    assert_eq!((d.id, d.attempt, &d.payload[..]), (id, 1, &b"poison"[..]));
    q.dead_letter(d.receipt, "bad input").expect("dead letter");
    assert_eq!(
        q.status(id).expect("status"),
        MessageStatus::Dead {
            reason: "bad input".into()
        }
    );
    assert_eq!(q.redrive_all().expect("redrive all"), 1);
    let d = take_waiting(q, PATIENCE).expect("redriven again");
    assert_eq!(d.id, id);
    q.ack_batch(&[d.receipt]).expect("ack");
    assert!(matches!(q.redrive(id), Err(Error::Unknown)));
}

/// A key seen before returns the first id and adds nothing, also within a
/// batch; `key_id` answers without adding.
fn keys_deduplicate<Q: DeadLetterAdmin>(q: &Q) {
    let k = EnqueueOptions::new().key("order-17");
    let first = q.enqueue_with(b"a", &k).expect("enqueue");
    assert_eq!(q.enqueue_with(b"a", &k).expect("again"), first);
    let ids = q
        .enqueue_batch_with(&[
            (&b"b"[..], EnqueueOptions::new().key("order-18")),
            (&b"b"[..], EnqueueOptions::new().key("order-18")),
            (&b"a"[..], k.clone()),
        ])
        .expect("batch");
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], first);
    assert_eq!(q.key_id("order-17").expect("key_id"), Some(first));
    assert_eq!(q.key_id("order-18").expect("key_id"), Some(ids[0]));
    assert_eq!(q.key_id("order-19").expect("key_id"), None);
    let all = take(q, 10);
    assert_eq!(all.len(), 2, "one message per key");
    q.ack_batch(&all.iter().map(|d| d.receipt).collect::<Vec<_>>())
        .expect("ack");
    assert!(matches!(
        q.enqueue_with(b"x", &EnqueueOptions::new().key("")),
        Err(Error::InvalidArgument(_))
    ));
}

/// `complete` stores the result and finishes the message, once: a stale
/// delivery's complete is refused and the first result stays.
fn complete_once<Q: DeadLetterAdmin>(q: &Q) {
    let id = q.enqueue_with(b"input", &opts(0)).expect("enqueue");
    let first = take(q, 1).pop().expect("delivered");
    let second = take_waiting(q, PATIENCE).expect("redelivered after the lease");
    assert_eq!(second.id, id);
    q.complete(second.receipt, b"result A").expect("complete");
    assert!(matches!(
        q.complete(first.receipt, b"result B"),
        Err(Error::StaleReceipt)
    ));
    assert_eq!(q.result(id).expect("result"), Some(b"result A".to_vec()));
    assert_eq!(q.status(id).expect("status"), MessageStatus::Completed);
    assert!(take(q, 1).is_empty());
    q.sync().expect("sync");
}

/// A delayed enqueue is invisible until its delay passes, then delivered
/// as its first attempt.
fn delayed_enqueue<Q: DeadLetterAdmin>(q: &Q) {
    let delay = Duration::from_millis(800);
    let start = Instant::now();
    let id = q
        .enqueue_with(b"later", &opts(0).delay(delay))
        .expect("enqueue");
    assert!(take(q, 1).is_empty(), "not before its delay");
    assert!(matches!(
        q.status(id).expect("status"),
        MessageStatus::Delayed { .. }
    ));
    let d = take_waiting(q, PATIENCE).expect("after its delay");
    assert!(start.elapsed() >= delay - Duration::from_millis(50));
    assert_eq!((d.id, d.attempt), (id, 1));
    q.ack_batch(&[d.receipt]).expect("ack");
}

/// Two consumer threads on clones of one handle share the work: every
/// message is delivered to exactly one of them (no lease runs out here).
fn consumers_share_the_work<Q: DeadLetterAdmin>(q: &Q) {
    const N: usize = 200;
    let items: Vec<(Vec<u8>, EnqueueOptions)> = (0..N)
        .map(|i| (format!("m{i}").into_bytes(), opts((i % 3) as u8 * 100)))
        .collect();
    let mut ids = q.enqueue_batch_with(&items).expect("enqueue");
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let start = Instant::now();
                while start.elapsed() < PATIENCE {
                    let batch = q
                        .dequeue_with(
                            &DequeueOptions::new()
                                .max(8)
                                .wait(Duration::from_millis(300)),
                        )
                        .expect("dequeue");
                    if batch.is_empty() {
                        break;
                    }
                    q.ack_batch(&batch.iter().map(|d| d.receipt).collect::<Vec<_>>())
                        .expect("ack");
                    got.extend(batch.iter().map(|d| (d.id, d.attempt)));
                }
                got
            })
        })
        .collect();
    let seen: Vec<_> = consumers
        .into_iter()
        .flat_map(|t| t.join().expect("consumer thread"))
        .collect();
    assert!(
        seen.iter().all(|(_, attempt)| *attempt == 1),
        "no redelivery"
    );
    let mut seen: Vec<_> = seen.into_iter().map(|(id, _)| id).collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "each message delivered once, none missing");
}

/// Bad input: a clear error, nothing added.
fn bad_input_refused<Q: DeadLetterAdmin>(q: &Q) {
    let past = lanelog::Timestamp(1);
    assert!(matches!(
        q.enqueue_with(b"x", &EnqueueOptions::new().deadline(past)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        q.enqueue_with(&vec![0u8; 8 << 20], &opts(0)),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        q.dequeue_with(&DequeueOptions::new().max(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(take(q, 1).is_empty(), "nothing was added");
}

macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    let q = lanelog::QueueOptions::new()
                        .visibility_timeout(super::LEASE)
                        .max_deliveries(super::MAX_DELIVERIES)
                        .open(dir.path())
                        .unwrap();
                    super::$scenario(&q);
                }
            )*
        }

        #[cfg(feature = "nats")]
        mod jetstream {
            $(
                #[test]
                fn $scenario() {
                    let q = super::nats::open(stringify!($scenario));
                    super::$scenario(&q);
                }
            )*
        }
    };
}

contract!(
    order_by_lane,
    lease_expiry_redelivers,
    extend_lease_holds,
    nack_delay,
    max_deliveries_then_redrive,
    keys_deduplicate,
    complete_once,
    delayed_enqueue,
    consumers_share_the_work,
    bad_input_refused,
);

#[cfg(feature = "nats")]
mod nats {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use lanelog::nats::{JetStreamQueue, NatsOptions};
    use lanelog::{DequeueOptions, EnqueueOptions, Error, JobQueue};
    use testkit::nats::Server;

    /// One server for the whole binary; each test its own queue prefix.
    /// Never dropped: the guard kills it when the test process ends.
    fn server() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| Server::start().unwrap_or_else(|e| panic!("{e}")))
    }

    fn options(prefix: &str) -> NatsOptions {
        NatsOptions::new()
            .prefix(prefix)
            .visibility_timeout(super::LEASE)
            .max_deliveries(super::MAX_DELIVERIES)
    }

    pub fn open(prefix: &str) -> JetStreamQueue {
        options(prefix)
            .open(server().url())
            .unwrap_or_else(|e| panic!("open on {}: {e}", server().url()))
    }

    /// Two processes' handles (two connections, two receipt tables): the
    /// late one's complete is refused by the server, not by a local table,
    /// and the result counts once.
    #[test]
    fn complete_is_fenced_across_processes() {
        let a = open("fence");
        let b = open("fence");
        let id = a.enqueue_with(b"row", &EnqueueOptions::new()).unwrap();
        let slow = a
            .dequeue_with(&DequeueOptions::new())
            .unwrap()
            .pop()
            .unwrap();
        let fast = b
            .dequeue_with(&DequeueOptions::new().wait(super::PATIENCE))
            .unwrap()
            .pop()
            .expect("redelivered to the other process");
        assert_eq!((fast.id, fast.attempt), (id, 2));
        b.complete(fast.receipt, b"from b").unwrap();
        // JetStream accepts the late ack; the result stream refuses the
        // second result.
        assert!(matches!(
            a.complete(slow.receipt, b"from a"),
            Err(Error::StaleReceipt)
        ));
        assert_eq!(a.result(id).unwrap(), Some(b"from b".to_vec()));
        assert_eq!(a.held() + b.held(), 0, "both deliveries settled");
    }

    /// An enqueue in one process wakes a dequeue waiting in another at
    /// once (the wake subject), long before the wait ends.
    #[test]
    fn enqueue_wakes_a_waiting_dequeue() {
        let a = open("wake");
        let b = open("wake");
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            let got = b
                .dequeue_with(&DequeueOptions::new().wait(Duration::from_secs(30)))
                .unwrap();
            (got.len(), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        a.enqueue_with(b"now", &EnqueueOptions::new()).unwrap();
        let (n, waited) = waiter.join().unwrap();
        assert_eq!(n, 1);
        assert!(waited < Duration::from_secs(30), "woken, not timed out");
    }

    /// `wake_waiters` ends a waiting dequeue of this process.
    #[test]
    fn wake_waiters_ends_a_wait() {
        let q = open("wake-waiters");
        let c = q.clone();
        let t = std::thread::spawn(move || {
            c.dequeue_with(&DequeueOptions::new().wait(Duration::from_secs(60)))
        });
        while !t.is_finished() {
            q.wake_waiters();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(t.join().unwrap().unwrap().is_empty());
    }

    /// The lease is the consumers' ack wait: another per-dequeue lease and
    /// another process's different ack wait are refused, clearly.
    #[test]
    fn lease_is_fixed() {
        let q = open("fixed-lease");
        assert_eq!(q.fixed_lease(), Some(super::LEASE));
        let e = q
            .dequeue_with(&DequeueOptions::new().visibility(Duration::from_secs(9)))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let e = options("fixed-lease")
            .visibility_timeout(Duration::from_secs(9))
            .open(server().url())
            .unwrap_err();
        assert!(e.to_string().contains("ack wait"), "{e}");
    }

    /// No server at the address: a clear error naming the URL, quickly.
    #[test]
    fn missing_server_is_a_clear_error() {
        let port = testkit::nats::free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let start = Instant::now();
        let e = NatsOptions::new()
            .connect_timeout(Duration::from_secs(2))
            .open(url.as_str())
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    /// A listener that never speaks (a hung server): the connect timeout
    /// ends the wait with an error naming the URL.
    #[test]
    fn silent_server_does_not_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let start = Instant::now();
        let e = NatsOptions::new()
            .connect_timeout(Duration::from_secs(1))
            .open(url.as_str())
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        drop(listener);
    }

    /// Options out of range: refused before connecting.
    #[test]
    fn bad_options_are_refused() {
        for (opts, what) in [
            (NatsOptions::new().prefix("a.b"), "prefix"),
            (NatsOptions::new().replicas(0), "replicas"),
            (NatsOptions::new().bands([5, 9]), "bands"),
        ] {
            let e = opts.open(server().url()).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{what}: {e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    /// Called from inside a caller's tokio runtime, the synchronous calls
    /// block that thread instead of panicking (the backend's runtime is
    /// its own), and with feature `tokio` the async variants run on the
    /// backend's runtime and are awaited from the caller's.
    #[test]
    fn calls_from_inside_a_tokio_runtime() {
        let q = open("inside-tokio");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let id = q
                .enqueue_with(b"sync call", &EnqueueOptions::new())
                .unwrap();
            let d = q
                .dequeue_with(&DequeueOptions::new())
                .unwrap()
                .pop()
                .unwrap();
            assert_eq!(d.id, id);
            q.complete(d.receipt, b"done").unwrap();
            #[cfg(feature = "tokio")]
            {
                let id = q
                    .enqueue_with_async(b"async call", &EnqueueOptions::new())
                    .await
                    .unwrap();
                let ids = q
                    .enqueue_batch_with_async(&[(&b"b"[..], EnqueueOptions::new())])
                    .await
                    .unwrap();
                let mut got = q.dequeue_with(&DequeueOptions::new().max(2)).unwrap();
                assert_eq!(got.len(), 2);
                got.sort_by_key(|d| d.id);
                assert_eq!((got[0].id, got[1].id), (id, ids[0]));
                for d in got {
                    q.complete_async(d.receipt, b"done").await.unwrap();
                }
                q.sync_async().await.unwrap();
                assert_eq!(q.result(id).unwrap(), Some(b"done".to_vec()));
            }
        });
    }

    /// A closed handle refuses every call with `Closed`.
    #[test]
    fn closed_refuses() {
        let q = open("closed");
        let c = q.clone();
        q.close().unwrap();
        assert!(matches!(
            c.enqueue_with(b"x", &EnqueueOptions::new()),
            Err(Error::Closed)
        ));
    }
}
