//! The interface between a virtio device model and its transport.

use std::os::fd::RawFd;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::VirtioMemory;
use crate::balloon::BalloonState;
use crate::console::ConsoleState;
use crate::net::NetState;
use crate::rng::RngState;
use crate::vsock::VsockState;

/// How a device interrupts the driver, whatever the transport (MSI-X vectors or INTx and
/// the ISR register on PCI).
pub trait VirtioInterrupt: Send + Sync {
    /// Used buffer notification for queue `queue`.
    fn signal_queue(&self, queue: u16);

    /// Configuration change notification (the device's configuration space changed, or it
    /// set `DEVICE_NEEDS_RESET`).
    fn signal_config(&self);
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not enable a queue the device needs.
    #[error("queue {index} is required but the driver did not enable it")]
    QueueNotEnabled {
        /// The queue index.
        index: usize,
    },
    /// The transport handed over a different number of queues than the device has.
    #[error("{given} queues given, the device has {expected}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues it was given.
        given: usize,
    },
}

/// Why a device could not process a queue; the transport then sets `DEVICE_NEEDS_RESET`.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device has no queue with this index.
    #[error("queue {index} does not exist")]
    NoSuchQueue {
        /// The index the driver notified.
        index: u16,
    },
    /// A notification arrived before activation.
    #[error("queue {index} notified before the device was activated")]
    NotActivated {
        /// The queue index.
        index: u16,
    },
    /// The ring itself is broken (avail index out of range, ring outside guest memory…).
    #[error("queue {index}: {source}")]
    Queue {
        /// The queue index.
        index: u16,
        /// What virtio-queue reported.
        #[source]
        source: virtio_queue::Error,
    },
}

/// The device-specific part of a virtio device's snapshot: one variant per device model that
/// keeps state beyond its queues. A typed enum rather than opaque bytes or a JSON value, so
/// that it encodes with bincode (no `deserialize_any`) and a snapshot of one device type
/// cannot be read as another's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum VirtioDeviceState {
    /// virtio-rng.
    Rng(RngState),
    /// virtio-balloon (boxed: its statistics make it far larger than the others).
    Balloon(Box<BalloonState>),
    /// virtio-vsock.
    Vsock(VsockState),
    /// virtio-console.
    Console(ConsoleState),
    /// virtio-net.
    Net(NetState),
}

impl VirtioDeviceState {
    /// The device model this state belongs to, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rng(_) => "virtio-rng",
            Self::Balloon(_) => "virtio-balloon",
            Self::Vsock(_) => "virtio-vsock",
            Self::Console(_) => "virtio-console",
            Self::Net(_) => "virtio-net",
        }
    }
}

/// Why a device refused its device-specific snapshot state; it is left unchanged.
#[derive(Debug, thiserror::Error)]
pub enum DeviceStateError {
    /// The state belongs to another device model (or is missing, or is extra).
    #[error("device state is for {found}, this device is {expected}")]
    WrongDevice {
        /// This device's model (or "no device state").
        expected: &'static str,
        /// What the snapshot holds (or "no device state").
        found: &'static str,
    },
    /// A field holds a value this device can never have.
    #[error("device state: {field} is invalid: {reason}")]
    Invalid {
        /// The field, as named in the serialized state.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl DeviceStateError {
    /// The refusal of device model `expected` (such as "virtio-net") handed `state`, which
    /// is another model's state or none.
    pub fn wrong_device(expected: &'static str, state: Option<&VirtioDeviceState>) -> Self {
        DeviceStateError::WrongDevice {
            expected,
            found: state.map_or("no device state", VirtioDeviceState::kind),
        }
    }
}

/// A virtio device model: what the transport needs from it.
///
/// Lifecycle: the transport offers [`VirtioDevice::features`], tells the device what the
/// driver accepted ([`VirtioDevice::ack_features`]), hands over the queues the driver set
/// up at `DRIVER_OK` ([`VirtioDevice::activate`]), forwards queue notifications
/// ([`VirtioDevice::process_queue`]) and finally resets it ([`VirtioDevice::reset`]),
/// after which the cycle can start again.
///
/// Snapshots: [`VirtioDevice::queue_states`] reports the positions of the queues an activated
/// device holds, [`VirtioDevice::device_state`] / [`VirtioDevice::restore_device_state`] the
/// rest. A device that does not implement `queue_states` cannot be snapshotted while active
/// (the transport refuses with a clear error rather than lose its queue positions).
pub trait VirtioDevice: Send {
    /// The virtio device type ([`crate::device_type`]).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue (powers of two); their number is the queue count.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers, [`crate::features::VERSION_1`] included.
    fn features(&self) -> u64;

    /// The features the driver accepted (a subset of [`VirtioDevice::features`] with
    /// `VERSION_1`), at `FEATURES_OK`.
    fn ack_features(&mut self, features: u64) {
        let _ = features;
    }

    /// Reads the device-specific configuration space at `offset`. Bytes past its end read
    /// as 0; the offset and length come from the guest.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let _ = offset;
        data.fill(0);
    }

    /// Writes the device-specific configuration space at `offset` (ignored by default).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// Starts the device with one queue per entry of [`VirtioDevice::queue_max_sizes`]
    /// (those the driver left disabled are not ready), the negotiated ring features already
    /// applied to them.
    fn activate(
        &mut self,
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError>;

    /// Processes what the driver made available on queue `index`.
    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError>;

    /// Stops the device and drops its queues: back to the state before activation.
    fn reset(&mut self);

    /// When a rate limiter stopped the device's queues, the instant after which processing
    /// them again makes progress (the VMM arms a timer and notifies the queues then).
    fn throttled_until(&self) -> Option<std::time::Instant> {
        None
    }

    /// The same for queue `index` alone, for devices that limit each queue on its own
    /// (virtio-net: receive and transmit); by default [`VirtioDevice::throttled_until`].
    fn queue_throttled_until(&self, index: u16) -> Option<std::time::Instant> {
        let _ = index;
        self.throttled_until()
    }

    /// While activated: the state of every queue it was given, in order, with the positions
    /// it reached (`next_avail`, `next_used`); `None` when it is not active or cannot tell.
    /// Called with the device quiescent (the vCPUs paused, [`VirtioDevice::quiesce`] done).
    fn queue_states(&self) -> Option<Vec<QueueState>> {
        None
    }

    /// For a device that runs requests of queue `index` on other threads (virtio-blk): an
    /// eventfd it writes when some finished. The VMM watches it and then processes the queue
    /// as for a driver notification ([`VirtioDevice::process_queue`] publishes them). `None`
    /// (the default): the queue has no such work.
    fn queue_event(&self, index: u16) -> Option<&EventFd> {
        let _ = index;
        None
    }

    /// Finishes the requests the device runs on other threads and publishes them (used
    /// ring, interrupts), and starts no new one until [`VirtioDevice::resume`]: called when
    /// the VMM pauses the VM and before it saves the device's state. The default has nothing
    /// to wait for.
    fn quiesce(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Lets a quiesced device start requests again, including those that became available
    /// meanwhile.
    fn resume(&mut self) {}

    /// The device-specific state a snapshot keeps (beyond queues and configuration the
    /// transport saves), or `None` if it keeps none.
    fn device_state(&self) -> Option<VirtioDeviceState> {
        None
    }

    /// Puts back what [`VirtioDevice::device_state`] returned, possibly in another process,
    /// before the transport re-activates the device. The state is untrusted: refuse (leaving
    /// the device unchanged) a state of another device or with impossible values. By default
    /// only "no state" is accepted.
    fn restore_device_state(
        &mut self,
        state: Option<&VirtioDeviceState>,
    ) -> Result<(), DeviceStateError> {
        match state {
            None => Ok(()),
            Some(state) => Err(DeviceStateError::WrongDevice {
                expected: "a device without device state",
                found: state.kind(),
            }),
        }
    }
}

/// A device whose queues someone else holds: a vhost-user back-end keeps each queue in its
/// vring, where the front-end configures it, and hands them over on every kick with the
/// guest memory of that moment. The device processes them with the same code as the queues
/// [`VirtioDevice::activate`] gives it, and interrupts the driver through `interrupt`.
///
/// `queues` holds every queue of the device, in order (one per
/// [`VirtioDevice::queue_max_sizes`] entry); one the driver has not set up, or that the holder
/// must not touch now, is handed over not ready, and the device leaves it alone. Devices
/// whose queues work together use the others too (virtio-vsock: a tx packet may produce rx
/// packets).
///
/// A device driven this way is never activated; [`VirtioDevice::ack_features`],
/// the configuration space and [`VirtioDevice::reset`] work as usual.
pub trait ExternalQueues: VirtioDevice {
    /// Processes what the driver made available on queue `index` of `queues`. Errors are
    /// those of [`VirtioDevice::process_queue`] (a [`DeviceError::Queue`] names the queue
    /// that broke): that queue is then unusable until the driver resets the device.
    fn process_external_queue(
        &mut self,
        index: u16,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError>;

    /// A descriptor that becomes readable when the device has work besides the driver's
    /// notifications (virtio-vsock: its host streams); the holder of the queues watches it
    /// and calls [`ExternalQueues::process_external_event`]. `None` (the default): no such
    /// work.
    fn external_event_fd(&self) -> Option<RawFd> {
        None
    }

    /// Handles what made [`ExternalQueues::external_event_fd`] readable, then processes the
    /// queues that work produced something for; arguments and errors as in
    /// [`ExternalQueues::process_external_queue`].
    fn process_external_event(
        &mut self,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let _ = (mem, queues, interrupt);
        Ok(())
    }
}

/// The queue a single-queue [`ExternalQueues`] device was handed for a notification of queue
/// `index`: queue 0, or an error naming `index`.
pub(crate) fn single_external_queue<'a>(
    queues: &'a mut [&mut Queue],
    index: u16,
) -> Result<&'a mut Queue, DeviceError> {
    if index != 0 {
        return Err(DeviceError::NoSuchQueue { index });
    }
    queues
        .get_mut(usize::from(index))
        .map(|queue| &mut **queue)
        .ok_or(DeviceError::NoSuchQueue { index })
}

/// Takes a device's active queues out of `slot` to process a notification of queue `index`
/// (the device needs itself mutably meanwhile); put them back afterwards.
pub(crate) fn take_active<A>(slot: &mut Option<A>, index: u16) -> Result<A, DeviceError> {
    slot.take().ok_or(DeviceError::NotActivated { index })
}

/// The one queue of a single-queue device while it is active, with the memory and interrupt
/// it was activated with.
pub struct ActiveQueue {
    /// Guest memory.
    pub mem: VirtioMemory,
    /// The queue, at its current position.
    pub queue: Queue,
    /// How to interrupt the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

impl ActiveQueue {
    /// Takes the single ready queue `VirtioDevice::activate` was given.
    pub fn activate(
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<Self, ActivateError> {
        let given = queues.len();
        let Ok([queue]) = <[Queue; 1]>::try_from(queues) else {
            return Err(ActivateError::QueueCount { expected: 1, given });
        };
        if !queue.ready() {
            return Err(ActivateError::QueueNotEnabled { index: 0 });
        }
        Ok(ActiveQueue {
            mem,
            queue,
            interrupt,
        })
    }

    /// The position of the queue in `slot`, for `VirtioDevice::queue_states`.
    pub fn states(slot: &Option<ActiveQueue>) -> Option<Vec<QueueState>> {
        slot.as_ref().map(|active| vec![active.queue.state()])
    }

    /// Takes the active queue out of `slot` to process a notification of queue `index` (a
    /// single-queue device only has queue 0); put it back afterwards.
    pub fn take(slot: &mut Option<ActiveQueue>, index: u16) -> Result<ActiveQueue, DeviceError> {
        if index != 0 {
            return Err(DeviceError::NoSuchQueue { index });
        }
        take_active(slot, index)
    }
}

/// Serves a read of `data.len()` bytes at `offset` of a device's configuration `config`: bytes
/// past its end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Some(start) = usize::try_from(offset).ok().filter(|&s| s < config.len()) else {
        return;
    };
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
