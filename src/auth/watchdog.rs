//! The deadline of verifications that answer their client themselves.
//!
//! A mechanism that [verifies locally](crate::mech::Mechanism::verifies_locally) runs on
//! a pool thread that delivers the reply itself: no async task waits on it with a
//! timeout. Its calls are local, but local is not always quick (an NSS module that asks a
//! directory for an unknown user, a database file on a network filesystem that stopped
//! answering). So each such job is [watched](Watchdog::watch) while it runs: when its
//! deadline passes first, the watchdog's thread [expires](Overdue::expire) it, which
//! answers the client `NO` in its place, and the late result is thrown away.
//!
//! The watchdog costs a running job two uncontended lock operations and, in steady
//! traffic, no wake-up: its thread sleeps until the earliest deadline it knows of (not
//! woken when a job ends early), and a new job wakes it only when its deadline is earlier
//! than that. With nothing watched twice in a row, the thread sleeps until a job comes.
#![forbid(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A watched job whose deadline passed: answers in its place.
pub trait Overdue: Send + Sync {
    fn expire(&self);
}

pub struct Watchdog {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    watched: Vec<Watched>,
    next_id: u64,
    /// When the thread wakes next on its own; `None`: only when told.
    sleeping_until: Option<Instant>,
    /// The longest time from a watch to its deadline seen lately: how long the thread
    /// waits with nothing watched before it sleeps until told.
    horizon: Duration,
    /// The watchdog is gone: the thread ends.
    closed: bool,
}

struct Watched {
    id: u64,
    deadline: Instant,
    overdue: Arc<dyn Overdue>,
}

/// A job being watched; dropping it (the job is done) ends the watch.
pub struct Watch {
    shared: Arc<Shared>,
    id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing runs under the lock that can panic half-way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the thread if it would sleep past `deadline`.
    fn wake_for(&self, state: &mut State, deadline: Instant) {
        state.horizon = state
            .horizon
            .max(deadline.saturating_duration_since(Instant::now()));
        if state.sleeping_until.is_none_or(|wake| deadline < wake) {
            state.sleeping_until = Some(deadline);
            self.wake.notify_one();
        }
    }
}

impl Watchdog {
    /// Starts the watchdog's thread.
    pub fn new() -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("saslauthd-watch".to_string())
            .spawn(move || run(&thread_shared))?;
        Ok(Watchdog { shared })
    }

    /// Watches a job until the returned [`Watch`] is dropped: if `deadline` comes first,
    /// `overdue` is expired (once, on the watchdog's thread).
    pub fn watch(&self, deadline: Instant, overdue: Arc<dyn Overdue>) -> Watch {
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.watched.push(Watched {
            id,
            deadline,
            overdue,
        });
        self.shared.wake_for(&mut state, deadline);
        Watch {
            shared: Arc::clone(&self.shared),
            id,
        }
    }

    /// Jobs watched now.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.shared.lock().watched.len()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Watch {
    /// Moves the deadline to `deadline`; false when the job was expired already (or is
    /// being expired now).
    pub fn rearm(&self, deadline: Instant) -> bool {
        let mut state = self.shared.lock();
        let Some(watched) = state.watched.iter_mut().find(|w| w.id == self.id) else {
            return false;
        };
        watched.deadline = deadline;
        self.shared.wake_for(&mut state, deadline);
        true
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(index) = state.watched.iter().position(|w| w.id == self.id) {
            state.watched.swap_remove(index);
        }
    }
}

/// The watchdog's thread: expires what is due, then sleeps until the next deadline.
fn run(shared: &Shared) {
    let mut state = shared.lock();
    let mut idle_before = false;
    loop {
        if state.closed {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        state.watched.retain(|watched| {
            let keep = watched.deadline > now;
            if !keep {
                due.push(Arc::clone(&watched.overdue));
            }
            keep
        });
        if !due.is_empty() {
            // Expiring answers a client: not under the lock.
            drop(state);
            for overdue in due {
                // The one guard of these deadlines: a panic must not end its thread.
                let _ = catch_unwind(AssertUnwindSafe(|| overdue.expire()));
            }
            state = shared.lock();
            continue;
        }
        let next = state.watched.iter().map(|w| w.deadline).min();
        let idle = next.is_none();
        let wake = match next {
            Some(deadline) => Some(deadline),
            // Steady traffic watches a job within a horizon of now; a second empty look
            // means none comes.
            None if !idle_before => Some(now + state.horizon),
            None => None,
        };
        idle_before = idle;
        state.sleeping_until = wake;
        state = match wake {
            Some(wake) => {
                let timeout = wake.saturating_duration_since(now);
                shared
                    .wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    struct Expiry(mpsc::Sender<Instant>);

    impl Overdue for Expiry {
        fn expire(&self) {
            let _ = self.0.send(Instant::now());
        }
    }

    #[test]
    fn a_job_past_its_deadline_is_expired_once() {
        let watchdog = Watchdog::new().unwrap();
        let (sender, expired) = mpsc::channel();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(150);
        // A sender of the test's own keeps the channel open: "no expiry" is a timeout.
        let watch = watchdog.watch(deadline, Arc::new(Expiry(sender.clone())));
        let at = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(at >= deadline, "expired early");
        assert!(at - started < Duration::from_secs(2), "{:?}", at - started);
        assert_eq!(watchdog.watched(), 0, "an expired job is no longer watched");
        drop(watch);
        assert_eq!(
            expired.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn a_job_done_in_time_is_never_expired() {
        let watchdog = Watchdog::new().unwrap();
        let (sender, expired) = mpsc::channel();
        let watch = watchdog.watch(
            Instant::now() + Duration::from_millis(100),
            Arc::new(Expiry(sender.clone())),
        );
        drop(watch);
        assert_eq!(watchdog.watched(), 0);
        assert_eq!(
            expired.recv_timeout(Duration::from_millis(400)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
    }

    /// An earlier deadline than the one the thread sleeps towards wakes it; jobs done in
    /// time among overdue ones are left alone.
    #[test]
    fn earlier_deadlines_are_kept_and_only_late_jobs_expire() {
        struct Count(Arc<AtomicUsize>);
        impl Overdue for Count {
            fn expire(&self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let watchdog = Watchdog::new().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        let _late = watchdog.watch(
            now + Duration::from_secs(3600),
            Arc::new(Count(count.clone())),
        );
        let (sender, expired) = mpsc::channel();
        let _soon = watchdog.watch(now + Duration::from_millis(100), Arc::new(Expiry(sender)));
        let done = watchdog.watch(
            now + Duration::from_millis(50),
            Arc::new(Count(count.clone())),
        );
        drop(done);
        let at = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(at - now < Duration::from_secs(2));
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(watchdog.watched(), 1);
    }

    #[test]
    fn a_rearmed_job_expires_at_its_new_deadline_and_an_expired_one_cannot_be_rearmed() {
        let watchdog = Watchdog::new().unwrap();
        let (sender, expired) = mpsc::channel();
        let started = Instant::now();
        let watch = watchdog.watch(
            started + Duration::from_secs(3600),
            Arc::new(Expiry(sender)),
        );
        assert!(watch.rearm(started + Duration::from_millis(100)));
        let at = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(at - started < Duration::from_secs(2));
        assert!(!watch.rearm(Instant::now() + Duration::from_secs(1)));
    }
}
