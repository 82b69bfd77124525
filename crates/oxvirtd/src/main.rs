//! oxvirtd: the management daemon. It opens the definition store, re-attaches the VMs a
//! previous daemon left running, starts the autostart domains, and serves libvirt's RPC
//! protocol on `<runtime>/oxvirtd-sock` (read-write, mode 0600) and
//! `<runtime>/oxvirtd-sock-ro` (read-only) until SIGTERM or SIGINT. It exits without stopping
//! any VM: the next daemon re-attaches them.
//!
//! The procedures are implemented in [`dispatch`]; [`plan`] turns a definition into what oxvmm
//! runs; [`bridge`] joins TAP devices to host bridges.

mod bridge;
mod dispatch;
mod plan;

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use oxvirtd::{DomainRegistry, EventBus, NativeConfig, NativeDriver, Paths, Uuid};
use rpc::server::{Server, ServerConfig};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use dispatch::{Daemon, EventHub};

/// The read-write socket's name in the runtime directory.
const SOCKET: &str = "oxvirtd-sock";
/// The read-only socket's name.
const SOCKET_RO: &str = "oxvirtd-sock-ro";
/// The lock file that keeps two daemons off the same directories.
const LOCK_FILE: &str = "oxvirtd.lock";

/// The command line of oxvirtd.
#[derive(Parser, Debug)]
#[command(name = "oxvirtd", version, about = "The oxvirt management daemon")]
struct Args {
    /// Persistent state: definitions, autostart markers, logs.
    #[arg(long, value_name = "DIR", default_value = oxvirtd::paths::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Runtime state of running VMs (sockets, pids) and the daemon's sockets.
    #[arg(long, value_name = "DIR", default_value = oxvirtd::paths::DEFAULT_RUNTIME_DIR)]
    runtime_dir: PathBuf,
    /// The oxvmm binary (default: next to oxvirtd, then on PATH).
    #[arg(long, value_name = "PATH")]
    oxvmm: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(log_level())
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxvirtd: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The log level: info, or `OXVIRTD_LOG` (`error`, `warn`, `debug`, `trace`).
fn log_level() -> tracing::level_filters::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match std::env::var("OXVIRTD_LOG").as_deref() {
        Ok("trace") => LevelFilter::TRACE,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("warn") => LevelFilter::WARN,
        Ok("error") => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    }
}

fn run(args: Args) -> Result<()> {
    // One thread: a call hops between a connection's reader, its handler task and its writer;
    // on one thread those hops are queue operations rather than cross-thread wake-ups.
    // Blocking work (oxvmm's API calls) goes to spawn_blocking.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot create the async runtime")?;
    let result = runtime.block_on(serve(args));
    // Blocking API calls still in flight must not keep the process alive: the VMs run on.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn serve(args: Args) -> Result<()> {
    let paths = Paths::new(&args.state_dir, &args.runtime_dir);
    paths
        .create_dirs()
        .context("cannot create the state and runtime directories")?;
    let _lock = lock_runtime_dir(paths.runtime_dir())?;
    let config = match args.oxvmm {
        Some(oxvmm) => NativeConfig::new(oxvmm),
        None => NativeConfig::with_located_oxvmm()?,
    };
    tracing::info!(oxvmm = %config.oxvmm.display(), "native driver");
    let driver = NativeDriver::new(paths.clone(), config, EventBus::new())?;
    let (registry, problems) = DomainRegistry::open(&paths, driver.clone(), &identify)
        .context("cannot open the definition store")?;
    for problem in &problems {
        tracing::warn!(domain = %problem.name, "definition not loaded: {}", problem.problem);
    }
    let events = Arc::new(EventHub::default());
    tokio::spawn(Arc::clone(&events).forward(registry.subscribe()));
    let report = driver.recover().await.context("cannot re-attach VMs")?;
    for vm in &report.reattached {
        tracing::info!(domain = %vm.name, id = vm.id, pid = vm.pid, "re-attached");
    }
    for (name, _, reason) in &report.stopped {
        tracing::info!(domain = %name, ?reason, "stopped while the daemon was down");
    }
    let daemon = Arc::new(Daemon::new(registry, events));
    daemon.autostart().await;

    let rw = bind(&paths.runtime_dir().join(SOCKET), 0o600)?;
    let ro = bind(&paths.runtime_dir().join(SOCKET_RO), 0o666)?;
    let server = Server::new(daemon, ServerConfig::default());
    let rw_server = server.clone();
    let mut rw_task = tokio::spawn(async move { rw_server.serve_unix(rw, false).await });
    let mut ro_task = tokio::spawn(async move { server.serve_unix(ro, true).await });
    tracing::info!(runtime = %paths.runtime_dir().display(), "serving");

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        r = &mut rw_task => Err(listener_end(r, SOCKET)),
        r = &mut ro_task => Err(listener_end(r, SOCKET_RO)),
    };
    for name in [SOCKET, SOCKET_RO] {
        let _ = std::fs::remove_file(paths.runtime_dir().join(name));
    }
    let signal = outcome?;
    tracing::info!("{signal}: exiting; running VMs keep running");
    Ok(())
}

fn listener_end(
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
    socket: &str,
) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("the listener of {socket} stopped"),
        Ok(Err(e)) => anyhow::Error::new(e).context(format!("accepting on {socket} failed")),
        Err(e) => anyhow::Error::new(e).context(format!("the listener of {socket} failed")),
    }
}

/// The name and UUID of a stored definition (for the registry's start-up).
fn identify(xml: &str) -> std::result::Result<(String, Uuid), String> {
    let def = domain::DomainDef::from_xml(xml).map_err(|e| e.to_string())?;
    Ok((def.name, Uuid(def.uuid.0)))
}

/// Binds a listening socket with `mode`, replacing a stale socket file.
fn bind(path: &Path, mode: u32) -> Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

/// Takes `<runtime>/oxvirtd.lock` (flock): a second daemon on the same directories would
/// fight the first over every VM.
fn lock_runtime_dir(runtime_dir: &Path) -> Result<std::fs::File> {
    let path = runtime_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock takes no pointers; the descriptor is open for the call.
    let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if ret != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another oxvirtd is running with runtime directory {}",
                runtime_dir.display()
            );
        }
        return Err(e).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}
