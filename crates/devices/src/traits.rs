//! The narrow interfaces through which devices reach the outside world.
//!
//! The VMM implements them on top of KVM (irqfd, MSI routes, eventfds) and the host clocks;
//! unit tests implement them with in-memory fakes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One interrupt line, as seen by the device that drives it.
///
/// `set_level(true)` asserts the line and `set_level(false)` deasserts it; polarity (active
/// high or low on the wire) is the interrupt controller's concern, not the device's.
pub trait IrqLine: Send + Sync {
    /// Drives the line to `high` (asserted) or low (deasserted).
    fn set_level(&self, high: bool);

    /// Signals one edge-triggered interrupt: high then low.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// One message-signalled interrupt: what a device writes, and where, to interrupt a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (0xFEEx_xxxx on x86: destination APIC ID and mode).
    pub address: u64,
    /// Message data (vector, delivery mode, trigger mode).
    pub data: u32,
}

/// Somewhere MSI messages can be sent: the VMM forwards them to KVM (`KVM_SIGNAL_MSI`, or the
/// irqfd of a GSI route).
pub trait MsiSink: Send + Sync {
    /// Sends one message-signalled interrupt with the given address and data.
    fn send_msi(&self, address: u64, data: u32) -> std::io::Result<()>;

    /// Sends `message` on behalf of source `source`, whose route [`MsiSink::route_changed`]
    /// announced: the VMM can deliver it through that route's irqfd (one eventfd write). The
    /// default sends it like any other message.
    fn send_routed(&self, source: usize, message: MsiMessage) -> std::io::Result<()> {
        let _ = source;
        self.send_msi(message.address, message.data)
    }

    /// Called when the message an interrupt source `source` (an IOAPIC pin, numbered like a
    /// GSI) would send changes; `None` means the source is masked or cannot deliver.
    ///
    /// With KVM's split irqchip, the VMM mirrors these as GSI routes: KVM only reports the
    /// EOI of a level-triggered vector to userspace (`KVM_EXIT_IOAPIC_EOI`) if a route with
    /// GSI below the IOAPIC's pin count carries that vector. The default does nothing.
    fn route_changed(&self, source: usize, message: Option<MsiMessage>) -> std::io::Result<()> {
        let _ = (source, message);
        Ok(())
    }
}

/// Machine-level power requests a device can make (ACPI S5, reset line, reset register).
///
/// Implementations must not call back into the device: they are invoked while the device's
/// lock is held, typically from a vCPU thread. Setting a flag or signalling an eventfd is right.
pub trait PowerEvents: Send + Sync {
    /// The guest asked to power the machine off.
    fn power_off(&self);
    /// The guest asked to reset (reboot) the machine.
    fn reset(&self);
}

/// A calendar clock.
pub trait WallClock: Send + Sync {
    /// Seconds and nanoseconds since the Unix epoch (UTC).
    fn now(&self) -> Duration;
}

/// The host's real-time clock (`CLOCK_REALTIME`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> Duration {
        // A host clock set before 1970 is not a state we can represent; the epoch is the
        // least surprising answer.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that never goes backwards, for counters such as the ACPI PM timer.
pub trait MonotonicClock: Send + Sync {
    /// Time elapsed since an arbitrary origin fixed for the lifetime of the clock.
    fn now(&self) -> Duration;
}

/// [`MonotonicClock`] backed by [`std::time::Instant`] (`CLOCK_MONOTONIC`).
#[derive(Clone, Copy, Debug)]
pub struct SystemMonotonicClock {
    origin: Instant,
}

impl SystemMonotonicClock {
    /// A clock whose origin is the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemMonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonotonicClock for SystemMonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_wall_clock_is_after_2020() {
        // Arrange
        let clock = SystemWallClock;

        // Act
        let now = clock.now();

        // Assert: 2020-01-01T00:00:00Z
        assert!(now.as_secs() > 1_577_836_800);
    }

    #[test]
    fn system_monotonic_clock_does_not_go_backwards() {
        let clock = SystemMonotonicClock::new();

        let first = clock.now();
        let second = clock.now();

        assert!(second >= first);
    }
}
