//! Device models of the oxvmm platform, and the bus they sit on.
//!
//! This crate owns:
//! - [`bus`]: an address-range → device map used for both port I/O and MMIO dispatch;
//! - the narrow traits through which devices reach the outside world ([`IrqLine`],
//!   [`MsiSink`], [`PowerEvents`], [`WallClock`], [`MonotonicClock`]);
//! - the legacy platform devices described in `docs/platform.md`: the COM1 16550
//!   ([`serial`]), the i8042 keyboard controller ([`i8042`]), the CMOS RTC and NVRAM
//!   ([`cmos`]), ACPI fixed hardware ([`acpi_pm`]) and the userspace IOAPIC ([`ioapic`]);
//! - the two firmware-boot devices: QEMU's `fw_cfg` interface ([`fw_cfg`]) and the firmware
//!   debug console ([`debugcon`]);
//! - conventional PCI on bus 0 ([`pci`]): configuration space, BARs, MSI-X, the i440FX
//!   host bridge, configuration access (ports 0xCF8–0xCFF, ECAM) and the PCI MMIO windows.
//!
//! What it must not do: depend on KVM or any hypervisor crate, open devices, spawn threads or
//! read the clock except through the traits above. Devices are inserted into a [`Bus`] at the
//! base address the VMM chooses (the platform's numbers live in the `arch` crate) and see only
//! offsets relative to that base, so everything here is unit-tested with fakes and no
//! `/dev/kvm`.
//!
//! Every device treats the guest as hostile: any offset, access width or value a guest can
//! produce is handled without panicking.
//!
//! Every device's guest-visible state can be taken (`state()`) and put back (`restore()`),
//! in the same or another process, as a serde-serializable `XxxState` that leaves out the
//! host-side plumbing (IRQ lines, output sink, power events, clocks, MSI sink). A restore
//! validates the state first, refuses one the device could never be in with an error
//! naming the field, and then leaves the device unchanged; snapshot files are untrusted
//! input like the guest.

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod pci;
pub mod serial;
mod traits;

pub use acpi_pm::{AcpiPm, AcpiPmError, AcpiPmState};
pub use bus::{Bus, BusDevice, BusError};
pub use cmos::{Cmos, CmosError, CmosState};
pub use debugcon::DebugCon;
pub use fw_cfg::{FwCfg, FwCfgError, FwCfgState};
pub use i8042::{I8042, I8042Error, I8042State};
pub use ioapic::{Ioapic, IoapicError, IoapicPin, IoapicState};
pub use serial::{Serial, SerialCounters, SerialError, SerialState};
pub use traits::{
    IrqLine, MonotonicClock, MsiMessage, MsiSink, PowerEvents, SystemMonotonicClock,
    SystemWallClock, WallClock,
};

#[cfg(test)]
mod test_utils;

#[cfg(test)]
mod random_access_tests;

#[cfg(test)]
mod random_restore_tests;
