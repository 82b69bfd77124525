//! Boots Debian's cloud kernel (fetched by `scripts/linux-kernel.sh` from the package registry
//! and cached in `target/linux-kernel/`) and reads what it prints on the serial console.
//!
//! On this project's machines KVM cannot run a stock kernel to userspace (see ENVIRONMENT.md),
//! so the `kvm_linux_*` tests check only the early messages, which prove the boot path: the
//! kernel was loaded and entered, found its command line, and got the e820 map oxvmm built. The
//! initramfs test needs hardware virtualization and is ignored by default.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use arch::memory::{E820_ACPI, E820_RAM, E820_RESERVED, E820Entry, e820_map};
use common::{OXVMM, oxvmm, require_kvm};

/// How long one boot may take to print the messages a test waits for: a bzImage needs ~45 s
/// here (its decompressor runs in KVM's instruction emulator), more on a busy machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const MIB: u64 = 1 << 20;

/// The files `scripts/linux-kernel.sh` provides.
struct LinuxKernel {
    bzimage: PathBuf,
    vmlinux: PathBuf,
    busybox: PathBuf,
}

/// Fetches the kernel once per test process (the script itself is idempotent and locked).
fn linux_kernel() -> &'static LinuxKernel {
    static KERNEL: OnceLock<LinuxKernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = workspace.join("target/linux-kernel");
        let script = workspace.join("scripts/linux-kernel.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} {} failed ({}); it needs apt-get (package apt), dpkg-deb (dpkg) and lz4 \
             (package lz4):\n{}{}",
            script.display(),
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        LinuxKernel {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            busybox: dir.join("busybox"),
        }
    })
}

/// A fresh 64-bit hex token, so a test cannot pass on output left from another run.
fn random_token() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// How Linux was entered: it changes the memory map it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// bzImage, or the ELF with `--boot-protocol linux64`: the zero page's e820 table as is.
    ZeroPage,
    /// The ELF's PVH entry: Linux copies the `hvm_start_info` memory map and adds the ISA range
    /// `[0xA0000, 0x100000)` as reserved itself (`init_pvh_bootparams`), before it sanitizes
    /// and prints the table.
    Pvh,
}

/// Linux's ISA hole reservation on the PVH path.
const ISA_RESERVED: E820Entry = E820Entry {
    addr: 0xA_0000,
    size: 0x6_0000,
    kind: E820_RESERVED,
};

/// The e820 lines Linux prints for `mem_bytes` of guest RAM entered through `entry`, after its
/// `BIOS-e820: ` prefix (`e820__print_table`: inclusive end addresses, `e820_print_type` names).
fn expected_e820_lines(mem_bytes: u64, entry: Entry) -> Vec<String> {
    let mut map = e820_map(mem_bytes);
    if entry == Entry::Pvh {
        map.push(ISA_RESERVED);
    }
    sanitize_e820(&map)
        .iter()
        .map(|entry| {
            let kind = match entry.kind {
                E820_RAM => "usable".to_string(),
                E820_RESERVED => "reserved".to_string(),
                E820_ACPI => "ACPI data".to_string(),
                other => format!("type {other}"),
            };
            format!(
                "[mem {:#018x}-{:#018x}] {kind}",
                entry.addr,
                entry.addr + entry.size - 1
            )
        })
        .collect()
}

/// What Linux's `e820__update_table` makes of a map: where entries overlap the larger type wins,
/// and neighbours of the same type merge; the result is sorted by address.
fn sanitize_e820(map: &[E820Entry]) -> Vec<E820Entry> {
    let mut bounds: Vec<u64> = map.iter().flat_map(|e| [e.addr, e.addr + e.size]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<E820Entry> = Vec::new();
    for span in bounds.windows(2) {
        let (start, end) = (span[0], span[1]);
        let Some(kind) = map
            .iter()
            .filter(|e| e.addr <= start && end <= e.addr + e.size)
            .map(|e| e.kind)
            .max()
        else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.kind == kind && last.addr + last.size == start => {
                last.size += end - start;
            }
            _ => out.push(E820Entry {
                addr: start,
                size: end - start,
                kind,
            }),
        }
    }
    out
}

/// What the kernel printed first: its banner, command line and the firmware memory map.
#[derive(Debug)]
struct EarlyBoot {
    banner: String,
    cmdline: String,
    e820: Vec<String>,
}

impl EarlyBoot {
    /// The early messages in `lines`, once all of them (the whole first e820 map) are there.
    fn parse(lines: &[String]) -> Option<Self> {
        let banner = lines.iter().find_map(|l| after(l, "Linux version "))?;
        let cmdline = lines.iter().find_map(|l| after(l, "Command line: "))?;
        let first = lines.iter().position(|l| l.contains("BIOS-e820: "))?;
        let e820: Vec<String> = lines[first..]
            .iter()
            .map_while(|l| after(l, "BIOS-e820: "))
            .collect();
        // The map is complete only when a line that is not part of it follows.
        if first + e820.len() >= lines.len() {
            return None;
        }
        Some(Self {
            banner: format!("Linux version {banner}"),
            cmdline,
            e820,
        })
    }
}

/// The text after `marker` in a kernel log line (after the `[    0.000000] ` timestamp).
fn after(line: &str, marker: &str) -> Option<String> {
    line.find(marker)
        .map(|at| line[at + marker.len()..].trim_end().to_string())
}

/// The end of one watched oxvmm run.
struct Watched {
    lines: Vec<String>,
    stderr: String,
    /// None when the run was stopped (seen enough, or timed out).
    status: Option<ExitStatus>,
    elapsed: Duration,
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?} after {:?}\n--- serial output ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.elapsed,
            self.lines.join("\n"),
            self.stderr
        )
    }
}

/// Runs oxvmm with `args`, reading its serial output line by line, and kills it as soon as
/// `done(lines)` holds, when it exits, or after `timeout`.
fn watch_oxvmm(args: &[&str], timeout: Duration, done: impl Fn(&[String]) -> bool) -> Watched {
    let start = Instant::now();
    let mut child = Command::new(OXVMM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start oxvmm");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if line_tx.send(text).is_err() {
                break;
            }
            line.clear();
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = Vec::new();
    let mut finished = false;
    while !done(&lines) {
        let Some(left) = timeout.checked_sub(start.elapsed()) else {
            break;
        };
        match line_rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                finished = true;
                break;
            }
        }
    }
    let status = if finished {
        child.wait().ok()
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    };
    Watched {
        lines,
        stderr: err_reader.join().unwrap_or_default(),
        status,
        elapsed: start.elapsed(),
    }
}

/// Boots `kernel` with `memory_mib` MiB and `extra` options, and checks the banner, the exact
/// command line (with a fresh token) and that the e820 map equals the platform's for that size.
fn assert_early_boot(kernel: &Path, entry: Entry, memory_mib: u64, extra: &[&str]) {
    require_kvm();
    let cmdline = format!(
        "console=ttyS0 earlyprintk=serial oxtoken={}",
        random_token()
    );
    let memory = format!("{memory_mib}M");
    let kernel_path = kernel.to_str().expect("kernel path is UTF-8");
    let mut args = vec![
        "--kernel",
        kernel_path,
        "--cmdline",
        &cmdline,
        "--memory",
        &memory,
        "--cpus",
        "1",
    ];
    args.extend_from_slice(extra);

    let run = watch_oxvmm(&args, BOOT_TIMEOUT, |lines| {
        EarlyBoot::parse(lines).is_some()
    });

    let Some(early) = EarlyBoot::parse(&run.lines) else {
        panic!(
            "oxvmm {args:?} did not print the Linux banner, command line and whole e820 map \
             within {BOOT_TIMEOUT:?}\n{run}"
        );
    };
    assert!(
        early.banner.starts_with("Linux version 6."),
        "banner {:?}\n{run}",
        early.banner
    );
    assert_eq!(early.cmdline, cmdline, "command line\n{run}");
    assert_eq!(
        early.e820,
        expected_e820_lines(memory_mib * MIB, entry),
        "e820 map for {memory} ({entry:?} entry)\n{run}"
    );
}

#[test]
fn kvm_linux_bzimage_prints_banner_cmdline_and_e820() {
    // One boot: the bzImage's decompressor alone runs ~45 s under this host's emulated KVM. The
    // zero page path across the 3 GiB hole is covered by the ELF test's linux64 boot.
    assert_early_boot(&linux_kernel().bzimage, Entry::ZeroPage, 512, &[]);
}

#[test]
fn kvm_linux_elf_prints_banner_cmdline_and_e820() {
    let vmlinux = &linux_kernel().vmlinux;
    // Debian's vmlinux has a PVH note: the default protocol enters it in 32-bit mode.
    assert_early_boot(vmlinux, Entry::Pvh, 512, &[]);
    // Above 3 GiB the RAM continues past the 32-bit MMIO hole, at 4 GiB, in both boot maps.
    assert_early_boot(vmlinux, Entry::Pvh, 3584, &[]);
    assert_early_boot(
        vmlinux,
        Entry::ZeroPage,
        3584,
        &["--boot-protocol", "linux64"],
    );
}

/// Fails at once, saying why, when the CPU offers no hardware virtualization to KVM.
fn require_hardware_virtualization() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|flag| flag == "vmx" || flag == "svm");
    assert!(
        has_flag,
        "this test needs hardware virtualization (VT-x/AMD-V), and /proc/cpuinfo shows neither \
         the vmx nor the svm flag: KVM on this host cannot run a stock Linux kernel to \
         userspace (see ENVIRONMENT.md); run it on a host with VT-x/AMD-V"
    );
}

/// One file of a `newc` cpio archive.
struct CpioEntry<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

/// Packs `entries` as the `newc` cpio archive Linux unpacks as an initramfs (uncompressed, which
/// the kernel accepts as well as gzip). Written here so that device nodes need no root.
fn cpio_newc(entries: &[CpioEntry]) -> Vec<u8> {
    fn pad4(out: &mut Vec<u8>) {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let trailer = CpioEntry {
        name: "TRAILER!!!",
        mode: 0,
        rdev: (0, 0),
        data: &[],
    };
    let mut out = Vec::new();
    for (ino, entry) in entries.iter().chain([&trailer]).enumerate() {
        let fields = [
            ino as u32 + 1,
            entry.mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(entry.data.len()).expect("initramfs file under 4 GiB"),
            0, // devmajor
            0, // devminor
            entry.rdev.0,
            entry.rdev.1,
            entry.name.len() as u32 + 1,
            0, // check
        ];
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        out.extend_from_slice(entry.name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(entry.data);
        pad4(&mut out);
    }
    out
}

/// An initramfs whose `/init` prints `OXVIRT-INIT-OK <token>` and powers off.
fn build_initramfs(busybox: &Path, token: &str) -> Vec<u8> {
    let busybox = std::fs::read(busybox).expect("read busybox");
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox echo \"OXVIRT-INIT-OK {token}\"\n\
         /bin/busybox poweroff -f\n"
    );
    const DIR: u32 = 0o040_755;
    const EXEC: u32 = 0o100_755;
    const CHAR_DEV: u32 = 0o020_600;
    let entry = |name, mode, data| CpioEntry {
        name,
        mode,
        rdev: (0, 0),
        data,
    };
    cpio_newc(&[
        entry("bin", DIR, &[]),
        entry("dev", DIR, &[]),
        entry("proc", DIR, &[]),
        entry("sys", DIR, &[]),
        CpioEntry {
            name: "dev/console",
            mode: CHAR_DEV,
            rdev: (5, 1),
            data: &[],
        },
        entry("bin/busybox", EXEC, &busybox),
        entry("init", EXEC, init.as_bytes()),
    ])
}

#[test]
#[ignore = "needs hardware virtualization (VT-x/AMD-V); run with --ignored on such a host"]
fn kvm_hw_linux_boots_to_initramfs_init() {
    require_hardware_virtualization();
    require_kvm();
    let kernel = linux_kernel();
    let token = random_token();
    let initrd = std::env::temp_dir().join(format!("oxvirt-initramfs-{token}.cpio"));
    std::fs::write(&initrd, build_initramfs(&kernel.busybox, &token)).expect("write initramfs");
    let cmdline = format!("console=ttyS0 panic=-1 oxtoken={token}");

    let run = oxvmm(
        &[
            "--kernel",
            kernel.bzimage.to_str().expect("UTF-8 path"),
            "--initrd",
            initrd.to_str().expect("UTF-8 path"),
            "--cmdline",
            &cmdline,
            "--memory",
            "512M",
            "--cpus",
            "1",
            "--on-reboot",
            "exit",
        ],
        BOOT_TIMEOUT,
    );
    let _ = std::fs::remove_file(&initrd);

    let expected = format!("OXVIRT-INIT-OK {token}");
    assert!(
        run.stdout.lines().any(|l| l.trim_end() == expected),
        "/init did not print {expected:?}\n{run}"
    );
    run.assert_exit(0);
}

/// Proves the initramfs of the test above with an independent VMM, QEMU's software emulation
/// (it boots the same kernel to `/init` in seconds here), so that on a hardware host a failure
/// of that test points at oxvmm, not at the initramfs.
#[test]
fn qemu_tcg_runs_the_test_initramfs() {
    let kernel = linux_kernel();
    let token = random_token();
    let initrd = std::env::temp_dir().join(format!("oxvirt-initramfs-qemu-{token}.cpio"));
    std::fs::write(&initrd, build_initramfs(&kernel.busybox, &token)).expect("write initramfs");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel", "tcg", "-machine", "q35", "-m", "512M", "-smp", "1",
    ])
    .args([
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(&kernel.bzimage)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", "console=ttyS0 panic=-1"])
    .stdin(Stdio::null());

    let output = run_with_timeout(qemu, BOOT_TIMEOUT);
    let _ = std::fs::remove_file(&initrd);

    let expected = format!("OXVIRT-INIT-OK {token}");
    assert!(
        output.lines().any(|l| l.trim_end() == expected),
        "/init did not print {expected:?} under QEMU TCG:\n{output}"
    );
}

/// Runs `command` to its end (killing it after `timeout`) and returns its stdout and stderr.
fn run_with_timeout(command: Command, timeout: Duration) -> String {
    let program = command.get_program().to_string_lossy().into_owned();
    assert!(
        which(&program),
        "cannot run {program}: install the Debian package qemu-system-x86"
    );
    let start = Instant::now();
    let collected = common::collect(command, None, timeout);
    format!(
        "{program} exit: {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        collected.status,
        start.elapsed(),
        collected.stdout,
        collected.stderr
    )
}

/// Whether `program` is on PATH (or is a path that exists).
fn which(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[test]
fn e820_lines_use_inclusive_ends_and_linux_type_names() {
    let lines = expected_e820_lines(3584 * MIB, Entry::ZeroPage);

    assert_eq!(
        lines,
        [
            "[mem 0x0000000000000000-0x000000000009ffff] usable",
            "[mem 0x00000000000e0000-0x00000000000fffff] reserved",
            "[mem 0x0000000000100000-0x00000000bfffffff] usable",
            "[mem 0x00000000e0000000-0x00000000efffffff] reserved",
            "[mem 0x0000000100000000-0x000000011fffffff] usable",
        ]
    );
}

#[test]
fn pvh_map_gains_linux_isa_reservation_merged_with_the_bios_area() {
    let lines = expected_e820_lines(512 * MIB, Entry::Pvh);

    assert_eq!(
        lines,
        [
            "[mem 0x0000000000000000-0x000000000009ffff] usable",
            "[mem 0x00000000000a0000-0x00000000000fffff] reserved",
            "[mem 0x0000000000100000-0x000000001fffffff] usable",
            "[mem 0x00000000e0000000-0x00000000efffffff] reserved",
        ]
    );
}

#[test]
fn sanitize_lets_the_larger_type_win_and_merges_neighbours() {
    let ram = |addr, size| E820Entry {
        addr,
        size,
        kind: E820_RAM,
    };
    let map = [
        ram(0x1000, 0x1000),
        ram(0, 0x1000),
        E820Entry {
            addr: 0x1800,
            size: 0x1000,
            kind: E820_RESERVED,
        },
    ];

    let clean = sanitize_e820(&map);

    assert_eq!(
        clean,
        [
            ram(0, 0x1800),
            E820Entry {
                addr: 0x1800,
                size: 0x1000,
                kind: E820_RESERVED
            },
        ]
    );
}

#[test]
fn early_boot_waits_for_the_end_of_the_e820_map() {
    let log: Vec<String> = [
        "[    0.000000] Linux version 6.1.0-57-cloud-amd64 (gcc) #1 SMP",
        "[    0.000000] Command line: console=ttyS0 oxtoken=1",
        "[    0.000000] BIOS-provided physical RAM map:",
        "[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009ffff] usable",
        "[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable",
        "[    0.000000] NX (Execute Disable) protection: active",
    ]
    .map(String::from)
    .to_vec();

    let partial = EarlyBoot::parse(&log[..5]);
    let whole = EarlyBoot::parse(&log).expect("all early messages are there");

    assert!(partial.is_none(), "{partial:?}");
    assert_eq!(whole.cmdline, "console=ttyS0 oxtoken=1");
    assert!(whole.banner.starts_with("Linux version 6.1.0-57"));
    assert_eq!(
        whole.e820,
        [
            "[mem 0x0000000000000000-0x000000000009ffff] usable",
            "[mem 0x0000000000100000-0x000000001fffffff] usable",
        ]
    );
}

#[test]
fn cpio_newc_header_layout() {
    let archive = cpio_newc(&[CpioEntry {
        name: "init",
        mode: 0o100_755,
        rdev: (0, 0),
        data: b"abc",
    }]);

    // 110-byte header + "init\0" padded to 116, then 3 data bytes padded to 120.
    assert_eq!(&archive[..6], b"070701");
    assert_eq!(&archive[6..14], b"00000001");
    assert_eq!(&archive[14..22], b"000081ed");
    assert_eq!(&archive[54..62], b"00000003");
    assert_eq!(&archive[94..102], b"00000005");
    assert_eq!(&archive[110..115], b"init\0");
    assert_eq!(&archive[116..119], b"abc");
    assert_eq!(&archive[120..126], b"070701");
    assert_eq!(archive.len() % 4, 0);
    assert!(archive.windows(11).any(|w| w == b"TRAILER!!!\0"));
}
