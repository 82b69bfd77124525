//! The `vsock-echo` and `vsock-connect` scenarios (guest side in `oxguest/virtio_vsock.h`): the
//! lines they print and the bytes they send, and their parsers.
//!
//! Both print the device line first ([`parse_vsock_device_line`]). `vsock-echo` then prints
//! [`VSOCK_ECHO_LISTENING`]`<first>-<last>`: connect after it. Each connection it finished
//! prints [`parse_vsock_echo_connection_line`]; after a restore it prints
//! [`VSOCK_TRANSPORT_RESET`]. `vsock-connect` sends [`vsock_hello`] on each connection and
//! prints the host's reply line ([`parse_vsock_connect_line`]).

use super::blk::key_values;

/// Guest-side port of `vsock-connect`'s first connection (the next ones count up).
pub const VSOCK_CONNECT_LOCAL_PORT: u32 = 49152;
/// Ports `vsock-ports=` may name at most.
pub const VSOCK_MAX_PORTS: u32 = 4;
/// Longest reply line `vsock-connect` keeps.
pub const VSOCK_REPLY_MAX: usize = 120;
/// Receive buffer the guest grants each connection (the most an echo holds unsent).
pub const VSOCK_GUEST_BUF_ALLOC: u32 = 65536;
/// Start of the line `vsock-echo` prints when it listens; `<first>-<last>` follows.
pub const VSOCK_ECHO_LISTENING: &str = "oxguest: vsock-echo listening on ports ";
/// Printed when the device says TRANSPORT_RESET (after a restore).
pub const VSOCK_TRANSPORT_RESET: &str = "oxguest: vsock transport reset";
/// FAIL reason without a virtio-vsock function.
pub const VSOCK_NO_DEVICE: &str = "no virtio-vsock device";

const DEVICE_PREFIX: &str = "oxguest: virtio-vsock ";
const ECHO_CONNECTION_PREFIX: &str = "oxguest: vsock-echo connection ";
const CONNECT_PREFIX: &str = "oxguest: vsock-connect ";

/// The line `vsock-connect` sends on its connection from guest port `local_port` to host port
/// `port` (newline included).
pub fn vsock_hello(cid: u64, local_port: u32, port: u32) -> String {
    format!("hello from cid {cid} port {local_port} to host port {port}\n")
}

/// `oxguest: virtio-vsock <bdf> features=0x<hex> queue_size=<n> cid=<cid>`: the CID.
pub fn parse_vsock_device_line(line: &str) -> Option<u64> {
    let rest = line.strip_prefix(DEVICE_PREFIX)?;
    let (_bdf, fields) = rest.split_once(' ')?;
    let [_features, _size, cid] = key_values(fields, ["features", "queue_size", "cid"])?;
    cid.parse().ok()
}

/// `(port, bytes)` of `oxguest: vsock-echo connection port=<port> bytes=<n>`.
pub fn parse_vsock_echo_connection_line(line: &str) -> Option<(u32, u64)> {
    let rest = line.strip_prefix(ECHO_CONNECTION_PREFIX)?;
    let [port, bytes] = key_values(rest, ["port", "bytes"])?;
    Some((port.parse().ok()?, bytes.parse().ok()?))
}

/// `(connections, bytes)` of `TEST vsock-echo PASS connections=<n> bytes=<n>`'s details.
pub fn parse_vsock_echo_details(details: &str) -> Option<(u32, u64)> {
    let [connections, bytes] = key_values(details, ["connections", "bytes"])?;
    Some((connections.parse().ok()?, bytes.parse().ok()?))
}

/// `(port, reply)` of `oxguest: vsock-connect port=<port> reply=<text>` (the text may hold
/// spaces; non-printable bytes arrive as `?`).
pub fn parse_vsock_connect_line(line: &str) -> Option<(u32, &str)> {
    let rest = line.strip_prefix(CONNECT_PREFIX)?.strip_prefix("port=")?;
    let (port, reply) = rest.split_once(" reply=")?;
    Some((port.parse().ok()?, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::c_define;

    #[test]
    fn constants_match_the_guest() {
        let header = include_str!("../../oxguest/virtio_vsock.h");
        let define = |name| c_define(header, name).unwrap_or_else(|| panic!("{name} defined"));

        assert_eq!(
            define("VSOCK_CONNECT_LOCAL_PORT"),
            VSOCK_CONNECT_LOCAL_PORT.to_string()
        );
        assert_eq!(define("VSOCK_MAX_PORTS"), VSOCK_MAX_PORTS.to_string());
        assert_eq!(define("VSOCK_REPLY_MAX"), VSOCK_REPLY_MAX.to_string());
        assert_eq!(
            define("VSOCK_GUEST_BUF_ALLOC"),
            VSOCK_GUEST_BUF_ALLOC.to_string()
        );
        let source = include_str!("../../oxguest/virtio_vsock.c");
        assert!(source.contains("\"hello from cid %llu port %u to host port %u\\n\""));
        assert!(source.contains(VSOCK_TRANSPORT_RESET));
    }

    #[test]
    fn lines_parse() {
        let device = "oxguest: virtio-vsock 00:03.0 features=0x100000000 queue_size=64 cid=7";
        assert_eq!(parse_vsock_device_line(device), Some(7));
        assert_eq!(
            parse_vsock_echo_connection_line("oxguest: vsock-echo connection port=5000 bytes=12"),
            Some((5000, 12))
        );
        assert_eq!(
            parse_vsock_echo_details("connections=2 bytes=99"),
            Some((2, 99))
        );
        assert_eq!(
            parse_vsock_connect_line("oxguest: vsock-connect port=6000 reply=hi there"),
            Some((6000, "hi there"))
        );
        assert_eq!(
            parse_vsock_connect_line("oxguest: vsock-connect port=x reply=a"),
            None
        );
        assert_eq!(
            vsock_hello(3, 49152, 6000),
            "hello from cid 3 port 49152 to host port 6000\n"
        );
    }
}
