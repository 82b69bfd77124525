//! The VMM's event loop (epoll through `event-manager`): waits for the end of a boot and
//! forwards standard input to the serial port.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::timerfd::TimerFd;

use crate::api::{ApiEnvelope, ApiReceiver};
use crate::device_manager::DeviceManager;
use crate::error::VmmError;
use crate::events::{StopLatch, StopReason};

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Wakes the loop when an eventfd becomes readable; the loop itself reads what it signals
/// (stop requests, API requests) after `run` returns.
struct Wakeup {
    fd: std::os::fd::RawFd,
    what: &'static str,
}

impl MutEventSubscriber for Wakeup {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.fd, EventSet::IN)) {
            tracing::error!("cannot watch the {} eventfd: {e:?}", self.what);
        }
    }
}

/// What the event loop hands to the VMM.
pub enum LoopEvent {
    /// The current boot ends.
    Stop(StopReason),
    /// Control-API requests wait for an answer.
    Api(Vec<ApiEnvelope>),
}

/// How often input the guest has not taken yet is offered again.
const INPUT_RETRY: Duration = Duration::from_millis(5);

/// Forwards standard input to COM1. Input the UART's FIFO cannot take yet is held, and
/// standard input is not read again until the guest has taken it (back-pressure, no loss).
struct StdinForwarder {
    devices: Arc<DeviceManager>,
    pending: VecDeque<u8>,
    retry: TimerFd,
    reading: bool,
    at_eof: bool,
}

impl StdinForwarder {
    fn new(devices: Arc<DeviceManager>) -> std::io::Result<Self> {
        Ok(StdinForwarder {
            devices,
            pending: VecDeque::new(),
            retry: TimerFd::new()?,
            reading: false,
            at_eof: false,
        })
    }

    fn stdin_events() -> Events {
        Events::new_raw(std::io::stdin().as_raw_fd(), EventSet::IN)
    }

    fn read_stdin(&mut self) {
        let mut buf = [0u8; 256];
        match std::io::stdin().lock().read(&mut buf) {
            // End of input or a broken descriptor: nothing more will come.
            Ok(0) | Err(_) => self.at_eof = true,
            Ok(n) => self.pending.extend(&buf[..n]),
        }
    }

    fn offer_pending(&mut self) {
        let taken = self.devices.serial_input(self.pending.make_contiguous());
        self.pending.drain(..taken);
    }

    /// Watches standard input only while nothing is pending; retries pending input on a timer.
    fn update_interest(&mut self, ops: &mut EventOps) {
        let want_reading = self.pending.is_empty() && !self.at_eof;
        if want_reading != self.reading {
            let result = if want_reading {
                ops.add(Self::stdin_events())
            } else {
                ops.remove(Self::stdin_events())
            };
            if let Err(e) = result {
                tracing::debug!("cannot change the watch on standard input: {e:?}");
            }
            self.reading = want_reading;
        }
        let interval = (!self.pending.is_empty()).then_some(INPUT_RETRY);
        let armed = match interval {
            Some(every) => self.retry.reset(every, Some(every)),
            None => self.retry.clear(),
        };
        if let Err(e) = armed {
            tracing::warn!("cannot arm the serial input retry timer: {e}");
        }
    }
}

impl MutEventSubscriber for StdinForwarder {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.retry.as_raw_fd() {
            let _ = self.retry.wait();
        } else if self.pending.is_empty() {
            self.read_stdin();
        }
        self.offer_pending();
        self.update_interest(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        // epoll refuses regular files and /dev/null; then there is simply no input.
        match ops.add(Self::stdin_events()) {
            Ok(()) => self.reading = true,
            Err(e) => {
                tracing::debug!("standard input is not pollable, serial input disabled: {e:?}");
                return;
            }
        }
        if let Err(e) = ops.add(Events::new(&self.retry, EventSet::IN)) {
            tracing::warn!("cannot watch the serial input retry timer: {e:?}");
        }
    }
}

/// The VMM's epoll loop.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    latch: Arc<StopLatch>,
    api: Option<ApiReceiver>,
}

impl EventLoop {
    /// Watches `latch`, the API channel if any, and standard input when `forward_stdin`.
    pub fn new(
        latch: Arc<StopLatch>,
        devices: Arc<DeviceManager>,
        forward_stdin: bool,
        api: Option<ApiReceiver>,
    ) -> Result<Self, VmmError> {
        let mut manager: EventManager<Subscriber> = EventManager::new()
            .map_err(|e| VmmError::Runtime(format!("cannot create the event loop: {e:?}")))?;
        manager.add_subscriber(Arc::new(Mutex::new(Wakeup {
            fd: latch.eventfd().as_raw_fd(),
            what: "stop",
        })));
        if let Some(api) = &api {
            manager.add_subscriber(Arc::new(Mutex::new(Wakeup {
                fd: api.eventfd().as_raw_fd(),
                what: "API",
            })));
        }
        for subscriber in devices.pci.ioevents.subscribers() {
            manager.add_subscriber(subscriber);
        }
        for subscriber in devices.host_subscribers() {
            manager.add_subscriber(subscriber);
        }
        if forward_stdin {
            let forwarder = StdinForwarder::new(devices)
                .map_err(|e| VmmError::Runtime(format!("cannot create a timer: {e}")))?;
            manager.add_subscriber(Arc::new(Mutex::new(forwarder)));
        }
        Ok(EventLoop {
            manager,
            latch,
            api,
        })
    }

    /// Runs until a stop is requested or API requests arrive.
    pub fn next_event(&mut self) -> Result<LoopEvent, VmmError> {
        loop {
            if let Some(reason) = self.latch.take() {
                return Ok(LoopEvent::Stop(reason));
            }
            if let Some(api) = &self.api {
                let requests = api.drain();
                if !requests.is_empty() {
                    return Ok(LoopEvent::Api(requests));
                }
            }
            self.manager
                .run()
                .map_err(|e| VmmError::Runtime(format!("event loop failed: {e:?}")))?;
        }
    }
}
