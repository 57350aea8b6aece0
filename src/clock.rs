//! Time: the only module that reads a clock.
//!
//! The queue measures every deadline (lease expiry, delays) and every stored
//! time in [`Timestamp`]s: milliseconds since the Unix epoch. [`SystemClock`]
//! anchors the wall clock once and then advances with the monotonic clock, so
//! a wall-clock step never expires leases early or makes time run backwards
//! inside one process. [`ManualClock`] lets tests move time by hand.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The system clock's time now (for deadlines: a queue compares them
    /// with its own clock, [`crate::QueueOptions::clock`]).
    pub fn now() -> Timestamp {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(duration_ms(wall))
    }

    /// This time plus `d`, saturating.
    #[must_use]
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_ms(d)))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in whole milliseconds, rounded up so a short non-zero delay is
/// never lost, and saturating at `u64::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time. Never goes backwards within one process.
    fn now(&self) -> Timestamp;
}

/// The real clock: wall time at creation, advanced by `Instant`.
#[derive(Debug)]
pub struct SystemClock {
    base: Timestamp,
    start: Instant,
}

impl SystemClock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        SystemClock {
            base: Timestamp(duration_ms(wall)),
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        self.base.plus(self.start.elapsed())
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start.0)),
        }
    }

    /// Move time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now_ms.fetch_add(duration_ms(d), Ordering::SeqCst);
    }

    /// Set the time to `t` (tests may also move it backwards, to check that
    /// the queue never relies on a wall clock being monotonic across opens).
    pub fn set(&self, t: Timestamp) {
        self.now_ms.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_rounds_up_to_whole_milliseconds() {
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(5)), 5);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp(1000));
        let d = c.clone();
        assert_eq!(c.now(), Timestamp(1000));
        d.advance(Duration::from_secs(2));
        assert_eq!(c.now(), Timestamp(3000));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
