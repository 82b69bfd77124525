//! The bundled test and demo guest, `oxguest`.
//!
//! This crate owns the guest's sources (`guests/oxguest/`: freestanding x86_64 C and GNU
//! assembly), builds them with `gcc` from `build.rs`, and exposes the resulting ELF. The guest
//! boots through PVH or the Linux 64-bit boot protocol, reads the platform from ACPI, runs the
//! scenarios named on its command line and reports each on COM1 as one line
//! (`TEST <name> PASS <details>` / `TEST <name> FAIL <reason>`), then powers off through ACPI.
//! [`protocol`] parses that output.
//!
//! It must not depend on any VMM crate: it describes what a guest does, so that the VMM can be
//! tested against it (and it can be tested under QEMU without the VMM).

pub mod protocol;

/// The bundled guest ELF (PVH note + 64-bit entry), embedded in binaries that want it.
pub const OXGUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/oxguest.elf"));

/// Path of the same ELF on disk (for tests that pass --kernel PATH).
pub const OXGUEST_PATH: &str = concat!(env!("OUT_DIR"), "/oxguest.elf");

/// Physical address the guest is linked and loaded at.
pub const OXGUEST_LOAD_ADDR: u64 = 0x10_0000;
