//! Interrupt delivery of the PCI transport: an MSI-X vector per queue and one for
//! configuration changes, or, while MSI-X is disabled, the INTx line with the ISR register
//! saying why (virtio 1.2, 4.1.4.5 and 4.1.5.4).
//!
//! The state is shared between the transport (register accesses) and the device (which
//! signals from `process_queue`, later from its own thread), behind one mutex.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use devices::IrqLine;
use devices::pci::{MsixConfig, MsixNotify};

use crate::VirtioInterrupt;

/// The vector value meaning "no vector" (virtio 1.2, 4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xFFFF;
/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1 << 0;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 1 << 1;

/// The transport registers kept in [`InterruptState`], as a snapshot holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InterruptRegisters {
    pub(crate) isr: u8,
    pub(crate) config_vector: u16,
    pub(crate) queue_vectors: Vec<u16>,
    pub(crate) config_generation: u8,
}

/// The interrupt state of one virtio PCI function.
pub(crate) struct InterruptState {
    pub(crate) msix: MsixConfig,
    isr: u8,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    config_generation: u8,
    intx: Arc<dyn IrqLine>,
    intx_disabled: bool,
    intx_asserted: bool,
}

impl InterruptState {
    /// Reads and clears the ISR; deasserts INTx.
    pub(crate) fn read_isr(&mut self) -> u8 {
        let isr = std::mem::take(&mut self.isr);
        self.update_intx();
        isr
    }

    pub(crate) fn config_vector(&self) -> u16 {
        self.config_vector
    }

    /// Sets the configuration vector; a vector the table does not have reads back as
    /// [`NO_VECTOR`], which tells the driver the mapping failed.
    pub(crate) fn set_config_vector(&mut self, vector: u16) {
        self.config_vector = self.valid_vector(vector);
    }

    pub(crate) fn queue_vector(&self, queue: usize) -> u16 {
        self.queue_vectors.get(queue).copied().unwrap_or(NO_VECTOR)
    }

    pub(crate) fn set_queue_vector(&mut self, queue: usize, vector: u16) {
        let vector = self.valid_vector(vector);
        if let Some(slot) = self.queue_vectors.get_mut(queue) {
            *slot = vector;
        }
    }

    pub(crate) fn config_generation(&self) -> u8 {
        self.config_generation
    }

    /// Whether INTx would be asserted now, ignoring the command register's disable bit
    /// (what the PCI status register's Interrupt Status reports).
    pub(crate) fn intx_pending(&self) -> bool {
        self.isr != 0 && !self.msix.enabled()
    }

    /// Follows the command register's INTx Disable bit.
    pub(crate) fn set_intx_disabled(&mut self, disabled: bool) {
        self.intx_disabled = disabled;
        self.update_intx();
    }

    /// Re-evaluates INTx after MSI-X was enabled or disabled.
    pub(crate) fn msix_changed(&mut self) {
        self.update_intx();
    }

    /// Virtio reset: no vectors, nothing pending in the ISR. The MSI-X table is PCI state
    /// and stays.
    pub(crate) fn reset_virtio(&mut self) {
        self.isr = 0;
        self.config_vector = NO_VECTOR;
        self.queue_vectors.fill(NO_VECTOR);
        self.update_intx();
    }

    /// PCI reset: MSI-X back to power-on as well.
    pub(crate) fn reset_function(&mut self) {
        self.msix.reset();
        self.intx_disabled = false;
        self.reset_virtio();
    }

    /// The registers a snapshot keeps.
    pub(crate) fn registers(&self) -> InterruptRegisters {
        InterruptRegisters {
            isr: self.isr,
            config_vector: self.config_vector,
            queue_vectors: self.queue_vectors.clone(),
            config_generation: self.config_generation,
        }
    }

    /// Puts back registers checked by the caller (vectors the table has or [`NO_VECTOR`],
    /// one per queue) and the command register's INTx Disable bit, then drives INTx to
    /// match: a level the snapshot shows asserted is asserted again.
    pub(crate) fn restore_registers(&mut self, registers: InterruptRegisters, intx_disabled: bool) {
        self.isr = registers.isr;
        self.config_vector = self.valid_vector(registers.config_vector);
        let queue_vectors: Vec<u16> = registers
            .queue_vectors
            .iter()
            .map(|&vector| self.valid_vector(vector))
            .collect();
        for (slot, vector) in self.queue_vectors.iter_mut().zip(queue_vectors) {
            *slot = vector;
        }
        self.config_generation = registers.config_generation;
        self.set_intx_disabled(intx_disabled);
    }

    fn signal_queue(&mut self, queue: u16) {
        if self.msix.enabled() {
            self.send_vector(self.queue_vector(usize::from(queue)));
        } else {
            self.isr |= ISR_QUEUE;
            self.update_intx();
        }
    }

    fn signal_config(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        // The configuration bit is set even with MSI-X (virtio 1.2, 4.1.4.5.1).
        self.isr |= ISR_CONFIG;
        if self.msix.enabled() {
            self.send_vector(self.config_vector);
        } else {
            self.update_intx();
        }
    }

    fn send_vector(&mut self, vector: u16) {
        if vector == NO_VECTOR {
            return;
        }
        match self.msix.notify(vector) {
            MsixNotify::Sent | MsixNotify::Pending | MsixNotify::SendFailed => {}
            MsixNotify::Disabled | MsixNotify::InvalidVector => {
                tracing::debug!(vector, "virtio interrupt dropped: vector cannot deliver");
            }
        }
    }

    fn valid_vector(&self, vector: u16) -> u16 {
        if vector < self.msix.vectors() {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn update_intx(&mut self) {
        let level = self.intx_pending() && !self.intx_disabled;
        if level != self.intx_asserted {
            self.intx_asserted = level;
            self.intx.set_level(level);
        }
    }
}

/// The transport's [`VirtioInterrupt`]: shared by the PCI function and its device.
pub struct VirtioPciInterrupt {
    state: Mutex<InterruptState>,
}

impl VirtioPciInterrupt {
    /// Interrupts for `queues` queues through `msix` or `intx`.
    pub(crate) fn new(msix: MsixConfig, queues: usize, intx: Arc<dyn IrqLine>) -> Self {
        Self {
            state: Mutex::new(InterruptState {
                msix,
                isr: 0,
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; queues],
                config_generation: 0,
                intx,
                intx_disabled: false,
                intx_asserted: false,
            }),
        }
    }

    /// The shared state, recovering it if a holder panicked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, InterruptState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl VirtioInterrupt for VirtioPciInterrupt {
    fn signal_queue(&self, queue: u16) {
        self.lock().signal_queue(queue);
    }

    fn signal_config(&self) {
        self.lock().signal_config();
    }
}
