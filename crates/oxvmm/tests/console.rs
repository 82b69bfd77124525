//! Byte-stream consoles on real KVM: COM1 on a Unix socket (`--serial socket=PATH`), which a
//! management daemon connects to for `virsh console` and must be able to reconnect to, and the
//! virtio console, also across a snapshot restored in a new process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{LiveVmm, require_kvm, restore_running, snapshot_and_kill, temp_dir};
use guests::protocol;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A client of oxvmm's console socket, reading whole lines.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects, retrying while oxvmm starts.
    fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot connect to {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Reads lines until one matches `want`; returns every line read, the match last.
    fn lines_until(&mut self, want: impl Fn(&str) -> bool, vmm: &LiveVmm) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut lines = Vec::new();
        let mut line = String::new();
        while Instant::now() < deadline {
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("the socket closed; lines so far: {lines:?}"),
                Ok(_) if line.ends_with('\n') => {
                    let done = want(line.trim_end());
                    lines.push(std::mem::take(&mut line).trim_end().to_string());
                    if done {
                        return lines;
                    }
                }
                // A partial line or a read timeout: keep what arrived and read on.
                Ok(_) | Err(_) => {}
            }
        }
        panic!(
            "no expected line within {TIMEOUT:?}; lines: {lines:?}\nstderr:\n{}",
            vmm.stderr()
        );
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }
}

/// The guest running `cmdline` with its `console` (`--serial` or `--console`) on a Unix
/// socket at `socket`, and the `extra` arguments.
fn spawn_with_socket(console: &str, cmdline: &str, socket: &Path, extra: &[&str]) -> LiveVmm {
    require_kvm();
    let backend = format!("socket={}", socket.display());
    let mut args = vec![
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        cmdline,
        console,
        &backend,
    ];
    args.extend_from_slice(extra);
    LiveVmm::spawn(&args)
}

#[test]
fn kvm_serial_socket_carries_the_echo_both_ways() {
    let dir = temp_dir("serial-socket");
    let socket = dir.join("console.sock");
    let mut vmm = spawn_with_socket("--serial", "serial-echo", &socket, &[]);

    let mut client = Client::connect(&socket);
    let early = client.lines_until(|l| l == protocol::SERIAL_ECHO_WAITING, &vmm);
    client.send(b"hello-socket\n");
    let result = client.lines_until(|l| l.starts_with("TEST serial-echo "), &vmm);

    assert!(
        early.iter().any(|l| l.starts_with("oxguest: started")),
        "output from before the connection was replayed: {early:?}"
    );
    assert_eq!(
        result.last().unwrap(),
        "TEST serial-echo PASS got=hello-socket"
    );
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    assert!(!socket.exists(), "oxvmm removes its socket when it exits");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_serial_socket_input_longer_than_the_fifo_is_not_lost() {
    let dir = temp_dir("serial-socket-long");
    let socket = dir.join("console.sock");
    let mut vmm = spawn_with_socket("--serial", "serial-echo", &socket, &[]);

    let mut client = Client::connect(&socket);
    client.lines_until(|l| l == protocol::SERIAL_ECHO_WAITING, &vmm);
    let mut input = vec![b'y'; 300];
    input.push(b'\n');
    client.send(&input);
    client.writer.shutdown(std::net::Shutdown::Write).unwrap();
    let result = client.lines_until(|l| l.starts_with("TEST serial-echo "), &vmm);

    assert_eq!(
        result.last().unwrap(),
        &format!("TEST serial-echo PASS got={}", "y".repeat(120))
    );
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_serial_socket_survives_a_reconnecting_client() {
    let dir = temp_dir("serial-socket-reconnect");
    let socket = dir.join("console.sock");
    let mut vmm = spawn_with_socket("--serial", "serial-echo", &socket, &[]);

    // The daemon connects, sees the prompt, goes away and comes back.
    let mut first = Client::connect(&socket);
    first.lines_until(|l| l == protocol::SERIAL_ECHO_WAITING, &vmm);
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let mut second = Client::connect(&socket);
    second.send(b"after-reconnect\n");
    let result = second.lines_until(|l| l.starts_with("TEST serial-echo "), &vmm);

    assert_eq!(
        result,
        ["TEST serial-echo PASS got=after-reconnect"],
        "the second client gets only what the first did not"
    );
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_serial_socket_output_is_kept_while_no_client_is_connected() {
    let dir = temp_dir("serial-socket-gap");
    let socket = dir.join("console.sock");
    let mut vmm = spawn_with_socket("--serial", "counter", &socket, &[]);

    let mut first = Client::connect(&socket);
    let before = first.lines_until(|l| protocol::parse_counter_line(l).is_some(), &vmm);
    drop(first);
    // The counter prints ~4 lines a second: a few are written with no client connected.
    std::thread::sleep(Duration::from_millis(1200));
    let mut second = Client::connect(&socket);
    let mut after = Vec::new();
    while after.len() < 6 {
        let lines = second.lines_until(|l| protocol::parse_counter_line(l).is_some(), &vmm);
        after.push(protocol::parse_counter_line(lines.last().unwrap()).unwrap());
    }
    vmm.kill();

    let last_before = protocol::parse_counter_line(before.last().unwrap()).unwrap();
    let mut expected = last_before;
    for count in after {
        expected += protocol::COUNTER_LINE_INTERVAL;
        assert_eq!(count, expected, "a counter line was lost or repeated");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The guest's virtio-console lines (see guests/oxguest/virtio_console.h).
const CONSOLE_HELLO: &str = "oxguest: hello from virtio-console";
const CONSOLE_WAITING: &str = "oxguest: virtio-console waiting for a line";

#[test]
fn kvm_virtio_console_echoes_a_line_through_its_socket() {
    let dir = temp_dir("virtio-console-socket");
    let socket = dir.join("vc.sock");
    let mut vmm = spawn_with_socket("--console", "console-echo", &socket, &[]);

    let mut client = Client::connect(&socket);
    client.lines_until(|l| l == CONSOLE_WAITING, &vmm);
    client.send(b"over-virtio\n");
    let echo = client.lines_until(|l| l.starts_with("echo: "), &vmm);
    let result = vmm.expect_line(|l| l.starts_with("TEST console-echo "), TIMEOUT);

    assert_eq!(echo, ["echo: over-virtio"]);
    assert_eq!(result, "TEST console-echo PASS got=over-virtio");
    assert!(
        vmm.seen
            .iter()
            .any(|l| l.starts_with("oxguest: virtio-console 00:")),
        "{:?}",
        vmm.seen
    );
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_virtio_console_input_typed_early_waits_for_the_driver() {
    let dir = temp_dir("virtio-console-early");
    let socket = dir.join("vc.sock");
    // console-write first: the device is running but no receive buffer is posted when the
    // line arrives; console-echo opens the device again later and must still get it.
    let mut vmm = spawn_with_socket("--console", "console-write console-echo", &socket, &[]);

    let mut client = Client::connect(&socket);
    client.lines_until(|l| l == CONSOLE_HELLO, &vmm);
    client.send(b"typed-early\n");
    let result = vmm.expect_line(|l| l.starts_with("TEST console-echo "), TIMEOUT);
    let echo = client.lines_until(|l| l.starts_with("echo: "), &vmm);

    assert_eq!(result, "TEST console-echo PASS got=typed-early");
    assert_eq!(echo.last().unwrap(), "echo: typed-early");
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_virtio_console_file_receives_the_guest_output() {
    require_kvm();
    let dir = temp_dir("virtio-console-file");
    let file = dir.join("vc.log");
    std::fs::write(&file, "kept\n").unwrap();
    let console = format!("file={}", file.display());

    let run = common::run_guest("console-write console-write", &["--console", &console]);

    run.assert_exit(0);
    assert_eq!(
        run.stdout
            .matches("TEST console-write PASS bytes=35")
            .count(),
        2,
        "{run}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, format!("kept\n{CONSOLE_HELLO}\n{CONSOLE_HELLO}\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_virtio_console_scenario_fails_cleanly_without_the_device() {
    let run = common::run_guest("console-write", &[]);

    run.assert_exit(0);
    assert_eq!(
        run.test_line("console-write"),
        "TEST console-write FAIL no virtio-console device"
    );
}

/// Snapshots the running VM behind `api` into `dir/s`, kills it (its console socket stays
/// behind, as after a crash) and restores the snapshot in a new process, running.
fn snapshot_kill_restore(vmm: &mut LiveVmm, api: &Path, dir: &Path, socket: &Path) -> LiveVmm {
    let snapshot = snapshot_and_kill(vmm, api, dir);
    assert!(socket.exists(), "a killed oxvmm leaves its socket behind");
    restore_running(&snapshot, dir)
}

#[test]
fn kvm_serial_socket_works_after_a_restore() {
    let dir = temp_dir("serial-socket-snapshot");
    let socket = dir.join("console.sock");
    let api = dir.join("api.sock");
    let mut vmm = spawn_with_socket(
        "--serial",
        "serial-echo",
        &socket,
        &["--api-socket", api.to_str().unwrap()],
    );
    let mut client = Client::connect(&socket);
    client.lines_until(|l| l == protocol::SERIAL_ECHO_WAITING, &vmm);

    let mut restored = snapshot_kill_restore(&mut vmm, &api, &dir, &socket);
    drop(client);
    let mut client = Client::connect(&socket);
    client.send(b"after-restore\n");
    let result = client.lines_until(|l| l.starts_with("TEST serial-echo "), &restored);

    assert_eq!(
        result.last().unwrap(),
        "TEST serial-echo PASS got=after-restore"
    );
    assert_eq!(restored.wait(TIMEOUT), Some(0));
    assert!(
        !socket.exists(),
        "the restored oxvmm removes its socket when it exits"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kvm_virtio_console_works_both_ways_after_a_restore() {
    let dir = temp_dir("virtio-console-snapshot");
    let socket = dir.join("vc.sock");
    let api = dir.join("api.sock");
    let mut vmm = spawn_with_socket(
        "--console",
        "console-echo",
        &socket,
        &["--api-socket", api.to_str().unwrap()],
    );
    let mut client = Client::connect(&socket);
    client.lines_until(|l| l == CONSOLE_WAITING, &vmm);
    // Half a line before the snapshot: the guest holds it in its buffer.
    client.send(b"before-");
    std::thread::sleep(Duration::from_millis(200));
    // The restored VM listens on the same path, replacing the killed one's stale socket.
    let mut restored = snapshot_kill_restore(&mut vmm, &api, &dir, &socket);
    drop(client);
    let mut client = Client::connect(&socket);
    client.send(b"after-restore\n");
    let echo = client.lines_until(|l| l.starts_with("echo: "), &restored);
    let result = restored.expect_line(|l| l.starts_with("TEST console-echo "), TIMEOUT);

    assert_eq!(echo.last().unwrap(), "echo: before-after-restore");
    assert_eq!(result, "TEST console-echo PASS got=before-after-restore");
    assert_eq!(restored.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
