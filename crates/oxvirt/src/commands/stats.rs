//! Listing and monitoring commands: list, dominfo, domstats, vcpuinfo, domblklist, domiflist,
//! domblkstat, domifstat, dommemstat.

use super::domain::{domain_arg, get_xml, state_of};
use super::{CmdError, LookupBy, Session, is_unsupported};
use crate::args::{ArgError, Command, DomstatsArgs, Either, ListArgs};
use crate::devices;
use crate::format::{self, DomInfo, InfoFields, ListEntry, ListStyle, SecurityInfo};
use rpc::client::ClientError;
use rpc::procedures::{
    ConnectGetAllDomainStatsArgs, ConnectListAllDomainsArgs, DomainArgs, DomainBlockStatsArgs,
    DomainBlockStatsFlagsArgs, DomainFlagsArgs, DomainGetVcpuPinInfoArgs, DomainGetVcpusArgs,
    DomainInterfaceStatsArgs, DomainMemoryStatsArgs, NodeGetCpuMapArgs, NonnullDomain,
    c_chars_to_string, call,
};

/// `VIR_DOMAIN_MEMORY_STAT_NR`: the statistics libvirt 9.0 knows.
const MEMORY_STAT_NR: u32 = 13;
/// `VIR_DOMAIN_XML_INACTIVE`.
const XML_INACTIVE: u32 = 2;
/// `VIR_DOMAIN_AFFECT_CONFIG`.
const AFFECT_CONFIG: u32 = 2;

/// Runs `command` if it is one of this module's; `None` otherwise.
pub(super) async fn run(s: &mut Session<'_>, command: &Command) -> Option<Result<(), CmdError>> {
    use Command as C;
    let result = match command {
        C::List(args) => list(s, args).await,
        C::Dominfo { domain } => dominfo(s, domain).await,
        C::Domstats(args) => domstats(s, args).await,
        C::Vcpuinfo { domain, pretty } => vcpuinfo(s, domain, *pretty).await,
        C::Domblklist {
            domain,
            inactive,
            details,
        } => domblklist(s, domain, *inactive, *details).await,
        C::Domiflist { domain, inactive } => domiflist(s, domain, *inactive).await,
        C::Domblkstat {
            domain,
            device,
            named_device,
            human,
        } => {
            let device = named_device.as_deref().or(device.as_deref()).unwrap_or("");
            domblkstat(s, domain, device, *human).await
        }
        C::Domifstat {
            domain,
            interface,
            named_interface,
        } => match interface_arg(interface, named_interface) {
            Ok(device) => domifstat(s, domain, device).await,
            Err(e) => Err(e.into()),
        },
        C::Dommemstat { domain } => dommemstat(s, domain).await,
        _ => return None,
    };
    Some(result)
}

/// The interface of `domifstat`, required as in virsh.
pub(super) fn interface_arg<'a>(
    positional: &'a Option<String>,
    named: &'a Option<String>,
) -> Result<&'a str, ArgError> {
    match (positional, named) {
        (Some(_), Some(_)) => Err(ArgError::Duplicate {
            option: "interface",
        }),
        (Some(v), None) | (None, Some(v)) => Ok(v),
        (None, None) => Err(ArgError::Missing {
            command: "domifstat",
            option: "interface",
        }),
    }
}

fn id_of(dom: &NonnullDomain) -> Option<u32> {
    u32::try_from(dom.id).ok()
}

async fn list(s: &mut Session<'_>, args: &ListArgs) -> Result<(), CmdError> {
    args.check()?;
    let query = ConnectListAllDomainsArgs {
        need_results: 1,
        flags: args.flags(),
    };
    let domains = s
        .call::<call::ConnectListAllDomains>(&query)
        .await
        .map_err(|e| CmdError::with_cause("Failed to list domains", &e))?
        .domains;
    let style = ListStyle {
        uuid: args.uuid,
        name: args.name,
        id: args.id,
        title: args.title,
    };
    let table = !(style.uuid || style.name || style.id);
    let mut entries = Vec::with_capacity(domains.len());
    for dom in domains {
        let mut entry = ListEntry {
            id: id_of(&dom),
            name: dom.name.clone(),
            uuid: dom.uuid,
            state: 0,
            title: String::new(),
        };
        if table {
            // A domain that vanished since the listing is left out, as virsh does.
            let Ok((state, _)) = state_of(s, &dom).await else {
                continue;
            };
            entry.state = state;
            if style.title {
                entry.title = devices::title(&get_xml(s, dom, 0).await?);
            }
        }
        entries.push(entry);
    }
    format::sort_domains(&mut entries);
    let quiet = s.quiet();
    s.print(&format::list(&entries, style, quiet))
}

async fn dominfo(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "dominfo", LookupBy::ANY).await?;
    let args = DomainArgs { dom: dom.clone() };
    let flags_args = DomainFlagsArgs {
        dom: dom.clone(),
        flags: 0,
    };
    let os_type = s.call::<call::DomainGetOsType>(&args).await.ok();
    let info = s.call::<call::DomainGetInfo>(&args).await;
    let mut info_error = None;
    let info = match info {
        Ok(i) => Some(InfoFields {
            state: i32::try_from(i.state).unwrap_or(0),
            nr_virt_cpu: u32::from(i.nr_virt_cpu),
            cpu_time: i.cpu_time,
            max_mem: i.max_mem,
            memory: i.memory,
        }),
        Err(e) => {
            info_error = Some(CmdError::cause(&e));
            None
        }
    };
    let flag = |r: Result<rpc::procedures::IntRet, ClientError>| r.ok().map(|v| v.value != 0);
    let mut out = DomInfo {
        id: id_of(&dom),
        name: dom.name.clone(),
        uuid: dom.uuid,
        os_type: os_type.map(|o| o.type_),
        info,
        persistent: flag(s.call::<call::DomainIsPersistent>(&args).await),
        autostart: flag(s.call::<call::DomainGetAutostart>(&args).await),
        managed_save: flag(s.call::<call::DomainHasManagedSaveImage>(&flags_args).await),
        security: None,
        messages: Vec::new(),
    };
    let security = security_info(s, &args).await;
    let security_error = match security {
        Ok(sec) => {
            out.security = sec;
            None
        }
        Err(e) => Some(e),
    };
    if let Ok(m) = s.call::<call::DomainGetMessages>(&flags_args).await {
        out.messages = m.msgs;
    }
    s.print(&format::dominfo(&out))?;
    match info_error.or(security_error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The host's security model and the domain's label; `None` without a security driver.
async fn security_info(
    s: &Session<'_>,
    args: &DomainArgs,
) -> Result<Option<SecurityInfo>, CmdError> {
    let model = match s.call::<call::NodeGetSecurityModel>(&()).await {
        Ok(m) => m,
        Err(e) if is_unsupported(&e) => return Ok(None),
        Err(e) => return Err(CmdError::cause(&e)),
    };
    let mut sec = SecurityInfo {
        model: c_chars_to_string(&model.model),
        doi: c_chars_to_string(&model.doi),
        label: None,
    };
    if !sec.model.is_empty() {
        let label = s
            .call::<call::DomainGetSecurityLabel>(args)
            .await
            .map_err(|e| CmdError::cause(&e))?;
        sec.label = Some((c_chars_to_string(&label.label), label.enforcing != 0));
    }
    Ok(Some(sec))
}

async fn domstats(s: &mut Session<'_>, args: &DomstatsArgs) -> Result<(), CmdError> {
    let mut doms = Vec::new();
    for name in args.all_domains() {
        doms.push(s.lookup(&name, LookupBy::ANY).await?);
    }
    let query = ConnectGetAllDomainStatsArgs {
        doms,
        stats: args.stats(),
        flags: args.flags(),
    };
    let records = s
        .call::<call::ConnectGetAllDomainStats>(&query)
        .await
        .map_err(|e| CmdError::cause(&e))?
        .ret_stats;
    let records: Vec<_> = records
        .into_iter()
        .map(|r| (r.dom.name, r.params))
        .collect();
    s.print(&format::domstats(&records))
}

/// `virshNodeGetCPUCount`: `NODE_GET_CPU_MAP`, or the topology of `NODE_GET_INFO`.
async fn host_cpu_count(s: &Session<'_>) -> Result<usize, CmdError> {
    let args = NodeGetCpuMapArgs {
        need_map: 0,
        need_online: 0,
        flags: 0,
    };
    match s.call::<call::NodeGetCpuMap>(&args).await {
        Ok(r) => Ok(usize::try_from(r.ret).unwrap_or(0)),
        Err(e) if is_unsupported(&e) => {
            let n = s
                .call::<call::NodeGetInfo>(&())
                .await
                .map_err(|e| CmdError::cause(&e))?;
            let cpus = [n.nodes, n.sockets, n.cores, n.threads]
                .iter()
                .map(|v| usize::try_from(*v).unwrap_or(0))
                .product();
            Ok(cpus)
        }
        Err(e) => Err(CmdError::cause(&e)),
    }
}

async fn vcpuinfo(s: &mut Session<'_>, arg: &Either, pretty: bool) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "vcpuinfo", LookupBy::ANY).await?;
    let maxcpu = host_cpu_count(s).await?;
    let info = s
        .call::<call::DomainGetInfo>(&DomainArgs { dom: dom.clone() })
        .await
        .map_err(|e| CmdError::cause(&e))?;
    let nvcpus = i32::from(info.nr_virt_cpu);
    let maplen = i32::try_from(format::cpu_map_len(maxcpu)).unwrap_or(i32::MAX);
    let args = DomainGetVcpusArgs {
        dom: dom.clone(),
        maxinfo: nvcpus,
        maplen,
    };
    match s.call::<call::DomainGetVcpus>(&args).await {
        Ok(r) => s.print(&format::vcpuinfo(&r.info, &r.cpumaps, maxcpu, pretty)),
        Err(e) if info.state != crate::names::state::SHUTOFF as u32 => Err(CmdError::cause(&e)),
        Err(_) => {
            // An inactive domain has no vCPU threads: print its configured pinning instead.
            let args = DomainGetVcpuPinInfoArgs {
                dom,
                ncpumaps: nvcpus,
                maplen,
                flags: AFFECT_CONFIG,
            };
            let pins = s
                .call::<call::DomainGetVcpuPinInfo>(&args)
                .await
                .map_err(|e| CmdError::cause(&e))?;
            let n = usize::try_from(pins.num).unwrap_or(0);
            s.print(&format::vcpuinfo_inactive(n, &pins.cpumaps, maxcpu, pretty))
        }
    }
}

async fn domain_devices(
    s: &Session<'_>,
    arg: &Either,
    command: &'static str,
    inactive: bool,
) -> Result<devices::Devices, CmdError> {
    let dom = domain_arg(s, arg, command, LookupBy::ANY).await?;
    let xml = get_xml(s, dom, if inactive { XML_INACTIVE } else { 0 }).await?;
    devices::parse(&xml).map_err(|e| CmdError::msg(e.to_string()))
}

async fn domblklist(
    s: &mut Session<'_>,
    arg: &Either,
    inactive: bool,
    details: bool,
) -> Result<(), CmdError> {
    let devices = domain_devices(s, arg, "domblklist", inactive).await?;
    let text = devices::domblklist(&devices.disks, details, s.quiet())
        .map_err(|e| CmdError::msg(e.to_string()))?;
    s.print(&text)
}

async fn domiflist(s: &mut Session<'_>, arg: &Either, inactive: bool) -> Result<(), CmdError> {
    let devices = domain_devices(s, arg, "domiflist", inactive).await?;
    let quiet = s.quiet();
    s.print(&devices::domiflist(&devices.interfaces, quiet))
}

async fn domblkstat(
    s: &mut Session<'_>,
    arg: &Either,
    device: &str,
    human: bool,
) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "domblkstat", LookupBy::ANY).await?;
    let name = dom.name.clone();
    let mut query = DomainBlockStatsFlagsArgs {
        dom: dom.clone(),
        path: device.to_owned(),
        nparams: 0,
        flags: 0,
    };
    match s.call::<call::DomainBlockStatsFlags>(&query).await {
        Ok(count) => {
            query.nparams = count.nparams;
            let params = s
                .call::<call::DomainBlockStatsFlags>(&query)
                .await
                .map_err(|e| {
                    let context =
                        format!("Failed to get block stats for domain '{name}' device '{device}'");
                    CmdError::with_cause(context, &e)
                })?
                .params;
            s.print(&format::domblkstat_params(device, &params, human))
        }
        Err(e) if is_unsupported(&e) => {
            let args = DomainBlockStatsArgs {
                dom,
                path: device.to_owned(),
            };
            let stats = s.call::<call::DomainBlockStats>(&args).await.map_err(|e| {
                CmdError::with_cause(format!("Failed to get block stats {name} {device}"), &e)
            })?;
            s.print(&format::domblkstat_legacy(device, &stats, human))
        }
        Err(e) => Err(CmdError::cause(&e)),
    }
}

async fn domifstat(s: &mut Session<'_>, arg: &Either, device: &str) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "domifstat", LookupBy::ANY).await?;
    let name = dom.name.clone();
    let args = DomainInterfaceStatsArgs {
        dom,
        device: device.to_owned(),
    };
    let stats = s
        .call::<call::DomainInterfaceStats>(&args)
        .await
        .map_err(|e| {
            CmdError::with_cause(format!("Failed to get interface stats {name} {device}"), &e)
        })?;
    s.print(&format::domifstat(device, &stats))
}

async fn dommemstat(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "dommemstat", LookupBy::ANY).await?;
    let name = dom.name.clone();
    let args = DomainMemoryStatsArgs {
        dom,
        max_stats: MEMORY_STAT_NR,
        flags: 0,
    };
    let stats = s
        .call::<call::DomainMemoryStats>(&args)
        .await
        .map_err(|e| {
            CmdError::with_cause(
                format!("Failed to get memory statistics for domain {name}"),
                &e,
            )
        })?
        .stats;
    s.print(&format::dommemstat(&stats))
}
