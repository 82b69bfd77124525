//! Re-attaching to the VMs a previous daemon started.
//!
//! For each runtime record: open a pidfd for its pid, then check that the process behind it
//! has the recorded start time (a pidfd opened first and checked second cannot be fooled by a
//! pid reused in between). A live match is supervised again through the pidfd (it is not our
//! child any more, so `waitid` is not possible until it is); anything else ended while the
//! daemon was down: its runtime files are removed and it is reported shut off, with the
//! reason its log gives.

use std::path::PathBuf;
use vmm_api::{Client, VmState};

use super::exit::{Intent, conclude, supervise};
use super::{ActiveDomain, NativeDriver, NativeError, Slot, Vm};
use crate::ident::Uuid;
use crate::process::{PidFd, ProcessExit, proc_stat};
use crate::runtime::RuntimeRecord;
use crate::state::{ActiveState, PausedReason, RunningReason, ShutoffReason};

/// What [`NativeDriver::recover`] found.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// VMs found running and supervised again (they keep their ids).
    pub reattached: Vec<ActiveDomain>,
    /// VMs that ended while the daemon was down: name, UUID and the reason found.
    pub stopped: Vec<(String, Uuid, ShutoffReason)>,
    /// Runtime records that could not be read (left in place for inspection).
    pub unreadable: Vec<(PathBuf, String)>,
    /// oxvmm processes of starts a daemon died in before recording them (name, pid): killed.
    pub killed_unrecorded: Vec<(String, i32)>,
}

/// Whether the recorded process still runs.
enum Probe {
    Alive(PidFd),
    Ended(ProcessExit),
}

fn probe(record: &RuntimeRecord) -> Probe {
    let Ok(pidfd) = PidFd::open(record.pid) else {
        return Probe::Ended(ProcessExit::NotOurChild);
    };
    match proc_stat(record.pid) {
        Ok(stat) if stat.start_time == record.start_time => {}
        // Another process has this pid now.
        _ => return Probe::Ended(ProcessExit::NotOurChild),
    }
    if pidfd.has_exited().unwrap_or(true) {
        // A zombie: reap it if it happens to be our child (a daemon that is a subreaper).
        let exit = pidfd.try_reap().ok().flatten();
        return Probe::Ended(exit.unwrap_or(ProcessExit::NotOurChild));
    }
    Probe::Alive(pidfd)
}

impl NativeDriver {
    /// Re-attaches to every VM in the runtime directory. Call once, at daemon start, before
    /// any start: ids continue after the highest re-attached one.
    pub async fn recover(&self) -> Result<RecoveryReport, NativeError> {
        let paths = &self.shared.paths;
        let files = RuntimeRecord::list_files(paths).map_err(|source| NativeError::Io {
            what: "cannot list",
            path: paths.runtime_domains_dir(),
            source,
        })?;
        let mut report = RecoveryReport::default();
        for file in files {
            let record = match RuntimeRecord::load(&file) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!("{e}; not re-attached");
                    report.unreadable.push((file, e.to_string()));
                    continue;
                }
            };
            if self.is_active_or_starting(&record.name) {
                continue;
            }
            match probe(&record) {
                Probe::Alive(pidfd) => {
                    let active = self.reattach(pidfd, record).await;
                    report.reattached.push(active);
                }
                Probe::Ended(exit) => {
                    let reason = conclude(self, &record, Intent::default(), exit, None);
                    report.stopped.push((record.name, record.uuid, reason));
                }
            }
        }
        report.killed_unrecorded = self.kill_unrecorded_starts();
        Ok(report)
    }

    /// A daemon killed between spawning oxvmm and writing its runtime record leaves a VM that
    /// no record names: only its configuration file `<name>.vm.json` (written before the
    /// spawn) is there. Such a start never succeeded, so its process, found by the
    /// configuration path on its command line, is killed and the files are removed: nothing
    /// stays half-started.
    fn kill_unrecorded_starts(&self) -> Vec<(String, i32)> {
        let paths = &self.shared.paths;
        let Ok(entries) = std::fs::read_dir(paths.runtime_domains_dir()) else {
            return Vec::new();
        };
        let names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                file.strip_suffix(".vm.json").map(str::to_string)
            })
            .filter(|name| !crate::fsutil::is_temp_file_name(name))
            .filter(|name| !paths.runtime_record(name).exists())
            .filter(|name| !self.is_active_or_starting(name))
            .collect();
        let mut killed = Vec::new();
        for name in names {
            let config = paths.vm_config_file(&name);
            for pid in processes_with_argument(config.as_os_str().as_encoded_bytes()) {
                match PidFd::open(pid).and_then(|fd| fd.send_signal(libc::SIGKILL)) {
                    Ok(()) => {
                        tracing::warn!(domain = %name, pid, "killed an oxvmm whose start was never recorded");
                        killed.push((name.clone(), pid));
                    }
                    Err(e) => {
                        tracing::warn!(domain = %name, pid, "cannot kill an unrecorded oxvmm: {e}")
                    }
                }
            }
            crate::runtime::remove_runtime_files(paths, &name);
        }
        killed
    }

    async fn reattach(&self, pidfd: PidFd, mut record: RuntimeRecord) -> ActiveDomain {
        let client = Client::new(record.api_socket.clone())
            .with_timeout(Some(self.shared.config.api_timeout));
        let info = tokio::task::spawn_blocking(move || client.info()).await;
        match info {
            Ok(Ok(info)) => record.state = reconcile(record.state, info.state),
            Ok(Err(e)) => {
                tracing::warn!(domain = %record.name, "re-attached, but its API does not answer: {e}")
            }
            Err(e) => tracing::warn!(domain = %record.name, "re-attached; API check failed: {e}"),
        }
        let vm = Vm::new(pidfd, record, self.shared.config.api_timeout);
        {
            let mut table = self.table();
            let (name, id) = {
                let mutable = vm.lock();
                (mutable.record.name.clone(), mutable.record.id)
            };
            table.next_id = table.next_id.max(id.saturating_add(1));
            table.slots.insert(name, Slot::Running(vm.clone()));
        }
        tracing::info!(domain = %vm.lock().record.name, "re-attached");
        tokio::spawn(supervise(self.clone(), vm.clone()));
        vm.snapshot()
    }
}

/// The recorded state, unless oxvmm says otherwise (then the reason is unknown).
fn reconcile(recorded: ActiveState, reported: VmState) -> ActiveState {
    match (recorded, reported) {
        (ActiveState::Running(_), VmState::Running) | (ActiveState::Paused(_), VmState::Paused) => {
            recorded
        }
        (_, VmState::Running) => ActiveState::Running(RunningReason::Unknown),
        (_, VmState::Paused) => ActiveState::Paused(PausedReason::Unknown),
    }
}

/// Pids of the processes one of whose command-line arguments is exactly `argument`.
fn processes_with_argument(argument: &[u8]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == argument))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_an_exact_argument() {
        let marker = format!("/tmp/oxvirtd-marker-{}.vm.json", std::process::id());
        // A process that keeps its arguments and forks nothing (a shell's forked children
        // would show its command line for a moment).
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import time; time.sleep(30)", &marker])
            .spawn()
            .unwrap();

        // The child shows its command line once it has exec'd.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = processes_with_argument(marker.as_bytes());
        while found.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = processes_with_argument(marker.as_bytes());
        }
        let prefix = processes_with_argument(&marker.as_bytes()[..marker.len() - 1]);
        child.kill().unwrap();
        child.wait().unwrap();

        assert_eq!(found, vec![child.id() as i32]);
        assert!(prefix.is_empty(), "{prefix:?}");
    }
}
