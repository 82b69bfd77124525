//! Tests of virtio-blk with I/O threads: requests finish out of order, no more run than
//! there are threads, quiesce and reset leave nothing in flight, a failing disk answers
//! IOERR from a thread, reads mark guest pages dirty, the rate limiter still charges each
//! request. A gated in-memory disk holds requests until the test releases them.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use storage::{Clock, DiskBackend, RateLimiter, TokenBucket};
use vm_memory::{Bytes, GuestAddress};

use super::tests::{NEXT, TempDisk, pattern};
use super::*;
use crate::test_utils::{DriverQueue, RecordingInterrupt, WRITE, guest_memory};

const OK: u8 = Status::Ok as u8;
const IOERR: u8 = Status::IoErr as u8;
const DISK_LEN: usize = 256 * 1024;
const HEADERS_AT: u64 = 0x1_0000;
const STATUSES_AT: u64 = 0x1_F000;
const DATA_AT: u64 = 0x2_0000;
/// Bytes of each request's data buffer.
const DATA_LEN: u32 = 4096;

/// What the gated disk's handles share: its bytes and which accesses may proceed.
#[derive(Default)]
struct GateState {
    /// Offsets whose accesses wait (all of them while `closed`).
    held: HashSet<u64>,
    closed: bool,
    /// Accesses started, by offset, in order.
    started: Vec<u64>,
    running: usize,
    most_running: usize,
    /// Reads at this offset fail.
    failing: Option<u64>,
}

#[derive(Default)]
struct Gates {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gates {
    fn update(&self, change: impl FnOnce(&mut GateState)) {
        change(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    fn started(&self) -> usize {
        self.state.lock().unwrap().started.len()
    }

    /// Waits (at most 5 s) until `count` accesses started.
    fn wait_started(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut state = self.state.lock().unwrap();
        while state.started.len() < count {
            assert!(
                Instant::now() < deadline,
                "only {} started",
                state.started.len()
            );
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }

    /// Enters an access at `offset`: waits while it is held.
    fn enter(&self, offset: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.started.push(offset);
        state.running += 1;
        state.most_running = state.most_running.max(state.running);
        self.changed.notify_all();
        while state.closed || state.held.contains(&offset) {
            state = self.changed.wait(state).unwrap();
        }
        state.running -= 1;
        self.changed.notify_all();
        match state.failing {
            Some(at) if at == offset => Err(io::Error::other(format!("bad sector at {at}"))),
            _ => Ok(()),
        }
    }
}

/// An in-memory disk whose accesses wait at the test's gates; every clone shares both.
#[derive(Clone)]
struct GatedDisk {
    data: Arc<Mutex<Vec<u8>>>,
    gates: Arc<Gates>,
}

impl GatedDisk {
    fn new() -> Self {
        Self {
            data: Arc::new(Mutex::new(pattern(0, DISK_LEN))),
            gates: Arc::default(),
        }
    }
}

impl DiskBackend for GatedDisk {
    fn len(&self) -> u64 {
        DISK_LEN as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.gates.enter(offset)?;
        let start = offset as usize;
        buf.copy_from_slice(&self.data.lock().unwrap()[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.gates.enter(offset)?;
        let start = offset as usize;
        self.data.lock().unwrap()[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&mut self, _offset: u64, _len: u64, _may_unmap: bool) -> io::Result<()> {
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        false
    }

    fn try_clone(&self) -> io::Result<Box<dyn DiskBackend>> {
        Ok(Box::new(self.clone()))
    }
}

/// A driver that publishes several requests at once: request `i` uses descriptors
/// `3i..3i+3`, its header, status byte and 4 KiB data buffer at their own addresses.
struct Driver<'a> {
    mem: &'a VirtioMemory,
    queue: DriverQueue<'a>,
    block: Block,
    interrupt: Arc<RecordingInterrupt>,
    published: u16,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a VirtioMemory, block: Block) -> Self {
        let driver = Self::external(mem, block);
        let mut block = driver.block;
        block
            .activate(
                mem.clone(),
                vec![driver.queue.queue()],
                driver.interrupt.clone(),
            )
            .unwrap();
        Self { block, ..driver }
    }

    /// A driver of a device whose queue is held outside it ([`ExternalQueues`], as the
    /// vhost-user back-end does): not activated.
    fn external(mem: &'a VirtioMemory, block: Block) -> Self {
        let queue = DriverQueue::new(mem, 0, QUEUE_SIZE);
        let interrupt = Arc::new(RecordingInterrupt::default());
        let mut block = block;
        block.ack_features(block.features());
        Self {
            mem,
            queue,
            block,
            interrupt,
            published: 0,
        }
    }

    fn data_at(request: u16) -> u64 {
        DATA_AT + u64::from(DATA_LEN) * u64::from(request)
    }

    /// Publishes request number `self.published` (without notifying): IN or OUT of 4 KiB
    /// at `sector`. Returns its head.
    fn publish(&mut self, request_type: u32, sector: u64) -> u16 {
        let request = self.published;
        let (header, status) = (
            HEADERS_AT + 0x20 * u64::from(request),
            STATUSES_AT + u64::from(request),
        );
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&request_type.to_le_bytes());
        raw[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&raw, GuestAddress(header)).unwrap();
        self.mem.write_obj(0xFFu8, GuestAddress(status)).unwrap();
        let data_flags = if request_type == blk::VIRTIO_BLK_T_IN {
            WRITE
        } else {
            0
        };
        let head = 3 * request;
        let queue = &self.queue;
        queue.write_desc(head, header, 16, NEXT, head + 1);
        queue.write_desc(
            head + 1,
            Self::data_at(request),
            DATA_LEN,
            data_flags | NEXT,
            head + 2,
        );
        queue.write_desc(head + 2, status, 1, WRITE, 0);
        queue.publish(request, head);
        self.published += 1;
        head
    }

    fn read(&mut self, sector: u64) -> u16 {
        self.publish(blk::VIRTIO_BLK_T_IN, sector)
    }

    /// A kick of the queue held outside the device (`queue`), as the vhost-user worker gives.
    fn kick_external(&mut self, queue: &mut Queue) {
        self.block
            .process_external_queue(0, self.mem, &mut [queue], &*self.interrupt)
            .unwrap();
    }

    /// Answers completion events on the queue held outside the device (as the vhost-user
    /// worker does) until `count` requests are used; at most 5 s.
    fn pump_external_until_used(&mut self, queue: &mut Queue, count: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.queue.used_idx() < count {
            assert!(Instant::now() < deadline, "{} used", self.queue.used_idx());
            std::thread::sleep(Duration::from_millis(1));
            self.block
                .process_external_event(self.mem, &mut [&mut *queue], &*self.interrupt)
                .unwrap();
        }
    }

    /// Processes the queue (as the event loop does on each completion event) until `count`
    /// requests are used; at most 5 s.
    fn pump_until_used(&mut self, count: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.block.process_queue(0).unwrap();
            if self.queue.used_idx() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "{} used", self.queue.used_idx());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Heads of the used entries, in used-ring order.
    fn used_heads(&self) -> Vec<u32> {
        (0..self.queue.used_idx())
            .map(|slot| self.queue.used_elem(slot).0)
            .collect()
    }

    fn status(&self, request: u16) -> u8 {
        let at = GuestAddress(STATUSES_AT + u64::from(request));
        self.mem.read_obj(at).unwrap()
    }

    fn data(&self, request: u16) -> Vec<u8> {
        let mut data = vec![0u8; DATA_LEN as usize];
        let at = GuestAddress(Self::data_at(request));
        self.mem.read_slice(&mut data, at).unwrap();
        data
    }
}

fn threaded(disk: &GatedDisk, threads: usize) -> Block {
    Block::new(Box::new(disk.clone()), BlockOptions::default())
        .unwrap()
        .with_io_threads(threads)
        .unwrap()
}

/// Releases every gate after `delay`, from another thread.
fn open_gates_later(disk: &GatedDisk, delay: Duration) -> std::thread::JoinHandle<()> {
    let gates = disk.gates.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        gates.update(|state| {
            state.closed = false;
            state.held.clear();
        });
    })
}

#[test]
fn requests_are_used_in_the_order_they_finish() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| {
        state.held.insert(0);
    });
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, threaded(&disk, 4));
    let slow = driver.read(0);
    let fast = driver.read(8);

    driver.block.process_queue(0).unwrap();
    driver.pump_until_used(1);
    let first = driver.used_heads();
    disk.gates.update(|state| state.held.clear());
    driver.pump_until_used(2);

    assert_eq!(
        first,
        vec![u32::from(fast)],
        "the later request finished first"
    );
    assert_eq!(driver.used_heads(), vec![u32::from(fast), u32::from(slow)]);
    assert_eq!((driver.status(0), driver.status(1)), (OK, OK));
    assert_eq!(driver.data(0), pattern(0, 4096));
    assert_eq!(driver.data(1), pattern(8 * 512, 4096));
    assert_eq!(driver.queue.used_elem(0).1, DATA_LEN + 1);
    assert!(!driver.interrupt.queue_signals().is_empty());
    assert_eq!(driver.block.stats().reads, 2);
}

#[test]
fn no_more_requests_run_at_once_than_there_are_io_threads() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.closed = true);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, threaded(&disk, 2));
    for request in 0..6 {
        driver.read(8 * request);
    }

    driver.block.process_queue(0).unwrap();
    disk.gates.wait_started(2);
    std::thread::sleep(Duration::from_millis(50));
    driver.block.process_queue(0).unwrap();
    let started_while_full = disk.gates.started();
    let used_while_full = driver.queue.used_idx();
    disk.gates.update(|state| state.closed = false);
    driver.pump_until_used(6);

    assert_eq!(started_while_full, 2, "two threads, two requests in flight");
    assert_eq!(used_while_full, 0);
    assert_eq!(disk.gates.state.lock().unwrap().most_running, 2);
    for request in 0..6 {
        assert_eq!(driver.status(request), OK);
        assert_eq!(
            driver.data(request),
            pattern(8 * 512 * request as usize, 4096)
        );
    }
}

#[test]
fn quiesce_publishes_what_is_in_flight_and_starts_nothing_until_resume() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.closed = true);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, threaded(&disk, 2));
    for request in 0..4 {
        driver.read(8 * request);
    }
    driver.block.process_queue(0).unwrap();
    disk.gates.wait_started(2);
    let refused_in_flight = driver.block.queue_states();
    let opener = open_gates_later(&disk, Duration::from_millis(50));

    driver.block.quiesce().unwrap();
    let used_at_quiesce = driver.queue.used_idx();
    let states = driver.block.queue_states().unwrap();
    driver.block.process_queue(0).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    driver.block.process_queue(0).unwrap();
    let started_while_quiesced = disk.gates.started();
    driver.block.resume();
    let kicked = driver.block.queue_event(0).unwrap().read().is_ok();
    driver.pump_until_used(4);
    opener.join().unwrap();

    assert!(refused_in_flight.is_none(), "no positions while in flight");
    assert_eq!(used_at_quiesce, 2, "both requests in flight were published");
    assert_eq!((states[0].next_avail, states[0].next_used), (2, 2));
    assert_eq!(started_while_quiesced, 2, "nothing started while quiesced");
    assert!(kicked, "resume asks the event loop to process the queue");
    assert_eq!(
        (0..4).map(|r| driver.status(r)).collect::<Vec<_>>(),
        [OK; 4]
    );
}

#[test]
fn reset_waits_for_requests_in_flight_and_publishes_none() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.closed = true);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, threaded(&disk, 2));
    driver.read(0);
    driver.read(8);
    driver.block.process_queue(0).unwrap();
    disk.gates.wait_started(2);
    let opener = open_gates_later(&disk, Duration::from_millis(50));

    driver.block.reset();
    let running_after_reset = disk.gates.state.lock().unwrap().running;
    opener.join().unwrap();

    assert_eq!(
        running_after_reset, 0,
        "reset returned with I/O still running"
    );
    assert_eq!(driver.queue.used_idx(), 0, "nothing used after the reset");
    assert_eq!(
        driver.data(1),
        pattern(8 * 512, 4096),
        "the read had finished"
    );
    assert!(driver.block.queue_states().is_none(), "inactive");
    assert!(matches!(
        driver.block.process_queue(0),
        Err(DeviceError::NotActivated { .. })
    ));
}

#[test]
fn a_snapshot_with_requests_in_flight_restores_to_a_queue_that_finishes_every_one() {
    // Arrange: 6 reads and writes, 2 in flight on held I/O threads when the VMM quiesces.
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.closed = true);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, threaded(&disk, 2));
    for request in 0..6u64 {
        if request % 2 == 0 {
            driver.read(8 * request);
        } else {
            let data = GuestAddress(Driver::data_at(driver.published));
            mem.write_slice(&[0xA0 + request as u8; DATA_LEN as usize], data)
                .unwrap();
            driver.publish(blk::VIRTIO_BLK_T_OUT, 8 * request);
        }
    }
    driver.block.process_queue(0).unwrap();
    disk.gates.wait_started(2);
    let opener = open_gates_later(&disk, Duration::from_millis(30));

    // Act: quiesce and save as the VMM does, then restore into a fresh device (another
    // process) on the same memory and disk, activated with the saved positions.
    driver.block.quiesce().unwrap();
    let saved = driver.block.queue_states().unwrap().remove(0);
    opener.join().unwrap();
    drop(std::mem::replace(&mut driver.block, threaded(&disk, 2)));
    let features = driver.block.features();
    driver.block.ack_features(features);
    let queue = virtio_queue::Queue::try_from(saved).unwrap();
    let interrupt = Arc::new(RecordingInterrupt::default());
    driver
        .block
        .activate(mem.clone(), vec![queue], interrupt)
        .unwrap();
    let kicked = driver.block.queue_event(0).unwrap().read().is_ok();
    driver.pump_until_used(6);

    // Assert: the 2 published before the snapshot and the 4 after, each used once.
    assert_eq!((saved.next_avail, saved.next_used), (2, 2));
    assert!(
        kicked,
        "activation asks the event loop to look at the queue"
    );
    let mut heads = driver.used_heads();
    heads.sort_unstable();
    assert_eq!(heads, vec![0, 3, 6, 9, 12, 15]);
    for request in 0..6u16 {
        assert_eq!(driver.status(request), OK, "request {request}");
        let start = 8 * 512 * usize::from(request);
        let on_disk = disk.data.lock().unwrap()[start..start + 4096].to_vec();
        if request % 2 == 0 {
            assert_eq!(driver.data(request), pattern(start, 4096));
        } else {
            assert_eq!(on_disk, vec![0xA0 + request as u8; 4096]);
        }
    }
}

#[test]
fn a_failing_disk_answers_ioerr_from_an_io_thread() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.failing = Some(8 * 512));
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, threaded(&disk, 2));
    driver.read(0);
    driver.read(8);
    driver.publish(blk::VIRTIO_BLK_T_OUT, 16);

    driver.block.process_queue(0).unwrap();
    driver.pump_until_used(3);

    assert_eq!(
        (driver.status(0), driver.status(1), driver.status(2)),
        (OK, IOERR, OK)
    );
    let stats = driver.block.stats();
    assert_eq!((stats.reads, stats.writes, stats.errors), (1, 1, 1));
}

#[test]
fn guest_pages_a_thread_reads_into_are_marked_dirty() {
    let file = TempDisk::new("dirty", &pattern(0, DISK_LEN));
    let block = Block::new(file.open(false), BlockOptions::default())
        .unwrap()
        .with_io_threads(2)
        .unwrap();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, block);
    crate::dirty::take_dirty_pages(&mem);
    driver.read(0);
    driver.read(8);

    driver.block.process_queue(0).unwrap();
    driver.pump_until_used(2);
    let dirty = crate::dirty::take_dirty_pages(&mem);

    let page = |addr: u64| (addr / 4096) as usize;
    for request in 0..2 {
        let at = page(Driver::data_at(request));
        assert_ne!(dirty[0][at / 64] & (1 << (at % 64)), 0, "page {at}");
    }
    assert_eq!(driver.data(1), pattern(8 * 512, 4096));
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
fn the_rate_limiter_charges_each_request_handed_to_a_thread() {
    let disk = GatedDisk::new();
    let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
    let ops = TokenBucket::new(2, 0, Duration::from_secs(1)).unwrap();
    let limiter = RateLimiter::with_clock(None, Some(ops), Box::new(clock.clone()));
    let options = BlockOptions {
        serial: None,
        rate_limiter: Some(limiter),
    };
    let block = Block::new(Box::new(disk.clone()), options)
        .unwrap()
        .with_io_threads(4)
        .unwrap();
    let mem = guest_memory();
    let mut driver = Driver::new(&mem, block);
    for request in 0..3 {
        driver.read(8 * request);
    }

    driver.block.process_queue(0).unwrap();
    let throttled = driver.block.throttled_until();
    driver.pump_until_used(2);
    std::thread::sleep(Duration::from_millis(20));
    driver.block.process_queue(0).unwrap();
    let used_before_refill = driver.queue.used_idx();
    *clock.0.lock().unwrap() += Duration::from_secs(1);
    driver.pump_until_used(3);

    assert!(
        throttled.is_some(),
        "the third request waits for the limiter"
    );
    assert_eq!(used_before_refill, 2);
    assert_eq!(disk.gates.started(), 3);
    assert!(driver.block.stats().throttled >= 1);
}

#[test]
fn a_disk_that_cannot_be_shared_is_refused_io_threads() {
    struct Single;
    impl DiskBackend for Single {
        fn len(&self) -> u64 {
            4096
        }
        fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
            Ok(())
        }
        fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&mut self, _: u64, _: u64, _: bool) -> io::Result<()> {
            Ok(())
        }
        fn is_read_only(&self) -> bool {
            true
        }
    }

    let error = Block::new(Box::new(Single), BlockOptions::default())
        .unwrap()
        .with_io_threads(3)
        .err()
        .unwrap();

    assert!(
        error
            .to_string()
            .starts_with("cannot start 3 virtio-blk I/O threads"),
        "{error}"
    );
}

#[test]
fn external_queues_run_requests_on_the_io_threads_and_publish_on_the_completion_event() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.closed = true);
    let mem = guest_memory();
    let mut driver = Driver::external(&mem, threaded(&disk, 2));
    let mut queue = driver.queue.queue();
    for request in 0..3 {
        driver.read(8 * request);
    }
    let watched = driver.block.external_event_fd();

    driver.kick_external(&mut queue);
    disk.gates.wait_started(2);
    let used_while_held = driver.queue.used_idx();
    disk.gates.update(|state| state.closed = false);
    driver.pump_external_until_used(&mut queue, 3);

    assert_eq!(watched, Some(driver.block.event.as_raw_fd()));
    assert_eq!(used_while_held, 0, "both threads' requests were in flight");
    assert_eq!(
        (0..3).map(|r| driver.status(r)).collect::<Vec<_>>(),
        [OK; 3]
    );
    assert_eq!(driver.data(2), pattern(16 * 512, 4096));
    assert!(!driver.interrupt.queue_signals().is_empty());
}

#[test]
fn an_external_queue_handed_over_stopped_gets_every_request_in_flight_used() {
    let disk = GatedDisk::new();
    disk.gates.update(|state| state.closed = true);
    let mem = guest_memory();
    let mut driver = Driver::external(&mem, threaded(&disk, 2));
    let mut queue = driver.queue.queue();
    for request in 0..4 {
        driver.read(8 * request);
    }
    driver.kick_external(&mut queue);
    disk.gates.wait_started(2);
    let opener = open_gates_later(&disk, Duration::from_millis(50));

    // The holder stops the queue (vhost-user GET_VRING_BASE) and hands it over once more.
    queue.set_ready(false);
    driver.kick_external(&mut queue);
    let used_at_stop = driver.queue.used_idx();
    let event_while_stopped =
        driver
            .block
            .process_external_event(&mem, &mut [&mut queue], &*driver.interrupt);
    opener.join().unwrap();

    assert_eq!(used_at_stop, 2, "both requests in flight were used");
    assert_eq!((queue.next_avail(), queue.next_used()), (2, 2));
    assert_eq!((driver.status(0), driver.status(1)), (OK, OK));
    assert!(event_while_stopped.is_ok());
    assert_eq!(
        disk.gates.started(),
        2,
        "nothing started on the stopped queue"
    );
    assert_eq!(driver.interrupt.queue_signals(), vec![0]);
}

#[test]
fn without_io_threads_external_queues_stay_synchronous_and_watch_nothing() {
    let disk = GatedDisk::new();
    let mem = guest_memory();
    let block = Block::new(Box::new(disk.clone()), BlockOptions::default()).unwrap();
    let mut driver = Driver::external(&mem, block);
    let mut queue = driver.queue.queue();
    driver.read(0);

    driver.kick_external(&mut queue);

    assert!(driver.block.external_event_fd().is_none());
    assert_eq!(driver.queue.used_idx(), 1, "answered before returning");
    assert_eq!(driver.status(0), OK);
}

#[test]
fn an_external_kick_runs_a_lone_request_inline_and_several_on_the_threads() {
    let disk = GatedDisk::new();
    let mem = guest_memory();
    let mut driver = Driver::external(&mem, threaded(&disk, 2));
    let mut queue = driver.queue.queue();
    driver.read(0);

    driver.kick_external(&mut queue);
    let used_after_lone = driver.queue.used_idx();
    disk.gates.update(|state| state.closed = true);
    driver.read(8);
    driver.read(16);
    // Inline, the held reads would never return.
    driver.kick_external(&mut queue);
    disk.gates.wait_started(3);
    let used_while_held = driver.queue.used_idx();
    disk.gates.update(|state| state.closed = false);
    driver.pump_external_until_used(&mut queue, 3);

    assert_eq!(
        used_after_lone, 1,
        "the lone request was answered before returning"
    );
    assert_eq!(
        used_while_held, 1,
        "two requests were handed to the threads"
    );
    assert_eq!(
        (0..3).map(|r| driver.status(r)).collect::<Vec<_>>(),
        [OK; 3]
    );
}
