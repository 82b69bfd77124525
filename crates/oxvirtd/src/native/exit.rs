//! Noticing that oxvmm ended, reaping it, deciding why, and telling everyone.
//!
//! Why a VM stopped, from the most to the least certain source:
//! 1. the daemon asked for it (destroy) → `Destroyed`;
//! 2. oxvmm's exit status, when the daemon is its parent: 0 = the guest powered off (or reset
//!    with `on_reboot: exit`) → `Shutdown`; 2 = the guest crashed → `Crashed`; anything else,
//!    or a signal → `Crashed` with event detail `Failed` (libvirt's choice for a VMM that died);
//! 3. for a VM re-attached after a daemon restart (no exit status): what oxvmm logged in this
//!    run (`oxvmm: the guest crashed`, `guest powered off`, `guest reset; exiting`, or an
//!    `oxvmm: ` error line); nothing → `Unknown`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{NativeDriver, Slot, Vm};
use crate::events::{EventKind, LifecycleEvent, ShutdownDetail, StoppedDetail};
use crate::process::{PidFd, ProcessExit};
use crate::runtime::{RuntimeRecord, remove_runtime_files};
use crate::state::ShutoffReason;

/// oxvmm's exit status when the guest crashed (`oxvmm --help`).
const EXIT_CRASH: i32 = 2;
/// How much of the end of a run's log is read to find how it ended.
const LOG_READ_MAX: u64 = 64 * 1024;
/// How often the fallback watch polls when the pidfd cannot join the reactor.
const FALLBACK_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// What the daemon had asked of the VM before it ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Intent {
    pub(crate) destroy: bool,
    pub(crate) shutdown: bool,
}

/// Why a VM stopped, as state reason and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) reason: ShutoffReason,
    pub(crate) stopped: StoppedDetail,
    /// Sent before `Stopped` when the guest shut down.
    pub(crate) shutdown: Option<ShutdownDetail>,
}

impl Outcome {
    fn shutdown(intent: Intent) -> Outcome {
        let detail = if intent.shutdown {
            ShutdownDetail::Host
        } else {
            ShutdownDetail::Guest
        };
        Outcome {
            reason: ShutoffReason::Shutdown,
            stopped: StoppedDetail::Shutdown,
            shutdown: Some(detail),
        }
    }

    fn crashed(stopped: StoppedDetail) -> Outcome {
        Outcome {
            reason: ShutoffReason::Crashed,
            stopped,
            shutdown: None,
        }
    }
}

/// Decides why a VM stopped from how its process ended, what was asked, and its log.
pub(crate) fn classify(exit: ProcessExit, intent: Intent, run_log: &str) -> Outcome {
    if intent.destroy {
        return Outcome {
            reason: ShutoffReason::Destroyed,
            stopped: StoppedDetail::Destroyed,
            shutdown: None,
        };
    }
    match exit {
        ProcessExit::Code(0) => Outcome::shutdown(intent),
        ProcessExit::Code(EXIT_CRASH) => Outcome::crashed(StoppedDetail::Crashed),
        ProcessExit::Code(_) | ProcessExit::Signal(_) => Outcome::crashed(StoppedDetail::Failed),
        ProcessExit::NotOurChild => classify_from_log(intent, run_log),
    }
}

fn classify_from_log(intent: Intent, run_log: &str) -> Outcome {
    let lines = || run_log.lines();
    if lines().any(|l| l.contains("oxvmm: the guest crashed")) {
        Outcome::crashed(StoppedDetail::Crashed)
    } else if lines().any(|l| l.contains("guest powered off") || l.contains("guest reset; exiting"))
    {
        Outcome::shutdown(intent)
    } else if lines().any(|l| l.starts_with("oxvmm: ")) {
        Outcome::crashed(StoppedDetail::Failed)
    } else {
        Outcome {
            reason: ShutoffReason::Unknown,
            stopped: StoppedDetail::Failed,
            shutdown: None,
        }
    }
}

/// This run's part of a log: from `offset` (at most the last [`LOG_READ_MAX`] bytes).
pub(crate) fn read_run_log(path: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let start = offset.max(len.saturating_sub(LOG_READ_MAX)).min(len);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// The last `count` lines of `text`.
pub(crate) fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Waits until the process behind `pidfd` exits, then reaps it if it is our child.
async fn wait_for_exit(pidfd: &Arc<PidFd>) -> ProcessExit {
    // SAFETY: the AsyncFd owns a clone of the Arc, which keeps the PidFd (and its OwnedFd)
    // alive and open until the AsyncFd is dropped; PidFd::as_raw_fd always returns that one
    // descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(pidfd.clone(), Interest::READABLE) };
    match registered {
        Ok(watch) => {
            if let Err(e) = watch.readable().await {
                tracing::warn!(pid = pidfd.pid(), "pidfd watch failed ({e}); polling");
                poll_until_exited(pidfd).await;
            }
        }
        Err(e) => {
            tracing::warn!(pid = pidfd.pid(), "cannot watch the pidfd ({e}); polling");
            poll_until_exited(pidfd).await;
        }
    }
    match pidfd.try_reap() {
        Ok(Some(exit)) => exit,
        // Readable but not reapable: it exited and is someone else's child.
        Ok(None) => ProcessExit::NotOurChild,
        Err(e) => {
            tracing::warn!(pid = pidfd.pid(), "cannot reap: {e}");
            ProcessExit::NotOurChild
        }
    }
}

async fn poll_until_exited(pidfd: &PidFd) {
    while !pidfd.has_exited().unwrap_or(true) {
        tokio::time::sleep(FALLBACK_POLL).await;
    }
}

/// Supervises one VM until its process is gone: reaps it, removes its runtime files, records
/// why it stopped and sends the events.
pub(crate) async fn supervise(driver: NativeDriver, vm: Arc<Vm>) {
    let exit = wait_for_exit(&vm.pidfd).await;
    finish(&driver, &vm, exit);
}

/// Everything that follows the end of a supervised VM's process.
fn finish(driver: &NativeDriver, vm: &Arc<Vm>, exit: ProcessExit) {
    let (record, intent) = {
        let mutable = vm.lock();
        let intent = Intent {
            destroy: mutable.destroy_requested,
            shutdown: mutable.shutdown_requested,
        };
        (mutable.record.clone(), intent)
    };
    let reason = conclude(driver, &record, intent, exit, Some(vm));
    vm.stopped.send_replace(Some(reason));
}

/// Decides why the VM of `record` stopped, removes its runtime files, frees its slot (if it
/// is still `vm`'s), records the reason and sends the events. Also used by recovery for VMs
/// that ended while the daemon was down (`vm` is then `None`).
pub(crate) fn conclude(
    driver: &NativeDriver,
    record: &RuntimeRecord,
    intent: Intent,
    exit: ProcessExit,
    vm: Option<&Arc<Vm>>,
) -> ShutoffReason {
    let paths = &driver.shared.paths;
    let run_log = read_run_log(&paths.log_file(&record.name), record.log_offset);
    let outcome = classify(exit, intent, &run_log);
    tracing::info!(domain = %record.name, pid = record.pid, %exit, reason = ?outcome.reason, "VM stopped");
    // Files first, slot second: once the slot is free a new start may create new files.
    remove_runtime_files(paths, &record.name);
    {
        let mut table = driver.table();
        let ours = match (table.slots.get(&record.name), vm) {
            (Some(Slot::Running(running)), Some(vm)) => Arc::ptr_eq(running, vm),
            _ => false,
        };
        if ours {
            table.slots.remove(&record.name);
        }
        if record.persistent {
            table
                .last_shutoff
                .insert(record.name.clone(), outcome.reason);
        } else {
            table.last_shutoff.remove(&record.name);
        }
    }
    let event = |kind, id| LifecycleEvent {
        name: record.name.clone(),
        uuid: record.uuid,
        id,
        kind,
    };
    if let Some(detail) = outcome.shutdown {
        driver
            .shared
            .events
            .emit(event(EventKind::Shutdown(detail), Some(record.id)));
    }
    driver
        .shared
        .events
        .emit(event(EventKind::Stopped(outcome.stopped), None));
    outcome.reason
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASKED_NOTHING: Intent = Intent {
        destroy: false,
        shutdown: false,
    };

    #[test]
    fn destroy_wins_over_the_exit_status() {
        let intent = Intent {
            destroy: true,
            shutdown: true,
        };

        for exit in [
            ProcessExit::Code(0),
            ProcessExit::Signal(9),
            ProcessExit::NotOurChild,
        ] {
            let outcome = classify(exit, intent, "");
            assert_eq!(outcome.reason, ShutoffReason::Destroyed, "{exit:?}");
            assert_eq!(outcome.stopped, StoppedDetail::Destroyed);
        }
    }

    #[test]
    fn exit_statuses_of_our_children_decide() {
        let shutdown = classify(ProcessExit::Code(0), ASKED_NOTHING, "");
        assert_eq!(shutdown.reason, ShutoffReason::Shutdown);
        assert_eq!(shutdown.shutdown, Some(ShutdownDetail::Guest));

        let asked = Intent {
            shutdown: true,
            ..ASKED_NOTHING
        };
        assert_eq!(
            classify(ProcessExit::Code(0), asked, "").shutdown,
            Some(ShutdownDetail::Host)
        );

        let crashed = classify(ProcessExit::Code(2), ASKED_NOTHING, "");
        assert_eq!(
            (crashed.reason, crashed.stopped),
            (ShutoffReason::Crashed, StoppedDetail::Crashed)
        );

        for exit in [ProcessExit::Code(1), ProcessExit::Signal(11)] {
            let failed = classify(exit, ASKED_NOTHING, "guest powered off");
            assert_eq!(
                (failed.reason, failed.stopped),
                (ShutoffReason::Crashed, StoppedDetail::Failed)
            );
        }
    }

    #[test]
    fn the_log_decides_for_processes_that_are_not_our_children() {
        let cases = [
            (
                "  INFO guest powered off\n",
                ShutoffReason::Shutdown,
                StoppedDetail::Shutdown,
            ),
            (
                "  INFO guest reset; exiting\n",
                ShutoffReason::Shutdown,
                StoppedDetail::Shutdown,
            ),
            (
                "oxvmm: the guest crashed: emulation failure\n",
                ShutoffReason::Crashed,
                StoppedDetail::Crashed,
            ),
            (
                "oxvmm: cannot read the kernel\n",
                ShutoffReason::Crashed,
                StoppedDetail::Failed,
            ),
            (
                "--- oxvirtd: starting domain vm\n",
                ShutoffReason::Unknown,
                StoppedDetail::Failed,
            ),
        ];
        for (log, reason, stopped) in cases {
            let outcome = classify(ProcessExit::NotOurChild, ASKED_NOTHING, log);
            assert_eq!(
                (outcome.reason, outcome.stopped),
                (reason, stopped),
                "{log}"
            );
        }
    }

    #[test]
    fn run_logs_start_at_the_offset_and_tails_keep_the_last_lines() {
        let dir = crate::test_util::temp_dir("runlog");
        let path = dir.join("vm.log");
        std::fs::write(&path, "old run\nnew 1\nnew 2\nnew 3\n").unwrap();

        let run = read_run_log(&path, "old run\n".len() as u64);

        assert_eq!(run, "new 1\nnew 2\nnew 3\n");
        assert_eq!(tail_lines(&run, 2), "new 2\nnew 3");
        assert_eq!(tail_lines(&run, 10), "new 1\nnew 2\nnew 3");
        assert!(read_run_log(&dir.join("absent.log"), 0).contains("cannot read"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
