//! The `balloon` scenario under QEMU's software emulation with QEMU's virtio-balloon: the host
//! sets targets through QEMU's human monitor (`balloon <MiB>`, the memory the guest keeps) and
//! watches QEMU's resident memory fall when the guest inflates. QEMU is required: the tests
//! fail, not skip, when `qemu-system-x86_64` is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use guests::OXGUEST_PATH;
use guests::protocol::{self, Outcome};

const QEMU: &str = "qemu-system-x86_64";
const TIMEOUT: Duration = Duration::from_secs(120);
const RAM_MIB: u64 = 256;
const BALLOON_DEVICE: &str = "virtio-balloon-pci,disable-legacy=on";

/// A path in the temporary directory, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    /// A fresh name for each call (tests run in parallel threads of one process).
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("oxguest-balloon-{tag}-{}-{n}", std::process::id());
        TempPath(std::env::temp_dir().join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends one command to QEMU's human monitor and returns what it printed up to the next
/// prompt. The connection stays open until QEMU answered (it drops a command otherwise).
fn monitor(socket_path: &Path, command: &str) -> String {
    let talk = || -> std::io::Result<String> {
        let mut socket = UnixStream::connect(socket_path)?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        read_to_prompt(&mut socket)?;
        socket.write_all(format!("{command}\n").as_bytes())?;
        read_to_prompt(&mut socket)
    };
    talk().unwrap_or_else(|e| panic!("monitor command {command:?} failed: {e}"))
}

fn read_to_prompt(socket: &mut UnixStream) -> std::io::Result<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !seen.windows(7).any(|w| w == b"(qemu) ") {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

/// The resident memory of process `pid` (QEMU), in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("QEMU's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib / 1024)
        .expect("VmRSS in /proc status")
}

/// What the host saw while driving the balloon.
#[derive(Default)]
struct Observed {
    output: String,
    rss_before_inflate: Option<u64>,
    rss_after_inflate: Option<u64>,
    info_after_inflate: String,
    inflated_line: Option<u32>,
}

/// Boots the guest with `cmdline` (and QEMU's balloon when `with_device`). When the guest waits
/// for a target and `keep_mib` is set, the test asks QEMU to leave it that much memory; once
/// it inflated, it asks for all the memory back.
fn boot(cmdline: &str, with_device: bool, keep_mib: Option<u64>) -> Observed {
    let socket = TempPath::new("monitor");
    let mut command = Command::new(QEMU);
    command
        .args(["-M", "q35", "-accel", "tcg", "-m", &RAM_MIB.to_string()])
        .args(["-nodefaults", "-smp", "1", "-kernel", OXGUEST_PATH])
        .args(["-append", cmdline, "-serial", "stdio", "-display", "none"])
        .args(["-no-reboot", "-monitor"])
        .arg(format!("unix:{},server=on,wait=off", socket.0.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if with_device {
        command.args(["-device", BALLOON_DEVICE]);
    }
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {QEMU} ({e}): these tests need QEMU; install it \
             (Debian/Ubuntu: apt-get install qemu-system-x86)"
        )
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let pid = child.id();
    let watchdog = thread::spawn(move || wait_or_kill(child));
    let mut observed = Observed::default();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        observed.output.push_str(&line);
        observed.output.push('\n');
        react(&line, &socket.0, pid, keep_mib, &mut observed);
    }
    let (status, timed_out) = watchdog.join().expect("watchdog");
    assert!(
        !timed_out,
        "QEMU did not finish within {TIMEOUT:?}; output:\n{}",
        observed.output
    );
    assert!(
        status.success(),
        "QEMU failed ({status}):\n{}",
        observed.output
    );
    observed
}

/// Waits for QEMU to exit; kills it after [`TIMEOUT`]. Returns its status and whether it
/// had to be killed.
fn wait_or_kill(mut child: Child) -> (ExitStatus, bool) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for QEMU") {
            return (status, false);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            return (child.wait().expect("wait for QEMU"), true);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn react(line: &str, socket: &Path, pid: u32, keep_mib: Option<u64>, seen: &mut Observed) {
    let Some(keep) = keep_mib else { return };
    if line == protocol::BALLOON_WAITING {
        seen.rss_before_inflate = Some(rss_mib(pid));
        monitor(socket, &format!("balloon {keep}"));
    }
    if let Some(pages) = protocol::parse_balloon_inflated_line(line) {
        seen.inflated_line = Some(pages);
        seen.rss_after_inflate = Some(rss_mib(pid));
        seen.info_after_inflate = monitor(socket, "info balloon");
        monitor(socket, &format!("balloon {RAM_MIB}"));
    }
}

/// `(outcome, details)` of the `TEST <name>` lines, in order.
fn results<'a>(output: &'a str, name: &str) -> Vec<(Outcome, &'a str)> {
    output
        .lines()
        .filter_map(protocol::parse_line)
        .filter(|result| result.name == name)
        .map(|result| (result.outcome, result.details))
        .collect()
}

#[test]
fn qemu_balloon_inflates_frees_host_memory_and_deflates() {
    let keep_mib = 208;
    let pages = ((RAM_MIB - keep_mib) << 20 >> 12) as u32;

    let run = boot("balloon-touch=64 balloon", true, Some(keep_mib));

    let results = results(&run.output, "balloon");
    assert_eq!(results.len(), 1, "{}", run.output);
    assert_eq!(results[0].0, Outcome::Pass, "{}", run.output);
    assert_eq!(
        protocol::parse_balloon_details(results[0].1),
        Some((pages, pages))
    );
    let device = run
        .output
        .lines()
        .find_map(protocol::parse_balloon_device_line)
        .expect("device line");
    assert!(device.stats, "QEMU offers STATS_VQ and the guest takes it");
    assert_eq!(device.num_pages, 0);
    assert!(
        run.output
            .lines()
            .any(|line| protocol::parse_balloon_touched_line(line) == Some(64))
    );
    assert_eq!(run.inflated_line, Some(pages));
    assert!(
        run.info_after_inflate
            .contains(&format!("actual={keep_mib}")),
        "QEMU saw the guest's actual: {}",
        run.info_after_inflate
    );
    let (before, after) = (
        run.rss_before_inflate.unwrap(),
        run.rss_after_inflate.unwrap(),
    );
    assert!(
        before >= after + 40,
        "QEMU's RSS went from {before} MiB to {after} MiB while 48 MiB were ballooned"
    );
}

#[test]
fn qemu_balloon_without_the_device_fails_cleanly() {
    let run = boot("balloon", false, None);

    assert_eq!(
        results(&run.output, "balloon"),
        vec![(Outcome::Fail, protocol::BALLOON_NO_DEVICE)]
    );
}

#[test]
fn qemu_balloon_refuses_a_bad_touch_value() {
    let run = boot("balloon-touch=x1 balloon", true, Some(200));

    let results = results(&run.output, "balloon");
    assert_eq!(results.len(), 1, "{}", run.output);
    assert_eq!(results[0].0, Outcome::Fail);
    assert!(
        results[0].1.starts_with("bad balloon-touch= value \"x1\""),
        "{}",
        results[0].1
    );
    assert!(
        run.rss_before_inflate.is_none(),
        "it never waited for a target"
    );
}

#[test]
fn qemu_balloon_without_a_target_times_out() {
    let run = boot("balloon", true, None);

    assert_eq!(
        results(&run.output, "balloon"),
        vec![(
            Outcome::Fail,
            "no balloon target from the host within 5000 ms"
        )]
    );
}
