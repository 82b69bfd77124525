//! The PVH `hvm_start_info` and the memory map and module list it points to.

use linux_loader::loader::elf::start_info::{
    XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::GuestMemory;

use super::{BootError, write_at, write_bytes_at};
use crate::layout::{PVH_INFO, PVH_MEMMAP, ZERO_PAGE};
use crate::memory::E820Entry;

/// Largest PVH memory map: the same capacity as the zero page's e820 table, which keeps the
/// map and the module entry after it below [`ZERO_PAGE`].
pub const PVH_MAX_MEMMAP_ENTRIES: usize = 128;

const MEMMAP_ENTRY_SIZE: u64 = size_of::<hvm_memmap_table_entry>() as u64;
const MODLIST_ENTRY_SIZE: u64 = size_of::<hvm_modlist_entry>() as u64;

const _: () = assert!(PVH_INFO + size_of::<hvm_start_info>() as u64 <= PVH_MEMMAP);
const _: () = assert!(
    PVH_MEMMAP + PVH_MAX_MEMMAP_ENTRIES as u64 * MEMMAP_ENTRY_SIZE + MODLIST_ENTRY_SIZE
        <= ZERO_PAGE
);

fn memmap_bytes(e820: &[E820Entry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(e820.len() * MEMMAP_ENTRY_SIZE as usize);
    for entry in e820 {
        // Field by field, in the `hvm_memmap_table_entry` layout (addr, size, type, reserved).
        bytes.extend_from_slice(&entry.addr.to_le_bytes());
        bytes.extend_from_slice(&entry.size.to_le_bytes());
        bytes.extend_from_slice(&entry.kind.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    bytes
}

/// Writes the PVH start info at [`PVH_INFO`] (magic 0x336ec578, version 1), the memory map at
/// [`PVH_MEMMAP`] with the e820 types, and, for an initrd, one `hvm_modlist_entry` right
/// after the map. `rsdp` 0 means "no ACPI tables".
pub fn write_pvh_start_info<M: GuestMemory + ?Sized>(
    mem: &M,
    cmdline_addr: u64,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
    rsdp: u64,
) -> Result<(), BootError> {
    if e820.len() > PVH_MAX_MEMMAP_ENTRIES {
        return Err(BootError::TooManyMemoryMapEntries {
            what: "PVH memory map",
            count: e820.len(),
            max: PVH_MAX_MEMMAP_ENTRIES,
        });
    }
    write_bytes_at(mem, "PVH memory map", PVH_MEMMAP, &memmap_bytes(e820))?;
    // Bounded by PVH_MAX_MEMMAP_ENTRIES above.
    let entries = e820.len() as u32;
    let modlist_addr = PVH_MEMMAP + u64::from(entries) * MEMMAP_ENTRY_SIZE;

    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: cmdline_addr,
        rsdp_paddr: rsdp,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: entries,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        write_at(mem, "PVH module list", modlist_addr, module)?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
    }
    write_at(mem, "PVH start info", PVH_INFO, info)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::boot::test_memory::guest_memory;
    use crate::memory::e820_map;

    #[test]
    fn start_info_without_initrd() {
        let mem = guest_memory();
        let e820 = e820_map(4 << 30);

        write_pvh_start_info(&mem, 0x2_0000, None, &e820, 0xE_0000).unwrap();

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO)).unwrap();
        assert_eq!(info.magic, 0x336E_C578);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, 0x2_0000);
        assert_eq!(info.rsdp_paddr, 0xE_0000);
        assert_eq!((info.memmap_paddr, info.memmap_entries), (0x6040, 5));
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }

    #[test]
    fn memory_map_uses_e820_types() {
        let mem = guest_memory();
        let e820 = e820_map(4 << 30);

        write_pvh_start_info(&mem, 0x2_0000, None, &e820, 0).unwrap();

        for (i, want) in e820.iter().enumerate() {
            let addr = PVH_MEMMAP + i as u64 * MEMMAP_ENTRY_SIZE;
            let got: hvm_memmap_table_entry = mem.read_obj(GuestAddress(addr)).unwrap();
            assert_eq!(
                (got.addr, got.size, got.type_),
                (want.addr, want.size, want.kind)
            );
        }
    }

    #[test]
    fn initrd_is_a_module_after_the_memory_map() {
        let mem = guest_memory();
        let e820 = e820_map(128 << 20);

        write_pvh_start_info(&mem, 0x2_0000, Some((0x7E0_0000, 0x12345)), &e820, 0).unwrap();

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO)).unwrap();
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, 0x6040 + 4 * 24);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(
            (module.paddr, module.size, module.cmdline_paddr),
            (0x7E0_0000, 0x12345, 0)
        );
    }

    #[test]
    fn too_many_entries_is_an_error() {
        let mem = guest_memory();
        let e820 = vec![e820_map(128 << 20)[0]; 129];

        let err = write_pvh_start_info(&mem, 0, None, &e820, 0).unwrap_err();

        assert!(err.to_string().contains("129 memory map entries"), "{err}");
    }
}
