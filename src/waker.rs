//! Async wake-ups (cargo feature `tokio`): a `tokio::sync::Notify` that every
//! event making a message ready signals, and one timer thread per queue that
//! matures delays and expires leases on time, so async consumers need no
//! tokio timers (the feature pulls only tokio's `sync` part).
//!
//! Async durability: an async write (`enqueue_async`, `ack_async`,
//! `complete_async`, `sync_async`) never syncs on the caller's thread. It
//! asks the queue's syncer thread for a sync up to its write and awaits
//! `synced`, which every group commit signals (the syncer's, or a blocking
//! caller's that covered the write first).
//!
//! Cancel safety: an async dequeue only ever awaits the `Notify`; the lease
//! itself is taken by the synchronous, atomic `dequeue`, so dropping the
//! future at its await point can never strand a leased message. An async
//! write is written before its first await; dropping the future only stops
//! the wait for its sync (the write stays, as after a crash before a sync).

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::clock::Clock;

/// Shared between the queue, its timer thread and its syncer thread.
#[derive(Debug, Default)]
pub(crate) struct AsyncWaker {
    pub notify: tokio::sync::Notify,
    /// Signalled after every group commit (and when the queue stops).
    pub synced: Arc<tokio::sync::Notify>,
    timer: Arc<Timer>,
    syncer: Arc<Syncer>,
}

/// Sync requests of async writers, for the syncer thread.
#[derive(Debug, Default)]
struct Syncer {
    state: Mutex<SyncerState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SyncerState {
    /// The highest write sequence number an async writer waits for.
    wanted: u64,
    /// The highest the syncer has made durable (or failed to).
    done: u64,
    stop: bool,
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

    /// Start the syncer thread: `sync` makes writes up to a sequence
    /// number durable (a group commit; its errors poison the queue, which
    /// waiters see), and returns `false` once the queue is gone.
    pub fn start_syncer<T: Send + Sync + 'static>(
        &self,
        owner: Weak<T>,
        sync: fn(&T, u64) -> bool,
    ) -> std::io::Result<()> {
        let synced = self.synced.clone();
        let syncer = self.syncer.clone();
        std::thread::Builder::new()
            .name("lanelog-syncer".into())
            .spawn(move || loop {
                let upto = {
                    let mut st = syncer.state.lock();
                    while !st.stop && st.wanted <= st.done {
                        syncer.changed.wait(&mut st);
                    }
                    if st.stop {
                        return;
                    }
                    st.wanted
                };
                let Some(owner) = owner.upgrade() else { return };
                let open = sync(&owner, upto);
                drop(owner);
                syncer.state.lock().done = upto;
                synced.notify_waiters();
                if !open {
                    return;
                }
            })?;
        Ok(())
    }

    /// An async writer waits for writes up to `seq` to be durable.
    pub fn want_sync(&self, seq: u64) {
        let mut st = self.syncer.state.lock();
        if seq > st.wanted {
            st.wanted = seq;
            self.syncer.changed.notify_one();
        }
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
        self.syncer.state.lock().stop = true;
        self.syncer.changed.notify_one();
        self.notify.notify_waiters();
        self.synced.notify_waiters();
    }
}
