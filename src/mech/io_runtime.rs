//! The I/O runtime of a mechanism that talks to a server (rimap, ldap).
//!
//! `authenticate` is called on a thread of the daemon's verification pool and blocks. Such
//! a mechanism runs its network exchange with `Runtime::block_on` on a runtime of its own:
//! multi-threaded with one worker thread, which drives the sockets and timers of every
//! verification in flight (and any task a client library spawns, such as ldap3's
//! connection driver), while each calling thread polls its own exchange. The runtime's
//! blocking pool runs the `getaddrinfo` calls, so name lookups never take the daemon's
//! verification threads.
//!
//! Why not the daemon's runtime through `Handle::block_on`: the daemon sizes its blocking
//! pool to the verification pool, and lookups queued behind verifications waiting for those
//! lookups would deadlock until the deadline. Why not a current-thread runtime: concurrent
//! `block_on` calls would take turns driving one reactor, so one stalled exchange could
//! hold up another.
//!
//! The runtime is built on the first request, not when the mechanism is created (the
//! daemon edits its environment after creating the mechanism, before any thread exists),
//! and is shut down without waiting when dropped (which may happen inside the daemon's
//! runtime, where a blocking shutdown would panic).
#![forbid(unsafe_code)]

use std::io;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// A lazily built runtime (see the module documentation).
pub struct IoRuntime {
    thread_name: &'static str,
    lookup_threads: usize,
    runtime: OnceLock<Runtime>,
}

impl IoRuntime {
    /// A runtime whose threads are named `thread_name`, with at most `lookup_threads`
    /// threads for name lookups. Nothing is started yet.
    pub const fn new(thread_name: &'static str, lookup_threads: usize) -> IoRuntime {
        IoRuntime {
            thread_name,
            lookup_threads,
            runtime: OnceLock::new(),
        }
    }

    /// The runtime, built on first use.
    pub fn get(&self) -> io::Result<&Runtime> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(self.lookup_threads)
            .thread_name(self.thread_name)
            .enable_all()
            .build()?;
        if let Err(spare) = self.runtime.set(runtime) {
            // Another request built one first.
            spare.shutdown_background();
        }
        Ok(self.runtime.get().expect("the runtime was just set"))
    }

    /// Whether the runtime has been built (no request has run yet otherwise).
    pub fn started(&self) -> bool {
        self.runtime.get().is_some()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Possibly inside the daemon's runtime, where waiting for threads would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_once_and_dropped_inside_a_runtime() {
        let io = IoRuntime::new("test-io", 2);
        assert!(!io.started());
        let answer = io.get().unwrap().block_on(async { 42 });
        assert_eq!(answer, 42);
        assert!(io.started());
        let first: *const Runtime = io.get().unwrap();
        assert!(std::ptr::eq(first, io.get().unwrap()));
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async move { drop(io) });
    }
}
