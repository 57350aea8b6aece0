//! Goal: recovering from a checkpoint plus the journal tail gives the same queue as replaying the whole journal, and a clean close leaves a checkpoint that makes the next open replay nothing.
//! Method: run one deterministic workload (enqueue, batches, delays, dequeue, ack, nack, extend, dead-letter, redrive, purge, clock moves) on two queues that differ only in checkpoint_bytes, take process-crash images at the same steps, reopen both and compare stats, dead letters and every later delivery.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::files::{crash_image, payload};
use common::{both, small, Place};
use lanelog::storage::{CrashPolicy, MemoryStorage};
use lanelog::{
    Clock, DeadLetter, Delivery, Durability, ManualClock, Queue, QueueOptions, Stats, Timestamp,
};
use testkit::SplitMix64 as Rng;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn opts(clock: &ManualClock, checkpoint_bytes: u64, durability: Durability) -> QueueOptions {
    small()
        .durability(durability)
        .checkpoint_bytes(checkpoint_bytes)
        .visibility_timeout(Duration::from_secs(30))
        .max_deliveries(3)
        .clock(Arc::new(clock.clone()))
}

/// One delivery as seen by a consumer, without the receipt (lease numbers
/// are unique per process, so they differ between runs by design).
fn show(d: &Delivery) -> String {
    format!(
        "{}/p{}/a{}/t{}/{:?}",
        d.id, d.priority, d.attempt, d.enqueued_at.0, d.payload
    )
}

fn show_all(ds: &[Delivery]) -> String {
    ds.iter().map(show).collect::<Vec<_>>().join(" ")
}

/// A step of the workload; returns a line for the trace.
fn step(q: &Queue, clock: &ManualClock, rng: &mut Rng, out: &mut Vec<Delivery>) -> String {
    let pick = |rng: &mut Rng, out: &mut Vec<Delivery>| -> Option<Delivery> {
        (!out.is_empty()).then(|| out.swap_remove(rng.below(out.len() as u64) as usize))
    };
    let size = |rng: &mut Rng| -> usize {
        if rng.below(10) == 0 {
            20_000 + rng.below(40_000) as usize
        } else {
            1 + rng.below(300) as usize
        }
    };
    match rng.below(100) {
        0..=24 => {
            let p = payload(rng.next_u64(), size(rng));
            format!("enq {:?}", q.enqueue(&p, rng.below(4) as u8))
        }
        25..=29 => {
            let ps: Vec<(Vec<u8>, u8)> = (0..1 + rng.below(5))
                .map(|_| (payload(rng.next_u64(), size(rng)), rng.below(4) as u8))
                .collect();
            let items: Vec<(&[u8], u8)> = ps.iter().map(|(p, pr)| (&p[..], *pr)).collect();
            format!("batch {:?}", q.enqueue_batch(&items))
        }
        30..=33 => {
            let p = payload(rng.next_u64(), size(rng));
            let delay = Duration::from_millis(1 + rng.below(60_000));
            format!("delayed {:?}", q.enqueue_delayed(&p, 2, delay))
        }
        34..=53 => match q.dequeue_up_to(1 + rng.below(3) as usize) {
            Ok(ds) => {
                let line = format!("deq {}", show_all(&ds));
                out.extend(ds);
                line
            }
            Err(e) => format!("deq {e:?}"),
        },
        54..=65 => match pick(rng, out) {
            Some(d) => format!("ack {} {:?}", d.id, q.ack(d.receipt)),
            None => "ack none".into(),
        },
        66..=71 => match pick(rng, out) {
            Some(d) => {
                let delay = Duration::from_millis(rng.below(3) * rng.below(20_000));
                format!("nack {} {:?}", d.id, q.nack(d.receipt, delay))
            }
            None => "nack none".into(),
        },
        72..=75 => match pick(rng, out) {
            Some(d) => format!("dead {} {:?}", d.id, q.dead_letter(d.receipt, "bad input")),
            None => "dead none".into(),
        },
        76..=79 => match out.get(rng.below(out.len().max(1) as u64) as usize) {
            Some(d) => {
                let ext = Duration::from_secs(1 + rng.below(60));
                format!("extend {} {:?}", d.id, q.extend_lease(d.receipt, ext))
            }
            None => "extend none".into(),
        },
        80..=85 => {
            let d = Duration::from_millis(rng.below(45_000));
            clock.advance(d);
            format!("clock +{d:?}")
        }
        86..=87 => match q.dead_letters() {
            Ok(dead) if !dead.is_empty() => {
                let id = dead[rng.below(dead.len() as u64) as usize].id;
                format!("redrive {id} {:?}", q.redrive(id))
            }
            other => format!("redrive {other:?}"),
        },
        88 => format!("purge {:?}", q.purge_dead_letters()),
        89 => format!("redrive_all {:?}", q.redrive_all()),
        _ => {
            let n = rng.below(4) as usize;
            let ds: Vec<Delivery> = (0..n.min(out.len()))
                .map(|_| pick(rng, out).expect("non-empty"))
                .collect();
            let rs: Vec<_> = ds.iter().map(|d| d.receipt).collect();
            let ids: Vec<_> = ds.iter().map(|d| d.id).collect();
            format!("ack_batch {ids:?} {:?}", q.ack_batch(&rs))
        }
    }
}

/// A crash image with the clock time it was taken at.
struct Image {
    storage: MemoryStorage,
    at: Timestamp,
}

/// Run `steps` steps; take a process-crash image after each step in
/// `crash_at`. Returns the trace and the images.
fn run(
    checkpoint_bytes: u64,
    durability: Durability,
    steps: usize,
    crash_at: &[usize],
) -> (Vec<String>, Vec<Image>) {
    let storage = MemoryStorage::new();
    let clock = ManualClock::new(T0);
    let q = QueueOptions::open_storage(
        opts(&clock, checkpoint_bytes, durability),
        Arc::new(storage.clone()),
    )
    .unwrap();
    let mut rng = testkit::rng(0x5eed);
    let mut out = Vec::new();
    let mut trace = Vec::new();
    let mut images = Vec::new();
    for i in 1..=steps {
        trace.push(step(&q, &clock, &mut rng, &mut out));
        if crash_at.contains(&i) {
            images.push(Image {
                storage: storage.crash(CrashPolicy::ProcessCrash),
                at: clock.now(),
            });
        }
    }
    drop(q);
    (trace, images)
}

fn comparable(mut s: Stats) -> Stats {
    s.segments = 0;
    s.bytes_on_disk = 0;
    s
}

/// Everything observable after reopening an image: stats, dead letters, a
/// new id, and every delivery until the queue is empty (moving the clock
/// past delays), all acked.
struct After {
    stats: Stats,
    dead: Vec<DeadLetter>,
    deliveries: Vec<String>,
}

fn reopen(
    img: &Image,
    checkpoint_bytes: u64,
    durability: Durability,
) -> (After, lanelog::RecoveryReport) {
    let clock = ManualClock::new(img.at);
    let q = QueueOptions::open_storage(
        opts(&clock, checkpoint_bytes, durability),
        Arc::new(img.storage.crash(CrashPolicy::ProcessCrash)),
    )
    .unwrap();
    let report = q.recovery_report().clone();
    let stats = comparable(q.stats());
    let dead = q.dead_letters().unwrap();
    let mut deliveries = Vec::new();
    deliveries.push(format!("new id {:?}", q.enqueue(b"after reopen", 1)));
    loop {
        let ds = q.dequeue_up_to(7).unwrap();
        if ds.is_empty() {
            if q.stats().delayed == 0 {
                break;
            }
            clock.advance(Duration::from_secs(10));
            deliveries.push("clock +10s".into());
            continue;
        }
        deliveries.push(show_all(&ds));
        q.ack_batch(&ds.iter().map(|d| d.receipt).collect::<Vec<_>>())
            .unwrap();
    }
    assert_eq!(comparable(q.stats()).ready, 0);
    (
        After {
            stats,
            dead,
            deliveries,
        },
        report,
    )
}

fn same_state_either_way(durability: Durability) {
    const STEPS: usize = 3000;
    let crash_at = [150, 700, 1501, 2222, STEPS];
    let (trace_cp, images_cp) = run(0, durability, STEPS, &crash_at);
    let (trace_full, images_full) = run(u64::MAX, durability, STEPS, &crash_at);
    for (i, (a, b)) in trace_cp.iter().zip(&trace_full).enumerate() {
        assert_eq!(
            a,
            b,
            "{durability:?}: live behaviour differs at step {}",
            i + 1
        );
    }
    let mut checkpointed = 0;
    for ((cp, full), at) in images_cp.iter().zip(&images_full).zip(crash_at) {
        assert_eq!(cp.at, full.at);
        let ctx = format!("{durability:?}: crash after step {at}");
        let (a, ra) = reopen(cp, 0, durability);
        let (b, rb) = reopen(full, u64::MAX, durability);
        assert!(rb.checkpoint.is_none(), "{ctx}: {rb:?}");
        if ra.checkpoint.is_some() {
            checkpointed += 1;
            assert!(
                ra.entries_replayed < rb.entries_replayed,
                "{ctx}: {ra:?} vs {rb:?}"
            );
        }
        assert!(!ra.found_damage() && !rb.found_damage(), "{ctx}");
        assert!(
            ra.torn_tails.is_empty() && rb.torn_tails.is_empty(),
            "{ctx}"
        );
        assert_eq!(ra.in_flight_released, rb.in_flight_released, "{ctx}");
        assert_eq!(a.stats, b.stats, "{ctx}: stats");
        assert_eq!(a.dead, b.dead, "{ctx}: dead letters");
        assert!(a.deliveries.len() > 1, "{ctx}: something to deliver");
        for (i, (x, y)) in a.deliveries.iter().zip(&b.deliveries).enumerate() {
            assert_eq!(x, y, "{ctx}: delivery line {i}");
        }
        assert_eq!(a.deliveries.len(), b.deliveries.len(), "{ctx}");
    }
    assert!(
        checkpointed >= crash_at.len() - 1,
        "{durability:?}: the small threshold checkpointed at only {checkpointed} crash points"
    );
}

#[test]
fn checkpoint_plus_tail_equals_full_replay_durability_none() {
    same_state_either_way(Durability::None);
}

#[test]
fn checkpoint_plus_tail_equals_full_replay_durability_immediate() {
    same_state_either_way(Durability::Immediate);
}

/// Regression: a message whose delay has passed counts as ready in stats
/// before any dequeue promotes it (a full replay re-delays such messages,
/// so otherwise stats after recovery depended on whether a checkpoint was
/// loaded).
#[test]
fn stats_count_matured_delays_as_ready() {
    let clock = ManualClock::new(T0);
    let q = Place::memory()
        .open(opts(&clock, 64 << 20, Durability::None))
        .unwrap();
    q.enqueue_delayed(b"later", 5, Duration::from_secs(1))
        .unwrap();
    let s = q.stats();
    assert_eq!((s.ready, s.delayed), (0, 1));
    clock.advance(Duration::from_secs(2));
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.ready_per_lane.clone()),
        (
            1,
            0,
            vec![lanelog::LaneCount {
                priority: 5,
                ready: 1
            }]
        ),
        "the delay has passed: {s:?}"
    );
}

#[test]
fn clean_close_writes_a_checkpoint_that_replays_nothing() {
    both(|place| {
        let clock = ManualClock::new(T0);
        let o = opts(&clock, 64 << 20, Durability::Immediate);
        let q = place.open(o.clone()).unwrap();
        let mut rng = testkit::rng(7);
        let mut out = Vec::new();
        for _ in 0..400 {
            step(&q, &clock, &mut rng, &mut out);
        }
        // The same queue recovered by a full replay of its journal...
        let img = crash_image(place);
        let before = comparable(q.stats());
        q.close().unwrap();
        let replayed = img.open(o.clone()).unwrap();
        let r = replayed.recovery_report().clone();
        assert!(r.checkpoint.is_none(), "{}: {r:?}", place.name());
        assert!(r.entries_replayed > 100, "{r:?}");

        // ...and by the checkpoint the clean close wrote.
        let q = place.open(o).unwrap();
        let r = q.recovery_report().clone();
        assert!(r.checkpoint.is_some(), "{}: {r:?}", place.name());
        assert_eq!(r.entries_replayed, 0, "{}: {r:?}", place.name());
        assert_eq!(r.records_scanned, 0, "{}: {r:?}", place.name());
        assert!(!r.found_damage() && r.torn_tails.is_empty(), "{r:?}");
        let mut after = comparable(q.stats());
        // In-flight messages are ready again after any reopen.
        let mut expect = before.clone();
        expect.ready += expect.in_flight;
        expect.in_flight = 0;
        expect.ready_per_lane = after.ready_per_lane.clone();
        after.oldest_ready_age = expect.oldest_ready_age;
        assert_eq!(after, expect, "{}", place.name());
        assert_eq!(comparable(replayed.stats()), comparable(q.stats()));
        assert_eq!(replayed.dead_letters().unwrap(), q.dead_letters().unwrap());
        let a: Vec<String> = common::files::drain(&replayed).iter().map(show).collect();
        let b: Vec<String> = common::files::drain(&q).iter().map(show).collect();
        assert_eq!(a, b, "{}", place.name());
        // Messages at max_deliveries are parked instead of delivered.
        let parked = q.stats().dead - expect.dead;
        assert!(a.len() as u64 + parked >= expect.ready, "{}", place.name());
        assert!(a.len() as u64 + parked <= expect.ready + expect.delayed);
    });
}

#[test]
fn checkpoint_survives_repeated_crash_and_reopen() {
    // Crash, reopen from checkpoint + tail, work a little, crash again: the
    // checkpointing queue and the never-checkpointing one stay equal.
    let place_cp = Place::memory();
    let place_full = Place::memory();
    let clock_cp = ManualClock::new(T0);
    let clock_full = ManualClock::new(T0);
    let mut rng_cp = testkit::rng(99);
    let mut rng_full = testkit::rng(99);
    let (mut pc, mut pf) = (place_cp, place_full);
    for round in 0..4 {
        let qc = pc.open(opts(&clock_cp, 0, Durability::None)).unwrap();
        let qf = pf
            .open(opts(&clock_full, u64::MAX, Durability::None))
            .unwrap();
        assert_eq!(
            comparable(qc.stats()),
            comparable(qf.stats()),
            "round {round}"
        );
        assert_eq!(qc.dead_letters().unwrap(), qf.dead_letters().unwrap());
        let (mut oc, mut of) = (Vec::new(), Vec::new());
        for i in 0..500 {
            let a = step(&qc, &clock_cp, &mut rng_cp, &mut oc);
            let b = step(&qf, &clock_full, &mut rng_full, &mut of);
            assert_eq!(a, b, "round {round} step {i}");
        }
        let (nc, nf) = (crash_image(&pc), crash_image(&pf));
        drop((qc, qf));
        (pc, pf) = (nc, nf);
    }
}
