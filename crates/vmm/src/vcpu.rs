//! The vCPU thread: runs one vCPU and dispatches its exits to the buses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use hypervisor::kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use hypervisor::{Vcpu, VcpuExit};

use crate::device_manager::DeviceManager;
use crate::events::{StopLatch, StopReason};

/// What a vCPU thread shares with the rest of the VMM.
#[derive(Clone)]
pub struct VcpuShared {
    /// Buses and the IOAPIC.
    pub devices: Arc<DeviceManager>,
    /// Where to report that the boot ends.
    pub stop: Arc<StopLatch>,
    /// Set when every vCPU thread must return.
    pub quit: Arc<AtomicBool>,
}

/// Starts the thread of `vcpu`.
pub fn spawn_vcpu_thread(vcpu: Vcpu, shared: VcpuShared) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{}", vcpu.index()))
        .spawn(move || run_vcpu(vcpu, &shared))
}

fn run_vcpu(mut vcpu: Vcpu, shared: &VcpuShared) {
    vcpu.attach_to_thread();
    while !shared.quit.load(Ordering::SeqCst) {
        if let Some(reason) = run_once(&mut vcpu, shared) {
            shared.stop.request(reason);
            break;
        }
    }
    vcpu.detach_from_thread();
}

/// Runs the vCPU to its next exit and handles it; returns why the boot must end, if it must.
fn run_once(vcpu: &mut Vcpu, shared: &VcpuShared) -> Option<StopReason> {
    let index = vcpu.index();
    let devices = &shared.devices;
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) => return Some(StopReason::Crash(format!("vCPU {index}: {e}"))),
    };
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !devices.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
        }
        VcpuExit::IoOut(port, data) => {
            if !devices.pio.write(u64::from(port), data) {
                tracing::trace!("unhandled write to port {port:#x}");
            }
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

/// Stops every vCPU thread: raises `quit`, kicks each thread out of `KVM_RUN` until it
/// returns, and joins it.
pub fn stop_vcpu_threads(quit: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    /// Re-kick a thread that has not returned after this long (a kick that raced with the
    /// thread's entry into `KVM_RUN` is caught by `immediate_exit`, so this is a safety net).
    const REKICK_AFTER: std::time::Duration = std::time::Duration::from_millis(10);
    quit.store(true, Ordering::SeqCst);
    for handle in &threads {
        if !handle.is_finished() {
            hypervisor::VcpuKicker::for_thread(handle).kick();
        }
    }
    for handle in threads {
        let kicker = hypervisor::VcpuKicker::for_thread(&handle);
        let mut last_kick = std::time::Instant::now();
        while !handle.is_finished() {
            if last_kick.elapsed() > REKICK_AFTER {
                kicker.kick();
                last_kick = std::time::Instant::now();
            }
            std::thread::yield_now();
        }
        if handle.join().is_err() {
            tracing::error!("a vCPU thread panicked");
        }
    }
}
