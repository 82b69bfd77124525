//! What is outside the supported subset, or wrong, is refused with a message naming the XML path
//! (and the value). Each case is a small variation of one valid document.

use domain::{DomainDef, DomainError};

const OS: &str = "<os><type>hvm</type><kernel>/boot/vmlinux</kernel></os>";

/// A valid domain with `head` after `<name>` and `devices` inside `<devices>`.
fn doc(head: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'><name>t</name>{head}<memory>65536</memory>{OS}\
         <devices>{devices}</devices></domain>"
    )
}

fn error_of(xml: &str) -> DomainError {
    match DomainDef::from_xml(xml) {
        Ok(def) => panic!("accepted: {xml}\n{def:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_base_document_is_valid() {
    DomainDef::from_xml(&doc("", "")).unwrap();
}

#[test]
fn unsupported_elements_and_attributes_are_named_by_path() {
    let cases = [
        (
            doc("", "<graphics type='vnc'/>"),
            "unsupported element /domain/devices/graphics",
        ),
        (
            doc(
                "",
                "<disk><driver io='native'/><source file='/a'/><target dev='vda'/></disk>",
            ),
            "unsupported attribute /domain/devices/disk[1]/driver/@io",
        ),
        (
            doc(
                "",
                "<disk><source file='/a'/><target dev='vda'/></disk>\
                 <disk><source file='/b'/><target dev='vdb'/><boot order='1'/></disk>",
            ),
            "unsupported element /domain/devices/disk[2]/boot",
        ),
        (
            doc("<metadata/>", ""),
            "unsupported element /domain/metadata",
        ),
        (
            doc("<qemu:commandline/>", ""),
            "unsupported element /domain/qemu:commandline",
        ),
        (
            doc("<features><pae/></features>", ""),
            "unsupported element /domain/features/pae",
        ),
        (
            doc("<features><apic eoi='on'/></features>", ""),
            "unsupported attribute /domain/features/apic/@eoi",
        ),
        (
            doc("<features>acpi</features>", ""),
            "unexpected text in /domain/features",
        ),
        (
            doc("<clock offset='utc'><timer name='rtc'/></clock>", ""),
            "unsupported element /domain/clock/timer",
        ),
        (
            doc("<cpu mode='host-passthrough' check='none'/>", ""),
            "unsupported attribute /domain/cpu/@check",
        ),
        (
            doc(
                "",
                "<interface type='bridge'><source bridge='br0'/><mtu size='9000'/></interface>",
            ),
            "unsupported element /domain/devices/interface[1]/mtu",
        ),
        (
            doc(
                "",
                "<interface type='bridge'><source bridge='br0'/><target dev='t' managed='no'/></interface>",
            ),
            "unsupported attribute /domain/devices/interface[1]/target/@managed",
        ),
        (
            doc(
                "",
                "<rng model='virtio'><backend model='random'/><rate bytes='1'/></rng>",
            ),
            "unsupported element /domain/devices/rng/rate",
        ),
        (
            doc("", "<memballoon model='virtio' freePageReporting='on'/>"),
            "unsupported attribute /domain/devices/memballoon/@freePageReporting",
        ),
        (
            doc("", "<serial type='null'><source path='/x'/></serial>"),
            "unsupported element /domain/devices/serial[1]/source",
        ),
        (
            "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'/>".into(),
            "unsupported attribute /domain/@xmlns:qemu",
        ),
    ];
    for (xml, expected) in cases {
        assert_eq!(error_of(&xml).to_string(), expected, "{xml}");
    }
}

#[test]
fn bad_values_are_named_by_path_and_value() {
    let cases = [
        (
            "<domain type='kvm'><name>t</name><memory>12x</memory></domain>".to_string(),
            "/domain/memory: \"12x\" is not a number",
        ),
        (
            "<domain type='kvm'><name>t</name><memory>0</memory></domain>".to_string(),
            "/domain/memory: \"0\" is no memory: it must be above 0",
        ),
        (
            "<domain type='xen'/>".to_string(),
            "/domain/@type: \"xen\" is not a supported domain type (use kvm)",
        ),
        (
            doc("<uuid>1234</uuid>", ""),
            "/domain/uuid: \"1234\" is not a UUID (32 hex digits, plain or dashed as 8-4-4-4-12)",
        ),
        (
            doc("<vcpu placement='static' current='1'>2</vcpu>", ""),
            "/domain/vcpu/@current: \"1\" differs from the vCPU count 2: offline vCPUs (vCPU \
             hot-plug) are not supported",
        ),
        (
            doc("<vcpu placement='auto'>2</vcpu>", ""),
            "/domain/vcpu/@placement: \"auto\" is not supported (only static placement)",
        ),
        (
            doc("<vcpu>0</vcpu>", ""),
            "/domain/vcpu: \"0\" vCPUs: at least 1 is needed",
        ),
        (
            doc("<on_crash>preserve</on_crash>", ""),
            "/domain/on_crash: \"preserve\" is not supported (use destroy)",
        ),
        (
            doc("<on_poweroff>restart</on_poweroff>", ""),
            "/domain/on_poweroff: \"restart\" is not supported (use destroy)",
        ),
        (
            doc("<on_reboot>coredump-restart</on_reboot>", ""),
            "/domain/on_reboot: \"coredump-restart\" is not supported (use restart or destroy)",
        ),
        (
            doc("<cpu mode='custom'/>", ""),
            "/domain/cpu/@mode: \"custom\" is not supported (use host-passthrough or host-model)",
        ),
        (
            doc(
                "<cpu mode='host-model'><feature policy='forbid' name='avx'/></cpu>",
                "",
            ),
            "/domain/cpu/feature[1]/@policy: \"forbid\" is not supported (use require or disable)",
        ),
        (
            doc("<clock offset='timezone'/>", ""),
            "/domain/clock/@offset: \"timezone\" is not supported (use utc or localtime)",
        ),
        (
            doc(
                "",
                "<disk device='cdrom'><source file='/a'/><target dev='vda'/></disk>",
            ),
            "/domain/devices/disk[1]/@device: \"cdrom\" is not supported (only disk)",
        ),
        (
            doc(
                "",
                "<disk><source file='/a'/><target dev='sda' bus='sata'/></disk>",
            ),
            "/domain/devices/disk[1]/target/@dev: \"sda\" is not a virtio disk name (vda, vdb, \
             ..., vdz, vdaa, ...)",
        ),
        (
            doc(
                "",
                "<disk><source file='/a'/><target dev='vda' bus='sata'/></disk>",
            ),
            "/domain/devices/disk[1]/target/@bus: \"sata\" is not supported (only virtio)",
        ),
        (
            doc(
                "",
                "<disk><driver name='qemu' type='qcow2'/><source file='/a'/><target dev='vda'/></disk>",
            ),
            "/domain/devices/disk[1]/driver/@type: \"qcow2\" is not supported (only raw images)",
        ),
        (
            doc(
                "",
                "<disk><driver cache='unsafe'/><source file='/a'/><target dev='vda'/></disk>",
            ),
            "/domain/devices/disk[1]/driver/@cache: \"unsafe\" is not supported (use none or writeback)",
        ),
        (
            doc("", "<disk><source file='a.img'/><target dev='vda'/></disk>"),
            "/domain/devices/disk[1]/source/@file: \"a.img\" is not an absolute file path",
        ),
        (
            doc(
                "",
                "<disk><source file='/a'/><target dev='vda'/><serial>a/b</serial></disk>",
            ),
            "/domain/devices/disk[1]/serial: \"a/b\" is not a disk serial (letters, digits, '_', \
             ' ', '.', '+', '-')",
        ),
        (
            doc(
                "",
                "<interface type='network'><source network='default'/></interface>",
            ),
            "/domain/devices/interface[1]/@type: \"network\" is not supported (use ethernet or bridge)",
        ),
        (
            doc(
                "",
                "<interface type='ethernet'><model type='e1000'/></interface>",
            ),
            "/domain/devices/interface[1]/model/@type: \"e1000\" is not supported (only virtio)",
        ),
        (
            doc(
                "",
                "<interface type='ethernet'><mac address='01:00:5e:00:00:01'/></interface>",
            ),
            "/domain/devices/interface[1]/mac/@address: \"01:00:5e:00:00:01\" is a multicast \
             address; a NIC needs a unicast one",
        ),
        (
            doc(
                "",
                "<interface type='bridge'><source bridge='a bridge'/></interface>",
            ),
            "/domain/devices/interface[1]/source/@bridge: \"a bridge\" is not a network interface \
             name (1-15 characters, no '/', ':' or spaces)",
        ),
        (
            doc("", "<serial type='tcp'/>"),
            "/domain/devices/serial[1]/@type: \"tcp\" is not supported (use pty, file, unix or null)",
        ),
        (
            doc("", "<serial><target port='1'/></serial>"),
            "/domain/devices/serial[1]/target/@port: \"1\" is not supported (only port 0)",
        ),
        (
            doc("", "<console><target type='sclp'/></console>"),
            "/domain/devices/console[1]/target/@type: \"sclp\" is not supported (use serial or virtio)",
        ),
        (
            doc("", "<memballoon model='xen'/>"),
            "/domain/devices/memballoon/@model: \"xen\" is not supported (use virtio or none)",
        ),
        (
            doc(
                "",
                "<memballoon model='virtio'><stats period='-1'/></memballoon>",
            ),
            "/domain/devices/memballoon/stats/@period: \"-1\" is not a number",
        ),
        (
            doc("", "<rng model='virtio'><backend model='egd'/></rng>"),
            "/domain/devices/rng/backend/@model: \"egd\" is not supported (only random)",
        ),
        (
            doc(
                "",
                "<vsock model='virtio'><cid auto='no' address='2'/></vsock>",
            ),
            "/domain/devices/vsock/cid/@address: \"2\" is not a guest CID (3 to 4294967294)",
        ),
        (
            doc("", "<controller type='usb' index='0' model='none'/>"),
            "/domain/devices/controller[1]/@type: \"usb\" is not supported (only the pci-root and \
             virtio-serial controllers)",
        ),
        (
            "<domain type='kvm'><name>a/b</name></domain>".to_string(),
            "/domain/name: \"a/b\" contains '/'",
        ),
        (
            "<domain type='kvm'><name>t</name><memory unit='XB'>1</memory></domain>".to_string(),
            "/domain/memory/@unit: \"XB\" is not a unit (use b, KiB, MiB, GiB, TiB, PiB, EiB, \
             their one-letter forms k, M, G, T, P, E, or KB, MB, GB, TB, PB, EB for powers of 1000)",
        ),
        (
            "<domain type='kvm'><name>t</name><memory>1</memory>\
             <os><type machine='q35'>hvm</type></os></domain>"
                .to_string(),
            "/domain/os/type/@machine: \"q35\" is not supported (oxvmm has one i440FX-like \
             machine: use pc)",
        ),
        (
            "<domain type='kvm'><name>t</name><memory>1</memory>\
             <os><type>hvm</type><kernel>vmlinux</kernel></os></domain>"
                .to_string(),
            "/domain/os/kernel: \"vmlinux\" is not an absolute file path",
        ),
    ];
    for (xml, expected) in cases {
        assert_eq!(error_of(&xml).to_string(), expected, "{xml}");
    }
}

#[test]
fn missing_duplicate_and_conflicting_parts_are_named_by_path() {
    let cases = [
        (
            "<domain type='kvm'><name>t</name></domain>".to_string(),
            "missing element /domain/memory",
        ),
        (
            "<domain type='kvm'><memory>1</memory><os><type>hvm</type></os></domain>".to_string(),
            "missing element /domain/name",
        ),
        (
            "<domain><name>t</name></domain>".to_string(),
            "missing attribute /domain/@type",
        ),
        (
            "<domain type='kvm'><name>t</name><name>u</name><memory>1</memory></domain>"
                .to_string(),
            "duplicate element /domain/name",
        ),
        (
            doc(
                "",
                "<disk><source file='/a'/><target dev='vda'/></disk><disk><source file='/b'/><target dev='vda'/></disk>",
            ),
            "/domain/devices/disk[2]/target/@dev: \"vda\" is already the target of disk[1]",
        ),
        (
            doc("", "<disk><target dev='vda'/></disk>"),
            "missing element /domain/devices/disk[1]/source",
        ),
        (
            doc("", "<serial type='pty'/><serial type='pty'/>"),
            "/domain/devices/serial[2]: only one serial port (COM1) is supported",
        ),
        (
            doc("", "<serial type='unix'><source path='/s'/></serial>"),
            "/domain/devices/serial[1]/source/@mode: only mode='bind' is supported (the VM \
             listens on the socket)",
        ),
        (
            doc(
                "",
                "<interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>\
                 <interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>",
            ),
            "/domain/devices/interface[2]/mac/@address: MAC address 52:54:00:00:00:01 is used by \
             another interface",
        ),
        (
            doc(
                "<currentMemory>1024</currentMemory>",
                "<memballoon model='none'/>",
            ),
            "/domain/currentMemory: 1024 KiB is below <memory> (65536 KiB), but without a memory \
             balloon (<memballoon model='none'>) nothing can hold the difference",
        ),
        (
            "<network/>".to_string(),
            "/network: the root element must be <domain>",
        ),
    ];
    for (xml, expected) in cases {
        assert_eq!(error_of(&xml).to_string(), expected, "{xml}");
    }
}

#[test]
fn malformed_and_hostile_documents_are_refused() {
    let laughs = "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'>\
                  <!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]><domain type='kvm'><name>&b;</name></domain>";
    for xml in [
        "",
        "<domain",
        "<domain type='kvm'></dom>",
        "plain text",
        laughs,
    ] {
        assert!(
            matches!(error_of(xml), DomainError::Malformed { .. }),
            "{xml}: {}",
            error_of(xml)
        );
    }
}

#[test]
fn rate_limits_oxvmm_cannot_express_are_refused_by_path() {
    let disk = |iotune: &str| {
        doc(
            "",
            &format!(
                "<disk><source file='/a'/><target dev='vda'/><iotune>{iotune}</iotune></disk>"
            ),
        )
    };
    let nic = |bandwidth: &str| {
        doc(
            "",
            &format!("<interface type='ethernet'><bandwidth>{bandwidth}</bandwidth></interface>"),
        )
    };
    let cases = [
        (
            disk("<read_bytes_sec>1000</read_bytes_sec><write_bytes_sec>1</write_bytes_sec>"),
            "unsupported element /domain/devices/disk[1]/iotune/read_bytes_sec",
        ),
        (
            disk("<total_iops_sec>10</total_iops_sec><total_iops_sec_max>20</total_iops_sec_max>"),
            "unsupported element /domain/devices/disk[1]/iotune/total_iops_sec_max",
        ),
        (
            disk("<group_name>g</group_name>"),
            "unsupported element /domain/devices/disk[1]/iotune/group_name",
        ),
        (
            disk("<total_bytes_sec>1M</total_bytes_sec>"),
            "/domain/devices/disk[1]/iotune/total_bytes_sec: \"1M\" is not a number",
        ),
        (
            disk("<total_iops_sec>1</total_iops_sec><total_iops_sec>2</total_iops_sec>"),
            "duplicate element /domain/devices/disk[1]/iotune/total_iops_sec",
        ),
        (
            nic("<inbound average='1000' peak='2000'/>"),
            "unsupported attribute /domain/devices/interface[1]/bandwidth/inbound/@peak",
        ),
        (
            nic("<outbound average='1000' burst='64'/>"),
            "unsupported attribute /domain/devices/interface[1]/bandwidth/outbound/@burst",
        ),
        (
            nic("<inbound floor='100'/>"),
            "unsupported attribute /domain/devices/interface[1]/bandwidth/inbound/@floor",
        ),
        (
            nic("<outbound average='0'/>"),
            "/domain/devices/interface[1]/bandwidth/outbound/@average: \"0\" is not a rate \
             (1 to 4294967295 KiB/s)",
        ),
        (
            doc(
                "",
                "<interface type='ethernet'><bandwidth classID='3'/></interface>",
            ),
            "unsupported attribute /domain/devices/interface[1]/bandwidth/@classID",
        ),
    ];
    for (xml, expected) in cases {
        assert_eq!(error_of(&xml).to_string(), expected, "{xml}");
    }
}
