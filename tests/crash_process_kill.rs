//! kill -9 torture on the real file system. Goal: a process killed at any
//! instant loses nothing a call returned `Ok` for, brings back nothing it
//! acked, and never hands out a damaged payload. Method: this test binary
//! runs itself again as a child (`LANELOG_KILL_CHILD=<dir>` turns the same
//! `#[test]` into the child's workload); the child works on a queue with
//! `Durability::Immediate` and reports over its stdout pipe each operation
//! before it starts (lower-case line) and once it returned `Ok` (upper-case
//! line); the parent sends SIGKILL after 0-200 ms, reopens the directory
//! itself, leases every ready message and checks them against what the
//! child reported, then closes it for the next cycle, so one queue's
//! history grows across all cycles.
//!
//! An operation whose `Ok` line was not written before the kill may or may
//! not have happened; at most one is in progress when the child dies, and
//! its start line says which, so the parent can still account for it.
//!
//! 200 cycles by default; `LANELOG_BATTERY_SCALE` multiplies the count and
//! `LANELOG_KILL_SEED` fixes the seed (the kill times stay random).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lanelog::{Durability, Queue, QueueOptions, Receipt};
use testkit::kill::Child;
use testkit::workload::{payload, MAX_PAYLOAD};
use testkit::SplitMix64;

const TEST_NAME: &str = "kill_9_torture";
const CHILD_ENV: &str = "LANELOG_KILL_CHILD";
const SEED_ENV: &str = "LANELOG_KILL_SEED";
const CYCLE_ENV: &str = "LANELOG_KILL_CYCLE";
const DEFAULT_CYCLES: f64 = 200.0;
/// A child that was never killed stops on its own after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn options() -> QueueOptions {
    QueueOptions::new()
        .segment_size(2 << 20)
        .journal_file_size(64 << 10)
        .durability(Durability::Immediate)
        .max_deliveries(0)
        .visibility_timeout(Duration::from_secs(600))
}

/// Log-uniform on 0..=MAX_PAYLOAD: as many payloads of 1-2 bytes as of
/// 512 KiB-1 MiB.
fn payload_len(rng: &mut SplitMix64) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let len = ((MAX_PAYLOAD + 1) as f64).powf(u) as usize;
    len.saturating_sub(1).min(MAX_PAYLOAD)
}

/// Lanes 0-8 nine times in ten, else 255.
fn lane(rng: &mut SplitMix64) -> u8 {
    match rng.below(10) {
        0 => 255,
        n => n as u8 - 1,
    }
}

/// A fast 64-bit hash of a payload, to report deliveries in one line.
fn hash(b: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64 ^ b.len() as u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x1000_0000_01B3).rotate_left(29);
    }
    for &x in words.remainder() {
        h = (h ^ u64::from(x)).wrapping_mul(0x1000_0000_01B3);
    }
    h
}

#[test]
fn kill_9_torture() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    parent();
}

// ---------------------------------------------------------------- child --

/// The child's workload: never returns before it is killed (or after
/// `CHILD_LIFETIME`, if the parent is gone).
fn child(dir: &Path) {
    let seed: u64 = env_u64(SEED_ENV).unwrap_or(1);
    let cycle: u64 = env_u64(CYCLE_ENV).unwrap_or(0);
    let mut rng = SplitMix64::new(seed ^ cycle.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        // One write per line, flushed before the operation it announces
        // starts (or after the one it reports returned).
        out.write_all(line.as_bytes()).expect("pipe to parent");
        out.flush().expect("pipe to parent");
    };
    let q = match options().open(dir) {
        Ok(q) => q,
        Err(e) => {
            say(format!("@X open: {e}\n"));
            return;
        }
    };
    say("@O\n".into());
    let mut ready = q.stats().ready;
    let mut held: Vec<Receipt> = Vec::new();
    let mut n = 0u64;
    let end = Instant::now() + CHILD_LIFETIME;
    while Instant::now() < end {
        let p = rng.below(100);
        let result = if (p < 35 && ready < 24) || (ready == 0 && held.is_empty()) {
            n += 1;
            let tag = (cycle + 1) << 32 | n;
            let len = payload_len(&mut rng);
            let lane = lane(&mut rng);
            say(format!("@e {tag} {len} {lane}\n"));
            q.enqueue(&payload(tag, len), lane).map(|id| {
                ready += 1;
                say(format!("@E {id} {tag} {len} {lane}\n"));
            })
        } else if (p < 65 || held.is_empty()) && ready > 0 {
            say("@d\n".into());
            q.dequeue().map(|d| {
                if let Some(d) = d {
                    ready -= 1;
                    let (id, len, h) = (d.id, d.payload.len(), hash(&d.payload));
                    held.push(d.receipt);
                    say(format!("@D {id} {len} {h}\n"));
                }
            })
        } else {
            let r = held.swap_remove(rng.below(held.len() as u64) as usize);
            let id = r.id();
            if p < 92 {
                say(format!("@a {id}\n"));
                q.ack(r).map(|()| say(format!("@A {id}\n")))
            } else {
                say(format!("@n {id}\n"));
                q.nack(r, Duration::ZERO).map(|()| {
                    ready += 1;
                    say(format!("@N {id}\n"));
                })
            }
        };
        if let Err(e) = result {
            say(format!("@X {e}\n"));
            return;
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

// --------------------------------------------------------------- parent --

/// What the parent knows about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    Acked,
}

#[derive(Debug)]
struct Known {
    tag: u64,
    len: usize,
    lane: u8,
    state: State,
}

/// The one operation that may have been cut short by a kill.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Pending {
    #[default]
    None,
    Enqueue {
        tag: u64,
        len: usize,
        lane: u8,
    },
    Ack(u64),
}

#[derive(Debug, Default)]
struct Tally {
    cycles: u64,
    lost: u64,
    resurrected: u64,
    corrupt: u64,
    open_failures: u64,
    /// Things that are none of the above but must not happen either
    /// (damage reported after a kill, an error from a call, a duplicate).
    other: u64,
    /// First few failures, described.
    notes: Vec<String>,
    ops_ok: u64,
    killed_before_open: u64,
    /// Cycles whose directory the parent did not check, so the next child
    /// recovered it itself (and may have been killed while recovering).
    unchecked: u64,
    torn_tails: u64,
    leased_by_parent: u64,
}

impl Tally {
    fn note(&mut self, what: String) {
        if self.notes.len() < 20 {
            self.notes.push(what);
        }
    }
}

struct Model {
    msgs: HashMap<u64, Known>,
    max_id: u64,
    /// Operations cut short by kills since the parent last checked.
    unresolved: Vec<Pending>,
}

impl Model {
    /// A message nobody reported, with payload `is_payload` and lane `lane`
    /// (if known), showed up as `id`: the unresolved enqueue it matches
    /// happened. False if none matches.
    fn resolve_enqueue(
        &mut self,
        id: u64,
        is_payload: impl Fn(u64, usize) -> bool,
        lane: Option<u8>,
    ) -> bool {
        let found = self.unresolved.iter().position(|p| match *p {
            Pending::Enqueue { tag, len, lane: l } => {
                lane.is_none_or(|x| x == l) && is_payload(tag, len)
            }
            _ => false,
        });
        let Some(i) = found else { return false };
        let Pending::Enqueue { tag, len, lane } = self.unresolved.remove(i) else {
            unreachable!("matched an enqueue")
        };
        self.max_id = self.max_id.max(id);
        let state = State::Live;
        let known = Known {
            tag,
            len,
            lane,
            state,
        };
        self.msgs.insert(id, known);
        true
    }

    /// Whether an ack of `id` is unresolved (it may or may not have
    /// happened); forgets it.
    fn resolve_ack(&mut self, id: u64) -> bool {
        let found = self.unresolved.iter().position(|p| *p == Pending::Ack(id));
        found.map(|i| self.unresolved.remove(i)).is_some()
    }

    /// Message `id` was delivered with payload `is_payload` in `lane`:
    /// check it against the model and count what is wrong. It is live now.
    fn delivered(
        &mut self,
        id: u64,
        is_payload: impl Fn(u64, usize) -> bool,
        lane: Option<u8>,
        t: &mut Tally,
        what: &str,
    ) {
        if !self.msgs.contains_key(&id) && !self.resolve_enqueue(id, &is_payload, lane) {
            t.corrupt += 1;
            t.note(format!("{what}: id {id} was never enqueued"));
            return;
        }
        let resolved = self.resolve_ack(id);
        let m = self.msgs.get_mut(&id).expect("known or resolved");
        if !is_payload(m.tag, m.len) || lane.is_some_and(|l| l != m.lane) {
            t.corrupt += 1;
            t.note(format!("{what}: id {id} corrupt"));
        }
        if m.state == State::Acked && !resolved {
            t.resurrected += 1;
            t.note(format!("{what}: acked id {id} delivered again"));
        }
        m.state = State::Live;
    }
}

fn parent() {
    let scale: f64 = std::env::var("LANELOG_BATTERY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let cycles = (DEFAULT_CYCLES * scale).round().max(1.0) as u64;
    let seed = env_u64(SEED_ENV).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64)
    });
    println!("kill-9: seed {seed} ({SEED_ENV}), {cycles} cycles");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let dir = tmp.path().join("queue");
    let mut rng = SplitMix64::new(seed);
    let mut model = Model {
        msgs: HashMap::new(),
        max_id: 0,
        unresolved: Vec::new(),
    };
    let mut t = Tally::default();
    let started = Instant::now();
    for cycle in 0..cycles {
        let lines = run_child(&dir, seed, cycle, rng.below(201));
        t.cycles += 1;
        let pending = replay(&lines, &mut model, &mut t, cycle);
        if pending != Pending::None {
            model.unresolved.push(pending);
        }
        // Half the time the next child recovers the killed directory itself
        // (and may be killed while it does).
        if cycle + 1 == cycles || rng.below(2) == 0 {
            verify(&dir, &mut model, &mut t, cycle);
        } else {
            t.unchecked += 1;
        }
    }
    let live = model
        .msgs
        .values()
        .filter(|m| m.state == State::Live)
        .count();
    println!(
        "kill-9: {} cycles, {} lost, {} resurrected, {} corrupt, {} open failures",
        t.cycles, t.lost, t.resurrected, t.corrupt, t.open_failures
    );
    println!(
        "kill-9: {} operations reported Ok, {} messages enqueued, {live} live at the end, \
         {} kills before the child had opened, {} directories recovered by the next child \
         unchecked, {} torn tails cut, {} leased by the parent, {} other failures, {:.1} s",
        t.ops_ok,
        model.msgs.len(),
        t.killed_before_open,
        t.unchecked,
        t.torn_tails,
        t.leased_by_parent,
        t.other,
        started.elapsed().as_secs_f64()
    );
    assert!(
        t.lost + t.resurrected + t.corrupt + t.open_failures + t.other == 0,
        "kill -9 torture failed (seed {seed}):\n{}",
        t.notes.join("\n")
    );
}

/// Run one child on `dir`, SIGKILL it after `after_ms`, and return every
/// complete report line it wrote (the `@` taken off).
fn run_child(dir: &Path, seed: u64, cycle: u64, after_ms: u64) -> Vec<String> {
    let child = Child::spawn(
        TEST_NAME,
        &[
            (CHILD_ENV, dir.as_os_str().to_owned()),
            (SEED_ENV, seed.to_string().into()),
            (CYCLE_ENV, cycle.to_string().into()),
        ],
    );
    child
        .kill_after(Duration::from_millis(after_ms))
        .into_iter()
        .filter_map(|l| l.strip_prefix('@').map(str::to_string))
        .collect()
}

fn num<T: std::str::FromStr>(w: Option<&str>) -> T {
    match w.map(str::parse) {
        Some(Ok(v)) => v,
        _ => panic!("malformed line from the child"),
    }
}

/// Apply the child's report to the model; returns the operation that was
/// in progress when it died.
fn replay(lines: &[String], model: &mut Model, t: &mut Tally, cycle: u64) -> Pending {
    let mut pending = Pending::None;
    let mut opened = false;
    for line in lines {
        let mut w = line.split(' ');
        let op = w.next().unwrap_or("");
        match op {
            "O" => opened = true,
            "e" => {
                pending = Pending::Enqueue {
                    tag: num(w.next()),
                    len: num(w.next()),
                    lane: num(w.next()),
                }
            }
            "E" => {
                let id: u64 = num(w.next());
                let known = Known {
                    tag: num(w.next()),
                    len: num(w.next()),
                    lane: num(w.next()),
                    state: State::Live,
                };
                if id <= model.max_id || model.msgs.contains_key(&id) {
                    t.other += 1;
                    t.note(format!("cycle {cycle}: id {id} handed out again"));
                }
                model.max_id = model.max_id.max(id);
                model.msgs.insert(id, known);
                t.ops_ok += 1;
                pending = Pending::None;
            }
            "d" | "n" => pending = Pending::None,
            "D" => {
                let id: u64 = num(w.next());
                let len: usize = num(w.next());
                let h: u64 = num(w.next());
                t.ops_ok += 1;
                let is_payload = |tag, n| n == len && hash(&payload(tag, n)) == h;
                let what = format!("cycle {cycle}, child");
                model.delivered(id, is_payload, None, t, &what);
            }
            "a" => pending = Pending::Ack(num(w.next())),
            "A" => {
                let id: u64 = num(w.next());
                if let Some(m) = model.msgs.get_mut(&id) {
                    m.state = State::Acked;
                }
                t.ops_ok += 1;
                pending = Pending::None;
            }
            "N" => t.ops_ok += 1,
            "X" => {
                t.other += 1;
                t.note(format!("cycle {cycle}: the child's call failed: {line}"));
            }
            _ => {}
        }
    }
    if !opened {
        t.killed_before_open += 1;
    }
    pending
}

/// Reopen after a kill, lease every ready message and compare with the
/// model; every unresolved operation is resolved by what is found.
fn verify(dir: &Path, model: &mut Model, t: &mut Tally, cycle: u64) {
    if !dir.exists() {
        // Killed before the child created the directory.
        return;
    }
    let q = match options().open(dir) {
        Ok(q) => q,
        Err(e) => {
            t.open_failures += 1;
            t.note(format!("cycle {cycle}: open after the kill failed: {e}"));
            return;
        }
    };
    let report = q.recovery_report().clone();
    t.torn_tails += report.torn_tails.len() as u64;
    if report.found_damage() {
        t.other += 1;
        t.note(format!(
            "cycle {cycle}: a kill reported as damage: {report:?}"
        ));
    }
    let seen = drain(&q, model, t, cycle);
    // What is still unresolved did not show up: enqueues that never
    // happened, acks that did.
    let unresolved = std::mem::take(&mut model.unresolved);
    for (&id, m) in model.msgs.iter_mut() {
        if m.state != State::Live || seen.contains(&id) {
            continue;
        }
        if !unresolved.contains(&Pending::Ack(id)) {
            t.lost += 1;
            t.note(format!(
                "cycle {cycle}: id {id} (lane {}, {} bytes) lost",
                m.lane, m.len
            ));
        }
        m.state = State::Acked;
    }
    let s = q.stats();
    if (s.ready, s.delayed, s.dead) != (0, 0, 0) || s.in_flight != seen.len() as u64 {
        t.other += 1;
        t.note(format!(
            "cycle {cycle}: stats after leasing everything: {s:?}, leased {}",
            seen.len()
        ));
    }
    // The leases are released by the next open.
    if let Err(e) = q.close() {
        t.other += 1;
        t.note(format!("cycle {cycle}: close failed: {e}"));
    }
}

/// Lease every ready message and check it; returns the ids seen.
fn drain(q: &Queue, model: &mut Model, t: &mut Tally, cycle: u64) -> HashSet<u64> {
    let mut seen = HashSet::new();
    loop {
        let batch = match q.dequeue_up_to(64) {
            Ok(b) => b,
            Err(e) => {
                t.other += 1;
                t.note(format!("cycle {cycle}: dequeue after reopen failed: {e}"));
                break;
            }
        };
        if batch.is_empty() {
            break;
        }
        for d in batch {
            t.leased_by_parent += 1;
            let id = u64::from(d.id);
            if !seen.insert(id) {
                t.other += 1;
                t.note(format!("cycle {cycle}: id {id} leased twice at once"));
                continue;
            }
            let is_payload = |tag, len| d.payload == payload(tag, len);
            let what = format!("cycle {cycle}, after reopen");
            model.delivered(id, is_payload, Some(d.priority), t, &what);
        }
    }
    seen
}
