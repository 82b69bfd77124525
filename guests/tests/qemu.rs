//! Boots the guest under QEMU's software emulation (a PC like oxvmm's) and checks its scenario
//! results. This keeps the guest testable without oxvmm. QEMU is required: the tests fail, not
//! skip, when `qemu-system-x86_64` is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use guests::OXGUEST_PATH;
use guests::protocol::{self, Outcome};

const QEMU: &str = "qemu-system-x86_64";
const TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    success: bool,
    /// The test stopped QEMU itself (after [`Inputs::stop_after_counts`] count lines).
    stopped: bool,
    output: String,
}

/// What a boot hands the guest besides its command line.
#[derive(Clone, Copy, Default)]
struct Inputs<'a> {
    /// Passed as `-initrd`.
    initrd: Option<&'a Path>,
    /// Sent on COM1 once the guest prints [`protocol::SERIAL_ECHO_WAITING`].
    serial_line: Option<&'a [u8]>,
    /// Press the ACPI power button (monitor `system_powerdown`) once the guest prints
    /// [`protocol::WAITING_FOR_POWER_BUTTON`].
    power_button: bool,
    /// Stop QEMU after this many `counter` lines (the counter scenario never ends by itself).
    stop_after_counts: Option<usize>,
    /// QEMU machine type (`-M`); q35 when `None`.
    machine: Option<&'a str>,
    /// `-device` arguments.
    devices: &'a [&'a str],
    /// `-drive` arguments.
    drives: &'a [&'a str],
}

/// What the output reader does when the guest prints certain lines.
struct Reactions {
    serial_line: Option<Vec<u8>>,
    /// QEMU's human monitor socket, for the power button.
    monitor: Option<PathBuf>,
    stop_after_counts: Option<usize>,
    /// Set when enough count lines arrived.
    stop: Arc<AtomicBool>,
}

/// A path in the temporary directory, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> Self {
        let name = format!("oxguest-qemu-{tag}-{}", std::process::id());
        TempPath(std::env::temp_dir().join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads the monitor until its `(qemu) ` prompt has appeared `prompts` times.
fn await_prompts(socket: &mut UnixStream, prompts: usize) -> std::io::Result<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while seen.windows(7).filter(|w| *w == b"(qemu) ").count() < prompts {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// `system_powerdown` on QEMU's human monitor. The connection stays open until QEMU has
/// answered: QEMU drops a command whose connection closes before it read it.
fn press_power_button(monitor: &Path) {
    let pressed = UnixStream::connect(monitor).and_then(|mut socket| {
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        await_prompts(&mut socket, 1)?;
        socket.write_all(b"system_powerdown\n")?;
        await_prompts(&mut socket, 1)
    });
    if let Err(e) = pressed {
        eprintln!(
            "cannot press the power button through {}: {e}",
            monitor.display()
        );
    }
}

/// Runs QEMU q35 (TCG) with the guest and the given command line; fails the test on timeout.
fn boot(smp: u32, cmdline: &str, reboot: bool) -> Run {
    boot_with(smp, cmdline, reboot, Inputs::default())
}

/// Collects the guest's output and acts on the lines named in `reactions`.
fn read_output(stdout: ChildStdout, mut stdin: ChildStdin, mut reactions: Reactions) -> String {
    let mut reader = BufReader::new(stdout);
    let mut bytes = Vec::new();
    let mut counts = 0;
    loop {
        let start = bytes.len();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes[start..]);
        let line = line.trim_end();
        if line == protocol::SERIAL_ECHO_WAITING
            && let Some(input) = reactions.serial_line.take()
        {
            let _ = stdin.write_all(&input).and_then(|()| stdin.flush());
        }
        if line == protocol::WAITING_FOR_POWER_BUTTON
            && let Some(monitor) = reactions.monitor.take()
        {
            press_power_button(&monitor);
        }
        if protocol::parse_counter_line(line).is_some() {
            counts += 1;
            if reactions
                .stop_after_counts
                .is_some_and(|limit| counts >= limit)
            {
                reactions.stop.store(true, Ordering::Release);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn boot_with(smp: u32, cmdline: &str, reboot: bool, inputs: Inputs<'_>) -> Run {
    let monitor = inputs.power_button.then(|| TempPath::new("monitor"));
    let mut command = Command::new(QEMU);
    command
        .args(["-M", inputs.machine.unwrap_or("q35")])
        .args(["-accel", "tcg", "-m", "256", "-nodefaults"])
        .args([
            "-smp",
            &smp.to_string(),
            "-kernel",
            OXGUEST_PATH,
            "-append",
            cmdline,
        ])
        .args(["-serial", "stdio", "-display", "none", "-monitor"])
        .arg(match &monitor {
            Some(path) => format!("unix:{},server=on,wait=off", path.0.display()),
            None => "none".to_string(),
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !reboot {
        command.arg("-no-reboot");
    }
    if let Some(initrd) = inputs.initrd {
        command.arg("-initrd").arg(initrd);
    }
    for device in inputs.devices {
        command.args(["-device", device]);
    }
    for drive in inputs.drives {
        command.args(["-drive", drive]);
    }
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {QEMU} ({e}): these tests need QEMU; install it \
             (Debian/Ubuntu: apt-get install qemu-system-x86)"
        )
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    let stop = Arc::new(AtomicBool::new(false));
    let reactions = Reactions {
        serial_line: inputs.serial_line.map(<[u8]>::to_vec),
        monitor: monitor.as_ref().map(|m| m.0.clone()),
        stop_after_counts: inputs.stop_after_counts,
        stop: Arc::clone(&stop),
    };
    let reader = thread::spawn(move || read_output(stdout, stdin, reactions));
    let started = Instant::now();
    let mut stopped = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if !stopped && stop.load(Ordering::Acquire) {
            stopped = true;
            let _ = child.kill();
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
        stopped,
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
    random_bytes(40_000)
}

/// `len` varied bytes, different on every run.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
        | 1;
    (0..len)
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
        ..Inputs::default()
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

#[test]
fn qemu_counter_counts_at_cpl3_and_touches_memory() {
    let inputs = Inputs {
        stop_after_counts: Some(2),
        ..Inputs::default()
    };

    let run = boot_with(1, "touch=4 dirty=1 counter", false, inputs);

    assert!(
        run.stopped,
        "the counter stopped by itself; output:\n{}",
        run.output
    );
    let lines: Vec<&str> = run.output.lines().collect();
    let running = lines
        .iter()
        .position(|l| *l == protocol::COUNTER_RUNNING)
        .unwrap_or_else(|| panic!("no running line; output:\n{}", run.output));
    assert_eq!(
        lines
            .get(running.wrapping_sub(1))
            .and_then(|l| protocol::parse_touched_line(l)),
        Some(4),
        "the touched line comes right before the running line; output:\n{}",
        run.output
    );
    let counts = protocol::counter_values(&run.output);
    assert_eq!(
        counts[..2],
        [
            protocol::COUNTER_LINE_INTERVAL,
            2 * protocol::COUNTER_LINE_INTERVAL
        ],
        "output:\n{}",
        run.output
    );
    assert!(
        protocol::parse_output(&run.output).is_empty(),
        "no TEST line expected"
    );
}

#[test]
fn qemu_counter_rejects_dirty_beyond_touch() {
    let run = boot(1, "counter touch=2 dirty=3", false);

    assert_clean_finish(&run);
    let line = protocol::find(&run.output, "counter").expect("counter reported");
    assert_eq!(
        (line.outcome, line.details),
        (Outcome::Fail, "dirty=3 exceeds touch=2")
    );
}

#[test]
fn qemu_wait_shutdown_sees_the_power_button() {
    let inputs = Inputs {
        power_button: true,
        ..Inputs::default()
    };

    let run = boot_with(1, "wait-shutdown serial", false, inputs);

    assert!(
        run.success,
        "QEMU exited with failure; output:\n{}",
        run.output
    );
    assert_eq!(
        assert_pass(&run, "wait-shutdown"),
        protocol::POWER_BUTTON_DETAILS
    );
    assert!(
        protocol::find(&run.output, "serial").is_none(),
        "the guest powers off right after the power button; output:\n{}",
        run.output
    );
}

/// A modern-only virtio-rng (PCI ID 1af4:1044), as oxvmm offers it.
const VIRTIO_RNG: &str = "virtio-rng-pci,disable-legacy=on";

fn pci_devices(run: &Run) -> Vec<protocol::PciFunction> {
    protocol::parse_pci_devices(&assert_pass(run, "pci"))
        .unwrap_or_else(|| panic!("malformed pci details; output:\n{}", run.output))
}

fn has_function(devices: &[protocol::PciFunction], vendor_id: u16, device_id: u16) -> bool {
    devices
        .iter()
        .any(|d| d.vendor_id == vendor_id && d.device_id == device_id)
}

/// The `pci: config=...` summary line.
fn pci_summary(run: &Run) -> &str {
    run.output
        .lines()
        .find(|l| l.starts_with("pci: config="))
        .unwrap_or_else(|| panic!("no pci summary line; output:\n{}", run.output))
}

#[test]
fn qemu_pci_on_q35_uses_ecam() {
    let inputs = Inputs {
        devices: &[VIRTIO_RNG],
        ..Inputs::default()
    };

    let run = boot_with(1, "pci", false, inputs);

    assert_clean_finish(&run);
    let devices = pci_devices(&run);
    assert_eq!(
        (
            devices[0].bus,
            devices[0].device,
            devices[0].vendor_id,
            devices[0].device_id
        ),
        (0, 0, 0x8086, 0x29c0),
        "Q35 host bridge first; output:\n{}",
        run.output
    );
    assert!(
        has_function(&devices, 0x1af4, 0x1044),
        "output:\n{}",
        run.output
    );
    assert!(pci_summary(&run).starts_with("pci: config=ecam "));
    let lines = protocol::pci_function_lines(&run.output);
    assert_eq!(lines.len(), devices.len(), "one line per function");
    let rng = lines
        .iter()
        .find(|l| l.function.device_id == 0x1044)
        .expect("virtio-rng line");
    assert_eq!(rng.class, 0x00ff00);
    assert!(rng.caps.contains(&0x09), "virtio vendor capabilities");
    assert!(
        rng.bars
            .iter()
            .any(|b| b.kind == protocol::PciBarKind::Mem64 && b.size == 0x4000),
        "the modern virtio BAR; output:\n{}",
        run.output
    );
}

#[test]
fn qemu_pci_on_i440fx_uses_ports() {
    let inputs = Inputs {
        machine: Some("pc"),
        devices: &[VIRTIO_RNG],
        ..Inputs::default()
    };

    let run = boot_with(1, "pci", false, inputs);

    assert_clean_finish(&run);
    let devices = pci_devices(&run);
    assert_eq!(
        (devices[0].vendor_id, devices[0].device_id),
        (0x8086, 0x1237),
        "i440FX host bridge first; output:\n{}",
        run.output
    );
    assert!(
        has_function(&devices, 0x8086, 0x7113),
        "PIIX4 ACPI, function 3 of a multi-function device; output:\n{}",
        run.output
    );
    assert!(
        has_function(&devices, 0x1af4, 0x1044),
        "output:\n{}",
        run.output
    );
    assert!(pci_summary(&run).starts_with("pci: config=ports "));
}

#[test]
fn qemu_virtio_rng_delivers_random_bytes() {
    let inputs = Inputs {
        devices: &[VIRTIO_RNG],
        ..Inputs::default()
    };

    let run = boot_with(1, "virtio-rng virtio-rng", false, inputs);

    assert_clean_finish(&run);
    let passes = protocol::parse_output(&run.output)
        .into_iter()
        .filter(|l| l.name == "virtio-rng" && l.outcome == Outcome::Pass)
        .inspect(|l| assert_eq!(l.details, protocol::VIRTIO_RNG_DETAILS))
        .count();
    assert_eq!(
        passes, 2,
        "the device works again after the reset; output:\n{}",
        run.output
    );
}

/// The guest places every BAR itself (what it does on a VMM without firmware) and reaches the
/// device through config ports, then drives virtio from the BARs it placed.
#[test]
fn qemu_pci_places_bars_and_virtio_uses_them() {
    let inputs = Inputs {
        devices: &[VIRTIO_RNG],
        ..Inputs::default()
    };
    let cmdline = format!(
        "{} {} pci virtio-rng",
        protocol::PCI_PORTS_OPTION,
        protocol::PCI_REASSIGN_OPTION
    );

    let run = boot_with(1, &cmdline, false, inputs);

    assert_clean_finish(&run);
    assert!(pci_summary(&run).starts_with("pci: config=ports "));
    let bars: Vec<protocol::PciBar> = protocol::pci_function_lines(&run.output)
        .into_iter()
        .flat_map(|l| l.bars)
        .collect();
    assert!(!bars.is_empty(), "output:\n{}", run.output);
    for bar in &bars {
        let window = if bar.kind == protocol::PciBarKind::Io {
            protocol::PCI_IO_WINDOW
        } else {
            protocol::PCI_BAR_WINDOW
        };
        assert!(
            bar.placed && window.contains(&bar.base) && bar.base % bar.size == 0,
            "{bar:?}; output:\n{}",
            run.output
        );
    }
    assert_eq!(
        assert_pass(&run, "virtio-rng"),
        protocol::VIRTIO_RNG_DETAILS
    );
}

#[test]
fn qemu_virtio_rng_without_the_device_fails_cleanly() {
    let run = boot(1, "virtio-rng", false);

    assert_clean_finish(&run);
    let line = protocol::find(&run.output, "virtio-rng").expect("virtio-rng reported");
    assert_eq!(
        (line.outcome, line.details),
        (Outcome::Fail, "no virtio-rng device")
    );
}

/// A modern-only virtio-blk (PCI ID 1af4:1042) on drive `d0`, as oxvmm offers it.
const VIRTIO_BLK: &str = "virtio-blk-pci,drive=d0,disable-legacy=on,serial=oxdisk0";
const BLK_SERIAL: &str = "oxdisk0";
/// 8 MiB: room for every blk scenario's sectors.
const BLK_IMAGE_SECTORS: u64 = 16 * 1024;

/// A raw disk image in the temporary directory (removed when dropped).
struct DiskImage {
    path: TempPath,
    /// What the image held at boot.
    initial: Vec<u8>,
}

impl DiskImage {
    /// Varied bytes, with [`protocol::blk_pattern`] planted in the sectors `blk-read` checks.
    fn new(tag: &str) -> Self {
        let mut initial = random_bytes(BLK_IMAGE_SECTORS as usize * protocol::BLK_SECTOR_SIZE);
        let planted = protocol::pattern_bytes(protocol::BLK_READ_SECTORS, protocol::blk_pattern);
        protocol::sector_bytes_mut(&mut initial, protocol::BLK_READ_SECTORS)
            .expect("the image holds the read sectors")
            .copy_from_slice(&planted);
        let path = TempPath::new(tag);
        std::fs::write(&path.0, &initial).expect("write the disk image");
        DiskImage { path, initial }
    }

    /// The `-drive` argument for drive `d0` with extra options (`,readonly=on`...).
    fn drive(&self, options: &str) -> String {
        format!(
            "if=none,id=d0,file={},format=raw{options}",
            self.path.0.display()
        )
    }

    /// The image as the guest left it.
    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path.0).expect("read the disk image")
    }
}

fn blk_device_line(run: &Run) -> protocol::BlkDeviceLine {
    run.output
        .lines()
        .find_map(protocol::parse_blk_device_line)
        .unwrap_or_else(|| panic!("no virtio-blk line; output:\n{}", run.output))
}

/// Boots with the disk behind [`VIRTIO_BLK`].
fn boot_with_disk(cmdline: &str, machine: Option<&str>, drive: &str) -> Run {
    let inputs = Inputs {
        machine,
        devices: &[VIRTIO_BLK],
        drives: &[drive],
        ..Inputs::default()
    };
    boot_with(1, cmdline, false, inputs)
}

#[test]
fn qemu_blk_reads_the_planted_pattern_and_writes_its_own() {
    let disk = DiskImage::new("blk-rw");

    let run = boot_with_disk("blk-info blk-read blk-write", None, &disk.drive(""));

    assert_clean_finish(&run);
    let info = protocol::parse_blk_info_details(&assert_pass(&run, "blk-info"))
        .unwrap_or_else(|| panic!("malformed blk-info details; output:\n{}", run.output));
    assert_eq!(
        (info.sectors, info.ro, info.serial.as_str()),
        (BLK_IMAGE_SECTORS, false, BLK_SERIAL)
    );
    let device = blk_device_line(&run);
    assert!(device.flush && !device.ro, "{device:?}");
    assert_eq!(assert_pass(&run, "blk-read"), protocol::BLK_READ_DETAILS);
    assert_eq!(assert_pass(&run, "blk-write"), protocol::BLK_WRITE_DETAILS);
    let mut expected = disk.initial.clone();
    protocol::sector_bytes_mut(&mut expected, protocol::BLK_WRITE_SECTORS)
        .expect("the image holds the write sectors")
        .copy_from_slice(&protocol::pattern_bytes(
            protocol::BLK_WRITE_SECTORS,
            protocol::blk_write_pattern,
        ));
    assert!(
        disk.contents() == expected,
        "the image holds the written pattern and nothing else changed"
    );
}

/// A read-only disk, reached the way a firmware-less VMM's guest does (config ports, BARs
/// the guest placed): the write fails with IOERR and the image stays as it was.
#[test]
fn qemu_blk_read_only_disk_refuses_writes() {
    let disk = DiskImage::new("blk-ro");
    let cmdline = format!(
        "{} {} blk-info blk-ro blk-write",
        protocol::PCI_PORTS_OPTION,
        protocol::PCI_REASSIGN_OPTION
    );

    let run = boot_with_disk(&cmdline, Some("pc"), &disk.drive(",readonly=on"));

    assert_clean_finish(&run);
    let info = protocol::parse_blk_info_details(&assert_pass(&run, "blk-info"))
        .unwrap_or_else(|| panic!("malformed blk-info details; output:\n{}", run.output));
    assert!(info.ro, "output:\n{}", run.output);
    assert_eq!(assert_pass(&run, "blk-ro"), protocol::BLK_RO_DETAILS);
    let write = protocol::find(&run.output, "blk-write").expect("blk-write reported");
    assert_eq!(
        (write.outcome, write.details),
        (Outcome::Fail, "write: status 1 (IOERR)")
    );
    assert!(disk.contents() == disk.initial, "the image changed");
}

#[test]
fn qemu_blk_mixed_requests_match_the_host_model() {
    let disk = DiskImage::new("blk-mixed");

    let run = boot_with_disk("blk-mixed", None, &disk.drive(""));

    assert_clean_finish(&run);
    let report = protocol::parse_blk_mixed_details(&assert_pass(&run, "blk-mixed"))
        .unwrap_or_else(|| panic!("malformed blk-mixed details; output:\n{}", run.output));
    assert_eq!(report.requests, protocol::BLK_MIXED_REQUESTS);
    let contents = disk.contents();
    assert_eq!(
        Some(report.checksum),
        protocol::blk_mixed_checksum(&contents),
        "the guest's checksum is the image's"
    );
    let mut expected = disk.initial.clone();
    assert!(protocol::blk_mixed_apply(&mut expected));
    assert!(
        contents == expected,
        "the image holds exactly the writes of the request sequence"
    );
    let line = run
        .output
        .lines()
        .find_map(protocol::parse_blk_mixed_line)
        .unwrap_or_else(|| panic!("no blk-mixed line; output:\n{}", run.output));
    assert_eq!(line.cpl, 3);
    assert_eq!(line.reads + line.writes, protocol::BLK_MIXED_REQUESTS);
}

#[test]
fn qemu_blk_discard_and_write_zeroes_read_back_zero() {
    let disk = DiskImage::new("blk-discard");

    let run = boot_with_disk("blk-discard", None, &disk.drive(",discard=unmap"));

    assert_clean_finish(&run);
    assert_eq!(
        assert_pass(&run, "blk-discard"),
        protocol::BLK_DISCARD_DETAILS
    );
    let contents = disk.contents();
    for sectors in [protocol::BLK_DISCARD_SECTORS, protocol::BLK_ZEROES_SECTORS] {
        let bytes = protocol::sector_bytes(&contents, sectors.clone()).expect("in the image");
        assert!(
            bytes.iter().all(|&b| b == 0),
            "sectors {sectors:?} are zero"
        );
    }
}

#[test]
fn qemu_blk_without_the_device_fails_cleanly() {
    let run = boot(1, "blk-info blk-mixed", false);

    assert_clean_finish(&run);
    for name in ["blk-info", "blk-mixed"] {
        let line = protocol::find(&run.output, name).expect("reported");
        assert_eq!(
            (line.outcome, line.details),
            (Outcome::Fail, protocol::BLK_NO_DEVICE)
        );
    }
}

/// A disk image stamped as `bench/blk.sh` stamps it (host tag in every 4 KiB block).
fn stamped_image(tag: &str) -> TempPath {
    let mut image = vec![0x5Au8; BLK_IMAGE_SECTORS as usize * protocol::BLK_SECTOR_SIZE];
    protocol::blk_bench_stamp(&mut image, 0, protocol::BLK_BENCH_HOST_TAG);
    let path = TempPath::new(tag);
    std::fs::write(&path.0, &image).expect("write the disk image");
    path
}

fn stamped_drive(path: &TempPath) -> String {
    format!("if=none,id=d0,file={},format=raw", path.0.display())
}

/// Tiny runs of the benchmarks (they are timed by bench/blk.sh on KVM, not here): every
/// request completes, reads find the planted stamps, writes land where they should.
#[test]
fn qemu_blk_bench_scenarios_move_the_bytes_they_report() {
    let image = stamped_image("blk-bench");
    let cmdline =
        "blk-bench-seq-read blk-bench-rand-read blk-bench-seq-write bench-mib=2 bench-qd=3";

    let run = boot_with_disk(cmdline, None, &stamped_drive(&image));

    assert_clean_finish(&run);
    let scenarios = [
        (protocol::BLK_BENCH_SEQ_READ, 16, 131_072),
        (protocol::BLK_BENCH_RAND_READ, 512, 4096),
        (protocol::BLK_BENCH_SEQ_WRITE, 16, 131_072),
    ];
    for (name, requests, req_bytes) in scenarios {
        let report = protocol::parse_blk_bench_details(&assert_pass(&run, name))
            .unwrap_or_else(|| panic!("malformed {name} details; output:\n{}", run.output));
        assert_eq!(
            (report.bytes, report.requests, report.req_bytes, report.qd),
            (2 << 20, requests, req_bytes, 3),
            "{name}"
        );
        assert!(report.ns > 0, "{name} took no time");
        let times = run
            .output
            .lines()
            .find_map(|line| protocol::parse_blk_bench_times_line(line, name));
        assert!(
            times.is_some(),
            "no {name} times line; output:\n{}",
            run.output
        );
    }
    let contents = std::fs::read(&image.0).expect("read the disk image");
    let (written, rest) = contents.split_at(2 << 20);
    assert_eq!(
        protocol::blk_bench_check_stamps(written, 0, Some(protocol::BLK_BENCH_GUEST_TAG)),
        Ok(())
    );
    assert_eq!(
        protocol::blk_bench_check_stamps(rest, 2 << 20, Some(protocol::BLK_BENCH_HOST_TAG)),
        Ok(())
    );
}

#[test]
fn qemu_blk_bench_reads_fail_on_misplaced_data_and_bad_options() {
    let image = stamped_image("blk-bench-bad");
    let mut contents = std::fs::read(&image.0).expect("read the disk image");
    contents[(1 << 20) + 8192..][..8].copy_from_slice(&7u64.to_le_bytes());
    std::fs::write(&image.0, &contents).expect("write the disk image");

    let misplaced = boot_with_disk(
        "blk-bench-seq-read bench-mib=2",
        None,
        &stamped_drive(&image),
    );
    let bad_qd = boot_with_disk(
        "blk-bench-seq-read bench-qd=9",
        None,
        &stamped_drive(&image),
    );
    let too_big = boot_with_disk(
        "blk-bench-seq-write bench-mib=16",
        None,
        &stamped_drive(&image),
    );

    let fail = |run: &Run, name: &str| {
        assert_clean_finish(run);
        let line = protocol::find(&run.output, name).expect("reported");
        assert_eq!(line.outcome, Outcome::Fail, "output:\n{}", run.output);
        line.details.to_string()
    };
    assert_eq!(
        fail(&misplaced, protocol::BLK_BENCH_SEQ_READ),
        "read at offset 1048576: block at offset 1056768 holds stamp 0x7, expected 0x102000"
    );
    assert_eq!(
        fail(&bad_qd, protocol::BLK_BENCH_SEQ_READ),
        "bad bench-qd= value (decimal, 1 to 8)"
    );
    assert_eq!(
        fail(&too_big, protocol::BLK_BENCH_SEQ_WRITE),
        "the disk has 16384 sectors, the scenario needs 32768"
    );
}
