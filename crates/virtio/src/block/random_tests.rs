//! Randomized tests of virtio-blk: a thousand mixed requests checked against a model of
//! the disk, and a hostile driver throwing random descriptor tables, indirect tables,
//! headers and avail rings at the device. Nothing may panic; the device may write guest
//! memory only inside device-writable buffers and the used ring, may access the disk only
//! inside it, and may not change a read-only disk.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use storage::DiskBackend;
use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;
use virtio_queue::QueueT;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::tests::{DATA_AT, HEADER_AT, Harness, NEXT, STATUS_AT, TempDisk, file_block, pattern};
use super::*;
use crate::test_utils::{
    DriverQueue, HOSTILE_REGIONS, RecordingInterrupt, WRITE, XorShift, changed_addresses,
    guest_memory, read_regions,
};

const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// FNV-1a: a checksum to compare reads with the model by.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A request somewhere in the disk, sometimes reaching past its end.
fn random_extent(rng: &mut XorShift, capacity: u64, max_sectors: u64) -> (u64, u64) {
    let sectors = 1 + rng.below(max_sectors);
    let sector = if rng.chance(25) {
        capacity - rng.below(sectors.min(capacity))
    } else {
        rng.below(capacity - sectors + 1)
    };
    (sector, sectors)
}

#[test]
fn a_thousand_mixed_requests_match_a_model_of_the_disk() {
    mixed_requests_match_a_model(None);
}

#[test]
fn a_thousand_mixed_requests_on_io_threads_match_a_model_of_the_disk() {
    mixed_requests_match_a_model(Some(3));
}

fn mixed_requests_match_a_model(io_threads: Option<usize>) {
    const LEN: usize = 2 << 20;
    let disk = TempDisk::new("mixed", &pattern(0, LEN));
    let mem = guest_memory();
    let mut block = file_block(&disk, false);
    if let Some(threads) = io_threads {
        block = block.with_io_threads(threads).unwrap();
    }
    let mut h = Harness::new(&mem, block);
    let mut model = pattern(0, LEN);
    let capacity = (LEN / 512) as u64;
    let mut rng = XorShift::new(0x626c_6b21);
    let (mut reads, mut writes, mut errors) = (0, 0, 0);

    for _ in 0..1000 {
        let (sector, sectors) = random_extent(&mut rng, capacity, 64);
        let inside = sector + sectors <= capacity;
        let (start, len) = ((sector * 512) as usize, (sectors * 512) as usize);
        let status = match rng.below(20) {
            0..=7 => {
                let (status, used, data) = h.read(sector, len);
                if inside {
                    assert_eq!(used as usize, len + 1);
                    assert_eq!(checksum(&data), checksum(&model[start..start + len]));
                    reads += 1;
                }
                status
            }
            8..=14 => {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let status = h.write(sector, &data);
                if inside {
                    model[start..start + len].copy_from_slice(&data);
                    writes += 1;
                }
                status
            }
            15 | 16 => {
                let unmap = rng.chance(2);
                let (request_type, flags) = if rng.chance(2) {
                    (blk::VIRTIO_BLK_T_DISCARD, 0)
                } else {
                    (
                        blk::VIRTIO_BLK_T_WRITE_ZEROES,
                        u32::from(unmap) * FLAG_UNMAP,
                    )
                };
                let status = h.range(request_type, sector, sectors as u32, flags);
                if inside {
                    // Both punch a hole or zero the range in a raw file.
                    model[start..start + len].fill(0);
                }
                status
            }
            17 | 18 => {
                assert_eq!(h.bare(blk::VIRTIO_BLK_T_FLUSH), Status::Ok as u8);
                continue;
            }
            _ => {
                assert_eq!(h.bare(blk::VIRTIO_BLK_T_GET_ID), Status::Ok as u8);
                continue;
            }
        };
        let expected = if inside { Status::Ok } else { Status::IoErr };
        assert_eq!(status, expected as u8, "sector {sector} + {sectors}");
        errors += u64::from(!inside);
    }

    let stats = h.block.stats();
    assert_eq!(
        (stats.reads, stats.writes, stats.errors),
        (reads, writes, errors)
    );
    assert!(
        reads > 300 && writes > 300,
        "{reads} reads, {writes} writes"
    );
    assert_eq!(checksum(&disk.contents()), checksum(&model));
    assert!(disk.contents() == model, "the file differs from the model");
}

/// A disk in memory that records any access outside it instead of failing the test in
/// the device's call stack.
#[derive(Clone)]
struct MemDisk {
    data: Arc<Mutex<Vec<u8>>>,
    read_only: bool,
    violations: Arc<Mutex<Vec<String>>>,
}

impl MemDisk {
    fn new(len: usize, read_only: bool) -> Self {
        Self {
            data: Arc::new(Mutex::new(pattern(0, len))),
            read_only,
            violations: Arc::default(),
        }
    }

    fn range(&self, what: &str, offset: u64, len: u64) -> io::Result<Range<usize>> {
        let size = self.data.lock().unwrap().len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => {
                let violation = format!("{what} of {len} bytes at {offset}");
                self.violations.lock().unwrap().push(violation);
                Err(io::ErrorKind::InvalidInput.into())
            }
        }
    }

    fn change(&self, what: &str, offset: u64, len: u64) -> io::Result<Range<usize>> {
        if self.read_only {
            let violation = format!("{what} on a read-only disk");
            self.violations.lock().unwrap().push(violation);
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        self.range(what, offset, len)
    }
}

impl DiskBackend for MemDisk {
    fn len(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = self.range("read", offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.lock().unwrap()[range]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let range = self.change("write", offset, buf.len() as u64)?;
        self.data.lock().unwrap()[range].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let range = self.change("discard", offset, len)?;
        self.data.lock().unwrap()[range].fill(0);
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _may_unmap: bool) -> io::Result<()> {
        let range = self.change("write-zeroes", offset, len)?;
        self.data.lock().unwrap()[range].fill(0);
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn try_clone(&self) -> io::Result<Box<dyn DiskBackend>> {
        Ok(Box::new(self.clone()))
    }
}

/// Two 128 KiB regions with a hole between them.
const REGIONS: [(u64, usize); 2] = HOSTILE_REGIONS;
/// Indirect tables: never a data buffer, so the tables cannot change mid-run.
const TABLE_AREA: Range<u64> = 0xE000..0xF000;
/// 256 request headers, also read as discard ranges (type → sector, sector → count).
const HEADER_AREA: Range<u64> = 0xF000..0x1_0000;
const DATA_AREAS: [Range<u64>; 2] = [0x1_0000..0x2_0000, 0x4_0000..0x6_0000];
const QUEUE_SIZES: [u16; 6] = [1, 2, 8, 16, 64, 256];
const DISK_LEN: usize = 64 * 1024;
const CASES: usize = 2_000;
const FILL: u8 = 0xEE;

fn random_header(rng: &mut XorShift) -> [u8; 16] {
    let types = [
        blk::VIRTIO_BLK_T_IN,
        blk::VIRTIO_BLK_T_OUT,
        blk::VIRTIO_BLK_T_FLUSH,
        blk::VIRTIO_BLK_T_GET_ID,
        blk::VIRTIO_BLK_T_DISCARD,
        blk::VIRTIO_BLK_T_WRITE_ZEROES,
        rng.next() as u32,
    ];
    let request_type = types[rng.below(types.len() as u64) as usize];
    let reserved = if rng.chance(8) { rng.next() as u32 } else { 0 };
    let sector = match rng.below(10) {
        0 => rng.next(),
        1 => u64::MAX - rng.below(4),
        _ => rng.below(140),
    };
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&request_type.to_le_bytes());
    raw[4..8].copy_from_slice(&reserved.to_le_bytes());
    raw[8..].copy_from_slice(&sector.to_le_bytes());
    raw
}

/// An address in a data area, or straddling its end, in the hole, past memory or near
/// the top of the address space.
fn data_address(rng: &mut XorShift) -> u64 {
    let area = &DATA_AREAS[rng.below(2) as usize];
    match rng.below(16) {
        0 => area.end - rng.below(64),
        1 => 0x2_0000 + rng.below(0x2_0000),
        2 => 0x6_0000 + rng.below(0x10_0000),
        3 => u64::MAX - rng.below(0x1000),
        _ => area.start + rng.below(area.end - area.start),
    }
}

fn data_length(rng: &mut XorShift) -> u32 {
    match rng.below(10) {
        0 => rng.next() as u32,
        1 => 0,
        2 | 3 => rng.below(0x400) as u32,
        _ => 512 * rng.below(9) as u32 + u32::from(rng.chance(3)),
    }
}

/// One descriptor shaped like part of a request (header, range, data, status) or not
/// shaped at all, its `next` usually the following index.
fn random_descriptor(rng: &mut XorShift, index: u16, next_bound: u64) -> Descriptor {
    let next = if rng.chance(2) {
        index.wrapping_add(1)
    } else {
        rng.below(next_bound) as u16
    };
    let chained = if rng.below(3) == 0 { 0 } else { NEXT };
    let header_slot = HEADER_AREA.start + 16 * rng.below(256);
    let (addr, len, flags) = match rng.below(10) {
        0 | 1 => (header_slot, 16, chained),
        2 => (
            header_slot,
            rng.below(40) as u32,
            random_direction(rng) | chained,
        ),
        3 | 4 => (
            data_address(rng),
            data_length(rng),
            random_direction(rng) | chained,
        ),
        5 | 6 => (data_address(rng), 1, WRITE),
        7 => indirect_table(rng),
        _ => (data_address(rng), data_length(rng), random_flags(rng)),
    };
    Descriptor::new(addr, len, flags, next)
}

/// Descriptor `index` of a table of well-formed three-part requests: header, data or
/// range, status.
fn request_part(rng: &mut XorShift, index: u16, size: u16) -> Descriptor {
    let next = index.wrapping_add(1);
    let last = index + 1 == size;
    let chained = if last { 0 } else { NEXT };
    match index % 3 {
        0 => {
            let slot = HEADER_AREA.start + 16 * rng.below(256);
            Descriptor::new(slot, 16, chained, next)
        }
        1 if rng.chance(4) => {
            // A header slot read as a discard / write-zeroes range.
            let slot = HEADER_AREA.start + 16 * rng.below(256);
            Descriptor::new(slot, 16, chained, next)
        }
        1 => {
            let area = &DATA_AREAS[rng.below(2) as usize];
            let len = 512 * (1 + rng.below(8));
            let addr = area.start + rng.below(area.end - area.start - len);
            Descriptor::new(addr, len as u32, random_direction(rng) | chained, next)
        }
        _ => Descriptor::new(data_address(rng), 1, WRITE, next),
    }
}

fn random_direction(rng: &mut XorShift) -> u16 {
    if rng.chance(2) { WRITE } else { 0 }
}

fn random_flags(rng: &mut XorShift) -> u16 {
    random_direction(rng) | if rng.chance(2) { NEXT } else { 0 }
}

fn indirect_table(rng: &mut XorShift) -> (u64, u32, u16) {
    let addr = if rng.chance(8) {
        u64::MAX - 15
    } else {
        TABLE_AREA.start + 16 * rng.below((TABLE_AREA.end - TABLE_AREA.start) / 16)
    };
    let len = if rng.chance(6) {
        rng.below(0x400) as u32
    } else {
        16 * (1 + rng.below(8)) as u32
    };
    (addr, len, INDIRECT | if rng.chance(10) { WRITE } else { 0 })
}

/// Every device-writable range any table (main or indirect) names.
fn writable_ranges(mem: &VirtioMemory, main_table: u64, size: u16) -> Vec<Range<u64>> {
    let tables = [
        (main_table, u64::from(size)),
        (TABLE_AREA.start, (TABLE_AREA.end - TABLE_AREA.start) / 16),
    ];
    crate::test_utils::writable_buffers(mem, &tables)
        .into_iter()
        .map(|(start, end)| start..end)
        .collect()
}

/// Guest memory with filled data areas and random headers, and a random queue on it.
fn hostile_queue<'a>(rng: &mut XorShift, mem: &'a VirtioMemory) -> DriverQueue<'a> {
    for area in &DATA_AREAS {
        let fill = vec![FILL; (area.end - area.start) as usize];
        mem.write_slice(&fill, GuestAddress(area.start)).unwrap();
    }
    for slot in 0..256 {
        let header = random_header(rng);
        mem.write_slice(&header, GuestAddress(HEADER_AREA.start + 16 * slot))
            .unwrap();
    }
    let size = QUEUE_SIZES[rng.below(QUEUE_SIZES.len() as u64) as usize];
    let vq = DriverQueue::new(mem, 0, size);
    let next_bound = u64::from(size) + 2;
    let plausible = rng.chance(2);
    for i in 0..size {
        let desc = if plausible && !rng.chance(10) {
            request_part(rng, i, size)
        } else {
            random_descriptor(rng, i, next_bound)
        };
        vq.write_desc(i, desc.addr().0, desc.len(), desc.flags(), desc.next());
    }
    for i in 0..(TABLE_AREA.end - TABLE_AREA.start) / 16 {
        let mut desc = random_descriptor(rng, (i % 8) as u16, 10);
        if desc.refers_to_indirect_table() && !rng.chance(4) {
            desc = Descriptor::new(desc.addr().0, desc.len(), WRITE, desc.next());
        }
        let at = GuestAddress(TABLE_AREA.start + 16 * i);
        mem.write_obj(RawDescriptor::from(desc), at).unwrap();
    }
    let published = rng.below(u64::from(size) + 4) as u16;
    for slot in 0..published.min(size) {
        let head = if rng.chance(10) {
            rng.next() as u16
        } else if plausible {
            (3 * rng.below(u64::from(size).div_ceil(3))) as u16
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
    vq
}

/// Processes the queue, with I/O threads until every request taken is published and no
/// more is taken (the device may stop at the threads' depth).
fn process_all(device: &mut Block, io_threads: bool) {
    let _ = device.process_queue(0);
    if !io_threads {
        return;
    }
    let mut position = None;
    loop {
        if device.quiesce().is_err() {
            return;
        }
        let now = device.queue_states().map(|states| states[0].next_avail);
        if now == position {
            return;
        }
        position = now;
        device.resume();
        if device.process_queue(0).is_err() {
            let _ = device.quiesce();
            return;
        }
    }
}

/// Runs one random queue (on I/O threads or not); returns how many requests reached the
/// disk.
fn run_hostile_case(rng: &mut XorShift, io_threads: Option<usize>) -> u64 {
    let mem =
        VirtioMemory::from_ranges(&REGIONS.map(|(base, len)| (GuestAddress(base), len))).unwrap();
    let vq = hostile_queue(rng, &mem);
    let size = vq.size;
    let disk = MemDisk::new(DISK_LEN, rng.chance(4));
    let mut device = Block::new(Box::new(disk.clone()), BlockOptions::default()).unwrap();
    if let Some(threads) = io_threads {
        device = device.with_io_threads(threads).unwrap();
    }
    let offered = device.features();
    device.ack_features(offered & rng.next());
    let mut queue = vq.queue();
    queue.set_event_idx(rng.chance(2));
    let interrupt = Arc::new(RecordingInterrupt::default());
    device
        .activate(mem.clone(), vec![queue], interrupt)
        .unwrap();
    let allowed = writable_ranges(&mem, vq.desc, size);
    let used_ring = vq.used..vq.used + vq.used_ring_len();
    let before = read_regions(&mem);

    process_all(&mut device, io_threads.is_some());

    let changed = changed_addresses(&before, &read_regions(&mem));
    for addr in changed {
        let legit = used_ring.contains(&addr) || allowed.iter().any(|r| r.contains(&addr));
        assert!(
            legit,
            "byte {addr:#x} written outside the buffers (queue size {size})"
        );
    }
    let violations = disk.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "disk accesses: {violations:?}");
    if disk.read_only {
        assert!(
            *disk.data.lock().unwrap() == pattern(0, DISK_LEN),
            "read-only disk changed"
        );
    }
    let used = vq.used_idx();
    assert!(used <= size, "{used} used entries for a queue of {size}");
    for slot in 0..used {
        let (id, _) = vq.used_elem(slot);
        assert!(id < u32::from(size));
    }
    let stats = device.stats();
    stats.reads + stats.writes + stats.discards + stats.write_zeroes
}

#[test]
fn block_survives_random_queues_and_writes_only_its_buffers() {
    let mut rng = XorShift::new(0x0062_6c6b);
    let mut served = 0u64;
    for _ in 0..CASES {
        served += run_hostile_case(&mut rng, None);
    }
    // The generator must still produce valid requests, or the test checks little.
    assert!(served > 1000, "only {served} requests reached the disk");
}

#[test]
fn block_on_io_threads_survives_random_queues_and_writes_only_its_buffers() {
    let mut rng = XorShift::new(0x0074_6872);
    let mut served = 0u64;
    for _ in 0..CASES / 4 {
        let threads = 1 + rng.below(4) as usize;
        served += run_hostile_case(&mut rng, Some(threads));
    }
    assert!(served > 250, "only {served} requests reached the disk");
}

#[test]
fn the_status_goes_after_the_data_even_in_one_buffer() {
    // A driver that puts the data and the status byte of a read in one buffer.
    let mem = guest_memory();
    let disk = TempDisk::new("one-buffer", &pattern(0, 8192));
    let mut h = Harness::new(&mem, file_block(&disk, false));
    h.header(blk::VIRTIO_BLK_T_IN, 1);

    let used = h.submit(&[(HEADER_AT, 16, 0), (DATA_AT, 513, WRITE)]);

    assert_eq!(used, 513);
    assert_eq!(h.bytes(DATA_AT, 512), pattern(512, 512));
    assert_eq!(h.bytes(DATA_AT + 512, 1), [Status::Ok as u8]);
    assert_eq!(
        h.bytes(STATUS_AT, 1),
        [0xFF],
        "the status buffer was not part of it"
    );
}
