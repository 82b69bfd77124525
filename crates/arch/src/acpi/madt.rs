//! The MADT: one local APIC per vCPU, the IOAPIC, and the SCI's interrupt source override.
//!
//! No 8259 (flags 0, no `PCAT_COMPAT`) and no PIT, so there is no IRQ0 → GSI2 override:
//! ISA IRQs map 1:1 to IOAPIC pins except the SCI, which is level-triggered.

use acpi_tables::Aml;
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{ACPI_SCI_IRQ, IOAPIC_ID, IOAPIC_START, LAPIC_START};

/// MADT revision of ACPI 6.3+ (processor `Online Capable` flag defined).
const MADT_REVISION: u8 = 5;
/// Header (36) + local interrupt controller address (4) + flags (4).
const MADT_HEADER_LEN: u32 = 44;
/// Structure type of an Interrupt Source Override.
const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
/// MPS INTI flags: polarity active high (01), trigger mode level (11).
pub(super) const SCI_OVERRIDE_FLAGS: u16 = 0b1101;

fn bytes_of(object: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    object.to_aml_bytes(&mut bytes);
    bytes
}

/// Interrupt Source Override: ISA `irq` on bus 0 is `gsi`, with MPS INTI `flags`.
fn interrupt_source_override(irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut bytes = vec![TYPE_INTERRUPT_SOURCE_OVERRIDE, 10, 0, irq];
    bytes.extend_from_slice(&gsi.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes
}

/// The MADT of a machine with `vcpu_count` vCPUs: processor UID = APIC ID = vCPU index.
pub(super) fn madt(vcpu_count: u8) -> Vec<u8> {
    let mut table = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    // Both addresses are below 4 GiB by the platform's definition.
    table.write_u32(36, LAPIC_START as u32);
    table.write_u32(40, 0);
    for index in 0..vcpu_count {
        table.append_slice(&bytes_of(&ProcessorLocalApic::new(
            index,
            index,
            EnabledStatus::Enabled,
        )));
    }
    table.append_slice(&bytes_of(&IoApic::new(IOAPIC_ID, IOAPIC_START as u32, 0)));
    table.append_slice(&interrupt_source_override(
        ACPI_SCI_IRQ as u8,
        ACPI_SCI_IRQ,
        SCI_OVERRIDE_FLAGS,
    ));
    table.as_slice().to_vec()
}
