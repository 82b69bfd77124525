//! Tests of [`build_vcpu_cpuid`] on the synthetic KVM outputs of `test_support`.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

use super::test_support::{amd_supported, bits, intel_supported};
use super::*;

fn build(supported: &CpuId, features: &str, index: u8, count: u8) -> CpuId {
    let features: CpuFeatures = features.parse().unwrap();
    build_vcpu_cpuid(supported, &features, index, count, None).unwrap()
}

fn get(cpuid: &CpuId, leaf: u32, subleaf: u32) -> kvm_cpuid_entry2 {
    *entry(cpuid.as_slice(), leaf, subleaf)
        .unwrap_or_else(|| panic!("leaf {leaf:#x}.{subleaf} missing"))
}

fn regs(e: &kvm_cpuid_entry2) -> (u32, u32, u32, u32) {
    (e.eax, e.ebx, e.ecx, e.edx)
}

fn has(cpuid: &CpuId, name: &str) -> bool {
    has_feature(cpuid.as_slice(), find_feature(name).unwrap())
}

#[test]
fn apic_id_is_the_vcpu_index_in_every_leaf() {
    let supported = intel_supported();

    for index in 0..4 {
        let cpuid = build(&supported, "", index, 4);

        let id = u32::from(index);
        assert_eq!(get(&cpuid, 1, 0).ebx >> 24, id);
        for subleaf in 0..=2 {
            assert_eq!(get(&cpuid, 0xB, subleaf).edx, id);
            assert_eq!(get(&cpuid, 0x1F, subleaf).edx, id);
        }
    }
}

#[test]
fn topology_leaves_for_one_to_four_vcpus() {
    let supported = intel_supported();
    // (count, addressable IDs in leaf 1, HTT, core-level shift)
    for (count, addressable, htt, shift) in [(1, 1, 0, 0), (2, 2, 1, 1), (3, 4, 1, 2), (4, 4, 1, 2)]
    {
        let cpuid = build(&supported, "", 0, count);

        let leaf1 = get(&cpuid, 1, 0);
        assert_eq!((leaf1.ebx >> 16) & 0xFF, addressable, "count {count}");
        assert_eq!((leaf1.edx >> 28) & 1, htt, "count {count}");
        assert_eq!(leaf1.ebx & 0xFFFF, 0x0800, "CLFLUSH size kept");
        let n = u32::from(count);
        assert_eq!(regs(&get(&cpuid, 0xB, 0)), (0, 1, 0x100, 0));
        assert_eq!(regs(&get(&cpuid, 0xB, 1)), (shift, n, 0x201, 0));
        assert_eq!(regs(&get(&cpuid, 0xB, 2)), (0, 0, 2, 0));
        assert_eq!(regs(&get(&cpuid, 0x1F, 1)), (shift, n, 0x201, 0));
        assert_eq!(
            cpuid
                .as_slice()
                .iter()
                .filter(|e| e.function == 0xB)
                .count(),
            3
        );
    }
}

#[test]
fn intel_cache_leaf_matches_the_topology() {
    let supported = intel_supported();

    let cpuid = build(&supported, "", 1, 3);

    for subleaf in 0..3 {
        let eax = get(&cpuid, 4, subleaf).eax;
        assert_eq!(eax >> 26, 2, "cores per package - 1");
        assert_eq!((eax >> 14) & 0xFFF, 0, "L1/L2 are per core");
    }
    let l3 = get(&cpuid, 4, 3);
    assert_eq!((l3.eax >> 14) & 0xFFF, 2, "L3 shared by all 3");
    assert_eq!(
        l3.eax & 0x3FFF,
        3 | (3 << 5) | (1 << 8),
        "type and level kept"
    );
    assert_eq!(l3.ebx, 0x01C0_003F, "geometry kept");
    assert_eq!(
        regs(&get(&cpuid, 4, 4)),
        (0, 0, 0, 0),
        "terminator untouched"
    );
}

#[test]
fn amd_topology_leaves() {
    let supported = amd_supported();

    let cpuid = build(&supported, "", 2, 3);

    let sizes = get(&cpuid, 0x8000_0008, 0);
    assert_eq!(sizes.ecx & 0xFF, 2, "NC = cores - 1");
    assert_eq!((sizes.ecx >> 12) & 0xF, 2, "ApicIdCoreIdSize");
    let ext = get(&cpuid, 0x8000_001E, 0);
    assert_eq!(ext.eax, 2);
    assert_eq!(ext.ebx & 0xFFFF, 2, "core 2, one thread per core");
    assert_eq!(ext.ecx, 0);
    assert_eq!((get(&cpuid, 0x8000_001D, 0).eax >> 14) & 0xFFF, 0);
    assert_eq!((get(&cpuid, 0x8000_001D, 3).eax >> 14) & 0xFFF, 2);
    assert_eq!(get(&cpuid, 0xB, 1).ebx, 3);
}

#[test]
fn leaf1_flags_and_hidden_pmu() {
    let cpuid = build(&intel_supported(), "", 0, 1);

    assert!(has(&cpuid, "hypervisor"));
    assert!(has(&cpuid, "tsc_deadline_timer"));
    assert!(has(&cpuid, "x2apic"));
    assert!(!has(&cpuid, "osxsave"));
    assert!(!has(&cpuid, "ht"));
    assert_eq!(get(&cpuid, 1, 0).ecx & (1 << 15), 0, "PDCM cleared");
    assert_eq!(regs(&get(&cpuid, 0xA, 0)), (0, 0, 0, 0));
    assert_eq!(regs(&get(&cpuid, 6, 0)), (0x4, 0, 0, 0), "only ARAT");
}

#[test]
fn amd_pmu_is_hidden_too() {
    let cpuid = build(&amd_supported(), "", 0, 1);

    assert_eq!(get(&cpuid, 0x8000_0001, 0).ecx & (1 << 23), 0);
    assert_eq!(regs(&get(&cpuid, 0x8000_0022, 0)), (0, 0, 0, 0));
    assert!(has(&cpuid, "topoext"));
}

#[test]
fn tsc_deadline_can_be_removed() {
    let cpuid = build(&intel_supported(), "-tsc_deadline_timer", 0, 1);

    assert!(!has(&cpuid, "tsc_deadline_timer"));
}

#[test]
fn removing_xsave_masks_its_family_and_zeroes_leaf_0xd() {
    let cpuid = build(&intel_supported(), "-xsave", 0, 2);

    for gone in [
        "xsave",
        "avx",
        "fma",
        "f16c",
        "avx2",
        "avx512f",
        "avx512vl",
        "avx512_vnni",
        "vaes",
        "vpclmulqdq",
        "avx_vnni",
        "pku",
        "xsaveopt",
        "xsaves",
    ] {
        assert!(!has(&cpuid, gone), "{gone} still set");
    }
    for kept in ["sse4_2", "aes", "pclmulqdq", "bmi2", "gfni", "cx16", "lm"] {
        assert!(has(&cpuid, kept), "{kept} lost");
    }
    for e in cpuid.as_slice().iter().filter(|e| e.function == 0xD) {
        assert_eq!(regs(e), (0, 0, 0, 0), "subleaf {}", e.index);
    }
}

#[test]
fn removing_avx512_takes_its_state_out_of_xcr0() {
    let supported = intel_supported();

    let no_avx512 = build(&supported, "-avx512f", 0, 1);
    let no_avx512_pku = build(&supported, "-avx512f,-pku", 0, 1);

    let leaf = get(&no_avx512, 0xD, 0);
    assert_eq!(leaf.eax, 0x207, "x87, SSE, AVX, PKRU");
    assert_eq!(leaf.ecx, 2688 + 8, "PKRU still ends the area");
    for subleaf in 5..=7 {
        assert_eq!(regs(&get(&no_avx512, 0xD, subleaf)), (0, 0, 0, 0));
    }
    assert!(has(&no_avx512, "avx2"));
    let leaf = get(&no_avx512_pku, 0xD, 0);
    assert_eq!((leaf.eax, leaf.ecx), (0x7, 576 + 256));
    assert!(!has(&no_avx512_pku, "pku"));
}

#[test]
fn removing_xsaves_drops_supervisor_state() {
    let cpuid = build(&intel_supported(), "-xsaves", 0, 1);

    let leaf = get(&cpuid, 0xD, 1);
    assert_eq!(leaf.eax, 0x7, "xsaveopt, xsavec, xgetbv1 kept");
    assert_eq!((leaf.ecx, leaf.edx), (0, 0));
    assert_eq!(get(&cpuid, 0xD, 0).eax, 0x2E7, "user state untouched");
}

#[test]
fn removing_cx16_touches_only_cx16() {
    let supported = intel_supported();

    let plain = build(&supported, "", 0, 1);
    let masked = build(&supported, "-cx16", 0, 1);

    assert_eq!(get(&plain, 1, 0).ecx & !(1 << 13), get(&masked, 1, 0).ecx);
    assert!(!has(&masked, "cx16"));
}

#[test]
fn required_features_must_survive() {
    let supported = intel_supported();
    let features: CpuFeatures = "+avx2,+avx512vbmi".parse().unwrap();

    let err = build_vcpu_cpuid(&supported, &features, 0, 1, None).unwrap_err();

    assert_eq!(err, CpuidError::NotSupported { name: "avx512vbmi" });
    assert_eq!(
        err.to_string(),
        "cpu feature avx512vbmi is not supported by this host's KVM"
    );
    let ok: CpuFeatures = "+avx2,+sse4.2,+tsc-deadline".parse().unwrap();
    assert!(build_vcpu_cpuid(&supported, &ok, 0, 1, None).is_ok());
}

#[test]
fn kvm_timing_leaf_when_the_tsc_frequency_is_known() {
    let supported = intel_supported();
    let none = CpuFeatures::default();

    let with_tsc = build_vcpu_cpuid(&supported, &none, 0, 1, Some(2_100_000)).unwrap();
    let without = build_vcpu_cpuid(&supported, &none, 0, 1, None).unwrap();

    let base = get(&with_tsc, 0x4000_0000, 0);
    assert_eq!(base.eax, 0x4000_0010);
    let mut signature = Vec::new();
    for word in [base.ebx, base.ecx, base.edx] {
        signature.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(&signature, b"KVMKVMKVM\0\0\0");
    assert_eq!(
        regs(&get(&with_tsc, 0x4000_0010, 0)),
        (2_100_000, 1_000_000, 0, 0)
    );
    assert_eq!(get(&without, 0x4000_0000, 0).eax, 0x4000_0001);
    assert!(entry(without.as_slice(), 0x4000_0010, 0).is_none());
    assert_eq!(
        get(&without, 0x4000_0001, 0).eax,
        0x0100_7AFB,
        "KVM features kept"
    );
}

#[test]
fn bad_vcpu_index_and_missing_leaves_are_errors() {
    let none = CpuFeatures::default();
    let empty = CpuId::new(0).unwrap();

    assert_eq!(
        build_vcpu_cpuid(&intel_supported(), &none, 4, 4, None).unwrap_err(),
        CpuidError::BadVcpuIndex { index: 4, count: 4 }
    );
    assert_eq!(
        build_vcpu_cpuid(&empty, &none, 0, 1, None).unwrap_err(),
        CpuidError::MissingLeaf { leaf: 0 }
    );
}

#[test]
fn unrelated_leaves_pass_through() {
    let supported = intel_supported();

    let cpuid = build(&supported, "-avx2", 0, 2);

    assert_eq!(get(&cpuid, 0x8000_0008, 0).eax, 0x3027);
    assert_eq!(get(&cpuid, 0, 0), get(&CpuId::clone(&supported), 0, 0));
    assert_eq!(
        get(&cpuid, 7, 0).ecx,
        bits(&[2, 3, 8, 9, 10, 22]),
        "of leaf 7 ECX only avx512_vnni depends on avx2"
    );
}

#[test]
fn cpu_features_serde_is_a_string() {
    let features: CpuFeatures = "-cx16,+avx2".parse().unwrap();

    let json = serde_json::to_string(&features).unwrap();
    let back: CpuFeatures = serde_json::from_str(&json).unwrap();
    let bad = serde_json::from_str::<CpuFeatures>("\"-nosuch\"").unwrap_err();

    assert_eq!(json, "\"-cx16,+avx2\"");
    assert_eq!(back, features);
    assert!(bad.to_string().contains("unknown cpu feature \"nosuch\""));
}
