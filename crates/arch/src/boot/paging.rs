//! The identity map of the first 4 GiB that the 64-bit Linux entry runs on.

use vm_memory::GuestMemory;

use super::{BootError, write_bytes_at};
use crate::layout::{PD, PD_COUNT, PDPT, PML4};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// Page-size bit of a page-directory entry: the entry maps a 2 MiB page.
const HUGE_PAGE: u64 = 1 << 7;
const ENTRIES_PER_TABLE: u64 = 512;
const PAGE_2M: u64 = 2 << 20;
const TABLE_SIZE: u64 = 0x1000;

fn table_bytes(entries: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut bytes: Vec<u8> = entries.flat_map(u64::to_le_bytes).collect();
    bytes.resize(TABLE_SIZE as usize, 0);
    bytes
}

/// Writes PML4, PDPT and four page directories that identity-map `[0, 4 GiB)` with
/// 2 MiB pages, writable, kernel-only. `CR3` = [`PML4`].
///
/// The MMIO hole is mapped too: the guest's accesses there must reach the MMIO bus.
pub fn setup_page_tables<M: GuestMemory + ?Sized>(mem: &M) -> Result<(), BootError> {
    let pml4 = table_bytes(std::iter::once(PDPT | PRESENT | WRITABLE));
    write_bytes_at(mem, "boot PML4", PML4, &pml4)?;

    let pdpt = table_bytes((0..PD_COUNT).map(|i| (PD + i * TABLE_SIZE) | PRESENT | WRITABLE));
    write_bytes_at(mem, "boot PDPT", PDPT, &pdpt)?;

    for dir in 0..PD_COUNT {
        let first_page = dir * ENTRIES_PER_TABLE;
        let pd = table_bytes(
            (first_page..first_page + ENTRIES_PER_TABLE)
                .map(|page| (page * PAGE_2M) | PRESENT | WRITABLE | HUGE_PAGE),
        );
        write_bytes_at(mem, "boot page directory", PD + dir * TABLE_SIZE, &pd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::boot::test_memory::guest_memory;

    fn read(mem: &vm_memory::GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// Walks the tables like the MMU for a 2 MiB mapping: returns the physical address.
    fn translate(mem: &vm_memory::GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let mask = 0x000F_FFFF_FFFF_F000;
        let pml4e = read(mem, cr3 + ((va >> 39) & 0x1FF) * 8);
        if pml4e & PRESENT == 0 {
            return None;
        }
        let pdpte = read(mem, (pml4e & mask) + ((va >> 30) & 0x1FF) * 8);
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = read(mem, (pdpte & mask) + ((va >> 21) & 0x1FF) * 8);
        if pde & PRESENT == 0 || pde & HUGE_PAGE == 0 {
            return None;
        }
        Some((pde & 0x000F_FFFF_FFE0_0000) + (va & (PAGE_2M - 1)))
    }

    #[test]
    fn first_four_gib_are_identity_mapped() {
        let mem = guest_memory();

        setup_page_tables(&mem).unwrap();

        for va in [
            0,
            0x7000,
            0x100_0000 + 123,
            0xBFFF_FFFF,
            0xFEE0_0000,
            0xFFFF_FFFF,
        ] {
            assert_eq!(translate(&mem, PML4, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&mem, PML4, 0x1_0000_0000), None);
    }

    #[test]
    fn entries_are_writable_and_kernel_only() {
        let mem = guest_memory();

        setup_page_tables(&mem).unwrap();

        assert_eq!(read(&mem, PML4), PDPT | 0x3);
        assert_eq!(read(&mem, PDPT + 3 * 8), (PD + 3 * 0x1000) | 0x3);
        assert_eq!(read(&mem, PD + 8), PAGE_2M | 0x83);
    }

    #[test]
    fn memory_without_the_tables_is_an_error() {
        let mem =
            vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)])
                .unwrap();

        let err = setup_page_tables(&mem).unwrap_err();

        assert!(
            err.to_string()
                .contains("boot PML4 at guest address 0x9000")
        );
    }
}
