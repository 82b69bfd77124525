//! Keeps leaf 0xD (XSAVE state components) consistent with the features left after masking.
//!
//! KVM lets the guest set exactly the `XCR0` bits that CPUID.(0xD,0) EDX:EAX offers, so a
//! removed AVX must also leave `XCR0` — otherwise a guest could still enable its state.

use kvm_bindings::kvm_cpuid_entry2;

use super::features::CpuFeatures;
use super::{entries_of, entry_mut};

const XSAVE_LEAF: u32 = 0xD;
/// Legacy region (512) plus XSAVE header (64): the size with only x87 and SSE state.
const LEGACY_AREA_SIZE: u32 = 576;

/// User state components (`XCR0` bits) that belong to a feature.
const COMPONENTS: &[(&str, u64)] = &[
    ("avx", 1 << 2),
    ("mpx", (1 << 3) | (1 << 4)),
    ("avx512f", (1 << 5) | (1 << 6) | (1 << 7)),
    ("pku", 1 << 9),
    ("amx_tile", (1 << 17) | (1 << 18)),
];

fn removed_components(features: &CpuFeatures) -> u64 {
    COMPONENTS
        .iter()
        .filter(|(name, _)| features.is_removed(name))
        .fold(0, |mask, (_, bits)| mask | bits)
}

fn zero(entry: &mut kvm_cpuid_entry2) {
    entry.eax = 0;
    entry.ebx = 0;
    entry.ecx = 0;
    entry.edx = 0;
}

/// Largest XSAVE area of the components still offered: `offset + size` of each (subleaf
/// `i` EBX and EAX), and never less than the legacy area.
fn max_area_size(entries: &[kvm_cpuid_entry2], xcr0: u64) -> u32 {
    entries
        .iter()
        .filter(|e| e.function == XSAVE_LEAF && e.index >= 2 && e.index < 64)
        .filter(|e| xcr0 & (1u64 << e.index) != 0)
        .map(|e| e.ebx.saturating_add(e.eax))
        .fold(LEGACY_AREA_SIZE, u32::max)
}

/// Zeroes leaf 0xD if `xsave` is removed; otherwise takes removed features' components out
/// of `XCR0`'s supported mask, zeroes their subleaves, recomputes the maximum area size, and
/// drops the supervisor (`XSS`) components if `xsaves` is removed.
pub(super) fn make_consistent(entries: &mut [kvm_cpuid_entry2], features: &CpuFeatures) {
    if features.is_removed("xsave") {
        entries_of(entries, XSAVE_LEAF).for_each(zero);
        return;
    }
    let removed = removed_components(features);
    if removed != 0 {
        for entry in entries_of(entries, XSAVE_LEAF) {
            if entry.index >= 2 && entry.index < 64 && removed & (1u64 << entry.index) != 0 {
                zero(entry);
            }
        }
        if let Some(leaf) = entry_mut(entries, XSAVE_LEAF, 0) {
            leaf.eax &= !(removed as u32);
            leaf.edx &= !((removed >> 32) as u32);
        }
    }
    let xcr0 = entry_mut(entries, XSAVE_LEAF, 0)
        .map_or(0, |leaf| u64::from(leaf.eax) | (u64::from(leaf.edx) << 32));
    let max_size = max_area_size(entries, xcr0);
    if let Some(leaf) = entry_mut(entries, XSAVE_LEAF, 0) {
        leaf.ecx = max_size;
        leaf.ebx = leaf.ebx.min(max_size);
    }
    let supervisor = entry_mut(entries, XSAVE_LEAF, 1).filter(|_| features.is_removed("xsaves"));
    if let Some(leaf) = supervisor {
        leaf.ebx = 0;
        leaf.ecx = 0;
        leaf.edx = 0;
    }
}
