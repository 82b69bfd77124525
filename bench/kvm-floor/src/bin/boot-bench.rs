//! boot-bench: times oxvmm against kvm-floor running the bundled guest's `poweroff` scenario.
//!
//! For each run it spawns the VMM with its stdout on a pipe and measures, from just before the
//! spawn: the first byte read from the pipe (the guest's first serial output), the exit (when
//! `wait4` returns), and the peak RSS `wait4` reports. The two VMMs alternate, after one warm-up
//! run each, so that drift in the machine's load affects both alike. It prints medians side by
//! side with the ratio oxvmm/floor and the targets.
//!
//! Usage: `boot-bench --oxvmm PATH --floor PATH [--runs N] [-- EXTRA_OXVMM_ARGS...]`
//! (`bench/boot.sh` builds both and runs this).

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// What the guest prints when the scenario ran; every run must show it.
const PASS_LINE: &str = "TEST poweroff PASS";
const GUEST_MEMORY: &str = "128M";

/// The targets.
const TARGET_FIRST_BYTE_RATIO: f64 = 1.5;
const TARGET_EXIT_MS: f64 = 4.0;
const TARGET_RSS_KIB: u64 = 3 * 1024;

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    first_byte: Duration,
    /// The end of the guest's first line (`oxguest: started (...)`), printed by its entry code.
    first_line: Duration,
    exit: Duration,
    max_rss_kib: u64,
}

struct Options {
    oxvmm: String,
    floor: String,
    runs: usize,
    oxvmm_extra: Vec<String>,
}

fn main() -> std::process::ExitCode {
    match parse_options().and_then(|options| bench(&options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        oxvmm: String::new(),
        floor: String::new(),
        runs: 30,
        oxvmm_extra: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--oxvmm" => options.oxvmm = value()?,
            "--floor" => options.floor = value()?,
            "--runs" => {
                let runs = value()?;
                options.runs = runs
                    .parse()
                    .with_context(|| format!("--runs {runs:?} is not a number"))?;
            }
            "--" => options.oxvmm_extra = args.by_ref().collect(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    ensure!(
        !options.oxvmm.is_empty() && !options.floor.is_empty(),
        "usage: boot-bench --oxvmm PATH --floor PATH [--runs N] [-- EXTRA_OXVMM_ARGS...]"
    );
    ensure!(options.runs > 0, "--runs must be at least 1");
    Ok(options)
}

fn bench(options: &Options) -> anyhow::Result<()> {
    let guest = guests::OXGUEST_PATH;
    let mut oxvmm_cmd = vec![
        options.oxvmm.clone(),
        "--kernel".into(),
        guest.into(),
        "--cmdline".into(),
        "poweroff".into(),
        "--memory".into(),
        GUEST_MEMORY.into(),
        "--serial".into(),
        "stdio".into(),
    ];
    oxvmm_cmd.extend(options.oxvmm_extra.iter().cloned());
    let floor_cmd = vec![options.floor.clone(), guest.into(), "poweroff".into()];

    // Warm-up: page cache, binaries, KVM module state.
    measure(&oxvmm_cmd)?;
    measure(&floor_cmd)?;
    let mut oxvmm = Vec::with_capacity(options.runs);
    let mut floor = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        oxvmm.push(measure(&oxvmm_cmd)?);
        floor.push(measure(&floor_cmd)?);
    }
    print_report(options, &oxvmm_cmd, &oxvmm, &floor);
    Ok(())
}

/// Runs `cmd` once, timing its first stdout byte and its exit, and checking that the guest ran.
fn measure(cmd: &[String]) -> anyhow::Result<Sample> {
    let mut stderr = tempfile_for_stderr()?;
    let start = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("cannot start {}", cmd[0]))?;
    let mut pipe = child.stdout.take().context("stdout is piped")?;
    let mut output = Vec::new();
    let mut first_byte = None;
    let mut first_line = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).context("read the VMM's stdout")?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| start.elapsed());
        if first_line.is_none() && buf[..n].contains(&b'\n') {
            first_line = Some(start.elapsed());
        }
        output.extend_from_slice(&buf[..n]);
    }
    let (status, max_rss_kib) = wait4(child.id())?;
    let exit = start.elapsed();
    let mut messages = String::new();
    stderr.rewind()?;
    stderr.read_to_string(&mut messages)?;
    let output = String::from_utf8_lossy(&output);
    ensure!(
        status.success() && output.contains(PASS_LINE),
        "{cmd:?} failed ({status}):\n--- stdout ---\n{output}\n--- stderr ---\n{messages}"
    );
    Ok(Sample {
        first_byte: first_byte.context("the guest printed nothing")?,
        first_line: first_line.context("the guest printed no whole line")?,
        exit,
        max_rss_kib,
    })
}

/// An unlinked file for the child's stderr: read only when a run fails, and no pipe to drain.
fn tempfile_for_stderr() -> anyhow::Result<File> {
    let path = std::env::temp_dir().join(format!("boot-bench-{}.stderr", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Reaps child `pid`, returning its exit status and peak RSS in KiB.
fn wait4(pid: u32) -> anyhow::Result<(ExitStatus, u64)> {
    let pid = libc::pid_t::try_from(pid)?;
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child (std's Child was never waited on); `status` and
    // `usage` are valid for writes for the duration of the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    ensure!(
        reaped == pid,
        "wait4({pid}) failed: {}",
        std::io::Error::last_os_error()
    );
    Ok((
        ExitStatus::from_raw(status),
        u64::try_from(usage.ru_maxrss)?,
    ))
}

/// Median, minimum and maximum of one figure over `samples`.
fn spread(samples: &[Sample], figure: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    kvm_floor::spread(samples.iter().map(figure).collect())
}

/// One line of the report.
struct Row {
    name: &'static str,
    figure: fn(&Sample) -> f64,
    target: String,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_report(options: &Options, oxvmm_cmd: &[String], oxvmm: &[Sample], floor: &[Sample]) {
    println!(
        "boot-bench: {} runs each, alternating; guest {} `poweroff`, {GUEST_MEMORY} RAM",
        options.runs,
        guests::OXGUEST_PATH
    );
    println!("oxvmm: {}", oxvmm_cmd.join(" "));
    println!("floor: {} (kvm-floor)", options.floor);
    println!("figures are medians, [min-max] in brackets\n");
    println!(
        "{:<20} {:>26} {:>26} {:>12}  target",
        "", "oxvmm", "kvm-floor", "oxvmm/floor"
    );
    let rows = [
        Row {
            name: "first byte (ms)",
            figure: |s| millis(s.first_byte),
            target: format!("<= {TARGET_FIRST_BYTE_RATIO}x floor"),
        },
        Row {
            name: "first line (ms)",
            figure: |s| millis(s.first_line),
            target: String::new(),
        },
        Row {
            name: "exit (ms)",
            figure: |s| millis(s.exit),
            target: format!("<= {TARGET_EXIT_MS} ms"),
        },
        Row {
            name: "peak RSS (KiB)",
            figure: |s| s.max_rss_kib as f64,
            target: format!("<= {TARGET_RSS_KIB} KiB"),
        },
    ];
    for Row {
        name,
        figure,
        target,
    } in rows
    {
        let (ox_med, ox_min, ox_max) = spread(oxvmm, figure);
        let (fl_med, fl_min, fl_max) = spread(floor, figure);
        println!(
            "{name:<20} {:>26} {:>26} {:>11.2}x  {target}",
            format!("{ox_med:.2} [{ox_min:.2}-{ox_max:.2}]"),
            format!("{fl_med:.2} [{fl_min:.2}-{fl_max:.2}]"),
            ox_med / fl_med,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64) -> Sample {
        Sample {
            first_byte: Duration::from_millis(ms),
            first_line: Duration::from_millis(ms),
            exit: Duration::from_millis(ms * 2),
            max_rss_kib: ms,
        }
    }

    #[test]
    fn spread_reports_median_min_max() {
        let samples = [sample(5), sample(1), sample(9)];

        let (med, min, max) = spread(&samples, |s| s.exit.as_secs_f64() * 1e3);

        assert_eq!((med, min, max), (10.0, 2.0, 18.0));
    }
}
