//! The RPC dispatcher: what each libvirt procedure means for oxvirtd.
//!
//! [`Daemon`] implements `rpc::server::Dispatcher` over the [`DomainRegistry`]. The procedures
//! are split by area: [`connect`] (connection set-up and host information), [`domains`]
//! (lookup, listing, information, XML), [`lifecycle`] (define, start, stop, ...), [`stats`]
//! (domstats, vCPUs, block, interface and memory statistics), [`console`] (the console stream)
//! and [`events`] (lifecycle event registrations). [`errors`] turns the registry's and the
//! domain crate's errors into libvirt's error numbers and messages.
//!
//! Connections of the read-only socket (or opened with `VIR_CONNECT_RO`) may only call the
//! procedures in [`READ_ONLY_PROCEDURES`]; everything else is refused with libvirt's
//! `VIR_ERR_OPERATION_DENIED` before its arguments are even decoded.

mod connect;
mod console;
mod domains;
mod errors;
pub mod events;
mod lifecycle;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use domain::DomainDef;
use oxvirtd::{DomainRegistry, DomainSummary, Uuid};
use rpc::procedures::{NonnullDomain, call};
use rpc::server::{Connection, Dispatcher, IncomingCall, Reply};
use rpc::{Procedure, RemoteError};

use crate::plan::TapNames;
pub use events::EventHub;

/// The daemon's state as the dispatcher sees it.
pub struct Daemon {
    registry: DomainRegistry,
    events: Arc<EventHub>,
    defs: DefCache,
    taps: TapNames,
    host: connect::HostInfo,
}

impl Daemon {
    /// A dispatcher over `registry`, forwarding events through `events`.
    pub fn new(registry: DomainRegistry, events: Arc<EventHub>) -> Self {
        Daemon {
            registry,
            events,
            defs: DefCache::default(),
            taps: TapNames::default(),
            host: connect::HostInfo::read(),
        }
    }

    /// Looks up the domain a call names. Like libvirtd, by UUID (the name only for messages).
    fn resolve(&self, dom: &NonnullDomain) -> Result<DomainSummary, RemoteError> {
        self.registry.lookup_by_uuid(Uuid(dom.uuid)).map_err(|_| {
            RemoteError::no_domain(format!(
                "no domain with matching uuid '{}' ({})",
                Uuid(dom.uuid),
                dom.name
            ))
        })
    }

    /// The parsed definition of `name`: the live one while it runs unless `inactive`.
    fn def_of(&self, name: &str, inactive: bool) -> Result<Arc<DomainDef>, RemoteError> {
        let xml = self
            .registry
            .xml(name, inactive)
            .map_err(errors::registry)?;
        self.defs.parse(name, &xml)
    }
}

/// `remote_nonnull_domain` of a domain: id -1 while it is not running, as libvirt sends.
fn nonnull(summary: &DomainSummary) -> NonnullDomain {
    NonnullDomain {
        name: summary.name.clone(),
        uuid: summary.uuid.0,
        id: summary
            .id
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(-1),
    }
}

/// Parsed definitions, kept while their text is unchanged: `dominfo`, `domstats` and the
/// like read a definition on every call, and parsing is most of their cost.
#[derive(Default)]
struct DefCache {
    entries: Mutex<HashMap<String, (String, Arc<DomainDef>)>>,
}

impl DefCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (String, Arc<DomainDef>)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn parse(&self, name: &str, xml: &str) -> Result<Arc<DomainDef>, RemoteError> {
        if let Some((text, def)) = self.lock().get(name)
            && text == xml
        {
            return Ok(def.clone());
        }
        // Stored definitions were validated when defined; failing now is the daemon's bug
        // or a file edited by hand.
        let def = Arc::new(DomainDef::from_xml(xml).map_err(|e| {
            RemoteError::internal(format!("the stored definition of '{name}' is invalid: {e}"))
        })?);
        self.lock()
            .insert(name.to_string(), (xml.to_string(), def.clone()));
        Ok(def)
    }
}

/// What a read-only connection may call: nothing that changes a domain or reaches a guest.
pub const READ_ONLY_PROCEDURES: &[Procedure] = &[
    Procedure::AuthList,
    Procedure::ConnectOpen,
    Procedure::ConnectClose,
    Procedure::ConnectSupportsFeature,
    Procedure::ConnectRegisterCloseCallback,
    Procedure::ConnectUnregisterCloseCallback,
    Procedure::ConnectGetType,
    Procedure::ConnectGetVersion,
    Procedure::ConnectGetLibVersion,
    Procedure::ConnectGetHostname,
    Procedure::ConnectGetUri,
    Procedure::ConnectGetCapabilities,
    Procedure::ConnectGetMaxVcpus,
    Procedure::ConnectIsSecure,
    Procedure::NodeGetInfo,
    Procedure::NodeGetSecurityModel,
    Procedure::NodeGetCpuMap,
    Procedure::ConnectListAllDomains,
    Procedure::ConnectNumOfDomains,
    Procedure::ConnectListDomains,
    Procedure::ConnectNumOfDefinedDomains,
    Procedure::ConnectListDefinedDomains,
    Procedure::DomainLookupByName,
    Procedure::DomainLookupByUuid,
    Procedure::DomainLookupById,
    Procedure::DomainGetAutostart,
    Procedure::DomainGetInfo,
    Procedure::DomainGetState,
    Procedure::DomainIsActive,
    Procedure::DomainIsPersistent,
    Procedure::DomainIsUpdated,
    Procedure::DomainHasManagedSaveImage,
    Procedure::DomainSnapshotNum,
    Procedure::DomainGetOsType,
    Procedure::DomainGetMaxMemory,
    Procedure::DomainGetMaxVcpus,
    Procedure::DomainGetVcpusFlags,
    Procedure::DomainGetMessages,
    Procedure::DomainGetXmlDesc,
    Procedure::DomainGetVcpus,
    Procedure::DomainGetVcpuPinInfo,
    Procedure::ConnectGetAllDomainStats,
    Procedure::DomainBlockStats,
    Procedure::DomainBlockStatsFlags,
    Procedure::DomainInterfaceStats,
    Procedure::DomainMemoryStats,
    Procedure::ConnectDomainEventCallbackRegisterAny,
    Procedure::ConnectDomainEventCallbackDeregisterAny,
    Procedure::ConnectDomainEventRegisterAny,
    Procedure::ConnectDomainEventDeregisterAny,
];

impl Dispatcher for Daemon {
    async fn call(&self, conn: &Connection, call: IncomingCall) -> Result<Reply, RemoteError> {
        if conn.is_read_only() && !READ_ONLY_PROCEDURES.contains(&call.procedure) {
            return Err(RemoteError::read_only());
        }
        if let Some(reply) = self.connect_call(conn, &call).await {
            return reply;
        }
        if let Some(reply) = self.domain_call(&call).await {
            return reply;
        }
        if let Some(reply) = self.lifecycle_call(&call).await {
            return reply;
        }
        if let Some(reply) = self.stats_call(&call).await {
            return reply;
        }
        match call.procedure {
            Procedure::DomainOpenConsole => self.open_console(conn, &call).await,
            Procedure::ConnectDomainEventCallbackRegisterAny => {
                let args = call.args::<call::ConnectDomainEventCallbackRegisterAny>()?;
                let filter = match &args.dom {
                    Some(dom) => Some(self.resolve(dom)?.uuid),
                    None => None,
                };
                let ret = self.events.register(conn, args.event_id, filter)?;
                Reply::encode::<call::ConnectDomainEventCallbackRegisterAny>(&ret)
            }
            Procedure::ConnectDomainEventCallbackDeregisterAny => {
                let args = call.args::<call::ConnectDomainEventCallbackDeregisterAny>()?;
                self.events.deregister(conn, args.callback_id)?;
                Ok(Reply::empty())
            }
            Procedure::ConnectDomainEventRegisterAny => {
                let args = call.args::<call::ConnectDomainEventRegisterAny>()?;
                self.events.register_legacy(conn, args.event_id)?;
                Ok(Reply::empty())
            }
            Procedure::ConnectDomainEventDeregisterAny => {
                let args = call.args::<call::ConnectDomainEventDeregisterAny>()?;
                self.events.deregister_legacy(conn, args.event_id)?;
                Ok(Reply::empty())
            }
            _ => Err(call.unsupported()),
        }
    }

    async fn disconnected(&self, conn: &Connection) {
        self.events.drop_connection(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_that_changes_a_domain_is_allowed_read_only() {
        let mutating = [
            Procedure::DomainDefineXml,
            Procedure::DomainDefineXmlFlags,
            Procedure::DomainUndefine,
            Procedure::DomainUndefineFlags,
            Procedure::DomainCreate,
            Procedure::DomainCreateXml,
            Procedure::DomainCreateWithFlags,
            Procedure::DomainShutdown,
            Procedure::DomainShutdownFlags,
            Procedure::DomainDestroy,
            Procedure::DomainDestroyFlags,
            Procedure::DomainReboot,
            Procedure::DomainReset,
            Procedure::DomainSuspend,
            Procedure::DomainResume,
            Procedure::DomainSetAutostart,
            Procedure::DomainOpenConsole,
        ];

        for procedure in mutating {
            assert!(
                !READ_ONLY_PROCEDURES.contains(&procedure),
                "{procedure} is allowed read-only"
            );
        }
    }

    #[test]
    fn the_definition_cache_reparses_changed_text() {
        let cache = DefCache::default();
        let xml = |mib: u32| {
            format!(
                "<domain type='kvm'><name>c</name><memory unit='MiB'>{mib}</memory>\
                 <os><type>hvm</type><kernel>/k</kernel></os></domain>"
            )
        };

        let first = cache.parse("c", &xml(64)).unwrap();
        let again = cache.parse("c", &xml(64)).unwrap();
        let changed = cache.parse("c", &xml(128)).unwrap();

        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(changed.memory_kib, 128 * 1024);
    }

    #[test]
    fn nonnull_domains_carry_minus_one_when_not_running() {
        let summary = DomainSummary {
            name: "a".into(),
            uuid: Uuid([1; 16]),
            id: None,
            persistent: true,
            autostart: false,
            state: oxvirtd::DomainState::Shutoff(oxvirtd::ShutoffReason::Unknown),
        };

        assert_eq!(nonnull(&summary).id, -1);
        assert_eq!(
            nonnull(&DomainSummary {
                id: Some(4),
                ..summary
            })
            .id,
            4
        );
    }
}
