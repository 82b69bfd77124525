//! Reads the tables back from guest memory the way an OS would.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::layout::{IOAPIC_START, LAPIC_START};

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
}

fn read_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// The whole table at `addr`, by its header's length.
fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let header = read_bytes(mem, addr, 8);
    read_bytes(mem, addr, u32_at(&header, 4) as usize)
}

/// Every table reachable from the RSDP: (signature, address, bytes).
struct Tables {
    rsdp: Vec<u8>,
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt: Vec<u8>,
    facs_addr: u64,
    facs: Vec<u8>,
}

fn walk(mem: &GuestMemoryMmap, rsdp_addr: GuestAddress) -> Tables {
    let rsdp = read_bytes(mem, rsdp_addr.0, 36);
    let xsdt = table(mem, u64_at(&rsdp, 24));
    let entries: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(&xsdt, o))
        .collect();
    let by_signature = |sig: &[u8; 4]| {
        let addr = entries
            .iter()
            .copied()
            .find(|&a| &read_bytes(mem, a, 4)[..] == sig)
            .unwrap_or_else(|| panic!("{sig:?} not in the XSDT"));
        table(mem, addr)
    };
    let fadt = by_signature(b"FACP");
    let madt = by_signature(b"APIC");
    let dsdt = table(mem, u64_at(&fadt, 140));
    let facs_addr = u64_at(&fadt, 132);
    let facs = read_bytes(mem, facs_addr, 64);
    Tables {
        rsdp,
        xsdt,
        fadt,
        madt,
        dsdt,
        facs_addr,
        facs,
    }
}

fn build(vcpu_count: u8) -> (GuestMemoryMmap, Tables) {
    let mem = memory();
    let rsdp = create_acpi_tables(&mem, &AcpiConfig { vcpu_count }).unwrap();
    assert_eq!(rsdp, GuestAddress(0xE_0000));
    let tables = walk(&mem, rsdp);
    (mem, tables)
}

#[test]
fn every_checksum_is_valid() {
    let (_, t) = build(4);

    assert_eq!(&t.rsdp[0..8], b"RSD PTR ");
    assert_eq!(t.rsdp[15], 2, "revision 2");
    assert_eq!(sum(&t.rsdp[0..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(&t.rsdp), 0, "extended checksum");
    for (name, bytes) in [
        ("XSDT", &t.xsdt),
        ("FACP", &t.fadt),
        ("APIC", &t.madt),
        ("DSDT", &t.dsdt),
    ] {
        assert_eq!(&bytes[0..4], name.as_bytes());
        assert_eq!(sum(bytes), 0, "{name} checksum");
    }
}

#[test]
fn xsdt_lists_fadt_madt_and_mcfg_and_everything_fits_below_1mib() {
    let (mem, t) = build(2);

    let entries: Vec<u64> = (36..t.xsdt.len())
        .step_by(8)
        .map(|o| u64_at(&t.xsdt, o))
        .collect();

    assert_eq!(entries.len(), 3);
    let signatures: Vec<Vec<u8>> = entries.iter().map(|&a| read_bytes(&mem, a, 4)).collect();
    assert_eq!(
        signatures,
        vec![b"FACP".to_vec(), b"APIC".to_vec(), b"MCFG".to_vec()]
    );
    // MCFG: one allocation, ECAM base, segment 0, buses 0..=255.
    let mcfg = table(&mem, entries[2]);
    assert_eq!(u64_at(&mcfg, 44), 0xE000_0000);
    assert_eq!(u16_at(&mcfg, 52), 0);
    assert_eq!((mcfg[54], mcfg[55]), (0, 255));
    for &addr in &entries {
        assert!(addr > 0xE_0000 && addr + table(&mem, addr).len() as u64 <= 0x10_0000);
    }
}

#[test]
fn fadt_fields_at_their_spec_offsets() {
    let (_, t) = build(1);
    let f = &t.fadt;

    assert_eq!(f.len(), 276);
    assert_eq!(f[8], 6, "FADT revision 6");
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always in ACPI mode");
    assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4), "block lengths");
    assert_eq!(f[108], 0x32, "CENTURY: CMOS register");
    assert_eq!(
        u16_at(f, 109),
        0x7,
        "IAPC_BOOT_ARCH: legacy devices, 8042, no VGA"
    );
    let flags = u32_at(f, 112);
    assert_eq!(flags, (1 << 0) | (1 << 2) | (1 << 5) | (1 << 10));
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    // RESET_REG: system I/O, 8 bits at offset 0, byte access, port 0x60C
    assert_eq!(&f[116..120], &[1, 8, 0, 1]);
    assert_eq!(u64_at(f, 120), 0x60C);
    assert_eq!(f[128], 0x06, "RESET_VALUE");
    // X_PM1a_CNT_BLK: system I/O, 16 bits
    assert_eq!(&f[172..174], &[1, 16]);
    assert_eq!(u64_at(f, 176), 0x604);
}

#[test]
fn fadt_points_at_an_aligned_facs_and_the_dsdt() {
    let (_, t) = build(1);

    assert_eq!(t.facs_addr % 64, 0);
    assert_eq!(
        u64::from(u32_at(&t.fadt, 36)),
        t.facs_addr,
        "FIRMWARE_CTRL = X_"
    );
    assert_eq!(&t.facs[0..4], b"FACS");
    assert_eq!(u32_at(&t.facs, 4), 64);
    assert_eq!(
        u64::from(u32_at(&t.fadt, 40)),
        u64_at(&t.fadt, 140),
        "DSDT = X_DSDT"
    );
}

/// MADT interrupt controller structures: (type, bytes).
fn madt_structures(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 44;
    while offset < madt.len() {
        let len = madt[offset + 1] as usize;
        out.push((madt[offset], madt[offset..offset + len].to_vec()));
        offset += len;
    }
    out
}

#[test]
fn madt_has_one_lapic_per_vcpu_the_ioapic_and_the_sci_override() {
    let (_, t) = build(3);

    assert_eq!(u32_at(&t.madt, 36), LAPIC_START as u32);
    assert_eq!(u32_at(&t.madt, 40), 0, "no PCAT_COMPAT");
    let structures = madt_structures(&t.madt);
    let lapics: Vec<&Vec<u8>> = structures
        .iter()
        .filter(|(k, _)| *k == 0)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(lapics.len(), 3);
    for (i, lapic) in lapics.iter().enumerate() {
        assert_eq!((lapic[2], lapic[3]), (i as u8, i as u8), "UID and APIC ID");
        assert_eq!(u32_at(lapic, 4), 1, "enabled");
    }
    let ioapics: Vec<&Vec<u8>> = structures
        .iter()
        .filter(|(k, _)| *k == 1)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ioapics.len(), 1);
    assert_eq!(ioapics[0][2], 0, "IOAPIC ID");
    assert_eq!(u32_at(ioapics[0], 4), IOAPIC_START as u32);
    assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");
    let overrides: Vec<&Vec<u8>> = structures
        .iter()
        .filter(|(k, _)| *k == 2)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0], &vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]);
}

#[test]
fn dsdt_has_s5_and_the_isa_devices() {
    let (_, t) = build(2);
    let contains = |needle: &[u8]| t.dsdt.windows(needle.len()).any(|w| w == needle);

    assert!(contains(b"_S5_"));
    assert!(
        contains(&[0x0C, 0x41, 0xD0, 0x05, 0x01]),
        "EISAID(\"PNP0501\")"
    );
    assert!(
        contains(&[0x0C, 0x41, 0xD0, 0x0B, 0x00]),
        "EISAID(\"PNP0B00\")"
    );
    assert!(
        contains(&[0x0C, 0x41, 0xD0, 0x03, 0x03]),
        "EISAID(\"PNP0303\")"
    );
    assert!(contains(b"\\_SB_"));
    assert!(contains(b"C001"));
}

#[test]
fn zero_vcpus_is_an_error() {
    let mem = memory();

    let err = create_acpi_tables(&mem, &AcpiConfig { vcpu_count: 0 }).unwrap_err();

    assert!(matches!(err, AcpiError::NoVcpus));
}

#[test]
fn memory_without_the_bios_area_is_an_error() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();

    let err = create_acpi_tables(&mem, &AcpiConfig { vcpu_count: 1 }).unwrap_err();

    assert!(
        err.to_string()
            .starts_with("cannot write the ACPI FACS at guest address 0xe0")
    );
}

#[test]
fn the_largest_machine_fits() {
    let (mem, t) = build(u8::MAX);

    let end = [&t.xsdt, &t.madt, &t.dsdt]
        .iter()
        .map(|b| b.len())
        .sum::<usize>();
    assert!(end < 0x2_0000);
    assert_eq!(
        madt_structures(&t.madt)
            .iter()
            .filter(|(k, _)| *k == 0)
            .count(),
        255
    );
    drop(mem);
}

#[test]
fn placer_refuses_to_cross_1mib() {
    let mut placer = Placer { next: 0xF_FFF0 };

    let fits = placer.place(0x10, 16);
    let too_far = placer.place(1, 16);

    assert_eq!(fits.unwrap(), 0xF_FFF0);
    assert!(matches!(
        too_far,
        Err(AcpiError::TooLarge {
            end: 0x10_0001,
            limit: 0x10_0000
        })
    ));
}

#[test]
fn dsdt_has_the_pci_root_with_its_routing_table() {
    let (_, t) = build(1);
    let contains = |needle: &[u8]| t.dsdt.windows(needle.len()).any(|w| w == needle);

    assert!(contains(b"PCI0"));
    assert!(
        contains(&[0x0C, 0x41, 0xD0, 0x0A, 0x08]),
        "EISAID(\"PNP0A08\")"
    );
    assert!(
        contains(&[0x0C, 0x41, 0xD0, 0x0C, 0x02]),
        "EISAID(\"PNP0C02\")"
    );
    assert!(contains(b"_PRT"));
    // Slot 1's entry: DWord 0x0001FFFF, Zero, Zero, Byte 16.
    assert!(contains(&[
        0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x0A, 16
    ]));
    // Slot 9 wraps to pin 16 again, slot 8 is pin 23.
    assert!(contains(&[
        0x0C, 0xFF, 0xFF, 0x08, 0x00, 0x00, 0x00, 0x0A, 23
    ]));
    assert!(contains(&[
        0x0C, 0xFF, 0xFF, 0x09, 0x00, 0x00, 0x00, 0x0A, 16
    ]));
}
