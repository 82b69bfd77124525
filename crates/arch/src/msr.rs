//! Model-specific registers written to every vCPU before it first runs.

use kvm_bindings::kvm_msr_entry;

/// `IA32_TIME_STAMP_COUNTER`.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_SYSENTER_CS`.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// `IA32_MISC_ENABLE`.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1A0;
/// `IA32_MTRR_DEF_TYPE`.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2FF;
/// `IA32_STAR`: `SYSCALL`/`SYSRET` segments.
pub const MSR_STAR: u32 = 0xC000_0081;
/// `IA32_LSTAR`: 64-bit `SYSCALL` target.
pub const MSR_LSTAR: u32 = 0xC000_0082;
/// `IA32_CSTAR`: compatibility-mode `SYSCALL` target.
pub const MSR_CSTAR: u32 = 0xC000_0083;
/// `IA32_FMASK`: `RFLAGS` mask of `SYSCALL`.
pub const MSR_SYSCALL_MASK: u32 = 0xC000_0084;
/// `IA32_KERNEL_GS_BASE`: the `SWAPGS` shadow.
pub const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// `IA32_MISC_ENABLE` bit 0: fast-string operations (`REP MOVS`/`STOS`) enabled, as
/// firmware leaves it on real hardware.
pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// `IA32_MTRR_DEF_TYPE` bit 11: MTRRs enabled.
pub const MTRR_ENABLE: u64 = 1 << 11;
/// Memory type write-back.
pub const MTRR_MEM_TYPE_WB: u64 = 6;

fn entry(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

/// The MSRs of a vCPU at boot, as Firecracker sets them: the system-call MSRs and the TSC
/// zeroed, fast strings enabled, and MTRRs enabled with write-back as the default type (the
/// guest firmware's job on real hardware; without it a guest that reads MTRRs would treat
/// all RAM as uncached).
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// Keeps the entries whose index KVM lists (`KVM_GET_MSR_INDEX_LIST`), so `KVM_SET_MSRS`
/// does not stop at an MSR this host's KVM does not know.
pub fn filter_supported(
    entries: impl IntoIterator<Item = kvm_msr_entry>,
    supported_indexes: &[u32],
) -> Vec<kvm_msr_entry> {
    entries
        .into_iter()
        .filter(|e| {
            let supported = supported_indexes.contains(&e.index);
            if !supported {
                tracing::debug!(
                    msr = format_args!("{:#x}", e.index),
                    "MSR not listed by KVM, not set"
                );
            }
            supported
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(entries: &[kvm_msr_entry], index: u32) -> Option<u64> {
        entries.iter().find(|e| e.index == index).map(|e| e.data)
    }

    #[test]
    fn boot_msrs_values() {
        let msrs = boot_msrs();

        assert_eq!(msrs.len(), 11);
        assert_eq!(data_of(&msrs, MSR_IA32_MISC_ENABLE), Some(1));
        assert_eq!(data_of(&msrs, MSR_MTRR_DEF_TYPE), Some(0x806));
        for zeroed in [
            MSR_STAR,
            MSR_LSTAR,
            MSR_CSTAR,
            MSR_SYSCALL_MASK,
            MSR_IA32_TSC,
        ] {
            assert_eq!(data_of(&msrs, zeroed), Some(0));
        }
    }

    #[test]
    fn unsupported_msrs_are_dropped_in_order() {
        let supported = [MSR_LSTAR, MSR_IA32_TSC, MSR_IA32_SYSENTER_CS, 0x10A];

        let kept = filter_supported(boot_msrs(), &supported);

        let indexes: Vec<u32> = kept.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![MSR_IA32_SYSENTER_CS, MSR_LSTAR, MSR_IA32_TSC]);
    }
}
