//! What crosses the boundary between oxvmm and the guest besides the boot itself: a guest crash
//! (and oxvmm's report of it), the initrd through both ELF boot protocols, and standard input
//! forwarded to COM1. All run the bundled guest on real KVM.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{oxvmm, oxvmm_with_input, require_kvm, run_guest};
use guests::protocol;

const TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the test initrd: below the 64 KiB the guest hashes, so every byte is compared.
const INITRD_SIZE: usize = 40 * 1024 + 123;

/// A temporary file removed when dropped, also when the test fails.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("oxvmm-{tag}-{}-{nanos}", std::process::id());
        TempFile(std::env::temp_dir().join(name))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bytes that differ on every run (xorshift64 seeded from the clock and the process id).
fn random_bytes(len: usize) -> Vec<u8> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut state = (seed ^ u64::from(std::process::id()).rotate_left(32)) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Boots `initrd` with `--boot-protocol protocol` and checks what the guest read.
fn assert_initrd_reaches_the_guest(protocol_name: &str) {
    let initrd = random_bytes(INITRD_SIZE);
    let file = TempFile::new("initrd");
    std::fs::write(&file.0, &initrd).expect("write the initrd");

    let run = run_guest(
        "initrd",
        &["--initrd", file.path(), "--boot-protocol", protocol_name],
    );

    run.assert_exit(0);
    let started = format!("oxguest: started ({protocol_name})");
    assert!(run.stdout.contains(&started), "{run}");
    let report = protocol::parse_initrd_details(run.passed("initrd"))
        .unwrap_or_else(|| panic!("malformed initrd details\n{run}"));
    assert_eq!(report.size, initrd.len() as u64, "{run}");
    assert_eq!(
        report.fnv1a,
        protocol::initrd_fnv1a(&initrd),
        "the guest read other bytes than the file holds\n{run}"
    );
    assert_eq!(report.addr % 4096, 0, "initrd not page-aligned\n{run}");
}

#[test]
fn kvm_crash_exits_2_with_a_reason() {
    let run = run_guest("serial crash serial", &[]);

    run.assert_exit(2);
    run.passed("serial");
    assert!(run.stdout.contains(protocol::CRASHING), "{run}");
    assert_eq!(
        run.stdout.matches("TEST serial ").count(),
        1,
        "the guest went on after the crash\n{run}"
    );
    let reasons: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("oxvmm: the guest crashed:"))
        .collect();
    assert_eq!(reasons.len(), 1, "expected one crash line\n{run}");
    let reason = reasons[0]
        .trim_start_matches("oxvmm: the guest crashed:")
        .trim();
    assert!(!reason.is_empty(), "the crash line gives no reason\n{run}");
}

#[test]
fn kvm_initrd_reaches_the_guest_pvh() {
    assert_initrd_reaches_the_guest("pvh");
}

#[test]
fn kvm_initrd_reaches_the_guest_linux64() {
    assert_initrd_reaches_the_guest("linux64");
}

#[test]
fn kvm_initrd_too_big_is_refused() {
    require_kvm();
    let file = TempFile::new("big-initrd");
    let sparse = std::fs::File::create(&file.0).expect("create the initrd");
    sparse.set_len(200 << 20).expect("size the sparse initrd");
    drop(sparse);

    let run = oxvmm(
        &[
            "--kernel",
            guests::OXGUEST_PATH,
            "--cmdline",
            "initrd",
            "--memory",
            "64M",
            "--initrd",
            file.path(),
        ],
        TIMEOUT,
    );

    run.assert_exit(1);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "expected one line\n{run}");
    assert!(stderr.contains("--initrd"), "{run}");
    assert!(stderr.contains("does not fit"), "{run}");
    assert!(
        !run.stdout.contains("oxguest: started"),
        "the guest ran\n{run}"
    );
}

#[test]
fn kvm_serial_input_reaches_the_guest() {
    require_kvm();

    let run = oxvmm_with_input(
        &[
            "--kernel",
            guests::OXGUEST_PATH,
            "--cmdline",
            "serial-echo",
            "--serial",
            "stdio",
        ],
        b"hello-oxvmm\n",
        TIMEOUT,
    );

    run.assert_exit(0);
    assert_eq!(run.passed("serial-echo"), "got=hello-oxvmm", "{run}");
}

#[test]
fn kvm_serial_input_longer_than_the_fifo_is_not_lost() {
    require_kvm();
    // 300 bytes is far more than the UART's 64-byte FIFO: oxvmm must hold the rest until the
    // guest has read what is waiting. The guest keeps the first 120 bytes of a line.
    let mut input = vec![b'x'; 300];
    input.push(b'\n');

    let run = oxvmm_with_input(
        &["--kernel", guests::OXGUEST_PATH, "--cmdline", "serial-echo"],
        &input,
        TIMEOUT,
    );

    run.assert_exit(0);
    assert_eq!(
        run.passed("serial-echo"),
        format!("got={}", "x".repeat(120)),
        "{run}"
    );
}
