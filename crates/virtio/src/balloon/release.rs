//! Giving the host memory behind ballooned guest pages back to the host.

use std::io;

use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap};

use crate::VirtioMemory;

/// Releases the host memory behind a range of guest memory the driver put in the balloon.
/// The device calls it only for whole 4 KiB pages it checked lie inside guest memory; it
/// may merge neighbouring pages into one call.
pub trait PageReleaser: Send {
    /// Releases `len` bytes of guest memory at guest-physical `guest_addr`: the host may
    /// reclaim them, and the guest reads zeros (or the backing file's data) there if it
    /// touches them again.
    fn release(&mut self, guest_addr: u64, len: u64) -> io::Result<()>;
}

/// The releaser a VMM uses: `madvise(MADV_DONTNEED)` on the host mapping of the range
/// (private mappings: the pages are freed and read back as zero, or as the file's data for a
/// copy-on-write file mapping), `MADV_REMOVE` for shared mappings (shared memory and shared
/// files: the backing store is freed too, a hole is punched in a file).
#[derive(Debug)]
pub struct GuestMemoryReleaser {
    mem: VirtioMemory,
    host_page_size: u64,
}

impl GuestMemoryReleaser {
    /// A releaser for the guest memory `mem` (the VM's own mapping: it must be the memory the
    /// device is activated with).
    pub fn new(mem: VirtioMemory) -> Self {
        Self {
            mem,
            host_page_size: host_page_size(),
        }
    }

    /// Releases `[offset, offset + len)` of one region; the caller keeps it inside the region.
    fn release_in_region(
        &self,
        region: &GuestRegionMmap<crate::dirty::DirtyBitmap>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let start = region.as_ptr().wrapping_add(to_usize(offset)?);
        let page = self.host_page_size;
        if !(start as u64).is_multiple_of(page) || !len.is_multiple_of(page) {
            return Err(invalid_input(format!(
                "guest memory {:#x}+{len:#x} is not aligned to the host's {page}-byte pages",
                region.start_addr().raw_value() + offset
            )));
        }
        let advice = if region.flags() & libc::MAP_SHARED != 0 {
            libc::MADV_REMOVE
        } else {
            libc::MADV_DONTNEED
        };
        // SAFETY: `start..start + len` lies inside this region's mapping (the caller checked
        // `offset + len <= region.len()`), which `self.mem` keeps mapped. madvise with
        // DONTNEED or REMOVE only drops the contents of those pages (they read back as zero or
        // as the backing file's data); it cannot unmap or touch memory outside the range. Guest
        // memory is only ever accessed through volatile copies, never Rust references, so
        // nothing holds assumptions about these bytes.
        let ret = unsafe { libc::madvise(start.cast(), to_usize(len)?, advice) };
        // The pages now read as zero: a change behind vm-memory's back that a diff snapshot
        // must carry (marked even on failure, which may have dropped some of them).
        region
            .bitmap()
            .mark_dirty(to_usize(offset)?, to_usize(len)?);
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl PageReleaser for GuestMemoryReleaser {
    fn release(&mut self, guest_addr: u64, len: u64) -> io::Result<()> {
        let end = guest_addr
            .checked_add(len)
            .ok_or_else(|| invalid_input(format!("{guest_addr:#x}+{len:#x} overflows")))?;
        let mut addr = guest_addr;
        while addr < end {
            let region = self.mem.find_region(GuestAddress(addr)).ok_or_else(|| {
                invalid_input(format!("guest address {addr:#x} is outside guest memory"))
            })?;
            let offset = addr - region.start_addr().raw_value();
            let chunk = (end - addr).min(region.len() - offset);
            self.release_in_region(region, offset, chunk)?;
            addr += chunk;
        }
        Ok(())
    }
}

fn host_page_size() -> u64 {
    // SAFETY: sysconf reads a configuration value; it has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| invalid_input(format!("{value:#x} does not fit usize")))
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use vm_memory::{Bytes, FileOffset};

    use super::*;

    const PAGE: u64 = 4096;

    fn filled(mem: &VirtioMemory, addr: u64, len: u64, byte: u8) {
        mem.write_slice(&vec![byte; len as usize], GuestAddress(addr))
            .unwrap();
    }

    fn bytes_at(mem: &VirtioMemory, addr: u64, len: u64) -> Vec<u8> {
        let mut data = vec![0u8; len as usize];
        mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
        data
    }

    #[test]
    fn released_private_pages_read_zero_and_neighbours_stay() {
        let mem = VirtioMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        filled(&mem, 0x4000, 4 * PAGE, 0xAB);
        let mut releaser = GuestMemoryReleaser::new(mem.clone());

        releaser.release(0x5000, 2 * PAGE).unwrap();

        assert_eq!(bytes_at(&mem, 0x4000, PAGE), vec![0xAB; PAGE as usize]);
        assert_eq!(bytes_at(&mem, 0x5000, 2 * PAGE), vec![0; 2 * PAGE as usize]);
        assert_eq!(bytes_at(&mem, 0x7000, PAGE), vec![0xAB; PAGE as usize]);
    }

    #[test]
    fn a_range_over_two_adjacent_regions_is_released_in_both() {
        let mem = VirtioMemory::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x1_0000), 0x1_0000),
        ])
        .unwrap();
        filled(&mem, 0xF000, 2 * PAGE, 0x11);
        let mut releaser = GuestMemoryReleaser::new(mem.clone());

        releaser.release(0xF000, 2 * PAGE).unwrap();

        assert_eq!(bytes_at(&mem, 0xF000, 2 * PAGE), vec![0; 2 * PAGE as usize]);
    }

    #[test]
    fn ranges_outside_memory_or_misaligned_are_refused() {
        let mem = VirtioMemory::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
        filled(&mem, 0, 0x1_0000, 0x22);
        let mut releaser = GuestMemoryReleaser::new(mem.clone());

        let outside = releaser.release(0x2_0000, PAGE);
        let overflow = releaser.release(u64::MAX - 0xFFF, PAGE);
        let misaligned = releaser.release(0x800, PAGE);

        for result in [outside, overflow, misaligned] {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(bytes_at(&mem, 0, 0x1_0000), vec![0x22; 0x1_0000]);
    }

    #[test]
    fn a_shared_file_mapping_gets_a_hole_punched() {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        file.set_len(0x1_0000).unwrap();
        let backing = FileOffset::new(file.try_clone().unwrap(), 0);
        let mem =
            VirtioMemory::from_ranges_with_files([(GuestAddress(0), 0x1_0000, Some(backing))])
                .unwrap();
        filled(&mem, 0, 0x1_0000, 0x33);
        let mut releaser = GuestMemoryReleaser::new(mem.clone());

        releaser.release(0x2000, PAGE).unwrap();

        assert_eq!(bytes_at(&mem, 0x2000, PAGE), vec![0; PAGE as usize]);
        assert_eq!(bytes_at(&mem, 0x3000, PAGE), vec![0x33; PAGE as usize]);
        let mut in_file = vec![0xFFu8; PAGE as usize];
        file.read_exact_at(&mut in_file, 0x2000).unwrap();
        assert_eq!(
            in_file,
            vec![0; PAGE as usize],
            "the file itself lost the data"
        );
        file.read_exact_at(&mut in_file, 0x3000).unwrap();
        assert_eq!(in_file, vec![0x33; PAGE as usize]);
    }
}
