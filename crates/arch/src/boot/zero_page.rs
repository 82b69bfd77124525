//! The Linux zero page (`struct boot_params`) of the 64-bit boot protocol.

use linux_loader::loader::bootparam::{
    CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE, LOADED_HIGH, boot_e820_entry, boot_params,
    setup_header,
};
use vm_memory::GuestMemory;

use super::{BootError, write_at};
use crate::layout::ZERO_PAGE;
use crate::memory::E820Entry;

/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xFF;
/// `boot_flag`: the 0xAA55 boot sector signature.
const BOOT_FLAG: u16 = 0xAA55;
/// `header`: "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `kernel_alignment` told to an ELF kernel (which has no setup header): 16 MiB, the x86_64
/// `CONFIG_PHYSICAL_ALIGN` default.
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// `heap_end_ptr`: end of the real-mode setup heap, relative to the setup code, minus 0x200.
/// Only the real-mode setup code reads it, and the 64-bit entry skips that code; it is set,
/// with `CAN_USE_HEAP`, so the header describes a coherent loader.
const HEAP_END_PTR: u16 = 0xFE00;
/// First boot protocol version whose header has `cmdline_size`.
const PROTOCOL_2_06: u16 = 0x0206;
/// Command line limit of kernels older than protocol 2.06.
const LEGACY_CMDLINE_MAX: u32 = 255;

/// What [`write_linux_zero_page`] writes.
#[derive(Clone, Copy, Debug)]
pub struct ZeroPageConfig<'a> {
    /// The bzImage's setup header (copied into the zero page), or `None` for an ELF kernel.
    pub setup_header: Option<setup_header>,
    /// Guest address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Command line length in bytes, without the terminating NUL.
    pub cmdline_size: u32,
    /// Guest address and size of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// The e820 map.
    pub e820: &'a [E820Entry],
    /// Guest address of the ACPI RSDP (0 if there are no ACPI tables).
    pub rsdp_addr: u64,
}

fn low32(value: u64) -> u32 {
    (value & 0xFFFF_FFFF) as u32
}

fn high32(value: u64) -> u32 {
    (value >> 32) as u32
}

/// Builds the setup header: the kernel's own (bzImage) or a fresh one (ELF), with the
/// loader-owned fields filled in.
fn loader_header(cfg: &ZeroPageConfig<'_>) -> Result<setup_header, BootError> {
    let mut hdr = match cfg.setup_header {
        Some(kernel_hdr) => {
            // `cmdline_size` is the kernel's limit (protocol 2.06+; 255 before), not ours to
            // change.
            let max = if kernel_hdr.version >= PROTOCOL_2_06 {
                kernel_hdr.cmdline_size
            } else {
                LEGACY_CMDLINE_MAX
            };
            if cfg.cmdline_size > max {
                return Err(BootError::CmdlineTooLong {
                    size: cfg.cmdline_size,
                    max,
                });
            }
            kernel_hdr
        }
        None => setup_header {
            kernel_alignment: ELF_KERNEL_ALIGNMENT,
            cmdline_size: cfg.cmdline_size,
            ..Default::default()
        },
    };
    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    hdr.boot_flag = BOOT_FLAG;
    hdr.header = HDRS_MAGIC;
    hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    hdr.heap_end_ptr = HEAP_END_PTR;
    hdr.cmd_line_ptr = low32(cfg.cmdline_addr);
    let (initrd_addr, initrd_size) = cfg.initrd.unwrap_or((0, 0));
    hdr.ramdisk_image = low32(initrd_addr);
    hdr.ramdisk_size = low32(initrd_size);
    Ok(hdr)
}

fn e820_table(
    entries: &[E820Entry],
) -> Result<[boot_e820_entry; E820_MAX_ENTRIES_ZEROPAGE], BootError> {
    if entries.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::TooManyMemoryMapEntries {
            what: "zero page e820 table",
            count: entries.len(),
            max: E820_MAX_ENTRIES_ZEROPAGE,
        });
    }
    let mut table = [boot_e820_entry::default(); E820_MAX_ENTRIES_ZEROPAGE];
    for (slot, entry) in table.iter_mut().zip(entries) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    Ok(table)
}

/// Writes `boot_params` at [`ZERO_PAGE`]: the setup header with the loader fields
/// (`type_of_loader` 0xFF, `loadflags` LOADED_HIGH | CAN_USE_HEAP, command line, initrd),
/// the e820 table (at most 128 entries) and `acpi_rsdp_addr`. Addresses above 4 GiB go in
/// the `ext_*` fields.
pub fn write_linux_zero_page<M: GuestMemory + ?Sized>(
    mem: &M,
    cfg: &ZeroPageConfig<'_>,
) -> Result<(), BootError> {
    let mut params = boot_params {
        hdr: loader_header(cfg)?,
        e820_table: e820_table(cfg.e820)?,
        acpi_rsdp_addr: cfg.rsdp_addr,
        ext_cmd_line_ptr: high32(cfg.cmdline_addr),
        ..Default::default()
    };
    // Checked by e820_table: the count fits in the table, hence in a u8.
    params.e820_entries = cfg.e820.len() as u8;
    if let Some((addr, size)) = cfg.initrd {
        params.ext_ramdisk_image = high32(addr);
        params.ext_ramdisk_size = high32(size);
    }
    write_at(mem, "Linux zero page", ZERO_PAGE, params)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::boot::test_memory::guest_memory;
    use crate::memory::e820_map;

    fn read_params(mem: &GuestMemoryMmap) -> boot_params {
        mem.read_obj(GuestAddress(ZERO_PAGE)).unwrap()
    }

    fn elf_config(e820: &[E820Entry]) -> ZeroPageConfig<'_> {
        ZeroPageConfig {
            setup_header: None,
            cmdline_addr: 0x2_0000,
            cmdline_size: 12,
            initrd: Some((0x7F0_0000, 0x10_0000)),
            e820,
            rsdp_addr: 0xE_0000,
        }
    }

    #[test]
    fn elf_kernel_gets_a_complete_header() {
        let mem = guest_memory();
        let e820 = e820_map(128 << 20);

        write_linux_zero_page(&mem, &elf_config(&e820)).unwrap();

        let p = read_params(&mem);
        assert_eq!({ p.hdr.type_of_loader }, 0xFF);
        assert_eq!({ p.hdr.boot_flag }, 0xAA55);
        assert_eq!(&{ p.hdr.header }.to_le_bytes(), b"HdrS");
        assert_eq!({ p.hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ p.hdr.loadflags }, LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!({ p.hdr.heap_end_ptr }, 0xFE00);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x2_0000);
        assert_eq!({ p.hdr.cmdline_size }, 12);
        assert_eq!({ p.hdr.ramdisk_image }, 0x7F0_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x10_0000);
        assert_eq!({ p.acpi_rsdp_addr }, 0xE_0000);
        assert_eq!({ p.ext_cmd_line_ptr }, 0);
    }

    #[test]
    fn acpi_rsdp_addr_is_at_offset_0x70() {
        let mem = guest_memory();
        let e820 = e820_map(128 << 20);

        write_linux_zero_page(&mem, &elf_config(&e820)).unwrap();

        let raw: u64 = mem.read_obj(GuestAddress(ZERO_PAGE + 0x70)).unwrap();
        assert_eq!(raw, 0xE_0000);
    }

    #[test]
    fn e820_table_is_copied() {
        let mem = guest_memory();
        let e820 = e820_map(4 << 30);

        write_linux_zero_page(&mem, &elf_config(&e820)).unwrap();

        let p = read_params(&mem);
        assert_eq!({ p.e820_entries }, 5);
        let table = { p.e820_table };
        for (got, want) in table.iter().zip(&e820) {
            assert_eq!(
                ({ got.addr }, { got.size }, { got.r#type }),
                (want.addr, want.size, want.kind)
            );
        }
        assert_eq!({ table[5].size }, 0);
    }

    #[test]
    fn bzimage_header_is_kept_with_loader_fields_set() {
        let mem = guest_memory();
        let e820 = e820_map(128 << 20);
        let kernel_hdr = setup_header {
            setup_sects: 27,
            version: 0x020F,
            kernel_alignment: 0x20_0000,
            cmdline_size: 2047,
            initrd_addr_max: 0x7FFF_FFFF,
            xloadflags: 0x7F,
            loadflags: 0x01,
            ..Default::default()
        };
        let cfg = ZeroPageConfig {
            setup_header: Some(kernel_hdr),
            ..elf_config(&e820)
        };

        write_linux_zero_page(&mem, &cfg).unwrap();

        let p = read_params(&mem);
        assert_eq!({ p.hdr.setup_sects }, 27);
        assert_eq!({ p.hdr.version }, 0x020F);
        assert_eq!({ p.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!(
            { p.hdr.cmdline_size },
            2047,
            "the kernel's limit is not overwritten"
        );
        assert_eq!({ p.hdr.loadflags }, LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!({ p.hdr.type_of_loader }, 0xFF);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x2_0000);
    }

    #[test]
    fn command_line_longer_than_the_kernel_allows_is_an_error() {
        let mem = guest_memory();
        let e820 = e820_map(128 << 20);
        let cfg = ZeroPageConfig {
            setup_header: Some(setup_header {
                cmdline_size: 255,
                ..Default::default()
            }),
            cmdline_size: 300,
            ..elf_config(&e820)
        };

        let err = write_linux_zero_page(&mem, &cfg).unwrap_err();

        assert!(matches!(
            err,
            BootError::CmdlineTooLong {
                size: 300,
                max: 255
            }
        ));
    }

    #[test]
    fn addresses_above_4g_use_the_ext_fields() {
        let mem = guest_memory();
        let e820 = e820_map(128 << 20);
        let cfg = ZeroPageConfig {
            cmdline_addr: 0x1_2345_6000,
            initrd: Some((0x2_0000_1000, 0x1_0000_0002)),
            ..elf_config(&e820)
        };

        write_linux_zero_page(&mem, &cfg).unwrap();

        let p = read_params(&mem);
        assert_eq!(
            ({ p.hdr.cmd_line_ptr }, { p.ext_cmd_line_ptr }),
            (0x2345_6000, 1)
        );
        assert_eq!(
            ({ p.hdr.ramdisk_image }, { p.ext_ramdisk_image }),
            (0x1000, 2)
        );
        assert_eq!(({ p.hdr.ramdisk_size }, { p.ext_ramdisk_size }), (2, 1));
    }

    #[test]
    fn more_than_128_e820_entries_is_an_error() {
        let mem = guest_memory();
        let e820 = vec![
            E820Entry {
                addr: 0,
                size: 0x1000,
                kind: 1
            };
            129
        ];

        let err = write_linux_zero_page(&mem, &elf_config(&e820)).unwrap_err();

        assert!(matches!(
            err,
            BootError::TooManyMemoryMapEntries {
                count: 129,
                max: 128,
                ..
            }
        ));
    }
}
