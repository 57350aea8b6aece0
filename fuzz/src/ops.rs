//! Target `ops_with_crashes`: operation sequences on a `MemoryStorage`,
//! with crashes and reopens, checked against a model. Deterministic: a
//! manual clock and seeded crash images.
//!
//! Input format:
//!
//! ```text
//! mode  u8   bit 0: Durability::None (else Immediate)
//! op*   u8   op % 16:
//!        0-4  enqueue       + u8 lane (& 7) + u8 size (see `size`)
//!        5-7  dequeue
//!        8-9  ack           + u8 which held delivery
//!        10   nack (now)    + u8 which held delivery
//!        11   sync
//!        12   crash+reopen  + u8 policy: % 4 = process crash, power loss,
//!                             torn power loss, drop unsynced; the byte and
//!                             the op count seed the power loss
//!        13   close+reopen
//!        14   let 31 s pass (every lease expires)
//!        15   enqueue batch + u8 count (% 4 + 1), each + lane + size
//! ```
//!
//! Model, per message: its tag and length (the payload is derived from
//! them), lane, state (ready, in flight, acked, gone), and whether its
//! enqueue and its ack are known durable (`Immediate`: when the call
//! returned; `None`: at the next successful `sync`, close, or a process
//! crash, which keeps every write).
//!
//! Checked: every call returns `Ok`; ids only grow, even across crashes;
//! `dequeue` returns the ready message of the highest lane, lowest id first,
//! with its payload intact, and `None` only when nothing is ready; after a
//! reopen (which releases leases) the ready set is exactly what the model
//! allows: every durable unacked enqueue present, no durably acked message
//! back, nothing unknown, no damage reported, and each batch back whole or
//! not at all; a batch over one segment's room is refused (`TooLarge`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lanelog::codec::{header, record};
use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{Delivery, Durability, ManualClock, Queue, QueueOptions, Receipt, Timestamp};

use crate::{payload, Bytes};

/// Ops per input.
pub const MAX_OPS: usize = 256;
/// The clock's start, ms.
const T0: u64 = 1_700_000_000_000;
/// Segment size of the queue (the minimum).
const SEGMENT_SIZE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    InFlight,
    Acked,
    /// Enqueued but not durable, and not found after a crash.
    Gone,
}

#[derive(Debug)]
struct Msg {
    tag: u64,
    len: usize,
    lane: u8,
    state: State,
    enq_durable: bool,
    ack_durable: bool,
    /// The `enqueue_batch` call it came from, if any: all or none of a
    /// batch survives a crash.
    batch: Option<u64>,
}

/// The size of a payload from one byte: class in the top two bits.
pub fn size(z: u8) -> usize {
    let n = usize::from(z & 63);
    match z >> 6 {
        0 => n,
        1 => n * 64,
        2 => n * 1024,
        _ => n * 16 * 1024,
    }
}

struct Run {
    storage: MemoryStorage,
    clock: ManualClock,
    durability: Durability,
    q: Option<Queue>,
    msgs: BTreeMap<u64, Msg>,
    held: Vec<(Receipt, u64)>,
    max_id: u64,
    next_tag: u64,
    batches: u64,
    step: u64,
}

impl Run {
    fn options(&self) -> QueueOptions {
        QueueOptions::new()
            .segment_size(SEGMENT_SIZE)
            .journal_file_size(64 << 10)
            .durability(self.durability)
            .max_deliveries(0)
            .visibility_timeout(Duration::from_secs(30))
            .checkpoint_bytes(8 << 10)
            .clock(Arc::new(self.clock.clone()))
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().expect("queue is open")
    }

    fn immediate(&self) -> bool {
        self.durability == Durability::Immediate
    }

    fn enqueue(&mut self, items: &[(u8, usize)]) {
        let tags: Vec<u64> = items
            .iter()
            .map(|_| {
                self.next_tag += 1;
                self.next_tag
            })
            .collect();
        let payloads: Vec<Vec<u8>> = items
            .iter()
            .zip(&tags)
            .map(|(&(_, len), &tag)| payload(tag, len))
            .collect();
        // A batch is one write into one segment: all or none, so a batch
        // larger than a segment's room is refused whole.
        let total: usize = items
            .iter()
            .map(|&(_, len)| record::HEADER_SIZE + len)
            .sum();
        if items.len() > 1 && total > SEGMENT_SIZE as usize - header::SIZE {
            let refused = self.q().enqueue_batch(
                &payloads
                    .iter()
                    .zip(items)
                    .map(|(p, &(lane, _))| (p.as_slice(), lane))
                    .collect::<Vec<_>>(),
            );
            assert!(
                matches!(refused, Err(lanelog::Error::TooLarge { .. })),
                "a batch over a segment: {refused:?}"
            );
            return;
        }
        let batch = (items.len() > 1).then(|| {
            self.batches += 1;
            self.batches
        });
        let ids: Vec<u64> = if items.len() == 1 {
            let id = self.q().enqueue(&payloads[0], items[0].0);
            vec![u64::from(id.expect("enqueue"))]
        } else {
            let batch: Vec<(&[u8], u8)> = payloads
                .iter()
                .zip(items)
                .map(|(p, &(lane, _))| (p.as_slice(), lane))
                .collect();
            let ids = self.q().enqueue_batch(&batch).expect("enqueue_batch");
            ids.into_iter().map(u64::from).collect()
        };
        assert_eq!(ids.len(), items.len());
        for ((id, &(lane, len)), tag) in ids.into_iter().zip(items).zip(tags) {
            assert!(
                id > self.max_id,
                "id {id} reused (max so far {})",
                self.max_id
            );
            self.max_id = id;
            let durable = self.immediate();
            self.msgs.insert(
                id,
                Msg {
                    tag,
                    len,
                    lane,
                    state: State::Ready,
                    enq_durable: durable,
                    ack_durable: false,
                    batch,
                },
            );
        }
    }

    /// The message `dequeue` must return next: highest lane, lowest id.
    fn expected_next(&self) -> Option<u64> {
        self.msgs
            .iter()
            .filter(|(_, m)| m.state == State::Ready)
            .max_by_key(|(&id, m)| (m.lane, std::cmp::Reverse(id)))
            .map(|(&id, _)| id)
    }

    fn check_delivery(&self, d: &Delivery) {
        let id = u64::from(d.id);
        let m = self
            .msgs
            .get(&id)
            .unwrap_or_else(|| panic!("delivered id {id} was never enqueued"));
        assert_eq!(d.priority, m.lane, "id {id}: lane");
        assert!(
            d.payload == payload(m.tag, m.len),
            "id {id}: corrupt payload ({} bytes, want {})",
            d.payload.len(),
            m.len
        );
    }

    fn dequeue(&mut self) {
        let got = self.q().dequeue().expect("dequeue");
        let want = self.expected_next();
        match got {
            None => assert_eq!(want, None, "dequeue gave nothing with a message ready"),
            Some(d) => {
                self.check_delivery(&d);
                let id = u64::from(d.id);
                assert_eq!(Some(id), want, "dequeue order (highest lane, lowest id)");
                self.msgs.get_mut(&id).expect("known").state = State::InFlight;
                self.held.push((d.receipt, id));
            }
        }
    }

    fn settle(&mut self, which: u8, ack: bool) {
        if self.held.is_empty() {
            return;
        }
        let (receipt, id) = self.held.remove(usize::from(which) % self.held.len());
        let durable = self.immediate();
        let m = self.msgs.get_mut(&id).expect("held message is known");
        assert_eq!(m.state, State::InFlight);
        if ack {
            self.q.as_ref().expect("open").ack(receipt).expect("ack");
            m.state = State::Acked;
            m.ack_durable = durable;
        } else {
            self.q
                .as_ref()
                .expect("open")
                .nack(receipt, Duration::ZERO)
                .expect("nack");
            m.state = State::Ready;
        }
    }

    fn all_durable(&mut self) {
        for m in self.msgs.values_mut() {
            m.enq_durable = true;
            if m.state == State::Acked {
                m.ack_durable = true;
            }
        }
    }

    fn sync(&mut self) {
        self.q().sync().expect("sync");
        self.all_durable();
    }

    fn expire(&mut self) {
        self.clock.advance(Duration::from_secs(31));
        self.held.clear();
        for m in self.msgs.values_mut() {
            if m.state == State::InFlight {
                m.state = State::Ready;
            }
        }
    }

    fn crash(&mut self, p: u8) {
        let policy = match p % 4 {
            0 => CrashPolicy::ProcessCrash,
            1 | 2 => CrashPolicy::PowerLoss {
                seed: u64::from(p) << 32 | self.step,
                torn: p % 4 == 2,
            },
            _ => CrashPolicy::DropUnsynced,
        };
        if policy == CrashPolicy::ProcessCrash {
            self.all_durable();
        }
        let image = self.storage.crash(policy);
        // The old queue still writes to the old storage as it drops; the
        // image is independent of it.
        drop(self.q.take());
        self.storage = image;
        self.reopen();
    }

    fn close_reopen(&mut self) {
        self.q.take().expect("open").close().expect("close");
        self.all_durable();
        self.reopen();
    }

    /// All or none of each batch survived: of the members not acked, all
    /// are back or none is, and if none is, no acked member is either.
    fn check_batches(&self, seen: &BTreeSet<u64>) {
        let mut groups: BTreeMap<u64, Vec<(u64, &Msg)>> = BTreeMap::new();
        for (&id, m) in &self.msgs {
            if let Some(b) = m.batch {
                groups.entry(b).or_default().push((id, m));
            }
        }
        for (b, members) in groups {
            let waiting: Vec<u64> = members
                .iter()
                .filter(|(_, m)| matches!(m.state, State::Ready | State::InFlight))
                .map(|&(id, _)| id)
                .collect();
            let back = waiting.iter().filter(|id| seen.contains(id)).count();
            assert!(
                back == 0 || back == waiting.len(),
                "batch {b}: {back} of {} unacked members back",
                waiting.len()
            );
            if back == 0 && !waiting.is_empty() {
                let any = members.iter().any(|(id, _)| seen.contains(id));
                assert!(!any, "batch {b}: an acked member is back, the rest is gone");
            }
        }
    }

    /// Open on `self.storage` and check the ready set against the model.
    fn reopen(&mut self) {
        self.held.clear();
        let q = match self
            .options()
            .open_storage(Arc::new(self.storage.clone()) as Arc<dyn Storage>)
        {
            Ok(q) => q,
            Err(e) => panic!("open after a crash failed: {e}"),
        };
        let report = q.recovery_report().clone();
        assert!(
            !report.found_damage(),
            "crash reported as damage: {report:?}"
        );
        self.q = Some(q);
        for m in self.msgs.values_mut() {
            if m.state == State::InFlight {
                m.state = State::Ready;
            }
        }
        // Lease everything ready, in order, and compare with the model.
        let mut seen = BTreeSet::new();
        let mut leased = Vec::new();
        loop {
            let batch = self.q().dequeue_up_to(64).expect("dequeue after reopen");
            if batch.is_empty() {
                break;
            }
            for d in batch {
                let id = u64::from(d.id);
                self.check_delivery(&d);
                assert!(seen.insert(id), "id {id} delivered twice after reopen");
                let m = &self.msgs[&id];
                assert!(
                    !(m.state == State::Acked && m.ack_durable),
                    "id {id}: durably acked, delivered again after reopen"
                );
                assert!(m.state != State::Gone, "id {id}: lost once, back again");
                leased.push(d.receipt);
            }
        }
        self.check_batches(&seen);
        for (&id, m) in self.msgs.iter_mut() {
            let present = seen.contains(&id);
            match m.state {
                State::Ready | State::InFlight => {
                    assert!(present || !m.enq_durable, "id {id}: durable enqueue lost");
                    m.state = if present { State::Ready } else { State::Gone };
                }
                State::Acked if present => {
                    // An ack not yet durable may be undone by a power loss.
                    m.state = State::Ready;
                }
                State::Acked | State::Gone => {}
            }
            // What a reopen found is on the durable image now.
            if present {
                m.enq_durable = true;
            }
            if m.state == State::Acked {
                m.ack_durable = true;
            }
        }
        // Put them back, then the queue must agree with the model.
        for r in leased {
            self.q().nack(r, Duration::ZERO).expect("nack after reopen");
        }
        let s = self.q().stats();
        let ready = self
            .msgs
            .values()
            .filter(|m| m.state == State::Ready)
            .count() as u64;
        assert_eq!(
            (s.ready, s.in_flight, s.delayed, s.dead),
            (ready, 0, 0, 0),
            "stats after reopen"
        );
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let mut r = Bytes::new(data);
    let mode = r.u8();
    let clock = ManualClock::new(Timestamp(T0));
    let mut run = Run {
        storage: MemoryStorage::new(),
        clock,
        durability: if mode & 1 == 1 {
            Durability::None
        } else {
            Durability::Immediate
        },
        q: None,
        msgs: BTreeMap::new(),
        held: Vec::new(),
        max_id: 0,
        next_tag: 0,
        batches: 0,
        step: 0,
    };
    run.reopen();
    while !r.is_empty() && (run.step as usize) < MAX_OPS {
        run.step += 1;
        match r.u8() % 16 {
            0..=4 => {
                let lane = r.u8() & 7;
                let len = size(r.u8());
                run.enqueue(&[(lane, len)]);
            }
            5..=7 => run.dequeue(),
            8 | 9 => {
                let which = r.u8();
                run.settle(which, true);
            }
            10 => {
                let which = r.u8();
                run.settle(which, false);
            }
            11 => run.sync(),
            12 => {
                let p = r.u8();
                run.crash(p);
            }
            13 => run.close_reopen(),
            14 => run.expire(),
            _ => {
                let n = usize::from(r.u8() % 4) + 1;
                let items: Vec<(u8, usize)> = (0..n)
                    .map(|_| {
                        let lane = r.u8() & 7;
                        (lane, size(r.u8()))
                    })
                    .collect();
                run.enqueue(&items);
            }
        }
    }
    // A final crash of each kind must also recover.
    run.crash(1);
    run.crash(0);
}
