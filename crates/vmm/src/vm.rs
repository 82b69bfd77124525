//! Runs a VM: validates the configuration, boots the guest, answers control-API requests, and
//! boots the guest again in place after a reset (unless `on_reboot` is `exit`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arch::cpuid::CpuFeatures;
use hypervisor::{Hypervisor, Vcpu};

use crate::api::ApiReceiver;
use crate::config::{OnReboot, SerialConfig, VmConfig};
use crate::counters::VmCounters;
use crate::device_manager::DeviceManager;
use crate::error::VmmError;
use crate::event_loop::{EventLoop, LoopEvent};
use crate::events::{StopLatch, StopReason};
use crate::firmware::Firmware;
use crate::host::{
    HostCpu, HostCpuQuery, HostLimits, features_error, host_memory_mib, parse_features, validate,
};
use crate::loader::{BootEnvironment, EntryPoint, KernelImage, load_payload};
use crate::memory::{GuestRam, create_guest_memory, discard_guest_memory, memory_slots};
use crate::vcpu::{VcpuShared, spawn_vcpu_thread};
use crate::vcpu_control::{Mode, VcpuControl, VcpuThreads};

/// How a VM run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest powered off (or was powered off through the API).
    PoweredOff,
    /// The guest reset and `on_reboot` is `exit`.
    ResetExit,
    /// The VM crashed; a one-line reason.
    Crashed(String),
}

/// Everything that lives across reboots.
pub(crate) struct Machine {
    pub(crate) hypervisor: Arc<Hypervisor>,
    pub(crate) config: VmConfig,
    pub(crate) memory: GuestRam,
    /// Opened at the first boot that needs it (a restored VM may never reboot).
    pub(crate) kernel: Option<KernelImage>,
    /// The firmware image, when the VM boots firmware instead of a kernel.
    pub(crate) firmware: Option<Firmware>,
    pub(crate) devices: Arc<DeviceManager>,
    pub(crate) latch: Arc<StopLatch>,
    pub(crate) features: CpuFeatures,
    pub(crate) host_cpu: HostCpuQuery,
    pub(crate) counters: Arc<VmCounters>,
    /// Boots so far (1 for the first).
    pub(crate) boots: u32,
    pub(crate) started: Instant,
    /// The last snapshot's directory: the parent of the next diff snapshot.
    pub(crate) last_snapshot: Option<PathBuf>,
}

/// One boot: a KVM VM and its vCPU threads.
pub(crate) struct Boot {
    pub(crate) vm: Arc<hypervisor::Vm>,
    pub(crate) threads: VcpuThreads,
}

/// Builds the VM described by `config` and runs it until it powers off, crashes, or resets
/// with `on_reboot: exit`. Control-API requests arrive through `api`.
pub fn run_vm(config: VmConfig, api: Option<ApiReceiver>) -> Result<VmOutcome, VmmError> {
    let hypervisor = open_checked(&config)?;
    let kernel = match config.payload.firmware {
        Some(_) => None,
        None => Some(KernelImage::open(&config.payload.kernel)?),
    };
    let memory = create_guest_memory(config.memory.size_mib)?;
    let mut machine = Machine::new(hypervisor, config, memory)?;
    machine.kernel = kernel;
    let event_loop = machine.event_loop(api)?;
    let boot = machine.boot(Mode::Run)?;
    machine.run(boot, event_loop)
}

/// Opens KVM and checks `config` against this host, before anything is allocated.
pub(crate) fn open_checked(config: &VmConfig) -> Result<Arc<Hypervisor>, VmmError> {
    let hypervisor = Arc::new(Hypervisor::open()?);
    validate(
        config,
        &HostLimits {
            max_vcpus: hypervisor.max_vcpus(),
            memory_mib: host_memory_mib(),
        },
    )?;
    Ok(hypervisor)
}

impl Machine {
    /// Creates the devices of a machine with `memory`; `config` was checked by `open_checked`.
    pub(crate) fn new(
        hypervisor: Arc<Hypervisor>,
        config: VmConfig,
        memory: GuestRam,
    ) -> Result<Self, VmmError> {
        let features = parse_features(&config.cpus.features)?;
        let firmware = config
            .payload
            .firmware
            .as_deref()
            .map(Firmware::open)
            .transpose()?;
        let host_cpu = HostCpuQuery::start(hypervisor.clone());
        let latch = Arc::new(StopLatch::new().map_err(|e| VmmError::Runtime(e.to_string()))?);
        let counters = Arc::new(VmCounters::default());
        let devices = Arc::new(DeviceManager::new(
            &config,
            latch.clone(),
            &counters,
            &memory,
        )?);
        hypervisor::install_kick_signal_handler()?;
        Ok(Machine {
            hypervisor,
            config,
            memory,
            kernel: None,
            firmware,
            devices,
            latch,
            features,
            host_cpu,
            counters,
            boots: 0,
            started: Instant::now(),
            last_snapshot: None,
        })
    }

    pub(crate) fn event_loop(&self, api: Option<ApiReceiver>) -> Result<EventLoop, VmmError> {
        EventLoop::new(
            self.latch.clone(),
            self.devices.clone(),
            self.config.serial == SerialConfig::Stdio,
            api,
        )
    }

    /// Serves events until the VM ends.
    pub(crate) fn run(
        mut self,
        mut boot: Boot,
        mut event_loop: EventLoop,
    ) -> Result<VmOutcome, VmmError> {
        loop {
            let reason = match event_loop.next_event()? {
                LoopEvent::Api(requests) => {
                    for envelope in requests {
                        let reply = self.handle_api(&boot, envelope.request);
                        let _ = envelope.reply.send(reply);
                    }
                    continue;
                }
                LoopEvent::Stop(reason) => reason,
            };
            boot.stop(&self.devices);
            self.latch.take();
            match reason {
                StopReason::PowerOff => return Ok(VmOutcome::PoweredOff),
                StopReason::Crash(why) => return Ok(VmOutcome::Crashed(why)),
                StopReason::Reset(how) if self.config.on_reboot == OnReboot::Exit => {
                    tracing::info!("guest reset ({how}); exiting as --on-reboot exit asks");
                    return Ok(VmOutcome::ResetExit);
                }
                StopReason::Reset(how) | StopReason::Restart(how) => {
                    tracing::info!("{how}; rebooting in place");
                    self.devices.reset();
                    discard_guest_memory(&self.memory);
                    // A new KVM VM logs no dirty pages: the next diff needs a new full snapshot.
                    self.last_snapshot = None;
                    boot = self.boot(Mode::Run)?;
                }
            }
        }
    }

    /// Creates a KVM VM with this machine's memory slots.
    pub(crate) fn create_kvm_vm(&self) -> Result<hypervisor::Vm, VmmError> {
        let mut vm = self.hypervisor.create_vm(
            arch::layout::KVM_TSS_ADDR,
            arch::layout::KVM_IDENTITY_MAP_ADDR,
        )?;
        for slot in memory_slots(&self.memory) {
            // SAFETY: the slots are `self.memory`'s mappings, which live in `Machine` and are
            // never unmapped while a `Boot` exists (`Boot::stop` drops the VM first).
            unsafe { vm.add_memory(slot)? };
        }
        if let Some(firmware) = &self.firmware {
            firmware.map_into(&mut vm)?;
        }
        Ok(vm)
    }

    /// Creates a KVM VM, loads the payload and starts every vCPU in `mode`.
    fn boot(&mut self, mode: Mode) -> Result<Boot, VmmError> {
        let vm = self.create_kvm_vm()?;
        let entry = self.load_boot_image()?;
        let host = self.host_cpu.get(&self.config, &self.features)?;
        let vcpus = create_vcpus(&self.config, &self.features, host, &vm, entry)?;
        self.start(vm, vcpus, mode)
    }

    /// Loads what the bootstrap processor starts: the firmware (which starts from the reset
    /// vector: `None`), or the kernel with its boot tables.
    fn load_boot_image(&mut self) -> Result<Option<EntryPoint>, VmmError> {
        if let Some(firmware) = &self.firmware {
            firmware.load(&self.memory)?;
            return Ok(None);
        }
        let kernel = match &mut self.kernel {
            Some(kernel) => kernel,
            empty => empty.insert(KernelImage::open(&self.config.payload.kernel)?),
        };
        let entry = load_payload(
            &self.memory,
            kernel,
            &BootEnvironment {
                payload: &self.config.payload,
                memory_bytes: self.config.memory.bytes(),
                vcpu_count: self.config.cpus.count,
            },
        )?;
        Ok(Some(entry))
    }

    /// Attaches the devices to `vm` and starts one thread per vCPU.
    pub(crate) fn start(
        &mut self,
        vm: hypervisor::Vm,
        vcpus: Vec<Vcpu>,
        mode: Mode,
    ) -> Result<Boot, VmmError> {
        let vm = Arc::new(vm);
        self.devices.attach_vm(Some(vm.clone()));
        let control = Arc::new(VcpuControl::new(mode, vcpus.len()));
        let shared = VcpuShared {
            devices: self.devices.clone(),
            stop: self.latch.clone(),
            control: control.clone(),
            counters: self.counters.clone(),
        };
        let vcpus: Vec<(u8, Arc<Mutex<Vcpu>>)> = vcpus
            .into_iter()
            .map(|v| (v.index(), Arc::new(Mutex::new(v))))
            .collect();
        let mut threads = Vec::with_capacity(vcpus.len());
        for (index, vcpu) in &vcpus {
            match spawn_vcpu_thread(vcpu.clone(), *index, shared.clone()) {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    let started = VcpuThreads::new(Vec::new(), threads, control);
                    started.stop();
                    return Err(VmmError::Runtime(format!(
                        "cannot start a vCPU thread: {e}"
                    )));
                }
            }
        }
        let vcpus = vcpus.into_iter().map(|(_, v)| v).collect();
        self.boots += 1;
        Ok(Boot {
            vm,
            threads: VcpuThreads::new(vcpus, threads, control),
        })
    }
}

/// Creates and configures every vCPU; vCPU 0 starts at `entry` (at the reset vector without
/// one), the others wait for INIT/SIPI.
fn create_vcpus(
    config: &VmConfig,
    features: &CpuFeatures,
    host: &HostCpu,
    vm: &hypervisor::Vm,
    entry: Option<EntryPoint>,
) -> Result<Vec<Vcpu>, VmmError> {
    let count = config.cpus.count;
    let msrs = arch::msr::filter_supported(arch::msr::boot_msrs(), &host.msr_indexes);
    let mut vcpus = Vec::with_capacity(usize::from(count));
    let mut tsc_khz = None;
    for index in 0..count {
        let vcpu = vm.create_vcpu(index)?;
        if index == 0 {
            tsc_khz = vcpu.tsc_khz();
        }
        let cpuid =
            arch::cpuid::build_vcpu_cpuid(&host.supported_cpuid, features, index, count, tsc_khz)
                .map_err(|e| features_error(config, &e))?;
        vcpu.set_cpuid(&cpuid)?;
        vcpu.set_msrs(&msrs)?;
        vcpu.setup_lint()?;
        if index == 0 {
            set_boot_registers(&vcpu, entry)?;
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// Puts the bootstrap processor at the entry point, in the mode its boot protocol expects, or
/// in the CPU's reset state for firmware.
fn set_boot_registers(vcpu: &Vcpu, entry: Option<EntryPoint>) -> Result<(), VmmError> {
    let mut sregs = vcpu.sregs()?;
    let regs = match entry {
        Some(EntryPoint::Linux64(addr)) => {
            arch::boot::linux64_sregs(&mut sregs);
            arch::boot::linux64_regs(addr)
        }
        Some(EntryPoint::Pvh(addr)) => {
            arch::boot::pvh_sregs(&mut sregs);
            arch::boot::pvh_regs(addr)
        }
        None => {
            arch::boot::reset_sregs(&mut sregs);
            arch::boot::reset_regs()
        }
    };
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    vcpu.set_fpu(&arch::boot::boot_fpu())?;
    Ok(())
}

impl Boot {
    /// Stops the vCPU threads and detaches the devices from the VM, which is then dropped.
    pub(crate) fn stop(self, devices: &DeviceManager) {
        self.threads.stop();
        devices.attach_vm(None);
        drop(self.vm);
    }
}
