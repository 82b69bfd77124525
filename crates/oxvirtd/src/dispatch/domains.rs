//! Lookup, listing, information and XML: the read-only view of domains (`list`, `dominfo`,
//! `domstate`, `dumpxml`, `domid`, `domuuid`, `autostart` queries).

use domain::{DomainDef, LiveInfo, XmlOptions};
use oxvirtd::{DomainState, DomainSummary, NativeError, Uuid};
use rpc::procedures::{
    ConnectListAllDomainsArgs, ConnectListAllDomainsRet, ConnectListDefinedDomainsRet,
    ConnectListDomainsRet, ConnectNumOfDomainsRet, DomainGetInfoRet, DomainGetMaxMemoryRet,
    DomainGetMessagesRet, DomainGetOsTypeRet, DomainGetStateRet, DomainGetXmlDescRet, DomainRet,
    IntRet, NonnullDomain, call,
};
use rpc::server::{IncomingCall, Reply};
use rpc::{Procedure, RemoteError};

use super::errors::{self, check_flags};
use super::{Daemon, nonnull};

/// `virConnectListAllDomainsFlags`.
pub mod list_flags {
    /// `VIR_CONNECT_LIST_DOMAINS_ACTIVE`
    pub const ACTIVE: u32 = 1 << 0;
    /// `VIR_CONNECT_LIST_DOMAINS_INACTIVE`
    pub const INACTIVE: u32 = 1 << 1;
    /// `VIR_CONNECT_LIST_DOMAINS_PERSISTENT`
    pub const PERSISTENT: u32 = 1 << 2;
    /// `VIR_CONNECT_LIST_DOMAINS_TRANSIENT`
    pub const TRANSIENT: u32 = 1 << 3;
    /// `VIR_CONNECT_LIST_DOMAINS_RUNNING`
    pub const RUNNING: u32 = 1 << 4;
    /// `VIR_CONNECT_LIST_DOMAINS_PAUSED`
    pub const PAUSED: u32 = 1 << 5;
    /// `VIR_CONNECT_LIST_DOMAINS_SHUTOFF`
    pub const SHUTOFF: u32 = 1 << 6;
    /// `VIR_CONNECT_LIST_DOMAINS_OTHER`
    pub const OTHER: u32 = 1 << 7;
    /// `VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE`
    pub const MANAGEDSAVE: u32 = 1 << 8;
    /// `VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE`
    pub const NO_MANAGEDSAVE: u32 = 1 << 9;
    /// `VIR_CONNECT_LIST_DOMAINS_AUTOSTART`
    pub const AUTOSTART: u32 = 1 << 10;
    /// `VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART`
    pub const NO_AUTOSTART: u32 = 1 << 11;
    /// `VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT`
    pub const HAS_SNAPSHOT: u32 = 1 << 12;
    /// `VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT`
    pub const NO_SNAPSHOT: u32 = 1 << 13;
    /// `VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT`
    pub const HAS_CHECKPOINT: u32 = 1 << 14;
    /// `VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT`
    pub const NO_CHECKPOINT: u32 = 1 << 15;
    /// Every flag above.
    pub const ALL: u32 = (1 << 16) - 1;
}

/// `VIR_DOMAIN_XML_*` flags of `virDomainGetXMLDesc`.
mod xml_flags {
    pub const SECURE: u32 = 1;
    pub const INACTIVE: u32 = 2;
    pub const UPDATE_CPU: u32 = 4;
    pub const MIGRATABLE: u32 = 8;
}

/// Whether a flag pair (`yes`, `no`) lets a domain with `value` through: neither bit set
/// means no filter, as in libvirt.
fn pair(flags: u32, yes: u32, no: u32, value: bool) -> bool {
    flags & (yes | no) == 0 || (value && flags & yes != 0) || (!value && flags & no != 0)
}

/// libvirt's filter of `virConnectListAllDomains` (and of `domstats`).
pub fn list_filter_matches(flags: u32, d: &DomainSummary) -> bool {
    use list_flags::*;
    let state_bit = match d.state {
        DomainState::Running(_) => RUNNING,
        DomainState::Paused(_) => PAUSED,
        DomainState::Shutoff(_) => SHUTOFF,
    };
    let states = RUNNING | PAUSED | SHUTOFF | OTHER;
    pair(flags, ACTIVE, INACTIVE, d.state.is_active())
        && pair(flags, PERSISTENT, TRANSIENT, d.persistent)
        && (flags & states == 0 || flags & state_bit != 0)
        // No managed save images, snapshots or checkpoints exist here.
        && pair(flags, MANAGEDSAVE, NO_MANAGEDSAVE, false)
        && pair(flags, AUTOSTART, NO_AUTOSTART, d.autostart)
        && pair(flags, HAS_SNAPSHOT, NO_SNAPSHOT, false)
        && pair(flags, HAS_CHECKPOINT, NO_CHECKPOINT, false)
}

fn int(value: impl Into<i64>) -> Result<Reply, RemoteError> {
    let value = i32::try_from(value.into()).unwrap_or(i32::MAX);
    Ok(Reply::raw(value.to_be_bytes().to_vec()))
}

fn max_count(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0)
}

impl Daemon {
    /// Lookup, listing and information procedures; `None` for any other.
    pub(super) async fn domain_call(
        &self,
        call: &IncomingCall,
    ) -> Option<Result<Reply, RemoteError>> {
        Some(match call.procedure {
            Procedure::ConnectListAllDomains => {
                call.handle::<call::ConnectListAllDomains, _, _>(
                    |a| async move { self.list_all(a) },
                )
                .await
            }
            Procedure::ConnectNumOfDomains => {
                let n = self.registry.driver().list_active().len();
                Reply::encode::<call::ConnectNumOfDomains>(&ConnectNumOfDomainsRet {
                    num: i32::try_from(n).unwrap_or(i32::MAX),
                })
            }
            Procedure::ConnectListDomains => {
                call.handle::<call::ConnectListDomains, _, _>(|a| async move {
                    let mut ids: Vec<i32> = (self.registry.driver().list_active().iter())
                        .filter_map(|d| i32::try_from(d.id).ok())
                        .collect();
                    ids.sort_unstable();
                    ids.truncate(max_count(a.maxids));
                    Ok(ConnectListDomainsRet { ids })
                })
                .await
            }
            Procedure::ConnectNumOfDefinedDomains => {
                let n = self.defined_inactive().len();
                Reply::encode::<call::ConnectNumOfDefinedDomains>(&ConnectNumOfDomainsRet {
                    num: i32::try_from(n).unwrap_or(i32::MAX),
                })
            }
            Procedure::ConnectListDefinedDomains => {
                call.handle::<call::ConnectListDefinedDomains, _, _>(|a| async move {
                    let mut names = self.defined_inactive();
                    names.truncate(max_count(a.maxnames));
                    Ok(ConnectListDefinedDomainsRet { names })
                })
                .await
            }
            Procedure::DomainLookupByName => {
                call.handle::<call::DomainLookupByName, _, _>(|a| async move {
                    let summary = self.registry.lookup_by_name(&a.name).map_err(|_| {
                        RemoteError::no_domain(format!("no domain with matching name '{}'", a.name))
                    })?;
                    Ok(DomainRet {
                        dom: nonnull(&summary),
                    })
                })
                .await
            }
            Procedure::DomainLookupByUuid => {
                call.handle::<call::DomainLookupByUuid, _, _>(|a| async move {
                    let summary = self.registry.lookup_by_uuid(Uuid(a.uuid)).map_err(|_| {
                        RemoteError::no_domain(format!(
                            "no domain with matching uuid '{}'",
                            Uuid(a.uuid)
                        ))
                    })?;
                    Ok(DomainRet {
                        dom: nonnull(&summary),
                    })
                })
                .await
            }
            Procedure::DomainLookupById => {
                call.handle::<call::DomainLookupById, _, _>(|a| async move {
                    let summary = u32::try_from(a.id)
                        .ok()
                        .and_then(|id| self.registry.lookup_by_id(id).ok())
                        .ok_or_else(|| {
                            RemoteError::no_domain(format!("no domain with matching id {}", a.id))
                        })?;
                    Ok(DomainRet {
                        dom: nonnull(&summary),
                    })
                })
                .await
            }
            Procedure::DomainGetInfo => {
                call.handle::<call::DomainGetInfo, _, _>(|a| async move { self.info(&a.dom).await })
                    .await
            }
            Procedure::DomainGetState => {
                call.handle::<call::DomainGetState, _, _>(|a| async move {
                    check_flags(a.flags, 0, "virDomainGetState")?;
                    let state = self.resolve(&a.dom)?.state;
                    Ok(DomainGetStateRet {
                        state: state.code(),
                        reason: state.reason_code(),
                    })
                })
                .await
            }
            Procedure::DomainGetXmlDesc => {
                call.handle::<call::DomainGetXmlDesc, _, _>(|a| async move {
                    let summary = self.resolve(&a.dom)?;
                    Ok(DomainGetXmlDescRet {
                        xml: self.xml_desc(&summary, a.flags)?,
                    })
                })
                .await
            }
            Procedure::DomainGetAutostart => {
                let a = match call.args::<call::DomainGetAutostart>() {
                    Ok(a) => a,
                    Err(e) => return Some(Err(e)),
                };
                self.resolve(&a.dom)
                    .and_then(|d| int(i32::from(d.autostart)))
            }
            Procedure::DomainIsActive => {
                self.domain_int::<call::DomainIsActive>(call, |d, _| i32::from(d.state.is_active()))
            }
            Procedure::DomainIsPersistent => {
                self.domain_int::<call::DomainIsPersistent>(call, |d, _| i32::from(d.persistent))
            }
            // Definitions change only through define, which replaces the live one too.
            Procedure::DomainIsUpdated => self.domain_int::<call::DomainIsUpdated>(call, |_, _| 0),
            Procedure::DomainGetMaxVcpus => {
                self.domain_int::<call::DomainGetMaxVcpus>(call, |_, def| def.vcpus as i32)
            }
            Procedure::DomainHasManagedSaveImage => {
                self.flags_int::<call::DomainHasManagedSaveImage>(call, 0)
            }
            Procedure::DomainSnapshotNum => self.flags_int::<call::DomainSnapshotNum>(call, 0),
            Procedure::DomainGetVcpusFlags => self.vcpus_flags(call),
            Procedure::DomainGetOsType => {
                self.with_domain::<call::DomainGetOsType>(call, |_, _| DomainGetOsTypeRet {
                    type_: "hvm".into(),
                })
            }
            Procedure::DomainGetMaxMemory => {
                self.with_domain::<call::DomainGetMaxMemory>(call, |_, def| DomainGetMaxMemoryRet {
                    memory: def.memory_kib,
                })
            }
            Procedure::DomainGetMessages => call
                .args::<call::DomainGetMessages>()
                .and_then(|a| self.resolve(&a.dom))
                .and_then(|_| {
                    Reply::encode::<call::DomainGetMessages>(&DomainGetMessagesRet::default())
                }),
            _ => return None,
        })
    }

    fn list_all(
        &self,
        args: ConnectListAllDomainsArgs,
    ) -> Result<ConnectListAllDomainsRet, RemoteError> {
        check_flags(args.flags, list_flags::ALL, "virConnectListAllDomains")?;
        let domains: Vec<NonnullDomain> = self
            .registry
            .list()
            .iter()
            .filter(|d| list_filter_matches(args.flags, d))
            .map(nonnull)
            .collect();
        let ret = u32::try_from(domains.len()).unwrap_or(u32::MAX);
        Ok(ConnectListAllDomainsRet {
            domains: if args.need_results != 0 {
                domains
            } else {
                Vec::new()
            },
            ret,
        })
    }

    /// Names of persistent domains that are not running, sorted.
    fn defined_inactive(&self) -> Vec<String> {
        (self.registry.list().into_iter())
            .filter(|d| d.persistent && !d.state.is_active())
            .map(|d| d.name)
            .collect()
    }

    /// A reply of type `C::Ret` computed from the domain `C::Args` (a `DomainArgs`) names.
    fn with_domain<C>(
        &self,
        call: &IncomingCall,
        f: impl FnOnce(&DomainSummary, &DomainDef) -> C::Ret,
    ) -> Result<Reply, RemoteError>
    where
        C: rpc::RemoteCall<Args = rpc::procedures::DomainArgs>,
    {
        let args = call.args::<C>()?;
        let summary = self.resolve(&args.dom)?;
        let def = self.def_of(&summary.name, false)?;
        Reply::encode::<C>(&f(&summary, &def))
    }

    fn domain_int<C>(
        &self,
        call: &IncomingCall,
        f: impl FnOnce(&DomainSummary, &DomainDef) -> i32,
    ) -> Result<Reply, RemoteError>
    where
        C: rpc::RemoteCall<Args = rpc::procedures::DomainArgs, Ret = IntRet>,
    {
        self.with_domain::<C>(call, |d, def| IntRet { value: f(d, def) })
    }

    /// Answers `value` to a procedure taking a domain and flags (flags must be 0).
    fn flags_int<C>(&self, call: &IncomingCall, value: i32) -> Result<Reply, RemoteError>
    where
        C: rpc::RemoteCall<Args = rpc::procedures::DomainFlagsArgs>,
    {
        let args = call.args::<C>()?;
        check_flags(args.flags, 0, &call.procedure.to_string())?;
        self.resolve(&args.dom)?;
        int(value)
    }

    fn vcpus_flags(&self, call: &IncomingCall) -> Result<Reply, RemoteError> {
        const AFFECT_LIVE: u32 = 1;
        const AFFECT_CONFIG: u32 = 2;
        const MAXIMUM: u32 = 4;
        let args = call.args::<call::DomainGetVcpusFlags>()?;
        check_flags(
            args.flags,
            AFFECT_LIVE | AFFECT_CONFIG | MAXIMUM,
            "virDomainGetVcpusFlags",
        )?;
        let summary = self.resolve(&args.dom)?;
        if args.flags & AFFECT_LIVE != 0 && !summary.state.is_active() {
            return Err(RemoteError::operation_invalid("domain is not running"));
        }
        let inactive = args.flags & AFFECT_CONFIG != 0;
        // All vCPUs are online and none can be added: current = maximum.
        int(self.def_of(&summary.name, inactive)?.vcpus)
    }

    async fn info(&self, dom: &NonnullDomain) -> Result<DomainGetInfoRet, RemoteError> {
        let summary = self.resolve(dom)?;
        let def = self.def_of(&summary.name, false)?;
        let mut ret = DomainGetInfoRet {
            state: summary.state.code() as u32,
            max_mem: def.memory_kib,
            memory: def.current_memory_kib,
            nr_virt_cpu: u16::try_from(def.vcpus).unwrap_or(u16::MAX),
            cpu_time: 0,
        };
        if summary.state.is_active() {
            match self.registry.driver().info(&summary.name).await {
                Ok(info) => {
                    ret.state = info.state.code() as u32;
                    ret.cpu_time = info.cpu_time_ns;
                    ret.memory = guest_memory_kib(&info.config);
                }
                // It stopped meanwhile: what the definition says is the answer.
                Err(NativeError::NotRunning { .. }) => {
                    ret.state = self.registry.driver().state(&summary.name).code() as u32;
                }
                Err(e) => return Err(errors::driver(e)),
            }
        }
        Ok(ret)
    }

    /// `dumpxml`: the live XML with id and TAP devices while running, else the definition.
    fn xml_desc(&self, summary: &DomainSummary, flags: u32) -> Result<String, RemoteError> {
        use xml_flags::*;
        check_flags(
            flags,
            SECURE | INACTIVE | UPDATE_CPU | MIGRATABLE,
            "virDomainGetXMLDesc",
        )?;
        let inactive = flags & (INACTIVE | MIGRATABLE) != 0;
        let def = self.def_of(&summary.name, inactive)?;
        match summary.id {
            Some(id) if !inactive => {
                let live = LiveInfo {
                    id,
                    interface_taps: self.live_taps(&summary.name),
                    vsock_cid: (self.registry.driver().live_config(&summary.name))
                        .and_then(|config| config.vsock)
                        .and_then(|vsock| u32::try_from(vsock.cid).ok()),
                    ..LiveInfo::default()
                };
                Ok(def.to_xml(&XmlOptions::live(&live)))
            }
            _ => Ok(def.to_xml(&XmlOptions::INACTIVE)),
        }
    }

    /// The TAP device of each interface of a running domain, in definition order.
    pub(super) fn live_taps(&self, name: &str) -> Vec<String> {
        self.registry
            .driver()
            .live_config(name)
            .map(|config| {
                (config.nets.iter())
                    .map(|net| net.tap.clone().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The memory the guest has now: RAM minus what the balloon holds, in KiB.
pub fn guest_memory_kib(config: &vmm_api::VmConfig) -> u64 {
    let balloon = config.balloon.as_ref().map_or(0, |b| b.size_mib);
    config.memory.size_mib.saturating_sub(balloon) * 1024
}

#[cfg(test)]
mod tests {
    use super::list_flags::*;
    use super::*;
    use oxvirtd::{PausedReason, RunningReason, ShutoffReason};

    fn summary(state: DomainState, persistent: bool, autostart: bool) -> DomainSummary {
        DomainSummary {
            name: "d".into(),
            uuid: Uuid([1; 16]),
            id: state.is_active().then_some(1),
            persistent,
            autostart,
            state,
        }
    }

    #[test]
    fn list_filters_follow_libvirts_pairs() {
        let running = summary(DomainState::Running(RunningReason::Booted), true, false);
        let paused = summary(DomainState::Paused(PausedReason::User), false, false);
        let off = summary(DomainState::Shutoff(ShutoffReason::Unknown), true, true);

        assert!(list_filter_matches(0, &running));
        assert!(list_filter_matches(ACTIVE | INACTIVE, &off));
        assert!(list_filter_matches(ACTIVE, &paused));
        assert!(!list_filter_matches(ACTIVE, &off));
        assert!(list_filter_matches(INACTIVE, &off));
        assert!(list_filter_matches(TRANSIENT, &paused));
        assert!(!list_filter_matches(PERSISTENT, &paused));
        assert!(list_filter_matches(PAUSED | SHUTOFF, &paused));
        assert!(!list_filter_matches(RUNNING, &paused));
        assert!(list_filter_matches(AUTOSTART, &off));
        assert!(!list_filter_matches(AUTOSTART, &running));
        assert!(list_filter_matches(NO_AUTOSTART, &running));
        assert!(!list_filter_matches(MANAGEDSAVE, &running));
        assert!(list_filter_matches(NO_SNAPSHOT | NO_MANAGEDSAVE, &running));
        assert!(!list_filter_matches(OTHER, &running));
    }

    #[test]
    fn guest_memory_subtracts_the_balloon() {
        let config: vmm_api::VmConfig = serde_json::from_value(serde_json::json!({
            "payload": {"kernel": "/k"},
            "memory": {"size_mib": 256},
            "balloon": {"size_mib": 64},
        }))
        .unwrap();

        assert_eq!(guest_memory_kib(&config), 192 * 1024);
    }
}
