//! The VM configuration: one serde type shared by the command line, `--config FILE.json` and
//! (later) the control API.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Prefix of kernel names that refer to guests embedded in the binary rather than files.
pub const BUILTIN_PREFIX: &str = "builtin:";
/// The bundled demo and test guest.
pub const BUILTIN_OXGUEST: &str = "builtin:oxguest";

/// Default guest memory in MiB (Firecracker's and Cloud Hypervisor's defaults are 128/512).
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// Everything needed to build a VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// What to boot.
    pub payload: PayloadConfig,
    /// vCPUs.
    #[serde(default)]
    pub cpus: CpusConfig,
    /// Guest RAM.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Where COM1 goes.
    #[serde(default)]
    pub serial: SerialConfig,
    /// What a guest reset does.
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// A virtio-rng device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// A virtio-balloon device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
    /// virtio-blk disks, in PCI slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
}

/// The virtio-balloon device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfig {
    /// How much memory the balloon takes from the guest at boot, in MiB.
    #[serde(default)]
    pub size_mib: u64,
    /// Let the guest deflate the balloon when it runs out of memory.
    #[serde(default)]
    pub deflate_on_oom: bool,
    /// Offer the statistics queue.
    #[serde(default)]
    pub stats: bool,
}

impl FromStr for BalloonConfig {
    type Err = ParseError;

    /// `size=N[,deflate-on-oom=on][,stats=on]` (N like `--memory`: 64M, 1G, or MiB).
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut balloon = BalloonConfig::default();
        for item in text.split(',').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some(("size", value)) => {
                    balloon.size_mib = parse_memory_mib(value).map_err(|e| {
                        ParseError::new(text, format!("size={value}: {}", e.problem))
                    })?;
                }
                Some(("deflate-on-oom", value)) => {
                    balloon.deflate_on_oom = parse_on_off(text, "deflate-on-oom", value)?;
                }
                Some(("stats", value)) => balloon.stats = parse_on_off(text, "stats", value)?,
                _ => {
                    return Err(ParseError::new(
                        text,
                        format!("unknown item {item:?} (expected size, deflate-on-oom, stats)"),
                    ));
                }
            }
        }
        Ok(balloon)
    }
}

/// One virtio-blk disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// A raw image file or a block device.
    pub path: PathBuf,
    /// Refuse guest writes.
    #[serde(default)]
    pub readonly: bool,
    /// Open with O_DIRECT (bypass the host page cache).
    #[serde(default)]
    pub direct: bool,
    /// The serial number the guest reads (at most 20 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// A name for the disk in counters and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Bandwidth limit in bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bw: Option<u64>,
    /// Operations per second limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u64>,
}

/// Maximum length of a virtio-blk serial number.
pub const DISK_SERIAL_MAX: usize = 20;

fn parse_on_off(text: &str, key: &str, value: &str) -> Result<bool, ParseError> {
    match value {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(ParseError::new(
            text,
            format!("{key}={value}: expected on or off"),
        )),
    }
}

/// Parses `50M` (bytes per second, K/M/G suffixes are powers of 1024) or a plain number.
fn parse_rate(text: &str, key: &str, value: &str) -> Result<u64, ParseError> {
    let (digits, multiplier) = match value.char_indices().last() {
        Some((i, 'K' | 'k')) => (&value[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&value[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&value[..i], 1 << 30),
        _ => (value, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&n| n > 0)
        .ok_or_else(|| ParseError::new(text, format!("{key}={value}: expected a positive number")))
}

impl FromStr for DiskConfig {
    type Err = ParseError;

    /// `path=F[,readonly=on][,direct=on][,serial=S][,id=ID][,bw=50M][,iops=1000]`.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut disk = DiskConfig::default();
        let mut path = None;
        for item in text.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                return Err(ParseError::new(text, format!("{item:?} is not key=value")));
            };
            match key {
                "path" if !value.is_empty() => path = Some(PathBuf::from(value)),
                "readonly" => disk.readonly = parse_on_off(text, key, value)?,
                "direct" => disk.direct = parse_on_off(text, key, value)?,
                "serial" if value.len() <= DISK_SERIAL_MAX => disk.serial = Some(value.to_string()),
                "serial" => {
                    return Err(ParseError::new(
                        text,
                        format!("serial={value}: at most {DISK_SERIAL_MAX} bytes"),
                    ));
                }
                "id" if !value.is_empty() => disk.id = Some(value.to_string()),
                "bw" => disk.bw = Some(parse_rate(text, key, value)?),
                "iops" => disk.iops = Some(parse_rate(text, key, value)?),
                _ => {
                    return Err(ParseError::new(
                        text,
                        format!(
                            "unknown or empty item {item:?} (expected path, readonly, direct, \
                             serial, id, bw, iops)"
                        ),
                    ));
                }
            }
        }
        disk.path = path.ok_or_else(|| ParseError::new(text, "path=FILE is required"))?;
        Ok(disk)
    }
}

/// The virtio-rng device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngConfig {
    /// Where the entropy comes from.
    #[serde(default = "default_rng_source")]
    pub src: PathBuf,
}

fn default_rng_source() -> PathBuf {
    PathBuf::from("/dev/urandom")
}

impl Default for RngConfig {
    fn default() -> Self {
        RngConfig {
            src: default_rng_source(),
        }
    }
}

impl FromStr for RngConfig {
    type Err = ParseError;

    /// `""` (the default source) or `src=PATH`.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut config = RngConfig::default();
        for item in text.split(',').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some(("src", path)) if !path.is_empty() => config.src = PathBuf::from(path),
                _ => {
                    return Err(ParseError::new(
                        text,
                        format!("unknown item {item:?} (expected src=PATH)"),
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// The kernel, initrd and command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// Path of an ELF `vmlinux` or a `bzImage`, or `builtin:oxguest`.
    pub kernel: PathBuf,
    /// Path of an initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Which entry point of an ELF kernel to use.
    #[serde(default)]
    pub boot_protocol: BootProtocol,
}

/// Entry point selection for ELF kernels (bzImages always use the 64-bit boot protocol).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    /// PVH when the ELF has a PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    /// Linux's 64-bit boot protocol at the ELF entry point.
    Linux64,
    /// The PVH 32-bit entry point (the ELF must have a PVH note).
    Pvh,
}

/// vCPU settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpusConfig {
    /// Number of vCPUs.
    pub count: u8,
    /// CPUID feature changes, e.g. `-cx16,-xsave` (remove) or `+avx2` (require).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub features: String,
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig {
            count: 1,
            features: String::new(),
        }
    }
}

/// Guest RAM settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Size in MiB.
    pub size_mib: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size_mib: DEFAULT_MEMORY_MIB,
        }
    }
}

/// Destination of the COM1 serial port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SerialConfig {
    /// The VMM's standard output (and standard input for guest input).
    #[default]
    Stdio,
    /// Append to a file.
    File(PathBuf),
    /// Discard output.
    Off,
}

/// What a guest-initiated reset does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    /// Reboot in place: vCPUs reset, kernel reloaded, devices reset.
    #[default]
    Restart,
    /// Exit with status 0.
    Exit,
}

/// A command-line value that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: {problem}")]
pub struct ParseError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ParseError {
    fn new(value: &str, problem: impl Into<String>) -> Self {
        ParseError {
            value: value.to_string(),
            problem: problem.into(),
        }
    }
}

/// Parses a memory size such as `256M`, `1G`, `1536M`, `512` (MiB) or `524288K` into MiB.
pub fn parse_memory_mib(text: &str) -> Result<u64, ParseError> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(ParseError::new(
            text,
            "expected a size such as 256M, 1G or 512 (MiB)",
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| ParseError::new(text, "number too large"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let kib_per_unit: u64 = match unit {
        "K" => 1,
        "" | "M" => 1 << 10,
        "G" => 1 << 20,
        "T" => 1 << 30,
        other => {
            return Err(ParseError::new(
                text,
                format!("unknown unit {other:?} (use K, M, G or T)"),
            ));
        }
    };
    let kib = number
        .checked_mul(kib_per_unit)
        .ok_or_else(|| ParseError::new(text, "size too large"))?;
    if kib % 1024 != 0 {
        return Err(ParseError::new(text, "must be a whole number of MiB"));
    }
    Ok(kib / 1024)
}

impl FromStr for SerialConfig {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        match text {
            "stdio" => Ok(SerialConfig::Stdio),
            "off" | "null" => Ok(SerialConfig::Off),
            _ => match text.strip_prefix("file=") {
                Some(path) if !path.is_empty() => Ok(SerialConfig::File(PathBuf::from(path))),
                _ => Err(ParseError::new(text, "expected stdio, off or file=PATH")),
            },
        }
    }
}

impl FromStr for OnReboot {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        match text {
            "restart" => Ok(OnReboot::Restart),
            "exit" => Ok(OnReboot::Exit),
            _ => Err(ParseError::new(text, "expected restart or exit")),
        }
    }
}

impl FromStr for BootProtocol {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        match text {
            "auto" => Ok(BootProtocol::Auto),
            "linux64" => Ok(BootProtocol::Linux64),
            "pvh" => Ok(BootProtocol::Pvh),
            _ => Err(ParseError::new(text, "expected auto, linux64 or pvh")),
        }
    }
}

impl fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialConfig::Stdio => write!(f, "stdio"),
            SerialConfig::Off => write!(f, "off"),
            SerialConfig::File(path) => write!(f, "file={}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_units() {
        assert_eq!(parse_memory_mib("256M"), Ok(256));
        assert_eq!(parse_memory_mib("256"), Ok(256));
        assert_eq!(parse_memory_mib("1G"), Ok(1024));
        assert_eq!(parse_memory_mib("2GiB"), Ok(2048));
        assert_eq!(parse_memory_mib("524288K"), Ok(512));
        assert_eq!(parse_memory_mib("0"), Ok(0));
    }

    #[test]
    fn bad_memory_sizes_are_refused_with_the_reason() {
        let err = parse_memory_mib("foo").unwrap_err();
        assert!(err.problem.contains("expected a size"), "{err}");
        assert!(
            parse_memory_mib("12Q")
                .unwrap_err()
                .problem
                .contains("unit")
        );
        assert!(
            parse_memory_mib("1536K")
                .unwrap_err()
                .problem
                .contains("MiB")
        );
        assert!(parse_memory_mib("99999999999999999999").is_err());
        assert!(parse_memory_mib("99999999999T").is_err());
    }

    #[test]
    fn balloon_options_parse() {
        let balloon: BalloonConfig = "size=64M,deflate-on-oom=on,stats=on".parse().unwrap();
        assert_eq!(balloon.size_mib, 64);
        assert!(balloon.deflate_on_oom && balloon.stats);
        assert_eq!(
            "".parse::<BalloonConfig>().unwrap(),
            BalloonConfig::default()
        );
        assert!("size=lots".parse::<BalloonConfig>().is_err());
        assert!("volume=3".parse::<BalloonConfig>().is_err());
    }

    #[test]
    fn disk_options_parse() {
        let disk: DiskConfig = "path=/d.img,readonly=on,serial=abc,id=root,bw=50M,iops=1000"
            .parse()
            .unwrap();
        assert_eq!(disk.path, PathBuf::from("/d.img"));
        assert!(disk.readonly && !disk.direct);
        assert_eq!(disk.serial.as_deref(), Some("abc"));
        assert_eq!(disk.id.as_deref(), Some("root"));
        assert_eq!((disk.bw, disk.iops), (Some(50 << 20), Some(1000)));
        assert!(
            "readonly=on"
                .parse::<DiskConfig>()
                .unwrap_err()
                .problem
                .contains("path")
        );
        assert!("path=/d,readonly=maybe".parse::<DiskConfig>().is_err());
        assert!(
            "path=/d,serial=123456789012345678901"
                .parse::<DiskConfig>()
                .is_err()
        );
        assert!("path=/d,bw=0".parse::<DiskConfig>().is_err());
        assert!("path=/d,colour=red".parse::<DiskConfig>().is_err());
        assert!("/d.img".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn rng_options_parse() {
        assert_eq!("".parse(), Ok(RngConfig::default()));
        assert_eq!(
            "src=/dev/random".parse::<RngConfig>().map(|r| r.src),
            Ok(PathBuf::from("/dev/random"))
        );
        assert!("source=/x".parse::<RngConfig>().is_err());
        assert!("src=".parse::<RngConfig>().is_err());
    }

    #[test]
    fn serial_destinations_parse() {
        assert_eq!("stdio".parse(), Ok(SerialConfig::Stdio));
        assert_eq!("off".parse(), Ok(SerialConfig::Off));
        assert_eq!(
            "file=/tmp/x".parse(),
            Ok(SerialConfig::File(PathBuf::from("/tmp/x")))
        );
        assert!("file=".parse::<SerialConfig>().is_err());
        assert!("tty".parse::<SerialConfig>().is_err());
    }

    #[test]
    fn json_config_round_trips_and_refuses_unknown_fields() {
        let json = r#"{"payload":{"kernel":"/k","cmdline":"console=ttyS0"},
                       "cpus":{"count":2,"features":"-cx16"},
                       "memory":{"size_mib":128},"serial":{"file":"/tmp/s"},
                       "on_reboot":"exit"}"#;
        let config: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.cpus.count, 2);
        assert_eq!(config.serial, SerialConfig::File(PathBuf::from("/tmp/s")));
        let again: VmConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);

        let bad = r#"{"payload":{"kernel":"/k"},"memroy":{"size_mib":1}}"#;
        let err = serde_json::from_str::<VmConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("memroy"), "{err}");
    }
}
