//! Per-disk I/O statistics through a real oxvirtd: `virsh domblkstat` (DOMAIN_BLOCK_STATS_FLAGS),
//! `virsh domstats --block` (CONNECT_GET_ALL_DOMAIN_STATS) and python3-libvirt's `blockStats`
//! (the older DOMAIN_BLOCK_STATS), after the bundled guest has read and written its first disk.
//!
//! Needs /dev/kvm, `virsh` (libvirt-clients), python3-libvirt and the oxvmm binary built in the
//! same target directory (`cargo build -p oxvmm`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{TIMEOUT, TestDaemon, guest_xml, text};
use common::require_kvm;
use guests::protocol::{
    BLK_MIN_SECTORS, BLK_READ_SECTORS, BLK_WRITE_SECTORS, blk_pattern, pattern_bytes,
};

/// Bytes in `sectors`.
fn bytes(sectors: std::ops::Range<u64>) -> i64 {
    ((sectors.end - sectors.start) * 512) as i64
}

/// A disk image the guest's blk-read scenario accepts (the pattern planted at its start).
fn planted_image(path: &Path) {
    let mut image = vec![0u8; BLK_MIN_SECTORS as usize * 512];
    let planted = pattern_bytes(BLK_READ_SECTORS, blk_pattern);
    image[..planted.len()].copy_from_slice(&planted);
    std::fs::write(path, image).unwrap();
}

fn disk_xml(path: &Path, target: &str) -> String {
    format!(
        "<disk type='file' device='disk'><source file='{}'/><target dev='{target}'/></disk>",
        path.display()
    )
}

/// `virsh domblkstat DOMAIN DISK` as field → value (`vda rd_req 2` lines).
fn domblkstat(daemon: &TestDaemon, domain: &str, disk: &str) -> BTreeMap<String, i64> {
    let out = daemon.virsh_ok(&["domblkstat", domain, disk]);
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(disk)).then_some(())?;
            let field = words.next()?.to_string();
            Some((field, words.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn virsh_domblkstat_and_domstats_count_the_guests_disk_requests_kvm() {
    // Arrange: the guest reads vda once (blk-read), then writes, flushes and reads it back
    // (blk-write); vdb it never touches.
    require_kvm();
    let daemon = TestDaemon::start("blkstat");
    let (vda, vdb) = (daemon.root.join("vda.img"), daemon.root.join("vdb.img"));
    planted_image(&vda);
    planted_image(&vdb);
    let disks = format!("{}\n    {}", disk_xml(&vda, "vda"), disk_xml(&vdb, "vdb"));
    let xml = guest_xml("blk", "blk-read blk-write wait-shutdown", &disks);
    daemon.define("blk", &xml);
    daemon.virsh_ok(&["start", "blk"]);

    // Act: the guest is done with the disk once both reads are counted.
    let deadline = Instant::now() + TIMEOUT;
    let mut stats = domblkstat(&daemon, "blk", "vda");
    while stats.get("rd_req").copied().unwrap_or(0) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stats = domblkstat(&daemon, "blk", "vda");
    }
    let untouched = domblkstat(&daemon, "blk", "vdb");
    let domstats = daemon.virsh_ok(&["domstats", "--block", "blk"]);
    let legacy = daemon.python(&format!(
        "d = libvirt.open(URI).lookupByName('blk')\n\
         print('vda', d.blockStats('vda'))\n\
         print('path', d.blockStats({:?}))",
        vda.display().to_string()
    ));

    // Assert
    let read = bytes(BLK_READ_SECTORS) + bytes(BLK_WRITE_SECTORS);
    let written = bytes(BLK_WRITE_SECTORS);
    let want: BTreeMap<String, i64> = [
        ("rd_req", 2),
        ("rd_bytes", read),
        ("wr_req", 1),
        ("wr_bytes", written),
        ("flush_operations", 1),
    ]
    .into_iter()
    .map(|(field, value)| (field.to_string(), value))
    .collect();
    assert_eq!(stats, want, "{}", daemon.log());
    assert_eq!(untouched.get("rd_req"), Some(&0), "{untouched:?}");
    assert_eq!(untouched.get("wr_req"), Some(&0), "{untouched:?}");
    for field in [
        "block.count=2".to_string(),
        "block.0.name=vda".to_string(),
        format!("block.0.path={}", vda.display()),
        "block.0.rd.reqs=2".to_string(),
        format!("block.0.rd.bytes={read}"),
        "block.0.wr.reqs=1".to_string(),
        format!("block.0.wr.bytes={written}"),
        "block.0.fl.reqs=1".to_string(),
        "block.1.name=vdb".to_string(),
        "block.1.rd.reqs=0".to_string(),
        "block.1.wr.reqs=0".to_string(),
    ] {
        assert!(
            domstats.lines().any(|l| l.trim() == field),
            "{field:?} missing from:\n{domstats}"
        );
    }
    let legacy_out = String::from_utf8_lossy(&legacy.stdout);
    let tuple = format!("(2, {read}, 1, {written}, -1)");
    assert!(legacy.status.success(), "{}", text(&legacy));
    assert!(
        legacy_out.lines().any(|l| l == format!("vda {tuple}")),
        "{legacy_out}"
    );
    assert!(
        legacy_out.lines().any(|l| l == format!("path {tuple}")),
        "{legacy_out}"
    );
    daemon.virsh_ok(&["destroy", "blk"]);
}

#[test]
fn virsh_domblkstat_names_an_unknown_disk_and_an_inactive_domain_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("blkerr");
    let vda = daemon.root.join("vda.img");
    planted_image(&vda);
    daemon.define(
        "blk",
        &guest_xml("blk", "wait-shutdown", &disk_xml(&vda, "vda")),
    );

    // Act
    let inactive = daemon.virsh_err(&["domblkstat", "blk", "vda"]);
    daemon.virsh_ok(&["start", "blk"]);
    let unknown = daemon.virsh_err(&["domblkstat", "blk", "vdq"]);

    // Assert
    assert!(
        inactive.contains("cannot get block statistics of an inactive domain"),
        "{inactive}"
    );
    assert!(unknown.contains("invalid path: vdq"), "{unknown}");
    daemon.virsh_ok(&["destroy", "blk"]);
}
