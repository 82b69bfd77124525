use std::io;

use kvm_bindings::{CpuId, KVM_API_VERSION, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::{HypervisorError, Result, vm::Vm};

/// An open `/dev/kvm`.
pub struct Hypervisor {
    kvm: Kvm,
}

impl Hypervisor {
    /// Opens `/dev/kvm` and checks the API version and the capabilities oxvmm relies on.
    pub fn open() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENXIO | libc::ENODEV => HypervisorError::NoKvm,
            libc::EACCES | libc::EPERM => HypervisorError::KvmPermission,
            errno => HypervisorError::OpenKvm(io::Error::from_raw_os_error(errno)),
        })?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION as i32 {
            return Err(HypervisorError::ApiVersion(version));
        }
        let required = [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::SplitIrqchip, "KVM_CAP_SPLIT_IRQCHIP"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ];
        for (cap, name) in required {
            if !kvm.check_extension(cap) {
                return Err(HypervisorError::MissingCapability(name));
            }
        }
        Ok(Hypervisor { kvm })
    }

    /// The largest vCPU count KVM accepts for one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// The vCPU count KVM recommends (the host's CPU count).
    pub fn recommended_vcpus(&self) -> usize {
        self.kvm.get_nr_vcpus()
    }

    /// CPUID leaves KVM can expose to a guest.
    pub fn supported_cpuid(&self) -> Result<CpuId> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(HypervisorError::ioctl("KVM_GET_SUPPORTED_CPUID"))
    }

    /// MSR indexes KVM saves and restores for a vCPU.
    pub fn msr_index_list(&self) -> Result<Vec<u32>> {
        let list = self
            .kvm
            .get_msr_index_list()
            .map_err(HypervisorError::ioctl("KVM_GET_MSR_INDEX_LIST"))?;
        Ok(list.as_slice().to_vec())
    }

    /// Creates a VM with the split irqchip (LAPICs in KVM, IOAPIC and PIC in userspace) and the
    /// TSS and identity-map pages at the given guest addresses.
    pub fn create_vm(&self, tss_addr: u64, identity_map_addr: u64) -> Result<Vm> {
        let fd = self
            .kvm
            .create_vm()
            .map_err(HypervisorError::ioctl("KVM_CREATE_VM"))?;
        Vm::new(fd, tss_addr, identity_map_addr)
    }
}
