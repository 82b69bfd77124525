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
    /// A virtio-console device (one port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    /// virtio-net cards on TAP devices, in PCI slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<NetConfig>,
    /// A virtio-vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
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

/// The `key=value` pairs of a comma-separated option list; an item without `=` is an error
/// naming it.
fn key_values(text: &str) -> impl Iterator<Item = Result<(&str, &str), ParseError>> {
    text.split(',').map(move |item| {
        item.split_once('=')
            .ok_or_else(|| ParseError::new(text, format!("{item:?} is not key=value")))
    })
}

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

impl DiskConfig {
    /// What the disk is called in `vm.counters`: its `id`, else the name Linux gives the
    /// `index`th virtio disk (`vda`, `vdb`, …), `index` being its place among the disks.
    pub fn name(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| virtio_disk_name(index))
    }
}

/// `vda`, …, `vdz`, `vdaa`, …: the name Linux's virtio-blk driver gives its `index`th disk
/// (letters counted in bijective base 26, as its `virtblk_name_format` does).
pub fn virtio_disk_name(index: usize) -> String {
    let mut letters = Vec::new();
    let mut rest = index;
    loop {
        letters.push(b'a' + (rest % 26) as u8);
        rest /= 26;
        if rest == 0 {
            break;
        }
        rest -= 1;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8_lossy(&letters))
}

impl FromStr for DiskConfig {
    type Err = ParseError;

    /// `path=F[,readonly=on][,direct=on][,serial=S][,id=ID][,bw=50M][,iops=1000]`.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut disk = DiskConfig::default();
        let mut path = None;
        for pair in key_values(text) {
            let (key, value) = pair?;
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
                            "unknown or empty item {:?} (expected path, readonly, direct, \
                             serial, id, bw, iops)",
                            format!("{key}={value}")
                        ),
                    ));
                }
            }
        }
        disk.path = path.ok_or_else(|| ParseError::new(text, "path=FILE is required"))?;
        Ok(disk)
    }
}

/// The virtio-vsock device, with Firecracker's host side: host programs connect to the Unix
/// socket `socket` and write `CONNECT <port>\n`; a guest connection to host port P reaches the
/// host program listening on `<socket>_P`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID (3 to 4294967294).
    pub cid: u64,
    /// Where oxvmm listens for host-initiated connections.
    pub socket: PathBuf,
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
pub const UNIX_SOCKET_PATH_MAX: usize = 107;

impl VsockConfig {
    /// Why the CID or the socket path cannot be used, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.cid <= 2 || self.cid >= u64::from(u32::MAX) {
            return Some(format!(
                "cid={}: 0, 1 and 2 are reserved (hypervisor, local, host), 4294967295 means \
                 any and CIDs are 32-bit: use 3 to 4294967294",
                self.cid
            ));
        }
        let len = self.socket.as_os_str().len();
        if len == 0 {
            return Some("socket=PATH is required".to_string());
        }
        if len > UNIX_SOCKET_PATH_MAX {
            return Some(format!(
                "socket={}: the path is {len} bytes, a Unix socket path holds at most \
                 {UNIX_SOCKET_PATH_MAX}",
                self.socket.display()
            ));
        }
        None
    }
}

impl FromStr for VsockConfig {
    type Err = ParseError;

    /// `cid=N,socket=PATH`.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut cid = None;
        let mut socket = None;
        for item in text.split(',') {
            match item.split_once('=') {
                Some(("cid", value)) => {
                    let parsed = value.parse::<u64>().map_err(|_| {
                        ParseError::new(text, format!("cid={value}: expected a number"))
                    })?;
                    cid = Some(parsed);
                }
                Some(("socket", path)) if !path.is_empty() => socket = Some(PathBuf::from(path)),
                _ => {
                    return Err(ParseError::new(
                        text,
                        format!("unknown or empty item {item:?} (expected cid=N,socket=PATH)"),
                    ));
                }
            }
        }
        let cid = cid.ok_or_else(|| ParseError::new(text, "cid=N is required"))?;
        let socket = socket.ok_or_else(|| ParseError::new(text, "socket=PATH is required"))?;
        let config = VsockConfig { cid, socket };
        match config.problem() {
            Some(problem) => Err(ParseError::new(text, problem)),
            None => Ok(config),
        }
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

/// What the VM boots: a kernel (with initrd and command line), or a firmware image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// Path of an ELF `vmlinux` or a `bzImage`, or `builtin:oxguest`. Empty (left out) when
    /// `firmware` boots the VM: exactly one of the two is given.
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub kernel: PathBuf,
    /// Path of a firmware image (e.g. SeaBIOS's `bios.bin`) to boot instead of a kernel: mapped
    /// read-only below 4 GiB, its last 128 KiB copied to 0xE0000, and the vCPUs started in
    /// their reset state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<PathBuf>,
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

fn path_is_empty(path: &std::path::Path) -> bool {
    path.as_os_str().is_empty()
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

impl MemoryConfig {
    /// The size in bytes, saturating: a size too large for the host is refused where the
    /// guest's RAM is laid out, not wrapped into a small one here.
    pub fn bytes(&self) -> u64 {
        self.size_mib.saturating_mul(1 << 20)
    }
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
    /// Listen on a Unix socket: one client at a time gets the output and sends the input.
    Socket(PathBuf),
}

/// One virtio-net card on a TAP device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The TAP interface to attach to (created if missing); or `fd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// An inherited TAP file descriptor (opened with IFF_TAP, IFF_NO_PI and IFF_VNET_HDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// The guest's MAC address (`02:xx:xx:xx:xx:xx`); a random locally administered one when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// A name for the card in counters and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Bandwidth limit in bytes per second, each direction on its own (frames' bytes without
    /// the virtio-net header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bw: Option<u64>,
    /// Frames per second limit, each direction on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<u64>,
}

/// Longest interface name Linux takes (IFNAMSIZ − 1).
pub const TAP_NAME_MAX: usize = 15;

/// Parses `aa:bb:cc:dd:ee:ff` into a unicast MAC address.
pub fn parse_mac(text: &str) -> Result<[u8; 6], ParseError> {
    let bad = || ParseError::new(text, "expected a MAC address like 02:00:00:00:00:01");
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(ParseError::new(
            text,
            "a multicast address cannot be a card's MAC",
        ));
    }
    Ok(mac)
}

impl NetConfig {
    /// The MAC address, if one is set and valid.
    pub fn mac_bytes(&self) -> Result<Option<[u8; 6]>, ParseError> {
        self.mac.as_deref().map(parse_mac).transpose()
    }

    /// What the card is called in errors and counters.
    pub fn name(&self, index: usize) -> String {
        match (&self.id, &self.tap, self.fd) {
            (Some(id), _, _) => id.clone(),
            (None, Some(tap), _) => tap.clone(),
            (None, None, Some(fd)) => format!("fd={fd}"),
            (None, None, None) => format!("net{index}"),
        }
    }
}

impl FromStr for NetConfig {
    type Err = ParseError;

    /// `tap=NAME` or `fd=N`, then `[,mac=M][,id=ID][,bw=10M][,ops=1000]`.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut net = NetConfig::default();
        for pair in key_values(text) {
            let (key, value) = pair?;
            match key {
                "tap" if !value.is_empty() && value.len() <= TAP_NAME_MAX => {
                    net.tap = Some(value.to_string());
                }
                "tap" => {
                    return Err(ParseError::new(
                        text,
                        format!("tap={value}: 1 to {TAP_NAME_MAX} bytes"),
                    ));
                }
                "fd" => {
                    let fd = value.parse::<i32>().ok().filter(|&fd| fd >= 3);
                    net.fd = Some(fd.ok_or_else(|| {
                        ParseError::new(text, format!("fd={value}: expected a descriptor ≥ 3"))
                    })?);
                }
                "mac" => {
                    parse_mac(value)?;
                    net.mac = Some(value.to_ascii_lowercase());
                }
                "id" if !value.is_empty() => net.id = Some(value.to_string()),
                "bw" => net.bw = Some(parse_rate(text, key, value)?),
                "ops" => net.ops = Some(parse_rate(text, key, value)?),
                _ => {
                    return Err(ParseError::new(
                        text,
                        format!(
                            "unknown or empty item {:?} (expected tap, fd, mac, id, bw, ops)",
                            format!("{key}={value}")
                        ),
                    ));
                }
            }
        }
        if net.tap.is_some() == net.fd.is_some() {
            return Err(ParseError::new(
                text,
                "exactly one of tap=NAME and fd=N is required",
            ));
        }
        Ok(net)
    }
}

/// The backend of the virtio-console device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ConsoleConfig {
    /// Listen on a Unix socket, as `--serial socket=PATH` does.
    Socket(PathBuf),
    /// Append the guest's output to a file; the guest gets no input.
    File(PathBuf),
}

impl FromStr for ConsoleConfig {
    type Err = ParseError;

    /// `socket=PATH` or `file=PATH`.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        match text.split_once('=') {
            Some(("socket", path)) if !path.is_empty() => {
                Ok(ConsoleConfig::Socket(PathBuf::from(path)))
            }
            Some(("file", path)) if !path.is_empty() => {
                Ok(ConsoleConfig::File(PathBuf::from(path)))
            }
            _ => Err(ParseError::new(text, "expected socket=PATH or file=PATH")),
        }
    }
}

impl fmt::Display for ConsoleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleConfig::Socket(path) => write!(f, "socket={}", path.display()),
            ConsoleConfig::File(path) => write!(f, "file={}", path.display()),
        }
    }
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
            _ => match text.split_once('=') {
                Some(("file", path)) if !path.is_empty() => {
                    Ok(SerialConfig::File(PathBuf::from(path)))
                }
                Some(("socket", path)) if !path.is_empty() => {
                    Ok(SerialConfig::Socket(PathBuf::from(path)))
                }
                _ => Err(ParseError::new(
                    text,
                    "expected stdio, off, file=PATH or socket=PATH",
                )),
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
            SerialConfig::Socket(path) => write!(f, "socket={}", path.display()),
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
    fn a_disk_is_named_by_its_id_else_as_linux_names_virtio_disks() {
        let named: DiskConfig = "path=/d,id=root".parse().unwrap();
        let plain: DiskConfig = "path=/d".parse().unwrap();

        assert_eq!(named.name(3), "root");
        assert_eq!(plain.name(0), "vda");
        assert_eq!(plain.name(1), "vdb");
        assert_eq!(plain.name(25), "vdz");
        assert_eq!(plain.name(26), "vdaa");
        assert_eq!(plain.name(27), "vdab");
        assert_eq!(plain.name(701), "vdzz");
        assert_eq!(plain.name(702), "vdaaa");
    }

    #[test]
    fn vsock_options_parse_and_bad_ones_are_named() {
        let vsock: VsockConfig = "cid=3,socket=/run/v.sock".parse().unwrap();
        assert_eq!((vsock.cid, vsock.socket), (3, PathBuf::from("/run/v.sock")));
        let problem = |text: &str| text.parse::<VsockConfig>().unwrap_err().problem;
        for reserved in ["0", "1", "2", "4294967295", "4294967296"] {
            let text = format!("cid={reserved},socket=/v");
            assert!(problem(&text).contains("reserved"), "{text}");
        }
        assert!(problem("cid=3").contains("socket=PATH is required"));
        assert!(problem("socket=/v").contains("cid=N is required"));
        assert!(problem("cid=x,socket=/v").contains("expected a number"));
        assert!(problem("cid=3,socket=/v,port=1").contains("unknown"));
        let long = format!("cid=3,socket=/{}", "s".repeat(107));
        assert!(problem(&long).contains("at most 107"));
        let fits = format!("cid=3,socket=/{}", "s".repeat(106));
        assert!(fits.parse::<VsockConfig>().is_ok());
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
        assert_eq!(
            "socket=/run/c.sock".parse(),
            Ok(SerialConfig::Socket(PathBuf::from("/run/c.sock")))
        );
        assert_eq!(
            SerialConfig::Socket(PathBuf::from("/s")).to_string(),
            "socket=/s"
        );
        assert!("file=".parse::<SerialConfig>().is_err());
        assert!("socket=".parse::<SerialConfig>().is_err());
        assert!("tty".parse::<SerialConfig>().is_err());
    }

    #[test]
    fn net_options_parse() {
        let net: NetConfig = "tap=tap0,mac=02:AA:bb:cc:dd:ee,id=lan".parse().unwrap();
        assert_eq!(net.tap.as_deref(), Some("tap0"));
        assert_eq!(net.mac.as_deref(), Some("02:aa:bb:cc:dd:ee"));
        assert_eq!(
            net.mac_bytes().unwrap(),
            Some([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        );
        assert_eq!(net.name(0), "lan");
        let inherited: NetConfig = "fd=5".parse().unwrap();
        assert_eq!(
            (inherited.fd, inherited.name(1)),
            (Some(5), "fd=5".to_string())
        );
        let err = |text: &str| text.parse::<NetConfig>().unwrap_err().problem;
        assert!(err("mac=02:00:00:00:00:01").contains("exactly one"));
        assert!(err("tap=a,fd=4").contains("exactly one"));
        assert!(err("tap=a-name-that-is-too-long").contains("15"));
        assert!(err("tap=t,mac=01:00:00:00:00:01").contains("multicast"));
        assert!(err("tap=t,mac=02:00:00:00:00").contains("MAC"));
        assert!(err("tap=t,mac=02:00:00:00:00:0g").contains("MAC"));
        assert!(err("fd=1").contains("≥ 3"));
        assert!(err("tap=t,colour=red").contains("unknown"));
    }

    #[test]
    fn disk_and_net_items_without_equals_are_named() {
        let disk = "path=/d,readonly".parse::<DiskConfig>().unwrap_err();
        let net = "tap=t,,id=x".parse::<NetConfig>().unwrap_err();

        assert!(disk.problem.contains("\"readonly\" is not key=value"));
        assert!(net.problem.contains("\"\" is not key=value"));
    }

    #[test]
    fn net_rate_limits_parse_with_units() {
        let net: NetConfig = "tap=t,bw=10M,ops=1000".parse().unwrap();
        let bytes_only: NetConfig = "fd=3,bw=512k".parse().unwrap();
        let err = |text: &str| text.parse::<NetConfig>().unwrap_err().problem;

        assert_eq!((net.bw, net.ops), (Some(10 << 20), Some(1000)));
        assert_eq!((bytes_only.bw, bytes_only.ops), (Some(512 << 10), None));
        assert!(err("tap=t,bw=0").contains("positive"));
        assert!(err("tap=t,ops=fast").contains("positive"));
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, r#"{"tap":"t","bw":10485760,"ops":1000}"#);
        assert_eq!(serde_json::from_str::<NetConfig>(&json).unwrap(), net);
    }

    #[test]
    fn console_backends_parse() {
        assert_eq!(
            "socket=/c.sock".parse(),
            Ok(ConsoleConfig::Socket(PathBuf::from("/c.sock")))
        );
        assert_eq!(
            "file=/c.log".parse(),
            Ok(ConsoleConfig::File(PathBuf::from("/c.log")))
        );
        assert_eq!(
            ConsoleConfig::File(PathBuf::from("/l")).to_string(),
            "file=/l"
        );
        assert!("stdio".parse::<ConsoleConfig>().is_err());
        assert!("socket=".parse::<ConsoleConfig>().is_err());
        let json = r#"{"payload":{"kernel":"/k"},"console":{"socket":"/c"}}"#;
        let config: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            config.console,
            Some(ConsoleConfig::Socket(PathBuf::from("/c")))
        );
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
