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
//! Model: the shared test kit's reference model (`testkit::model::Model`):
//! per message its tag and length (the payload is derived from them), lane,
//! enqueue time, deliveries and state, and the history of the states a
//! crash may bring back (an op is durable under `Immediate` when it returns
//! and wrote, under `None` at the next successful `sync` or close; a
//! process crash keeps every write).
//!
//! Checked: every call returns `Ok`; ids only grow, even across crashes;
//! `dequeue` returns the ready message of the highest lane, lowest id first,
//! with its attempt, payload and enqueue time intact, and `None` only when
//! nothing is ready; after every reopen (which releases leases) the test
//! kit's crash oracles (`testkit::oracle::judge`) find nothing: every
//! durable unacked enqueue present, no durably acked message back, attempts
//! in range, nothing unknown, drain order, stats and `acked_total` within
//! bounds, no damage reported, each batch back whole or not at all; after
//! the drain is put back, `stats()` matches the model; a batch over one
//! segment's room is refused (`TooLarge`).

use std::sync::Arc;
use std::time::Duration;

use lanelog::storage::{CrashPolicy, MemoryStorage, Storage};
use lanelog::{Clock, Durability, ManualClock, Queue, QueueOptions, Timestamp};
use testkit::model::{Counts, Model, View};
use testkit::oracle::{drain, judge, Findings};
use testkit::workload::{self, Item};

use crate::Bytes;

/// Ops per input.
pub const MAX_OPS: usize = 256;
/// The clock's start, ms.
const T0: u64 = workload::T0;
/// The lease of every delivery, ms (the op "let 31 s pass" expires them).
const VISIBILITY_MS: u64 = 30_000;

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
    model: Model,
    next_tag: u64,
    step: u64,
}

impl Run {
    fn options(&self) -> QueueOptions {
        workload::options(&self.clock, self.durability, 0, 8 << 10)
            .visibility_timeout(Duration::from_millis(VISIBILITY_MS))
    }

    fn q(&self) -> &Queue {
        self.q.as_ref().expect("queue is open")
    }

    fn immediate(&self) -> bool {
        self.durability == Durability::Immediate
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// Start an op in the model.
    fn begin(&mut self) {
        let now = self.now();
        self.model.begin(now);
    }

    fn enqueue(&mut self, items: &[(u8, usize)]) {
        let items: Vec<Item> = items
            .iter()
            .map(|&(priority, len)| {
                self.next_tag += 1;
                Item {
                    tag: self.next_tag,
                    priority,
                    len,
                    delay_ms: 0,
                }
            })
            .collect();
        // A batch is one write into one segment: all or none, so a batch
        // larger than a segment's room is refused whole.
        if !workload::fits(&items) {
            let refused = workload::enqueue(self.q(), &items);
            assert!(
                matches!(refused, Err(lanelog::Error::TooLarge { .. })),
                "a batch over a segment: {refused:?}"
            );
            return;
        }
        self.begin();
        let ids = workload::enqueue(self.q(), &items).expect("enqueue");
        assert_eq!(ids.len(), items.len());
        let batch = (items.len() > 1).then(|| self.model.new_batch());
        for (id, it) in ids.into_iter().zip(items) {
            if let Err(e) = self.model.add(u64::from(id), it, batch) {
                panic!("{e}");
            }
        }
        let imm = self.immediate();
        self.model.ok(imm);
    }

    fn dequeue(&mut self) {
        self.begin();
        let now = self.now();
        self.model.tick(now);
        let got = workload::dequeue(self.q(), 1).expect("dequeue");
        if let Err(e) = self.model.dequeue_ok(1, &got) {
            panic!("dequeue: {e}");
        }
        self.model.ok(false);
    }

    fn settle(&mut self, which: u8, ack: bool) {
        let Some((id, receipt)) = self.model.receipt(u64::from(which)) else {
            return;
        };
        assert!(
            self.model.current(id, &receipt),
            "{id}: receipt not current"
        );
        self.begin();
        if ack {
            self.q().ack(receipt).expect("ack");
            self.model.ack_ok(&[id]);
        } else {
            self.q().nack(receipt, Duration::ZERO).expect("nack");
            self.model.nack_ok(id, 0);
        }
        let imm = self.immediate();
        self.model.ok(imm);
    }

    fn sync(&mut self) {
        self.begin();
        self.q().sync().expect("sync");
        self.model.ok(true);
    }

    fn expire(&mut self) {
        self.clock
            .advance(Duration::from_millis(VISIBILITY_MS + 1_000));
        let now = self.now();
        self.model.forget_expiring_receipts(now);
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
        let view = if policy == CrashPolicy::ProcessCrash {
            View::Process
        } else {
            View::Power
        };
        let image = self.storage.crash(policy);
        // The old queue still writes to the old storage as it drops; the
        // image is independent of it.
        drop(self.q.take());
        self.storage = image;
        self.reopen(view, &format!("op {} {policy:?}", self.step));
    }

    fn close_reopen(&mut self) {
        self.begin();
        self.q.take().expect("open").close().expect("close");
        self.model.ok(true);
        self.reopen(View::Power, &format!("op {} close", self.step));
    }

    /// Open on `self.storage`, judge what it holds against the model under
    /// `view`, make that the model's state, and put every message back.
    fn reopen(&mut self, view: View, ctx: &str) {
        let q = match self
            .options()
            .open_storage(Arc::new(self.storage.clone()) as Arc<dyn Storage>)
        {
            Ok(q) => q,
            Err(e) => panic!("open after a crash failed: {e}"),
        };
        // Lease everything ready, in order, and judge it.
        let o = match drain(&q, 64) {
            Ok(o) => o,
            Err(e) => panic!("{ctx}: {e}"),
        };
        let mut f = Findings::default();
        judge(&self.model, view, &o, ctx, &mut f);
        assert!(
            f.failures() == 0,
            "{ctx}: the reopened queue breaks the model: {}; {}\n{}",
            f.headline(),
            f.details(),
            f.notes.join("\n")
        );
        let now = self.now();
        let (seen, acked_total) = o.state();
        self.model.recovered(now, &seen, acked_total);
        self.q = Some(q);
        // The drain was a dequeue of everything ready.
        self.begin();
        if let Err(e) = self.model.dequeue_ok(o.delivered.len() + 1, &o.delivered) {
            panic!("{ctx}: drain after reopen: {e}");
        }
        self.model.ok(false);
        // Put them back, then the queue must agree with the model.
        let imm = self.immediate();
        for d in &o.delivered {
            self.begin();
            self.q()
                .nack(d.receipt, Duration::ZERO)
                .expect("nack after reopen");
            self.model.nack_ok(u64::from(d.id), 0);
            self.model.ok(imm);
        }
        let s = self.q().stats();
        let got = Counts {
            ready: s.ready,
            in_flight: s.in_flight,
            delayed: s.delayed,
            dead: s.dead,
            acked_total: s.acked_total,
            ready_per_lane: s
                .ready_per_lane
                .iter()
                .map(|l| (l.priority, l.ready))
                .collect(),
        };
        assert_eq!(got, self.model.stats(now), "{ctx}: stats after reopen");
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let mut r = Bytes::new(data);
    let mode = r.u8();
    let mut run = Run {
        storage: MemoryStorage::new(),
        clock: ManualClock::new(Timestamp(T0)),
        durability: if mode & 1 == 1 {
            Durability::None
        } else {
            Durability::Immediate
        },
        q: None,
        model: Model::new(0, VISIBILITY_MS, T0),
        next_tag: 0,
        step: 0,
    };
    run.reopen(View::Power, "first open");
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
