//! The guest's serial output protocol.
//!
//! Every scenario reports exactly one line, `TEST <name> PASS[ <details>]` or
//! `TEST <name> FAIL <reason>`. Other lines are informational and never start with `TEST `.
//! The first line after entry is [`STARTED_PVH`] or [`STARTED_LINUX64`]; after the last
//! scenario the guest prints [`DONE`] and powers off, or [`POWEROFF_FAILED`] when it could not.
//! The `crash` scenario prints [`CRASHING`] and no `TEST` line: the VMM stopping the machine is
//! its result. The `counter` scenario prints no `TEST` line either when it runs: it prints
//! [`COUNTER_RUNNING`] and then count lines ([`parse_counter_line`]) until the host stops it.

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
    "demo",
];

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
    fn c_define<'a>(source: &'a str, name: &str) -> Option<&'a str> {
        source.lines().find_map(|line| {
            let rest = line.strip_prefix("#define ")?.strip_prefix(name)?;
            rest.starts_with(' ').then(|| rest.trim())
        })
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
    fn find_returns_first_line_of_scenario() {
        let output = "TEST rtc FAIL x\nTEST rtc PASS 2024-01-01 00:00:00\nTEST e820 PASS u\n";

        let line = find(output, "rtc");

        assert_eq!(line.map(|l| l.outcome), Some(Outcome::Fail));
        assert!(find(output, "smp").is_none());
    }
}
