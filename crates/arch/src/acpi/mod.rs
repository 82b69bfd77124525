//! ACPI tables, written at [`RSDP`] (0xE0000) upward and ending below 1 MiB.
//!
//! RSDP (revision 2) → XSDT → FADT, MADT and MCFG; the FADT points at the FACS and the DSDT.
//! See `fadt.rs`, `madt.rs` and `dsdt.rs` for what each declares; the MCFG gives the PCI
//! Express ECAM window of segment 0 (the DSDT's `PCI0`).

mod dsdt;
mod fadt;
mod madt;

use acpi_tables::Aml;
use acpi_tables::facs::FACS;
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use crate::layout::{ACPI_TABLES_END, PCI_ECAM_SIZE, PCI_ECAM_START, RSDP};

const OEM_ID: [u8; 6] = *b"OXVIRT";
const OEM_TABLE_ID: [u8; 8] = *b"OXVMM   ";
const OEM_REVISION: u32 = 1;

/// RSDP size (ACPI 2.0+).
const RSDP_LEN: u64 = 36;
/// Tables are placed on 16-byte boundaries; the FACS needs 64.
const TABLE_ALIGN: u64 = 16;
const FACS_ALIGN: u64 = 64;

/// What the ACPI tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs (APIC IDs and processor UIDs `0..vcpu_count`).
    pub vcpu_count: u8,
}

/// Why the ACPI tables could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// A machine needs at least one processor.
    #[error("ACPI tables need at least one vCPU")]
    NoVcpus,
    /// The tables would not end below 1 MiB.
    #[error("ACPI tables would end at {end:#x}, beyond their area's end at {limit:#x}")]
    TooLarge {
        /// Where the last table would end.
        end: u64,
        /// [`ACPI_TABLES_END`].
        limit: u64,
    },
    /// Guest memory does not cover a table.
    #[error("cannot write the ACPI {table} at guest address {addr:#x}")]
    GuestMemory {
        /// Table signature.
        table: &'static str,
        /// Where it goes.
        addr: u64,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Hands out table addresses between the RSDP and [`ACPI_TABLES_END`].
struct Placer {
    next: u64,
}

impl Placer {
    fn place(&mut self, len: usize, align: u64) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(align);
        let end = addr + len as u64;
        if end > ACPI_TABLES_END {
            return Err(AcpiError::TooLarge {
                end,
                limit: ACPI_TABLES_END,
            });
        }
        self.next = end;
        Ok(addr)
    }
}

fn write_table<M: GuestMemory + ?Sized>(
    mem: &M,
    table: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), AcpiError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| AcpiError::GuestMemory {
            table,
            addr,
            source,
        })
}

fn bytes_of(object: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    object.to_aml_bytes(&mut bytes);
    bytes
}

/// Places `bytes` and writes them; returns the address.
fn add_table<M: GuestMemory + ?Sized>(
    mem: &M,
    placer: &mut Placer,
    table: &'static str,
    bytes: &[u8],
    align: u64,
) -> Result<u64, AcpiError> {
    let addr = placer.place(bytes.len(), align)?;
    write_table(mem, table, addr, bytes)?;
    Ok(addr)
}

/// Writes RSDP, XSDT, FADT, FACS, DSDT, MADT and MCFG for `cfg` into guest memory and returns the
/// RSDP's address (for the zero page's `acpi_rsdp_addr` or PVH's `rsdp_paddr`).
pub fn create_acpi_tables<M: GuestMemory + ?Sized>(
    mem: &M,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    if cfg.vcpu_count == 0 {
        return Err(AcpiError::NoVcpus);
    }
    let mut placer = Placer {
        next: RSDP + RSDP_LEN,
    };
    // All below 1 MiB, so the 32-bit pointers of the FADT hold them.
    let facs = add_table(
        mem,
        &mut placer,
        "FACS",
        &bytes_of(&FACS::new()),
        FACS_ALIGN,
    )?;
    let dsdt = add_table(
        mem,
        &mut placer,
        "DSDT",
        &dsdt::dsdt(cfg.vcpu_count),
        TABLE_ALIGN,
    )?;
    let fadt_bytes = fadt::fadt(facs as u32, dsdt as u32);
    let fadt = add_table(mem, &mut placer, "FADT", &fadt_bytes, TABLE_ALIGN)?;
    let madt = add_table(
        mem,
        &mut placer,
        "MADT",
        &madt::madt(cfg.vcpu_count),
        TABLE_ALIGN,
    )?;
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let last_bus = ((PCI_ECAM_SIZE >> 20) - 1) as u8;
    mcfg.add_ecam(PCI_ECAM_START, 0, 0, last_bus);
    let mcfg = add_table(mem, &mut placer, "MCFG", &bytes_of(&mcfg), TABLE_ALIGN)?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    xsdt.add_entry(mcfg);
    let xsdt = add_table(mem, &mut placer, "XSDT", &bytes_of(&xsdt), TABLE_ALIGN)?;
    write_table(mem, "RSDP", RSDP, &bytes_of(&Rsdp::new(OEM_ID, xsdt)))?;
    Ok(GuestAddress(RSDP))
}

#[cfg(test)]
mod tests;
