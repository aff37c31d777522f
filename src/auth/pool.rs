//! A fixed set of threads that run blocking jobs (password hashing, NSS and PAM calls) in
//! arrival order, with a cap on how many may wait.
//!
//! Why not tokio's blocking pool behind a semaphore: there, a finished job hands its slot
//! to the next waiting request through the async scheduler (wake a worker, which then
//! wakes a blocking thread), and the slot sits idle for that round trip. With 1 ms
//! sha512crypt jobs that idle time was a quarter of the CPU. Here a thread that finishes
//! a job takes the next one from the queue itself, so the threads stay busy while work
//! waits, and the order is strictly first come, first served. Results go back to the
//! waiting request through a oneshot channel; a job that panics drops its sender, which
//! the request sees as a failure (never as a success), and the thread carries on.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The queue is full: the caller answers `NO server busy`.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: usize,
    max_waiting: usize,
}

struct Shared {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        // A job runs outside the lock, so a panic can't leave the queue half-changed.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl WorkerPool {
    /// Starts `threads` threads named `name`; at most `max_waiting` jobs may wait.
    pub fn new(name: &str, threads: usize, max_waiting: usize) -> std::io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        });
        let threads = threads.max(1);
        for _ in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || work(&shared))?;
        }
        Ok(WorkerPool {
            shared,
            threads,
            max_waiting,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs waiting for a thread now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().len()
    }

    /// Queues `job`; its result arrives on the returned channel (closed without a value if
    /// the job panicked).
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, QueueFull> {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sender.send(job());
        });
        let mut jobs = self.shared.lock();
        if jobs.len() >= self.max_waiting {
            return Err(QueueFull);
        }
        jobs.push_back(job);
        drop(jobs);
        self.shared.ready.notify_one();
        Ok(receiver)
    }
}

/// A pool thread: take the oldest job, run it, repeat. Runs until the process exits.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.lock();
            loop {
                match jobs.pop_front() {
                    Some(job) => break job,
                    None => {
                        jobs = shared
                            .ready
                            .wait(jobs)
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                    }
                }
            }
        };
        // The job's sender is dropped during unwinding: the request sees a failure.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_and_returns_results() {
        let pool = WorkerPool::new("test-pool", 2, 16).unwrap();
        let receivers: Vec<_> = (0..10)
            .map(|i| pool.submit(move || i * 2).unwrap())
            .collect();
        for (i, receiver) in receivers.into_iter().enumerate() {
            assert_eq!(receiver.await.unwrap(), i * 2);
        }
        assert_eq!(pool.threads(), 2);
    }

    #[tokio::test]
    async fn a_panicking_job_is_a_closed_channel_and_the_thread_survives() {
        let pool = WorkerPool::new("test-pool", 1, 16).unwrap();
        let failed = pool.submit(|| -> u32 { panic!("job panics") }).unwrap();
        assert!(failed.await.is_err());
        assert_eq!(pool.submit(|| 7).unwrap().await.unwrap(), 7);
    }

    #[test]
    fn waiting_jobs_are_capped_and_served_in_order() {
        let pool = WorkerPool::new("test-pool", 1, 3).unwrap();
        let (release, gate) = mpsc::channel::<()>();
        let (order_tx, order) = mpsc::channel();
        // Occupy the only thread until released.
        let blocker = pool
            .submit(move || {
                gate.recv().unwrap();
            })
            .unwrap();
        while pool.waiting() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..3 {
            let order_tx = order_tx.clone();
            pool.submit(move || order_tx.send(i).unwrap()).unwrap();
        }
        assert_eq!(pool.waiting(), 3);
        assert_eq!(pool.submit(|| ()).err(), Some(QueueFull));
        release.send(()).unwrap();
        let got: Vec<i32> = (0..3)
            .map(|_| order.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
        drop(blocker);
    }
}
