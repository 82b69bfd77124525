//! [`DeviceBackend`]: one of our virtio device models behind `vhost-user-backend`'s
//! [`VhostUserBackend`] trait.
//!
//! The vrings (queues, kick and call eventfds) belong to `vhost-user-backend`, which sets them
//! up from the front-end's messages. On a kick its worker thread calls
//! [`VhostUserBackend::handle_event`]; we lock the vrings, hand their queues, the guest
//! memory of the moment and an interrupt sink to the device's
//! [`virtio::ExternalQueues::process_external_queue`] (the same code oxvmm runs in-process),
//! and signal the call eventfd of each vring the device asked to interrupt the driver for.
//! A vring the front-end has not set up and enabled (or that a queue error stopped) is
//! handed over as a queue that is not ready, which the device leaves alone.
//!
//! A device with work of its own ([`virtio::ExternalQueues::external_event_fd`]: virtio-vsock's
//! host streams) has that descriptor watched by the same worker thread, under
//! [`DeviceBackend::device_event_id`]; when it is readable the device handles it with the
//! vrings as above ([`virtio::ExternalQueues::process_external_event`]), so that host data
//! reaches the guest without waiting for a kick.
//!
//! A device whose requests finish on threads of its own (virtio-blk's I/O threads,
//! [`DeviceBackend::with_requests_in_flight`]) announces completions on that descriptor too;
//! the worker publishes them and takes more requests. When the front-end stops a vring
//! (`GET_VRING_BASE`) the device is handed that queue, no longer ready, before the ring's
//! position is answered: it waits for the requests in flight and returns them used, so the
//! position counts no request as taken that the driver will never see used. A reset or a
//! disconnection waits for them in the device's reset (each request holds its own clone of
//! the guest memory map, so a new memory table or the end of the connection never unmaps
//! memory under it).
//!
//! Errors of the guest's making never stop the worker thread (`vhost-user-backend` ends it
//! on any error `handle_event` returns): a queue the device cannot process (a broken ring) is
//! logged and left alone until the front-end stops it (`GET_VRING_BASE`), resets the device
//! or reconnects.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLockWriteGuard};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringState, VringT};
use virtio::{DeviceError, ExternalQueues, VirtioInterrupt, VirtioMemory};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

/// Guest memory as `vhost-user-backend` shares it: swapped whole on `SET_MEM_TABLE`.
pub type AtomicMemory = GuestMemoryAtomic<VirtioMemory>;

/// The protocol features every device here offers: `MQ` (the queue count) and
/// `RESET_DEVICE` (a device reset without dropping the connection); `REPLY_ACK` is added by
/// the `vhost` crate. Devices with a configuration space add [`CONFIG_FEATURE`].
pub const PROTOCOL_FEATURES: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::RESET_DEVICE);

/// `GET_CONFIG`/`SET_CONFIG`, offered by devices that have a configuration space (QEMU's
/// vhost-user-blk requires it; its vhost-user-rng warns when a back-end offers it).
pub const CONFIG_FEATURE: VhostUserProtocolFeatures = VhostUserProtocolFeatures::CONFIG;

/// Why the guest memory a front-end sent was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A region's file is shorter than the region: touching its end would raise SIGBUS.
    #[error(
        "memory region at guest address {guest_addr:#x} maps {len:#x} bytes at offset \
         {offset:#x} of a file of {file_len:#x} bytes"
    )]
    PastEndOfFile {
        /// Guest physical address of the region.
        guest_addr: u64,
        /// Its length.
        len: u64,
        /// Its offset in the file.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A region's file could not be examined.
    #[error("memory region at guest address {guest_addr:#x}: cannot stat its file: {source}")]
    Stat {
        /// Guest physical address of the region.
        guest_addr: u64,
        /// What fstat reported.
        #[source]
        source: io::Error,
    },
}

/// A device model served over vhost-user.
pub struct DeviceBackend {
    device: Mutex<Box<dyn ExternalQueues>>,
    name: &'static str,
    queue_sizes: Vec<u16>,
    features: u64,
    protocol_features: VhostUserProtocolFeatures,
    memory: Mutex<Option<AtomicMemory>>,
    /// Queues left alone after an error the device reported, until stopped or reset.
    stopped: Mutex<Vec<bool>>,
    /// The exit event of the next connection's worker thread ([`DeviceBackend::prepare`]).
    exit_event: Mutex<Option<(EventConsumer, EventNotifier)>>,
    /// The device's own descriptor to watch ([`ExternalQueues::external_event_fd`]).
    event_fd: Option<RawFd>,
    /// How to watch it: level-triggered unless the device asks otherwise.
    event_set: EventSet,
    /// Whether a queue the front-end stops is handed to the device to finish its requests in
    /// flight ([`DeviceBackend::with_requests_in_flight`]).
    finishes_stopped_queues: bool,
    /// This connection's vrings, as the worker thread last handed them over: what a stopped
    /// queue is finished on (requests are only ever taken by the worker, so none is in flight
    /// before it has handed them over once).
    vrings: Mutex<Vec<VringRwLock<AtomicMemory>>>,
}

/// What the worker thread asks the device to do.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// The driver kicked this queue.
    Kick(u16),
    /// The device's own descriptor is readable.
    DeviceEvent,
}

impl DeviceBackend {
    /// Serves `device`; `name` is for the log ("virtio-blk").
    pub fn new(device: Box<dyn ExternalQueues>, name: &'static str) -> Self {
        let queue_sizes = device.queue_max_sizes().to_vec();
        let features = device.features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        // virtio-rng has no configuration space; QEMU's virtio-net keeps its own (and warns
        // when a back-end offers CONFIG).
        let offers_config =
            ![virtio::device_type::RNG, virtio::device_type::NET].contains(&device.device_type());
        let protocol_features = if offers_config {
            PROTOCOL_FEATURES | CONFIG_FEATURE
        } else {
            PROTOCOL_FEATURES
        };
        Self {
            protocol_features,
            stopped: Mutex::new(vec![false; queue_sizes.len()]),
            event_fd: device.external_event_fd(),
            event_set: EventSet::IN,
            finishes_stopped_queues: false,
            vrings: Mutex::new(Vec::new()),
            device: Mutex::new(device),
            name,
            queue_sizes,
            features,
            memory: Mutex::new(None),
            exit_event: Mutex::new(None),
        }
    }

    /// Makes what the next connection's worker thread needs before `vhost-user-backend`
    /// starts it: the event that stops it when the connection ends (without one it would
    /// never stop, and dropping the daemon would wait for it forever).
    pub fn prepare(&self) -> io::Result<()> {
        let pair = new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)?;
        *lock(&self.exit_event) = Some(pair);
        Ok(())
    }

    /// The device model's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Forgets the front-end: the device is reset and the guest memory dropped, ready for the
    /// next connection.
    pub fn disconnected(&self) {
        // The reset waits for requests still in flight (each holds its own memory map).
        lock(&self.device).reset();
        *lock(&self.memory) = None;
        lock(&self.stopped).fill(false);
        lock(&self.vrings).clear();
    }

    /// For a device with requests in flight between two calls (virtio-blk's I/O threads):
    /// when the front-end stops a vring, the device is handed that queue, no longer ready,
    /// to wait for them and return them used before the ring's position is answered.
    pub fn with_requests_in_flight(mut self) -> Self {
        self.finishes_stopped_queues = true;
        self
    }

    /// Watches the device's own descriptor edge-triggered: for a device that reads it until
    /// it is empty or it cannot take more (virtio-net without receive buffers, resumed by the
    /// driver's next kick), so that a full descriptor never makes the worker thread spin.
    pub fn with_edge_triggered_event(mut self) -> Self {
        self.event_set = EventSet::IN | EventSet::EDGE_TRIGGERED;
        self
    }

    /// The events to watch [`DeviceBackend::device_event_fd`] for.
    pub fn device_event_set(&self) -> EventSet {
        self.event_set
    }

    /// The device's own descriptor the worker thread must watch, under
    /// [`DeviceBackend::device_event_id`], if it has one.
    pub fn device_event_fd(&self) -> Option<RawFd> {
        self.event_fd
    }

    /// The event id of [`DeviceBackend::device_event_fd`] in the worker thread: ids up to the
    /// queue count are the queues' and the worker's own (exit, vring enabled).
    pub fn device_event_id(&self) -> u64 {
        self.queue_sizes.len() as u64 + 1
    }

    /// Lets the device do `work` on `vrings`, then signals the call eventfds it asked for.
    fn process(&self, work: Work, vrings: &[VringRwLock<AtomicMemory>]) {
        let kicked = match work {
            Work::Kick(index) if usize::from(index) < vrings.len() => Some(usize::from(index)),
            Work::Kick(index) => {
                tracing::warn!(
                    index,
                    "{}: event for a queue that does not exist",
                    self.name
                );
                return;
            }
            Work::DeviceEvent => None,
        };
        if self.finishes_stopped_queues {
            let mut known = lock(&self.vrings);
            if known.is_empty() {
                *known = vrings.to_vec();
            }
        }
        let memory = lock(&self.memory).clone();
        let guard = memory.as_ref().map(GuestMemoryAtomic::memory);
        if kicked.is_some() && guard.is_none() {
            tracing::warn!(?work, "{}: queue kicked before any guest memory", self.name);
            return;
        }
        // A device event before any memory still drains the device's events (its descriptor
        // would stay readable), with every queue not ready.
        let empty = VirtioMemory::new();
        let mem: &VirtioMemory = guard.as_deref().unwrap_or(&empty);
        let mut device = lock(&self.device);
        let mut states: Vec<_> = vrings.iter().map(VringRwLock::get_mut).collect();
        let usable = self.usable(&states, guard.is_some());
        if kicked.is_some_and(|index| !usable.get(index).copied().unwrap_or(false)) {
            return;
        }
        let result = self.with_queues(&mut states, &usable, |queues, interrupt| match work {
            Work::Kick(index) => device.process_external_queue(index, mem, queues, interrupt),
            Work::DeviceEvent => device.process_external_event(mem, queues, interrupt),
        });
        if let Err(error) = result {
            self.stop_queue(kicked, &error);
        }
    }

    /// Hands the queue the front-end is stopping (`GET_VRING_BASE`, after the vring was made
    /// not ready) to a device with requests in flight, which returns them used; signals the
    /// call eventfd if the device asks (the front-end still has it).
    fn finish_stopped_queue(&self, index: usize) {
        let vrings = lock(&self.vrings).clone();
        let memory = lock(&self.memory).clone();
        let (Some(memory), Ok(queue)) = (memory, u16::try_from(index)) else {
            return;
        };
        if index >= vrings.len() {
            // The worker never handed the vrings over: nothing was taken, nothing in flight.
            return;
        }
        let mem = memory.memory();
        let mut device = lock(&self.device);
        let mut states: Vec<_> = vrings.iter().map(VringRwLock::get_mut).collect();
        let handed: Vec<bool> = (0..states.len()).map(|other| other == index).collect();
        let result = self.with_queues(&mut states, &handed, |queues, interrupt| {
            device.process_external_queue(queue, &mem, queues, interrupt)
        });
        if let Err(error) = result {
            tracing::warn!(
                queue = index,
                %error,
                "{}: cannot return the requests in flight on the stopped queue",
                self.name
            );
        }
    }

    /// Runs `work` on the queues of `states` (those not `handed` replaced by an idle queue,
    /// which the device leaves alone), then signals the call eventfd of each queue the
    /// device asked to interrupt the driver for.
    fn with_queues(
        &self,
        states: &mut [RwLockWriteGuard<'_, VringState<AtomicMemory>>],
        handed: &[bool],
        work: impl FnOnce(&mut [&mut Queue], &PendingInterrupt) -> Result<(), DeviceError>,
    ) -> Result<(), DeviceError> {
        let interrupt = PendingInterrupt::new(states.len());
        let mut idle: Vec<Queue> = states.iter().map(|_| Queue::default()).collect();
        let mut queues: Vec<&mut Queue> = states
            .iter_mut()
            .zip(idle.iter_mut())
            .zip(handed)
            .map(
                |((state, idle), &handed)| {
                    if handed { state.get_queue_mut() } else { idle }
                },
            )
            .collect();
        let result = work(&mut queues, &interrupt);
        drop(queues);
        for (index, state) in states.iter().enumerate() {
            if interrupt.requested(index)
                && let Err(error) = state.signal_used_queue()
            {
                tracing::warn!(index, %error, "{}: cannot signal the call eventfd", self.name);
            }
        }
        result
    }

    /// Which vrings the device may use: set up and enabled by the front-end, not stopped by
    /// a queue error, and guest memory to reach them.
    fn usable(
        &self,
        states: &[RwLockWriteGuard<'_, VringState<AtomicMemory>>],
        has_memory: bool,
    ) -> Vec<bool> {
        let stopped = lock(&self.stopped);
        states
            .iter()
            .enumerate()
            .map(|(index, state)| {
                has_memory
                    && state.is_enabled()
                    && state.get_queue().ready()
                    && !stopped.get(index).copied().unwrap_or(true)
            })
            .collect()
    }

    /// Leaves alone the queue a device error names (or the kicked one) until the front-end
    /// stops or resets it.
    fn stop_queue(&self, kicked: Option<usize>, error: &DeviceError) {
        let broken = match error {
            DeviceError::Queue { index, .. } => Some(usize::from(*index)),
            _ => kicked,
        };
        let Some(index) = broken else {
            tracing::error!(%error, "{}: device event failed", self.name);
            return;
        };
        tracing::error!(
            queue = index,
            %error,
            "{}: queue stopped until the front-end stops or resets it",
            self.name
        );
        if let Some(stopped) = lock(&self.stopped).get_mut(index) {
            *stopped = true;
        }
    }
}

/// Locks `mutex`, taking the data of a poisoned one: every critical section here leaves its
/// data consistent, and a panicked holder must not take the back-end down with it.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Refuses guest memory whose mappings reach past the end of their files.
fn check_memory(mem: &VirtioMemory) -> Result<(), MemoryError> {
    for region in mem.iter() {
        let Some(file_offset) = region.file_offset() else {
            continue;
        };
        let guest_addr = region.start_addr().0;
        let metadata = file_offset
            .file()
            .metadata()
            .map_err(|source| MemoryError::Stat { guest_addr, source })?;
        // Only regular files (memfd, tmpfs, hugetlbfs) have a length that bounds the mapping.
        if !metadata.is_file() {
            continue;
        }
        let offset = file_offset.start();
        let len = region.len();
        if offset
            .checked_add(len)
            .is_none_or(|end| end > metadata.len())
        {
            return Err(MemoryError::PastEndOfFile {
                guest_addr,
                len,
                offset,
                file_len: metadata.len(),
            });
        }
    }
    Ok(())
}

/// The queues the device asked to interrupt the driver for while processing; their call
/// eventfds are signalled once it is done.
struct PendingInterrupt {
    queues: Vec<AtomicBool>,
}

impl PendingInterrupt {
    fn new(count: usize) -> Self {
        Self {
            queues: (0..count).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn requested(&self, index: usize) -> bool {
        self.queues
            .get(index)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }
}

impl VirtioInterrupt for PendingInterrupt {
    fn signal_queue(&self, queue: u16) {
        if let Some(flag) = self.queues.get(usize::from(queue)) {
            flag.store(true, Ordering::Release);
        }
    }

    fn signal_config(&self) {
        // No device served here changes its configuration on its own; without a back-end
        // request channel there would be no way to tell the front-end anyway.
        tracing::warn!("configuration change notification dropped: not supported over vhost-user");
    }
}

impl VhostUserBackend for DeviceBackend {
    type Bitmap = virtio::dirty::DirtyBitmap;
    type Vring = VringRwLock<AtomicMemory>;

    fn num_queues(&self) -> usize {
        self.queue_sizes.len()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.queue_sizes.iter().copied().max().unwrap_or(0))
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn acked_features(&self, features: u64) {
        let virtio_features = features & !VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        lock(&self.device).ack_features(virtio_features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    fn reset_device(&self) {
        lock(&self.device).reset();
        lock(&self.stopped).fill(false);
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The vrings' queues carry the flag (vhost-user-backend sets it on them).
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // The vhost crate bounds `size` by the message size (at most a page).
        let mut data = vec![0u8; size as usize];
        lock(&self.device).read_config(u64::from(offset), &mut data);
        data
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        lock(&self.device).write_config(u64::from(offset), buf);
        Ok(())
    }

    fn update_memory(&self, atomic: AtomicMemory) -> io::Result<()> {
        let checked = check_memory(&atomic.memory());
        if let Err(error) = checked {
            // vhost-user-backend already installed the table for its vrings: empty it, so
            // nothing touches the bad mapping before the connection closes.
            if let Ok(guard) = atomic.lock() {
                guard.replace(VirtioMemory::new());
            }
            *lock(&self.memory) = None;
            return Err(io::Error::new(io::ErrorKind::InvalidInput, error));
        }
        *lock(&self.memory) = Some(atomic);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // One worker thread (the default `queues_per_thread`), one event made beforehand.
        lock(&self.exit_event).take()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // The front-end stopped the queue and may set it up afresh: process it again then.
        let index = usize::try_from(queue_index).unwrap_or(usize::MAX);
        if let Some(stopped) = lock(&self.stopped).get_mut(index) {
            *stopped = false;
        }
        if self.finishes_stopped_queues {
            self.finish_stopped_queue(index);
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if !evset.contains(EventSet::IN) {
            tracing::debug!(device_event, ?evset, "{}: unexpected event set", self.name);
        }
        let work = if u64::from(device_event) == self.device_event_id() {
            Work::DeviceEvent
        } else {
            Work::Kick(device_event)
        };
        self.process(work, vrings);
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap, MmapRegion};

    use super::*;

    fn rng_backend() -> DeviceBackend {
        DeviceBackend::new(
            Box::new(virtio::rng::Rng::new(Box::new(std::io::empty()))),
            "virtio-rng",
        )
    }

    /// Guest memory of `len` bytes mapped from a temporary file of `file_len` bytes.
    fn file_memory(len: usize, file_len: u64) -> VirtioMemory {
        // An unlinked file of a unique name (tests run in parallel).
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        file.set_len(file_len).unwrap();
        let region = MmapRegion::from_file(FileOffset::new(file, 0), len).unwrap();
        VirtioMemory::from_regions(vec![GuestRegionMmap::new(region, GuestAddress(0)).unwrap()])
            .unwrap()
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_refused() {
        let short = file_memory(0x2000, 0x1000);
        let whole = file_memory(0x2000, 0x2000);

        let refused = check_memory(&short);

        assert!(matches!(
            refused,
            Err(MemoryError::PastEndOfFile {
                len: 0x2000,
                file_len: 0x1000,
                ..
            })
        ));
        assert!(check_memory(&whole).is_ok());
    }

    #[test]
    fn refused_memory_is_emptied_for_the_vrings_too() {
        let backend = rng_backend();
        let atomic = AtomicMemory::new(file_memory(0x2000, 0x1000));

        let result = backend.update_memory(atomic.clone());

        assert!(result.is_err());
        assert_eq!(atomic.memory().num_regions(), 0);
        assert!(lock(&backend.memory).is_none());
    }

    #[test]
    fn features_add_protocol_features_and_config_only_where_there_is_one() {
        let rng = rng_backend();

        assert_ne!(
            rng.features() & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
        assert!(!rng.protocol_features().contains(CONFIG_FEATURE));
        assert!(
            rng.protocol_features()
                .contains(VhostUserProtocolFeatures::MQ)
        );
        assert_eq!((rng.num_queues(), rng.max_queue_size()), (1, 256));
    }
}
