//! The guest's serial output protocol.
//!
//! Every scenario reports exactly one line, `TEST <name> PASS[ <details>]` or
//! `TEST <name> FAIL <reason>`. Other lines are informational and never start with `TEST `.
//! The first line after entry is [`STARTED_PVH`] or [`STARTED_LINUX64`]; after the last
//! scenario the guest prints [`DONE`] and powers off, or [`POWEROFF_FAILED`] when it could not.
//! The `crash` scenario prints [`CRASHING`] and no `TEST` line: the VMM stopping the machine is
//! its result. The `counter` scenario prints no `TEST` line either when it runs: it prints
//! [`COUNTER_RUNNING`] and then count lines ([`parse_counter_line`]) until the host stops it.
//! The `pci` scenario lists functions in its details ([`parse_pci_devices`]) and describes each
//! on a `pci: ` line ([`parse_pci_function_line`]).
//! The virtio-blk scenarios' disk contents and lines are in the `blk` part (re-exported
//! here: [`blk_pattern`], [`blk_mixed_checksum`], [`parse_blk_info_details`], ...); the
//! virtio-blk benchmarks' in the `blk_bench` part ([`BlkBenchParams`], [`blk_bench_stamp`],
//! [`parse_blk_bench_details`], ...); the `balloon` scenario's in the `balloon` part
//! ([`BALLOON_WAITING`], [`parse_balloon_inflated_line`], ...).

mod balloon;
mod blk;
mod blk_bench;
mod net;
mod vsock;

pub use balloon::*;
pub use blk::*;
pub use blk_bench::*;
pub use net::*;
pub use vsock::*;

/// First line on the PVH path, printed before anything else (time-to-first-byte marker).
pub const STARTED_PVH: &str = "oxguest: started (pvh)";
/// First line on the Linux 64-bit path.
pub const STARTED_LINUX64: &str = "oxguest: started (linux64)";
/// Printed after the last scenario, right before the ACPI power-off.
pub const DONE: &str = "oxguest: done";
/// Printed when the ACPI power-off did not stop the machine; the guest then halts.
pub const POWEROFF_FAILED: &str = "oxguest: poweroff failed";
/// Printed by the `crash` scenario right before it executes from the MMIO hole.
pub const CRASHING: &str = "oxguest: crashing on purpose";
/// Printed by `serial-echo` when it starts polling COM1: send the line after this one.
pub const SERIAL_ECHO_WAITING: &str = "oxguest: waiting up to 10 s for a line on COM1";

/// Printed by `wait-shutdown` when it starts polling PM1_STS: press the power button after
/// this line (a press since boot counts too).
pub const WAITING_FOR_POWER_BUTTON: &str = "oxguest: waiting for the power button";
/// Details of `TEST wait-shutdown PASS ...` (then the guest powers off at once).
pub const POWER_BUTTON_DETAILS: &str = "power button";

/// Printed by `counter` when its loop starts at CPL3 (after the `touch=` pass, if any). Count
/// lines follow, one every [`COUNTER_LINE_INTERVAL`] increments.
pub const COUNTER_RUNNING: &str = "oxguest: counter running at cpl3";
/// Increments between two count lines (`counter <n>`): every count line holds a multiple of
/// this, and consecutive lines differ by exactly this much.
pub const COUNTER_LINE_INTERVAL: u64 = 1 << 30;
/// Guest-physical address of the count: a little-endian `u64`, incremented at CPL3 (a memory
/// snapshot holds the count at this offset of the RAM at address 0).
pub const COUNTER_ADDR: u64 = 0x2000;
/// Where the `touch=N` region of `counter` starts: the first 2 MiB boundary above the image.
/// `dirty=M` rewrites byte 0 of every 4 KiB page of its first M MiB after every count line.
pub const COUNTER_TOUCH_REGION_ALIGN: u64 = 2 * 1024 * 1024;

/// The `initrd` scenario hashes at most this many leading bytes of the initrd.
pub const INITRD_HASH_LIMIT: usize = 64 * 1024;

/// Scenario names the guest accepts on its command line.
pub const SCENARIOS: &[&str] = &[
    "serial",
    "e820",
    "rtc",
    "smp",
    "poweroff",
    "reset",
    "reset-acpi",
    "reset-triple",
    "crash",
    "initrd",
    "serial-echo",
    "counter",
    "wait-shutdown",
    "pci",
    "virtio-rng",
    "virtio-msix",
    "balloon",
    "console-write",
    "console-echo",
    "net-tx",
    "net-rx",
    "net-echo",
    "net-bench",
    "blk-info",
    "blk-read",
    "blk-snapshot",
    "blk-write",
    "blk-ro",
    "blk-mixed",
    "blk-discard",
    "blk-bench-seq-read",
    "blk-bench-seq-write",
    "blk-bench-rand-read",
    "vsock-echo",
    "vsock-connect",
    "demo",
];

/// Command-line word: PCI configuration space through ports 0xCF8/0xCFC even when ACPI has an
/// MCFG (ECAM). Counts for the first PCI scenario of a boot.
pub const PCI_PORTS_OPTION: &str = "pci-config=ports";
/// Command-line word: the guest places every PCI BAR itself in [`PCI_BAR_WINDOW`], ignoring
/// addresses firmware assigned (without it, only BARs that read 0 or lie above 4 GiB move).
pub const PCI_REASSIGN_OPTION: &str = "pci-bars=reassign";
/// Where the guest places memory BARs nobody assigned (docs/platform.md's 32-bit BAR window).
pub const PCI_BAR_WINDOW: std::ops::Range<u64> = 0xC000_0000..0xE000_0000;
/// Where the guest places I/O BARs nobody assigned.
pub const PCI_IO_WINDOW: std::ops::Range<u64> = 0xC000..0x1_0000;
/// Details of `TEST virtio-rng PASS ...`: two 64-byte requests, both filled, different.
pub const VIRTIO_RNG_DETAILS: &str = "bytes=128 distinct=yes";
/// Prefix of the `pci` scenario's informational lines (summary first, then one per function).
pub const PCI_LINE_PREFIX: &str = "pci: ";

/// Result of one scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
}

/// One `TEST` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestLine<'a> {
    pub name: &'a str,
    pub outcome: Outcome,
    /// Everything after `PASS`/`FAIL` and one space (empty when there is nothing).
    pub details: &'a str,
}

/// Parses one line of guest output; `None` for informational or malformed lines.
pub fn parse_line(line: &str) -> Option<TestLine<'_>> {
    let rest = line.trim_end_matches(['\r', '\n']).strip_prefix("TEST ")?;
    let (name, rest) = rest.split_once(' ')?;
    let (word, details) = rest.split_once(' ').unwrap_or((rest, ""));
    let outcome = match word {
        "PASS" => Outcome::Pass,
        "FAIL" => Outcome::Fail,
        _ => return None,
    };
    Some(TestLine {
        name,
        outcome,
        details,
    })
}

/// All `TEST` lines of an output, in order.
pub fn parse_output(output: &str) -> Vec<TestLine<'_>> {
    output.lines().filter_map(parse_line).collect()
}

/// The first `TEST` line for scenario `name`.
pub fn find<'a>(output: &'a str, name: &str) -> Option<TestLine<'a>> {
    output
        .lines()
        .filter_map(parse_line)
        .find(|line| line.name == name)
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The hash the `initrd` scenario reports for an initrd with these contents: FNV-1a of the
/// first [`INITRD_HASH_LIMIT`] bytes.
pub fn initrd_fnv1a(initrd: &[u8]) -> u64 {
    fnv1a64(&initrd[..initrd.len().min(INITRD_HASH_LIMIT)])
}

/// What a passing `initrd` scenario reports (`addr=0x... size=N fnv1a=0x...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdReport {
    /// Guest-physical address the loader put the initrd at.
    pub addr: u64,
    /// Size in bytes, as the boot protocol states it.
    pub size: u64,
    /// [`initrd_fnv1a`] of the bytes the guest read.
    pub fnv1a: u64,
}

/// Parses the details of `TEST initrd PASS ...`; `None` when a field is missing or malformed.
pub fn parse_initrd_details(details: &str) -> Option<InitrdReport> {
    let mut fields = details.split(' ');
    let addr = fields.next()?.strip_prefix("addr=0x")?;
    let size = fields.next()?.strip_prefix("size=")?;
    let fnv1a = fields.next()?.strip_prefix("fnv1a=0x")?;
    if fields.next().is_some() {
        return None;
    }
    Some(InitrdReport {
        addr: u64::from_str_radix(addr, 16).ok()?,
        size: size.parse().ok()?,
        fnv1a: u64::from_str_radix(fnv1a, 16).ok()?,
    })
}

/// The count of a `counter <n>` line (decimal); `None` for any other line.
pub fn parse_counter_line(line: &str) -> Option<u64> {
    let digits = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix("counter ")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The MiB of an `oxguest: touched <N> MiB` line (`counter` with `touch=N`); `None` otherwise.
pub fn parse_touched_line(line: &str) -> Option<u64> {
    let mib = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix("oxguest: touched ")?
        .strip_suffix(" MiB")?;
    if mib.is_empty() || !mib.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    mib.parse().ok()
}

/// Every count of an output's `counter` lines, in order.
pub fn counter_values(output: &str) -> Vec<u64> {
    output.lines().filter_map(parse_counter_line).collect()
}

/// One PCI function as the `pci` scenario lists it (`bb:dd.f vvvv:dddd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub vendor_id: u16,
    pub device_id: u16,
}

/// `bb:dd.f` (hex) into bus, device, function.
fn parse_bdf(text: &str) -> Option<(u8, u8, u8)> {
    let (bus, rest) = text.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |t: &str, digits: usize| {
        if t.len() == digits && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            u8::from_str_radix(t, 16).ok()
        } else {
            None
        }
    };
    let (bus, device, function) = (hex(bus, 2)?, hex(device, 2)?, hex(function, 1)?);
    (device < 32 && function < 8).then_some((bus, device, function))
}

/// Exactly four hex digits.
fn parse_id(text: &str) -> Option<u16> {
    if text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        u16::from_str_radix(text, 16).ok()
    } else {
        None
    }
}

/// `bb:dd.f` and `vvvv:dddd`.
fn parse_function(bdf: &str, ids: &str) -> Option<PciFunction> {
    let (bus, device, function) = parse_bdf(bdf)?;
    let (vendor, dev) = ids.split_once(':')?;
    Some(PciFunction {
        bus,
        device,
        function,
        vendor_id: parse_id(vendor)?,
        device_id: parse_id(dev)?,
    })
}

/// Parses the details of `TEST pci PASS devices=...`; `None` when malformed.
pub fn parse_pci_devices(details: &str) -> Option<Vec<PciFunction>> {
    let list = details.strip_prefix("devices=")?;
    list.split(',')
        .map(|entry| {
            let (bdf, ids) = entry.split_once(' ')?;
            parse_function(bdf, ids)
        })
        .collect()
}

/// What kind of BAR a `barN=` field of a `pci: ` line describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciBarKind {
    Io,
    Mem32,
    Mem64,
}

/// One `barN=<kind>[-pf]:0x<base>+0x<size>[:placed]` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBar {
    pub index: u8,
    pub kind: PciBarKind,
    pub prefetchable: bool,
    pub base: u64,
    pub size: u64,
    /// The guest chose the address (the BAR read 0, lay above 4 GiB, or [`PCI_REASSIGN_OPTION`]).
    pub placed: bool,
}

/// A per-function line of the `pci` scenario:
/// `pci: bb:dd.f vvvv:dddd class=ccsspp rev=rr hdr=h[ bus=n][ barN=...][ caps=..,..]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunctionLine {
    pub function: PciFunction,
    /// Class code, subclass and programming interface (`0x00ff00` for virtio-rng).
    pub class: u32,
    pub bars: Vec<PciBar>,
    /// Capability IDs in list order.
    pub caps: Vec<u8>,
}

fn parse_hex_u64(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// `N=<kind>[-pf]:0x<base>+0x<size>[:placed]` (after `bar`).
fn parse_bar(field: &str) -> Option<PciBar> {
    let (index, value) = field.split_once('=')?;
    let mut parts = value.split(':');
    let (kind, prefetchable) = match parts.next()? {
        "io" => (PciBarKind::Io, false),
        "mem32" => (PciBarKind::Mem32, false),
        "mem32-pf" => (PciBarKind::Mem32, true),
        "mem64" => (PciBarKind::Mem64, false),
        "mem64-pf" => (PciBarKind::Mem64, true),
        _ => return None,
    };
    let (base, size) = parts.next()?.split_once('+')?;
    let placed = match parts.next() {
        None => false,
        Some("placed") => true,
        Some(_) => return None,
    };
    let index: u8 = index.parse().ok()?;
    if index >= 6 || parts.next().is_some() {
        return None;
    }
    Some(PciBar {
        index,
        kind,
        prefetchable,
        base: parse_hex_u64(base)?,
        size: parse_hex_u64(size)?,
        placed,
    })
}

/// Parses one per-function line of the `pci` scenario; `None` for any other line (the summary
/// line `pci: config=...` included).
pub fn parse_pci_function_line(line: &str) -> Option<PciFunctionLine> {
    let rest = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix(PCI_LINE_PREFIX)?;
    let mut fields = rest.split(' ');
    let function = parse_function(fields.next()?, fields.next()?)?;
    let mut parsed = PciFunctionLine {
        function,
        class: 0,
        bars: Vec::new(),
        caps: Vec::new(),
    };
    for field in fields {
        if let Some(class) = field.strip_prefix("class=") {
            parsed.class = u32::from_str_radix(class, 16).ok()?;
        } else if let Some(bar) = field.strip_prefix("bar") {
            parsed.bars.push(parse_bar(bar)?);
        } else if let Some(caps) = field.strip_prefix("caps=") {
            parsed.caps = caps
                .split(',')
                .map(|c| u8::from_str_radix(c, 16).ok())
                .collect::<Option<_>>()?;
        }
    }
    Some(parsed)
}

/// Every per-function line of the `pci` scenario in an output, in order.
pub fn pci_function_lines(output: &str) -> Vec<PciFunctionLine> {
    output.lines().filter_map(parse_pci_function_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pass_with_details() {
        let line = parse_line("TEST smp PASS cpus=2/2 apic_ids=0,1\r\n");

        assert_eq!(
            line,
            Some(TestLine {
                name: "smp",
                outcome: Outcome::Pass,
                details: "cpus=2/2 apic_ids=0,1"
            })
        );
    }

    #[test]
    fn parses_pass_without_details() {
        let line = parse_line("TEST poweroff PASS");

        assert_eq!(
            line.map(|l| (l.outcome, l.details)),
            Some((Outcome::Pass, ""))
        );
    }

    #[test]
    fn parses_fail_reason() {
        let line = parse_line("TEST bogus FAIL unknown scenario");

        assert_eq!(
            line.map(|l| (l.name, l.outcome, l.details)),
            Some(("bogus", Outcome::Fail, "unknown scenario"))
        );
    }

    #[test]
    fn ignores_informational_and_malformed_lines() {
        let output = "oxguest: started (pvh)\ne820: 0x0 0x9fc00 1\nTEST x MAYBE\nTEST y\n";

        assert!(parse_output(output).is_empty());
    }

    #[test]
    fn fnv1a64_matches_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn initrd_hash_stops_at_the_limit() {
        let mut initrd = vec![7u8; INITRD_HASH_LIMIT];
        let hash_of_limit = initrd_fnv1a(&initrd);

        initrd.push(1);

        assert_eq!(initrd_fnv1a(&initrd), hash_of_limit);
        assert_ne!(initrd_fnv1a(&initrd[..10]), hash_of_limit);
    }

    #[test]
    fn parses_initrd_details() {
        let report = parse_initrd_details("addr=0xfff6000 size=40000 fnv1a=0x43adb02d0587b032");

        assert_eq!(
            report,
            Some(InitrdReport {
                addr: 0xfff_6000,
                size: 40000,
                fnv1a: 0x43ad_b02d_0587_b032
            })
        );
    }

    #[test]
    fn rejects_malformed_initrd_details() {
        assert!(parse_initrd_details("no initrd").is_none());
        assert!(parse_initrd_details("addr=0x1000 size=12").is_none());
        assert!(parse_initrd_details("addr=0x1000 size=x fnv1a=0x1").is_none());
        assert!(parse_initrd_details("addr=0x1000 size=1 fnv1a=0x1 extra").is_none());
    }

    #[test]
    fn parses_counter_lines() {
        assert_eq!(parse_counter_line("counter 1073741824\n"), Some(1 << 30));
        assert_eq!(parse_counter_line("counter 0"), Some(0));
        assert_eq!(
            parse_counter_line("counter 18446744073709551615\r\n"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn rejects_other_counter_like_lines() {
        assert_eq!(parse_counter_line(COUNTER_RUNNING), None);
        assert_eq!(parse_counter_line("counter "), None);
        assert_eq!(parse_counter_line("counter +5"), None);
        assert_eq!(parse_counter_line("counter 12 13"), None);
        assert_eq!(parse_counter_line("counter 18446744073709551616"), None);
        assert_eq!(
            parse_counter_line("TEST counter FAIL dirty=5 exceeds touch=4"),
            None
        );
        assert_eq!(parse_counter_line(" counter 5"), None);
    }

    #[test]
    fn counter_values_skip_other_lines() {
        let output = "oxguest: touched 4 MiB\noxguest: counter running at cpl3\n\
                      counter 1073741824\ncounter 2147483648\ncount";

        assert_eq!(counter_values(output), vec![1 << 30, 2 << 30]);
    }

    #[test]
    fn parses_touched_lines() {
        assert_eq!(parse_touched_line("oxguest: touched 64 MiB\n"), Some(64));
        assert_eq!(parse_touched_line("oxguest: touched 0 MiB"), Some(0));
        assert_eq!(parse_touched_line("oxguest: touched MiB"), None);
        assert_eq!(parse_touched_line("oxguest: touched -1 MiB"), None);
        assert_eq!(parse_touched_line("oxguest: touched 64 KiB"), None);
    }

    /// The `{"name", run_...` rows of the guest's scenario table, in order.
    fn c_scenario_table(source: &str) -> Vec<&str> {
        let table = source
            .split_once("static const struct scenario scenarios[] = {")
            .and_then(|(_, rest)| rest.split_once("};"))
            .map(|(table, _)| table)
            .expect("scenarios.c has the scenario table");
        table
            .lines()
            .filter_map(|row| row.trim().strip_prefix("{\""))
            .filter_map(|row| row.split_once('"').map(|(name, _)| name))
            .collect()
    }

    /// The value of `#define <name> <value>` in a C header.
    pub(super) fn c_define<'a>(source: &'a str, name: &str) -> Option<&'a str> {
        source.lines().find_map(|line| {
            let rest = line.strip_prefix("#define ")?.strip_prefix(name)?;
            rest.starts_with(' ').then(|| rest.trim())
        })
    }

    /// The integer value (decimal, or hex with `0x`; any `ULL` suffix dropped) of
    /// `#define <name> <value>` in a C header; panics naming the define when it is missing or
    /// not a number.
    pub(super) fn c_define_u64(source: &str, name: &str) -> u64 {
        let value = c_define(source, name).unwrap_or_else(|| panic!("{name} defined"));
        let value = value.trim_end_matches("ULL");
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => value.parse(),
        }
        .unwrap_or_else(|e| panic!("{name} = {value}: {e}"))
    }

    #[test]
    fn scenario_list_matches_the_guest_table() {
        let table = c_scenario_table(include_str!("../oxguest/scenarios.c"));

        assert_eq!(table, SCENARIOS);
    }

    #[test]
    fn counter_constants_match_the_guest() {
        let header = include_str!("../oxguest/counter.h");

        let addr = c_define(header, "COUNTER_ADDR").expect("COUNTER_ADDR defined");
        let shift = c_define(header, "COUNTER_LINE_SHIFT").expect("COUNTER_LINE_SHIFT defined");

        assert_eq!(addr, format!("{COUNTER_ADDR:#x}"));
        assert_eq!(
            Ok(COUNTER_LINE_INTERVAL),
            shift.parse::<u32>().map(|s| 1u64 << s)
        );
    }

    #[test]
    fn parses_pci_device_list() {
        let details = "devices=00:00.0 8086:29c0,00:1f.3 8086:2930,01:00.0 1af4:1044";

        let devices = parse_pci_devices(details);

        assert_eq!(
            devices,
            Some(vec![
                PciFunction {
                    bus: 0,
                    device: 0,
                    function: 0,
                    vendor_id: 0x8086,
                    device_id: 0x29c0
                },
                PciFunction {
                    bus: 0,
                    device: 0x1f,
                    function: 3,
                    vendor_id: 0x8086,
                    device_id: 0x2930
                },
                PciFunction {
                    bus: 1,
                    device: 0,
                    function: 0,
                    vendor_id: 0x1af4,
                    device_id: 0x1044
                },
            ])
        );
    }

    #[test]
    fn rejects_malformed_pci_device_lists() {
        assert!(parse_pci_devices("no PCI functions found").is_none());
        assert!(parse_pci_devices("devices=").is_none());
        assert!(parse_pci_devices("devices=00:00.0 8086:29c0,").is_none());
        assert!(parse_pci_devices("devices=00:20.0 8086:29c0").is_none());
        assert!(parse_pci_devices("devices=00:00.8 8086:29c0").is_none());
        assert!(parse_pci_devices("devices=00:00.0 8086:29c").is_none());
        assert!(parse_pci_devices("devices=00:00.0 +086:29c0").is_none());
    }

    #[test]
    fn parses_pci_function_line_with_bars_and_caps() {
        let line = "pci: 00:03.0 1af4:1044 class=00ff00 rev=01 hdr=0 \
                    bar1=mem32:0xfebd5000+0x1000 bar4=mem64-pf:0xc1068000+0x4000:placed \
                    caps=11,09\n";

        let parsed = parse_pci_function_line(line).expect("a function line");

        assert_eq!(parsed.function.device, 3);
        assert_eq!(parsed.function.device_id, 0x1044);
        assert_eq!(parsed.class, 0x00ff00);
        assert_eq!(parsed.caps, vec![0x11, 0x09]);
        assert_eq!(
            parsed.bars,
            vec![
                PciBar {
                    index: 1,
                    kind: PciBarKind::Mem32,
                    prefetchable: false,
                    base: 0xfebd_5000,
                    size: 0x1000,
                    placed: false
                },
                PciBar {
                    index: 4,
                    kind: PciBarKind::Mem64,
                    prefetchable: true,
                    base: 0xc106_8000,
                    size: 0x4000,
                    placed: true
                },
            ]
        );
    }

    #[test]
    fn pci_function_lines_skip_the_summary_and_bad_bars() {
        let output = "pci: config=ecam base=0xb0000000 buses=0-255 functions=1 placed_bars=0\n\
                      pci: 00:00.0 8086:29c0 class=060000 rev=00 hdr=0\n\
                      pci: 00:01.0 8086:100e class=020000 rev=03 hdr=0 bar1=io:0xc000\n\
                      pci: 00:02.0 8086:100e class=020000 rev=03 hdr=0 bar6=io:0xc000+0x40\n";

        let lines = pci_function_lines(output);

        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].function.vendor_id, 0x8086);
        assert!(lines[0].bars.is_empty() && lines[0].caps.is_empty());
    }

    /// The string literal of `#define <name> "<value>"` in a C source.
    fn c_string_define<'a>(source: &'a str, name: &str) -> Option<&'a str> {
        c_define(source, name)?.strip_prefix('"')?.strip_suffix('"')
    }

    #[test]
    fn pci_options_and_windows_match_the_guest() {
        let scenarios = include_str!("../oxguest/scenarios.c");
        let pci = include_str!("../oxguest/pci.h");
        let number = |name: &str| {
            c_define(pci, name)
                .map(|v| v.trim_end_matches("ULL").trim_end_matches('u'))
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        };

        assert_eq!(
            c_string_define(scenarios, "PCI_PORTS_WORD"),
            Some(PCI_PORTS_OPTION)
        );
        assert_eq!(
            c_string_define(scenarios, "PCI_REASSIGN_WORD"),
            Some(PCI_REASSIGN_OPTION)
        );
        assert_eq!(number("PCI_MEM_WINDOW_START"), Some(PCI_BAR_WINDOW.start));
        assert_eq!(number("PCI_MEM_WINDOW_END"), Some(PCI_BAR_WINDOW.end));
        assert_eq!(number("PCI_IO_WINDOW_START"), Some(PCI_IO_WINDOW.start));
        assert_eq!(number("PCI_IO_WINDOW_END"), Some(PCI_IO_WINDOW.end));
    }

    #[test]
    fn virtio_rng_details_match_the_guest() {
        let header = include_str!("../oxguest/virtio_rng.h");
        let value = |name: &str| c_define(header, name).and_then(|v| v.parse::<u32>().ok());

        let bytes = value("RNG_REQUESTS").zip(value("RNG_REQUEST_BYTES"));

        assert_eq!(
            bytes.map(|(n, size)| format!("bytes={} distinct=yes", n * size)),
            Some(VIRTIO_RNG_DETAILS.to_string())
        );
    }

    #[test]
    fn find_returns_first_line_of_scenario() {
        let output = "TEST rtc FAIL x\nTEST rtc PASS 2024-01-01 00:00:00\nTEST e820 PASS u\n";

        let line = find(output, "rtc");

        assert_eq!(line.map(|l| l.outcome), Some(Outcome::Fail));
        assert!(find(output, "smp").is_none());
    }
}
