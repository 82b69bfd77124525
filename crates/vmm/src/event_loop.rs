//! The VMM's event loop (epoll through `event-manager`): waits for the end of a boot and
//! forwards standard input to the serial port.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};

use crate::device_manager::DeviceManager;
use crate::error::VmmError;
use crate::events::{StopLatch, StopReason};

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Notices stop requests.
struct StopWatcher {
    latch: Arc<StopLatch>,
}

impl MutEventSubscriber for StopWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // The latch holds the reason; the loop reads it after `run` returns.
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.latch.eventfd(), EventSet::IN)) {
            tracing::error!("cannot watch the stop eventfd: {e:?}");
        }
    }
}

/// Forwards standard input to COM1.
struct StdinForwarder {
    devices: Arc<DeviceManager>,
}

impl MutEventSubscriber for StdinForwarder {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => {
                // End of input or a broken descriptor: stop watching it.
                let _ = ops.remove(events);
            }
            Ok(n) => self.devices.serial_input(&buf[..n]),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let stdin = std::io::stdin();
        // epoll refuses regular files and /dev/null; then there is simply no input.
        if let Err(e) = ops.add(Events::new_raw(stdin.as_raw_fd(), EventSet::IN)) {
            tracing::debug!("standard input is not pollable, serial input disabled: {e:?}");
        }
    }
}

/// The VMM's epoll loop.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    latch: Arc<StopLatch>,
}

impl EventLoop {
    /// Watches `latch`, and standard input when `forward_stdin`.
    pub fn new(
        latch: Arc<StopLatch>,
        devices: Arc<DeviceManager>,
        forward_stdin: bool,
    ) -> Result<Self, VmmError> {
        let mut manager: EventManager<Subscriber> = EventManager::new()
            .map_err(|e| VmmError::Runtime(format!("cannot create the event loop: {e:?}")))?;
        manager.add_subscriber(Arc::new(Mutex::new(StopWatcher {
            latch: latch.clone(),
        })));
        if forward_stdin {
            manager.add_subscriber(Arc::new(Mutex::new(StdinForwarder { devices })));
        }
        Ok(EventLoop { manager, latch })
    }

    /// Runs until a stop is requested and returns its reason.
    pub fn wait_for_stop(&mut self) -> Result<StopReason, VmmError> {
        loop {
            if let Some(reason) = self.latch.take() {
                return Ok(reason);
            }
            self.manager
                .run()
                .map_err(|e| VmmError::Runtime(format!("event loop failed: {e:?}")))?;
        }
    }
}
