//! Queue notifications through ioeventfd: KVM signals an eventfd when the guest writes a virtio
//! queue's notify address, so the vCPU does not exit to userspace; the event loop then has the
//! device process the queue.
//!
//! Registrations follow the device's BAR: the PCI root reports BAR moves (from a vCPU's
//! configuration write, with the root locked), and the vCPU that made the write checks every
//! queue's address again before it runs the guest again ([`IoEvents::sync_if_moved`]), so the
//! guest's next notification finds the new registration. A new KVM VM (after a reboot, or a
//! restore, whose BARs were set before) is synced when it is attached, with none registered.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use devices::bus::BusRange;
use devices::pci::{PciBarObserver, PciDevice};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio::VirtioDevice;
use virtio::pci::{
    NOTIFY_CFG_OFFSET, NOTIFY_OFF_MULTIPLIER, VIRTIO_BAR, VirtioPciDevice, VirtioPciError,
    VirtioPciState,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

/// What the VMM needs of a virtio PCI device whatever its type: queue notifications (for
/// ioeventfd) and its state (for snapshots).
pub trait QueueNotify: Send {
    /// The transport's and the device's state.
    fn save_state(&self) -> Result<VirtioPciState, VirtioPciError>;
    /// Restores what `save_state` returned.
    fn restore_state(&mut self, state: &VirtioPciState) -> Result<(), VirtioPciError>;
    /// Number of queues.
    fn queue_count(&self) -> u16;
    /// Guest-physical address of queue `queue`'s notify register, if its BAR is placed.
    fn queue_notify_address(&self, queue: u16) -> Option<u64>;
    /// Acts as if the guest had written `queue` to its notify register.
    fn notify_queue(&mut self, queue: u16);
    /// When a rate limiter stopped queue `queue`, when to notify it again.
    fn throttled_until(&self, queue: u16) -> Option<std::time::Instant>;
    /// Number of MSI-X vectors.
    fn msix_vectors(&self) -> u16;
    /// Announces MSI-X routes as GSIs `base + vector` (see `interrupts`).
    fn set_msix_route_base(&self, base: Option<usize>);
    /// A handle on the eventfd the device writes when requests of queue `queue` it runs on
    /// other threads finish (`VirtioDevice::queue_event`); the loop then notifies the queue.
    fn queue_event(&self, queue: u16) -> Option<EventFd> {
        let _ = queue;
        None
    }
    /// Waits for and publishes the requests the device runs on other threads; starts none
    /// until `resume` (pause, snapshot).
    fn quiesce(&mut self) {}
    /// Ends `quiesce`.
    fn resume(&mut self) {}
}

impl<D: VirtioDevice> QueueNotify for VirtioPciDevice<D> {
    fn save_state(&self) -> Result<VirtioPciState, VirtioPciError> {
        self.state()
    }

    fn restore_state(&mut self, state: &VirtioPciState) -> Result<(), VirtioPciError> {
        self.restore(state)
    }

    fn queue_count(&self) -> u16 {
        self.device().queue_max_sizes().len() as u16
    }

    fn queue_notify_address(&self, queue: u16) -> Option<u64> {
        VirtioPciDevice::queue_notify_address(self, queue)
    }

    fn notify_queue(&mut self, queue: u16) {
        let offset = NOTIFY_CFG_OFFSET + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER);
        self.bar_write(VIRTIO_BAR, offset, &queue.to_le_bytes());
    }

    fn throttled_until(&self, queue: u16) -> Option<std::time::Instant> {
        self.device().queue_throttled_until(queue)
    }

    fn msix_vectors(&self) -> u16 {
        VirtioPciDevice::msix_vectors(self)
    }

    fn set_msix_route_base(&self, base: Option<usize>) {
        VirtioPciDevice::set_msix_route_base(self, base);
    }

    fn queue_event(&self, queue: u16) -> Option<EventFd> {
        let event = self.device().queue_event(queue)?;
        event
            .try_clone()
            .inspect_err(|e| tracing::error!("queue {queue}: cannot watch its device event: {e}"))
            .ok()
    }

    fn quiesce(&mut self) {
        VirtioPciDevice::quiesce(self);
    }

    fn resume(&mut self) {
        VirtioPciDevice::resume(self);
    }
}

/// One queue's eventfd and where it is registered.
struct QueueEvent {
    fd: EventFd,
    /// Fires when a throttled device may make progress again.
    retry: Mutex<TimerFd>,
    /// Written by the device when work it runs on other threads finished.
    device_event: Option<EventFd>,
    device: Arc<Mutex<dyn QueueNotify>>,
    queue: u16,
    registered_at: Mutex<Option<u64>>,
}

/// Every queue's ioeventfd, and the VM they are registered with.
pub struct IoEvents {
    queues: Vec<Arc<QueueEvent>>,
    vm: RwLock<Option<Arc<hypervisor::Vm>>>,
    /// Set when a BAR moves, cleared by [`IoEvents::sync`].
    moved: Arc<AtomicBool>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IoEvents {
    /// Eventfds for every queue of `devices`.
    pub fn new(devices: &[Arc<Mutex<dyn QueueNotify>>]) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        for device in devices {
            let count = lock(device).queue_count();
            for queue in 0..count {
                let device_event = lock(device).queue_event(queue);
                queues.push(Arc::new(QueueEvent {
                    fd: EventFd::new(EFD_NONBLOCK)?,
                    retry: Mutex::new(TimerFd::new()?),
                    device_event,
                    device: device.clone(),
                    queue,
                    registered_at: Mutex::new(None),
                }));
            }
        }
        Ok(IoEvents {
            queues,
            vm: RwLock::new(None),
            moved: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The observer to give the PCI root.
    pub fn bar_observer(&self) -> Arc<dyn PciBarObserver> {
        Arc::new(BarWatcher {
            moved: self.moved.clone(),
        })
    }

    /// Registers every queue with `vm` (a new VM has none), or forgets them with `None`.
    pub fn attach(&self, vm: Option<Arc<hypervisor::Vm>>) {
        for queue in &self.queues {
            *lock(&queue.registered_at) = None;
        }
        *self.vm.write().unwrap_or_else(|e| e.into_inner()) = vm;
        self.sync();
    }

    /// Re-registers if a BAR moved since the last sync: called by a vCPU after an I/O or MMIO
    /// write, with no device or PCI lock held.
    pub fn sync_if_moved(&self) {
        if self.moved.load(Ordering::Acquire) {
            self.sync();
        }
    }

    /// Moves each registration to its queue's current notify address.
    pub fn sync(&self) {
        self.moved.store(false, Ordering::Release);
        let vm = self.vm.read().unwrap_or_else(|e| e.into_inner());
        let Some(vm) = vm.as_ref() else { return };
        for queue in &self.queues {
            let want = lock(&queue.device).queue_notify_address(queue.queue);
            let mut at = lock(&queue.registered_at);
            if *at == want {
                continue;
            }
            if let Some(old) = at.take()
                && let Err(e) = vm.unregister_mmio_ioevent(&queue.fd, old)
            {
                tracing::warn!("queue {}: {e}", queue.queue);
            }
            if let Some(addr) = want {
                match vm.register_mmio_ioevent(&queue.fd, addr) {
                    Ok(()) => *at = Some(addr),
                    // The vCPU exit path still handles the notification.
                    Err(e) => tracing::warn!("queue {} at {addr:#x}: {e}", queue.queue),
                }
            }
        }
    }

    /// Event-loop subscribers: one per queue.
    pub fn subscribers(self: &Arc<Self>) -> Vec<Arc<Mutex<dyn MutEventSubscriber + Send>>> {
        self.queues
            .iter()
            .map(|queue| {
                Arc::new(Mutex::new(QueueSubscriber {
                    event: queue.clone(),
                })) as Arc<Mutex<dyn MutEventSubscriber + Send>>
            })
            .collect()
    }
}

struct BarWatcher {
    moved: Arc<AtomicBool>,
}

impl PciBarObserver for BarWatcher {
    fn bar_remapped(
        &self,
        _slot: u8,
        _index: usize,
        _old: Option<BusRange>,
        _new: Option<BusRange>,
    ) {
        // Called with the PCI root locked (from a vCPU's config write): only mark the move;
        // that vCPU re-registers once the write is done.
        self.moved.store(true, Ordering::Release);
    }
}

struct QueueSubscriber {
    event: Arc<QueueEvent>,
}

impl QueueSubscriber {
    /// Arms the retry timer when the device was throttled.
    fn arm_retry(&self, device: &dyn QueueNotify) {
        let Some(at) = device.throttled_until(self.event.queue) else {
            return;
        };
        // A zero timeout would disarm the timer: wait at least a microsecond.
        let wait = at
            .saturating_duration_since(std::time::Instant::now())
            .max(std::time::Duration::from_micros(1));
        if let Err(e) = lock(&self.event.retry).reset(wait, None) {
            tracing::warn!("cannot arm the rate limiter's timer: {e}");
        }
    }
}

impl MutEventSubscriber for QueueSubscriber {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let retry_fd = lock(&self.event.retry).as_raw_fd();
        let device_event = self.event.device_event.as_ref();
        let fired = if events.fd() == retry_fd {
            lock(&self.event.retry).wait().is_ok()
        } else if let Some(event) = device_event.filter(|e| e.as_raw_fd() == events.fd()) {
            // Read even when the transport ignores the notification (device reset
            // meanwhile): an eventfd left readable would wake the loop forever.
            event.read().is_ok()
        } else {
            let notified = self.event.fd.read().is_ok();
            if notified {
                tracing::debug!("queue {} notified through its ioeventfd", self.event.queue);
            }
            notified
        };
        if fired {
            let mut device = lock(&self.event.device);
            device.notify_queue(self.event.queue);
            self.arm_retry(&*device);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let retry_fd = lock(&self.event.retry).as_raw_fd();
        let device_fd = self.event.device_event.as_ref().map(|e| e.as_raw_fd());
        for fd in [self.event.fd.as_raw_fd(), retry_fd]
            .into_iter()
            .chain(device_fd)
        {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                tracing::error!("cannot watch queue {}'s events: {e:?}", self.event.queue);
            }
        }
    }
}
