//! The host side of virtio-vsock: Firecracker's Unix-socket convention and the device's place
//! in the event loop.
//!
//! oxvmm listens on `socket` for host programs (which write `CONNECT <port>\n`), and connects
//! to `<socket>_<port>` for the guest's connections to host port `port`: the
//! [`UnixSocketBackend`] of the `virtio` crate, which `oxvmm-vhost-user vsock` uses too. The
//! event loop watches the device's epoll descriptor and, once at start, kicks its event queue
//! so that a restored device tells the guest TRANSPORT_RESET while the VM runs (an interrupt
//! sent before the restored VM starts could be lost).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio::pci::VirtioPciDevice;
use virtio::vsock::unix::UnixSocketBackend;
use virtio::vsock::{EVENT_QUEUE, RX_QUEUE, Vsock};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::config::VsockConfig;
use crate::error::VmmError;
use crate::ioevents::QueueNotify;

/// The vsock PCI function.
pub type VsockHandle = Arc<Mutex<VirtioPciDevice<Vsock>>>;

/// Builds the device for `config`.
pub fn vsock_device(config: &VsockConfig) -> Result<Vsock, VmmError> {
    let failed = |problem: String| VmmError::InvalidOption {
        option: "--vsock",
        value: format!("cid={},socket={}", config.cid, config.socket.display()),
        problem,
    };
    if let Some(problem) = config.problem() {
        return Err(failed(problem));
    }
    let backend = UnixSocketBackend::bind(&config.socket).map_err(|e| failed(e.to_string()))?;
    Vsock::new(config.cid, Box::new(backend)).map_err(|e| failed(e.to_string()))
}

/// Watches the device's host side; kicks its event queue once when the loop starts.
pub struct VsockSubscriber {
    device: VsockHandle,
    host_fd: RawFd,
    kick: EventFd,
}

impl VsockSubscriber {
    /// A subscriber for `device`.
    pub fn new(device: VsockHandle) -> std::io::Result<Self> {
        let host_fd = device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .device()
            .host_events_fd();
        Ok(Self {
            device,
            host_fd,
            kick: EventFd::new(EFD_NONBLOCK)?,
        })
    }
}

impl MutEventSubscriber for VsockSubscriber {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let mut device = self.device.lock().unwrap_or_else(|e| e.into_inner());
        if events.fd() == self.kick.as_raw_fd() {
            let _ = self.kick.read();
            // Ignored by the transport unless the driver runs the device.
            QueueNotify::notify_queue(&mut *device, EVENT_QUEUE);
            return;
        }
        device.device_mut().process_host_events();
        QueueNotify::notify_queue(&mut *device, RX_QUEUE);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.host_fd, self.kick.as_raw_fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                tracing::error!("cannot watch the virtio-vsock host side: {e:?}");
            }
        }
        if let Err(e) = self.kick.write(1) {
            tracing::warn!("cannot kick the virtio-vsock event queue: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn reserved_cids_and_long_paths_name_the_option() {
        let config = VsockConfig {
            cid: 2,
            socket: PathBuf::from("/tmp/x.sock"),
        };
        let error = vsock_device(&config).err().unwrap().to_string();
        assert!(
            error.contains("--vsock") && error.contains("reserved"),
            "{error}"
        );
    }
}
