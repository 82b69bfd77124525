//! The guest's serial output protocol.
//!
//! Every scenario reports exactly one line, `TEST <name> PASS[ <details>]` or
//! `TEST <name> FAIL <reason>`. Other lines are informational and never start with `TEST `.
//! The first line after entry is [`STARTED_PVH`] or [`STARTED_LINUX64`]; after the last
//! scenario the guest prints [`DONE`] and powers off, or [`POWEROFF_FAILED`] when it could not.

/// First line on the PVH path, printed before anything else (time-to-first-byte marker).
pub const STARTED_PVH: &str = "oxguest: started (pvh)";
/// First line on the Linux 64-bit path.
pub const STARTED_LINUX64: &str = "oxguest: started (linux64)";
/// Printed after the last scenario, right before the ACPI power-off.
pub const DONE: &str = "oxguest: done";
/// Printed when the ACPI power-off did not stop the machine; the guest then halts.
pub const POWEROFF_FAILED: &str = "oxguest: poweroff failed";

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
    fn find_returns_first_line_of_scenario() {
        let output = "TEST rtc FAIL x\nTEST rtc PASS 2024-01-01 00:00:00\nTEST e820 PASS u\n";

        let line = find(output, "rtc");

        assert_eq!(line.map(|l| l.outcome), Some(Outcome::Fail));
        assert!(find(output, "smp").is_none());
    }
}
