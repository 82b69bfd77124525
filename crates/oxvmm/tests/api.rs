//! The control API of a real oxvmm on KVM: every route, its errors, and that the VM survives
//! bad requests.

mod common;

use std::time::Duration;

use common::{LiveVmm, require_kvm, spawn_guest_with_api, temp_dir};
use guests::protocol::{
    BLK_MIN_SECTORS, BLK_READ_SECTORS, BLK_WRITE_SECTORS, blk_pattern, pattern_bytes,
};
use vmm_api::{Client, ClientError, DiskCounters, VmState};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Boots the guest waiting for the power button, with the API on a fresh socket.
fn start_waiting_guest(name: &str, extra: &[&str]) -> (LiveVmm, Client, std::path::PathBuf) {
    require_kvm();
    start_guest(temp_dir(name), "wait-shutdown", extra)
}

/// Boots the guest with the API on a socket in `dir`; it runs `scenarios`, which end waiting
/// for the power button.
fn start_guest(
    dir: std::path::PathBuf,
    scenarios: &str,
    extra: &[&str],
) -> (LiveVmm, Client, std::path::PathBuf) {
    let socket = dir.join("api.sock");
    let mut vmm = spawn_guest_with_api(scenarios, &socket, extra);
    vmm.expect_line(|l| l.contains("waiting for the power button"), TIMEOUT);
    let client = Client::wait_for_socket(&socket, TIMEOUT).expect("API socket");
    (vmm, client, dir)
}

fn api_status(result: Result<impl Sized, ClientError>) -> Option<u16> {
    result.err().and_then(|e| e.status())
}

#[test]
fn kvm_api_ping_info_pause_resume_and_acpi_shutdown() {
    let (mut vmm, client, dir) = start_waiting_guest("lifecycle", &["--cpus", "2"]);

    let ping = client.ping().unwrap();
    assert_eq!(ping.api, "v1");
    let info = client.info().unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.config.cpus.count, 2);
    assert_eq!(info.boots, 1);

    client.pause().unwrap();
    assert_eq!(client.info().unwrap().state, VmState::Paused);
    assert_eq!(api_status(client.pause()), Some(409));
    assert_eq!(api_status(client.shutdown()), Some(409));
    client.resume().unwrap();
    assert_eq!(api_status(client.resume()), Some(409));
    assert_eq!(client.info().unwrap().state, VmState::Running);

    client.shutdown().unwrap();
    vmm.expect_line(|l| l.starts_with("TEST wait-shutdown PASS"), TIMEOUT);
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    assert!(
        !dir.join("api.sock").exists(),
        "the socket file is left behind"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_api_bad_requests_get_errors_and_the_vm_keeps_running() {
    let (mut vmm, client, dir) = start_waiting_guest("errors", &[]);

    let (status, body) = client.request("GET", "/api/v1/vm.nope", None).unwrap();
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _) = client.request("GET", "/api/v1/vm.pause", None).unwrap();
    assert_eq!(status, 405);
    let (status, body) = client
        .request(
            "PUT",
            "/api/v1/vm.snapshot",
            Some(br#"{"destination":"/x","dfif":1}"#),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("dfif"));
    let (status, body) = client
        .request(
            "PUT",
            "/api/v1/vm.balloon",
            Some(br#"{"target_mib":"lots"}"#),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("target_mib"));
    let (status, body) = client
        .request("PUT", "/api/v1/vm.snapshot", Some(b"{"))
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let err = client.balloon(64).unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("no balloon device"), "{err}");
    let err = client
        .snapshot(&vmm_api::SnapshotRequest {
            destination: dir.join("diff"),
            diff: true,
        })
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");

    assert_eq!(client.info().unwrap().state, VmState::Running);
    client.power_off().unwrap();
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    assert!(
        !vmm.seen.iter().any(|l| l.starts_with("TEST wait-shutdown")),
        "the guest saw a power button: {:?}",
        vmm.seen
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_api_counters_count_exits_device_bytes_and_disk_requests() {
    // Arrange: the guest reads and writes the first disk; the second (named) one it leaves.
    require_kvm();
    let dir = temp_dir("counters");
    let mut image = vec![0u8; BLK_MIN_SECTORS as usize * 512];
    let planted = pattern_bytes(BLK_READ_SECTORS, blk_pattern);
    image[..planted.len()].copy_from_slice(&planted);
    let (first, second) = (dir.join("first.img"), dir.join("second.img"));
    std::fs::write(&first, &image).unwrap();
    std::fs::write(&second, &image).unwrap();
    let first_disk = format!("path={}", first.display());
    let second_disk = format!("path={},id=data", second.display());
    let extra = ["--disk", &first_disk, "--disk", &second_disk];

    // Act
    let (vmm, client, dir) = start_guest(dir, "blk-read blk-write wait-shutdown", &extra);
    let counters = client.counters().unwrap();

    // Assert
    assert!(
        vmm.seen
            .iter()
            .any(|l| l.starts_with("TEST blk-write PASS")),
        "{:?}",
        vmm.seen
    );
    assert!(counters.exits["io_out"] > 10, "{counters:?}");
    let serial = &counters.devices["serial"];
    assert!(serial.bytes_written > 10, "{counters:?}");
    assert!(counters.devices["acpi-pm"].requests > 0, "{counters:?}");
    let sectors = |range: std::ops::Range<u64>| (range.end - range.start) * 512;
    // blk-read reads once; blk-write writes, then reads back.
    let vda = counters.disks["vda"];
    assert_eq!((vda.reads, vda.writes), (2, 1), "{counters:?}");
    let read = sectors(BLK_READ_SECTORS) + sectors(BLK_WRITE_SECTORS);
    assert_eq!(vda.bytes_read, read, "{counters:?}");
    assert_eq!(vda.bytes_written, sectors(BLK_WRITE_SECTORS));
    assert_eq!(vda.errors, 0);
    assert_eq!(counters.disks["data"], DiskCounters::default());
    assert_eq!(counters.disks.len(), 2, "{counters:?}");
    client.power_off().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_api_reboot_boots_again_in_place() {
    let (mut vmm, client, dir) = start_waiting_guest("reboot", &["--on-reboot", "exit"]);

    client.reboot().unwrap();

    vmm.expect_line(|l| l.starts_with("oxguest: started"), TIMEOUT);
    vmm.expect_line(|l| l.contains("waiting for the power button"), TIMEOUT);
    assert_eq!(client.info().unwrap().boots, 2);
    client.power_off().unwrap();
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_openapi_describes_exactly_the_routes_oxvmm_serves() {
    let (mut vmm, client, dir) = start_waiting_guest("openapi", &[]);
    let spec: serde_json::Value = serde_json::from_str(vmm_api::OPENAPI_JSON).unwrap();
    let paths = spec["paths"].as_object().expect("paths");
    // Side-effect-free bodies for the routes that take one; power-off goes last.
    let snapshot_dir = dir.join("snap");
    let snapshot_body = serde_json::json!({"destination": snapshot_dir}).to_string();
    let mut operations: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    operations.sort_by_key(|(_, path)| path.ends_with("vm.power-off"));
    assert_eq!(operations.len(), vmm_api::ROUTES.len());

    for (method, path) in &operations {
        let body: Option<&[u8]> = match path.as_str() {
            p if p.ends_with("vm.snapshot") => Some(snapshot_body.as_bytes()),
            p if p.ends_with("vm.balloon") => Some(br#"{"target_mib": 16}"#),
            _ => None,
        };
        let (status, response) = client.request(method, path, body).unwrap();
        assert!(
            ![404, 405].contains(&status),
            "{method} {path} is in openapi.json but oxvmm answered {status}: {}",
            String::from_utf8_lossy(&response)
        );
        if path.ends_with("vm.pause") {
            client.resume().unwrap();
        }
    }
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs oxvmm-remote against `socket`.
fn remote(socket: &std::path::Path, args: &[&str]) -> common::Run {
    let mut all = vec!["--api-socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    common::run_command(env!("CARGO_BIN_EXE_oxvmm-remote"), &all)
}

#[test]
fn kvm_oxvmm_remote_drives_the_vm_from_the_command_line() {
    let (mut vmm, client, dir) = start_waiting_guest("remote", &[]);
    let socket = dir.join("api.sock");

    let ping = remote(&socket, &["ping"]);
    ping.assert_exit(0);
    assert!(ping.stdout.starts_with("oxvmm "), "{ping}");
    remote(&socket, &["pause"]).assert_exit(0);
    let info = remote(&socket, &["info"]);
    info.assert_exit(0);
    assert!(info.stdout.contains("\"paused\""), "{info}");
    let again = remote(&socket, &["pause"]);
    again.assert_exit(1);
    assert!(again.stderr.contains("already paused"), "{again}");
    let snap = dir.join("snap");
    let snapshot = remote(&socket, &["snapshot", snap.to_str().unwrap()]);
    snapshot.assert_exit(0);
    assert!(snapshot.stdout.contains("pages_written"), "{snapshot}");
    assert!(snap.join("state").exists() && snap.join("memory").exists());
    remote(&socket, &["resume"]).assert_exit(0);
    let counters = remote(&socket, &["counters"]);
    counters.assert_exit(0);
    assert!(counters.stdout.contains("io_out"), "{counters}");
    remote(&socket, &["shutdown"]).assert_exit(0);
    vmm.expect_line(|l| l.starts_with("TEST wait-shutdown PASS"), TIMEOUT);
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    assert_eq!(client.ping().err().map(|e| e.status()), Some(None));

    let gone = remote(&socket, &["ping"]);
    gone.assert_exit(1);
    assert_eq!(gone.stderr.trim_end().lines().count(), 1, "{gone}");
    assert!(gone.stderr.contains("--api-socket"), "{gone}");
    std::fs::remove_dir_all(dir).unwrap();
}
