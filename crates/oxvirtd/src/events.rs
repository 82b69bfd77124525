//! Domain lifecycle events, numbered as libvirt's `virDomainEventType` and its
//! `virDomainEvent*DetailType` enums, so the RPC layer forwards
//! [`EventKind::event_code`]/[`EventKind::detail_code`] to clients
//! (`REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE`) as they are.

use tokio::sync::broadcast;

use crate::ident::Uuid;

/// How many events a slow subscriber may fall behind before it misses some.
pub const EVENT_BACKLOG: usize = 256;

/// Something happened to a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The domain's name.
    pub name: String,
    /// The domain's UUID.
    pub uuid: Uuid,
    /// Its id while running (`None` once stopped or when not running: libvirt sends -1).
    pub id: Option<u32>,
    /// What happened.
    pub kind: EventKind,
}

/// `virDomainEventType` with its detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// 0: a persistent definition appeared or changed.
    Defined(DefinedDetail),
    /// 1: a persistent definition was removed.
    Undefined(UndefinedDetail),
    /// 2: a domain started.
    Started(StartedDetail),
    /// 3: vCPUs stopped.
    Suspended(SuspendedDetail),
    /// 4: vCPUs run again.
    Resumed(ResumedDetail),
    /// 5: the process ended.
    Stopped(StoppedDetail),
    /// 6: the guest shut down (sent before `Stopped(Shutdown)`).
    Shutdown(ShutdownDetail),
    /// 8: the guest crashed (reported by a guest panic device).
    Crashed(CrashedDetail),
}

impl EventKind {
    /// libvirt's `virDomainEventType` number.
    pub fn event_code(&self) -> i32 {
        match self {
            EventKind::Defined(_) => 0,
            EventKind::Undefined(_) => 1,
            EventKind::Started(_) => 2,
            EventKind::Suspended(_) => 3,
            EventKind::Resumed(_) => 4,
            EventKind::Stopped(_) => 5,
            EventKind::Shutdown(_) => 6,
            EventKind::Crashed(_) => 8,
        }
    }

    /// The detail number within the event type's detail enum.
    pub fn detail_code(&self) -> i32 {
        match self {
            EventKind::Defined(d) => *d as i32,
            EventKind::Undefined(d) => *d as i32,
            EventKind::Started(d) => *d as i32,
            EventKind::Suspended(d) => *d as i32,
            EventKind::Resumed(d) => *d as i32,
            EventKind::Stopped(d) => *d as i32,
            EventKind::Shutdown(d) => *d as i32,
            EventKind::Crashed(d) => *d as i32,
        }
    }
}

/// `virDomainEventDefinedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum DefinedDetail {
    /// A new definition.
    Added = 0,
    /// An existing definition was replaced.
    Updated = 1,
    /// The domain was renamed.
    Renamed = 2,
}

/// `virDomainEventUndefinedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum UndefinedDetail {
    /// The definition was deleted.
    Removed = 0,
    /// The domain was renamed (the old name goes away).
    Renamed = 1,
}

/// `virDomainEventStartedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum StartedDetail {
    /// Normal start-up.
    Booted = 0,
    /// Incoming migration.
    Migrated = 1,
    /// Restored from a saved state file.
    Restored = 2,
    /// Restored from a snapshot.
    FromSnapshot = 3,
}

/// `virDomainEventSuspendedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum SuspendedDetail {
    /// A user request.
    Paused = 0,
    /// For offline migration.
    Migrated = 1,
    /// A disk I/O error.
    IoError = 2,
}

/// `virDomainEventResumedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ResumedDetail {
    /// A user request.
    Unpaused = 0,
    /// At the end of migration.
    Migrated = 1,
    /// From a snapshot.
    FromSnapshot = 2,
}

/// `virDomainEventStoppedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum StoppedDetail {
    /// The guest powered off.
    Shutdown = 0,
    /// A destroy request.
    Destroyed = 1,
    /// The guest crashed.
    Crashed = 2,
    /// Migrated away.
    Migrated = 3,
    /// Saved to a file.
    Saved = 4,
    /// The VMM failed (or ended for a reason nobody saw).
    Failed = 5,
    /// A snapshot revert.
    FromSnapshot = 6,
}

/// `virDomainEventShutdownDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ShutdownDetail {
    /// Shutdown finished (origin unknown).
    Finished = 0,
    /// The guest shut down on its own.
    Guest = 1,
    /// The guest shut down after a host request (virDomainShutdown).
    Host = 2,
}

/// `virDomainEventCrashedDetailType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum CrashedDetail {
    /// A guest panic device reported a panic.
    Panicked = 0,
}

/// Sends events to every subscriber; an event nobody listens to is dropped.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<LifecycleEvent>,
}

impl EventBus {
    /// A bus keeping up to [`EVENT_BACKLOG`] events for slow subscribers.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BACKLOG);
        EventBus { sender }
    }

    /// A receiver of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.sender.subscribe()
    }

    /// Sends `event` (and logs it).
    pub fn emit(&self, event: LifecycleEvent) {
        tracing::info!(domain = %event.name, kind = ?event.kind, "lifecycle event");
        // An error only means that nobody is subscribed.
        let _ = self.sender.send(event);
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_libvirt() {
        let cases = [
            (EventKind::Defined(DefinedDetail::Added), 0, 0),
            (EventKind::Undefined(UndefinedDetail::Removed), 1, 0),
            (EventKind::Started(StartedDetail::Booted), 2, 0),
            (EventKind::Suspended(SuspendedDetail::Paused), 3, 0),
            (EventKind::Resumed(ResumedDetail::Unpaused), 4, 0),
            (EventKind::Stopped(StoppedDetail::Destroyed), 5, 1),
            (EventKind::Stopped(StoppedDetail::Crashed), 5, 2),
            (EventKind::Stopped(StoppedDetail::Failed), 5, 5),
            (EventKind::Shutdown(ShutdownDetail::Host), 6, 2),
            (EventKind::Crashed(CrashedDetail::Panicked), 8, 0),
        ];
        for (kind, event, detail) in cases {
            assert_eq!(
                (kind.event_code(), kind.detail_code()),
                (event, detail),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn subscribers_receive_events_sent_after_they_subscribe() {
        let bus = EventBus::new();
        let event = LifecycleEvent {
            name: "vm".to_string(),
            uuid: Uuid([1; 16]),
            id: Some(1),
            kind: EventKind::Started(StartedDetail::Booted),
        };
        bus.emit(event.clone());
        let mut receiver = bus.subscribe();

        bus.emit(event.clone());

        assert_eq!(receiver.try_recv().unwrap(), event);
        assert!(receiver.try_recv().is_err());
    }
}
