//! Randomized tests with a hostile driver: random descriptor tables, indirect tables and
//! avail rings thrown at virtio-rng, and random register accesses thrown at the PCI
//! transport. Nothing may panic, and the device may write guest memory only inside the
//! device-writable buffers it was given and the used ring.

use std::sync::Arc;

use devices::pci::PciDevice;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use virtio_queue::QueueT;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use crate::pci::{MSIX_BAR, VIRTIO_BAR, VirtioPciDevice};
use crate::rng::{MAX_BYTES_PER_REQUEST, Rng};
use crate::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::test_utils::{
    CountingSource, DriverQueue, HOSTILE_REGIONS, RecordingInterrupt, RecordingIrq, RecordingMsi,
    WRITE, XorShift, changed_addresses, read_regions,
};
use crate::{VirtioDevice, VirtioMemory, features};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Two 128 KiB regions with a hole between them (small: debug-build copies are slow).
const REGIONS: [(u64, usize); 2] = HOSTILE_REGIONS;
/// Where indirect tables go: never a data buffer, so the tables cannot change mid-run.
const TABLE_AREA: std::ops::Range<u64> = 0xF000..0x1_0000;
/// Where device-writable buffers go when they are inside guest memory.
const DATA_AREAS: [std::ops::Range<u64>; 2] = [0x1_0000..0x2_0000, 0x4_0000..0x6_0000];
const QUEUE_SIZES: [u16; 6] = [1, 2, 8, 16, 64, 256];
const CASES: usize = 3_000;
const FILL: u8 = 0xEE;

/// A buffer address: mostly in a data area, sometimes straddling its end, in the hole,
/// past the end of memory or near the top of the address space.
fn buffer_address(rng: &mut XorShift) -> u64 {
    let area = &DATA_AREAS[rng.below(2) as usize];
    match rng.below(12) {
        0 => area.end - rng.below(64),
        1 => 0x2_0000 + rng.below(0x2_0000),
        2 => 0x6_0000 + rng.below(0x10_0000),
        3 => u64::MAX - rng.below(0x1000),
        _ => area.start + rng.below(area.end - area.start),
    }
}

fn buffer_length(rng: &mut XorShift) -> u32 {
    match rng.below(10) {
        0 => rng.next() as u32,
        1 => 0,
        _ => rng.below(0x400) as u32,
    }
}

fn random_flags(rng: &mut XorShift) -> u16 {
    let mut flags = 0;
    if rng.below(4) != 0 {
        flags |= WRITE;
    }
    if rng.chance(2) {
        flags |= NEXT;
    }
    if rng.chance(12) {
        flags |= INDIRECT;
    }
    flags
}

/// One random descriptor; indirect ones point into the table area (or outside memory).
fn random_descriptor(rng: &mut XorShift, next_bound: u64) -> Descriptor {
    let flags = random_flags(rng);
    let (addr, len) = if flags & INDIRECT != 0 {
        let addr = if rng.chance(8) {
            u64::MAX - 15
        } else {
            TABLE_AREA.start + 16 * rng.below((TABLE_AREA.end - TABLE_AREA.start) / 16)
        };
        let len = if rng.chance(6) {
            rng.below(0x400) as u32
        } else {
            16 * rng.below(20) as u32
        };
        (addr, len)
    } else {
        (buffer_address(rng), buffer_length(rng))
    };
    Descriptor::new(addr, len, flags, rng.below(next_bound) as u16)
}

/// Every device-writable range any table (main or indirect) names, clipped to memory.
fn writable_ranges(mem: &VirtioMemory, main_table: u64, size: u16) -> Vec<(u64, u64)> {
    let indirect = (TABLE_AREA.start, (TABLE_AREA.end - TABLE_AREA.start) / 16);
    crate::test_utils::writable_buffers(mem, &[(main_table, u64::from(size)), indirect])
}

fn run_rng_case(rng: &mut XorShift) {
    let mem =
        VirtioMemory::from_ranges(&REGIONS.map(|(base, len)| (GuestAddress(base), len))).unwrap();
    for area in &DATA_AREAS {
        mem.write_slice(
            &vec![FILL; (area.end - area.start) as usize],
            GuestAddress(area.start),
        )
        .unwrap();
    }
    let size = QUEUE_SIZES[rng.below(QUEUE_SIZES.len() as u64) as usize];
    let vq = DriverQueue::new(&mem, 0, size);
    let next_bound = u64::from(size) + 2;
    for i in 0..size {
        let desc = random_descriptor(rng, next_bound);
        vq.write_desc(i, desc.addr().0, desc.len(), desc.flags(), desc.next());
    }
    for i in 0..(TABLE_AREA.end - TABLE_AREA.start) / 16 {
        let desc = random_descriptor(rng, 24);
        mem.write_obj(
            RawDescriptor::from(desc),
            GuestAddress(TABLE_AREA.start + 16 * i),
        )
        .unwrap();
    }
    let published = rng.below(u64::from(size) + 4) as u16;
    for slot in 0..published.min(size) {
        let head = if rng.chance(10) {
            rng.next() as u16
        } else {
            rng.below(u64::from(size)) as u16
        };
        vq.publish(slot, head);
    }
    let avail_idx = if rng.chance(10) {
        rng.next() as u16
    } else {
        published
    };
    vq.set_avail_idx(avail_idx);
    vq.set_used_event(rng.next() as u16);

    let mut queue = vq.queue();
    queue.set_event_idx(rng.chance(2));
    let mut device = Rng::new(Box::new(CountingSource::default()));
    device
        .activate(
            mem.clone(),
            vec![queue],
            Arc::new(RecordingInterrupt::default()),
        )
        .unwrap();
    let allowed = writable_ranges(&mem, vq.desc, size);
    let used_ring = vq.used..vq.used + vq.used_ring_len();
    let before = read_regions(&mem);

    let _ = device.process_queue(0);

    let after = read_regions(&mem);
    let changed = changed_addresses(&before, &after);
    for &addr in &changed {
        let legit = used_ring.contains(&addr)
            || allowed
                .iter()
                .any(|&(start, end)| (start..end).contains(&addr));
        assert!(
            legit,
            "byte {addr:#x} written outside the buffers (queue size {size})"
        );
    }
    let used = vq.used_idx();
    assert!(used <= size, "{used} used entries for a queue of {size}");
    let mut reported = 0u64;
    for slot in 0..used {
        let (id, len) = vq.used_elem(slot);
        assert!(id < u32::from(size));
        assert!(len as usize <= MAX_BYTES_PER_REQUEST);
        reported += u64::from(len);
    }
    let data_changes = changed
        .iter()
        .filter(|addr| !used_ring.contains(addr))
        .count() as u64;
    assert!(
        data_changes <= reported,
        "{data_changes} bytes changed, {reported} reported"
    );
    assert_eq!(device.bytes_delivered(), reported);
}

#[test]
fn rng_survives_random_queues_and_writes_only_its_buffers() {
    let mut rng = XorShift::new(0x7269_6e67);
    for _ in 0..CASES {
        run_rng_case(&mut rng);
    }
}

/// A guest configuration write, as the root applies it.
fn config_write(dev: &mut dyn PciDevice, offset: u16, data: &[u8]) {
    dev.config_mut().write(offset, data);
    dev.config_written(offset, data.len());
}

/// A well-behaved driver's bring-up on the rings of `vq`, so that random accesses also
/// hit a running device.
fn bring_up(dev: &mut dyn PciDevice, vq: &DriverQueue<'_>, ring_features: u64) {
    config_write(dev, 4, &[0x06, 0]);
    dev.bar_write(VIRTIO_BAR, 0x14, &[0]);
    dev.bar_write(VIRTIO_BAR, 0x14, &[ACKNOWLEDGE | DRIVER]);
    let accepted = features::VERSION_1 | ring_features;
    for select in 0..2u32 {
        dev.bar_write(VIRTIO_BAR, 0x08, &select.to_le_bytes());
        dev.bar_write(
            VIRTIO_BAR,
            0x0C,
            &((accepted >> (32 * select)) as u32).to_le_bytes(),
        );
    }
    dev.bar_write(VIRTIO_BAR, 0x14, &[ACKNOWLEDGE | DRIVER | FEATURES_OK]);
    dev.bar_write(VIRTIO_BAR, 0x16, &0u16.to_le_bytes());
    dev.bar_write(VIRTIO_BAR, 0x18, &vq.size.to_le_bytes());
    dev.bar_write(VIRTIO_BAR, 0x20, &vq.desc.to_le_bytes());
    dev.bar_write(VIRTIO_BAR, 0x28, &vq.avail.to_le_bytes());
    dev.bar_write(VIRTIO_BAR, 0x30, &vq.used.to_le_bytes());
    dev.bar_write(VIRTIO_BAR, 0x1C, &1u16.to_le_bytes());
    dev.bar_write(
        VIRTIO_BAR,
        0x14,
        &[ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK],
    );
}

#[test]
fn transport_survives_random_register_accesses() {
    let mut rng = XorShift::new(0x7063_6976);
    let mem =
        VirtioMemory::from_ranges(&REGIONS.map(|(base, len)| (GuestAddress(base), len))).unwrap();
    let device = Rng::new(Box::new(CountingSource::default()));
    let msi = Arc::new(RecordingMsi::default());
    let irq = Arc::new(RecordingIrq::default());
    let mut dev = VirtioPciDevice::new(device, mem.clone(), msi, irq).unwrap();
    let vq = DriverQueue::new(&mem, 0, 16);
    // Common configuration offsets a driver uses, so random writes often hit real fields.
    let fields = [
        0x00u64, 0x04, 0x08, 0x0C, 0x10, 0x12, 0x14, 0x15, 0x16, 0x18, 0x1A, 0x1C, 0x1E, 0x20,
        0x24, 0x28, 0x2C, 0x30, 0x34,
    ];
    let widths = [0usize, 1, 2, 3, 4, 8];
    let mut activations = 0;
    let mut published = 0u16;

    for _ in 0..50_000 {
        let len = widths[rng.below(widths.len() as u64) as usize];
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match rng.below(14) {
            0 => config_write(&mut dev, rng.below(0x110) as u16, &data),
            1 => dev.config_read(rng.below(0x110) as u16, &mut data),
            2 => dev.bar_write(MSIX_BAR, rng.below(0x1100), &data),
            3 => dev.bar_read(MSIX_BAR, rng.below(0x1100), &mut data),
            4 => dev.bar_read(VIRTIO_BAR, rng.below(0x4100), &mut data),
            5 | 6 => dev.bar_write(VIRTIO_BAR, 0x3000 + 4 * rng.below(3), &data),
            7 => dev.bar_write(rng.below(7) as usize, rng.next(), &data),
            8 if rng.chance(10) => {
                bring_up(&mut dev, &vq, rng.below(4) << 28);
                activations += usize::from(dev.is_activated());
            }
            9 => {
                let desc = random_descriptor(&mut rng, 18);
                let index = rng.below(16) as u16;
                vq.write_desc(index, desc.addr().0, desc.len(), desc.flags(), desc.next());
                vq.publish(published, index);
                published =
                    published.wrapping_add(if rng.chance(50) { rng.next() as u16 } else { 1 });
            }
            10 if rng.chance(20) => PciDevice::reset(&mut dev),
            _ => {
                let field = fields[rng.below(fields.len() as u64) as usize];
                dev.bar_write(VIRTIO_BAR, field, &data);
            }
        }
        let status = dev.status();
        assert!(status & DRIVER_OK == 0 || status & FEATURES_OK != 0);
    }
    assert!(
        activations > 50,
        "only {activations} activations: the test lost its teeth"
    );
    assert!(vq.used_idx() > 0, "no request was ever served");
}
