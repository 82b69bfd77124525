//! The dirty-page bitmap of [`crate::VirtioMemory`]: one bit per 4 KiB page of each guest
//! memory region, set by every write through `vm-memory` and by [`crate::mark_dirty`] for
//! writes that bypass it. The VMM takes it ([`take_dirty_pages`]) for diff snapshots.

use vm_memory::GuestMemoryBackend;
use vm_memory::bitmap::{AtomicBitmap, Bitmap, RefSlice, WithBitmapSlice};
use vm_memory::mmap::NewBitmap;

/// A page bitmap for one guest memory region. A type of this crate (not `AtomicBitmap`
/// itself) so that it can also serve as a vhost-user back-end's bitmap (feature
/// `vhost-user`).
/// Cloning copies the bits (vhost-user-backend wants `Clone`).
#[derive(Clone, Debug, Default)]
pub struct DirtyBitmap(AtomicBitmap);

impl DirtyBitmap {
    /// The bitmap, one bit per page, 64 pages a word; reading clears it.
    pub fn take(&self) -> Vec<u64> {
        self.0.get_and_reset()
    }
}

impl<'a> WithBitmapSlice<'a> for DirtyBitmap {
    type S = RefSlice<'a, Self>;
}

impl Bitmap for DirtyBitmap {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.0.mark_dirty(offset, len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.0.dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> RefSlice<'_, Self> {
        RefSlice::new(self, offset)
    }
}

impl NewBitmap for DirtyBitmap {
    fn with_len(len: usize) -> Self {
        Self(AtomicBitmap::with_len(len))
    }
}

/// A vhost-user back-end runs in its own process: oxvmm's snapshots cannot see its bitmap,
/// and it does not offer dirty logging to the front-end (`VHOST_USER_PROTOCOL_F_LOG_SHMFD`),
/// so there is never a log region to switch to.
#[cfg(feature = "vhost-user")]
impl vhost_user_backend::bitmap::BitmapReplace for DirtyBitmap {
    type InnerBitmap = ();

    fn replace(&self, _bitmap: ()) {
        tracing::warn!("vhost-user dirty log requested, but this back-end does not offer it");
    }
}

/// Takes (and clears) the bitmap of every region of `mem`, in region order.
pub fn take_dirty_pages(mem: &crate::VirtioMemory) -> Vec<Vec<u64>> {
    mem.iter()
        .map(|region| vm_memory::MmapRegion::bitmap(region).take())
        .collect()
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::VirtioMemory;

    fn memory() -> VirtioMemory {
        VirtioMemory::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x100000), 0x10000),
        ])
        .unwrap()
    }

    #[test]
    fn writes_through_vm_memory_mark_their_pages_once() {
        let mem = memory();
        mem.write_obj(7u32, GuestAddress(0x2ffe)).unwrap();
        mem.write_slice(&[1; 0x1001], GuestAddress(0x101000))
            .unwrap();

        let first = take_dirty_pages(&mem);
        let second = take_dirty_pages(&mem);

        // 0x2ffe..0x3002 spans pages 2 and 3; 0x1000..0x2001 of region 2 spans pages 1 and 2.
        assert_eq!(first, vec![vec![0b1100], vec![0b110]]);
        assert_eq!(second, vec![vec![0], vec![0]]);
    }

    #[test]
    fn mark_dirty_covers_writes_behind_vm_memorys_back_across_regions() {
        let mem = memory();

        crate::mark_dirty(&mem, 0xf000, 0x1000);
        crate::mark_dirty(&mem, 0x10_0000 + 0xe000, 0x5000);
        crate::mark_dirty(&mem, 0x50_0000, 0x1000);

        assert_eq!(
            take_dirty_pages(&mem),
            vec![vec![1 << 15], vec![(1 << 14) | (1 << 15)]]
        );
    }

    #[test]
    fn reads_mark_nothing() {
        let mem = memory();
        let mut buf = [0u8; 64];

        mem.read_slice(&mut buf, GuestAddress(0x100)).unwrap();

        assert_eq!(take_dirty_pages(&mem), vec![vec![0], vec![0]]);
    }
}
