use std::path::PathBuf;

use super::*;
use crate::config::{
    BootProtocol, CpusConfig, MemoryConfig, OnReboot, PayloadConfig, SerialConfig,
};

fn parsed<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().unwrap()
}

/// A snapshot's configuration: two disks (vda, data), one card, vsock, console, rng, balloon.
fn snapshot_config() -> VmConfig {
    VmConfig {
        payload: PayloadConfig {
            kernel: PathBuf::from("/k"),
            firmware: None,
            initrd: None,
            cmdline: String::new(),
            boot_protocol: BootProtocol::Auto,
        },
        cpus: CpusConfig::default(),
        memory: MemoryConfig { size_mib: 128 },
        serial: SerialConfig::default(),
        on_reboot: OnReboot::default(),
        rng: Some(parsed("")),
        balloon: Some(parsed("size=16")),
        disks: vec![
            parsed("path=/old/a.img"),
            parsed("path=/old/b.img,readonly=on,id=data"),
        ],
        console: Some(parsed("socket=/old/console.sock")),
        nets: vec![parsed("tap=tap0,mac=02:00:00:00:00:01")],
        vsock: Some(parsed("cid=3,socket=/old/v.sock")),
    }
}

/// What a restore command naming the snapshot's devices, moved, would give.
fn matching() -> RestoreDevices {
    RestoreDevices {
        memory_mib: Some(128),
        cpus: Some(1),
        disks: vec![
            parsed("path=/new/a.img,bw=1M"),
            parsed("path=/new/b.img,readonly=on,id=data"),
        ],
        nets: vec![parsed("tap=tap9")],
        vsock: Some(parsed("cid=3,socket=/new/v.sock")),
        console: Some(parsed("file=/new/console.log")),
        rng: Some(parsed("src=/dev/random")),
        balloon: Some(parsed("size=16")),
    }
}

fn refusal(change: impl FnOnce(&mut RestoreDevices)) -> String {
    let mut named = matching();
    change(&mut named);
    apply_restore_devices(&snapshot_config(), &named).unwrap_err()
}

#[test]
fn no_options_keep_the_snapshot_config() {
    let config = apply_restore_devices(&snapshot_config(), &RestoreDevices::default()).unwrap();

    assert_eq!(config, snapshot_config());
}

#[test]
fn matching_devices_take_the_host_side_from_the_command_line() {
    let config = apply_restore_devices(&snapshot_config(), &matching()).unwrap();

    assert_eq!(config.disks[0].path, PathBuf::from("/new/a.img"));
    assert_eq!(config.disks[0].bw, Some(1 << 20));
    assert_eq!(config.disks[1].path, PathBuf::from("/new/b.img"));
    assert_eq!(config.nets[0].tap.as_deref(), Some("tap9"));
    assert_eq!(config.nets[0].mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(config.vsock.unwrap().socket, PathBuf::from("/new/v.sock"));
    assert_eq!(config.console, Some(parsed("file=/new/console.log")));
    assert_eq!(config.rng.unwrap().src, PathBuf::from("/dev/random"));
    assert_eq!(config.memory.size_mib, 128);
}

#[test]
fn memory_alone_is_compared_without_the_devices() {
    let named = RestoreDevices {
        memory_mib: Some(256),
        ..RestoreDevices::default()
    };
    let same = RestoreDevices {
        memory_mib: Some(128),
        ..RestoreDevices::default()
    };

    let err = apply_restore_devices(&snapshot_config(), &named).unwrap_err();

    assert_eq!(
        err,
        "memory: 128 MiB in the snapshot, 256 MiB on the command line"
    );
    assert!(apply_restore_devices(&snapshot_config(), &same).is_ok());
}

#[test]
fn a_different_cpu_count_is_refused() {
    assert_eq!(
        refusal(|n| n.cpus = Some(2)),
        "cpus: 1 in the snapshot, 2 on the command line"
    );
}

#[test]
fn a_disk_fewer_is_refused_naming_both_sets() {
    assert_eq!(
        refusal(|n| {
            n.disks.pop();
        }),
        "the snapshot has 2 disks (vda, data), the restore command names 1 (vda)"
    );
    assert_eq!(
        refusal(|n| n.disks.clear()),
        "the snapshot has 2 disks (vda, data), the restore command names none"
    );
}

#[test]
fn disk_differences_are_named() {
    assert_eq!(
        refusal(|n| n.disks[1].readonly = false),
        "disk data: readonly=on in the snapshot, off on the command line"
    );
    assert_eq!(
        refusal(|n| n.disks[1].id = Some("logs".into())),
        "disk 1: id data in the snapshot, logs on the command line"
    );
    assert_eq!(
        refusal(|n| n.disks[0].serial = Some("S1".into())),
        "disk vda: serial none in the snapshot, S1 on the command line"
    );
}

#[test]
fn net_differences_are_named() {
    assert_eq!(
        refusal(|n| n.nets[0].mac = Some("02:00:00:00:00:02".into())),
        "net card tap0: mac 02:00:00:00:00:01 in the snapshot, 02:00:00:00:00:02 on the \
         command line"
    );
    assert_eq!(
        refusal(|n| n.nets[0].id = Some("wan".into())),
        "net card tap0: id none in the snapshot, wan on the command line"
    );
    assert_eq!(
        refusal(|n| n.nets.push(parsed("tap=tap1"))),
        "the snapshot has 1 net card (tap0), the restore command names 2 (tap9, tap1)"
    );
}

#[test]
fn a_missing_or_extra_single_device_is_named() {
    assert_eq!(
        refusal(|n| n.vsock = None),
        "the snapshot has a virtio-vsock device, the restore command names none"
    );
    assert_eq!(
        refusal(|n| n.console = None),
        "the snapshot has a virtio-console device, the restore command names none"
    );
    assert_eq!(
        refusal(|n| n.rng = None),
        "the snapshot has a virtio-rng device, the restore command names none"
    );
    let mut without_balloon = snapshot_config();
    without_balloon.balloon = None;
    assert_eq!(
        apply_restore_devices(&without_balloon, &matching()).unwrap_err(),
        "the snapshot has no virtio-balloon device, the restore command names one"
    );
}

#[test]
fn vsock_and_balloon_differences_are_named() {
    assert_eq!(
        refusal(|n| n.vsock = Some(parsed("cid=4,socket=/new/v.sock"))),
        "vsock: cid 3 in the snapshot, 4 on the command line"
    );
    assert_eq!(
        refusal(|n| n.balloon = Some(parsed("size=32"))),
        "balloon: size=16 in the snapshot, 32 on the command line"
    );
    assert_eq!(
        refusal(|n| n.balloon = Some(parsed("size=16,stats=on"))),
        "balloon: stats=off in the snapshot, on on the command line"
    );
}

#[test]
fn a_card_can_come_back_on_an_inherited_descriptor() {
    let named = RestoreDevices {
        nets: vec![parsed("fd=5")],
        ..matching()
    };

    let config = apply_restore_devices(&snapshot_config(), &named).unwrap();

    assert_eq!(
        (config.nets[0].fd, config.nets[0].tap.as_deref()),
        (Some(5), None)
    );
    assert_eq!(config.nets[0].mac.as_deref(), Some("02:00:00:00:00:01"));
}
