//! `event`: waits for domain events and prints them as virsh does.
//!
//! With a daemon that supports `REMOTE_EVENT_CALLBACK` (as libvirtd and oxvirtd do), events
//! are registered per type with `CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY` (the daemon
//! filters by domain); otherwise with the older `CONNECT_DOMAIN_EVENT_REGISTER_ANY`, filtering
//! by domain here.

use super::{CmdError, LookupBy, Session, describe};
use crate::args::{EVENT_NAMES, EventArgs};
use crate::format;
use rpc::client::{ClientError, EventMessage};
use rpc::procedures::{
    ConnectDomainEventCallbackDeregisterAnyArgs, ConnectDomainEventCallbackRegisterAnyArgs,
    ConnectDomainEventRegisterAnyArgs, ConnectSupportsFeatureArgs, DOMAIN_EVENT_ID_LIFECYCLE,
    DOMAIN_EVENT_ID_REBOOT, DomainEventRebootMsg, NonnullDomain, Procedure, call, event, feature,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    Timeout,
    Interrupt,
}

/// The registrations made, to match messages and to undo them.
#[derive(Debug, Default)]
struct Registrations {
    /// `(callback id, event id)` of the callback API.
    callbacks: Vec<(i32, i32)>,
    /// Event ids registered with the older API.
    legacy: Vec<i32>,
    /// With the older API, the domain to keep (by UUID).
    filter: Option<[u8; 16]>,
}

impl Registrations {
    fn wants_callback(&self, callback_id: i32, event_id: i32) -> bool {
        self.callbacks.contains(&(callback_id, event_id))
    }

    fn wants_legacy(&self, event_id: i32, dom: &NonnullDomain) -> bool {
        self.legacy.contains(&event_id) && self.filter.is_none_or(|uuid| uuid == dom.uuid)
    }
}

pub(super) async fn run(s: &mut Session<'_>, args: &EventArgs) -> Result<(), CmdError> {
    let timeout = args.check()?;
    if args.list {
        let names: String = EVENT_NAMES.iter().map(|n| format!("{n}\n")).collect();
        return s.print(&names);
    }
    let event_ids: Vec<i32> = match args.event.as_deref() {
        Some("reboot") => vec![DOMAIN_EVENT_ID_REBOOT],
        Some(_) => vec![DOMAIN_EVENT_ID_LIFECYCLE],
        None => vec![DOMAIN_EVENT_ID_LIFECYCLE, DOMAIN_EVENT_ID_REBOOT],
    };
    let dom = match &args.domain {
        Some(name) => Some(s.lookup(name, LookupBy::ANY).await?),
        None => None,
    };
    let Some(mut events) = s.client().take_events() else {
        return Err(CmdError::msg("events are already being received"));
    };
    let regs = register(s, &event_ids, dom).await?;
    let (end, count) = wait(s, &mut events, &regs, args, timeout).await?;
    match end {
        End::Timeout => s.print("event loop timed out\n")?,
        End::Interrupt => s.print("event loop interrupted\n")?,
        End::Done => {}
    }
    s.print(&format!("events received: {count}\n"))?;
    deregister(s, &regs).await;
    if count == 0 {
        // virsh fails silently when no event came.
        return Err(CmdError::default());
    }
    Ok(())
}

async fn register(
    s: &Session<'_>,
    event_ids: &[i32],
    dom: Option<NonnullDomain>,
) -> Result<Registrations, CmdError> {
    let feature = ConnectSupportsFeatureArgs {
        feature: feature::REMOTE_EVENT_CALLBACK,
    };
    let callbacks = s
        .call::<call::ConnectSupportsFeature>(&feature)
        .await
        .is_ok_and(|r| r.supported == 1);
    let mut regs = Registrations {
        filter: dom.as_ref().map(|d| d.uuid),
        ..Registrations::default()
    };
    for (i, &event_id) in event_ids.iter().enumerate() {
        let result = if callbacks {
            let args = ConnectDomainEventCallbackRegisterAnyArgs {
                event_id,
                dom: dom.clone(),
            };
            s.call::<call::ConnectDomainEventCallbackRegisterAny>(&args)
                .await
                .map(|r| regs.callbacks.push((r.callback_id, event_id)))
        } else {
            let args = ConnectDomainEventRegisterAnyArgs { event_id };
            s.call::<call::ConnectDomainEventRegisterAny>(&args)
                .await
                .map(|()| regs.legacy.push(event_id))
        };
        // As virsh: only the first registration must succeed (an older server may not know
        // every event type).
        if let Err(e) = result
            && i == 0
        {
            return Err(CmdError::cause(&e));
        }
    }
    Ok(regs)
}

async fn deregister(s: &Session<'_>, regs: &Registrations) {
    for &(callback_id, _) in &regs.callbacks {
        let args = ConnectDomainEventCallbackDeregisterAnyArgs { callback_id };
        let _ = s
            .call::<call::ConnectDomainEventCallbackDeregisterAny>(&args)
            .await;
    }
    for &event_id in &regs.legacy {
        let args = ConnectDomainEventRegisterAnyArgs { event_id };
        let _ = s.call::<call::ConnectDomainEventDeregisterAny>(&args).await;
    }
}

async fn wait(
    s: &mut Session<'_>,
    events: &mut tokio::sync::mpsc::Receiver<EventMessage>,
    regs: &Registrations,
    args: &EventArgs,
    timeout: Option<u64>,
) -> Result<(End, u64), CmdError> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
    let sleep_until = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until);
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| CmdError::msg(format!("cannot handle SIGINT: {e}")))?;
    let mut count = 0;
    loop {
        tokio::select! {
            msg = events.recv() => {
                let Some(msg) = msg else {
                    return Err(CmdError::msg("the connection to the daemon is closed"));
                };
                let Some(line) = describe_event(&msg, regs).map_err(|e| CmdError::msg(describe(&e)))? else {
                    continue;
                };
                let line = if args.timestamp { format!("{}: {line}", timestamp(SystemTime::now())) } else { line };
                s.print(&line)?;
                count += 1;
                if !args.loop_ {
                    return Ok((End::Done, count));
                }
            }
            () = &mut sleep_until => return Ok((End::Timeout, count)),
            _ = interrupt.recv() => return Ok((End::Interrupt, count)),
        }
    }
}

/// The line virsh prints for an event message, or `None` when it is not one we registered.
fn describe_event(msg: &EventMessage, regs: &Registrations) -> Result<Option<String>, ClientError> {
    if let Some(e) = msg.decode::<event::DomainEventCallbackLifecycle>()? {
        let wanted = regs.wants_callback(e.callback_id, DOMAIN_EVENT_ID_LIFECYCLE);
        return Ok(
            wanted.then(|| format::lifecycle_event(&e.msg.dom.name, e.msg.event, e.msg.detail))
        );
    }
    if let Some(e) = msg.decode::<event::DomainEventLifecycle>()? {
        let wanted = regs.wants_legacy(DOMAIN_EVENT_ID_LIFECYCLE, &e.dom);
        return Ok(wanted.then(|| format::lifecycle_event(&e.dom.name, e.event, e.detail)));
    }
    if let Some(e) = msg.decode::<event::DomainEventCallbackReboot>()? {
        let wanted = regs.wants_callback(e.callback_id, DOMAIN_EVENT_ID_REBOOT);
        return Ok(wanted.then(|| format::generic_event("reboot", &e.msg.dom.name)));
    }
    if msg.procedure == Procedure::DomainEventReboot.number() {
        let e: DomainEventRebootMsg =
            rpc::xdr::from_bytes(&msg.payload).map_err(|source| ClientError::Decode {
                what: "event REMOTE_PROC_DOMAIN_EVENT_REBOOT".into(),
                source,
            })?;
        let wanted = regs.wants_legacy(DOMAIN_EVENT_ID_REBOOT, &e.dom);
        return Ok(wanted.then(|| format::generic_event("reboot", &e.dom.name)));
    }
    Ok(None)
}

/// `virTimeStringNowRaw`: `YYYY-MM-DD HH:MM:SS.mmm+0000` in UTC.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is in 1..=31 and m in 1..=12 by construction.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc::procedures::{DomainEventCallbackLifecycleMsg, DomainEventLifecycleMsg};

    fn lifecycle(callback_id: i32, name: &str) -> EventMessage {
        let msg = DomainEventCallbackLifecycleMsg {
            callback_id,
            msg: DomainEventLifecycleMsg {
                dom: NonnullDomain {
                    name: name.into(),
                    uuid: [1; 16],
                    id: 1,
                },
                event: 2,
                detail: 0,
            },
        };
        EventMessage {
            procedure: Procedure::DomainEventCallbackLifecycle.number(),
            payload: rpc::xdr::to_bytes(&msg).unwrap(),
        }
    }

    #[test]
    fn prints_only_registered_callbacks() {
        // Arrange
        let regs = Registrations {
            callbacks: vec![(7, DOMAIN_EVENT_ID_LIFECYCLE)],
            ..Registrations::default()
        };

        // Act
        let ours = describe_event(&lifecycle(7, "vm1"), &regs).unwrap();
        let theirs = describe_event(&lifecycle(8, "vm1"), &regs).unwrap();

        // Assert
        assert_eq!(
            ours.as_deref(),
            Some("event 'lifecycle' for domain 'vm1': Started Booted\n")
        );
        assert_eq!(theirs, None);
    }

    #[test]
    fn legacy_events_are_filtered_by_domain() {
        // Arrange
        let msg = DomainEventRebootMsg {
            dom: NonnullDomain {
                name: "vm2".into(),
                uuid: [2; 16],
                id: 3,
            },
        };
        let event = EventMessage {
            procedure: Procedure::DomainEventReboot.number(),
            payload: rpc::xdr::to_bytes(&msg).unwrap(),
        };
        let mut regs = Registrations {
            legacy: vec![DOMAIN_EVENT_ID_REBOOT],
            ..Registrations::default()
        };

        // Act
        let any = describe_event(&event, &regs).unwrap();
        regs.filter = Some([9; 16]);
        let other = describe_event(&event, &regs).unwrap();

        // Assert
        assert_eq!(any.as_deref(), Some("event 'reboot' for domain 'vm2'\n"));
        assert_eq!(other, None);
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        // Arrange: 2026-11-30 12:34:56.789 UTC.
        let t = UNIX_EPOCH + Duration::from_millis(1_796_042_096_789);

        // Act / Assert
        assert_eq!(timestamp(t), "2026-11-30 12:34:56.789+0000");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000+0000");
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
