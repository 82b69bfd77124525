//! Conversion to oxvmm's `VmConfig`: what maps where, and what the native driver refuses.

use std::path::PathBuf;

use domain::{DomainDef, NativeError, NativeRuntime};
use vmm_api::config::{
    BalloonConfig, BootProtocol, ConsoleConfig, CpusConfig, DiskConfig, MemoryConfig, NetConfig,
    OnReboot, PayloadConfig, RngConfig, SerialConfig,
};

fn runtime() -> NativeRuntime {
    NativeRuntime {
        serial_socket: "/run/oxvirt/vm/serial.sock".into(),
        console_socket: "/run/oxvirt/vm/console.sock".into(),
        interface_taps: vec!["vnet0".into(), "vnet1".into()],
        vsock_socket: "/run/oxvirt/domains/t.vsock.sock".into(),
        auto_vsock_cid: 3,
    }
}

fn convert(xml: &str) -> Result<vmm_api::VmConfig, NativeError> {
    DomainDef::from_xml(xml).unwrap().to_vm_config(&runtime())
}

/// A runnable domain with `head` after `<name>`, `os` as `<os>`, `devices` in `<devices>`.
fn doc(head: &str, os: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'><name>n</name>{head}<memory unit='MiB'>256</memory>{os}\
         <features><acpi/><apic/></features><devices>{devices}</devices></domain>"
    )
}

const KERNEL_OS: &str = "<os><type>hvm</type><kernel>/k</kernel></os>";

#[test]
fn a_kernel_domain_maps_every_supported_part() {
    let xml = doc(
        "<currentMemory unit='MiB'>192</currentMemory><vcpu>2</vcpu>\
         <cpu mode='host-passthrough'><feature policy='disable' name='avx'/>\
         <feature policy='require' name='sse4.2'/><feature policy='disable' name='tsc-deadline'/></cpu>\
         <on_reboot>destroy</on_reboot>",
        "<os><type>hvm</type><kernel>/k</kernel><initrd>/i</initrd><cmdline>console=ttyS0</cmdline></os>",
        "<disk type='block'><driver cache='none'/><source dev='/dev/b'/><target dev='vdb'/>\
         <readonly/><serial>S1</serial></disk>\
         <disk><source file='/a.img'/><target dev='vda'/></disk>\
         <serial type='pty'/><console type='pty'><target type='virtio'/></console>\
         <memballoon model='virtio' autodeflate='on'><stats period='5'/></memballoon>\
         <rng model='virtio'><backend model='random'>/dev/random</backend></rng>",
    );

    let config = convert(&xml).unwrap();

    assert_eq!(
        config.payload,
        PayloadConfig {
            kernel: "/k".into(),
            firmware: None,
            initrd: Some("/i".into()),
            cmdline: "console=ttyS0".into(),
            boot_protocol: BootProtocol::Auto,
        }
    );
    assert_eq!(
        config.cpus,
        CpusConfig {
            count: 2,
            features: "-avx,+sse4_2,-tsc_deadline".into()
        }
    );
    assert_eq!(config.memory, MemoryConfig { size_mib: 256 });
    assert_eq!(config.on_reboot, OnReboot::Exit);
    assert_eq!(
        config.balloon,
        Some(BalloonConfig {
            size_mib: 64,
            deflate_on_oom: true,
            stats: true
        })
    );
    assert_eq!(
        config.rng,
        Some(RngConfig {
            src: "/dev/random".into()
        })
    );
    assert_eq!(
        config.serial,
        SerialConfig::Socket("/run/oxvirt/vm/serial.sock".into())
    );
    assert_eq!(
        config.console,
        Some(ConsoleConfig::Socket("/run/oxvirt/vm/console.sock".into()))
    );
    let disk = |path: &str, target: &str| DiskConfig {
        path: PathBuf::from(path),
        id: Some(target.into()),
        ..DiskConfig::default()
    };
    assert_eq!(
        config.disks,
        vec![
            disk("/a.img", "vda"),
            DiskConfig {
                readonly: true,
                direct: true,
                serial: Some("S1".into()),
                ..disk("/dev/b", "vdb")
            },
        ]
    );
}

#[test]
fn serial_and_console_destinations_map_to_oxvmm_backends() {
    let serial = |devices: &str| convert(&doc("", KERNEL_OS, devices)).unwrap().serial;
    let console = |devices: &str| convert(&doc("", KERNEL_OS, devices)).unwrap().console;

    assert_eq!(serial(""), SerialConfig::Off);
    assert_eq!(serial("<serial type='null'/>"), SerialConfig::Off);
    assert_eq!(
        serial("<serial type='file'><source path='/log'/></serial>"),
        SerialConfig::File("/log".into())
    );
    assert_eq!(
        serial("<console type='unix'><source mode='bind' path='/s'/></console>"),
        SerialConfig::Socket("/s".into())
    );
    assert_eq!(console(""), None);
    assert_eq!(
        console("<console type='file'><source path='/c'/><target type='virtio'/></console>"),
        Some(ConsoleConfig::File("/c".into()))
    );
    assert_eq!(
        console("<console type='null'><target type='virtio'/></console>"),
        Some(ConsoleConfig::File("/dev/null".into()))
    );
}

#[test]
fn firmware_boot_maps_the_loader_and_no_balloon() {
    let config = convert(&doc(
        "",
        "<os><type>hvm</type><loader type='rom' readonly='yes'>/bios.bin</loader></os>",
        "<memballoon model='none'/>",
    ))
    .unwrap();

    assert_eq!(config.payload.firmware, Some(PathBuf::from("/bios.bin")));
    assert_eq!(config.payload.kernel, PathBuf::new());
    assert_eq!(config.balloon, None);
    assert_eq!(config.on_reboot, OnReboot::Restart);
}

#[test]
fn what_oxvmm_cannot_do_is_refused_with_the_path() {
    let cases = [
        (
            doc("", "<os><type>hvm</type></os>", ""),
            "not supported by the native driver: /domain/os: nothing to boot: give \
             <kernel>PATH</kernel> or <loader>FIRMWARE</loader>",
        ),
        (
            doc("", "<os><type>hvm</type><loader>/b</loader><kernel>/k</kernel></os>", ""),
            "not supported by the native driver: /domain/os/loader: oxvmm boots either firmware \
             or a <kernel>, not firmware that then loads a kernel",
        ),
        (
            doc("", "<os><type>hvm</type><loader type='pflash'>/b</loader></os>", ""),
            "not supported by the native driver: /domain/os/loader/@type: 'pflash': oxvmm has no \
             flash device; firmware is a ROM (type='rom')",
        ),
        (
            doc("<clock offset='localtime'/>", KERNEL_OS, ""),
            "not supported by the native driver: /domain/clock/@offset: 'localtime': oxvmm's RTC \
             keeps UTC (use offset='utc')",
        ),
        (
            doc("<vcpu>255</vcpu>", KERNEL_OS, ""),
            "not supported by the native driver: /domain/vcpu: 255 vCPUs: oxvmm runs at most 254",
        ),
        (
            doc(
                "",
                KERNEL_OS,
                "<interface type='ethernet'><target dev='tap0'/></interface>\
                 <interface type='ethernet'/><interface type='ethernet'/>",
            ),
            "/domain/devices/interface[3]: the daemon gave no TAP device name for it \
             (NativeRuntime::interface_taps)",
        ),
        (
            doc(
                "",
                KERNEL_OS,
                "<disk><source file='/a'/><target dev='vda'/><serial>123456789012345678901</serial></disk>",
            ),
            "not supported by the native driver: /domain/devices/disk[1]/serial: \
             \"123456789012345678901\" is longer than virtio-blk's 20 bytes",
        ),
        (
            "<domain type='qemu'><name>n</name><memory>1024</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><features><acpi/><apic/></features></domain>"
                .to_string(),
            "not supported by the native driver: /domain/@type: \"qemu\" is for the QEMU driver; \
             the native driver runs type 'kvm'",
        ),
        (
            "<domain type='kvm'><name>n</name><memory>1536</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><features><acpi/><apic/></features></domain>"
                .to_string(),
            "not supported by the native driver: /domain/memory: 1536 KiB is not a whole number \
             of MiB, the unit oxvmm sizes RAM in",
        ),
        (
            "<domain type='kvm'><name>n</name><memory>1024</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><features><acpi/></features></domain>"
                .to_string(),
            "not supported by the native driver: /domain/features/apic: oxvmm's machine always \
             has ACPI and an APIC: declare <acpi/> and <apic/> in <features>",
        ),
    ];
    for (xml, expected) in cases {
        assert_eq!(convert(&xml).unwrap_err().to_string(), expected, "{xml}");
    }
}

#[test]
fn interfaces_become_virtio_net_cards_on_their_tap_devices() {
    let config = convert(&doc(
        "",
        KERNEL_OS,
        "<interface type='ethernet'><mac address='52:54:00:00:00:0A'/>\
         <target dev='tap9' managed='no'/></interface>\
         <interface type='bridge'><mac address='52:54:00:00:00:0b'/><source bridge='br0'/></interface>",
    ))
    .unwrap();

    assert_eq!(
        config.nets,
        vec![
            NetConfig {
                tap: Some("tap9".into()),
                fd: None,
                mac: Some("52:54:00:00:00:0a".into()),
                id: Some("net0".into()),
                bw: None,
                ops: None,
            },
            NetConfig {
                tap: Some("vnet1".into()),
                fd: None,
                mac: Some("52:54:00:00:00:0b".into()),
                id: Some("net1".into()),
                bw: None,
                ops: None,
            },
        ]
    );
}

#[test]
fn iotune_totals_become_the_disks_rate_limits() {
    let config = convert(&doc(
        "",
        KERNEL_OS,
        "<disk><source file='/a'/><target dev='vda'/><iotune>\
         <total_bytes_sec>52428800</total_bytes_sec><total_iops_sec>2000</total_iops_sec>\
         </iotune></disk>\
         <disk><source file='/b'/><target dev='vdb'/><iotune>\
         <total_bytes_sec>0</total_bytes_sec><total_iops_sec>7</total_iops_sec></iotune></disk>\
         <disk><source file='/c'/><target dev='vdc'/></disk>",
    ))
    .unwrap();

    let limits: Vec<(Option<u64>, Option<u64>)> = config
        .disks
        .iter()
        .map(|disk| (disk.bw, disk.iops))
        .collect();
    assert_eq!(
        limits,
        vec![
            (Some(52_428_800), Some(2000)),
            (None, Some(7)),
            (None, None)
        ]
    );
}

/// An interface with `bandwidth` inside, on TAP device tap0.
fn nic_with(bandwidth: &str) -> String {
    doc(
        "",
        KERNEL_OS,
        &format!(
            "<interface type='ethernet'><target dev='tap0'/><bandwidth>{bandwidth}</bandwidth>\
             </interface>"
        ),
    )
}

#[test]
fn equal_inbound_and_outbound_averages_become_the_nics_limit_in_bytes() {
    let limited = convert(&nic_with(
        "<inbound average='1000'/><outbound average='1000'/>",
    ))
    .unwrap();
    let largest = convert(&nic_with(
        "<inbound average='4294967295'/><outbound average='4294967295'/>",
    ))
    .unwrap();
    let unlimited = convert(&nic_with("")).unwrap();

    assert_eq!(limited.nets[0].bw, Some(1000 * 1024));
    assert_eq!(limited.nets[0].ops, None);
    assert_eq!(largest.nets[0].bw, Some(u64::from(u32::MAX) * 1024));
    assert_eq!(unlimited.nets[0].bw, None);
}

#[test]
fn one_sided_or_unequal_bandwidth_is_refused_with_the_path() {
    let cases = [
        (
            "<inbound average='1000'/>",
            "not supported by the native driver: /domain/devices/interface[1]/bandwidth/outbound: \
             missing: oxvmm applies one rate to both directions of a NIC; give \
             <outbound average='1000'/> too",
        ),
        (
            "<outbound average='64'/>",
            "not supported by the native driver: /domain/devices/interface[1]/bandwidth/inbound: \
             missing: oxvmm applies one rate to both directions of a NIC; give \
             <inbound average='64'/> too",
        ),
        (
            "<inbound average='1000'/><outbound average='500'/>",
            "not supported by the native driver: \
             /domain/devices/interface[1]/bandwidth/outbound/@average: 500 KiB/s differs from \
             inbound's 1000 KiB/s: oxvmm applies one rate to both directions of a NIC",
        ),
    ];
    for (bandwidth, expected) in cases {
        let error = convert(&nic_with(bandwidth)).unwrap_err();
        assert_eq!(error.to_string(), expected, "{bandwidth}");
    }
}
