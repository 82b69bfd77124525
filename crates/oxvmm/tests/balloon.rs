//! virtio-balloon on real KVM, driven through the control API: inflating gives the guest's
//! pages back to the host (its RSS falls), deflating returns them.

mod common;

use std::time::Duration;

use common::{LiveVmm, require_kvm, temp_dir};
use vmm_api::Client;

const TIMEOUT: Duration = Duration::from_secs(60);

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib >> 10
}

#[test]
fn kvm_balloon_inflate_returns_memory_to_the_host_and_deflate_gives_it_back() {
    require_kvm();
    let dir = temp_dir("balloon");
    let socket = dir.join("api.sock");
    let mut vmm = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "balloon-touch=64 balloon",
        "--memory",
        "256M",
        "--balloon",
        "size=0",
        "--api-socket",
        socket.to_str().unwrap(),
    ]);
    vmm.expect_line(|l| l.contains("balloon waiting for a target"), TIMEOUT);
    let client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();
    let before = rss_mib(vmm.pid());

    // Leave the guest 192 MiB of its 256: the balloon takes the 64 MiB it touched.
    client.balloon(192).unwrap();
    vmm.expect_line(|l| l.contains("balloon inflated"), TIMEOUT);
    let inflated = rss_mib(vmm.pid());
    client.balloon(256).unwrap();
    let done = vmm.expect_line(|l| l.starts_with("TEST balloon"), TIMEOUT);

    assert!(
        before >= 64,
        "the guest's 64 MiB are not resident: {before} MiB"
    );
    assert!(
        inflated + 48 <= before,
        "RSS went from {before} MiB to {inflated} MiB after inflating 64 MiB"
    );
    assert_eq!(done, "TEST balloon PASS inflated=16384 deflated=16384");
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_balloon_targets_beyond_memory_are_refused() {
    require_kvm();
    let dir = temp_dir("balloon-bad");
    let socket = dir.join("api.sock");
    let mut vmm = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "balloon",
        "--memory",
        "128M",
        "--balloon",
        "size=0",
        "--api-socket",
        socket.to_str().unwrap(),
    ]);
    vmm.expect_line(|l| l.contains("balloon waiting for a target"), TIMEOUT);
    let client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();

    let err = client.balloon(4096).unwrap_err();

    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("target_mib 4096"), "{err}");
    client.power_off().unwrap();
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}
