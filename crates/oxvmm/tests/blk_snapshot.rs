//! Snapshots of a VM whose virtio-blk disk has requests in flight on its I/O threads, on real
//! KVM: the snapshot waits for them and publishes them, so the restored guest finishes its
//! run with every request answered once and the right data.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{LiveVmm, require_kvm, temp_dir};
use guests::protocol::{self, BLK_BENCH_GUEST_TAG, BLK_BENCH_HOST_TAG, BlkBenchParams};
use vmm_api::{Client, SnapshotRequest};

const TIMEOUT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// A disk image of `mib` MiB whose every 4 KiB block carries the host's stamp.
fn stamped_image(path: &Path, mib: usize) {
    let mut image = vec![0u8; mib * MIB];
    protocol::blk_bench_stamp(&mut image, 0, BLK_BENCH_HOST_TAG);
    std::fs::write(path, &image).unwrap();
}

/// Requests the disk completed so far.
fn disk_requests(client: &Client) -> u64 {
    let counters = client.counters().unwrap();
    counters
        .disks
        .values()
        .map(|disk| disk.reads + disk.writes)
        .sum()
}

/// Boots `scenario` on `image`, snapshots it four times while it runs (once `every`, 2 ×
/// `every`, … requests completed: its loop keeps `params.qd` requests in flight, and the I/O
/// threads have some of them most of the time), kills it and restores the last snapshot;
/// returns the restored VM and how many requests the disk had done by then.
fn snapshot_mid_run(
    dir: &Path,
    image: &Path,
    scenario: &str,
    params: BlkBenchParams,
    every: u64,
) -> (LiveVmm, u64) {
    let socket = dir.join("api.sock");
    // O_DIRECT: every request waits for the disk, so some are in flight most of the time.
    let disk = format!("path={},direct=on", image.display());
    let cmdline = params.cmdline(scenario);
    let mut vmm = common::spawn_guest_with_api(&cmdline, &socket, &["--disk", &disk]);
    let client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let snap = dir.join("s");
    for round in 1..=4 {
        while disk_requests(&client) < round * every {
            assert!(Instant::now() < deadline, "{}", vmm.stderr());
            std::thread::sleep(Duration::from_millis(1));
        }
        client
            .snapshot(&SnapshotRequest {
                destination: snap.clone(),
                diff: false,
            })
            .unwrap_or_else(|e| panic!("snapshot {round}: {e}"));
    }
    let at_snapshot = disk_requests(&client);
    // The restored VM opens the disk again: the first one must let go of its lock.
    vmm.kill();
    let restored = LiveVmm::spawn(&["--restore", snap.to_str().unwrap(), "--resume"]);
    (restored, at_snapshot)
}

/// How a benchmark run that went through snapshots ended.
struct RestoredRun {
    dir: std::path::PathBuf,
    image: std::path::PathBuf,
    /// The guest's `TEST <scenario> …` line after the restore.
    line: String,
    status: Option<i32>,
    stderr: String,
    /// Requests the disk had done when the last snapshot was taken, and in the whole run.
    at_snapshot: u64,
    total: u64,
}

/// Runs `scenario` (128 MiB in 64 KiB requests, 8 in flight) on a stamped image through
/// [`snapshot_mid_run`], and waits for the restored guest to finish.
fn run_through_snapshots(tag: &str, scenario: &str) -> RestoredRun {
    let dir = temp_dir(tag);
    let image = dir.join("disk.img");
    stamped_image(&image, 128);
    let params = BlkBenchParams {
        mib: 128,
        req_kib: 64,
        qd: 8,
    };
    let total = params.requests();
    let (mut restored, at_snapshot) = snapshot_mid_run(&dir, &image, scenario, params, total / 8);
    let prefix = format!("TEST {scenario} ");
    let line = restored.expect_line(|l| l.starts_with(&prefix), TIMEOUT);
    let status = restored.wait(TIMEOUT);
    RestoredRun {
        stderr: restored.stderr(),
        dir,
        image,
        line,
        status,
        at_snapshot,
        total,
    }
}

#[test]
fn kvm_blk_snapshot_with_reads_in_flight_restores_and_finishes_the_run() {
    require_kvm();

    let run = run_through_snapshots("blk-snap-reads", protocol::BLK_BENCH_RAND_READ);

    assert!(
        run.at_snapshot < run.total,
        "the snapshot came after the run"
    );
    // The guest checks the stamp of every block it reads, and waits for every request.
    assert!(
        run.line.starts_with("TEST blk-bench-rand-read PASS"),
        "{}\n{}",
        run.line,
        run.stderr
    );
    assert_eq!(run.status, Some(0));
    std::fs::remove_dir_all(run.dir).unwrap();
}

#[test]
fn kvm_blk_snapshot_with_writes_in_flight_restores_and_every_block_is_written() {
    require_kvm();

    let run = run_through_snapshots("blk-snap-writes", protocol::BLK_BENCH_SEQ_WRITE);

    assert!(
        run.at_snapshot < run.total,
        "the snapshot came after the run"
    );
    assert!(
        run.line.starts_with("TEST blk-bench-seq-write PASS"),
        "{}\n{}",
        run.line,
        run.stderr
    );
    assert_eq!(run.status, Some(0));
    let written = std::fs::read(&run.image).unwrap();
    protocol::blk_bench_check_stamps(&written, 0, Some(BLK_BENCH_GUEST_TAG))
        .unwrap_or_else(|bad| panic!("after the restored run: {bad}"));
    std::fs::remove_dir_all(run.dir).unwrap();
}
