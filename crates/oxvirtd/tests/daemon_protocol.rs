//! Malformed protocol packets on the daemon's socket: each gets an error reply or a closed
//! connection, and a python3-libvirt client on another connection keeps working throughout.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{TestDaemon, text};

const REMOTE_PROGRAM: u32 = 0x2000_8086;
const CALL: u32 = 0;
const STATUS_ERROR: u32 = 1;
/// `REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME`.
const LOOKUP_BY_NAME: u32 = 23;
/// `REMOTE_PROC_CONNECT_GET_URI`.
const GET_URI: u32 = 110;
/// `REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY`.
const EVENT_CALLBACK_REGISTER_ANY: u32 = 316;
/// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`.
const DOMAIN_EVENT_ID_LIFECYCLE: u32 = 0;
/// `VIR_ERR_RPC`, `VIR_ERR_NO_SUPPORT`.
const ERR_RPC: u32 = 39;
const ERR_NO_SUPPORT: u32 = 3;

/// A frame: length word, header, body.
fn frame(procedure: u32, serial: u32, body: &[u8]) -> Vec<u8> {
    let len = 28 + body.len() as u32;
    let mut out = Vec::new();
    for word in [len, REMOTE_PROGRAM, 1, procedure, CALL, serial, 0] {
        out.extend(word.to_be_bytes());
    }
    out.extend(body);
    out
}

fn connect(daemon: &TestDaemon) -> UnixStream {
    let stream = UnixStream::connect(daemon.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one reply frame: (procedure, serial, status, body).
fn read_reply(stream: &mut UnixStream) -> Option<(u32, u32, u32, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    let mut rest = vec![0u8; len - 4];
    stream.read_exact(&mut rest).ok()?;
    let word = |i: usize| u32::from_be_bytes(rest[i * 4..i * 4 + 4].try_into().unwrap());
    Some((word(2), word(4), word(5), rest[24..].to_vec()))
}

/// Whether the daemon closed the connection (reads end without data).
fn is_closed(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

/// The error code at the start of a `remote_error` body.
fn error_code(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[..4].try_into().unwrap())
}

#[test]
fn malformed_packets_are_refused_while_other_clients_keep_working() {
    // Arrange: a python client calling listAllDomains in a loop on its own connection.
    let daemon = TestDaemon::start("proto");
    daemon.define(
        "bystander",
        &common::daemon::guest_xml("bystander", "counter", ""),
    );
    let script = format!(
        "import libvirt, time\nc = libvirt.open({:?})\nok = 0\n\
         for i in range(40):\n    ok += len(c.listAllDomains()) == 1\n    time.sleep(0.025)\n\
         print('ok', ok)\n",
        daemon.uri()
    );
    let bystander = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");

    // Act + Assert: a length below the header size closes that connection.
    let mut bad_length = connect(&daemon);
    bad_length.write_all(&4u32.to_be_bytes()).unwrap();
    assert!(is_closed(&mut bad_length), "bad length");

    // An oversized frame (above libvirt's 16 MiB) closes it before anything is read.
    let mut oversized = connect(&daemon);
    let mut huge = frame(GET_URI, 1, &[]);
    huge[..4].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    oversized.write_all(&huge).unwrap();
    assert!(is_closed(&mut oversized), "oversized");

    // An unknown procedure gets an error reply and the connection stays up.
    let mut unknown = connect(&daemon);
    unknown.write_all(&frame(9999, 7, &[])).unwrap();
    let (procedure, serial, status, body) = read_reply(&mut unknown).expect("a reply");
    assert_eq!((procedure, serial, status), (9999, 7, STATUS_ERROR));
    assert_eq!(error_code(&body), ERR_NO_SUPPORT);
    unknown.write_all(&frame(GET_URI, 8, &[])).unwrap();
    let (_, serial, status, body) = read_reply(&mut unknown).expect("a reply");
    assert_eq!((serial, status), (8, 0), "still serving");
    assert!(String::from_utf8_lossy(&body).contains("oxvirt:///system"));

    // Garbage XDR (a string length far beyond the body) gets an RPC error reply.
    let mut garbage = connect(&daemon);
    garbage
        .write_all(&frame(LOOKUP_BY_NAME, 3, &[0xff, 0xff, 0xff, 0x00, 1, 2]))
        .unwrap();
    let (_, serial, status, body) = read_reply(&mut garbage).expect("a reply");
    assert_eq!((serial, status), (3, STATUS_ERROR));
    assert_eq!(error_code(&body), ERR_RPC);

    // A truncated frame followed by a hang-up.
    let mut truncated = connect(&daemon);
    truncated
        .write_all(&frame(GET_URI, 1, &[0; 64])[..40])
        .unwrap();
    drop(truncated);

    // The bystander never noticed.
    let out = bystander.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok 40",
        "{}",
        text(&out)
    );
    assert!(daemon.virsh_ok(&["list", "--all"]).contains("bystander"));
}

#[test]
fn a_connection_cannot_hold_more_than_1024_event_registrations() {
    // Arrange: lifecycle registrations for every domain (a null domain pointer).
    let daemon = TestDaemon::start("evcap");
    let mut client = connect(&daemon);
    let register_body = [DOMAIN_EVENT_ID_LIFECYCLE.to_be_bytes(), 0u32.to_be_bytes()].concat();
    let mut register = |serial: u32| {
        client
            .write_all(&frame(EVENT_CALLBACK_REGISTER_ANY, serial, &register_body))
            .unwrap();
        read_reply(&mut client).expect("a reply")
    };
    for serial in 1..=1024 {
        let (_, _, status, body) = register(serial);
        assert_eq!(
            status,
            0,
            "registration {serial}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // Act
    let (_, serial, status, body) = register(1025);

    // Assert: refused with a message naming the limit; other clients are served.
    assert_eq!((serial, status), (1025, STATUS_ERROR));
    let message = String::from_utf8_lossy(&body);
    assert!(message.contains("(1024)"), "{message}");
    assert!(daemon.virsh_ok(&["list", "--all"]).contains("Name"));
}
