//! Shared by the integration tests: the golden cases, live state for them, and a proptest
//! strategy for valid, normalized domain definitions.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::path::{Path, PathBuf};

use domain::{
    Bandwidth, BootDevice, CharDevice, ClockOffset, Cpu, CpuFeature, CpuMode, Devices, Disk,
    DiskCache, DiskType, DomainDef, DomainType, FeaturePolicy, Features, Interface,
    InterfaceTarget, InterfaceType, IoTune, LifecycleAction, LiveInfo, Loader, LoaderType, MacAddr,
    MemBalloon, Os, Rng, Uuid, Vsock, VsockCid,
};
use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;

/// The folder of golden files.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every `NAME.in.xml` in the golden folder, sorted, as (NAME, path).
pub fn golden_inputs() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(golden_dir())
        .expect("tests/golden is readable")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".in.xml")?
                .to_string();
            Some((name, path))
        })
        .collect();
    cases.sort();
    cases
}

/// The live state the golden `.live.xml` files are written with.
pub fn golden_live_info() -> LiveInfo {
    LiveInfo {
        id: 7,
        interface_taps: vec!["vnet0".into(), "vnet1".into(), "vnet2".into()],
        serial_pty: Some("/dev/pts/3".into()),
        virtio_console_pty: Some("/dev/pts/4".into()),
        vsock_cid: Some(42),
    }
}

/// The disk name of an index, the inverse of libvirt's `virDiskNameToIndex`.
pub fn disk_name(index: u32) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8(letters).unwrap())
}

fn abs_path() -> impl Strategy<Value = PathBuf> {
    "/[a-zA-Z0-9_.-]{1,12}(/[a-zA-Z0-9_.é-]{1,12}){0,2}".prop_map(PathBuf::from)
}

/// Text that must survive escaping: markup characters, quotes, non-ASCII.
fn free_text() -> impl Strategy<Value = String> {
    "[ -~é&<>'\"]{1,24}"
}

fn char_device() -> impl Strategy<Value = CharDevice> {
    prop_oneof![
        Just(CharDevice::Pty),
        Just(CharDevice::Null),
        abs_path().prop_map(|path| CharDevice::File { path }),
        abs_path().prop_map(|path| CharDevice::UnixBind { path }),
    ]
}

fn os() -> impl Strategy<Value = Os> {
    (
        prop_oneof![Just("pc".to_string()), Just("pc-i440fx-7.2".to_string())],
        option::of((
            abs_path(),
            option::of(any::<bool>()),
            option::of(prop_oneof![Just(LoaderType::Rom), Just(LoaderType::Pflash)]),
        )),
        option::of(abs_path()),
        option::of(abs_path()),
        option::of(free_text()),
        vec(
            prop_oneof![
                Just(BootDevice::Hd),
                Just(BootDevice::Cdrom),
                Just(BootDevice::Network),
                Just(BootDevice::Fd)
            ],
            0..3,
        ),
    )
        .prop_map(|(machine, loader, kernel, initrd, cmdline, mut boot)| {
            if boot.is_empty() {
                boot.push(BootDevice::Hd);
            }
            Os {
                machine,
                loader: loader.map(|(path, readonly, kind)| Loader {
                    path,
                    readonly,
                    kind,
                }),
                kernel,
                initrd,
                cmdline,
                boot,
            }
        })
}

fn cpu() -> impl Strategy<Value = Cpu> {
    (
        prop_oneof![Just(CpuMode::HostPassthrough), Just(CpuMode::HostModel)],
        btree_set("[a-z0-9][a-z0-9._-]{0,7}", 0..4),
        any::<u8>(),
    )
        .prop_map(|(mode, names, disable_mask)| Cpu {
            mode,
            features: names
                .into_iter()
                .enumerate()
                .map(|(i, name)| CpuFeature {
                    policy: if disable_mask >> (i % 8) & 1 == 1 {
                        FeaturePolicy::Disable
                    } else {
                        FeaturePolicy::Require
                    },
                    name,
                })
                .collect(),
        })
}

fn disks() -> impl Strategy<Value = Vec<Disk>> {
    btree_set(0u32..800, 0..4).prop_flat_map(|indexes| {
        let count = indexes.len();
        let names: Vec<String> = indexes.into_iter().map(disk_name).collect();
        vec(
            (
                prop_oneof![Just(DiskType::File), Just(DiskType::Block)],
                abs_path(),
                option::of(prop_oneof![
                    Just(DiskCache::None),
                    Just(DiskCache::Writeback)
                ]),
                any::<bool>(),
                option::of("[A-Za-z0-9_ .+-]{1,24}"),
                iotune(),
            ),
            count,
        )
        .prop_map(move |parts| {
            parts
                .into_iter()
                .zip(names.clone())
                .map(
                    |((kind, source, cache, readonly, serial, iotune), target)| Disk {
                        kind,
                        source,
                        target,
                        cache,
                        readonly,
                        serial,
                        iotune,
                    },
                )
                .collect()
        })
    })
}

/// Limits as a normalized definition holds them: no zero ("no limit" in libvirt).
fn iotune() -> impl Strategy<Value = IoTune> {
    (option::of(1..=u64::MAX), option::of(1..=u64::MAX)).prop_map(|(bytes, iops)| IoTune {
        total_bytes_sec: bytes,
        total_iops_sec: iops,
    })
}

fn bandwidth() -> impl Strategy<Value = Bandwidth> {
    (option::of(1..=u32::MAX), option::of(1..=u32::MAX)).prop_map(|(inbound, outbound)| Bandwidth {
        inbound_kib: inbound,
        outbound_kib: outbound,
    })
}

fn interfaces() -> impl Strategy<Value = Vec<Interface>> {
    vec(
        (
            option::of("[a-z][a-z0-9_-]{0,14}"),
            any::<bool>(),
            option::of(any::<bool>()),
            any::<[u8; 3]>(),
            bandwidth(),
        ),
        0..3,
    )
    .prop_map(|nics| {
        nics.into_iter()
            .enumerate()
            .map(|(i, (bridge, named, managed, tail, bandwidth))| {
                let ethernet = bridge.is_none();
                Interface {
                    kind: match bridge {
                        Some(bridge) => InterfaceType::Bridge { bridge },
                        None => InterfaceType::Ethernet,
                    },
                    mac: MacAddr([0x52, 0x54, i as u8, tail[0], tail[1], tail[2]]),
                    target: named.then(|| InterfaceTarget {
                        dev: format!("tap{i}"),
                        managed: if ethernet { managed } else { None },
                    }),
                    bandwidth,
                }
            })
            .collect()
    })
}

fn memballoon() -> impl Strategy<Value = MemBalloon> {
    prop_oneof![
        Just(MemBalloon::None),
        (option::of(any::<bool>()), option::of(any::<u32>())).prop_map(
            |(autodeflate, stats_period)| MemBalloon::Virtio {
                autodeflate,
                stats_period
            }
        ),
    ]
}

fn devices() -> impl Strategy<Value = Devices> {
    (
        option::of(abs_path()),
        disks(),
        interfaces(),
        option::of(char_device()),
        option::of(char_device()),
        memballoon(),
        option::of(abs_path().prop_map(|backend| Rng { backend })),
        option::of(prop_oneof![
            Just(VsockCid::Auto),
            (3u32..u32::MAX).prop_map(VsockCid::Fixed)
        ]),
    )
        .prop_map(
            |(emulator, disks, interfaces, serial, virtio_console, memballoon, rng, cid)| Devices {
                emulator,
                disks,
                interfaces,
                serial,
                virtio_console,
                memballoon,
                rng,
                vsock: cid.map(|cid| Vsock { cid }),
            },
        )
}

/// Valid definitions in normalized form (what `DomainDef::from_xml` returns).
pub fn arb_domain() -> impl Strategy<Value = DomainDef> {
    let head = (
        prop_oneof![Just(DomainType::Kvm), Just(DomainType::Qemu)],
        "[a-zA-Z0-9_.+&<>'\"é-]{1,16}",
        any::<[u8; 16]>(),
        option::of(free_text()),
        option::of("[ -~\n\t\ré&<>]{1,40}"),
        (1u64..=1 << 40, any::<u64>()),
        1u32..300,
    );
    let tail = (
        os(),
        (any::<bool>(), any::<bool>()),
        option::of(cpu()),
        prop_oneof![Just(ClockOffset::Utc), Just(ClockOffset::Localtime)],
        prop_oneof![
            Just(LifecycleAction::Restart),
            Just(LifecycleAction::Destroy)
        ],
        devices(),
    );
    (head, tail).prop_map(
        |(
            (domain_type, name, uuid, title, description, (memory_kib, current), vcpus),
            (os, (acpi, apic), cpu, clock, on_reboot, devices),
        )| {
            let current_memory_kib = match devices.memballoon {
                MemBalloon::None => memory_kib,
                MemBalloon::Virtio { .. } => 1 + current % memory_kib,
            };
            DomainDef {
                domain_type,
                name,
                uuid: Uuid(uuid),
                title,
                description,
                memory_kib,
                current_memory_kib,
                vcpus,
                os,
                features: Features { acpi, apic },
                cpu,
                clock,
                on_poweroff: LifecycleAction::Destroy,
                on_reboot,
                on_crash: LifecycleAction::Destroy,
                devices,
            }
        },
    )
}

/// Live state for a definition: a TAP per interface, ptys, a CID.
pub fn arb_live_info() -> impl Strategy<Value = LiveInfo> {
    (1u32..100_000, 0usize..4, any::<bool>(), 3u32..1000).prop_map(|(id, taps, ptys, cid)| {
        LiveInfo {
            id,
            interface_taps: (0..taps).map(|i| format!("vnet{i}")).collect(),
            serial_pty: ptys.then(|| PathBuf::from("/dev/pts/1")),
            virtio_console_pty: ptys.then(|| PathBuf::from("/dev/pts/2")),
            vsock_cid: Some(cid),
        }
    })
}
