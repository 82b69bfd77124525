use kvm_bindings::{
    CpuId, KVM_EXIT_INTERNAL_ERROR, KVM_MP_STATE_RUNNABLE, Msrs, kvm_fpu, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_run, kvm_sregs,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};

use crate::{HypervisorError, Result, kick};

/// Local APIC register offsets and LVT delivery modes used to wire LINT0/LINT1 the way firmware
/// does on a PC: LINT0 as ExtINT (the 8259 line), LINT1 as NMI.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Why `KVM_RUN` returned, with the data the caller needs to complete the access.
pub enum VcpuExit<'a> {
    /// `in` from a port: fill `data`, which holds `data.len() / size` consecutive accesses of
    /// `size` bytes to the same port (more than one for a `rep ins` string instruction).
    IoIn {
        /// The port.
        port: u16,
        /// Width of one access: 1, 2 or 4 bytes.
        size: usize,
        /// Where the values go.
        data: &'a mut [u8],
    },
    /// `out` to a port: `data` holds `data.len() / size` accesses of `size` bytes (`rep outs`).
    IoOut {
        /// The port.
        port: u16,
        /// Width of one access: 1, 2 or 4 bytes.
        size: usize,
        /// The values written.
        data: &'a [u8],
    },
    /// A read of unbacked guest-physical memory: fill `data`.
    MmioRead(u64, &'a mut [u8]),
    /// A write to unbacked guest-physical memory.
    MmioWrite(u64, &'a [u8]),
    /// The guest executed `hlt` (only without an in-kernel LAPIC).
    Hlt,
    /// Triple fault or another shutdown condition: the CPU resets.
    Shutdown,
    /// End of interrupt for a level-triggered vector routed through the userspace IOAPIC.
    IoapicEoi(u8),
    /// A system event such as a reset or shutdown request.
    SystemEvent(u32),
    /// KVM failed to enter the guest.
    FailEntry(u64),
    /// KVM could not handle the guest (e.g. an instruction its emulator lacks).
    InternalError,
    /// `KVM_RUN` was interrupted by a signal (a kick).
    Interrupted,
    /// Anything else, by name.
    Other(String),
}

/// Details of a `KVM_EXIT_INTERNAL_ERROR`.
#[derive(Debug, Clone)]
pub struct InternalErrorInfo {
    /// KVM_INTERNAL_ERROR_* suberror (1 = emulation failure).
    pub suberror: u32,
    /// Extra words KVM reported.
    pub data: Vec<u64>,
}

/// One virtual CPU.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, index: u8) -> Self {
        Vcpu { fd, index }
    }

    /// The vCPU's index (and APIC ID).
    pub fn index(&self) -> u8 {
        self.index
    }

    pub(crate) fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Sets the CPUID the guest sees.
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(HypervisorError::ioctl("KVM_SET_CPUID2"))
    }

    /// Writes MSRs; fails if KVM refuses any of them.
    pub fn set_msrs(&self, entries: &[kvm_msr_entry]) -> Result<()> {
        let msrs = Msrs::from_entries(entries).map_err(|_| HypervisorError::Ioctl {
            operation: "KVM_SET_MSRS (too many entries)",
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        let written = self
            .fd
            .set_msrs(&msrs)
            .map_err(HypervisorError::ioctl("KVM_SET_MSRS"))?;
        if written != entries.len() {
            let refused = entries.get(written).map_or(0, |e| e.index);
            return Err(HypervisorError::Ioctl {
                operation: "KVM_SET_MSRS",
                source: std::io::Error::other(format!("KVM refused MSR {refused:#x}")),
            });
        }
        Ok(())
    }

    /// Sets the general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd
            .set_regs(regs)
            .map_err(HypervisorError::ioctl("KVM_SET_REGS"))
    }

    /// Reads the general-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd
            .get_regs()
            .map_err(HypervisorError::ioctl("KVM_GET_REGS"))
    }

    /// Reads the special registers.
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd
            .get_sregs()
            .map_err(HypervisorError::ioctl("KVM_GET_SREGS"))
    }

    /// Sets the special registers.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd
            .set_sregs(sregs)
            .map_err(HypervisorError::ioctl("KVM_SET_SREGS"))
    }

    /// Sets the FPU state.
    pub fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd
            .set_fpu(fpu)
            .map_err(HypervisorError::ioctl("KVM_SET_FPU"))
    }

    /// Marks the vCPU runnable (used for the bootstrap processor).
    pub fn set_runnable(&self) -> Result<()> {
        let state = kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        };
        self.fd
            .set_mp_state(state)
            .map_err(HypervisorError::ioctl("KVM_SET_MP_STATE"))
    }

    /// The TSC frequency of this vCPU in kHz, if KVM knows it.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.fd.get_tsc_khz().ok().filter(|&khz| khz != 0)
    }

    /// Wires LINT0 as ExtINT and LINT1 as NMI, as PC firmware leaves them.
    pub fn setup_lint(&self) -> Result<()> {
        let mut lapic: kvm_lapic_state = self
            .fd
            .get_lapic()
            .map_err(HypervisorError::ioctl("KVM_GET_LAPIC"))?;
        set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
        self.fd
            .set_lapic(&lapic)
            .map_err(HypervisorError::ioctl("KVM_SET_LAPIC"))
    }

    /// Details of the last internal-error exit.
    pub fn internal_error_info(&mut self) -> Option<InternalErrorInfo> {
        let run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
            return None;
        }
        // SAFETY: exit_reason says the `internal` member of the union is the valid one.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let count = (internal.ndata as usize).min(internal.data.len());
        Some(InternalErrorInfo {
            suberror: internal.suberror,
            data: internal.data[..count].to_vec(),
        })
    }

    /// Makes the kick signal able to interrupt this vCPU on the calling thread. Call on the
    /// vCPU's own thread before `run`, and `detach_from_thread` before dropping the vCPU.
    pub fn attach_to_thread(&mut self) {
        kick::set_thread_run_page(self.fd.get_kvm_run());
    }

    /// Undoes `attach_to_thread`.
    pub fn detach_from_thread(&mut self) {
        kick::set_thread_run_page(std::ptr::null_mut());
    }

    /// Runs the vCPU until the next exit that needs userspace. After `Interrupted`, call
    /// `clear_kick` before running again, or every later run returns at once.
    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        // Taken before `KVM_RUN` so that an I/O exit's access width can be read after it while
        // the exit borrows the vCPU (kvm-ioctls reports only the total byte count).
        let run_page: *const kvm_run = self.fd.get_kvm_run();
        match self.fd.run() {
            Ok(exit) => Ok(convert_exit(exit, run_page)),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VcpuExit::Interrupted)
            }
            Err(e) => Err(HypervisorError::ioctl("KVM_RUN")(e)),
        }
    }

    /// Clears a kick so the next `run` enters the guest.
    pub fn clear_kick(&mut self) {
        self.fd.set_kvm_immediate_exit(0);
    }
}

/// The width of each access of the I/O exit that `KVM_RUN` just returned, `total` bytes in all.
fn io_access_size(run_page: *const kvm_run, total: usize) -> usize {
    // SAFETY: `run_page` is this vCPU's `kvm_run` mapping, which lives as long as the vCPU fd
    // (kick.rs keeps the same pointer for the same reason). `KVM_RUN` has returned, so the kernel
    // is not writing the page, and the exit reason is KVM_EXIT_IO, so `io` is the valid union
    // member. The read touches only the `io` header, not the data area the exit's slice borrows.
    let size = unsafe { std::ptr::addr_of!((*run_page).__bindgen_anon_1.io.size).read() };
    let size = usize::from(size);
    // KVM only reports widths 1, 2 and 4 that divide the total; anything else is treated as one
    // access of the whole length rather than trusted.
    if matches!(size, 1 | 2 | 4) && total.is_multiple_of(size) {
        size
    } else {
        total.max(1)
    }
}

fn convert_exit(exit: KvmExit<'_>, run_page: *const kvm_run) -> VcpuExit<'_> {
    match exit {
        KvmExit::IoIn(port, data) => VcpuExit::IoIn {
            port,
            size: io_access_size(run_page, data.len()),
            data,
        },
        KvmExit::IoOut(port, data) => VcpuExit::IoOut {
            port,
            size: io_access_size(run_page, data.len()),
            data,
        },
        KvmExit::MmioRead(addr, data) => VcpuExit::MmioRead(addr, data),
        KvmExit::MmioWrite(addr, data) => VcpuExit::MmioWrite(addr, data),
        KvmExit::Hlt => VcpuExit::Hlt,
        KvmExit::Shutdown => VcpuExit::Shutdown,
        KvmExit::IoapicEoi(vector) => VcpuExit::IoapicEoi(vector),
        KvmExit::SystemEvent(kind, _) => VcpuExit::SystemEvent(kind),
        KvmExit::FailEntry(reason, _) => VcpuExit::FailEntry(reason),
        KvmExit::InternalError => VcpuExit::InternalError,
        KvmExit::Intr => VcpuExit::Interrupted,
        other => VcpuExit::Other(format!("{other:?}")),
    }
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, register: usize, mode: u32) {
    let bytes: Vec<u8> = lapic.regs[register..register + 4]
        .iter()
        .map(|&b| b as u8)
        .collect();
    let mut value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    value = (value & !0x700) | (mode << 8);
    for (slot, byte) in lapic.regs[register..register + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *slot = byte as libc::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_access_size_is_the_width_of_one_access_of_a_string_instruction() {
        let mut run = kvm_run::default();
        run.__bindgen_anon_1.io.size = 1;
        let rep_insb = io_access_size(&run, 56);
        run.__bindgen_anon_1.io.size = 2;
        let rep_insw = io_access_size(&run, 8);
        let odd = io_access_size(&run, 3);
        run.__bindgen_anon_1.io.size = 0;
        let zero = io_access_size(&run, 4);

        assert_eq!((rep_insb, rep_insw), (1, 2));
        assert_eq!((odd, zero), (3, 4), "implausible widths become one access");
    }

    #[test]
    fn lvt_mode_replaces_only_the_delivery_mode_bits() {
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[APIC_LVT1] = 0xff_u8 as libc::c_char;
        lapic.regs[APIC_LVT1 + 1] = 0x07;
        lapic.regs[APIC_LVT1 + 2] = 0x01;

        set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);

        assert_eq!(lapic.regs[APIC_LVT1] as u8, 0xff);
        assert_eq!(lapic.regs[APIC_LVT1 + 1] as u8, 0x04);
        assert_eq!(lapic.regs[APIC_LVT1 + 2] as u8, 0x01);
    }
}
