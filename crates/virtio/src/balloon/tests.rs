//! Tests of virtio-balloon driven as a driver would: rings in guest memory, PFN arrays and
//! stats buffers, configuration reads and writes, snapshots.

use std::sync::Mutex;

use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use vm_memory::GuestAddress;

use super::*;
use crate::rng::RngState;
use crate::test_utils::{DriverQueue, WRITE, guest_memory};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// Where each queue's rings go (queue size 16 fits in 0x1000).
const RINGS: [u64; 3] = [0x0000, 0x1000, 0x2000];
/// Where PFN arrays and stats buffers go.
const BUFFERS: u64 = 0x1_0000;
const PAGE: u64 = PAGE_SIZE;

/// Records every release.
#[derive(Clone, Default)]
pub(super) struct RecordingReleaser(Arc<Mutex<Vec<(u64, u64)>>>);

impl RecordingReleaser {
    pub(super) fn calls(&self) -> Vec<(u64, u64)> {
        self.0.lock().unwrap().clone()
    }
}

impl PageReleaser for RecordingReleaser {
    fn release(&mut self, guest_addr: u64, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().push((guest_addr, len));
        Ok(())
    }
}

/// Records queue and configuration interrupts.
#[derive(Default)]
pub(super) struct Interrupts {
    queues: Mutex<Vec<u16>>,
    configs: Mutex<usize>,
}

impl Interrupts {
    fn queue_signals(&self) -> Vec<u16> {
        self.queues.lock().unwrap().clone()
    }

    fn config_signals(&self) -> usize {
        *self.configs.lock().unwrap()
    }
}

impl VirtioInterrupt for Interrupts {
    fn signal_queue(&self, queue: u16) {
        self.queues.lock().unwrap().push(queue);
    }

    fn signal_config(&self) {
        *self.configs.lock().unwrap() += 1;
    }
}

struct Driver<'a> {
    mem: &'a VirtioMemory,
    queues: Vec<DriverQueue<'a>>,
    /// Chains published so far, per queue.
    published: Vec<u16>,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a VirtioMemory, count: usize) -> Self {
        Self {
            mem,
            queues: RINGS[..count]
                .iter()
                .map(|&base| DriverQueue::new(mem, base, 16))
                .collect(),
            published: vec![0; count],
        }
    }

    fn device_queues(&self) -> Vec<Queue> {
        self.queues.iter().map(DriverQueue::queue).collect()
    }

    /// Publishes one chain of device-readable buffers `(addr, len)` on `queue`; returns its head.
    fn send(&mut self, queue: u16, buffers: &[(u64, u32)]) -> u16 {
        let q = usize::from(queue);
        let head = (self.published[q] * 4) % 16;
        for (i, &(addr, len)) in buffers.iter().enumerate() {
            let last = i + 1 == buffers.len();
            let index = head + i as u16;
            let (flags, next) = if last { (0, 0) } else { (NEXT, index + 1) };
            self.queues[q].write_desc(index, addr, len, flags, next);
        }
        self.queues[q].publish(self.published[q], head);
        self.published[q] += 1;
        head
    }

    /// Writes `pfns` at `addr` and sends them as one buffer on `queue`.
    fn send_pfns(&mut self, queue: u16, addr: u64, pfns: &[u32]) -> u16 {
        let bytes: Vec<u8> = pfns.iter().flat_map(|pfn| pfn.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        self.send(queue, &[(addr, bytes.len() as u32)])
    }

    fn used(&self, queue: u16) -> Vec<(u32, u32)> {
        let q = &self.queues[usize::from(queue)];
        (0..q.used_idx()).map(|slot| q.used_elem(slot)).collect()
    }
}

fn options(stats: bool) -> BalloonOptions {
    BalloonOptions {
        target_pages: 0,
        deflate_on_oom: false,
        stats,
    }
}

/// An activated balloon (stats negotiated when offered) with a recording releaser.
fn started(
    driver: &Driver<'_>,
    options: BalloonOptions,
) -> (Balloon, RecordingReleaser, Arc<Interrupts>) {
    let releaser = RecordingReleaser::default();
    let mut balloon = Balloon::new(options, Box::new(releaser.clone()));
    balloon.ack_features(balloon.features());
    let interrupts = Arc::new(Interrupts::default());
    balloon
        .activate(
            driver.mem.clone(),
            driver.device_queues(),
            interrupts.clone(),
        )
        .unwrap();
    (balloon, releaser, interrupts)
}

fn stat(tag: u16, value: u64) -> Vec<u8> {
    let mut bytes = tag.to_le_bytes().to_vec();
    bytes.extend_from_slice(&value.to_le_bytes());
    bytes
}

fn config_u32(balloon: &Balloon, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    balloon.read_config(offset, &mut data);
    u32::from_le_bytes(data)
}

#[test]
fn inflate_releases_exactly_the_listed_pages_merging_neighbours() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 2);
    let (mut balloon, releaser, interrupts) = started(&driver, options(false));
    driver.send_pfns(
        INFLATE_QUEUE,
        BUFFERS,
        &[0x30, 0x31, 0x32, 0x40, 0x31, 0x20F],
    );

    balloon.process_queue(INFLATE_QUEUE).unwrap();

    assert_eq!(
        releaser.calls(),
        vec![
            (0x30000, 3 * PAGE),
            (0x40000, PAGE),
            (0x31000, PAGE),
            (0x20_F000, PAGE)
        ]
    );
    assert_eq!(driver.used(INFLATE_QUEUE), vec![(0, 0)]);
    assert_eq!(interrupts.queue_signals(), vec![INFLATE_QUEUE]);
    assert_eq!(balloon.counters().inflated_pages, 6);
}

#[test]
fn pfns_outside_guest_memory_are_skipped() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 2);
    let (mut balloon, releaser, _) = started(&driver, options(false));
    // 0x100: the hole at 1 MiB; 0x2FF: the last page; 0x300: just past the end.
    let pfns = [0x100, 0x1FF, 0x2FF, 0x300, 0xFFFF_FFFF, 0x8];
    driver.send_pfns(INFLATE_QUEUE, BUFFERS, &pfns);

    balloon.process_queue(INFLATE_QUEUE).unwrap();

    assert_eq!(releaser.calls(), vec![(0x2F_F000, PAGE), (0x8000, PAGE)]);
    let counters = balloon.counters();
    assert_eq!((counters.inflated_pages, counters.refused_pfns), (2, 4));
    assert_eq!(driver.used(INFLATE_QUEUE), vec![(0, 0)]);
}

#[test]
fn a_pfn_split_between_two_buffers_is_read_whole() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 2);
    let (mut balloon, releaser, _) = started(&driver, options(false));
    let bytes: Vec<u8> = [0x50u32, 0x52, 0x54]
        .iter()
        .flat_map(|pfn| pfn.to_le_bytes())
        .collect();
    mem.write_slice(&bytes[..6], GuestAddress(BUFFERS)).unwrap();
    mem.write_slice(&bytes[6..], GuestAddress(BUFFERS + 0x100))
        .unwrap();
    driver.send(INFLATE_QUEUE, &[(BUFFERS, 6), (BUFFERS + 0x100, 7)]);

    balloon.process_queue(INFLATE_QUEUE).unwrap();

    assert_eq!(
        releaser.calls(),
        vec![(0x50000, PAGE), (0x52000, PAGE), (0x54000, PAGE)],
        "the trailing byte is not a PFN"
    );
}

#[test]
fn deflate_counts_pages_and_releases_nothing() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 2);
    let (mut balloon, releaser, interrupts) = started(&driver, options(false));
    driver.send_pfns(DEFLATE_QUEUE, BUFFERS, &[0x30, 0x31, 0x300]);

    balloon.process_queue(DEFLATE_QUEUE).unwrap();

    assert!(releaser.calls().is_empty());
    let counters = balloon.counters();
    assert_eq!((counters.deflated_pages, counters.refused_pfns), (2, 1));
    assert_eq!(driver.used(DEFLATE_QUEUE), vec![(0, 0)]);
    assert_eq!(interrupts.queue_signals(), vec![DEFLATE_QUEUE]);
}

#[test]
fn a_device_writable_buffer_is_refused_without_releasing() {
    let mem = guest_memory();
    let driver = Driver::new(&mem, 2);
    let (mut balloon, releaser, _) = started(&driver, options(false));
    mem.write_obj(0x30u32, GuestAddress(BUFFERS)).unwrap();
    driver.queues[0].write_desc(0, BUFFERS, 4, WRITE, 0);
    driver.queues[0].publish(0, 0);

    balloon.process_queue(INFLATE_QUEUE).unwrap();

    assert!(releaser.calls().is_empty());
    assert_eq!(driver.used(INFLATE_QUEUE), vec![(0, 0)]);
    assert_eq!(balloon.counters().refused_chains, 1);
}

#[test]
fn a_failing_releaser_is_counted_and_the_buffer_still_returned() {
    struct Failing;
    impl PageReleaser for Failing {
        fn release(&mut self, _: u64, _: u64) -> std::io::Result<()> {
            Err(std::io::Error::other("no"))
        }
    }
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 2);
    let mut balloon = Balloon::new(options(false), Box::new(Failing));
    let interrupts = Arc::new(Interrupts::default());
    balloon
        .activate(mem.clone(), driver.device_queues(), interrupts)
        .unwrap();
    driver.send_pfns(INFLATE_QUEUE, BUFFERS, &[0x30, 0x40]);

    balloon.process_queue(INFLATE_QUEUE).unwrap();

    assert_eq!(balloon.counters().release_errors, 2);
    assert_eq!(driver.used(INFLATE_QUEUE), vec![(0, 0)]);
}

#[test]
fn the_configuration_holds_num_pages_then_actual() {
    let mut balloon = Balloon::new(
        BalloonOptions {
            target_pages: 0x1234_5678,
            ..options(false)
        },
        Box::new(RecordingReleaser::default()),
    );
    balloon.write_config(4, &0x0000_0100u32.to_le_bytes());
    let mut all = [0xFFu8; 12];
    let mut byte = [0u8; 1];

    balloon.read_config(0, &mut all);
    balloon.read_config(1, &mut byte);

    assert_eq!(all, [0x78, 0x56, 0x34, 0x12, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(byte, [0x56]);
    assert_eq!(
        config_u32(&balloon, 8),
        0,
        "free_page_hint_cmd_id: not offered"
    );
    assert_eq!(config_u32(&balloon, 0x1000), 0);
}

#[test]
fn the_driver_writes_actual_at_any_width_and_never_num_pages() {
    let mut balloon = Balloon::new(
        BalloonOptions {
            target_pages: 300,
            ..options(false)
        },
        Box::new(RecordingReleaser::default()),
    );

    balloon.write_config(0, &[9, 9, 9, 9, 0x2C, 0x01]);
    let after_wide = balloon.actual_pages();
    balloon.write_config(7, &[0x80]);
    balloon.write_config(u64::MAX, &[1, 2]);

    assert_eq!(after_wide, 300);
    assert_eq!(balloon.actual_pages(), 0x8000_012C);
    assert_eq!(balloon.target_pages(), 300);
    assert_eq!(config_u32(&balloon, 0), 300);
}

#[test]
fn set_target_pages_raises_a_configuration_interrupt_when_running() {
    let mem = guest_memory();
    let driver = Driver::new(&mem, 2);
    let mut idle = Balloon::new(options(false), Box::new(RecordingReleaser::default()));
    idle.set_target_pages(10);
    let (mut balloon, _, interrupts) = started(&driver, options(false));

    balloon.set_target_pages(256);
    balloon.set_target_pages(256);
    balloon.set_target_pages(0);

    assert_eq!(config_u32(&idle, 0), 10, "a stopped device just takes it");
    assert_eq!(interrupts.config_signals(), 2, "only changes interrupt");
    assert_eq!(balloon.target_pages(), 0);
}

#[test]
fn features_follow_the_options() {
    let plain = Balloon::new(options(false), Box::new(RecordingReleaser::default()));
    let full = Balloon::new(
        BalloonOptions {
            target_pages: 0,
            deflate_on_oom: true,
            stats: true,
        },
        Box::new(RecordingReleaser::default()),
    );

    assert_eq!(plain.features(), features::COMMON);
    assert_eq!(
        full.features(),
        features::COMMON | F_STATS_VQ | F_DEFLATE_ON_OOM
    );
    assert_eq!(plain.queue_max_sizes(), [QUEUE_SIZE; 2]);
    assert_eq!(full.queue_max_sizes(), [QUEUE_SIZE; 3]);
    assert_eq!(full.device_type(), 5);
}

#[test]
fn stats_are_kept_and_the_buffer_held_until_requested() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 3);
    let (mut balloon, _, interrupts) = started(&driver, options(true));
    let mut first = stat(5, 256 << 20);
    first.extend(stat(4, 100 << 20));
    first.extend(stat(77, 1));
    mem.write_slice(&first, GuestAddress(BUFFERS)).unwrap();
    let head = driver.send(STATS_QUEUE, &[(BUFFERS, first.len() as u32)]);

    balloon.process_queue(STATS_QUEUE).unwrap();
    let held = driver.used(STATS_QUEUE);
    let requested = balloon.request_stats().unwrap();
    let again = balloon.request_stats().unwrap();

    assert_eq!(balloon.stats().total_memory, Some(256 << 20));
    assert_eq!(balloon.stats().free_memory, Some(100 << 20));
    assert!(held.is_empty(), "the device holds the stats buffer");
    assert!(requested && !again);
    assert_eq!(driver.used(STATS_QUEUE), vec![(u32::from(head), 0)]);
    assert_eq!(interrupts.queue_signals(), vec![STATS_QUEUE]);
}

#[test]
fn a_refreshed_stats_buffer_replaces_the_previous_values() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 3);
    let (mut balloon, _, _) = started(&driver, options(true));
    let first = [stat(4, 1), stat(6, 2)].concat();
    mem.write_slice(&first, GuestAddress(BUFFERS)).unwrap();
    driver.send(STATS_QUEUE, &[(BUFFERS, 20)]);
    balloon.process_queue(STATS_QUEUE).unwrap();
    balloon.request_stats().unwrap();
    mem.write_slice(&stat(4, 3), GuestAddress(BUFFERS)).unwrap();
    driver.send(STATS_QUEUE, &[(BUFFERS, 10)]);

    balloon.process_queue(STATS_QUEUE).unwrap();

    assert_eq!(
        *balloon.stats(),
        BalloonStats {
            free_memory: Some(3),
            ..BalloonStats::default()
        }
    );
    assert_eq!(balloon.counters().stats_updates, 2);
}

#[test]
fn a_second_stats_buffer_returns_the_first() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 3);
    let (mut balloon, _, _) = started(&driver, options(true));
    mem.write_slice(&stat(4, 1), GuestAddress(BUFFERS)).unwrap();
    let first = driver.send(STATS_QUEUE, &[(BUFFERS, 10)]);
    let second = driver.send(STATS_QUEUE, &[(BUFFERS, 10)]);

    balloon.process_queue(STATS_QUEUE).unwrap();
    balloon.request_stats().unwrap();

    assert_eq!(
        driver.used(STATS_QUEUE),
        vec![(u32::from(first), 0), (u32::from(second), 0)]
    );
}

#[test]
fn a_stats_buffer_made_available_before_activation_is_picked_up() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 3);
    mem.write_slice(&stat(5, 42), GuestAddress(BUFFERS))
        .unwrap();
    driver.send(STATS_QUEUE, &[(BUFFERS, 10)]);

    let (mut balloon, _, _) = started(&driver, options(true));

    assert_eq!(balloon.stats().total_memory, Some(42));
    assert!(balloon.request_stats().unwrap());
}

#[test]
fn without_stats_negotiated_the_stats_queue_is_ignored() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 3);
    let mut balloon = Balloon::new(options(true), Box::new(RecordingReleaser::default()));
    balloon.ack_features(features::VERSION_1);
    let mut queues = driver.device_queues();
    queues[2] = Queue::new(QUEUE_SIZE).unwrap();
    balloon
        .activate(mem.clone(), queues, Arc::new(Interrupts::default()))
        .unwrap();
    mem.write_slice(&stat(5, 42), GuestAddress(BUFFERS))
        .unwrap();
    driver.send(STATS_QUEUE, &[(BUFFERS, 10)]);

    balloon.process_queue(STATS_QUEUE).unwrap();

    assert_eq!(balloon.stats().total_memory, None);
    assert!(!balloon.request_stats().unwrap());
    assert_eq!(balloon.queue_states().unwrap().len(), 3);
    assert!(matches!(
        balloon.process_queue(3),
        Err(DeviceError::NoSuchQueue { index: 3 })
    ));
}

#[test]
fn activation_needs_inflate_and_deflate_and_reset_forgets_the_driver() {
    let mem = guest_memory();
    let driver = Driver::new(&mem, 2);
    let mut balloon = Balloon::new(options(false), Box::new(RecordingReleaser::default()));
    let interrupts: Arc<dyn VirtioInterrupt> = Arc::new(Interrupts::default());
    let mut not_ready = driver.device_queues();
    not_ready[1] = Queue::new(16).unwrap();

    let one = balloon.activate(
        mem.clone(),
        vec![driver.queues[0].queue()],
        interrupts.clone(),
    );
    let deflate_off = balloon.activate(mem.clone(), not_ready, interrupts.clone());
    balloon
        .activate(mem.clone(), driver.device_queues(), interrupts)
        .unwrap();
    balloon.write_config(4, &7u32.to_le_bytes());
    balloon.set_target_pages(9);
    balloon.reset();

    assert!(matches!(
        one,
        Err(ActivateError::QueueCount {
            expected: 2,
            given: 1
        })
    ));
    assert!(matches!(
        deflate_off,
        Err(ActivateError::QueueNotEnabled { index: 1 })
    ));
    assert!(matches!(
        balloon.process_queue(0),
        Err(DeviceError::NotActivated { index: 0 })
    ));
    assert!(matches!(
        balloon.process_queue(2),
        Err(DeviceError::NoSuchQueue { index: 2 })
    ));
    assert_eq!((balloon.actual_pages(), balloon.target_pages()), (0, 9));
    assert!(balloon.queue_states().is_none());
}

#[test]
fn inflating_through_guest_memory_releaser_zeroes_the_page() {
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, 2);
    mem.write_slice(&[0xA5; 2 * PAGE as usize], GuestAddress(0x8_0000))
        .unwrap();
    let mut balloon = Balloon::new(
        options(false),
        Box::new(GuestMemoryReleaser::new(mem.clone())),
    );
    balloon
        .activate(
            mem.clone(),
            driver.device_queues(),
            Arc::new(Interrupts::default()),
        )
        .unwrap();
    driver.send_pfns(INFLATE_QUEUE, BUFFERS, &[0x80]);

    balloon.process_queue(INFLATE_QUEUE).unwrap();

    let mut page = vec![0xFFu8; 2 * PAGE as usize];
    mem.read_slice(&mut page, GuestAddress(0x8_0000)).unwrap();
    assert!(page[..PAGE as usize].iter().all(|&b| b == 0));
    assert!(page[PAGE as usize..].iter().all(|&b| b == 0xA5));
    assert_eq!(balloon.counters().release_errors, 0);
}

/// A running balloon holding a stats buffer, with some history.
fn busy_balloon<'a>(mem: &'a VirtioMemory) -> (Balloon, Driver<'a>) {
    let mut driver = Driver::new(mem, 3);
    let (mut balloon, _, _) = started(&driver, options(true));
    driver.send_pfns(INFLATE_QUEUE, BUFFERS, &[0x30, 0x31, 0x300]);
    balloon.process_queue(INFLATE_QUEUE).unwrap();
    mem.write_slice(&stat(4, 99), GuestAddress(BUFFERS + 0x100))
        .unwrap();
    driver.send(STATS_QUEUE, &[(BUFFERS + 0x100, 10)]);
    balloon.process_queue(STATS_QUEUE).unwrap();
    balloon.set_target_pages(2);
    balloon.write_config(4, &2u32.to_le_bytes());
    (balloon, driver)
}

#[test]
fn device_state_round_trips_through_bincode() {
    let mem = guest_memory();
    let (balloon, driver) = busy_balloon(&mem);
    let state = balloon.device_state().unwrap();
    let config = bincode::config::standard().with_fixed_int_encoding();
    let bytes = bincode::serde::encode_to_vec(&state, config).unwrap();
    let (decoded, _): (VirtioDeviceState, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    let mut restored = Balloon::new(options(true), Box::new(RecordingReleaser::default()));

    restored.restore_device_state(Some(&decoded)).unwrap();
    restored.ack_features(restored.features());
    restored
        .activate(
            mem.clone(),
            driver.device_queues_at(&balloon),
            Arc::new(Interrupts::default()),
        )
        .unwrap();

    assert_eq!(restored.device_state(), Some(state));
    assert_eq!((restored.target_pages(), restored.actual_pages()), (2, 2));
    assert_eq!(restored.stats().free_memory, Some(99));
    assert_eq!(restored.counters().inflated_pages, 2);
    assert!(
        restored.request_stats().unwrap(),
        "the held buffer goes back"
    );
    assert_eq!(driver.used(STATS_QUEUE).len(), 1);
}

impl Driver<'_> {
    /// The device-side queues at the positions `balloon` reached (as a restore builds them).
    fn device_queues_at(&self, balloon: &Balloon) -> Vec<Queue> {
        balloon
            .queue_states()
            .unwrap()
            .into_iter()
            .map(|state| Queue::try_from(state).unwrap())
            .collect()
    }
}

#[test]
fn device_state_of_another_device_or_impossible_values_is_refused() {
    let mem = guest_memory();
    let (balloon, _) = busy_balloon(&mem);
    let Some(VirtioDeviceState::Balloon(good)) = balloon.device_state() else {
        panic!("a balloon state");
    };
    let mut without_stats = Balloon::new(options(false), Box::new(RecordingReleaser::default()));
    let mut with_stats = Balloon::new(options(true), Box::new(RecordingReleaser::default()));
    let past_queue = Box::new(BalloonState {
        stats_head: Some(QUEUE_SIZE),
        ..(*good).clone()
    });
    let rng = VirtioDeviceState::Rng(RngState { bytes_delivered: 1 });

    let held_without_queue =
        without_stats.restore_device_state(Some(&VirtioDeviceState::Balloon(good)));
    let past = with_stats.restore_device_state(Some(&VirtioDeviceState::Balloon(past_queue)));
    let other = with_stats.restore_device_state(Some(&rng));
    let missing = with_stats.restore_device_state(None);

    assert!(matches!(
        held_without_queue,
        Err(DeviceStateError::Invalid {
            field: "stats_head",
            ..
        })
    ));
    assert!(matches!(past, Err(DeviceStateError::Invalid { .. })));
    assert!(matches!(
        other,
        Err(DeviceStateError::WrongDevice {
            expected: "virtio-balloon",
            found: "virtio-rng"
        })
    ));
    assert!(matches!(missing, Err(DeviceStateError::WrongDevice { .. })));
    assert_eq!(
        with_stats.counters(),
        BalloonCounters::default(),
        "unchanged"
    );
}

#[test]
fn sizes_and_targets_convert_to_pages() {
    let ram = 256 << 20;

    assert_eq!(pages_for_size(16 << 20, ram), Ok(4096));
    assert_eq!(pages_for_size(0, ram), Ok(0));
    assert_eq!(pages_for_size(5000, ram), Ok(1), "rounded down");
    assert_eq!(
        pages_for_size(ram, ram),
        Err(BalloonError::SizeTooLarge { size: ram, ram })
    );
    assert_eq!(pages_for_target_mib(192, ram), Ok(64 * 256));
    assert_eq!(pages_for_target_mib(256, ram), Ok(0));
    assert_eq!(
        pages_for_target_mib(257, ram),
        Err(BalloonError::TargetAboveMemory {
            target_mib: 257,
            ram_mib: 256
        })
    );
    assert!(pages_for_target_mib(u64::MAX, ram).is_err());
    assert_eq!(pages_for_target_mib(0, ram), Err(BalloonError::TargetZero));
    assert_eq!(
        pages_for_target_mib(1, 32 << 40),
        Err(BalloonError::TooManyPages {
            pages: ((32u64 << 40) - (1 << 20)) >> 12
        })
    );
}
