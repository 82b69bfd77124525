//! The host side of virtio-vsock: Unix streams multiplexed onto the guest's packets, with
//! Firecracker's conventions.
//!
//! - Host-initiated: a host program connects to the listening socket (the backend's) and
//!   writes `CONNECT <port>\n`; the guest is sent REQUEST to that port from a fresh host-side
//!   port (counting up from [`FIRST_LOCAL_PORT`]); when it answers RESPONSE the program reads
//!   `OK <host-side port>\n` and the stream carries the connection. A refusal (RST) closes the
//!   stream.
//! - Guest-initiated: REQUEST to host port P makes the backend connect to the host program
//!   listening for P; the guest gets RESPONSE, or RST when nobody listens.
//!
//! Every stream is non-blocking and registered, edge-triggered, with the muxer's own epoll
//! instance, whose descriptor the VMM polls ([`Muxer::epoll_fd`]). Readiness is remembered per
//! connection, so data the guest has no room or credit for yet waits in the socket without
//! the loop spinning.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::VsockStats;
use super::connection::{ConnKey, Connection, HostRead, State};
use super::packet::{HOST_CID, Header, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Host-side ports of host-initiated connections count up from here (as Firecracker's do).
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Most connections at once (host- and guest-initiated); more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host programs that connected and have not finished their `CONNECT` line.
pub const MAX_HANDSHAKES: usize = 64;
/// Longest `CONNECT <port>\n` line taken.
const MAX_HANDSHAKE_LINE: usize = 32;
/// Control packets waiting for rx buffers beyond which the device stops taking tx packets
/// (back-pressure: a guest that posts no rx buffers cannot make the queue grow).
pub const MAX_PENDING_CONTROL: usize = 2 * MAX_CONNECTIONS;
/// Epoll events taken per `epoll_wait`.
const EVENT_BATCH: usize = 64;

/// Where the device's host streams come from: the listening socket host programs connect to,
/// and connections to host programs for the guest's requests. The VMM's is backed by Unix
/// sockets at Firecracker's paths; tests give socket pairs.
pub trait VsockBackend: Send {
    /// The descriptor to watch for new host connections (`None`: there is no listener).
    fn listener_fd(&self) -> Option<RawFd>;
    /// A host program's new connection, non-blocking, or `None` when none is waiting.
    fn accept(&mut self) -> std::io::Result<Option<UnixStream>>;
    /// A non-blocking stream to the host program serving `port`, without blocking.
    fn connect(&mut self, port: u32) -> std::io::Result<UnixStream>;
}

/// A control packet waiting for an rx buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Control {
    op: Op,
    key: ConnKey,
    flags: u32,
}

/// A host program that connected and has not finished its `CONNECT` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// What an epoll token stands for.
enum Owner {
    Listener,
    Handshake,
    Connection(ConnKey),
    Unknown,
}

/// The host side of the device.
pub struct Muxer {
    guest_cid: u64,
    backend: Box<dyn VsockBackend>,
    epoll: Epoll,
    handshakes: HashMap<RawFd, Handshake>,
    connections: BTreeMap<ConnKey, Connection>,
    by_fd: HashMap<RawFd, ConnKey>,
    control: VecDeque<Control>,
    next_local_port: u32,
    /// Where the round-robin over connections with data resumes.
    cursor: Option<ConnKey>,
}

fn watch(epoll: &Epoll, fd: RawFd) -> std::io::Result<()> {
    let events = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
    epoll.ctl(
        ControlOperation::Add,
        fd,
        EpollEvent::new(events, fd as u64),
    )
}

fn unwatch(epoll: &Epoll, fd: RawFd) {
    // Closing the descriptor would remove it too; an error only means it was not there.
    let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
}

/// Parses `CONNECT <port>` (without the newline; a trailing `\r` is tolerated).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let digits = text.strip_prefix("CONNECT ")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Muxer {
    /// A muxer for the guest `guest_cid`, watching the backend's listener.
    pub fn new(guest_cid: u64, backend: Box<dyn VsockBackend>) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        if let Some(fd) = backend.listener_fd() {
            watch(&epoll, fd)?;
        }
        Ok(Self {
            guest_cid,
            backend,
            epoll,
            handshakes: HashMap::new(),
            connections: BTreeMap::new(),
            by_fd: HashMap::new(),
            control: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            cursor: None,
        })
    }

    /// The descriptor that becomes readable when host streams have something to handle.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Connections now open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Forgets every connection (closing their host streams) and queued packet: the driver
    /// reset the device. Host programs still typing `CONNECT` keep their place.
    pub fn reset(&mut self) {
        for (_, connection) in std::mem::take(&mut self.connections) {
            unwatch(&self.epoll, connection.stream().as_raw_fd());
        }
        self.by_fd.clear();
        self.control.clear();
        self.cursor = None;
    }

    fn owner(&self, fd: RawFd) -> Owner {
        if self.backend.listener_fd() == Some(fd) {
            Owner::Listener
        } else if self.handshakes.contains_key(&fd) {
            Owner::Handshake
        } else if let Some(key) = self.by_fd.get(&fd) {
            Owner::Connection(*key)
        } else {
            Owner::Unknown
        }
    }

    /// Handles what the host side's epoll reports, without blocking: new host connections,
    /// `CONNECT` lines, streams that can take queued bytes again, readiness for the guest.
    pub fn process_host_events(&mut self, stats: &mut VsockStats) {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        loop {
            let count = match self.epoll.wait(0, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("virtio-vsock: epoll_wait failed: {e}");
                    return;
                }
            };
            for event in &events[..count] {
                self.handle_event(event.fd(), event.event_set(), stats);
            }
            if count < EVENT_BATCH {
                return;
            }
        }
    }

    fn handle_event(&mut self, fd: RawFd, set: EventSet, stats: &mut VsockStats) {
        match self.owner(fd) {
            Owner::Listener => self.accept_all(),
            Owner::Handshake => self.read_handshake(fd),
            Owner::Connection(key) => {
                let readable =
                    EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR;
                if set.intersects(readable)
                    && let Some(connection) = self.connections.get_mut(&key)
                {
                    connection.set_readable();
                }
                if set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
                    self.flush(key, stats);
                }
            }
            Owner::Unknown => {}
        }
    }

    /// Accepts every waiting host connection (edge-triggered: until there are none).
    fn accept_all(&mut self) {
        loop {
            let stream = match self.backend.accept() {
                Ok(Some(stream)) => stream,
                Ok(None) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("virtio-vsock: accepting a host connection failed: {e}");
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES || self.connections.len() >= MAX_CONNECTIONS
            {
                tracing::warn!("virtio-vsock: too many host connections; one refused");
                continue;
            }
            let fd = stream.as_raw_fd();
            if let Err(e) = stream
                .set_nonblocking(true)
                .and_then(|()| watch(&self.epoll, fd))
            {
                tracing::warn!("virtio-vsock: cannot watch a host connection: {e}");
                continue;
            }
            self.handshakes.insert(
                fd,
                Handshake {
                    stream,
                    line: Vec::new(),
                },
            );
            // Bytes may have arrived before the descriptor was watched.
            self.read_handshake(fd);
        }
    }

    /// Reads a host program's `CONNECT <port>\n`; bytes after the newline go to the guest
    /// first. A bad line, an end of stream or an error closes the stream.
    fn read_handshake(&mut self, fd: RawFd) {
        let Some(handshake) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut chunk = [0u8; MAX_HANDSHAKE_LINE];
        let done = loop {
            match handshake.stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => {
                    handshake.line.extend_from_slice(&chunk[..n]);
                    if let Some(end) = handshake.line.iter().position(|&b| b == b'\n') {
                        let prefix = handshake.line.split_off(end + 1);
                        handshake.line.truncate(end);
                        break Some(prefix);
                    }
                    if handshake.line.len() > MAX_HANDSHAKE_LINE {
                        break None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break None,
            }
        };
        let Some(handshake) = self.handshakes.remove(&fd) else {
            return;
        };
        unwatch(&self.epoll, fd);
        let port = parse_connect(&handshake.line);
        match (done, port) {
            (Some(prefix), Some(port)) => self.connect_to_guest(handshake.stream, port, prefix),
            _ => tracing::debug!(
                line = %String::from_utf8_lossy(&handshake.line),
                "virtio-vsock: host connection without a valid CONNECT line closed"
            ),
        }
    }

    /// Starts a host-initiated connection to guest port `port`.
    fn connect_to_guest(&mut self, stream: UnixStream, port: u32, prefix: Vec<u8>) {
        if self.connections.len() >= MAX_CONNECTIONS {
            tracing::warn!("virtio-vsock: too many connections; CONNECT {port} refused");
            return;
        }
        let Some(local_port) = self.free_local_port(port) else {
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        let fd = stream.as_raw_fd();
        if let Err(e) = watch(&self.epoll, fd) {
            tracing::warn!("virtio-vsock: cannot watch a host connection: {e}");
            return;
        }
        self.by_fd.insert(fd, key);
        self.connections
            .insert(key, Connection::local(stream, key, prefix));
        self.queue_control(Op::Request, key, 0);
    }

    /// The next host-side port not in use with guest port `peer_port`.
    fn free_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.connections.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    fn queue_control(&mut self, op: Op, key: ConnKey, flags: u32) {
        let control = Control { op, key, flags };
        if op == Op::CreditUpdate && self.control.contains(&control) {
            return;
        }
        self.control.push_back(control);
    }

    /// Whether control packets pile up for lack of rx buffers (tx processing then waits).
    pub fn is_backlogged(&self) -> bool {
        self.control.len() >= MAX_PENDING_CONTROL
    }

    /// Drops a connection, closing its host stream.
    fn remove(&mut self, key: ConnKey) {
        if let Some(connection) = self.connections.remove(&key) {
            let fd = connection.stream().as_raw_fd();
            unwatch(&self.epoll, fd);
            self.by_fd.remove(&fd);
        }
    }

    /// Resets a connection: RST to the guest, the host stream closed.
    fn reset_connection(&mut self, key: ConnKey, stats: &mut VsockStats) {
        self.remove(key);
        self.queue_control(Op::Rst, key, 0);
        stats.resets += 1;
    }

    /// Writes queued bytes to a connection's host stream; tells the guest about freed credit,
    /// and finishes a connection both sides are done with.
    fn flush(&mut self, key: ConnKey, stats: &mut VsockStats) {
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        if let Err(e) = connection.flush() {
            tracing::debug!(?key, "virtio-vsock: host stream failed: {e}");
            self.reset_connection(key, stats);
            return;
        }
        if connection.is_finished() {
            self.reset_connection(key, stats);
        } else if connection.wants_credit_update() {
            self.queue_control(Op::CreditUpdate, key, 0);
        }
    }

    /// Handles one packet the guest sent; `payload` is its data (empty but for RW).
    pub fn handle_guest_packet(&mut self, header: &Header, payload: &[u8], stats: &mut VsockStats) {
        let key = ConnKey {
            local_port: header.dst_port,
            peer_port: header.src_port,
        };
        let op = header.operation();
        if header.src_cid != self.guest_cid {
            tracing::debug!(
                src_cid = header.src_cid,
                "virtio-vsock: packet from a wrong CID dropped"
            );
            stats.dropped += 1;
            return;
        }
        if header.dst_cid != HOST_CID || header.kind != TYPE_STREAM || op.is_none() {
            // Nothing else is reachable, no other socket type exists here.
            if op != Some(Op::Rst) {
                self.reset_connection(key, stats);
            }
            return;
        }
        if let Some(connection) = self.connections.get_mut(&key) {
            connection.update_peer_credit(header);
        }
        let known = self.connections.contains_key(&key);
        match op {
            Some(Op::Request) => self.guest_request(key, header, stats),
            Some(Op::Response) => self.guest_response(key, stats),
            Some(Op::Rst) => self.remove(key),
            Some(Op::Shutdown) => self.guest_shutdown(key, header.flags, stats),
            Some(Op::Rw) => self.guest_data(key, payload, stats),
            // The credit itself was taken above.
            Some(Op::CreditUpdate) if known => {}
            Some(Op::CreditRequest) if known => self.queue_control(Op::CreditUpdate, key, 0),
            Some(Op::CreditUpdate | Op::CreditRequest) => self.reset_connection(key, stats),
            None => {}
        }
    }

    /// A packet with a valid header but a broken payload: its connection is reset (a RST
    /// only closes it), unless the header is not the guest's own.
    pub fn refuse(&mut self, header: &Header, stats: &mut VsockStats) {
        if header.src_cid != self.guest_cid {
            stats.dropped += 1;
            return;
        }
        let key = ConnKey {
            local_port: header.dst_port,
            peer_port: header.src_port,
        };
        if header.operation() == Some(Op::Rst) {
            self.remove(key);
        } else {
            self.reset_connection(key, stats);
        }
    }

    fn guest_request(&mut self, key: ConnKey, header: &Header, stats: &mut VsockStats) {
        if self.connections.contains_key(&key) || self.connections.len() >= MAX_CONNECTIONS {
            // A second REQUEST on a live connection breaks it, as it would on Linux.
            self.reset_connection(key, stats);
            return;
        }
        let stream = match self.backend.connect(key.local_port) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(
                    port = key.local_port,
                    "virtio-vsock: guest connect refused: {e}"
                );
                self.reset_connection(key, stats);
                return;
            }
        };
        let fd = stream.as_raw_fd();
        if let Err(e) = watch(&self.epoll, fd) {
            tracing::warn!("virtio-vsock: cannot watch a connection to the host: {e}");
            self.reset_connection(key, stats);
            return;
        }
        self.by_fd.insert(fd, key);
        self.connections
            .insert(key, Connection::peer(stream, key, header));
        self.queue_control(Op::Response, key, 0);
        stats.guest_connections += 1;
    }

    fn guest_response(&mut self, key: ConnKey, stats: &mut VsockStats) {
        let result = match self.connections.get_mut(&key) {
            Some(connection) if connection.state() == State::LocalInit => connection.establish(),
            _ => {
                self.reset_connection(key, stats);
                return;
            }
        };
        match result {
            Ok(()) => stats.host_connections += 1,
            Err(e) => {
                tracing::debug!(?key, "virtio-vsock: host program went away: {e}");
                self.reset_connection(key, stats);
            }
        }
    }

    fn guest_shutdown(&mut self, key: ConnKey, flags: u32, stats: &mut VsockStats) {
        let Some(connection) = self.connections.get_mut(&key) else {
            self.reset_connection(key, stats);
            return;
        };
        connection.peer_shutdown(flags & SHUTDOWN_RCV != 0, flags & SHUTDOWN_SEND != 0);
        self.flush(key, stats);
    }

    fn guest_data(&mut self, key: ConnKey, payload: &[u8], stats: &mut VsockStats) {
        let pushed = match self.connections.get_mut(&key) {
            Some(connection) if connection.state() == State::Established => {
                connection.push_to_host(payload)
            }
            _ => {
                self.reset_connection(key, stats);
                return;
            }
        };
        match pushed {
            Ok(()) => {
                stats.bytes_to_host += payload.len() as u64;
                self.flush(key, stats);
            }
            Err(violation) => {
                tracing::debug!(?key, ?violation, "virtio-vsock: guest exceeded its credit");
                self.reset_connection(key, stats);
            }
        }
    }

    /// Whether a packet for the guest may be ready (control packets, or connections with data
    /// or an end of stream to report and the guest's credit to take it).
    pub fn has_packets_for_guest(&self) -> bool {
        !self.control.is_empty()
            || self
                .connections
                .values()
                .any(|c| c.has_data_for_guest() || c.wants_credit_request())
    }

    fn header_for(&self, key: ConnKey, op: Op, flags: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            len: 0,
            kind: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    /// The next packet for the guest, its payload (at most `room` bytes) in `payload`.
    pub fn next_packet_for_guest(
        &mut self,
        room: usize,
        payload: &mut Vec<u8>,
        stats: &mut VsockStats,
    ) -> Option<Header> {
        payload.clear();
        if let Some(control) = self.control.pop_front() {
            let mut header = self.header_for(control.key, control.op, control.flags);
            if let Some(connection) = self.connections.get_mut(&control.key) {
                connection.stamp(&mut header);
            }
            return Some(header);
        }
        self.next_data_packet(room, payload, stats)
    }

    /// Keys of connections in round-robin order, starting after the cursor.
    fn round_robin(&self) -> Vec<ConnKey> {
        let after: Vec<ConnKey> = match self.cursor {
            Some(cursor) => self
                .connections
                .range(cursor..)
                .skip(1)
                .map(|(k, _)| *k)
                .collect(),
            None => Vec::new(),
        };
        let before = self
            .connections
            .keys()
            .copied()
            .filter(|k| !after.contains(k));
        after.iter().copied().chain(before).collect()
    }

    fn next_data_packet(
        &mut self,
        room: usize,
        payload: &mut Vec<u8>,
        stats: &mut VsockStats,
    ) -> Option<Header> {
        for key in self.round_robin() {
            let Some(connection) = self.connections.get_mut(&key) else {
                continue;
            };
            if connection.needs_credit_request() {
                self.cursor = Some(key);
                let mut header = self.header_for(key, Op::CreditRequest, 0);
                if let Some(connection) = self.connections.get_mut(&key) {
                    connection.stamp(&mut header);
                }
                return Some(header);
            }
            if !connection.has_data_for_guest() {
                continue;
            }
            let (op, flags) = match connection.read_for_guest(payload, room) {
                HostRead::Data(n) => {
                    stats.bytes_to_guest += n as u64;
                    (Op::Rw, 0)
                }
                HostRead::Eof => (Op::Shutdown, SHUTDOWN_SEND),
                HostRead::WouldBlock => continue,
                HostRead::Failed(e) => {
                    tracing::debug!(?key, "virtio-vsock: host stream failed: {e}");
                    self.remove(key);
                    stats.resets += 1;
                    return Some(self.header_for(key, Op::Rst, 0));
                }
            };
            self.cursor = Some(key);
            let mut header = self.header_for(key, op, flags);
            header.len = payload.len() as u32;
            if let Some(connection) = self.connections.get_mut(&key) {
                connection.stamp(&mut header);
                if connection.is_finished() {
                    // The guest had already stopped sending: the connection is over.
                    self.reset_connection(key, stats);
                }
            }
            return Some(header);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_are_parsed_strictly() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"CONNECT "), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"CONNECT 5 2"), None);
        assert_eq!(parse_connect(&[0xFF, 0xFE]), None);
    }
}
