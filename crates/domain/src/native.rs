//! [`DomainDef`] → oxvmm's [`VmConfig`], for the native driver.
//!
//! Everything the definition asks for is either given to oxvmm or refused with the path of what
//! cannot be done: a VM that silently lacks a NIC or runs its clock in the wrong zone is worse
//! than one that does not start. The runtime paths only the daemon knows (the sockets behind a
//! `pty` serial port or console) come in as [`NativeRuntime`].

use std::path::PathBuf;

use vmm_api::VmConfig;
use vmm_api::config::{
    BalloonConfig, BootProtocol, ConsoleConfig, CpusConfig, DISK_SERIAL_MAX, DiskConfig,
    MemoryConfig, NetConfig, OnReboot, PayloadConfig, RngConfig, SerialConfig, VsockConfig,
};

use crate::model::{
    Bandwidth, CharDevice, ClockOffset, Cpu, DiskCache, DomainDef, DomainType, FeaturePolicy,
    LifecycleAction, Loader, LoaderType, MemBalloon, VsockCid,
};

/// The most vCPUs oxvmm runs (its `--cpus` limit).
pub const MAX_NATIVE_VCPUS: u32 = 254;

/// Where a definition asks for what the native driver cannot give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    /// The daemon did not supply a runtime value the definition needs.
    #[error("{path}: the daemon gave no {what}")]
    MissingRuntime {
        /// The element that needs it.
        path: String,
        /// Which value.
        what: String,
    },
    /// The native driver cannot do this (a property of oxvmm's machine).
    #[error("not supported by the native driver: {path}: {reason}")]
    Unsupported {
        /// The element or attribute.
        path: String,
        /// Why, and what to write instead.
        reason: String,
    },
}

impl NativeError {
    /// The XML path the error is about.
    pub fn path(&self) -> &str {
        match self {
            NativeError::MissingRuntime { path, .. } | NativeError::Unsupported { path, .. } => {
                path
            }
        }
    }

    fn unsupported(path: &str, reason: impl Into<String>) -> Self {
        NativeError::Unsupported {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

/// Paths the daemon chooses for one start of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeRuntime {
    /// The Unix socket oxvmm listens on for a `pty` serial port; the daemon connects to it and
    /// relays a pseudo-terminal (and `virsh console`).
    pub serial_socket: PathBuf,
    /// The same for a `pty` virtio console.
    pub console_socket: PathBuf,
    /// The TAP device the daemon chose for each interface (in `devices.interfaces` order) that
    /// names none in `<target dev>`; entries for interfaces that do are not used. For a bridge
    /// interface the daemon also adds the TAP device to the bridge: oxvmm only opens (or
    /// creates) it.
    pub interface_taps: Vec<String>,
    /// Where oxvmm listens for host connections to the guest's vsock (`<vsock>`).
    pub vsock_socket: PathBuf,
    /// The CID a `<cid auto='yes'/>` guest gets; the daemon picks one no running guest has.
    pub auto_vsock_cid: u32,
}

/// Builds oxvmm's configuration for a domain.
pub fn to_vm_config(def: &DomainDef, runtime: &NativeRuntime) -> Result<VmConfig, NativeError> {
    check_machine(def)?;
    let devices = &def.devices;
    Ok(VmConfig {
        payload: payload(def)?,
        cpus: cpus(def)?,
        memory: MemoryConfig {
            size_mib: memory_mib(def)?,
        },
        serial: serial(devices.serial.as_ref(), runtime),
        on_reboot: match def.on_reboot {
            LifecycleAction::Restart => OnReboot::Restart,
            LifecycleAction::Destroy => OnReboot::Exit,
        },
        rng: devices.rng.as_ref().map(|rng| RngConfig {
            src: rng.backend.clone(),
        }),
        balloon: balloon(def),
        disks: disks(def)?,
        console: devices
            .virtio_console
            .as_ref()
            .map(|console| virtio_console(console, runtime)),
        nets: nets(def, runtime)?,
        vsock: devices.vsock.as_ref().map(|vsock| VsockConfig {
            cid: u64::from(match vsock.cid {
                VsockCid::Auto => runtime.auto_vsock_cid,
                VsockCid::Fixed(cid) => cid,
            }),
            socket: runtime.vsock_socket.clone(),
        }),
    })
}

/// What oxvmm's machine always is, checked against what the definition says it is.
fn check_machine(def: &DomainDef) -> Result<(), NativeError> {
    if def.domain_type != DomainType::Kvm {
        return Err(NativeError::unsupported(
            "/domain/@type",
            format!(
                "{:?} is for the QEMU driver; the native driver runs type 'kvm'",
                def.domain_type.as_str()
            ),
        ));
    }
    let features = def.features;
    if !features.acpi || !features.apic {
        let missing = if features.acpi { "apic" } else { "acpi" };
        return Err(NativeError::unsupported(
            &format!("/domain/features/{missing}"),
            "oxvmm's machine always has ACPI and an APIC: declare <acpi/> and <apic/> in \
             <features>",
        ));
    }
    if def.clock == ClockOffset::Localtime {
        return Err(NativeError::unsupported(
            "/domain/clock/@offset",
            "'localtime': oxvmm's RTC keeps UTC (use offset='utc')",
        ));
    }
    Ok(())
}

fn payload(def: &DomainDef) -> Result<PayloadConfig, NativeError> {
    let os = &def.os;
    let firmware = match (&os.loader, &os.kernel) {
        (Some(_), Some(_)) => {
            return Err(NativeError::unsupported(
                "/domain/os/loader",
                "oxvmm boots either firmware or a <kernel>, not firmware that then loads a kernel",
            ));
        }
        (Some(loader), None) => Some(firmware(loader)?),
        (None, Some(_)) => None,
        (None, None) => {
            return Err(NativeError::unsupported(
                "/domain/os",
                "nothing to boot: give <kernel>PATH</kernel> or <loader>FIRMWARE</loader>",
            ));
        }
    };
    Ok(PayloadConfig {
        kernel: os.kernel.clone().unwrap_or_default(),
        firmware,
        initrd: os.initrd.clone(),
        cmdline: os.cmdline.clone().unwrap_or_default(),
        boot_protocol: BootProtocol::Auto,
    })
}

/// oxvmm maps a firmware image as a ROM below 4 GiB (SeaBIOS); flash (UEFI) it does not have.
fn firmware(loader: &Loader) -> Result<PathBuf, NativeError> {
    if loader.kind == Some(LoaderType::Pflash) {
        return Err(NativeError::unsupported(
            "/domain/os/loader/@type",
            "'pflash': oxvmm has no flash device; firmware is a ROM (type='rom')",
        ));
    }
    if loader.readonly == Some(false) {
        return Err(NativeError::unsupported(
            "/domain/os/loader/@readonly",
            "'no': oxvmm maps firmware read-only",
        ));
    }
    Ok(loader.path.clone())
}

fn cpus(def: &DomainDef) -> Result<CpusConfig, NativeError> {
    let count = u8::try_from(def.vcpus)
        .ok()
        .filter(|&n| u32::from(n) <= MAX_NATIVE_VCPUS)
        .ok_or_else(|| {
            NativeError::unsupported(
                "/domain/vcpu",
                format!("{} vCPUs: oxvmm runs at most {MAX_NATIVE_VCPUS}", def.vcpus),
            )
        })?;
    Ok(CpusConfig {
        count,
        features: def.cpu.as_ref().map(cpu_features).unwrap_or_default(),
    })
}

/// libvirt's feature names (`sse4.2`, `tsc-deadline`) in oxvmm's `--cpu-features` spelling
/// (`+sse4_2`, `-avx`); oxvmm checks the names when the VM starts.
fn cpu_features(cpu: &Cpu) -> String {
    let items: Vec<String> = cpu
        .features
        .iter()
        .map(|feature| {
            let sign = match feature.policy {
                FeaturePolicy::Require => '+',
                FeaturePolicy::Disable => '-',
            };
            format!("{sign}{}", feature.name.replace(['.', '-'], "_"))
        })
        .collect();
    items.join(",")
}

fn memory_mib(def: &DomainDef) -> Result<u64, NativeError> {
    if !def.memory_kib.is_multiple_of(1024) {
        return Err(NativeError::unsupported(
            "/domain/memory",
            format!(
                "{} KiB is not a whole number of MiB, the unit oxvmm sizes RAM in",
                def.memory_kib
            ),
        ));
    }
    Ok(def.memory_kib / 1024)
}

/// The balloon holds what `<currentMemory>` takes away from `<memory>`, rounded down to MiB.
fn balloon(def: &DomainDef) -> Option<BalloonConfig> {
    match def.devices.memballoon {
        MemBalloon::None => None,
        MemBalloon::Virtio {
            autodeflate,
            stats_period,
        } => Some(BalloonConfig {
            size_mib: def.memory_kib.saturating_sub(def.current_memory_kib) / 1024,
            deflate_on_oom: autodeflate == Some(true),
            stats: stats_period.is_some_and(|period| period > 0),
        }),
    }
}

fn disks(def: &DomainDef) -> Result<Vec<DiskConfig>, NativeError> {
    def.devices
        .disks
        .iter()
        .enumerate()
        .map(|(i, disk)| {
            if let Some(serial) = &disk.serial
                && serial.len() > DISK_SERIAL_MAX
            {
                return Err(NativeError::unsupported(
                    &format!("/domain/devices/disk[{}]/serial", i + 1),
                    format!("{serial:?} is longer than virtio-blk's {DISK_SERIAL_MAX} bytes"),
                ));
            }
            Ok(DiskConfig {
                path: disk.source.clone(),
                readonly: disk.readonly,
                direct: disk.cache == Some(DiskCache::None),
                serial: disk.serial.clone(),
                id: Some(disk.target.clone()),
                bw: disk.iotune.total_bytes_sec,
                iops: disk.iotune.total_iops_sec,
            })
        })
        .collect()
}

fn serial(serial: Option<&CharDevice>, runtime: &NativeRuntime) -> SerialConfig {
    match serial {
        None | Some(CharDevice::Null) => SerialConfig::Off,
        Some(CharDevice::File { path }) => SerialConfig::File(path.clone()),
        Some(CharDevice::UnixBind { path }) => SerialConfig::Socket(path.clone()),
        Some(CharDevice::Pty) => SerialConfig::Socket(runtime.serial_socket.clone()),
    }
}

fn virtio_console(console: &CharDevice, runtime: &NativeRuntime) -> ConsoleConfig {
    match console {
        CharDevice::Null => ConsoleConfig::File(PathBuf::from("/dev/null")),
        CharDevice::File { path } => ConsoleConfig::File(path.clone()),
        CharDevice::UnixBind { path } => ConsoleConfig::Socket(path.clone()),
        CharDevice::Pty => ConsoleConfig::Socket(runtime.console_socket.clone()),
    }
}

/// One virtio-net card per interface, in document order (their PCI order).
fn nets(def: &DomainDef, runtime: &NativeRuntime) -> Result<Vec<NetConfig>, NativeError> {
    def.devices
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            let tap = match &nic.target {
                Some(target) => target.dev.clone(),
                None => runtime.interface_taps.get(i).cloned().ok_or_else(|| {
                    NativeError::MissingRuntime {
                        path: format!("/domain/devices/interface[{}]", i + 1),
                        what: "TAP device name for it (NativeRuntime::interface_taps)".into(),
                    }
                })?,
            };
            Ok(NetConfig {
                tap: Some(tap),
                fd: None,
                mac: Some(nic.mac.to_string()),
                id: Some(format!("net{i}")),
                bw: nic_rate(&nic.bandwidth, i)?,
                ops: None,
            })
        })
        .collect()
}

/// oxvmm limits each direction of a card with the same bytes-per-second rate, so a definition
/// must give `<inbound>` and `<outbound>` with the same average; limiting a direction the
/// definition leaves free, or at a rate it did not ask for, would not be what it says.
fn nic_rate(bandwidth: &Bandwidth, index: usize) -> Result<Option<u64>, NativeError> {
    let path = format!("/domain/devices/interface[{}]/bandwidth", index + 1);
    match (bandwidth.inbound_kib, bandwidth.outbound_kib) {
        (None, None) => Ok(None),
        (Some(inbound), Some(outbound)) if inbound == outbound => {
            Ok(Some(u64::from(inbound) * 1024))
        }
        (Some(inbound), Some(outbound)) => Err(NativeError::unsupported(
            &format!("{path}/outbound/@average"),
            format!(
                "{outbound} KiB/s differs from inbound's {inbound} KiB/s: oxvmm applies one \
                 rate to both directions of a NIC"
            ),
        )),
        (Some(average), None) | (None, Some(average)) => {
            let missing = if bandwidth.inbound_kib.is_none() {
                "inbound"
            } else {
                "outbound"
            };
            Err(NativeError::unsupported(
                &format!("{path}/{missing}"),
                format!(
                    "missing: oxvmm applies one rate to both directions of a NIC; give \
                     <{missing} average='{average}'/> too"
                ),
            ))
        }
    }
}
