//! The shared test kit of lanelog (`publish = false`): what the battery
//! (`tests/battery`, `crash_sweep`, `io_error_sweep`), the model proptest
//! (`tests/model_proptest.rs`), the kill tests and the fuzzers (`fuzz/`)
//! have in common, written once.
//!
//! - [`model`]: the reference model of the queue: what a correct queue holds
//!   (ready messages per lane in order, deadlines first, leases, attempts,
//!   delays, dead letters, results, idempotency keys, the lifetime
//!   counters, what the clock's passing removes) and what a crash may lose
//!   in each durability mode.
//! - [`oracle`]: open or drain a reopened queue and judge it against the
//!   model (lost, resurrected, holes, corrupt, wrong state, partial batches,
//!   torn completes, keys admitted twice).
//! - [`workload`]: the pieces the workloads share: the clock's start, the
//!   queue options, self-checking payloads, one call for an enqueue of one
//!   or many messages.
//! - [`traced`]: a `Storage` wrapper that counts and logs calls, notices
//!   failed syncs and the calls of the queue's background thread, and can
//!   serve reads without counting them.
//! - [`SplitMix64`] (re-exported from `lanelog::storage`, where
//!   `MemoryStorage::crash` draws from it): the one seeded generator.
//! - [`nats`]: `nats-server` processes (one node or a cluster) on
//!   loopback ports with a temporary store, killed with the test.
//! - [`fuzz`]: what each fuzz target checks, shared by `fuzz/` and the
//!   corpus replay in `tests/fuzz_corpus.rs`.
//! - [`kill`]: run this test binary again as a child running one named
//!   scenario and `kill -9` it, bounded in time.
//! - [`watchdog`]: end a hung test's process, naming it, past a limit.

pub mod fuzz;
pub mod kill;
pub mod model;
pub mod nats;
pub mod oracle;
pub mod traced;
pub mod watchdog;
pub mod workload;

pub use lanelog::storage::SplitMix64;

/// The generator of a workload seed. The seed is mixed with a constant
/// first, so small seeds (0, 1, 2, ...) do not start from small states.
pub fn rng(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ 0x5DEE_CE66_D1A4_F87D)
}

/// Mix two numbers into a seed.
pub fn mix(a: u64, b: u64) -> u64 {
    rng(a.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ b).next_u64()
}

/// The message of a caught panic.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}
