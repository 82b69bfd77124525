//! Fakes and helpers shared by the unit tests: guest memory, descriptor writing, recording
//! interrupt sinks and a predictable entropy source.

use std::io::Read;
use std::sync::Mutex;

use devices::{IrqLine, MsiSink};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::{VirtioInterrupt, VirtioMemory};

/// The device-writable flag.
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// Guest memory: 1 MiB at 0 and 1 MiB at 2 MiB, with a hole between.
pub fn guest_memory() -> VirtioMemory {
    VirtioMemory::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x20_0000), 0x10_0000),
    ])
    .unwrap()
}

/// Writes descriptor `index` of a virtio-queue mock queue's table.
pub fn write_desc(
    vq: &MockSplitQueue<'_, VirtioMemory>,
    index: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let raw = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
    vq.desc_table().store(index, raw).unwrap();
}

/// The driver's side of a split virtqueue, laid out without overlaps: descriptor table at
/// `base`, then the available ring, then the used ring (4-byte aligned).
///
/// virtio-queue 0.18's `MockSplitQueue` places the used ring over the tail of the available
/// ring (its `SplitQueueRing::end` adds the entry count, not bytes), which corrupts
/// `used_event` and avail entries as soon as the device uses buffers; tests that let the
/// device write the used ring use this instead.
pub struct DriverQueue<'a> {
    mem: &'a VirtioMemory,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl<'a> DriverQueue<'a> {
    /// Empty rings for a queue of `size` entries at `base`.
    pub fn new(mem: &'a VirtioMemory, base: u64, size: u16) -> Self {
        let entries = u64::from(size);
        let avail = base + 16 * entries;
        let used = (avail + 6 + 2 * entries).next_multiple_of(4);
        let queue = Self {
            mem,
            size,
            desc: base,
            avail,
            used,
        };
        let end = used + queue.used_ring_len();
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .unwrap();
        queue
    }

    /// Bytes of the used ring, avail_event included.
    pub fn used_ring_len(&self) -> u64 {
        6 + 8 * u64::from(self.size)
    }

    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let raw = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
        let at = self.desc + 16 * u64::from(index);
        self.mem.write_obj(raw, GuestAddress(at)).unwrap();
    }

    /// Puts `head` in avail ring slot `slot` (modulo the size) and sets avail idx to
    /// `slot + 1`.
    pub fn publish(&self, slot: u16, head: u16) {
        let entry = self.avail + 4 + 2 * u64::from(slot % self.size);
        self.write_u16(entry, head);
        self.set_avail_idx(slot.wrapping_add(1));
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.write_u16(self.avail + 2, idx);
    }

    pub fn set_used_event(&self, value: u16) {
        self.write_u16(self.avail + 4 + 2 * u64::from(self.size), value);
    }

    pub fn used_idx(&self) -> u16 {
        self.read_u16(self.used + 2)
    }

    pub fn avail_event(&self) -> u16 {
        self.read_u16(self.used + 4 + 8 * u64::from(self.size))
    }

    /// (id, len) of used ring entry `slot`.
    pub fn used_elem(&self, slot: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(slot % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    /// A device-side queue on these rings, enabled.
    pub fn queue(&self) -> Queue {
        let mut queue = Queue::new(self.size).unwrap();
        queue.try_set_size(self.size).unwrap();
        queue
            .try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        queue
            .try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        queue
            .try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        queue.set_ready(true);
        queue
    }

    fn write_u16(&self, at: u64, value: u16) {
        self.mem.write_obj(value.to_le(), GuestAddress(at)).unwrap();
    }

    fn read_u16(&self, at: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(at)).unwrap())
    }
}

/// Bytes 0, 1, 2, … wrapping at 256.
#[derive(Default)]
pub struct CountingSource {
    next: u8,
}

impl Read for CountingSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for byte in buf.iter_mut() {
            *byte = self.next;
            self.next = self.next.wrapping_add(1);
        }
        Ok(buf.len())
    }
}

/// Records the used-buffer notifications a device sends.
#[derive(Default)]
pub struct RecordingInterrupt {
    queues: Mutex<Vec<u16>>,
}

impl RecordingInterrupt {
    pub fn queue_signals(&self) -> Vec<u16> {
        self.queues.lock().unwrap().clone()
    }
}

impl VirtioInterrupt for RecordingInterrupt {
    fn signal_queue(&self, queue: u16) {
        self.queues.lock().unwrap().push(queue);
    }

    fn signal_config(&self) {
        panic!("no device under test changes its configuration");
    }
}

/// Records every MSI sent.
#[derive(Default)]
pub struct RecordingMsi {
    sent: Mutex<Vec<(u64, u32)>>,
}

impl RecordingMsi {
    pub fn take(&self) -> Vec<(u64, u32)> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl MsiSink for RecordingMsi {
    fn send_msi(&self, address: u64, data: u32) -> std::io::Result<()> {
        self.sent.lock().unwrap().push((address, data));
        Ok(())
    }
}

/// Records the levels an interrupt line is driven to.
#[derive(Default)]
pub struct RecordingIrq {
    levels: Mutex<Vec<bool>>,
}

impl RecordingIrq {
    pub fn is_high(&self) -> bool {
        self.levels.lock().unwrap().last().copied().unwrap_or(false)
    }

    pub fn levels(&self) -> Vec<bool> {
        self.levels.lock().unwrap().clone()
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, high: bool) {
        self.levels.lock().unwrap().push(high);
    }
}

/// xorshift64*: small, deterministic, good enough to shake a device.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Guest memory of the randomized hostile-queue tests: two regions with a hole between.
pub const HOSTILE_REGIONS: [(u64, usize); 2] = [(0, 0x2_0000), (0x4_0000, 0x2_0000)];

/// A copy of every byte of [`HOSTILE_REGIONS`].
pub fn read_regions(mem: &VirtioMemory) -> Vec<Vec<u8>> {
    HOSTILE_REGIONS
        .iter()
        .map(|&(base, len)| {
            let mut data = vec![0u8; len];
            mem.read_slice(&mut data, GuestAddress(base)).unwrap();
            data
        })
        .collect()
}

/// Guest addresses whose byte differs between two [`read_regions`] copies.
pub fn changed_addresses(before: &[Vec<u8>], after: &[Vec<u8>]) -> Vec<u64> {
    let mut changed = Vec::new();
    for ((old, new), &(base, _)) in before.iter().zip(after).zip(&HOSTILE_REGIONS) {
        for (chunk, (a, b)) in old.chunks(4096).zip(new.chunks(4096)).enumerate() {
            if a == b {
                continue;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    changed.push(base + (chunk * 4096 + i) as u64);
                }
            }
        }
    }
    changed
}

/// Every device-writable buffer the descriptor tables in `tables` (address, entries) name,
/// as (start, end), for checking that a device wrote nowhere else. Descriptors pointing at
/// an indirect table are left out: the device only reads those.
pub fn writable_buffers(mem: &VirtioMemory, tables: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for &(base, count) in tables {
        for i in 0..count {
            let raw: RawDescriptor = mem.read_obj(GuestAddress(base + 16 * i)).unwrap();
            let desc = Descriptor::from(raw);
            if desc.is_write_only() && !desc.refers_to_indirect_table() {
                let start = desc.addr().0;
                ranges.push((start, start.saturating_add(u64::from(desc.len()))));
            }
        }
    }
    ranges
}
