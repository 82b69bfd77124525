//! `<vsock model='virtio'>` under a real oxvirtd: an automatic CID is the lowest free one
//! (3, then 4 while the first guest runs) and shows in the live XML, a fixed CID is kept, host
//! programs reach the bundled guest's `vsock-echo` through `<runtime>/domains/<name>.vsock.sock`
//! (Firecracker's `CONNECT <port>\n` / `OK <port>\n`), and the socket goes with the VM.
//!
//! Needs /dev/kvm, `virsh` (libvirt-clients) and the oxvmm binary built in the same target
//! directory (`cargo build -p oxvmm`).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::daemon::{TIMEOUT, TestDaemon};
use common::require_kvm;
use guests::protocol::{VSOCK_ECHO_LISTENING, parse_vsock_device_line};

const PORT: u32 = 5000;

/// The vsock device of a domain with an automatic CID.
const AUTO_CID: &str = "<vsock model='virtio'><cid auto='yes'/></vsock>";

/// Where the guest of `name` writes COM1.
fn serial_file(daemon: &TestDaemon, name: &str) -> PathBuf {
    daemon.root.join(format!("{name}.serial"))
}

/// The bundled guest echoing on vsock port [`PORT`] for `conns` connections (0: until it is
/// destroyed), COM1 to a file (so the test sees when it listens), with `vsock` as its vsock
/// device.
fn echo_xml(daemon: &TestDaemon, name: &str, conns: u32, vsock: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>64</memory>\n  \
         <vcpu>1</vcpu>\n  <os>\n    <type>hvm</type>\n    <kernel>{}</kernel>\n    \
         <cmdline>vsock-echo vsock-port={PORT} vsock-conns={conns}</cmdline>\n  </os>\n  \
         <features><acpi/><apic/></features>\n  <devices>\n    <serial type='file'>\
         <source path='{}'/></serial>\n    {vsock}\n  </devices>\n</domain>\n",
        guests::OXGUEST_PATH,
        serial_file(daemon, name).display()
    )
}

/// The vsock socket oxvirtd gives domain `name`.
fn vsock_socket(daemon: &TestDaemon, name: &str) -> PathBuf {
    daemon
        .runtime_dir
        .join("domains")
        .join(format!("{name}.vsock.sock"))
}

/// Defines and starts `name`, waits until its guest listens; returns the CID the guest read
/// from its device.
fn start_echo(daemon: &TestDaemon, name: &str, conns: u32, vsock: &str) -> u64 {
    daemon.define(name, &echo_xml(daemon, name, conns, vsock));
    daemon.virsh_ok(&["start", name]);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let serial = std::fs::read_to_string(serial_file(daemon, name)).unwrap_or_default();
        if serial.contains(VSOCK_ECHO_LISTENING) {
            return serial
                .lines()
                .find_map(parse_vsock_device_line)
                .unwrap_or_else(|| panic!("{name}: no device line:\n{serial}"));
        }
        assert!(
            Instant::now() < deadline,
            "{name} never listened; serial:\n{serial}\ndaemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The `<cid .../>` element of `name`'s XML (`--inactive` or live).
fn cid_element(daemon: &TestDaemon, name: &str, inactive: bool) -> String {
    let mut args = vec!["dumpxml", name];
    if inactive {
        args.push("--inactive");
    }
    let xml = daemon.virsh_ok(&args);
    let start = xml
        .find("<cid ")
        .unwrap_or_else(|| panic!("no <cid> in:\n{xml}"));
    let end = start + xml[start..].find("/>").expect("<cid .../>") + 2;
    xml[start..end].to_string()
}

/// Connects through the domain's vsock socket to guest port [`PORT`], sends `data` and checks
/// the guest sends exactly it back, then closes and expects nothing more.
fn echo_through(socket: &Path, data: &[u8]) {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(format!("CONNECT {PORT}\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        stream.read_exact(&mut byte).expect("the OK line");
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    assert!(line.starts_with("OK "), "not an OK line: {line:?}");

    stream.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("the echo");
    assert!(back == data, "the echo differs from what was sent");
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
}

#[test]
fn automatic_vsock_cids_are_the_lowest_free_and_reach_the_guest_kvm() {
    // Arrange
    require_kvm();
    let mut daemon = TestDaemon::start("vsock");
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 1) as u8).collect();
    let (first_socket, second_socket) = (vsock_socket(&daemon, "va"), vsock_socket(&daemon, "vb"));

    // Act + Assert: two guests get 3 and 4, shown live only, and echo.
    assert_eq!(start_echo(&daemon, "va", 0, AUTO_CID), 3);
    assert_eq!(start_echo(&daemon, "vb", 0, AUTO_CID), 4);
    assert_eq!(
        cid_element(&daemon, "va", false),
        "<cid auto='yes' address='3'/>"
    );
    assert_eq!(
        cid_element(&daemon, "vb", false),
        "<cid auto='yes' address='4'/>"
    );
    assert_eq!(cid_element(&daemon, "va", true), "<cid auto='yes'/>");
    echo_through(&first_socket, &data);
    echo_through(&second_socket, &data[..100]);

    // A restarted daemon still knows the CIDs of the guests it adopted.
    daemon.kill9();
    daemon.restart();
    assert_eq!(
        cid_element(&daemon, "vb", false),
        "<cid auto='yes' address='4'/>"
    );
    assert_eq!(start_echo(&daemon, "vc", 0, AUTO_CID), 5);
    echo_through(&first_socket, &data[..10]);

    // Destroying a guest removes its socket and frees its CID.
    daemon.virsh_ok(&["destroy", "va"]);
    assert!(
        !first_socket.exists(),
        "{} outlived its VM",
        first_socket.display()
    );
    assert_eq!(cid_element(&daemon, "va", false), "<cid auto='yes'/>");
    assert_eq!(start_echo(&daemon, "vd", 0, AUTO_CID), 3);
    for name in ["vb", "vc", "vd"] {
        daemon.virsh_ok(&["destroy", name]);
        let socket = vsock_socket(&daemon, name);
        assert!(!socket.exists(), "{} outlived its VM", socket.display());
    }
    assert!(!second_socket.exists());
}

#[test]
fn a_fixed_vsock_cid_is_kept_and_an_automatic_one_avoids_it_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("vsockfix");

    // Act
    let fixed_cid = start_echo(
        &daemon,
        "vf",
        0,
        "<vsock model='virtio'><cid auto='no' address='3'/></vsock>",
    );
    let auto_cid = start_echo(&daemon, "vg", 0, AUTO_CID);
    echo_through(&vsock_socket(&daemon, "vf"), b"hello over vsock");

    // Assert
    assert_eq!((fixed_cid, auto_cid), (3, 4));
    assert_eq!(
        cid_element(&daemon, "vf", false),
        "<cid auto='no' address='3'/>"
    );
    assert_eq!(
        cid_element(&daemon, "vf", true),
        "<cid auto='no' address='3'/>"
    );
    assert_eq!(
        cid_element(&daemon, "vg", false),
        "<cid auto='yes' address='4'/>"
    );
    daemon.virsh_ok(&["destroy", "vf"]);
    daemon.virsh_ok(&["destroy", "vg"]);
    assert!(!vsock_socket(&daemon, "vf").exists());
    assert!(!vsock_socket(&daemon, "vg").exists());
}

#[test]
fn a_fixed_vsock_cid_of_seven_reaches_the_guest_until_it_powers_off_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("vsock7");
    let socket = vsock_socket(&daemon, "v7");
    let cid = start_echo(
        &daemon,
        "v7",
        1,
        "<vsock model='virtio'><cid auto='no' address='7'/></vsock>",
    );
    let live = cid_element(&daemon, "v7", false);

    // Act: the guest powers off after its one connection.
    echo_through(&socket, b"seven");
    daemon.wait_state("v7", "shut off (shutdown)");

    // Assert
    assert_eq!(cid, 7);
    assert_eq!(live, "<cid auto='no' address='7'/>");
    assert!(!socket.exists(), "{} outlived its VM", socket.display());
}
