//! Host facts a VM is checked against before it is built: vCPU and memory limits, and what
//! KVM offers this host's vCPUs (asked on a helper thread, see [`HostCpuQuery`]).

use std::sync::Arc;
use std::thread::JoinHandle;

use arch::cpuid::CpuFeatures;
use hypervisor::Hypervisor;
use hypervisor::kvm_bindings::CpuId;

use crate::config::VmConfig;
use crate::error::VmmError;

/// Host facts the configuration is checked against.
pub(crate) struct HostLimits {
    pub(crate) max_vcpus: usize,
    pub(crate) memory_mib: Option<u64>,
}

/// Checks the values a user gives before anything is allocated.
pub(crate) fn validate(config: &VmConfig, host: &HostLimits) -> Result<(), VmmError> {
    validate_payload(&config.payload)?;
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

/// Exactly one of a kernel and a firmware image boots the VM; a firmware takes no kernel
/// options.
fn validate_payload(payload: &crate::config::PayloadConfig) -> Result<(), VmmError> {
    let Some(firmware) = &payload.firmware else {
        if payload.kernel.as_os_str().is_empty() {
            return Err(VmmError::InvalidOption {
                option: "--kernel",
                value: String::new(),
                problem: "a kernel or a firmware image (--firmware) is required".into(),
            });
        }
        return Ok(());
    };
    let kernel_options = [
        ("--kernel", !payload.kernel.as_os_str().is_empty()),
        ("--initrd", payload.initrd.is_some()),
        ("--cmdline", !payload.cmdline.is_empty()),
    ];
    match kernel_options.iter().find(|(_, given)| *given) {
        Some((option, _)) => Err(VmmError::InvalidOption {
            option: "--firmware",
            value: firmware.display().to_string(),
            problem: format!(
                "cannot be used with {option}: the firmware loads what it boots from the disks"
            ),
        }),
        None => Ok(()),
    }
}

pub(crate) fn host_memory_mib() -> Option<u64> {
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
pub(crate) struct HostCpu {
    pub(crate) supported_cpuid: CpuId,
    pub(crate) msr_indexes: Vec<u32>,
}

/// The host CPU query, running on a helper thread until the first boot needs its answer.
pub(crate) struct HostCpuQuery {
    pending: Option<JoinHandle<Result<HostCpu, VmmError>>>,
    inline: Option<Result<HostCpu, VmmError>>,
    ready: Option<HostCpu>,
}

impl HostCpuQuery {
    pub(crate) fn start(hypervisor: Arc<Hypervisor>) -> Self {
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

    /// The answer, if `get` has already succeeded.
    pub(crate) fn ready(&self) -> Option<&HostCpu> {
        self.ready.as_ref()
    }

    /// Waits for the answer; `features` is checked against it the first time, before any vCPU
    /// exists.
    pub(crate) fn get(
        &mut self,
        config: &VmConfig,
        features: &CpuFeatures,
    ) -> Result<&HostCpu, VmmError> {
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

pub(crate) fn parse_features(text: &str) -> Result<CpuFeatures, VmmError> {
    text.parse()
        .map_err(|e: arch::cpuid::CpuidError| VmmError::InvalidOption {
            option: "--cpu-features",
            value: text.to_string(),
            problem: e.to_string(),
        })
}

pub(crate) fn features_error(config: &VmConfig, error: &arch::cpuid::CpuidError) -> VmmError {
    VmmError::InvalidOption {
        option: "--cpu-features",
        value: config.cpus.features.clone(),
        problem: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OnReboot, PayloadConfig, SerialConfig};

    fn config(cpus: u8, mib: u64) -> VmConfig {
        VmConfig {
            payload: PayloadConfig {
                kernel: "/k".into(),
                firmware: None,
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
            rng: None,
            balloon: None,
            disks: Vec::new(),
            console: None,
            nets: Vec::new(),
            vsock: None,
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

    #[test]
    fn a_firmware_excludes_kernel_options_and_something_must_boot() {
        let mut both = config(1, 128);
        both.payload.firmware = Some("/bios.bin".into());
        let mut firmware_and_cmdline = config(1, 128);
        firmware_and_cmdline.payload.kernel = Default::default();
        firmware_and_cmdline.payload.firmware = Some("/bios.bin".into());
        firmware_and_cmdline.payload.cmdline = "quiet".into();
        let mut firmware_only = firmware_and_cmdline.clone();
        firmware_only.payload.cmdline.clear();
        let mut nothing = config(1, 128);
        nothing.payload.kernel = Default::default();

        let both = validate(&both, &HOST).unwrap_err().to_string();
        let with_cmdline = validate(&firmware_and_cmdline, &HOST)
            .unwrap_err()
            .to_string();
        let nothing = validate(&nothing, &HOST).unwrap_err().to_string();

        assert!(
            both.starts_with("--firmware /bios.bin: cannot be used with --kernel"),
            "{both}"
        );
        assert!(with_cmdline.contains("with --cmdline"), "{with_cmdline}");
        assert!(nothing.contains("--firmware"), "{nothing}");
        assert!(validate(&firmware_only, &HOST).is_ok());
    }
}
