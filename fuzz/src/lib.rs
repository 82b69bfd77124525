//! Shared driver for the virtio fuzz targets: the fuzz input is a script of guest actions
//! (register accesses, guest-memory writes, queue notifications) run against one device behind
//! the modern PCI transport, on small in-memory guest memory with a hole in it.

use std::sync::Arc;

use devices::pci::PciDevice;
use devices::{IrqLine, MsiSink};
use virtio::VirtioDevice;
use virtio::VirtioMemory;
use virtio::pci::{MSIX_BAR, VIRTIO_BAR, VirtioPciDevice};
use vm_memory::{Bytes, GuestAddress};

/// Two 64 KiB RAM regions with a 64 KiB hole between them.
const REGIONS: [(u64, usize); 2] = [(0, 0x1_0000), (0x2_0000, 0x1_0000)];
/// Addresses a memory write may target: both regions, the hole and a little past the end.
const ADDRESS_SPAN: u64 = 0x3_2000;
/// Where a well-behaved bring-up puts queue `q`'s rings.
const RING_BASE: u64 = 0x8000;
const RING_STRIDE: u64 = 0x1000;

struct NoIrq;
impl IrqLine for NoIrq {
    fn set_level(&self, _high: bool) {}
}

struct NoMsi;
impl MsiSink for NoMsi {
    fn send_msi(&self, _address: u64, _data: u32) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the fuzz input front to back; runs out as zeros.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Guest memory for one run.
pub fn guest_memory() -> VirtioMemory {
    VirtioMemory::from_ranges(&REGIONS.map(|(base, len)| (GuestAddress(base), len)))
        .expect("fixed, non-overlapping regions")
}

fn config_write(dev: &mut dyn PciDevice, offset: u16, data: &[u8]) {
    dev.config_mut().write(offset, data);
    dev.config_written(offset, data.len());
}

/// The steps of a correct driver, so that the random part of the script meets a live device.
fn bring_up(dev: &mut dyn PciDevice, queues: u16, queue_size: u16, features: u64) {
    config_write(dev, 4, &[0x06, 0]);
    dev.bar_write(VIRTIO_BAR, 0x14, &[0]);
    dev.bar_write(VIRTIO_BAR, 0x14, &[0x01 | 0x02]);
    for select in 0..2u32 {
        dev.bar_write(VIRTIO_BAR, 0x08, &select.to_le_bytes());
        dev.bar_write(
            VIRTIO_BAR,
            0x0C,
            &((features >> (32 * select)) as u32).to_le_bytes(),
        );
    }
    dev.bar_write(VIRTIO_BAR, 0x14, &[0x01 | 0x02 | 0x08]);
    for queue in 0..queues {
        let base = RING_BASE + RING_STRIDE * u64::from(queue);
        let size = u64::from(queue_size);
        dev.bar_write(VIRTIO_BAR, 0x16, &queue.to_le_bytes());
        dev.bar_write(VIRTIO_BAR, 0x18, &queue_size.to_le_bytes());
        dev.bar_write(VIRTIO_BAR, 0x20, &base.to_le_bytes());
        dev.bar_write(VIRTIO_BAR, 0x28, &(base + 16 * size).to_le_bytes());
        let used = (base + 16 * size + 6 + 2 * size + 3) & !3;
        dev.bar_write(VIRTIO_BAR, 0x30, &used.to_le_bytes());
        dev.bar_write(VIRTIO_BAR, 0x1C, &1u16.to_le_bytes());
    }
    dev.bar_write(VIRTIO_BAR, 0x14, &[0x01 | 0x02 | 0x08 | 0x04]);
}

/// Runs the script in `data` against `device`. Any panic is a bug the fuzzer reports.
pub fn run_device_script<D: VirtioDevice>(device: D, mem: VirtioMemory, data: &[u8]) {
    run_device_script_with_host(device, mem, data, |_, _| {});
}

/// As [`run_device_script`], where one kind of step is `host(device, byte)`: something arriving
/// from the host side (a frame on the TAP, bytes on a socket, console input).
pub fn run_device_script_with_host<D: VirtioDevice>(
    device: D,
    mem: VirtioMemory,
    data: &[u8],
    mut host: impl FnMut(&mut D, u8),
) {
    let queues = device.queue_max_sizes().len() as u16;
    let Ok(mut dev) = VirtioPciDevice::new(device, mem.clone(), Arc::new(NoMsi), Arc::new(NoIrq))
    else {
        return;
    };
    let mut script = Script(data);
    let widths = [0usize, 1, 2, 3, 4, 8];
    let mut steps = 0;
    while !script.is_empty() && steps < 4096 {
        steps += 1;
        let op = script.byte();
        let width = widths[usize::from(script.byte()) % widths.len()];
        match op % 13 {
            0 => {
                let offset = script.u16() % 0x110;
                let data = script.bytes(width);
                config_write(&mut dev, offset, &data);
            }
            1 => {
                let mut buf = vec![0; width];
                dev.config_read(script.u16() % 0x110, &mut buf);
            }
            2 => {
                let offset = u64::from(script.u16() % 0x1100);
                let data = script.bytes(width);
                dev.bar_write(MSIX_BAR, offset, &data);
            }
            3 => {
                let offset = u64::from(script.u16());
                let data = script.bytes(width);
                dev.bar_write(VIRTIO_BAR, offset, &data);
            }
            4 => {
                let mut buf = vec![0; width];
                dev.bar_read(VIRTIO_BAR, u64::from(script.u16()), &mut buf);
            }
            5 => {
                let size = 1u16 << (script.byte() % 9);
                let features =
                    u64::from(script.u32()) | (1 << 32) | (u64::from(script.byte()) << 28);
                bring_up(&mut dev, queues, size, features);
            }
            6..=8 => {
                let addr = u64::from(script.u32()) % ADDRESS_SPAN;
                let len = usize::from(script.byte() % 64) + 1;
                let bytes = script.bytes(len);
                // Writes into the hole fail, as a guest's would never land there.
                let _ = mem.write_slice(&bytes, GuestAddress(addr));
            }
            9 | 10 if dev.is_activated() && queues > 0 => {
                let queue = u16::from(script.byte()) % queues;
                let _ = dev.device_mut().process_queue(queue);
            }
            11 => PciDevice::reset(&mut dev),
            12 => host(dev.device_mut(), script.byte()),
            _ => {
                let bar = usize::from(script.byte() % 7);
                let offset = u64::from(script.u32());
                let data = script.bytes(width);
                dev.bar_write(bar, offset, &data);
            }
        }
    }
}
