//! `<devices>` → [`Devices`]: disks, NICs, serial port and consoles, balloon, RNG, vsock.
//!
//! Live-only details that `dumpxml` of a running domain shows (`<alias>`, a pty's
//! `<source path>`, a console's `tty`, daemon-named `vnet*` TAP devices, an automatic vsock CID's
//! address) are accepted and dropped, so the daemon can read back what it wrote for a running VM.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::dom::Node;
use crate::error::DomainError;
use crate::model::{
    CharDevice, DEFAULT_RNG_BACKEND, Devices, Disk, DiskCache, DiskType, Interface,
    InterfaceTarget, InterfaceType, MIN_GUEST_CID, MacAddr, MemBalloon, Rng, Vsock, VsockCid,
    disk_index,
};
use crate::parse::{absolute_path, on_off, path_child, u32_attr, yes_no};
use crate::qos::{parse_bandwidth, parse_iotune};

/// The prefix of TAP names the daemon generates; such names are not part of a definition.
pub const GENERATED_TAP_PREFIX: &str = "vnet";

const DEVICE_ELEMENTS: &[&str] = &[
    "emulator",
    "disk",
    "controller",
    "interface",
    "serial",
    "console",
    "memballoon",
    "rng",
    "vsock",
];

/// Parses `<devices>` (an empty element gives the defaults).
pub fn parse_devices(node: Node<'_>) -> Result<Devices, DomainError> {
    node.allow(&[], DEVICE_ELEMENTS)?;
    for controller in node.children("controller") {
        check_controller(controller.node())?;
    }
    let (serial, virtio_console) = serial_and_consoles(node)?;
    Ok(Devices {
        emulator: path_child(node, "emulator")?,
        disks: disks(node)?,
        interfaces: interfaces(node)?,
        serial,
        virtio_console,
        memballoon: memballoon(node)?,
        rng: rng(node)?,
        vsock: vsock(node)?,
    })
}

/// `<alias>` names a device in a running domain: accepted, not kept.
const ALIAS: &str = "alias";

fn check_alias(device: Node<'_>) -> Result<(), DomainError> {
    if let Some(alias) = device.child(ALIAS)? {
        let alias = alias.node();
        alias.allow(&["name"], &[])?;
        alias.required_attr("name")?;
    }
    Ok(())
}

fn disks(node: Node<'_>) -> Result<Vec<Disk>, DomainError> {
    // Sorted by target index: libvirt's order, and oxvmm's PCI order. The map also finds
    // duplicates without a quadratic scan of a hostile document's thousands of disks.
    let mut disks: BTreeMap<u32, (String, Disk)> = BTreeMap::new();
    for located in node.children("disk") {
        let disk_node = located.node();
        let (index, disk) = disk(disk_node)?;
        if let Some((other, _)) = disks.get(&index) {
            return Err(DomainError::conflict(
                &format!("{}/target/@dev", disk_node.path()),
                format!("{:?} is already the target of {other}", disk.target),
            ));
        }
        let name = disk_node.path().rsplit('/').next().unwrap_or_default();
        disks.insert(index, (name.to_string(), disk));
    }
    Ok(disks.into_values().map(|(_, disk)| disk).collect())
}

fn disk(node: Node<'_>) -> Result<(u32, Disk), DomainError> {
    node.allow(
        &["type", "device"],
        &[
            "driver", "source", "target", "iotune", "readonly", "serial", ALIAS,
        ],
    )?;
    check_alias(node)?;
    let kind = match node.attr("type") {
        None | Some("file") => DiskType::File,
        Some("block") => DiskType::Block,
        Some(other) => {
            return Err(DomainError::invalid(
                &node.attr_path("type"),
                other,
                "is not supported (use file or block)",
            ));
        }
    };
    if let Some(device) = node.attr("device")
        && device != "disk"
    {
        return Err(DomainError::invalid(
            &node.attr_path("device"),
            device,
            "is not supported (only disk)",
        ));
    }
    let readonly = match node.child("readonly")? {
        Some(readonly) => readonly.node().allow(&[], &[]).map(|()| true)?,
        None => false,
    };
    let (index, target) = disk_target(node)?;
    let disk = Disk {
        kind,
        source: disk_source(node, kind)?,
        target,
        cache: disk_cache(node)?,
        readonly,
        serial: disk_serial(node)?,
        iotune: parse_iotune(node)?,
    };
    Ok((index, disk))
}

fn disk_cache(disk: Node<'_>) -> Result<Option<DiskCache>, DomainError> {
    let Some(driver) = disk.child("driver")? else {
        return Ok(None);
    };
    let driver = driver.node();
    driver.allow(&["name", "type", "cache"], &[])?;
    let expect = |attr: &str, wanted: &str, problem: &str| match driver.attr(attr) {
        Some(value) if value != wanted => Err(DomainError::invalid(
            &driver.attr_path(attr),
            value,
            problem,
        )),
        _ => Ok(()),
    };
    expect("name", "qemu", "is not supported (use qemu)")?;
    expect("type", "raw", "is not supported (only raw images)")?;
    match driver.attr("cache") {
        None => Ok(None),
        Some("none") => Ok(Some(DiskCache::None)),
        Some("writeback") => Ok(Some(DiskCache::Writeback)),
        Some(other) => Err(DomainError::invalid(
            &driver.attr_path("cache"),
            other,
            "is not supported (use none or writeback)",
        )),
    }
}

fn disk_source(disk: Node<'_>, kind: DiskType) -> Result<PathBuf, DomainError> {
    let source = disk.required_child("source")?;
    let source = source.node();
    let attr = match kind {
        DiskType::File => "file",
        DiskType::Block => "dev",
    };
    source.allow(&[attr], &[])?;
    absolute_attr(source, attr)
}

fn absolute_attr(node: Node<'_>, attr: &str) -> Result<PathBuf, DomainError> {
    let value = node.required_attr(attr)?;
    if value.trim() != value {
        return Err(DomainError::invalid(
            &node.attr_path(attr),
            value,
            "has white space around the path",
        ));
    }
    absolute_path(&node.attr_path(attr), value)
}

fn disk_target(disk: Node<'_>) -> Result<(u32, String), DomainError> {
    let target = disk.required_child("target")?;
    let target = target.node();
    target.allow(&["dev", "bus"], &[])?;
    let dev = target.required_attr("dev")?;
    let index = disk_index(dev).ok_or_else(|| {
        DomainError::invalid(
            &target.attr_path("dev"),
            dev,
            "is not a virtio disk name (vda, vdb, ..., vdz, vdaa, ...)",
        )
    })?;
    if let Some(bus) = target.attr("bus")
        && bus != "virtio"
    {
        return Err(DomainError::invalid(
            &target.attr_path("bus"),
            bus,
            "is not supported (only virtio)",
        ));
    }
    Ok((index, dev.to_string()))
}

fn disk_serial(disk: Node<'_>) -> Result<Option<String>, DomainError> {
    let Some(serial) = disk.child("serial")? else {
        return Ok(None);
    };
    let serial = serial.node();
    serial.allow_text(&[])?;
    let text = serial.raw_text();
    // libvirt's rule for disk serials.
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b' ' | b'.' | b'+' | b'-'));
    if !valid {
        return Err(DomainError::invalid(
            serial.path(),
            text,
            "is not a disk serial (letters, digits, '_', ' ', '.', '+', '-')",
        ));
    }
    Ok(Some(text.to_string()))
}

/// Accepts the controllers libvirt writes for this machine: the PCI root and, with a virtio
/// console, a virtio-serial controller. Both are implied, so nothing is kept.
fn check_controller(node: Node<'_>) -> Result<(), DomainError> {
    node.allow(&["type", "index", "model"], &[ALIAS])?;
    check_alias(node)?;
    let kind = node.required_attr("type")?;
    let model = node.attr("model");
    match (kind, model) {
        ("pci", None | Some("pci-root")) | ("virtio-serial", None) => {}
        ("pci" | "virtio-serial", Some(model)) => {
            return Err(DomainError::invalid(
                &node.attr_path("model"),
                model,
                "is not supported (pci takes model pci-root; virtio-serial takes none)",
            ));
        }
        (other, _) => {
            return Err(DomainError::invalid(
                &node.attr_path("type"),
                other,
                "is not supported (only the pci-root and virtio-serial controllers)",
            ));
        }
    }
    match u32_attr(node, "index")? {
        None | Some(0) => Ok(()),
        Some(_) => Err(DomainError::invalid(
            &node.attr_path("index"),
            node.attr("index").unwrap_or_default(),
            "is not supported (one controller of each type, index 0)",
        )),
    }
}

fn interfaces(node: Node<'_>) -> Result<Vec<Interface>, DomainError> {
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut macs = HashSet::new();
    let mut taps = HashSet::new();
    let mut without_mac = Vec::new();
    for located in node.children("interface") {
        let nic_node = located.node();
        let (nic, given) = interface(nic_node)?;
        if given && !macs.insert(nic.mac) {
            return Err(DomainError::conflict(
                &format!("{}/mac/@address", nic_node.path()),
                format!("MAC address {} is used by another interface", nic.mac),
            ));
        }
        if !given {
            without_mac.push((interfaces.len(), nic_node.path().to_string()));
        }
        if let Some(target) = &nic.target
            && !taps.insert(target.dev.clone())
        {
            return Err(DomainError::conflict(
                &format!("{}/target/@dev", nic_node.path()),
                format!("TAP device {:?} is used by another interface", target.dev),
            ));
        }
        interfaces.push(nic);
    }
    // Generated addresses are drawn again until they differ from every other address.
    for (index, path) in without_mac {
        let mut mac = interfaces[index].mac;
        while !macs.insert(mac) {
            mac = random_mac(&path)?;
        }
        interfaces[index].mac = mac;
    }
    Ok(interfaces)
}

/// One interface, and whether its MAC address was given (else it was generated).
fn interface(node: Node<'_>) -> Result<(Interface, bool), DomainError> {
    let kind = match node.required_attr("type")? {
        "ethernet" => {
            node.allow(&["type"], &["mac", "target", "model", "bandwidth", ALIAS])?;
            InterfaceType::Ethernet
        }
        "bridge" => {
            node.allow(
                &["type"],
                &["mac", "source", "target", "model", "bandwidth", ALIAS],
            )?;
            let source = node.required_child("source")?;
            let source = source.node();
            source.allow(&["bridge"], &[])?;
            let bridge =
                interface_name(&source.attr_path("bridge"), source.required_attr("bridge")?)?;
            InterfaceType::Bridge { bridge }
        }
        other => {
            return Err(DomainError::invalid(
                &node.attr_path("type"),
                other,
                "is not supported (use ethernet or bridge)",
            ));
        }
    };
    check_alias(node)?;
    interface_model(node)?;
    let target = interface_target(node, &kind)?;
    let bandwidth = parse_bandwidth(node)?;
    let (mac, given) = match interface_mac(node)? {
        Some(mac) => (mac, true),
        None => (random_mac(node.path())?, false),
    };
    let nic = Interface {
        kind,
        mac,
        target,
        bandwidth,
    };
    Ok((nic, given))
}

fn interface_mac(node: Node<'_>) -> Result<Option<MacAddr>, DomainError> {
    let Some(mac) = node.child("mac")? else {
        return Ok(None);
    };
    let mac = mac.node();
    mac.allow(&["address"], &[])?;
    MacAddr::parse(&mac.attr_path("address"), mac.required_attr("address")?).map(Some)
}

fn random_mac(interface_path: &str) -> Result<MacAddr, DomainError> {
    MacAddr::new_random().map_err(|e| DomainError::Random {
        path: format!("{interface_path}/mac"),
        reason: e.to_string(),
    })
}

fn interface_model(node: Node<'_>) -> Result<(), DomainError> {
    if let Some(model) = node.child("model")? {
        let model = model.node();
        model.allow(&["type"], &[])?;
        let kind = model.required_attr("type")?;
        if kind != "virtio" {
            return Err(DomainError::invalid(
                &model.attr_path("type"),
                kind,
                "is not supported (only virtio)",
            ));
        }
    }
    Ok(())
}

fn interface_target(
    node: Node<'_>,
    kind: &InterfaceType,
) -> Result<Option<InterfaceTarget>, DomainError> {
    let Some(target) = node.child("target")? else {
        return Ok(None);
    };
    let target = target.node();
    match kind {
        InterfaceType::Ethernet => target.allow(&["dev", "managed"], &[])?,
        InterfaceType::Bridge { .. } => target.allow(&["dev"], &[])?,
    }
    let dev = interface_name(&target.attr_path("dev"), target.required_attr("dev")?)?;
    let managed = match target.attr("managed") {
        Some(value) => Some(yes_no(&target.attr_path("managed"), value)?),
        None => None,
    };
    // As libvirt does: a generated name is live state unless the TAP device is unmanaged.
    if dev.starts_with(GENERATED_TAP_PREFIX) && managed != Some(false) {
        return Ok(None);
    }
    Ok(Some(InterfaceTarget { dev, managed }))
}

/// A Linux network interface name: 1–15 bytes, no '/', ':' or white space, not `.` or `..`.
fn interface_name(path: &str, name: &str) -> Result<String, DomainError> {
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !valid {
        return Err(DomainError::invalid(
            path,
            name,
            "is not a network interface name (1-15 characters, no '/', ':' or spaces)",
        ));
    }
    Ok(name.to_string())
}

/// Which kind of console a `<console>` is.
enum ConsoleTarget {
    Serial,
    Virtio,
}

fn serial_and_consoles(
    node: Node<'_>,
) -> Result<(Option<CharDevice>, Option<CharDevice>), DomainError> {
    let mut serial = None;
    for located in node.children("serial") {
        let serial_node = located.node();
        if serial.is_some() {
            return Err(DomainError::conflict(
                serial_node.path(),
                "only one serial port (COM1) is supported",
            ));
        }
        serial_node.allow(&["type"], &["source", "target", ALIAS])?;
        check_alias(serial_node)?;
        serial_target(serial_node)?;
        serial = Some(char_device(serial_node)?);
    }
    let mut serial_console = None;
    let mut virtio_console = None;
    for (position, located) in node.children("console").enumerate() {
        let console = located.node();
        console.allow(&["type", "tty"], &["source", "target", ALIAS])?;
        check_alias(console)?;
        let device = char_device(console)?;
        match console_target(console)? {
            ConsoleTarget::Serial if position == 0 => serial_console = Some(device),
            ConsoleTarget::Serial => {
                return Err(DomainError::conflict(
                    console.path(),
                    "only the first console can be the serial port",
                ));
            }
            ConsoleTarget::Virtio if virtio_console.is_none() => virtio_console = Some(device),
            ConsoleTarget::Virtio => {
                return Err(DomainError::conflict(
                    console.path(),
                    "only one virtio console is supported",
                ));
            }
        }
    }
    // As libvirt does: a serial console is the serial port, and the serial port wins when both
    // are given.
    Ok((serial.or(serial_console), virtio_console))
}

fn serial_target(serial: Node<'_>) -> Result<(), DomainError> {
    let Some(target) = serial.child("target")? else {
        return Ok(());
    };
    let target = target.node();
    target.allow(&["type", "port"], &["model"])?;
    expect_attr(target, "type", "isa-serial")?;
    expect_port_zero(target)?;
    if let Some(model) = target.child("model")? {
        let model = model.node();
        model.allow(&["name"], &[])?;
        expect_attr(model, "name", "isa-serial")?;
    }
    Ok(())
}

fn console_target(console: Node<'_>) -> Result<ConsoleTarget, DomainError> {
    let Some(target) = console.child("target")? else {
        return Ok(ConsoleTarget::Serial);
    };
    let target = target.node();
    target.allow(&["type", "port"], &[])?;
    match target.attr("type") {
        None | Some("serial") => {
            expect_port_zero(target)?;
            Ok(ConsoleTarget::Serial)
        }
        Some("virtio") => {
            // libvirt numbers virtio console ports itself (1 after a serial console): checked,
            // not kept.
            u32_attr(target, "port")?;
            Ok(ConsoleTarget::Virtio)
        }
        Some(other) => Err(DomainError::invalid(
            &target.attr_path("type"),
            other,
            "is not supported (use serial or virtio)",
        )),
    }
}

fn expect_attr(node: Node<'_>, attr: &str, only: &str) -> Result<(), DomainError> {
    match node.attr(attr) {
        Some(value) if value != only => Err(DomainError::invalid(
            &node.attr_path(attr),
            value,
            format!("is not supported (only {only})"),
        )),
        _ => Ok(()),
    }
}

fn expect_port_zero(target: Node<'_>) -> Result<(), DomainError> {
    match u32_attr(target, "port")? {
        None | Some(0) => Ok(()),
        Some(_) => Err(DomainError::invalid(
            &target.attr_path("port"),
            target.attr("port").unwrap_or_default(),
            "is not supported (only port 0)",
        )),
    }
}

/// The `type` attribute and `<source>` of a serial port or console.
fn char_device(node: Node<'_>) -> Result<CharDevice, DomainError> {
    let source = node.child("source")?;
    let source_node = source.as_ref().map(|s| s.node());
    let needs_source = || {
        source_node.ok_or_else(|| DomainError::MissingElement {
            path: format!("{}/source", node.path()),
        })
    };
    match node.attr("type").unwrap_or("pty") {
        "pty" => {
            // A pty's path is chosen when the VM starts: live state, checked and dropped.
            if let Some(source) = source_node {
                source.allow(&["path"], &[])?;
            }
            Ok(CharDevice::Pty)
        }
        "file" => {
            let source = needs_source()?;
            source.allow(&["path"], &[])?;
            Ok(CharDevice::File {
                path: absolute_attr(source, "path")?,
            })
        }
        "unix" => {
            let source = needs_source()?;
            source.allow(&["mode", "path"], &[])?;
            if source.attr("mode") != Some("bind") {
                return Err(DomainError::conflict(
                    &source.attr_path("mode"),
                    "only mode='bind' is supported (the VM listens on the socket)",
                ));
            }
            Ok(CharDevice::UnixBind {
                path: absolute_attr(source, "path")?,
            })
        }
        "null" => {
            if let Some(source) = source_node {
                return Err(DomainError::UnsupportedElement {
                    path: source.path().to_string(),
                });
            }
            Ok(CharDevice::Null)
        }
        other => Err(DomainError::invalid(
            &node.attr_path("type"),
            other,
            "is not supported (use pty, file, unix or null)",
        )),
    }
}

fn memballoon(node: Node<'_>) -> Result<MemBalloon, DomainError> {
    let Some(balloon) = node.child("memballoon")? else {
        return Ok(MemBalloon::Virtio {
            autodeflate: None,
            stats_period: None,
        });
    };
    let balloon = balloon.node();
    match balloon.required_attr("model")? {
        "none" => {
            balloon.allow(&["model"], &[])?;
            Ok(MemBalloon::None)
        }
        "virtio" => {
            balloon.allow(&["model", "autodeflate"], &["stats", ALIAS])?;
            check_alias(balloon)?;
            let autodeflate = match balloon.attr("autodeflate") {
                Some(value) => Some(on_off(&balloon.attr_path("autodeflate"), value)?),
                None => None,
            };
            let stats_period = match balloon.child("stats")? {
                Some(stats) => {
                    let stats = stats.node();
                    stats.allow(&["period"], &[])?;
                    Some(crate::units::parse_u32(
                        &stats.attr_path("period"),
                        stats.required_attr("period")?,
                    )?)
                }
                None => None,
            };
            Ok(MemBalloon::Virtio {
                autodeflate,
                stats_period,
            })
        }
        other => Err(DomainError::invalid(
            &balloon.attr_path("model"),
            other,
            "is not supported (use virtio or none)",
        )),
    }
}

fn rng(node: Node<'_>) -> Result<Option<Rng>, DomainError> {
    let Some(rng) = node.child("rng")? else {
        return Ok(None);
    };
    let rng = rng.node();
    rng.allow(&["model"], &["backend", ALIAS])?;
    check_alias(rng)?;
    expect_required(rng, "model", "virtio")?;
    let backend = rng.required_child("backend")?;
    let backend = backend.node();
    backend.allow_text(&["model"])?;
    expect_required(backend, "model", "random")?;
    let path = match backend.text() {
        "" => PathBuf::from(DEFAULT_RNG_BACKEND),
        _ => absolute_path(backend.path(), backend.raw_text())?,
    };
    Ok(Some(Rng { backend: path }))
}

fn expect_required(node: Node<'_>, attr: &str, only: &str) -> Result<(), DomainError> {
    node.required_attr(attr)?;
    expect_attr(node, attr, only)
}

fn vsock(node: Node<'_>) -> Result<Option<Vsock>, DomainError> {
    let Some(vsock) = node.child("vsock")? else {
        return Ok(None);
    };
    let vsock = vsock.node();
    vsock.allow(&["model"], &["cid", ALIAS])?;
    check_alias(vsock)?;
    expect_attr(vsock, "model", "virtio")?;
    let Some(cid) = vsock.child("cid")? else {
        return Ok(Some(Vsock {
            cid: VsockCid::Auto,
        }));
    };
    let cid = cid.node();
    cid.allow(&["auto", "address"], &[])?;
    let auto = match cid.attr("auto") {
        Some(value) => Some(yes_no(&cid.attr_path("auto"), value)?),
        None => None,
    };
    let address = u32_attr(cid, "address")?;
    let cid = match (auto, address) {
        // With auto='yes' an address is the one picked at start: live state.
        (Some(true), _) | (None, None) => VsockCid::Auto,
        (Some(false), None) => {
            return Err(DomainError::MissingAttribute {
                path: cid.attr_path("address"),
            });
        }
        (_, Some(address)) if address < MIN_GUEST_CID || address == u32::MAX => {
            return Err(DomainError::invalid(
                &cid.attr_path("address"),
                cid.attr("address").unwrap_or_default(),
                format!("is not a guest CID ({MIN_GUEST_CID} to 4294967294)"),
            ));
        }
        (_, Some(address)) => VsockCid::Fixed(address),
    };
    Ok(Some(Vsock { cid }))
}
