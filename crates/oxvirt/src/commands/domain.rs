//! Domain lifecycle and identity commands: define, undefine, create, start, shutdown, destroy,
//! reboot, reset, suspend, resume, autostart, domid, domname, domuuid, dumpxml, domstate.

use super::{CmdError, LookupBy, Session, is_unsupported};
use crate::args::{Command, Either};
use crate::format;
use rpc::RemoteError;
use rpc::client::ClientError;
use rpc::procedures::{
    DomainArgs, DomainCreateXmlArgs, DomainDefineXmlArgs, DomainDefineXmlFlagsArgs,
    DomainFlagsArgs, DomainSetAutostartArgs, NonnullDomain, call,
};

/// Runs `command` if it is one of this module's; `None` otherwise.
pub(super) async fn run(s: &mut Session<'_>, command: &Command) -> Option<Result<(), CmdError>> {
    use Command as C;
    let result = match command {
        C::Define { file, validate } => define(s, file.resolve("define"), *validate).await,
        C::Create {
            file,
            paused,
            autodestroy,
        } => {
            let flags = u32::from(*paused) | u32::from(*autodestroy) << 1;
            create(s, file.resolve("create"), flags).await
        }
        C::Undefine {
            domain,
            managed_save,
            snapshots_metadata,
            nvram,
            keep_nvram,
        } => {
            let flags = u32::from(*managed_save)
                | u32::from(*snapshots_metadata) << 1
                | u32::from(*nvram) << 2
                | u32::from(*keep_nvram) << 3;
            undefine(s, domain, flags).await
        }
        C::Start {
            domain,
            paused,
            autodestroy,
            bypass_cache,
            force_boot,
        } => {
            let flags = u32::from(*paused)
                | u32::from(*autodestroy) << 1
                | u32::from(*bypass_cache) << 2
                | u32::from(*force_boot) << 3;
            start(s, domain, flags).await
        }
        C::Shutdown { domain, mode } => shutdown(s, domain, mode.flags()).await,
        C::Reboot { domain, mode } => reboot(s, domain, mode.flags()).await,
        C::Destroy { domain, graceful } => destroy(s, domain, *graceful).await,
        C::Reset { domain } => reset(s, domain).await,
        C::Suspend { domain } => suspend(s, domain).await,
        C::Resume { domain } => resume(s, domain).await,
        C::Autostart { domain, disable } => autostart(s, domain, !*disable).await,
        C::Domid { domain } => domid(s, domain).await,
        C::Domname { domain } => domname(s, domain).await,
        C::Domuuid { domain } => domuuid(s, domain).await,
        C::Dumpxml {
            domain,
            inactive,
            security_info,
            update_cpu,
            migratable,
        } => {
            let flags = u32::from(*security_info)
                | u32::from(*inactive) << 1
                | u32::from(*update_cpu) << 2
                | u32::from(*migratable) << 3;
            dumpxml(s, domain, flags).await
        }
        C::Domstate { domain, reason } => domstate(s, domain, *reason).await,
        _ => return None,
    };
    Some(result)
}

/// Looks up the domain argument of `command`.
pub(super) async fn domain_arg(
    s: &Session<'_>,
    arg: &Either,
    command: &'static str,
    by: LookupBy,
) -> Result<NonnullDomain, CmdError> {
    let text = arg.resolve(command, "domain")?;
    s.lookup(text, by).await
}

fn read_xml_file(path: &str) -> Result<String, CmdError> {
    std::fs::read_to_string(path).map_err(|e| {
        CmdError::msg(format!(
            "Failed to open file '{path}': {}",
            super::strip_os_error(&e)
        ))
    })
}

async fn define(
    s: &mut Session<'_>,
    file: Result<&str, crate::args::ArgError>,
    validate: bool,
) -> Result<(), CmdError> {
    let file = file?;
    let xml = read_xml_file(file)?;
    let result = if validate {
        // VIR_DOMAIN_DEFINE_VALIDATE
        let args = DomainDefineXmlFlagsArgs { xml, flags: 1 };
        s.call_writing::<call::DomainDefineXmlFlags>("virDomainDefineXMLFlags", &args)
            .await
    } else {
        let args = DomainDefineXmlArgs { xml };
        s.call_writing::<call::DomainDefineXml>("virDomainDefineXML", &args)
            .await
    };
    let dom = result
        .map_err(|e| CmdError::with_cause(format!("Failed to define domain from {file}"), &e))?
        .dom;
    s.print_extra(&format!("Domain '{}' defined from {file}\n", dom.name))
}

async fn create(
    s: &mut Session<'_>,
    file: Result<&str, crate::args::ArgError>,
    flags: u32,
) -> Result<(), CmdError> {
    let file = file?;
    let xml_desc = read_xml_file(file)?;
    let args = DomainCreateXmlArgs { xml_desc, flags };
    let dom = s
        .call_writing::<call::DomainCreateXml>("virDomainCreateXML", &args)
        .await
        .map_err(|e| CmdError::with_cause(format!("Failed to create domain from {file}"), &e))?
        .dom;
    s.print_extra(&format!("Domain '{}' created from {file}\n", dom.name))
}

async fn undefine(s: &mut Session<'_>, arg: &Either, flags: u32) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "undefine", LookupBy::ANY).await?;
    let args = DomainFlagsArgs {
        dom: dom.clone(),
        flags,
    };
    let mut result = s
        .call_writing::<call::DomainUndefineFlags>("virDomainUndefineFlags", &args)
        .await;
    if let Err(e) = &result
        && is_unsupported(e)
        && flags == 0
    {
        result = s
            .call::<call::DomainUndefine>(&DomainArgs { dom: dom.clone() })
            .await;
    }
    result.map_err(|e| {
        CmdError::with_cause(format!("Failed to undefine domain '{}'", dom.name), &e)
    })?;
    s.print_extra(&format!("Domain '{}' has been undefined\n", dom.name))
}

async fn start(s: &mut Session<'_>, arg: &Either, flags: u32) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "start", LookupBy::NAME_UUID).await?;
    if dom.id != -1 {
        return Err(CmdError::msg("Domain is already active"));
    }
    let result = if flags == 0 {
        let args = DomainArgs { dom: dom.clone() };
        s.call_writing::<call::DomainCreate>("virDomainCreate", &args)
            .await
    } else {
        let args = DomainFlagsArgs {
            dom: dom.clone(),
            flags,
        };
        s.call_writing::<call::DomainCreateWithFlags>("virDomainCreateWithFlags", &args)
            .await
            .map(drop)
    };
    result
        .map_err(|e| CmdError::with_cause(format!("Failed to start domain '{}'", dom.name), &e))?;
    s.print_extra(&format!("Domain '{}' started\n", dom.name))
}

/// A call on one domain that virsh reports as "Failed to VERB domain 'NAME'" and, on success,
/// with `done` ("Domain 'NAME' DONE"); `api` is the libvirt function virsh calls for it.
struct Action {
    command: &'static str,
    verb: &'static str,
    done: &'static str,
    api: &'static str,
}

async fn act<F, Fut>(s: &mut Session<'_>, arg: &Either, a: Action, f: F) -> Result<(), CmdError>
where
    F: FnOnce(NonnullDomain) -> Fut,
    Fut: Future<Output = Result<(), rpc::client::ClientError>>,
{
    let dom = domain_arg(s, arg, a.command, LookupBy::ANY).await?;
    let name = dom.name.clone();
    let result = match s.check_writable(a.api) {
        Ok(()) => f(dom).await,
        Err(e) => Err(e),
    };
    result
        .map_err(|e| CmdError::with_cause(format!("Failed to {} domain '{name}'", a.verb), &e))?;
    s.print_extra(&format!("Domain '{name}' {}\n", a.done))
}

async fn shutdown(
    s: &mut Session<'_>,
    arg: &Either,
    flags: Result<u32, crate::args::ArgError>,
) -> Result<(), CmdError> {
    let flags = flags?;
    let client = s.client().clone();
    let action = Action {
        command: "shutdown",
        verb: "shutdown",
        done: "is being shutdown",
        api: if flags == 0 {
            "virDomainShutdown"
        } else {
            "virDomainShutdownFlags"
        },
    };
    act(s, arg, action, |dom| async move {
        if flags == 0 {
            client
                .call::<call::DomainShutdown>(&DomainArgs { dom })
                .await
        } else {
            let args = DomainFlagsArgs { dom, flags };
            client.call::<call::DomainShutdownFlags>(&args).await
        }
    })
    .await
}

async fn reboot(
    s: &mut Session<'_>,
    arg: &Either,
    flags: Result<u32, crate::args::ArgError>,
) -> Result<(), CmdError> {
    let flags = flags?;
    let client = s.client().clone();
    let action = Action {
        command: "reboot",
        verb: "reboot",
        done: "is being rebooted",
        api: "virDomainReboot",
    };
    act(s, arg, action, |dom| async move {
        let args = DomainFlagsArgs { dom, flags };
        client.call::<call::DomainReboot>(&args).await
    })
    .await
}

async fn destroy(s: &mut Session<'_>, arg: &Either, graceful: bool) -> Result<(), CmdError> {
    let client = s.client().clone();
    let action = Action {
        command: "destroy",
        verb: "destroy",
        done: "destroyed",
        api: if graceful {
            "virDomainDestroyFlags"
        } else {
            "virDomainDestroy"
        },
    };
    act(s, arg, action, |dom| async move {
        if graceful {
            // VIR_DOMAIN_DESTROY_GRACEFUL
            let args = DomainFlagsArgs { dom, flags: 1 };
            client.call::<call::DomainDestroyFlags>(&args).await
        } else {
            client
                .call::<call::DomainDestroy>(&DomainArgs { dom })
                .await
        }
    })
    .await
}

async fn reset(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let client = s.client().clone();
    let action = Action {
        command: "reset",
        verb: "reset",
        done: "was reset",
        api: "virDomainReset",
    };
    act(s, arg, action, |dom| async move {
        let args = DomainFlagsArgs { dom, flags: 0 };
        client.call::<call::DomainReset>(&args).await
    })
    .await
}

async fn suspend(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let client = s.client().clone();
    let action = Action {
        command: "suspend",
        verb: "suspend",
        done: "suspended",
        api: "virDomainSuspend",
    };
    act(s, arg, action, |dom| async move {
        client
            .call::<call::DomainSuspend>(&DomainArgs { dom })
            .await
    })
    .await
}

async fn resume(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let client = s.client().clone();
    let action = Action {
        command: "resume",
        verb: "resume",
        done: "resumed",
        api: "virDomainResume",
    };
    act(s, arg, action, |dom| async move {
        client.call::<call::DomainResume>(&DomainArgs { dom }).await
    })
    .await
}

async fn autostart(s: &mut Session<'_>, arg: &Either, enable: bool) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "autostart", LookupBy::ANY).await?;
    let name = dom.name.clone();
    let args = DomainSetAutostartArgs {
        dom,
        autostart: i32::from(enable),
    };
    let (verb, done) = if enable {
        ("mark", "marked")
    } else {
        ("unmark", "unmarked")
    };
    s.call_writing::<call::DomainSetAutostart>("virDomainSetAutostart", &args)
        .await
        .map_err(|e| {
            CmdError::with_cause(
                format!("Failed to {verb} domain '{name}' as autostarted"),
                &e,
            )
        })?;
    s.print_extra(&format!("Domain '{name}' {done} as autostarted\n"))
}

async fn domid(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "domid", LookupBy::NAME_UUID).await?;
    if dom.id == -1 {
        s.print("-\n")
    } else {
        s.print(&format!("{}\n", dom.id))
    }
}

async fn domname(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "domname", LookupBy::ID_UUID).await?;
    s.print(&format!("{}\n", dom.name))
}

async fn domuuid(s: &mut Session<'_>, arg: &Either) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "domuuid", LookupBy::ID_NAME).await?;
    s.print(&format!("{}\n", format::uuid_string(&dom.uuid)))
}

async fn dumpxml(s: &mut Session<'_>, arg: &Either, flags: u32) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "dumpxml", LookupBy::ANY).await?;
    let xml = get_xml(s, dom, flags).await?;
    s.print(&xml)
}

/// `VIR_DOMAIN_XML_SECURE`: include passwords (refused on a read-only connection).
const XML_SECURE: u32 = 1;

/// `DOMAIN_GET_XML_DESC`; virsh prints only the daemon's error when it fails.
pub(super) async fn get_xml(
    s: &Session<'_>,
    dom: NonnullDomain,
    flags: u32,
) -> Result<String, CmdError> {
    if s.read_only && flags & XML_SECURE != 0 {
        // libvirt's client library refuses this itself, with these words.
        let denied = RemoteError::operation_denied("virDomainGetXMLDesc with secure flag");
        return Err(CmdError::cause(&ClientError::Remote(denied)));
    }
    s.call::<call::DomainGetXmlDesc>(&DomainFlagsArgs { dom, flags })
        .await
        .map(|r| r.xml)
        .map_err(|e| CmdError::cause(&e))
}

/// `virshDomainState`: `DOMAIN_GET_STATE`, or the state of `DOMAIN_GET_INFO` (reason 0) from a
/// daemon without it.
pub(super) async fn state_of(
    s: &Session<'_>,
    dom: &NonnullDomain,
) -> Result<(i32, i32), rpc::client::ClientError> {
    let args = DomainFlagsArgs {
        dom: dom.clone(),
        flags: 0,
    };
    match s.call::<call::DomainGetState>(&args).await {
        Ok(ret) => Ok((ret.state, ret.reason)),
        Err(e) if is_unsupported(&e) => {
            let info = s
                .call::<call::DomainGetInfo>(&DomainArgs { dom: dom.clone() })
                .await?;
            Ok((i32::try_from(info.state).unwrap_or(0), 0))
        }
        Err(e) => Err(e),
    }
}

async fn domstate(s: &mut Session<'_>, arg: &Either, reason: bool) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "domstate", LookupBy::ANY).await?;
    let (state, why) = state_of(s, &dom).await.map_err(|e| CmdError::cause(&e))?;
    s.print(&format::domstate(state, reason.then_some(why)))
}
