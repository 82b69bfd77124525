//! virtio 1.x devices and their modern PCI transport.
//!
//! This crate owns:
//! - [`VirtioDevice`]: what a device model implements (type, features, configuration space,
//!   activation with its queues, queue notifications, reset), and [`VirtioInterrupt`], how
//!   it interrupts the driver without knowing the transport; [`ExternalQueues`], processing a
//!   queue held elsewhere (a vhost-user back-end's vring, `crates/vhost-user`);
//! - [`pci::VirtioPciDevice`]: the virtio 1.2 modern PCI transport (no legacy interface),
//!   a [`devices::pci::PciDevice`] with the common, notify, ISR, device and PCI-access
//!   capabilities, MSI-X with INTx fallback, feature negotiation and the status machine;
//! - [`chain`]: the checks every device applies to a guest's descriptor chain;
//! - the devices: [`rng::Rng`] (virtio-rng) so far; blk, net, vsock, balloon and console
//!   come next, on the same traits;
//! - snapshots of a virtio PCI function ([`pci::VirtioPciState`]): transport registers, queue
//!   configuration and positions, and each device's [`VirtioDeviceState`].
//!
//! Rings are handled by `virtio-queue` (split virtqueues, `EVENT_IDX`, indirect
//! descriptors); guest memory is `vm-memory`'s, accessed only through its checked calls.
//!
//! What it must not do: depend on KVM, the `hypervisor` or `vmm` crates, or do I/O except
//! through what the VMM hands a device (a `Read` for virtio-rng, the Unix streams of a
//! [`vsock::VsockBackend`] for virtio-vsock, such as the [`vsock::unix::UnixSocketBackend`] the
//! VMM builds, the TAP of a [`net::TapBackend`] for virtio-net). Queue processing is
//! synchronous: the VMM calls [`pci::VirtioPciDevice`]'s BAR handlers from the vCPU thread (or
//! its event loop, for an ioeventfd) and a notify write processes the queue there; only
//! virtio-blk hands the disk accesses themselves to I/O threads ([`block`]), announcing their
//! completions through [`VirtioDevice::queue_event`]. Every guest-provided index, length, address and
//! flag is untrusted: malformed descriptor chains are refused (used with 0 bytes, skipped,
//! or the device is marked `DEVICE_NEEDS_RESET`), never a panic or an access outside guest
//! memory.

mod active_queues;
pub mod balloon;
pub mod block;
pub mod chain;
pub mod console;
mod device;
pub mod dirty;
pub mod net;
pub mod pci;
pub mod rng;
pub mod vsock;

#[cfg(test)]
mod test_utils;

#[cfg(test)]
mod random_tests;

pub use device::{
    ActivateError, ActiveQueue, DeviceError, DeviceStateError, ExternalQueues, VirtioDevice,
    VirtioDeviceState, VirtioInterrupt,
};

/// The guest memory devices access, with a dirty-page bitmap: every write through `vm-memory`
/// (buffers, used rings) marks its pages, so a diff snapshot can add the pages devices wrote
/// to KVM's dirty log, which sees only the guest's own writes. A device that writes guest
/// memory another way (a raw pointer handed to a system call, `madvise`) marks the pages
/// itself with [`mark_dirty`].
pub type VirtioMemory = vm_memory::GuestMemoryMmap<dirty::DirtyBitmap>;

/// Records in `mem`'s dirty bitmap that `len` bytes at guest-physical `addr` were written
/// behind `vm-memory`'s back; bytes outside guest memory are ignored.
pub fn mark_dirty(mem: &VirtioMemory, addr: u64, len: u64) {
    use vm_memory::bitmap::Bitmap;
    use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    let end = addr.saturating_add(len);
    let mut at = addr;
    while at < end {
        let Some(region) = mem.find_region(GuestAddress(at)) else {
            return;
        };
        let offset = at - region.start_addr().raw_value();
        let chunk = (end - at).min(region.len() - offset);
        region.bitmap().mark_dirty(offset as usize, chunk as usize);
        at += chunk;
    }
}

/// Device types (virtio 1.2, 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;
    /// Block device.
    pub const BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
    /// Console.
    pub const CONSOLE: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
    /// Entropy source.
    pub const RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
    /// Traditional memory balloon.
    pub const BALLOON: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
    /// Socket device.
    pub const VSOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
}

/// Feature bits every device may offer (virtio 1.2, 6).
pub mod features {
    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

    /// The device complies with virtio 1.x (required by the modern transport).
    pub const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
    /// Descriptors may point to indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
    /// What every device here offers: virtio 1.x with the ring features virtio-queue
    /// implements.
    pub const COMMON: u64 = VERSION_1 | RING_INDIRECT_DESC | RING_EVENT_IDX;
}

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    use virtio_bindings::virtio_config as config;

    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = config::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = config::VIRTIO_CONFIG_S_DRIVER as u8;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = config::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = config::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    /// The device hit an error it cannot recover from until reset.
    pub const DEVICE_NEEDS_RESET: u8 = config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    /// The driver gave up on the device.
    pub const FAILED: u8 = config::VIRTIO_CONFIG_S_FAILED as u8;
}
