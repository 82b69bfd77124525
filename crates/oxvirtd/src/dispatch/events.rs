//! Domain event registrations (`virsh event`, python's `domainEventRegisterAny`) and the task
//! that forwards the registry's lifecycle events to them.
//!
//! A client registers with `CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY` (event id, optional
//! domain) and gets a callback id; each matching event is sent to it as a
//! `DOMAIN_EVENT_CALLBACK_LIFECYCLE` message carrying that id. Older clients use
//! `CONNECT_DOMAIN_EVENT_REGISTER_ANY` and get `DOMAIN_EVENT_LIFECYCLE` messages. Only
//! lifecycle events are produced; registrations for other event ids are accepted (libvirt's
//! drivers accept them too) and simply never fire. A connection's registrations end with it.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use oxvirtd::{LifecycleEvent, Uuid};
use rpc::RemoteError;
use rpc::procedures::{
    ConnectDomainEventCallbackRegisterAnyRet, DOMAIN_EVENT_ID_LIFECYCLE,
    DomainEventCallbackLifecycleMsg, DomainEventLifecycleMsg, NonnullDomain, event,
};
use rpc::server::{Connection, ConnectionClosed};
use tokio::sync::broadcast;

/// `VIR_DOMAIN_EVENT_ID_LAST` of libvirt 9.0: event ids are below it.
const EVENT_ID_LAST: i32 = 26;
/// Most registrations one connection may hold: each costs the daemon memory and a check per
/// event, and a client registering in a loop must not grow them without end.
pub const MAX_REGISTRATIONS_PER_CONNECTION: usize = 1024;

#[derive(Clone)]
struct Registration {
    conn: Connection,
    /// `None` for a legacy (pre-callback-id) registration.
    callback_id: Option<i32>,
    event_id: i32,
    /// Only events of this domain.
    domain: Option<Uuid>,
}

/// Every event registration of every connection.
#[derive(Default)]
pub struct EventHub {
    registrations: Mutex<Vec<Registration>>,
    next_callback: AtomicI32,
}

fn check_event_id(event_id: i32) -> Result<(), RemoteError> {
    if !(0..EVENT_ID_LAST).contains(&event_id) {
        return Err(RemoteError::invalid_arg(format!(
            "unsupported event ID {event_id}"
        )));
    }
    Ok(())
}

fn check_room(registrations: &[Registration], conn: &Connection) -> Result<(), RemoteError> {
    let held = registrations
        .iter()
        .filter(|r| r.conn.id() == conn.id())
        .count();
    if held >= MAX_REGISTRATIONS_PER_CONNECTION {
        return Err(RemoteError::operation_failed(format!(
            "this connection already holds {held} event registrations, the most allowed \
             ({MAX_REGISTRATIONS_PER_CONNECTION}): deregister some first"
        )));
    }
    Ok(())
}

impl EventHub {
    fn lock(&self) -> MutexGuard<'_, Vec<Registration>> {
        self.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `conn` for `event_id` events (of `domain` only, when given).
    pub fn register(
        &self,
        conn: &Connection,
        event_id: i32,
        domain: Option<Uuid>,
    ) -> Result<ConnectDomainEventCallbackRegisterAnyRet, RemoteError> {
        check_event_id(event_id)?;
        // A client can register without end; the counter wraps (as libvirt's int does) rather
        // than overflow.
        let mut registrations = self.lock();
        check_room(&registrations, conn)?;
        let callback_id = self
            .next_callback
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        registrations.push(Registration {
            conn: conn.clone(),
            callback_id: Some(callback_id),
            event_id,
            domain,
        });
        Ok(ConnectDomainEventCallbackRegisterAnyRet { callback_id })
    }

    /// Ends registration `callback_id` of `conn`.
    pub fn deregister(&self, conn: &Connection, callback_id: i32) -> Result<(), RemoteError> {
        let mut registrations = self.lock();
        let before = registrations.len();
        registrations.retain(|r| !(r.conn.id() == conn.id() && r.callback_id == Some(callback_id)));
        if registrations.len() == before {
            return Err(RemoteError::invalid_arg(format!(
                "callback {callback_id} not registered"
            )));
        }
        Ok(())
    }

    /// The pre-callback-id registration: one per connection and event id.
    pub fn register_legacy(&self, conn: &Connection, event_id: i32) -> Result<(), RemoteError> {
        check_event_id(event_id)?;
        let mut registrations = self.lock();
        let exists = registrations
            .iter()
            .any(|r| r.conn.id() == conn.id() && r.callback_id.is_none() && r.event_id == event_id);
        if exists {
            return Err(RemoteError::operation_failed(format!(
                "domain event {event_id} already registered"
            )));
        }
        check_room(&registrations, conn)?;
        registrations.push(Registration {
            conn: conn.clone(),
            callback_id: None,
            event_id,
            domain: None,
        });
        Ok(())
    }

    /// Ends the legacy registration of `conn` for `event_id`.
    pub fn deregister_legacy(&self, conn: &Connection, event_id: i32) -> Result<(), RemoteError> {
        let mut registrations = self.lock();
        let before = registrations.len();
        registrations.retain(|r| {
            !(r.conn.id() == conn.id() && r.callback_id.is_none() && r.event_id == event_id)
        });
        if registrations.len() == before {
            return Err(RemoteError::operation_failed(format!(
                "domain event {event_id} not registered"
            )));
        }
        Ok(())
    }

    /// Drops every registration of a closed connection.
    pub fn drop_connection(&self, conn: &Connection) {
        self.lock().retain(|r| r.conn.id() != conn.id());
    }

    /// Sends `event` to every matching registration. A client that does not read its socket
    /// loses events rather than holding up everyone else's.
    pub fn deliver(&self, event: &LifecycleEvent) {
        let targets: Vec<Registration> = self
            .lock()
            .iter()
            .filter(|r| r.event_id == DOMAIN_EVENT_ID_LIFECYCLE)
            .filter(|r| r.domain.is_none_or(|uuid| uuid == event.uuid))
            .cloned()
            .collect();
        let msg = DomainEventLifecycleMsg {
            dom: NonnullDomain {
                name: event.name.clone(),
                uuid: event.uuid.0,
                id: event.id.and_then(|id| i32::try_from(id).ok()).unwrap_or(-1),
            },
            event: event.kind.event_code(),
            detail: event.kind.detail_code(),
        };
        for target in targets {
            let sent = match target.callback_id {
                Some(callback_id) => target
                    .conn
                    .try_send_event::<event::DomainEventCallbackLifecycle>(
                        &DomainEventCallbackLifecycleMsg {
                            callback_id,
                            msg: msg.clone(),
                        },
                    ),
                None => target
                    .conn
                    .try_send_event::<event::DomainEventLifecycle>(&msg),
            };
            match sent {
                Ok(()) | Err(ConnectionClosed::Closed(_)) => {}
                Err(e) => tracing::warn!(conn = target.conn.id(), "event not delivered: {e}"),
            }
        }
    }

    /// Forwards every event of `events` until the bus closes.
    pub async fn forward(self: Arc<Self>, mut events: broadcast::Receiver<LifecycleEvent>) {
        loop {
            match events.recv().await {
                Ok(event) => self.deliver(&event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("{missed} lifecycle events were not forwarded to clients");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
