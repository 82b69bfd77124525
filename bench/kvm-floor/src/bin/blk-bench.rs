//! blk-bench: virtio-blk throughput of the bundled guest on oxvmm, as a ratio to what the host
//! itself gets from the same file.
//!
//! It creates a stamped disk image (`guests::protocol::blk_bench_stamp`, host tag) of
//! `--file-mib` MiB in `--dir` (default: the system's temporary directory) and, for each
//! workload, alternates after one warm-up run each:
//! - the host: one thread doing synchronous `pread`/`pwrite` of the same request size at the
//!   same offsets (queue depth 1), checking the offset stamp of every block it reads, timed with
//!   a monotonic clock around the request loop;
//! - the host at the guest's queue depth: as many threads as the guest keeps requests in flight,
//!   each taking the next offset in order and doing the same `pread`/`pwrite` and checks (what
//!   oxvmm's I/O threads do for the guest), timed around starting and joining them;
//! - the guest: `oxvmm --disk path=FILE[,direct=on]` running the scenario
//!   (`blk-bench-seq-read`, `blk-bench-seq-write`, `blk-bench-rand-read`) with `bench-mib`,
//!   `bench-req-kib` and `bench-qd` on its command line; its request loop runs at CPL3 and times
//!   itself on the guest's calibrated TSC (first request started to last completed), so boot
//!   and power-off are not counted. After each guest write run the written range is read back
//!   and must hold the guest's stamps.
//!
//! Page cache (`--cache`): `direct` (default) opens the file `O_DIRECT` on the host and gives
//! oxvmm `direct=on`: neither side uses the host page cache, the fairest comparison. `warm`
//! uses the page cache on both sides and reads the whole file through it before every run; after
//! a write run (either side) the file is `fdatasync`ed outside the timed part.
//!
//! Usage: `blk-bench --oxvmm PATH [--runs N] [--dir DIR] [--cache direct|warm]
//! [--file-mib N] [--seq-mib N] [--req-kib N] [--rand-mib N] [--rand-req-kib N] [--qd N]
//! [--workloads seq-read,seq-write,rand-read] [--verbose] [-- EXTRA_OXVMM_ARGS...]`
//! (`--verbose`: every run's figure on standard error)
//! (`bench/blk.sh` builds oxvmm and runs this).

use kvm_floor::{median, spread};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use guests::protocol::{
    self, BLK_BENCH_BLOCK, BLK_BENCH_GUEST_TAG, BLK_BENCH_HOST_TAG, BlkBenchParams, BlkBenchReport,
    BlkBenchTimes,
};

const GUEST_MEMORY: &str = "256M";
/// The target for sequential throughput, oxvmm guest / host at the guest's queue depth.
const TARGET_SEQ_RATIO: f64 = 0.9;
/// How long one guest run may take before it is declared hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the spinning guest may take to start counting.
const SPINNER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per read or write when creating, warming and checking the image.
const IO_CHUNK: usize = 1 << 20;
/// What the image holds besides the stamps.
const FILL_BYTE: u8 = 0x5A;
const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    SeqRead,
    SeqWrite,
    RandRead,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::SeqRead, Workload::SeqWrite, Workload::RandRead];

    fn name(self) -> &'static str {
        match self {
            Workload::SeqRead => "seq-read",
            Workload::SeqWrite => "seq-write",
            Workload::RandRead => "rand-read",
        }
    }

    fn scenario(self) -> &'static str {
        match self {
            Workload::SeqRead => protocol::BLK_BENCH_SEQ_READ,
            Workload::SeqWrite => protocol::BLK_BENCH_SEQ_WRITE,
            Workload::RandRead => protocol::BLK_BENCH_RAND_READ,
        }
    }

    fn writes(self) -> bool {
        self == Workload::SeqWrite
    }

    fn sequential(self) -> bool {
        self != Workload::RandRead
    }

    fn parse(name: &str) -> anyhow::Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .with_context(|| format!("unknown workload {name:?} (seq-read, seq-write, rand-read)"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cache {
    /// `O_DIRECT` on both sides.
    Direct,
    /// The page cache on both sides, filled with the whole file before every run.
    Warm,
}

struct Options {
    oxvmm: String,
    runs: usize,
    dir: PathBuf,
    cache: Cache,
    file_mib: u32,
    seq: BlkBenchParams,
    rand: BlkBenchParams,
    workloads: Vec<Workload>,
    /// Print every run's figure on standard error.
    verbose: bool,
    oxvmm_extra: Vec<String>,
}

impl Options {
    fn params(&self, workload: Workload) -> BlkBenchParams {
        if workload.sequential() {
            self.seq
        } else {
            self.rand
        }
    }
}

/// One timed run of one side.
#[derive(Clone, Copy, Debug)]
struct Sample {
    bytes: u64,
    requests: u64,
    elapsed: Duration,
    /// The guest's split of its loop's time (guest runs only).
    times: Option<BlkBenchTimes>,
}

impl Sample {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.elapsed.as_secs_f64()
    }

    fn iops(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The figure a workload is judged by: MiB/s when sequential, requests/s when random.
    fn figure(&self, workload: Workload) -> f64 {
        if workload.sequential() {
            self.mib_per_s()
        } else {
            self.iops()
        }
    }
}

impl Sample {
    fn from_guest(report: BlkBenchReport, times: Option<BlkBenchTimes>) -> Sample {
        Sample {
            bytes: report.bytes,
            requests: report.requests,
            elapsed: Duration::from_nanos(report.ns),
            times,
        }
    }
}

fn main() -> std::process::ExitCode {
    match parse_options().and_then(|options| bench(&options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blk-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .ok()
        .with_context(|| format!("{flag} {value:?} is not a number"))
}

fn parse_options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        oxvmm: String::new(),
        runs: 5,
        dir: std::env::temp_dir(),
        cache: Cache::Direct,
        file_mib: 512,
        seq: BlkBenchParams {
            mib: 256,
            req_kib: protocol::BLK_BENCH_DEFAULT_SEQ_REQ_KIB,
            qd: protocol::BLK_BENCH_DEFAULT_QD,
        },
        rand: BlkBenchParams {
            mib: 16,
            req_kib: protocol::BLK_BENCH_DEFAULT_RAND_REQ_KIB,
            qd: protocol::BLK_BENCH_DEFAULT_QD,
        },
        workloads: Workload::ALL.to_vec(),
        verbose: false,
        oxvmm_extra: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let flag = arg.as_str();
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag {
            "--oxvmm" => options.oxvmm = value()?,
            "--runs" => options.runs = parse_number(flag, &value()?)?,
            "--dir" => options.dir = PathBuf::from(value()?),
            "--cache" => {
                options.cache = match value()?.as_str() {
                    "direct" => Cache::Direct,
                    "warm" => Cache::Warm,
                    other => bail!("--cache {other:?}: direct or warm"),
                }
            }
            "--file-mib" => options.file_mib = parse_number(flag, &value()?)?,
            "--seq-mib" => options.seq.mib = parse_number(flag, &value()?)?,
            "--req-kib" => options.seq.req_kib = parse_number(flag, &value()?)?,
            "--rand-mib" => options.rand.mib = parse_number(flag, &value()?)?,
            "--rand-req-kib" => options.rand.req_kib = parse_number(flag, &value()?)?,
            "--qd" => {
                let qd = parse_number(flag, &value()?)?;
                options.seq.qd = qd;
                options.rand.qd = qd;
            }
            "--workloads" => {
                options.workloads = value()?
                    .split(',')
                    .map(Workload::parse)
                    .collect::<anyhow::Result<_>>()?
            }
            "--verbose" => options.verbose = true,
            "--" => options.oxvmm_extra = args.by_ref().collect(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    ensure!(
        !options.oxvmm.is_empty(),
        "usage: blk-bench --oxvmm PATH [--runs N] [--dir DIR] [--cache direct|warm] \
         [--file-mib N] [--seq-mib N] [--req-kib N] [--rand-mib N] [--rand-req-kib N] [--qd N] \
         [--workloads LIST] [--verbose] [-- EXTRA_OXVMM_ARGS...]"
    );
    ensure!(options.runs > 0, "--runs must be at least 1");
    check_params(&options)?;
    Ok(options)
}

/// The guest refuses what it cannot run; refuse it here first, with the host's words.
fn check_params(options: &Options) -> anyhow::Result<()> {
    for (what, params) in [("sequential", options.seq), ("random", options.rand)] {
        ensure!(
            (1..=protocol::BLK_BENCH_MAX_QD).contains(&params.qd),
            "--qd {} is not between 1 and {}",
            params.qd,
            protocol::BLK_BENCH_MAX_QD
        );
        ensure!(
            params.req_kib >= 4
                && params.req_kib <= protocol::BLK_BENCH_MAX_REQ_KIB
                && params.req_bytes() % BLK_BENCH_BLOCK as u64 == 0,
            "{what} request size {} KiB is not a multiple of 4 between 4 and {}",
            params.req_kib,
            protocol::BLK_BENCH_MAX_REQ_KIB
        );
        ensure!(
            params.mib >= 1
                && params.mib <= protocol::BLK_BENCH_MAX_MIB
                && params.bytes() % params.req_bytes() == 0,
            "{what}: {} MiB is not a whole number of {} KiB requests",
            params.mib,
            params.req_kib
        );
    }
    ensure!(
        options.seq.mib <= options.file_mib,
        "--seq-mib {} exceeds the {} MiB file",
        options.seq.mib,
        options.file_mib
    );
    ensure!(
        options.rand.req_bytes() <= u64::from(options.file_mib) * MIB,
        "--rand-req-kib {} exceeds the {} MiB file",
        options.rand.req_kib,
        options.file_mib
    );
    Ok(())
}

/// The disk image, removed when dropped.
struct Image {
    path: PathBuf,
    len: u64,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes a stamped image of `mib` MiB, syncs it and drops it from the page cache.
fn create_image(dir: &Path, mib: u32) -> anyhow::Result<Image> {
    let path = dir.join(format!("blk-bench-{}.img", std::process::id()));
    let image = Image {
        path,
        len: u64::from(mib) * MIB,
    };
    let file = File::create(&image.path)
        .with_context(|| format!("cannot create {}", image.path.display()))?;
    let mut chunk = vec![FILL_BYTE; IO_CHUNK];
    for offset in (0..image.len).step_by(IO_CHUNK) {
        protocol::blk_bench_stamp(&mut chunk, offset, BLK_BENCH_HOST_TAG);
        file.write_all_at(&chunk, offset)
            .with_context(|| format!("write {} at {offset}", image.path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("fsync {}", image.path.display()))?;
    drop_cache(&file)?;
    Ok(image)
}

/// Asks the kernel to forget the file's (clean) cached pages.
fn drop_cache(file: &File) -> anyhow::Result<()> {
    // SAFETY: plain syscall on a file descriptor we own, with no pointers.
    let error = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ensure!(
        error == 0,
        "posix_fadvise(DONTNEED): {}",
        std::io::Error::from_raw_os_error(error)
    );
    Ok(())
}

/// A buffer whose first byte is aligned to `BLK_BENCH_BLOCK` (what `O_DIRECT` needs).
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new(len: usize) -> AlignedBuffer {
        let storage = vec![0u8; len + BLK_BENCH_BLOCK];
        // The address only picks an offset into our own allocation, which never moves.
        let addr = storage.as_ptr() as usize;
        let start = addr.next_multiple_of(BLK_BENCH_BLOCK) - addr;
        AlignedBuffer {
            storage,
            start,
            len,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// The host's side of the comparison: the image opened as the guest's disk is.
struct HostDisk {
    file: File,
    len: u64,
    buffer: AlignedBuffer,
    /// One buffer per thread of a run at queue depth > 1 (allocated on first use).
    depth_buffers: Vec<AlignedBuffer>,
}

impl HostDisk {
    fn open(image: &Image, cache: Cache, req_bytes: usize) -> anyhow::Result<HostDisk> {
        let mut open = File::options();
        open.read(true).write(true);
        if cache == Cache::Direct {
            open.custom_flags(libc::O_DIRECT);
        }
        let file = open
            .open(&image.path)
            .with_context(|| format!("cannot open {}", image.path.display()))?;
        Ok(HostDisk {
            file,
            len: image.len,
            buffer: AlignedBuffer::new(req_bytes.max(IO_CHUNK)),
            depth_buffers: Vec::new(),
        })
    }

    /// One timed run of `workload`: synchronous requests, one at a time (the loop of
    /// [`HostDisk::run_at_depth`]'s threads, on this thread).
    fn run(&mut self, workload: Workload, params: BlkBenchParams) -> anyhow::Result<Sample> {
        let req = params.req_bytes() as usize;
        let offsets = request_offsets(workload, params, self.len);
        let buffer = &mut self.buffer.as_mut_slice()[..req];
        let start = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        host_requests(&self.file, workload, buffer, &next, &offsets)?;
        Ok(host_sample(params, &offsets, start.elapsed()))
    }

    /// One timed run of `workload` with `qd` requests in flight: `qd` threads, each doing the
    /// next request in order, synchronously, as the guest's queue keeps `qd` outstanding.
    fn run_at_depth(
        &mut self,
        workload: Workload,
        params: BlkBenchParams,
        qd: usize,
    ) -> anyhow::Result<Sample> {
        let req = params.req_bytes() as usize;
        let offsets = request_offsets(workload, params, self.len);
        while self.depth_buffers.len() < qd {
            self.depth_buffers.push(AlignedBuffer::new(req));
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let file = &self.file;
        let start = Instant::now();
        std::thread::scope(|scope| {
            let threads: Vec<_> = self.depth_buffers[..qd]
                .iter_mut()
                .map(|buffer| {
                    let (next, offsets) = (&next, &offsets);
                    scope.spawn(move || {
                        let buffer = &mut buffer.as_mut_slice()[..req];
                        host_requests(file, workload, buffer, next, offsets)
                    })
                })
                .collect();
            threads.into_iter().try_for_each(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| bail!("a host I/O thread panicked"))
            })
        })?;
        Ok(host_sample(params, &offsets, start.elapsed()))
    }

    /// Reads the whole file once (through the page cache when the file is not `O_DIRECT`).
    fn read_all(&mut self, check: impl Fn(&[u8], u64) -> anyhow::Result<()>) -> anyhow::Result<()> {
        self.read_range(self.len, check)
    }

    /// Reads the first `len` bytes in chunks, handing each to `check` with its offset.
    fn read_range(
        &mut self,
        len: u64,
        check: impl Fn(&[u8], u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let chunk = &mut self.buffer.as_mut_slice()[..IO_CHUNK];
        for offset in (0..len).step_by(IO_CHUNK) {
            let n = (len - offset).min(IO_CHUNK as u64) as usize;
            self.file
                .read_exact_at(&mut chunk[..n], offset)
                .with_context(|| format!("read back at {offset}"))?;
            check(&chunk[..n], offset)?;
        }
        Ok(())
    }

    fn sync(&self) -> anyhow::Result<()> {
        self.file.sync_data().context("fdatasync the image")
    }
}

/// One thread of a run at queue depth > 1: takes the next offset until none is left.
fn host_requests(
    file: &File,
    workload: Workload,
    buffer: &mut [u8],
    next: &std::sync::atomic::AtomicUsize,
    offsets: &[u64],
) -> anyhow::Result<()> {
    while let Some(&offset) = offsets.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
        if workload.writes() {
            protocol::blk_bench_stamp(buffer, offset, BLK_BENCH_HOST_TAG);
            file.write_all_at(buffer, offset)
                .with_context(|| format!("host write at {offset}"))?;
        } else {
            file.read_exact_at(buffer, offset)
                .with_context(|| format!("host read at {offset}"))?;
            protocol::blk_bench_check_stamps(buffer, offset, None)
                .map_err(|bad| anyhow::anyhow!("host read at {offset}: {bad}"))?;
        }
    }
    Ok(())
}

/// What a host run of `params` over `offsets` measured.
fn host_sample(params: BlkBenchParams, offsets: &[u64], elapsed: Duration) -> Sample {
    Sample {
        bytes: params.bytes(),
        requests: offsets.len() as u64,
        elapsed,
        times: None,
    }
}

/// The offsets a run of `workload` uses, in order: the guest's, computed the same way.
fn request_offsets(workload: Workload, params: BlkBenchParams, disk_len: u64) -> Vec<u64> {
    let count = params.requests() as usize;
    let req = params.req_bytes();
    if workload.sequential() {
        (0..count as u64).map(|i| i * req).collect()
    } else {
        protocol::blk_bench_rand_offsets(disk_len, req)
            .take(count)
            .collect()
    }
}

/// One guest run through oxvmm: its report, checked against what was asked.
fn guest_run(
    options: &Options,
    image: &Image,
    workload: Workload,
    params: BlkBenchParams,
) -> anyhow::Result<Sample> {
    let cmd = oxvmm_command(options, image, workload, params);
    let output = run_with_timeout(&cmd, GUEST_TIMEOUT)?;
    let report = protocol::find(&output.stdout, workload.scenario())
        .filter(|line| line.outcome == protocol::Outcome::Pass)
        .and_then(|line| protocol::parse_blk_bench_details(line.details));
    let Some(report) = report.filter(|_| output.success) else {
        bail!(
            "{cmd:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            output.stdout,
            output.stderr
        );
    };
    ensure!(
        report.bytes == params.bytes()
            && report.requests == params.requests()
            && u64::from(report.req_bytes) == params.req_bytes()
            && report.qd == params.qd
            && report.ns > 0,
        "the guest ran something else than asked ({params:?}): {report:?}"
    );
    let times = output
        .stdout
        .lines()
        .find_map(|line| protocol::parse_blk_bench_times_line(line, workload.scenario()));
    Ok(Sample::from_guest(report, times))
}

fn oxvmm_command(
    options: &Options,
    image: &Image,
    workload: Workload,
    params: BlkBenchParams,
) -> Vec<String> {
    let direct = if options.cache == Cache::Direct {
        ",direct=on"
    } else {
        ""
    };
    let mut cmd = vec![
        options.oxvmm.clone(),
        "--kernel".into(),
        guests::OXGUEST_PATH.into(),
        "--cmdline".into(),
        params.cmdline(workload.scenario()),
        "--memory".into(),
        GUEST_MEMORY.into(),
        "--serial".into(),
        "stdio".into(),
        "--disk".into(),
        format!("path={}{direct}", image.path.display()),
    ];
    cmd.extend(options.oxvmm_extra.iter().cloned());
    cmd
}

struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end, killing it after `timeout`.
fn run_with_timeout(cmd: &[String], timeout: Duration) -> anyhow::Result<Output> {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", cmd[0]))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let stderr = child.stderr.take().context("stderr is piped")?;
    let stdout = std::thread::spawn(move || read_text(stdout));
    let stderr = std::thread::spawn(move || read_text(stderr));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for oxvmm")? {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().context("kill a hung oxvmm")?;
            child.wait().context("reap a hung oxvmm")?;
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        success: status.success(),
        status: status.to_string(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Everything a pipe delivers until its end, as text.
fn read_text(mut pipe: impl Read) -> String {
    let mut bytes = Vec::new();
    // A read error ends the text early; the run's status and TEST line still decide.
    let _ = pipe.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every block of the first `len` bytes holds the stamp `tag` writes.
fn check_written(disk: &mut HostDisk, len: u64, tag: u64) -> anyhow::Result<()> {
    disk.read_range(len, |chunk, offset| {
        protocol::blk_bench_check_stamps(chunk, offset, Some(tag))
            .map_err(|bad| anyhow::anyhow!("after the guest's writes: {bad}"))
    })
}

/// Who runs the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The host alone.
    Host,
    /// The host with as many requests in flight as the guest keeps (one thread each).
    HostAtGuestDepth,
    /// The host, while another oxvmm guest spins at CPL3 as the benchmark guest's polling loop
    /// does: on a machine with few CPUs that loop competes with the host's I/O path.
    HostBesideSpinner,
    /// The guest through oxvmm.
    Guest,
}

/// One side's run of `workload` with the page cache prepared the same way for every side.
fn measure(
    options: &Options,
    image: &Image,
    disk: &mut HostDisk,
    workload: Workload,
    side: Side,
) -> anyhow::Result<Sample> {
    let params = options.params(workload);
    if options.cache == Cache::Warm {
        disk.read_all(|_, _| Ok(()))?;
    }
    let sample = match side {
        Side::Host => disk.run(workload, params)?,
        Side::HostAtGuestDepth => disk.run_at_depth(workload, params, params.qd as usize)?,
        Side::HostBesideSpinner => {
            let _spinner = Spinner::start(options)?;
            disk.run(workload, params)?
        }
        Side::Guest => guest_run(options, image, workload, params)?,
    };
    if workload.writes() {
        if options.cache == Cache::Warm {
            disk.sync()?;
        }
        if side == Side::Guest {
            check_written(disk, params.bytes(), BLK_BENCH_GUEST_TAG)?;
        }
    }
    if options.verbose {
        eprintln!(
            "{:<10} {side:?}: {:.1} MiB/s, {:.1} IOPS",
            workload.name(),
            sample.mib_per_s(),
            sample.iops()
        );
    }
    Ok(sample)
}

/// An oxvmm guest counting at CPL3 (`counter`), stopped when dropped.
struct Spinner {
    child: Child,
    drain: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Starts it and waits until its loop runs.
    fn start(options: &Options) -> anyhow::Result<Spinner> {
        let mut child = Command::new(&options.oxvmm)
            .args(["--kernel", guests::OXGUEST_PATH, "--cmdline", "counter"])
            .args(["--memory", GUEST_MEMORY, "--serial", "stdio"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", options.oxvmm))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (running, started) = mpsc::channel();
        // Reads to the end, so that the count lines never fill the pipe.
        let drain = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == protocol::COUNTER_RUNNING {
                    let _ = running.send(());
                }
            }
        });
        let spinner = Spinner {
            child,
            drain: Some(drain),
        };
        started
            .recv_timeout(SPINNER_TIMEOUT)
            .context("the spinning guest (`counter`) did not start counting")?;
        Ok(spinner)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

/// The samples of one workload, sides alternating after a warm-up of each.
struct Results {
    workload: Workload,
    host: Vec<Sample>,
    host_qd: Vec<Sample>,
    host_beside: Vec<Sample>,
    guest: Vec<Sample>,
}

fn bench(options: &Options) -> anyhow::Result<()> {
    print_header(options);
    let image = create_image(&options.dir, options.file_mib)?;
    let req_max = options.seq.req_bytes().max(options.rand.req_bytes()) as usize;
    let mut disk = HostDisk::open(&image, options.cache, req_max)?;
    for &workload in &options.workloads {
        for side in [
            Side::Host,
            Side::HostAtGuestDepth,
            Side::HostBesideSpinner,
            Side::Guest,
        ] {
            measure(options, &image, &mut disk, workload, side)?;
        }
        let mut result = Results {
            workload,
            host: Vec::with_capacity(options.runs),
            host_qd: Vec::with_capacity(options.runs),
            host_beside: Vec::with_capacity(options.runs),
            guest: Vec::with_capacity(options.runs),
        };
        for _ in 0..options.runs {
            let mut run = |side| measure(options, &image, &mut disk, workload, side);
            result.host.push(run(Side::Host)?);
            result.host_qd.push(run(Side::HostAtGuestDepth)?);
            result.host_beside.push(run(Side::HostBesideSpinner)?);
            result.guest.push(run(Side::Guest)?);
        }
        print_result(&result);
    }
    Ok(())
}

fn print_header(options: &Options) {
    let cache = match options.cache {
        Cache::Direct => "O_DIRECT on both sides (oxvmm direct=on), no page cache",
        Cache::Warm => "page cache on both sides, whole file read before every run",
    };
    println!(
        "blk-bench: {} runs per side, alternating after one warm-up each; {} MiB image in {}",
        options.runs,
        options.file_mib,
        options.dir.display()
    );
    println!("cache: {cache}");
    println!("host: one thread, synchronous pread/pwrite (queue depth 1), same sizes and offsets");
    println!(
        "host QD: the same requests in order with the guest's queue depth in flight \
         (one thread per request in flight)"
    );
    println!(
        "guest: {} with {GUEST_MEMORY} RAM, request loop at CPL3 timed on its TSC; \
         oxvmm: {}",
        guests::OXGUEST_PATH,
        options.oxvmm
    );
    for workload in &options.workloads {
        let p = options.params(*workload);
        println!(
            "  {:<10} {} MiB in {} KiB requests, guest queue depth {}: `{}`",
            workload.name(),
            p.mib,
            p.req_kib,
            p.qd,
            p.cmdline(workload.scenario())
        );
    }
    println!(
        "host+spin: the host again, while another oxvmm guest spins at CPL3 (`counter`) as the \
         benchmark guest's polling loop does"
    );
    println!("figures are medians, [min-max] in brackets\n");
    println!(
        "{:<18} {:>26} {:>26} {:>26} {:>26} {:>7} {:>7} {:>9}  target",
        "", "host", "host QD", "host+spin", "oxvmm guest", "g/host", "g/hQD", "g/h+spin"
    );
}

fn print_result(result: &Results) {
    let workload = result.workload;
    let unit = if workload.sequential() {
        "MiB/s"
    } else {
        "IOPS"
    };
    let figures =
        |samples: &[Sample]| -> Vec<f64> { samples.iter().map(|s| s.figure(workload)).collect() };
    let cell = |values: Vec<f64>| {
        let (med, min, max) = spread(values);
        (med, format!("{med:.1} [{min:.1}-{max:.1}]"))
    };
    let (host, host_cell) = cell(figures(&result.host));
    let (host_qd, host_qd_cell) = cell(figures(&result.host_qd));
    let (beside, beside_cell) = cell(figures(&result.host_beside));
    let (guest, guest_cell) = cell(figures(&result.guest));
    let ratio = guest / host;
    // Judged at equal depth: the guest keeps several requests in flight, which oxvmm's I/O
    // threads overlap, so a host at depth 1 would flatter it.
    let ratio_qd = guest / host_qd;
    let target = if workload.sequential() {
        let verdict = if ratio_qd >= TARGET_SEQ_RATIO {
            "met"
        } else {
            "missed"
        };
        format!("g/hQD >= {TARGET_SEQ_RATIO:.2}x: {verdict}")
    } else {
        String::new()
    };
    println!(
        "{:<18} {host_cell:>26} {host_qd_cell:>26} {beside_cell:>26} {guest_cell:>26} \
         {ratio:>6.2}x {ratio_qd:>6.2}x {:>8.2}x  {target}",
        format!("{} ({unit})", workload.name()),
        guest / beside,
    );
    if let Some((submit, wait)) = guest_split(&result.guest) {
        println!(
            "{:<18} guest loop per request: {submit:.1} us starting it (notification \
             included), {wait:.1} us waiting",
            ""
        );
    }
}

/// Medians over the guest runs of the microseconds per request spent starting requests and
/// waiting for them; `None` when a run did not report them.
fn guest_split(samples: &[Sample]) -> Option<(f64, f64)> {
    let per_request = |ns: u64, sample: &Sample| ns as f64 / 1e3 / sample.requests.max(1) as f64;
    let mut submit = Vec::new();
    let mut wait = Vec::new();
    for sample in samples {
        let times = sample.times?;
        submit.push(per_request(times.submit_ns, sample));
        wait.push(per_request(times.wait_ns, sample));
    }
    (!samples.is_empty()).then(|| (median(submit), median(wait)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mib: u32, req_kib: u32) -> BlkBenchParams {
        BlkBenchParams {
            mib,
            req_kib,
            qd: 4,
        }
    }

    #[test]
    fn sequential_offsets_cover_the_range_in_order() {
        let offsets = request_offsets(Workload::SeqWrite, params(1, 128), 4 * MIB);

        assert_eq!(offsets, (0..8).map(|i| i * 128 * 1024).collect::<Vec<_>>());
    }

    #[test]
    fn random_offsets_are_the_guests() {
        let offsets = request_offsets(Workload::RandRead, params(1, 4), 64 * MIB);

        let guest: Vec<u64> = protocol::blk_bench_rand_offsets(64 * MIB, 4096)
            .take(256)
            .collect();
        assert_eq!(offsets, guest);
    }

    #[test]
    fn figures_are_throughput_or_iops() {
        let sample = Sample {
            bytes: 512 * MIB,
            requests: 1000,
            elapsed: Duration::from_millis(500),
            times: None,
        };

        assert_eq!(sample.figure(Workload::SeqRead), 1024.0);
        assert_eq!(sample.figure(Workload::RandRead), 2000.0);
    }

    #[test]
    fn workloads_parse_by_name() {
        assert_eq!(Workload::parse("rand-read").ok(), Some(Workload::RandRead));
        assert!(Workload::parse("rand-write").is_err());
    }

    #[test]
    fn a_host_run_reads_what_the_image_holds() {
        let dir = std::env::temp_dir();
        let image = create_image(&dir, 2).expect("an image");
        let mut disk = HostDisk::open(&image, Cache::Warm, 128 * 1024).expect("open");

        let read = disk.run(Workload::RandRead, params(1, 4)).expect("reads");
        let write = disk
            .run(Workload::SeqWrite, params(1, 128))
            .expect("writes");
        let read_qd = disk
            .run_at_depth(Workload::SeqRead, params(2, 128), 3)
            .expect("reads at depth 3");
        let write_qd = disk
            .run_at_depth(Workload::SeqWrite, params(1, 4), 4)
            .expect("writes at depth 4");

        assert_eq!((read.requests, write.requests), (256, 8));
        assert_eq!((read_qd.requests, write_qd.requests), (16, 256));
        check_written(&mut disk, MIB, BLK_BENCH_HOST_TAG).expect("the host's stamps");
        assert!(check_written(&mut disk, 2 * MIB, BLK_BENCH_HOST_TAG).is_ok());
        assert!(check_written(&mut disk, MIB, BLK_BENCH_GUEST_TAG).is_err());
    }
}
