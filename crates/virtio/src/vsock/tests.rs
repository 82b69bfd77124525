//! virtio-vsock driven through its queues as a driver would, with a host made of socket pairs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::muxer::MAX_PENDING_CONTROL;
use super::packet::{
    HEADER_LEN, HOST_CID, Header, MAX_PAYLOAD, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::*;
use crate::test_utils::{DriverQueue, RecordingInterrupt, WRITE, guest_memory};

pub const GUEST_CID: u64 = 3;
const RX_SIZE: u16 = 16;
const TX_SIZE: u16 = 8;
const EVENT_SIZE: u16 = 4;
const RX_BUFFERS: u64 = 0x1_0000;
const RX_BUFFER_LEN: u32 = 4096 + HEADER_LEN as u32;
const TX_BUFFERS: u64 = 0x20_0000;
const TX_STRIDE: u64 = 0x1_1000;
const EVENT_BUFFERS: u64 = 0x3_8000;

/// Host programs made of socket pairs: connections "to the listener" and "listening" ports.
#[derive(Clone)]
pub struct FakeHost {
    inner: Arc<Mutex<FakeInner>>,
}

struct FakeInner {
    incoming: VecDeque<UnixStream>,
    wake: UnixStream,
    listening: HashSet<u32>,
    connected: HashMap<u32, VecDeque<UnixStream>>,
}

/// The device's side of [`FakeHost`].
pub struct FakeBackend {
    host: FakeHost,
    wake: UnixStream,
}

impl FakeHost {
    pub fn new() -> (Self, FakeBackend) {
        let (wake_tx, wake_rx) = UnixStream::pair().unwrap();
        wake_rx.set_nonblocking(true).unwrap();
        let host = FakeHost {
            inner: Arc::new(Mutex::new(FakeInner {
                incoming: VecDeque::new(),
                wake: wake_tx,
                listening: HashSet::new(),
                connected: HashMap::new(),
            })),
        };
        let backend = FakeBackend {
            host: host.clone(),
            wake: wake_rx,
        };
        (host, backend)
    }

    /// A host program connecting to the device's listener; returns its end.
    pub fn connect(&self) -> UnixStream {
        let (program, device) = UnixStream::pair().unwrap();
        let mut inner = self.inner.lock().unwrap();
        inner.incoming.push_back(device);
        inner.wake.write_all(&[1]).unwrap();
        program
    }

    /// A host program listening for guest connections to `port`.
    pub fn listen(&self, port: u32) {
        self.inner.lock().unwrap().listening.insert(port);
    }

    /// The oldest connection the guest made to `port`, the host program's end.
    pub fn take_connected(&self, port: u32) -> Option<UnixStream> {
        let mut inner = self.inner.lock().unwrap();
        inner.connected.get_mut(&port)?.pop_front()
    }
}

impl VsockBackend for FakeBackend {
    fn listener_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }

    fn accept(&mut self) -> std::io::Result<Option<UnixStream>> {
        let mut drain = [0u8; 64];
        while let Ok(n) = (&self.wake).read(&mut drain) {
            if n == 0 {
                break;
            }
        }
        Ok(self.host.inner.lock().unwrap().incoming.pop_front())
    }

    fn connect(&mut self, port: u32) -> std::io::Result<UnixStream> {
        let mut inner = self.host.inner.lock().unwrap();
        if !inner.listening.contains(&port) {
            return Err(ErrorKind::ConnectionRefused.into());
        }
        let (device, program) = UnixStream::pair()?;
        device.set_nonblocking(true)?;
        inner.connected.entry(port).or_default().push_back(program);
        Ok(device)
    }
}

/// A header from the guest (CID 3) to the host.
pub fn from_guest(op: Op, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        kind: TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// A driver of the three queues.
pub struct Harness<'m> {
    pub mem: &'m VirtioMemory,
    pub rx: DriverQueue<'m>,
    pub tx: DriverQueue<'m>,
    pub events: DriverQueue<'m>,
    pub device: Vsock,
    pub host: FakeHost,
    pub interrupt: Arc<RecordingInterrupt>,
    rx_published: u16,
    rx_seen: u16,
    tx_published: u16,
}

impl<'m> Harness<'m> {
    pub fn new(mem: &'m VirtioMemory) -> Self {
        let (host, backend) = FakeHost::new();
        let device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
        Self::with_device(mem, device, host)
    }

    pub fn with_device(mem: &'m VirtioMemory, mut device: Vsock, host: FakeHost) -> Self {
        let rx = DriverQueue::new(mem, 0x1000, RX_SIZE);
        let tx = DriverQueue::new(mem, 0x2000, TX_SIZE);
        let events = DriverQueue::new(mem, 0x3000, EVENT_SIZE);
        let interrupt = Arc::new(RecordingInterrupt::default());
        device
            .activate(
                mem.clone(),
                vec![rx.queue(), tx.queue(), events.queue()],
                interrupt.clone(),
            )
            .unwrap();
        let mut harness = Self {
            mem,
            rx,
            tx,
            events,
            device,
            host,
            interrupt,
            rx_published: 0,
            rx_seen: 0,
            tx_published: 0,
        };
        for desc in 0..RX_SIZE {
            harness.post_rx(desc);
        }
        harness
    }

    /// Offers rx buffer `desc` (`RX_BUFFER_LEN` bytes) to the device.
    pub fn post_rx(&mut self, desc: u16) {
        let addr = RX_BUFFERS + u64::from(desc) * 0x2000;
        self.rx.write_desc(desc, addr, RX_BUFFER_LEN, WRITE, 0);
        self.rx.publish(self.rx_published, desc);
        self.rx_published = self.rx_published.wrapping_add(1);
    }

    /// Sends one packet on the tx queue and lets the device process it.
    pub fn send(&mut self, header: Header, payload: &[u8]) {
        let mut header = header;
        header.len = payload.len() as u32;
        self.send_raw(&header.to_bytes(), payload, 0);
    }

    /// Puts `header` + `payload` bytes in one tx descriptor of `HEADER_LEN + payload + extra`
    /// bytes, then processes the tx queue.
    pub fn send_raw(&mut self, header: &[u8], payload: &[u8], extra: u32) {
        let desc = self.tx_published % TX_SIZE;
        let addr = TX_BUFFERS + u64::from(desc) * TX_STRIDE;
        self.mem.write_slice(header, GuestAddress(addr)).unwrap();
        let payload_at = GuestAddress(addr + header.len() as u64);
        self.mem.write_slice(payload, payload_at).unwrap();
        let len = (header.len() + payload.len()) as u32 + extra;
        self.tx.write_desc(desc, addr, len, 0, 0);
        self.tx.publish(self.tx_published, desc);
        self.tx_published = self.tx_published.wrapping_add(1);
        self.device.process_queue(TX_QUEUE).unwrap();
    }

    /// Host-side events, then the rx queue, as the VMM's event loop does.
    pub fn host_events(&mut self) {
        self.device.process_host_events();
        self.device.process_queue(RX_QUEUE).unwrap();
    }

    /// Every packet the device put on the rx queue since the last call; their buffers are
    /// offered again.
    pub fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut packets = Vec::new();
        while self.rx_seen != self.rx.used_idx() {
            let (id, len) = self.rx.used_elem(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let desc = id as u16;
            let addr = RX_BUFFERS + u64::from(desc) * 0x2000;
            let mut bytes = vec![0u8; len as usize];
            self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            if bytes.len() >= HEADER_LEN {
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&bytes[..HEADER_LEN]);
                let header = Header::from_bytes(&raw);
                assert_eq!(header.len as usize, bytes.len() - HEADER_LEN);
                packets.push((header, bytes[HEADER_LEN..].to_vec()));
            }
            self.post_rx(desc);
        }
        packets
    }

    /// The single packet the device sent since the last call.
    pub fn one(&mut self) -> (Header, Vec<u8>) {
        let mut packets = self.received();
        assert_eq!(packets.len(), 1, "{packets:?}");
        packets.remove(0)
    }

    /// A host program connected and asked for guest port `port`; the guest got REQUEST.
    pub fn host_connect(&mut self, port: u32, extra: &[u8]) -> (UnixStream, u32) {
        let mut program = self.host.connect();
        program
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        program.write_all(extra).unwrap();
        self.host_events();
        let (request, _) = self.one();
        assert_eq!(request.operation(), Some(Op::Request));
        assert_eq!(
            (request.src_cid, request.dst_cid, request.dst_port),
            (HOST_CID, GUEST_CID, port)
        );
        (program, request.src_port)
    }

    /// A host-initiated connection the guest accepted; the host program read its OK line.
    pub fn established_from_host(&mut self, port: u32) -> (UnixStream, u32) {
        let (mut program, local) = self.host_connect(port, b"");
        self.send(from_guest(Op::Response, port, local), b"");
        let mut line = vec![0u8; format!("OK {local}\n").len()];
        program.read_exact(&mut line).unwrap();
        assert_eq!(line, format!("OK {local}\n").as_bytes());
        (program, local)
    }
}

fn read_some(stream: &mut UnixStream, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    stream.read_exact(&mut data).unwrap();
    data
}

#[test]
fn the_device_is_a_socket_device_with_the_guest_cid_in_its_configuration() {
    let (_, backend) = FakeHost::new();
    let device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    let mut config = [0xAAu8; 12];

    device.read_config(0, &mut config);

    assert_eq!(device.device_type(), 19);
    assert_eq!(device.queue_max_sizes(), &[QUEUE_SIZE; 3]);
    assert_ne!(device.features() & F_STREAM, 0);
    assert_eq!(config, [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn reserved_cids_are_refused() {
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        let (_, backend) = FakeHost::new();
        let result = Vsock::new(cid, Box::new(backend));
        assert!(
            matches!(result, Err(VsockError::InvalidCid { .. })),
            "{cid}"
        );
    }
    assert!(check_cid(3).is_ok() && check_cid(u64::from(u32::MAX) - 1).is_ok());
}

#[test]
fn a_host_connection_reaches_the_guest_and_carries_bytes_both_ways() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);

    let (mut program, local) = h.established_from_host(52);
    program.write_all(b"ping").unwrap();
    h.host_events();
    let (data, payload) = h.one();
    h.send(from_guest(Op::Rw, 52, local), b"pong!");

    assert_eq!(local, FIRST_LOCAL_PORT);
    assert_eq!(data.operation(), Some(Op::Rw));
    assert_eq!((data.src_port, data.dst_port), (local, 52));
    assert_eq!(data.buf_alloc, CONN_BUF_ALLOC);
    assert_eq!(payload, b"ping");
    assert_eq!(read_some(&mut program, 5), b"pong!");
    let stats = h.device.stats();
    assert_eq!((stats.host_connections, stats.bytes_to_host), (1, 5));
    assert_eq!(stats.bytes_to_guest, 4);
    assert!(h.interrupt.queue_signals().contains(&RX_QUEUE));
}

#[test]
fn bytes_after_the_connect_line_reach_the_guest_first() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);

    let (_program, local) = h.host_connect(7, b"early");
    h.send(from_guest(Op::Response, 7, local), b"");
    let (data, payload) = h.one();

    assert_eq!(data.operation(), Some(Op::Rw));
    assert_eq!(payload, b"early");
}

#[test]
fn a_refused_host_connection_is_closed() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);

    let (mut program, local) = h.host_connect(9, b"");
    h.send(from_guest(Op::Rst, 9, local), b"");

    let mut rest = Vec::new();
    program.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no OK line for a refused connection");
    assert_eq!(h.device.connection_count(), 0);
}

#[test]
fn bad_connect_lines_close_the_host_stream() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let mut program = h.host.connect();

    program.write_all(b"CONNECT lots\n").unwrap();
    h.host_events();

    let mut rest = Vec::new();
    program.read_to_end(&mut rest).unwrap();
    assert!(h.received().is_empty());
    let mut long = h.host.connect();
    long.write_all(&[b'7'; 40]).unwrap();
    h.host_events();
    long.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty() && h.received().is_empty());
}

#[test]
fn a_guest_connection_reaches_the_host_program_listening_on_its_port() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.host.listen(1234);

    h.send(from_guest(Op::Request, 40_000, 1234), b"");
    let (response, _) = h.one();
    let mut program = h.host.take_connected(1234).unwrap();
    h.send(from_guest(Op::Rw, 40_000, 1234), b"hello host\n");
    program.write_all(b"hello guest\n").unwrap();
    h.host_events();
    let (data, payload) = h.one();

    assert_eq!(response.operation(), Some(Op::Response));
    assert_eq!((response.src_port, response.dst_port), (1234, 40_000));
    assert_eq!(read_some(&mut program, 11), b"hello host\n");
    assert_eq!(
        (data.operation(), payload),
        (Some(Op::Rw), b"hello guest\n".to_vec())
    );
    assert_eq!(h.device.stats().guest_connections, 1);
}

#[test]
fn a_guest_connection_to_a_port_nobody_listens_on_is_reset() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);

    h.send(from_guest(Op::Request, 40_000, 999), b"");

    let (reply, _) = h.one();
    assert_eq!(reply.operation(), Some(Op::Rst));
    assert_eq!((reply.src_port, reply.dst_port), (999, 40_000));
    assert_eq!(h.device.connection_count(), 0);
}

#[test]
fn packets_for_nothing_are_answered_with_rst_and_foreign_ones_dropped() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let mut wrong_dst = from_guest(Op::Request, 1, 2);
    wrong_dst.dst_cid = 7;
    let mut wrong_type = from_guest(Op::Request, 1, 2);
    wrong_type.kind = 2;
    let mut unknown_op = from_guest(Op::Rw, 1, 2);
    unknown_op.op = 99;
    let mut foreign = from_guest(Op::Request, 1, 2);
    foreign.src_cid = 4;

    for header in [
        from_guest(Op::Rw, 1, 2),
        from_guest(Op::Response, 1, 2),
        from_guest(Op::Shutdown, 1, 2),
        from_guest(Op::CreditUpdate, 1, 2),
        from_guest(Op::CreditRequest, 1, 2),
        wrong_dst,
        wrong_type,
        unknown_op,
    ] {
        h.send(header, b"");
        let (reply, _) = h.one();
        assert_eq!(reply.operation(), Some(Op::Rst), "{header:?}");
    }
    h.send(from_guest(Op::Rst, 1, 2), b"");
    h.send(foreign, b"");

    assert!(h.received().is_empty(), "no reply to RST or a foreign CID");
    assert_eq!(h.device.stats().dropped, 1);
}

#[test]
fn the_host_closing_its_stream_is_a_shutdown_then_the_guest_resets() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (program, local) = h.established_from_host(52);

    drop(program);
    h.host_events();
    let (shutdown, _) = h.one();
    h.send(from_guest(Op::Rst, 52, local), b"");

    assert_eq!(shutdown.operation(), Some(Op::Shutdown));
    assert_eq!(shutdown.flags, SHUTDOWN_SEND);
    assert_eq!(h.device.connection_count(), 0);
}

#[test]
fn a_guest_closing_both_directions_gets_rst_and_the_host_its_end_of_stream() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (mut program, local) = h.established_from_host(52);

    h.send(from_guest(Op::Rw, 52, local), b"last words");
    let mut shutdown = from_guest(Op::Shutdown, 52, local);
    shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    h.send(shutdown, b"");

    let (reply, _) = h.one();
    assert_eq!(reply.operation(), Some(Op::Rst));
    let mut rest = Vec::new();
    program.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"last words");
    assert_eq!(h.device.connection_count(), 0);
}

#[test]
fn a_half_closed_guest_still_receives() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (mut program, local) = h.established_from_host(52);
    let mut shutdown = from_guest(Op::Shutdown, 52, local);
    shutdown.flags = SHUTDOWN_SEND;

    h.send(shutdown, b"");
    let mut rest = Vec::new();
    program.read_to_end(&mut rest).unwrap();
    program.write_all(b"answer").unwrap();
    drop(program);
    h.host_events();
    let packets = h.received();

    let ops: Vec<_> = packets.iter().map(|(p, _)| p.operation()).collect();
    assert_eq!(
        ops,
        [Some(Op::Rw), Some(Op::Shutdown), Some(Op::Rst)],
        "data, the host's end, then the connection is over"
    );
    assert_eq!(packets[0].1, b"answer");
    assert_eq!(h.device.connection_count(), 0);
}

#[test]
fn the_device_sends_no_more_than_the_guest_credit_and_asks_for_more() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.host.listen(80);
    let mut request = from_guest(Op::Request, 5, 80);
    request.buf_alloc = 10;
    h.send(request, b"");
    h.one();
    let mut program = h.host.take_connected(80).unwrap();

    program.write_all(&[b'x'; 25]).unwrap();
    h.host_events();
    let first = h.received();
    let mut update = from_guest(Op::CreditUpdate, 5, 80);
    update.buf_alloc = 10;
    update.fwd_cnt = 10;
    h.send(update, b"");
    let second = h.received();

    let summary = |packets: &[(Header, Vec<u8>)]| -> Vec<(Option<Op>, usize)> {
        packets
            .iter()
            .map(|(p, d)| (p.operation(), d.len()))
            .collect()
    };
    assert_eq!(
        summary(&first),
        [(Some(Op::Rw), 10), (Some(Op::CreditRequest), 0)]
    );
    assert_eq!(
        summary(&second),
        [(Some(Op::Rw), 10), (Some(Op::CreditRequest), 0)],
        "10 more, and a new stall with 5 bytes left"
    );
}

#[test]
fn a_credit_request_is_answered_with_a_credit_update() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (_program, local) = h.established_from_host(52);

    h.send(from_guest(Op::CreditRequest, 52, local), b"");

    let (update, _) = h.one();
    assert_eq!(update.operation(), Some(Op::CreditUpdate));
    assert_eq!((update.buf_alloc, update.fwd_cnt), (CONN_BUF_ALLOC, 0));
}

#[test]
fn a_guest_ignoring_its_credit_is_reset_and_forwarded_bytes_are_reported() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (_program, local) = h.established_from_host(52);
    let chunk = vec![0x5Au8; MAX_PAYLOAD as usize];

    let mut packets = Vec::new();
    for _ in 0..128 {
        h.send(from_guest(Op::Rw, 52, local), &chunk);
        packets.extend(h.received());
        if packets.iter().any(|(p, _)| p.operation() == Some(Op::Rst)) {
            break;
        }
    }

    let last = packets.last().map(|(p, _)| p.operation());
    assert_eq!(
        last,
        Some(Some(Op::Rst)),
        "the host never read: the credit must run out"
    );
    assert!(
        packets
            .iter()
            .any(|(p, _)| p.operation() == Some(Op::CreditUpdate) && p.fwd_cnt > 0),
        "the bytes the socket took were reported"
    );
    assert_eq!(h.device.connection_count(), 0);
}

#[test]
fn malformed_tx_chains_are_refused_and_break_their_connection() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (_program, local) = h.established_from_host(52);
    let mut header = from_guest(Op::Rw, 52, local);
    header.len = 100;

    h.send_raw(&[0u8; 20], b"", 0);
    let nothing = h.received();
    h.send_raw(&header.to_bytes(), &[1u8; 50], 0);
    let (reply, _) = h.one();

    assert!(nothing.is_empty());
    assert_eq!(reply.operation(), Some(Op::Rst));
    assert_eq!(h.device.connection_count(), 0);
    assert_eq!(h.device.stats().refused_chains, 2);
}

#[test]
fn extra_bytes_after_the_payload_are_ignored() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (mut program, local) = h.established_from_host(52);
    let mut header = from_guest(Op::Rw, 52, local);
    header.len = 3;

    h.send_raw(&header.to_bytes(), b"abcdef", 16);

    assert_eq!(read_some(&mut program, 3), b"abc");
}

#[test]
fn rx_chains_too_small_for_a_header_are_returned_unused() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    // Replace the next rx buffer the device will take by a 10-byte one.
    h.rx.write_desc(0, RX_BUFFERS, 10, WRITE, 0);

    h.send(from_guest(Op::Request, 1, 2), b"");

    assert_eq!(h.rx.used_elem(0), (0, 0));
    assert_eq!(h.rx.used_elem(1).1, HEADER_LEN as u32);
    assert_eq!(h.device.stats().refused_chains, 1);
}

#[test]
fn host_data_waits_for_rx_buffers_and_flows_when_they_come() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (mut program, local) = h.established_from_host(52);
    let mut credit = from_guest(Op::CreditUpdate, 52, local);
    credit.buf_alloc = 1 << 20;
    h.send(credit, b"");
    let start = h.rx.used_idx();
    // Take every rx buffer without re-posting.
    let filler = vec![7u8; 4096];
    for _ in 0..RX_SIZE {
        program.write_all(&filler).unwrap();
        h.host_events();
    }
    let used_before = h.rx.used_idx() - start;

    program.write_all(b"more").unwrap();
    h.host_events();
    let stuck = h.rx.used_idx() - start;
    let packets = h.received();
    h.device.process_queue(RX_QUEUE).unwrap();
    let after = h.received();

    assert_eq!((used_before, stuck), (RX_SIZE, RX_SIZE));
    assert_eq!(packets.len(), usize::from(RX_SIZE));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1, b"more");
}

#[test]
fn control_packets_without_rx_buffers_stop_the_tx_queue_until_buffers_come() {
    let mem = guest_memory();
    let (host, backend) = FakeHost::new();
    let device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    let mut h = Harness::with_device(&mem, device, host);
    // The guest posts no more rx buffers: fill the 16 it has.
    for port in 0..u32::from(RX_SIZE) {
        h.send(from_guest(Op::Rw, port, 1), b"");
    }

    let start = h.tx.used_idx();
    let mut sent = 0u16;
    while h.tx.used_idx() == start + sent {
        h.send(from_guest(Op::Rw, 100 + u32::from(sent), 1), b"");
        sent += 1;
        assert!(
            usize::from(sent) <= MAX_PENDING_CONTROL + 1,
            "never backlogged"
        );
    }
    // The last packet waits on the tx queue.
    let waiting = h.tx.used_idx() - start;
    h.received();
    h.device.process_queue(RX_QUEUE).unwrap();

    assert_eq!(usize::from(sent), MAX_PENDING_CONTROL + 1);
    assert_eq!(waiting, sent - 1);
    assert_eq!(
        h.tx.used_idx() - start,
        sent,
        "rx buffers unblocked the tx queue"
    );
}

#[test]
fn two_connections_take_turns() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (mut a, port_a) = h.established_from_host(1);
    let (mut b, port_b) = h.established_from_host(2);

    a.write_all(&[b'a'; 10_000]).unwrap();
    b.write_all(&[b'b'; 10_000]).unwrap();
    h.host_events();
    let packets = h.received();

    let order: Vec<u32> = packets.iter().take(4).map(|(p, _)| p.src_port).collect();
    assert_eq!(order, [port_a, port_b, port_a, port_b]);
    let total = |port| -> usize {
        packets
            .iter()
            .filter(|(p, _)| p.src_port == port)
            .map(|(_, d)| d.len())
            .sum()
    };
    assert_eq!((total(port_a), total(port_b)), (10_000, 10_000));
}

#[test]
fn a_device_reset_closes_every_connection() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let (mut program, _) = h.established_from_host(52);

    h.device.reset();

    let mut rest = Vec::new();
    program.read_to_end(&mut rest).unwrap();
    assert_eq!(h.device.connection_count(), 0);
    assert!(matches!(
        h.device.process_queue(TX_QUEUE),
        Err(DeviceError::NotActivated { index: 1 })
    ));
    assert!(matches!(
        h.device.process_queue(3),
        Err(DeviceError::NoSuchQueue { index: 3 })
    ));
}

#[test]
fn activation_needs_rx_and_tx() {
    let mem = guest_memory();
    let (_, backend) = FakeHost::new();
    let mut device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    let interrupt = Arc::new(RecordingInterrupt::default());
    let rx = DriverQueue::new(&mem, 0x1000, 16);
    let not_ready = || Queue::new(16).unwrap();

    let two = device.activate(mem.clone(), vec![rx.queue(), rx.queue()], interrupt.clone());
    let no_tx = device.activate(
        mem.clone(),
        vec![rx.queue(), not_ready(), not_ready()],
        interrupt.clone(),
    );
    let no_events = device.activate(
        mem.clone(),
        vec![rx.queue(), rx.queue(), not_ready()],
        interrupt,
    );

    assert!(matches!(
        two,
        Err(ActivateError::QueueCount {
            expected: 3,
            given: 2
        })
    ));
    assert!(matches!(
        no_tx,
        Err(ActivateError::QueueNotEnabled { index: 1 })
    ));
    assert!(no_events.is_ok(), "the event queue is optional");
}

#[test]
fn a_restored_device_tells_the_driver_transport_reset_once() {
    let mem = guest_memory();
    let (_, backend) = FakeHost::new();
    let original = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    let state = original.device_state();
    let (host, backend) = FakeHost::new();
    let mut restored = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    restored.restore_device_state(state.as_ref()).unwrap();
    let mut h = Harness::with_device(&mem, restored, host);
    h.events.write_desc(0, EVENT_BUFFERS, 3, WRITE, 0);
    h.events.write_desc(1, EVENT_BUFFERS + 0x100, 8, WRITE, 0);
    h.events.publish(0, 0);
    h.events.publish(1, 1);
    mem.write_slice(&[0xFF; 4], GuestAddress(EVENT_BUFFERS + 0x100))
        .unwrap();

    h.device.process_queue(EVENT_QUEUE).unwrap();
    h.device.process_queue(EVENT_QUEUE).unwrap();

    assert_eq!(h.events.used_idx(), 2, "the short buffer, then the event");
    assert_eq!(h.events.used_elem(0), (0, 0));
    assert_eq!(h.events.used_elem(1), (1, 4));
    let id: u32 = mem.read_obj(GuestAddress(EVENT_BUFFERS + 0x100)).unwrap();
    assert_eq!(id, packet::EVENT_TRANSPORT_RESET);
    assert!(!h.device.transport_reset_pending());
    assert_eq!(h.device.stats().transport_resets, 1);
    assert!(h.interrupt.queue_signals().contains(&EVENT_QUEUE));
}

#[test]
fn restore_refuses_another_cid_or_another_device() {
    let (_, backend) = FakeHost::new();
    let mut device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    let other_cid = VirtioDeviceState::Vsock(VsockState { guest_cid: 9 });
    let rng = VirtioDeviceState::Rng(crate::rng::RngState { bytes_delivered: 1 });

    let cid = device.restore_device_state(Some(&other_cid));
    let kind = device.restore_device_state(Some(&rng));
    let none = device.restore_device_state(None);

    assert!(matches!(
        cid,
        Err(DeviceStateError::Invalid {
            field: "guest_cid",
            ..
        })
    ));
    assert!(matches!(
        kind,
        Err(DeviceStateError::WrongDevice {
            found: "virtio-rng",
            ..
        })
    ));
    assert!(none.is_err());
    assert!(!device.transport_reset_pending(), "refused: unchanged");
}

#[test]
fn queue_states_cover_the_three_queues() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.send(from_guest(Op::Rst, 1, 2), b"");

    let states = h.device.queue_states().unwrap();

    assert_eq!(states.len(), 3);
    assert_eq!(states[1].next_avail, 1);
    assert_eq!(states[0].desc_table, h.rx.desc);
}

/// The three queues held outside the device, as a vhost-user back-end's vrings hold them;
/// `rx` is offered `RX_SIZE` buffers.
struct ExternalRings<'m> {
    rx: DriverQueue<'m>,
    tx: DriverQueue<'m>,
    queues: [Queue; 3],
}

impl<'m> ExternalRings<'m> {
    fn new(mem: &'m VirtioMemory, rx_ready: bool) -> Self {
        let rx = DriverQueue::new(mem, 0x1000, RX_SIZE);
        let tx = DriverQueue::new(mem, 0x2000, TX_SIZE);
        for desc in 0..RX_SIZE {
            let addr = RX_BUFFERS + u64::from(desc) * 0x2000;
            rx.write_desc(desc, addr, RX_BUFFER_LEN, WRITE, 0);
            rx.publish(desc, desc);
        }
        let mut rx_queue = rx.queue();
        rx_queue.set_ready(rx_ready);
        // The event queue stays with the front-end (QEMU's vhost-user-vsock keeps it).
        let queues = [rx_queue, tx.queue(), Queue::new(EVENT_SIZE).unwrap()];
        Self { rx, tx, queues }
    }

    fn refs(&mut self) -> Vec<&mut Queue> {
        self.queues.iter_mut().collect()
    }

    /// The header of rx used entry `slot`.
    fn rx_header(&self, mem: &VirtioMemory, slot: u16) -> Header {
        let (desc, _) = self.rx.used_elem(slot);
        let mut raw = [0u8; HEADER_LEN];
        let addr = RX_BUFFERS + u64::from(desc) * 0x2000;
        mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
        Header::from_bytes(&raw)
    }
}

/// A device driven through [`ExternalRings`] (rx ready or not) after a host program asked
/// for guest port 52 and the device handled that event; the program is still connected.
fn host_connects_through_external_queues(
    mem: &VirtioMemory,
    rx_ready: bool,
) -> (
    FakeHost,
    Vsock,
    ExternalRings<'_>,
    RecordingInterrupt,
    UnixStream,
) {
    let (host, backend) = FakeHost::new();
    let mut device = Vsock::new(GUEST_CID, Box::new(backend)).unwrap();
    let mut rings = ExternalRings::new(mem, rx_ready);
    let interrupt = RecordingInterrupt::default();
    let mut program = host.connect();
    program.write_all(b"CONNECT 52\n").unwrap();
    device
        .process_external_event(mem, &mut rings.refs(), &interrupt)
        .unwrap();
    (host, device, rings, interrupt, program)
}

#[test]
fn external_queues_get_host_connections_without_a_kick_and_carry_bytes() {
    let mem = guest_memory();
    let (_host, mut device, mut rings, interrupt, mut program) =
        host_connects_through_external_queues(&mem, true);
    let request = rings.rx_header(&mem, 0);
    let response = from_guest(Op::Response, 52, request.src_port);
    mem.write_slice(&response.to_bytes(), GuestAddress(TX_BUFFERS))
        .unwrap();
    rings.tx.write_desc(0, TX_BUFFERS, HEADER_LEN as u32, 0, 0);
    rings.tx.publish(0, 0);
    device
        .process_external_queue(TX_QUEUE, &mem, &mut rings.refs(), &interrupt)
        .unwrap();

    assert_eq!(request.operation(), Some(Op::Request));
    assert_eq!((request.dst_cid, request.dst_port), (GUEST_CID, 52));
    let ok = format!("OK {}\n", request.src_port);
    assert_eq!(read_some(&mut program, ok.len()), ok.as_bytes());
    assert_eq!(rings.tx.used_idx(), 1);
    assert_eq!(interrupt.queue_signals(), vec![RX_QUEUE, TX_QUEUE]);
    assert_eq!(device.connection_count(), 1);
}

#[test]
fn external_queues_that_are_not_ready_are_left_alone_until_they_are() {
    let mem = guest_memory();
    let (_host, mut device, mut rings, interrupt, _program) =
        host_connects_through_external_queues(&mem, false);
    let before = rings.rx.used_idx();
    device
        .process_external_queue(EVENT_QUEUE, &mem, &mut rings.refs(), &interrupt)
        .unwrap();
    rings.queues[0].set_ready(true);
    device
        .process_external_queue(RX_QUEUE, &mem, &mut rings.refs(), &interrupt)
        .unwrap();
    let two = device.process_external_queue(RX_QUEUE, &mem, &mut rings.refs()[..2], &interrupt);

    assert_eq!(
        before, 0,
        "nothing written to an rx queue that is not ready"
    );
    assert_eq!(rings.rx.used_idx(), 1);
    assert_eq!(rings.rx_header(&mem, 0).operation(), Some(Op::Request));
    assert!(matches!(two, Err(DeviceError::NoSuchQueue { index: 2 })));
    assert_eq!(device.external_event_fd(), Some(device.host_events_fd()));
}
