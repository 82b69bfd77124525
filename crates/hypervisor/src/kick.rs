//! Kicking a vCPU thread out of `KVM_RUN`.
//!
//! A vCPU halted in the kernel only returns to userspace on a signal. The signal handler sets
//! `immediate_exit` in the thread's `kvm_run` page, so a signal that lands just before the thread
//! enters `KVM_RUN` is not lost: the next `KVM_RUN` returns `EINTR` at once.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::{HypervisorError, Result};

thread_local! {
    static KVM_RUN_PAGE: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `try_with` so a signal that lands while the thread is exiting does nothing.
    let _ = KVM_RUN_PAGE.try_with(|page| {
        let run = page.get();
        if !run.is_null() {
            // SAFETY: the pointer is set only while this thread's `Vcpu` (which owns the mapping)
            // is alive and is cleared before it is dropped; a single byte store is
            // async-signal-safe.
            unsafe { (*run).immediate_exit = 1 };
        }
    });
}

/// Installs the handler of the signal that kicks vCPU threads. Call once, before any vCPU
/// thread starts.
pub fn install_kick_signal_handler() -> Result<()> {
    register_signal_handler(kick_signal(), on_kick).map_err(|e| HypervisorError::Ioctl {
        operation: "sigaction for the vCPU kick signal",
        source: std::io::Error::from_raw_os_error(e.errno()),
    })
}

pub(crate) fn set_thread_run_page(run: *mut kvm_run) {
    KVM_RUN_PAGE.with(|page| page.set(run));
}

/// Sends the kick signal to a vCPU thread.
pub struct VcpuKicker {
    thread: libc::pthread_t,
}

impl VcpuKicker {
    /// A kicker for the thread behind `handle`.
    pub fn for_thread<T>(handle: &JoinHandle<T>) -> Self {
        VcpuKicker {
            thread: handle.as_pthread_t(),
        }
    }

    /// Interrupts the thread's `KVM_RUN` (or its next one).
    pub fn kick(&self) {
        // SAFETY: pthread_kill on a thread handle that the caller's JoinHandle keeps joinable
        // (not yet joined), so the id is valid; the signal has a handler installed.
        let ret = unsafe { libc::pthread_kill(self.thread, kick_signal()) };
        if ret != 0 {
            tracing::debug!("kicking a vCPU thread failed: errno {ret}");
        }
    }
}
