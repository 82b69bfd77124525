//! Snapshots of a virtio PCI function: [`VirtioPciDevice::state`] and
//! [`VirtioPciDevice::restore`].
//!
//! A [`VirtioPciState`] holds the configuration space and MSI-X state (from `devices::pci`),
//! the transport registers, every queue's configuration and position, and the device's own
//! state ([`VirtioDevice::device_state`]). Queue positions (`next_avail`, `next_used`) come
//! from the device, which holds the live queues once activated
//! ([`VirtioDevice::queue_states`]); the transport's copies never move. Whether a queue uses
//! `EVENT_IDX` is not stored: it follows from the accepted features, as at `FEATURES_OK`.
//!
//! Restoring into a freshly built function puts every register back and, for a device that
//! was activated, activates it again with queues at the saved positions, so the next
//! notification carries on where the snapshot stopped. A state file is untrusted: every
//! field is checked against this device and against what the transport itself can reach
//! (status bits in order, accepted features offered, vectors the MSI-X table has, queue
//! sizes, ring alignment, rings inside guest memory for a running device), and refused with
//! an error naming the field.

use std::sync::Arc;

use devices::pci::{MsixState, PciConfigState, PciDevice, regs};
use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::interrupt::InterruptRegisters;
use super::{ISR_CONFIG, ISR_QUEUE, NO_VECTOR, VirtioPciDevice, VirtioPciError};
use crate::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use crate::{VirtioDevice, VirtioDeviceState, VirtioInterrupt, features};

/// Every status bit the transport knows; others never appear in device_status.
const KNOWN_STATUS: u8 =
    ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | DEVICE_NEEDS_RESET | FAILED;
/// Message control bits of MSI-X in configuration space.
const MSIX_CONTROL: u16 = 2;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// The state of a virtio PCI function, for snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VirtioPciState {
    /// The virtio device type ([`crate::device_type`]): a state restores only into the same.
    pub device_type: u32,
    /// The PCI configuration space.
    pub config: PciConfigState,
    /// The MSI-X table, pending bits, enable and function mask.
    pub msix: MsixState,
    /// device_feature_select.
    pub device_feature_select: u32,
    /// driver_feature_select.
    pub driver_feature_select: u32,
    /// The driver's feature bits (accepted once `FEATURES_OK` is set).
    pub driver_features: u64,
    /// The driver wrote a non-zero feature word past bit 63 (FEATURES_OK will be refused).
    pub driver_features_beyond_64: bool,
    /// device_status ([`crate::status`]).
    pub device_status: u8,
    /// Whether the device was activated at `DRIVER_OK` (and not reset since).
    pub activated: bool,
    /// config_generation.
    pub config_generation: u8,
    /// config_msix_vector ([`NO_VECTOR`] for none).
    pub config_msix_vector: u16,
    /// queue_select (any value the driver wrote).
    pub queue_select: u16,
    /// The ISR status byte ([`ISR_QUEUE`], [`ISR_CONFIG`]), not yet read by the driver.
    pub isr: u8,
    /// One entry per queue of the device.
    pub queues: Vec<VirtioQueueState>,
    /// The device-specific state ([`VirtioDevice::device_state`]).
    pub device: Option<VirtioDeviceState>,
}

/// One virtqueue's configuration and position.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VirtioQueueState {
    /// queue_size.
    pub size: u16,
    /// queue_enable.
    pub ready: bool,
    /// queue_msix_vector ([`NO_VECTOR`] for none).
    pub msix_vector: u16,
    /// queue_desc: the descriptor table.
    pub desc_table: u64,
    /// queue_driver: the available ring.
    pub avail_ring: u64,
    /// queue_device: the used ring.
    pub used_ring: u64,
    /// Next available ring entry the device will take (0 unless activated).
    pub next_avail: u16,
    /// Next used ring entry the device will fill (0 unless activated).
    pub next_used: u16,
}

/// An [`VirtioPciError::InvalidState`] for `field`.
fn invalid(field: impl Into<String>, reason: impl Into<String>) -> VirtioPciError {
    VirtioPciError::InvalidState {
        field: field.into(),
        reason: reason.into(),
    }
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// The function's state, for a snapshot taken while the vCPUs are paused.
    ///
    /// Refused for an activated device that cannot report its queue positions
    /// ([`VirtioDevice::queue_states`]): restoring it would replay or skip requests.
    pub fn state(&self) -> Result<VirtioPciState, VirtioPciError> {
        let positions = self.queue_positions()?;
        // Asked before locking the interrupt state, which a device may lock itself.
        let device = self.device.device_state();
        let interrupt = self.interrupt.lock();
        let registers = interrupt.registers();
        let queues = self
            .queues
            .iter()
            .zip(positions)
            .enumerate()
            .map(
                |(index, (queue, (next_avail, next_used)))| VirtioQueueState {
                    size: queue.size(),
                    ready: queue.ready(),
                    msix_vector: interrupt.queue_vector(index),
                    desc_table: queue.desc_table(),
                    avail_ring: queue.avail_ring(),
                    used_ring: queue.used_ring(),
                    next_avail,
                    next_used,
                },
            )
            .collect();
        Ok(VirtioPciState {
            device_type: self.device.device_type(),
            config: self.config.state(),
            msix: interrupt.msix.state(),
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            driver_features_beyond_64: self.driver_features_beyond_64,
            device_status: self.status,
            activated: self.activated,
            config_generation: registers.config_generation,
            config_msix_vector: registers.config_vector,
            queue_select: self.queue_select,
            isr: registers.isr,
            queues,
            device,
        })
    }

    /// Puts `state` (from [`VirtioPciDevice::state`], possibly in another process) into this
    /// function, normally freshly built with the same device model and memory layout (one
    /// that was running is reset first). A device that was activated is activated again with its queues at the saved
    /// positions; one that was not stays inactive. An interrupt the ISR shows pending
    /// asserts INTx again; MSI-X vectors pending and unmasked are delivered.
    ///
    /// An invalid state is refused with an error naming the field. Checks that need no
    /// change come first and leave the function untouched; if the device refuses its own
    /// state or its re-activation, the function is put back to power-on (a PCI reset) and
    /// should be discarded.
    pub fn restore(&mut self, state: &VirtioPciState) -> Result<(), VirtioPciError> {
        let device_type = self.device.device_type();
        if state.device_type != device_type {
            return Err(VirtioPciError::StateDeviceType {
                expected: device_type,
                found: state.device_type,
            });
        }
        self.check_registers(state)?;
        let queues = self.checked_queues(state)?;
        let mut config = self.config.clone();
        config.restore(&state.config)?;
        self.check_msix_control(&config, &state.msix)?;
        self.interrupt.lock().msix.restore(&state.msix)?;
        // From here on a failure leaves pieces restored: back to power-on instead.
        let applied = self.apply(state, config, queues);
        if applied.is_err() {
            PciDevice::reset(self);
        }
        applied
    }

    /// `(next_avail, next_used)` of every queue: the device's while it is active.
    fn queue_positions(&self) -> Result<Vec<(u16, u16)>, VirtioPciError> {
        if !self.activated {
            return Ok(self
                .queues
                .iter()
                .map(|queue| (queue.next_avail(), queue.next_used()))
                .collect());
        }
        let device_type = self.device.device_type();
        let states = self
            .device
            .queue_states()
            .ok_or(VirtioPciError::SnapshotUnsupported { device_type })?;
        if states.len() != self.queues.len() {
            return Err(VirtioPciError::QueueStateCount {
                device_type,
                expected: self.queues.len(),
                given: states.len(),
            });
        }
        Ok(states
            .iter()
            .map(|queue| (queue.next_avail, queue.next_used))
            .collect())
    }

    /// The transport registers: status machine, features, vectors, ISR.
    fn check_registers(&self, state: &VirtioPciState) -> Result<(), VirtioPciError> {
        check_status(state.device_status, state.activated)?;
        if state.device_status & FEATURES_OK != 0 {
            let offered = self.device.features();
            let accepted = state.driver_features;
            if accepted & !offered != 0 || accepted & features::VERSION_1 == 0 {
                return Err(invalid(
                    "driver_features",
                    format!(
                        "{accepted:#x} accepted with FEATURES_OK, the device offers \
                         {offered:#x} (VERSION_1 required)"
                    ),
                ));
            }
            if state.driver_features_beyond_64 {
                return Err(invalid(
                    "driver_features_beyond_64",
                    "set with FEATURES_OK, which the transport refuses",
                ));
            }
        }
        if state.isr & !(ISR_QUEUE | ISR_CONFIG) != 0 {
            return Err(invalid(
                "isr",
                format!("{:#x} sets bits the ISR does not have", state.isr),
            ));
        }
        self.check_vector("config_msix_vector", state.config_msix_vector)
    }

    /// A vector the MSI-X table has, or none.
    fn check_vector(&self, field: &str, vector: u16) -> Result<(), VirtioPciError> {
        let vectors = self.interrupt.lock().msix.vectors();
        if vector == NO_VECTOR || vector < vectors {
            return Ok(());
        }
        Err(invalid(
            field,
            format!("vector {vector} but the MSI-X table has {vectors} (0xffff for none)"),
        ))
    }

    /// Every queue checked and rebuilt from the state: the transport's copies (at position
    /// 0, as they always are) and the device's (at the saved positions).
    fn checked_queues(&self, state: &VirtioPciState) -> Result<RestoredQueues, VirtioPciError> {
        if state.queues.len() != self.queues.len() {
            return Err(invalid(
                "queues",
                format!(
                    "{} queues, this device has {}",
                    state.queues.len(),
                    self.queues.len()
                ),
            ));
        }
        let event_idx = state.device_status & FEATURES_OK != 0
            && state.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = RestoredQueues::default();
        for (index, (saved, current)) in state.queues.iter().zip(&self.queues).enumerate() {
            let field = |name: &str| format!("queues[{index}].{name}");
            self.check_vector(&field("msix_vector"), saved.msix_vector)?;
            if !state.activated && (saved.next_avail, saved.next_used) != (0, 0) {
                return Err(invalid(
                    field("next_avail"),
                    format!(
                        "positions {}/{} for a device that is not activated (always 0)",
                        saved.next_avail, saved.next_used
                    ),
                ));
            }
            let queue_state = checked_queue_state(saved, current.max_size(), event_idx, &field)?;
            let rebuild = |queue_state: QueueState| {
                Queue::try_from(queue_state)
                    .map_err(|error: virtio_queue::Error| invalid(field("size"), error.to_string()))
            };
            let device_queue = rebuild(queue_state)?;
            if state.activated && device_queue.ready() && !device_queue.is_valid(&self.mem) {
                return Err(invalid(
                    format!("queues[{index}]"),
                    "the rings of a running queue are not inside guest memory",
                ));
            }
            queues.transport.push(rebuild(QueueState {
                next_avail: 0,
                next_used: 0,
                ..queue_state
            })?);
            queues.device.push(device_queue);
        }
        Ok(queues)
    }

    /// MSI-X enable and function mask are both in configuration space and in the MSI-X
    /// state; they must agree.
    fn check_msix_control(
        &self,
        config: &devices::pci::PciConfigSpace,
        msix: &MsixState,
    ) -> Result<(), VirtioPciError> {
        let Some(cap) = self
            .config
            .capabilities()
            .into_iter()
            .find_map(|(id, offset)| (id == regs::CAP_ID_MSIX).then_some(offset))
        else {
            return Ok(());
        };
        let control = config.read_u16(cap + MSIX_CONTROL);
        let pairs = [
            ("msix.enabled", msix.enabled, control & MSIX_ENABLE != 0),
            (
                "msix.function_masked",
                msix.function_masked,
                control & MSIX_FUNCTION_MASK != 0,
            ),
        ];
        for (field, state, in_config) in pairs {
            if state != in_config {
                return Err(invalid(
                    field,
                    format!(
                        "{state}, but the MSI-X message control in the configuration space \
                         ({control:#06x}) says {in_config}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies a checked state; only the device can still refuse (its state, activation).
    fn apply(
        &mut self,
        state: &VirtioPciState,
        config: devices::pci::PciConfigSpace,
        queues: RestoredQueues,
    ) -> Result<(), VirtioPciError> {
        // Whatever the function was doing before is dropped (a restore into a running one).
        self.reset_virtio();
        self.device.restore_device_state(state.device.as_ref())?;
        self.config = config;
        self.device_feature_select = state.device_feature_select;
        self.driver_feature_select = state.driver_feature_select;
        self.driver_features = state.driver_features;
        self.driver_features_beyond_64 = state.driver_features_beyond_64;
        self.status = state.device_status;
        self.queue_select = state.queue_select;
        let registers = InterruptRegisters {
            isr: state.isr,
            config_vector: state.config_msix_vector,
            queue_vectors: state.queues.iter().map(|queue| queue.msix_vector).collect(),
            config_generation: state.config_generation,
        };
        self.interrupt
            .lock()
            .restore_registers(registers, self.config.intx_disabled());
        if state.device_status & FEATURES_OK != 0 {
            self.device.ack_features(state.driver_features);
        }
        self.queues = queues.transport;
        if state.activated {
            let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
            self.device
                .activate(self.mem.clone(), queues.device, interrupt)?;
            self.activated = true;
        }
        Ok(())
    }
}

/// The status machine's invariants: only known bits, each step after the one before, and
/// a device that is not running after `DRIVER_OK` only because it needs a reset.
fn check_status(status: u8, activated: bool) -> Result<(), VirtioPciError> {
    if status & !KNOWN_STATUS != 0 {
        return Err(invalid(
            "device_status",
            format!("{status:#x} sets bits no device status has"),
        ));
    }
    let steps = [
        (DRIVER, ACKNOWLEDGE, "DRIVER without ACKNOWLEDGE"),
        (FEATURES_OK, DRIVER, "FEATURES_OK without DRIVER"),
        (DRIVER_OK, FEATURES_OK, "DRIVER_OK without FEATURES_OK"),
    ];
    for (bit, needs, reason) in steps {
        if status & bit != 0 && status & needs == 0 {
            return Err(invalid("device_status", format!("{status:#x}: {reason}")));
        }
    }
    if activated && status & DRIVER_OK == 0 {
        return Err(invalid(
            "activated",
            format!("true with device_status {status:#x}, which lacks DRIVER_OK"),
        ));
    }
    if !activated && status & DRIVER_OK != 0 && status & DEVICE_NEEDS_RESET == 0 {
        return Err(invalid(
            "activated",
            format!(
                "false with device_status {status:#x}: a device past DRIVER_OK runs \
                 unless it needs a reset"
            ),
        ));
    }
    Ok(())
}

/// The queues a restore puts in place.
#[derive(Default)]
struct RestoredQueues {
    /// The transport's copies, at position 0.
    transport: Vec<Queue>,
    /// The device's, at the saved positions (handed over if the device was activated).
    device: Vec<Queue>,
}

/// `saved` as virtio-queue's state, refusing what the driver could not have set (a size
/// that is not a power of two up to `max_size`, misaligned rings) with the field named.
fn checked_queue_state(
    saved: &VirtioQueueState,
    max_size: u16,
    event_idx: bool,
    field: &dyn Fn(&str) -> String,
) -> Result<QueueState, VirtioPciError> {
    if saved.size == 0 || saved.size > max_size || !saved.size.is_power_of_two() {
        return Err(invalid(
            field("size"),
            format!(
                "{} is not a power of two up to the maximum {max_size}",
                saved.size
            ),
        ));
    }
    let addresses = [
        ("desc_table", saved.desc_table, 16),
        ("avail_ring", saved.avail_ring, 2),
        ("used_ring", saved.used_ring, 4),
    ];
    for (name, address, alignment) in addresses {
        if !address.is_multiple_of(alignment) {
            return Err(invalid(
                field(name),
                format!("{address:#x} is not {alignment}-byte aligned"),
            ));
        }
    }
    Ok(QueueState {
        max_size,
        next_avail: saved.next_avail,
        next_used: saved.next_used,
        event_idx_enabled: event_idx,
        size: saved.size,
        ready: saved.ready,
        desc_table: saved.desc_table,
        avail_ring: saved.avail_ring,
        used_ring: saved.used_ring,
    })
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
