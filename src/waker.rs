//! Async wake-ups (cargo feature `tokio`): a `tokio::sync::Notify` that every
//! event making a message ready signals, and one timer thread per queue that
//! matures delays and expires leases on time, so async consumers need no
//! tokio timers (the feature pulls only tokio's `sync` part).
//!
//! Cancel safety: an async dequeue only ever awaits the `Notify`; the lease
//! itself is taken by the synchronous, atomic `dequeue`, so dropping the
//! future at its await point can never strand a leased message.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::clock::Clock;

/// Shared between the queue and its timer thread.
#[derive(Debug, Default)]
pub(crate) struct AsyncWaker {
    pub notify: tokio::sync::Notify,
    timer: Arc<Timer>,
}

#[derive(Debug, Default)]
struct Timer {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct TimerState {
    /// The earliest delay or lease deadline known, in clock milliseconds.
    target: Option<u64>,
    stop: bool,
}

impl AsyncWaker {
    /// Start the timer thread; `fire` matures timers and returns the next
    /// deadline, or `None` once the queue is gone.
    pub fn start<T: Send + Sync + 'static>(
        &self,
        owner: Weak<T>,
        clock: Arc<dyn Clock>,
        fire: fn(&T) -> Option<Option<u64>>,
    ) -> std::io::Result<()> {
        let timer = self.timer.clone();
        std::thread::Builder::new()
            .name("lanelog-timer".into())
            .spawn(move || loop {
                {
                    let mut st = timer.state.lock();
                    loop {
                        if st.stop {
                            return;
                        }
                        let now = clock.now().0;
                        match st.target {
                            Some(t) if t <= now => break,
                            Some(t) => {
                                timer
                                    .changed
                                    .wait_for(&mut st, Duration::from_millis(t - now));
                            }
                            None => timer.changed.wait(&mut st),
                        }
                    }
                    st.target = None;
                }
                let Some(owner) = owner.upgrade() else { return };
                match fire(&owner) {
                    Some(next) => {
                        if let Some(t) = next {
                            let mut st = timer.state.lock();
                            st.target = Some(st.target.map_or(t, |x| x.min(t)));
                        }
                    }
                    None => return,
                }
            })?;
        Ok(())
    }

    /// A delay or lease deadline at `at` now exists.
    pub fn hint(&self, at: u64) {
        let mut st = self.timer.state.lock();
        if st.target.is_none_or(|t| at < t) {
            st.target = Some(at);
            self.timer.changed.notify_one();
        }
    }

    /// Stop the timer thread and wake every async waiter (they will see the
    /// queue closed).
    pub fn stop(&self) {
        self.timer.state.lock().stop = true;
        self.timer.changed.notify_one();
        self.notify.notify_waiters();
    }
}
