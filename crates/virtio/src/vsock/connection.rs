//! One stream connection between a guest port and a host Unix stream, with virtio-vsock's
//! credit-based flow control (virtio 1.2, 5.10.6.3) in both directions.
//!
//! Guest → host: the device advertises [`CONN_BUF_ALLOC`] bytes of buffer and counts in
//! `fwd_cnt` the bytes it has handed to the host stream. Bytes the stream does not take at once
//! wait in `to_host`, which the credit bounds: a guest sending more than it was granted breaks
//! the protocol and the connection is reset. A credit update goes to the guest whenever half
//! the buffer was forwarded since the guest last heard `fwd_cnt`.
//!
//! Host → guest: the device sends no more than the guest's `buf_alloc` minus what is in flight
//! (`rx_cnt - peer_fwd_cnt`), both taken from every packet the guest sends.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use super::packet::Header;

/// Receive buffer the device advertises per connection.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// Forwarded bytes after which the device tells the guest its new `fwd_cnt` unasked.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 2;

/// A connection's identity: the host-side port and the guest-side port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    /// The host side's port (the guest's `dst_port`).
    pub local_port: u32,
    /// The guest side's port (the guest's `src_port`).
    pub peer_port: u32,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A host program asked for it; the guest was sent REQUEST and has not answered.
    LocalInit,
    /// Both sides may send.
    Established,
}

/// What a read for the guest found.
#[derive(Debug)]
pub enum HostRead {
    /// This many bytes.
    Data(usize),
    /// The host closed its sending side.
    Eof,
    /// Nothing now.
    WouldBlock,
    /// The stream failed.
    Failed(std::io::Error),
}

/// The guest sent more than its credit allowed.
#[derive(Debug, PartialEq, Eq)]
pub struct CreditViolation {
    /// Bytes the guest sent.
    pub sent: usize,
    /// Bytes it was allowed.
    pub allowed: usize,
}

/// A connection and its host stream.
pub struct Connection {
    stream: UnixStream,
    state: State,
    key: ConnKey,
    /// Bytes for the host that the stream has not taken yet.
    to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are the device's own ("OK <port>\n"), not credit.
    control_bytes: usize,
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    /// Bytes that arrived after the host's CONNECT line, sent to the guest first.
    prefix: Vec<u8>,
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The stream may have bytes (or an end) to read.
    readable: bool,
    /// The host closed its side and the guest was (or will be) told.
    host_eof: bool,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
    host_write_shut: bool,
    credit_requested: bool,
}

impl Connection {
    /// A host-initiated connection waiting for the guest's RESPONSE.
    pub fn local(stream: UnixStream, key: ConnKey, prefix: Vec<u8>) -> Self {
        Self::new(stream, key, State::LocalInit, prefix)
    }

    /// A guest-initiated connection, established at once; credit from its REQUEST.
    pub fn peer(stream: UnixStream, key: ConnKey, request: &Header) -> Self {
        let mut connection = Self::new(stream, key, State::Established, Vec::new());
        connection.update_peer_credit(request);
        connection
    }

    fn new(stream: UnixStream, key: ConnKey, state: State, prefix: Vec<u8>) -> Self {
        Self {
            stream,
            state,
            key,
            to_host: VecDeque::new(),
            control_bytes: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            prefix,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            readable: true,
            host_eof: false,
            peer_shut_send: false,
            peer_shut_rcv: false,
            host_write_shut: false,
            credit_requested: false,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Takes the credit fields of a packet from the guest.
    pub fn update_peer_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
        if self.peer_free() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes the guest can take now. A guest reporting more forwarded than it was sent only
    /// starves itself.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Puts the device's credit fields into a header going to the guest.
    pub fn stamp(&mut self, header: &mut Header) {
        header.buf_alloc = CONN_BUF_ALLOC;
        header.fwd_cnt = self.fwd_cnt;
        self.last_fwd_cnt_sent = self.fwd_cnt;
    }

    /// The guest accepted the host's connection: tell the host program which port it got.
    pub fn establish(&mut self) -> std::io::Result<()> {
        self.state = State::Established;
        let line = format!("OK {}\n", self.key.local_port);
        self.control_bytes += line.len();
        self.to_host.extend(line.as_bytes());
        self.flush()
    }

    /// Data from the guest for the host, within its credit.
    pub fn push_to_host(&mut self, data: &[u8]) -> Result<(), CreditViolation> {
        let queued = self.to_host.len() - self.control_bytes;
        let allowed = CONN_BUF_ALLOC as usize - queued;
        if data.len() > allowed {
            return Err(CreditViolation {
                sent: data.len(),
                allowed,
            });
        }
        self.to_host.extend(data);
        Ok(())
    }

    /// Writes what the host stream takes now; then, once everything is out and the guest
    /// will send no more, shuts the stream's sending side. An error means the stream is dead.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    let ours = n.min(self.control_bytes);
                    self.control_bytes -= ours;
                    // n - ours ≤ CONN_BUF_ALLOC.
                    self.fwd_cnt = self.fwd_cnt.wrapping_add((n - ours) as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.peer_shut_send && !self.host_write_shut {
            self.host_write_shut = true;
            // The host reads the end of the stream; a stream the host already closed is fine.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Bytes forwarded that the guest has not heard about, if enough to tell it unasked.
    pub fn wants_credit_update(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.last_fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD
    }

    /// Marks the stream readable (an epoll edge).
    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Whether the guest should get data or the end of the stream from this connection now.
    pub fn has_data_for_guest(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && !self.peer_shut_rcv
            && (self.readable || !self.prefix.is_empty())
            && self.peer_free() > 0
    }

    /// Whether the connection waits for guest credit with data to send and has not asked.
    pub fn wants_credit_request(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && !self.peer_shut_rcv
            && (self.readable || !self.prefix.is_empty())
            && self.peer_free() == 0
            && !self.credit_requested
    }

    /// [`Connection::wants_credit_request`], then it is asked (once per stall).
    pub fn needs_credit_request(&mut self) -> bool {
        let ask = self.wants_credit_request();
        if ask {
            self.credit_requested = true;
        }
        ask
    }

    /// Reads at most `room` bytes (and the guest's credit) for the guest into `buf`.
    pub fn read_for_guest(&mut self, buf: &mut Vec<u8>, room: usize) -> HostRead {
        let want = room.min(self.peer_free() as usize);
        buf.resize(want, 0);
        if want == 0 {
            return HostRead::WouldBlock;
        }
        if !self.prefix.is_empty() {
            let n = want.min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return self.sent(buf, n);
        }
        let result = loop {
            match self.stream.read(&mut buf[..want]) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                result => break result,
            }
        };
        match result {
            Ok(0) => {
                buf.clear();
                self.readable = false;
                self.host_eof = true;
                HostRead::Eof
            }
            Ok(n) => self.sent(buf, n),
            Err(e) => {
                buf.clear();
                if e.kind() == ErrorKind::WouldBlock {
                    self.readable = false;
                    HostRead::WouldBlock
                } else {
                    HostRead::Failed(e)
                }
            }
        }
    }

    fn sent(&mut self, buf: &mut Vec<u8>, n: usize) -> HostRead {
        buf.truncate(n);
        // n ≤ room ≤ MAX_PAYLOAD.
        self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
        HostRead::Data(n)
    }

    /// The guest's SHUTDOWN flags (virtio's RCV: it takes no more; SEND: it sends no more).
    pub fn peer_shutdown(&mut self, receive: bool, send: bool) {
        self.peer_shut_rcv |= receive;
        self.peer_shut_send |= send;
    }

    /// Both directions are finished and every byte for the host is out: reset and forget it.
    pub fn is_finished(&self) -> bool {
        self.to_host.is_empty() && self.peer_shut_send && (self.host_eof || self.peer_shut_rcv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let key = ConnKey {
            local_port: 1 << 30,
            peer_port: 52,
        };
        (Connection::local(ours, key, b"early".to_vec()), theirs)
    }

    fn read_line(host: &mut UnixStream) {
        let mut line = [0u8; 14];
        host.read_exact(&mut line).unwrap();
    }

    fn credit(buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    #[test]
    fn establishing_tells_the_host_its_port_without_spending_credit() {
        let (mut conn, mut host) = pair();

        conn.establish().unwrap();

        let mut line = [0u8; 14];
        host.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"OK 1073741824\n");
        let mut header = Header::default();
        conn.stamp(&mut header);
        assert_eq!((header.buf_alloc, header.fwd_cnt), (CONN_BUF_ALLOC, 0));
    }

    #[test]
    fn guest_data_beyond_its_credit_is_a_violation() {
        let (mut conn, host) = pair();
        conn.establish().unwrap();
        host.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 * 1024];

        // The host never reads: the stream fills and the rest waits in the buffer.
        let mut pushed = 0;
        while conn.push_to_host(&chunk).is_ok() {
            conn.flush().unwrap();
            pushed += chunk.len();
            assert!(pushed < 16 << 20, "the credit never ran out");
        }
        let result = conn.push_to_host(&chunk);

        assert!(matches!(result, Err(CreditViolation { sent: 65536, .. })));
        assert!(conn.fwd_cnt as usize + CONN_BUF_ALLOC as usize >= pushed);
    }

    #[test]
    fn forwarded_bytes_ask_for_a_credit_update_past_half_the_buffer() {
        let (mut conn, mut host) = pair();
        conn.establish().unwrap();
        let half = vec![1u8; CREDIT_UPDATE_THRESHOLD as usize];
        let reader = std::thread::spawn(move || {
            let mut sink = vec![0u8; 14 + CREDIT_UPDATE_THRESHOLD as usize];
            host.read_exact(&mut sink).unwrap();
        });

        conn.push_to_host(&half[1..]).unwrap();
        while !conn.to_host.is_empty() {
            conn.flush().unwrap();
        }
        let before = conn.wants_credit_update();
        conn.push_to_host(&half[..1]).unwrap();
        while !conn.to_host.is_empty() {
            conn.flush().unwrap();
        }
        reader.join().unwrap();

        assert!(!before);
        assert!(conn.wants_credit_update());
        conn.stamp(&mut Header::default());
        assert!(!conn.wants_credit_update());
    }

    #[test]
    fn reads_for_the_guest_respect_its_credit_and_start_with_the_prefix() {
        let (mut conn, mut host) = pair();
        conn.establish().unwrap();
        conn.update_peer_credit(&credit(8, 0));
        host.write_all(b"0123456789").unwrap();
        let mut buf = Vec::new();

        let first = conn.read_for_guest(&mut buf, 4096);
        let early = buf.clone();
        let second = conn.read_for_guest(&mut buf, 4096);
        let stalled = conn.has_data_for_guest();
        let ask = conn.needs_credit_request();
        let ask_again = conn.needs_credit_request();
        conn.update_peer_credit(&credit(8, 8));

        assert!(matches!(first, HostRead::Data(5)));
        assert_eq!(early, b"early");
        assert!(matches!(second, HostRead::Data(3)));
        assert_eq!(buf, b"012");
        assert!(!stalled && ask && !ask_again);
        assert_eq!(conn.peer_free(), 8);
        assert!(conn.has_data_for_guest());
    }

    #[test]
    fn a_lying_fwd_cnt_only_starves_the_guest() {
        let (mut conn, _host) = pair();
        conn.establish().unwrap();

        conn.update_peer_credit(&credit(1024, 4096));

        assert_eq!(conn.peer_free(), 0);
    }

    #[test]
    fn the_host_end_of_stream_is_read_once() {
        let (mut conn, mut host) = pair();
        conn.establish().unwrap();
        conn.update_peer_credit(&credit(1024, 0));
        // (Unread bytes at close would make it a reset instead of an end of stream.)
        read_line(&mut host);
        drop(host);
        let mut buf = Vec::new();

        let first = conn.read_for_guest(&mut buf, 64);
        let eof = conn.read_for_guest(&mut buf, 64);

        assert!(matches!(first, HostRead::Data(5)));
        assert!(matches!(eof, HostRead::Eof));
        assert!(!conn.has_data_for_guest());
        assert!(!conn.is_finished());
        conn.peer_shutdown(false, true);
        assert!(conn.is_finished());
    }
}
