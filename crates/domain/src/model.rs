//! The typed domain definition: the supported subset of libvirt's `<domain>`, after defaults.
//!
//! A [`DomainDef`] read by [`DomainDef::from_xml`](crate::DomainDef::from_xml) is normalized: every
//! default libvirt would fill in is filled in (UUID, MAC addresses, `<clock>`, lifecycle actions,
//! the memory balloon, the console that mirrors the serial port), so writing it out and reading it
//! back gives the same value.

use std::fmt;
use std::path::PathBuf;

use crate::error::DomainError;

/// A whole domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDef {
    /// `<domain type=...>`.
    pub domain_type: DomainType,
    /// `<name>`: unique on a host; no `/` or newline.
    pub name: String,
    /// `<uuid>`: generated (version 4) when absent.
    pub uuid: Uuid,
    /// `<title>`: one line.
    pub title: Option<String>,
    /// `<description>`: free text.
    pub description: Option<String>,
    /// `<memory>` in KiB: the guest's RAM at boot.
    pub memory_kib: u64,
    /// `<currentMemory>` in KiB: RAM minus what the balloon holds; at most `memory_kib`.
    pub current_memory_kib: u64,
    /// `<vcpu>`: the number of vCPUs (all online, placement static).
    pub vcpus: u32,
    /// `<os>`.
    pub os: Os,
    /// `<features>`.
    pub features: Features,
    /// `<cpu>`, when given.
    pub cpu: Option<Cpu>,
    /// `<clock offset=...>`.
    pub clock: ClockOffset,
    /// `<on_poweroff>`: always destroy.
    pub on_poweroff: LifecycleAction,
    /// `<on_reboot>`: restart (reboot in place) or destroy.
    pub on_reboot: LifecycleAction,
    /// `<on_crash>`: always destroy.
    pub on_crash: LifecycleAction,
    /// `<devices>`.
    pub devices: Devices,
}

/// The hypervisor type in `<domain type=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    /// `kvm`: hardware virtualization; the only type the native driver runs.
    Kvm,
    /// `qemu`: QEMU's software emulation (TCG), for the QEMU driver.
    Qemu,
}

impl DomainType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

/// `<os>`: what the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Os {
    /// `<type machine=...>`: `pc` or a versioned `pc-i440fx-*` name.
    pub machine: String,
    /// `<loader>`: a firmware image.
    pub loader: Option<Loader>,
    /// `<kernel>`: a kernel booted directly.
    pub kernel: Option<PathBuf>,
    /// `<initrd>`.
    pub initrd: Option<PathBuf>,
    /// `<cmdline>`, as written.
    pub cmdline: Option<String>,
    /// `<boot dev=...>` in order; `hd` alone when none is given (as libvirt writes it).
    pub boot: Vec<BootDevice>,
}

/// The machine type written when none is given.
pub const DEFAULT_MACHINE: &str = "pc";

/// `<loader>`: a firmware image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    /// The image.
    pub path: PathBuf,
    /// `readonly='yes|no'`.
    pub readonly: Option<bool>,
    /// `type='rom|pflash'`.
    pub kind: Option<LoaderType>,
}

/// How a firmware image is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderType {
    /// `rom`: read-only, below 4 GiB (SeaBIOS).
    Rom,
    /// `pflash`: a flash device (UEFI).
    Pflash,
}

impl LoaderType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoaderType::Rom => "rom",
            LoaderType::Pflash => "pflash",
        }
    }
}

/// `<boot dev=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// `hd`.
    Hd,
    /// `cdrom`.
    Cdrom,
    /// `network`.
    Network,
    /// `fd`.
    Fd,
}

impl BootDevice {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Hd => "hd",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Network => "network",
            BootDevice::Fd => "fd",
        }
    }
}

/// `<features>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `<acpi/>`.
    pub acpi: bool,
    /// `<apic/>`.
    pub apic: bool,
}

/// `<cpu>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// `mode=...`.
    pub mode: CpuMode,
    /// `<feature policy=... name=.../>` in order.
    pub features: Vec<CpuFeature>,
}

/// `<cpu mode=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// `host-passthrough`: the host CPU as KVM can offer it.
    HostPassthrough,
    /// `host-model`: for oxvmm the same as host-passthrough (KVM's supported CPUID).
    HostModel,
}

impl CpuMode {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuMode::HostPassthrough => "host-passthrough",
            CpuMode::HostModel => "host-model",
        }
    }
}

/// `<feature policy=... name=.../>` inside `<cpu>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    /// What to do with the feature.
    pub policy: FeaturePolicy,
    /// libvirt's feature name (e.g. `avx`, `sse4.2`).
    pub name: String,
}

/// A CPU feature policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeaturePolicy {
    /// `require`: the guest must have it.
    Require,
    /// `disable`: hide it from the guest.
    Disable,
}

impl FeaturePolicy {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            FeaturePolicy::Require => "require",
            FeaturePolicy::Disable => "disable",
        }
    }
}

/// `<clock offset=...>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockOffset {
    /// `utc` (the default).
    #[default]
    Utc,
    /// `localtime`: the RTC shows the host's local time.
    Localtime,
}

impl ClockOffset {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockOffset::Utc => "utc",
            ClockOffset::Localtime => "localtime",
        }
    }
}

/// What happens on power-off, reboot or crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    /// `destroy`: the VM stops.
    Destroy,
    /// `restart`: the VM starts again.
    Restart,
}

impl LifecycleAction {
    /// The element text.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Destroy => "destroy",
            LifecycleAction::Restart => "restart",
        }
    }
}

/// `<devices>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// `<emulator>`: kept and written back; the daemon decides which binary runs.
    pub emulator: Option<PathBuf>,
    /// `<disk>`s, sorted by target name (which is also their PCI order).
    pub disks: Vec<Disk>,
    /// `<interface>`s in document order.
    pub interfaces: Vec<Interface>,
    /// `<serial>` (COM1); a `<console>` of target type serial mirrors it.
    pub serial: Option<CharDevice>,
    /// A `<console>` of target type virtio.
    pub virtio_console: Option<CharDevice>,
    /// `<memballoon>`: virtio unless `model='none'`.
    pub memballoon: MemBalloon,
    /// `<rng>`.
    pub rng: Option<Rng>,
    /// `<vsock>`.
    pub vsock: Option<Vsock>,
}

/// `<disk>`: a virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `type='file|block'`.
    pub kind: DiskType,
    /// `<source file=...>` or `<source dev=...>`.
    pub source: PathBuf,
    /// `<target dev='vdX'>`.
    pub target: String,
    /// `<driver cache=...>`.
    pub cache: Option<DiskCache>,
    /// `<readonly/>`.
    pub readonly: bool,
    /// `<serial>`.
    pub serial: Option<String>,
    /// `<iotune>`: rate limits.
    pub iotune: IoTune,
}

/// `<disk><iotune>`: the limits oxvmm's token buckets can express, over reads and writes
/// together. libvirt's 0 ("no limit") is kept as `None`, so such a limit is not written back,
/// as libvirt does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTune {
    /// `<total_bytes_sec>`: bytes per second.
    pub total_bytes_sec: Option<u64>,
    /// `<total_iops_sec>`: requests per second.
    pub total_iops_sec: Option<u64>,
}

impl IoTune {
    /// No limit at all (`<iotune>` is then not written).
    pub fn is_empty(&self) -> bool {
        self.total_bytes_sec.is_none() && self.total_iops_sec.is_none()
    }
}

/// `<disk type=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// A file (`<source file=...>`).
    File,
    /// A block device (`<source dev=...>`).
    Block,
}

impl DiskType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskType::File => "file",
            DiskType::Block => "block",
        }
    }
}

/// `<driver cache=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskCache {
    /// `none`: O_DIRECT, bypassing the host page cache.
    None,
    /// `writeback`: through the host page cache; guest flushes are honoured.
    Writeback,
}

impl DiskCache {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskCache::None => "none",
            DiskCache::Writeback => "writeback",
        }
    }
}

/// `<interface>`: a virtio-net NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// `type=...` and its source.
    pub kind: InterfaceType,
    /// `<mac address=...>`: generated (52:54:00:xx:xx:xx) when absent.
    pub mac: MacAddr,
    /// `<target>`: a TAP device named in the definition. Unnamed, the daemon creates one
    /// (`vnetN`); such generated names are not kept in a definition.
    pub target: Option<InterfaceTarget>,
    /// `<bandwidth>`: traffic limits.
    pub bandwidth: Bandwidth,
}

/// `<interface><bandwidth>`: the average rate of each direction, in libvirt's "kilobytes" per
/// second (KiB/s, 1024 bytes). libvirt's `peak`, `burst` and `floor` are not supported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// `<inbound average=...>`: traffic the guest receives.
    pub inbound_kib: Option<u32>,
    /// `<outbound average=...>`: traffic the guest sends.
    pub outbound_kib: Option<u32>,
}

impl Bandwidth {
    /// No limit in either direction (`<bandwidth>` is then not written, as libvirt does).
    pub fn is_empty(&self) -> bool {
        self.inbound_kib.is_none() && self.outbound_kib.is_none()
    }
}

/// `<interface><target dev=... managed=...>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceTarget {
    /// The TAP device's name.
    pub dev: String,
    /// `managed='no'` (ethernet only): the TAP device exists already and is used as it is;
    /// otherwise the daemon creates it.
    pub managed: Option<bool>,
}

/// `<interface type=...>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceType {
    /// `ethernet`: a TAP device and nothing else.
    Ethernet,
    /// `bridge`: a TAP device added to `<source bridge=...>`.
    Bridge {
        /// The host bridge.
        bridge: String,
    },
}

/// Where a serial port or console goes (`type=` and `<source>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CharDevice {
    /// `pty`: a pseudo-terminal the daemon allocates (its path is live-only).
    Pty,
    /// `file`: output appended to a file.
    File {
        /// `<source path=...>`.
        path: PathBuf,
    },
    /// `unix` with `mode='bind'`: a Unix socket the VM listens on.
    UnixBind {
        /// `<source path=...>`.
        path: PathBuf,
    },
    /// `null`: output discarded.
    Null,
}

impl CharDevice {
    /// The `type` attribute value.
    pub fn type_str(&self) -> &'static str {
        match self {
            CharDevice::Pty => "pty",
            CharDevice::File { .. } => "file",
            CharDevice::UnixBind { .. } => "unix",
            CharDevice::Null => "null",
        }
    }
}

/// `<memballoon model=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemBalloon {
    /// `model='none'`.
    None,
    /// `model='virtio'` (the default).
    Virtio {
        /// `autodeflate='on|off'`: the guest may take memory back when it runs out.
        autodeflate: Option<bool>,
        /// `<stats period=...>`: seconds between statistics updates (0 = off).
        stats_period: Option<u32>,
    },
}

/// `<rng model='virtio'>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    /// `<backend model='random'>`: the host entropy source.
    pub backend: PathBuf,
}

/// The entropy source written when `<backend>` is empty.
pub const DEFAULT_RNG_BACKEND: &str = "/dev/urandom";

/// `<vsock model='virtio'>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vsock {
    /// `<cid auto=... address=...>`.
    pub cid: VsockCid,
}

/// The guest's vsock context ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsockCid {
    /// `auto='yes'`: the daemon picks a free one at start.
    Auto,
    /// `auto='no' address=N` (N ≥ 3).
    Fixed(u32),
}

/// The smallest guest CID (0–2 are the hypervisor, loopback and host).
pub const MIN_GUEST_CID: u32 = 3;

/// A domain UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A random (version 4) UUID from the host's random source.
    pub fn new_v4() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(Uuid(bytes))
    }

    /// Parses a UUID as libvirt's `virUUIDParse` does, so that the XML, the daemon and the CLI
    /// accept the same texts: leading and trailing white space, then 32 hex digits in pairs
    /// (either case), with `-` or a space allowed between pairs.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut rest = text.trim_start().as_bytes();
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            match rest {
                [b'-' | b' ', tail @ ..] => rest = tail,
                [high, low, tail @ ..] => {
                    let pair = [*high, *low];
                    let pair = std::str::from_utf8(&pair).ok()?;
                    if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    bytes[filled] = u8::from_str_radix(pair, 16).ok()?;
                    filled += 1;
                    rest = tail;
                }
                _ => return None,
            }
        }
        rest.iter()
            .all(u8::is_ascii_whitespace)
            .then_some(Uuid(bytes))
    }

    /// [`Uuid::from_text`], with an error naming the XML `path` and the text.
    pub fn parse(path: &str, text: &str) -> Result<Self, DomainError> {
        Self::from_text(text).ok_or_else(|| {
            DomainError::invalid(
                path,
                text,
                "is not a UUID (32 hex digits, plain or dashed as 8-4-4-4-12)",
            )
        })
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

fn parse_hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random address under QEMU's prefix 52:54:00, as libvirt generates them.
    pub fn new_random() -> Result<Self, getrandom::Error> {
        let mut tail = [0u8; 3];
        getrandom::fill(&mut tail)?;
        Ok(MacAddr([0x52, 0x54, 0x00, tail[0], tail[1], tail[2]]))
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (either case); multicast addresses are refused.
    pub fn parse(path: &str, text: &str) -> Result<Self, DomainError> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let hex: String = parts.concat();
        let bytes = (parts.len() == 6 && parts.iter().all(|p| p.len() == 2))
            .then(|| parse_hex_bytes::<6>(&hex))
            .flatten()
            .ok_or_else(|| {
                DomainError::invalid(path, text, "is not a MAC address (aa:bb:cc:dd:ee:ff)")
            })?;
        if bytes[0] & 1 == 1 {
            return Err(DomainError::invalid(
                path,
                text,
                "is a multicast address; a NIC needs a unicast one",
            ));
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The position of a disk name such as `vda` (0), `vdz` (25), `vdaa` (26), as libvirt's
/// `virDiskNameToIndex` computes it; `None` for names that are not `vd` + 1–3 letters.
pub fn disk_index(target: &str) -> Option<u32> {
    let letters = target.strip_prefix("vd")?;
    if letters.is_empty() || letters.len() > 3 || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut index: u32 = 0;
    for b in letters.bytes() {
        index = index * 26 + u32::from(b - b'a') + 1;
    }
    Some(index - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_dashed_and_plain_and_print_dashed() {
        let dashed = Uuid::parse("/u", "6695EB01-f6a4-8304-79aa-97f2502e193f").unwrap();
        let plain = Uuid::parse("/u", " 6695eb01f6a4830479aa97f2502e193f\n").unwrap();

        assert_eq!(dashed, plain);
        assert_eq!(dashed.to_string(), "6695eb01-f6a4-8304-79aa-97f2502e193f");
        for bad in [
            "",
            "6695eb01-f6a4-8304-79aa-97f2502e193",
            "6695eb01f6a4-8304-79aa-97f2502e193ff",
            "6695eb01-f6a4-8304-79aa-97f2502e193g",
            "+695eb01f6a4830479aa97f2502e193f",
            "é695eb01f6a4830479aa97f2502e193",
            "6695eb01-f6a4-8304-79aa-97f2502e193f x",
            "6-695eb01f6a4830479aa97f2502e193f",
        ] {
            assert!(Uuid::parse("/u", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuids_take_what_libvirts_uuid_parser_takes() {
        let want = Uuid::parse("/u", "6695eb01-f6a4-8304-79aa-97f2502e193f").unwrap();

        for good in [
            "6695eb01f6a4830479aa97f2502e193f",
            "\t 6695eb01-f6a4-8304-79aa-97f2502e193f \n",
            "-6695eb01 f6a4 8304 79aa 97f2502e193f",
            "66-95-eb-01-f6-a4-83-04-79-aa-97-f2-50-2e-19-3f",
        ] {
            assert_eq!(Uuid::from_text(good), Some(want), "{good:?}");
        }
    }

    #[test]
    fn generated_uuids_are_version_4_and_differ() {
        let a = Uuid::new_v4().unwrap();
        let b = Uuid::new_v4().unwrap();

        assert_ne!(a, b);
        assert_eq!(a.0[6] >> 4, 4);
        assert_eq!(a.0[8] >> 6, 0b10);
    }

    #[test]
    fn macs_parse_print_and_refuse_multicast() {
        let mac = MacAddr::parse("/m", "52:54:00:AB:cd:0e").unwrap();

        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0e");
        assert!(MacAddr::parse("/m", "01:00:5e:00:00:01").is_err());
        assert!(MacAddr::parse("/m", "52:54:00:ab:cd").is_err());
        assert!(MacAddr::parse("/m", "52:54:00:ab:c:d0e").is_err());
        assert!(MacAddr::parse("/m", "52-54-00-ab-cd-0e").is_err());
        let random = MacAddr::new_random().unwrap();
        assert_eq!(random.0[..3], [0x52, 0x54, 0x00]);
    }

    #[test]
    fn disk_names_index_like_libvirt() {
        assert_eq!(disk_index("vda"), Some(0));
        assert_eq!(disk_index("vdz"), Some(25));
        assert_eq!(disk_index("vdaa"), Some(26));
        assert_eq!(disk_index("vdzzz"), Some(18_277));
        assert_eq!(disk_index("vdaaaa"), None);
        assert_eq!(disk_index("sda"), None);
        assert_eq!(disk_index("vd"), None);
        assert_eq!(disk_index("vdA"), None);
    }
}
