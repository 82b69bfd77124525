use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use std::time::{Duration, Instant};

use storage::{Clock, TokenBucket};
use vm_memory::GuestAddress;

use super::*;
use crate::test_utils::{
    DriverQueue, RecordingInterrupt, WRITE, XorShift, changed_addresses, guest_memory, read_regions,
};

const NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
const MAC_ADDR: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

/// A fake TAP: one end of a datagram socket pair (frame boundaries are kept).
struct SocketBackend {
    socket: UnixDatagram,
    offloads: Arc<Mutex<Vec<GuestOffloads>>>,
}

impl NetBackend for SocketBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.socket.recv(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.socket.send(frame)
    }

    fn set_offloads(&mut self, offloads: GuestOffloads) -> std::io::Result<()> {
        self.offloads.lock().unwrap().push(offloads);
        Ok(())
    }
    fn event_fd(&self) -> Option<RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.socket))
    }
}

struct Rig<'m> {
    mem: &'m VirtioMemory,
    rx: DriverQueue<'m>,
    tx: DriverQueue<'m>,
    net: Net,
    host: UnixDatagram,
    interrupt: Arc<RecordingInterrupt>,
    offloads: Arc<Mutex<Vec<GuestOffloads>>>,
}

fn device(offloads_supported: bool) -> (Net, UnixDatagram, Arc<Mutex<Vec<GuestOffloads>>>) {
    device_with(offloads_supported, Limits::default())
}

/// The rate limiters of a test device.
#[derive(Default)]
struct Limits {
    rx: Option<RateLimiter>,
    tx: Option<RateLimiter>,
}

fn device_with(
    offloads_supported: bool,
    limits: Limits,
) -> (Net, UnixDatagram, Arc<Mutex<Vec<GuestOffloads>>>) {
    let (device_end, host) = UnixDatagram::pair().unwrap();
    device_end.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let offloads = Arc::new(Mutex::new(Vec::new()));
    let net = Net::new(
        Box::new(SocketBackend {
            socket: device_end,
            offloads: offloads.clone(),
        }),
        NetOptions {
            mac: MAC_ADDR,
            offloads: offloads_supported,
            counters: Arc::default(),
            rx_limiter: limits.rx,
            tx_limiter: limits.tx,
        },
    );
    (net, host, offloads)
}

/// An active device with the driver's `features` accepted.
fn rig(mem: &VirtioMemory, features: u64) -> Rig<'_> {
    rig_with(mem, features, Limits::default())
}

/// An active device with rate limits.
fn rig_with(mem: &VirtioMemory, features: u64, limits: Limits) -> Rig<'_> {
    let rx = DriverQueue::new(mem, 0x1000, 16);
    let tx = DriverQueue::new(mem, 0x3000, 16);
    let (mut net, host, offloads) = device_with(true, limits);
    net.ack_features(features);
    let interrupt = Arc::new(RecordingInterrupt::default());
    net.activate(mem.clone(), vec![rx.queue(), tx.queue()], interrupt.clone())
        .unwrap();
    Rig {
        mem,
        rx,
        tx,
        net,
        host,
        interrupt,
        offloads,
    }
}

/// A frame with its virtio-net header (flags byte 0x02 DATA_VALID) and `payload_len` bytes.
fn frame(payload_len: usize, seed: u8) -> Vec<u8> {
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame[0] = 0x02;
    frame.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    frame
}

impl Rig<'_> {
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
        data
    }

    fn host_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_CHAIN_BYTES];
        self.host.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    fn counter(&self, pick: impl Fn(&NetCounters) -> &AtomicU64) -> u64 {
        pick(self.net.counters()).load(Ordering::Relaxed)
    }
}

#[test]
fn a_transmitted_chain_is_one_frame_on_the_backend() {
    let mem = guest_memory();
    let mut r = rig(&mem, 0);
    let sent = frame(60, 1);
    mem.write_slice(&sent[..VNET_HDR_LEN], GuestAddress(0x10000))
        .unwrap();
    mem.write_slice(&sent[VNET_HDR_LEN..], GuestAddress(0x11000))
        .unwrap();
    r.tx.write_desc(0, 0x10000, VNET_HDR_LEN as u32, NEXT, 1);
    r.tx.write_desc(1, 0x11000, 60, 0, 0);
    r.tx.publish(0, 0);

    r.net.process_queue(TX_QUEUE).unwrap();

    assert_eq!(r.host_recv(), Some(sent));
    assert_eq!(r.host_recv(), None);
    assert_eq!(r.tx.used_elem(0), (0, 0));
    assert_eq!(r.interrupt.queue_signals(), vec![TX_QUEUE]);
    assert_eq!(r.counter(|c| &c.tx_frames), 1);
    assert_eq!(r.counter(|c| &c.tx_bytes), 60);
}

#[test]
fn bad_transmit_chains_are_dropped_and_used_empty() {
    let mem = guest_memory();
    let mut r = rig(&mem, 0);
    r.tx.write_desc(0, 0x10000, 64, WRITE, 0); // device-writable
    r.tx.write_desc(1, 0x10000, 4, 0, 0); // shorter than the header
    r.tx.write_desc(2, 0x10000, 64, NEXT, 3); // a loop
    r.tx.write_desc(3, 0x10000, 64, NEXT, 2);
    r.tx.write_desc(4, 0xF_FFF0, 64, 0, 0); // into the hole
    r.tx.write_desc(5, 0x20_0000, (MAX_CHAIN_BYTES + 1) as u32, 0, 0);
    for (slot, head) in [0u16, 1, 2, 4, 5].into_iter().enumerate() {
        r.tx.publish(slot as u16, head);
    }

    r.net.process_queue(TX_QUEUE).unwrap();

    assert_eq!(r.host_recv(), None);
    assert_eq!(r.tx.used_idx(), 5);
    assert_eq!(r.counter(|c| &c.tx_dropped), 5);
}

#[test]
fn a_received_frame_fills_one_chain_without_mergeable_buffers() {
    let mem = guest_memory();
    let mut r = rig(&mem, 0);
    let sent = frame(100, 3);
    r.host.send(&sent).unwrap();
    r.rx.write_desc(0, 0x20000, 1526 + VNET_HDR_LEN as u32, WRITE, 0);
    r.rx.publish(0, 0);

    r.net.process_queue(RX_QUEUE).unwrap();

    let got = r.read(0x20000, sent.len());
    assert_eq!(
        got[0], 0,
        "DATA_VALID cleared: GUEST_CSUM was not negotiated"
    );
    assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &sent[VNET_HDR_LEN..]);
    assert_eq!(r.rx.used_elem(0), (0, sent.len() as u32));
    assert_eq!(r.interrupt.queue_signals(), vec![RX_QUEUE]);
    assert_eq!(
        (r.counter(|c| &c.rx_frames), r.counter(|c| &c.rx_bytes)),
        (1, 100)
    );
}

#[test]
fn mergeable_buffers_spread_a_frame_over_chains() {
    let mem = guest_memory();
    let mut r = rig(&mem, MRG_RXBUF | GUEST_CSUM);
    let sent = frame(3000, 5);
    r.host.send(&sent).unwrap();
    for i in 0..4u16 {
        r.rx.write_desc(i, 0x20000 + 0x1000 * u64::from(i), 1024, WRITE, 0);
        r.rx.publish(i, i);
    }

    r.net.process_queue(RX_QUEUE).unwrap();

    let mut got = Vec::new();
    for i in 0..3u64 {
        got.extend(r.read(0x20000 + 0x1000 * i, 1024));
    }
    got.truncate(sent.len());
    assert_eq!(got[0], 0x02, "flags kept with GUEST_CSUM");
    assert_eq!(&got[10..12], &3u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &sent[VNET_HDR_LEN..]);
    assert_eq!(r.rx.used_idx(), 3);
    assert_eq!(
        [r.rx.used_elem(0), r.rx.used_elem(1), r.rx.used_elem(2)],
        [(0, 1024), (1, 1024), (2, (sent.len() - 2048) as u32)]
    );
}

#[test]
fn without_buffers_frames_wait_until_the_driver_adds_some() {
    let mem = guest_memory();
    let mut r = rig(&mem, 0);
    r.host.send(&frame(10, 1)).unwrap();
    r.host.send(&frame(20, 2)).unwrap();

    r.net.process_queue(RX_QUEUE).unwrap();
    let used_before = r.rx.used_idx();
    r.rx.write_desc(0, 0x20000, 256, WRITE, 0);
    r.rx.publish(0, 0);
    r.net.process_queue(RX_QUEUE).unwrap();
    let after_one = r.rx.used_idx();
    r.rx.write_desc(1, 0x21000, 256, WRITE, 0);
    r.rx.publish(1, 1);
    r.net.process_queue(RX_QUEUE).unwrap();

    assert_eq!((used_before, after_one, r.rx.used_idx()), (0, 1, 2));
    assert_eq!(r.rx.used_elem(0), (0, 22));
    assert_eq!(r.rx.used_elem(1), (1, 32), "the second frame, in order");
    assert_eq!(r.counter(|c| &c.rx_dropped), 0);
}

#[test]
fn a_frame_larger_than_the_chain_is_dropped_and_the_chain_kept() {
    let mem = guest_memory();
    let mut r = rig(&mem, 0);
    r.host.send(&frame(500, 1)).unwrap();
    r.host.send(&frame(50, 2)).unwrap();
    r.rx.write_desc(0, 0x20000, 100, WRITE, 0);
    r.rx.publish(0, 0);

    r.net.process_queue(RX_QUEUE).unwrap();

    assert_eq!(r.rx.used_idx(), 1);
    assert_eq!(r.rx.used_elem(0), (0, 62), "the small frame got the chain");
    assert_eq!(r.counter(|c| &c.rx_dropped), 1);
}

#[test]
fn mergeable_frames_wait_for_enough_chains() {
    let mem = guest_memory();
    let mut r = rig(&mem, MRG_RXBUF);
    r.host.send(&frame(2000, 1)).unwrap();
    r.rx.write_desc(0, 0x20000, 1024, WRITE, 0);
    r.rx.publish(0, 0);

    r.net.process_queue(RX_QUEUE).unwrap();
    let used_with_one = r.rx.used_idx();
    r.rx.write_desc(1, 0x21000, 1024, WRITE, 0);
    r.rx.publish(1, 1);
    r.net.process_queue(RX_QUEUE).unwrap();

    assert_eq!(
        used_with_one, 0,
        "nothing taken while the frame does not fit"
    );
    assert_eq!(r.rx.used_idx(), 2);
}

#[test]
fn offloads_are_offered_only_when_supported_and_follow_the_driver() {
    let (plain, _, _) = device(false);
    let mem = guest_memory();
    let r = rig(&mem, GUEST_CSUM | GUEST_TSO4);
    let (mut hostile, _, hostile_offloads) = device(true);

    hostile.ack_features(GUEST_TSO6);

    assert_eq!(plain.features() & OFFLOADS, 0);
    assert_eq!(r.net.features() & OFFLOADS, OFFLOADS);
    assert_eq!(
        r.offloads.lock().unwrap().last(),
        Some(&GuestOffloads {
            csum: true,
            tso4: true,
            tso6: false
        })
    );
    assert_eq!(
        hostile_offloads.lock().unwrap().last(),
        Some(&GuestOffloads::default()),
        "TSO without csum is not asked of the TAP"
    );
}

#[test]
fn the_configuration_holds_mac_link_and_one_pair() {
    let (net, _, _) = device(false);
    let mut config = [0xFFu8; 12];

    net.read_config(0, &mut config);

    assert_eq!(&config[..6], &MAC_ADDR);
    assert_eq!(&config[6..10], &[1, 0, 1, 0]);
    assert_eq!(&config[10..], &[0, 0], "past the end reads zero");
    assert_ne!(net.features() & (MAC | STATUS | MRG_RXBUF), 0);
}

#[test]
fn state_keeps_the_mac_and_refuses_others() {
    let (net, _, _) = device(false);
    let state = net.device_state().unwrap();
    let (mut other, _, _) = device(false);
    let console = VirtioDeviceState::Console(crate::console::ConsoleState {
        pending_input: Vec::new(),
    });

    other.restore_device_state(Some(&state)).unwrap();
    let refused = other.restore_device_state(Some(&console));

    assert_eq!(other.mac(), MAC_ADDR);
    assert!(matches!(refused, Err(DeviceStateError::WrongDevice { .. })));
}

/// Random receive descriptors (addresses inside, across and outside memory, random flags and
/// lengths) and random frames: nothing panics and only device-writable buffers and the used
/// ring change.
#[test]
fn hostile_receive_queues_only_touch_writable_buffers() {
    let mut rng = XorShift::new(0x6e65_7472);
    for case in 0..400 {
        let mem = VirtioMemory::from_ranges(
            &crate::test_utils::HOSTILE_REGIONS.map(|(base, len)| (GuestAddress(base), len)),
        )
        .unwrap();
        let size = 1u16 << rng.below(5);
        let rx = DriverQueue::new(&mem, 0, size);
        let tx = DriverQueue::new(&mem, 0x800, size);
        let mut allowed = Vec::new();
        for i in 0..size {
            let addr = match rng.below(6) {
                0 => 0x1_F000 + rng.below(0x2000),
                1 => u64::MAX - rng.below(0x1000),
                _ => 0x4_0000 + rng.below(0x1_F000),
            };
            let len = if rng.chance(8) {
                rng.next() as u32
            } else {
                rng.below(3000) as u32
            };
            let mut flags = if rng.chance(4) { 0 } else { WRITE };
            if rng.chance(3) {
                flags |= NEXT;
            }
            rx.write_desc(i, addr, len, flags, rng.below(u64::from(size) + 1) as u16);
            if flags & WRITE != 0 {
                allowed.push((addr, addr.saturating_add(u64::from(len))));
            }
            rx.publish(i, rng.below(u64::from(size) + 2) as u16);
        }
        let (mut net, host, _) = device(true);
        net.ack_features(if rng.chance(2) { MRG_RXBUF } else { 0 });
        net.activate(
            mem.clone(),
            vec![rx.queue(), tx.queue()],
            Arc::new(RecordingInterrupt::default()),
        )
        .unwrap();
        for _ in 0..rng.below(4) {
            host.send(&frame(rng.below(4000) as usize, case as u8))
                .unwrap();
        }
        let before = read_regions(&mem);

        let _ = net.process_queue(RX_QUEUE);

        let after = read_regions(&mem);
        let used_ring = rx.used..rx.used + rx.used_ring_len();
        for addr in changed_addresses(&before, &after) {
            assert!(
                used_ring.contains(&addr) || allowed.iter().any(|&(s, e)| (s..e).contains(&addr)),
                "case {case}: byte {addr:#x} written outside the writable buffers"
            );
        }
        assert!(rx.used_idx() <= size);
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        ManualClock::now(self)
    }
}

/// A limiter of `bytes` bytes and `frames` frames per second on `clock`.
fn limiter(clock: &ManualClock, bytes: Option<u64>, frames: Option<u64>) -> RateLimiter {
    let bucket = |rate: Option<u64>| rate.map(|n| TokenBucket::per_second(n).unwrap());
    RateLimiter::with_clock(bucket(bytes), bucket(frames), Box::new(clock.clone()))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Rig<'_> {
    /// Queues `count` one-buffer transmit chains of 60 payload bytes, frame `i` at slot `i`.
    fn queue_tx_frames(&self, count: u16) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let sent = frame(60, i as u8);
                let addr = 0x10000 + 0x1000 * u64::from(i);
                self.mem.write_slice(&sent, GuestAddress(addr)).unwrap();
                self.tx.write_desc(i, addr, sent.len() as u32, 0, 0);
                self.tx.publish(i, i);
                sent
            })
            .collect()
    }

    /// Posts `count` receive chains of 256 bytes.
    fn post_rx(&self, count: u16) {
        for i in 0..count {
            self.rx
                .write_desc(i, 0x20000 + 0x1000 * u64::from(i), 256, WRITE, 0);
            self.rx.publish(i, i);
        }
    }
}

#[test]
fn the_transmit_limiter_keeps_chains_on_the_queue_until_it_allows_them() {
    let clock = ManualClock::new();
    let tx = limiter(&clock, Some(100), None);
    let mem = guest_memory();
    let mut r = rig_with(
        &mem,
        0,
        Limits {
            rx: None,
            tx: Some(tx),
        },
    );
    let sent = r.queue_tx_frames(3);
    let start = clock.now();

    r.net.process_queue(TX_QUEUE).unwrap();
    let first = (r.tx.used_idx(), r.net.queue_throttled_until(TX_QUEUE));
    clock.advance(ms(199));
    r.net.process_queue(TX_QUEUE).unwrap();
    let early = r.tx.used_idx();
    clock.advance(ms(1));
    r.net.process_queue(TX_QUEUE).unwrap();
    let second = (r.tx.used_idx(), r.net.queue_throttled_until(TX_QUEUE));
    clock.advance(ms(600));
    r.net.process_queue(TX_QUEUE).unwrap();

    // 100 bytes at first; 60 per frame; 100 more each second.
    assert_eq!(first, (1, Some(start + ms(200))));
    assert_eq!(early, 1, "nothing before the instant it gave");
    assert_eq!(second, (2, Some(start + ms(800))));
    assert_eq!(r.tx.used_idx(), 3);
    assert_eq!(r.net.queue_throttled_until(TX_QUEUE), None);
    assert_eq!(r.net.queue_throttled_until(RX_QUEUE), None);
    let arrived: Vec<_> = std::iter::from_fn(|| r.host_recv()).collect();
    assert_eq!(arrived, sent, "every frame, in order");
    assert_eq!(r.counter(|c| &c.tx_dropped), 0);
    assert_eq!(r.counter(|c| &c.tx_throttled), 3);
}

#[test]
fn the_receive_limiter_keeps_the_frame_in_the_device() {
    let clock = ManualClock::new();
    let rx = limiter(&clock, None, Some(2));
    let mem = guest_memory();
    let mut r = rig_with(
        &mem,
        0,
        Limits {
            rx: Some(rx),
            tx: None,
        },
    );
    let sent: Vec<_> = (0..4).map(|i| frame(40, i)).collect();
    for f in &sent {
        r.host.send(f).unwrap();
    }
    r.post_rx(4);
    let start = clock.now();

    r.net.process_queue(RX_QUEUE).unwrap();
    let first = (r.rx.used_idx(), r.net.queue_throttled_until(RX_QUEUE));
    r.net.process_queue(TX_QUEUE).unwrap();
    let tx_after = r.net.queue_throttled_until(TX_QUEUE);
    clock.advance(ms(500));
    r.net.process_queue(RX_QUEUE).unwrap();
    let second = (r.rx.used_idx(), r.net.throttled_until());
    clock.advance(ms(500));
    r.net.process_queue(RX_QUEUE).unwrap();

    assert_eq!(first, (2, Some(start + ms(500))), "two frames a second");
    assert_eq!(tx_after, None, "the transmit queue is not stopped");
    assert_eq!(second, (3, Some(start + ms(1000))));
    assert_eq!(r.rx.used_idx(), 4);
    for (i, f) in sent.iter().enumerate() {
        let got = r.read(0x20000 + 0x1000 * i as u64, f.len());
        assert_eq!(&got[VNET_HDR_LEN..], &f[VNET_HDR_LEN..], "frame {i}");
    }
    assert_eq!(r.counter(|c| &c.rx_dropped), 0);
    assert_eq!(r.counter(|c| &c.rx_throttled), 2);
}

#[test]
fn refused_chains_cost_nothing_and_a_reset_forgets_the_throttle() {
    let clock = ManualClock::new();
    let tx = limiter(&clock, Some(60), Some(1));
    let mem = guest_memory();
    let mut r = rig_with(
        &mem,
        0,
        Limits {
            rx: None,
            tx: Some(tx),
        },
    );
    r.tx.write_desc(0, 0x10000, 4, 0, 0); // shorter than the header
    r.tx.publish(0, 0);
    r.tx.write_desc(1, 0x11000, (VNET_HDR_LEN + 60) as u32, 0, 0);
    r.tx.publish(1, 1);
    r.tx.write_desc(2, 0x12000, (VNET_HDR_LEN + 60) as u32, 0, 0);
    r.tx.publish(2, 2);

    r.net.process_queue(TX_QUEUE).unwrap();
    let used = r.tx.used_idx();
    let throttled = r.net.queue_throttled_until(TX_QUEUE).is_some();
    r.net.reset();

    assert_eq!(used, 2, "the refused chain and one frame");
    assert!(throttled);
    assert_eq!(r.counter(|c| &c.tx_frames), 1);
    assert_eq!(r.net.throttled_until(), None);
}

/// A device driven through [`ExternalQueues`], with its queues held outside it.
struct ExternalRig<'m> {
    rx: DriverQueue<'m>,
    tx: DriverQueue<'m>,
    queues: [Queue; 2],
    net: Net,
    host: UnixDatagram,
    interrupt: RecordingInterrupt,
}

impl<'m> ExternalRig<'m> {
    fn new(mem: &'m VirtioMemory, features: u64) -> Self {
        let rx = DriverQueue::new(mem, 0x1000, 16);
        let tx = DriverQueue::new(mem, 0x3000, 16);
        let (mut net, host, _) = device(false);
        net.ack_features(features);
        let queues = [rx.queue(), tx.queue()];
        ExternalRig {
            rx,
            tx,
            queues,
            net,
            host,
            interrupt: RecordingInterrupt::default(),
        }
    }

    fn kick(&mut self, mem: &VirtioMemory, index: u16) -> Result<(), DeviceError> {
        let [rx, tx] = &mut self.queues;
        self.net
            .process_external_queue(index, mem, &mut [rx, tx], &self.interrupt)
    }

    fn event(&mut self, mem: &VirtioMemory) -> Result<(), DeviceError> {
        let [rx, tx] = &mut self.queues;
        self.net
            .process_external_event(mem, &mut [rx, tx], &self.interrupt)
    }
}

#[test]
fn external_queues_transmit_and_receive_with_the_same_code() {
    let mem = guest_memory();
    let mut r = ExternalRig::new(&mem, MRG_RXBUF);
    let sent = frame(60, 1);
    mem.write_slice(&sent, GuestAddress(0x10000)).unwrap();
    r.tx.write_desc(0, 0x10000, sent.len() as u32, 0, 0);
    r.tx.publish(0, 0);
    let arrived = frame(100, 2);
    r.host.send(&arrived).unwrap();
    r.rx.write_desc(0, 0x20000, 2048, WRITE, 0);
    r.rx.publish(0, 0);

    r.kick(&mem, TX_QUEUE).unwrap();
    r.event(&mem).unwrap();

    let mut echoed = vec![0u8; MAX_CHAIN_BYTES];
    let n = r.host.recv(&mut echoed).unwrap();
    assert_eq!(&echoed[..n], &sent[..]);
    assert_eq!(r.tx.used_elem(0), (0, 0));
    assert_eq!(r.rx.used_elem(0), (0, arrived.len() as u32));
    assert_eq!(r.interrupt.queue_signals(), vec![TX_QUEUE, RX_QUEUE]);
    assert_eq!(
        r.net.external_event_fd(),
        r.net.backend.event_fd(),
        "the backend's descriptor is the device's event"
    );
}

#[test]
fn external_frames_wait_in_the_backend_while_the_receive_queue_is_not_set_up() {
    let mem = guest_memory();
    let mut r = ExternalRig::new(&mem, 0);
    r.queues[usize::from(RX_QUEUE)] = Queue::new(16).unwrap();
    r.host.send(&frame(10, 1)).unwrap();

    r.event(&mem).unwrap();
    r.queues[usize::from(RX_QUEUE)] = r.rx.queue();
    r.rx.write_desc(0, 0x20000, 256, WRITE, 0);
    r.rx.publish(0, 0);
    r.kick(&mem, RX_QUEUE).unwrap();

    assert_eq!(r.rx.used_elem(0), (0, 22), "delivered at the first kick");
    assert_eq!(r.net.counters().rx_dropped.load(Ordering::Relaxed), 0);
    let wrong_count = r
        .net
        .process_external_queue(RX_QUEUE, &mem, &mut [], &r.interrupt);
    assert!(matches!(
        wrong_count,
        Err(DeviceError::NoSuchQueue { index: 0 })
    ));
}
