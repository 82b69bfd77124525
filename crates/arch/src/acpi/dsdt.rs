//! The DSDT: `\_S5` and the devices a guest cannot discover by itself.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, IO, Interrupt, Memory32Fixed,
    Name, Package, Path, ResourceTemplate,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{
    CMOS_IRQ, CMOS_LEN, CMOS_PORT, COM1_IRQ, COM1_LEN, COM1_PORT, I8042_COMMAND_PORT, I8042_IRQ,
    I8042_PORT, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_INTX_FIRST_PIN, PCI_INTX_PINS, PCI_MMIO32_SIZE,
    PCI_MMIO32_START,
};

/// DSDT revision 2: AML integers are 64-bit.
const DSDT_REVISION: u8 = 2;

/// Already-serialized AML, so devices built in helper functions can be children.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn serialize(object: &dyn Aml) -> Raw {
    let mut bytes = Vec::new();
    object.to_aml_bytes(&mut bytes);
    Raw(bytes)
}

/// `Name (\_S5, Package () {0, 0, 0, 0})`: S5 (soft off) is `SLP_TYP` 0, as in QEMU; the
/// PM1 control register powers off on `SLP_EN` with that type.
fn s5_package() -> Raw {
    let zero = aml::ZERO;
    serialize(&Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&zero, &zero, &zero, &zero]),
    ))
}

/// A legacy ISA device: its PNP ID, I/O ranges `(port, length)` and one edge-triggered,
/// active-high interrupt.
struct IsaDevice {
    name: &'static str,
    hid: &'static str,
    uid: Option<u8>,
    io: &'static [(u16, u8)],
    irq: u32,
}

impl IsaDevice {
    fn to_aml(&self) -> Raw {
        let ranges: Vec<IO> = self
            .io
            .iter()
            .map(|&(port, len)| IO::new(port, port, 1, len))
            .collect();
        let irq = Interrupt::new(true, true, false, false, self.irq);
        let mut resources: Vec<&dyn Aml> = ranges.iter().map(|r| r as &dyn Aml).collect();
        resources.push(&irq);
        let hid = Name::new(Path::new("_HID"), &EISAName::new(self.hid));
        let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(resources));
        let uid = self.uid.map(|uid| Name::new(Path::new("_UID"), &uid));
        let mut children: Vec<&dyn Aml> = vec![&hid];
        if let Some(uid) = &uid {
            children.push(uid);
        }
        children.push(&crs);
        serialize(&Device::new(Path::new(self.name), children))
    }
}

// Port numbers are below 0x10000 and lengths below 0x100 (see `layout`).
const COM1: IsaDevice = IsaDevice {
    name: "COM1",
    hid: "PNP0501",
    uid: Some(0),
    io: &[(COM1_PORT as u16, COM1_LEN as u8)],
    irq: COM1_IRQ,
};
const RTC: IsaDevice = IsaDevice {
    name: "RTC_",
    hid: "PNP0B00",
    uid: None,
    io: &[(CMOS_PORT as u16, CMOS_LEN as u8)],
    irq: CMOS_IRQ,
};
const KEYBOARD: IsaDevice = IsaDevice {
    name: "KBD_",
    hid: "PNP0303",
    uid: None,
    io: &[(I8042_PORT as u16, 1), (I8042_COMMAND_PORT as u16, 1)],
    irq: I8042_IRQ,
};

/// `Device (Cxxx) { Name (_HID, "ACPI0007") Name (_UID, index) }`: ACPI 6 processor
/// devices; `_UID` matches the MADT's processor UID.
fn processor_device(index: u8) -> Raw {
    let name = format!("C{index:03X}");
    let hid = Name::new(Path::new("_HID"), &"ACPI0007");
    let uid = Name::new(Path::new("_UID"), &index);
    serialize(&Device::new(Path::new(&name), vec![&hid, &uid]))
}

/// `Name (_PRT, …)`: INTA# of the device in slot `s` (1–31) is IOAPIC pin
/// `PCI_INTX_FIRST_PIN + (s - 1) % PCI_INTX_PINS`, level-triggered, active-low. (Devices use
/// MSI-X; this is the fallback.)
fn pci_routing_table() -> Raw {
    let entries: Vec<(u32, u32)> = (1..32u32)
        .map(|slot| {
            let address = (slot << 16) | 0xFFFF;
            let pin = PCI_INTX_FIRST_PIN + (slot - 1) % PCI_INTX_PINS;
            (address, pin)
        })
        .collect();
    let zero = aml::ZERO;
    let packages: Vec<Package> = entries
        .iter()
        .map(|(address, gsi)| Package::new(vec![address, &zero, &zero, gsi]))
        .collect();
    let children: Vec<&dyn Aml> = packages.iter().map(|p| p as &dyn Aml).collect();
    serialize(&Name::new(Path::new("_PRT"), &Package::new(children)))
}

/// `Device (PCI0)`: the PCI Express root (ECAM in the MCFG), decoding bus numbers 0–255, the
/// configuration ports, the I/O ports around them and the 32-bit MMIO window; and a
/// motherboard-resource device reserving the ECAM window, as Linux checks for one.
fn pci_root() -> Raw {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0A08"));
    let cid = Name::new(Path::new("_CID"), &EISAName::new("PNP0A03"));
    let adr = Name::new(Path::new("_ADR"), &aml::ZERO);
    let seg = Name::new(Path::new("_SEG"), &aml::ZERO);
    let uid = Name::new(Path::new("_UID"), &aml::ZERO);
    let bbn = Name::new(Path::new("_BBN"), &aml::ZERO);
    let last_bus = (PCI_ECAM_SIZE >> 20) - 1;
    let buses = AddressSpace::<u16>::new_bus_number(0, last_bus as u16);
    let config_ports = IO::new(0xCF8, 0xCF8, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0x0000, 0x0CF7, None);
    let io_high = AddressSpace::<u16>::new_io(0x0D00, 0xFFFF, None);
    let mmio = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let crs = Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&buses, &config_ports, &io_low, &io_high, &mmio]),
    );
    let prt = pci_routing_table();
    let root = serialize(&Device::new(
        Path::new("PCI0"),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs, &prt],
    ));
    let ecam = Memory32Fixed::new(false, PCI_ECAM_START as u32, PCI_ECAM_SIZE as u32);
    let reserved = serialize(&Device::new(
        Path::new("MRES"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0C02")),
            &Name::new(Path::new("_UID"), &aml::ONE),
            &Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&ecam])),
        ],
    ));
    let mut bytes = root.0;
    bytes.extend_from_slice(&reserved.0);
    Raw(bytes)
}

/// The DSDT of a machine with `vcpu_count` vCPUs.
pub(super) fn dsdt(vcpu_count: u8) -> Vec<u8> {
    let devices: Vec<Raw> = [&COM1, &RTC, &KEYBOARD]
        .iter()
        .map(|d| d.to_aml())
        .chain((0..vcpu_count).map(processor_device))
        .chain(std::iter::once(pci_root()))
        .collect();
    let mut sb_children = Vec::new();
    for device in &devices {
        sb_children.extend_from_slice(&device.0);
    }
    let mut table = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    let mut body = s5_package().0;
    body.extend(aml::Scope::raw(Path::new("\\_SB_"), sb_children));
    table.append_slice(&body);
    table.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn s5_package_is_four_zeros() {
        let bytes = s5_package().0;

        // NameOp "_S5_" PackageOp len=6 count=4 Zero Zero Zero Zero
        assert_eq!(bytes, b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00");
    }

    #[test]
    fn com1_resources() {
        let bytes = COM1.to_aml().0;

        assert!(
            contains(&bytes, &[0x0C, 0x41, 0xD0, 0x05, 0x01]),
            "EISAID PNP0501"
        );
        // IO (Decode16, 0x3F8, 0x3F8, 1, 8)
        assert!(contains(
            &bytes,
            &[0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08]
        ));
        // Extended interrupt: consumer, edge, active high, exclusive, one IRQ: 4
        assert!(contains(
            &bytes,
            &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]
        ));
        assert!(contains(&bytes, b"_UID\x00"));
    }

    #[test]
    fn keyboard_has_both_ports() {
        let bytes = KEYBOARD.to_aml().0;

        assert!(contains(
            &bytes,
            &[0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]
        ));
        assert!(contains(
            &bytes,
            &[0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01]
        ));
    }

    #[test]
    fn one_processor_device_per_vcpu() {
        let table = dsdt(3);

        for name in [&b"C000"[..], b"C001", b"C002"] {
            assert!(contains(&table, name));
        }
        assert!(!contains(&table, b"C003"));
        assert!(contains(&table, b"ACPI0007\0"));
        // Name (_UID, 2): BytePrefix 2
        assert!(contains(&table, b"_UID\x0A\x02"));
    }
}
