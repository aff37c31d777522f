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
//! the request sees as a failure (never as a success), and the thread carries on. A
//! [`Task`] instead does everything itself, answering its client included, so no other
//! thread needs waking for its result ([`WorkerPool::execute`]).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Work that carries its own result to where it goes (e.g. writes the client's reply).
pub trait Task: Send + 'static {
    fn run(self: Box<Self>);
}

/// A closure as a [`Task`].
struct Closure<F>(F);

impl<F: FnOnce() + Send + 'static> Task for Closure<F> {
    fn run(self: Box<Self>) {
        (self.0)()
    }
}

type Job = Box<dyn Task>;

/// The queue is full: the caller answers `NO server busy`.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: usize,
    max_waiting: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job: a new job wakes one only if there is one (a busy pool
    /// takes it without a wake-up).
    idle: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A job runs outside the lock, so a panic can't leave the queue half-changed.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl WorkerPool {
    /// Starts `threads` threads named `name`; at most `max_waiting` jobs may wait.
    pub fn new(name: &str, threads: usize, max_waiting: usize) -> std::io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
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
        self.shared.lock().jobs.len()
    }

    /// Queues `job`; its result arrives on the returned channel (closed without a value if
    /// the job panicked).
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, QueueFull> {
        let (sender, receiver) = oneshot::channel();
        let job = Closure(move || {
            let _ = sender.send(job());
        });
        self.execute(job).map_err(|_| QueueFull)?;
        Ok(receiver)
    }

    /// Queues `task`, in the same order as [`WorkerPool::submit`]'s jobs; gives it back
    /// when the queue is full.
    pub fn execute<T: Task>(&self, task: T) -> Result<(), T> {
        let task = Box::new(task);
        let mut queue = self.shared.lock();
        if queue.jobs.len() >= self.max_waiting {
            drop(queue);
            return Err(*task);
        }
        queue.jobs.push_back(task);
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

/// A pool thread: take the oldest job, run it, repeat. Runs until the process exits.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                match queue.jobs.pop_front() {
                    Some(job) => break job,
                    None => {
                        queue.idle += 1;
                        queue = shared
                            .ready
                            .wait(queue)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        queue.idle -= 1;
                    }
                }
            }
        };
        // The job's sender is dropped during unwinding: the request sees a failure.
        let _ = catch_unwind(AssertUnwindSafe(|| job.run()));
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
