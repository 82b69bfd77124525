//! Register state of the bootstrap processor at the two entry points.
//!
//! The `*_sregs` functions take the `kvm_sregs` read from the vCPU (`KVM_GET_SREGS`) and
//! change only what the entry protocol defines, so `apic_base`, `LDTR` and the interrupt
//! bitmap keep KVM's values. Set the vCPU's CPUID before these sregs: KVM checks `CR4` and
//! `EFER` bits against it.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use super::gdt::{CODE32, CODE64, DATA, GDT_LIMIT, IDT_LIMIT, boot_tss_segment};
use crate::layout::{
    BOOT_CODE32_SELECTOR, BOOT_CODE64_SELECTOR, BOOT_DATA_SELECTOR, BOOT_STACK, GDT, IDT, PML4,
    PVH_INFO, ZERO_PAGE,
};

/// CR0 protection enable.
pub const CR0_PE: u64 = 1 << 0;
/// CR0 monitor coprocessor (`WAIT` honours `TS`).
pub const CR0_MP: u64 = 1 << 1;
/// CR0 extension type (always 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0 numeric error: x87 errors raise `#MF` rather than the legacy `FERR#` pin.
pub const CR0_NE: u64 = 1 << 5;
/// CR0 paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4 physical address extension (required by long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4 `FXSAVE`/`FXRSTOR` and SSE enabled.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4 unmasked SIMD floating-point exceptions raise `#XM`.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// EFER long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always 1.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

fn set_descriptor_tables(sregs: &mut kvm_sregs) {
    sregs.gdt.base = GDT;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = IDT;
    sregs.idt.limit = IDT_LIMIT;
}

fn set_data_segments(sregs: &mut kvm_sregs) {
    let data = DATA.to_kvm_segment(BOOT_DATA_SELECTOR);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = boot_tss_segment();
}

/// Special registers of the 64-bit Linux entry: long mode with paging on the identity map
/// at [`PML4`], SSE usable, `CS` = 0x10 (64-bit code) and the data segments = 0x18.
pub fn linux64_sregs(sregs: &mut kvm_sregs) {
    set_descriptor_tables(sregs);
    sregs.cs = CODE64.to_kvm_segment(BOOT_CODE64_SELECTOR);
    set_data_segments(sregs);
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = PML4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
}

/// General registers of the 64-bit Linux entry: `RIP` = `entry`, `RSI` = zero page,
/// `RSP` = `RBP` = boot stack.
pub fn linux64_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: ZERO_PAGE,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// Special registers of the PVH entry: 32-bit protected mode, paging off, flat 4 GiB
/// segments (`CS` = 0x08, data = 0x18), `CR4` = 0 and `EFER` = 0 as the PVH ABI specifies.
pub fn pvh_sregs(sregs: &mut kvm_sregs) {
    set_descriptor_tables(sregs);
    sregs.cs = CODE32.to_kvm_segment(BOOT_CODE32_SELECTOR);
    set_data_segments(sregs);
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// General registers of the PVH entry: `EIP` = `entry`, `EBX` = `hvm_start_info`.
pub fn pvh_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rbx: PVH_INFO,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// Real-mode code segment of the x86 reset vector: selector `F000`, base `FFFF_0000`, so the
/// first instruction is fetched at `FFFF_FFF0`, the last 16 bytes below 4 GiB.
const RESET_CS_SELECTOR: u16 = 0xF000;
const RESET_CS_BASE: u64 = 0xFFFF_0000;
/// `IP` at reset.
pub const RESET_IP: u64 = 0xFFF0;
/// `CR0` at reset: caching disabled (CD, NW) and ET set, protection and paging off.
const RESET_CR0: u64 = 0x6000_0010;

fn real_mode_segment(selector: u16, base: u64, type_: u8) -> kvm_bindings::kvm_segment {
    kvm_bindings::kvm_segment {
        base,
        limit: 0xFFFF,
        selector,
        type_,
        present: 1,
        s: 1,
        ..Default::default()
    }
}

/// Special registers of a CPU after RESET, as the SDM's "processor state after reset" table
/// gives them: real mode, `CS` = `F000` with base `FFFF_0000`, data segments at 0, 64 KiB
/// limits, descriptor tables at 0, `CR0` = `6000_0010`, `CR3`/`CR4`/`EFER` = 0. For firmware,
/// which starts from the reset vector.
pub fn reset_sregs(sregs: &mut kvm_sregs) {
    // Type 0xB: code, execute/read, accessed. Type 0x3: data, read/write, accessed.
    sregs.cs = real_mode_segment(RESET_CS_SELECTOR, RESET_CS_BASE, 0xB);
    let data = real_mode_segment(0, 0, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xFFFF;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xFFFF;
    sregs.ldt = kvm_bindings::kvm_segment {
        limit: 0xFFFF,
        type_: 0x2,
        present: 1,
        ..Default::default()
    };
    sregs.tr = kvm_bindings::kvm_segment {
        limit: 0xFFFF,
        type_: 0xB,
        present: 1,
        ..Default::default()
    };
    sregs.cr0 = RESET_CR0;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// General registers after RESET: `IP` = `FFF0`, `FLAGS` = 2, the others 0.
pub fn reset_regs() -> kvm_regs {
    kvm_regs {
        rip: RESET_IP,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// x87/SSE state at boot: the `FNINIT` control word and the default `MXCSR` (all exceptions
/// masked).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37F,
        mxcsr: 0x1F80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux64_is_long_mode_with_paging() {
        let mut sregs = kvm_sregs {
            apic_base: 0xFEE0_0900,
            cr0: 0x6000_0010,
            ..Default::default()
        };

        linux64_sregs(&mut sregs);

        assert_eq!(sregs.cr0, 0x8000_0033);
        assert_eq!(sregs.cr3, 0x9000);
        assert_eq!(sregs.cr4, 0x620);
        assert_eq!(sregs.efer, 0x500);
        assert_eq!((sregs.cs.selector, sregs.cs.l, sregs.cs.db), (0x10, 1, 0));
        for seg in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
            assert_eq!((seg.selector, seg.type_, seg.present), (0x18, 3, 1));
        }
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 31));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (0x520, 7));
        assert_eq!((sregs.tr.type_, sregs.tr.present, sregs.tr.s), (0xB, 1, 0));
        assert_eq!(
            sregs.apic_base, 0xFEE0_0900,
            "fields the protocol leaves alone"
        );
    }

    #[test]
    fn pvh_is_flat_protected_mode_without_paging() {
        let mut sregs = kvm_sregs {
            cr4: CR4_PAE,
            efer: EFER_LME,
            ..Default::default()
        };

        pvh_sregs(&mut sregs);

        assert_eq!(sregs.cr0, CR0_PE | CR0_ET);
        assert_eq!((sregs.cr3, sregs.cr4, sregs.efer), (0, 0, 0));
        assert_eq!(
            (sregs.cs.selector, sregs.cs.db, sregs.cs.l, sregs.cs.type_),
            (0x08, 1, 0, 0xB)
        );
        assert_eq!((sregs.cs.base, sregs.cs.limit), (0, 0xFFFF_FFFF));
        assert_eq!((sregs.ss.selector, sregs.ss.db), (0x18, 1));
    }

    #[test]
    fn entry_registers() {
        let linux = linux64_regs(0x100_0000);
        let pvh = pvh_regs(0x100_1000);

        assert_eq!(
            (linux.rip, linux.rsi, linux.rsp, linux.rbp, linux.rflags),
            (0x100_0000, 0x7000, 0x8FF0, 0x8FF0, 2)
        );
        assert_eq!((pvh.rip, pvh.rbx, pvh.rflags), (0x100_1000, 0x6000, 2));
    }

    #[test]
    fn reset_state_fetches_the_first_instruction_below_4_gib() {
        let mut sregs = kvm_sregs {
            cr0: CR0_PE | CR0_PG,
            efer: EFER_LME | EFER_LMA,
            apic_base: 0xFEE0_0900,
            ..Default::default()
        };

        reset_sregs(&mut sregs);
        let regs = reset_regs();

        assert_eq!(sregs.cs.base + regs.rip, 0xFFFF_FFF0);
        assert_eq!((sregs.cs.selector, sregs.cs.limit), (0xF000, 0xFFFF));
        assert_eq!((sregs.cr0, sregs.cr4, sregs.efer), (0x6000_0010, 0, 0));
        assert_eq!((sregs.ss.base, sregs.ss.selector, sregs.ss.db), (0, 0, 0));
        assert_eq!(regs.rflags, 2);
        assert_eq!(sregs.apic_base, 0xFEE0_0900, "left as KVM has it");
    }

    #[test]
    fn fpu_defaults() {
        let fpu = boot_fpu();

        assert_eq!((fpu.fcw, fpu.mxcsr), (0x37F, 0x1F80));
    }
}
