//! Why a boot of the VM ended, reported from vCPU threads and devices to the event loop.

use std::sync::Mutex;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// The reason the current boot ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset the machine; the text says how.
    Reset(String),
    /// A reboot was asked for through the control API (it ignores `on_reboot: exit`).
    Restart(String),
    /// The VM cannot go on; the text is a one-line reason.
    Crash(String),
}

/// A latch for the first stop request, plus an eventfd that wakes the event loop.
pub struct StopLatch {
    wake: EventFd,
    reason: Mutex<Option<StopReason>>,
}

impl StopLatch {
    /// A latch with no request yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(StopLatch {
            wake: EventFd::new(EFD_NONBLOCK)?,
            reason: Mutex::new(None),
        })
    }

    /// Records `reason` unless an earlier request is pending, and wakes the event loop.
    pub fn request(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::debug!("stop requested: {reason:?}");
            *slot = Some(reason);
        }
        drop(slot);
        if let Err(e) = self.wake.write(1) {
            tracing::error!("cannot wake the event loop: {e}");
        }
    }

    /// Takes the pending request, leaving the latch clear for the next boot.
    pub fn take(&self) -> Option<StopReason> {
        let _ = self.wake.read();
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The eventfd that becomes readable on a request.
    pub fn eventfd(&self) -> &EventFd {
        &self.wake
    }
}

impl devices::PowerEvents for StopLatch {
    fn power_off(&self) {
        self.request(StopReason::PowerOff);
    }

    fn reset(&self) {
        self.request(StopReason::Reset("guest reset".to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_wins_until_taken() {
        let latch = StopLatch::new().unwrap();

        latch.request(StopReason::PowerOff);
        latch.request(StopReason::Crash("late".into()));

        assert_eq!(latch.take(), Some(StopReason::PowerOff));
        assert_eq!(latch.take(), None);
    }
}
