//! The queues of a multi-queue device while it is active (virtio-console, virtio-net), and
//! the bookkeeping every such device repeats: used entries, interrupts, snapshot positions.

use std::sync::Arc;

use virtio_queue::{Queue, QueueState, QueueT};

use crate::{ActivateError, DeviceError, VirtioInterrupt, VirtioMemory};

/// The queues of a multi-queue device while it is active, with the memory and interrupt it
/// was activated with.
pub(crate) struct ActiveQueues {
    pub(crate) mem: VirtioMemory,
    pub(crate) queues: Vec<Queue>,
    pub(crate) interrupt: Arc<dyn VirtioInterrupt>,
}

impl ActiveQueues {
    /// Takes `count` queues, all of which must be ready.
    pub(crate) fn activate(
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        count: usize,
    ) -> Result<Self, ActivateError> {
        if queues.len() != count {
            return Err(ActivateError::QueueCount {
                expected: count,
                given: queues.len(),
            });
        }
        if let Some(index) = queues.iter().position(|q| !q.ready()) {
            return Err(ActivateError::QueueNotEnabled { index });
        }
        Ok(ActiveQueues {
            mem,
            queues,
            interrupt,
        })
    }

    /// The positions of every queue, for snapshots.
    pub(crate) fn states(&self) -> Vec<QueueState> {
        self.queues.iter().map(|q| q.state()).collect()
    }

    /// Queue `index`, or an error naming it.
    pub(crate) fn queue(&mut self, index: u16) -> Result<&mut Queue, DeviceError> {
        self.queues
            .get_mut(usize::from(index))
            .ok_or(DeviceError::NoSuchQueue { index })
    }

    /// Returns `head` used with `len` bytes; a head outside the table is skipped (nothing to
    /// return it on). True when it was used.
    pub(crate) fn add_used(
        &mut self,
        index: u16,
        head: u16,
        len: u32,
    ) -> Result<bool, DeviceError> {
        let mem = self.mem.clone();
        match self.queue(index)?.add_used(&mem, head, len) {
            Ok(()) => Ok(true),
            Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                tracing::debug!(index, head, "virtio chain with an invalid head skipped");
                Ok(false)
            }
            Err(source) => Err(DeviceError::Queue { index, source }),
        }
    }

    /// Interrupts the driver for queue `index` if buffers were used and it asked for it.
    pub(crate) fn signal_if_needed(
        &mut self,
        index: u16,
        used_any: bool,
    ) -> Result<(), DeviceError> {
        if !used_any {
            return Ok(());
        }
        let mem = self.mem.clone();
        let needs = self
            .queue(index)?
            .needs_notification(&mem)
            .map_err(|source| DeviceError::Queue { index, source })?;
        if needs {
            self.interrupt.signal_queue(index);
        }
        Ok(())
    }
}

/// Maps a virtio-queue error on queue `index`.
pub(crate) fn queue_error(index: u16) -> impl Fn(virtio_queue::Error) -> DeviceError {
    move |source| DeviceError::Queue { index, source }
}
