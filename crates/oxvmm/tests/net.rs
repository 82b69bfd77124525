//! virtio-net on TAP devices, on real KVM: frames the guest sends arrive on the TAP, frames
//! the host sends through the TAP reach the guest, rate limits slow both directions without
//! losing frames, and a card keeps working in a VM restored from a snapshot. Each test
//! creates its own TAP (root and /dev/net/tun are needed) and deletes it, also when it fails.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{LiveVmm, require_kvm, restore_running, run_guest, snapshot_and_kill, temp_dir};
use guests::protocol;
use net_util::{PacketSocket, Tap};

const TIMEOUT: Duration = Duration::from_secs(60);
const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xaa, 0xbb, 0x01];
const GUEST_MAC_TEXT: &str = "02:00:00:aa:bb:01";

/// A persistent TAP that exists for one test, brought up, and deleted when dropped.
struct TestTap(String);

impl TestTap {
    fn new(tag: char) -> TestTap {
        require_kvm();
        let name = format!("oxnt{}{tag}", std::process::id() % 100_000);
        Tap::create_persistent(&name).unwrap_or_else(|e| panic!("cannot create TAP {name}: {e}"));
        // No IPv6 chatter from the host on the test link (best effort).
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        TestTap(name)
    }

    fn net_option(&self, extra: &str) -> String {
        format!("tap={}{extra}", self.0)
    }

    fn packets(&self) -> PacketSocket {
        PacketSocket::bind(&self.0).unwrap_or_else(|e| panic!("packet socket on {}: {e}", self.0))
    }
}

impl Drop for TestTap {
    fn drop(&mut self) {
        if let Err(e) = Tap::delete_persistent(&self.0) {
            eprintln!("cannot delete TAP {}: {e}", self.0);
        }
    }
}

/// Frames of the test EtherType that arrived on `socket` within `wait`.
fn test_frames(socket: &PacketSocket, wait: Duration) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(Some(n)) = socket.recv_incoming(&mut buf, wait) {
        if n >= 14 && buf[12..14] == protocol::NET_ETHERTYPE.to_be_bytes() {
            frames.push(buf[..n].to_vec());
        }
    }
    frames
}

#[test]
fn kvm_net_tx_frames_arrive_on_the_tap() {
    let tap = TestTap::new('t');
    let socket = tap.packets();

    let run = run_guest(
        "net-tx",
        &["--net", &tap.net_option(&format!(",mac={GUEST_MAC_TEXT}"))],
    );
    let frames = test_frames(&socket, Duration::from_millis(300));

    run.assert_exit(0);
    assert_eq!(
        run.passed("net-tx"),
        format!("frames=4 mac={GUEST_MAC_TEXT}"),
        "{run}"
    );
    assert_eq!(frames.len(), protocol::NET_TX_FRAMES as usize, "{run}");
    for (seq, frame) in frames.iter().enumerate() {
        assert_eq!(&frame[..6], &[0xff; 6], "broadcast");
        assert_eq!(&frame[6..12], &GUEST_MAC, "source MAC");
        assert_eq!(
            &frame[14..],
            protocol::net_tx_payload(seq as u32, protocol::NET_PAYLOAD_LEN),
            "frame {seq}"
        );
    }
}

#[test]
fn kvm_net_rx_frame_from_the_host_reaches_the_guest() {
    let tap = TestTap::new('r');
    let socket = tap.packets();
    let mut vmm = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "net-rx",
        "--net",
        &tap.net_option(&format!(",mac={GUEST_MAC_TEXT},id=lan")),
    ]);
    vmm.expect_line(|l| l == protocol::NET_RX_WAITING, TIMEOUT);
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut frame = GUEST_MAC.to_vec();
    frame.extend([0x02, 0, 0, 0, 0, 0x99]);
    frame.extend(protocol::NET_ETHERTYPE.to_be_bytes());
    frame.extend(&payload);

    socket.send(&frame).unwrap();
    let line = vmm.expect_line(|l| l.starts_with("TEST net-rx "), TIMEOUT);

    let details = line
        .strip_prefix("TEST net-rx PASS ")
        .unwrap_or_else(|| panic!("{line}"));
    let (len, hash, _skipped) = protocol::parse_net_rx_details(details).unwrap();
    assert_eq!(len, payload.len());
    assert_eq!(hash, protocol::fnv1a64(&payload));
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
}

#[test]
fn kvm_net_card_gets_a_random_local_mac_when_none_is_given() {
    let tap = TestTap::new('m');

    let run = run_guest("net-tx", &["--net", &tap.net_option("")]);

    run.assert_exit(0);
    let details = run.passed("net-tx");
    let mac = details.strip_prefix("frames=4 mac=").unwrap();
    assert!(mac.starts_with("02:") && mac.len() == 17, "{run}");
    assert_ne!(mac, "02:00:00:00:00:00");
}

#[test]
fn kvm_net_scenarios_fail_cleanly_without_a_card() {
    let run = run_guest("net-tx net-rx", &[]);

    run.assert_exit(0);
    assert_eq!(
        run.test_line("net-tx"),
        "TEST net-tx FAIL no virtio-net device"
    );
    assert_eq!(
        run.test_line("net-rx"),
        "TEST net-rx FAIL no virtio-net device"
    );
}

#[test]
fn kvm_net_bad_backends_are_refused_with_one_line() {
    require_kvm();
    let not_a_tap = run_guest("net-tx", &["--net", "fd=99"]);
    let bad_name = run_guest("net-tx", &["--net", "tap=bad/name"]);

    for run in [&not_a_tap, &bad_name] {
        run.assert_exit(1);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{run}");
        assert!(run.stderr.contains("--net"), "{run}");
        assert!(!run.stdout.contains("oxguest: started"), "{run}");
    }
}

fn tap_rx_packets(name: &str) -> u64 {
    let path = format!("/sys/class/net/{name}/statistics/rx_packets");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn kvm_net_bench_frames_all_reach_the_tap() {
    let tap = TestTap::new('b');
    let before = tap_rx_packets(&tap.0);

    let run = run_guest(
        "net-bench bench-frames=3000 bench-frame-bytes=100",
        &["--net", &tap.net_option("")],
    );

    run.assert_exit(0);
    let (frames, bytes, ns) = protocol::parse_net_bench_details(run.passed("net-bench"))
        .unwrap_or_else(|| panic!("malformed details\n{run}"));
    assert_eq!((frames, bytes), (3000, 100));
    assert!(ns > 0);
    assert_eq!(tap_rx_packets(&tap.0) - before, 3000, "{run}");
}

#[test]
fn kvm_net_bench_refuses_bad_options() {
    let tap = TestTap::new('o');

    let run = run_guest(
        "net-bench bench-frame-bytes=20",
        &["--net", &tap.net_option("")],
    );

    run.assert_exit(0);
    assert!(
        run.test_line("net-bench")
            .starts_with("TEST net-bench FAIL bad bench-frame-bytes="),
        "{run}"
    );
}

#[test]
fn kvm_net_bandwidth_limit_slows_the_transmit_and_loses_nothing() {
    let tap = TestTap::new('w');
    let before = tap_rx_packets(&tap.0);
    let (frames, frame_bytes, rate) = (1000u64, 100u64, 50u64 << 10);
    let started = Instant::now();

    let run = run_guest(
        &format!("net-bench bench-frames={frames} bench-frame-bytes={frame_bytes}"),
        &["--net", &tap.net_option(",bw=50K")],
    );

    let elapsed = started.elapsed();
    run.assert_exit(0);
    let (_, _, ns) = protocol::parse_net_bench_details(run.passed("net-bench"))
        .unwrap_or_else(|| panic!("malformed details\n{run}"));
    // The bucket starts with a second's worth; the rest goes at the rate.
    let expected = Duration::from_secs_f64((frames * frame_bytes - rate) as f64 / rate as f64);
    assert!(elapsed >= expected, "{elapsed:?} < {expected:?}\n{run}");
    // The guest's clock is the TSC calibrated on the PM timer: allow it a few percent.
    let guest = Duration::from_nanos(ns);
    assert!(
        guest >= expected.mul_f64(0.95),
        "{guest:?} < {expected:?}\n{run}"
    );
    assert_eq!(tap_rx_packets(&tap.0) - before, frames, "{run}");
}

/// A frame of the test EtherType from `source` to the guest, with payload `(seq, 0..len)`.
fn echo_request(source: [u8; 6], seq: u8, len: usize) -> Vec<u8> {
    let mut frame = GUEST_MAC.to_vec();
    frame.extend(source);
    frame.extend(protocol::NET_ETHERTYPE.to_be_bytes());
    frame.extend((0..len).map(|i| seq.wrapping_mul(31).wrapping_add(i as u8)));
    frame
}

/// Waits for the guest's echo of `request` (the same payload, addresses swapped) as the next
/// frame of the test EtherType.
fn expect_echo(socket: &PacketSocket, request: &[u8], vmm: &LiveVmm) {
    let mut want = request[6..12].to_vec();
    want.extend(GUEST_MAC);
    want.extend(&request[12..]);
    match next_test_frame(socket, TIMEOUT) {
        Some(frame) => assert_eq!(frame, want, "stderr:\n{}", vmm.stderr()),
        None => panic!("no echo within {TIMEOUT:?}\nstderr:\n{}", vmm.stderr()),
    }
}

/// The next frame of the test EtherType within `wait`.
fn next_test_frame(socket: &PacketSocket, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = socket.recv_incoming(&mut buf, left).ok()??;
        if n >= 14 && buf[12..14] == protocol::NET_ETHERTYPE.to_be_bytes() {
            return Some(buf[..n].to_vec());
        }
    }
}

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

fn spawn_echo(tap: &TestTap, frames: u32, net_extra: &str, extra: &[&str]) -> LiveVmm {
    let cmdline = format!("net-echo echo-frames={frames}");
    let net = tap.net_option(&format!(",mac={GUEST_MAC_TEXT}{net_extra}"));
    let mut args = vec![
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        &cmdline,
        "--net",
        &net,
    ];
    args.extend_from_slice(extra);
    let mut vmm = LiveVmm::spawn(&args);
    vmm.expect_line(|l| l == protocol::NET_ECHO_WAITING, TIMEOUT);
    vmm
}

#[test]
fn kvm_net_frame_limit_paces_both_directions_and_loses_nothing() {
    let tap = TestTap::new('p');
    let socket = tap.packets();
    let (frames, rate) = (20u8, 10u32);
    let mut vmm = spawn_echo(&tap, frames.into(), &format!(",ops={rate}"), &[]);
    let requests: Vec<_> = (0..frames)
        .map(|seq| echo_request(HOST_MAC, seq, 80))
        .collect();
    let started = Instant::now();

    for request in &requests {
        socket.send(request).unwrap();
    }
    for request in &requests {
        expect_echo(&socket, request, &vmm);
    }
    let elapsed = started.elapsed();
    let result = vmm.expect_line(|l| l.starts_with("TEST net-echo "), TIMEOUT);

    // Each direction starts with a second's worth of frames, then takes `rate` a second.
    let expected = Duration::from_secs_f64(f64::from(u32::from(frames) - rate) / f64::from(rate));
    assert!(elapsed >= expected, "{elapsed:?} < {expected:?}");
    assert_eq!(
        result,
        format!("TEST net-echo PASS frames={frames} skipped=0")
    );
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
}

/// Snapshots the running VM behind `api` into `dir/s`, kills it (the TAP takes one process
/// at a time: the first VM must let go of it), and restores the snapshot in a new process,
/// running; returns it once it answers on its own API socket.
fn snapshot_kill_restore(vmm: &mut LiveVmm, api: &Path, dir: &Path) -> LiveVmm {
    let snapshot = snapshot_and_kill(vmm, api, dir);
    restore_running(&snapshot, dir)
}

#[test]
fn kvm_net_card_works_both_ways_after_a_restore() {
    let tap = TestTap::new('s');
    let socket = tap.packets();
    let dir = temp_dir("net-snapshot");
    let api = dir.join("api.sock");
    let mut vmm = spawn_echo(&tap, 3, "", &["--api-socket", api.to_str().unwrap()]);
    let first = echo_request(HOST_MAC, 1, 100);
    socket.send(&first).unwrap();
    expect_echo(&socket, &first, &vmm);
    vmm.expect_line(|l| l.starts_with(protocol::NET_ECHO_ECHOED), TIMEOUT);

    let mut restored = snapshot_kill_restore(&mut vmm, &api, &dir);
    let later: Vec<_> = (2..4).map(|seq| echo_request(HOST_MAC, seq, 300)).collect();
    for request in &later {
        socket.send(request).unwrap();
        expect_echo(&socket, request, &restored);
    }
    let result = restored.expect_line(|l| l.starts_with("TEST net-echo "), TIMEOUT);

    assert_eq!(result, "TEST net-echo PASS frames=3 skipped=0");
    assert_eq!(restored.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
