//! The vCPU thread: runs one vCPU and dispatches its exits to the buses.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hypervisor::kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use hypervisor::{Vcpu, VcpuExit};

use crate::counters::{ExitKind, VmCounters};
use crate::device_manager::DeviceManager;
use crate::events::{StopLatch, StopReason};
use crate::vcpu_control::VcpuControl;

/// What a vCPU thread shares with the rest of the VMM.
#[derive(Clone)]
pub struct VcpuShared {
    /// Buses and the IOAPIC.
    pub devices: Arc<DeviceManager>,
    /// Where to report that the boot ends.
    pub stop: Arc<StopLatch>,
    /// Run, pause or quit.
    pub control: Arc<VcpuControl>,
    /// Exit counts for the control API.
    pub counters: Arc<VmCounters>,
}

/// Starts the thread of `vcpu`.
pub fn spawn_vcpu_thread(
    vcpu: Arc<Mutex<Vcpu>>,
    index: u8,
    shared: VcpuShared,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            run_vcpu(&vcpu, &shared);
            shared.control.thread_exited();
        })
}

fn lock(vcpu: &Mutex<Vcpu>) -> std::sync::MutexGuard<'_, Vcpu> {
    vcpu.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_vcpu(vcpu: &Mutex<Vcpu>, shared: &VcpuShared) {
    let index = {
        let mut vcpu = lock(vcpu);
        vcpu.attach_to_thread();
        vcpu.index()
    };
    let mut entered = false;
    while shared.control.checkpoint() {
        if !entered {
            // Benchmarks read this line to time restore → first guest instruction.
            tracing::info!("vCPU {index}: entering the guest");
            entered = true;
        }
        let reason = run_once(&mut lock(vcpu), shared);
        if let Some(reason) = reason {
            shared.stop.request(reason);
            break;
        }
    }
    lock(vcpu).detach_from_thread();
}

/// Runs the vCPU to its next exit and handles it; returns why the boot must end, if it must.
fn run_once(vcpu: &mut Vcpu, shared: &VcpuShared) -> Option<StopReason> {
    let index = vcpu.index();
    let devices = &shared.devices;
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) => return Some(StopReason::Crash(format!("vCPU {index}: {e}"))),
    };
    shared.counters.count_exit(ExitKind::of(&exit));
    match exit {
        // A string instruction (`rep ins`/`rep outs`) is several accesses of `size` bytes.
        VcpuExit::IoIn { port, size, data } => {
            for access in data.chunks_mut(size) {
                if !devices.pio.read(u64::from(port), access) {
                    access.fill(0xff);
                }
            }
        }
        VcpuExit::IoOut { port, size, data } => {
            for access in data.chunks(size) {
                if !devices.pio.write(u64::from(port), access) {
                    tracing::trace!("unhandled write to port {port:#x}");
                }
            }
            // A configuration write may have moved a BAR.
            devices.pci.ioevents.sync_if_moved();
        }
        VcpuExit::MmioRead(addr, data) => {
            if !devices.mmio.read(addr, data) {
                data.fill(0xff);
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !devices.mmio.write(addr, data) {
                tracing::trace!("unhandled MMIO write at {addr:#x}");
            }
            devices.pci.ioevents.sync_if_moved();
        }
        VcpuExit::IoapicEoi(vector) => devices
            .ioapic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .end_of_interrupt(vector),
        VcpuExit::Interrupted => vcpu.clear_kick(),
        VcpuExit::Hlt => {}
        VcpuExit::Shutdown => {
            return Some(StopReason::Reset(format!("triple fault on vCPU {index}")));
        }
        VcpuExit::SystemEvent(kind) => return Some(system_event(index, kind)),
        VcpuExit::FailEntry(reason) => {
            dump_registers(vcpu);
            return Some(StopReason::Crash(format!(
                "vCPU {index}: KVM could not enter the guest (hardware entry failure reason {reason:#x})"
            )));
        }
        VcpuExit::InternalError => return Some(internal_error(vcpu)),
        VcpuExit::Other(what) => {
            dump_registers(vcpu);
            return Some(StopReason::Crash(format!(
                "vCPU {index}: unexpected KVM exit {what}"
            )));
        }
    }
    None
}

fn system_event(index: u8, kind: u32) -> StopReason {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::PowerOff,
        KVM_SYSTEM_EVENT_RESET => StopReason::Reset(format!("system reset on vCPU {index}")),
        KVM_SYSTEM_EVENT_CRASH => StopReason::Crash(format!("vCPU {index}: guest crashed")),
        other => StopReason::Crash(format!("vCPU {index}: unknown system event {other}")),
    }
}

fn internal_error(vcpu: &mut Vcpu) -> StopReason {
    let index = vcpu.index();
    let rip = vcpu.regs().map(|r| r.rip).unwrap_or_default();
    let detail = match vcpu.internal_error_info() {
        Some(info) if info.suberror == 1 => {
            "KVM's instruction emulator cannot execute the instruction (emulation failure)"
                .to_string()
        }
        Some(info) => format!("KVM internal error, suberror {}", info.suberror),
        None => "KVM internal error".to_string(),
    };
    dump_registers(vcpu);
    StopReason::Crash(format!("vCPU {index}: {detail} at rip {rip:#x}"))
}

/// Logs the vCPU's registers at debug level, for post-mortems of crashes.
fn dump_registers(vcpu: &Vcpu) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let index = vcpu.index();
    match (vcpu.regs(), vcpu.sregs()) {
        (Ok(r), Ok(s)) => {
            tracing::debug!(
                "vCPU {index} registers: rip={:#x} rsp={:#x} rbp={:#x} rflags={:#x} rax={:#x} \
                 rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} r8={:#x} r9={:#x} r10={:#x} \
                 r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
                r.rip,
                r.rsp,
                r.rbp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            );
            tracing::debug!(
                "vCPU {index} special registers: cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} \
                 efer={:#x} cs={:#x}/{:#x} ss={:#x} gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.cs.selector,
                s.cs.base,
                s.ss.selector,
                s.gdt.base,
                s.gdt.limit,
                s.idt.base,
                s.idt.limit
            );
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!("vCPU {index}: cannot read registers: {e}"),
    }
}
