//! Tests of virtio-blk driven through its queue, over raw files in the temporary directory
//! and in-memory guest memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use storage::{Clock, IoSliceRaw, RateLimiter, RawFile, RawFileOptions, TokenBucket};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::test_utils::{DriverQueue, RecordingInterrupt, WRITE, guest_memory};

pub(super) const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub(super) const HEADER_AT: u64 = 0x1_0000;
pub(super) const RANGE_AT: u64 = 0x1_0100;
pub(super) const STATUS_AT: u64 = 0x1_F000;
pub(super) const DATA_AT: u64 = 0x2_0000;
const OK: u8 = Status::Ok as u8;
const IOERR: u8 = Status::IoErr as u8;
const UNSUPP: u8 = Status::Unsupp as u8;
const T_IN: u32 = blk::VIRTIO_BLK_T_IN;
const T_OUT: u32 = blk::VIRTIO_BLK_T_OUT;
const T_FLUSH: u32 = blk::VIRTIO_BLK_T_FLUSH;
const T_GET_ID: u32 = blk::VIRTIO_BLK_T_GET_ID;
const T_DISCARD: u32 = blk::VIRTIO_BLK_T_DISCARD;
const T_WRITE_ZEROES: u32 = blk::VIRTIO_BLK_T_WRITE_ZEROES;
const MIB: usize = 1 << 20;

static NEXT_TEMP: AtomicUsize = AtomicUsize::new(0);

/// A file in the temporary directory, removed on drop.
pub(super) struct TempDisk(PathBuf);

impl TempDisk {
    pub(super) fn new(name: &str, contents: &[u8]) -> Self {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let file = format!("oxvirt-blk-{}-{n}-{name}", std::process::id());
        let path = std::env::temp_dir().join(file);
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    pub(super) fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }

    fn allocated(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.0).unwrap().blocks() * 512
    }

    pub(super) fn open(&self, read_only: bool) -> Box<RawFile> {
        let options = RawFileOptions {
            read_only,
            direct: false,
        };
        Box::new(RawFile::open(self.path(), options).unwrap())
    }
}

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bytes where every 512-byte sector differs from its neighbours.
pub(super) fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i.wrapping_mul(13) + i / 512) as u8)
        .collect()
}

pub(super) fn file_block(disk: &TempDisk, read_only: bool) -> Block {
    Block::new(disk.open(read_only), BlockOptions::default()).unwrap()
}

/// A driver with a 256-entry queue at guest address 0, the device activated with every
/// feature it offers.
pub(super) struct Harness<'a> {
    pub(super) mem: &'a VirtioMemory,
    pub(super) driver: DriverQueue<'a>,
    pub(super) block: Block,
    pub(super) interrupt: Arc<RecordingInterrupt>,
    slot: u16,
}

impl<'a> Harness<'a> {
    pub(super) fn new(mem: &'a VirtioMemory, block: Block) -> Self {
        let features = block.features();
        Self::with_features(mem, block, features)
    }

    pub(super) fn with_features(mem: &'a VirtioMemory, mut block: Block, features: u64) -> Self {
        let driver = DriverQueue::new(mem, 0, QUEUE_SIZE);
        let interrupt = Arc::new(RecordingInterrupt::default());
        block.ack_features(features);
        block
            .activate(mem.clone(), vec![driver.queue()], interrupt.clone())
            .unwrap();
        Self {
            mem,
            driver,
            block,
            interrupt,
            slot: 0,
        }
    }

    /// Publishes a chain of (address, length, flags) buffers (at most 4), lets the device
    /// process the queue and returns the used length.
    pub(super) fn submit(&mut self, buffers: &[(u64, u32, u16)]) -> u32 {
        let base = (self.slot % 64) * 4;
        for (i, &(addr, len, flags)) in buffers.iter().enumerate() {
            let index = base + i as u16;
            let next = if i + 1 < buffers.len() { NEXT } else { 0 };
            self.driver
                .write_desc(index, addr, len, flags | next, index + 1);
        }
        self.driver.publish(self.slot, base);
        self.block.process_queue(0).unwrap();
        // With I/O threads: wait for the request and publish it (a no-op without).
        self.block.quiesce().unwrap();
        self.block.resume();
        assert_eq!(self.driver.used_idx(), self.slot.wrapping_add(1));
        let (id, len) = self.driver.used_elem(self.slot);
        assert_eq!(id, u32::from(base));
        self.slot = self.slot.wrapping_add(1);
        len
    }

    pub(super) fn header(&self, request_type: u32, sector: u64) {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&request_type.to_le_bytes());
        raw[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&raw, GuestAddress(HEADER_AT)).unwrap();
        self.mem.write_obj(0xFFu8, GuestAddress(STATUS_AT)).unwrap();
    }

    pub(super) fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS_AT)).unwrap()
    }

    pub(super) fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
        data
    }

    /// IN of `len` bytes at `sector`: (status, used length, data).
    pub(super) fn read(&mut self, sector: u64, len: usize) -> (u8, u32, Vec<u8>) {
        self.header(T_IN, sector);
        self.mem
            .write_slice(&vec![0xCC; len], GuestAddress(DATA_AT))
            .unwrap();
        let used = self.submit(&[
            (HEADER_AT, 16, 0),
            (DATA_AT, len as u32, WRITE),
            (STATUS_AT, 1, WRITE),
        ]);
        (self.status(), used, self.bytes(DATA_AT, len))
    }

    /// OUT of `data` at `sector`: the status.
    pub(super) fn write(&mut self, sector: u64, data: &[u8]) -> u8 {
        self.header(T_OUT, sector);
        self.mem.write_slice(data, GuestAddress(DATA_AT)).unwrap();
        let used = self.submit(&[
            (HEADER_AT, 16, 0),
            (DATA_AT, data.len() as u32, 0),
            (STATUS_AT, 1, WRITE),
        ]);
        assert_eq!(used, 1);
        self.status()
    }

    /// A request of only header and status (FLUSH, or a type with nothing else).
    pub(super) fn bare(&mut self, request_type: u32) -> u8 {
        self.header(request_type, 0);
        let used = self.submit(&[(HEADER_AT, 16, 0), (STATUS_AT, 1, WRITE)]);
        assert_eq!(used, 1);
        self.status()
    }

    /// DISCARD or WRITE_ZEROES of one range.
    pub(super) fn range(&mut self, request_type: u32, sector: u64, sectors: u32, flags: u32) -> u8 {
        self.header(request_type, 0);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&sector.to_le_bytes());
        raw[8..12].copy_from_slice(&sectors.to_le_bytes());
        raw[12..].copy_from_slice(&flags.to_le_bytes());
        self.mem.write_slice(&raw, GuestAddress(RANGE_AT)).unwrap();
        let used = self.submit(&[(HEADER_AT, 16, 0), (RANGE_AT, 16, 0), (STATUS_AT, 1, WRITE)]);
        assert_eq!(used, 1);
        self.status()
    }
}

fn config_u32(block: &Block, field: usize) -> u32 {
    let mut data = [0u8; 4];
    block.read_config(field as u64, &mut data);
    u32::from_le_bytes(data)
}

#[test]
fn the_configuration_space_follows_virtio_1_2() {
    let disk = TempDisk::new("config", &vec![0; 3 * MIB + 700]);
    let block = file_block(&disk, false);
    let mut capacity = [0u8; 8];
    let mut past_end = [0xAAu8; 8];

    block.read_config(0, &mut capacity);
    block.read_config(CONFIG_LEN as u64 - 2, &mut past_end);

    assert_eq!(u64::from_le_bytes(capacity), (3 * MIB / 512 + 1) as u64);
    assert_eq!(config_u32(&block, 12), SEG_MAX, "seg_max at 12");
    assert_eq!(config_u32(&block, 20), 512, "blk_size at 20");
    assert_eq!(config_u32(&block, 34) & 0xFFFF, 1, "num_queues at 34");
    assert_eq!(
        config_u32(&block, 36),
        MAX_DISCARD_SECTORS,
        "max_discard_sectors"
    );
    assert_eq!(config_u32(&block, 40), 1, "max_discard_seg");
    assert_eq!(config_u32(&block, 44), DISCARD_SECTOR_ALIGNMENT);
    assert_eq!(
        config_u32(&block, 48),
        MAX_DISCARD_SECTORS,
        "max_write_zeroes_sectors"
    );
    assert_eq!(config_u32(&block, 52), 1, "max_write_zeroes_seg");
    assert_eq!(config_u32(&block, 56), 1, "write_zeroes_may_unmap");
    assert_eq!(past_end, [0; 8]);
    assert_eq!(CONFIG_LEN, 60);
}

#[test]
fn features_follow_the_disk() {
    let disk = TempDisk::new("features", &[0; 4096]);
    let read_only = file_block(&disk, true);
    let read_only_features = read_only.features();
    drop(read_only);
    let writable = file_block(&disk, false);
    let writable_features = writable.features();

    let wanted = [
        blk::VIRTIO_BLK_F_FLUSH,
        blk::VIRTIO_BLK_F_SEG_MAX,
        blk::VIRTIO_BLK_F_BLK_SIZE,
        blk::VIRTIO_BLK_F_DISCARD,
        blk::VIRTIO_BLK_F_WRITE_ZEROES,
    ];
    for feature in wanted {
        assert_ne!(writable_features & bit(feature), 0, "feature {feature}");
    }
    assert_eq!(writable_features & features::COMMON, features::COMMON);
    assert_eq!(writable_features & bit(blk::VIRTIO_BLK_F_RO), 0);
    assert_ne!(read_only_features & bit(blk::VIRTIO_BLK_F_RO), 0);
    assert!(!writable.is_read_only());
    assert_eq!(writable.device_type(), device_type::BLOCK);
    assert_eq!(writable.queue_max_sizes(), &[256]);
}

#[test]
fn reads_return_what_the_file_holds() {
    let disk = TempDisk::new("read", &pattern(0, MIB));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    let (status, used, data) = h.read(10, 8192);

    assert_eq!(status, OK);
    assert_eq!(used, 8193);
    assert_eq!(data, pattern(10 * 512, 8192));
    assert_eq!(h.interrupt.queue_signals(), vec![0]);
    assert_eq!(h.block.stats().reads, 1);
    assert_eq!(h.block.stats().bytes_read, 8192);
}

#[test]
fn writes_reach_the_file_and_read_back() {
    let disk = TempDisk::new("write", &pattern(0, MIB));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));
    let data: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();

    let status = h.write(100, &data);
    let (read_status, _, back) = h.read(100, 4096);
    let flushed = h.bare(T_FLUSH);

    assert_eq!((status, read_status, flushed), (OK, OK, OK));
    assert_eq!(back, data);
    let mut expected = pattern(0, MIB);
    expected[100 * 512..100 * 512 + 4096].copy_from_slice(&data);
    assert!(disk.contents() == expected, "the file differs");
    assert_eq!(h.block.stats().flushes, 1);
}

#[test]
fn get_id_answers_the_serial_padded_with_zeroes() {
    let disk = TempDisk::new("id", &[0; 4096]);
    let options = BlockOptions {
        serial: Some("disk-0042".into()),
        rate_limiter: None,
    };
    let mem = guest_memory();
    let mut h = Harness::new(&mem, Block::new(disk.open(false), options).unwrap());
    mem.write_slice(&[0xEE; 32], GuestAddress(DATA_AT)).unwrap();

    h.header(T_GET_ID, 0);
    let used = h.submit(&[
        (HEADER_AT, 16, 0),
        (DATA_AT, 20, WRITE),
        (STATUS_AT, 1, WRITE),
    ]);
    let full = h.bytes(DATA_AT, 21);
    h.header(T_GET_ID, 0);
    mem.write_slice(&[0xEE; 32], GuestAddress(DATA_AT)).unwrap();
    h.submit(&[
        (HEADER_AT, 16, 0),
        (DATA_AT, 4, WRITE),
        (STATUS_AT, 1, WRITE),
    ]);
    let short = h.bytes(DATA_AT, 5);

    let mut expected = b"disk-0042".to_vec();
    expected.resize(20, 0);
    expected.push(0xEE);
    assert_eq!(full, expected);
    assert_eq!(used, 21);
    assert_eq!(short, b"disk\xEE");
    assert_eq!(h.status(), OK);
}

#[test]
fn a_serial_longer_than_20_bytes_is_refused() {
    let disk = TempDisk::new("long-serial", &[0; 4096]);
    let options = BlockOptions {
        serial: Some("x".repeat(21)),
        rate_limiter: None,
    };

    let error = Block::new(disk.open(false), options).err().unwrap();

    assert!(matches!(error, BlockError::SerialTooLong { len: 21, .. }));
    assert!(error.to_string().contains("at most 20"));
}

#[test]
fn discard_punches_a_hole_in_the_file() {
    let disk = TempDisk::new("discard", &pattern(0, 4 * MIB));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));
    let before = disk.allocated();

    let status = h.range(T_DISCARD, 2048, 4096, 0);

    assert_eq!(status, OK);
    assert!(disk.allocated() + 2 * MIB as u64 <= before, "not sparse");
    let contents = disk.contents();
    assert_eq!(contents.len(), 4 * MIB);
    assert_eq!(&contents[..MIB], &pattern(0, MIB)[..]);
    assert_eq!(&contents[3 * MIB..], &pattern(3 * MIB, MIB)[..]);
    assert_eq!(h.block.stats().discards, 1);
}

#[test]
fn write_zeroes_zeroes_with_or_without_unmap() {
    let disk = TempDisk::new("zeroes", &pattern(0, 2 * MIB));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    let keep = h.range(T_WRITE_ZEROES, 1, 3, 0);
    let unmap = h.range(T_WRITE_ZEROES, 2048, 2048, FLAG_UNMAP);
    let (_, _, read_back) = h.read(0, 4096);

    assert_eq!((keep, unmap), (OK, OK));
    let contents = disk.contents();
    assert_eq!(&contents[..512], &pattern(0, 512)[..]);
    assert!(contents[512..2048].iter().all(|&b| b == 0));
    assert_eq!(&contents[2048..MIB], &pattern(2048, MIB - 2048)[..]);
    assert!(contents[MIB..].iter().all(|&b| b == 0));
    assert_eq!(&read_back[..], &contents[..4096]);
    assert_eq!(h.block.stats().write_zeroes, 2);
}

#[test]
fn discard_and_write_zeroes_refuse_what_they_do_not_support() {
    let disk = TempDisk::new("unsupp", &pattern(0, MIB));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    let discard_unmap = h.range(T_DISCARD, 0, 8, FLAG_UNMAP);
    let unknown_flag = h.range(T_WRITE_ZEROES, 0, 8, 2);
    let too_long = h.range(T_DISCARD, 0, MAX_DISCARD_SECTORS + 1, 0);
    let past_end = h.range(T_WRITE_ZEROES, 2040, 16, 0);
    h.header(T_DISCARD, 0);
    let two_ranges = {
        h.submit(&[(HEADER_AT, 16, 0), (RANGE_AT, 32, 0), (STATUS_AT, 1, WRITE)]);
        h.status()
    };
    let unknown_type = h.bare(0x77);

    assert_eq!((discard_unmap, unknown_flag), (UNSUPP, UNSUPP));
    assert_eq!((too_long, past_end), (IOERR, IOERR));
    assert_eq!((two_ranges, unknown_type), (UNSUPP, UNSUPP));
    assert!(disk.contents() == pattern(0, MIB), "the file changed");
}

#[test]
fn discard_and_write_zeroes_need_their_features() {
    let disk = TempDisk::new("not-negotiated", &pattern(0, MIB));
    let mem = guest_memory();
    let block = file_block(&disk, false);
    let mut h = Harness::with_features(&mem, block, features::COMMON);

    let discard = h.range(T_DISCARD, 0, 8, 0);
    let zeroes = h.range(T_WRITE_ZEROES, 0, 8, 0);

    assert_eq!((discard, zeroes), (UNSUPP, UNSUPP));
    assert!(disk.contents() == pattern(0, MIB));
}

#[test]
fn a_read_only_disk_answers_ioerr_to_every_change() {
    let disk = TempDisk::new("ro", &pattern(0, MIB));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, true));

    let write = h.write(0, &[0x11; 512]);
    let discard = h.range(T_DISCARD, 0, 8, 0);
    let zeroes = h.range(T_WRITE_ZEROES, 0, 8, FLAG_UNMAP);
    let flush = h.bare(T_FLUSH);
    let (read, _, data) = h.read(0, 512);

    assert_eq!((write, discard, zeroes), (IOERR, IOERR, IOERR));
    assert_eq!((flush, read), (OK, OK));
    assert_eq!(data, pattern(0, 512));
    assert!(disk.contents() == pattern(0, MIB), "the file changed");
    assert_eq!(h.block.stats().errors, 3);
    assert_eq!(h.block.stats().writes, 0);
}

#[test]
fn requests_past_the_capacity_are_ioerr_and_touch_nothing() {
    let disk = TempDisk::new("range", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    let (read_end, _, untouched) = h.read(127, 1024);
    let (read_huge, _, _) = h.read(u64::MAX, 512);
    let write_end = h.write(128, &[1; 512]);
    let write_wrap = h.write(u64::MAX / 512 + 1, &[1; 512]);
    let (last, _, data) = h.read(127, 512);

    assert_eq!((read_end, read_huge), (IOERR, IOERR));
    assert_eq!((write_end, write_wrap), (IOERR, IOERR));
    assert_eq!(untouched, vec![0xCC; 1024], "no data on a refused read");
    assert_eq!((last, data), (OK, pattern(127 * 512, 512)));
    assert!(disk.contents() == pattern(0, 64 * 1024));
}

#[test]
fn data_that_is_not_whole_sectors_is_ioerr() {
    let disk = TempDisk::new("partial", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    let (read, _, _) = h.read(0, 1000);
    let write = h.write(0, &[7; 513]);

    assert_eq!((read, write), (IOERR, IOERR));
    assert!(disk.contents() == pattern(0, 64 * 1024));
}

#[test]
fn a_chain_without_a_writable_status_byte_is_returned_empty() {
    let disk = TempDisk::new("no-status", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    h.header(T_IN, 0);
    let missing = h.submit(&[(HEADER_AT, 16, 0), (DATA_AT, 512, WRITE)]);
    let missing_data = h.bytes(DATA_AT, 512);
    h.header(T_OUT, 0);
    let readable_status = h.submit(&[(HEADER_AT, 16, 0), (DATA_AT, 512, 0), (STATUS_AT, 1, 0)]);

    // Without a status buffer the data buffer is the last one: its last byte is taken as
    // the status, which leaves 511 bytes of data, not whole sectors.
    assert_eq!(missing, 512);
    assert_eq!(missing_data[511], IOERR);
    assert_eq!(readable_status, 0);
    assert_eq!(h.status(), 0xFF, "no status written");
    assert!(disk.contents() == pattern(0, 64 * 1024));
    assert_eq!(h.block.stats().refused, 1);
}

#[test]
fn headers_in_the_wrong_place_are_ioerr() {
    let disk = TempDisk::new("bad-header", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));

    h.header(T_OUT, 0);
    let writable_header = h.submit(&[(HEADER_AT, 16, WRITE), (STATUS_AT, 1, WRITE)]);
    let writable_status = h.status();
    h.header(T_OUT, 0);
    let short = h.submit(&[(HEADER_AT, 8, 0), (STATUS_AT, 1, WRITE)]);
    let short_status = h.status();

    assert_eq!((writable_header, writable_status), (17, IOERR));
    assert_eq!((short, short_status), (1, IOERR));
    assert_eq!(
        h.bytes(HEADER_AT, 4),
        T_OUT.to_le_bytes(),
        "the header was not written"
    );
}

#[test]
fn data_in_the_wrong_direction_is_ioerr_and_touches_nothing() {
    let disk = TempDisk::new("direction", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));
    mem.write_slice(&[0x42; 512], GuestAddress(DATA_AT))
        .unwrap();

    h.header(T_IN, 0);
    h.submit(&[(HEADER_AT, 16, 0), (DATA_AT, 512, 0), (STATUS_AT, 1, WRITE)]);
    let read_into_readable = h.status();
    h.header(T_OUT, 0);
    h.submit(&[
        (HEADER_AT, 16, 0),
        (DATA_AT, 512, WRITE),
        (STATUS_AT, 1, WRITE),
    ]);
    let write_from_writable = h.status();
    h.header(T_OUT, 0);
    h.submit(&[
        (HEADER_AT, 16, 0),
        (DATA_AT + 0x1000, 1, WRITE),
        (DATA_AT, 512, 0),
        (STATUS_AT, 1, WRITE),
    ]);
    let interleaved = h.status();

    assert_eq!(
        (read_into_readable, write_from_writable, interleaved),
        (IOERR, IOERR, IOERR)
    );
    assert_eq!(h.bytes(DATA_AT, 512), vec![0x42; 512]);
    assert!(disk.contents() == pattern(0, 64 * 1024));
}

#[test]
fn a_looping_chain_is_returned_empty() {
    let disk = TempDisk::new("loop", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));
    h.header(T_IN, 0);
    h.driver.write_desc(0, HEADER_AT, 16, NEXT, 1);
    h.driver.write_desc(1, STATUS_AT, 1, NEXT | WRITE, 0);

    h.driver.publish(0, 0);
    h.block.process_queue(0).unwrap();

    assert_eq!(h.driver.used_elem(0), (0, 0));
    assert_eq!(h.status(), 0xFF);
}

#[test]
fn indirect_tables_carry_requests() {
    let disk = TempDisk::new("indirect", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));
    let table = DriverQueue::new(&mem, 0x8_0000, 4);
    table.write_desc(0, HEADER_AT, 16, NEXT, 1);
    table.write_desc(1, DATA_AT, 1024, NEXT | WRITE, 2);
    table.write_desc(2, STATUS_AT, 1, WRITE, 0);
    h.header(T_IN, 4);

    h.driver
        .write_desc(0, 0x8_0000, 48, VRING_DESC_F_INDIRECT as u16, 0);
    h.driver.publish(0, 0);
    h.block.process_queue(0).unwrap();

    assert_eq!(h.driver.used_elem(0), (0, 1025));
    assert_eq!(h.status(), OK);
    assert_eq!(h.bytes(DATA_AT, 1024), pattern(2048, 1024));
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<Instant>>);

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

#[test]
fn the_rate_limiter_pauses_the_queue_until_it_allows_more() {
    let disk = TempDisk::new("throttle", &pattern(0, 64 * 1024));
    let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
    let bytes = TokenBucket::new(8192, 0, Duration::from_secs(1)).unwrap();
    let limiter = RateLimiter::with_clock(Some(bytes), None, Box::new(clock.clone()));
    let options = BlockOptions {
        serial: None,
        rate_limiter: Some(limiter),
    };
    let mem = guest_memory();
    let mut h = Harness::new(&mem, Block::new(disk.open(false), options).unwrap());
    for request in 0..3u16 {
        let header = HEADER_AT + 0x20 * u64::from(request);
        mem.write_slice(&T_IN.to_le_bytes(), GuestAddress(header))
            .unwrap();
        let base = 3 * request;
        let data = DATA_AT + 0x1000 * u64::from(request);
        h.driver.write_desc(base, header, 16, NEXT, base + 1);
        h.driver
            .write_desc(base + 1, data, 4096, NEXT | WRITE, base + 2);
        h.driver
            .write_desc(base + 2, STATUS_AT + u64::from(request), 1, WRITE, 0);
        h.driver.publish(request, base);
    }

    let expected_until = clock.now() + Duration::from_millis(500);
    h.block.process_queue(0).unwrap();
    let served_first = h.driver.used_idx();
    let until = h.block.throttled_until();
    h.block.process_queue(0).unwrap();
    let served_early = h.driver.used_idx();
    *clock.0.lock().unwrap() += Duration::from_millis(500);
    h.block.process_queue(0).unwrap();

    assert_eq!(served_first, 2);
    assert_eq!(
        until,
        Some(expected_until),
        "4 KiB more after half a second"
    );
    assert_eq!(served_early, 2, "nothing more before then");
    assert_eq!(h.driver.used_idx(), 3);
    assert_eq!(h.block.throttled_until(), None);
    assert_eq!(h.block.stats().throttled, 2);
    assert_eq!(h.bytes(STATUS_AT, 3), [OK; 3]);
}

#[test]
fn the_device_config_is_reachable_through_the_pci_transport() {
    use crate::pci::{DEVICE_CFG_OFFSET, VIRTIO_BAR, VirtioPciDevice};
    use crate::test_utils::{RecordingIrq, RecordingMsi};
    use devices::pci::PciDevice;
    let disk = TempDisk::new("pci", &vec![0; 2 * MIB]);
    let mem = guest_memory();
    let msi = Arc::new(RecordingMsi::default());
    let irq = Arc::new(RecordingIrq::default());
    let mut dev = VirtioPciDevice::new(file_block(&disk, false), mem, msi, irq).unwrap();
    let mut capacity = [0u8; 8];
    let mut ids = [0u8; 4];

    dev.bar_read(VIRTIO_BAR, DEVICE_CFG_OFFSET, &mut capacity);
    dev.config_read(0, &mut ids);

    assert_eq!(u64::from_le_bytes(capacity), 4096);
    assert_eq!(
        ids,
        [0xF4, 0x1A, 0x42, 0x10],
        "vendor 0x1AF4, device 0x1042"
    );
}

#[test]
fn reset_forgets_the_queue_and_the_features() {
    let disk = TempDisk::new("reset", &pattern(0, 64 * 1024));
    let mem = guest_memory();
    let mut h = Harness::new(&mem, file_block(&disk, false));
    h.read(0, 512);
    let states = h.block.queue_states();

    h.block.reset();

    let state = &states.unwrap()[0];
    assert_eq!((state.next_avail, state.next_used), (1, 1));
    assert!(h.block.queue_states().is_none());
    assert!(matches!(
        h.block.process_queue(0),
        Err(DeviceError::NotActivated { index: 0 })
    ));
    assert!(matches!(
        h.block.process_queue(1),
        Err(DeviceError::NoSuchQueue { index: 1 })
    ));
    assert_eq!(h.block.acked_features, 0);
}

/// A raw file that records the segment lengths of every vectored access.
struct RecordingDisk {
    inner: RawFile,
    vectored: Arc<Mutex<Vec<Vec<usize>>>>,
}

impl RecordingDisk {
    fn record(&self, iovecs: &[IoSliceRaw<'_>]) {
        let lens = iovecs.iter().map(IoSliceRaw::len).collect();
        self.vectored.lock().unwrap().push(lens);
    }
}

impl DiskBackend for RecordingDisk {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_vectored_at(&mut self, offset: u64, iovecs: &[IoSliceRaw<'_>]) -> std::io::Result<()> {
        self.record(iovecs);
        self.inner.read_vectored_at(offset, iovecs)
    }
    fn write_vectored_at(&mut self, offset: u64, iovecs: &[IoSliceRaw<'_>]) -> std::io::Result<()> {
        self.record(iovecs);
        self.inner.write_vectored_at(offset, iovecs)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> std::io::Result<()> {
        self.inner.write_zeroes(offset, len, may_unmap)
    }
    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
}

/// Guest memory of two adjacent regions meeting at 1 MiB: a buffer across that address is
/// two host mappings.
fn split_guest_memory() -> VirtioMemory {
    VirtioMemory::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x10_0000), 0x10_0000),
    ])
    .unwrap()
}

fn recording_block(disk: &TempDisk, direct: bool) -> (Block, Arc<Mutex<Vec<Vec<usize>>>>) {
    let options = RawFileOptions {
        read_only: false,
        direct,
    };
    let vectored = Arc::new(Mutex::new(Vec::new()));
    let recording = RecordingDisk {
        inner: RawFile::open(disk.path(), options).unwrap(),
        vectored: vectored.clone(),
    };
    let block = Block::new(Box::new(recording), BlockOptions::default()).unwrap();
    (block, vectored)
}

#[test]
fn data_across_a_memory_region_boundary_moves_in_two_host_segments() {
    for direct in [false, true] {
        let disk = TempDisk::new("split", &pattern(0, MIB));
        let mem = split_guest_memory();
        let (block, vectored) = recording_block(&disk, direct);
        let mut h = Harness::new(&mem, block);
        let (first, second) = (0x10_0000 - 0x1000, 0x10_0000 + 0x4000);
        let data: Vec<u8> = (0..8192).map(|i| (i % 241) as u8).collect();
        mem.write_slice(&data, GuestAddress(first)).unwrap();

        h.header(T_OUT, 64);
        h.submit(&[(HEADER_AT, 16, 0), (first, 8192, 0), (STATUS_AT, 1, WRITE)]);
        let write_status = h.status();
        h.header(T_IN, 8);
        h.submit(&[
            (HEADER_AT, 16, 0),
            (second, 4096, WRITE),
            (first, 8192, WRITE),
            (STATUS_AT, 1, WRITE),
        ]);
        let read_status = h.status();

        assert_eq!((write_status, read_status), (OK, OK), "direct: {direct}");
        assert_eq!(h.bytes(second, 4096), pattern(8 * 512, 4096));
        assert_eq!(h.bytes(first, 8192), pattern(8 * 512 + 4096, 8192));
        let mut expected = pattern(0, MIB);
        expected[64 * 512..64 * 512 + 8192].copy_from_slice(&data);
        assert!(
            disk.contents() == expected,
            "the file differs (direct: {direct})"
        );
        let calls = vectored.lock().unwrap().clone();
        assert_eq!(calls, vec![vec![4096, 4096], vec![4096, 4096, 4096]]);
    }
}

#[test]
fn direct_io_into_unaligned_guest_buffers_still_reads_and_writes_right() {
    let disk = TempDisk::new("direct-odd", &pattern(0, MIB));
    let mem = guest_memory();
    let (block, vectored) = recording_block(&disk, true);
    let mut h = Harness::new(&mem, block);
    let odd = DATA_AT + 3;
    let data: Vec<u8> = (0..1536).map(|i| (i % 239) as u8).collect();
    mem.write_slice(&data, GuestAddress(odd)).unwrap();

    h.header(T_OUT, 3);
    h.submit(&[(HEADER_AT, 16, 0), (odd, 1536, 0), (STATUS_AT, 1, WRITE)]);
    let write_status = h.status();
    h.header(T_IN, 1);
    h.submit(&[
        (HEADER_AT, 16, 0),
        (odd + 7, 1024, WRITE),
        (STATUS_AT, 1, WRITE),
    ]);
    let read_status = h.status();

    assert_eq!((write_status, read_status), (OK, OK));
    let mut expected = pattern(0, MIB);
    expected[3 * 512..3 * 512 + 1536].copy_from_slice(&data);
    assert_eq!(h.bytes(odd + 7, 1024), &expected[512..1536]);
    assert!(disk.contents() == expected, "the file differs");
    assert_eq!(vectored.lock().unwrap().len(), 2);
}

#[test]
fn an_external_queue_is_served_by_the_same_code_and_keeps_its_position() {
    let disk = TempDisk::new("external", &pattern(0, MIB));
    let mem = guest_memory();
    let mut block = file_block(&disk, false);
    block.ack_features(block.features());
    let driver = DriverQueue::new(&mem, 0, QUEUE_SIZE);
    let mut queue = driver.queue();
    let interrupt = RecordingInterrupt::default();
    let header = |request_type: u32, sector: u64| {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&request_type.to_le_bytes());
        raw[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(HEADER_AT)).unwrap();
    };
    header(T_IN, 2);
    driver.write_desc(0, HEADER_AT, 16, NEXT, 1);
    driver.write_desc(1, DATA_AT, 512, WRITE | NEXT, 2);
    driver.write_desc(2, STATUS_AT, 1, WRITE, 0);
    driver.publish(0, 0);

    block
        .process_external_queue(0, &mem, &mut [&mut queue], &interrupt)
        .unwrap();
    let wrong_queue = block.process_external_queue(1, &mem, &mut [&mut queue], &interrupt);

    let mut data = vec![0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA_AT)).unwrap();
    assert_eq!(data, pattern(1024, 512));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS_AT)).unwrap(), OK);
    assert_eq!(driver.used_elem(0), (0, 513));
    assert_eq!((queue.next_avail(), queue.next_used()), (1, 1));
    assert_eq!(interrupt.queue_signals(), vec![0]);
    assert!(matches!(
        wrong_queue,
        Err(DeviceError::NoSuchQueue { index: 1 })
    ));
    assert!(block.queue_states().is_none(), "never activated");
}
