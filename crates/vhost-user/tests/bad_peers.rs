//! Front-ends that break the protocol, against the real `oxvmm-vhost-user` process: raw
//! messages, the `vhost` crate's front-end with bad memory tables and ring addresses, and
//! disconnections in the middle of the work. The back-end must close the connection (or
//! stop the queue), log why, never panic, and serve the next front-end.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Backend, TempDir};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap,
    MmapRegion,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const MEMORY_SIZE: usize = 1 << 20;
const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUFFER: u64 = 0x10000;
const VRING_DESC_F_WRITE: u16 = 2;
const GET_FEATURES: u32 = 1;
const SET_MEM_TABLE: u32 = 5;
const GET_INFLIGHT_FD: u32 = 31;
const SET_VRING_ENABLE: u32 = 18;

/// A memfd of `size` bytes (guest RAM shared with the back-end).
fn memfd(size: u64) -> File {
    // SAFETY: a NUL-terminated name and valid flags; the returned descriptor is checked.
    let fd = unsafe { libc::memfd_create(c"oxvirt-vu-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).unwrap();
    file
}

/// Guest memory of `size` bytes at guest address 0, in a memfd the back-end can map.
fn guest_memory(size: usize) -> GuestMemoryMmap {
    let region = MmapRegion::from_file(FileOffset::new(memfd(size as u64), 0), size).unwrap();
    GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(region, GuestAddress(0)).unwrap()])
        .unwrap()
}

/// The memory table describing `mem`'s one region, its size overridden by `size`.
fn region_info(mem: &GuestMemoryMmap, size: u64) -> VhostUserMemoryRegionInfo {
    let region = mem.iter().next().unwrap();
    let mut info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    info.memory_size = size;
    info
}

/// A front-end that negotiated features, protocol features (with REPLY_ACK, so refusals
/// come back as errors) and the memory table of `mem`.
fn negotiated(backend: &Backend, mem: &GuestMemoryMmap, size: u64) -> Frontend {
    let mut frontend = Frontend::connect(&backend.socket, 1).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    assert_ne!(
        features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        0
    );
    frontend.set_features(features).unwrap();
    let protocol = frontend.get_protocol_features().unwrap();
    let wanted = VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG;
    frontend.set_protocol_features(protocol & wanted).unwrap();
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    // A refusal of the table closes the connection; the caller looks at the result.
    let _ = frontend.set_mem_table(&[region_info(mem, size)]);
    frontend
}

fn host_addr(mem: &GuestMemoryMmap, addr: u64) -> u64 {
    mem.get_host_address(GuestAddress(addr)).unwrap() as u64
}

/// Configures queue 0 on rings at `desc`, `avail` and `used` (guest addresses inside `mem`,
/// or raw front-end addresses when `raw` is set), with a call and a kick eventfd.
fn start_queue(
    frontend: &mut Frontend,
    rings: VringConfigData,
) -> Result<(EventFd, EventFd), vhost::Error> {
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    frontend.set_vring_num(0, rings.queue_size)?;
    frontend.set_vring_addr(0, &rings)?;
    frontend.set_vring_base(0, 0)?;
    frontend.set_vring_call(0, &call)?;
    frontend.set_vring_kick(0, &kick)?;
    frontend.set_vring_enable(0, true)?;
    Ok((call, kick))
}

fn rings(mem: &GuestMemoryMmap, desc: u64, avail: u64, used: u64) -> VringConfigData {
    VringConfigData {
        queue_max_size: QUEUE_SIZE,
        queue_size: QUEUE_SIZE,
        flags: 0,
        desc_table_addr: host_addr(mem, desc),
        used_ring_addr: host_addr(mem, used),
        avail_ring_addr: host_addr(mem, avail),
        log_addr: None,
    }
}

/// Publishes one device-writable buffer of `len` bytes at [`BUFFER`] as avail entry 0, with
/// the avail index set to `avail_idx`.
fn publish(mem: &GuestMemoryMmap, len: u32, avail_idx: u16) {
    let mut descriptor = [0u8; 16];
    descriptor[..8].copy_from_slice(&BUFFER.to_le_bytes());
    descriptor[8..12].copy_from_slice(&len.to_le_bytes());
    descriptor[12..14].copy_from_slice(&VRING_DESC_F_WRITE.to_le_bytes());
    mem.write_slice(&descriptor, GuestAddress(DESC)).unwrap();
    mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
    mem.write_obj(avail_idx.to_le(), GuestAddress(AVAIL + 2))
        .unwrap();
}

/// Waits for the call eventfd; false after 5 s.
fn called(call: &EventFd) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if call.read().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A raw message: header (request, flags = version 1, size) and body.
fn raw_message(request: u32, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&request.to_le_bytes());
    message.extend_from_slice(&1u32.to_le_bytes());
    message.extend_from_slice(&(body.len() as u32).to_le_bytes());
    message.extend_from_slice(body);
    message
}

/// Whether the back-end closed `stream` (read returns end-of-file) within 5 s.
fn closed_by_backend(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) => return error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A well-behaved front-end gets an answer: the back-end serves again.
fn assert_serves_again(backend: &mut Backend) {
    let frontend = Frontend::connect(&backend.socket, 1).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    assert_ne!(
        features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        0
    );
    drop(frontend);
    backend.assert_alive();
}

fn rng_backend(dir: &TempDir) -> Backend {
    Backend::start(dir, "rng", "rng", "src=/dev/urandom")
}

#[test]
fn the_fake_front_end_gets_entropy_and_an_interrupt() {
    let dir = TempDir::new("happy");
    let mut backend = rng_backend(&dir);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
    let (call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, USED)).unwrap();

    publish(&mem, 32, 1);
    kick.write(1).unwrap();

    assert!(called(&call), "no interrupt:\n{}", backend.log());
    let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    let used_len: u32 = mem.read_obj(GuestAddress(USED + 8)).unwrap();
    let mut data = [0u8; 32];
    mem.read_slice(&mut data, GuestAddress(BUFFER)).unwrap();
    assert_eq!((u16::from_le(used_idx), u32::from_le(used_len)), (1, 32));
    assert_ne!(data, [0u8; 32]);
    assert_eq!(
        frontend.get_vring_base(0).unwrap(),
        1,
        "next avail after one request"
    );
    backend.assert_alive();
}

#[test]
fn a_ring_enabled_before_set_features_is_served_as_qemu_7_2_sends_it() {
    // Arrange: QEMU 7.2's virtio-net order (logged from a real QEMU): protocol features,
    // then SET_VRING_ENABLE, and SET_FEATURES only later. The rings are set up without a
    // second enable, so the queue works only if the early one was held and replayed.
    let dir = TempDir::new("early-enable");
    let mut backend = rng_backend(&dir);
    let mem = guest_memory(MEMORY_SIZE);
    let stream = UnixStream::connect(&backend.socket).unwrap();
    let mut raw = stream.try_clone().unwrap();
    let mut frontend = Frontend::from_stream(stream, 1);
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    let protocol = frontend.get_protocol_features().unwrap();
    frontend
        .set_protocol_features(protocol & VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    raw.write_all(&raw_message(SET_VRING_ENABLE, &[0, 0, 0, 0, 1, 0, 0, 0]))
        .unwrap();
    frontend.set_features(features).unwrap();
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    frontend
        .set_mem_table(&[region_info(&mem, MEMORY_SIZE as u64)])
        .unwrap();
    let rings = rings(&mem, DESC, AVAIL, USED);
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    frontend.set_vring_num(0, rings.queue_size).unwrap();
    frontend.set_vring_addr(0, &rings).unwrap();
    frontend.set_vring_base(0, 0).unwrap();
    frontend.set_vring_call(0, &call).unwrap();
    frontend.set_vring_kick(0, &kick).unwrap();

    // Act
    publish(&mem, 32, 1);
    kick.write(1).unwrap();

    // Assert
    assert!(called(&call), "no interrupt:\n{}", backend.log());
    let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(u16::from_le(used_idx), 1);
    let log = backend.log();
    assert!(
        log.contains("SET_VRING_ENABLE before SET_FEATURES: held"),
        "{log}"
    );
    assert!(!log.contains("connection closed"), "{log}");
    backend.assert_alive();
}

#[test]
fn an_oversized_message_is_refused_by_the_relay() {
    let dir = TempDir::new("oversized");
    let mut backend = rng_backend(&dir);
    let mut stream = UnixStream::connect(&backend.socket).unwrap();
    let mut header = Vec::new();
    for word in [SET_MEM_TABLE, 1, 0x10_0000] {
        header.extend_from_slice(&word.to_le_bytes());
    }

    stream.write_all(&header).unwrap();

    assert!(closed_by_backend(&mut stream));
    let log = backend.wait_for_log("connection closed");
    assert!(log.contains("1048576-byte body"), "{log}");
    assert_serves_again(&mut backend);
}

#[test]
fn an_unknown_request_closes_the_connection_with_a_clear_error() {
    let dir = TempDir::new("unknown");
    let mut backend = rng_backend(&dir);
    let mut stream = UnixStream::connect(&backend.socket).unwrap();

    stream.write_all(&raw_message(9999, &[])).unwrap();

    assert!(closed_by_backend(&mut stream));
    let log = backend.wait_for_log("connection closed");
    assert!(log.contains("does not support"), "{log}");
    assert_serves_again(&mut backend);
}

#[test]
fn a_request_of_a_protocol_feature_not_negotiated_is_refused_by_name() {
    let dir = TempDir::new("inactive");
    let mut backend = rng_backend(&dir);
    let mut stream = UnixStream::connect(&backend.socket).unwrap();

    stream
        .write_all(&raw_message(GET_INFLIGHT_FD, &[0u8; 24]))
        .unwrap();

    assert!(closed_by_backend(&mut stream));
    let log = backend.wait_for_log("connection closed");
    assert!(log.contains("INFLIGHT_SHMFD"), "{log}");
    assert_serves_again(&mut backend);
}

#[test]
fn a_body_of_the_wrong_size_and_a_half_header_are_survived() {
    let dir = TempDir::new("sizes");
    let mut backend = rng_backend(&dir);
    let mut stream = UnixStream::connect(&backend.socket).unwrap();
    // GET_FEATURES takes no body.
    stream
        .write_all(&raw_message(GET_FEATURES, &[1, 2, 3, 4]))
        .unwrap();
    assert!(closed_by_backend(&mut stream));
    let mut half = UnixStream::connect(&backend.socket).unwrap();

    half.write_all(&raw_message(GET_FEATURES, &[])[..6])
        .unwrap();
    drop(half);

    backend.wait_for_log("connection closed");
    assert_serves_again(&mut backend);
}

#[test]
fn a_memory_table_without_its_file_descriptors_is_refused() {
    let dir = TempDir::new("nofd");
    let mut backend = rng_backend(&dir);
    let mut stream = UnixStream::connect(&backend.socket).unwrap();
    // num_regions = 1, padding, then one region: guest address, size, user address, offset.
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    for value in [0u64, 0x10_0000, 0x7f00_0000_0000, 0] {
        body.extend_from_slice(&value.to_le_bytes());
    }

    stream
        .write_all(&raw_message(SET_MEM_TABLE, &body))
        .unwrap();

    assert!(closed_by_backend(&mut stream));
    backend.wait_for_log("connection closed");
    assert_serves_again(&mut backend);
}

#[test]
fn a_memory_region_larger_than_its_file_is_refused() {
    let dir = TempDir::new("pasteof");
    let mut backend = rng_backend(&dir);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = Frontend::connect(&backend.socket, 1).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    frontend.set_features(features).unwrap();
    frontend
        .set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);

    // The memfd holds 1 MiB; the table claims 16 MiB (touching the rest would be SIGBUS).
    let result = frontend.set_mem_table(&[region_info(&mem, 16 * MEMORY_SIZE as u64)]);

    assert!(result.is_err(), "the table was accepted");
    let log = backend.wait_for_log("connection closed");
    assert!(log.contains("of a file of 0x100000 bytes"), "{log}");
    assert_serves_again(&mut backend);
}

#[test]
fn ring_addresses_outside_the_memory_table_are_refused() {
    let dir = TempDir::new("badaddr");
    let mut backend = rng_backend(&dir);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
    let mut outside = rings(&mem, DESC, AVAIL, USED);
    outside.desc_table_addr = 0x10;

    let result = start_queue(&mut frontend, outside);

    assert!(result.is_err());
    backend.wait_for_log("connection closed");
    assert_serves_again(&mut backend);
}

#[test]
fn a_used_ring_running_off_the_end_of_memory_stops_the_queue_not_the_backend() {
    let dir = TempDir::new("offend");
    let mut backend = rng_backend(&dir);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
    // The used ring's index fits in memory, its first element (8 bytes at +4) does not.
    let used = MEMORY_SIZE as u64 - 8;
    let (_call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, used)).unwrap();

    publish(&mem, 32, 1);
    kick.write(1).unwrap();

    let log = backend.wait_for_log("queue stopped");
    assert!(log.contains("virtio-rng"), "{log}");
    backend.assert_alive();
    drop(frontend);
    assert_serves_again(&mut backend);
}

#[test]
fn an_avail_index_far_ahead_stops_the_queue_not_the_backend() {
    let dir = TempDir::new("availidx");
    let mut backend = rng_backend(&dir);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
    let (_call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, USED)).unwrap();

    publish(&mem, 32, 1000);
    kick.write(1).unwrap();

    backend.wait_for_log("queue stopped");
    // Stopping the queue (as a front-end does on reset) makes it usable again.
    assert_eq!(frontend.get_vring_base(0).unwrap(), 0);
    backend.assert_alive();
}

#[test]
fn a_front_end_vanishing_mid_request_leaves_the_disk_backend_serving() {
    let dir = TempDir::new("vanish");
    let image = dir.join("disk.img");
    std::fs::write(&image, vec![0u8; 4 << 20]).unwrap();
    let mut backend = Backend::start(&dir, "blk", "blk", &format!("path={}", image.display()));
    for _ in 0..3 {
        let mem = guest_memory(MEMORY_SIZE);
        let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
        let (_call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, USED)).unwrap();
        // A read of 64 KiB: header at 0x8000, data at BUFFER, status after it.
        let mut header = [0u8; 16];
        header[8..].copy_from_slice(&8u64.to_le_bytes());
        mem.write_slice(&header, GuestAddress(0x8000)).unwrap();
        let chain: [(u64, u32, u16); 3] = [
            (0x8000, 16, 1),
            (BUFFER, 0x10000, 1 | VRING_DESC_F_WRITE),
            (0x30000, 1, VRING_DESC_F_WRITE),
        ];
        for (i, (addr, len, flags)) in chain.iter().enumerate() {
            let mut descriptor = [0u8; 16];
            descriptor[..8].copy_from_slice(&addr.to_le_bytes());
            descriptor[8..12].copy_from_slice(&len.to_le_bytes());
            descriptor[12..14].copy_from_slice(&flags.to_le_bytes());
            descriptor[14..16].copy_from_slice(&(i as u16 + 1).to_le_bytes());
            mem.write_slice(&descriptor, GuestAddress(DESC + 16 * i as u64))
                .unwrap();
        }
        mem.write_obj(1u16.to_le(), GuestAddress(AVAIL + 2))
            .unwrap();

        kick.write(1).unwrap();
        drop(frontend);
    }

    backend.wait_for_log("front-end disconnected");
    assert_serves_again(&mut backend);
}

#[test]
fn a_vsock_front_end_reads_the_guest_cid_and_bad_ring_addresses_are_refused() {
    let dir = TempDir::new("vsock");
    let options = format!("cid=42,uds={}", dir.join("v.sock").display());
    let mut backend = Backend::start(&dir, "vsock", "vsock", &options);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);

    // What QEMU's vhost-user-vsock reads at realize: the 8-byte configuration space.
    let (_, config) = frontend
        .get_config(0, 8, VhostUserConfigFlags::empty(), &[0u8; 8])
        .unwrap();
    let queues = frontend.get_queue_num().unwrap();
    let mut outside = rings(&mem, DESC, AVAIL, USED);
    outside.used_ring_addr = host_addr(&mem, 0) + 2 * MEMORY_SIZE as u64;
    let result = start_queue(&mut frontend, outside);

    assert_eq!(config, 42u64.to_le_bytes());
    assert_eq!(queues, 3);
    assert!(result.is_err());
    backend.wait_for_log("connection closed");
    assert_serves_again(&mut backend);
}

#[test]
fn a_broken_vsock_rx_ring_stops_that_queue_when_host_data_arrives_without_a_kick() {
    let dir = TempDir::new("vsockrx");
    let uds = dir.join("v.sock");
    let options = format!("cid=42,uds={}", uds.display());
    let mut backend = Backend::start(&dir, "vsock", "vsock", &options);
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
    // Queue 0 is rx: its used ring's first element does not fit in memory.
    let used = MEMORY_SIZE as u64 - 8;
    let (_call, _kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, used)).unwrap();
    publish(&mem, 4096, 1);

    // A host program's CONNECT makes a REQUEST for the guest: no kick, the device's own event.
    let mut program = UnixStream::connect(&uds).unwrap();
    program.write_all(b"CONNECT 5000\n").unwrap();

    let log = backend.wait_for_log("queue stopped");
    assert!(
        log.contains("virtio-vsock") && log.contains("queue=0"),
        "{log}"
    );
    let mut second = UnixStream::connect(&uds).unwrap();
    second.write_all(b"CONNECT 5001\n").unwrap();
    backend.assert_alive();
    drop(frontend);
    backend.wait_for_log("front-end disconnected");
    assert_serves_again(&mut backend);
}

/// The fake front-end's virtio-blk requests: request `i` is descriptors `3i..3i+3` (a
/// 16-byte header at [`BLK_HEADERS`]` + 16i`, [`BLK_DATA_LEN`] bytes of data at
/// [`BLK_DATA`]` + BLK_DATA_LEN × i`, its status byte at [`BLK_STATUSES`]` + i`).
const BLK_HEADERS: u64 = 0x8000;
const BLK_STATUSES: u64 = 0x9000;
const BLK_DATA: u64 = 0x40000;
const BLK_DATA_LEN: u32 = 0x10000;
/// Requests published at once: five chains of three fill the 16-entry queue.
const BLK_REQUESTS: u16 = 5;
const BLK_DISK_LEN: usize = 4 << 20;

/// The disk image's initial byte at `offset`.
fn disk_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

fn blk_backend(dir: &TempDir) -> Backend {
    let image = dir.join("disk.img");
    let contents: Vec<u8> = (0..BLK_DISK_LEN).map(disk_byte).collect();
    std::fs::write(&image, contents).unwrap();
    Backend::start(dir, "blk", "blk", &format!("path={}", image.display()))
}

/// Publishes [`BLK_REQUESTS`] requests (reads, or writes of `fill` bytes when set) of
/// consecutive 64 KiB at the start of the disk, all available at once (avail index 5).
fn publish_blk_requests(mem: &GuestMemoryMmap, fill: Option<u8>) {
    const VIRTIO_BLK_T_OUT: u32 = 1;
    for request in 0..BLK_REQUESTS {
        let i = u64::from(request);
        let mut header = [0u8; 16];
        if fill.is_some() {
            header[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        }
        let sector = i * u64::from(BLK_DATA_LEN) / 512;
        header[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&header, GuestAddress(BLK_HEADERS + 16 * i))
            .unwrap();
        mem.write_obj(0xFFu8, GuestAddress(BLK_STATUSES + i))
            .unwrap();
        let data = BLK_DATA + u64::from(BLK_DATA_LEN) * i;
        let data_flags = match fill {
            Some(byte) => {
                mem.write_slice(&vec![byte; BLK_DATA_LEN as usize], GuestAddress(data))
                    .unwrap();
                1
            }
            None => 1 | VRING_DESC_F_WRITE,
        };
        let head = 3 * request;
        let chain: [(u64, u32, u16); 3] = [
            (BLK_HEADERS + 16 * i, 16, 1),
            (data, BLK_DATA_LEN, data_flags),
            (BLK_STATUSES + i, 1, VRING_DESC_F_WRITE),
        ];
        for (n, (addr, len, flags)) in chain.iter().enumerate() {
            let index = head + n as u16;
            let mut descriptor = [0u8; 16];
            descriptor[..8].copy_from_slice(&addr.to_le_bytes());
            descriptor[8..12].copy_from_slice(&len.to_le_bytes());
            descriptor[12..14].copy_from_slice(&flags.to_le_bytes());
            descriptor[14..16].copy_from_slice(&(index + 1).to_le_bytes());
            mem.write_slice(&descriptor, GuestAddress(DESC + 16 * u64::from(index)))
                .unwrap();
        }
        mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * i))
            .unwrap();
    }
    mem.write_obj(BLK_REQUESTS.to_le(), GuestAddress(AVAIL + 2))
        .unwrap();
}

fn used_idx(mem: &GuestMemoryMmap) -> u16 {
    u16::from_le(mem.read_obj(GuestAddress(USED + 2)).unwrap())
}

/// The status bytes of the requests whose heads the used ring holds, in used order.
fn used_statuses(mem: &GuestMemoryMmap) -> Vec<u8> {
    (0..u64::from(used_idx(mem)))
        .map(|slot| {
            let id: u32 = mem.read_obj(GuestAddress(USED + 4 + 8 * slot)).unwrap();
            let request = u64::from(u32::from_le(id)) / 3;
            mem.read_obj(GuestAddress(BLK_STATUSES + request)).unwrap()
        })
        .collect()
}

#[test]
fn front_ends_vanishing_with_requests_in_flight_leave_the_next_one_served_right() {
    // Arrange: front-ends that kick five 64 KiB writes (on eight I/O threads) and go at once.
    let dir = TempDir::new("inflight");
    let mut backend = blk_backend(&dir);
    for round in 0..4u8 {
        let mem = guest_memory(MEMORY_SIZE);
        let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
        let (_call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, USED)).unwrap();
        publish_blk_requests(&mem, Some(0xA0 + round));
        kick.write(1).unwrap();
        drop(frontend);
        // The memory goes too: requests in flight must hold their own mapping.
        drop(mem);
    }

    // Act: the next front-end reads the five regions back.
    let mem = guest_memory(MEMORY_SIZE);
    let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
    let (call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, USED)).unwrap();
    publish_blk_requests(&mem, None);
    kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while used_idx(&mem) < BLK_REQUESTS && Instant::now() < deadline {
        called(&call);
    }

    // Assert: every read answered OK, each region whole: as it was or one round's writes.
    assert_eq!(
        used_statuses(&mem),
        [0; BLK_REQUESTS as usize],
        "{}",
        backend.log()
    );
    for request in 0..u64::from(BLK_REQUESTS) {
        let mut data = vec![0u8; BLK_DATA_LEN as usize];
        let at = BLK_DATA + u64::from(BLK_DATA_LEN) * request;
        mem.read_slice(&mut data, GuestAddress(at)).unwrap();
        let start = (u64::from(BLK_DATA_LEN) * request) as usize;
        let original = (start..start + data.len())
            .map(disk_byte)
            .eq(data.iter().copied());
        let written = (0xA0..0xA4).any(|fill| data.iter().all(|&byte| byte == fill));
        assert!(original || written, "region {request} is mixed");
    }
    assert_eq!(frontend.get_vring_base(0).unwrap(), u32::from(BLK_REQUESTS));
    backend.assert_alive();
}

#[test]
fn a_stopped_disk_ring_has_every_request_taken_used_before_its_position_is_answered() {
    let dir = TempDir::new("stop");
    let mut backend = blk_backend(&dir);
    for _ in 0..10 {
        let mem = guest_memory(MEMORY_SIZE);
        let mut frontend = negotiated(&backend, &mem, MEMORY_SIZE as u64);
        let (_call, kick) = start_queue(&mut frontend, rings(&mem, DESC, AVAIL, USED)).unwrap();
        publish_blk_requests(&mem, None);

        kick.write(1).unwrap();
        // Give the worker thread time to take the requests; some may still run.
        std::thread::sleep(Duration::from_micros(200));
        let position = frontend.get_vring_base(0).unwrap();

        let used = used_idx(&mem);
        assert_eq!(
            u32::from(used),
            position,
            "taken but not used:\n{}",
            backend.log()
        );
        assert!(used_statuses(&mem).iter().all(|&status| status == 0));
    }
    backend.assert_alive();
}
