//! snapshot-bench: times oxvmm's snapshots and restores of the bundled guest's `counter`
//! scenario, 256 MiB of RAM with 64 MiB touched.
//!
//! Each run boots a fresh source VM (`counter touch=64 dirty=1`) with the control API, and once
//! it counts:
//! 1. takes a full snapshot of the running VM (`PUT /api/v1/vm.snapshot`, which pauses, saves
//!    and resumes), timed around the API call, with oxvmm's own `duration_ms`, and the sizes of
//!    the files it wrote (the memory file's apparent and allocated size, the state file);
//! 2. waits for two more count lines (the guest rewrites the first 1 MiB of its touched region
//!    after each) and takes a diff snapshot, timed the same way;
//! 3. powers the source off, then restores the full snapshot and the diff snapshot in new
//!    processes with `--resume --log-level info`, timing from just before the spawn to the
//!    `vCPU 0: entering the guest` line on stderr (the vCPU thread is about to `KVM_RUN`) and to
//!    the first `counter` line on stdout (the full snapshot is taken just after a count line, so
//!    that is about one count interval, ~250 ms, of guest work: for information only).
//!
//! One warm-up run is not counted. Snapshots go to a fresh directory each run (under `--dir`,
//! default the system's temporary directory) and are removed afterwards, so the memory file
//! stays in the page cache between the snapshot and the restore, as it would for a restore soon
//! after a save.
//!
//! Usage: `snapshot-bench --oxvmm PATH [--runs N] [--dir DIR]` (`bench/snapshot.sh` builds oxvmm
//! and runs this).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use vmm_api::{ApiRequest, Client, SnapshotRequest};

const GUEST_MEMORY: &str = "256M";
const GUEST_CMDLINE: &str = "counter touch=64 dirty=1";
/// What oxvmm logs (at `info`) when vCPU 0's thread is about to enter the guest.
const ENTERING_GUEST: &str = "vCPU 0: entering the guest";
/// How long any one step may take before the run is declared hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The target, and the reference figures it quotes for libvirt + QEMU on this machine.
const TARGET_RESTORE_MS: f64 = 10.0;
const QUOTED_QEMU_SAVE_MS: f64 = 420.0;
const QUOTED_QEMU_RESTORE_MS: f64 = 750.0;

const MIB: f64 = 1024.0 * 1024.0;

/// What one `vm.snapshot` call cost and produced.
#[derive(Clone, Copy, Debug, Default)]
struct SnapshotSample {
    /// From sending the request to reading the whole answer.
    client: Duration,
    /// oxvmm's own `duration_ms` in the answer.
    vmm_ms: f64,
    pages_written: f64,
    bytes_written: f64,
    memory_apparent: f64,
    /// `st_blocks * 512` of the memory file.
    memory_allocated: f64,
    state_bytes: f64,
}

/// What one restore took, from just before the spawn.
#[derive(Clone, Copy, Debug, Default)]
struct RestoreSample {
    entering_guest: Duration,
    first_count: Duration,
}

/// One timed run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    full: SnapshotSample,
    diff: SnapshotSample,
    restore_full: RestoreSample,
    restore_diff: RestoreSample,
}

struct Options {
    oxvmm: String,
    runs: usize,
    dir: PathBuf,
}

fn main() -> std::process::ExitCode {
    match parse_options().and_then(|options| bench(&options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapshot-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        oxvmm: String::new(),
        runs: 10,
        dir: std::env::temp_dir(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--oxvmm" => options.oxvmm = value()?,
            "--dir" => options.dir = value()?.into(),
            "--runs" => {
                let runs = value()?;
                options.runs = runs
                    .parse()
                    .with_context(|| format!("--runs {runs:?} is not a number"))?;
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    ensure!(
        !options.oxvmm.is_empty(),
        "usage: snapshot-bench --oxvmm PATH [--runs N] [--dir DIR]"
    );
    ensure!(options.runs > 0, "--runs must be at least 1");
    Ok(options)
}

/// A directory of our own, removed (with what is left in it) when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path) -> anyhow::Result<WorkDir> {
        let path = parent.join(format!("snapshot-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a failure here leaves a directory behind, which is no reason to fail.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(options: &Options) -> anyhow::Result<()> {
    let work = WorkDir::create(&options.dir)?;
    // Warm-up: page cache, binaries, KVM module state.
    measure(options, &work.0, 0)?;
    let mut samples = Vec::with_capacity(options.runs);
    for run in 1..=options.runs {
        samples.push(measure(options, &work.0, run)?);
    }
    print_report(options, &work.0, &samples);
    Ok(())
}

/// One run: boot, full snapshot, diff snapshot, power-off, restore each.
fn measure(options: &Options, work: &Path, run: usize) -> anyhow::Result<Sample> {
    let full_dir = work.join(format!("full-{run}"));
    let diff_dir = work.join(format!("diff-{run}"));
    let socket = work.join(format!("api-{run}.sock"));
    let mut sample = Sample::default();
    {
        let mut source = Vmm::spawn(&options.oxvmm, &source_args(&socket)?)?;
        let client = Client::wait_for_socket(&socket, STEP_TIMEOUT)
            .with_context(|| format!("the source VM's API socket {}", socket.display()))?;
        source.wait_for(Stream::Out, is_count_line)?;
        sample.full = snapshot(&client, &full_dir, false)?;
        // The guest rewrites 1 MiB after each count line: the second line after the snapshot
        // comes after at least one whole rewrite that the dirty log saw.
        source.wait_for(Stream::Out, is_count_line)?;
        source.wait_for(Stream::Out, is_count_line)?;
        sample.diff = snapshot(&client, &diff_dir, true)?;
        client.power_off().context("power off the source VM")?;
        source.wait_exit()?;
    }
    sample.restore_full = restore(&options.oxvmm, &full_dir)?;
    sample.restore_diff = restore(&options.oxvmm, &diff_dir)?;
    for dir in [&full_dir, &diff_dir] {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(sample)
}

fn source_args(socket: &Path) -> anyhow::Result<Vec<String>> {
    let socket = socket
        .to_str()
        .with_context(|| format!("{} is not UTF-8", socket.display()))?;
    Ok([
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        GUEST_CMDLINE,
        "--memory",
        GUEST_MEMORY,
        "--api-socket",
        socket,
    ]
    .map(String::from)
    .to_vec())
}

fn is_count_line(line: &str) -> bool {
    line.starts_with("counter ")
}

/// Takes a snapshot into `destination` and measures it and the files it wrote.
fn snapshot(client: &Client, destination: &Path, diff: bool) -> anyhow::Result<SnapshotSample> {
    let request = ApiRequest::Snapshot(SnapshotRequest {
        destination: destination.to_path_buf(),
        diff,
    });
    let start = Instant::now();
    let body = client
        .send(&request)
        .with_context(|| format!("snapshot (diff: {diff}) to {}", destination.display()))?;
    let client_time = start.elapsed();
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("the snapshot answer {:?}", String::from_utf8_lossy(&body)))?;
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("the snapshot answer {answer} has no number {name:?}"))
    };
    let memory = std::fs::metadata(destination.join("memory"))
        .with_context(|| format!("{}/memory", destination.display()))?;
    let state = std::fs::metadata(destination.join("state"))
        .with_context(|| format!("{}/state", destination.display()))?;
    Ok(SnapshotSample {
        client: client_time,
        vmm_ms: field("duration_ms")?,
        pages_written: field("pages_written")?,
        bytes_written: field("bytes_written")?,
        memory_apparent: memory.len() as f64,
        memory_allocated: (memory.blocks() * 512) as f64,
        state_bytes: state.len() as f64,
    })
}

/// Restores `dir` in a new process and times it to the guest's first instruction and count.
fn restore(oxvmm: &str, dir: &Path) -> anyhow::Result<RestoreSample> {
    let dir_text = dir
        .to_str()
        .with_context(|| format!("{} is not UTF-8", dir.display()))?;
    let args = ["--restore", dir_text, "--resume", "--log-level", "info"].map(String::from);
    let mut vmm = Vmm::spawn(oxvmm, &args)?;
    let entering_guest = vmm.wait_for(Stream::Err, |l| l.contains(ENTERING_GUEST))?;
    let first_count = vmm.wait_for(Stream::Out, is_count_line)?;
    vmm.kill()?;
    Ok(RestoreSample {
        entering_guest: entering_guest - vmm.spawned,
        first_count: first_count - vmm.spawned,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// A line the VMM wrote and when it was read.
struct Line {
    stream: Stream,
    at: Instant,
    text: String,
}

/// A running oxvmm whose stdout and stderr are read line by line on helper threads; killed
/// when dropped unless it was waited for.
struct Vmm {
    cmd: Vec<String>,
    child: Option<Child>,
    spawned: Instant,
    lines: Receiver<Line>,
    /// Every line read so far, shown when something goes wrong.
    seen: Vec<String>,
}

impl Vmm {
    fn spawn(oxvmm: &str, args: &[String]) -> anyhow::Result<Vmm> {
        let spawned = Instant::now();
        let mut child = Command::new(oxvmm)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {oxvmm}"))?;
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("stdout is piped")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        forward_lines(stdout, Stream::Out, sender.clone());
        forward_lines(stderr, Stream::Err, sender);
        let mut cmd = vec![oxvmm.to_string()];
        cmd.extend_from_slice(args);
        Ok(Vmm {
            cmd,
            child: Some(child),
            spawned,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line on `stream` that `wanted` accepts; returns when it was read.
    fn wait_for(
        &mut self,
        stream: Stream,
        wanted: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => bail!(
                    "{:?}: no awaited line on std{stream:?} within {STEP_TIMEOUT:?}\n{}",
                    self.cmd,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "{:?}: the VMM closed its output before the awaited line on std{stream:?}\n{}",
                    self.cmd,
                    self.seen.join("\n")
                ),
            };
            let found = line.stream == stream && wanted(&line.text);
            self.seen.push(line.text);
            if found {
                return Ok(line.at);
            }
        }
    }

    /// Waits for a VMM that was told to stop; it must exit with status 0.
    fn wait_exit(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the VMM was already reaped")?;
        let status = child.wait().context("wait for the VMM")?;
        ensure!(
            status.success(),
            "{:?} exited with {status}\n{}",
            self.cmd,
            self.seen.join("\n")
        );
        Ok(())
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("kill the VMM")?;
            child.wait().context("wait for the killed VMM")?;
        }
        Ok(())
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        // Only reached with a child on an error path; the error is what the user needs to see.
        let _ = self.kill();
    }
}

/// Sends each line of `pipe` to `sender`, stamped with when it was read, until end of file.
fn forward_lines(pipe: impl Read + Send + 'static, stream: Stream, sender: Sender<Line>) {
    std::thread::spawn(move || {
        for text in BufReader::new(pipe).lines() {
            let Ok(text) = text else { break };
            let line = Line {
                stream,
                at: Instant::now(),
                text,
            };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
}

/// Median, minimum and maximum of one figure over `samples`.
fn spread(samples: &[Sample], figure: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    kvm_floor::spread(samples.iter().map(figure).collect())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of the report.
struct Row {
    name: &'static str,
    figure: fn(&Sample) -> f64,
    decimals: usize,
    note: String,
}

impl Row {
    fn new(name: &'static str, decimals: usize, figure: fn(&Sample) -> f64) -> Row {
        Row {
            name,
            figure,
            decimals,
            note: String::new(),
        }
    }

    fn note(mut self, note: String) -> Row {
        self.note = note;
        self
    }
}

fn rows(samples: &[Sample]) -> Vec<Row> {
    let (restore_ms, _, restore_max) = spread(samples, |s| millis(s.restore_full.entering_guest));
    let verdict = match (
        restore_ms <= TARGET_RESTORE_MS,
        restore_max <= TARGET_RESTORE_MS,
    ) {
        (true, true) => "met (every run)",
        (true, false) => "met (median)",
        _ => "MISSED",
    };
    vec![
        Row::new("full snapshot, client (ms)", 2, |s| millis(s.full.client)).note(format!(
            "libvirt+QEMU save: {QUOTED_QEMU_SAVE_MS:.0} ms (quoted)"
        )),
        Row::new("full snapshot, oxvmm duration_ms", 0, |s| s.full.vmm_ms),
        Row::new("full snapshot, pages written", 0, |s| s.full.pages_written),
        Row::new("full snapshot, MiB written", 2, |s| s.full.bytes_written / MIB),
        Row::new("memory file, apparent (MiB)", 2, |s| s.full.memory_apparent / MIB),
        Row::new("memory file, allocated (MiB)", 2, |s| s.full.memory_allocated / MIB),
        Row::new("state file (bytes)", 0, |s| s.full.state_bytes),
        Row::new("restore -> vCPU 0 enters guest (ms)", 2, |s| {
            millis(s.restore_full.entering_guest)
        })
        .note(format!(
            "<= {TARGET_RESTORE_MS} ms: {verdict}; libvirt+QEMU restore: {QUOTED_QEMU_RESTORE_MS:.0} ms (quoted)"
        )),
        Row::new("restore -> first counter line (ms)", 2, |s| {
            millis(s.restore_full.first_count)
        })
        .note("for information: ~one count interval of guest work".into()),
        Row::new("diff snapshot, client (ms)", 2, |s| millis(s.diff.client)),
        Row::new("diff snapshot, oxvmm duration_ms", 0, |s| s.diff.vmm_ms),
        Row::new("diff snapshot, pages written", 0, |s| s.diff.pages_written),
        Row::new("diff snapshot, KiB written", 1, |s| s.diff.bytes_written / 1024.0),
        Row::new("diff memory file, allocated (KiB)", 0, |s| {
            s.diff.memory_allocated / 1024.0
        }),
        Row::new("diff state file (bytes)", 0, |s| s.diff.state_bytes),
        Row::new("restore diff -> vCPU 0 enters (ms)", 2, |s| {
            millis(s.restore_diff.entering_guest)
        })
        .note("full memory mapped, the diff's pages copied over it".into()),
    ]
}

fn print_report(options: &Options, work: &Path, samples: &[Sample]) {
    println!(
        "snapshot-bench: {} runs after one warm-up; guest {} `{GUEST_CMDLINE}`, {GUEST_MEMORY} RAM",
        options.runs,
        guests::OXGUEST_PATH
    );
    println!("oxvmm: {}", options.oxvmm);
    println!(
        "snapshots of the running VM into {} (removed after each run)",
        work.display()
    );
    println!("figures are medians, [min-max] in brackets\n");
    println!("{:<38} {:>34}  target / reference", "", "oxvmm");
    for row in rows(samples) {
        let (med, min, max) = spread(samples, row.figure);
        let d = row.decimals;
        println!(
            "{:<38} {:>34}  {}",
            row.name,
            format!("{med:.d$} [{min:.d$}-{max:.d$}]"),
            row.note
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64) -> Sample {
        Sample {
            restore_full: RestoreSample {
                entering_guest: Duration::from_millis(ms),
                first_count: Duration::from_millis(ms * 2),
            },
            ..Sample::default()
        }
    }

    #[test]
    fn spread_reports_median_min_max() {
        let samples = [sample(5), sample(1), sample(9)];

        let (med, min, max) = spread(&samples, |s| millis(s.restore_full.first_count));

        assert_eq!((med, min, max), (10.0, 2.0, 18.0));
    }

    #[test]
    fn a_slow_run_makes_the_restore_target_met_only_on_the_median() {
        let samples = [sample(4), sample(5), sample(30)];

        let rows = rows(&samples);

        let restore = rows
            .iter()
            .find(|r| r.name.starts_with("restore -> vCPU 0"))
            .map(|r| r.note.as_str());
        assert!(
            restore.is_some_and(|n| n.starts_with("<= 10 ms: met (median)")),
            "{restore:?}"
        );
    }

    #[test]
    fn only_counter_lines_count() {
        assert!(is_count_line("counter 1073741824"));
        assert!(!is_count_line("741824"));
        assert!(!is_count_line("oxguest: counter running at cpl3"));
    }
}
