//! Randomized tests with a hostile driver: random descriptor tables, indirect tables, avail
//! rings and packet headers thrown at virtio-vsock's three queues while host programs connect,
//! listen and write. Nothing may panic, the device may write guest memory only inside
//! device-writable buffers and the used rings, and what it reports used must fit the rules.

use std::io::Write;
use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::packet::{HEADER_LEN, HOST_CID, Header, MAX_PAYLOAD, TYPE_STREAM};
use super::tests::{FakeHost, GUEST_CID};
use super::*;
use crate::test_utils::{
    DriverQueue, HOSTILE_REGIONS, RecordingInterrupt, WRITE, XorShift, changed_addresses,
    read_regions,
};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
const TABLE_AREA: std::ops::Range<u64> = 0xF000..0x1_0000;
const DATA_AREAS: [std::ops::Range<u64>; 2] = [0x1_0000..0x2_0000, 0x4_0000..0x6_0000];
/// Where each queue's rings go (region 0 holds all three).
const RING_BASES: [u64; 3] = [0x0, 0x4000, 0x8000];
const QUEUE_SIZES: [u16; 5] = [1, 2, 8, 16, 64];
const CASES: usize = 1_500;
const FILL: u8 = 0xEE;
const PORTS: [u32; 5] = [52, 80, 81, FIRST_LOCAL_PORT, FIRST_LOCAL_PORT + 1];

fn pick<T: Copy>(rng: &mut XorShift, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

fn buffer_address(rng: &mut XorShift) -> u64 {
    let area = &DATA_AREAS[rng.below(2) as usize];
    match rng.below(14) {
        0 => area.end - rng.below(64),
        1 => 0x2_0000 + rng.below(0x2_0000),
        2 => u64::MAX - rng.below(0x1000),
        _ => area.start + rng.below(area.end - area.start - 0x200),
    }
}

fn buffer_length(rng: &mut XorShift) -> u32 {
    match rng.below(10) {
        0 => rng.next() as u32,
        1 => 0,
        2 => rng.below(HEADER_LEN as u64) as u32,
        _ => rng.below(0x300) as u32,
    }
}

/// A random descriptor; `writable` says which way most of them go.
fn random_descriptor(rng: &mut XorShift, next_bound: u64, writable: bool) -> Descriptor {
    let mut flags = 0;
    if writable != rng.chance(8) {
        flags |= WRITE;
    }
    if rng.chance(3) {
        flags |= NEXT;
    }
    if rng.chance(12) {
        flags |= INDIRECT;
    }
    let (addr, len) = if flags & INDIRECT != 0 {
        let slots = (TABLE_AREA.end - TABLE_AREA.start) / 16;
        (
            TABLE_AREA.start + 16 * rng.below(slots),
            16 * rng.below(12) as u32,
        )
    } else {
        (buffer_address(rng), buffer_length(rng))
    };
    Descriptor::new(addr, len, flags, rng.below(next_bound) as u16)
}

/// A header that is often plausible, so the connection state machine gets exercised.
fn random_header(rng: &mut XorShift) -> Header {
    Header {
        src_cid: if rng.chance(10) {
            rng.next()
        } else {
            GUEST_CID
        },
        dst_cid: if rng.chance(10) { rng.next() } else { HOST_CID },
        src_port: pick(rng, &PORTS),
        dst_port: pick(rng, &PORTS),
        len: match rng.below(8) {
            0 => rng.next() as u32,
            1 => MAX_PAYLOAD + 1,
            _ => rng.below(0x100) as u32,
        },
        kind: if rng.chance(10) { 2 } else { TYPE_STREAM },
        op: rng.below(9) as u16,
        flags: rng.below(4) as u32,
        buf_alloc: pick(rng, &[0, 16, 4096, 1 << 20, u32::MAX]),
        fwd_cnt: pick(rng, &[0, 16, 4096, u32::MAX]),
    }
}

/// Fills queue `index`'s table (and plants headers at the buffers) and publishes heads.
fn random_queue<'m>(rng: &mut XorShift, mem: &'m VirtioMemory, index: usize) -> DriverQueue<'m> {
    let size = pick(rng, &QUEUE_SIZES);
    let vq = DriverQueue::new(mem, RING_BASES[index], size);
    let writable = index != usize::from(TX_QUEUE);
    for i in 0..size {
        let desc = random_descriptor(rng, u64::from(size) + 2, writable);
        vq.write_desc(i, desc.addr().0, desc.len(), desc.flags(), desc.next());
        if !writable && rng.chance(2) {
            let _ = mem.write_slice(&random_header(rng).to_bytes(), desc.addr());
        }
    }
    let published = rng.below(u64::from(size) + 2) as u16;
    for slot in 0..published.min(size) {
        let head = if rng.chance(10) {
            rng.next() as u16
        } else {
            rng.below(u64::from(size)) as u16
        };
        vq.publish(slot, head);
    }
    vq.set_avail_idx(if rng.chance(12) {
        rng.next() as u16
    } else {
        published
    });
    vq
}

/// Every device-writable range named by the three tables and the indirect area.
fn writable_ranges(mem: &VirtioMemory, queues: &[DriverQueue<'_>]) -> Vec<(u64, u64)> {
    let mut tables: Vec<(u64, u64)> = queues.iter().map(|q| (q.desc, u64::from(q.size))).collect();
    tables.push((TABLE_AREA.start, (TABLE_AREA.end - TABLE_AREA.start) / 16));
    crate::test_utils::writable_buffers(mem, &tables)
}

fn run_case(rng: &mut XorShift) {
    let mem =
        VirtioMemory::from_ranges(&HOSTILE_REGIONS.map(|(b, l)| (GuestAddress(b), l))).unwrap();
    for area in &DATA_AREAS {
        let len = (area.end - area.start) as usize;
        mem.write_slice(&vec![FILL; len], GuestAddress(area.start))
            .unwrap();
    }
    for i in 0..(TABLE_AREA.end - TABLE_AREA.start) / 16 {
        let writable = rng.chance(2);
        let desc = random_descriptor(rng, 16, writable);
        let at = GuestAddress(TABLE_AREA.start + 16 * i);
        mem.write_obj(RawDescriptor::from(desc), at).unwrap();
    }
    let queues: Vec<DriverQueue<'_>> = (0..3).map(|i| random_queue(rng, &mem, i)).collect();
    let (host, backend) = FakeHost::new();
    host.listen(80);
    let mut device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    if rng.chance(3) {
        let state = device.device_state();
        device.restore_device_state(state.as_ref()).unwrap();
    }
    let mut programs = Vec::new();
    for _ in 0..rng.below(3) {
        let mut program = host.connect();
        let line = pick(
            rng,
            &["CONNECT 52\n", "CONNECT 81\nearly", "CONNECT x\n", ""],
        );
        program.write_all(line.as_bytes()).unwrap();
        // Host programs never block the test: what the device does not take is dropped.
        program.set_nonblocking(true).unwrap();
        programs.push(program);
    }
    let activated = device.activate(
        mem.clone(),
        queues.iter().map(DriverQueue::queue).collect(),
        Arc::new(RecordingInterrupt::default()),
    );
    assert!(activated.is_ok());
    let allowed = writable_ranges(&mem, &queues);
    let before = read_regions(&mem);

    for _ in 0..4 {
        match rng.below(4) {
            0 => device.process_host_events(),
            1 => {
                for program in &mut programs {
                    let _ = program.write_all(&[0x42; 100]);
                }
                if let Some(mut listener_end) = host.take_connected(80) {
                    listener_end.set_nonblocking(true).unwrap();
                    let _ = listener_end.write_all(b"from the host");
                    programs.push(listener_end);
                }
            }
            _ => {
                let _ = device.process_queue(rng.below(4) as u16);
            }
        }
    }

    let changed = changed_addresses(&before, &read_regions(&mem));
    let used_rings: Vec<std::ops::Range<u64>> = queues
        .iter()
        .map(|q| q.used..q.used + q.used_ring_len())
        .collect();
    for &addr in &changed {
        let legit = used_rings.iter().any(|r| r.contains(&addr))
            || allowed.iter().any(|&(s, e)| (s..e).contains(&addr));
        assert!(legit, "byte {addr:#x} written outside the buffers");
    }
    for (index, queue) in queues.iter().enumerate() {
        let used = queue.used_idx();
        assert!(
            used <= queue.size,
            "queue {index}: {used} used of {}",
            queue.size
        );
        for slot in 0..used {
            let (id, len) = queue.used_elem(slot);
            assert!(id < u32::from(queue.size));
            let most = match index as u16 {
                RX_QUEUE => HEADER_LEN as u32 + MAX_PAYLOAD,
                TX_QUEUE => 0,
                _ => packet::EVENT_LEN as u32,
            };
            assert!(len <= most, "queue {index}: used length {len}");
        }
    }
    assert!(device.connection_count() <= MAX_CONNECTIONS);
}

#[test]
fn vsock_survives_random_queues_and_writes_only_its_buffers() {
    let mut rng = XorShift::new(0x7673_6f63);
    for _ in 0..CASES {
        run_case(&mut rng);
    }
}

#[test]
fn the_state_machine_survives_random_packets_on_sane_queues() {
    let mut rng = XorShift::new(0x7374_6174);
    let mem = crate::test_utils::guest_memory();
    let mut h = super::tests::Harness::new(&mem);
    h.host.listen(80);
    let mut programs = Vec::new();
    for _ in 0..3_000 {
        match rng.below(10) {
            0 => {
                let mut program = h.host.connect();
                let _ = program.write_all(b"CONNECT 52\n");
                program.set_nonblocking(true).unwrap();
                programs.push(program);
            }
            1 => {
                for program in &mut programs {
                    let _ = program.write_all(&[0x17; 300]);
                }
                while let Some(program) = h.host.take_connected(80) {
                    program.set_nonblocking(true).unwrap();
                    programs.push(program);
                }
                h.host_events();
            }
            2 if !programs.is_empty() => {
                programs.swap_remove(rng.below(programs.len() as u64) as usize);
            }
            _ => {
                let header = random_header(&mut rng);
                let len = (header.len as usize).min(0x1000);
                let payload = vec![0x33u8; len];
                let mut raw = header.to_bytes().to_vec();
                raw.truncate(if rng.chance(20) { 20 } else { HEADER_LEN });
                h.send_raw(&raw, &payload, 0);
            }
        }
        for (packet, data) in h.received() {
            assert_eq!(packet.len as usize, data.len());
            assert_eq!((packet.src_cid, packet.dst_cid), (HOST_CID, GUEST_CID));
            assert_eq!(packet.kind, TYPE_STREAM);
            assert!(packet.operation().is_some());
        }
    }
    assert!(h.device.stats().packets_from_guest > 1_000);
}
