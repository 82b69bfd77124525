//! `domblklist` and `domiflist`: like virsh, they read the domain XML (`dumpxml`) and pick the
//! same attributes its XPath expressions pick, so they work with any daemon.

use crate::table::Table;
use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

/// The domain XML could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DevicesError {
    /// Not well-formed XML.
    #[error("malformed domain XML at byte {position}: {reason}")]
    Malformed {
        /// Byte offset in the document.
        position: u64,
        /// What the parser said.
        reason: String,
    },
    /// A disk without `<target dev=...>` (virsh: "unable to query block list").
    #[error("unable to query block list")]
    NoTarget,
    /// `--details` and a disk without `type` or `device` (virsh prints the same words).
    #[error("unable to query block list details")]
    NoDetails,
}

/// One `<disk>` as virsh's `domblklist` sees it (absent and empty values are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// `@type`.
    pub kind: Option<String>,
    /// `@device`.
    pub device: Option<String>,
    /// `target/@dev`.
    pub target: Option<String>,
    /// First of `source/@file|@dev|@dir|@name|@volume|@path`.
    pub source: Option<String>,
}

/// One `<interface>` as virsh's `domiflist` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// `@type`.
    pub kind: Option<String>,
    /// First of `source/@bridge|@dev|@network|@name|@path`.
    pub source: Option<String>,
    /// `target/@dev`.
    pub target: Option<String>,
    /// `model/@type`.
    pub model: Option<String>,
    /// `mac/@address`.
    pub mac: Option<String>,
}

/// The disks and interfaces of a domain XML, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// `/domain/devices/disk`.
    pub disks: Vec<Disk>,
    /// `/domain/devices/interface`.
    pub interfaces: Vec<Interface>,
}

const DISK_SOURCE_ATTRS: &[&str] = &["file", "dev", "dir", "name", "volume", "path"];
const IFACE_SOURCE_ATTRS: &[&str] = &["bridge", "dev", "network", "name", "path"];

type Attrs = Vec<(String, String)>;

fn attrs_of(start: &BytesStart<'_>, position: u64) -> Result<Attrs, DevicesError> {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| DevicesError::Malformed {
            position,
            reason: e.to_string(),
        })?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| DevicesError::Malformed {
                position,
                reason: e.to_string(),
            })?;
        attrs.push((attr.key.as_ref().to_owned(), value.into_owned()));
    }
    Ok(attrs)
}

/// XPath `string(@a|@b|...)`: the first of these attributes in document order, if not empty.
fn first_of(attrs: &Attrs, names: &[&str]) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| names.contains(&k.as_str()))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

fn get(attrs: &Attrs, name: &str) -> Option<String> {
    first_of(attrs, &[name])
}

/// Sets `slot` from the first matching child only, as XPath's `string()` of a node set does.
fn set_once(slot: &mut Option<Option<String>>, value: Option<String>) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

#[derive(Default)]
struct Pending {
    disk: Option<DiskSlots>,
    iface: Option<IfaceSlots>,
}

#[derive(Default)]
struct DiskSlots {
    kind: Option<String>,
    device: Option<String>,
    target: Option<Option<String>>,
    source: Option<Option<String>>,
}

#[derive(Default)]
struct IfaceSlots {
    kind: Option<String>,
    source: Option<Option<String>>,
    target: Option<Option<String>>,
    model: Option<Option<String>>,
    mac: Option<Option<String>>,
}

impl Pending {
    fn child(&mut self, name: &str, attrs: &Attrs) {
        if let Some(d) = &mut self.disk {
            match name {
                "target" => set_once(&mut d.target, get(attrs, "dev")),
                "source" => set_once(&mut d.source, first_of(attrs, DISK_SOURCE_ATTRS)),
                _ => {}
            }
        }
        if let Some(i) = &mut self.iface {
            match name {
                "source" => set_once(&mut i.source, first_of(attrs, IFACE_SOURCE_ATTRS)),
                "target" => set_once(&mut i.target, get(attrs, "dev")),
                "model" => set_once(&mut i.model, get(attrs, "type")),
                "mac" => set_once(&mut i.mac, get(attrs, "address")),
                _ => {}
            }
        }
    }

    fn finish(&mut self, out: &mut Devices) {
        if let Some(d) = self.disk.take() {
            out.disks.push(Disk {
                kind: d.kind,
                device: d.device,
                target: d.target.flatten(),
                source: d.source.flatten(),
            });
        }
        if let Some(i) = self.iface.take() {
            out.interfaces.push(Interface {
                kind: i.kind,
                source: i.source.flatten(),
                target: i.target.flatten(),
                model: i.model.flatten(),
                mac: i.mac.flatten(),
            });
        }
    }
}

/// Reads the disks and interfaces of a domain XML.
pub fn parse(xml: &str) -> Result<Devices, DevicesError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    let mut pending = Pending::default();
    let mut out = Devices::default();
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event().map_err(|e| DevicesError::Malformed {
            position,
            reason: e.to_string(),
        })?;
        match event {
            Event::Start(start) => {
                open(&mut pending, &path, &start, position)?;
                path.push(start.name().as_ref().to_owned());
            }
            Event::Empty(start) => {
                open(&mut pending, &path, &start, position)?;
                if path.len() == 2 {
                    pending.finish(&mut out);
                }
            }
            Event::End(_) => {
                path.pop();
                if path.len() == 2 {
                    pending.finish(&mut out);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn open(
    pending: &mut Pending,
    path: &[String],
    start: &BytesStart<'_>,
    position: u64,
) -> Result<(), DevicesError> {
    let name = start.name().as_ref().to_owned();
    let in_devices = path.len() == 2 && path[0] == "domain" && path[1] == "devices";
    let in_device = path.len() == 3 && path[0] == "domain" && path[1] == "devices";
    if in_devices && (name == "disk" || name == "interface") {
        let attrs = attrs_of(start, position)?;
        if name == "disk" {
            pending.disk = Some(DiskSlots {
                kind: get(&attrs, "type"),
                device: get(&attrs, "device"),
                ..DiskSlots::default()
            });
        } else {
            pending.iface = Some(IfaceSlots {
                kind: get(&attrs, "type"),
                ..IfaceSlots::default()
            });
        }
    } else if in_device {
        let attrs = attrs_of(start, position)?;
        pending.child(&name, &attrs);
    }
    Ok(())
}

/// The text of `/domain/title` (virsh's `string(./title[1])`), empty when absent or when the
/// document cannot be read.
pub fn title(xml: &str) -> String {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut done = false;
    while let Ok(event) = reader.read_event() {
        let in_title = path.len() == 2 && path[0] == "domain" && path[1] == "title";
        match event {
            Event::Start(start) => path.push(start.name().as_ref().to_owned()),
            Event::End(_) => {
                if in_title {
                    done = true;
                }
                path.pop();
            }
            Event::Text(t) if in_title && !done => text.push_str(&t.xml10_content()),
            Event::CData(t) if in_title && !done => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_title && !done => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else if let Some(e) = quick_xml::escape::resolve_predefined_entity(&r) {
                    text.push_str(e);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    text
}

fn or_minus(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// `virsh domblklist [--details]`.
pub fn domblklist(disks: &[Disk], details: bool, quiet: bool) -> Result<String, DevicesError> {
    let mut table = if details {
        Table::new(&["Type", "Device", "Target", "Source"])
    } else {
        Table::new(&["Target", "Source"])
    };
    for disk in disks {
        let target = disk.target.as_deref().ok_or(DevicesError::NoTarget)?;
        if details {
            let (Some(kind), Some(device)) = (&disk.kind, &disk.device) else {
                return Err(DevicesError::NoDetails);
            };
            table.push_row(&[kind.as_str(), device, target, or_minus(&disk.source)]);
        } else {
            table.push_row(&[target, or_minus(&disk.source)]);
        }
    }
    Ok(table.render(quiet))
}

/// `virsh domiflist`.
pub fn domiflist(interfaces: &[Interface], quiet: bool) -> String {
    let mut table = Table::new(&["Interface", "Type", "Source", "Model", "MAC"]);
    for i in interfaces {
        table.push_row(&[
            or_minus(&i.target),
            i.kind.as_deref().unwrap_or(""),
            or_minus(&i.source),
            or_minus(&i.model),
            or_minus(&i.mac),
        ]);
    }
    table.render(quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_XML: &str = "<domain type='test' id='1'>
  <name>test</name>
  <devices>
    <disk type='file' device='disk'>
      <source file='/guest/diskimage1'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </disk>
    <interface type='network'>
      <mac address='aa:bb:cc:dd:ee:ff'/>
      <source network='default'/>
      <target dev='testnet0'/>
    </interface>
    <memballoon model='virtio'/>
  </devices>
</domain>
";

    const SECOND_XML: &str = "<domain type='test'>
  <name>second-domain-long</name>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
    <interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br0'/><target dev='testnet0'/><model type='virtio'/></interface>
  </devices>
</domain>";

    #[test]
    fn title_is_the_first_domain_title() {
        // Act / Assert
        assert_eq!(
            title("<domain><name>a</name><title>Web &amp; db</title><title>x</title></domain>"),
            "Web & db"
        );
        assert_eq!(title(TEST_XML), "");
        assert_eq!(title("<domain><title>"), "");
    }

    #[test]
    fn domblklist_matches_virsh() {
        // Arrange
        let devices = parse(TEST_XML).unwrap();

        // Act
        let plain = domblklist(&devices.disks, false, false).unwrap();
        let details = domblklist(&devices.disks, true, false).unwrap();

        // Assert: `virsh -c test:///default domblklist test [--details]`.
        assert_eq!(
            plain,
            " Target   Source\n-----------------------------\n vda      /guest/diskimage1\n"
        );
        assert_eq!(
            details,
            " Type   Device   Target   Source
---------------------------------------------
 file   disk     vda      /guest/diskimage1
"
        );
    }

    #[test]
    fn domblklist_prints_minus_for_a_disk_without_source() {
        // Arrange
        let devices = parse(SECOND_XML).unwrap();

        // Act
        let plain = domblklist(&devices.disks, false, false).unwrap();
        let details = domblklist(&devices.disks, true, false).unwrap();

        // Assert
        assert_eq!(
            plain,
            " Target   Source
--------------------------------
 vda      /var/lib/img/a.qcow2
 hdc      -
"
        );
        assert_eq!(
            details,
            " Type   Device   Target   Source
------------------------------------------------
 file   disk     vda      /var/lib/img/a.qcow2
 file   cdrom    hdc      -
"
        );
    }

    #[test]
    fn domiflist_matches_virsh() {
        // Act
        let first = domiflist(&parse(TEST_XML).unwrap().interfaces, false);
        let second = domiflist(&parse(SECOND_XML).unwrap().interfaces, false);

        // Assert
        assert_eq!(
            first,
            " Interface   Type      Source    Model   MAC
------------------------------------------------------------
 testnet0    network   default   -       aa:bb:cc:dd:ee:ff
"
        );
        assert_eq!(
            second,
            " Interface   Type     Source   Model    MAC
-----------------------------------------------------------
 testnet0    bridge   br0      virtio   52:54:00:12:34:56
"
        );
    }

    #[test]
    fn disk_without_target_is_an_error_and_bad_xml_is_reported() {
        // Arrange
        let xml = "<domain><devices><disk type='file' device='disk'/></devices></domain>";

        // Act
        let devices = parse(xml).unwrap();

        // Assert
        assert_eq!(
            domblklist(&devices.disks, false, false),
            Err(DevicesError::NoTarget)
        );
        assert!(matches!(
            parse("<domain><devices></domain>"),
            Err(DevicesError::Malformed { .. })
        ));
    }

    #[test]
    fn only_the_first_source_counts_and_nested_elements_are_ignored() {
        // Arrange
        let xml = "<domain><devices><disk type='network' device='disk'>\
            <source protocol='nbd' name='vol1'><host name='h'/></source>\
            <source file='/second'/><target dev='vdb'/></disk></devices></domain>";

        // Act
        let devices = parse(xml).unwrap();

        // Assert
        assert_eq!(devices.disks[0].source.as_deref(), Some("vol1"));
        assert_eq!(devices.disks[0].target.as_deref(), Some("vdb"));
    }
}
