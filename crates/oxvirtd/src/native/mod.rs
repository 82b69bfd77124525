//! The native driver: one oxvmm process per VM, started, supervised, reaped and re-attached
//! by the daemon.
//!
//! The daemon is oxvmm's parent and reaps it itself: every VM is watched through a pidfd
//! (readable when the process exits) registered with tokio's reactor, and reaped with
//! `waitid(P_PIDFD)`. After a daemon restart the VMs are no longer its children; the same
//! pidfd watch still sees them exit, but their exit status went to their new parent, so the
//! reason is read from oxvmm's log instead ([`crate::native::exit`]).
//!
//! Operations map onto oxvmm's control API:
//!
//! | driver | oxvmm API | libvirt |
//! | --- | --- | --- |
//! | [`NativeDriver::shutdown`] | `vm.shutdown` (ACPI power button; returns at once) | virDomainShutdown |
//! | [`NativeDriver::destroy`] | `vm.power-off`, then SIGKILL after a grace period | virDomainDestroy |
//! | [`NativeDriver::reboot`] | `vm.reboot` | virDomainReboot |
//! | [`NativeDriver::reset`] | `vm.reboot` | virDomainReset |
//! | [`NativeDriver::suspend`] / [`NativeDriver::resume`] | `vm.pause` / `vm.resume` | virDomainSuspend / Resume |
//! | [`NativeDriver::info`] | `vm.info` + `/proc/<pid>/stat` | virDomainGetInfo |
//! | [`NativeDriver::counters`] | `vm.counters` | (domstats) |
//! | [`NativeDriver::set_balloon`] | `vm.balloon` | virDomainSetMemory |
//!
//! `vm.reboot` resets the machine in place (vCPUs, devices, memory) and boots again: it is a
//! hard reset. oxvmm has no guest-cooperative reboot (libvirt's reboot normally asks the guest
//! through ACPI or its agent), so reboot and reset both use it.

mod exit;
mod launch;
mod recover;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use vmm_api::{Client, ClientError, Counters, VmConfig, VmState};

use crate::events::{EventBus, EventKind, LifecycleEvent, ResumedDetail, SuspendedDetail};
use crate::ident::{NameError, Uuid};
use crate::paths::Paths;
use crate::process::{PidFd, ProcessExit};
use crate::runtime::{RecordError, RuntimeRecord};
use crate::state::{ActiveState, DomainState, PausedReason, RunningReason, ShutoffReason};

pub use launch::locate_oxvmm;
pub use recover::RecoveryReport;

/// A failed driver operation.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The name cannot be a domain name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A socket path would be longer than a Unix socket allows.
    #[error(
        "socket path {path} is {len} bytes long; Unix sockets allow {max}: use a shorter \
             domain name or runtime directory"
    )]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The domain is already running or starting.
    #[error("domain {name:?} is already active")]
    AlreadyActive {
        /// The domain.
        name: String,
    },
    /// Another running domain has this UUID.
    #[error("UUID {uuid} is already used by running domain {other:?}")]
    UuidInUse {
        /// The UUID.
        uuid: Uuid,
        /// The domain using it.
        other: String,
    },
    /// The domain is not running.
    #[error("domain {name:?} is not running")]
    NotRunning {
        /// The domain.
        name: String,
    },
    /// No oxvmm binary was found.
    #[error("cannot find the oxvmm binary: {searched}")]
    OxvmmNotFound {
        /// Where it was looked for.
        searched: String,
    },
    /// oxvmm could not be started.
    #[error("cannot start {oxvmm} for domain {name:?}: {source}")]
    Spawn {
        /// The domain.
        name: String,
        /// The binary.
        oxvmm: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// oxvmm exited before its API answered.
    #[error(
        "oxvmm for domain {name:?} {exit} before its API answered; last lines of {log}:\n{log_tail}"
    )]
    EarlyExit {
        /// The domain.
        name: String,
        /// How it ended.
        exit: ProcessExit,
        /// Its log file.
        log: PathBuf,
        /// The end of what it logged in this run.
        log_tail: String,
    },
    /// oxvmm's API did not answer in time; the process was killed.
    #[error(
        "oxvmm for domain {name:?} did not answer on {socket} within {waited:?} and was \
             killed; last lines of {log}:\n{log_tail}"
    )]
    StartTimeout {
        /// The domain.
        name: String,
        /// The API socket.
        socket: PathBuf,
        /// How long the driver waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of what it logged in this run.
        log_tail: String,
    },
    /// oxvmm refused or failed a request.
    #[error("domain {name:?}: {source}")]
    Api {
        /// The domain.
        name: String,
        /// The client error (carries oxvmm's message and status).
        source: Box<ClientError>,
    },
    /// The process did not go away after SIGKILL.
    #[error("domain {name:?} (pid {pid}) did not exit within {waited:?} of SIGKILL")]
    KillTimeout {
        /// The domain.
        name: String,
        /// The process.
        pid: i32,
        /// How long the driver waited.
        waited: Duration,
    },
    /// The domain did not stop within the time a caller gave.
    #[error("domain {name:?} still runs after {waited:?}")]
    StillRunning {
        /// The domain.
        name: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// A runtime record could not be written or read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A file of the daemon's own could not be used.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A blocking task of the driver panicked or was cancelled.
    #[error("internal error in the native driver: {0}")]
    Internal(String),
}

/// Settings of the native driver.
#[derive(Clone, Debug)]
pub struct NativeConfig {
    /// The oxvmm binary.
    pub oxvmm: PathBuf,
    /// How long a start waits for oxvmm's API to answer.
    pub start_timeout: Duration,
    /// How long destroy waits after `vm.power-off` before SIGKILL.
    pub destroy_grace: Duration,
    /// Read/write timeout of each API call.
    pub api_timeout: Duration,
}

impl NativeConfig {
    /// Default timeouts with this oxvmm binary.
    pub fn new(oxvmm: impl Into<PathBuf>) -> Self {
        NativeConfig {
            oxvmm: oxvmm.into(),
            start_timeout: Duration::from_secs(30),
            destroy_grace: Duration::from_secs(5),
            api_timeout: Duration::from_secs(10),
        }
    }

    /// Default timeouts with the oxvmm found by [`locate_oxvmm`].
    pub fn with_located_oxvmm() -> Result<Self, NativeError> {
        Ok(NativeConfig::new(locate_oxvmm()?))
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct StartSpec {
    /// Domain name (validated here too).
    pub name: String,
    /// Domain UUID.
    pub uuid: Uuid,
    /// The VM configuration derived from the XML.
    pub config: VmConfig,
    /// The live definition, kept in the runtime record (for dumpxml and after a restart).
    pub xml: String,
    /// Whether the domain has a persistent definition.
    pub persistent: bool,
}

/// A running (or paused) domain, as seen at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveDomain {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: Uuid,
    /// Domain id.
    pub id: u32,
    /// oxvmm's pid.
    pub pid: i32,
    /// Whether it has a persistent definition.
    pub persistent: bool,
    /// Running or paused, with reason.
    pub state: DomainState,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// What `vm.info` and `/proc` say about a running domain.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeInfo {
    /// Running or paused, with reason.
    pub state: DomainState,
    /// Domain id.
    pub id: u32,
    /// oxvmm's pid.
    pub pid: i32,
    /// Milliseconds since oxvmm started the VM.
    pub uptime_ms: u64,
    /// Boots so far (1 + reboots).
    pub boots: u32,
    /// CPU time oxvmm used (all threads), in nanoseconds.
    pub cpu_time_ns: u64,
    /// The effective configuration (memory, vCPUs, devices).
    pub config: VmConfig,
}

/// The state of one running VM that changes while it runs.
struct VmMutable {
    record: RuntimeRecord,
    destroy_requested: bool,
    shutdown_requested: bool,
}

/// One running VM.
struct Vm {
    pidfd: Arc<PidFd>,
    client: Client,
    mutable: Mutex<VmMutable>,
    /// `Some(reason)` once the process is reaped.
    stopped: watch::Sender<Option<ShutoffReason>>,
}

impl Vm {
    fn new(pidfd: PidFd, record: RuntimeRecord, api_timeout: Duration) -> Arc<Vm> {
        let client = Client::new(record.api_socket.clone()).with_timeout(Some(api_timeout));
        Arc::new(Vm {
            pidfd: Arc::new(pidfd),
            client,
            mutable: Mutex::new(VmMutable {
                record,
                destroy_requested: false,
                shutdown_requested: false,
            }),
            stopped: watch::Sender::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VmMutable> {
        lock(&self.mutable)
    }

    fn snapshot(&self) -> ActiveDomain {
        let mutable = self.lock();
        let record = &mutable.record;
        ActiveDomain {
            name: record.name.clone(),
            uuid: record.uuid,
            id: record.id,
            pid: record.pid,
            persistent: record.persistent,
            state: record.state.into(),
            started_at_ms: record.started_at_ms,
        }
    }

    fn event(&self, kind: EventKind) -> LifecycleEvent {
        let mutable = self.lock();
        LifecycleEvent {
            name: mutable.record.name.clone(),
            uuid: mutable.record.uuid,
            id: Some(mutable.record.id),
            kind,
        }
    }
}

enum Slot {
    /// A start is in progress (the name and UUID are taken).
    Starting {
        uuid: Uuid,
    },
    Running(Arc<Vm>),
}

#[derive(Default)]
struct Table {
    slots: BTreeMap<String, Slot>,
    /// Why each persistent domain last stopped.
    last_shutoff: HashMap<String, ShutoffReason>,
    /// Id of the next start; ids are never reused while the daemon runs.
    next_id: u32,
}

struct Shared {
    paths: Paths,
    config: NativeConfig,
    events: EventBus,
    table: Mutex<Table>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The native hypervisor driver. Cheap to clone (shared state). Its async methods must run
/// inside a tokio runtime with I/O and time enabled (`enable_all`): each VM's supervisor is a
/// task waiting on a pidfd in the reactor.
#[derive(Clone)]
pub struct NativeDriver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NativeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeDriver")
            .field("paths", &self.shared.paths)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl NativeDriver {
    /// A driver keeping its files under `paths` (directories are created). Call
    /// [`NativeDriver::recover`] before starting anything, so re-attached VMs keep their ids.
    pub fn new(paths: Paths, config: NativeConfig, events: EventBus) -> Result<Self, NativeError> {
        paths.create_dirs().map_err(|source| NativeError::Io {
            what: "cannot create",
            path: paths.state_dir().to_path_buf(),
            source,
        })?;
        let table = Table {
            next_id: 1,
            ..Table::default()
        };
        Ok(NativeDriver {
            shared: Arc::new(Shared {
                paths,
                config,
                events,
                table: Mutex::new(table),
            }),
        })
    }

    /// The directory layout.
    pub fn paths(&self) -> &Paths {
        &self.shared.paths
    }

    /// The driver's settings (the oxvmm binary, timeouts).
    pub fn config(&self) -> &NativeConfig {
        &self.shared.config
    }

    /// The event bus the driver sends lifecycle events on.
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// A receiver of every lifecycle event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.shared.events.subscribe()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.shared.table)
    }

    fn vm(&self, name: &str) -> Result<Arc<Vm>, NativeError> {
        match self.table().slots.get(name) {
            Some(Slot::Running(vm)) => Ok(vm.clone()),
            _ => Err(NativeError::NotRunning {
                name: name.to_string(),
            }),
        }
    }

    /// The running domain called `name`, if any.
    pub fn active(&self, name: &str) -> Option<ActiveDomain> {
        self.vm(name).ok().map(|vm| vm.snapshot())
    }

    /// Every running or paused domain, by name.
    pub fn list_active(&self) -> Vec<ActiveDomain> {
        let vms: Vec<Arc<Vm>> = self
            .table()
            .slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Running(vm) => Some(vm.clone()),
                Slot::Starting { .. } => None,
            })
            .collect();
        vms.iter().map(|vm| vm.snapshot()).collect()
    }

    /// Whether a start of `name` is in progress or it runs.
    pub fn is_active_or_starting(&self, name: &str) -> bool {
        self.table().slots.contains_key(name)
    }

    /// The running domain with this id.
    pub fn active_by_id(&self, id: u32) -> Option<ActiveDomain> {
        self.list_active().into_iter().find(|d| d.id == id)
    }

    /// The running domain with this UUID.
    pub fn active_by_uuid(&self, uuid: Uuid) -> Option<ActiveDomain> {
        self.list_active().into_iter().find(|d| d.uuid == uuid)
    }

    /// The state of `name`: running/paused when active, else shut off with the reason of its
    /// last stop (`Unknown` when it has not run since the daemon started).
    pub fn state(&self, name: &str) -> DomainState {
        if let Some(active) = self.active(name) {
            return active.state;
        }
        let reason = self.table().last_shutoff.get(name).copied();
        DomainState::Shutoff(reason.unwrap_or(ShutoffReason::Unknown))
    }

    /// Forgets the last shut-off reason of `name` (a domain defined anew).
    pub fn forget_shutoff_reason(&self, name: &str) {
        self.table().last_shutoff.remove(name);
    }

    /// The live XML of a running domain.
    pub fn live_xml(&self, name: &str) -> Option<String> {
        let vm = self.vm(name).ok()?;
        let xml = vm.lock().record.xml.clone();
        Some(xml)
    }

    /// The configuration a running domain was started with.
    pub fn live_config(&self, name: &str) -> Option<VmConfig> {
        let vm = self.vm(name).ok()?;
        let config = vm.lock().record.config.clone();
        Some(config)
    }

    /// Marks a running domain persistent or transient (define or undefine while it runs).
    pub fn set_persistent(&self, name: &str, persistent: bool) -> Result<(), NativeError> {
        let vm = self.vm(name)?;
        let mut mutable = vm.lock();
        mutable.record.persistent = persistent;
        mutable.record.save(&self.shared.paths)?;
        Ok(())
    }

    /// Runs a blocking API call on `vm`'s client off the async threads.
    async fn call<T: Send + 'static>(
        &self,
        vm: &Vm,
        request: impl FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, NativeError> {
        let client = vm.client.clone();
        let name = vm.lock().record.name.clone();
        tokio::task::spawn_blocking(move || request(&client))
            .await
            .map_err(|e| NativeError::Internal(format!("API call task: {e}")))?
            .map_err(|source| NativeError::Api {
                name,
                source: Box::new(source),
            })
    }

    /// Presses the ACPI power button; returns at once (the guest decides). The domain stops
    /// later with reason `Shutdown` and events `Shutdown(Host)` then `Stopped(Shutdown)`.
    pub async fn shutdown(&self, name: &str) -> Result<(), NativeError> {
        let vm = self.vm(name)?;
        vm.lock().shutdown_requested = true;
        let result = self.call(&vm, Client::shutdown).await;
        if result.is_err() {
            // Refused (e.g. paused): a later power-off is the guest's own idea.
            vm.lock().shutdown_requested = false;
        }
        result
    }

    /// Resets the machine and boots again (`vm.reboot`; see the module documentation).
    pub async fn reboot(&self, name: &str) -> Result<(), NativeError> {
        let vm = self.vm(name)?;
        self.call(&vm, Client::reboot).await
    }

    /// A hard reset: the same `vm.reboot` (oxvmm's reboot is a reset in place).
    pub async fn reset(&self, name: &str) -> Result<(), NativeError> {
        self.reboot(name).await
    }

    /// Stops the vCPUs. Already paused is not an error (as in libvirt).
    pub async fn suspend(&self, name: &str) -> Result<(), NativeError> {
        let vm = self.vm(name)?;
        let result = self.call(&vm, Client::pause).await;
        let changed = accept_conflict(result)?;
        if self.record_state(&vm, ActiveState::Paused(PausedReason::User), changed) {
            let event = vm.event(EventKind::Suspended(SuspendedDetail::Paused));
            self.shared.events.emit(event);
        }
        Ok(())
    }

    /// Lets the vCPUs run again. Already running is not an error.
    pub async fn resume(&self, name: &str) -> Result<(), NativeError> {
        let vm = self.vm(name)?;
        let result = self.call(&vm, Client::resume).await;
        let changed = accept_conflict(result)?;
        if self.record_state(&vm, ActiveState::Running(RunningReason::Unpaused), changed) {
            let event = vm.event(EventKind::Resumed(ResumedDetail::Unpaused));
            self.shared.events.emit(event);
        }
        Ok(())
    }

    /// Stores the new state in the record; returns whether an event should be sent (the VMM
    /// changed state now, rather than being in it already).
    fn record_state(&self, vm: &Vm, state: ActiveState, changed: bool) -> bool {
        let mut mutable = vm.lock();
        let already =
            std::mem::discriminant(&mutable.record.state) == std::mem::discriminant(&state);
        if changed || !already {
            mutable.record.state = state;
            if let Err(e) = mutable.record.save(&self.shared.paths) {
                tracing::warn!("{e}");
            }
        }
        changed
    }

    /// State, uptime, boots and CPU time of a running domain.
    pub async fn info(&self, name: &str) -> Result<RuntimeInfo, NativeError> {
        let vm = self.vm(name)?;
        let info = self.call(&vm, Client::info).await?;
        let mut mutable = vm.lock();
        // oxvmm is the authority on paused/running: someone may have used its API directly.
        let reported = match info.state {
            VmState::Running => ActiveState::Running(RunningReason::Unknown),
            VmState::Paused => ActiveState::Paused(PausedReason::Unknown),
        };
        if std::mem::discriminant(&reported) != std::mem::discriminant(&mutable.record.state) {
            mutable.record.state = reported;
            if let Err(e) = mutable.record.save(&self.shared.paths) {
                tracing::warn!("{e}");
            }
        }
        let record = &mutable.record;
        let cpu_time_ns = crate::process::proc_stat(record.pid)
            .map(|stat| stat.cpu_ticks * 1_000_000_000 / crate::process::clock_ticks_per_second())
            .unwrap_or(0);
        Ok(RuntimeInfo {
            state: record.state.into(),
            id: record.id,
            pid: record.pid,
            uptime_ms: info.uptime_ms,
            boots: info.boots,
            cpu_time_ns,
            config: info.config,
        })
    }

    /// Exit and device counters.
    pub async fn counters(&self, name: &str) -> Result<Counters, NativeError> {
        let vm = self.vm(name)?;
        self.call(&vm, Client::counters).await
    }

    /// Sets the balloon target: the memory the guest should keep, in MiB.
    pub async fn set_balloon(&self, name: &str, target_mib: u64) -> Result<(), NativeError> {
        let vm = self.vm(name)?;
        self.call(&vm, move |client| client.balloon(target_mib))
            .await
    }

    /// Stops the VM at once: `vm.power-off`, then SIGKILL if it has not exited within the
    /// grace period. Returns when the process is reaped, with the reason recorded
    /// (`Destroyed`).
    pub async fn destroy(&self, name: &str) -> Result<ShutoffReason, NativeError> {
        let vm = self.vm(name)?;
        vm.lock().destroy_requested = true;
        let mut stopped = vm.stopped.subscribe();
        if let Err(e) = self.call(&vm, Client::power_off).await {
            tracing::info!("destroy: {e}; killing the process");
        } else if let Some(reason) =
            wait_stopped(&mut stopped, self.shared.config.destroy_grace).await
        {
            return Ok(reason);
        }
        let pid = vm.pidfd.pid();
        match vm.pidfd.send_signal(libc::SIGKILL) {
            Ok(()) => tracing::warn!(domain = name, pid, "sent SIGKILL"),
            // ESRCH: it exited meanwhile; the supervisor is reaping it.
            Err(e) => tracing::debug!(domain = name, pid, "SIGKILL: {e}"),
        }
        let waited = KILL_WAIT;
        wait_stopped(&mut stopped, waited)
            .await
            .ok_or_else(|| NativeError::KillTimeout {
                name: name.to_string(),
                pid,
                waited,
            })
    }

    /// Waits until the domain stops (for a shutdown the caller asked for); returns the reason.
    /// Returns at once with the last reason when it is not running.
    pub async fn wait_stopped(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<ShutoffReason, NativeError> {
        let Ok(vm) = self.vm(name) else {
            return Ok(match self.state(name) {
                DomainState::Shutoff(reason) => reason,
                _ => ShutoffReason::Unknown,
            });
        };
        let mut stopped = vm.stopped.subscribe();
        wait_stopped(&mut stopped, timeout)
            .await
            .ok_or_else(|| NativeError::StillRunning {
                name: name.to_string(),
                waited: timeout,
            })
    }
}

/// How long destroy waits for the supervisor to reap a process after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A 409 from oxvmm means "already in that state": `Ok(false)`; success is `Ok(true)`.
fn accept_conflict(result: Result<(), NativeError>) -> Result<bool, NativeError> {
    match result {
        Ok(()) => Ok(true),
        Err(NativeError::Api { source, .. }) if source.status() == Some(409) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn wait_stopped(
    stopped: &mut watch::Receiver<Option<ShutoffReason>>,
    timeout: Duration,
) -> Option<ShutoffReason> {
    let result = tokio::time::timeout(timeout, stopped.wait_for(Option::is_some)).await;
    match result {
        Ok(Ok(reason)) => *reason,
        // The sender lives in the Vm, which the receiver's owner keeps alive; a closed
        // channel would mean the VM was dropped without being reaped.
        Ok(Err(_)) | Err(_) => None,
    }
}
