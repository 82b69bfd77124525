//! Golden tests: every expected string was printed by Debian's virsh 9.0 against libvirt's
//! test driver (`virsh -c test:///default ...`, or through libvirtd for the statistics), for
//! the same data the test feeds the formatter.

use super::*;
use rpc::procedures::c_chars_fixed;

const TEST_UUID: [u8; 16] = [
    0x66, 0x95, 0xeb, 0x01, 0xf6, 0xa4, 0x83, 0x04, 0x79, 0xaa, 0x97, 0xf2, 0x50, 0x2e, 0x19, 0x3f,
];

fn test_driver_dominfo() -> DomInfo {
    DomInfo {
        id: Some(1),
        name: "test".into(),
        uuid: TEST_UUID,
        os_type: Some("linux".into()),
        info: Some(InfoFields {
            state: 1,
            nr_virt_cpu: 2,
            cpu_time: 1_796_040_381_500_000_000,
            max_mem: 8_388_608,
            memory: 2_097_152,
        }),
        persistent: Some(true),
        autostart: Some(false),
        managed_save: Some(false),
        security: Some(SecurityInfo {
            model: "testSecurity".into(),
            doi: String::new(),
            label: Some(("libvirt-test".into(), true)),
        }),
        messages: Vec::new(),
    }
}

#[test]
fn uuid_round_trips_in_libvirt_spelling() {
    // Act
    let text = uuid_string(&TEST_UUID);

    // Assert
    assert_eq!(text, "6695eb01-f6a4-8304-79aa-97f2502e193f");
    assert_eq!(parse_uuid(&text), Some(TEST_UUID));
    assert_eq!(
        parse_uuid("6695eb01f6a4830479aa97f2502e193f"),
        Some(TEST_UUID)
    );
    assert_eq!(parse_uuid("test"), None);
    assert_eq!(parse_uuid("6695eb01-f6a4-8304-79aa-97f2502e193g"), None);
    assert_eq!(parse_uuid("+695eb01-f6a4-8304-79aa-97f2502e193f"), None);
}

#[test]
fn dominfo_of_running_domain_matches_virsh() {
    // Act
    let text = dominfo(&test_driver_dominfo());

    // Assert
    assert_eq!(
        text,
        "Id:             1
Name:           test
UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f
OS Type:        linux
State:          running
CPU(s):         2
CPU time:       1796040381.5s
Max memory:     8388608 KiB
Used memory:    2097152 KiB
Persistent:     yes
Autostart:      disable
Managed save:   no
Security model: testSecurity
Security DOI:   
Security label: libvirt-test (enforcing)
"
    );
}

#[test]
fn dominfo_of_inactive_domain_matches_virsh() {
    // Arrange: `dominfo second-domain-long` (defined, never started, autostart on).
    let mut d = test_driver_dominfo();
    d.id = None;
    d.name = "second-domain-long".into();
    d.uuid = parse_uuid("11111111-2222-3333-4444-555555555555").unwrap();
    d.info = Some(InfoFields {
        state: 5,
        nr_virt_cpu: 1,
        cpu_time: 1_796_040_392_600_000_000,
        max_mem: 1_048_576,
        memory: 1_048_576,
    });
    d.autostart = Some(true);
    d.security.as_mut().unwrap().label = Some((String::new(), false));

    // Act
    let text = dominfo(&d);

    // Assert
    assert_eq!(
        text,
        "Id:             -
Name:           second-domain-long
UUID:           11111111-2222-3333-4444-555555555555
OS Type:        linux
State:          shut off
CPU(s):         1
CPU time:       1796040392.6s
Max memory:     1048576 KiB
Used memory:    1048576 KiB
Persistent:     yes
Autostart:      enable
Managed save:   no
Security model: testSecurity
Security DOI:   
"
    );
}

#[test]
fn dominfo_without_security_driver_or_cpu_time() {
    // Arrange: what virsh's code prints when those are absent (no test-driver capture).
    let mut d = test_driver_dominfo();
    d.security = None;
    d.info.as_mut().unwrap().cpu_time = 0;
    d.info.as_mut().unwrap().max_mem = u64::from(u32::MAX);
    d.persistent = None;
    d.autostart = None;
    d.messages = vec!["tainted: a".into(), "tainted: b".into()];

    // Act
    let text = dominfo(&d);

    // Assert
    assert!(!text.contains("CPU time"), "{text}");
    assert!(!text.contains("Autostart"), "{text}");
    assert!(!text.contains("Security"), "{text}");
    assert!(text.contains("Max memory:     no limit\n"), "{text}");
    assert!(text.contains("Persistent:     unknown\n"), "{text}");
    assert!(
        text.ends_with("Messages:       tainted: a\n                tainted: b\n"),
        "{text}"
    );
}

#[test]
fn domstate_matches_virsh() {
    assert_eq!(domstate(1, None), "running\n");
    assert_eq!(domstate(1, Some(0)), "running (unknown)\n");
    assert_eq!(domstate(3, Some(1)), "paused (user)\n");
    assert_eq!(domstate(5, Some(0)), "shut off (unknown)\n");
}

#[test]
fn vcpuinfo_matches_virsh() {
    // Arrange: the test driver's two vCPUs on host CPU 15, 8-CPU affinity maps all set.
    let vcpu = |number| VcpuInfo {
        number,
        state: 1,
        cpu_time: 179_604_000_000_000,
        cpu: 15,
    };

    // Act
    let text = vcpuinfo(&[vcpu(0), vcpu(1)], &[0xff, 0xff], 8, false);

    // Assert
    assert_eq!(
        text,
        "VCPU:           0
CPU:            15
State:          running
CPU time:       179604.0s
CPU Affinity:   yyyyyyyy

VCPU:           1
CPU:            15
State:          running
CPU time:       179604.0s
CPU Affinity:   yyyyyyyy
"
    );
}

#[test]
fn vcpuinfo_of_inactive_domain_keeps_virsh_missing_colon() {
    // Act
    let text = vcpuinfo_inactive(1, &[0xff], 8, false);

    // Assert
    assert_eq!(
        text,
        "VCPU:           0
CPU:            N/A
State:          N/A
CPU time        N/A
CPU Affinity:   yyyyyyyy
"
    );
}

#[test]
fn cpu_affinity_reads_bits_and_tolerates_short_maps() {
    assert_eq!(cpu_affinity(&[0b0000_0101, 0b1], 10), "y-y-----y-");
    assert_eq!(cpu_affinity(&[], 3), "---");
    assert_eq!(cpu_map_len(8), 1);
    assert_eq!(cpu_ranges(&[0b1110_1111], 8), "0-3,5-7");
    assert_eq!(cpu_ranges(&[0b0000_0100], 8), "2");
    assert_eq!(cpu_ranges(&[], 8), "");
    assert!(vcpuinfo_inactive(1, &[0xff], 8, true).contains("CPU Affinity:   0-7 (out of 8)\n"));
    assert_eq!(cpu_map_len(9), 2);
}

#[test]
fn nodeinfo_matches_virsh() {
    // Arrange
    let info = NodeGetInfoRet {
        model: c_chars_fixed("i686"),
        memory: 3_145_728,
        cpus: 16,
        mhz: 1400,
        nodes: 2,
        sockets: 2,
        cores: 2,
        threads: 2,
    };

    // Act
    let text = nodeinfo(&info);

    // Assert
    assert_eq!(
        text,
        "CPU model:           i686
CPU(s):              16
CPU frequency:       1400 MHz
CPU socket(s):       2
Core(s) per socket:  2
Thread(s) per core:  2
NUMA cell(s):        2
Memory size:         3145728 KiB
"
    );
}

#[test]
fn version_lines_follow_virsh() {
    // Act
    let text = version("0.1.0", "TEST", 9_000_000, 2);
    let unknown = version("0.1.0", "OXVIRT", 9_000_000, 0);

    // Assert: virsh prints "Using API: TEST 9.0.0" and "Running hypervisor: TEST 0.0.2".
    assert_eq!(
        text,
        "Compiled against library: oxvirt 0.1.0
Using library: oxvirt 0.1.0
Using API: TEST 9.0.0
Running hypervisor: TEST 0.0.2
"
    );
    assert!(unknown.ends_with("Cannot extract running OXVIRT hypervisor version\n"));
    assert_eq!(version_number(1_002_003), "1.2.3");
}

#[test]
fn dommemstat_matches_virsh() {
    // Arrange: the test driver's statistics, in the order it returns them.
    let stats: Vec<DomainMemoryStat> = [
        (6, 2_097_152),
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 1_048_576),
        (5, 2_097_152),
        (8, 1_048_576),
        (9, 627_319_920),
        (10, 262_144),
        (11, 0),
        (12, 0),
        (7, 1_048_576),
        (99, 5),
    ]
    .into_iter()
    .map(|(tag, val)| DomainMemoryStat { tag, val })
    .collect();

    // Act
    let text = dommemstat(&stats);

    // Assert
    assert_eq!(
        text,
        "actual 2097152
swap_in 0
swap_out 0
major_fault 0
minor_fault 0
unused 1048576
available 2097152
usable 1048576
last_update 627319920
disk_caches 262144
hugetlb_pgalloc 0
hugetlb_pgfail 0
rss 1048576
"
    );
}

fn test_block_stats() -> DomainBlockStatsRet {
    DomainBlockStatsRet {
        rd_req: 179_604_048_734_903,
        rd_bytes: 89_802_024_367_451,
        wr_req: 59_868_016_244_967,
        wr_bytes: 44_901_012_183_725,
        errs: 898_020_243,
    }
}

#[test]
fn domblkstat_legacy_matches_virsh() {
    // Act
    let text = domblkstat_legacy("vda", &test_block_stats(), false);

    // Assert
    assert_eq!(
        text,
        "vda rd_req 179604048734903
vda rd_bytes 89802024367451
vda wr_req 59868016244967
vda wr_bytes 44901012183725
vda errs 898020243
"
    );
}

#[test]
fn domblkstat_typed_params_use_legacy_names_and_human_layout() {
    // Arrange
    let s = test_block_stats();
    let params = vec![
        TypedParam::new("wr_bytes", TypedParamValue::LLong(s.wr_bytes)),
        TypedParam::new("rd_operations", TypedParamValue::LLong(s.rd_req)),
        TypedParam::new("rd_bytes", TypedParamValue::LLong(s.rd_bytes)),
        TypedParam::new("wr_operations", TypedParamValue::LLong(s.wr_req)),
        TypedParam::new("errs", TypedParamValue::LLong(s.errs)),
        TypedParam::new("extra", TypedParamValue::ULLong(7)),
    ];

    // Act
    let plain = domblkstat_params("vda", &params, false);
    let human = domblkstat_params("vda", &params, true);

    // Assert: the human golden is virsh's `domblkstat test vda --human` with these values.
    assert_eq!(
        plain,
        "vda rd_req 179604048734903
vda rd_bytes 89802024367451
vda wr_req 59868016244967
vda wr_bytes 44901012183725
vda errs 898020243
vda extra 7
"
    );
    assert_eq!(
        human,
        "Device: vda
 number of read operations:      179604048734903
 number of bytes read:           89802024367451
 number of write operations:     59868016244967
 number of bytes written:        44901012183725
 error count:                    898020243
 extra 7
"
    );
}

#[test]
fn domifstat_matches_virsh_and_skips_unknown_values() {
    // Arrange
    let mut s = DomainInterfaceStatsRet {
        rx_bytes: 179_604_048_740_467,
        rx_packets: 17_960_404_874_046,
        rx_errs: 1_796_040_487,
        rx_drop: 898_020_243,
        tx_bytes: 89_802_024_370_233,
        tx_packets: 16_327_640_794_587,
        tx_errs: 598_680_162,
        tx_drop: 449_010_121,
    };

    // Act
    let text = domifstat("testnet0", &s);
    s.rx_errs = -1;
    let partial = domifstat("testnet0", &s);

    // Assert
    assert_eq!(
        text,
        "testnet0 rx_bytes 179604048740467
testnet0 rx_packets 17960404874046
testnet0 rx_errs 1796040487
testnet0 rx_drop 898020243
testnet0 tx_bytes 89802024370233
testnet0 tx_packets 16327640794587
testnet0 tx_errs 598680162
testnet0 tx_drop 449010121
"
    );
    assert!(!partial.contains("rx_errs"));
}

#[test]
fn domstats_matches_virsh() {
    // Arrange: `virsh domstats` with three domains of the test driver.
    let state = |s, r| {
        vec![
            TypedParam::new("state.state", TypedParamValue::Int(s)),
            TypedParam::new("state.reason", TypedParamValue::Int(r)),
        ]
    };
    let records = vec![
        ("d3".to_owned(), state(1, 1)),
        ("second-domain-long".to_owned(), state(1, 1)),
        ("test".to_owned(), state(3, 1)),
    ];

    // Act
    let text = domstats(&records);

    // Assert
    assert_eq!(
        text,
        "Domain: 'd3'
  state.state=1
  state.reason=1

Domain: 'second-domain-long'
  state.state=1
  state.reason=1

Domain: 'test'
  state.state=3
  state.reason=1
"
    );
}

#[test]
fn typed_values_print_as_vsh_does() {
    assert_eq!(typed_value(&TypedParamValue::Double(0.5)), "0.500000");
    assert_eq!(typed_value(&TypedParamValue::Boolean(true)), "yes");
    assert_eq!(typed_value(&TypedParamValue::Boolean(false)), "no");
    assert_eq!(typed_value(&TypedParamValue::LLong(-3)), "-3");
    assert_eq!(typed_value(&TypedParamValue::String("vda".into())), "vda");
}

fn entry(id: Option<u32>, name: &str, state: i32, uuid: &str) -> ListEntry {
    ListEntry {
        id,
        name: name.into(),
        uuid: parse_uuid(uuid).unwrap(),
        state,
        title: String::new(),
    }
}

fn three_domains() -> Vec<ListEntry> {
    vec![
        entry(
            None,
            "second-domain-long",
            5,
            "11111111-2222-3333-4444-555555555555",
        ),
        entry(Some(2), "d3", 1, "aaaaaaaa-2222-3333-4444-555555555555"),
        entry(Some(1), "test", 3, "6695eb01-f6a4-8304-79aa-97f2502e193f"),
    ]
}

#[test]
fn list_table_matches_virsh() {
    // Arrange
    let mut domains = three_domains();

    // Act
    sort_domains(&mut domains);
    let text = list(&domains, ListStyle::default(), false);

    // Assert
    assert_eq!(
        text,
        " Id   Name                 State
-------------------------------------
 1    test                 paused
 2    d3                   running
 -    second-domain-long   shut off
"
    );
}

#[test]
fn list_names_and_uuids_match_virsh() {
    // Arrange
    let mut domains = three_domains();
    sort_domains(&mut domains);
    let names = ListStyle {
        name: true,
        ..ListStyle::default()
    };
    let uuids = ListStyle {
        uuid: true,
        ..ListStyle::default()
    };
    let ids = ListStyle {
        id: true,
        ..ListStyle::default()
    };

    // Act / Assert
    assert_eq!(
        list(&domains, names, false),
        "test\nd3\nsecond-domain-long\n"
    );
    assert_eq!(
        list(&domains, uuids, false),
        "6695eb01-f6a4-8304-79aa-97f2502e193f
aaaaaaaa-2222-3333-4444-555555555555
11111111-2222-3333-4444-555555555555
"
    );
    assert_eq!(list(&domains, ids, false), "1\n2\n");
    let both = ListStyle {
        uuid: true,
        name: true,
        ..ListStyle::default()
    };
    assert!(list(&domains, both, false).starts_with("6695eb01-f6a4-8304-79aa-97f2502e193f test\n"));
}

#[test]
fn inactive_domains_sort_by_name_ignoring_case() {
    // Arrange
    let mut domains = vec![
        entry(None, "b", 5, "11111111-2222-3333-4444-555555555555"),
        entry(None, "A", 5, "11111111-2222-3333-4444-555555555555"),
        entry(Some(9), "z", 1, "11111111-2222-3333-4444-555555555555"),
    ];

    // Act
    sort_domains(&mut domains);

    // Assert
    let order: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(order, ["z", "A", "b"]);
}

#[test]
fn events_print_as_virsh() {
    // Assert: lines captured from `virsh event --loop --all` against libvirtd's test driver.
    assert_eq!(
        lifecycle_event("test", 5, 1),
        "event 'lifecycle' for domain 'test': Stopped Destroyed\n"
    );
    assert_eq!(
        lifecycle_event("test", 2, 0),
        "event 'lifecycle' for domain 'test': Started Booted\n"
    );
    assert_eq!(
        generic_event("reboot", "d3"),
        "event 'reboot' for domain 'd3'\n"
    );
}
