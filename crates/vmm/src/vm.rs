//! Runs a VM: validates the configuration, then boots the guest, and boots it again in place
//! after each guest reset when `on_reboot` is `restart`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use arch::cpuid::CpuFeatures;
use hypervisor::kvm_bindings::CpuId;
use hypervisor::{Hypervisor, Vcpu};
use vm_memory::GuestMemoryMmap;

use crate::config::{OnReboot, SerialConfig, VmConfig};
use crate::device_manager::DeviceManager;
use crate::error::VmmError;
use crate::event_loop::EventLoop;
use crate::events::{StopLatch, StopReason};
use crate::loader::{BootEnvironment, EntryPoint, KernelImage, load_payload};
use crate::memory::{create_guest_memory, discard_guest_memory, memory_slots};
use crate::vcpu::{VcpuShared, spawn_vcpu_thread, stop_vcpu_threads};

/// How a VM run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest powered off.
    PoweredOff,
    /// The guest reset and `on_reboot` is `exit`.
    ResetExit,
    /// The VM crashed; a one-line reason.
    Crashed(String),
}

/// Host facts the configuration is checked against.
struct HostLimits {
    max_vcpus: usize,
    memory_mib: Option<u64>,
}

/// Checks the values a user gives before anything is allocated.
fn validate(config: &VmConfig, host: &HostLimits) -> Result<(), VmmError> {
    let cpus = config.cpus.count;
    let max_cpus = host.max_vcpus.min(usize::from(u8::MAX));
    if cpus == 0 {
        return Err(VmmError::InvalidOption {
            option: "--cpus",
            value: "0".into(),
            problem: "a VM needs at least one vCPU".into(),
        });
    }
    if usize::from(cpus) > max_cpus {
        return Err(VmmError::InvalidOption {
            option: "--cpus",
            value: cpus.to_string(),
            problem: format!("above the {max_cpus} vCPUs this host's KVM supports"),
        });
    }
    let mib = config.memory.size_mib;
    if mib == 0 {
        return Err(VmmError::InvalidOption {
            option: "--memory",
            value: "0".into(),
            problem: "guest memory must be at least 1 MiB".into(),
        });
    }
    if let Some(host_mib) = host.memory_mib
        && mib > host_mib
    {
        return Err(VmmError::InvalidOption {
            option: "--memory",
            value: format!("{mib}M"),
            problem: format!("more than the host's {host_mib} MiB of RAM"),
        });
    }
    Ok(())
}

fn host_memory_mib() -> Option<u64> {
    // SAFETY: an all-zero `sysinfo` is a valid value of this plain C struct.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo(2) only writes the struct we pass, which lives for the call.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    let bytes = info.totalram.checked_mul(u64::from(info.mem_unit))?;
    Some(bytes >> 20)
}

/// What KVM offers this host's vCPUs: asked on a helper thread at start-up, because
/// `KVM_GET_SUPPORTED_CPUID` is slow on some hosts (each `cpuid` traps to an outer hypervisor)
/// and nothing before vCPU creation needs it.
struct HostCpu {
    supported_cpuid: CpuId,
    msr_indexes: Vec<u32>,
}

/// The host CPU query, running on a helper thread until the first boot needs its answer.
struct HostCpuQuery {
    pending: Option<JoinHandle<Result<HostCpu, VmmError>>>,
    inline: Option<Result<HostCpu, VmmError>>,
    ready: Option<HostCpu>,
}

impl HostCpuQuery {
    fn start(hypervisor: Arc<Hypervisor>) -> Self {
        let query = move || {
            Ok(HostCpu {
                supported_cpuid: hypervisor.supported_cpuid()?,
                msr_indexes: hypervisor.msr_index_list()?,
            })
        };
        let spawned = std::thread::Builder::new()
            .name("cpuid-query".into())
            .spawn(query.clone());
        let (pending, inline) = match spawned {
            Ok(handle) => (Some(handle), None),
            // No thread to spare: ask on this one.
            Err(_) => (None, Some(query())),
        };
        HostCpuQuery {
            pending,
            inline,
            ready: None,
        }
    }

    /// Waits for the answer; `features` is checked against it the first time, before any vCPU
    /// exists.
    fn get(&mut self, config: &VmConfig, features: &CpuFeatures) -> Result<&HostCpu, VmmError> {
        if self.ready.is_none() {
            let result = match (self.pending.take(), self.inline.take()) {
                (Some(handle), _) => handle
                    .join()
                    .map_err(|_| VmmError::Runtime("the CPUID query thread panicked".into()))?,
                (None, Some(result)) => result,
                (None, None) => {
                    return Err(VmmError::Runtime("the CPUID query failed earlier".into()));
                }
            };
            let host = result?;
            arch::cpuid::build_vcpu_cpuid(
                &host.supported_cpuid,
                features,
                0,
                config.cpus.count,
                None,
            )
            .map_err(|e| features_error(config, &e))?;
            self.ready = Some(host);
        }
        self.ready
            .as_ref()
            .ok_or_else(|| VmmError::Runtime("the CPUID query failed earlier".into()))
    }
}

fn parse_features(text: &str) -> Result<CpuFeatures, VmmError> {
    text.parse()
        .map_err(|e: arch::cpuid::CpuidError| VmmError::InvalidOption {
            option: "--cpu-features",
            value: text.to_string(),
            problem: e.to_string(),
        })
}

fn features_error(config: &VmConfig, error: &arch::cpuid::CpuidError) -> VmmError {
    VmmError::InvalidOption {
        option: "--cpu-features",
        value: config.cpus.features.clone(),
        problem: error.to_string(),
    }
}

/// Everything that lives across reboots.
struct Machine {
    hypervisor: Arc<Hypervisor>,
    config: VmConfig,
    memory: GuestMemoryMmap,
    kernel: KernelImage,
    devices: Arc<DeviceManager>,
    latch: Arc<StopLatch>,
    features: CpuFeatures,
    host_cpu: HostCpuQuery,
}

/// One boot: a KVM VM and its running vCPU threads.
struct Boot {
    vm: Arc<hypervisor::Vm>,
    threads: Vec<JoinHandle<()>>,
    quit: Arc<AtomicBool>,
}

/// Builds the VM described by `config` and runs it until it powers off, crashes, or resets
/// with `on_reboot: exit`.
pub fn run_vm(config: VmConfig) -> Result<VmOutcome, VmmError> {
    let hypervisor = Arc::new(Hypervisor::open()?);
    validate(
        &config,
        &HostLimits {
            max_vcpus: hypervisor.max_vcpus(),
            memory_mib: host_memory_mib(),
        },
    )?;
    let features = parse_features(&config.cpus.features)?;
    let host_cpu = HostCpuQuery::start(hypervisor.clone());
    let kernel = KernelImage::open(&config.payload.kernel)?;
    let memory = create_guest_memory(config.memory.size_mib)?;
    let latch = Arc::new(StopLatch::new().map_err(|e| VmmError::Runtime(e.to_string()))?);
    let devices = Arc::new(DeviceManager::new(&config, latch.clone())?);
    hypervisor::install_kick_signal_handler()?;
    let mut event_loop = EventLoop::new(
        latch.clone(),
        devices.clone(),
        config.serial == SerialConfig::Stdio,
    )?;
    let mut machine = Machine {
        hypervisor,
        config,
        memory,
        kernel,
        devices,
        latch,
        features,
        host_cpu,
    };
    loop {
        let boot = machine.boot()?;
        let reason = event_loop.wait_for_stop()?;
        boot.stop(&machine.devices);
        machine.latch.take();
        match reason {
            StopReason::PowerOff => return Ok(VmOutcome::PoweredOff),
            StopReason::Crash(why) => return Ok(VmOutcome::Crashed(why)),
            StopReason::Reset(how) => {
                if machine.config.on_reboot == OnReboot::Exit {
                    tracing::info!("guest reset ({how}); exiting as --on-reboot exit asks");
                    return Ok(VmOutcome::ResetExit);
                }
                tracing::info!("guest reset ({how}); rebooting in place");
                machine.devices.reset();
                discard_guest_memory(&machine.memory);
            }
        }
    }
}

impl Machine {
    /// Creates a KVM VM, loads the payload and starts every vCPU.
    fn boot(&mut self) -> Result<Boot, VmmError> {
        let mut vm = self.hypervisor.create_vm(
            arch::layout::KVM_TSS_ADDR,
            arch::layout::KVM_IDENTITY_MAP_ADDR,
        )?;
        for slot in memory_slots(&self.memory) {
            // SAFETY: the slots are `self.memory`'s mappings, which live in `Machine` and are
            // never unmapped while a `Boot` exists (`Boot::stop` drops the VM first).
            unsafe { vm.add_memory(slot)? };
        }
        let entry = load_payload(
            &self.memory,
            &mut self.kernel,
            &BootEnvironment {
                payload: &self.config.payload,
                memory_bytes: self.config.memory.size_mib << 20,
                vcpu_count: self.config.cpus.count,
            },
        )?;
        let host = self.host_cpu.get(&self.config, &self.features)?;
        let vcpus = create_vcpus(&self.config, &self.features, host, &vm, entry)?;
        let vm = Arc::new(vm);
        self.devices.attach_vm(Some(vm.clone()));
        let quit = Arc::new(AtomicBool::new(false));
        let shared = VcpuShared {
            devices: self.devices.clone(),
            stop: self.latch.clone(),
            quit: quit.clone(),
        };
        let mut threads = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            match spawn_vcpu_thread(vcpu, shared.clone()) {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    stop_vcpu_threads(&quit, threads);
                    return Err(VmmError::Runtime(format!(
                        "cannot start a vCPU thread: {e}"
                    )));
                }
            }
        }
        Ok(Boot { vm, threads, quit })
    }
}

/// Creates and configures every vCPU; vCPU 0 starts at `entry`, the others wait for INIT/SIPI.
fn create_vcpus(
    config: &VmConfig,
    features: &CpuFeatures,
    host: &HostCpu,
    vm: &hypervisor::Vm,
    entry: EntryPoint,
) -> Result<Vec<Vcpu>, VmmError> {
    {
        let count = config.cpus.count;
        let msrs = arch::msr::filter_supported(arch::msr::boot_msrs(), &host.msr_indexes);
        let mut vcpus = Vec::with_capacity(usize::from(count));
        let mut tsc_khz = None;
        for index in 0..count {
            let vcpu = vm.create_vcpu(index)?;
            if index == 0 {
                tsc_khz = vcpu.tsc_khz();
            }
            let cpuid = arch::cpuid::build_vcpu_cpuid(
                &host.supported_cpuid,
                features,
                index,
                count,
                tsc_khz,
            )
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
}

/// Puts the bootstrap processor at the entry point, in the mode its boot protocol expects.
fn set_boot_registers(vcpu: &Vcpu, entry: EntryPoint) -> Result<(), VmmError> {
    let mut sregs = vcpu.sregs()?;
    let regs = match entry {
        EntryPoint::Linux64(addr) => {
            arch::boot::linux64_sregs(&mut sregs);
            arch::boot::linux64_regs(addr)
        }
        EntryPoint::Pvh(addr) => {
            arch::boot::pvh_sregs(&mut sregs);
            arch::boot::pvh_regs(addr)
        }
    };
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    vcpu.set_fpu(&arch::boot::boot_fpu())?;
    Ok(())
}

impl Boot {
    /// Stops the vCPU threads and detaches the devices from the VM, which is then dropped.
    fn stop(self, devices: &DeviceManager) {
        stop_vcpu_threads(&self.quit, self.threads);
        devices.attach_vm(None);
        drop(self.vm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PayloadConfig;

    fn config(cpus: u8, mib: u64) -> VmConfig {
        VmConfig {
            payload: PayloadConfig {
                kernel: "/k".into(),
                initrd: None,
                cmdline: String::new(),
                boot_protocol: Default::default(),
            },
            cpus: crate::config::CpusConfig {
                count: cpus,
                features: String::new(),
            },
            memory: crate::config::MemoryConfig { size_mib: mib },
            serial: SerialConfig::Off,
            on_reboot: OnReboot::Restart,
        }
    }

    const HOST: HostLimits = HostLimits {
        max_vcpus: 4,
        memory_mib: Some(1024),
    };

    #[test]
    fn zero_and_too_many_cpus_are_refused_naming_the_option() {
        let zero = validate(&config(0, 128), &HOST).unwrap_err().to_string();
        assert!(zero.starts_with("--cpus 0:"), "{zero}");
        let many = validate(&config(5, 128), &HOST).unwrap_err().to_string();
        assert!(
            many.starts_with("--cpus 5:") && many.contains("4 vCPUs"),
            "{many}"
        );
        assert!(validate(&config(4, 128), &HOST).is_ok());
    }

    #[test]
    fn zero_and_too_much_memory_are_refused_naming_the_option() {
        let zero = validate(&config(1, 0), &HOST).unwrap_err().to_string();
        assert!(zero.starts_with("--memory 0:"), "{zero}");
        let big = validate(&config(1, 2048), &HOST).unwrap_err().to_string();
        assert!(
            big.starts_with("--memory 2048M:") && big.contains("1024 MiB"),
            "{big}"
        );
    }
}
