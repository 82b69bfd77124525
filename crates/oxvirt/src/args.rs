//! The command line: virsh's command names and options, parsed with clap, and the translation
//! of clap's errors into virsh's wording (`error: unknown command: 'x'`, ...).
//!
//! Like virsh, a domain can be given as a positional argument or with `--domain`, and a file
//! with `--file`; which one was used is resolved by [`Either::resolve`], which reports a missing
//! one as virsh does (`command 'dominfo' requires <domain> option`).

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};
use thiserror::Error;

/// The URI used when neither `-c` nor `LIBVIRT_DEFAULT_URI` gives one.
pub const DEFAULT_URI: &str = "oxvirt:///system";

/// A command line that virsh would refuse too.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgError {
    /// A required argument is missing.
    #[error("command '{command}' requires <{option}> option")]
    Missing {
        /// The command.
        command: &'static str,
        /// The option, e.g. `domain`.
        option: &'static str,
    },
    /// The same argument was given positionally and by name.
    #[error("option --{option} already provided")]
    Duplicate {
        /// The option.
        option: &'static str,
    },
    /// Two options that cannot be used together.
    #[error("Options --{0} and --{1} are mutually exclusive")]
    Exclusive(&'static str, &'static str),
    /// A value that is not accepted.
    #[error("{0}")]
    Invalid(String),
}

impl ArgError {
    /// Whether virsh reports this while parsing the command line (before running the command,
    /// so without the empty line it prints after a command ran).
    pub fn is_parse_error(&self) -> bool {
        matches!(self, Self::Missing { .. } | Self::Duplicate { .. })
    }
}

/// `oxvirt [OPTIONS] COMMAND [ARGS...]`.
#[derive(Debug, Parser)]
#[command(
    name = "oxvirt",
    version,
    about = "oxvirt: manage virtual machines through oxvirtd (virsh-compatible)",
    arg_required_else_help = true,
    after_help = "The default URI is oxvirt:///system, or $LIBVIRT_DEFAULT_URI when set."
)]
pub struct Cli {
    /// Hypervisor connection URI (e.g. oxvirt:///system, qemu+unix:///system?socket=PATH).
    #[arg(short = 'c', long = "connect", value_name = "URI", global = true)]
    pub connect: Option<String>,
    /// Quiet mode: no table headers, no trailing blank line.
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// Connect read-only.
    #[arg(short = 'r', long, global = true)]
    pub readonly: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// A value that may be given positionally or with `--NAME`.
#[derive(Debug, Clone, Default, Args, PartialEq, Eq)]
pub struct Either {
    #[arg(value_name = "DOMAIN", help = "domain name, id or uuid")]
    positional: Option<String>,
    #[arg(
        long = "domain",
        value_name = "DOMAIN",
        help = "domain name, id or uuid"
    )]
    named: Option<String>,
}

impl Either {
    /// A value given positionally (for tests and callers).
    pub fn of(value: &str) -> Self {
        Self {
            positional: Some(value.to_owned()),
            named: None,
        }
    }

    /// The value, or virsh's error when it is missing or given twice.
    pub fn resolve(&self, command: &'static str, option: &'static str) -> Result<&str, ArgError> {
        match (&self.positional, &self.named) {
            (Some(_), Some(_)) => Err(ArgError::Duplicate { option }),
            (Some(v), None) | (None, Some(v)) => Ok(v),
            (None, None) => Err(ArgError::Missing { command, option }),
        }
    }
}

/// An XML file given positionally or with `--file`.
#[derive(Debug, Clone, Default, Args, PartialEq, Eq)]
pub struct FileArg {
    #[arg(
        value_name = "FILE",
        help = "file containing an XML domain description"
    )]
    positional: Option<String>,
    #[arg(
        long = "file",
        value_name = "FILE",
        help = "file containing an XML domain description"
    )]
    named: Option<String>,
}

impl FileArg {
    /// The file, or virsh's error.
    pub fn resolve(&self, command: &'static str) -> Result<&str, ArgError> {
        match (&self.positional, &self.named) {
            (Some(_), Some(_)) => Err(ArgError::Duplicate { option: "file" }),
            (Some(v), None) | (None, Some(v)) => Ok(v),
            (None, None) => Err(ArgError::Missing {
                command,
                option: "file",
            }),
        }
    }
}

/// `list` options.
#[derive(Debug, Clone, Default, Args, PartialEq, Eq)]
pub struct ListArgs {
    /// list inactive domains
    #[arg(long)]
    pub inactive: bool,
    /// list inactive & active domains
    #[arg(long)]
    pub all: bool,
    /// list transient domains
    #[arg(long)]
    pub transient: bool,
    /// list persistent domains
    #[arg(long)]
    pub persistent: bool,
    /// list domains in running state
    #[arg(long)]
    pub state_running: bool,
    /// list domains in paused state
    #[arg(long)]
    pub state_paused: bool,
    /// list domains in shutoff state
    #[arg(long)]
    pub state_shutoff: bool,
    /// list domains in other states
    #[arg(long)]
    pub state_other: bool,
    /// list domains with autostart enabled
    #[arg(long)]
    pub autostart: bool,
    /// list domains with autostart disabled
    #[arg(long)]
    pub no_autostart: bool,
    /// list domains with managed save state
    #[arg(long)]
    pub with_managed_save: bool,
    /// list domains without managed save
    #[arg(long)]
    pub without_managed_save: bool,
    /// list domains with existing snapshot
    #[arg(long)]
    pub with_snapshot: bool,
    /// list domains without a snapshot
    #[arg(long)]
    pub without_snapshot: bool,
    /// list uuid's only
    #[arg(long)]
    pub uuid: bool,
    /// list domain names only
    #[arg(long)]
    pub name: bool,
    /// list domain IDs only
    #[arg(long)]
    pub id: bool,
    /// list table (default)
    #[arg(long)]
    pub table: bool,
    /// show domain title
    #[arg(long)]
    pub title: bool,
}

/// `VIR_CONNECT_LIST_DOMAINS_*` flags.
pub mod list_flags {
    /// Running or paused domains.
    pub const ACTIVE: u32 = 1;
    /// Defined, not running domains.
    pub const INACTIVE: u32 = 2;
    /// Persistent domains.
    pub const PERSISTENT: u32 = 4;
    /// Transient domains.
    pub const TRANSIENT: u32 = 8;
    /// Running.
    pub const RUNNING: u32 = 16;
    /// Paused.
    pub const PAUSED: u32 = 32;
    /// Shut off.
    pub const SHUTOFF: u32 = 64;
    /// Any other state.
    pub const OTHER: u32 = 128;
    /// With a managed save image.
    pub const MANAGEDSAVE: u32 = 256;
    /// Without a managed save image.
    pub const NO_MANAGEDSAVE: u32 = 512;
    /// Autostarted.
    pub const AUTOSTART: u32 = 1024;
    /// Not autostarted.
    pub const NO_AUTOSTART: u32 = 2048;
    /// With snapshots.
    pub const HAS_SNAPSHOT: u32 = 4096;
    /// Without snapshots.
    pub const NO_SNAPSHOT: u32 = 8192;
}

impl ListArgs {
    /// The `CONNECT_LIST_ALL_DOMAINS` flags virsh's `cmdList` computes.
    pub fn flags(&self) -> u32 {
        use list_flags as f;
        let mut flags = f::ACTIVE;
        if self.inactive || self.state_shutoff {
            flags = f::INACTIVE;
        }
        if self.all {
            flags = f::ACTIVE | f::INACTIVE;
        }
        let filters = [
            (self.persistent, f::PERSISTENT),
            (self.transient, f::TRANSIENT),
            (self.with_managed_save, f::MANAGEDSAVE),
            (self.without_managed_save, f::NO_MANAGEDSAVE),
            (self.autostart, f::AUTOSTART),
            (self.no_autostart, f::NO_AUTOSTART),
            (self.with_snapshot, f::HAS_SNAPSHOT),
            (self.without_snapshot, f::NO_SNAPSHOT),
            (self.state_running, f::RUNNING),
            (self.state_paused, f::PAUSED),
            (self.state_shutoff, f::SHUTOFF),
            (self.state_other, f::OTHER),
        ];
        for (on, flag) in filters {
            if on {
                flags |= flag;
            }
        }
        flags
    }

    /// `--table` cannot be combined with `--name`, `--uuid` or `--id`.
    pub fn check(&self) -> Result<(), ArgError> {
        for (on, name) in [(self.name, "name"), (self.uuid, "uuid"), (self.id, "id")] {
            if self.table && on {
                return Err(ArgError::Exclusive("table", name));
            }
        }
        Ok(())
    }
}

/// `domstats` options.
#[derive(Debug, Clone, Default, Args, PartialEq, Eq)]
pub struct DomstatsArgs {
    /// report domain state
    #[arg(long)]
    pub state: bool,
    /// report domain physical cpu usage
    #[arg(long)]
    pub cpu_total: bool,
    /// report domain balloon statistics
    #[arg(long)]
    pub balloon: bool,
    /// report domain virtual cpu information
    #[arg(long)]
    pub vcpu: bool,
    /// report domain network interface information
    #[arg(long)]
    pub interface: bool,
    /// report domain block device statistics
    #[arg(long)]
    pub block: bool,
    /// report domain perf event statistics
    #[arg(long)]
    pub perf: bool,
    /// report domain IOThread information
    #[arg(long)]
    pub iothread: bool,
    /// report domain memory usage
    #[arg(long)]
    pub memory: bool,
    /// report domain dirty rate information
    #[arg(long)]
    pub dirtyrate: bool,
    /// report hypervisor-specific statistics
    #[arg(long)]
    pub vm: bool,
    /// list only active domains
    #[arg(long)]
    pub list_active: bool,
    /// list only inactive domains
    #[arg(long)]
    pub list_inactive: bool,
    /// list only persistent domains
    #[arg(long)]
    pub list_persistent: bool,
    /// list only transient domains
    #[arg(long)]
    pub list_transient: bool,
    /// list only running domains
    #[arg(long)]
    pub list_running: bool,
    /// list only paused domains
    #[arg(long)]
    pub list_paused: bool,
    /// list only shutoff domains
    #[arg(long)]
    pub list_shutoff: bool,
    /// list only domains in other states
    #[arg(long)]
    pub list_other: bool,
    /// do not pretty-print the fields
    #[arg(long)]
    pub raw: bool,
    /// enforce requested stats parameters
    #[arg(long)]
    pub enforce: bool,
    /// add backing chain information to block stats
    #[arg(long)]
    pub backing: bool,
    /// report only stats that are accessible instantly
    #[arg(long)]
    pub nowait: bool,
    /// list of domains to get stats for
    #[arg(value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// a domain to get stats for (may repeat)
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub named_domains: Vec<String>,
}

impl DomstatsArgs {
    /// `VIR_DOMAIN_STATS_*` groups (0: all the daemon has).
    pub fn stats(&self) -> u32 {
        let groups = [
            (self.state, 1),
            (self.cpu_total, 2),
            (self.balloon, 4),
            (self.vcpu, 8),
            (self.interface, 16),
            (self.block, 32),
            (self.perf, 64),
            (self.iothread, 128),
            (self.memory, 256),
            (self.dirtyrate, 512),
            (self.vm, 1024),
        ];
        groups.iter().filter(|(on, _)| *on).map(|(_, g)| g).sum()
    }

    /// `VIR_CONNECT_GET_ALL_DOMAINS_STATS_*` flags.
    pub fn flags(&self) -> u32 {
        let flags = [
            (self.list_active, 1),
            (self.list_inactive, 2),
            (self.list_persistent, 4),
            (self.list_transient, 8),
            (self.list_running, 16),
            (self.list_paused, 32),
            (self.list_shutoff, 64),
            (self.list_other, 128),
            (self.nowait, 1 << 29),
            (self.backing, 1 << 30),
            (self.enforce, 1 << 31),
        ];
        flags.iter().filter(|(on, _)| *on).map(|(_, f)| f).sum()
    }

    /// Domains named positionally and with `--domain`, in that order.
    pub fn all_domains(&self) -> Vec<String> {
        self.domains
            .iter()
            .chain(&self.named_domains)
            .cloned()
            .collect()
    }
}

/// `event` options.
#[derive(Debug, Clone, Default, Args, PartialEq, Eq)]
pub struct EventArgs {
    /// filter by domain name, id or uuid
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// which event type to wait for
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// wait for all events instead of just one type
    #[arg(long)]
    pub all: bool,
    /// loop until timeout or interrupt, rather than one-shot
    #[arg(long = "loop")]
    pub loop_: bool,
    /// timeout seconds
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<String>,
    /// list valid event types
    #[arg(long)]
    pub list: bool,
    /// show timestamp for each printed event
    #[arg(long)]
    pub timestamp: bool,
}

/// The event types `event --event` accepts here (the ones the daemon sends).
pub const EVENT_NAMES: &[&str] = &["lifecycle", "reboot"];

impl EventArgs {
    /// Checks virsh's rules; returns the timeout in seconds (`None`: wait forever).
    pub fn check(&self) -> Result<Option<u64>, ArgError> {
        if self.all && self.event.is_some() {
            return Err(ArgError::Exclusive("all", "event"));
        }
        if self.list && self.all {
            return Err(ArgError::Exclusive("list", "all"));
        }
        if self.list && self.event.is_some() {
            return Err(ArgError::Exclusive("list", "event"));
        }
        if let Some(name) = &self.event
            && !EVENT_NAMES.contains(&name.as_str())
        {
            return Err(ArgError::Invalid(format!("unknown event type {name}")));
        }
        if !self.list && !self.all && self.event.is_none() {
            return Err(ArgError::Invalid(
                "one of --list, --all, or --event <type> is required".into(),
            ));
        }
        self.timeout.as_deref().map(parse_timeout).transpose()
    }
}

fn parse_timeout(text: &str) -> Result<u64, ArgError> {
    match text.parse::<u64>() {
        Ok(t) if t >= 1 => Ok(t),
        _ => Err(ArgError::Invalid(format!(
            "Numeric value '{text}' for <timeout> option is malformed or out of range"
        ))),
    }
}

/// A shutdown or reboot method (`--mode`).
#[derive(Debug, Clone, Default, Args, PartialEq, Eq)]
pub struct ModeArg {
    /// shutdown mode: acpi|agent|initctl|signal|paravirt (comma-separated)
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
}

impl ModeArg {
    /// `VIR_DOMAIN_SHUTDOWN_*` / `VIR_DOMAIN_REBOOT_*` flags (same values).
    pub fn flags(&self) -> Result<u32, ArgError> {
        let Some(modes) = &self.mode else {
            return Ok(0);
        };
        let mut flags = 0;
        for mode in modes.split(',') {
            flags |= match mode {
                "acpi" => 1,
                "agent" => 2,
                "initctl" => 4,
                "signal" => 8,
                "paravirt" => 16,
                other => {
                    return Err(ArgError::Invalid(format!(
                        "Unknown mode {other} value, expecting 'acpi', 'agent', 'initctl', 'signal', or 'paravirt'"
                    )));
                }
            };
        }
        Ok(flags)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// list domains
    #[command(name = "list")]
    List(ListArgs),
    /// define (but don't start) a domain from an XML file
    #[command(name = "define")]
    Define {
        /// the XML file
        #[command(flatten)]
        file: FileArg,
        /// validate the XML against the schema
        #[arg(long)]
        validate: bool,
    },
    /// undefine a domain
    #[command(name = "undefine")]
    Undefine {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// remove domain managed state file
        #[arg(long)]
        managed_save: bool,
        /// remove all domain snapshot metadata, if inactive
        #[arg(long)]
        snapshots_metadata: bool,
        /// remove nvram file
        #[arg(long)]
        nvram: bool,
        /// keep nvram file
        #[arg(long)]
        keep_nvram: bool,
    },
    /// create a domain from an XML file
    #[command(name = "create")]
    Create {
        /// the XML file
        #[command(flatten)]
        file: FileArg,
        /// leave the guest paused after creation
        #[arg(long)]
        paused: bool,
        /// automatically destroy the guest when virsh disconnects
        #[arg(long)]
        autodestroy: bool,
    },
    /// start a (previously defined) inactive domain
    #[command(name = "start")]
    Start {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// leave the guest paused after start
        #[arg(long)]
        paused: bool,
        /// automatically destroy the guest when virsh disconnects
        #[arg(long)]
        autodestroy: bool,
        /// avoid file system cache when loading
        #[arg(long)]
        bypass_cache: bool,
        /// force fresh boot by discarding any managed save
        #[arg(long)]
        force_boot: bool,
    },
    /// gracefully shutdown a domain
    #[command(name = "shutdown")]
    Shutdown {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// the shutdown method
        #[command(flatten)]
        mode: ModeArg,
    },
    /// destroy (stop) a domain
    #[command(name = "destroy")]
    Destroy {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// terminate gracefully
        #[arg(long)]
        graceful: bool,
    },
    /// reboot a domain
    #[command(name = "reboot")]
    Reboot {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// the reboot method
        #[command(flatten)]
        mode: ModeArg,
    },
    /// reset a domain
    #[command(name = "reset")]
    Reset {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// suspend a domain
    #[command(name = "suspend")]
    Suspend {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// resume a domain
    #[command(name = "resume")]
    Resume {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// autostart a domain
    #[command(name = "autostart")]
    Autostart {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// disable autostarting
        #[arg(long)]
        disable: bool,
    },
    /// domain information
    #[command(name = "dominfo")]
    Dominfo {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// domain state
    #[command(name = "domstate")]
    Domstate {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// also print reason for the state
        #[arg(long)]
        reason: bool,
    },
    /// convert a domain name or UUID to domain id
    #[command(name = "domid")]
    Domid {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// convert a domain id or UUID to domain name
    #[command(name = "domname")]
    Domname {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// convert a domain name or id to domain UUID
    #[command(name = "domuuid")]
    Domuuid {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// domain information in XML
    #[command(name = "dumpxml")]
    Dumpxml {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// show inactive defined XML
        #[arg(long)]
        inactive: bool,
        /// include security sensitive information in XML dump
        #[arg(long)]
        security_info: bool,
        /// update guest CPU according to host CPU
        #[arg(long)]
        update_cpu: bool,
        /// provide XML suitable for migrations
        #[arg(long)]
        migratable: bool,
    },
    /// get statistics about one or multiple domains
    #[command(name = "domstats")]
    Domstats(DomstatsArgs),
    /// detailed domain vcpu information
    #[command(name = "vcpuinfo")]
    Vcpuinfo {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// return human readable output
        #[arg(long)]
        pretty: bool,
    },
    /// list all domain blocks
    #[command(name = "domblklist")]
    Domblklist {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// get inactive rather than running configuration
        #[arg(long)]
        inactive: bool,
        /// additionally display the type and device value
        #[arg(long)]
        details: bool,
    },
    /// list all domain virtual interfaces
    #[command(name = "domiflist")]
    Domiflist {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// get inactive rather than running configuration
        #[arg(long)]
        inactive: bool,
    },
    /// get device block stats for a domain
    #[command(name = "domblkstat")]
    Domblkstat {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// block device (all devices when absent)
        #[arg(value_name = "DEVICE")]
        device: Option<String>,
        /// block device
        #[arg(long = "device", value_name = "DEVICE")]
        named_device: Option<String>,
        /// print a more human readable output
        #[arg(long)]
        human: bool,
    },
    /// get network interface stats for a domain
    #[command(name = "domifstat")]
    Domifstat {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// interface device specified by name or MAC Address
        #[arg(value_name = "INTERFACE")]
        interface: Option<String>,
        /// interface device specified by name or MAC Address
        #[arg(long = "interface", value_name = "INTERFACE")]
        named_interface: Option<String>,
    },
    /// get memory statistics for a domain
    #[command(name = "dommemstat")]
    Dommemstat {
        /// the domain
        #[command(flatten)]
        domain: Either,
    },
    /// connect to the guest console
    #[command(name = "console")]
    Console {
        /// the domain
        #[command(flatten)]
        domain: Either,
        /// character device name
        #[arg(long, value_name = "NAME")]
        devname: Option<String>,
        /// force console connection (disconnect already connected sessions)
        #[arg(long)]
        force: bool,
        /// only connect if safe console handling is supported
        #[arg(long)]
        safe: bool,
    },
    /// (re)connect to hypervisor events
    #[command(name = "event")]
    Event(EventArgs),
    /// print the hypervisor canonical URI
    #[command(name = "uri")]
    Uri,
    /// show version
    #[command(name = "version")]
    Version {
        /// report daemon version too
        #[arg(long)]
        daemon: bool,
    },
    /// print the hypervisor hostname
    #[command(name = "hostname")]
    Hostname,
    /// node information
    #[command(name = "nodeinfo")]
    Nodeinfo,
}

impl Command {
    /// The command's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Self::List(_) => "list",
            Self::Define { .. } => "define",
            Self::Undefine { .. } => "undefine",
            Self::Create { .. } => "create",
            Self::Start { .. } => "start",
            Self::Shutdown { .. } => "shutdown",
            Self::Destroy { .. } => "destroy",
            Self::Reboot { .. } => "reboot",
            Self::Reset { .. } => "reset",
            Self::Suspend { .. } => "suspend",
            Self::Resume { .. } => "resume",
            Self::Autostart { .. } => "autostart",
            Self::Dominfo { .. } => "dominfo",
            Self::Domstate { .. } => "domstate",
            Self::Domid { .. } => "domid",
            Self::Domname { .. } => "domname",
            Self::Domuuid { .. } => "domuuid",
            Self::Dumpxml { .. } => "dumpxml",
            Self::Domstats(_) => "domstats",
            Self::Vcpuinfo { .. } => "vcpuinfo",
            Self::Domblklist { .. } => "domblklist",
            Self::Domiflist { .. } => "domiflist",
            Self::Domblkstat { .. } => "domblkstat",
            Self::Domifstat { .. } => "domifstat",
            Self::Dommemstat { .. } => "dommemstat",
            Self::Console { .. } => "console",
            Self::Event(_) => "event",
            Self::Uri => "uri",
            Self::Version { .. } => "version",
            Self::Hostname => "hostname",
            Self::Nodeinfo => "nodeinfo",
        }
    }
}

/// Picks the URI as virsh does: `-c`, else `LIBVIRT_DEFAULT_URI` when set and not empty,
/// else [`DEFAULT_URI`].
pub fn choose_uri(connect: Option<&str>, env_default: Option<&str>) -> String {
    connect
        .or(env_default.filter(|u| !u.is_empty()))
        .unwrap_or(DEFAULT_URI)
        .to_owned()
}

/// What to do after clap refused a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOutcome {
    /// Print this to stdout and exit 0 (help, version).
    Print(String),
    /// Print these lines as `error: LINE` to stderr and exit 1.
    Fail(Vec<String>),
}

/// Parses `argv` (program name first).
pub fn parse<I, T>(argv: I) -> Result<Cli, ParseOutcome>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    Cli::try_parse_from(&argv).map_err(|e| translate(&e, &argv))
}

/// Turns a clap error into virsh's wording where virsh has one.
fn translate(e: &clap::Error, argv: &[std::ffi::OsString]) -> ParseOutcome {
    let context_str = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            ParseOutcome::Print(e.render().to_string())
        }
        ErrorKind::InvalidSubcommand => {
            let cmd = context_str(ContextKind::InvalidSubcommand).unwrap_or_default();
            ParseOutcome::Fail(vec![format!("unknown command: '{cmd}'")])
        }
        ErrorKind::UnknownArgument => {
            let arg = context_str(ContextKind::InvalidArg).unwrap_or_default();
            let line = match command_word(argv) {
                Some(cmd) if arg.starts_with('-') => {
                    let option = arg.split('=').next().unwrap_or(&arg);
                    format!("command '{cmd}' doesn't support option {option}")
                }
                Some(_) => format!("unexpected data '{arg}'"),
                None => format!("unsupported option '{arg}'. See --help."),
            };
            ParseOutcome::Fail(vec![line])
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            ParseOutcome::Fail(vec![
                first.strip_prefix("error: ").unwrap_or(first).to_owned(),
            ])
        }
    }
}

/// The command word of `argv`: the first argument that is not a global option or its value.
fn command_word(argv: &[std::ffi::OsString]) -> Option<String> {
    let mut args = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--connect" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            _ => return Some(arg),
        }
    }
    None
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
