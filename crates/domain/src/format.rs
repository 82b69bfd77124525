//! [`DomainDef`] → XML in the layout `virsh dumpxml` prints for a QEMU domain: two-space
//! indentation, single-quoted attributes in libvirt's order, sizes in KiB, every default written
//! out. Live details (the domain id, device aliases, pty paths, TAP names the daemon chose, an
//! automatic vsock CID) are written only when [`XmlOptions::live`] is given.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::model::{
    Bandwidth, CharDevice, Cpu, DomainDef, Interface, InterfaceType, IoTune, MemBalloon, Os, Vsock,
    VsockCid, disk_index,
};

/// What to write besides the definition.
#[derive(Debug, Clone, Copy, Default)]
pub struct XmlOptions<'a> {
    /// The running VM's live state: `None` writes the definition alone (`dumpxml --inactive`,
    /// or any domain that is not running).
    pub live: Option<&'a LiveInfo>,
}

impl<'a> XmlOptions<'a> {
    /// The definition alone.
    pub const INACTIVE: XmlOptions<'static> = XmlOptions { live: None };

    /// The definition of a running domain with its live state.
    pub fn live(info: &'a LiveInfo) -> Self {
        XmlOptions { live: Some(info) }
    }
}

/// The live state of a running domain that `dumpxml` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveInfo {
    /// The domain id (`<domain id='N'>`), positive while running.
    pub id: u32,
    /// The TAP device of each interface, in the order of `devices.interfaces`; written for
    /// interfaces without a `<target>`. Name generated devices with
    /// [`GENERATED_TAP_PREFIX`](crate::GENERATED_TAP_PREFIX) (`vnet0`, ...) so that reading the
    /// live XML back drops them, as libvirt does.
    pub interface_taps: Vec<String>,
    /// The pseudo-terminal of a `pty` serial port (e.g. `/dev/pts/3`).
    pub serial_pty: Option<PathBuf>,
    /// The pseudo-terminal of a `pty` virtio console.
    pub virtio_console_pty: Option<PathBuf>,
    /// The CID picked for a vsock device with `auto='yes'`.
    pub vsock_cid: Option<u32>,
}

/// Escapes text and attribute values as libvirt does, plus the white space an XML reader would
/// otherwise normalize away.
fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            c => escape(c.encode_utf8(&mut [0; 4]), out),
        }
    }
}

/// Attributes of one element, in the order they are written.
type Attrs<'a> = Vec<(&'static str, std::borrow::Cow<'a, str>)>;

fn attr<'a>(
    name: &'static str,
    value: impl Into<std::borrow::Cow<'a, str>>,
) -> (&'static str, std::borrow::Cow<'a, str>) {
    (name, value.into())
}

fn path_str(path: &Path) -> std::borrow::Cow<'_, str> {
    path.to_string_lossy()
}

/// An indenting writer of elements.
struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    fn start_tag(&mut self, name: &str, attrs: &Attrs<'_>) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            let _ = write!(self.out, " {key}='");
            escape_attr(value, &mut self.out);
            self.out.push('\'');
        }
    }

    /// `<name ...>` on its own line; children follow.
    fn open(&mut self, name: &str, attrs: Attrs<'_>) {
        self.start_tag(name, &attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        let _ = writeln!(self.out, "</{name}>");
    }

    /// `<name .../>`.
    fn empty(&mut self, name: &str, attrs: Attrs<'_>) {
        self.start_tag(name, &attrs);
        self.out.push_str("/>\n");
    }

    /// `<name ...>text</name>`.
    fn text(&mut self, name: &str, attrs: Attrs<'_>, text: &str) {
        self.start_tag(name, &attrs);
        self.out.push('>');
        escape(text, &mut self.out);
        let _ = writeln!(self.out, "</{name}>");
    }

    /// An element whose children may all be absent: `<name/>` then, as libvirt writes it.
    fn with_children(&mut self, name: &str, attrs: Attrs<'_>, children: impl FnOnce(&mut Xml)) {
        let mut inner = Xml {
            out: String::new(),
            depth: self.depth + 1,
        };
        children(&mut inner);
        if inner.out.is_empty() {
            self.empty(name, attrs);
        } else {
            self.open(name, attrs);
            self.out.push_str(&inner.out);
            self.close(name);
        }
    }

    fn alias(&mut self, live: Option<&LiveInfo>, name: &str) {
        if live.is_some() {
            self.empty("alias", vec![attr("name", name)]);
        }
    }
}

/// Writes a domain definition.
pub fn format_domain(def: &DomainDef, options: &XmlOptions<'_>) -> String {
    let live = options.live;
    let mut xml = Xml {
        out: String::new(),
        depth: 0,
    };
    let mut attrs = vec![attr("type", def.domain_type.as_str())];
    if let Some(info) = live {
        attrs.push(attr("id", info.id.to_string()));
    }
    xml.open("domain", attrs);
    xml.text("name", vec![], &def.name);
    xml.text("uuid", vec![], &def.uuid.to_string());
    // Empty text is absent text, for libvirt and for its schema.
    if let Some(title) = def.title.as_deref().filter(|t| !t.is_empty()) {
        xml.text("title", vec![], title);
    }
    if let Some(description) = def.description.as_deref().filter(|d| !d.is_empty()) {
        xml.text("description", vec![], description);
    }
    let kib = |n: u64| n.to_string();
    xml.text("memory", vec![attr("unit", "KiB")], &kib(def.memory_kib));
    xml.text(
        "currentMemory",
        vec![attr("unit", "KiB")],
        &kib(def.current_memory_kib),
    );
    xml.text(
        "vcpu",
        vec![attr("placement", "static")],
        &def.vcpus.to_string(),
    );
    format_os(&mut xml, &def.os);
    if def.features.acpi || def.features.apic {
        xml.open("features", vec![]);
        if def.features.acpi {
            xml.empty("acpi", vec![]);
        }
        if def.features.apic {
            xml.empty("apic", vec![]);
        }
        xml.close("features");
    }
    if let Some(cpu) = &def.cpu {
        format_cpu(&mut xml, cpu);
    }
    xml.empty("clock", vec![attr("offset", def.clock.as_str())]);
    xml.text("on_poweroff", vec![], def.on_poweroff.as_str());
    xml.text("on_reboot", vec![], def.on_reboot.as_str());
    xml.text("on_crash", vec![], def.on_crash.as_str());
    format_devices(&mut xml, def, live);
    xml.close("domain");
    xml.out
}

fn format_os(xml: &mut Xml, os: &Os) {
    xml.open("os", vec![]);
    xml.text(
        "type",
        vec![attr("arch", "x86_64"), attr("machine", os.machine.as_str())],
        "hvm",
    );
    if let Some(loader) = &os.loader {
        let mut attrs = Vec::new();
        if let Some(readonly) = loader.readonly {
            attrs.push(attr("readonly", if readonly { "yes" } else { "no" }));
        }
        if let Some(kind) = loader.kind {
            attrs.push(attr("type", kind.as_str()));
        }
        xml.text("loader", attrs, &path_str(&loader.path));
    }
    if let Some(kernel) = &os.kernel {
        xml.text("kernel", vec![], &path_str(kernel));
    }
    if let Some(initrd) = &os.initrd {
        xml.text("initrd", vec![], &path_str(initrd));
    }
    if let Some(cmdline) = os.cmdline.as_deref().filter(|c| !c.is_empty()) {
        xml.text("cmdline", vec![], cmdline);
    }
    for boot in &os.boot {
        xml.empty("boot", vec![attr("dev", boot.as_str())]);
    }
    xml.close("os");
}

fn format_cpu(xml: &mut Xml, cpu: &Cpu) {
    xml.with_children("cpu", vec![attr("mode", cpu.mode.as_str())], |xml| {
        for feature in &cpu.features {
            xml.empty(
                "feature",
                vec![
                    attr("policy", feature.policy.as_str()),
                    attr("name", feature.name.as_str()),
                ],
            );
        }
    });
}

fn format_devices(xml: &mut Xml, def: &DomainDef, live: Option<&LiveInfo>) {
    let devices = &def.devices;
    xml.open("devices", vec![]);
    if let Some(emulator) = &devices.emulator {
        xml.text("emulator", vec![], &path_str(emulator));
    }
    for disk in &devices.disks {
        xml.open(
            "disk",
            vec![attr("type", disk.kind.as_str()), attr("device", "disk")],
        );
        let mut driver = vec![attr("name", "qemu"), attr("type", "raw")];
        if let Some(cache) = disk.cache {
            driver.push(attr("cache", cache.as_str()));
        }
        xml.empty("driver", driver);
        let source_attr = match disk.kind {
            crate::model::DiskType::File => "file",
            crate::model::DiskType::Block => "dev",
        };
        xml.empty("source", vec![attr(source_attr, path_str(&disk.source))]);
        xml.empty(
            "target",
            vec![attr("dev", disk.target.as_str()), attr("bus", "virtio")],
        );
        format_iotune(xml, &disk.iotune);
        if disk.readonly {
            xml.empty("readonly", vec![]);
        }
        if let Some(serial) = &disk.serial {
            xml.text("serial", vec![], serial);
        }
        let index = disk_index(&disk.target).unwrap_or_default();
        xml.alias(live, &format!("virtio-disk{index}"));
        xml.close("disk");
    }
    xml.with_children(
        "controller",
        vec![
            attr("type", "pci"),
            attr("index", "0"),
            attr("model", "pci-root"),
        ],
        |xml| xml.alias(live, "pci.0"),
    );
    if devices.virtio_console.is_some() {
        xml.with_children(
            "controller",
            vec![attr("type", "virtio-serial"), attr("index", "0")],
            |xml| xml.alias(live, "virtio-serial0"),
        );
    }
    for (i, nic) in devices.interfaces.iter().enumerate() {
        let tap = live.and_then(|info| info.interface_taps.get(i));
        format_interface(xml, nic, tap.map(String::as_str), live, i);
    }
    format_chardevs(xml, def, live);
    format_memballoon(xml, devices.memballoon, live);
    if let Some(rng) = &devices.rng {
        xml.open("rng", vec![attr("model", "virtio")]);
        xml.text(
            "backend",
            vec![attr("model", "random")],
            &path_str(&rng.backend),
        );
        xml.alias(live, "rng0");
        xml.close("rng");
    }
    if let Some(vsock) = &devices.vsock {
        format_vsock(xml, vsock, live);
    }
    xml.close("devices");
}

fn format_interface(
    xml: &mut Xml,
    nic: &Interface,
    live_tap: Option<&str>,
    live: Option<&LiveInfo>,
    index: usize,
) {
    let kind = match nic.kind {
        InterfaceType::Ethernet => "ethernet",
        InterfaceType::Bridge { .. } => "bridge",
    };
    xml.open("interface", vec![attr("type", kind)]);
    xml.empty("mac", vec![attr("address", nic.mac.to_string())]);
    if let InterfaceType::Bridge { bridge } = &nic.kind {
        xml.empty("source", vec![attr("bridge", bridge.as_str())]);
    }
    format_bandwidth(xml, &nic.bandwidth);
    match (&nic.target, live_tap) {
        (Some(target), _) => {
            let mut attrs = vec![attr("dev", target.dev.as_str())];
            if let Some(managed) = target.managed {
                attrs.push(attr("managed", if managed { "yes" } else { "no" }));
            }
            xml.empty("target", attrs);
        }
        (None, Some(tap)) => xml.empty("target", vec![attr("dev", tap)]),
        (None, None) => {}
    }
    xml.empty("model", vec![attr("type", "virtio")]);
    xml.alias(live, &format!("net{index}"));
    xml.close("interface");
}

/// `<iotune>` after the disk's `<target>`, as libvirt orders it; absent without limits.
fn format_iotune(xml: &mut Xml, iotune: &IoTune) {
    if iotune.is_empty() {
        return;
    }
    xml.open("iotune", vec![]);
    if let Some(bytes) = iotune.total_bytes_sec {
        xml.text("total_bytes_sec", vec![], &bytes.to_string());
    }
    if let Some(iops) = iotune.total_iops_sec {
        xml.text("total_iops_sec", vec![], &iops.to_string());
    }
    xml.close("iotune");
}

/// `<bandwidth>` after the interface's `<source>`, as libvirt orders it; absent without limits.
fn format_bandwidth(xml: &mut Xml, bandwidth: &Bandwidth) {
    if bandwidth.is_empty() {
        return;
    }
    xml.open("bandwidth", vec![]);
    for (name, average) in [
        ("inbound", bandwidth.inbound_kib),
        ("outbound", bandwidth.outbound_kib),
    ] {
        if let Some(average) = average {
            xml.empty(name, vec![attr("average", average.to_string())]);
        }
    }
    xml.close("bandwidth");
}

/// The `type` attribute and `<source>` of a character device; a pty's source is its live path.
fn chardev_source(xml: &mut Xml, device: &CharDevice, pty: Option<&Path>) {
    match device {
        CharDevice::Pty => {
            if let Some(pty) = pty {
                xml.empty("source", vec![attr("path", path_str(pty))]);
            }
        }
        CharDevice::File { path } => xml.empty("source", vec![attr("path", path_str(path))]),
        CharDevice::UnixBind { path } => xml.empty(
            "source",
            vec![attr("mode", "bind"), attr("path", path_str(path))],
        ),
        CharDevice::Null => {}
    }
}

fn console_attrs<'a>(device: &CharDevice, pty: Option<&'a Path>) -> Attrs<'a> {
    let mut attrs = vec![attr("type", device.type_str())];
    if let (CharDevice::Pty, Some(pty)) = (device, pty) {
        attrs.push(attr("tty", path_str(pty)));
    }
    attrs
}

fn format_chardevs(xml: &mut Xml, def: &DomainDef, live: Option<&LiveInfo>) {
    let devices = &def.devices;
    if let Some(serial) = &devices.serial {
        let pty = live.and_then(|info| info.serial_pty.as_deref());
        xml.open("serial", vec![attr("type", serial.type_str())]);
        chardev_source(xml, serial, pty);
        xml.open(
            "target",
            vec![attr("type", "isa-serial"), attr("port", "0")],
        );
        xml.empty("model", vec![attr("name", "isa-serial")]);
        xml.close("target");
        xml.alias(live, "serial0");
        xml.close("serial");
        // libvirt mirrors the serial port as the first console.
        xml.open("console", console_attrs(serial, pty));
        chardev_source(xml, serial, pty);
        xml.empty("target", vec![attr("type", "serial"), attr("port", "0")]);
        xml.alias(live, "serial0");
        xml.close("console");
    }
    if let Some(console) = &devices.virtio_console {
        let pty = live.and_then(|info| info.virtio_console_pty.as_deref());
        xml.open("console", console_attrs(console, pty));
        chardev_source(xml, console, pty);
        // libvirt's port and alias follow the console's index: 1 after the serial console.
        let index = usize::from(devices.serial.is_some());
        xml.empty(
            "target",
            vec![attr("type", "virtio"), attr("port", index.to_string())],
        );
        xml.alias(live, &format!("console{index}"));
        xml.close("console");
    }
}

fn format_memballoon(xml: &mut Xml, balloon: MemBalloon, live: Option<&LiveInfo>) {
    match balloon {
        MemBalloon::None => xml.empty("memballoon", vec![attr("model", "none")]),
        MemBalloon::Virtio {
            autodeflate,
            stats_period,
        } => {
            let mut attrs = vec![attr("model", "virtio")];
            if let Some(on) = autodeflate {
                attrs.push(attr("autodeflate", if on { "on" } else { "off" }));
            }
            xml.with_children("memballoon", attrs, |xml| {
                if let Some(period) = stats_period {
                    xml.empty("stats", vec![attr("period", period.to_string())]);
                }
                xml.alias(live, "balloon0");
            });
        }
    }
}

fn format_vsock(xml: &mut Xml, vsock: &Vsock, live: Option<&LiveInfo>) {
    xml.open("vsock", vec![attr("model", "virtio")]);
    let cid = match vsock.cid {
        VsockCid::Fixed(address) => vec![attr("auto", "no"), attr("address", address.to_string())],
        VsockCid::Auto => match live.and_then(|info| info.vsock_cid) {
            Some(address) => vec![attr("auto", "yes"), attr("address", address.to_string())],
            None => vec![attr("auto", "yes")],
        },
    };
    xml.empty("cid", cid);
    xml.alias(live, "vsock0");
    xml.close("vsock");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_normalized_white_space() {
        let mut text = String::new();
        let mut attr_value = String::new();

        escape("a<b>&'\"\r\n", &mut text);
        escape_attr("x\ty\nz'", &mut attr_value);

        assert_eq!(text, "a&lt;b&gt;&amp;&apos;&quot;&#13;\n");
        assert_eq!(attr_value, "x&#9;y&#10;z&apos;");
    }

    #[test]
    fn elements_without_children_are_written_empty() {
        let mut xml = Xml {
            out: String::new(),
            depth: 1,
        };

        xml.with_children("features", vec![], |_| {});
        xml.with_children("cpu", vec![attr("mode", "host-model")], |xml| {
            xml.empty("feature", vec![attr("name", "avx")]);
        });

        assert_eq!(
            xml.out,
            "  <features/>\n  <cpu mode='host-model'>\n    <feature name='avx'/>\n  </cpu>\n"
        );
    }
}
