//! virtio-vsock on real KVM with Firecracker's host convention: host programs connect to the
//! `--vsock` socket (`CONNECT <port>\n`, answered `OK <port>\n`) and reach the bundled guest's
//! echo; the guest connects to host programs listening on `<socket>_<port>`; a restored VM
//! serves vsock again after its TRANSPORT_RESET; bad `--vsock` values are one-line errors.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{LiveVmm, oxvmm, require_kvm, run_guest, temp_dir};
use guests::protocol::{
    VSOCK_CONNECT_LOCAL_PORT, VSOCK_ECHO_LISTENING, VSOCK_TRANSPORT_RESET,
    parse_vsock_connect_line, parse_vsock_echo_connection_line, parse_vsock_echo_details,
    vsock_hello,
};
use vmm_api::{Client, SnapshotRequest};

const TIMEOUT: Duration = Duration::from_secs(60);
const CID: u64 = 3;

fn vsock_option(socket: &Path) -> String {
    format!("cid={CID},socket={}", socket.display())
}

/// Bytes a connection to guest port `port` sends (distinct per port and position).
fn pattern(port: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(port) as u8)
        .collect()
}

/// Connects to oxvmm's vsock socket and asks for guest port `port`; returns the stream and
/// the host-side port oxvmm answered.
fn connect_to_guest(socket: &Path, port: u32) -> (UnixStream, u32) {
    let mut stream = UnixStream::connect(socket).expect("connect to the vsock socket");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        stream.read_exact(&mut byte).expect("the OK line");
        line.push(byte[0]);
    }
    let text = String::from_utf8(line).unwrap();
    let local = text
        .strip_prefix("OK ")
        .and_then(|rest| rest.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not an OK line: {text:?}"));
    (stream, local)
}

/// Sends `data` in pieces and reads the echo; the guest's bytes must be exactly ours.
fn echo(stream: &mut UnixStream, data: &[u8]) {
    let mut back = vec![0u8; data.len()];
    let mut received = 0;
    for piece in data.chunks(1000) {
        stream.write_all(piece).unwrap();
        let want = received + piece.len();
        stream
            .read_exact(&mut back[received..want])
            .expect("the echo");
        received = want;
    }
    assert!(back == data, "the echo differs from what was sent");
}

/// Closes our side and waits for the guest to end the connection (EOF, nothing more).
fn close(mut stream: UnixStream) {
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "{} unexpected bytes after the echo",
        rest.len()
    );
}

/// Restores the snapshot in `snapshot`, running, and connects to guest `port` through
/// `socket` once the guest has handled the TRANSPORT_RESET of the restore (a connection made
/// before would be dropped by it) and the restored VM listens (the stale socket file of the
/// killed one is replaced as it starts).
fn restore_and_connect(snapshot: &Path, socket: &Path, port: u32) -> (LiveVmm, UnixStream) {
    let mut restored = LiveVmm::spawn(&["--restore", snapshot.to_str().unwrap(), "--resume"]);
    restored.expect_line(|l| l == VSOCK_TRANSPORT_RESET, TIMEOUT);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(stream) = UnixStream::connect(socket) {
            drop(stream);
            return (restored, connect_to_guest(socket, port).0);
        }
        assert!(Instant::now() < deadline, "the restored VM never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_echo(dir: &Path, cmdline: &str, extra: &[&str]) -> (LiveVmm, PathBuf) {
    require_kvm();
    let socket = dir.join("v.sock");
    let vsock = vsock_option(&socket);
    let mut args = vec![
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        cmdline,
        "--vsock",
        &vsock,
    ];
    args.extend_from_slice(extra);
    let mut vmm = LiveVmm::spawn(&args);
    vmm.expect_line(|l| l.starts_with(VSOCK_ECHO_LISTENING), TIMEOUT);
    (vmm, socket)
}

#[test]
fn kvm_vsock_host_connections_reach_two_guest_ports() {
    let dir = temp_dir("vsock-host");
    let cmdline = "vsock-echo vsock-port=5000 vsock-ports=2 vsock-conns=2";
    let (mut vmm, socket) = spawn_echo(&dir, cmdline, &[]);

    // Both connections open at once, their data interleaved.
    let (mut first, first_local) = connect_to_guest(&socket, 5000);
    let (mut second, second_local) = connect_to_guest(&socket, 5001);
    let (a, b) = (pattern(5000, 6000), pattern(5001, 3500));
    echo(&mut first, &a[..2000]);
    echo(&mut second, &b);
    echo(&mut first, &a[2000..]);
    close(first);
    close(second);

    let pass = vmm.expect_line(|l| l.starts_with("TEST vsock-echo "), TIMEOUT);
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    assert_ne!(first_local, second_local);
    let details = pass
        .strip_prefix("TEST vsock-echo PASS ")
        .unwrap_or_else(|| panic!("{pass}"));
    assert_eq!(parse_vsock_echo_details(details), Some((2, 9500)));
    let connections: Vec<(u32, u64)> = vmm
        .seen
        .iter()
        .filter_map(|l| parse_vsock_echo_connection_line(l))
        .collect();
    assert_eq!(connections, [(5000, 6000), (5001, 3500)]);
    assert!(!socket.exists(), "oxvmm removes its socket when it exits");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A host program on `<socket>_<port>`: reads the guest's line, checks it, answers one line,
/// and waits for the guest to close. Returns what it received.
fn serve_one(listener: UnixListener, port: u32, reply: String) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the guest's connection");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (&stream).write_all(reply.as_bytes()).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "port {port}: bytes after the line");
        line
    })
}

#[test]
fn kvm_vsock_guest_connections_reach_two_host_ports() {
    require_kvm();
    let dir = temp_dir("vsock-guest");
    let socket = dir.join("v.sock");
    let ports = [6000u32, 6001];
    let servers: Vec<_> = ports
        .iter()
        .map(|&port| {
            let listener = UnixListener::bind(dir.join(format!("v.sock_{port}"))).unwrap();
            serve_one(
                listener,
                port,
                format!("reply to {port}: \u{7f}ok {}\n", port * 3),
            )
        })
        .collect();

    let run = run_guest(
        "vsock-connect vsock-port=6000 vsock-ports=2",
        &["--vsock", &vsock_option(&socket)],
    );

    run.assert_exit(0);
    assert_eq!(run.passed("vsock-connect"), "connections=2", "{run}");
    for (i, (server, port)) in servers.into_iter().zip(ports).enumerate() {
        let local = VSOCK_CONNECT_LOCAL_PORT + i as u32;
        assert_eq!(server.join().unwrap(), vsock_hello(CID, local, port));
        let reply = run
            .stdout
            .lines()
            .find_map(|l| parse_vsock_connect_line(l).filter(|(p, _)| *p == port))
            .unwrap_or_else(|| panic!("no reply line for {port}\n{run}"));
        // DEL (0x7f) is not printable: the guest shows it as '?'.
        assert_eq!(reply.1, format!("reply to {port}: ?ok {}", port * 3));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_vsock_guest_connection_to_a_port_nobody_serves_is_refused() {
    require_kvm();
    let dir = temp_dir("vsock-refused");
    let socket = dir.join("v.sock");

    let run = run_guest(
        "vsock-connect vsock-port=6100",
        &["--vsock", &vsock_option(&socket)],
    );

    run.assert_exit(0);
    let line = run.test_line("vsock-connect");
    assert!(
        line.contains("FAIL host port 6100 refused the connection"),
        "{run}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_vsock_exchange_works_after_restore() {
    let dir = temp_dir("vsock-restore");
    let api = dir.join("api.sock");
    let api_text = api.to_str().unwrap().to_string();
    let cmdline = "vsock-echo vsock-port=5000 vsock-conns=0";
    let (mut vmm, socket) = spawn_echo(&dir, cmdline, &["--api-socket", &api_text]);
    let client = Client::wait_for_socket(&api, TIMEOUT).expect("API socket");
    let (mut stream, _) = connect_to_guest(&socket, 5000);
    echo(&mut stream, &pattern(1, 1500));
    // A connection left open: the restored guest must drop it on TRANSPORT_RESET.
    let snap = dir.join("snap");
    client
        .snapshot(&SnapshotRequest {
            destination: snap.clone(),
            diff: false,
        })
        .expect("snapshot");
    vmm.kill();
    drop(stream);
    assert!(
        socket.exists(),
        "a killed oxvmm leaves its socket file behind"
    );

    let (mut restored, mut stream) = restore_and_connect(&snap, &socket, 5000);
    echo(&mut stream, &pattern(2, 2500));
    close(stream);

    let line = restored.expect_line(|l| parse_vsock_echo_connection_line(l).is_some(), TIMEOUT);
    assert_eq!(parse_vsock_echo_connection_line(&line), Some((5000, 2500)));
    restored.kill();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_vsock_exchange_works_after_restoring_a_diff_snapshot() {
    // Arrange: a full snapshot before any traffic, traffic (the device writes receive
    // buffers and used rings), then a diff snapshot on top
    let dir = temp_dir("vsock-diff");
    let api = dir.join("api.sock");
    let api_text = api.to_str().unwrap().to_string();
    let cmdline = "vsock-echo vsock-port=5000 vsock-conns=0";
    let (mut vmm, socket) = spawn_echo(&dir, cmdline, &["--api-socket", &api_text]);
    let client = Client::wait_for_socket(&api, TIMEOUT).expect("API socket");
    let snapshot = |destination: std::path::PathBuf, diff: bool| {
        client
            .snapshot(&SnapshotRequest { destination, diff })
            .expect("snapshot")
    };
    snapshot(dir.join("full"), false);
    let (mut stream, _) = connect_to_guest(&socket, 5000);
    echo(&mut stream, &pattern(3, 3000));
    close(stream);
    vmm.expect_line(|l| parse_vsock_echo_connection_line(l).is_some(), TIMEOUT);
    let diff = dir.join("diff");
    snapshot(diff.clone(), true);
    vmm.kill();

    // Act
    let (mut restored, mut stream) = restore_and_connect(&diff, &socket, 5000);
    echo(&mut stream, &pattern(4, 2000));
    close(stream);

    // Assert: the guest, restored from the diff, served a whole new connection
    let line = restored.expect_line(|l| parse_vsock_echo_connection_line(l).is_some(), TIMEOUT);
    assert_eq!(parse_vsock_echo_connection_line(&line), Some((5000, 2000)));
    restored.kill();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_vsock_socket_in_use_is_refused() {
    require_kvm();
    let dir = temp_dir("vsock-in-use");
    let socket = dir.join("v.sock");
    let _owner = UnixListener::bind(&socket).unwrap();

    let run = oxvmm(
        &[
            "--kernel",
            guests::OXGUEST_PATH,
            "--vsock",
            &vsock_option(&socket),
        ],
        Duration::from_secs(30),
    );

    run.assert_exit(1);
    assert!(
        run.stderr.contains("--vsock") && run.stderr.contains("in use by another process"),
        "{run}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn assert_one_line_error(vsock: &str, expected: &str) {
    let run = oxvmm(
        &["--kernel", guests::OXGUEST_PATH, "--vsock", vsock],
        Duration::from_secs(30),
    );
    run.assert_exit(1);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "expected one line\n{run}");
    assert!(stderr.starts_with("oxvmm: --vsock"), "{run}");
    assert!(stderr.contains(expected), "expected {expected:?}\n{run}");
}

#[test]
fn bad_vsock_values_are_one_line_errors() {
    for cid in ["0", "1", "2", "4294967295"] {
        assert_one_line_error(&format!("cid={cid},socket=/tmp/v.sock"), "reserved");
    }
    assert_one_line_error("cid=3", "socket=PATH is required");
    assert_one_line_error("socket=/tmp/v.sock", "cid=N is required");
    let long = format!("cid=3,socket=/tmp/{}", "x".repeat(103));
    assert_one_line_error(&long, "a Unix socket path holds at most 107");
}
