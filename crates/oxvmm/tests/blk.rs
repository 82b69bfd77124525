//! virtio-blk on real KVM: the bundled guest reads what the host planted, writes what the host
//! checks after exit, and is refused writes on a read-only disk.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{LiveVmm, run_guest, temp_dir};
use guests::protocol::{
    BLK_DISCARD_DETAILS, BLK_MIN_SECTORS, BLK_READ_DETAILS, BLK_READ_SECTORS, BLK_RO_DETAILS,
    BLK_WRITE_DETAILS, BLK_WRITE_SECTORS, blk_mixed_apply, blk_mixed_checksum, blk_pattern,
    blk_write_pattern, pattern_bytes, sector_bytes,
};

/// An image of `BLK_MIN_SECTORS` with pseudo-random bytes and the read pattern planted.
fn make_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut image: Vec<u8> = (0..BLK_MIN_SECTORS as usize * 512)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let planted = pattern_bytes(BLK_READ_SECTORS, blk_pattern);
    image[..planted.len()].copy_from_slice(&planted);
    let path = dir.join("disk.img");
    std::fs::write(&path, &image).unwrap();
    (path, image)
}

fn disk_option(path: &Path, extra: &str) -> String {
    format!("path={}{extra}", path.display())
}

#[test]
fn kvm_blk_reads_the_planted_pattern_and_writes_reach_the_file() {
    let dir = temp_dir("blk-rw");
    let (path, original) = make_image(&dir);

    let run = run_guest(
        "blk-info blk-read blk-write",
        &["--disk", &disk_option(&path, ",serial=oxdisk0")],
    );

    run.assert_exit(0);
    let info = run.passed("blk-info");
    assert!(
        info.contains(&format!("sectors={BLK_MIN_SECTORS}")),
        "{run}"
    );
    assert!(
        info.contains("serial=oxdisk0") && info.contains("ro=0"),
        "{run}"
    );
    assert_eq!(run.passed("blk-read"), BLK_READ_DETAILS, "{run}");
    assert_eq!(run.passed("blk-write"), BLK_WRITE_DETAILS, "{run}");
    let after = std::fs::read(&path).unwrap();
    let written = pattern_bytes(BLK_WRITE_SECTORS, blk_write_pattern);
    assert_eq!(sector_bytes(&after, BLK_WRITE_SECTORS), Some(&written[..]));
    let untouched = BLK_WRITE_SECTORS.end..BLK_MIN_SECTORS;
    assert_eq!(
        sector_bytes(&after, untouched.clone()),
        sector_bytes(&original, untouched)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_blk_read_only_disks_refuse_writes() {
    let dir = temp_dir("blk-ro");
    let (path, original) = make_image(&dir);

    let run = run_guest(
        "blk-info blk-ro",
        &["--disk", &disk_option(&path, ",readonly=on")],
    );

    run.assert_exit(0);
    assert!(run.passed("blk-info").contains("ro=1"), "{run}");
    assert_eq!(run.passed("blk-ro"), BLK_RO_DETAILS, "{run}");
    assert_eq!(std::fs::read(&path).unwrap(), original);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_blk_thousand_mixed_requests_match_the_host_checksum() {
    let dir = temp_dir("blk-mixed");
    let (path, original) = make_image(&dir);

    let run = run_guest("blk-mixed", &["--disk", &disk_option(&path, "")]);

    run.assert_exit(0);
    let mut expected = original.clone();
    assert!(blk_mixed_apply(&mut expected));
    let after = std::fs::read(&path).unwrap();
    assert!(
        after == expected,
        "the image differs from the replayed writes"
    );
    let checksum = blk_mixed_checksum(&after).unwrap();
    assert_eq!(
        run.passed("blk-mixed"),
        format!("requests=1000 checksum={checksum:#018x}"),
        "{run}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_blk_discard_and_write_zeroes() {
    let dir = temp_dir("blk-discard");
    let (path, _) = make_image(&dir);

    let run = run_guest("blk-discard", &["--disk", &disk_option(&path, "")]);

    run.assert_exit(0);
    assert_eq!(run.passed("blk-discard"), BLK_DISCARD_DETAILS, "{run}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_a_writable_disk_cannot_be_opened_by_two_vms() {
    let dir = temp_dir("blk-lock");
    let (path, _) = make_image(&dir);
    let disk = disk_option(&path, "");
    let mut first = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "counter",
        "--disk",
        &disk,
    ]);
    first.expect_line(|l| l.starts_with("counter "), Duration::from_secs(60));

    let second = run_guest("blk-info", &["--disk", &disk]);

    second.assert_exit(1);
    assert!(second.stderr.contains("--disk"), "{second}");
    assert!(second.stderr.contains("in use"), "{second}");
    first.kill();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_blk_rate_limits_slow_requests_down_without_losing_them() {
    let dir = temp_dir("blk-iops");
    let (path, _) = make_image(&dir);

    let start = Instant::now();
    let run = run_guest(
        "blk-info blk-read blk-write",
        &["--disk", &disk_option(&path, ",iops=2")],
    );
    let elapsed = start.elapsed();

    run.assert_exit(0);
    assert_eq!(run.passed("blk-read"), BLK_READ_DETAILS, "{run}");
    assert_eq!(run.passed("blk-write"), BLK_WRITE_DETAILS, "{run}");
    // Five requests (get-id, read, write, flush, read back) at 2 per second from a bucket of
    // 2: the last three wait about half a second each.
    assert!(elapsed >= Duration::from_millis(1200), "took {elapsed:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
