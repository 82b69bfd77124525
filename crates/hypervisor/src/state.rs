//! The state of a vCPU and of a VM as KVM holds it, for snapshots and restore.
//!
//! Only what KVM reports support for is saved: optional pieces the host refuses (some MSRs)
//! are left out rather than failing the snapshot.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_clock_data, kvm_cpuid_entry2, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use serde::{Deserialize, Serialize};

use crate::{HypervisorError, Result, Vcpu, Vm};

/// Everything KVM keeps about one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index (and APIC ID).
    pub index: u8,
    /// CPUID as set at boot.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE and AVX state (the XSAVE area).
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: Option<kvm_xcrs>,
    /// Every MSR KVM lists that it could read.
    pub msrs: Vec<kvm_msr_entry>,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// Pending exceptions, interrupts and NMIs.
    pub events: kvm_vcpu_events,
    /// Running, halted, or waiting for SIPI.
    pub mp_state: kvm_mp_state,
    /// TSC frequency in kHz, if known.
    pub tsc_khz: Option<u32>,
}

/// VM-wide state KVM keeps (with the split irqchip, only the KVM clock).
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    /// kvmclock's value.
    pub clock: kvm_clock_data,
}

/// KVM_GET_MSRS reads entries in order and stops at the first one it refuses; read around the
/// refused ones.
fn read_msrs(vcpu: &Vcpu, indexes: &[u32]) -> Result<Vec<kvm_msr_entry>> {
    let mut saved = Vec::with_capacity(indexes.len());
    let mut rest: &[u32] = indexes;
    while !rest.is_empty() {
        let chunk: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&chunk).map_err(|_| HypervisorError::Ioctl {
            operation: "KVM_GET_MSRS (too many entries)",
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        let read = vcpu
            .fd()
            .get_msrs(&mut msrs)
            .map_err(HypervisorError::ioctl("KVM_GET_MSRS"))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        if read < rest.len() {
            tracing::debug!(
                "vCPU {}: MSR {:#x} cannot be read; not saved",
                vcpu.index(),
                rest[read]
            );
        }
        rest = &rest[(read + 1).min(rest.len())..];
    }
    Ok(saved)
}

impl Vcpu {
    /// Reads the whole state of this (stopped) vCPU. `msr_indexes` is KVM's MSR list.
    pub fn save_state(&self, msr_indexes: &[u32]) -> Result<VcpuState> {
        let fd = self.fd();
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(HypervisorError::ioctl("KVM_GET_CPUID2"))?;
        let xcrs = fd.get_xcrs().ok();
        Ok(VcpuState {
            index: self.index(),
            cpuid: cpuid.as_slice().to_vec(),
            regs: self.regs()?,
            sregs: self.sregs()?,
            xsave: fd
                .get_xsave()
                .map_err(HypervisorError::ioctl("KVM_GET_XSAVE"))?,
            xcrs,
            msrs: read_msrs(self, msr_indexes)?,
            lapic: fd
                .get_lapic()
                .map_err(HypervisorError::ioctl("KVM_GET_LAPIC"))?,
            events: fd
                .get_vcpu_events()
                .map_err(HypervisorError::ioctl("KVM_GET_VCPU_EVENTS"))?,
            mp_state: fd
                .get_mp_state()
                .map_err(HypervisorError::ioctl("KVM_GET_MP_STATE"))?,
            tsc_khz: self.tsc_khz(),
        })
    }

    /// Puts a saved state into this freshly created vCPU.
    pub fn restore_state(&self, state: &VcpuState) -> Result<()> {
        let fd = self.fd();
        let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| HypervisorError::Ioctl {
            operation: "KVM_SET_CPUID2 (too many entries)",
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        self.set_cpuid(&cpuid)?;
        if let Some(khz) = state.tsc_khz
            && self.tsc_khz() != Some(khz)
            && let Err(e) = fd.set_tsc_khz(khz)
        {
            tracing::warn!(
                "cannot set the TSC frequency to {khz} kHz: {e}; the guest's clock may drift"
            );
        }
        self.set_sregs(&state.sregs)?;
        self.set_regs(&state.regs)?;
        // SAFETY: the XSAVE area is a `kvm_xsave` of the size KVM_GET_XSAVE returns (4 KiB),
        // which is what KVM_SET_XSAVE reads on a host without XSAVE2 extensions in use.
        unsafe { fd.set_xsave(&state.xsave) }.map_err(HypervisorError::ioctl("KVM_SET_XSAVE"))?;
        if let Some(xcrs) = &state.xcrs {
            fd.set_xcrs(xcrs)
                .map_err(HypervisorError::ioctl("KVM_SET_XCRS"))?;
        }
        fd.set_lapic(&state.lapic)
            .map_err(HypervisorError::ioctl("KVM_SET_LAPIC"))?;
        self.set_msrs(&state.msrs)?;
        fd.set_mp_state(state.mp_state)
            .map_err(HypervisorError::ioctl("KVM_SET_MP_STATE"))?;
        fd.set_vcpu_events(&state.events)
            .map_err(HypervisorError::ioctl("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

impl Vm {
    /// Reads the VM-wide state.
    pub fn save_state(&self) -> Result<VmState> {
        let clock = self
            .fd()
            .get_clock()
            .map_err(HypervisorError::ioctl("KVM_GET_CLOCK"))?;
        Ok(VmState { clock })
    }

    /// Restores the VM-wide state (before any vCPU runs).
    pub fn restore_state(&self, state: &VmState) -> Result<()> {
        let clock = kvm_clock_data {
            clock: state.clock.clock,
            // Only the clock value is restored: the saved flags describe the old host.
            flags: 0,
            ..Default::default()
        };
        self.fd()
            .set_clock(&clock)
            .map_err(HypervisorError::ioctl("KVM_SET_CLOCK"))
    }
}
