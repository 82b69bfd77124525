//! Running, pausing and stopping the vCPU threads of one boot.
//!
//! Each vCPU lives in an `Arc<Mutex<Vcpu>>`: its thread holds the lock only while it runs the
//! vCPU, so once every thread is parked the main thread can read and write vCPU state (for
//! snapshots) without a round trip through the threads.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hypervisor::{Vcpu, VcpuKicker};

/// What the vCPU threads should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Running the guest.
    Run,
    /// Parked outside `KVM_RUN`.
    Pause,
    /// Returning for good.
    Quit,
}

struct ControlState {
    mode: Mode,
    /// Threads parked in `checkpoint`.
    parked: usize,
    /// Threads that have not returned yet.
    alive: usize,
}

/// The mode shared by the vCPU threads of one boot.
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl VcpuControl {
    /// Control for `threads` threads, starting in `mode`.
    pub fn new(mode: Mode, threads: usize) -> Self {
        VcpuControl {
            state: Mutex::new(ControlState {
                mode,
                parked: 0,
                alive: threads,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by a vCPU thread before each run: parks while paused. Returns false when the
    /// thread must return.
    pub fn checkpoint(&self) -> bool {
        let mut state = self.lock();
        loop {
            match state.mode {
                Mode::Run => return true,
                Mode::Quit => return false,
                Mode::Pause => {
                    state.parked += 1;
                    self.changed.notify_all();
                    while state.mode == Mode::Pause {
                        state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    state.parked -= 1;
                }
            }
        }
    }

    /// Called by a vCPU thread as it returns.
    pub fn thread_exited(&self) {
        let mut state = self.lock();
        state.alive = state.alive.saturating_sub(1);
        self.changed.notify_all();
    }

    fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
        self.changed.notify_all();
    }

    /// Whether the threads are (asked to be) paused.
    pub fn mode(&self) -> Mode {
        self.lock().mode
    }
}

/// The vCPUs of one boot and their threads.
pub struct VcpuThreads {
    /// The vCPUs, locked by their threads while running.
    pub vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Vec<JoinHandle<()>>,
    control: Arc<VcpuControl>,
}

/// How long to wait before kicking a thread again (a kick that raced with its entry into
/// `KVM_RUN` is caught by `immediate_exit`, so this is a safety net).
const REKICK_AFTER: Duration = Duration::from_millis(10);

impl VcpuThreads {
    /// Wraps started threads.
    pub fn new(
        vcpus: Vec<Arc<Mutex<Vcpu>>>,
        threads: Vec<JoinHandle<()>>,
        control: Arc<VcpuControl>,
    ) -> Self {
        VcpuThreads {
            vcpus,
            threads,
            control,
        }
    }

    fn kick_all(&self) {
        for handle in &self.threads {
            if !handle.is_finished() {
                VcpuKicker::for_thread(handle).kick();
            }
        }
    }

    /// Parks every vCPU thread outside `KVM_RUN`; returns once all are parked (or gone).
    pub fn pause(&self) {
        self.control.set_mode(Mode::Pause);
        self.kick_all();
        let mut state = self.control.lock();
        let mut last_kick = Instant::now();
        while state.parked < state.alive {
            let (next, _) = self
                .control
                .changed
                .wait_timeout(state, REKICK_AFTER)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            if last_kick.elapsed() >= REKICK_AFTER && state.parked < state.alive {
                drop(state);
                self.kick_all();
                last_kick = Instant::now();
                state = self.control.lock();
            }
        }
    }

    /// Lets parked threads run the guest again.
    pub fn resume(&self) {
        self.control.set_mode(Mode::Run);
    }

    /// Whether the threads are paused.
    pub fn is_paused(&self) -> bool {
        self.control.mode() == Mode::Pause
    }

    /// Makes every thread return and joins them.
    pub fn stop(self) {
        self.control.set_mode(Mode::Quit);
        for handle in self.threads {
            let kicker = VcpuKicker::for_thread(&handle);
            kicker.kick();
            let mut last_kick = Instant::now();
            while !handle.is_finished() {
                if last_kick.elapsed() > REKICK_AFTER {
                    kicker.kick();
                    last_kick = Instant::now();
                }
                std::thread::yield_now();
            }
            if handle.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_checkpoint_parks_until_resumed_and_quit_releases_it() {
        let control = Arc::new(VcpuControl::new(Mode::Pause, 1));
        let thread_control = control.clone();
        let (passed_tx, passed_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let first = thread_control.checkpoint();
            passed_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let second = thread_control.checkpoint();
            thread_control.thread_exited();
            (first, second)
        });
        while control.lock().parked == 0 {
            std::thread::yield_now();
        }

        control.set_mode(Mode::Run);
        passed_rx.recv().unwrap();
        control.set_mode(Mode::Quit);
        go_tx.send(()).unwrap();

        let (first, second) = thread.join().unwrap();
        assert!(first, "a resumed checkpoint lets the thread run");
        assert!(!second, "a checkpoint after quit stops the thread");
        assert_eq!(control.lock().alive, 0);
    }
}
