//! The vmm crate builds and runs one VM from a [`VmConfig`]: guest memory, the payload, the
//! platform devices, one thread per vCPU, and the event loop; it reboots the VM in place on a
//! guest reset.
//!
//! It talks to KVM only through the `hypervisor` crate and knows nothing of HTTP, XML or the
//! management daemon.

pub mod api;
mod api_handler;
mod chardev;
mod counters;
mod device_manager;
mod error;
mod event_loop;
mod events;
mod firmware;
mod host;
mod interrupts;
mod ioevents;
mod loader;
mod memory;
mod net;
mod pci_devices;
mod restore_devices;
mod vcpu;
mod vcpu_control;
mod vm;
mod vm_snapshot;
mod vsock;

pub use error::{KernelError, VmmError};
pub use firmware::FirmwareError;
pub use restore_devices::{RestoreDevices, apply_restore_devices};
pub use vm::{VmOutcome, run_vm};
pub use vm_snapshot::{
    RestoreOptions, STATE_KIND as SNAPSHOT_STATE_KIND, STATE_VERSION as SNAPSHOT_STATE_VERSION,
    decode_snapshot_state, restore_vm,
};
pub use vmm_api::config;
pub use vmm_api::config::VmConfig;
