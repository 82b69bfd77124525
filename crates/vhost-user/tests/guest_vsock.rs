//! A real Linux guest (QEMU TCG, `vhost-user-vsock-pci`) talks to host programs through
//! `oxvmm-vhost-user vsock` and its Firecracker-style Unix sockets: the guest connects to a
//! host program listening on `UDS_<port>`, a host program connects to the guest's listener
//! through `UDS` (`CONNECT <port>`), data flows both ways, the host's connection is closed
//! when the front-end goes away, and a second QEMU on the same back-end process does it all
//! again. The guest's vsock client/server is a small C program compiled here (busybox has no
//! vsock support).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Backend, Guest, TempDir, initramfs_with, static_c_program, vhost_user_device};

const GUEST_CID: u32 = 42;
/// The host port the guest connects to (a host program listens on `UDS_1234`).
const HOST_PORT: u32 = 1234;
/// The guest port a host program connects to (`CONNECT 5000`).
const GUEST_PORT: u32 = 5000;

/// `vsockt cid` prints the guest's CID (from the device's configuration space);
/// `vsockt connect PORT TEXT` sends TEXT to host port PORT and prints the answer;
/// `vsockt serve PORT MARKER` accepts one connection, prints the line it reads, answers,
/// prints the next line, creates MARKER and keeps the connection open (the host must see it
/// closed by the back-end).
const GUEST_PROGRAM: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what) {
    printf("RESULT error=%s: %s\n", what, strerror(errno));
    return 1;
}

static void read_line(int fd, char *line, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap && read(fd, line + n, 1) == 1 && line[n] != '\n') {
        n++;
    }
    line[n] = 0;
}

static int send_text(int fd, const char *prefix, const char *text) {
    char out[300];
    int len = snprintf(out, sizeof out, "%s%s\n", prefix, text);
    return write(fd, out, len) == len ? 0 : -1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    alarm(30);
    if (argc == 2 && strcmp(argv[1], "cid") == 0) {
        unsigned int cid = 0;
        int fd = open("/dev/vsock", O_RDONLY);
        if (fd < 0 || ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) {
            return fail("cid");
        }
        printf("RESULT cid=%u\n", cid);
        return 0;
    }
    if (argc != 4) {
        return fail("usage");
    }
    struct sockaddr_vm addr;
    memset(&addr, 0, sizeof addr);
    addr.svm_family = AF_VSOCK;
    addr.svm_port = (unsigned int)atoi(argv[2]);
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0) {
        return fail("socket");
    }
    char line[256];
    if (strcmp(argv[1], "connect") == 0) {
        addr.svm_cid = VMADDR_CID_HOST;
        if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
            return fail("connect");
        }
        if (send_text(s, "", argv[3]) < 0) {
            return fail("write");
        }
        read_line(s, line, sizeof line);
        printf("RESULT reply=%s\n", line);
        return 0;
    }
    addr.svm_cid = VMADDR_CID_ANY;
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 1) < 0) {
        return fail("listen");
    }
    int c = accept(s, NULL, NULL);
    if (c < 0) {
        return fail("accept");
    }
    read_line(c, line, sizeof line);
    printf("RESULT served=%s\n", line);
    if (send_text(c, "guest-got:", line) < 0) {
        return fail("write");
    }
    read_line(c, line, sizeof line);
    printf("RESULT then=%s\n", line);
    close(open(argv[3], O_CREAT | O_WRONLY, 0644));
    pause();
    return 0;
}
"#;

const CHECKS: &str = r#"
/bin/vsockt cid
/bin/vsockt serve 5000 /tmp/served &
/bin/vsockt connect 1234 hello-from-guest
for i in $(seq 1 300); do [ -e /tmp/served ] && break; sleep 0.1; done
"#;

/// How long the host programs keep trying while the guest boots.
const HOST_DEADLINE: Duration = Duration::from_secs(120);

/// Reads up to a newline (not included); `None` at end of stream or on an error.
fn read_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into()),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
}

/// A host program serving one guest connection to [`HOST_PORT`]: reads a line, answers
/// `host-got:<line>`, returns the line (`None` if the guest never came).
fn host_service(listener: UnixListener, stop: Arc<AtomicBool>) -> JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if stop.load(Ordering::Acquire) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept on the port socket: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let line = read_line(&mut stream)?;
        stream
            .write_all(format!("host-got:{line}\n").as_bytes())
            .unwrap();
        Some(line)
    })
}

/// A host program's connection to the guest's listener, after one exchange.
struct HostConnection {
    /// What the guest answered to `hello-from-host`.
    reply: String,
    /// Still open right after the exchange (the guest program keeps it open).
    open_after_exchange: bool,
    stream: UnixStream,
}

/// A host program connecting to [`GUEST_PORT`] through the back-end's socket until the guest
/// listens (before that, the guest refuses and the stream is closed), then sending
/// `hello-from-host` and reading the answer.
fn host_connects(uds: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<Option<HostConnection>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + HOST_DEADLINE;
        while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
            if let Some(connection) = try_host_connect(&uds) {
                return Some(connection);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
}

fn try_host_connect(uds: &Path) -> Option<HostConnection> {
    let mut stream = UnixStream::connect(uds).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
        .ok()?;
    let ok = read_line(&mut stream)?;
    assert!(ok.starts_with("OK "), "answer to CONNECT: {ok:?}");
    stream.write_all(b"hello-from-host\n").unwrap();
    let reply = read_line(&mut stream).unwrap_or_default();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // The guest program waits for a second line before its guest powers off.
    let probe = stream.read(&mut [0u8; 1]);
    let open_after_exchange = matches!(
        probe,
        Err(ref e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    stream.write_all(b"bye\n").unwrap();
    Some(HostConnection {
        reply,
        open_after_exchange,
        stream,
    })
}

/// Waits until the back-end logged `count` front-end disconnections.
fn wait_for_disconnections(backend: &Backend, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = backend.log();
        if log.matches("front-end disconnected").count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} disconnections never logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_linux_guest_and_host_programs_connect_both_ways_and_a_second_guest_reconnects() {
    // Arrange
    let dir = TempDir::new("vsock");
    let uds = dir.join("v.sock");
    let mut backend = Backend::start(
        &dir,
        "vsock",
        "vsock",
        &format!("cid={GUEST_CID},uds={}", uds.display()),
    );
    let program = static_c_program(&dir, "vsockt", GUEST_PROGRAM);
    let initrd = dir.join("initramfs.cpio");
    initramfs_with(&initrd, CHECKS, &[("vsockt", program)]);
    let devices = vhost_user_device("c0", &backend.socket, "vhost-user-vsock-pci", "");
    let port_listener = UnixListener::bind(dir.join(&format!("v.sock_{HOST_PORT}"))).unwrap();

    for run in 1..=2 {
        // Act
        let stop = Arc::new(AtomicBool::new(false));
        let service = host_service(port_listener.try_clone().unwrap(), stop.clone());
        let connection = host_connects(uds.clone(), stop.clone());
        let guest = Guest::run(&initrd, &devices);
        stop.store(true, Ordering::Release);
        let served = service.join().unwrap();
        let connection = connection.join().unwrap();
        wait_for_disconnections(&backend, run);

        // Assert
        let context = format!(
            "run {run}:\n{}\n[back-end log]\n{}",
            guest.console,
            backend.log()
        );
        guest.assert_modules_loaded();
        assert_eq!(guest.result("cid"), GUEST_CID.to_string(), "{context}");
        assert_eq!(served.as_deref(), Some("hello-from-guest"), "{context}");
        assert_eq!(
            guest.result("reply"),
            "host-got:hello-from-guest",
            "{context}"
        );
        assert_eq!(guest.result("served"), "hello-from-host", "{context}");
        assert_eq!(guest.result("then"), "bye", "{context}");
        let mut connection =
            connection.unwrap_or_else(|| panic!("no CONNECT went through: {context}"));
        assert_eq!(connection.reply, "guest-got:hello-from-host", "{context}");
        assert!(connection.open_after_exchange, "{context}");
        // The front-end went away: the device was reset and closed the host's stream.
        connection
            .stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let end = connection.stream.read(&mut [0u8; 16]);
        assert!(matches!(end, Ok(0)), "{end:?}: {context}");
        backend.assert_alive();
    }
}
