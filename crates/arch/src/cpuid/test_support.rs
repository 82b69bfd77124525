//! Hand-made `KVM_GET_SUPPORTED_CPUID` outputs, shaped like what KVM reports on an Intel
//! (Ice Lake server class) and an AMD (Zen 3 class) host.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

/// A word with the given bits set.
pub fn bits(list: &[u32]) -> u32 {
    list.iter().fold(0, |acc, b| acc | (1 << b))
}

fn leaf(function: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    let [eax, ebx, ecx, edx] = regs;
    kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

fn subleaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        ..leaf(function, regs)
    }
}

fn vendor(name: &[u8; 12]) -> [u32; 3] {
    let word = |i: usize| u32::from_le_bytes([name[i], name[i + 1], name[i + 2], name[i + 3]]);
    // EBX, EDX, ECX order.
    [word(0), word(4), word(8)]
}

/// Leaf 1 EDX: fpu … sse2, ss, ht.
const LEAF1_EDX: &[u32] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26, 27, 28,
];
/// Leaf 1 ECX: pni pclmulqdq ssse3 fma cx16 pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt aes
/// xsave osxsave avx f16c rdrand (osxsave set to prove it gets cleared).
const LEAF1_ECX: &[u32] = &[
    0, 1, 9, 12, 13, 15, 17, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30,
];

fn xsave_leaves(with_avx512: bool) -> Vec<kvm_cpuid_entry2> {
    // x87, SSE, AVX, [opmask, ZMM_Hi256, Hi16_ZMM], PKRU.
    let xcr0 = if with_avx512 { 0x2E7 } else { 0x207 };
    let mut leaves = vec![
        subleaf(0xD, 0, [xcr0, 0x240, 0xA88, 0]),
        subleaf(0xD, 1, [0xF, 0, 0x1800, 0]),
        subleaf(0xD, 2, [256, 576, 0, 0]),
    ];
    if with_avx512 {
        leaves.push(subleaf(0xD, 5, [64, 1088, 0, 0]));
        leaves.push(subleaf(0xD, 6, [512, 1152, 0, 0]));
        leaves.push(subleaf(0xD, 7, [1024, 1664, 0, 0]));
    }
    leaves.push(subleaf(0xD, 9, [8, 2688, 0, 0]));
    leaves
}

fn kvm_leaves() -> Vec<kvm_cpuid_entry2> {
    let [b, d, c] = vendor(b"KVMKVMKVM\0\0\0");
    vec![
        leaf(0x4000_0000, [0x4000_0001, b, c, d]),
        leaf(0x4000_0001, [0x0100_7AFB, 0, 0, 0]),
    ]
}

/// Intel: leaf 4 caches (L1d, L1i, L2 per core; L3 shared), leaf 0xB subleaf 0 only (as
/// KVM ≥ 6.2 reports), leaf 0x1F with host values, AVX-512, a PMU.
pub fn intel_supported() -> CpuId {
    let [vb, vd, vc] = vendor(b"GenuineIntel");
    let cache = |index: u32, cache_type: u32, level: u32, sharing: u32| {
        let eax = cache_type | (level << 5) | (1 << 8) | (sharing << 14) | (31 << 26);
        subleaf(4, index, [eax, 0x01C0_003F, 0x3F, 0])
    };
    let mut entries = vec![
        leaf(0, [0x1F, vb, vc, vd]),
        leaf(
            1,
            [0x0006_06A6, 0x0001_0800, bits(LEAF1_ECX), bits(LEAF1_EDX)],
        ),
        cache(0, 1, 1, 1),
        cache(1, 2, 1, 1),
        cache(2, 3, 2, 1),
        cache(3, 3, 3, 63),
        subleaf(4, 4, [0, 0, 0, 0]),
        leaf(6, [0x77, 0, 9, 0]),
        subleaf(
            7,
            0,
            [
                1,
                bits(&[0, 3, 5, 7, 8, 9, 10, 16, 17, 18, 19, 20, 23, 24, 28, 30, 31]),
                bits(&[2, 3, 8, 9, 10, 11, 22]),
                bits(&[10, 29]),
            ],
        ),
        subleaf(7, 1, [bits(&[4]), 0, 0, 0]),
        leaf(0xA, [0x0830_0805, 0, 0, 0x0603]),
        subleaf(0xB, 0, [1, 2, 0x100, 0]),
        subleaf(0x1F, 0, [1, 2, 0x100, 0]),
        subleaf(0x1F, 1, [7, 56, 0x201, 0]),
    ];
    entries.extend(xsave_leaves(true));
    entries.extend(kvm_leaves());
    entries.extend([
        leaf(0x8000_0000, [0x8000_0008, 0, 0, 0]),
        leaf(
            0x8000_0001,
            [0, 0, bits(&[0, 5, 8]), bits(&[11, 20, 26, 27, 29])],
        ),
        leaf(0x8000_0008, [0x3027, 0, 0, 0]),
    ]);
    CpuId::from_entries(&entries).unwrap()
}

/// AMD: no leaf 4 or 0x1F; topology in 0x80000008, 0x8000001D and 0x8000001E; PerfMonV2.
pub fn amd_supported() -> CpuId {
    let [vb, vd, vc] = vendor(b"AuthenticAMD");
    let cache = |index: u32, cache_type: u32, level: u32, sharing: u32| {
        let eax = cache_type | (level << 5) | (1 << 8) | (sharing << 14);
        subleaf(0x8000_001D, index, [eax, 0x01C0_003F, 0x3F, 0])
    };
    let mut entries = vec![
        leaf(0, [0x10, vb, vc, vd]),
        leaf(
            1,
            [0x00A0_0F11, 0x0001_0800, bits(LEAF1_ECX), bits(LEAF1_EDX)],
        ),
        leaf(6, [0x4, 0, 0, 0]),
        subleaf(
            7,
            0,
            [0, bits(&[0, 3, 5, 7, 8, 9, 10, 18, 19, 20, 23, 24]), 0, 0],
        ),
        subleaf(0xB, 0, [1, 2, 0x100, 0]),
    ];
    entries.extend(xsave_leaves(false));
    entries.extend(kvm_leaves());
    entries.extend([
        leaf(0x8000_0000, [0x8000_0022, 0, 0, 0]),
        leaf(
            0x8000_0001,
            [
                0,
                0,
                bits(&[0, 1, 5, 6, 7, 8, 22, 23]),
                bits(&[11, 20, 22, 25, 26, 27, 29]),
            ],
        ),
        leaf(0x8000_0008, [0x3030, 0, 0x700F, 0]),
        cache(0, 1, 1, 1),
        cache(1, 2, 1, 1),
        cache(2, 3, 2, 1),
        cache(3, 3, 3, 15),
        subleaf(0x8000_001D, 4, [0, 0, 0, 0]),
        leaf(0x8000_001E, [0x22, 0x0101, 0x0300, 0]),
        leaf(0x8000_0022, [0x7, 0x0000_0106, 0, 0]),
    ]);
    CpuId::from_entries(&entries).unwrap()
}
