//! Statistics: `domstats` (typed parameters named as libvirt's), `vcpuinfo`, `vcpupin`,
//! `domblkstat`, `domifstat` and `dommemstat`.
//!
//! Every figure is measured, never made up: CPU times and vCPU placement come from
//! `/proc/<oxvmm pid>` (oxvmm names its vCPU threads `vcpuN`), interface traffic from the TAP
//! device's counters in `/sys/class/net` (swapped: what the host sends on the TAP the guest
//! receives, as libvirt does), disk sizes from the files, per-disk requests from oxvmm's
//! `vm.counters` (`disks`, keyed by the name oxvmm gives the disk: the `id` the native driver
//! sets to the disk's `<target dev>`, else `vdX` by its place in the list).

use std::io::{Seek, SeekFrom};
use std::path::Path;

use domain::DomainDef;
use oxvirtd::DomainSummary;
use rpc::procedures::{
    CPUMAPS_MAX, ConnectGetAllDomainStatsArgs, ConnectGetAllDomainStatsRet,
    DomainBlockStatsFlagsRet, DomainBlockStatsRet, DomainGetVcpuPinInfoRet, DomainGetVcpusRet,
    DomainInterfaceStatsRet, DomainMemoryStat, DomainMemoryStatsRet, DomainStatsRecord, TypedParam,
    TypedParamValue, VCPUINFO_MAX, VcpuInfo, call,
};
use rpc::server::{IncomingCall, Reply};
use rpc::{Procedure, RemoteError};
use vmm_api::types::DiskCounters;

use super::connect::{all_cpus_map, meminfo_kib};
use super::domains::{guest_memory_kib, list_filter_matches};
use super::errors::{self, check_flags};
use super::{Daemon, nonnull};

/// `VIR_DOMAIN_STATS_*` groups.
mod groups {
    pub const STATE: u32 = 1;
    pub const CPU_TOTAL: u32 = 2;
    pub const BALLOON: u32 = 4;
    pub const VCPU: u32 = 8;
    pub const INTERFACE: u32 = 16;
    pub const BLOCK: u32 = 32;
    pub const SUPPORTED: u32 = STATE | CPU_TOTAL | BALLOON | VCPU | INTERFACE | BLOCK;
}

/// `VIR_CONNECT_GET_ALL_DOMAINS_STATS_*` flags: the eight list filters, then these.
mod stats_flags {
    pub const FILTERS: u32 = 0xff;
    pub const NOWAIT: u32 = 1 << 29;
    pub const BACKING: u32 = 1 << 30;
    pub const ENFORCE_STATS: u32 = 1 << 31;
}

/// `VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON` and `..._RSS`.
const MEMORY_STAT_ACTUAL_BALLOON: i32 = 6;
const MEMORY_STAT_RSS: i32 = 7;
/// `VIR_VCPU_RUNNING`.
const VCPU_RUNNING: i32 = 1;

/// One vCPU thread of an oxvmm process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuThread {
    /// The vCPU number (from the thread name `vcpuN`).
    pub index: u32,
    /// The thread id.
    pub tid: i32,
    /// CPU time used, in nanoseconds.
    pub cpu_time_ns: u64,
    /// The host CPU it last ran on.
    pub cpu: i32,
}

/// Fields of a `/proc/.../stat` line after the command name: `(utime, stime, processor)`.
fn parse_task_stat(text: &str) -> Option<(u64, u64, i32)> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 of stat(5).
    let field = |n: usize| fields.get(n - 3).copied();
    Some((
        field(14)?.parse().ok()?,
        field(15)?.parse().ok()?,
        field(39)?.parse().ok()?,
    ))
}

fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / oxvirtd::process::clock_ticks_per_second().max(1)
}

/// The vCPU threads of process `pid`, by vCPU number.
pub fn vcpu_threads(pid: i32) -> Vec<VcpuThread> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<VcpuThread> = tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let index = comm.trim().strip_prefix("vcpu")?.parse().ok()?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (user, system, cpu) = parse_task_stat(&stat)?;
            Some(VcpuThread {
                index,
                tid,
                cpu_time_ns: ticks_to_ns(user + system),
                cpu,
            })
        })
        .collect();
    threads.sort_by_key(|t| t.index);
    threads
}

/// User and system CPU time of process `pid`, in nanoseconds.
fn process_cpu_ns(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system, _) = parse_task_stat(&stat)?;
    Some((ticks_to_ns(user), ticks_to_ns(system)))
}

fn process_rss_kib(pid: i32) -> Option<u64> {
    meminfo_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS",
    )
}

/// The CPU affinity of thread `tid` as a libvirt CPU map of `maplen` bytes.
fn affinity_map(tid: i32, maplen: usize, host_cpus: u32) -> Vec<u8> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    let ret =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let mut map = vec![0u8; maplen];
    if ret != 0 {
        let all = all_cpus_map(host_cpus);
        for (slot, byte) in map.iter_mut().zip(all) {
            *slot = byte;
        }
        return map;
    }
    for cpu in 0..maplen * 8 {
        // SAFETY: CPU_ISSET reads bit `cpu` of `set`; cpu < maplen * 8 and the macro checks
        // it against the set's size.
        if cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &set) } {
            map[cpu / 8] |= 1 << (cpu % 8);
        }
    }
    map
}

/// The number of CPU maps and the bytes of each a client asked for, refused as libvirt's
/// remote dispatcher refuses them when the reply could not fit the protocol's limits (the
/// client chooses both, so unchecked they would make the daemon allocate gigabytes). Negative
/// counts ask for none.
fn cpumap_request(count: i32, maplen: i32, name: &str) -> Result<(usize, usize), RemoteError> {
    let count = u32::try_from(count).unwrap_or(0);
    let maplen = u32::try_from(maplen).unwrap_or(0);
    if count > VCPUINFO_MAX {
        return Err(RemoteError::rpc(format!("{name} > REMOTE_VCPUINFO_MAX")));
    }
    if u64::from(count) * u64::from(maplen) > u64::from(CPUMAPS_MAX) {
        return Err(RemoteError::rpc(format!(
            "{name} * maplen > REMOTE_CPUMAPS_MAX"
        )));
    }
    Ok((count as usize, maplen as usize))
}

/// A TAP device's counters, seen from the guest: `[rx_bytes, rx_packets, rx_errs, rx_drop,
/// tx_bytes, tx_packets, tx_errs, tx_drop]`.
pub fn guest_interface_counters(tap: &str) -> Option<[i64; 8]> {
    if tap.is_empty() || tap.contains('/') {
        return None;
    }
    let dir = Path::new("/sys/class/net").join(tap).join("statistics");
    let read = |name: &str| -> Option<i64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // The host transmits on the TAP what the guest receives.
    Some([
        read("tx_bytes")?,
        read("tx_packets")?,
        read("tx_errors")?,
        read("tx_dropped")?,
        read("rx_bytes")?,
        read("rx_packets")?,
        read("rx_errors")?,
        read("rx_dropped")?,
    ])
}

/// The size of a disk image or block device, in bytes, and the bytes it occupies.
fn disk_sizes(path: &Path) -> Option<(u64, u64)> {
    let mut file = std::fs::File::open(path).ok()?;
    let capacity = file.seek(SeekFrom::End(0)).ok()?;
    let metadata = file.metadata().ok()?;
    let allocation = if metadata.is_file() {
        std::os::unix::fs::MetadataExt::blocks(&metadata) * 512
    } else {
        capacity
    };
    Some((capacity, allocation))
}

fn ull(field: String, value: u64) -> TypedParam {
    TypedParam::new(field, TypedParamValue::ULLong(value))
}

fn uint(field: String, value: usize) -> TypedParam {
    TypedParam::new(
        field,
        TypedParamValue::UInt(u32::try_from(value).unwrap_or(u32::MAX)),
    )
}

/// A counter as the signed 64-bit figure libvirt's structures carry.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `virDomainBlockStatsFlags`' fields (`VIR_DOMAIN_BLOCK_STATS_*`) that oxvmm counts.
fn block_stats_params(c: &DiskCounters) -> Vec<TypedParam> {
    let llong =
        |field: &str, value: u64| TypedParam::new(field, TypedParamValue::LLong(signed(value)));
    vec![
        llong("rd_operations", c.reads),
        llong("rd_bytes", c.bytes_read),
        llong("wr_operations", c.writes),
        llong("wr_bytes", c.bytes_written),
        llong("flush_operations", c.flushes),
    ]
}

fn string(field: String, value: String) -> TypedParam {
    TypedParam::new(field, TypedParamValue::String(value))
}

/// What one domain's statistics are computed from.
struct StatsSource<'a> {
    summary: &'a DomainSummary,
    def: &'a DomainDef,
    /// oxvmm's pid while running.
    pid: Option<i32>,
    /// The configuration it runs with.
    live: Option<vmm_api::VmConfig>,
    taps: Vec<String>,
    /// Disk counters from oxvmm (`vm.counters`), when asked for.
    disks: Option<std::collections::BTreeMap<String, DiskCounters>>,
}

impl StatsSource<'_> {
    fn state(&self, out: &mut Vec<TypedParam>) {
        let state = self.summary.state;
        out.push(TypedParam::new(
            "state.state",
            TypedParamValue::Int(state.code()),
        ));
        out.push(TypedParam::new(
            "state.reason",
            TypedParamValue::Int(state.reason_code()),
        ));
    }

    fn cpu(&self, out: &mut Vec<TypedParam>) {
        if let Some((user, system)) = self.pid.and_then(process_cpu_ns) {
            out.push(ull("cpu.time".into(), user + system));
            out.push(ull("cpu.user".into(), user));
            out.push(ull("cpu.system".into(), system));
        }
    }

    fn balloon(&self, out: &mut Vec<TypedParam>) {
        let current = match &self.live {
            Some(config) => guest_memory_kib(config),
            None => self.def.current_memory_kib,
        };
        out.push(ull("balloon.current".into(), current));
        out.push(ull("balloon.maximum".into(), self.def.memory_kib));
        if let Some(rss) = self.pid.and_then(process_rss_kib) {
            out.push(ull("balloon.rss".into(), rss));
        }
    }

    fn vcpu(&self, out: &mut Vec<TypedParam>) {
        let count = self.def.vcpus as usize;
        out.push(uint("vcpu.current".into(), count));
        out.push(uint("vcpu.maximum".into(), count));
        let Some(pid) = self.pid else { return };
        for thread in vcpu_threads(pid) {
            let n = thread.index;
            out.push(TypedParam::new(
                format!("vcpu.{n}.state"),
                TypedParamValue::Int(VCPU_RUNNING),
            ));
            out.push(ull(format!("vcpu.{n}.time"), thread.cpu_time_ns));
        }
    }

    fn interfaces(&self, out: &mut Vec<TypedParam>) {
        if self.pid.is_none() {
            out.push(uint("net.count".into(), 0));
            return;
        }
        out.push(uint("net.count".into(), self.taps.len()));
        let names = ["rx.bytes", "rx.pkts", "rx.errs", "rx.drop"];
        let names = names
            .iter()
            .chain(&["tx.bytes", "tx.pkts", "tx.errs", "tx.drop"]);
        for (i, tap) in self.taps.iter().enumerate() {
            out.push(string(format!("net.{i}.name"), tap.clone()));
            if let Some(values) = guest_interface_counters(tap) {
                for (name, value) in names.clone().zip(values) {
                    out.push(ull(format!("net.{i}.{name}"), value.max(0) as u64));
                }
            }
        }
    }

    fn blocks(&self, out: &mut Vec<TypedParam>) {
        let disks = &self.def.devices.disks;
        out.push(uint("block.count".into(), disks.len()));
        for (i, disk) in disks.iter().enumerate() {
            out.push(string(format!("block.{i}.name"), disk.target.clone()));
            let path = disk.source.display().to_string();
            out.push(string(format!("block.{i}.path"), path));
            if let Some(c) = self.disk_counters(i, &disk.target) {
                out.push(ull(format!("block.{i}.rd.reqs"), c.reads));
                out.push(ull(format!("block.{i}.rd.bytes"), c.bytes_read));
                out.push(ull(format!("block.{i}.wr.reqs"), c.writes));
                out.push(ull(format!("block.{i}.wr.bytes"), c.bytes_written));
                out.push(ull(format!("block.{i}.fl.reqs"), c.flushes));
            }
            if let Some((capacity, allocation)) = disk_sizes(&disk.source) {
                out.push(ull(format!("block.{i}.allocation"), allocation));
                out.push(ull(format!("block.{i}.capacity"), capacity));
                out.push(ull(format!("block.{i}.physical"), capacity));
            }
        }
    }

    /// The counters of the `index`th disk of the definition (target `target`), when oxvmm
    /// reported them.
    fn disk_counters(&self, index: usize, target: &str) -> Option<DiskCounters> {
        let key = oxvmm_disk_name(self.live.as_ref(), index, target);
        self.disks.as_ref()?.get(&key).copied()
    }
}

/// The name oxvmm reports the `index`th disk under: the definition's disks are oxvmm's, in
/// the same order (`domain::native`), so it is the name of oxvmm's disk `index`; without the
/// live configuration, the target the native driver makes its id.
fn oxvmm_disk_name(live: Option<&vmm_api::VmConfig>, index: usize, target: &str) -> String {
    live.and_then(|config| config.disks.get(index))
        .map_or_else(|| target.to_string(), |disk| disk.name(index))
}

impl Daemon {
    /// The statistics procedures; `None` for any other.
    pub(super) async fn stats_call(
        &self,
        call: &IncomingCall,
    ) -> Option<Result<Reply, RemoteError>> {
        Some(match call.procedure {
            Procedure::ConnectGetAllDomainStats => {
                call.handle::<call::ConnectGetAllDomainStats, _, _>(|a| self.all_stats(a))
                    .await
            }
            Procedure::DomainGetVcpus => {
                call.handle::<call::DomainGetVcpus, _, _>(|a| async move {
                    let (summary, pid) = self.running_pid(&a.dom, "retrieve vcpu information")?;
                    let def = self.def_of(&summary.name, false)?;
                    let (maxinfo, maplen) = cpumap_request(a.maxinfo, a.maplen, "maxinfo")?;
                    let threads: Vec<VcpuThread> = (vcpu_threads(pid).into_iter())
                        .filter(|t| t.index < def.vcpus)
                        .take(maxinfo)
                        .collect();
                    let mut ret = DomainGetVcpusRet::default();
                    for t in threads {
                        ret.info.push(VcpuInfo {
                            number: t.index,
                            state: VCPU_RUNNING,
                            cpu_time: t.cpu_time_ns,
                            cpu: t.cpu,
                        });
                        ret.cpumaps
                            .extend(affinity_map(t.tid, maplen, self.host.cpus()));
                    }
                    Ok(ret)
                })
                .await
            }
            Procedure::DomainGetVcpuPinInfo => {
                call.handle::<call::DomainGetVcpuPinInfo, _, _>(|a| async move {
                    check_flags(a.flags, 3, "virDomainGetVcpuPinInfo")?;
                    let summary = self.resolve(&a.dom)?;
                    let def = self.def_of(&summary.name, a.flags & 2 != 0)?;
                    let (ncpumaps, maplen) = cpumap_request(a.ncpumaps, a.maplen, "ncpumaps")?;
                    let count = (def.vcpus as usize).min(ncpumaps);
                    let live = (a.flags & 2 == 0)
                        .then(|| self.registry.driver().active(&summary.name))
                        .flatten();
                    let threads = live.map(|a| vcpu_threads(a.pid)).unwrap_or_default();
                    let mut cpumaps = Vec::with_capacity(count * maplen);
                    for index in 0..count {
                        let map = match threads.iter().find(|t| t.index as usize == index) {
                            Some(t) => affinity_map(t.tid, maplen, self.host.cpus()),
                            None => {
                                let mut map = all_cpus_map(self.host.cpus());
                                map.resize(maplen, 0);
                                map
                            }
                        };
                        cpumaps.extend(map);
                    }
                    Ok(DomainGetVcpuPinInfoRet {
                        cpumaps,
                        num: count as i32,
                    })
                })
                .await
            }
            Procedure::DomainBlockStats => {
                call.handle::<call::DomainBlockStats, _, _>(|a| async move {
                    let c = self.block_counters(&a.dom, &a.path).await?;
                    Ok(DomainBlockStatsRet {
                        rd_req: signed(c.reads),
                        rd_bytes: signed(c.bytes_read),
                        wr_req: signed(c.writes),
                        wr_bytes: signed(c.bytes_written),
                        // What libvirt answers for a figure the hypervisor does not report.
                        errs: -1,
                    })
                })
                .await
            }
            Procedure::DomainBlockStatsFlags => {
                call.handle::<call::DomainBlockStatsFlags, _, _>(|a| async move {
                    let c = self.block_counters(&a.dom, &a.path).await?;
                    let mut params = block_stats_params(&c);
                    let nparams = params.len() as i32;
                    // nparams 0 asks how many there are; otherwise at most that many.
                    params.truncate(usize::try_from(a.nparams).unwrap_or(0));
                    Ok(DomainBlockStatsFlagsRet { params, nparams })
                })
                .await
            }
            Procedure::DomainInterfaceStats => {
                call.handle::<call::DomainInterfaceStats, _, _>(|a| async move {
                    self.interface_stats(&a.dom, &a.device)
                })
                .await
            }
            Procedure::DomainMemoryStats => {
                call.handle::<call::DomainMemoryStats, _, _>(|a| async move {
                    check_flags(a.flags, 0, "virDomainMemoryStats")?;
                    let (summary, pid) = self.running_pid(&a.dom, "get memory statistics of")?;
                    let current = (self.registry.driver().live_config(&summary.name))
                        .map(|config| guest_memory_kib(&config));
                    let mut stats = Vec::new();
                    if let Some(current) = current {
                        stats.push(DomainMemoryStat {
                            tag: MEMORY_STAT_ACTUAL_BALLOON,
                            val: current,
                        });
                    }
                    if let Some(rss) = process_rss_kib(pid) {
                        stats.push(DomainMemoryStat {
                            tag: MEMORY_STAT_RSS,
                            val: rss,
                        });
                    }
                    stats.truncate(a.max_stats as usize);
                    Ok(DomainMemoryStatsRet { stats })
                })
                .await
            }
            _ => return None,
        })
    }

    /// The domain and its oxvmm pid; "cannot {what} an inactive domain" when it is not running.
    fn running_pid(
        &self,
        dom: &rpc::procedures::NonnullDomain,
        what: &str,
    ) -> Result<(DomainSummary, i32), RemoteError> {
        let summary = self.resolve(dom)?;
        let active = self
            .registry
            .driver()
            .active(&summary.name)
            .ok_or_else(|| {
                RemoteError::operation_invalid(format!("cannot {what} an inactive domain"))
            })?;
        Ok((summary, active.pid))
    }

    async fn all_stats(
        &self,
        args: ConnectGetAllDomainStatsArgs,
    ) -> Result<ConnectGetAllDomainStatsRet, RemoteError> {
        use stats_flags::*;
        check_flags(
            args.flags,
            FILTERS | NOWAIT | BACKING | ENFORCE_STATS,
            "virConnectGetAllDomainStats",
        )?;
        let unsupported = args.stats & !groups::SUPPORTED;
        if unsupported != 0 && args.flags & ENFORCE_STATS != 0 {
            return Err(RemoteError::new(
                rpc::remote_error::code::OPERATION_UNSUPPORTED,
                rpc::remote_error::domain::DOMAIN,
                format!(
                    "Operation not supported: Stats types bits 0x{unsupported:x} are not \
                     supported by this daemon"
                ),
            ));
        }
        let wanted = match args.stats & groups::SUPPORTED {
            0 => groups::SUPPORTED,
            some => some,
        };
        let summaries: Vec<DomainSummary> = if args.doms.is_empty() {
            (self.registry.list().into_iter())
                .filter(|d| list_filter_matches(args.flags & FILTERS, d))
                .collect()
        } else {
            let found: Result<Vec<_>, _> = args.doms.iter().map(|d| self.resolve(d)).collect();
            found?
        };
        let mut ret = ConnectGetAllDomainStatsRet::default();
        for summary in summaries {
            // A domain undefined meanwhile is simply not reported.
            let Ok(def) = self.def_of(&summary.name, false) else {
                continue;
            };
            let params = self.domain_stats(&summary, &def, wanted).await;
            ret.ret_stats.push(DomainStatsRecord {
                dom: nonnull(&summary),
                params,
            });
        }
        Ok(ret)
    }

    async fn domain_stats(
        &self,
        summary: &DomainSummary,
        def: &DomainDef,
        wanted: u32,
    ) -> Vec<TypedParam> {
        let driver = self.registry.driver();
        let active = driver.active(&summary.name);
        let disks = match &active {
            Some(_) if wanted & groups::BLOCK != 0 && !def.devices.disks.is_empty() => {
                driver.counters(&summary.name).await.ok().map(|c| c.disks)
            }
            _ => None,
        };
        let source = StatsSource {
            summary,
            def,
            pid: active.as_ref().map(|a| a.pid),
            live: active
                .as_ref()
                .and_then(|_| driver.live_config(&summary.name)),
            taps: self.live_taps(&summary.name),
            disks,
        };
        let mut out = Vec::new();
        if wanted & groups::STATE != 0 {
            source.state(&mut out);
        }
        if wanted & groups::CPU_TOTAL != 0 {
            source.cpu(&mut out);
        }
        if wanted & groups::BALLOON != 0 {
            source.balloon(&mut out);
        }
        if wanted & groups::VCPU != 0 {
            source.vcpu(&mut out);
        }
        if wanted & groups::INTERFACE != 0 {
            source.interfaces(&mut out);
        }
        if wanted & groups::BLOCK != 0 {
            source.blocks(&mut out);
        }
        out
    }

    /// A running domain's disk counters, for `domblkstat DOMAIN DISK`.
    async fn block_counters(
        &self,
        dom: &rpc::procedures::NonnullDomain,
        disk: &str,
    ) -> Result<DiskCounters, RemoteError> {
        let (summary, pid) = self.running_pid(dom, "get block statistics of")?;
        let def = self.def_of(&summary.name, false)?;
        let (index, found) = (def.devices.disks.iter().enumerate())
            .find(|(_, d)| d.target == disk || d.source == Path::new(disk))
            .ok_or_else(|| RemoteError::invalid_arg(format!("invalid path: {disk}")))?;
        let driver = self.registry.driver();
        let counters = driver.counters(&summary.name).await;
        let source = StatsSource {
            summary: &summary,
            def: &def,
            pid: Some(pid),
            live: driver.live_config(&summary.name),
            taps: Vec::new(),
            disks: Some(counters.map_err(errors::driver)?.disks),
        };
        source.disk_counters(index, &found.target).ok_or_else(|| {
            RemoteError::operation_failed(format!(
                "oxvmm reports no counters for disk {disk} of '{}'",
                summary.name
            ))
        })
    }

    fn interface_stats(
        &self,
        dom: &rpc::procedures::NonnullDomain,
        device: &str,
    ) -> Result<DomainInterfaceStatsRet, RemoteError> {
        let (summary, _) = self.running_pid(dom, "get interface statistics of")?;
        let def = self.def_of(&summary.name, false)?;
        let taps = self.live_taps(&summary.name);
        let tap = (def.devices.interfaces.iter().zip(&taps))
            .find(|(nic, tap)| *tap == device || nic.mac.to_string().eq_ignore_ascii_case(device))
            .map(|(_, tap)| tap.clone())
            .ok_or_else(|| {
                RemoteError::invalid_arg(format!(
                    "invalid path, '{device}' is not a known interface"
                ))
            })?;
        let v = guest_interface_counters(&tap).ok_or_else(|| {
            RemoteError::operation_failed(format!("cannot read the counters of interface {tap}"))
        })?;
        Ok(DomainInterfaceStatsRet {
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errs: v[2],
            rx_drop: v[3],
            tx_bytes: v[4],
            tx_packets: v[5],
            tx_errs: v[6],
            tx_drop: v[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpumap_requests_beyond_the_protocol_limits_are_refused() {
        let huge_maps = cpumap_request(4, i32::MAX, "maxinfo").unwrap_err();
        let too_many = cpumap_request(i32::MAX, 1, "ncpumaps").unwrap_err();
        let negative = cpumap_request(-1, -5, "maxinfo").unwrap();
        let largest = cpumap_request(4_096, 2_048, "maxinfo").unwrap();

        assert_eq!(huge_maps.code, rpc::remote_error::code::RPC);
        assert_eq!(
            huge_maps.message_text(),
            "maxinfo * maplen > REMOTE_CPUMAPS_MAX"
        );
        assert_eq!(too_many.message_text(), "ncpumaps > REMOTE_VCPUINFO_MAX");
        assert_eq!(negative, (0, 0));
        assert_eq!(largest, (4_096, 2_048));
    }

    #[test]
    fn task_stat_fields_are_read_after_the_command_name() {
        // A command name with spaces and parentheses, as a thread can have.
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        let line = format!("42 (vcpu 0 (x)) {}", fields.join(" "));

        assert_eq!(parse_task_stat(&line), Some((14, 15, 39)));
        assert_eq!(parse_task_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_no_vcpu_threads_but_a_cpu_time() {
        let pid = std::process::id() as i32;

        assert!(vcpu_threads(pid).is_empty());
        assert!(process_cpu_ns(pid).is_some());
        assert!(process_rss_kib(pid).unwrap() > 0);
    }

    #[test]
    fn the_affinity_of_this_thread_includes_a_cpu() {
        // SAFETY: gettid takes no arguments.
        let tid = unsafe { libc::gettid() };

        let map = affinity_map(tid, 4, 2);

        assert_eq!(map.len(), 4);
        assert!(map.iter().any(|b| *b != 0), "{map:?}");
    }

    #[test]
    fn loopback_counters_are_readable_and_a_missing_tap_is_none() {
        assert!(guest_interface_counters("lo").is_some());
        assert!(guest_interface_counters("nosuchtap0").is_none());
        assert!(guest_interface_counters("../lo").is_none());
    }

    #[test]
    fn a_disk_is_looked_up_under_the_name_oxvmm_gives_it() {
        let def = domain::DomainDef::from_xml(
            "<domain type='kvm'><name>d</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><features><acpi/><apic/></features>\
             <devices><disk type='file'><source file='/a'/><target dev='vda'/></disk>\
             <disk type='file'><source file='/b'/><target dev='vdz'/></disk></devices></domain>",
        )
        .unwrap();
        let runtime = crate::plan::native_runtime(
            &oxvirtd::Paths::new("/s", "/r"),
            "d",
            Vec::new(),
            &std::collections::HashSet::new(),
        );
        let mut live = def.to_vm_config(&runtime).unwrap();
        // A configuration whose second disk has no id (one oxvmm was given by hand).
        live.disks[1].id = None;

        assert_eq!(oxvmm_disk_name(Some(&live), 0, "vda"), "vda");
        assert_eq!(oxvmm_disk_name(Some(&live), 1, "vdz"), "vdb");
        assert_eq!(oxvmm_disk_name(None, 1, "vdc"), "vdc");
        assert_eq!(oxvmm_disk_name(Some(&live), 2, "vdc"), "vdc");
    }

    #[test]
    fn block_stats_carry_libvirts_field_names() {
        let counters = DiskCounters {
            reads: 2,
            bytes_read: 8192,
            writes: 1,
            bytes_written: u64::MAX,
            flushes: 3,
            ..DiskCounters::default()
        };

        let params = block_stats_params(&counters);

        let pairs: Vec<(&str, &TypedParamValue)> = params
            .iter()
            .map(|p| (p.field.as_str(), &p.value))
            .collect();
        assert_eq!(
            pairs,
            [
                ("rd_operations", &TypedParamValue::LLong(2)),
                ("rd_bytes", &TypedParamValue::LLong(8192)),
                ("wr_operations", &TypedParamValue::LLong(1)),
                ("wr_bytes", &TypedParamValue::LLong(i64::MAX)),
                ("flush_operations", &TypedParamValue::LLong(3)),
            ]
        );
    }

    #[test]
    fn disk_sizes_are_read_from_the_file() {
        let file = std::env::temp_dir().join(format!("oxvirtd-disk-{}", std::process::id()));
        std::fs::write(&file, vec![1u8; 8192]).unwrap();

        let (capacity, allocation) = disk_sizes(&file).unwrap();
        std::fs::remove_file(&file).unwrap();

        assert_eq!(capacity, 8192);
        assert!(allocation >= 8192, "{allocation}");
    }
}
