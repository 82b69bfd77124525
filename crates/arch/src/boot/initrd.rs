//! Where the initrd goes.

use super::BootError;
use crate::memory::low_ram_top;

const PAGE: u64 = 0x1000;
/// `initrd_addr_max` of boot protocols before 2.03.
const LEGACY_INITRD_ADDR_MAX: u64 = 0x37FF_FFFF;

/// The initrd's load address: the highest page-aligned address below
/// `min(top of low RAM, initrd_addr_max + 1)` with room for `initrd_size` bytes, and not
/// below `kernel_end` (the end of the loaded kernel).
///
/// `initrd_addr_max` is the setup header's field of that name (the highest address the
/// initrd may occupy); `None` for an ELF kernel, which has no limit but low RAM.
pub fn initrd_load_addr(
    mem_size: u64,
    initrd_size: u64,
    initrd_addr_max: Option<u32>,
    kernel_end: u64,
) -> Result<u64, BootError> {
    let does_not_fit = || BootError::InitrdDoesNotFit { size: initrd_size };
    let limit = match initrd_addr_max {
        // Kernels older than boot protocol 2.03 have no field (it reads 0): their limit.
        Some(0) => low_ram_top(mem_size).min(LEGACY_INITRD_ADDR_MAX + 1),
        Some(max) => low_ram_top(mem_size).min(u64::from(max) + 1),
        None => low_ram_top(mem_size),
    };
    let start = limit.checked_sub(initrd_size).ok_or_else(does_not_fit)? & !(PAGE - 1);
    let kernel_end_page = kernel_end.checked_add(PAGE - 1).ok_or_else(does_not_fit)? & !(PAGE - 1);
    if start < kernel_end_page {
        return Err(does_not_fit());
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn goes_at_the_top_of_low_ram() {
        let addr = initrd_load_addr(128 * MIB, 0x1800, None, 0x100_0000).unwrap();

        assert_eq!(addr, 128 * MIB - 0x2000);
    }

    #[test]
    fn stays_below_the_mmio_hole() {
        let addr = initrd_load_addr(8 << 30, MIB, None, 0x100_0000).unwrap();

        assert_eq!(addr, 0xC000_0000 - MIB);
    }

    #[test]
    fn respects_initrd_addr_max() {
        let addr = initrd_load_addr(2 << 30, 0x1000, Some(0x37FF_FFFF), 0x100_0000).unwrap();

        assert_eq!(addr, 0x3800_0000 - 0x1000);
    }

    #[test]
    fn a_zero_initrd_addr_max_means_the_legacy_limit() {
        let addr = initrd_load_addr(2 << 30, 0x1000, Some(0), 0x100_0000).unwrap();

        assert_eq!(addr, 0x3800_0000 - 0x1000);
    }

    #[test]
    fn may_end_right_where_the_kernel_ends_page_aligned() {
        // 16 MiB guest, kernel ends at 12 MiB + 1: the first free page is 12 MiB + 4 KiB.
        let room = 16 * MIB - (12 * MIB + PAGE);

        let fits = initrd_load_addr(16 * MIB, room, None, 12 * MIB + 1);
        let too_big = initrd_load_addr(16 * MIB, room + 1, None, 12 * MIB + 1);

        assert_eq!(fits.unwrap(), 12 * MIB + PAGE);
        let err = too_big.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "initrd of {} bytes does not fit in guest memory above the kernel",
                room + 1
            )
        );
    }

    #[test]
    fn larger_than_memory_is_an_error() {
        let result = initrd_load_addr(16 * MIB, 32 * MIB, None, MIB);

        assert!(matches!(result, Err(BootError::InitrdDoesNotFit { size }) if size == 32 * MIB));
    }
}
