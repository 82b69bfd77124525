//! A real Linux guest (QEMU TCG, `-netdev vhost-user` with `virtio-net-pci`) reaches the host
//! through a TAP served by `oxvmm-vhost-user net`: it configures its interface, pings the
//! host's address on the TAP (which the host kernel answers, also with a 4 KiB echo), and
//! moves 512 KiB over TCP each way with busybox `nc`, checked by SHA-256 on both sides: the
//! guest's frames carry Linux's checksum offload (`VIRTIO_NET_F_CSUM`, partial checksums the
//! TAP completes) and segmentation offload where the TAP took them.
//!
//! Two things Debian 12's QEMU 7.2 needs: its virtio-net sends `SET_VRING_ENABLE` before
//! `SET_FEATURES`, which the back-end's relay holds and replays (`src/reorder.rs`); and the
//! device runs with `vectors=0` (INTx), because under TCG QEMU 7.2 crashes starting
//! vhost-user-net with MSI-X (`msix_set_vector_notifiers` unmasks through an irqfd table that
//! exists only with KVM; upstream fixed it in January 2023). See docs/vhost-user.md.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Backend, Guest, TempDir, initramfs, sha256};

/// The host's address on the TAP (the guest takes 10.77.0.2).
const HOST_ADDR: &str = "10.77.0.1";

/// The host's TCP ports on `HOST_ADDR`: the guest sends to the first, receives from the second.
const UPLOAD_PORT: u16 = 5771;
const DOWNLOAD_PORT: u16 = 5772;
/// Bytes moved each way over TCP.
const TCP_BYTES: usize = 512 * 1024;

/// The guest's side: each check prints `RESULT key=value`.
const CHECKS: &str = r#"
for i in $(seq 1 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
echo "RESULT driver=$(basename $(readlink /sys/class/net/eth0/device/driver))"
echo "RESULT features=$(cat /sys/class/net/eth0/device/features)"
ip link set lo up
ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up && echo "RESULT ifup=ok"
if ping -c 3 -W 5 10.77.0.1 > /tmp/ping 2>&1; then echo "RESULT ping=ok"; else echo "RESULT ping=failed"; fi
cat /tmp/ping
echo "RESULT received=$(grep -o '[0-9]* packets received' /tmp/ping | cut -d' ' -f1)"
ping -c 2 -s 4000 -W 5 10.77.0.1 > /tmp/big 2>&1 && echo "RESULT big_ping=ok" || echo "RESULT big_ping=failed"
cat /tmp/big
dd if=/dev/urandom of=/tmp/up bs=1024 count=512 2>/dev/null
echo "RESULT up_sum=$(sha256sum /tmp/up | cut -d' ' -f1)"
nc 10.77.0.1 5771 < /tmp/up > /dev/null && echo "RESULT up=ok" || echo "RESULT up=failed"
nc 10.77.0.1 5772 < /dev/null > /tmp/down && echo "RESULT down=ok" || echo "RESULT down=failed"
echo "RESULT down_sum=$(sha256sum /tmp/down | cut -d' ' -f1)"
"#;

/// A TAP on the host with an address, up, removed on drop.
struct HostTap {
    name: String,
}

impl HostTap {
    fn new(address: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("oxvu{}n{n}", std::process::id() % 1_000_000);
        net_util::Tap::create_persistent(&name)
            .unwrap_or_else(|e| panic!("cannot create TAP {name} (the test needs root): {e}"));
        let tap = Self { name };
        ip(&["addr", "add", address, "dev", &tap.name]);
        ip(&["link", "set", &tap.name, "up"]);
        tap
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        let _ = net_util::Tap::delete_persistent(&self.name);
    }
}

/// Runs `ip ARGS`; panics if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip (package iproute2)");
    assert!(
        output.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Accepts one connection on `listener` before `deadline`.
fn accept_before(listener: &TcpListener, deadline: Instant) -> Option<TcpStream> {
    listener.set_nonblocking(true).unwrap();
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return Some(stream);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

/// Receives what the guest sends to `UPLOAD_PORT` (one connection, read to its end).
fn receive_upload(deadline: Instant) -> JoinHandle<Option<Vec<u8>>> {
    let listener = TcpListener::bind((HOST_ADDR, UPLOAD_PORT)).unwrap();
    std::thread::spawn(move || {
        let mut stream = accept_before(&listener, deadline)?;
        let mut data = Vec::new();
        stream.read_to_end(&mut data).ok()?;
        Some(data)
    })
}

/// Sends `data` to the guest that connects to `DOWNLOAD_PORT`, then ends the connection.
fn serve_download(deadline: Instant, data: Vec<u8>) -> JoinHandle<Option<()>> {
    let listener = TcpListener::bind((HOST_ADDR, DOWNLOAD_PORT)).unwrap();
    std::thread::spawn(move || {
        let mut stream = accept_before(&listener, deadline)?;
        stream.write_all(&data).ok()?;
        stream.shutdown(Shutdown::Write).ok()?;
        // Wait for the guest to close its side: it has read everything by then.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).ok()?;
        Some(())
    })
}

#[test]
fn a_linux_guest_pings_and_moves_tcp_data_through_a_vhost_user_tap() {
    // Arrange
    let dir = TempDir::new("net");
    let tap = HostTap::new(&format!("{HOST_ADDR}/24"));
    let mut backend = Backend::start(&dir, "net", "net", &format!("tap={}", tap.name));
    let initrd = dir.join("initramfs.cpio");
    initramfs(&initrd, CHECKS);
    let deadline = Instant::now() + Duration::from_secs(120);
    let upload = receive_upload(deadline);
    let download_data: Vec<u8> = (0..TCP_BYTES)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let download_sum = sha256(&download_data);
    let download = serve_download(deadline, download_data);
    let devices = [
        "-chardev".to_owned(),
        format!("socket,id=c0,path={}", backend.socket.display()),
        "-netdev".to_owned(),
        "vhost-user,id=n0,chardev=c0".to_owned(),
        "-device".to_owned(),
        "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:02,romfile=,vectors=0".to_owned(),
    ];

    // Act
    let guest = Guest::run(&initrd, &devices);

    // Assert
    eprintln!("{}\n[back-end log]\n{}", guest.console, backend.log());
    guest.assert_modules_loaded();
    assert_eq!(guest.result("driver"), "virtio_net");
    // Feature bits as the guest driver sees them (QEMU passes on what the back-end offers):
    // the guest sends partial checksums (CSUM, bit 0) and TCP segments up to 64 KiB
    // (HOST_TSO4, bit 11) that the TAP completes and segments.
    let features = guest.result("features");
    assert_eq!(
        features.as_bytes().first(),
        Some(&b'1'),
        "CSUM in {features}"
    );
    assert_eq!(
        features.as_bytes().get(11),
        Some(&b'1'),
        "HOST_TSO4 in {features}"
    );
    assert_eq!(guest.result("ifup"), "ok");
    assert_eq!(guest.result("ping"), "ok");
    assert_eq!(guest.result("received"), "3");
    assert_eq!(guest.result("big_ping"), "ok", "a 4 KiB echo spans chains");
    assert_eq!(guest.result("up"), "ok");
    let uploaded = upload.join().unwrap().expect("the guest's upload arrived");
    assert_eq!(uploaded.len(), TCP_BYTES);
    assert_eq!(sha256(&uploaded), guest.result("up_sum"));
    assert_eq!(guest.result("down"), "ok");
    assert_eq!(
        download.join().unwrap(),
        Some(()),
        "the download was served"
    );
    assert_eq!(guest.result("down_sum"), download_sum);
    backend.assert_alive();
}
