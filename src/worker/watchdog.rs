//! The watchdog over model calls. A worker runs its model inline, on its
//! own thread: a hand-off to another thread and back for every call cost
//! more than the model itself on small batches. Each worker publishes the
//! call it is making in its [`Slot`]; the pool's watcher thread sweeps the
//! slots ([`Watchdog::sweep`]), renewing the leases of the jobs of a call
//! that runs long and abandoning a call that overruns its timeout: the
//! call's jobs are taken out of the slot (the pool gives them to a fresh
//! worker, which settles them as timed out and replaces the stuck one),
//! and the stuck thread's late result is discarded when its call returns.
//!
//! Invariants:
//! - The jobs of a call are settled by exactly one thread: the worker, if
//!   its call returns first, or the one the sweep gives them to. Which one
//!   is decided under the slot's lock ([`Watchdog::call`] takes them back,
//!   or the sweep takes them out).
//! - A slot once abandoned stays so: its thread makes no further call and
//!   leaves when its call returns.
//! - A model panic is caught on the worker's thread and returned as a
//!   [`ModelError`]; it fails the call, not the worker.
//! - No call waits unwatched: a call due before the watcher's next wake-up
//!   wakes it ([`Watchdog::call`]), and the watcher never sleeps past
//!   [`POLL`](super::run::POLL) anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{Thread, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::ModelError;
use crate::Receipt;

/// One worker's call in flight, if any.
pub(super) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    thread: ThreadId,
}

struct SlotState<T> {
    call: Option<InFlight<T>>,
    abandoned: bool,
}

/// A call under way: the jobs it holds and its clock.
struct InFlight<T> {
    held: T,
    receipts: Vec<Receipt>,
    timeout: Duration,
    deadline: Instant,
    renew_every: Duration,
    renew_at: Instant,
}

impl<T> InFlight<T> {
    fn due(&self) -> Instant {
        self.deadline.min(self.renew_at)
    }
}

impl<T> Slot<T> {
    /// Whether the watchdog gave up on this slot's thread.
    pub(super) fn abandoned(&self) -> bool {
        self.state.lock().abandoned
    }
}

/// A call the sweep gave up on: its jobs, taken from the stuck thread,
/// and the timeout it overran.
pub(super) struct Abandoned<T> {
    pub(super) held: T,
    pub(super) timeout: Duration,
    /// The stuck thread (its handle is let go: it is never joined).
    pub(super) thread: ThreadId,
}

/// The slots of a pool's workers and the watcher that sweeps them.
pub(super) struct Watchdog<T> {
    slots: Mutex<Vec<Arc<Slot<T>>>>,
    /// When the watcher wakes next, as ns since `base` (`u64::MAX` while it
    /// sweeps, so a call published meanwhile wakes it again).
    next_due: AtomicU64,
    base: Instant,
    watcher: OnceLock<Thread>,
}

impl<T> Default for Watchdog<T> {
    fn default() -> Self {
        Watchdog {
            slots: Mutex::new(Vec::new()),
            next_due: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            watcher: OnceLock::new(),
        }
    }
}

impl<T> Watchdog<T> {
    /// Name the thread that sweeps (the pool's watcher), woken by calls
    /// due before its next wake-up.
    pub(super) fn set_watcher(&self, t: Thread) {
        let _ = self.watcher.set(t);
    }

    /// A slot for the calling thread, watched from now on.
    pub(super) fn join(&self) -> Arc<Slot<T>> {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                call: None,
                abandoned: false,
            }),
            thread: std::thread::current().id(),
        });
        self.slots.lock().push(slot.clone());
        slot
    }

    /// Stop watching `slot` (its thread leaves).
    pub(super) fn leave(&self, slot: &Arc<Slot<T>>) {
        self.slots.lock().retain(|s| !Arc::ptr_eq(s, slot));
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Run `f` on this thread as a call holding `held` (the jobs whose
    /// leases are `receipts`), watched: renewed every `renew_every`,
    /// abandoned after `timeout`. Gives back the jobs and the outcome, or
    /// `None` when the call was abandoned (its jobs are someone else's
    /// now, and the outcome is dropped).
    pub(super) fn call<R>(
        &self,
        slot: &Slot<T>,
        held: T,
        receipts: Vec<Receipt>,
        timeout: Duration,
        renew_every: Duration,
        f: impl FnOnce() -> Result<R, ModelError>,
    ) -> Option<(T, Result<R, ModelError>)> {
        let now = Instant::now();
        let call = InFlight {
            held,
            receipts,
            timeout,
            deadline: now + timeout,
            renew_every,
            renew_at: now + renew_every,
        };
        let due = self.ns(call.due());
        {
            let mut state = slot.state.lock();
            if state.abandoned {
                return None;
            }
            state.call = Some(call);
        }
        if due < self.next_due.load(Ordering::SeqCst) {
            if let Some(w) = self.watcher.get() {
                w.unpark();
            }
        }
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
                // A panic says nothing about whether a retry helps.
                Err(ModelError::transient(format!(
                    "model panicked: {}",
                    panic_text(&p)
                )))
            });
        let mut state = slot.state.lock();
        if state.abandoned {
            return None;
        }
        let call = state.call.take()?;
        Some((call.held, outcome))
    }

    /// Renew the leases of every call due for it (`renew` is given their
    /// receipts, outside any slot's lock), and take out every call past
    /// its deadline. Returns those, and when a sweep is due next (`None`:
    /// no call in flight).
    pub(super) fn sweep(
        &self,
        mut renew: impl FnMut(&[Receipt]),
    ) -> (Vec<Abandoned<T>>, Option<Instant>) {
        self.next_due.store(u64::MAX, Ordering::SeqCst);
        let now = Instant::now();
        let slots: Vec<Arc<Slot<T>>> = self.slots.lock().clone();
        let mut abandoned = Vec::new();
        let mut next: Option<Instant> = None;
        for slot in slots {
            let mut due_receipts = None;
            {
                let mut state = slot.state.lock();
                let Some(call) = state.call.as_mut() else {
                    continue;
                };
                if call.deadline <= now {
                    let call = state.call.take().expect("checked above");
                    state.abandoned = true;
                    abandoned.push(Abandoned {
                        held: call.held,
                        timeout: call.timeout,
                        thread: slot.thread,
                    });
                    continue;
                }
                if call.renew_at <= now {
                    call.renew_at = now + call.renew_every;
                    due_receipts = Some(call.receipts.clone());
                }
                let due = call.due();
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            if let Some(receipts) = due_receipts {
                renew(&receipts);
            }
        }
        if let Some(n) = next {
            self.next_due.store(self.ns(n), Ordering::SeqCst);
        }
        (abandoned, next)
    }
}

/// The message of a panic payload (`panic!` with a literal or a format).
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_returns_keeps_its_jobs() {
        let dog = Watchdog::<Vec<u32>>::default();
        let slot = dog.join();
        let got = dog.call(
            &slot,
            vec![1, 2],
            Vec::new(),
            Duration::from_secs(60),
            Duration::from_secs(20),
            || Ok(7),
        );
        let (held, out) = got.expect("not abandoned");
        assert_eq!(held, vec![1, 2]);
        assert_eq!(out.unwrap(), 7);
        let (gone, next) = dog.sweep(|_| {});
        assert!(gone.is_empty());
        assert!(next.is_none(), "no call in flight");
    }

    #[test]
    fn a_panic_fails_the_call_not_the_thread() {
        let dog = Watchdog::<()>::default();
        let slot = dog.join();
        let got = dog.call(
            &slot,
            (),
            Vec::new(),
            Duration::from_secs(60),
            Duration::from_secs(20),
            || -> Result<(), ModelError> { panic!("boom") },
        );
        let (_, out) = got.expect("not abandoned");
        assert!(out
            .unwrap_err()
            .to_string()
            .contains("model panicked: boom"));
        assert!(!slot.abandoned());
    }

    /// What a test's call gives back: its jobs and its outcome, or `None`.
    type Returned<T> = std::thread::JoinHandle<Option<(T, Result<(), ModelError>)>>;

    /// A call of `held` on its own thread, running until `release` is
    /// sent; returns once the model is running.
    fn blocked_call<T: Send + 'static>(
        dog: &Arc<Watchdog<T>>,
        slot: &Arc<Slot<T>>,
        held: T,
        timeout: Duration,
        renew_every: Duration,
    ) -> (std::sync::mpsc::Sender<()>, Returned<T>) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (dog, slot) = (dog.clone(), slot.clone());
        let worker = std::thread::spawn(move || {
            dog.call(&slot, held, Vec::new(), timeout, renew_every, || {
                started.send(()).unwrap();
                wait.recv().unwrap();
                Ok(())
            })
        });
        running.recv().unwrap();
        (release, worker)
    }

    #[test]
    fn an_overrun_is_taken_out_and_its_late_result_dropped() {
        let dog = Arc::new(Watchdog::<Vec<u32>>::default());
        let slot = dog.join();
        let timeout = Duration::from_millis(1);
        let (release, worker) =
            blocked_call(&dog, &slot, vec![9], timeout, Duration::from_secs(20));
        let gone = loop {
            let (gone, _) = dog.sweep(|_| {});
            if !gone.is_empty() {
                break gone;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].held, vec![9]);
        assert_eq!(gone[0].timeout, timeout);
        assert!(slot.abandoned());
        release.send(()).unwrap();
        assert!(
            worker.join().unwrap().is_none(),
            "the late result is dropped"
        );
        // An abandoned slot makes no further call.
        let again = dog.call(&slot, vec![], Vec::new(), timeout, timeout, || Ok(()));
        assert!(again.is_none());
    }

    #[test]
    fn leases_of_a_long_call_are_renewed() {
        let dog = Arc::new(Watchdog::<()>::default());
        let slot = dog.join();
        let (release, worker) = blocked_call(
            &dog,
            &slot,
            (),
            Duration::from_secs(600),
            Duration::from_millis(1),
        );
        let mut renewals = 0;
        while renewals < 2 {
            std::thread::sleep(Duration::from_millis(2));
            let (gone, next) = dog.sweep(|_| renewals += 1);
            assert!(gone.is_empty());
            assert!(next.is_some(), "the call is still in flight");
        }
        release.send(()).unwrap();
        assert!(worker.join().unwrap().is_some());
        dog.leave(&slot);
        assert!(dog.slots.lock().is_empty());
    }
}
