//! Command-line parsing and the merge of `--config FILE.json` with explicit options.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use vmm::VmConfig;
use vmm::config::{
    BUILTIN_OXGUEST, BootProtocol, CpusConfig, MemoryConfig, OnReboot, PayloadConfig, SerialConfig,
    parse_memory_mib,
};

/// The command line of oxvmm.
#[derive(Parser, Debug)]
#[command(
    name = "oxvmm",
    version,
    about = "Run one virtual machine on KVM",
    after_help = "Exit status: 0 when the guest powers off (or resets with --on-reboot exit), \
                  1 on a configuration or host error, 2 when the guest crashes."
)]
pub struct Args {
    /// Kernel to boot: an ELF vmlinux (PVH or 64-bit entry) or a bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Boot a firmware image instead of a kernel (e.g. /usr/share/seabios/bios.bin): it is
    /// mapped below 4 GiB and boots from the disks.
    #[arg(long, value_name = "PATH")]
    firmware: Option<PathBuf>,
    /// Initramfs to load.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// Guest memory, e.g. 256M or 1G (a bare number is MiB) [default: 256M].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Where COM1 goes: stdio, file=PATH, socket=PATH (oxvmm listens; one client at a time) or
    /// off [default: stdio].
    #[arg(long, value_name = "DEST")]
    serial: Option<String>,
    /// What a guest reset does: restart (reboot in place) or exit [default: restart].
    #[arg(long, value_name = "ACTION")]
    on_reboot: Option<String>,
    /// CPUID changes: -name removes a feature, +name requires it (e.g. -cx16,-xsave).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    cpu_features: Option<String>,
    /// ELF entry point: auto (PVH if present), linux64 or pvh [default: auto].
    #[arg(long, value_name = "PROTOCOL")]
    boot_protocol: Option<String>,
    /// Read the VM configuration from a JSON file; other options override its values.
    #[arg(long, value_name = "FILE.json")]
    config: Option<PathBuf>,
    /// Boot the demo guest built into oxvmm (honours --cpus and --memory).
    #[arg(long)]
    demo: bool,
    /// Add a virtio-blk disk (repeat for more):
    /// `path=F[,readonly=on][,direct=on][,serial=S][,id=ID][,bw=50M][,iops=1000]`.
    #[arg(long = "disk", value_name = "path=F,...")]
    disks: Vec<String>,
    /// Add a virtio-balloon device: `size=N[,deflate-on-oom=on][,stats=on]`.
    #[arg(long, value_name = "size=N,...")]
    balloon: Option<String>,
    /// Add a virtio-net card on a TAP (repeat for more): `tap=NAME[,mac=M][,id=ID]` or
    /// `fd=N[,mac=M][,id=ID]` (an inherited TAP descriptor), with `[,bw=10M][,ops=N]` to
    /// limit bytes and frames per second (receive and transmit each on its own).
    #[arg(long = "net", value_name = "tap=NAME,...")]
    nets: Vec<String>,
    /// Add a virtio-console device (one port): `socket=PATH` (oxvmm listens, as for --serial)
    /// or `file=PATH` (output appended, no input).
    #[arg(long, value_name = "socket=PATH|file=PATH")]
    console: Option<String>,
    /// Add a virtio-vsock device: `cid=N,socket=PATH` (Firecracker's convention: host
    /// programs connect to PATH and write `CONNECT <port>\n`; guest connections to host port P
    /// go to PATH_P).
    #[arg(long, value_name = "cid=N,socket=PATH")]
    vsock: Option<String>,
    /// Add a virtio-rng device: `--rng` (entropy from /dev/urandom) or `--rng src=PATH`.
    #[arg(long, value_name = "src=PATH", num_args = 0..=1, default_missing_value = "")]
    rng: Option<String>,
    /// Serve the control API (HTTP/1.1 + JSON) on this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Start from a snapshot directory instead of booting (paused unless --resume). Device
    /// options, --memory and --cpus then state what the snapshot's VM has (their host-side
    /// settings, such as paths and TAP names, apply; any other difference is refused).
    #[arg(long, value_name = "DIR")]
    pub restore: Option<PathBuf>,
    /// With --restore: run the vCPUs at once.
    #[arg(long, requires = "restore")]
    pub resume: bool,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log level on standard error: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    pub log_level: tracing::Level,
}

/// What parsing decided.
pub enum Parsed {
    /// Run with these arguments.
    Run(Box<Args>),
    /// Help or version was printed: exit with this status.
    Exit(ExitCode),
}

/// Parses arguments; usage errors come back as one-line errors (exit status 1, not clap's 2).
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Parsed> {
    match Args::try_parse_from(args) {
        Ok(args) => Ok(Parsed::Run(Box::new(args))),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Ok(Parsed::Exit(ExitCode::SUCCESS))
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            Err(anyhow!("{first} (see oxvmm --help)"))
        }
    }
}

/// Options that describe a new VM, which a snapshot already fixes. (The device options,
/// `--memory` and `--cpus` state what the restored VM has: see [`restore_devices`].)
fn options_fixed_by_a_snapshot(args: &Args) -> Vec<&'static str> {
    let given = [
        ("--kernel", args.kernel.is_some()),
        ("--firmware", args.firmware.is_some()),
        ("--initrd", args.initrd.is_some()),
        ("--cmdline", args.cmdline.is_some()),
        ("--on-reboot", args.on_reboot.is_some()),
        ("--cpu-features", args.cpu_features.is_some()),
        ("--boot-protocol", args.boot_protocol.is_some()),
        ("--config", args.config.is_some()),
        ("--demo", args.demo),
    ];
    given
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
}

/// The restore settings for `--restore DIR`.
pub fn build_restore(args: &Args, dir: &std::path::Path) -> anyhow::Result<vmm::RestoreOptions> {
    if let Some(option) = options_fixed_by_a_snapshot(args).first() {
        bail!("{option} cannot be used with --restore: the snapshot holds the VM's configuration");
    }
    let serial = match &args.serial {
        Some(serial) => Some(serial.parse().map_err(|e| anyhow!("--serial {e}"))?),
        None => None,
    };
    Ok(vmm::RestoreOptions {
        dir: dir.to_path_buf(),
        resume: args.resume,
        serial,
        devices: restore_devices(args)?,
    })
}

/// What a restore command says the VM has: the snapshot must have the same devices (and
/// size), whose host side (paths, TAP names, rate limits) comes from these options.
fn restore_devices(args: &Args) -> anyhow::Result<vmm::RestoreDevices> {
    let memory_mib = match &args.memory {
        Some(memory) => Some(parse_memory_mib(memory).map_err(|e| anyhow!("--memory {e}"))?),
        None => None,
    };
    let cpus = args.cpus.as_deref().map(parse_cpus).transpose()?;
    let disks = args
        .disks
        .iter()
        .map(|d| d.parse().map_err(|e| anyhow!("--disk {e}")))
        .collect::<anyhow::Result<_>>()?;
    let nets = args
        .nets
        .iter()
        .map(|n| n.parse().map_err(|e| anyhow!("--net {e}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(vmm::RestoreDevices {
        memory_mib,
        cpus,
        disks,
        nets,
        vsock: parse_one(&args.vsock, "--vsock")?,
        console: parse_one(&args.console, "--console")?,
        rng: parse_one(&args.rng, "--rng")?,
        balloon: parse_one(&args.balloon, "--balloon")?,
    })
}

/// Parses an option given at most once, naming it in the error.
fn parse_one<T>(text: &Option<String>, option: &str) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr<Err = vmm::config::ParseError>,
{
    text.as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| anyhow!("{option} {e}"))
}

/// Builds the effective configuration: the `--config` file if any, then each option given.
pub fn build_config(args: &Args) -> anyhow::Result<VmConfig> {
    let mut config = match &args.config {
        Some(path) => read_config_file(path)?,
        None => {
            let kernel = match (&args.kernel, args.demo, &args.firmware) {
                (Some(kernel), _, _) => kernel.clone(),
                (None, true, _) => PathBuf::from(BUILTIN_OXGUEST),
                // Booting firmware: no kernel.
                (None, false, Some(_)) => PathBuf::new(),
                (None, false, None) => bail!(
                    "--kernel PATH is required (or --firmware PATH, --demo, or --config FILE)"
                ),
            };
            VmConfig {
                payload: PayloadConfig {
                    kernel,
                    firmware: None,
                    initrd: None,
                    cmdline: String::new(),
                    boot_protocol: BootProtocol::Auto,
                },
                cpus: CpusConfig::default(),
                memory: MemoryConfig::default(),
                serial: SerialConfig::default(),
                on_reboot: OnReboot::default(),
                rng: None,
                balloon: None,
                disks: Vec::new(),
                console: None,
                nets: Vec::new(),
                vsock: None,
            }
        }
    };
    apply_overrides(args, &mut config)?;
    Ok(config)
}

fn read_config_file(path: &PathBuf) -> anyhow::Result<VmConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("--config {}: {e}", path.display()))
}

fn apply_overrides(args: &Args, config: &mut VmConfig) -> anyhow::Result<()> {
    if args.demo {
        config.payload.kernel = PathBuf::from(BUILTIN_OXGUEST);
        if args.cmdline.is_none() && config.payload.cmdline.is_empty() {
            config.payload.cmdline = "demo".to_string();
        }
    } else if let Some(kernel) = &args.kernel {
        config.payload.kernel = kernel.clone();
    }
    if let Some(firmware) = &args.firmware {
        config.payload.firmware = Some(firmware.clone());
    }
    if let Some(initrd) = &args.initrd {
        config.payload.initrd = Some(initrd.clone());
    }
    if let Some(cmdline) = &args.cmdline {
        config.payload.cmdline = cmdline.clone();
    }
    if let Some(memory) = &args.memory {
        config.memory.size_mib = parse_memory_mib(memory).map_err(|e| anyhow!("--memory {e}"))?;
    }
    if let Some(cpus) = &args.cpus {
        config.cpus.count = parse_cpus(cpus)?;
    }
    if let Some(serial) = &args.serial {
        config.serial = serial.parse().map_err(|e| anyhow!("--serial {e}"))?;
    }
    if let Some(on_reboot) = &args.on_reboot {
        config.on_reboot = on_reboot.parse().map_err(|e| anyhow!("--on-reboot {e}"))?;
    }
    if !args.disks.is_empty() {
        config.disks = args
            .disks
            .iter()
            .map(|d| d.parse().map_err(|e| anyhow!("--disk {e}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(balloon) = &args.balloon {
        config.balloon = Some(balloon.parse().map_err(|e| anyhow!("--balloon {e}"))?);
    }
    if !args.nets.is_empty() {
        config.nets = args
            .nets
            .iter()
            .map(|n| n.parse().map_err(|e| anyhow!("--net {e}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(vsock) = &args.vsock {
        config.vsock = Some(vsock.parse().map_err(|e| anyhow!("--vsock {e}"))?);
    }
    if let Some(console) = &args.console {
        config.console = Some(console.parse().map_err(|e| anyhow!("--console {e}"))?);
    }
    if let Some(rng) = &args.rng {
        config.rng = Some(rng.parse().map_err(|e| anyhow!("--rng {e}"))?);
    }
    if let Some(features) = &args.cpu_features {
        config.cpus.features = features.clone();
    }
    if let Some(protocol) = &args.boot_protocol {
        config.payload.boot_protocol = protocol
            .parse()
            .map_err(|e| anyhow!("--boot-protocol {e}"))?;
    }
    Ok(())
}

fn parse_cpus(text: &str) -> anyhow::Result<u8> {
    let count: u64 = text
        .trim()
        .parse()
        .map_err(|_| anyhow!("--cpus {text:?}: expected a number of vCPUs"))?;
    u8::try_from(count)
        .ok()
        .filter(|&n| n < u8::MAX)
        .ok_or_else(|| anyhow!("--cpus {count}: above the 254 vCPUs oxvmm supports"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        let argv = std::iter::once("oxvmm")
            .chain(list.iter().copied())
            .map(OsString::from);
        match parse_args(argv).unwrap() {
            Parsed::Run(args) => *args,
            Parsed::Exit(_) => panic!("unexpected exit"),
        }
    }

    #[test]
    fn options_fill_the_config() {
        let config = build_config(&args(&[
            "--kernel",
            "/k",
            "--memory",
            "1G",
            "--cpus",
            "2",
            "--serial",
            "off",
            "--on-reboot",
            "exit",
            "--cpu-features",
            "-cx16,-xsave",
            "--cmdline",
            "a b",
        ]))
        .unwrap();
        assert_eq!(config.payload.kernel, PathBuf::from("/k"));
        assert_eq!(config.memory.size_mib, 1024);
        assert_eq!(config.cpus.count, 2);
        assert_eq!(config.cpus.features, "-cx16,-xsave");
        assert_eq!(config.serial, SerialConfig::Off);
        assert_eq!(config.on_reboot, OnReboot::Exit);
        assert_eq!(config.payload.cmdline, "a b");
    }

    #[test]
    fn demo_uses_the_builtin_guest_and_keeps_cpus_and_memory() {
        let config = build_config(&args(&["--demo", "--cpus", "2", "--memory", "128M"])).unwrap();
        assert_eq!(config.payload.kernel, PathBuf::from(BUILTIN_OXGUEST));
        assert_eq!(config.payload.cmdline, "demo");
        assert_eq!(config.cpus.count, 2);
        assert_eq!(config.memory.size_mib, 128);
    }

    #[test]
    fn bad_values_name_the_option_and_value() {
        let err = |list: &[&str]| build_config(&args(list)).unwrap_err().to_string();
        assert!(err(&["--kernel", "/k", "--memory", "foo"]).starts_with("--memory \"foo\""));
        assert!(err(&["--kernel", "/k", "--cpus", "x"]).starts_with("--cpus \"x\""));
        assert!(err(&["--kernel", "/k", "--cpus", "300"]).starts_with("--cpus 300"));
        assert!(err(&["--kernel", "/k", "--serial", "tty"]).starts_with("--serial \"tty\""));
        assert!(err(&[]).contains("--kernel"));
    }

    #[test]
    fn disks_repeat_and_bad_ones_are_named() {
        let config = build_config(&args(&[
            "--kernel",
            "/k",
            "--disk",
            "path=/a.img",
            "--disk",
            "path=/b.img,readonly=on",
        ]))
        .unwrap();
        assert_eq!(config.disks.len(), 2);
        assert!(config.disks[1].readonly);
        let err = build_config(&args(&["--kernel", "/k", "--disk", "readonly=on"])).unwrap_err();
        assert!(
            err.to_string().starts_with("--disk \"readonly=on\""),
            "{err}"
        );
    }

    #[test]
    fn vsock_options_fill_the_config_and_bad_ones_are_named() {
        let config = build_config(&args(&[
            "--kernel",
            "/k",
            "--vsock",
            "cid=7,socket=/v.sock",
        ]))
        .unwrap();
        let vsock = config.vsock.unwrap();
        assert_eq!((vsock.cid, vsock.socket), (7, PathBuf::from("/v.sock")));
        let err = build_config(&args(&["--kernel", "/k", "--vsock", "cid=2,socket=/v"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--vsock \"cid=2,socket=/v\"") && err.contains("reserved"),
            "{err}"
        );
    }

    #[test]
    fn restore_takes_the_device_options_as_what_the_vm_has() {
        let restore = args(&[
            "--restore",
            "/snap",
            "--vsock",
            "cid=3,socket=/v",
            "--disk",
            "path=/moved.img,readonly=on",
            "--net",
            "tap=tap7",
            "--memory",
            "1G",
            "--cpus",
            "2",
            "--rng",
            "--console",
            "file=/c.log",
            "--balloon",
            "size=8",
        ]);

        let devices = build_restore(&restore, std::path::Path::new("/snap"))
            .unwrap()
            .devices;

        assert_eq!(devices.vsock.unwrap().socket, PathBuf::from("/v"));
        assert_eq!(devices.disks[0].path, PathBuf::from("/moved.img"));
        assert!(devices.disks[0].readonly);
        assert_eq!(devices.nets[0].tap.as_deref(), Some("tap7"));
        assert_eq!((devices.memory_mib, devices.cpus), (Some(1024), Some(2)));
        assert!(devices.rng.is_some() && devices.console.is_some());
        assert_eq!(devices.balloon.unwrap().size_mib, 8);
        let bad = args(&["--restore", "/snap", "--disk", "readonly=on"]);
        let err = build_restore(&bad, std::path::Path::new("/snap")).unwrap_err();
        assert!(
            err.to_string().starts_with("--disk \"readonly=on\""),
            "{err}"
        );
    }

    #[test]
    fn restore_refuses_options_the_snapshot_fixes() {
        let restore = args(&["--restore", "/snap", "--resume", "--serial", "off"]);
        let options = build_restore(&restore, std::path::Path::new("/snap")).unwrap();
        assert!(options.resume);
        assert_eq!(options.serial, Some(SerialConfig::Off));
        assert_eq!(options.devices, vmm::RestoreDevices::default());

        let bad = args(&["--restore", "/snap", "--kernel", "/k"]);
        let err = build_restore(&bad, std::path::Path::new("/snap")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--kernel cannot be used with --restore")
        );
    }

    #[test]
    fn unknown_options_are_one_line_errors() {
        let argv = ["oxvmm", "--bogus"].map(OsString::from);
        let err = parse_args(argv).err().unwrap().to_string();
        assert!(err.contains("--bogus") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn the_config_file_is_the_base_and_options_override_it() {
        let dir = std::env::temp_dir().join(format!("oxvmm-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vm.json");
        std::fs::write(
            &file,
            r#"{"payload":{"kernel":"/k","cmdline":"x"},"memory":{"size_mib":64}}"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();

        let config = build_config(&args(&["--config", path, "--cpus", "2"])).unwrap();

        assert_eq!(config.memory.size_mib, 64);
        assert_eq!(config.cpus.count, 2);
        assert_eq!(config.payload.cmdline, "x");
        std::fs::write(&file, r#"{"payload":{"kernel":"/k"},"cpu":{}}"#).unwrap();
        let err = build_config(&args(&["--config", path]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field") && err.contains("cpu"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
