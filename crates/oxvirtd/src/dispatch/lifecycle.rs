//! Define, undefine, create, start, shutdown, destroy, reboot, reset, suspend, resume and
//! autostart.

use std::collections::HashSet;

use domain::{DomainDef, XmlOptions};
use oxvirtd::{Definition, DomainSummary, RegistryError, Uuid};
use rpc::procedures::{DomainRet, NonnullDomain, call};
use rpc::server::{IncomingCall, Reply};
use rpc::{Procedure, RemoteError};
use vmm_api::VmConfig;

use super::errors::{self, check_flags, config_unsupported};
use super::{Daemon, nonnull};
use crate::plan;

/// `VIR_DOMAIN_START_*` flags.
mod start_flags {
    pub const PAUSED: u32 = 1;
    pub const FORCE_BOOT: u32 = 8;
    pub const VALIDATE: u32 = 16;
}

/// `VIR_DOMAIN_DEFINE_VALIDATE`: we always validate.
const DEFINE_VALIDATE: u32 = 1;
/// `VIR_DOMAIN_UNDEFINE_*`: managed save, snapshots, NVRAM, checkpoints and TPM state do not
/// exist here, so asking to remove or keep them is fine.
const UNDEFINE_ALL: u32 = 0x7f;
/// `VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN`: the only shutdown method (and the default).
const SHUTDOWN_ACPI: u32 = 1;
/// `VIR_DOMAIN_DESTROY_GRACEFUL`: destroy always asks oxvmm first and kills after a grace.
const DESTROY_GRACEFUL: u32 = 1;

/// Parses and validates a definition given by a client; refuses what the native driver could
/// never run (libvirt's drivers refuse such definitions at define time too).
fn parse_definition(xml: &str) -> Result<DomainDef, RemoteError> {
    let def = DomainDef::from_xml(xml).map_err(RemoteError::xml_error)?;
    let probe = domain::NativeRuntime {
        serial_socket: "/run/probe.sock".into(),
        console_socket: "/run/probe.sock".into(),
        interface_taps: vec![String::from("vnet0"); def.devices.interfaces.len()],
        vsock_socket: "/run/probe.sock".into(),
        auto_vsock_cid: domain::MIN_GUEST_CID,
    };
    def.to_vm_config(&probe).map_err(config_unsupported)?;
    Ok(def)
}

fn domain_ret(summary: &DomainSummary) -> DomainRet {
    DomainRet {
        dom: nonnull(summary),
    }
}

impl Daemon {
    /// The lifecycle procedures; `None` for any other.
    pub(super) async fn lifecycle_call(
        &self,
        call: &IncomingCall,
    ) -> Option<Result<Reply, RemoteError>> {
        Some(match call.procedure {
            Procedure::DomainDefineXml => {
                call.handle::<call::DomainDefineXml, _, _>(|a| self.define(a.xml))
                    .await
            }
            Procedure::DomainDefineXmlFlags => {
                call.handle::<call::DomainDefineXmlFlags, _, _>(|a| async move {
                    check_flags(a.flags, DEFINE_VALIDATE, "virDomainDefineXMLFlags")?;
                    self.define(a.xml).await
                })
                .await
            }
            Procedure::DomainUndefine => {
                call.handle::<call::DomainUndefine, _, _>(|a| self.undefine(a.dom))
                    .await
            }
            Procedure::DomainUndefineFlags => {
                call.handle::<call::DomainUndefineFlags, _, _>(|a| async move {
                    check_flags(a.flags, UNDEFINE_ALL, "virDomainUndefineFlags")?;
                    self.undefine(a.dom).await
                })
                .await
            }
            Procedure::DomainCreateXml => {
                call.handle::<call::DomainCreateXml, _, _>(|a| self.create_xml(a.xml_desc, a.flags))
                    .await
            }
            Procedure::DomainCreate => {
                call.handle::<call::DomainCreate, _, _>(|a| async move {
                    self.start_existing(&a.dom, 0).await.map(|_| ())
                })
                .await
            }
            Procedure::DomainCreateWithFlags => {
                call.handle::<call::DomainCreateWithFlags, _, _>(|a| async move {
                    let summary = self.start_existing(&a.dom, a.flags).await?;
                    Ok(domain_ret(&summary))
                })
                .await
            }
            Procedure::DomainShutdown => {
                call.handle::<call::DomainShutdown, _, _>(|a| self.shutdown(a.dom, 0))
                    .await
            }
            Procedure::DomainShutdownFlags => {
                call.handle::<call::DomainShutdownFlags, _, _>(|a| self.shutdown(a.dom, a.flags))
                    .await
            }
            Procedure::DomainDestroy => {
                call.handle::<call::DomainDestroy, _, _>(|a| self.destroy(a.dom, 0))
                    .await
            }
            Procedure::DomainDestroyFlags => {
                call.handle::<call::DomainDestroyFlags, _, _>(|a| self.destroy(a.dom, a.flags))
                    .await
            }
            Procedure::DomainReboot => {
                call.handle::<call::DomainReboot, _, _>(|a| async move {
                    check_flags(a.flags, 0, "virDomainReboot")?;
                    let name = self.active_name(&a.dom)?;
                    let driver = self.registry.driver();
                    driver.reboot(&name).await.map_err(errors::driver)
                })
                .await
            }
            Procedure::DomainReset => {
                call.handle::<call::DomainReset, _, _>(|a| async move {
                    check_flags(a.flags, 0, "virDomainReset")?;
                    let name = self.active_name(&a.dom)?;
                    let driver = self.registry.driver();
                    driver.reset(&name).await.map_err(errors::driver)
                })
                .await
            }
            Procedure::DomainSuspend => {
                call.handle::<call::DomainSuspend, _, _>(|a| async move {
                    let name = self.active_name(&a.dom)?;
                    let driver = self.registry.driver();
                    driver.suspend(&name).await.map_err(errors::driver)
                })
                .await
            }
            Procedure::DomainResume => {
                call.handle::<call::DomainResume, _, _>(|a| async move {
                    let name = self.active_name(&a.dom)?;
                    let driver = self.registry.driver();
                    driver.resume(&name).await.map_err(errors::driver)
                })
                .await
            }
            Procedure::DomainSetAutostart => {
                call.handle::<call::DomainSetAutostart, _, _>(|a| async move {
                    let summary = self.resolve(&a.dom)?;
                    if !summary.persistent {
                        return Err(RemoteError::operation_invalid(
                            "cannot set autostart for transient domain",
                        ));
                    }
                    let registry = &self.registry;
                    (registry
                        .set_autostart(&summary.name, a.autostart != 0)
                        .await)
                        .map_err(errors::registry)
                })
                .await
            }
            _ => return None,
        })
    }

    async fn define(&self, xml: String) -> Result<DomainRet, RemoteError> {
        let def = parse_definition(&xml)?;
        let stored = def.to_xml(&XmlOptions::INACTIVE);
        let uuid = Uuid(def.uuid.0);
        (self.registry.define(&def.name, uuid, &stored).await).map_err(errors::registry)?;
        let summary = (self.registry.lookup_by_name(&def.name)).map_err(errors::registry)?;
        Ok(domain_ret(&summary))
    }

    async fn undefine(&self, dom: NonnullDomain) -> Result<(), RemoteError> {
        let summary = self.resolve(&dom)?;
        self.registry
            .undefine(&summary.name)
            .await
            .map_err(errors::registry)
    }

    /// The name of the running domain `dom`; "domain is not running" when it is not.
    fn active_name(&self, dom: &NonnullDomain) -> Result<String, RemoteError> {
        let summary = self.resolve(dom)?;
        if !summary.state.is_active() {
            return Err(RemoteError::operation_invalid("domain is not running"));
        }
        Ok(summary.name)
    }

    async fn shutdown(&self, dom: NonnullDomain, flags: u32) -> Result<(), RemoteError> {
        check_flags(flags, SHUTDOWN_ACPI, "virDomainShutdownFlags")?;
        let name = self.active_name(&dom)?;
        let driver = self.registry.driver();
        driver.shutdown(&name).await.map_err(errors::driver)
    }

    async fn destroy(&self, dom: NonnullDomain, flags: u32) -> Result<(), RemoteError> {
        check_flags(flags, DESTROY_GRACEFUL, "virDomainDestroyFlags")?;
        let name = self.active_name(&dom)?;
        let driver = self.registry.driver();
        driver.destroy(&name).await.map_err(errors::driver)?;
        Ok(())
    }

    /// `virsh create`: a transient domain (or an inactive persistent one with this XML as its
    /// live definition).
    async fn create_xml(&self, xml: String, flags: u32) -> Result<DomainRet, RemoteError> {
        use start_flags::*;
        check_flags(flags, PAUSED | FORCE_BOOT | VALIDATE, "virDomainCreateXML")?;
        let def = parse_definition(&xml)?;
        let stored = def.to_xml(&XmlOptions::INACTIVE);
        let (config, taps) = self.plan_start(&def.name, &def)?;
        let result = self
            .registry
            .create(&def.name, Uuid(def.uuid.0), &stored, config)
            .await;
        self.taps.release(&def.name);
        let summary = result.map_err(errors::registry)?;
        let summary = self.after_start(summary, &def, &taps, flags).await?;
        Ok(domain_ret(&summary))
    }

    /// `virsh start`.
    async fn start_existing(
        &self,
        dom: &NonnullDomain,
        flags: u32,
    ) -> Result<DomainSummary, RemoteError> {
        use start_flags::*;
        check_flags(flags, PAUSED | FORCE_BOOT, "virDomainCreateWithFlags")?;
        let summary = self.resolve(dom)?;
        if summary.state.is_active() {
            return Err(RemoteError::operation_invalid("domain is already running"));
        }
        let def = self.def_of(&summary.name, true)?;
        let (config, taps) = self.plan_start(&summary.name, &def)?;
        let result = self.registry.start(&summary.name, config).await;
        self.taps.release(&summary.name);
        let summary = result.map_err(errors::registry)?;
        self.after_start(summary, &def, &taps, flags).await
    }

    /// Checks files and bridges, picks TAP names (reserved until [`TapNames::release`]) and
    /// builds the VM's configuration.
    ///
    /// [`TapNames::release`]: crate::plan::TapNames::release
    fn plan_start(
        &self,
        name: &str,
        def: &DomainDef,
    ) -> Result<(VmConfig, Vec<String>), RemoteError> {
        plan::check_files(def)?;
        plan::check_bridges(def)?;
        let driver = self.registry.driver();
        let in_use: HashSet<String> = (driver.list_active().iter())
            .flat_map(|active| self.live_taps(&active.name))
            .collect();
        let taps = self.taps.reserve(name, def, &in_use);
        let cids_in_use: HashSet<u64> = (driver.list_active().iter())
            .filter_map(|active| driver.live_config(&active.name)?.vsock.map(|v| v.cid))
            .collect();
        let runtime = plan::native_runtime(driver.paths(), name, taps.clone(), &cids_in_use);
        match def.to_vm_config(&runtime) {
            Ok(config) => Ok((config, taps)),
            Err(e) => {
                self.taps.release(name);
                Err(config_unsupported(e))
            }
        }
    }

    /// Joins bridges and pauses if asked; a domain that cannot be set up is destroyed.
    async fn after_start(
        &self,
        summary: DomainSummary,
        def: &DomainDef,
        taps: &[String],
        flags: u32,
    ) -> Result<DomainSummary, RemoteError> {
        let driver = self.registry.driver();
        let mut setup = Ok(());
        for (bridge, tap) in plan::bridge_ports(def, taps) {
            if let Err(e) = crate::bridge::add_to_bridge(&bridge, &tap) {
                setup = Err(RemoteError::operation_failed(e));
                break;
            }
        }
        if setup.is_ok() && flags & start_flags::PAUSED != 0 {
            setup = driver.suspend(&summary.name).await.map_err(errors::driver);
        }
        if let Err(e) = setup {
            if let Err(destroy) = driver.destroy(&summary.name).await {
                tracing::warn!(domain = %summary.name, "cannot destroy after a failed set-up: {destroy}");
            }
            return Err(e);
        }
        (self.registry.lookup_by_name(&summary.name)).map_err(errors::registry)
    }

    /// Starts every autostart domain (at daemon start, after re-attaching).
    pub async fn autostart(&self) {
        let planned = std::sync::Mutex::new(Vec::new());
        let results = self
            .registry
            .start_autostart(|definition: &Definition| {
                let def = DomainDef::from_xml(&definition.xml).map_err(|e| e.to_string())?;
                let (config, taps) = (self.plan_start(&definition.name, &def))
                    .map_err(|e| e.message_text().to_string())?;
                if let Ok(mut planned) = planned.lock() {
                    planned.push((definition.name.clone(), def, taps));
                }
                Ok(config)
            })
            .await;
        let planned = planned.into_inner().unwrap_or_default();
        for (name, def, taps) in planned {
            self.taps.release(&name);
            let started = results
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, r)| r.as_ref().ok());
            if let Some(summary) = started {
                match self.after_start(summary.clone(), &def, &taps, 0).await {
                    Ok(_) => tracing::info!(domain = %name, "autostarted"),
                    Err(e) => tracing::warn!(domain = %name, "autostart set-up failed: {e}"),
                }
            }
        }
        for (name, result) in results {
            if let Err(RegistryError::Config { .. }) = result {
                self.taps.release(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_the_native_driver_cannot_run_are_refused_at_define() {
        let qemu = "<domain type='qemu'><name>q</name><memory unit='MiB'>64</memory>\
                    <os><type>hvm</type><kernel>/k</kernel></os>\
                    <features><acpi/><apic/></features></domain>";

        let err = parse_definition(qemu).unwrap_err();

        assert_eq!(err.code, rpc::remote_error::code::CONFIG_UNSUPPORTED);
        assert!(err.message_text().contains("/domain/@type"), "{err}");
    }

    #[test]
    fn xml_errors_name_the_path() {
        let err = parse_definition("<domain type='kvm'><memory>1</memory></domain>").unwrap_err();

        assert_eq!(err.code, rpc::remote_error::code::XML_ERROR);
        assert!(err.message_text().starts_with("XML error: "), "{err}");
        assert!(err.message_text().contains("/domain/name"), "{err}");
    }
}
