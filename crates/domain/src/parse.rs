//! Domain XML → [`DomainDef`]: every element and attribute is checked against the supported
//! subset, every value is checked, and libvirt's defaults are filled in.

use std::path::PathBuf;

use crate::devices::parse_devices;
use crate::dom::{Located, Node, parse_document};
use crate::error::DomainError;
use crate::model::{
    BootDevice, ClockOffset, Cpu, CpuFeature, CpuMode, DEFAULT_MACHINE, DomainDef, DomainType,
    FeaturePolicy, Features, LifecycleAction, Loader, LoaderType, MemBalloon, Os, Uuid,
};
use crate::units::{parse_memory_kib, parse_u32};

const DOMAIN_CHILDREN: &[&str] = &[
    "name",
    "uuid",
    "title",
    "description",
    "memory",
    "currentMemory",
    "vcpu",
    "os",
    "features",
    "cpu",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "devices",
];

/// Parses and validates a whole `<domain>` document.
pub fn parse_domain(text: &str) -> Result<DomainDef, DomainError> {
    let root = parse_document(text)?;
    let located = Located::root(&root);
    let node = located.node();
    if node.name() != "domain" {
        return Err(DomainError::conflict(
            node.path(),
            "the root element must be <domain>",
        ));
    }
    domain(node)
}

fn domain(node: Node<'_>) -> Result<DomainDef, DomainError> {
    node.allow(&["type", "id"], DOMAIN_CHILDREN)?;
    let domain_type = domain_type(node)?;
    if let Some(id) = node.attr("id") {
        // A running domain's id is live state: checked, then dropped.
        parse_u32(&node.attr_path("id"), id)?;
    }
    let name = name(node)?;
    let uuid = uuid(node)?;
    let title = title(node)?;
    let description = text_child(node, "description")?;
    let memory_kib = memory(node, "memory")?.ok_or_else(|| DomainError::MissingElement {
        path: format!("{}/memory", node.path()),
    })?;
    let devices = match node.child("devices")? {
        Some(devices) => parse_devices(devices.node())?,
        None => parse_devices_absent()?,
    };
    let current_memory_kib = match memory(node, "currentMemory")? {
        // libvirt's rule: 0 or more than <memory> means "all of it".
        Some(current) if current > 0 && current <= memory_kib => current,
        _ => memory_kib,
    };
    if current_memory_kib < memory_kib && devices.memballoon == MemBalloon::None {
        return Err(DomainError::conflict(
            &format!("{}/currentMemory", node.path()),
            format!(
                "{current_memory_kib} KiB is below <memory> ({memory_kib} KiB), but without a \
                 memory balloon (<memballoon model='none'>) nothing can hold the difference"
            ),
        ));
    }
    Ok(DomainDef {
        domain_type,
        name,
        uuid,
        title,
        description,
        memory_kib,
        current_memory_kib,
        vcpus: vcpus(node)?,
        os: os(node)?,
        features: features(node)?,
        cpu: cpu(node)?,
        clock: clock(node)?,
        on_poweroff: lifecycle(node, "on_poweroff", &[LifecycleAction::Destroy])?,
        on_reboot: lifecycle(
            node,
            "on_reboot",
            &[LifecycleAction::Restart, LifecycleAction::Destroy],
        )?,
        on_crash: lifecycle(node, "on_crash", &[LifecycleAction::Destroy])?,
        devices,
    })
}

fn parse_devices_absent() -> Result<crate::model::Devices, DomainError> {
    let empty = crate::dom::Element {
        name: "devices".into(),
        attrs: Vec::new(),
        children: Vec::new(),
        text: String::new(),
    };
    let located = Located::root(&empty);
    parse_devices(located.node())
}

fn domain_type(node: Node<'_>) -> Result<DomainType, DomainError> {
    match node.required_attr("type")? {
        "kvm" => Ok(DomainType::Kvm),
        "qemu" => Ok(DomainType::Qemu),
        other => Err(DomainError::invalid(
            &node.attr_path("type"),
            other,
            "is not a supported domain type (use kvm)",
        )),
    }
}

/// The raw text of an optional leaf child without attributes; empty text counts as absent, as
/// in libvirt.
fn text_child(node: Node<'_>, name: &str) -> Result<Option<String>, DomainError> {
    match node.child(name)? {
        Some(child) => {
            let child = child.node();
            child.allow_text(&[])?;
            let text = child.raw_text();
            Ok((!text.is_empty()).then(|| text.to_string()))
        }
        None => Ok(None),
    }
}

fn name(node: Node<'_>) -> Result<String, DomainError> {
    let child = node.required_child("name")?;
    let child = child.node();
    child.allow_text(&[])?;
    let name = child.text();
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\n') {
        Some("contains a newline")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(DomainError::invalid(
            child.path(),
            child.raw_text(),
            problem,
        )),
        None => Ok(name.to_string()),
    }
}

fn uuid(node: Node<'_>) -> Result<Uuid, DomainError> {
    match node.child("uuid")? {
        Some(child) => {
            let child = child.node();
            child.allow_text(&[])?;
            Uuid::parse(child.path(), child.raw_text())
        }
        None => Uuid::new_v4().map_err(|e| DomainError::Random {
            path: format!("{}/uuid", node.path()),
            reason: e.to_string(),
        }),
    }
}

fn title(node: Node<'_>) -> Result<Option<String>, DomainError> {
    let Some(title) = text_child(node, "title")? else {
        return Ok(None);
    };
    if title.contains('\n') {
        return Err(DomainError::invalid(
            &format!("{}/title", node.path()),
            &title,
            "contains a newline (a title is one line)",
        ));
    }
    Ok(Some(title))
}

fn memory(node: Node<'_>, name: &str) -> Result<Option<u64>, DomainError> {
    let Some(child) = node.child(name)? else {
        return Ok(None);
    };
    let child = child.node();
    child.allow_text(&["unit"])?;
    let kib = parse_memory_kib(
        child.path(),
        child.raw_text(),
        &child.attr_path("unit"),
        child.attr("unit"),
    )?;
    if name == "memory" && kib == 0 {
        return Err(DomainError::invalid(
            child.path(),
            child.raw_text(),
            "is no memory: it must be above 0",
        ));
    }
    Ok(Some(kib))
}

fn vcpus(node: Node<'_>) -> Result<u32, DomainError> {
    let Some(child) = node.child("vcpu")? else {
        return Ok(1);
    };
    let child = child.node();
    child.allow_text(&["placement", "current"])?;
    let count = parse_u32(child.path(), child.raw_text())?;
    if count == 0 {
        return Err(DomainError::invalid(
            child.path(),
            child.raw_text(),
            "vCPUs: at least 1 is needed",
        ));
    }
    if let Some(placement) = child.attr("placement")
        && placement != "static"
    {
        return Err(DomainError::invalid(
            &child.attr_path("placement"),
            placement,
            "is not supported (only static placement)",
        ));
    }
    if let Some(current) = child.attr("current") {
        let path = child.attr_path("current");
        if parse_u32(&path, current)? != count {
            return Err(DomainError::invalid(
                &path,
                current,
                format!(
                    "differs from the vCPU count {count}: offline vCPUs (vCPU hot-plug) are not \
                     supported"
                ),
            ));
        }
    }
    Ok(count)
}

/// An absolute path naming a file, device or socket: `/` and at least one more character, as
/// libvirt's schema (`absFilePath`) requires. Element text is trimmed first.
pub(crate) fn absolute_path(path: &str, text: &str) -> Result<PathBuf, DomainError> {
    let trimmed = text.trim();
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(DomainError::invalid(
            path,
            text,
            "is not an absolute file path",
        ));
    }
    Ok(PathBuf::from(trimmed))
}

/// An optional leaf child holding an absolute path.
pub(crate) fn path_child(node: Node<'_>, name: &str) -> Result<Option<PathBuf>, DomainError> {
    let Some(child) = node.child(name)? else {
        return Ok(None);
    };
    let child = child.node();
    child.allow_text(&[])?;
    absolute_path(child.path(), child.raw_text()).map(Some)
}

fn os(node: Node<'_>) -> Result<Os, DomainError> {
    let os = node.required_child("os")?;
    let os = os.node();
    os.allow(
        &[],
        &["type", "loader", "kernel", "initrd", "cmdline", "boot"],
    )?;
    let machine = os_type(os)?;
    let kernel = path_child(os, "kernel")?;
    let mut boot = Vec::new();
    for entry in os.children("boot") {
        let entry = entry.node();
        entry.allow(&["dev"], &[])?;
        boot.push(boot_device(
            &entry.attr_path("dev"),
            entry.required_attr("dev")?,
        )?);
    }
    // libvirt's default, written even when a kernel is booted directly.
    if boot.is_empty() {
        boot.push(BootDevice::Hd);
    }
    Ok(Os {
        machine,
        loader: loader(os)?,
        kernel,
        initrd: path_child(os, "initrd")?,
        cmdline: text_child(os, "cmdline")?,
        boot,
    })
}

/// Checks `<type arch=... machine=...>hvm</type>` and returns the machine type.
fn os_type(os: Node<'_>) -> Result<String, DomainError> {
    let child = os.required_child("type")?;
    let child = child.node();
    child.allow_text(&["arch", "machine"])?;
    if child.text() != "hvm" {
        return Err(DomainError::invalid(
            child.path(),
            child.raw_text(),
            "is not supported (only hvm guests)",
        ));
    }
    if let Some(arch) = child.attr("arch")
        && arch != "x86_64"
    {
        return Err(DomainError::invalid(
            &child.attr_path("arch"),
            arch,
            "is not supported (only x86_64)",
        ));
    }
    match child.attr("machine") {
        None => Ok(DEFAULT_MACHINE.to_string()),
        Some(machine) if machine == "pc" || machine.starts_with("pc-i440fx-") => {
            Ok(machine.to_string())
        }
        Some(machine) => Err(DomainError::invalid(
            &child.attr_path("machine"),
            machine,
            "is not supported (oxvmm has one i440FX-like machine: use pc)",
        )),
    }
}

fn boot_device(path: &str, text: &str) -> Result<BootDevice, DomainError> {
    match text {
        "hd" => Ok(BootDevice::Hd),
        "cdrom" => Ok(BootDevice::Cdrom),
        "network" => Ok(BootDevice::Network),
        "fd" => Ok(BootDevice::Fd),
        _ => Err(DomainError::invalid(
            path,
            text,
            "is not a boot device (use hd, cdrom, network or fd)",
        )),
    }
}

fn loader(os: Node<'_>) -> Result<Option<Loader>, DomainError> {
    let Some(child) = os.child("loader")? else {
        return Ok(None);
    };
    let child = child.node();
    child.allow_text(&["readonly", "type"])?;
    let readonly = match child.attr("readonly") {
        Some(value) => Some(yes_no(&child.attr_path("readonly"), value)?),
        None => None,
    };
    let kind = match child.attr("type") {
        None => None,
        Some("rom") => Some(LoaderType::Rom),
        Some("pflash") => Some(LoaderType::Pflash),
        Some(other) => {
            return Err(DomainError::invalid(
                &child.attr_path("type"),
                other,
                "is not a loader type (use rom or pflash)",
            ));
        }
    };
    Ok(Some(Loader {
        path: absolute_path(child.path(), child.raw_text())?,
        readonly,
        kind,
    }))
}

/// `yes`/`no` as libvirt writes booleans.
pub(crate) fn yes_no(path: &str, text: &str) -> Result<bool, DomainError> {
    match text {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(DomainError::invalid(path, text, "is not yes or no")),
    }
}

/// `on`/`off` as libvirt writes switches.
pub(crate) fn on_off(path: &str, text: &str) -> Result<bool, DomainError> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(DomainError::invalid(path, text, "is not on or off")),
    }
}

fn features(node: Node<'_>) -> Result<Features, DomainError> {
    let Some(child) = node.child("features")? else {
        return Ok(Features::default());
    };
    let child = child.node();
    child.allow(&[], &["acpi", "apic"])?;
    let flag = |name: &str| -> Result<bool, DomainError> {
        match child.child(name)? {
            Some(feature) => feature.node().allow(&[], &[]).map(|()| true),
            None => Ok(false),
        }
    };
    Ok(Features {
        acpi: flag("acpi")?,
        apic: flag("apic")?,
    })
}

fn cpu(node: Node<'_>) -> Result<Option<Cpu>, DomainError> {
    let Some(child) = node.child("cpu")? else {
        return Ok(None);
    };
    let child = child.node();
    child.allow(&["mode"], &["feature"])?;
    let mode_path = child.attr_path("mode");
    let mode = match child.required_attr("mode")? {
        "host-passthrough" => CpuMode::HostPassthrough,
        "host-model" => CpuMode::HostModel,
        other => {
            return Err(DomainError::invalid(
                &mode_path,
                other,
                "is not supported (use host-passthrough or host-model)",
            ));
        }
    };
    let mut features: Vec<CpuFeature> = Vec::new();
    for feature in child.children("feature") {
        let feature = feature.node();
        feature.allow(&["policy", "name"], &[])?;
        let parsed = cpu_feature(feature)?;
        if features.iter().any(|f| f.name == parsed.name) {
            return Err(DomainError::conflict(
                &feature.attr_path("name"),
                format!("CPU feature {:?} is listed twice", parsed.name),
            ));
        }
        features.push(parsed);
    }
    Ok(Some(Cpu { mode, features }))
}

fn cpu_feature(feature: Node<'_>) -> Result<CpuFeature, DomainError> {
    let policy = match feature.attr("policy") {
        None | Some("require") => FeaturePolicy::Require,
        Some("disable") => FeaturePolicy::Disable,
        Some(other) => {
            return Err(DomainError::invalid(
                &feature.attr_path("policy"),
                other,
                "is not supported (use require or disable)",
            ));
        }
    };
    let name = feature.required_attr("name")?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid {
        return Err(DomainError::invalid(
            &feature.attr_path("name"),
            name,
            "is not a CPU feature name",
        ));
    }
    Ok(CpuFeature {
        policy,
        name: name.to_string(),
    })
}

fn clock(node: Node<'_>) -> Result<ClockOffset, DomainError> {
    let Some(child) = node.child("clock")? else {
        return Ok(ClockOffset::Utc);
    };
    let child = child.node();
    child.allow(&["offset"], &[])?;
    match child.attr("offset") {
        None | Some("utc") => Ok(ClockOffset::Utc),
        Some("localtime") => Ok(ClockOffset::Localtime),
        Some(other) => Err(DomainError::invalid(
            &child.attr_path("offset"),
            other,
            "is not supported (use utc or localtime)",
        )),
    }
}

fn lifecycle(
    node: Node<'_>,
    name: &str,
    supported: &[LifecycleAction],
) -> Result<LifecycleAction, DomainError> {
    let Some(child) = node.child(name)? else {
        return Ok(supported[0]);
    };
    let child = child.node();
    child.allow_text(&[])?;
    let text = child.text();
    let action = match text {
        "destroy" => Some(LifecycleAction::Destroy),
        "restart" => Some(LifecycleAction::Restart),
        _ => None,
    };
    match action {
        Some(action) if supported.contains(&action) => Ok(action),
        _ => {
            let names: Vec<&str> = supported.iter().map(|a| a.as_str()).collect();
            Err(DomainError::invalid(
                child.path(),
                child.raw_text(),
                format!("is not supported (use {})", names.join(" or ")),
            ))
        }
    }
}

/// Parses a number attribute that must fit in 32 bits, if present.
pub(crate) fn u32_attr(node: Node<'_>, name: &str) -> Result<Option<u32>, DomainError> {
    node.attr(name)
        .map(|value| parse_u32(&node.attr_path(name), value))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CharDevice, InterfaceType};

    const BASE: &str = "<name>d</name><memory unit='MiB'>64</memory>";

    fn parse(inner: &str) -> DomainDef {
        parse_domain(&format!("<domain type='kvm'>{BASE}{inner}</domain>"))
            .unwrap_or_else(|e| panic!("{inner}: {e}"))
    }

    #[test]
    fn libvirts_defaults_are_filled_in() {
        let def = parse("<os><type>hvm</type></os>");

        assert_eq!(def.vcpus, 1);
        assert_eq!(def.current_memory_kib, 64 << 10);
        assert_eq!(def.os.machine, "pc");
        assert_eq!(def.os.boot, [BootDevice::Hd]);
        assert_eq!(def.clock, ClockOffset::Utc);
        assert_eq!(def.on_poweroff, LifecycleAction::Destroy);
        assert_eq!(def.on_reboot, LifecycleAction::Restart);
        assert_eq!(def.on_crash, LifecycleAction::Destroy);
        assert_eq!(
            def.devices.memballoon,
            MemBalloon::Virtio {
                autodeflate: None,
                stats_period: None
            }
        );
        assert_eq!(def.cpu, None);
        assert_eq!(def.features, Features::default());
    }

    #[test]
    fn boot_defaults_to_hd_even_with_a_kernel_and_keeps_a_given_order() {
        let kernel = parse("<os><type>hvm</type><kernel>/k</kernel></os>");
        let given = parse("<os><type>hvm</type><boot dev='network'/><boot dev='hd'/></os>");

        assert_eq!(kernel.os.boot, [BootDevice::Hd]);
        assert_eq!(given.os.boot, [BootDevice::Network, BootDevice::Hd]);
    }

    #[test]
    fn a_missing_uuid_is_a_new_version_4_uuid() {
        let inner = "<os><type>hvm</type></os>";

        let first = parse(inner).uuid;
        let second = parse(inner).uuid;

        assert_ne!(first, second);
        assert_eq!(first.0[6] >> 4, 4);
    }

    #[test]
    fn a_missing_mac_is_generated_under_qemus_prefix() {
        let def = parse(
            "<os><type>hvm</type></os><devices><interface type='bridge'>\
             <source bridge='br0'/></interface></devices>",
        );

        let nic = &def.devices.interfaces[0];
        assert_eq!(nic.mac.0[..3], [0x52, 0x54, 0x00]);
        assert_eq!(
            nic.kind,
            InterfaceType::Bridge {
                bridge: "br0".into()
            }
        );
    }

    #[test]
    fn current_memory_above_memory_or_zero_means_all_of_it() {
        let above = parse("<currentMemory unit='GiB'>1</currentMemory><os><type>hvm</type></os>");
        let zero = parse("<currentMemory>0</currentMemory><os><type>hvm</type></os>");
        let below = parse("<currentMemory unit='MiB'>32</currentMemory><os><type>hvm</type></os>");

        assert_eq!(above.current_memory_kib, 64 << 10);
        assert_eq!(zero.current_memory_kib, 64 << 10);
        assert_eq!(below.current_memory_kib, 32 << 10);
    }

    #[test]
    fn a_serial_console_alone_becomes_the_serial_port_and_the_serial_port_wins() {
        let console_only = parse(
            "<os><type>hvm</type></os><devices><console type='file'>\
             <source path='/c.log'/></console></devices>",
        );
        let both = parse(
            "<os><type>hvm</type></os><devices><serial type='null'/>\
             <console type='file'><source path='/c.log'/></console></devices>",
        );

        assert_eq!(
            console_only.devices.serial,
            Some(CharDevice::File {
                path: "/c.log".into()
            })
        );
        assert_eq!(both.devices.serial, Some(CharDevice::Null));
        assert_eq!(both.devices.virtio_console, None);
    }

    #[test]
    fn generated_tap_names_are_dropped_unless_the_tap_is_unmanaged() {
        let def = parse(
            "<os><type>hvm</type></os><devices>\
             <interface type='ethernet'><target dev='vnet4'/></interface>\
             <interface type='ethernet'><target dev='vnet5' managed='no'/></interface>\
             <interface type='ethernet'><target dev='tap7'/></interface></devices>",
        );

        let targets: Vec<Option<&str>> = def
            .devices
            .interfaces
            .iter()
            .map(|nic| nic.target.as_ref().map(|t| t.dev.as_str()))
            .collect();
        assert_eq!(targets, [None, Some("vnet5"), Some("tap7")]);
    }

    #[test]
    fn generated_macs_never_collide_with_each_other_or_given_ones() {
        // 8000 random 24-bit tails collide with probability ~0.85 unless drawn again.
        let mut devices = String::from(
            "<interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>",
        );
        devices.push_str(&"<interface type='ethernet'/>".repeat(8000));

        let def = parse(&format!(
            "<os><type>hvm</type></os><devices>{devices}</devices>"
        ));

        let macs: std::collections::HashSet<_> =
            def.devices.interfaces.iter().map(|nic| nic.mac).collect();
        assert_eq!(macs.len(), 8001);
    }
}
