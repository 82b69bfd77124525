//! Running a command: which procedures it calls, in virsh's order, and what it prints.
//!
//! A [`Session`] holds the connection; each command writes its text to the session's output
//! and returns a [`CmdError`] whose lines `main` prints as `error: LINE`, as virsh does.

mod console;
mod domain;
mod events;
mod host;
mod stats;

use crate::args::{ArgError, Command};
use crate::format;
use rpc::RemoteCall;
use rpc::RemoteError;
use rpc::client::{Client, ClientError};
use rpc::procedures::{
    DomainLookupByIdArgs, DomainLookupByNameArgs, DomainLookupByUuidArgs, NonnullDomain, call,
};
use rpc::remote_error::code;
use std::io::Write;

/// A failed command: the lines to print after `error: ` (none: exit 1 silently, as
/// `virsh event` does when no event came).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdError {
    /// The messages, outermost first.
    pub lines: Vec<String>,
}

impl CmdError {
    /// One message.
    pub fn msg(line: impl Into<String>) -> Self {
        Self {
            lines: vec![line.into()],
        }
    }

    /// virsh's two lines: what failed, then the daemon's reason.
    pub fn with_cause(context: impl Into<String>, cause: &ClientError) -> Self {
        Self {
            lines: vec![context.into(), describe(cause)],
        }
    }

    /// Only the daemon's reason (commands where virsh adds no context line).
    pub fn cause(cause: &ClientError) -> Self {
        Self::msg(describe(cause))
    }
}

impl From<ArgError> for CmdError {
    fn from(e: ArgError) -> Self {
        Self::msg(e.to_string())
    }
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> Self {
        Self::msg(format!("cannot write output: {}", strip_os_error(&e)))
    }
}

/// A client error as one line, with its causes (the daemon's own message for error replies).
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Connect { path, source } => format!(
            "Failed to connect socket to '{}': {}",
            path.display(),
            strip_os_error(source)
        ),
        // The daemon's message is complete (and may span lines, as libvirt's XML errors do).
        ClientError::Remote(remote) => remote.to_string(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let part = s.to_string();
                // Transparent wrappers repeat their source's text; print it once.
                if !text.ends_with(&part) {
                    text.push_str(": ");
                    text.push_str(&part);
                }
                source = s.source();
            }
            text
        }
    }
}

/// `No such file or directory (os error 2)` → `No such file or directory`, as libvirt prints.
pub fn strip_os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Whether a call failed because the daemon does not implement it.
pub fn is_unsupported(e: &ClientError) -> bool {
    matches!(e, ClientError::Remote(r) if r.code == code::NO_SUPPORT)
}

/// Whether a lookup failed because no such domain exists.
pub fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Remote(r) if r.code == code::NO_DOMAIN)
}

/// How a domain argument may be looked up (virsh's `VIRSH_BYID|BYUUID|BYNAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupBy {
    /// A non-negative integer is tried as an id.
    pub id: bool,
    /// A 36-character UUID is tried as a UUID.
    pub uuid: bool,
    /// Tried as a name last.
    pub name: bool,
}

impl LookupBy {
    /// Id, UUID or name: what most commands accept.
    pub const ANY: Self = Self {
        id: true,
        uuid: true,
        name: true,
    };
    /// UUID or name (`start`, `domid`).
    pub const NAME_UUID: Self = Self {
        id: false,
        uuid: true,
        name: true,
    };
    /// Id or UUID (`domname`).
    pub const ID_UUID: Self = Self {
        id: true,
        uuid: true,
        name: false,
    };
    /// Id or name (`domuuid`).
    pub const ID_NAME: Self = Self {
        id: true,
        uuid: false,
        name: true,
    };
}

/// A connection and where output goes.
pub struct Session<'a> {
    client: Client,
    uri: String,
    quiet: bool,
    read_only: bool,
    out: &'a mut dyn Write,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("uri", &self.uri)
            .field("quiet", &self.quiet)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// A session over an open client; `uri` is what the user connected to.
    pub fn new(client: Client, uri: String, quiet: bool, out: &'a mut dyn Write) -> Self {
        Self {
            client,
            uri,
            quiet,
            read_only: false,
            out,
        }
    }

    /// Marks the connection as opened read-only (`-r`), so that changes are refused here, as
    /// libvirt's client library refuses them.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Refuses a change on a read-only connection before asking the daemon, with the error
    /// libvirt's client library reports (`virCheckReadOnlyGoto`), which names the API
    /// function `api` that virsh called; virsh prints that, never the daemon's refusal.
    pub fn check_writable(&self, api: &str) -> Result<(), ClientError> {
        if self.read_only {
            return Err(ClientError::Remote(RemoteError::operation_denied(
                format_args!("read only access prevents {api}"),
            )));
        }
        Ok(())
    }

    /// Calls `C`, a change made by libvirt's function `api`: see [`Session::check_writable`].
    pub async fn call_writing<C: RemoteCall>(
        &self,
        api: &str,
        args: &C::Args,
    ) -> Result<C::Ret, ClientError> {
        self.check_writable(api)?;
        self.call::<C>(args).await
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls `C`.
    pub async fn call<C: RemoteCall>(&self, args: &C::Args) -> Result<C::Ret, ClientError> {
        self.client.call::<C>(args).await
    }

    /// Prints command output.
    pub fn print(&mut self, text: &str) -> Result<(), CmdError> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// Prints raw bytes (console output).
    pub fn print_bytes(&mut self, bytes: &[u8]) -> Result<(), CmdError> {
        self.out.write_all(bytes)?;
        self.out.flush()?;
        Ok(())
    }

    /// Prints a message that `-q` hides (virsh's `vshPrintExtra`).
    pub fn print_extra(&mut self, text: &str) -> Result<(), CmdError> {
        if self.quiet {
            return Ok(());
        }
        self.print(text)
    }

    /// Whether `-q` was given.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Finds a domain as virsh's `virshLookupDomainBy` does: by id, then UUID, then name.
    pub async fn lookup(&self, text: &str, by: LookupBy) -> Result<NonnullDomain, CmdError> {
        let mut last_error = None;
        if by.id
            && let Ok(id) = text.parse::<i32>()
            && id >= 0
        {
            match self
                .call::<call::DomainLookupById>(&DomainLookupByIdArgs { id })
                .await
            {
                Ok(ret) => return Ok(ret.dom),
                Err(e) => last_error = Some(e),
            }
        }
        if by.uuid
            && text.len() == 36
            && let Some(uuid) = format::parse_uuid(text)
        {
            match self
                .call::<call::DomainLookupByUuid>(&DomainLookupByUuidArgs { uuid })
                .await
            {
                Ok(ret) => return Ok(ret.dom),
                Err(e) => last_error = Some(e),
            }
        }
        if by.name {
            let args = DomainLookupByNameArgs {
                name: text.to_owned(),
            };
            match self.call::<call::DomainLookupByName>(&args).await {
                Ok(ret) => return Ok(ret.dom),
                Err(e) => last_error = Some(e),
            }
        }
        let mut err = CmdError::msg(format!("failed to get domain '{text}'"));
        // virsh drops the daemon's error here; keep it only when it is not the plain "not
        // found" (a lost connection, a refused call), which the user would otherwise not see.
        if let Some(e) = last_error.filter(|e| !is_not_found(e)) {
            err.lines.push(describe(&e));
        }
        Err(err)
    }

    /// Runs one command.
    pub async fn run(&mut self, command: &Command) -> Result<(), CmdError> {
        if let Some(result) = domain::run(self, command).await {
            return result;
        }
        if let Some(result) = stats::run(self, command).await {
            return result;
        }
        host::run(self, command).await
    }
}

/// Checks, before connecting, the arguments virsh checks before running a command, so that a
/// bad command line fails without touching the daemon.
pub fn validate(command: &Command) -> Result<(), ArgError> {
    use Command as C;
    let name = command.name();
    match command {
        C::List(args) => args.check(),
        C::Define { file, .. } | C::Create { file, .. } => file.resolve(name).map(drop),
        C::Undefine { domain, .. }
        | C::Start { domain, .. }
        | C::Destroy { domain, .. }
        | C::Reset { domain }
        | C::Suspend { domain }
        | C::Resume { domain }
        | C::Autostart { domain, .. }
        | C::Dominfo { domain }
        | C::Domstate { domain, .. }
        | C::Domid { domain }
        | C::Domname { domain }
        | C::Domuuid { domain }
        | C::Dumpxml { domain, .. }
        | C::Vcpuinfo { domain, .. }
        | C::Domblklist { domain, .. }
        | C::Domiflist { domain, .. }
        | C::Domblkstat { domain, .. }
        | C::Dommemstat { domain }
        | C::Console { domain, .. } => domain.resolve(name, "domain").map(drop),
        C::Shutdown { domain, mode } | C::Reboot { domain, mode } => {
            domain.resolve(name, "domain")?;
            mode.flags().map(drop)
        }
        C::Domifstat {
            domain,
            interface,
            named_interface,
        } => {
            domain.resolve(name, "domain")?;
            stats::interface_arg(interface, named_interface).map(drop)
        }
        C::Event(args) => args.check().map(drop),
        C::Domstats(_) | C::Uri | C::Version { .. } | C::Hostname | C::Nodeinfo => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc::RemoteError;

    #[test]
    fn describes_daemon_errors_by_their_message() {
        // Arrange
        let remote =
            ClientError::Remote(RemoteError::no_domain("no domain with matching name 'foo'"));
        let connect = ClientError::Connect {
            path: "/tmp/nonexist".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };

        // Act / Assert
        assert_eq!(
            describe(&remote),
            "Domain not found: no domain with matching name 'foo'"
        );
        assert_eq!(
            describe(&connect),
            "Failed to connect socket to '/tmp/nonexist': No such file or directory"
        );
        assert!(is_unsupported(&ClientError::Remote(
            RemoteError::no_support("x")
        )));
        assert!(!is_unsupported(&remote));
        assert!(is_not_found(&remote));
        assert!(!is_not_found(&connect));
    }

    #[test]
    fn validation_catches_missing_arguments_before_connecting() {
        // Arrange
        let cli = crate::args::parse(["oxvirt", "domifstat", "d"]).unwrap();
        let ok = crate::args::parse(["oxvirt", "domifstat", "d", "vnet0"]).unwrap();

        // Act / Assert
        assert_eq!(
            validate(&cli.command).unwrap_err().to_string(),
            "command 'domifstat' requires <interface> option"
        );
        assert_eq!(validate(&ok.command), Ok(()));
    }
}
