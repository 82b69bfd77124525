//! The guest's serial output protocol.
//!
//! Every scenario reports exactly one line, `TEST <name> PASS[ <details>]` or
//! `TEST <name> FAIL <reason>`. Other lines are informational and never start with `TEST `.
//! The first line after entry is [`STARTED_PVH`] or [`STARTED_LINUX64`]; after the last
//! scenario the guest prints [`DONE`] and powers off, or [`POWEROFF_FAILED`] when it could not.
//! The `crash` scenario prints [`CRASHING`] and no `TEST` line: the VMM stopping the machine is
//! its result.

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
    fn find_returns_first_line_of_scenario() {
        let output = "TEST rtc FAIL x\nTEST rtc PASS 2024-01-01 00:00:00\nTEST e820 PASS u\n";

        let line = find(output, "rtc");

        assert_eq!(line.map(|l| l.outcome), Some(Outcome::Fail));
        assert!(find(output, "smp").is_none());
    }
}
