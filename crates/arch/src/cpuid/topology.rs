//! The vCPU topology in CPUID: one package, one core per vCPU, one thread per core,
//! APIC ID = vCPU index.
//!
//! Leaves written: 1 (initial APIC ID, addressable IDs, HTT), 4 (Intel cache sharing and
//! cores per package), 0xB and 0x1F (x2APIC topology: an SMT level with shift 0 and a core
//! level with shift `ceil(log2(count))`), and on AMD 0x80000008 (`NC`, `ApicIdCoreIdSize`),
//! 0x8000001D (cache sharing) and 0x8000001E (extended APIC ID, core ID).

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

use super::{CpuidError, Vendor, entries_of, entry_mut, max_basic_leaf};

/// Where one vCPU sits in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Topology {
    /// APIC ID (= vCPU index).
    pub apic_id: u32,
    /// Number of vCPUs (= cores in the package).
    pub count: u32,
    /// Bits of the APIC ID that number cores: `ceil(log2(count))`.
    pub core_shift: u32,
}

impl Topology {
    pub fn new(vcpu_index: u8, vcpu_count: u8) -> Result<Self, CpuidError> {
        if vcpu_count == 0 || vcpu_index >= vcpu_count {
            return Err(CpuidError::BadVcpuIndex {
                index: vcpu_index,
                count: vcpu_count,
            });
        }
        let count = u32::from(vcpu_count);
        Ok(Topology {
            apic_id: u32::from(vcpu_index),
            count,
            core_shift: count.next_power_of_two().trailing_zeros(),
        })
    }
}

/// x2APIC topology level types (CPUID.0xB/0x1F ECX[15:8]).
const LEVEL_INVALID: u32 = 0;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

const LEAF1_HTT: u32 = 1 << 28;

/// Replaces `width` bits of `value` at `low` with `field` (saturated to the width).
pub(super) fn set_bits(value: &mut u32, low: u32, width: u32, field: u32) {
    let mask = (1u32 << width) - 1;
    *value = (*value & !(mask << low)) | (field.min(mask) << low);
}

fn get_bits(value: u32, low: u32, width: u32) -> u32 {
    (value >> low) & ((1u32 << width) - 1)
}

/// Leaf 1: EBX[31:24] initial APIC ID, EBX[23:16] addressable logical processor IDs (the
/// count rounded up to a power of two, as Firecracker does; 255 is the most the field
/// holds and also rounds up to 256), EDX.HTT when there is more than one.
fn feature_info(entries: &mut [kvm_cpuid_entry2], topo: &Topology) {
    if let Some(leaf1) = entry_mut(entries, 1, 0) {
        set_bits(&mut leaf1.ebx, 24, 8, topo.apic_id);
        set_bits(&mut leaf1.ebx, 16, 8, topo.count.next_power_of_two());
        if topo.count > 1 {
            leaf1.edx |= LEAF1_HTT;
        } else {
            leaf1.edx &= !LEAF1_HTT;
        }
    }
}

/// Cache-parameter leaves (Intel 4, AMD 0x8000001D): EAX[25:14] = logical processors sharing
/// the cache − 1 (per-core L1/L2: 0; the package-wide L3: count − 1). Intel's leaf 4 also
/// holds EAX[31:26] = cores per package − 1.
fn cache_sharing(entries: &mut [kvm_cpuid_entry2], leaf: u32, topo: &Topology) {
    for entry in entries_of(entries, leaf) {
        let cache_type = get_bits(entry.eax, 0, 5);
        if cache_type == 0 {
            continue;
        }
        let level = get_bits(entry.eax, 5, 3);
        let sharing = if level >= 3 { topo.count - 1 } else { 0 };
        set_bits(&mut entry.eax, 14, 12, sharing);
        if leaf == 4 {
            set_bits(&mut entry.eax, 26, 6, topo.count - 1);
        }
    }
}

fn topology_subleaf(leaf: u32, subleaf: u32, topo: &Topology) -> kvm_cpuid_entry2 {
    let (shift, processors, level_type) = match subleaf {
        0 => (0, 1, LEVEL_SMT),
        1 => (topo.core_shift, topo.count, LEVEL_CORE),
        _ => (0, 0, LEVEL_INVALID),
    };
    kvm_cpuid_entry2 {
        function: leaf,
        index: subleaf,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax: shift,
        ebx: processors,
        ecx: (level_type << 8) | subleaf,
        edx: topo.apic_id,
        padding: [0; 3],
    }
}

/// Leaves 0xB/0x1F: subleaf 0 SMT (1 thread), subleaf 1 core (`count` processors), subleaf 2
/// the terminating invalid level; EDX = x2APIC ID in each. Replaces whatever KVM reported
/// (recent KVMs report subleaf 0 only).
fn extended_topology(entries: &mut Vec<kvm_cpuid_entry2>, leaf: u32, topo: &Topology) {
    entries.retain(|e| e.function != leaf);
    entries.extend((0..=2).map(|subleaf| topology_subleaf(leaf, subleaf, topo)));
}

/// AMD 0x80000008 ECX: NC (bits 7:0) = cores − 1, ApicIdCoreIdSize (bits 15:12).
fn amd_core_count(entries: &mut [kvm_cpuid_entry2], topo: &Topology) {
    if let Some(entry) = entry_mut(entries, 0x8000_0008, 0) {
        set_bits(&mut entry.ecx, 0, 8, topo.count - 1);
        set_bits(&mut entry.ecx, 12, 4, topo.core_shift);
    }
}

/// AMD 0x8000001E: EAX extended APIC ID, EBX core ID with one thread per core, ECX node 0 of
/// one node.
fn amd_extended_apic_id(entries: &mut [kvm_cpuid_entry2], topo: &Topology) {
    if let Some(entry) = entry_mut(entries, 0x8000_001E, 0) {
        entry.eax = topo.apic_id;
        set_bits(&mut entry.ebx, 0, 16, topo.apic_id);
        entry.ecx = 0;
    }
}

/// Writes the topology of `topo` into every topology leaf the CPUID has.
pub(super) fn apply(entries: &mut Vec<kvm_cpuid_entry2>, vendor: Vendor, topo: &Topology) {
    feature_info(entries, topo);
    cache_sharing(entries, 4, topo);
    if max_basic_leaf(entries) >= 0xB {
        extended_topology(entries, 0xB, topo);
    }
    if entries.iter().any(|e| e.function == 0x1F) {
        extended_topology(entries, 0x1F, topo);
    }
    if vendor == Vendor::Amd {
        amd_core_count(entries, topo);
        cache_sharing(entries, 0x8000_001D, topo);
        amd_extended_apic_id(entries, topo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_shift_is_ceil_log2() {
        let shifts: Vec<u32> = [1u8, 2, 3, 4, 5, 8, 9, 255]
            .iter()
            .map(|&n| Topology::new(0, n).unwrap().core_shift)
            .collect();

        assert_eq!(shifts, [0, 1, 2, 2, 3, 3, 4, 8]);
    }

    #[test]
    fn index_must_be_below_count() {
        assert!(Topology::new(0, 0).is_err());
        assert!(Topology::new(2, 2).is_err());
        assert!(Topology::new(1, 2).is_ok());
    }

    #[test]
    fn set_bits_replaces_only_the_field() {
        let mut value = 0xFFFF_FFFF;

        set_bits(&mut value, 16, 8, 0x12);
        assert_eq!(value, 0xFF12_FFFF);
        set_bits(&mut value, 26, 6, 1000);
        assert_eq!(value, 0xFF12_FFFF, "saturates to the field width");
    }
}
