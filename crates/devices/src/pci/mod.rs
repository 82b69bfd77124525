//! Conventional PCI on bus 0: configuration space, BARs, MSI-X, the root complex and the bus
//! devices through which a guest reaches them.
//!
//! - [`PciConfigSpace`] is one function's 4 KiB configuration space (type-0 header) with
//!   per-byte write masks, write-1-to-clear status bits, BARs and a capability list. A write
//!   reports what it changed ([`ConfigWrite`]) so BAR moves can be followed.
//! - [`MsixConfig`] is the MSI-X capability with its vector table and pending-bit array, which
//!   live in a BAR of the device; it sends through an [`MsiSink`](crate::MsiSink).
//! - [`PciDevice`] is what a function implements: its configuration space, a hook after
//!   configuration writes, BAR accesses and reset.
//! - [`PciRoot`] holds up to 32 devices (slot = device number, function 0) with an Intel
//!   i440FX host bridge ([`HostBridge`]) at 00:00.0, places BARs in the PCI MMIO windows
//!   ([`PciRoot::allocate_bars`]) and keeps a map of the BARs the devices currently decode.
//! - The VMM inserts three [`BusDevice`](crate::BusDevice)s: [`PciConfigIo`] at ports
//!   0xCF8–0xCFF (configuration mechanism #1, plus the reset control register at 0xCF9),
//!   [`PciConfigMmio`] over the ECAM window, and [`PciMmioWindow`] over each PCI MMIO
//!   window, which forwards an access to whichever memory-enabled BAR decodes the address,
//!   so the guest may move BARs without the VMM remapping anything.
//!
//! Only bus 0, function 0 of each slot, memory BARs (no I/O BARs) and no expansion ROM are
//! modelled; absent functions read all ones. Everything here treats the guest as hostile:
//! any offset and width is answered without panicking.
//!
//! State for snapshots: [`PciConfigSpace::state`], [`MsixConfig::state`],
//! [`PciRoot::state`] (the host bridge) and [`PciConfigIo::state`] (CONFIG_ADDRESS); each
//! device's own state is its business. Restore devices first, then the root, which rebuilds
//! its map of decoded BARs.

mod access;
mod config;
mod msix;
mod root;

#[cfg(test)]
mod random_tests;

pub use access::{
    ECAM_BUS_SIZE, PCI_CONFIG_IO_LEN, PciConfigIo, PciConfigIoState, PciConfigMmio, PciMmioWindow,
};
pub use config::{
    BarInfo, BarKind, CONFIG_SPACE_SIZE, ConfigEffect, ConfigWrite, NUM_BARS, PciConfigSpace,
    PciConfigState, PciIds,
};
pub use msix::{MSIX_MAX_VECTORS, MsixConfig, MsixEntry, MsixNotify, MsixRegion, MsixState};
pub use root::{
    BarTarget, HostBridge, PciBarObserver, PciDevice, PciRoot, PciRootState, PciWindows,
    SharedPciDevice,
};

/// Standard configuration register offsets and bits (PCI Local Bus 3.0, 6.1).
pub mod regs {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command register (16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Status register (16 bits).
    pub const STATUS: u16 = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION_ID: u16 = 0x08;
    /// Class code: programming interface, subclass, base class (24 bits).
    pub const CLASS_CODE: u16 = 0x09;
    /// Cache line size (8 bits).
    pub const CACHE_LINE_SIZE: u16 = 0x0C;
    /// Latency timer (8 bits).
    pub const LATENCY_TIMER: u16 = 0x0D;
    /// Header type (8 bits).
    pub const HEADER_TYPE: u16 = 0x0E;
    /// First base address register.
    pub const BAR0: u16 = 0x10;
    /// Subsystem vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2C;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: u16 = 0x2E;
    /// Expansion ROM base address (not implemented: reads 0).
    pub const ROM_ADDRESS: u16 = 0x30;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES_POINTER: u16 = 0x34;
    /// Interrupt line (8 bits, for the OS).
    pub const INTERRUPT_LINE: u16 = 0x3C;
    /// Interrupt pin (8 bits: 0 none, 1..4 INTA#..INTD#).
    pub const INTERRUPT_PIN: u16 = 0x3D;
    /// First byte after the type-0 header: capabilities and device-specific registers.
    pub const DEVICE_SPECIFIC: u16 = 0x40;

    /// Command: respond to memory space accesses.
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    /// Command: the device may master the bus (DMA, MSI).
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
    /// Command: INTx# disable.
    pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

    /// Status: INTx# is asserted (before the command register's disable bit).
    pub const STATUS_INTERRUPT: u16 = 1 << 3;
    /// Status: the capabilities pointer is valid.
    pub const STATUS_CAPABILITIES: u16 = 1 << 4;

    /// Capability ID of MSI-X.
    pub const CAP_ID_MSIX: u8 = 0x11;
    /// Capability ID of a vendor-specific capability (virtio uses these).
    pub const CAP_ID_VENDOR: u8 = 0x09;
}

/// Errors of the PCI model: programming errors of the VMM and invalid snapshot state.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// A BAR index is not 0..6 (or a 64-bit BAR at 5, which needs two slots).
    #[error("BAR index {index} is out of range for a {kind:?} BAR")]
    BarIndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The kind of BAR.
        kind: BarKind,
    },
    /// The BAR slot (or the upper slot a 64-bit BAR needs) is already used.
    #[error("BAR {index} is already in use")]
    BarInUse {
        /// The index asked for.
        index: usize,
    },
    /// A BAR size must be a power of two, at least 16 bytes, and fit its kind.
    #[error(
        "BAR size {size:#x} is invalid for a {kind:?} BAR (power of two, 16 bytes to {max:#x})"
    )]
    InvalidBarSize {
        /// The size asked for.
        size: u64,
        /// The kind of BAR.
        kind: BarKind,
        /// The largest size that kind allows.
        max: u64,
    },
    /// There is no BAR at this index.
    #[error("no BAR at index {index}")]
    NoSuchBar {
        /// The index asked for.
        index: usize,
    },
    /// A BAR address must be aligned to the BAR's size and fit the BAR's kind.
    #[error("address {address:#x} is not valid for BAR {index} of size {size:#x}")]
    InvalidBarAddress {
        /// The BAR index.
        index: usize,
        /// The address asked for.
        address: u64,
        /// The BAR's size.
        size: u64,
    },
    /// The capability does not fit the 256-byte standard configuration space.
    #[error("capability {id:#x} of {len} bytes does not fit the configuration space")]
    CapabilitySpaceFull {
        /// The capability ID.
        id: u8,
        /// Its length with the two header bytes.
        len: usize,
    },
    /// A write mask must be as long as the bytes it applies to.
    #[error("write mask of {mask} bytes for {len} bytes of registers")]
    MaskLength {
        /// Length of the mask.
        mask: usize,
        /// Length of the registers.
        len: usize,
    },
    /// A register range lies in the type-0 header or past the configuration space.
    #[error("registers {offset:#x}+{len:#x} are outside the device-specific configuration space")]
    RegisterRange {
        /// First register.
        offset: usize,
        /// Number of bytes.
        len: usize,
    },
    /// An MSI-X vector count is 0 or more than 2048.
    #[error("MSI-X vector count {count} is not 1..={MSIX_MAX_VECTORS}")]
    MsixVectorCount {
        /// The count asked for.
        count: u16,
    },
    /// An MSI-X table or PBA location is invalid (BAR index, alignment or overlap).
    #[error("MSI-X {what} at BAR {bar} offset {offset:#x} is invalid: {reason}")]
    MsixRegion {
        /// "table" or "PBA".
        what: &'static str,
        /// Its BAR.
        bar: u8,
        /// Its offset in the BAR.
        offset: u32,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Every slot of bus 0 is taken.
    #[error("every PCI slot on bus 0 is in use")]
    NoFreeSlot,
    /// The slot number is not 0..32 or already holds a device.
    #[error("PCI slot {slot} is out of range or in use")]
    SlotUnavailable {
        /// The slot asked for.
        slot: u8,
    },
    /// The BARs do not fit the PCI MMIO windows.
    #[error("BAR {index} of slot {slot} ({size:#x} bytes) does not fit the PCI MMIO window")]
    WindowFull {
        /// The device's slot.
        slot: u8,
        /// The BAR index.
        index: usize,
        /// The BAR's size.
        size: u64,
    },
    /// Restored configuration space has the wrong length.
    #[error("PCI config state: {len} bytes, expected {CONFIG_SPACE_SIZE}")]
    StateLength {
        /// The restored length.
        len: usize,
    },
    /// Restored configuration space changes a register the guest cannot write: the snapshot
    /// is of another device.
    #[error(
        "PCI config state: read-only byte {offset:#x} is {found:#04x}, this device has {expected:#04x}"
    )]
    StateReadOnlyMismatch {
        /// The byte offset.
        offset: usize,
        /// What this device has there.
        expected: u8,
        /// What the state has.
        found: u8,
    },
    /// A restored register of the configuration access ports holds bits it cannot hold.
    #[error("PCI config I/O state: {field} = {value:#x} sets bits the register does not have")]
    IoState {
        /// The [`PciConfigIoState`] field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// Restored MSI-X state does not match this device's MSI-X capability.
    #[error("MSI-X state: {field} is invalid: {reason}")]
    MsixState {
        /// The [`MsixState`] field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
