//! The virtio-net and virtio-console scenarios' side of the protocol (see
//! `oxguest/virtio_net.h` and `oxguest/virtio_console.h`).

/// EtherType of the frames `net-tx` sends and `net-rx` looks for (IEEE local experimental).
pub const NET_ETHERTYPE: u16 = 0x88B5;
/// Frames `net-tx` sends.
pub const NET_TX_FRAMES: u32 = 4;
/// Payload bytes of each `net-tx` frame.
pub const NET_PAYLOAD_LEN: usize = 64;
/// Printed by `net-rx` once its receive buffers are posted: send the frame after this line.
pub const NET_RX_WAITING: &str = "oxguest: net-rx waiting for a frame";
/// Printed by `net-echo` once its receive buffers are posted.
pub const NET_ECHO_WAITING: &str = "oxguest: net-echo waiting for frames";
/// Printed by `net-echo` after each echo, followed by the count so far.
pub const NET_ECHO_ECHOED: &str = "oxguest: net-echo echoed ";
/// Line `console-write` transmits on the virtio console (newline excluded).
pub const CONSOLE_HELLO: &str = "oxguest: hello from virtio-console";
/// Line `console-echo` transmits before it waits for input (newline excluded).
pub const CONSOLE_WAITING: &str = "oxguest: virtio-console waiting for a line";

/// Payload of `net-tx` frame `seq` (also what `net-bench` frame slot `seq` carries).
pub fn net_tx_payload(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (seq.wrapping_mul(17).wrapping_add(j as u32)) as u8)
        .collect()
}

/// `len=<n> fnv1a=0x<16 hex> skipped=<n>` of a passing `net-rx`: (len, hash, skipped).
pub fn parse_net_rx_details(details: &str) -> Option<(usize, u64, u32)> {
    let mut len = None;
    let mut hash = None;
    let mut skipped = None;
    for word in details.split_whitespace() {
        match word.split_once('=')? {
            ("len", v) => len = v.parse().ok(),
            ("fnv1a", v) => hash = u64::from_str_radix(v.strip_prefix("0x")?, 16).ok(),
            ("skipped", v) => skipped = v.parse().ok(),
            _ => return None,
        }
    }
    Some((len?, hash?, skipped?))
}

/// `frames=<n> bytes=<n> ns=<n>` of a passing `net-bench`: (frames, frame bytes, ns).
pub fn parse_net_bench_details(details: &str) -> Option<(u64, u32, u64)> {
    let mut values = [None; 3];
    for word in details.split_whitespace() {
        let (key, value) = word.split_once('=')?;
        let slot = ["frames", "bytes", "ns"].iter().position(|k| *k == key)?;
        values[slot] = value.parse::<u64>().ok();
    }
    Some((values[0]?, u32::try_from(values[1]?).ok()?, values[2]?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_guest() {
        let net = include_str!("../../oxguest/virtio_net.h");
        let console = include_str!("../../oxguest/virtio_console.h");
        let define = |source, name| super::super::tests::c_define(source, name).unwrap();

        assert_eq!(
            define(net, "NET_ETHERTYPE"),
            format!("{NET_ETHERTYPE:#06X}").replace("0X", "0x")
        );
        assert_eq!(define(net, "NET_TX_FRAMES"), NET_TX_FRAMES.to_string());
        assert_eq!(define(net, "NET_PAYLOAD_LEN"), NET_PAYLOAD_LEN.to_string());
        assert_eq!(define(net, "NET_RX_WAITING"), format!("{NET_RX_WAITING:?}"));
        assert_eq!(
            define(net, "NET_ECHO_WAITING"),
            format!("{NET_ECHO_WAITING:?}")
        );
        assert_eq!(
            define(net, "NET_ECHO_ECHOED"),
            format!("{NET_ECHO_ECHOED:?}")
        );
        assert_eq!(
            define(console, "CONSOLE_HELLO_LINE"),
            format!("{:?}", format!("{CONSOLE_HELLO}\n"))
        );
        assert_eq!(
            define(console, "CONSOLE_WAITING_LINE"),
            format!("{:?}", format!("{CONSOLE_WAITING}\n"))
        );
    }

    #[test]
    fn details_parse() {
        assert_eq!(
            parse_net_rx_details("len=46 fnv1a=0x00000000000000ff skipped=2"),
            Some((46, 0xff, 2))
        );
        assert_eq!(parse_net_rx_details("len=46"), None);
        assert_eq!(
            parse_net_bench_details("frames=10 bytes=60 ns=1234"),
            Some((10, 60, 1234))
        );
        assert_eq!(net_tx_payload(1, 3), vec![17, 18, 19]);
    }
}
