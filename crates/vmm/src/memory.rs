//! Guest RAM: anonymous private mappings laid out around the 32-bit MMIO hole.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::VmmError;

/// Guest RAM as the whole VMM sees it: devices and the loader alike write it through
/// `vm-memory`, whose dirty bitmap records the pages they wrote (KVM's dirty log records only
/// the guest's own writes); diff snapshots take both.
pub type GuestRam = virtio::VirtioMemory;

/// Allocates guest RAM of `size_mib` MiB in the regions `arch` lays out.
pub fn create_guest_memory(size_mib: u64) -> Result<GuestRam, VmmError> {
    let bytes = size_mib
        .checked_mul(1 << 20)
        .ok_or(VmmError::MemoryTooLarge(size_mib))?;
    let regions: Vec<(GuestAddress, usize)> =
        arch::memory::ram_regions(bytes).map_err(VmmError::MemoryLayout)?;
    GuestRam::from_ranges(&regions).map_err(|e| VmmError::AllocateMemory(e.to_string()))
}

/// Drops every page of guest RAM, so it reads as zero and stops counting in our RSS.
pub fn discard_guest_memory(memory: &GuestRam) {
    for region in memory.iter() {
        let addr = region.as_ptr();
        let len = region.len() as usize;
        // SAFETY: the range is exactly one of our private anonymous mappings; MADV_DONTNEED on it
        // replaces its pages with zero-fill-on-demand pages and cannot affect other memory.
        let ret = unsafe { libc::madvise(addr.cast(), len, libc::MADV_DONTNEED) };
        if ret != 0 {
            tracing::warn!(
                "madvise(MADV_DONTNEED) on guest memory failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The KVM memory slots that describe `memory`.
pub fn memory_slots(memory: &GuestRam) -> Vec<hypervisor::MemorySlot> {
    memory
        .iter()
        .map(|region| hypervisor::MemorySlot {
            guest_addr: region.start_addr().0,
            size: region.len(),
            host_addr: region.as_ptr() as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::*;

    #[test]
    fn discarded_memory_reads_as_zero() {
        let memory = create_guest_memory(4).unwrap();
        memory
            .write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();

        discard_guest_memory(&memory);

        assert_eq!(memory.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0);
        assert_eq!(memory.last_addr(), GuestAddress((4 << 20) - 1));
    }
}
