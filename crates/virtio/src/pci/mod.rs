//! The virtio 1.2 modern PCI transport (virtio 1.2, 4.1), without the legacy interface.
//!
//! A [`VirtioPciDevice`] is a PCI function with vendor 0x1AF4, device ID 0x1040 + the
//! virtio device type, revision 1, and two BARs:
//!
//! | BAR | kind | contents |
//! | --- | --- | --- |
//! | 0 ([`MSIX_BAR`]) | 32-bit, not prefetchable | MSI-X table at 0, PBA at [`MSIX_PBA_OFFSET`] |
//! | 2 ([`VIRTIO_BAR`]) | 64-bit, prefetchable, 16 KiB | common configuration at 0x0000, ISR at 0x1000, device configuration at 0x2000, notifications at 0x3000 |
//!
//! Capabilities, in list order: MSI-X (one vector for configuration changes plus one per
//! queue), then the virtio structures COMMON_CFG, NOTIFY_CFG (queue `q` notifies at
//! `0x3000 + 4q`: `queue_notify_off` is the queue index, the multiplier 4), ISR_CFG,
//! DEVICE_CFG (always present and 4 KiB long, as QEMU does: SeaBIOS wants all four, Linux
//! refuses an empty one) and PCI_CFG, the window through configuration space into the BARs
//! that firmware uses when it cannot reach a BAR placed above 4 GiB.
//!
//! The driver's side of the protocol (feature negotiation, the status machine, queue
//! set-up) is in the `common` module's register handlers. The device is activated at
//! `DRIVER_OK` with clones of the queue configuration; a notify write calls
//! [`VirtioDevice::process_queue`]
//! synchronously (only while bus mastering is enabled: the device DMAs). Any failure the
//! driver causes sets `DEVICE_NEEDS_RESET` and raises a configuration interrupt.
//!
//! Interrupts go through MSI-X while the driver enabled it, otherwise through the INTx line
//! (pin INTA#) and the ISR register, read-to-clear ([`VirtioPciInterrupt`]).
//!
//! Snapshots: [`VirtioPciDevice::state`] and [`VirtioPciDevice::restore`] (the `state`
//! module), a serde [`VirtioPciState`].

mod common;
mod interrupt;
mod state;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use devices::pci::{
    BarKind, MsixConfig, MsixRegion, NUM_BARS, PciConfigSpace, PciDevice, PciError, PciIds, regs,
};
use devices::{IrqLine, MsiSink};
use virtio_queue::{Queue, QueueT};

pub use interrupt::{ISR_CONFIG, ISR_QUEUE, NO_VECTOR, VirtioPciInterrupt};
pub use state::{VirtioPciState, VirtioQueueState};

use crate::{VirtioDevice, VirtioMemory, device_type};

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1AF4;
/// Modern (non-transitional) device IDs are this plus the device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// BAR holding the MSI-X table and PBA.
pub const MSIX_BAR: usize = 0;
/// Offset of the PBA in [`MSIX_BAR`] for up to 128 vectors (further on for more).
pub const MSIX_PBA_OFFSET: u32 = 0x800;
/// BAR holding the virtio structures.
pub const VIRTIO_BAR: usize = 2;
/// Size of [`VIRTIO_BAR`].
pub const VIRTIO_BAR_SIZE: u64 = 0x4000;
/// Offset of the common configuration structure in [`VIRTIO_BAR`].
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Offset of the ISR status byte in [`VIRTIO_BAR`].
pub const ISR_CFG_OFFSET: u64 = 0x1000;
/// Offset of the device-specific configuration in [`VIRTIO_BAR`].
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Offset of the notification area in [`VIRTIO_BAR`].
pub const NOTIFY_CFG_OFFSET: u64 = 0x3000;
/// Bytes of each structure's region in [`VIRTIO_BAR`].
pub const REGION_SIZE: u64 = 0x1000;
/// Distance between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Most queues a device can have: the notification area holds one address per queue.
pub const MAX_QUEUES: usize = (REGION_SIZE / NOTIFY_OFF_MULTIPLIER as u64) as usize;

/// virtio_pci_cap cfg_type values (virtio 1.2, 4.1.4).
const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
/// Offsets inside a virtio_pci_cap (from the capability's start).
const CAP_BAR: u16 = 4;
const CAP_OFFSET: u16 = 8;
const CAP_LENGTH: u16 = 12;
/// pci_cfg_data of the PCI_CFG capability.
const CAP_PCI_CFG_DATA: u16 = 16;

/// Why a virtio PCI function could not be built, snapshotted or restored.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// Building the configuration space or MSI-X failed.
    #[error("virtio PCI function: {0}")]
    Pci(#[from] PciError),
    /// The device has no queues, or more than the notification area holds.
    #[error("virtio device has {count} queues, expected 1..={MAX_QUEUES}")]
    QueueCount {
        /// The device's queue count.
        count: usize,
    },
    /// A queue's maximum size is not a power of two of at most 32768.
    #[error("virtio queue {index} has maximum size {size}, expected a power of two up to 32768")]
    QueueSize {
        /// The queue index.
        index: usize,
        /// Its maximum size.
        size: u16,
    },
    /// A snapshot of one device type restored into another.
    #[error("virtio PCI state is of device type {found}, this device is type {expected}")]
    StateDeviceType {
        /// This device's type.
        expected: u32,
        /// The state's.
        found: u32,
    },
    /// A field of a snapshot holds a value this function can never have.
    #[error("virtio PCI state: {field} is invalid: {reason}")]
    InvalidState {
        /// The field, as named in [`VirtioPciState`] (`queues[1].size`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The device is active but cannot report its queue positions.
    #[error(
        "virtio device type {device_type} cannot report the positions of its queues: \
         snapshots of it while the driver runs it are not supported"
    )]
    SnapshotUnsupported {
        /// The device type.
        device_type: u32,
    },
    /// The device reported positions for another number of queues than it has.
    #[error(
        "virtio device type {device_type} reported {given} queue states, it has {expected} queues"
    )]
    QueueStateCount {
        /// The device type.
        device_type: u32,
        /// Its queue count.
        expected: usize,
        /// States reported.
        given: usize,
    },
    /// The device refused its device-specific state.
    #[error("virtio PCI state: {0}")]
    DeviceState(#[from] crate::DeviceStateError),
    /// The device refused to start again with the restored queues.
    #[error("virtio PCI state: re-activating the device failed: {0}")]
    Activate(#[from] crate::ActivateError),
}

/// A virtio device on the modern PCI transport.
pub struct VirtioPciDevice<D: VirtioDevice> {
    config: PciConfigSpace,
    device: D,
    mem: VirtioMemory,
    interrupt: Arc<VirtioPciInterrupt>,
    /// Queue configuration as the driver writes it; the device gets copies at DRIVER_OK.
    queues: Vec<Queue>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    /// The driver wrote a non-zero feature word past bit 63.
    driver_features_beyond_64: bool,
    status: u8,
    queue_select: u16,
    activated: bool,
    pci_cfg_cap: u16,
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Wraps `device` in a PCI function that reaches guest memory through `mem`, sends
    /// MSI-X messages to `msi` and drives `intx` (its INTA# line) when MSI-X is off.
    /// BARs start at address 0: the VMM places them ([`devices::pci::PciRoot::allocate_bars`]).
    pub fn new(
        device: D,
        mem: VirtioMemory,
        msi: Arc<dyn MsiSink>,
        intx: Arc<dyn IrqLine>,
    ) -> Result<Self, VirtioPciError> {
        let queues = build_queues(device.queue_max_sizes())?;
        // One vector per queue plus one for configuration changes; at most MAX_QUEUES + 1.
        let vectors = (queues.len() + 1) as u16;
        let table = MsixRegion {
            bar: MSIX_BAR as u8,
            offset: 0,
        };
        let pba = MsixRegion {
            bar: MSIX_BAR as u8,
            offset: msix_pba_offset(vectors),
        };
        let mut msix = MsixConfig::new(vectors, table, pba, msi)?;
        let mut config = PciConfigSpace::new(pci_ids(device.device_type()));
        config.set_interrupt_pin(1);
        config.add_bar(MSIX_BAR, msix_bar_size(&msix), BarKind::Mmio32, false)?;
        config.add_bar(VIRTIO_BAR, VIRTIO_BAR_SIZE, BarKind::Mmio64, true)?;
        msix.add_capability(&mut config)?;
        let pci_cfg_cap = add_virtio_capabilities(&mut config)?;
        let interrupt = Arc::new(VirtioPciInterrupt::new(msix, queues.len(), intx));
        Ok(Self {
            config,
            device,
            mem,
            interrupt,
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            driver_features_beyond_64: false,
            status: 0,
            queue_select: 0,
            activated: false,
            pci_cfg_cap,
        })
    }

    /// The device model.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device model, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device status byte ([`crate::status`]).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The features the driver wrote (accepted once `FEATURES_OK` is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Whether the device was activated (`DRIVER_OK`) and not reset since.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The interrupt object the device signals through.
    pub fn interrupt(&self) -> Arc<VirtioPciInterrupt> {
        self.interrupt.clone()
    }

    /// Number of MSI-X vectors (one per queue plus the configuration vector).
    pub fn msix_vectors(&self) -> u16 {
        self.interrupt.lock().msix.vectors()
    }

    /// Announce MSI-X route changes to the [`MsiSink`] as sources `base + vector` (for KVM
    /// GSI routes and irqfd), and send each vector's messages naming that source
    /// ([`MsiSink::send_routed`]); stop with `None`.
    pub fn set_msix_route_base(&self, base: Option<usize>) {
        self.interrupt.lock().msix.set_route_base(base);
    }

    /// The guest-physical address the driver writes to notify `queue`, where the
    /// virtio BAR is now (for an ioeventfd); `None` for a queue that does not exist.
    pub fn queue_notify_address(&self, queue: u16) -> Option<u64> {
        if usize::from(queue) >= self.queues.len() {
            return None;
        }
        let bar = self.config.bar_address(VIRTIO_BAR)?;
        let offset = NOTIFY_CFG_OFFSET + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER);
        bar.checked_add(offset)
    }

    /// Has the device finish and publish what it runs on other threads, and start nothing
    /// new until [`VirtioPciDevice::resume`] ([`VirtioDevice::quiesce`]); a queue that
    /// breaks meanwhile sets `DEVICE_NEEDS_RESET`.
    pub fn quiesce(&mut self) {
        if let Err(error) = self.device.quiesce() {
            self.needs_reset(&error);
        }
    }

    /// Lets the device start requests again ([`VirtioDevice::resume`]).
    pub fn resume(&mut self) {
        self.device.resume();
    }

    /// Sets `DEVICE_NEEDS_RESET` and tells the driver through a configuration interrupt.
    fn needs_reset(&mut self, why: &dyn std::fmt::Display) {
        tracing::warn!(
            device_type = self.device.device_type(),
            "virtio device needs reset: {why}"
        );
        self.status |= crate::status::DEVICE_NEEDS_RESET;
        crate::VirtioInterrupt::signal_config(&*self.interrupt);
    }

    fn virtio_bar_read(&mut self, offset: u64, data: &mut [u8]) {
        let within = offset % REGION_SIZE;
        match offset - within {
            COMMON_CFG_OFFSET => self.common_read(within, data),
            ISR_CFG_OFFSET => {
                data.fill(0);
                if within == 0
                    && let Some(first) = data.first_mut()
                {
                    *first = self.interrupt.lock().read_isr();
                }
            }
            DEVICE_CFG_OFFSET => self.device.read_config(within, data),
            _ => data.fill(0),
        }
    }

    fn virtio_bar_write(&mut self, offset: u64, data: &[u8]) {
        let within = offset % REGION_SIZE;
        match offset - within {
            COMMON_CFG_OFFSET => self.common_write(within, data),
            DEVICE_CFG_OFFSET => self.device.write_config(within, data),
            NOTIFY_CFG_OFFSET => self.notify(within),
            _ => {}
        }
    }

    /// A write at `offset` in the notification area: the queue it names is processed.
    fn notify(&mut self, offset: u64) {
        let multiplier = u64::from(NOTIFY_OFF_MULTIPLIER);
        if !offset.is_multiple_of(multiplier) {
            return;
        }
        let Ok(queue) = u16::try_from(offset / multiplier) else {
            return;
        };
        if !self.activated || self.status & crate::status::DEVICE_NEEDS_RESET != 0 {
            tracing::debug!(queue, "virtio notification ignored: device not running");
            return;
        }
        if !self.config.bus_master_enabled() {
            tracing::debug!(queue, "virtio notification ignored: bus mastering disabled");
            return;
        }
        if let Err(error) = self.device.process_queue(queue) {
            self.needs_reset(&error);
        }
    }

    /// (BAR, offset, length) the PCI_CFG window selects, if it is a valid access.
    fn pci_cfg_target(&self) -> Option<(usize, u64, usize)> {
        let cap = self.pci_cfg_cap;
        let bar = usize::from(self.config.read_u8(cap + CAP_BAR));
        let offset = u64::from(self.config.read_u32(cap + CAP_OFFSET));
        let length = self.config.read_u32(cap + CAP_LENGTH) as usize;
        let valid =
            bar < NUM_BARS && matches!(length, 1 | 2 | 4) && offset.is_multiple_of(length as u64);
        valid.then_some((bar, offset, length))
    }

    fn pci_cfg_data_range(&self) -> std::ops::Range<usize> {
        let start = usize::from(self.pci_cfg_cap + CAP_PCI_CFG_DATA);
        start..start + 4
    }
}

impl<D: VirtioDevice> PciDevice for VirtioPciDevice<D> {
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let pending = self.interrupt.lock().intx_pending();
        self.config.set_interrupt_status(pending);
        let window = self.pci_cfg_data_range();
        if overlaps(offset, data.len(), &window)
            && let Some((bar, bar_offset, length)) = self.pci_cfg_target()
        {
            let mut value = [0u8; 4];
            self.bar_read(bar, bar_offset, &mut value[..length]);
            self.config.set_live(window.start as u16, &value);
        }
        self.config.read(offset, data);
    }

    fn config_written(&mut self, offset: u16, len: usize) {
        let command = usize::from(regs::COMMAND)..usize::from(regs::COMMAND) + 2;
        {
            let mut interrupt = self.interrupt.lock();
            if overlaps(offset, len, &command) {
                interrupt.set_intx_disabled(self.config.intx_disabled());
            }
            interrupt.msix.config_written(&self.config, offset, len);
            interrupt.msix_changed();
        }
        let window = self.pci_cfg_data_range();
        if overlaps(offset, len, &window)
            && let Some((bar, bar_offset, length)) = self.pci_cfg_target()
        {
            let mut value = [0u8; 4];
            self.config.read(window.start as u16, &mut value);
            self.bar_write(bar, bar_offset, &value[..length]);
        }
    }

    fn bar_read(&mut self, index: usize, offset: u64, data: &mut [u8]) {
        match index {
            MSIX_BAR => {
                if !self.interrupt.lock().msix.bar_read(index, offset, data) {
                    data.fill(0);
                }
            }
            VIRTIO_BAR => self.virtio_bar_read(offset, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, index: usize, offset: u64, data: &[u8]) {
        match index {
            MSIX_BAR => {
                self.interrupt.lock().msix.bar_write(index, offset, data);
            }
            VIRTIO_BAR => self.virtio_bar_write(offset, data),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.reset_virtio();
        self.config.reset();
        self.interrupt.lock().reset_function();
    }
}

/// The PCI identity of a virtio device of type `device_type`.
fn pci_ids(device_type: u32) -> PciIds {
    let class_code = match device_type {
        device_type::NET => 0x02_0000,
        device_type::BLOCK => 0x01_0000,
        device_type::CONSOLE | device_type::VSOCK => 0x07_8000,
        _ => 0xFF_0000,
    };
    // Device types are small numbers (under 64 today); anything else gets the base ID.
    let id = VIRTIO_PCI_DEVICE_ID_BASE.saturating_add(u16::try_from(device_type).unwrap_or(0));
    PciIds {
        vendor: VIRTIO_PCI_VENDOR_ID,
        device: id,
        subsystem_vendor: VIRTIO_PCI_VENDOR_ID,
        subsystem_id: id,
        class_code,
        revision: 1,
    }
}

fn build_queues(max_sizes: &[u16]) -> Result<Vec<Queue>, VirtioPciError> {
    if max_sizes.is_empty() || max_sizes.len() > MAX_QUEUES {
        return Err(VirtioPciError::QueueCount {
            count: max_sizes.len(),
        });
    }
    max_sizes
        .iter()
        .enumerate()
        .map(|(index, &size)| {
            Queue::new(size).map_err(|_| VirtioPciError::QueueSize { index, size })
        })
        .collect()
}

/// Where the PBA goes: [`MSIX_PBA_OFFSET`], or the next 2 KiB boundary after a longer table.
fn msix_pba_offset(vectors: u16) -> u32 {
    let table_len = u32::from(vectors) * 16;
    table_len.next_multiple_of(0x800).max(MSIX_PBA_OFFSET)
}

/// The MSI-X BAR: table and PBA, rounded up to a power of two of at least 4 KiB.
fn msix_bar_size(msix: &MsixConfig) -> u64 {
    let end = u64::from(msix_pba_offset(msix.vectors())) + msix.pba_len();
    end.max(0x1000).next_power_of_two()
}

/// Adds COMMON, NOTIFY, ISR, DEVICE and PCI_CFG; returns the PCI_CFG capability's offset.
fn add_virtio_capabilities(config: &mut PciConfigSpace) -> Result<u16, PciError> {
    let regions = [
        (CAP_COMMON_CFG, COMMON_CFG_OFFSET),
        (CAP_NOTIFY_CFG, NOTIFY_CFG_OFFSET),
        (CAP_ISR_CFG, ISR_CFG_OFFSET),
        (CAP_DEVICE_CFG, DEVICE_CFG_OFFSET),
    ];
    for (cfg_type, offset) in regions {
        let mut body = virtio_cap_body(
            cfg_type,
            VIRTIO_BAR as u8,
            offset as u32,
            REGION_SIZE as u32,
        );
        if cfg_type == CAP_NOTIFY_CFG {
            body.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
        }
        body[0] = (body.len() + 2) as u8;
        config.add_capability(regs::CAP_ID_VENDOR, &body)?;
    }
    let mut body = virtio_cap_body(CAP_PCI_CFG, 0, 0, 0);
    body.extend_from_slice(&[0; 4]);
    body[0] = (body.len() + 2) as u8;
    // The driver writes bar, offset, length and data (body offsets 2, 6..10, 10..14, 14..18).
    let mut writable = vec![0u8; body.len()];
    writable[2] = 0xFF;
    writable[6..].fill(0xFF);
    config.add_capability_with_mask(regs::CAP_ID_VENDOR, &body, &writable)
}

/// The body (after ID and next pointer) of a virtio_pci_cap: cap_len (patched by the
/// caller), cfg_type, bar, id, padding, offset, length.
fn virtio_cap_body(cfg_type: u8, bar: u8, offset: u32, length: u32) -> Vec<u8> {
    let mut body = vec![0, cfg_type, bar, 0, 0, 0];
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&length.to_le_bytes());
    body
}

/// Whether the access `[offset, offset + len)` touches `range`.
fn overlaps(offset: u16, len: usize, range: &std::ops::Range<usize>) -> bool {
    let start = usize::from(offset);
    start < range.end && range.start < start.saturating_add(len)
}
