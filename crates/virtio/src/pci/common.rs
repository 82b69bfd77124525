//! The common configuration structure (virtio 1.2, 4.1.4.3) and the device status machine
//! (virtio 1.2, 2.1 and 3.1).
//!
//! | offset | field | access |
//! | --- | --- | --- |
//! | 0x00 | device_feature_select | le32 RW |
//! | 0x04 | device_feature | le32 RO |
//! | 0x08 | driver_feature_select | le32 RW |
//! | 0x0C | driver_feature | le32 RW |
//! | 0x10 | config_msix_vector | le16 RW |
//! | 0x12 | num_queues | le16 RO |
//! | 0x14 | device_status | u8 RW |
//! | 0x15 | config_generation | u8 RO |
//! | 0x16 | queue_select | le16 RW |
//! | 0x18 | queue_size | le16 RW |
//! | 0x1A | queue_msix_vector | le16 RW |
//! | 0x1C | queue_enable | le16 RW |
//! | 0x1E | queue_notify_off | le16 RO |
//! | 0x20 | queue_desc | le64 RW |
//! | 0x28 | queue_driver | le64 RW |
//! | 0x30 | queue_device | le64 RW |
//!
//! Each field is accessed with its own width; 64-bit fields also as two 32-bit halves.
//! Other accesses read 0 and are ignored, and so are writes the driver must not make:
//! features after `FEATURES_OK`, queue set-up of an enabled queue or after `DRIVER_OK`, a
//! queue size that is not a power of two up to the maximum, clearing status bits other than
//! by writing 0. The 1.2 fields past 0x38 (`queue_notif_config_data`, `queue_reset`) belong
//! to features this transport does not offer and read 0.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use super::VirtioPciDevice;
use crate::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use crate::{VirtioDevice, VirtioInterrupt, features};

/// Which half of a 64-bit field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    Low,
    High,
}

/// A field of the common configuration structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    DeviceFeatureSelect,
    DeviceFeature,
    DriverFeatureSelect,
    DriverFeature,
    ConfigMsixVector,
    NumQueues,
    DeviceStatus,
    ConfigGeneration,
    QueueSelect,
    QueueSize,
    QueueMsixVector,
    QueueEnable,
    QueueNotifyOff,
    QueueDesc(Half),
    QueueDriver(Half),
    QueueDevice(Half),
}

/// The field an access of `len` bytes at `offset` addresses exactly.
fn decode(offset: u64, len: usize) -> Option<Field> {
    let field = match (offset, len) {
        (0x00, 4) => Field::DeviceFeatureSelect,
        (0x04, 4) => Field::DeviceFeature,
        (0x08, 4) => Field::DriverFeatureSelect,
        (0x0C, 4) => Field::DriverFeature,
        (0x10, 2) => Field::ConfigMsixVector,
        (0x12, 2) => Field::NumQueues,
        (0x14, 1) => Field::DeviceStatus,
        (0x15, 1) => Field::ConfigGeneration,
        (0x16, 2) => Field::QueueSelect,
        (0x18, 2) => Field::QueueSize,
        (0x1A, 2) => Field::QueueMsixVector,
        (0x1C, 2) => Field::QueueEnable,
        (0x1E, 2) => Field::QueueNotifyOff,
        (0x20, 4) => Field::QueueDesc(Half::Low),
        (0x24, 4) => Field::QueueDesc(Half::High),
        (0x28, 4) => Field::QueueDriver(Half::Low),
        (0x2C, 4) => Field::QueueDriver(Half::High),
        (0x30, 4) => Field::QueueDevice(Half::Low),
        (0x34, 4) => Field::QueueDevice(Half::High),
        _ => return None,
    };
    Some(field)
}

/// Whether a 64-bit access at `offset` covers a whole 64-bit field.
fn is_64_bit_field(offset: u64, len: usize) -> bool {
    len == 8 && matches!(offset, 0x20 | 0x28 | 0x30)
}

fn half_of(value: u64, half: Half) -> u64 {
    match half {
        Half::Low => value & 0xFFFF_FFFF,
        Half::High => value >> 32,
    }
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Reads the common configuration at `offset`.
    pub(super) fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        if is_64_bit_field(offset, data.len()) {
            let (low, high) = data.split_at_mut(4);
            self.common_read(offset, low);
            self.common_read(offset + 4, high);
            return;
        }
        let value = decode(offset, data.len()).map_or(0, |field| self.read_field(field));
        let bytes = value.to_le_bytes();
        let len = data.len().min(bytes.len());
        data.fill(0);
        data[..len].copy_from_slice(&bytes[..len]);
    }

    /// Writes the common configuration at `offset`.
    pub(super) fn common_write(&mut self, offset: u64, data: &[u8]) {
        if is_64_bit_field(offset, data.len()) {
            self.common_write(offset, &data[..4]);
            self.common_write(offset + 4, &data[4..]);
            return;
        }
        let Some(field) = decode(offset, data.len()) else {
            return;
        };
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        self.write_field(field, u64::from_le_bytes(bytes));
    }

    fn read_field(&self, field: Field) -> u64 {
        let interrupt = self.interrupt.lock();
        let queue = self.queues.get(usize::from(self.queue_select));
        match field {
            Field::DeviceFeatureSelect => u64::from(self.device_feature_select),
            Field::DeviceFeature => {
                feature_word(self.device.features(), self.device_feature_select)
            }
            Field::DriverFeatureSelect => u64::from(self.driver_feature_select),
            Field::DriverFeature => feature_word(self.driver_features, self.driver_feature_select),
            Field::ConfigMsixVector => u64::from(interrupt.config_vector()),
            // At most MAX_QUEUES, checked at construction.
            Field::NumQueues => self.queues.len() as u64,
            Field::DeviceStatus => u64::from(self.status),
            Field::ConfigGeneration => u64::from(interrupt.config_generation()),
            Field::QueueSelect => u64::from(self.queue_select),
            Field::QueueMsixVector => match queue {
                Some(_) => u64::from(interrupt.queue_vector(usize::from(self.queue_select))),
                None => u64::from(super::NO_VECTOR),
            },
            Field::QueueNotifyOff => match queue {
                Some(_) => u64::from(self.queue_select),
                None => 0,
            },
            _ => queue.map_or(0, |queue| read_queue_field(queue, field)),
        }
    }

    fn write_field(&mut self, field: Field, value: u64) {
        // Every field is at most 32 bits wide; `value` holds only the bytes written.
        let word = value as u32;
        match field {
            Field::DeviceFeatureSelect => self.device_feature_select = word,
            Field::DriverFeatureSelect => self.driver_feature_select = word,
            Field::DriverFeature => self.write_driver_features(word),
            Field::ConfigMsixVector => self.interrupt.lock().set_config_vector(word as u16),
            Field::DeviceStatus => self.write_status(word as u8),
            Field::QueueSelect => self.queue_select = word as u16,
            Field::QueueMsixVector => {
                if usize::from(self.queue_select) < self.queues.len() {
                    let queue = usize::from(self.queue_select);
                    self.interrupt.lock().set_queue_vector(queue, word as u16);
                }
            }
            Field::DeviceFeature
            | Field::NumQueues
            | Field::ConfigGeneration
            | Field::QueueNotifyOff => {}
            _ => self.write_queue_field(field, word),
        }
    }

    fn write_driver_features(&mut self, word: u32) {
        if self.status & FEATURES_OK != 0 {
            tracing::debug!("driver features written after FEATURES_OK: ignored");
            return;
        }
        let shift = match self.driver_feature_select {
            0 => 0,
            1 => 32,
            // No feature bits exist past 63: a driver setting one fails FEATURES_OK.
            _ => {
                self.driver_features_beyond_64 |= word != 0;
                return;
            }
        };
        self.driver_features &= !(0xFFFF_FFFFu64 << shift);
        self.driver_features |= u64::from(word) << shift;
    }

    fn write_queue_field(&mut self, field: Field, word: u32) {
        let locked = self.status & DRIVER_OK != 0;
        let Some(queue) = self.queues.get_mut(usize::from(self.queue_select)) else {
            return;
        };
        if locked || queue.ready() {
            tracing::debug!(?field, "queue set-up after enabling: ignored");
            return;
        }
        match field {
            Field::QueueSize => {
                let size = word as u16;
                if let Err(error) = queue.try_set_size(size) {
                    tracing::debug!(size, max = queue.max_size(), %error, "queue size ignored");
                }
            }
            // Writing 0 is not allowed; the queue stays as it is.
            Field::QueueEnable if word == 1 => queue.set_ready(true),
            Field::QueueDesc(half) => {
                let (low, high) = split(half, word);
                queue.set_desc_table_address(low, high);
            }
            Field::QueueDriver(half) => {
                let (low, high) = split(half, word);
                queue.set_avail_ring_address(low, high);
            }
            Field::QueueDevice(half) => {
                let (low, high) = split(half, word);
                queue.set_used_ring_address(low, high);
            }
            _ => {}
        }
    }

    /// A driver write to device_status.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset_virtio();
            return;
        }
        // DEVICE_NEEDS_RESET is the device's to set; a driver echoing it back is fine.
        let requested = value & !DEVICE_NEEDS_RESET;
        let current = self.status & !DEVICE_NEEDS_RESET;
        if requested & current != current {
            tracing::debug!(
                value,
                status = self.status,
                "driver cleared status bits: ignored"
            );
            return;
        }
        let new = requested & !current;
        if new & ACKNOWLEDGE != 0 {
            self.status |= ACKNOWLEDGE;
        }
        if new & DRIVER != 0 && self.status & ACKNOWLEDGE != 0 {
            self.status |= DRIVER;
        }
        if new & FEATURES_OK != 0 && self.status & DRIVER != 0 {
            self.accept_features();
        }
        if new & DRIVER_OK != 0 && self.status & FEATURES_OK != 0 {
            self.status |= DRIVER_OK;
            self.activate();
        }
        if new & FAILED != 0 {
            self.status |= FAILED;
        }
    }

    /// FEATURES_OK: accepted only for a subset of the device's features with VERSION_1.
    fn accept_features(&mut self) {
        let offered = self.device.features();
        let accepted = self.driver_features;
        let unknown = accepted & !offered != 0 || self.driver_features_beyond_64;
        if unknown || accepted & features::VERSION_1 == 0 {
            tracing::debug!(accepted, offered, "FEATURES_OK refused");
            return;
        }
        self.status |= FEATURES_OK;
        let event_idx = accepted & features::RING_EVENT_IDX != 0;
        for queue in &mut self.queues {
            queue.set_event_idx(event_idx);
        }
        self.device.ack_features(accepted);
    }

    /// DRIVER_OK: hands the device copies of the queues, after checking the enabled ones
    /// lie in guest memory.
    fn activate(&mut self) {
        if let Some(index) = self
            .queues
            .iter()
            .position(|queue| queue.ready() && !queue.is_valid(&self.mem))
        {
            self.needs_reset(&format_args!("queue {index} is not inside guest memory"));
            return;
        }
        let copies: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|queue| Queue::try_from(queue.state()))
            .collect();
        let queues = match copies {
            Ok(queues) => queues,
            Err(error) => {
                self.needs_reset(&error);
                return;
            }
        };
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        match self.device.activate(self.mem.clone(), queues, interrupt) {
            Ok(()) => self.activated = true,
            Err(error) => self.needs_reset(&error),
        }
    }

    /// Virtio reset (status 0, or part of a PCI reset): the device drops its queues and
    /// every register goes back to its initial value.
    pub(super) fn reset_virtio(&mut self) {
        self.device.reset();
        for queue in &mut self.queues {
            queue.reset();
        }
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.driver_features_beyond_64 = false;
        self.status = 0;
        self.queue_select = 0;
        self.activated = false;
        self.interrupt.lock().reset_virtio();
    }
}

fn feature_word(features: u64, select: u32) -> u64 {
    match select {
        0 => features & 0xFFFF_FFFF,
        1 => features >> 32,
        _ => 0,
    }
}

fn read_queue_field(queue: &Queue, field: Field) -> u64 {
    match field {
        Field::QueueSize => u64::from(queue.size()),
        Field::QueueEnable => u64::from(queue.ready()),
        Field::QueueDesc(half) => half_of(queue.desc_table(), half),
        Field::QueueDriver(half) => half_of(queue.avail_ring(), half),
        Field::QueueDevice(half) => half_of(queue.used_ring(), half),
        _ => 0,
    }
}

/// The (low, high) arguments of virtio-queue's address setters for one half.
fn split(half: Half, word: u32) -> (Option<u32>, Option<u32>) {
    match half {
        Half::Low => (Some(word), None),
        Half::High => (None, Some(word)),
    }
}
