//! Tests of the PCI transport, driving it as a driver would: configuration space writes
//! (applied and announced the way `PciRoot` does), BAR reads and writes.

use std::sync::Arc;

use devices::pci::{PciDevice, regs};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::features;
use crate::rng::Rng;
use crate::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use crate::test_utils::{
    CountingSource, DriverQueue, RecordingIrq, RecordingMsi, WRITE, guest_memory,
};

pub(super) const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub(super) const DEVICE_FEATURE: u64 = 0x04;
pub(super) const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub(super) const DRIVER_FEATURE: u64 = 0x0C;
pub(super) const CONFIG_MSIX_VECTOR: u64 = 0x10;
pub(super) const NUM_QUEUES: u64 = 0x12;
pub(super) const DEVICE_STATUS: u64 = 0x14;
pub(super) const CONFIG_GENERATION: u64 = 0x15;
pub(super) const QUEUE_SELECT: u64 = 0x16;
pub(super) const QUEUE_SIZE: u64 = 0x18;
pub(super) const QUEUE_MSIX_VECTOR: u64 = 0x1A;
pub(super) const QUEUE_ENABLE: u64 = 0x1C;
pub(super) const QUEUE_NOTIFY_OFF: u64 = 0x1E;
pub(super) const QUEUE_DESC: u64 = 0x20;
pub(super) const QUEUE_DRIVER: u64 = 0x28;
pub(super) const QUEUE_DEVICE: u64 = 0x30;

pub(super) struct Harness {
    pub(super) dev: VirtioPciDevice<Rng>,
    pub(super) mem: VirtioMemory,
    pub(super) msi: Arc<RecordingMsi>,
    pub(super) irq: Arc<RecordingIrq>,
}

pub(super) fn harness() -> Harness {
    let mem = guest_memory();
    let msi = Arc::new(RecordingMsi::default());
    let irq = Arc::new(RecordingIrq::default());
    let rng = Rng::new(Box::new(CountingSource::default()));
    let dev = VirtioPciDevice::new(rng, mem.clone(), msi.clone(), irq.clone()).unwrap();
    Harness { dev, mem, msi, irq }
}

/// A guest configuration write, as the root applies it.
pub(super) fn config_write(dev: &mut dyn PciDevice, offset: u16, data: &[u8]) {
    dev.config_mut().write(offset, data);
    dev.config_written(offset, data.len());
}

pub(super) fn config_read_u32(dev: &mut dyn PciDevice, offset: u16) -> u32 {
    let mut data = [0u8; 4];
    dev.config_read(offset, &mut data);
    u32::from_le_bytes(data)
}

pub(super) fn write(dev: &mut dyn PciDevice, offset: u64, data: &[u8]) {
    dev.bar_write(VIRTIO_BAR, COMMON_CFG_OFFSET + offset, data);
}

pub(super) fn read<const N: usize>(dev: &mut dyn PciDevice, offset: u64) -> u64 {
    let mut data = [0u8; N];
    dev.bar_read(VIRTIO_BAR, COMMON_CFG_OFFSET + offset, &mut data);
    let mut wide = [0u8; 8];
    wide[..N].copy_from_slice(&data);
    u64::from_le_bytes(wide)
}

pub(super) fn set_status(dev: &mut dyn PciDevice, status: u8) {
    write(dev, DEVICE_STATUS, &[status]);
}

pub(super) fn status(dev: &mut dyn PciDevice) -> u8 {
    read::<1>(dev, DEVICE_STATUS) as u8
}

pub(super) fn device_features(dev: &mut dyn PciDevice) -> u64 {
    write(dev, DEVICE_FEATURE_SELECT, &0u32.to_le_bytes());
    let low = read::<4>(dev, DEVICE_FEATURE);
    write(dev, DEVICE_FEATURE_SELECT, &1u32.to_le_bytes());
    low | (read::<4>(dev, DEVICE_FEATURE) << 32)
}

pub(super) fn write_driver_features(dev: &mut dyn PciDevice, features: u64) {
    for select in 0..2u32 {
        write(dev, DRIVER_FEATURE_SELECT, &select.to_le_bytes());
        let word = (features >> (32 * select)) as u32;
        write(dev, DRIVER_FEATURE, &word.to_le_bytes());
    }
}

/// ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
pub(super) fn negotiate(dev: &mut dyn PciDevice, features: u64) -> u8 {
    set_status(dev, ACKNOWLEDGE);
    set_status(dev, ACKNOWLEDGE | DRIVER);
    write_driver_features(dev, features);
    set_status(dev, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    status(dev)
}

pub(super) fn write_address(dev: &mut dyn PciDevice, field: u64, addr: GuestAddress) {
    write(dev, field, &(addr.0 as u32).to_le_bytes());
    write(dev, field + 4, &((addr.0 >> 32) as u32).to_le_bytes());
}

/// Configures queue 0 on the rings of `vq` and enables it.
pub(super) fn setup_queue(dev: &mut dyn PciDevice, vq: &DriverQueue<'_>, size: u16, vector: u16) {
    write(dev, QUEUE_SELECT, &0u16.to_le_bytes());
    write(dev, QUEUE_SIZE, &size.to_le_bytes());
    write(dev, QUEUE_MSIX_VECTOR, &vector.to_le_bytes());
    write_address(dev, QUEUE_DESC, GuestAddress(vq.desc));
    write_address(dev, QUEUE_DRIVER, GuestAddress(vq.avail));
    write_address(dev, QUEUE_DEVICE, GuestAddress(vq.used));
    write(dev, QUEUE_ENABLE, &1u16.to_le_bytes());
}

pub(super) fn enable_bus_master(dev: &mut dyn PciDevice) {
    let command = regs::COMMAND_MEMORY | regs::COMMAND_BUS_MASTER;
    config_write(dev, regs::COMMAND, &command.to_le_bytes());
}

pub(super) fn msix_cap(dev: &dyn PciDevice) -> u16 {
    dev.config()
        .capabilities()
        .into_iter()
        .find(|&(id, _)| id == regs::CAP_ID_MSIX)
        .map(|(_, offset)| offset)
        .unwrap()
}

/// Enables MSI-X and points vector `v` at address 0xFEE0_0000 with data 0x40 + v.
pub(super) fn enable_msix(dev: &mut dyn PciDevice) {
    for vector in 0..2u64 {
        let entry = vector * 16;
        dev.bar_write(MSIX_BAR, entry, &0xFEE0_0000u64.to_le_bytes());
        dev.bar_write(MSIX_BAR, entry + 8, &(0x40 + vector as u32).to_le_bytes());
        dev.bar_write(MSIX_BAR, entry + 12, &0u32.to_le_bytes());
    }
    let cap = msix_cap(dev);
    config_write(dev, cap + 3, &[0x80]);
}

/// A driver's full bring-up of the rng on the rings of `vq`.
pub(super) fn bring_up(dev: &mut dyn PciDevice, vq: &DriverQueue<'_>, features: u64, msix: bool) {
    enable_bus_master(dev);
    if msix {
        enable_msix(dev);
    }
    assert_ne!(negotiate(dev, features) & FEATURES_OK, 0);
    setup_queue(dev, vq, 16, 1);
    write(dev, CONFIG_MSIX_VECTOR, &0u16.to_le_bytes());
    set_status(dev, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
}

pub(super) fn notify(dev: &mut dyn PciDevice, queue: u16) {
    let offset = NOTIFY_CFG_OFFSET + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER);
    dev.bar_write(VIRTIO_BAR, offset, &queue.to_le_bytes());
}

pub(super) fn publish_write_buffer(vq: &DriverQueue<'_>, slot: u16, addr: u64, len: u32) {
    vq.write_desc(slot, addr, len, WRITE, 0);
    vq.publish(slot, slot);
}

#[test]
fn identity_bars_and_capabilities_follow_the_modern_layout() {
    let h = harness();
    let config = h.dev.config();

    let caps = config.capabilities();
    let vendor_types: Vec<u8> = caps
        .iter()
        .filter(|&&(id, _)| id == regs::CAP_ID_VENDOR)
        .map(|&(_, offset)| config.read_u8(offset + 3))
        .collect();
    let notify = caps[2].1;

    assert_eq!(config.read_u32(0), 0x1044_1AF4);
    assert_eq!(config.read_u32(8) >> 8, 0xFF_0000);
    assert_eq!(config.read_u8(regs::REVISION_ID), 1);
    assert_eq!(config.read_u8(regs::INTERRUPT_PIN), 1);
    assert_eq!(caps[0].0, regs::CAP_ID_MSIX);
    assert_eq!(vendor_types, vec![1, 2, 3, 4, 5]);
    assert_eq!(config.read_u8(notify + 2), 20, "notify cap_len");
    assert_eq!(config.read_u8(notify + 4), VIRTIO_BAR as u8);
    assert_eq!(config.read_u32(notify + 8), 0x3000);
    assert_eq!(config.read_u32(notify + 16), NOTIFY_OFF_MULTIPLIER);
    let bar = config.bar(VIRTIO_BAR).unwrap();
    assert_eq!(
        (bar.size, bar.kind, bar.prefetchable),
        (0x4000, devices::pci::BarKind::Mmio64, true)
    );
    assert_eq!(config.bar(MSIX_BAR).unwrap().size, 0x1000);
}

#[test]
fn device_offers_version_1_and_the_ring_features() {
    let mut h = harness();

    let offered = device_features(&mut h.dev);
    let num_queues = read::<2>(&mut h.dev, NUM_QUEUES);

    assert_eq!(offered, features::COMMON);
    assert_eq!(num_queues, 1);
}

#[test]
fn features_ok_accepts_a_subset_with_version_1() {
    let mut h = harness();

    let status = negotiate(&mut h.dev, features::VERSION_1 | features::RING_EVENT_IDX);

    assert_eq!(status, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(
        h.dev.driver_features(),
        features::VERSION_1 | features::RING_EVENT_IDX
    );
}

#[test]
fn features_ok_is_refused_for_unknown_features_or_without_version_1() {
    for driver_features in [
        features::VERSION_1 | 1 << 5,
        features::RING_EVENT_IDX,
        1 << 63,
    ] {
        let mut h = harness();

        let status = negotiate(&mut h.dev, driver_features);

        assert_eq!(status & FEATURES_OK, 0, "features {driver_features:#x}");
    }
    let mut h = harness();
    write(&mut h.dev, DRIVER_FEATURE_SELECT, &2u32.to_le_bytes());
    write(&mut h.dev, DRIVER_FEATURE, &1u32.to_le_bytes());
    assert_eq!(
        negotiate(&mut h.dev, features::VERSION_1) & FEATURES_OK,
        0,
        "bit 64"
    );
}

#[test]
fn features_cannot_change_after_features_ok() {
    let mut h = harness();
    negotiate(&mut h.dev, features::VERSION_1);

    write_driver_features(&mut h.dev, features::COMMON);

    assert_eq!(h.dev.driver_features(), features::VERSION_1);
}

#[test]
fn status_bits_must_come_in_order_and_cannot_be_cleared() {
    let mut h = harness();

    set_status(&mut h.dev, DRIVER);
    let without_ack = status(&mut h.dev);
    set_status(&mut h.dev, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    let driver_ok_early = status(&mut h.dev);
    set_status(&mut h.dev, ACKNOWLEDGE);
    let cleared = status(&mut h.dev);
    set_status(&mut h.dev, ACKNOWLEDGE | DRIVER | FAILED);

    assert_eq!(without_ack, 0);
    assert_eq!(driver_ok_early, ACKNOWLEDGE | DRIVER);
    assert_eq!(cleared, ACKNOWLEDGE | DRIVER);
    assert_eq!(status(&mut h.dev), ACKNOWLEDGE | DRIVER | FAILED);
    assert!(!h.dev.is_activated());
}

#[test]
fn queue_size_must_be_a_power_of_two_within_the_maximum() {
    let mut h = harness();
    write(&mut h.dev, QUEUE_SELECT, &0u16.to_le_bytes());
    let max = read::<2>(&mut h.dev, QUEUE_SIZE);

    let mut sizes = Vec::new();
    for size in [512u16, 100, 0, 64] {
        write(&mut h.dev, QUEUE_SIZE, &size.to_le_bytes());
        sizes.push(read::<2>(&mut h.dev, QUEUE_SIZE));
    }
    write(&mut h.dev, QUEUE_ENABLE, &1u16.to_le_bytes());
    write(&mut h.dev, QUEUE_SIZE, &32u16.to_le_bytes());

    assert_eq!(max, 256);
    assert_eq!(sizes, vec![256, 256, 256, 64]);
    assert_eq!(
        read::<2>(&mut h.dev, QUEUE_SIZE),
        64,
        "enabled queue keeps its size"
    );
}

#[test]
fn a_queue_that_does_not_exist_reads_as_unavailable() {
    let mut h = harness();

    write(&mut h.dev, QUEUE_SELECT, &3u16.to_le_bytes());
    write(&mut h.dev, QUEUE_SIZE, &16u16.to_le_bytes());

    assert_eq!(read::<2>(&mut h.dev, QUEUE_SIZE), 0);
    assert_eq!(read::<2>(&mut h.dev, QUEUE_ENABLE), 0);
    assert_eq!(
        read::<2>(&mut h.dev, QUEUE_MSIX_VECTOR),
        u64::from(NO_VECTOR)
    );
    write(&mut h.dev, QUEUE_SELECT, &0u16.to_le_bytes());
    assert_eq!(read::<2>(&mut h.dev, QUEUE_NOTIFY_OFF), 0);
}

#[test]
fn queue_addresses_take_halves_or_whole_64_bit_writes() {
    let mut h = harness();

    write(&mut h.dev, QUEUE_DESC, &0x1_2345_6000u64.to_le_bytes());
    write(&mut h.dev, QUEUE_DRIVER, &0x7000u32.to_le_bytes());
    write(&mut h.dev, QUEUE_DRIVER + 4, &0x2u32.to_le_bytes());
    write(&mut h.dev, QUEUE_DEVICE, &0x8001u32.to_le_bytes());

    assert_eq!(read::<8>(&mut h.dev, QUEUE_DESC), 0x1_2345_6000);
    assert_eq!(read::<4>(&mut h.dev, QUEUE_DRIVER + 4), 2);
    assert_eq!(read::<8>(&mut h.dev, QUEUE_DRIVER), 0x2_0000_7000);
    assert_eq!(
        read::<8>(&mut h.dev, QUEUE_DEVICE),
        0,
        "misaligned used ring refused"
    );
}

#[test]
fn reset_clears_queues_vectors_and_status() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, true);
    assert!(h.dev.is_activated());

    set_status(&mut h.dev, 0);

    assert_eq!(status(&mut h.dev), 0);
    assert!(!h.dev.is_activated());
    assert_eq!(read::<2>(&mut h.dev, QUEUE_ENABLE), 0);
    assert_eq!(read::<2>(&mut h.dev, QUEUE_SIZE), 256);
    assert_eq!(read::<8>(&mut h.dev, QUEUE_DESC), 0);
    assert_eq!(
        read::<2>(&mut h.dev, QUEUE_MSIX_VECTOR),
        u64::from(NO_VECTOR)
    );
    assert_eq!(
        read::<2>(&mut h.dev, CONFIG_MSIX_VECTOR),
        u64::from(NO_VECTOR)
    );
    publish_write_buffer(&vq, 0, 0x10000, 4);
    notify(&mut h.dev, 0);
    assert_eq!(vq.used_idx(), 0, "a reset device ignores notifications");
}

#[test]
fn rng_request_end_to_end_with_msix() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, true);
    publish_write_buffer(&vq, 0, 0x10000, 16);

    notify(&mut h.dev, 0);

    let mut bytes = [0u8; 16];
    h.mem.read_slice(&mut bytes, GuestAddress(0x10000)).unwrap();
    assert_eq!(bytes.to_vec(), (0u8..16).collect::<Vec<_>>());
    assert_eq!(vq.used_idx(), 1);
    assert_eq!(vq.used_elem(0), (0, 16));
    assert_eq!(
        h.msi.take(),
        vec![(0xFEE0_0000, 0x41)],
        "queue 0 uses vector 1"
    );
    assert!(h.irq.levels().is_empty(), "no INTx with MSI-X");
}

#[test]
fn without_msix_intx_and_the_isr_signal_the_driver() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, false);
    publish_write_buffer(&vq, 0, 0x10000, 4);

    notify(&mut h.dev, 0);
    let raised = h.irq.is_high();
    let status_bit =
        config_read_u32(&mut h.dev, regs::COMMAND) >> 16 & u32::from(regs::STATUS_INTERRUPT);
    let mut isr = [0u8];
    h.dev.bar_read(VIRTIO_BAR, ISR_CFG_OFFSET, &mut isr);

    assert!(raised);
    assert_ne!(status_bit, 0);
    assert_eq!(isr, [ISR_QUEUE]);
    assert!(!h.irq.is_high(), "reading the ISR deasserts INTx");
    h.dev.bar_read(VIRTIO_BAR, ISR_CFG_OFFSET, &mut isr);
    assert_eq!(isr, [0]);
    assert!(h.msi.take().is_empty());
}

#[test]
fn intx_disable_keeps_the_line_low() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, false);
    let command = regs::COMMAND_MEMORY | regs::COMMAND_BUS_MASTER | regs::COMMAND_INTX_DISABLE;
    config_write(&mut h.dev, regs::COMMAND, &command.to_le_bytes());
    publish_write_buffer(&vq, 0, 0x10000, 4);

    notify(&mut h.dev, 0);

    assert!(!h.irq.is_high());
    let mut isr = [0u8];
    h.dev.bar_read(VIRTIO_BAR, ISR_CFG_OFFSET, &mut isr);
    assert_eq!(isr, [ISR_QUEUE]);
}

#[test]
fn notifications_need_bus_mastering() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, true);
    config_write(
        &mut h.dev,
        regs::COMMAND,
        &regs::COMMAND_MEMORY.to_le_bytes(),
    );
    publish_write_buffer(&vq, 0, 0x10000, 4);

    notify(&mut h.dev, 0);

    assert_eq!(vq.used_idx(), 0);
    enable_bus_master(&mut h.dev);
    notify(&mut h.dev, 0);
    assert_eq!(vq.used_idx(), 1);
}

#[test]
fn a_queue_outside_guest_memory_fails_activation_with_needs_reset() {
    let mut h = harness();
    enable_bus_master(&mut h.dev);
    enable_msix(&mut h.dev);
    negotiate(&mut h.dev, features::VERSION_1);
    write(&mut h.dev, CONFIG_MSIX_VECTOR, &0u16.to_le_bytes());
    write(&mut h.dev, QUEUE_SIZE, &16u16.to_le_bytes());
    write_address(&mut h.dev, QUEUE_DESC, GuestAddress(0x18_0000));
    write_address(&mut h.dev, QUEUE_DRIVER, GuestAddress(0x1000));
    write_address(&mut h.dev, QUEUE_DEVICE, GuestAddress(0x2000));
    write(&mut h.dev, QUEUE_ENABLE, &1u16.to_le_bytes());
    let generation = read::<1>(&mut h.dev, CONFIG_GENERATION);

    set_status(&mut h.dev, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);

    assert_ne!(status(&mut h.dev) & DEVICE_NEEDS_RESET, 0);
    assert!(!h.dev.is_activated());
    assert_eq!(h.msi.take(), vec![(0xFEE0_0000, 0x40)], "config vector 0");
    assert_eq!(read::<1>(&mut h.dev, CONFIG_GENERATION), generation + 1);
}

#[test]
fn a_broken_avail_ring_sets_needs_reset_and_stops_processing() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, true);
    vq.set_avail_idx(40);

    notify(&mut h.dev, 0);
    let status_after = status(&mut h.dev);
    vq.set_avail_idx(0);
    publish_write_buffer(&vq, 0, 0x10000, 4);
    notify(&mut h.dev, 0);

    assert_ne!(status_after & DEVICE_NEEDS_RESET, 0);
    assert_eq!(vq.used_idx(), 0);
    set_status(&mut h.dev, status_after | DRIVER_OK);
    assert_eq!(
        status(&mut h.dev),
        status_after,
        "driver echoing NEEDS_RESET changes nothing"
    );
}

#[test]
fn event_idx_is_applied_to_the_device_queue() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    vq.set_used_event(5);
    bring_up(
        &mut h.dev,
        &vq,
        features::VERSION_1 | features::RING_EVENT_IDX,
        true,
    );
    publish_write_buffer(&vq, 0, 0x10000, 4);

    notify(&mut h.dev, 0);

    assert_eq!(vq.used_idx(), 1);
    assert!(h.msi.take().is_empty(), "used_event 5 not reached");
}

#[test]
fn vectors_the_table_lacks_read_back_as_no_vector() {
    let mut h = harness();

    write(&mut h.dev, CONFIG_MSIX_VECTOR, &2u16.to_le_bytes());
    write(&mut h.dev, QUEUE_MSIX_VECTOR, &1u16.to_le_bytes());

    assert_eq!(
        read::<2>(&mut h.dev, CONFIG_MSIX_VECTOR),
        u64::from(NO_VECTOR)
    );
    assert_eq!(read::<2>(&mut h.dev, QUEUE_MSIX_VECTOR), 1);
}

#[test]
fn pci_cfg_window_reaches_the_virtio_bar() {
    let mut h = harness();
    let cap = h.dev.config().capabilities()[5].1;
    config_write(&mut h.dev, cap + 4, &[VIRTIO_BAR as u8]);
    config_write(&mut h.dev, cap + 8, &(0x12u32).to_le_bytes());
    config_write(&mut h.dev, cap + 12, &2u32.to_le_bytes());

    let num_queues = config_read_u32(&mut h.dev, cap + 16) & 0xFFFF;
    config_write(&mut h.dev, cap + 8, &(0x14u32).to_le_bytes());
    config_write(&mut h.dev, cap + 12, &1u32.to_le_bytes());
    config_write(&mut h.dev, cap + 16, &[ACKNOWLEDGE]);

    assert_eq!(num_queues, 1);
    assert_eq!(status(&mut h.dev), ACKNOWLEDGE);
}

#[test]
fn pci_reset_disables_msix_and_resets_the_device() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    bring_up(&mut h.dev, &vq, features::VERSION_1, true);

    PciDevice::reset(&mut h.dev);

    let cap = msix_cap(&h.dev);
    assert_eq!(h.dev.config().read_u16(cap + 2) & 0x8000, 0);
    assert_eq!(status(&mut h.dev), 0);
    assert!(!h.dev.config().bus_master_enabled());
    let mut entry = [0u8; 4];
    h.dev.bar_read(MSIX_BAR, 12, &mut entry);
    assert_eq!(entry, [1, 0, 0, 0], "vectors masked again");
}

#[test]
fn notify_address_follows_the_bar() {
    let mut h = harness();
    h.dev
        .config_mut()
        .set_bar_address(VIRTIO_BAR, 0xC000_4000)
        .unwrap();

    assert_eq!(h.dev.queue_notify_address(0), Some(0xC000_7000));
    assert_eq!(h.dev.queue_notify_address(1), None);
}

/// A device with any queue sizes, for construction tests.
pub(super) struct Queues(pub(super) Vec<u16>);

impl VirtioDevice for Queues {
    fn device_type(&self) -> u32 {
        device_type::NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.0
    }
    fn features(&self) -> u64 {
        features::VERSION_1
    }
    fn activate(
        &mut self,
        _mem: VirtioMemory,
        _queues: Vec<Queue>,
        _interrupt: Arc<dyn crate::VirtioInterrupt>,
    ) -> Result<(), crate::ActivateError> {
        Ok(())
    }
    fn process_queue(&mut self, _index: u16) -> Result<(), crate::DeviceError> {
        Ok(())
    }
    fn reset(&mut self) {}
}

pub(super) fn build(sizes: Vec<u16>) -> Result<VirtioPciDevice<Queues>, VirtioPciError> {
    let msi = Arc::new(RecordingMsi::default());
    let irq = Arc::new(RecordingIrq::default());
    VirtioPciDevice::new(Queues(sizes), guest_memory(), msi, irq)
}

#[test]
fn devices_with_many_queues_get_a_larger_msix_bar() {
    let dev = build(vec![64; 200]).unwrap();

    assert_eq!(dev.config().read_u32(0), 0x1041_1AF4);
    assert_eq!(dev.config().read_u32(8) >> 8, 0x02_0000);
    assert_eq!(dev.config().bar(MSIX_BAR).unwrap().size, 0x2000);
    assert!(build(vec![64; MAX_QUEUES]).is_ok());
}

#[test]
fn queue_counts_and_sizes_are_checked() {
    assert!(matches!(
        build(Vec::new()),
        Err(VirtioPciError::QueueCount { count: 0 })
    ));
    assert!(matches!(
        build(vec![64; MAX_QUEUES + 1]),
        Err(VirtioPciError::QueueCount { .. })
    ));
    assert!(matches!(
        build(vec![64, 3]),
        Err(VirtioPciError::QueueSize { index: 1, size: 3 })
    ));
}

/// The whole path a guest takes: enumeration through ports 0xCF8/0xCFC, BARs placed by the
/// root, memory decoding, registers and notifications through the PCI MMIO window, MSI-X
/// from the table the guest programmed, and a BAR the guest moved.
#[test]
fn rng_through_the_root_like_a_guest() {
    use devices::BusDevice;
    use devices::bus::BusRange;
    use devices::pci::{PciConfigIo, PciMmioWindow, PciRoot, PciWindows};
    use std::sync::Mutex;

    let h = harness();
    let (mem, msi) = (h.mem.clone(), h.msi.clone());
    let device = Arc::new(Mutex::new(h.dev));
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let slot = root.lock().unwrap().add_device(device.clone()).unwrap();
    let windows = PciWindows {
        mmio32: BusRange {
            base: 0xC000_0000,
            len: 0x2000_0000,
        },
        mmio64: None,
    };
    root.lock().unwrap().allocate_bars(&windows).unwrap();
    let mut io = PciConfigIo::new(root.clone());
    let mut window = PciMmioWindow::new(root, 0xC000_0000);
    let mut config = |register: u32, value: Option<u32>| {
        let address = 0x8000_0000 | (u32::from(slot) << 11) | register;
        io.write(0, &address.to_le_bytes());
        if let Some(value) = value {
            io.write(4, &value.to_le_bytes());
        }
        let mut data = [0u8; 4];
        io.read(4, &mut data);
        u32::from_le_bytes(data)
    };

    assert_eq!(config(0, None), 0x1044_1AF4);
    let virtio_bar = u64::from(config(0x18, None) & !0xF) | (u64::from(config(0x1C, None)) << 32);
    let msix_bar = u64::from(config(0x10, None) & !0xF);
    config(4, Some(0x6));
    let mut mmio = |addr: u64, data: &[u8]| window.write(addr - 0xC000_0000, data);
    for (offset, data) in [
        (0u64, 0xFEE0_0000u64.to_le_bytes().to_vec()),
        (8, vec![0x40, 0, 0, 0]),
        (12, vec![0; 4]),
    ] {
        mmio(msix_bar + 16 + offset, &data);
    }
    let vq = DriverQueue::new(&mem, 0, 16);
    let common = virtio_bar + COMMON_CFG_OFFSET;
    mmio(common + DEVICE_STATUS, &[ACKNOWLEDGE | DRIVER]);
    mmio(common + DRIVER_FEATURE_SELECT, &1u32.to_le_bytes());
    mmio(common + DRIVER_FEATURE, &1u32.to_le_bytes());
    mmio(
        common + DEVICE_STATUS,
        &[ACKNOWLEDGE | DRIVER | FEATURES_OK],
    );
    mmio(common + QUEUE_SIZE, &16u16.to_le_bytes());
    mmio(common + QUEUE_MSIX_VECTOR, &1u16.to_le_bytes());
    mmio(common + QUEUE_DESC, &vq.desc.to_le_bytes());
    mmio(common + QUEUE_DRIVER, &vq.avail.to_le_bytes());
    mmio(common + QUEUE_DEVICE, &vq.used.to_le_bytes());
    mmio(common + QUEUE_ENABLE, &1u16.to_le_bytes());
    mmio(
        common + DEVICE_STATUS,
        &[ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK],
    );
    let msix_cap = msix_cap(&*device.lock().unwrap());
    config(u32::from(msix_cap), Some(0x8000_0000 | 0x11));
    vq.write_desc(0, 0x10000, 8, WRITE, 0);
    vq.publish(0, 0);
    mmio(virtio_bar + NOTIFY_CFG_OFFSET, &0u16.to_le_bytes());

    assert_eq!(vq.used_elem(0), (0, 8));
    assert_eq!(msi.take(), vec![(0xFEE0_0000, 0x40)]);
    // The guest moves the virtio BAR: the window follows without anyone remapping.
    config(0x18, Some(0xD000_000C));
    vq.write_desc(1, 0x10100, 4, WRITE, 0);
    vq.publish(1, 1);
    mmio(0xD000_0000 + NOTIFY_CFG_OFFSET, &0u16.to_le_bytes());
    assert_eq!(vq.used_idx(), 2);
    assert_eq!(
        device.lock().unwrap().queue_notify_address(0),
        Some(0xD000_3000)
    );
}
