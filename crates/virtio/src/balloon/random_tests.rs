//! Randomized tests with a hostile driver: random descriptor tables, indirect tables, PFN
//! arrays, stats buffers and avail rings on all three queues, mixed with host requests.
//! Nothing may panic, nothing outside guest memory may be released, and the device may
//! write guest memory only in the used rings.

use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::tests::{Interrupts, RecordingReleaser};
use super::*;
use crate::test_utils::{
    DriverQueue, HOSTILE_REGIONS, WRITE, XorShift, changed_addresses, read_regions,
};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Two 128 KiB regions with a hole between them.
const REGIONS: [(u64, usize); 2] = HOSTILE_REGIONS;
/// Rings of the three queues (queues of up to 128 entries fit 8 KiB).
const RINGS: [u64; 3] = [0x0000, 0x2000, 0x4000];
/// Indirect tables.
const TABLE_AREA: std::ops::Range<u64> = 0x7000..0x8000;
/// Buffers: PFN arrays and stats, random words.
const DATA_AREAS: [std::ops::Range<u64>; 2] = [0x8000..0x2_0000, 0x4_0000..0x6_0000];
const QUEUE_SIZES: [u16; 6] = [1, 2, 8, 16, 64, 128];
const CASES: usize = 3_000;

fn memory() -> VirtioMemory {
    VirtioMemory::from_ranges(&REGIONS.map(|(base, len)| (GuestAddress(base), len))).unwrap()
}

/// A PFN: mostly a page of guest memory, often the hole or far beyond, sometimes anything.
fn random_pfn(rng: &mut XorShift) -> u32 {
    match rng.below(10) {
        0..=4 => {
            let (base, len) = REGIONS[rng.below(2) as usize];
            ((base + rng.below(len as u64)) >> PAGE_SHIFT) as u32
        }
        5 | 6 => (0x2_0000 + rng.below(0x2_0000)) as u32 >> PAGE_SHIFT,
        7 => u32::MAX - rng.below(16) as u32,
        _ => rng.next() as u32,
    }
}

/// Random PFN words for each data area, made once (buffers land at random offsets in them).
fn random_data(rng: &mut XorShift) -> Vec<Vec<u8>> {
    DATA_AREAS
        .iter()
        .map(|area| {
            (area.start..area.end)
                .step_by(4)
                .flat_map(|_| random_pfn(rng).to_le_bytes())
                .collect()
        })
        .collect()
}

fn fill_data(mem: &VirtioMemory, data: &[Vec<u8>]) {
    for (area, words) in DATA_AREAS.iter().zip(data) {
        mem.write_slice(words, GuestAddress(area.start)).unwrap();
    }
}

fn buffer_address(rng: &mut XorShift) -> u64 {
    let area = &DATA_AREAS[rng.below(2) as usize];
    match rng.below(12) {
        0 => area.end - rng.below(64),
        1 => 0x2_0000 + rng.below(0x2_0000),
        2 => u64::MAX - rng.below(0x1000),
        _ => area.start + rng.below(area.end - area.start),
    }
}

fn random_descriptor(rng: &mut XorShift, next_bound: u64) -> Descriptor {
    let mut flags = 0;
    if rng.chance(5) {
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
        let len = match rng.below(10) {
            0 => rng.next() as u32,
            1 => 0,
            _ => rng.below(0x800) as u32,
        };
        (buffer_address(rng), len)
    };
    Descriptor::new(addr, len, flags, rng.below(next_bound) as u16)
}

/// Random tables and avail rings for one queue; returns the driver side.
fn random_queue<'a>(mem: &'a VirtioMemory, rng: &mut XorShift, base: u64) -> DriverQueue<'a> {
    let size = QUEUE_SIZES[rng.below(QUEUE_SIZES.len() as u64) as usize];
    let vq = DriverQueue::new(mem, base, size);
    for i in 0..size {
        let desc = random_descriptor(rng, u64::from(size) + 2);
        vq.write_desc(i, desc.addr().0, desc.len(), desc.flags(), desc.next());
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
    if rng.chance(10) {
        vq.set_avail_idx(rng.next() as u16);
    }
    vq.set_used_event(rng.next() as u16);
    vq
}

fn random_tables(mem: &VirtioMemory, rng: &mut XorShift) {
    for i in 0..(TABLE_AREA.end - TABLE_AREA.start) / 16 {
        let desc = random_descriptor(rng, 20);
        let at = GuestAddress(TABLE_AREA.start + 16 * i);
        mem.write_obj(RawDescriptor::from(desc), at).unwrap();
    }
}

/// The first guest address whose byte differs and lies outside `allowed`.
fn stray_write(before: &[Vec<u8>], after: &[Vec<u8>], allowed: &[(u64, u64)]) -> Option<u64> {
    changed_addresses(before, after)
        .into_iter()
        .find(|addr| !allowed.iter().any(|&(s, e)| (s..e).contains(addr)))
}

/// A random host action or queue notification.
fn poke(balloon: &mut Balloon, rng: &mut XorShift) {
    match rng.below(8) {
        0 => balloon.set_target_pages(rng.next() as u32),
        1 => {
            let _ = balloon.request_stats();
        }
        2 => {
            let data: Vec<u8> = (0..rng.below(9)).map(|_| rng.next() as u8).collect();
            balloon.write_config(rng.below(12), &data);
        }
        _ => {
            let _ = balloon.process_queue(rng.below(4) as u16);
        }
    }
}

/// One random case; returns the device's counters.
fn run_case(rng: &mut XorShift, data: &[Vec<u8>]) -> BalloonCounters {
    let mem = memory();
    fill_data(&mem, data);
    random_tables(&mem, rng);
    let drivers: Vec<DriverQueue<'_>> = RINGS
        .iter()
        .map(|&base| random_queue(&mem, rng, base))
        .collect();
    let stats = rng.chance(2);
    let count = if stats { 3 } else { 2 };
    let releaser = RecordingReleaser::default();
    let mut balloon = Balloon::new(
        BalloonOptions {
            target_pages: rng.next() as u32,
            deflate_on_oom: rng.chance(2),
            stats,
        },
        Box::new(releaser.clone()),
    );
    balloon.ack_features(rng.next() & balloon.features());
    let queues = drivers[..count]
        .iter()
        .map(|vq| {
            let mut queue = vq.queue();
            queue.set_event_idx(rng.chance(2));
            queue
        })
        .collect();
    let allowed: Vec<(u64, u64)> = drivers[..count]
        .iter()
        .map(|vq| (vq.used, vq.used + vq.used_ring_len()))
        .collect();
    let before = read_regions(&mem);

    let activated = balloon.activate(mem.clone(), queues, Arc::new(Interrupts::default()));
    for _ in 0..rng.below(8) + 1 {
        poke(&mut balloon, rng);
    }

    assert!(activated.is_ok());
    let after = read_regions(&mem);
    if let Some(addr) = stray_write(&before, &after, &allowed) {
        panic!("byte {addr:#x} written outside the used rings");
    }
    for (start, len) in releaser.calls() {
        assert!(len > 0 && len.is_multiple_of(PAGE_SIZE) && start.is_multiple_of(PAGE_SIZE));
        let inside = usize::try_from(len).is_ok_and(|len| {
            GuestMemory::check_range(&mem, GuestAddress(start), len, Permissions::ReadWrite)
        });
        assert!(inside, "released {start:#x}+{len:#x} outside guest memory");
    }
    let released: u64 = releaser.calls().iter().map(|&(_, len)| len).sum();
    assert_eq!(released, balloon.counters().inflated_pages * PAGE_SIZE);
    balloon.counters()
}

#[test]
fn balloon_survives_hostile_queues_and_releases_only_guest_memory() {
    let mut rng = XorShift::new(0x6261_6c6c);
    let data = random_data(&mut rng);
    let mut total = BalloonCounters::default();
    for _ in 0..CASES {
        let counters = run_case(&mut rng, &data);
        total.inflated_pages += counters.inflated_pages;
        total.deflated_pages += counters.deflated_pages;
        total.refused_pfns += counters.refused_pfns;
        total.refused_chains += counters.refused_chains;
        total.stats_updates += counters.stats_updates;
    }
    // The test must have reached every path, or it proves nothing.
    assert!(total.inflated_pages > 1000, "{total:?}");
    assert!(total.deflated_pages > 1000, "{total:?}");
    assert!(total.refused_pfns > 1000, "{total:?}");
    assert!(total.refused_chains > 100, "{total:?}");
    assert!(total.stats_updates > 50, "{total:?}");
}
