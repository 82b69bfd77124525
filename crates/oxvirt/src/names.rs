//! The words virsh prints for libvirt's enums: domain states and their reasons, vCPU states,
//! lifecycle events and their details (`virsh-domain-monitor.c`, `virsh-domain-event.c`).

/// `virDomainState` numbers.
pub mod state {
    /// `VIR_DOMAIN_NOSTATE`
    pub const NOSTATE: i32 = 0;
    /// `VIR_DOMAIN_RUNNING`
    pub const RUNNING: i32 = 1;
    /// `VIR_DOMAIN_BLOCKED`
    pub const BLOCKED: i32 = 2;
    /// `VIR_DOMAIN_PAUSED`
    pub const PAUSED: i32 = 3;
    /// `VIR_DOMAIN_SHUTDOWN`
    pub const SHUTDOWN: i32 = 4;
    /// `VIR_DOMAIN_SHUTOFF`
    pub const SHUTOFF: i32 = 5;
    /// `VIR_DOMAIN_CRASHED`
    pub const CRASHED: i32 = 6;
    /// `VIR_DOMAIN_PMSUSPENDED`
    pub const PMSUSPENDED: i32 = 7;
}

const STATES: &[&str] = &[
    "no state",
    "running",
    "idle",
    "paused",
    "in shutdown",
    "shut off",
    "crashed",
    "pmsuspended",
];

const RUNNING_REASONS: &[&str] = &[
    "unknown",
    "booted",
    "migrated",
    "restored",
    "from snapshot",
    "unpaused",
    "migration canceled",
    "save canceled",
    "event wakeup",
    "crashed",
    "post-copy",
    "post-copy failed",
];

const PAUSED_REASONS: &[&str] = &[
    "unknown",
    "user",
    "migrating",
    "saving",
    "dumping",
    "I/O error",
    "watchdog",
    "from snapshot",
    "shutting down",
    "creating snapshot",
    "crashed",
    "starting up",
    "post-copy",
    "post-copy failed",
    "api error",
];

const SHUTDOWN_REASONS: &[&str] = &["unknown", "user"];

const SHUTOFF_REASONS: &[&str] = &[
    "unknown",
    "shutdown",
    "destroyed",
    "crashed",
    "migrated",
    "saved",
    "failed",
    "from snapshot",
    "daemon",
];

const CRASHED_REASONS: &[&str] = &["unknown", "panicked"];

const ONLY_UNKNOWN: &[&str] = &["unknown"];

fn lookup(table: &[&'static str], index: i32) -> Option<&'static str> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i).copied())
}

/// `virshDomainStateToString`: an unknown state prints as "no state".
pub fn domain_state(state: i32) -> &'static str {
    lookup(STATES, state).unwrap_or("no state")
}

/// `virshDomainStateReasonToString`: an unknown reason prints as "unknown".
pub fn state_reason(state: i32, reason: i32) -> &'static str {
    let table = match state {
        state::RUNNING => RUNNING_REASONS,
        state::PAUSED => PAUSED_REASONS,
        state::SHUTDOWN => SHUTDOWN_REASONS,
        state::SHUTOFF => SHUTOFF_REASONS,
        state::CRASHED => CRASHED_REASONS,
        state::NOSTATE | state::BLOCKED | state::PMSUSPENDED => ONLY_UNKNOWN,
        _ => &[],
    };
    lookup(table, reason).unwrap_or("unknown")
}

/// `virshDomainVcpuStateToString` (`virVcpuState`).
pub fn vcpu_state(state: i32) -> &'static str {
    match state {
        0 => "offline",
        1 => "running",
        2 => "blocked",
        _ => "no state",
    }
}

const EVENTS: &[&str] = &[
    "Defined",
    "Undefined",
    "Started",
    "Suspended",
    "Resumed",
    "Stopped",
    "Shutdown",
    "PMSuspended",
    "Crashed",
];

const EVENT_DETAILS: &[&[&str]] = &[
    &["Added", "Updated", "Renamed", "Snapshot"],
    &["Removed", "Renamed"],
    &["Booted", "Migrated", "Restored", "Snapshot", "Event wakeup"],
    &[
        "Paused",
        "Migrated",
        "I/O Error",
        "Watchdog",
        "Restored",
        "Snapshot",
        "API error",
        "Post-copy",
        "Post-copy Error",
    ],
    &[
        "Unpaused",
        "Migrated",
        "Snapshot",
        "Post-copy",
        "Post-copy Error",
    ],
    &[
        "Shutdown",
        "Destroyed",
        "Crashed",
        "Migrated",
        "Saved",
        "Failed",
        "Snapshot",
    ],
    &[
        "Finished",
        "Finished after guest request",
        "Finished after host request",
    ],
    &["Memory", "Disk"],
    &["Panicked", "Crashloaded"],
];

/// `virshDomainEventToString` (`virDomainEventType`).
pub fn lifecycle_event(event: i32) -> &'static str {
    lookup(EVENTS, event).unwrap_or("unknown")
}

/// `virshDomainEventDetailToString`.
pub fn lifecycle_detail(event: i32, detail: i32) -> &'static str {
    usize::try_from(event)
        .ok()
        .and_then(|e| EVENT_DETAILS.get(e))
        .and_then(|details| lookup(details, detail))
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_reasons_read_as_virsh_prints_them() {
        // Assert: pairs virsh printed for the test driver.
        assert_eq!(domain_state(state::SHUTOFF), "shut off");
        assert_eq!(domain_state(42), "no state");
        assert_eq!(state_reason(state::RUNNING, 0), "unknown");
        assert_eq!(state_reason(state::RUNNING, 1), "booted");
        assert_eq!(state_reason(state::PAUSED, 1), "user");
        assert_eq!(state_reason(state::SHUTOFF, 2), "destroyed");
        assert_eq!(state_reason(state::SHUTOFF, 99), "unknown");
        assert_eq!(state_reason(-1, 0), "unknown");
    }

    #[test]
    fn events_and_details_read_as_virsh_prints_them() {
        // Assert
        assert_eq!(lifecycle_event(5), "Stopped");
        assert_eq!(lifecycle_detail(5, 1), "Destroyed");
        assert_eq!(lifecycle_detail(2, 0), "Booted");
        assert_eq!(lifecycle_detail(6, 1), "Finished after guest request");
        assert_eq!(lifecycle_event(9), "unknown");
        assert_eq!(lifecycle_detail(9, 0), "unknown");
        assert_eq!(lifecycle_detail(0, -1), "unknown");
    }

    #[test]
    fn vcpu_states() {
        assert_eq!(vcpu_state(1), "running");
        assert_eq!(vcpu_state(7), "no state");
    }
}
