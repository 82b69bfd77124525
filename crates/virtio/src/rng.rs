//! virtio-rng (entropy device, virtio 1.2, 5.4): one queue of device-writable buffers that
//! the device fills with bytes from a host source.
//!
//! The VMM gives it `/dev/urandom`; tests give a fake. Each request gets at most
//! [`MAX_BYTES_PER_REQUEST`] bytes (the spec lets the device write fewer than offered), so
//! a guest offering gigabytes cannot stall its vCPU. A chain that is malformed, reaches
//! outside guest memory or holds a device-readable buffer is returned used with 0 bytes.

use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::Bytes;

use crate::chain::writable_chain;
use crate::{
    ActivateError, ActiveQueue, DeviceError, DeviceStateError, ExternalQueues, VirtioDevice,
    VirtioDeviceState, VirtioInterrupt, VirtioMemory, device_type, features,
};

/// Maximum size of the request queue.
pub const RNG_QUEUE_SIZE: u16 = 256;
/// Most bytes one request receives.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

const REQUEST_QUEUE: u16 = 0;

type Active = ActiveQueue;

/// What a snapshot keeps of virtio-rng beyond its queue: its counter. (Entropy already
/// delivered is in guest memory; none is buffered.)
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RngState {
    /// [`Rng::bytes_delivered`].
    pub bytes_delivered: u64,
}

/// The virtio entropy device.
pub struct Rng {
    source: Box<dyn Read + Send>,
    queue_sizes: [u16; 1],
    active: Option<Active>,
    buffer: Vec<u8>,
    bytes_delivered: u64,
}

impl Rng {
    /// A device that reads its entropy from `source`.
    pub fn new(source: Box<dyn Read + Send>) -> Self {
        Self {
            source,
            queue_sizes: [RNG_QUEUE_SIZE],
            active: None,
            buffer: Vec::new(),
            bytes_delivered: 0,
        }
    }

    /// Bytes written to guest buffers since creation.
    pub fn bytes_delivered(&self) -> u64 {
        self.bytes_delivered
    }

    /// Fills the buffers of one chain; returns the bytes written (0 for a refused chain).
    fn fill(&mut self, mem: &VirtioMemory, buffers: &[Descriptor]) -> u32 {
        let mut written = 0usize;
        for buffer in buffers {
            let room = MAX_BYTES_PER_REQUEST - written;
            if room == 0 {
                break;
            }
            let want = (buffer.len() as usize).min(room);
            if want == 0 {
                continue;
            }
            let got = self.read_source(want);
            if mem.write_slice(&self.buffer[..got], buffer.addr()).is_err() {
                // Checked against guest memory just before; stop rather than guess.
                break;
            }
            written += got;
            if got < want {
                break;
            }
        }
        self.bytes_delivered += written as u64;
        // At most MAX_BYTES_PER_REQUEST.
        written as u32
    }

    /// Reads up to `want` bytes from the source into the scratch buffer; fewer only when
    /// the source ends or fails.
    fn read_source(&mut self, want: usize) -> usize {
        self.buffer.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.source.read(&mut self.buffer[got..want]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "virtio-rng source failed");
                    break;
                }
            }
        }
        got
    }
}

impl ExternalQueues for Rng {
    fn process_external_queue(
        &mut self,
        index: u16,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let queue = crate::device::single_external_queue(queues, index)?;
        self.drain(mem, queue, interrupt)
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        features::COMMON
    }

    fn activate(
        &mut self,
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.active = Some(ActiveQueue::activate(mem, queues, interrupt)?);
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        let mut active = ActiveQueue::take(&mut self.active, index)?;
        let result = self.drain(&active.mem, &mut active.queue, &*active.interrupt);
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        ActiveQueue::states(&self.active)
    }

    fn device_state(&self) -> Option<VirtioDeviceState> {
        Some(VirtioDeviceState::Rng(RngState {
            bytes_delivered: self.bytes_delivered,
        }))
    }

    fn restore_device_state(
        &mut self,
        state: Option<&VirtioDeviceState>,
    ) -> Result<(), DeviceStateError> {
        // `let … else` rather than `match`: other devices' variants fall into the refusal.
        let Some(VirtioDeviceState::Rng(rng_state)) = state else {
            return Err(DeviceStateError::wrong_device("virtio-rng", state));
        };
        self.bytes_delivered = rng_state.bytes_delivered;
        Ok(())
    }
}

impl Rng {
    /// Serves every available request of `queue`, with notifications from the driver off
    /// meanwhile, then interrupts the driver if it asked for it.
    fn drain(
        &mut self,
        mem: &VirtioMemory,
        queue: &mut Queue,
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let queue_error = |source| DeviceError::Queue {
            index: REQUEST_QUEUE,
            source,
        };
        let mut used_any = false;
        loop {
            queue.disable_notification(mem).map_err(queue_error)?;
            while let Some(chain) = queue.iter(mem).map_err(queue_error)?.next() {
                let head = chain.head_index();
                let len = match writable_chain(chain) {
                    Ok(buffers) => self.fill(mem, &buffers),
                    Err(error) => {
                        tracing::debug!(%error, "virtio-rng request refused");
                        0
                    }
                };
                match queue.add_used(mem, head, len) {
                    Ok(()) => used_any = true,
                    // A head index past the table: nothing to return it on; skip it.
                    Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                        tracing::debug!(head, "virtio-rng request with an invalid head skipped");
                    }
                    Err(error) => return Err(queue_error(error)),
                }
            }
            if !queue.enable_notification(mem).map_err(queue_error)? {
                break;
            }
        }
        if used_any && queue.needs_notification(mem).map_err(queue_error)? {
            interrupt.signal_queue(REQUEST_QUEUE);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{CountingSource, DriverQueue, RecordingInterrupt, WRITE, guest_memory};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
    use vm_memory::GuestAddress;

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;

    fn active_rng(
        mem: &VirtioMemory,
        driver: &DriverQueue<'_>,
        event_idx: bool,
    ) -> (Rng, Arc<RecordingInterrupt>) {
        let mut rng = Rng::new(Box::new(CountingSource::default()));
        let interrupt = Arc::new(RecordingInterrupt::default());
        let mut queue = driver.queue();
        queue.set_event_idx(event_idx);
        rng.activate(mem.clone(), vec![queue], interrupt.clone())
            .unwrap();
        (rng, interrupt)
    }

    fn bytes_at(mem: &VirtioMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
        data
    }

    #[test]
    fn a_request_is_filled_used_and_signalled() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 8, NEXT | WRITE, 1);
        driver.write_desc(1, 0x20000, 4, WRITE, 0);
        driver.publish(0, 0);
        let (mut rng, interrupt) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(bytes_at(&mem, 0x10000, 9), [0, 1, 2, 3, 4, 5, 6, 7, 0]);
        assert_eq!(bytes_at(&mem, 0x20000, 5), [8, 9, 10, 11, 0]);
        assert_eq!(driver.used_idx(), 1);
        assert_eq!(driver.used_elem(0), (0, 12));
        assert_eq!(interrupt.queue_signals(), vec![0]);
        assert_eq!(rng.bytes_delivered(), 12);
    }

    #[test]
    fn an_empty_buffer_does_not_end_the_request() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 0, NEXT | WRITE, 1);
        driver.write_desc(1, 0x20000, 2, WRITE, 0);
        driver.publish(0, 0);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_elem(0), (0, 2));
        assert_eq!(bytes_at(&mem, 0x20000, 2), [0, 1]);
    }

    #[test]
    fn every_available_request_is_served_in_one_notification() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 4);
        for i in 0..4u16 {
            driver.write_desc(i, 0x10000 + 0x100 * u64::from(i), 2, WRITE, 0);
            driver.publish(i, 3 - i);
        }
        let (mut rng, interrupt) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_idx(), 4);
        let used: Vec<_> = (0..4).map(|slot| driver.used_elem(slot)).collect();
        assert_eq!(used, vec![(3, 2), (2, 2), (1, 2), (0, 2)]);
        assert_eq!(bytes_at(&mem, 0x10300, 2), [0, 1]);
        assert_eq!(
            interrupt.queue_signals(),
            vec![0],
            "one interrupt for the batch"
        );
    }

    #[test]
    fn readable_buffers_are_returned_empty_and_untouched() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 8, 0, 0);
        driver.publish(0, 0);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_elem(0), (0, 0));
        assert_eq!(bytes_at(&mem, 0x10000, 8), [0; 8]);
    }

    #[test]
    fn a_buffer_reaching_into_the_hole_is_refused_whole() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 8, NEXT | WRITE, 1);
        driver.write_desc(1, 0xF_FFF0, 0x20, WRITE, 0);
        driver.publish(0, 0);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_elem(0), (0, 0));
        assert_eq!(bytes_at(&mem, 0x10000, 8), [0; 8], "no partial fill");
    }

    #[test]
    fn requests_are_capped() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 0x8_0000, WRITE, 0);
        driver.publish(0, 0);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_elem(0), (0, MAX_BYTES_PER_REQUEST as u32));
        let after = 0x10000 + MAX_BYTES_PER_REQUEST as u64;
        assert_eq!(bytes_at(&mem, after, 4), [0; 4]);
    }

    #[test]
    fn an_exhausted_source_gives_short_requests() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 16, WRITE, 0);
        driver.publish(0, 0);
        let mut rng = Rng::new(Box::new(&[7u8, 7, 7][..]));
        rng.activate(
            mem.clone(),
            vec![driver.queue()],
            Arc::new(RecordingInterrupt::default()),
        )
        .unwrap();

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_elem(0), (0, 3));
    }

    #[test]
    fn indirect_descriptors_are_followed() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        let table = DriverQueue::new(&mem, 0x40000, 2);
        table.write_desc(0, 0x50000, 4, NEXT | WRITE, 1);
        table.write_desc(1, 0x60000, 4, WRITE, 0);
        driver.write_desc(0, 0x40000, 32, VRING_DESC_F_INDIRECT as u16, 0);
        driver.publish(0, 0);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_elem(0), (0, 8));
        assert_eq!(bytes_at(&mem, 0x60000, 4), [4, 5, 6, 7]);
    }

    #[test]
    fn event_idx_suppresses_interrupts_until_used_event_is_crossed() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        for i in 0..3u16 {
            driver.write_desc(i, 0x10000 + 0x100 * u64::from(i), 4, WRITE, 0);
        }
        driver.set_used_event(1);
        let (mut rng, interrupt) = active_rng(&mem, &driver, true);

        driver.publish(0, 0);
        rng.process_queue(0).unwrap();
        let after_first = interrupt.queue_signals().len();
        driver.publish(1, 1);
        rng.process_queue(0).unwrap();
        let after_second = interrupt.queue_signals().len();
        driver.publish(2, 2);
        rng.process_queue(0).unwrap();

        assert_eq!((after_first, after_second), (0, 1));
        assert_eq!(
            interrupt.queue_signals().len(),
            1,
            "used_event 1 already passed"
        );
        assert_eq!(driver.avail_event(), 3, "the device asks for the next kick");
    }

    #[test]
    fn an_avail_index_too_far_ahead_is_a_device_error() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.set_avail_idx(17);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        let result = rng.process_queue(0);

        assert!(matches!(result, Err(DeviceError::Queue { index: 0, .. })));
    }

    #[test]
    fn an_invalid_head_is_skipped() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 4, WRITE, 0);
        driver.publish(0, 40);
        driver.publish(1, 0);
        let (mut rng, _) = active_rng(&mem, &driver, false);

        rng.process_queue(0).unwrap();

        assert_eq!(driver.used_idx(), 1);
        assert_eq!(driver.used_elem(0), (0, 4));
    }

    #[test]
    fn activation_needs_the_queue_and_reset_forgets_it() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        let mut rng = Rng::new(Box::new(std::io::empty()));
        let interrupt = Arc::new(RecordingInterrupt::default());

        let none = rng.activate(mem.clone(), Vec::new(), interrupt.clone());
        let not_ready = rng.activate(
            mem.clone(),
            vec![Queue::new(16).unwrap()],
            interrupt.clone(),
        );
        rng.activate(mem.clone(), vec![driver.queue()], interrupt)
            .unwrap();
        rng.reset();

        assert!(matches!(
            none,
            Err(ActivateError::QueueCount {
                expected: 1,
                given: 0
            })
        ));
        assert!(matches!(
            not_ready,
            Err(ActivateError::QueueNotEnabled { index: 0 })
        ));
        assert!(matches!(
            rng.process_queue(0),
            Err(DeviceError::NotActivated { index: 0 })
        ));
        assert!(matches!(
            rng.process_queue(1),
            Err(DeviceError::NoSuchQueue { index: 1 })
        ));
    }

    #[test]
    fn queue_states_report_the_positions_reached_while_active() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 4, WRITE, 0);
        driver.publish(0, 0);
        let (mut rng, _) = active_rng(&mem, &driver, true);

        rng.process_queue(0).unwrap();
        let states = rng.queue_states().unwrap();
        rng.reset();

        assert_eq!(states.len(), 1);
        assert_eq!((states[0].next_avail, states[0].next_used), (1, 1));
        assert!(states[0].event_idx_enabled);
        assert_eq!(states[0].desc_table, driver.desc);
        assert!(rng.queue_states().is_none(), "nothing to report once reset");
    }

    #[test]
    fn device_state_keeps_the_counter_and_refuses_other_states() {
        let mut rng = Rng::new(Box::new(std::io::empty()));
        let state = VirtioDeviceState::Rng(RngState {
            bytes_delivered: 77,
        });

        rng.restore_device_state(Some(&state)).unwrap();
        let missing = rng.restore_device_state(None);

        assert_eq!(rng.bytes_delivered(), 77);
        assert_eq!(rng.device_state(), Some(state));
        assert!(matches!(
            missing,
            Err(DeviceStateError::WrongDevice {
                expected: "virtio-rng",
                found: "no device state"
            })
        ));
        assert_eq!(rng.bytes_delivered(), 77, "refused: unchanged");
    }
    #[test]
    fn an_external_queue_is_filled_by_the_same_code() {
        let mem = guest_memory();
        let driver = DriverQueue::new(&mem, 0, 16);
        driver.write_desc(0, 0x10000, 4, WRITE, 0);
        driver.publish(0, 0);
        let mut queue = driver.queue();
        let interrupt = RecordingInterrupt::default();
        let mut rng = Rng::new(Box::new(CountingSource::default()));

        rng.process_external_queue(0, &mem, &mut [&mut queue], &interrupt)
            .unwrap();

        assert_eq!(bytes_at(&mem, 0x10000, 5), [0, 1, 2, 3, 0]);
        assert_eq!(driver.used_elem(0), (0, 4));
        assert_eq!(queue.next_avail(), 1);
        assert_eq!(interrupt.queue_signals(), vec![0]);
        assert!(matches!(
            rng.process_external_queue(3, &mem, &mut [&mut queue], &interrupt),
            Err(DeviceError::NoSuchQueue { index: 3 })
        ));
    }
}
