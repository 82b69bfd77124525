//! The I/O threads of virtio-blk: each owns an [`Executor`] over its own handle on the
//! disk and runs the requests the device hands it, several at once, in whatever order they
//! finish. A finished request goes on the completion list and the device's event is
//! written; the device (on the VMM's event loop) publishes it: status byte, used ring,
//! interrupt. Threads never touch the queue.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::executor::Executor;
use super::request::Framed;
use super::{Request, Status};
use crate::VirtioMemory;

/// A validated request for an I/O thread, with the guest memory it was framed in (the clone
/// keeps the memory mapped until the thread is done with it).
pub(super) struct Job {
    pub(super) head: u16,
    pub(super) request: Request,
    pub(super) framed: Framed,
    pub(super) mem: VirtioMemory,
}

/// A request an I/O thread finished, to be published by the device.
#[derive(Debug)]
pub(super) struct Completion {
    pub(super) head: u16,
    pub(super) request: Request,
    pub(super) status: Status,
    /// Where the status byte goes.
    pub(super) status_at: GuestAddress,
    pub(super) used_len: u32,
}

#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    closing: bool,
}

struct Shared {
    jobs: Mutex<Jobs>,
    job_added: Condvar,
    done: Mutex<Vec<Completion>>,
    done_added: Condvar,
    /// Written once per completion: the VMM's event loop watches it.
    event: Arc<EventFd>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned lock still holds sound data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fixed set of I/O threads.
pub(super) struct IoThreads {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl IoThreads {
    /// Starts one thread per executor; each completion writes `event`.
    pub(super) fn start(executors: Vec<Executor>, event: Arc<EventFd>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            jobs: Mutex::default(),
            job_added: Condvar::new(),
            done: Mutex::default(),
            done_added: Condvar::new(),
            event,
        });
        let mut pool = Self {
            shared: shared.clone(),
            threads: Vec::with_capacity(executors.len()),
        };
        for (index, executor) in executors.into_iter().enumerate() {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("virtio-blk-io{index}"))
                .spawn(move || serve(&shared, executor))?;
            // On an error `pool` is dropped: the threads started so far stop.
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Number of threads: the most requests that run at once.
    pub(super) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Hands `job` to the next free thread.
    pub(super) fn submit(&self, job: Job) {
        lock(&self.shared.jobs).waiting.push_back(job);
        self.shared.job_added.notify_one();
    }

    /// The requests finished since the last call (maybe none).
    pub(super) fn take_completions(&self) -> Vec<Completion> {
        std::mem::take(&mut *lock(&self.shared.done))
    }

    /// Waits until at least one request finished, then takes those that did.
    pub(super) fn wait_completions(&self) -> Vec<Completion> {
        let mut done = lock(&self.shared.done);
        while done.is_empty() {
            done = self
                .shared
                .done_added
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut *done)
    }
}

impl Drop for IoThreads {
    /// Lets the threads finish what they were given (they write guest memory, which their
    /// jobs keep mapped), then joins them.
    fn drop(&mut self) {
        lock(&self.shared.jobs).closing = true;
        self.shared.job_added.notify_all();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a virtio-blk I/O thread panicked");
            }
        }
    }
}

/// One I/O thread: runs jobs until the pool closes and no job is left.
fn serve(shared: &Shared, mut executor: Executor) {
    while let Some(job) = next_job(shared) {
        // A panic here would leave the request in flight forever (and quiesce waiting for
        // it): answer IOERR instead. Nothing the guest controls is expected to panic.
        let status = std::panic::catch_unwind(AssertUnwindSafe(|| {
            executor.run(&job.mem, job.request, &job.framed)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(request = ?job.request, "virtio-blk request panicked");
            Status::IoErr
        });
        let completion = Completion {
            head: job.head,
            request: job.request,
            status,
            status_at: job.framed.status,
            used_len: job.framed.used_len,
        };
        drop(job);
        lock(&shared.done).push(completion);
        shared.done_added.notify_all();
        if let Err(error) = shared.event.write(1) {
            tracing::warn!(%error, "cannot signal a virtio-blk completion");
        }
    }
}

fn next_job(shared: &Shared) -> Option<Job> {
    let mut jobs = lock(&shared.jobs);
    loop {
        if let Some(job) = jobs.waiting.pop_front() {
            return Some(job);
        }
        if jobs.closing {
            return None;
        }
        jobs = shared
            .job_added
            .wait(jobs)
            .unwrap_or_else(|e| e.into_inner());
    }
}
