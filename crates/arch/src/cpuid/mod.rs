//! Per-vCPU CPUID, built from what KVM supports (`KVM_GET_SUPPORTED_CPUID`).
//!
//! [`build_vcpu_cpuid`] starts from KVM's supported set and:
//! - applies the user's [`CpuFeatures`] (removals with their dependents; `+` requirements
//!   are checked last, against the finished CPUID);
//! - keeps leaf 0xD consistent with the XSAVE features left;
//! - leaf 1: sets `hypervisor` and `tsc_deadline_timer` (KVM emulates the TSC-deadline
//!   timer of its in-kernel local APIC but reports it outside the supported set, so it is
//!   set here as Firecracker does, unless removed); clears `osxsave` (KVM recomputes it from
//!   the guest's `CR4` on every change, and `CR4.OSXSAVE` is 0 at boot); clears `pdcm`;
//! - writes the topology (leaves 1, 4, 0xB, 0x1F and AMD's 0x80000008, 0x8000001D,
//!   0x8000001E): APIC ID = vCPU index, one core per vCPU, one thread per core, one package;
//! - hides the PMU, as Firecracker does: leaf 0xA zeroed, `pdcm` and AMD `perfctr_core`
//!   cleared, AMD leaf 0x80000022 zeroed. oxvmm does not virtualize performance counters;
//! - leaf 6 keeps only ARAT (the APIC timer keeps running in deep C-states, true of KVM's
//!   timer); turbo, HWP and energy-bias bits name MSRs the guest does not have;
//! - KVM leaves: the 0x40000000 signature "KVMKVMKVM", and, when the TSC frequency is
//!   known, leaf 0x40000010 (EAX = TSC kHz, EBX = local APIC bus kHz: 1 GHz, KVM's fixed
//!   APIC bus cycle of 1 ns), as Cloud Hypervisor does.

mod features;
mod topology;
mod xsave;

pub use features::{CpuFeatures, FEATURES, Feature, feature_names, find_feature};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2};

use topology::Topology;

/// A CPUID output register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// `EAX`.
    Eax,
    /// `EBX`.
    Ebx,
    /// `ECX`.
    Ecx,
    /// `EDX`.
    Edx,
}

impl Register {
    fn of(self, entry: &kvm_cpuid_entry2) -> u32 {
        match self {
            Register::Eax => entry.eax,
            Register::Ebx => entry.ebx,
            Register::Ecx => entry.ecx,
            Register::Edx => entry.edx,
        }
    }

    fn of_mut(self, entry: &mut kvm_cpuid_entry2) -> &mut u32 {
        match self {
            Register::Eax => &mut entry.eax,
            Register::Ebx => &mut entry.ebx,
            Register::Ecx => &mut entry.ecx,
            Register::Edx => &mut entry.edx,
        }
    }
}

fn valid_names() -> String {
    feature_names().collect::<Vec<_>>().join(" ")
}

/// Why a `--cpu-features` list or a vCPU's CPUID is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuidError {
    /// An empty item between commas.
    #[error("cpu feature list item {position} is empty")]
    EmptyItem {
        /// 1-based position in the list.
        position: usize,
    },
    /// An item without `+` or `-`.
    #[error("cpu feature item \"{item}\" must start with '+' (require) or '-' (remove)")]
    MissingSign {
        /// The item.
        item: String,
    },
    /// A name that is in no table.
    #[error(
        "unknown cpu feature \"{name}\"; use a Linux /proc/cpuinfo flag name (QEMU spellings \
         work too), one of: {}",
        valid_names()
    )]
    UnknownFeature {
        /// The name as given.
        name: String,
    },
    /// A feature oxvmm sets itself.
    #[error("cpu feature {name} cannot be changed: it {reason}")]
    ManagedFeature {
        /// Its name.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// `+name` and `-name` together.
    #[error("cpu feature {name} is both required and removed")]
    ConflictingChanges {
        /// Its name.
        name: &'static str,
    },
    /// `+a` and `-b` where `a` depends on `b`.
    #[error("cpu feature {required} is required (+{required}) but -{removed} removes it")]
    RequiredButRemoved {
        /// The required feature.
        required: &'static str,
        /// The removed feature it depends on.
        removed: &'static str,
    },
    /// A `+name` feature that the finished CPUID lacks.
    #[error("cpu feature {name} is not supported by this host's KVM")]
    NotSupported {
        /// Its name.
        name: &'static str,
    },
    /// vCPU index not below the count (or a count of 0).
    #[error("vCPU index {index} is out of range for {count} vCPUs")]
    BadVcpuIndex {
        /// The index.
        index: u8,
        /// The count.
        count: u8,
    },
    /// KVM's supported CPUID lacks a leaf every x86 CPU has.
    #[error("KVM's supported CPUID has no leaf {leaf:#x}")]
    MissingLeaf {
        /// The leaf.
        leaf: u32,
    },
    /// More entries than `KVM_SET_CPUID2` takes.
    #[error("the CPUID has {count} entries, more than KVM's limit of {max}")]
    TooManyEntries {
        /// Entries built.
        count: usize,
        /// `KVM_MAX_CPUID_ENTRIES`.
        max: usize,
    },
}

/// CPU vendor, from the leaf 0 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    Intel,
    /// AMD and Hygon (same topology leaves).
    Amd,
    Other,
}

impl Vendor {
    fn of(entries: &[kvm_cpuid_entry2]) -> Result<Self, CpuidError> {
        let leaf0 = entry(entries, 0, 0).ok_or(CpuidError::MissingLeaf { leaf: 0 })?;
        let mut name = [0u8; 12];
        name[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
        name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
        name[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
        Ok(match &name {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Other,
        })
    }
}

fn entry(entries: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == leaf && e.index == subleaf)
}

fn entry_mut(
    entries: &mut [kvm_cpuid_entry2],
    leaf: u32,
    subleaf: u32,
) -> Option<&mut kvm_cpuid_entry2> {
    entries
        .iter_mut()
        .find(|e| e.function == leaf && e.index == subleaf)
}

/// Every subleaf of `leaf`.
fn entries_of(
    entries: &mut [kvm_cpuid_entry2],
    leaf: u32,
) -> impl Iterator<Item = &mut kvm_cpuid_entry2> {
    entries.iter_mut().filter(move |e| e.function == leaf)
}

fn max_basic_leaf(entries: &[kvm_cpuid_entry2]) -> u32 {
    entry(entries, 0, 0).map_or(0, |e| e.eax)
}

fn set_flag(entries: &mut [kvm_cpuid_entry2], name: &str, value: bool) {
    let Some(f) = find_feature(name) else {
        return;
    };
    if let Some(e) = entry_mut(entries, f.leaf, f.subleaf) {
        let register = f.register.of_mut(e);
        if value {
            *register |= 1 << f.bit;
        } else {
            *register &= !(1 << f.bit);
        }
    }
}

fn has_feature(entries: &[kvm_cpuid_entry2], f: &Feature) -> bool {
    entry(entries, f.leaf, f.subleaf).is_some_and(|e| f.register.of(e) & (1 << f.bit) != 0)
}

fn remove_features(entries: &mut [kvm_cpuid_entry2], features: &CpuFeatures) {
    for f in features.removed() {
        set_flag(entries, f.name, false);
    }
    if features.is_removed("amx_tile") {
        // Tile information and TMUL leaves describe AMX only.
        for leaf in [0x1D, 0x1E] {
            entries_of(entries, leaf).for_each(|e| (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0));
        }
    }
}

/// CPUID.1:ECX bit 15, Perfmon and Debug Capability (`IA32_PERF_CAPABILITIES`).
const LEAF1_ECX_PDCM: u32 = 1 << 15;
/// CPUID.0x80000001:ECX bit 23, AMD core performance counter extensions.
const AMD_ECX_PERFCTR_CORE: u32 = 1 << 23;
/// CPUID.6:EAX bit 2, Always Running APIC Timer.
const LEAF6_EAX_ARAT: u32 = 1 << 2;

fn feature_flags(
    entries: &mut [kvm_cpuid_entry2],
    features: &CpuFeatures,
) -> Result<(), CpuidError> {
    entry(entries, 1, 0).ok_or(CpuidError::MissingLeaf { leaf: 1 })?;
    set_flag(entries, "hypervisor", true);
    set_flag(entries, "osxsave", false);
    set_flag(entries, "ospke", false);
    if !features.is_removed("tsc_deadline_timer") {
        set_flag(entries, "tsc_deadline_timer", true);
    }
    Ok(())
}

fn hide_pmu(entries: &mut [kvm_cpuid_entry2]) {
    if let Some(leaf1) = entry_mut(entries, 1, 0) {
        leaf1.ecx &= !LEAF1_ECX_PDCM;
    }
    if let Some(ext) = entry_mut(entries, 0x8000_0001, 0) {
        ext.ecx &= !AMD_ECX_PERFCTR_CORE;
    }
    for leaf in [0xA, 0x8000_0022] {
        entries_of(entries, leaf).for_each(|e| (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0));
    }
}

fn power_management(entries: &mut [kvm_cpuid_entry2]) {
    if let Some(leaf6) = entry_mut(entries, 6, 0) {
        leaf6.eax &= LEAF6_EAX_ARAT;
        (leaf6.ebx, leaf6.ecx, leaf6.edx) = (0, 0, 0);
    }
}

/// KVM paravirtual CPUID base and the leaves oxvmm adds.
const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
const KVM_TIMING_LEAF: u32 = 0x4000_0010;
/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4B4D_564B, 0x564B_4D56, 0x0000_004D];
/// Local APIC bus frequency in kHz: KVM's APIC timer counts at 1 GHz.
const LAPIC_BUS_KHZ: u32 = 1_000_000;

fn plain_entry(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

fn kvm_leaves(entries: &mut Vec<kvm_cpuid_entry2>, tsc_khz: Option<u32>) {
    entries.retain(|e| e.function != KVM_TIMING_LEAF);
    let [ebx, ecx, edx] = KVM_SIGNATURE;
    if let Some(khz) = tsc_khz {
        if entry(entries, KVM_SIGNATURE_LEAF, 0).is_none() {
            entries.push(plain_entry(
                KVM_SIGNATURE_LEAF,
                KVM_TIMING_LEAF,
                ebx,
                ecx,
                edx,
            ));
        }
        entries.push(plain_entry(KVM_TIMING_LEAF, khz, LAPIC_BUS_KHZ, 0, 0));
    }
    if let Some(base) = entry_mut(entries, KVM_SIGNATURE_LEAF, 0) {
        (base.ebx, base.ecx, base.edx) = (ebx, ecx, edx);
        if tsc_khz.is_some() {
            base.eax = base.eax.max(KVM_TIMING_LEAF);
        }
    }
}

fn check_required(entries: &[kvm_cpuid_entry2], features: &CpuFeatures) -> Result<(), CpuidError> {
    match features.required().find(|f| !has_feature(entries, f)) {
        Some(missing) => Err(CpuidError::NotSupported { name: missing.name }),
        None => Ok(()),
    }
}

/// The CPUID of vCPU `vcpu_index` of `vcpu_count`: KVM's `supported` set with `features`
/// applied and the topology, PMU, power and KVM leaves set as the module documentation says.
/// `tsc_khz` is the vCPU's TSC frequency (`KVM_GET_TSC_KHZ`) if known.
pub fn build_vcpu_cpuid(
    supported: &CpuId,
    features: &CpuFeatures,
    vcpu_index: u8,
    vcpu_count: u8,
    tsc_khz: Option<u32>,
) -> Result<CpuId, CpuidError> {
    let topo = Topology::new(vcpu_index, vcpu_count)?;
    let mut entries = supported.as_slice().to_vec();
    let vendor = Vendor::of(&entries)?;
    remove_features(&mut entries, features);
    xsave::make_consistent(&mut entries, features);
    feature_flags(&mut entries, features)?;
    hide_pmu(&mut entries);
    power_management(&mut entries);
    topology::apply(&mut entries, vendor, &topo);
    kvm_leaves(&mut entries, tsc_khz);
    check_required(&entries, features)?;
    CpuId::from_entries(&entries).map_err(|_| CpuidError::TooManyEntries {
        count: entries.len(),
        max: KVM_MAX_CPUID_ENTRIES,
    })
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
