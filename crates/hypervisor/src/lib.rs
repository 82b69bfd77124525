//! The hypervisor crate owns every use of KVM (`kvm-ioctls`): opening `/dev/kvm`, creating a VM
//! with the split irqchip (local APICs in the kernel, IOAPIC in userspace), memory slots, vCPUs,
//! MSI injection, GSI routing and irqfds, and the signal used to kick a vCPU thread out of `KVM_RUN`.
//!
//! It knows nothing about devices, boot protocols or configuration: callers pass ready-made
//! register values and memory regions. No other workspace crate may depend on `kvm-ioctls`.

mod error;
mod kick;
mod state;
mod system;
mod vcpu;
mod vm;

pub use error::HypervisorError;
pub use kick::{VcpuKicker, install_kick_signal_handler};
pub use kvm_bindings;
pub use state::{VcpuState, VmState};
pub use system::Hypervisor;
pub use vcpu::{InternalErrorInfo, Vcpu, VcpuExit};
pub use vm::{MemorySlot, Vm};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, HypervisorError>;
