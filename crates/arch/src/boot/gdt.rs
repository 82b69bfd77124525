//! The boot GDT and the `kvm_segment`s that name its descriptors.
//!
//! | selector | descriptor |
//! | --- | --- |
//! | `0x00` | null |
//! | `0x08` | flat 32-bit code (PVH `CS`) |
//! | `0x10` | flat 64-bit code (Linux `__BOOT_CS`) |
//! | `0x18` | flat data, 4 GiB, D/B set: Linux `__BOOT_DS` and PVH `DS`/`ES`/`SS` alike |
//!
//! The GDT at `0x500` has room for four descriptors before the IDT at `0x520`, so the task
//! register has no descriptor: `TR` is loaded with a busy TSS at selector 0 (the same state
//! KVM gives a vCPU at reset). Both entry protocols leave loading a real TSS to the guest.

use kvm_bindings::kvm_segment;
use vm_memory::GuestMemory;

use super::{BootError, write_at, write_bytes_at};
use crate::layout::{BOOT_CODE32_SELECTOR, BOOT_CODE64_SELECTOR, BOOT_DATA_SELECTOR, GDT, IDT};

/// One segment descriptor, as the GDT encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Descriptor {
    /// Access byte (bits 0–7: P, DPL, S, type) and flags nibble (bits 12–15: G, D/B, L, AVL).
    pub flags: u16,
    pub base: u32,
    /// 20-bit limit, in 4 KiB units when G is set.
    pub limit: u32,
}

/// Flat 32-bit code: present, DPL 0, code execute/read accessed; G and D set.
pub(super) const CODE32: Descriptor = Descriptor {
    flags: 0xC09B,
    base: 0,
    limit: 0xF_FFFF,
};
/// Flat 64-bit code: as [`CODE32`] but with L set and D clear.
pub(super) const CODE64: Descriptor = Descriptor {
    flags: 0xA09B,
    base: 0,
    limit: 0xF_FFFF,
};
/// Flat data: present, DPL 0, read/write accessed; G and D/B set.
pub(super) const DATA: Descriptor = Descriptor {
    flags: 0xC093,
    base: 0,
    limit: 0xF_FFFF,
};

/// The GDT in selector order (index = selector / 8).
const GDT_TABLE: [Option<Descriptor>; 4] = [None, Some(CODE32), Some(CODE64), Some(DATA)];

/// `limit` of the GDTR: 4 descriptors.
pub(super) const GDT_LIMIT: u16 = (GDT_TABLE.len() * 8 - 1) as u16;
/// `limit` of the IDTR: one (empty) 8-byte entry.
pub(super) const IDT_LIMIT: u16 = 7;

const _: () = assert!(CODE32_INDEX * 8 == BOOT_CODE32_SELECTOR as usize);
const _: () = assert!(CODE64_INDEX * 8 == BOOT_CODE64_SELECTOR as usize);
const _: () = assert!(DATA_INDEX * 8 == BOOT_DATA_SELECTOR as usize);
const _: () = assert!(GDT + (GDT_LIMIT as u64) < IDT);
const CODE32_INDEX: usize = 1;
const CODE64_INDEX: usize = 2;
const DATA_INDEX: usize = 3;

impl Descriptor {
    /// The 8-byte GDT encoding.
    pub fn encode(self) -> u64 {
        let base = u64::from(self.base);
        let limit = u64::from(self.limit);
        let flags = u64::from(self.flags);
        ((base & 0xFF00_0000) << 32)
            | ((flags & 0xF0FF) << 40)
            | ((limit & 0xF_0000) << 32)
            | ((base & 0x00FF_FFFF) << 16)
            | (limit & 0xFFFF)
    }

    fn bit(self, n: u16) -> u8 {
        u8::from(self.flags & (1 << n) != 0)
    }

    /// The segment register contents after loading this descriptor with `selector`.
    pub fn to_kvm_segment(self, selector: u16) -> kvm_segment {
        let granular = self.bit(15) == 1;
        let limit = if granular {
            (self.limit << 12) | 0xFFF
        } else {
            self.limit
        };
        let present = self.bit(7);
        kvm_segment {
            base: u64::from(self.base),
            limit,
            selector,
            type_: (self.flags & 0xF) as u8,
            present,
            dpl: ((self.flags >> 5) & 0x3) as u8,
            db: self.bit(14),
            s: self.bit(4),
            l: self.bit(13),
            g: self.bit(15),
            avl: self.bit(12),
            unusable: 1 - present,
            padding: 0,
        }
    }
}

/// A busy TSS at base 0 with the minimal 104-byte limit; see the module comment.
pub(super) fn boot_tss_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0x67,
        selector: 0,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the boot GDT at [`GDT`] and an empty one-entry IDT at [`IDT`].
pub fn setup_gdt<M: GuestMemory + ?Sized>(mem: &M) -> Result<(), BootError> {
    let bytes: Vec<u8> = GDT_TABLE
        .iter()
        .flat_map(|d| d.map_or(0, Descriptor::encode).to_le_bytes())
        .collect();
    write_bytes_at(mem, "boot GDT", GDT, &bytes)?;
    write_at(mem, "boot IDT", IDT, 0u64)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::boot::test_memory::guest_memory;

    #[test]
    fn descriptors_encode_like_the_sdm_says() {
        // Well-known encodings of flat segments.
        assert_eq!(CODE32.encode(), 0x00CF_9B00_0000_FFFF);
        assert_eq!(CODE64.encode(), 0x00AF_9B00_0000_FFFF);
        assert_eq!(DATA.encode(), 0x00CF_9300_0000_FFFF);
    }

    #[test]
    fn base_and_limit_land_in_their_split_fields() {
        let d = Descriptor {
            flags: 0x0089,
            base: 0x1234_5678,
            limit: 0xA_BCDE,
        };

        assert_eq!(d.encode(), 0x120A_8934_5678_BCDE);
    }

    #[test]
    fn segments_decode_the_descriptors() {
        let cs64 = CODE64.to_kvm_segment(BOOT_CODE64_SELECTOR);
        let ds = DATA.to_kvm_segment(BOOT_DATA_SELECTOR);

        assert_eq!(
            (cs64.type_, cs64.l, cs64.db, cs64.s, cs64.present, cs64.g),
            (0xB, 1, 0, 1, 1, 1)
        );
        assert_eq!(cs64.limit, 0xFFFF_FFFF);
        assert_eq!(cs64.selector, 0x10);
        assert_eq!((ds.type_, ds.l, ds.db, ds.unusable), (0x3, 0, 1, 0));
    }

    #[test]
    fn gdt_and_idt_are_written() {
        let mem = guest_memory();
        mem.write_obj(0xFFFF_FFFF_FFFF_FFFFu64, GuestAddress(IDT))
            .unwrap();

        setup_gdt(&mem).unwrap();

        let read = |i: u64| mem.read_obj::<u64>(GuestAddress(GDT + i * 8)).unwrap();
        assert_eq!(read(0), 0);
        assert_eq!(read(1), CODE32.encode());
        assert_eq!(read(2), CODE64.encode());
        assert_eq!(read(3), DATA.encode());
        assert_eq!(mem.read_obj::<u64>(GuestAddress(IDT)).unwrap(), 0);
    }
}
