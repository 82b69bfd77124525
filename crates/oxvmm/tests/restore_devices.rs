//! A restore command that names devices states what the VM has, on real KVM: a disk whose
//! file moved is read at its new path, a vsock device listens at a new socket path, and a
//! restore naming other devices than the snapshot's is refused (exit status 1, nothing left
//! running) with the difference named.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{LiveVmm, oxvmm, oxvmm_with_input, require_kvm, temp_dir};
use guests::protocol::{VSOCK_ECHO_LISTENING, VSOCK_TRANSPORT_RESET};
use vmm_api::{Client, SnapshotRequest};

const TIMEOUT: Duration = Duration::from_secs(60);

fn snapshot_and_kill(vmm: &mut LiveVmm, api: &Path, snap: &Path) {
    let client = Client::wait_for_socket(api, TIMEOUT).expect("API socket");
    client
        .snapshot(&SnapshotRequest {
            destination: snap.to_path_buf(),
            diff: false,
        })
        .unwrap_or_else(|e| panic!("snapshot: {e}\nstderr:\n{}", vmm.stderr()));
    // The restored VM opens the disk again: the first one must let go of its lock.
    vmm.kill();
}

/// Asserts `oxvmm --restore snap args…` exits with status 1 naming `expected`, and that it
/// left nothing serving its API socket.
fn assert_refused(snap: &Path, args: &[&str], expected: &str) {
    let api = snap.with_file_name("refused-api.sock");
    let mut argv = vec![
        "--restore",
        snap.to_str().unwrap(),
        "--resume",
        "--api-socket",
        api.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    let run = oxvmm(&argv, TIMEOUT);
    run.assert_exit(1);
    let message = format!("oxvmm: --restore {}: {expected}", snap.display());
    assert!(run.stderr.contains(&message), "want {message:?}\n{run}");
    assert!(
        UnixStream::connect(&api).is_err(),
        "a refused restore still serves its API"
    );
}

#[test]
fn kvm_restore_reads_a_moved_disk_and_refuses_other_devices() {
    use guests::protocol::{BLK_MIN_SECTORS, BLK_READ_SECTORS, blk_pattern, pattern_bytes};

    // Arrange: a VM reading its disk, snapshotted at the serial prompt; the disk then moves
    require_kvm();
    let dir = temp_dir("restore-moved-disk");
    let mut image = vec![0u8; BLK_MIN_SECTORS as usize * 512];
    let planted = pattern_bytes(BLK_READ_SECTORS, blk_pattern);
    image[..planted.len()].copy_from_slice(&planted);
    let disk = dir.join("disk.img");
    std::fs::write(&disk, &image).unwrap();
    let api = dir.join("api.sock");
    let disk_option = format!("path={}", disk.display());
    let mut vmm = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "blk-read serial-echo blk-read",
        "--disk",
        &disk_option,
        "--api-socket",
        api.to_str().unwrap(),
    ]);
    vmm.expect_line(|l| l.starts_with("TEST blk-read PASS"), TIMEOUT);
    vmm.expect_line(|l| l.contains("waiting up to 10 s for a line"), TIMEOUT);
    let snap = dir.join("snap");
    snapshot_and_kill(&mut vmm, &api, &snap);
    let moved = dir.join("moved.img");
    std::fs::rename(&disk, &moved).unwrap();
    let moved_option = format!("path={}", moved.display());
    let smaller = dir.join("smaller.img");
    std::fs::write(&smaller, &image[..image.len() - 512]).unwrap();
    let smaller_option = format!("path={}", smaller.display());

    // Act + Assert: other devices are refused, naming the difference
    assert_refused(
        &snap,
        &["--rng"],
        "the snapshot has 1 disk (vda), the restore command names none",
    );
    assert_refused(
        &snap,
        &["--disk", &format!("{moved_option},readonly=on")],
        "disk vda: readonly=off in the snapshot, on on the command line",
    );
    assert_refused(
        &snap,
        &["--disk", &smaller_option],
        &format!(
            "disk vda: {} holds {} bytes, the snapshot's disk held {} bytes",
            smaller.display(),
            image.len() - 512,
            image.len()
        ),
    );

    // Act: restore with the disk at its new path
    let run = oxvmm_with_input(
        &[
            "--restore",
            snap.to_str().unwrap(),
            "--resume",
            "--disk",
            &moved_option,
        ],
        b"go\n",
        TIMEOUT,
    );

    // Assert: the guest reads the moved file after the restore
    run.assert_exit(0);
    assert_eq!(run.passed("serial-echo"), "got=go", "{run}");
    assert_eq!(run.passed("blk-read"), "sectors=8", "{run}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Connects to the vsock socket and asks for guest `port`; `None` when oxvmm ends the
/// connection instead of answering `OK` (the guest refused it).
fn try_connect(socket: &Path, port: u32) -> Option<UnixStream> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        stream.read_exact(&mut byte).ok()?;
        line.push(byte[0]);
    }
    line.starts_with(b"OK ").then_some(stream)
}

/// Connects to guest `port` through `socket` (retrying while the guest, just started or
/// restored, is not listening yet) and checks the guest echoes `data`.
fn echo_through(socket: &Path, port: u32, data: &[u8], vmm: &LiveVmm) {
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = loop {
        if let Some(stream) = try_connect(socket, port) {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "guest port {port} never answered on {}\nstderr:\n{}",
            socket.display(),
            vmm.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("the echo");
    assert!(back == data, "the echo differs from what was sent");
}

#[test]
fn kvm_restore_serves_vsock_at_a_new_socket_path() {
    // Arrange: a vsock echo guest snapshotted after one exchange
    require_kvm();
    let dir = temp_dir("restore-vsock-path");
    let api = dir.join("api.sock");
    let old_socket = dir.join("old.sock");
    let mut vmm = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "vsock-echo vsock-port=5000 vsock-conns=0",
        "--vsock",
        &format!("cid=3,socket={}", old_socket.display()),
        "--api-socket",
        api.to_str().unwrap(),
    ]);
    vmm.expect_line(|l| l.starts_with(VSOCK_ECHO_LISTENING), TIMEOUT);
    echo_through(&old_socket, 5000, b"before the snapshot", &vmm);
    let snap = dir.join("snap");
    snapshot_and_kill(&mut vmm, &api, &snap);
    std::fs::remove_file(&old_socket).unwrap();
    assert_refused(
        &snap,
        &["--vsock", &format!("cid=4,socket={}", old_socket.display())],
        "vsock: cid 3 in the snapshot, 4 on the command line",
    );

    // Act: restore with the socket at a new path
    let new_socket = dir.join("new.sock");
    let mut restored = LiveVmm::spawn(&[
        "--restore",
        snap.to_str().unwrap(),
        "--resume",
        "--vsock",
        &format!("cid=3,socket={}", new_socket.display()),
    ]);
    restored.expect_line(|l| l == VSOCK_TRANSPORT_RESET, TIMEOUT);

    // Assert: the exchange works at the new path, and nothing listens at the old one
    echo_through(&new_socket, 5000, &[0x5a; 1500], &restored);
    assert!(!old_socket.exists(), "the old socket path was used");
    restored.kill();
    std::fs::remove_dir_all(dir).unwrap();
}
