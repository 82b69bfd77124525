//! Domain state with reason, numbered as libvirt's `virDomainState` and its
//! `virDomain{Running,Paused,Shutoff}Reason` enums (`include/libvirt/libvirt-domain.h`), so
//! the RPC layer sends [`DomainState::code`] and [`DomainState::reason_code`] as they are.

use serde::{Deserialize, Serialize};

/// What a domain is doing, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// vCPUs run (`VIR_DOMAIN_RUNNING` = 1).
    Running(RunningReason),
    /// vCPUs are stopped (`VIR_DOMAIN_PAUSED` = 3).
    Paused(PausedReason),
    /// No process (`VIR_DOMAIN_SHUTOFF` = 5).
    Shutoff(ShutoffReason),
}

impl DomainState {
    /// libvirt's `virDomainState` number.
    pub fn code(&self) -> i32 {
        match self {
            DomainState::Running(_) => 1,
            DomainState::Paused(_) => 3,
            DomainState::Shutoff(_) => 5,
        }
    }

    /// The reason number within the state's reason enum.
    pub fn reason_code(&self) -> i32 {
        match self {
            DomainState::Running(reason) => *reason as i32,
            DomainState::Paused(reason) => *reason as i32,
            DomainState::Shutoff(reason) => *reason as i32,
        }
    }

    /// Whether a process exists (running or paused).
    pub fn is_active(&self) -> bool {
        !matches!(self, DomainState::Shutoff(_))
    }

    /// virsh's word for the state (`running`, `paused`, `shut off`).
    pub fn name(&self) -> &'static str {
        match self {
            DomainState::Running(_) => "running",
            DomainState::Paused(_) => "paused",
            DomainState::Shutoff(_) => "shut off",
        }
    }
}

/// `virDomainRunningReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(i32)]
pub enum RunningReason {
    /// Unknown, e.g. found running by a restarted daemon in a state it did not record.
    Unknown = 0,
    /// Normal start-up.
    Booted = 1,
    /// Migrated from another host.
    Migrated = 2,
    /// Restored from a saved state file.
    Restored = 3,
    /// Restored from a snapshot.
    FromSnapshot = 4,
    /// Resumed after a pause.
    Unpaused = 5,
}

/// `virDomainPausedReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(i32)]
pub enum PausedReason {
    /// Unknown (paused behind the daemon's back).
    Unknown = 0,
    /// Paused by a user request.
    User = 1,
    /// Paused for offline migration.
    Migration = 2,
    /// Paused for a save.
    Save = 3,
    /// Paused after restoring from a snapshot.
    FromSnapshot = 7,
}

/// `virDomainShutoffReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ShutoffReason {
    /// Never started, or stopped for a reason nobody recorded.
    Unknown = 0,
    /// The guest powered off.
    Shutdown = 1,
    /// Stopped by a destroy request.
    Destroyed = 2,
    /// The guest or the VMM crashed.
    Crashed = 3,
    /// Migrated to another host.
    Migrated = 4,
    /// Saved to a file.
    Saved = 5,
    /// Failed to start.
    Failed = 6,
    /// Stopped after a snapshot revert.
    FromSnapshot = 7,
    /// Stopped by the daemon itself while re-attaching.
    Daemon = 8,
}

/// The state of an active domain, as kept in its runtime record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveState {
    /// vCPUs run.
    Running(RunningReason),
    /// vCPUs are stopped.
    Paused(PausedReason),
}

impl From<ActiveState> for DomainState {
    fn from(state: ActiveState) -> Self {
        match state {
            ActiveState::Running(reason) => DomainState::Running(reason),
            ActiveState::Paused(reason) => DomainState::Paused(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_libvirt() {
        let cases = [
            (DomainState::Running(RunningReason::Booted), 1, 1),
            (DomainState::Running(RunningReason::Unpaused), 1, 5),
            (DomainState::Paused(PausedReason::User), 3, 1),
            (DomainState::Shutoff(ShutoffReason::Shutdown), 5, 1),
            (DomainState::Shutoff(ShutoffReason::Destroyed), 5, 2),
            (DomainState::Shutoff(ShutoffReason::Crashed), 5, 3),
            (DomainState::Shutoff(ShutoffReason::Daemon), 5, 8),
        ];
        for (state, code, reason) in cases {
            assert_eq!(
                (state.code(), state.reason_code()),
                (code, reason),
                "{state:?}"
            );
        }
    }

    #[test]
    fn only_shut_off_domains_are_inactive() {
        assert!(DomainState::Paused(PausedReason::User).is_active());
        assert!(!DomainState::Shutoff(ShutoffReason::Unknown).is_active());
        assert_eq!(
            DomainState::Shutoff(ShutoffReason::Unknown).name(),
            "shut off"
        );
    }
}
