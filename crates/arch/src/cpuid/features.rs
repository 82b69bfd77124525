//! Named CPU feature flags, their dependencies, and the user's `+name`/`-name` list.
//!
//! Names are Linux's `/proc/cpuinfo` flag names; QEMU's spellings are accepted too (a `-` or
//! `.` in a name reads as `_`, so `sse4.1`, `sse4-1` and `tsc-deadline` work, and aliases
//! such as `sse3` for `pni` are listed per feature).

use std::fmt;
use std::str::FromStr;

use super::{CpuidError, Register};

/// One CPUID feature bit.
#[derive(Debug, PartialEq, Eq)]
pub struct Feature {
    /// Linux `/proc/cpuinfo` name.
    pub name: &'static str,
    /// Other accepted names (QEMU's), already in `_` form.
    pub aliases: &'static [&'static str],
    /// CPUID leaf (`EAX` input).
    pub leaf: u32,
    /// CPUID subleaf (`ECX` input); 0 for leaves without subleaves.
    pub subleaf: u32,
    /// Output register holding the bit.
    pub register: Register,
    /// Bit number in that register.
    pub bit: u8,
}

const fn feature(
    name: &'static str,
    leaf: u32,
    subleaf: u32,
    register: Register,
    bit: u8,
) -> Feature {
    Feature {
        name,
        aliases: &[],
        leaf,
        subleaf,
        register,
        bit,
    }
}

const fn aliased(
    name: &'static str,
    aliases: &'static [&'static str],
    leaf: u32,
    subleaf: u32,
    register: Register,
    bit: u8,
) -> Feature {
    Feature {
        name,
        aliases,
        leaf,
        subleaf,
        register,
        bit,
    }
}

use Register::{Eax, Ebx, Ecx, Edx};

/// Every feature `--cpu-features` can name.
pub static FEATURES: &[Feature] = &[
    // CPUID.1:EDX
    feature("fpu", 1, 0, Edx, 0),
    feature("vme", 1, 0, Edx, 1),
    feature("de", 1, 0, Edx, 2),
    feature("pse", 1, 0, Edx, 3),
    feature("tsc", 1, 0, Edx, 4),
    feature("msr", 1, 0, Edx, 5),
    feature("pae", 1, 0, Edx, 6),
    feature("mce", 1, 0, Edx, 7),
    feature("cx8", 1, 0, Edx, 8),
    feature("apic", 1, 0, Edx, 9),
    feature("sep", 1, 0, Edx, 11),
    feature("mtrr", 1, 0, Edx, 12),
    feature("pge", 1, 0, Edx, 13),
    feature("mca", 1, 0, Edx, 14),
    feature("cmov", 1, 0, Edx, 15),
    feature("pat", 1, 0, Edx, 16),
    feature("pse36", 1, 0, Edx, 17),
    feature("clflush", 1, 0, Edx, 19),
    feature("mmx", 1, 0, Edx, 23),
    feature("fxsr", 1, 0, Edx, 24),
    feature("sse", 1, 0, Edx, 25),
    feature("sse2", 1, 0, Edx, 26),
    feature("ss", 1, 0, Edx, 27),
    feature("ht", 1, 0, Edx, 28),
    // CPUID.1:ECX
    aliased("pni", &["sse3"], 1, 0, Ecx, 0),
    aliased("pclmulqdq", &["pclmuldq"], 1, 0, Ecx, 1),
    feature("dtes64", 1, 0, Ecx, 2),
    feature("monitor", 1, 0, Ecx, 3),
    feature("ds_cpl", 1, 0, Ecx, 4),
    feature("vmx", 1, 0, Ecx, 5),
    feature("smx", 1, 0, Ecx, 6),
    feature("est", 1, 0, Ecx, 7),
    feature("tm2", 1, 0, Ecx, 8),
    feature("ssse3", 1, 0, Ecx, 9),
    feature("sdbg", 1, 0, Ecx, 11),
    feature("fma", 1, 0, Ecx, 12),
    feature("cx16", 1, 0, Ecx, 13),
    feature("xtpr", 1, 0, Ecx, 14),
    feature("pcid", 1, 0, Ecx, 17),
    feature("dca", 1, 0, Ecx, 18),
    feature("sse4_1", 1, 0, Ecx, 19),
    feature("sse4_2", 1, 0, Ecx, 20),
    feature("x2apic", 1, 0, Ecx, 21),
    feature("movbe", 1, 0, Ecx, 22),
    feature("popcnt", 1, 0, Ecx, 23),
    aliased("tsc_deadline_timer", &["tsc_deadline"], 1, 0, Ecx, 24),
    feature("aes", 1, 0, Ecx, 25),
    feature("xsave", 1, 0, Ecx, 26),
    feature("osxsave", 1, 0, Ecx, 27),
    feature("avx", 1, 0, Ecx, 28),
    feature("f16c", 1, 0, Ecx, 29),
    feature("rdrand", 1, 0, Ecx, 30),
    feature("hypervisor", 1, 0, Ecx, 31),
    // CPUID.(7,0):EBX
    feature("fsgsbase", 7, 0, Ebx, 0),
    feature("tsc_adjust", 7, 0, Ebx, 1),
    feature("sgx", 7, 0, Ebx, 2),
    feature("bmi1", 7, 0, Ebx, 3),
    feature("hle", 7, 0, Ebx, 4),
    feature("avx2", 7, 0, Ebx, 5),
    feature("smep", 7, 0, Ebx, 7),
    feature("bmi2", 7, 0, Ebx, 8),
    feature("erms", 7, 0, Ebx, 9),
    feature("invpcid", 7, 0, Ebx, 10),
    feature("rtm", 7, 0, Ebx, 11),
    feature("mpx", 7, 0, Ebx, 14),
    feature("avx512f", 7, 0, Ebx, 16),
    feature("avx512dq", 7, 0, Ebx, 17),
    feature("rdseed", 7, 0, Ebx, 18),
    feature("adx", 7, 0, Ebx, 19),
    feature("smap", 7, 0, Ebx, 20),
    feature("avx512ifma", 7, 0, Ebx, 21),
    feature("clflushopt", 7, 0, Ebx, 23),
    feature("clwb", 7, 0, Ebx, 24),
    feature("intel_pt", 7, 0, Ebx, 25),
    feature("avx512pf", 7, 0, Ebx, 26),
    feature("avx512er", 7, 0, Ebx, 27),
    feature("avx512cd", 7, 0, Ebx, 28),
    aliased("sha_ni", &["sha"], 7, 0, Ebx, 29),
    feature("avx512bw", 7, 0, Ebx, 30),
    feature("avx512vl", 7, 0, Ebx, 31),
    // CPUID.(7,0):ECX
    feature("avx512vbmi", 7, 0, Ecx, 1),
    feature("umip", 7, 0, Ecx, 2),
    feature("pku", 7, 0, Ecx, 3),
    feature("ospke", 7, 0, Ecx, 4),
    feature("waitpkg", 7, 0, Ecx, 5),
    aliased("avx512_vbmi2", &["avx512vbmi2"], 7, 0, Ecx, 6),
    feature("gfni", 7, 0, Ecx, 8),
    feature("vaes", 7, 0, Ecx, 9),
    feature("vpclmulqdq", 7, 0, Ecx, 10),
    aliased("avx512_vnni", &["avx512vnni"], 7, 0, Ecx, 11),
    aliased("avx512_bitalg", &["avx512bitalg"], 7, 0, Ecx, 12),
    feature("avx512_vpopcntdq", 7, 0, Ecx, 14),
    feature("la57", 7, 0, Ecx, 16),
    feature("rdpid", 7, 0, Ecx, 22),
    feature("cldemote", 7, 0, Ecx, 25),
    feature("movdiri", 7, 0, Ecx, 27),
    feature("movdir64b", 7, 0, Ecx, 28),
    // CPUID.(7,0):EDX
    feature("avx512_4vnniw", 7, 0, Edx, 2),
    feature("avx512_4fmaps", 7, 0, Edx, 3),
    feature("fsrm", 7, 0, Edx, 4),
    feature("avx512_vp2intersect", 7, 0, Edx, 8),
    feature("md_clear", 7, 0, Edx, 10),
    feature("serialize", 7, 0, Edx, 14),
    feature("tsxldtrk", 7, 0, Edx, 16),
    feature("amx_bf16", 7, 0, Edx, 22),
    feature("avx512_fp16", 7, 0, Edx, 23),
    feature("amx_tile", 7, 0, Edx, 24),
    feature("amx_int8", 7, 0, Edx, 25),
    feature("stibp", 7, 0, Edx, 27),
    feature("flush_l1d", 7, 0, Edx, 28),
    feature("arch_capabilities", 7, 0, Edx, 29),
    // CPUID.(7,1):EAX
    feature("avx_vnni", 7, 1, Eax, 4),
    feature("avx512_bf16", 7, 1, Eax, 5),
    // CPUID.(0xD,1):EAX
    feature("xsaveopt", 0xD, 1, Eax, 0),
    feature("xsavec", 0xD, 1, Eax, 1),
    feature("xgetbv1", 0xD, 1, Eax, 2),
    feature("xsaves", 0xD, 1, Eax, 3),
    // CPUID.0x80000001:ECX
    feature("lahf_lm", 0x8000_0001, 0, Ecx, 0),
    feature("svm", 0x8000_0001, 0, Ecx, 2),
    aliased("cr8_legacy", &["cr8legacy"], 0x8000_0001, 0, Ecx, 4),
    aliased("abm", &["lzcnt"], 0x8000_0001, 0, Ecx, 5),
    feature("sse4a", 0x8000_0001, 0, Ecx, 6),
    feature("misalignsse", 0x8000_0001, 0, Ecx, 7),
    aliased("3dnowprefetch", &["prefetchw"], 0x8000_0001, 0, Ecx, 8),
    feature("osvw", 0x8000_0001, 0, Ecx, 9),
    feature("xop", 0x8000_0001, 0, Ecx, 11),
    feature("fma4", 0x8000_0001, 0, Ecx, 16),
    feature("tbm", 0x8000_0001, 0, Ecx, 21),
    feature("topoext", 0x8000_0001, 0, Ecx, 22),
    // CPUID.0x80000001:EDX
    feature("syscall", 0x8000_0001, 0, Edx, 11),
    aliased("nx", &["xd"], 0x8000_0001, 0, Edx, 20),
    feature("mmxext", 0x8000_0001, 0, Edx, 22),
    aliased("fxsr_opt", &["ffxsr"], 0x8000_0001, 0, Edx, 25),
    aliased("pdpe1gb", &["page1gb"], 0x8000_0001, 0, Edx, 26),
    feature("rdtscp", 0x8000_0001, 0, Edx, 27),
    aliased("lm", &["i64"], 0x8000_0001, 0, Edx, 29),
];

/// Features oxvmm sets itself, which `--cpu-features` may not name, with the reason.
const MANAGED: &[(&str, &str)] = &[
    ("hypervisor", "is always set: the guest runs under KVM"),
    ("ht", "follows the vCPU count"),
    (
        "osxsave",
        "mirrors the guest's CR4.OSXSAVE; KVM updates it when the guest sets that bit",
    ),
    (
        "ospke",
        "mirrors the guest's CR4.PKE; KVM updates it when the guest sets that bit",
    ),
];

/// `(dependent, prerequisite)`: removing the prerequisite removes the dependent. Modelled on
/// Linux's `arch/x86/kernel/cpu/cpuid-deps.c`, with the architectural ones it leaves out
/// (the AVX family needs SSE2 state, F16C/FMA are VEX-encoded, SSE4 builds on SSSE3).
const DEPENDENCIES: &[(&str, &str)] = &[
    ("fxsr", "fpu"),
    ("mmx", "fxsr"),
    ("cmov", "fxsr"),
    ("sse", "fxsr"),
    ("sse2", "sse"),
    ("pni", "sse2"),
    ("ssse3", "pni"),
    ("sse4_1", "ssse3"),
    ("sse4_2", "sse4_1"),
    ("sse4a", "sse2"),
    ("misalignsse", "sse"),
    ("pclmulqdq", "sse2"),
    ("aes", "sse2"),
    ("sha_ni", "sse2"),
    ("gfni", "sse2"),
    ("mmxext", "mmx"),
    ("fxsr_opt", "fxsr"),
    ("xsave", "fxsr"),
    ("osxsave", "xsave"),
    ("xsaveopt", "xsave"),
    ("xsavec", "xsave"),
    ("xgetbv1", "xsave"),
    ("xsaves", "xsave"),
    ("avx", "xsave"),
    ("avx", "sse2"),
    ("fma", "avx"),
    ("f16c", "avx"),
    ("fma4", "avx"),
    ("xop", "avx"),
    ("avx2", "avx"),
    ("vaes", "avx"),
    ("vaes", "aes"),
    ("vpclmulqdq", "avx"),
    ("vpclmulqdq", "pclmulqdq"),
    ("avx_vnni", "avx2"),
    ("mpx", "xsave"),
    ("pku", "xsave"),
    ("ospke", "pku"),
    ("amx_tile", "xsave"),
    ("amx_int8", "amx_tile"),
    ("amx_bf16", "amx_tile"),
    ("avx512f", "avx2"),
    ("avx512dq", "avx512f"),
    ("avx512ifma", "avx512f"),
    ("avx512pf", "avx512f"),
    ("avx512er", "avx512f"),
    ("avx512cd", "avx512f"),
    ("avx512bw", "avx512f"),
    ("avx512vl", "avx512f"),
    ("avx512vbmi", "avx512f"),
    ("avx512_4vnniw", "avx512f"),
    ("avx512_4fmaps", "avx512f"),
    ("avx512_vpopcntdq", "avx512f"),
    ("avx512_vbmi2", "avx512vl"),
    ("avx512_vnni", "avx512vl"),
    ("avx512_bitalg", "avx512vl"),
    ("avx512_vp2intersect", "avx512vl"),
    ("avx512_bf16", "avx512vl"),
    ("avx512_fp16", "avx512bw"),
    ("x2apic", "apic"),
    ("tsc_deadline_timer", "apic"),
    ("tsc_deadline_timer", "tsc"),
    ("rdtscp", "tsc"),
    ("clflushopt", "clflush"),
    ("pse36", "pse"),
    ("pdpe1gb", "lm"),
    ("lm", "pae"),
];

/// Looks a feature up by name or alias; `-` and `.` read as `_`, case is ignored.
pub fn find_feature(name: &str) -> Option<&'static Feature> {
    find_index(name).map(|i| &FEATURES[i])
}

fn find_index(name: &str) -> Option<usize> {
    let wanted = normalize(name);
    FEATURES
        .iter()
        .position(|f| f.name == wanted || f.aliases.contains(&wanted.as_str()))
}

/// The names `--cpu-features` accepts (without aliases, nor the features oxvmm manages
/// itself), in table order.
pub fn feature_names() -> impl Iterator<Item = &'static str> {
    FEATURES
        .iter()
        .map(|f| f.name)
        .filter(|name| !MANAGED.iter().any(|(managed, _)| managed == name))
}

fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', '.'], "_")
}

fn index_of(name: &str) -> Option<usize> {
    FEATURES.iter().position(|f| f.name == name)
}

/// Indexes of `root` and every feature that (transitively) depends on it.
fn with_dependents(root: usize) -> Vec<usize> {
    let mut removed = vec![root];
    let mut next = 0;
    while next < removed.len() {
        let prerequisite = FEATURES[removed[next]].name;
        for (dependent, _) in DEPENDENCIES.iter().filter(|(_, p)| *p == prerequisite) {
            if let Some(i) = index_of(dependent).filter(|i| !removed.contains(i)) {
                removed.push(i);
            }
        }
        next += 1;
    }
    removed
}

/// What the user asks of one feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// `+name`: fail unless the vCPU gets it.
    Require,
    /// `-name`: hide it, and everything that depends on it.
    Remove,
}

/// Changes to the CPU features KVM offers, parsed from a comma-separated list such as
/// `-cx16,-xsave,+avx2`.
///
/// - `-name` removes the feature and every feature that depends on it (`-xsave` also removes
///   `avx`, `avx2`, `fma`, all of `avx512*`, `xsaveopt`, …).
/// - `+name` requires it: building the CPUID fails if this host's KVM lacks it.
///
/// In serde (the VM config) it is that same string. The empty string changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// In the user's order, each feature at most once.
    items: Vec<(Change, usize)>,
}

impl CpuFeatures {
    /// True if nothing is required or removed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The features named with `+`.
    pub fn required(&self) -> impl Iterator<Item = &'static Feature> + '_ {
        self.items
            .iter()
            .filter(|(change, _)| *change == Change::Require)
            .map(|&(_, i)| &FEATURES[i])
    }

    /// The features named with `-` and everything that depends on them.
    pub fn removed(&self) -> Vec<&'static Feature> {
        let mut all: Vec<usize> = Vec::new();
        for &(_, root) in self.items.iter().filter(|(c, _)| *c == Change::Remove) {
            for i in with_dependents(root) {
                if !all.contains(&i) {
                    all.push(i);
                }
            }
        }
        all.into_iter().map(|i| &FEATURES[i]).collect()
    }

    /// True if `name` (a canonical name) ends up removed.
    pub fn is_removed(&self, name: &str) -> bool {
        self.removed().iter().any(|f| f.name == name)
    }

    fn add(&mut self, change: Change, index: usize) -> Result<(), CpuidError> {
        match self.items.iter().find(|&&(_, i)| i == index) {
            Some(&(existing, _)) if existing == change => Ok(()),
            Some(_) => Err(CpuidError::ConflictingChanges {
                name: FEATURES[index].name,
            }),
            None => {
                self.items.push((change, index));
                Ok(())
            }
        }
    }

    /// Fails if a `+` feature is also removed through a `-` of something it depends on.
    fn check_required_not_removed(&self) -> Result<(), CpuidError> {
        let indexes_of = |wanted: Change| {
            self.items
                .iter()
                .filter(move |(change, _)| *change == wanted)
                .map(|&(_, i)| i)
        };
        for root in indexes_of(Change::Remove) {
            let removed = with_dependents(root);
            if let Some(required) = indexes_of(Change::Require).find(|i| removed.contains(i)) {
                return Err(CpuidError::RequiredButRemoved {
                    required: FEATURES[required].name,
                    removed: FEATURES[root].name,
                });
            }
        }
        Ok(())
    }
}

fn parse_item(item: &str, position: usize) -> Result<(Change, usize), CpuidError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(CpuidError::EmptyItem { position });
    }
    let (change, name) = if let Some(name) = item.strip_prefix('+') {
        (Change::Require, name)
    } else if let Some(name) = item.strip_prefix('-') {
        (Change::Remove, name)
    } else {
        return Err(CpuidError::MissingSign {
            item: item.to_string(),
        });
    };
    if name.trim().is_empty() {
        return Err(CpuidError::EmptyItem { position });
    }
    let index = find_index(name).ok_or_else(|| CpuidError::UnknownFeature {
        name: name.to_string(),
    })?;
    let canonical = FEATURES[index].name;
    if let Some((_, reason)) = MANAGED.iter().find(|(n, _)| *n == canonical) {
        return Err(CpuidError::ManagedFeature {
            name: canonical,
            reason,
        });
    }
    Ok((change, index))
}

impl FromStr for CpuFeatures {
    type Err = CpuidError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut features = CpuFeatures::default();
        if text.trim().is_empty() {
            return Ok(features);
        }
        for (position, item) in text.split(',').enumerate() {
            let (change, index) = parse_item(item, position + 1)?;
            features.add(change, index)?;
        }
        features.check_required_not_removed()?;
        Ok(features)
    }
}

impl fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, &(change, index)) in self.items.iter().enumerate() {
            let sign = match change {
                Change::Require => '+',
                Change::Remove => '-',
            };
            let separator = if n == 0 { "" } else { "," };
            write!(f, "{separator}{sign}{}", FEATURES[index].name)?;
        }
        Ok(())
    }
}

impl serde::Serialize for CpuFeatures {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CpuFeatures {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(features: &[&'static Feature]) -> Vec<&'static str> {
        let mut names: Vec<_> = features.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn table_names_are_unique_and_normalized() {
        let mut all: Vec<&str> = FEATURES
            .iter()
            .flat_map(|f| std::iter::once(f.name).chain(f.aliases.iter().copied()))
            .collect();
        for name in &all {
            assert_eq!(normalize(name), *name);
        }
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a name or alias appears twice");
    }

    #[test]
    fn table_bits_are_unique() {
        for (i, a) in FEATURES.iter().enumerate() {
            for b in &FEATURES[i + 1..] {
                let same = (a.leaf, a.subleaf, a.register, a.bit)
                    == (b.leaf, b.subleaf, b.register, b.bit);
                assert!(!same, "{} and {} name the same bit", a.name, b.name);
            }
            assert!(a.bit < 32);
        }
    }

    #[test]
    fn dependencies_and_managed_name_known_features() {
        for (dependent, prerequisite) in DEPENDENCIES {
            assert!(index_of(dependent).is_some(), "{dependent}");
            assert!(index_of(prerequisite).is_some(), "{prerequisite}");
        }
        for (name, _) in MANAGED {
            assert!(index_of(name).is_some(), "{name}");
        }
    }

    #[test]
    fn qemu_spellings_are_accepted() {
        for (spelling, canonical) in [
            ("sse4.1", "sse4_1"),
            ("SSE4-2", "sse4_2"),
            ("sse3", "pni"),
            ("tsc-deadline", "tsc_deadline_timer"),
            ("lahf-lm", "lahf_lm"),
            ("prefetchw", "3dnowprefetch"),
            ("lzcnt", "abm"),
            ("sha", "sha_ni"),
            ("avx512-vpopcntdq", "avx512_vpopcntdq"),
        ] {
            assert_eq!(find_feature(spelling).map(|f| f.name), Some(canonical));
        }
    }

    #[test]
    fn parse_and_display_round_trip() {
        let features: CpuFeatures = " -cx16, -XSAVE ,+sse4.1".parse().unwrap();

        assert_eq!(features.to_string(), "-cx16,-xsave,+sse4_1");
        assert_eq!(
            features.to_string().parse::<CpuFeatures>().unwrap(),
            features
        );
        assert_eq!(names(&features.required().collect::<Vec<_>>()), ["sse4_1"]);
    }

    #[test]
    fn empty_string_changes_nothing() {
        let features: CpuFeatures = "".parse().unwrap();

        assert!(features.is_empty());
        assert!(features.removed().is_empty());
    }

    #[test]
    fn removing_xsave_removes_everything_built_on_it() {
        let features: CpuFeatures = "-xsave".parse().unwrap();

        let removed = names(&features.removed());

        for name in [
            "xsave",
            "osxsave",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512_vnni",
            "avx512_fp16",
            "xsaveopt",
            "xsavec",
            "xgetbv1",
            "xsaves",
            "mpx",
            "pku",
            "ospke",
            "amx_tile",
            "amx_int8",
            "vaes",
            "avx_vnni",
        ] {
            assert!(removed.contains(&name), "{name} missing from {removed:?}");
        }
        assert!(!removed.contains(&"sse4_2"));
        assert!(!removed.contains(&"aes"));
    }

    #[test]
    fn removing_sse2_removes_the_later_sse_and_avx() {
        let features: CpuFeatures = "-sse2".parse().unwrap();

        let removed = names(&features.removed());

        for name in [
            "sse2",
            "pni",
            "ssse3",
            "sse4_1",
            "sse4_2",
            "aes",
            "pclmulqdq",
            "avx",
        ] {
            assert!(removed.contains(&name), "{name} missing from {removed:?}");
        }
        assert!(!removed.contains(&"sse"));
        assert!(!removed.contains(&"xsave"));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = |text: &str| text.parse::<CpuFeatures>().unwrap_err().to_string();

        let unknown = err("-cx16,+avx3");
        assert!(
            unknown.contains("unknown cpu feature \"avx3\""),
            "{unknown}"
        );
        assert!(
            unknown.contains(" avx512f "),
            "lists the valid names: {unknown}"
        );
        assert!(!unknown.contains("hypervisor"), "but not the managed ones");
        assert!(err("-cx16,,-avx").contains("item 2 is empty"));
        assert!(err("-cx16,").contains("item 2 is empty"));
        assert!(err("avx2").contains("\"avx2\" must start with '+'"));
        assert!(err("éavx").contains("\"éavx\" must start with '+'"));
        assert!(err("-cx16,+").contains("item 2 is empty"));
        assert!(err("+avx,-avx").contains("both required and removed"));
        assert!(err("-hypervisor").contains("hypervisor cannot be changed: it is always set"));
        assert!(err("+ht").contains("follows the vCPU count"));
        let conflict = err("+avx2,-xsave");
        assert!(
            conflict.contains("avx2 is required (+avx2) but -xsave removes it"),
            "{conflict}"
        );
    }

    #[test]
    fn duplicates_with_the_same_sign_are_harmless() {
        let features: CpuFeatures = "-cx16,-cx16".parse().unwrap();

        assert_eq!(features.to_string(), "-cx16");
    }
}
