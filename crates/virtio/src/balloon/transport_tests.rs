//! virtio-balloon behind the PCI transport: configuration through the device configuration
//! region, the configuration change interrupt (INTx + ISR, generation), notifications, and a
//! snapshot restored into a new function.

use std::sync::Arc;

use devices::pci::{PciDevice, regs};
use vm_memory::{Bytes, GuestAddress};

use super::tests::RecordingReleaser;
use super::*;
use crate::pci::{
    DEVICE_CFG_OFFSET, ISR_CFG_OFFSET, NOTIFY_CFG_OFFSET, VIRTIO_BAR, VirtioPciDevice,
};
use crate::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::test_utils::{DriverQueue, RecordingIrq, RecordingMsi, guest_memory};

const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0C;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE_REG: u64 = 0x18;
const QUEUE_ENABLE: u64 = 0x1C;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const RINGS: [u64; 3] = [0x0000, 0x1000, 0x2000];
const BUFFERS: u64 = 0x1_0000;

struct Function {
    dev: VirtioPciDevice<Balloon>,
    irq: Arc<RecordingIrq>,
    releaser: RecordingReleaser,
}

fn function(mem: &VirtioMemory) -> Function {
    let releaser = RecordingReleaser::default();
    let balloon = Balloon::new(
        BalloonOptions {
            target_pages: 16,
            deflate_on_oom: true,
            stats: true,
        },
        Box::new(releaser.clone()),
    );
    let irq = Arc::new(RecordingIrq::default());
    let msi = Arc::new(RecordingMsi::default());
    let dev = VirtioPciDevice::new(balloon, mem.clone(), msi, irq.clone()).unwrap();
    Function { dev, irq, releaser }
}

fn write(dev: &mut dyn PciDevice, offset: u64, data: &[u8]) {
    dev.bar_write(VIRTIO_BAR, offset, data);
}

fn read_u32(dev: &mut dyn PciDevice, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    dev.bar_read(VIRTIO_BAR, offset, &mut data);
    u32::from_le_bytes(data)
}

fn read_u8(dev: &mut dyn PciDevice, offset: u64) -> u8 {
    let mut data = [0u8; 1];
    dev.bar_read(VIRTIO_BAR, offset, &mut data);
    data[0]
}

/// A driver's bring-up: memory and bus mastering on, every feature accepted, the three
/// queues on `drivers`' rings, DRIVER_OK; MSI-X stays off (INTx).
fn bring_up(dev: &mut dyn PciDevice, drivers: &[DriverQueue<'_>]) {
    let command = regs::COMMAND_MEMORY | regs::COMMAND_BUS_MASTER;
    dev.config_mut()
        .write(regs::COMMAND, &command.to_le_bytes());
    dev.config_written(regs::COMMAND, 2);
    write(dev, DEVICE_STATUS, &[ACKNOWLEDGE | DRIVER]);
    let accepted = features::VERSION_1 | F_STATS_VQ | F_DEFLATE_ON_OOM;
    for select in 0..2u32 {
        write(dev, DRIVER_FEATURE_SELECT, &select.to_le_bytes());
        let word = (accepted >> (32 * select)) as u32;
        write(dev, DRIVER_FEATURE, &word.to_le_bytes());
    }
    write(dev, DEVICE_STATUS, &[ACKNOWLEDGE | DRIVER | FEATURES_OK]);
    for (index, vq) in drivers.iter().enumerate() {
        write(dev, QUEUE_SELECT, &(index as u16).to_le_bytes());
        write(dev, QUEUE_SIZE_REG, &vq.size.to_le_bytes());
        write(dev, QUEUE_DESC, &vq.desc.to_le_bytes());
        write(dev, QUEUE_DRIVER, &vq.avail.to_le_bytes());
        write(dev, QUEUE_DEVICE, &vq.used.to_le_bytes());
        write(dev, QUEUE_ENABLE, &1u16.to_le_bytes());
    }
    let ok = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
    write(dev, DEVICE_STATUS, &[ok]);
}

fn notify(dev: &mut dyn PciDevice, queue: u16) {
    write(
        dev,
        NOTIFY_CFG_OFFSET + 4 * u64::from(queue),
        &queue.to_le_bytes(),
    );
}

/// Puts one device-readable buffer of `bytes` at `addr` as head `head` of `vq`, slot `slot`.
fn offer(mem: &VirtioMemory, vq: &DriverQueue<'_>, slot: u16, addr: u64, bytes: &[u8]) {
    mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    vq.write_desc(slot, addr, bytes.len() as u32, 0, 0);
    vq.publish(slot, slot);
}

fn pfns(list: &[u32]) -> Vec<u8> {
    list.iter().flat_map(|pfn| pfn.to_le_bytes()).collect()
}

fn drivers(mem: &VirtioMemory) -> Vec<DriverQueue<'_>> {
    RINGS
        .iter()
        .map(|&base| DriverQueue::new(mem, base, 16))
        .collect()
}

#[test]
fn the_driver_sees_targets_through_the_transport_and_inflates() {
    let mem = guest_memory();
    let vqs = drivers(&mem);
    let mut f = function(&mem);
    bring_up(&mut f.dev, &vqs);
    let initial = read_u32(&mut f.dev, DEVICE_CFG_OFFSET);
    let generation = read_u8(&mut f.dev, CONFIG_GENERATION);

    f.dev.device_mut().set_target_pages(64);
    let raised = f.irq.is_high();
    let isr = read_u8(&mut f.dev, ISR_CFG_OFFSET);
    offer(&mem, &vqs[0], 0, BUFFERS, &pfns(&[0x40, 0x41]));
    notify(&mut f.dev, INFLATE_QUEUE);
    write(&mut f.dev, DEVICE_CFG_OFFSET + 4, &2u32.to_le_bytes());

    assert_eq!(initial, 16);
    assert!(raised, "INTx raised for the configuration change");
    assert_eq!(isr & crate::pci::ISR_CONFIG, crate::pci::ISR_CONFIG);
    assert_eq!(
        read_u8(&mut f.dev, CONFIG_GENERATION),
        generation.wrapping_add(1)
    );
    assert_eq!(read_u32(&mut f.dev, DEVICE_CFG_OFFSET), 64);
    assert_eq!(f.releaser.calls(), vec![(0x40000, 2 * PAGE_SIZE)]);
    assert_eq!(vqs[0].used_idx(), 1);
    assert_eq!(f.dev.device().actual_pages(), 2);
}

#[test]
fn a_snapshot_keeps_the_target_actual_and_the_held_stats_buffer() {
    let mem = guest_memory();
    let vqs = drivers(&mem);
    let mut f = function(&mem);
    bring_up(&mut f.dev, &vqs);
    f.dev.device_mut().set_target_pages(3);
    offer(&mem, &vqs[0], 0, BUFFERS, &pfns(&[0x40, 0x41, 0x42]));
    notify(&mut f.dev, INFLATE_QUEUE);
    write(&mut f.dev, DEVICE_CFG_OFFSET + 4, &3u32.to_le_bytes());
    let mut stat = 4u16.to_le_bytes().to_vec();
    stat.extend_from_slice(&(7u64 << 20).to_le_bytes());
    offer(&mem, &vqs[2], 0, BUFFERS + 0x100, &stat);
    notify(&mut f.dev, STATS_QUEUE);
    let state = f.dev.state().unwrap();
    let mut restored = function(&mem);

    restored.dev.restore(&state).unwrap();
    let balloon = restored.dev.device_mut();
    let requested = balloon.request_stats().unwrap();
    offer(&mem, &vqs[0], 1, BUFFERS + 0x200, &pfns(&[0x50]));
    notify(&mut restored.dev, INFLATE_QUEUE);

    let balloon = restored.dev.device();
    assert_eq!((balloon.target_pages(), balloon.actual_pages()), (3, 3));
    assert_eq!(balloon.stats().free_memory, Some(7 << 20));
    assert!(
        requested,
        "the held stats buffer is handed back after restore"
    );
    assert_eq!(vqs[2].used_idx(), 1);
    assert_eq!(restored.releaser.calls(), vec![(0x50000, PAGE_SIZE)]);
    assert_eq!(
        vqs[0].used_idx(),
        2,
        "the inflate queue goes on where it was"
    );
    assert_eq!(balloon.counters().inflated_pages, 4);
    assert_eq!(read_u32(&mut restored.dev, DEVICE_CFG_OFFSET), 3);
}
