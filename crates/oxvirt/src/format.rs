//! Text output of the commands, laid out byte for byte as virsh 9.0 prints it. Every function
//! takes typed data (what the daemon answered) and returns the text, so each is tested against
//! golden output captured from the real virsh.

use crate::names;
use crate::table::Table;
use rpc::procedures::{
    DomainBlockStatsRet, DomainInterfaceStatsRet, DomainMemoryStat, NodeGetInfoRet, TypedParam,
    TypedParamValue, VcpuInfo, c_chars_to_string,
};
use std::fmt::Write as _;

/// Formats a UUID as libvirt does (`virUUIDFormat`): lower-case 8-4-4-4-12.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    domain::Uuid(*uuid).to_string()
}

/// Parses a UUID as libvirt's `virUUIDParse` does (with or without dashes).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    domain::Uuid::from_text(text).map(|uuid| uuid.0)
}

/// A `printf("%-15s %s\n")` line, virsh's "label: value" layout.
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<15} {value}");
}

/// CPU time in nanoseconds as virsh prints it (`%.1lfs`).
fn seconds(ns: u64) -> String {
    // Precision loss above 2^53 ns (104 days) is below the one decimal printed.
    format!("{:.1}s", ns as f64 / 1_000_000_000.0)
}

/// What `DOMAIN_GET_INFO` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoFields {
    /// `virDomainState`.
    pub state: i32,
    /// vCPU count.
    pub nr_virt_cpu: u32,
    /// CPU time in nanoseconds (0: not printed).
    pub cpu_time: u64,
    /// Maximum memory in KiB.
    pub max_mem: u64,
    /// Current memory in KiB.
    pub memory: u64,
}

/// The host's security model (`NODE_GET_SECURITY_MODEL`) and the domain's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityInfo {
    /// Model name; nothing is printed when empty.
    pub model: String,
    /// Domain of interpretation.
    pub doi: String,
    /// The domain's label and whether it is enforcing; `None` or empty for none.
    pub label: Option<(String, bool)>,
}

/// Everything `dominfo` prints, gathered from several calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomInfo {
    /// Id while running.
    pub id: Option<u32>,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: [u8; 16],
    /// OS type, when the call succeeded.
    pub os_type: Option<String>,
    /// `DOMAIN_GET_INFO`, when it succeeded.
    pub info: Option<InfoFields>,
    /// `None` when unknown.
    pub persistent: Option<bool>,
    /// `None` when the call failed (virsh then prints nothing).
    pub autostart: Option<bool>,
    /// `None` when unknown.
    pub managed_save: Option<bool>,
    /// `None` when the host has no security driver.
    pub security: Option<SecurityInfo>,
    /// Taint and deprecation messages.
    pub messages: Vec<String>,
}

/// `virsh dominfo`.
pub fn dominfo(d: &DomInfo) -> String {
    let mut out = String::new();
    match d.id {
        Some(id) => field(&mut out, "Id:", id),
        None => field(&mut out, "Id:", "-"),
    }
    field(&mut out, "Name:", &d.name);
    field(&mut out, "UUID:", uuid_string(&d.uuid));
    if let Some(os) = &d.os_type {
        field(&mut out, "OS Type:", os);
    }
    if let Some(info) = &d.info {
        field(&mut out, "State:", names::domain_state(info.state));
        field(&mut out, "CPU(s):", info.nr_virt_cpu);
        if info.cpu_time != 0 {
            field(&mut out, "CPU time:", seconds(info.cpu_time));
        }
        if info.max_mem == u64::from(u32::MAX) {
            field(&mut out, "Max memory:", "no limit");
        } else {
            field(&mut out, "Max memory:", format!("{} KiB", info.max_mem));
        }
        field(&mut out, "Used memory:", format!("{} KiB", info.memory));
    }
    field(&mut out, "Persistent:", yes_no_unknown(d.persistent));
    if let Some(autostart) = d.autostart {
        field(
            &mut out,
            "Autostart:",
            if autostart { "enable" } else { "disable" },
        );
    }
    field(&mut out, "Managed save:", yes_no_unknown(d.managed_save));
    if let Some(sec) = d.security.as_ref().filter(|s| !s.model.is_empty()) {
        field(&mut out, "Security model:", &sec.model);
        field(&mut out, "Security DOI:", &sec.doi);
        if let Some((label, enforcing)) = sec.label.as_ref().filter(|(l, _)| !l.is_empty()) {
            let mode = if *enforcing {
                "enforcing"
            } else {
                "permissive"
            };
            field(&mut out, "Security label:", format!("{label} ({mode})"));
        }
    }
    for (i, msg) in d.messages.iter().enumerate() {
        field(&mut out, if i == 0 { "Messages:" } else { "" }, msg);
    }
    out
}

fn yes_no_unknown(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// `virsh domstate [--reason]`.
pub fn domstate(state: i32, reason: Option<i32>) -> String {
    match reason {
        Some(r) => format!(
            "{} ({})\n",
            names::domain_state(state),
            names::state_reason(state, r)
        ),
        None => format!("{}\n", names::domain_state(state)),
    }
}

/// Host CPUs `maxcpu` as 'y'/'-' from a libvirt CPU map (`VIR_CPU_USABLE`).
pub fn cpu_affinity(map: &[u8], maxcpu: usize) -> String {
    (0..maxcpu)
        .map(|cpu| {
            let usable = map
                .get(cpu / 8)
                .is_some_and(|byte| byte & (1 << (cpu % 8)) != 0);
            if usable { 'y' } else { '-' }
        })
        .collect()
}

/// The CPUs set in a CPU map as ranges, e.g. `0-3,6` (`virBitmapFormat`), for `--pretty`.
pub fn cpu_ranges(map: &[u8], maxcpu: usize) -> String {
    let set = |cpu: usize| map.get(cpu / 8).is_some_and(|b| b & (1 << (cpu % 8)) != 0);
    let mut ranges = Vec::new();
    let mut cpu = 0;
    while cpu < maxcpu {
        if !set(cpu) {
            cpu += 1;
            continue;
        }
        let first = cpu;
        while cpu + 1 < maxcpu && set(cpu + 1) {
            cpu += 1;
        }
        ranges.push(if first == cpu {
            first.to_string()
        } else {
            format!("{first}-{cpu}")
        });
        cpu += 1;
    }
    ranges.join(",")
}

fn affinity_text(map: &[u8], maxcpu: usize, pretty: bool) -> String {
    if pretty {
        format!("{} (out of {maxcpu})", cpu_ranges(map, maxcpu))
    } else {
        cpu_affinity(map, maxcpu)
    }
}

/// `VIR_CPU_MAPLEN`: bytes of a CPU map for `maxcpu` CPUs.
pub fn cpu_map_len(maxcpu: usize) -> usize {
    maxcpu.div_ceil(8)
}

/// `virsh vcpuinfo` of a running domain: `maps` holds `cpu_map_len(maxcpu)` bytes per vCPU.
/// `pretty` prints the affinity as CPU ranges (`--pretty`).
pub fn vcpuinfo(vcpus: &[VcpuInfo], maps: &[u8], maxcpu: usize, pretty: bool) -> String {
    let maplen = cpu_map_len(maxcpu);
    let mut out = String::new();
    for (n, vcpu) in vcpus.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        field(&mut out, "VCPU:", vcpu.number);
        field(&mut out, "CPU:", vcpu.cpu);
        field(&mut out, "State:", names::vcpu_state(vcpu.state));
        if vcpu.cpu_time != 0 {
            field(&mut out, "CPU time:", seconds(vcpu.cpu_time));
        }
        field(
            &mut out,
            "CPU Affinity:",
            affinity_text(map_of(maps, maplen, n), maxcpu, pretty),
        );
    }
    out
}

/// `virsh vcpuinfo` of an inactive domain: pinning from the configuration and "N/A" for the
/// rest. virsh 9.0 prints "CPU time" without a colon here; so do we.
pub fn vcpuinfo_inactive(nvcpus: usize, maps: &[u8], maxcpu: usize, pretty: bool) -> String {
    let maplen = cpu_map_len(maxcpu);
    let mut out = String::new();
    for n in 0..nvcpus {
        if n > 0 {
            out.push('\n');
        }
        field(&mut out, "VCPU:", n);
        field(&mut out, "CPU:", "N/A");
        field(&mut out, "State:", "N/A");
        field(&mut out, "CPU time", "N/A");
        field(
            &mut out,
            "CPU Affinity:",
            affinity_text(map_of(maps, maplen, n), maxcpu, pretty),
        );
    }
    out
}

fn map_of(maps: &[u8], maplen: usize, index: usize) -> &[u8] {
    let start = index.saturating_mul(maplen);
    maps.get(start..start.saturating_add(maplen).min(maps.len()))
        .unwrap_or(&[])
}

/// `virsh nodeinfo`.
pub fn nodeinfo(n: &NodeGetInfoRet) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<20} {value}");
    };
    line("CPU model:", c_chars_to_string(&n.model));
    line("CPU(s):", n.cpus.to_string());
    line("CPU frequency:", format!("{} MHz", n.mhz));
    line("CPU socket(s):", n.sockets.to_string());
    line("Core(s) per socket:", n.cores.to_string());
    line("Thread(s) per core:", n.threads.to_string());
    line("NUMA cell(s):", n.nodes.to_string());
    line("Memory size:", format!("{} KiB", n.memory));
    out
}

/// A libvirt version number (major * 1,000,000 + minor * 1,000 + release) as `X.Y.Z`.
pub fn version_number(v: u64) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

/// `virsh version`. `client` is this tool's own version; `hv_type` comes from
/// `CONNECT_GET_TYPE`, `api` from `CONNECT_GET_LIB_VERSION` and `hv` from
/// `CONNECT_GET_VERSION` (0: unknown).
pub fn version(client: &str, hv_type: &str, api: u64, hv: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Compiled against library: oxvirt {client}");
    let _ = writeln!(out, "Using library: oxvirt {client}");
    let _ = writeln!(out, "Using API: {hv_type} {}", version_number(api));
    if hv == 0 {
        let _ = writeln!(out, "Cannot extract running {hv_type} hypervisor version");
    } else {
        let _ = writeln!(out, "Running hypervisor: {hv_type} {}", version_number(hv));
    }
    out
}

/// `virsh dommemstat`: known tags in the daemon's order, unknown ones skipped.
pub fn dommemstat(stats: &[DomainMemoryStat]) -> String {
    const NAMES: &[&str] = &[
        "swap_in",
        "swap_out",
        "major_fault",
        "minor_fault",
        "unused",
        "available",
        "actual",
        "rss",
        "usable",
        "last_update",
        "disk_caches",
        "hugetlb_pgalloc",
        "hugetlb_pgfail",
    ];
    let mut out = String::new();
    for stat in stats {
        if let Some(name) = usize::try_from(stat.tag).ok().and_then(|t| NAMES.get(t)) {
            let _ = writeln!(out, "{name} {}", stat.val);
        }
    }
    out
}

/// One known block statistic: typed-parameter name, legacy spelling, human text.
struct BlkField {
    field: &'static str,
    legacy: Option<&'static str>,
    human: &'static str,
}

const BLK_FIELDS: &[BlkField] = &[
    BlkField {
        field: "rd_operations",
        legacy: Some("rd_req"),
        human: "number of read operations:",
    },
    BlkField {
        field: "rd_bytes",
        legacy: Some("rd_bytes"),
        human: "number of bytes read:",
    },
    BlkField {
        field: "wr_operations",
        legacy: Some("wr_req"),
        human: "number of write operations:",
    },
    BlkField {
        field: "wr_bytes",
        legacy: Some("wr_bytes"),
        human: "number of bytes written:",
    },
    BlkField {
        field: "errs",
        legacy: Some("errs"),
        human: "error count:",
    },
    BlkField {
        field: "flush_operations",
        legacy: None,
        human: "number of flush operations:",
    },
    BlkField {
        field: "rd_total_times",
        legacy: None,
        human: "total duration of reads (ns):",
    },
    BlkField {
        field: "wr_total_times",
        legacy: None,
        human: "total duration of writes (ns):",
    },
    BlkField {
        field: "flush_total_times",
        legacy: None,
        human: "total duration of flushes (ns):",
    },
];

fn blk_line(out: &mut String, device: &str, human: bool, name: &str, value: &str) {
    if human {
        let _ = writeln!(out, "{device} {name:<31} {value}");
    } else {
        let _ = writeln!(out, "{device} {name} {value}");
    }
}

/// `virsh domblkstat` from `DOMAIN_BLOCK_STATS_FLAGS`: known fields first in virsh's order,
/// then any others.
pub fn domblkstat_params(device: &str, params: &[TypedParam], human: bool) -> String {
    let mut out = String::new();
    let shown_device = if human {
        let _ = writeln!(out, "Device: {device}");
        ""
    } else {
        device
    };
    for known in BLK_FIELDS {
        if let Some(p) = params.iter().find(|p| p.field == known.field) {
            let name = if human {
                known.human
            } else {
                known.legacy.unwrap_or(known.field)
            };
            blk_line(&mut out, shown_device, human, name, &typed_value(&p.value));
        }
    }
    for p in params {
        if !BLK_FIELDS.iter().any(|k| k.field == p.field) {
            let _ = writeln!(out, "{shown_device} {} {}", p.field, typed_value(&p.value));
        }
    }
    out
}

/// `virsh domblkstat` from the older `DOMAIN_BLOCK_STATS`: negative values are unknown.
pub fn domblkstat_legacy(device: &str, s: &DomainBlockStatsRet, human: bool) -> String {
    let mut out = String::new();
    let shown_device = if human {
        let _ = writeln!(out, "Device: {device}");
        ""
    } else {
        device
    };
    let values = [s.rd_req, s.rd_bytes, s.wr_req, s.wr_bytes, s.errs];
    for (known, value) in BLK_FIELDS.iter().zip(values) {
        if value >= 0 {
            let name = if human {
                known.human
            } else {
                known.legacy.unwrap_or(known.field)
            };
            blk_line(&mut out, shown_device, human, name, &value.to_string());
        }
    }
    out
}

/// `virsh domifstat`: negative values are unknown and not printed.
pub fn domifstat(device: &str, s: &DomainInterfaceStatsRet) -> String {
    let fields = [
        ("rx_bytes", s.rx_bytes),
        ("rx_packets", s.rx_packets),
        ("rx_errs", s.rx_errs),
        ("rx_drop", s.rx_drop),
        ("tx_bytes", s.tx_bytes),
        ("tx_packets", s.tx_packets),
        ("tx_errs", s.tx_errs),
        ("tx_drop", s.tx_drop),
    ];
    let mut out = String::new();
    for (name, value) in fields.iter().filter(|(_, v)| *v >= 0) {
        let _ = writeln!(out, "{device} {name} {value}");
    }
    out
}

/// A typed parameter's value as `vshGetTypedParamValue` prints it.
pub fn typed_value(v: &TypedParamValue) -> String {
    match v {
        TypedParamValue::Int(i) => i.to_string(),
        TypedParamValue::UInt(u) => u.to_string(),
        TypedParamValue::LLong(l) => l.to_string(),
        TypedParamValue::ULLong(u) => u.to_string(),
        TypedParamValue::Double(d) => format!("{d:.6}"),
        TypedParamValue::Boolean(b) => if *b { "yes" } else { "no" }.to_owned(),
        TypedParamValue::String(s) => s.clone(),
    }
}

/// `virsh domstats`: one block per domain, separated by an empty line.
pub fn domstats(records: &[(String, Vec<TypedParam>)]) -> String {
    let mut out = String::new();
    for (i, (name, params)) in records.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "Domain: '{name}'");
        for p in params {
            let _ = writeln!(out, "  {}={}", p.field, typed_value(&p.value));
        }
    }
    out
}

/// One row of `virsh list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Id while running.
    pub id: Option<u32>,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: [u8; 16],
    /// `virDomainState` (only needed for the table).
    pub state: i32,
    /// Title (only printed with `--title`).
    pub title: String,
}

/// Which columns `virsh list` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListStyle {
    /// `--uuid`.
    pub uuid: bool,
    /// `--name`.
    pub name: bool,
    /// `--id`.
    pub id: bool,
    /// `--title` (table only).
    pub title: bool,
}

/// Sorts as `virshDomainSorter`: running domains by id, then inactive ones by name,
/// ignoring case.
pub fn sort_domains(list: &mut [ListEntry]) {
    list.sort_by(|a, b| match (a.id, b.id) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
    });
}

/// `virsh list` output (entries already sorted).
pub fn list(entries: &[ListEntry], style: ListStyle, quiet: bool) -> String {
    if style.uuid || style.name || style.id {
        return list_plain(entries, style);
    }
    let mut table = if style.title {
        Table::new(&["Id", "Name", "State", "Title"])
    } else {
        Table::new(&["Id", "Name", "State"])
    };
    for e in entries {
        let id = e.id.map_or_else(|| "-".to_owned(), |id| id.to_string());
        let state = names::domain_state(e.state);
        if style.title {
            table.push_row(&[id.as_str(), &e.name, state, &e.title]);
        } else {
            table.push_row(&[id.as_str(), &e.name, state]);
        }
    }
    table.render(quiet)
}

fn list_plain(entries: &[ListEntry], style: ListStyle) -> String {
    let mut out = String::new();
    for e in entries {
        // `--id` alone lists only running domains.
        if style.id && !style.uuid && !style.name && e.id.is_none() {
            continue;
        }
        let mut parts = Vec::new();
        if style.uuid {
            parts.push(uuid_string(&e.uuid));
        }
        if style.id {
            parts.push(e.id.map_or_else(|| "-".to_owned(), |id| id.to_string()));
        }
        if style.name {
            parts.push(e.name.clone());
        }
        out.push_str(&parts.join(" "));
        out.push('\n');
    }
    out
}

/// `virsh event`: one lifecycle event.
pub fn lifecycle_event(domain: &str, event: i32, detail: i32) -> String {
    format!(
        "event 'lifecycle' for domain '{domain}': {} {}\n",
        names::lifecycle_event(event),
        names::lifecycle_detail(event, detail)
    )
}

/// `virsh event`: an event without details (e.g. reboot).
pub fn generic_event(event_name: &str, domain: &str) -> String {
    format!("event '{event_name}' for domain '{domain}'\n")
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
