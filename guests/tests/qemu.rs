//! Boots the guest under QEMU's software emulation (a PC like oxvmm's) and checks its scenario
//! results. This keeps the guest testable without oxvmm. QEMU is required: the tests fail, not
//! skip, when `qemu-system-x86_64` is missing.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use guests::OXGUEST_PATH;
use guests::protocol::{self, Outcome};

const QEMU: &str = "qemu-system-x86_64";
const TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    success: bool,
    output: String,
}

/// What a boot hands the guest besides its command line.
#[derive(Clone, Copy, Default)]
struct Inputs<'a> {
    /// Passed as `-initrd`.
    initrd: Option<&'a Path>,
    /// Sent on COM1 once the guest prints [`protocol::SERIAL_ECHO_WAITING`].
    serial_line: Option<&'a [u8]>,
}

/// Runs QEMU q35 (TCG) with the guest and the given command line; fails the test on timeout.
fn boot(smp: u32, cmdline: &str, reboot: bool) -> Run {
    boot_with(smp, cmdline, reboot, Inputs::default())
}

/// Collects the guest's output; sends `serial_line` when the guest asks for a line.
fn read_output(stdout: ChildStdout, mut stdin: ChildStdin, serial_line: Option<Vec<u8>>) -> String {
    let mut pending = serial_line;
    let mut reader = BufReader::new(stdout);
    let mut bytes = Vec::new();
    loop {
        let start = bytes.len();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes[start..]);
        if line.trim_end() == protocol::SERIAL_ECHO_WAITING
            && let Some(input) = pending.take()
        {
            let _ = stdin.write_all(&input).and_then(|()| stdin.flush());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn boot_with(smp: u32, cmdline: &str, reboot: bool, inputs: Inputs<'_>) -> Run {
    let mut command = Command::new(QEMU);
    command
        .args(["-M", "q35", "-accel", "tcg", "-m", "256", "-nodefaults"])
        .args([
            "-smp",
            &smp.to_string(),
            "-kernel",
            OXGUEST_PATH,
            "-append",
            cmdline,
        ])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !reboot {
        command.arg("-no-reboot");
    }
    if let Some(initrd) = inputs.initrd {
        command.arg("-initrd").arg(initrd);
    }
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {QEMU} ({e}): these tests need QEMU; install it \
             (Debian/Ubuntu: apt-get install qemu-system-x86)"
        )
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    let serial_line = inputs.serial_line.map(<[u8]>::to_vec);
    let reader = thread::spawn(move || read_output(stdout, stdin, serial_line));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let output = reader.join().unwrap_or_default();
            panic!("{QEMU} did not finish within {TIMEOUT:?}; guest output:\n{output}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = reader.join().expect("reader thread");
    Run {
        success: status.success(),
        output,
    }
}

fn assert_pass(run: &Run, name: &str) -> String {
    let line = protocol::find(&run.output, name)
        .unwrap_or_else(|| panic!("no TEST line for {name}; output:\n{}", run.output));
    assert_eq!(
        line.outcome,
        Outcome::Pass,
        "{name}: {}; output:\n{}",
        line.details,
        run.output
    );
    line.details.to_string()
}

fn assert_clean_finish(run: &Run) {
    assert_eq!(
        run.output.lines().next(),
        Some(protocol::STARTED_PVH),
        "first line; output:\n{}",
        run.output
    );
    assert!(
        run.output.lines().any(|l| l == protocol::DONE),
        "no done line; output:\n{}",
        run.output
    );
    assert!(
        run.success,
        "QEMU exited with failure (ACPI power-off not taken?); output:\n{}",
        run.output
    );
}

#[test]
fn qemu_runs_scenarios() {
    let run = boot(2, "console=ttyS0 serial e820 rtc smp smp", false);

    assert_clean_finish(&run);
    assert!(assert_pass(&run, "serial").starts_with("lsr=0x"));
    assert!(assert_pass(&run, "e820").starts_with("usable="));
    assert!(run.output.lines().any(|l| l.starts_with("e820: 0x")));
    assert_eq!(assert_pass(&run, "smp"), "cpus=2/2 apic_ids=0,1");
    let rtc = assert_pass(&run, "rtc");
    assert_eq!(
        rtc.len(),
        "YYYY-MM-DD HH:MM:SS".len(),
        "rtc details {rtc:?}"
    );
    let smp_lines = protocol::parse_output(&run.output)
        .into_iter()
        .filter(|l| l.name == "smp" && l.outcome == Outcome::Pass)
        .count();
    assert_eq!(
        smp_lines, 2,
        "smp twice reports twice without restarting APs"
    );
}

#[test]
fn qemu_single_cpu_smp_and_unknown_words() {
    let run = boot(1, "smp bogus", false);

    assert_clean_finish(&run);
    assert_eq!(assert_pass(&run, "smp"), "cpus=1/1 apic_ids=0");
    let bogus = protocol::find(&run.output, "bogus").expect("bogus reported");
    assert_eq!(
        (bogus.outcome, bogus.details),
        (Outcome::Fail, "unknown scenario")
    );
}

#[test]
fn qemu_reboots_in_place_and_continues() {
    let run = boot(2, "reset reset-acpi reset-triple serial", true);

    assert_clean_finish(&run);
    assert_eq!(assert_pass(&run, "reset"), "rebooted via i8042");
    assert_eq!(assert_pass(&run, "reset-acpi"), "rebooted via acpi");
    assert_eq!(
        assert_pass(&run, "reset-triple"),
        "rebooted via triple-fault"
    );
    assert_pass(&run, "serial");
    let starts = run
        .output
        .lines()
        .filter(|l| *l == protocol::STARTED_PVH)
        .count();
    assert_eq!(starts, 4, "one boot plus three resets");
}

#[test]
fn qemu_demo_without_scenario_words() {
    let run = boot(2, "console=ttyS0", false);

    assert_clean_finish(&run);
    assert!(run.output.lines().any(|l| l == "oxvmm demo guest"));
    assert!(
        run.output
            .lines()
            .any(|l| l == "vCPUs online: 2 (APIC IDs 0, 1)"),
        "output:\n{}",
        run.output
    );
    assert!(run.output.lines().any(|l| l.starts_with("memory: ")));
    assert!(
        run.output
            .lines()
            .any(|l| l == "command line: console=ttyS0")
    );
}

/// A ~40 KiB initrd of varied bytes, different on every run.
fn initrd_bytes() -> Vec<u8> {
    let mut state = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
        | 1;
    (0..40_000)
        .map(|_| {
            // xorshift64: enough to make every byte position matter to the hash.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn qemu_initrd_and_serial_input_reach_the_guest() {
    let initrd = initrd_bytes();
    let path = std::env::temp_dir().join(format!("oxguest-qemu-initrd-{}", std::process::id()));
    std::fs::write(&path, &initrd).expect("write the initrd");
    let inputs = Inputs {
        initrd: Some(&path),
        serial_line: Some(b"hello-qemu\n"),
    };

    let run = boot_with(1, "initrd serial-echo", false, inputs);
    let _ = std::fs::remove_file(&path);

    assert_clean_finish(&run);
    let report = protocol::parse_initrd_details(&assert_pass(&run, "initrd"))
        .unwrap_or_else(|| panic!("malformed initrd details; output:\n{}", run.output));
    assert_eq!(report.size, initrd.len() as u64, "output:\n{}", run.output);
    assert_eq!(
        report.fnv1a,
        protocol::initrd_fnv1a(&initrd),
        "output:\n{}",
        run.output
    );
    assert_eq!(assert_pass(&run, "serial-echo"), "got=hello-qemu");
}

#[test]
fn qemu_initrd_scenario_without_an_initrd_fails_cleanly() {
    let run = boot(1, "initrd", false);

    assert_clean_finish(&run);
    let line = protocol::find(&run.output, "initrd").expect("initrd reported");
    assert_eq!((line.outcome, line.details), (Outcome::Fail, "no initrd"));
}
