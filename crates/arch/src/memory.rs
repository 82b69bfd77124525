//! Guest RAM layout: which guest-physical ranges are RAM, and the e820 map the guest is told.

use vm_memory::GuestAddress;

use crate::layout::{
    BIOS_AREA_START, HIGH_RAM_START, KVM_IDENTITY_MAP_ADDR, LOW_RAM_END, MMIO_HOLE_END,
    MMIO_HOLE_START, PCI_ECAM_SIZE, PCI_ECAM_START, RAM_ABOVE_4G_START,
};

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// e820 type: ACPI reclaimable (tables the OS may reuse after parsing them).
pub const E820_ACPI: u32 = 3;

/// Smallest guest: the first MiB holds the boot structures and the ACPI tables, and a kernel
/// loads at 1 MiB, so one more MiB is the least that can hold anything at all.
pub const MIN_MEMORY_SIZE: u64 = 2 << 20;
/// Guest RAM must be a whole number of these (4 KiB pages).
pub const MEMORY_GRANULE: u64 = 0x1000;

/// One entry of the e820 map (also the PVH memory map, which uses the same types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`], [`E820_RESERVED`] or [`E820_ACPI`].
    pub kind: u32,
}

/// Why a guest memory size cannot be laid out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// Below [`MIN_MEMORY_SIZE`].
    #[error(
        "guest memory of {size} bytes is too small: at least {min} bytes (2 MiB) are needed, \
         the first MiB for boot structures and ACPI tables and the rest for the kernel"
    )]
    TooSmall {
        /// Requested size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// Not a multiple of [`MEMORY_GRANULE`].
    #[error("guest memory of {size} bytes is not a multiple of the 4 KiB page size")]
    NotPageAligned {
        /// Requested size.
        size: u64,
    },
    /// So large that the RAM above 4 GiB would end beyond the 64-bit address space.
    #[error("guest memory of {size} bytes does not fit in the guest-physical address space")]
    TooLarge {
        /// Requested size.
        size: u64,
    },
}

/// Top (exclusive) of the RAM below the 32-bit MMIO hole.
pub fn low_ram_top(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

/// Size of the RAM above 4 GiB: whatever did not fit below the hole.
pub fn high_ram_size(mem_size: u64) -> u64 {
    mem_size.saturating_sub(MMIO_HOLE_START)
}

/// The guest RAM regions for `mem_size` bytes: `[0, min(size, hole))`, then the rest from 4 GiB.
///
/// The result feeds `GuestMemoryMmap::from_ranges` and the KVM memory slots.
pub fn ram_regions(mem_size: u64) -> Result<Vec<(GuestAddress, usize)>, MemoryError> {
    validate(mem_size)?;
    let too_large = || MemoryError::TooLarge { size: mem_size };
    let low = usize::try_from(low_ram_top(mem_size)).map_err(|_| too_large())?;
    let mut regions = vec![(GuestAddress(0), low)];
    let high = high_ram_size(mem_size);
    if high > 0 {
        let high_len = usize::try_from(high).map_err(|_| too_large())?;
        regions.push((GuestAddress(RAM_ABOVE_4G_START), high_len));
    }
    Ok(regions)
}

fn validate(mem_size: u64) -> Result<(), MemoryError> {
    if mem_size < MIN_MEMORY_SIZE {
        return Err(MemoryError::TooSmall {
            size: mem_size,
            min: MIN_MEMORY_SIZE,
        });
    }
    if mem_size & (MEMORY_GRANULE - 1) != 0 {
        return Err(MemoryError::NotPageAligned { size: mem_size });
    }
    // The high region ends at 4 GiB + (size - 3 GiB) = size + 1 GiB.
    let hole = RAM_ABOVE_4G_START - MMIO_HOLE_START;
    if mem_size.checked_add(hole).is_none() {
        return Err(MemoryError::TooLarge { size: mem_size });
    }
    Ok(())
}

/// The e820 map of a guest with `mem_size` bytes of RAM, per `docs/platform.md`:
/// `[0, 0xA0000)` RAM, `[0xE0000, 0x100000)` reserved (ACPI tables), `[0x100000, low top)` RAM,
/// `[4 GiB, …)` RAM. Ranges are clipped to `mem_size`, so any size gives a valid map.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let low_top = low_ram_top(mem_size);
    let mut map = Vec::with_capacity(4);
    let mut push = |start: u64, end: u64, kind: u32| {
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind,
            });
        }
    };
    push(0, low_top.min(LOW_RAM_END), E820_RAM);
    push(BIOS_AREA_START, low_top.min(HIGH_RAM_START), E820_RESERVED);
    push(HIGH_RAM_START, low_top, E820_RAM);
    // The PCI Express ECAM window, reserved as Linux expects of an MCFG region.
    push(
        PCI_ECAM_START,
        PCI_ECAM_START + PCI_ECAM_SIZE,
        E820_RESERVED,
    );
    let high = high_ram_size(mem_size);
    push(
        RAM_ABOVE_4G_START,
        RAM_ABOVE_4G_START.saturating_add(high),
        E820_RAM,
    );
    map
}

/// The e820 map a firmware is given (through `fw_cfg`'s `etc/e820`) for a guest with
/// `mem_size` bytes of RAM: [`e820_map`] plus, reserved, the KVM identity-map and TSS pages and
/// the firmware area above them up to 4 GiB, so that neither the firmware nor the OS it boots
/// places anything there.
pub fn firmware_e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = e820_map(mem_size);
    let high_ram = map
        .iter()
        .position(|entry| entry.addr >= RAM_ABOVE_4G_START)
        .unwrap_or(map.len());
    let firmware_area = E820Entry {
        addr: KVM_IDENTITY_MAP_ADDR,
        size: MMIO_HOLE_END - KVM_IDENTITY_MAP_ADDR,
        kind: E820_RESERVED,
    };
    map.insert(high_ram, firmware_area);
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn entry(addr: u64, size: u64, kind: u32) -> E820Entry {
        E820Entry { addr, size, kind }
    }

    /// The reserved PCI Express ECAM window every map ends its low part with.
    fn ecam() -> E820Entry {
        entry(PCI_ECAM_START, PCI_ECAM_SIZE, E820_RESERVED)
    }

    #[test]
    fn small_guest_has_one_region() {
        let regions = ram_regions(128 * MIB).unwrap();

        assert_eq!(regions, vec![(GuestAddress(0), (128 * MIB) as usize)]);
    }

    #[test]
    fn guest_exactly_at_the_hole_has_no_high_region() {
        let regions = ram_regions(3 * GIB).unwrap();

        assert_eq!(regions, vec![(GuestAddress(0), (3 * GIB) as usize)]);
    }

    #[test]
    fn four_gib_guest_splits_three_low_one_high() {
        let regions = ram_regions(4 * GIB).unwrap();

        assert_eq!(
            regions,
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), GIB as usize)
            ]
        );
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_reason() {
        assert_eq!(
            ram_regions(MIB),
            Err(MemoryError::TooSmall {
                size: MIB,
                min: MIN_MEMORY_SIZE
            })
        );
        assert_eq!(
            ram_regions(64 * MIB + 1),
            Err(MemoryError::NotPageAligned { size: 64 * MIB + 1 })
        );
        let huge = !(MEMORY_GRANULE - 1);
        assert_eq!(ram_regions(huge), Err(MemoryError::TooLarge { size: huge }));
        let message = ram_regions(MIB).unwrap_err().to_string();
        assert!(message.contains("1048576 bytes is too small"), "{message}");
    }

    #[test]
    fn e820_of_a_small_guest() {
        let map = e820_map(128 * MIB);

        assert_eq!(
            map,
            vec![
                entry(0, 0xA0000, E820_RAM),
                entry(0xE0000, 0x20000, E820_RESERVED),
                entry(0x100000, 127 * MIB, E820_RAM),
                ecam(),
            ]
        );
    }

    #[test]
    fn e820_at_the_hole_and_above_it() {
        let at_hole = e820_map(3 * GIB);
        let above = e820_map(4 * GIB);

        assert_eq!(at_hole.len(), 4);
        assert_eq!(at_hole[2], entry(0x100000, 3 * GIB - MIB, E820_RAM));
        assert_eq!(at_hole[3], ecam());
        assert_eq!(
            above,
            vec![
                entry(0, 0xA0000, E820_RAM),
                entry(0xE0000, 0x20000, E820_RESERVED),
                entry(0x100000, 3 * GIB - MIB, E820_RAM),
                ecam(),
                entry(4 * GIB, GIB, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_below_one_mib_is_clipped() {
        // Arrange + Act: sizes around the 640 KiB, 896 KiB and 1 MiB boundaries.
        let tiny = e820_map(0x8_0000);
        let in_vga_window = e820_map(0xC_0000);
        let in_bios_area = e820_map(0xF_0000);
        let exactly_1mib = e820_map(MIB);

        // Assert
        assert_eq!(tiny, vec![entry(0, 0x8_0000, E820_RAM), ecam()]);
        assert_eq!(in_vga_window, vec![entry(0, 0xA_0000, E820_RAM), ecam()]);
        assert_eq!(
            in_bios_area,
            vec![
                entry(0, 0xA_0000, E820_RAM),
                entry(0xE_0000, 0x1_0000, E820_RESERVED),
                ecam(),
            ]
        );
        assert_eq!(
            exactly_1mib,
            vec![
                entry(0, 0xA_0000, E820_RAM),
                entry(0xE_0000, 0x2_0000, E820_RESERVED),
                ecam(),
            ]
        );
        assert_eq!(e820_map(0), vec![ecam()]);
    }

    #[test]
    fn firmware_map_reserves_the_kvm_pages_and_the_firmware_area_before_high_ram() {
        let map = firmware_e820_map(4 * GIB);

        assert_eq!(
            map,
            vec![
                entry(0, 0xA0000, E820_RAM),
                entry(0xE0000, 0x20000, E820_RESERVED),
                entry(0x100000, 3 * GIB - MIB, E820_RAM),
                ecam(),
                entry(0xFEFF_C000, 0x100_4000, E820_RESERVED),
                entry(4 * GIB, GIB, E820_RAM),
            ]
        );
        assert_eq!(firmware_e820_map(64 * MIB).len(), 5);
    }

    #[test]
    fn low_top_and_high_size() {
        assert_eq!(low_ram_top(GIB), GIB);
        assert_eq!(low_ram_top(8 * GIB), 3 * GIB);
        assert_eq!(high_ram_size(GIB), 0);
        assert_eq!(high_ram_size(8 * GIB), 5 * GIB);
    }
}
