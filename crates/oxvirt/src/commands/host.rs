//! Host and connection commands (uri, version, hostname, nodeinfo) and the two long-running
//! ones (console, event), which live in their own modules.

use super::{CmdError, Session};
use crate::args::Command;
use crate::format;
use rpc::procedures::call;

/// Runs `command`, one of this module's or of console/event.
pub(super) async fn run(s: &mut Session<'_>, command: &Command) -> Result<(), CmdError> {
    use Command as C;
    match command {
        C::Uri => {
            // virsh prints the URI it connected with (the remote driver keeps it client-side).
            let uri = format!("{}\n", s.uri);
            s.print(&uri)
        }
        C::Version { daemon } => version(s, *daemon).await,
        C::Hostname => {
            let host = s
                .call::<call::ConnectGetHostname>(&())
                .await
                .map_err(|e| CmdError::cause(&e))?;
            s.print(&format!("{}\n", host.hostname))
        }
        C::Nodeinfo => {
            let info = s
                .call::<call::NodeGetInfo>(&())
                .await
                .map_err(|e| CmdError::with_cause("failed to get node information", &e))?;
            s.print(&format::nodeinfo(&info))
        }
        C::Console {
            domain,
            devname,
            force,
            safe,
        } => {
            let flags = u32::from(*force) | u32::from(*safe) << 1;
            super::console::run(s, domain, devname.clone(), flags).await
        }
        C::Event(args) => super::events::run(s, args).await,
        other => Err(CmdError::msg(format!(
            "command '{}' is not handled",
            other.name()
        ))),
    }
}

async fn version(s: &mut Session<'_>, daemon: bool) -> Result<(), CmdError> {
    let hv_type = s
        .call::<call::ConnectGetType>(&())
        .await
        .map_err(|e| CmdError::with_cause("failed to get hypervisor type", &e))?
        .type_;
    let lib = s
        .call::<call::ConnectGetLibVersion>(&())
        .await
        .map_err(|e| CmdError::with_cause("failed to get the library version", &e))?
        .lib_ver;
    let hv = s
        .call::<call::ConnectGetVersion>(&())
        .await
        .map_err(|e| CmdError::with_cause("failed to get the hypervisor version", &e))?
        .hv_ver;
    let mut text = format::version(env!("CARGO_PKG_VERSION"), &hv_type, lib, hv);
    if daemon {
        text.push_str(&format!(
            "Running against daemon: {}\n",
            format::version_number(lib)
        ));
    }
    s.print(&text)
}
