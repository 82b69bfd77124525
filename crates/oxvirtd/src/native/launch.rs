//! Starting oxvmm: configuration file, log, spawn, waiting for the API, runtime record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vmm_api::Client;
use vmm_api::config::SerialConfig;

use super::exit::{read_run_log, supervise, tail_lines};
use super::{ActiveDomain, NativeDriver, NativeError, Slot, StartSpec, Vm};
use crate::events::{EventKind, StartedDetail};
use crate::fsutil;
use crate::ident::validate_name;
use crate::paths::SOCKET_PATH_MAX;
use crate::process::{PidFd, ProcessExit, proc_stat};
use crate::runtime::{RECORD_VERSION, RuntimeRecord, remove_runtime_files};
use crate::state::{ActiveState, RunningReason};

/// First pause between checks while oxvmm starts: its API socket appears a few milliseconds
/// after the spawn (a request sent then waits until the VM is built), so checking early
/// saves most of a longer pause.
const START_POLL_FIRST: Duration = Duration::from_millis(1);
/// Longest pause between checks while oxvmm starts (the pause doubles up to it).
const START_POLL_MAX: Duration = Duration::from_millis(20);
/// Timeout of each `vmm.ping` while oxvmm starts.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of the log quoted in a start error.
const ERROR_LOG_LINES: usize = 15;
/// oxvmm's log level: `info` makes it log how the guest ended ("guest powered off"), which is
/// how the reason is known for a VM that is no longer the daemon's child.
const OXVMM_LOG_LEVEL: &str = "info";

/// Finds oxvmm: next to the daemon's own executable, then on `PATH`.
pub fn locate_oxvmm() -> Result<PathBuf, NativeError> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        let candidate = dir.join("oxvmm");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(candidate.display().to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("oxvmm");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    searched.push("every directory of $PATH".to_string());
    Err(NativeError::OxvmmNotFound {
        searched: format!("looked at {}", searched.join(", ")),
    })
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A spawned oxvmm that is killed and reaped if dropped before [`Launching::into_pidfd`]
/// (a failed start, or a start future that was cancelled).
struct Launching {
    pidfd: Option<PidFd>,
}

impl Launching {
    fn pidfd(&self) -> Result<&PidFd, NativeError> {
        self.pidfd
            .as_ref()
            .ok_or_else(|| NativeError::Internal("launch guard used after release".to_string()))
    }

    fn into_pidfd(mut self) -> Result<PidFd, NativeError> {
        self.pidfd
            .take()
            .ok_or_else(|| NativeError::Internal("launch guard used after release".to_string()))
    }

    /// Reaps a child that has exited.
    fn reap_exited(&mut self) -> ProcessExit {
        let Some(pidfd) = self.pidfd.take() else {
            return ProcessExit::NotOurChild;
        };
        pidfd.reap_blocking().unwrap_or(ProcessExit::NotOurChild)
    }
}

impl Drop for Launching {
    fn drop(&mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            let _ = pidfd.send_signal(libc::SIGKILL);
            // A SIGKILLed process exits promptly; this wait is short.
            if let Err(e) = pidfd.reap_blocking() {
                tracing::warn!(pid = pidfd.pid(), "cannot reap a failed oxvmm: {e}");
            }
        }
    }
}

/// Holds the name (and UUID) while a start is in progress; gives them back and removes the
/// runtime files if dropped before [`Reservation::commit`].
struct Reservation<'a> {
    driver: &'a NativeDriver,
    name: String,
    id: u32,
    committed: bool,
}

impl<'a> Reservation<'a> {
    fn take(driver: &'a NativeDriver, spec: &StartSpec) -> Result<Self, NativeError> {
        let mut table = driver.table();
        if table.slots.contains_key(&spec.name) {
            return Err(NativeError::AlreadyActive {
                name: spec.name.clone(),
            });
        }
        for (other, slot) in &table.slots {
            let uuid = match slot {
                Slot::Starting { uuid } => *uuid,
                Slot::Running(vm) => vm.lock().record.uuid,
            };
            if uuid == spec.uuid {
                return Err(NativeError::UuidInUse {
                    uuid,
                    other: other.clone(),
                });
            }
        }
        table
            .slots
            .insert(spec.name.clone(), Slot::Starting { uuid: spec.uuid });
        let id = table.next_id;
        table.next_id = table.next_id.saturating_add(1);
        Ok(Reservation {
            driver,
            name: spec.name.clone(),
            id,
            committed: false,
        })
    }

    fn commit(mut self, vm: Arc<Vm>) {
        self.driver
            .table()
            .slots
            .insert(self.name.clone(), Slot::Running(vm));
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            remove_runtime_files(&self.driver.shared.paths, &self.name);
            self.driver.table().slots.remove(&self.name);
        }
    }
}

fn check_socket_path(path: PathBuf) -> Result<(), NativeError> {
    let len = path.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        return Err(NativeError::SocketPathTooLong {
            path,
            len,
            max: SOCKET_PATH_MAX,
        });
    }
    Ok(())
}

fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NativeError {
    let path = path.to_path_buf();
    move |source| NativeError::Io { what, path, source }
}

/// The log of one start: the file, and where this run's lines begin.
struct RunLog {
    path: PathBuf,
    file: File,
    offset: u64,
}

impl RunLog {
    /// Opens `<state>/log/<name>.log` for appending and writes a header naming the command.
    fn open(path: PathBuf, header: &str) -> Result<RunLog, NativeError> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error("cannot open the log", &path))?;
        let offset = file
            .metadata()
            .map_err(io_error("cannot read the size of", &path))?
            .len();
        writeln!(file, "{header}").map_err(io_error("cannot write to", &path))?;
        Ok(RunLog { path, file, offset })
    }

    fn tail(&self) -> String {
        tail_lines(&read_run_log(&self.path, self.offset), ERROR_LOG_LINES)
    }
}

impl NativeDriver {
    /// Starts a VM: writes its configuration, spawns oxvmm, waits until its API answers
    /// `vmm.ping`, records the runtime state, supervises the process and sends
    /// `Started(Booted)`.
    pub async fn start(&self, spec: StartSpec) -> Result<ActiveDomain, NativeError> {
        validate_name(&spec.name)?;
        let paths = &self.shared.paths;
        check_socket_path(paths.api_socket(&spec.name))?;
        check_socket_path(paths.console_socket(&spec.name))?;
        check_socket_path(paths.virtio_console_socket(&spec.name))?;
        let reservation = Reservation::take(self, &spec)?;
        let started_at_ms = unix_time_ms();
        let log = self.open_log(&spec, reservation.id)?;
        let launching = self.spawn_oxvmm(&spec, &log)?;
        // Recorded before the API answers: a daemon killed while oxvmm boots leaves a record
        // that the next daemon re-attaches (or cleans up), never a VM nobody knows about. A
        // failed start removes it with the other runtime files (the reservation's drop).
        let record = self.record_start(&spec, &reservation, &launching, &log, started_at_ms)?;
        let launching = self.wait_for_api(&spec.name, launching, &log).await?;
        let vm = Vm::new(
            launching.into_pidfd()?,
            record,
            self.shared.config.api_timeout,
        );
        reservation.commit(vm.clone());
        tokio::spawn(supervise(self.clone(), vm.clone()));
        let event = vm.event(EventKind::Started(StartedDetail::Booted));
        self.shared.events.emit(event);
        Ok(vm.snapshot())
    }

    /// Writes the runtime record of a VM whose oxvmm was just spawned.
    fn record_start(
        &self,
        spec: &StartSpec,
        reservation: &Reservation<'_>,
        launching: &Launching,
        log: &RunLog,
        started_at_ms: u64,
    ) -> Result<RuntimeRecord, NativeError> {
        let paths = &self.shared.paths;
        let pid = launching.pidfd()?.pid();
        let start_time = proc_stat(pid)
            .map_err(io_error("cannot read /proc for", &self.shared.config.oxvmm))?
            .start_time;
        let record = RuntimeRecord {
            version: RECORD_VERSION,
            name: spec.name.clone(),
            uuid: spec.uuid,
            id: reservation.id,
            pid,
            start_time,
            started_at_ms,
            api_socket: paths.api_socket(&spec.name),
            config: spec.config.clone(),
            persistent: spec.persistent,
            state: ActiveState::Running(RunningReason::Booted),
            xml: spec.xml.clone(),
            log_offset: log.offset,
        };
        record.save(paths)?;
        Ok(record)
    }

    fn open_log(&self, spec: &StartSpec, id: u32) -> Result<RunLog, NativeError> {
        let paths = &self.shared.paths;
        let header = format!(
            "--- oxvirtd: starting domain {} (uuid {}, id {id}) at Unix time {:.3}: {} --config {} \
             --api-socket {} --log-level {OXVMM_LOG_LEVEL}",
            spec.name,
            spec.uuid,
            unix_time_ms() as f64 / 1000.0,
            self.shared.config.oxvmm.display(),
            paths.vm_config_file(&spec.name).display(),
            paths.api_socket(&spec.name).display(),
        );
        RunLog::open(paths.log_file(&spec.name), &header)
    }

    fn spawn_oxvmm(&self, spec: &StartSpec, log: &RunLog) -> Result<Launching, NativeError> {
        let paths = &self.shared.paths;
        let config_file = paths.vm_config_file(&spec.name);
        let json = serde_json::to_vec_pretty(&spec.config).map_err(|e| {
            NativeError::Internal(format!("cannot encode the VM configuration: {e}"))
        })?;
        fsutil::replace_file(&config_file, &json, fsutil::Durability::DaemonCrash)
            .map_err(io_error("cannot write", &config_file))?;
        let stdout = match spec.config.serial {
            // COM1 goes to oxvmm's standard output: keep it in a file, not the daemon's.
            SerialConfig::Stdio => {
                let path = paths.serial_log_file(&spec.name);
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_error("cannot open the serial log", &path))?;
                Stdio::from(file)
            }
            _ => Stdio::null(),
        };
        let stderr = log
            .file
            .try_clone()
            .map_err(io_error("cannot share the log", &log.path))?;
        let oxvmm = &self.shared.config.oxvmm;
        let mut child = Command::new(oxvmm)
            .arg("--config")
            .arg(&config_file)
            .arg("--api-socket")
            .arg(paths.api_socket(&spec.name))
            .arg("--log-level")
            .arg(OXVMM_LOG_LEVEL)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a signal to the daemon's group (Ctrl-C in a terminal)
            // must not reach the VMs, which outlive the daemon.
            .process_group(0)
            .spawn()
            .map_err(|source| NativeError::Spawn {
                name: spec.name.clone(),
                oxvmm: oxvmm.clone(),
                source,
            })?;
        let pidfd = i32::try_from(child.id())
            .map_err(|_| std::io::Error::other(format!("pid {} out of range", child.id())))
            .and_then(PidFd::open);
        let pidfd = match pidfd {
            Ok(pidfd) => pidfd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_error("cannot open a pidfd for", oxvmm)(e));
            }
        };
        // The std handle is dropped without waiting: the pidfd watch reaps the child. Until
        // then it is at worst a zombie, so its pid could not be reused under the pidfd_open.
        drop(child);
        let pid = pidfd.pid();
        tracing::info!(domain = %spec.name, pid, "oxvmm started");
        Ok(Launching { pidfd: Some(pidfd) })
    }

    async fn wait_for_api(
        &self,
        name: &str,
        mut launching: Launching,
        log: &RunLog,
    ) -> Result<Launching, NativeError> {
        let socket = self.shared.paths.api_socket(name);
        let timeout = self.shared.config.start_timeout;
        let started = Instant::now();
        let mut pause = START_POLL_FIRST;
        loop {
            if launching.pidfd()?.has_exited().unwrap_or(false) {
                let exit = launching.reap_exited();
                return Err(NativeError::EarlyExit {
                    name: name.to_string(),
                    exit,
                    log: log.path.clone(),
                    log_tail: log.tail(),
                });
            }
            if socket.exists() && ping(&socket).await {
                return Ok(launching);
            }
            if started.elapsed() >= timeout {
                drop(launching);
                return Err(NativeError::StartTimeout {
                    name: name.to_string(),
                    socket,
                    waited: started.elapsed(),
                    log: log.path.clone(),
                    log_tail: log.tail(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(START_POLL_MAX);
        }
    }
}

async fn ping(socket: &Path) -> bool {
    let client = Client::new(socket).with_timeout(Some(PING_TIMEOUT));
    tokio::task::spawn_blocking(move || client.ping().is_ok())
        .await
        .unwrap_or(false)
}

impl std::fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessExit::Code(code) => write!(f, "exited with status {code}"),
            ProcessExit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            ProcessExit::NotOurChild => write!(f, "ended (exit status unknown)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_longer_than_the_kernel_allows_are_refused() {
        let long = PathBuf::from(format!("/{}", "x".repeat(SOCKET_PATH_MAX)));

        let err = check_socket_path(long).unwrap_err();

        assert!(err.to_string().contains("108 bytes long"), "{err}");
        assert!(check_socket_path(PathBuf::from("/run/oxvirt/domains/a.api.sock")).is_ok());
    }

    #[test]
    fn exits_read_well_in_messages() {
        assert_eq!(ProcessExit::Code(1).to_string(), "exited with status 1");
        assert_eq!(ProcessExit::Signal(9).to_string(), "was killed by signal 9");
    }

    #[test]
    fn executables_are_recognised() {
        let dir = crate::test_util::temp_dir("exec");
        let plain = dir.join("plain");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();

        assert!(is_executable(Path::new("/bin/sh")));
        assert!(!is_executable(&plain));
        assert!(!is_executable(&dir));
        assert!(!is_executable(Path::new("/nonexistent/oxvmm")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
