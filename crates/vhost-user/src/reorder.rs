//! The front-end connection shim: a relay between the front-end's socket and the `vhost`
//! crate's request handler that holds a `SET_VRING_ENABLE` sent before `SET_FEATURES`.
//!
//! QEMU 7.2's virtio-net sends `SET_VRING_ENABLE` for its rings (`peer_attach`) long before
//! it sends `SET_FEATURES`; the `vhost` crate (0.18) refuses that message until
//! `VHOST_USER_F_PROTOCOL_FEATURES` is acknowledged and closes the connection. The check is
//! inside `BackendReqHandler::handle_request`, so it is worked around here, at the message
//! level: every message is passed on unchanged and in order, except that a `SET_VRING_ENABLE`
//! arriving before the first `SET_FEATURES` is held (the latest state per ring), and
//! - replayed to the handler right after a `SET_FEATURES` that acknowledges
//!   `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30) is passed on, without `NEED_REPLY`, so that no
//!   reply comes back for it;
//! - dropped when that `SET_FEATURES` does not acknowledge bit 30 (the rings then start
//!   enabled, as the vhost-user specification says).
//!
//! A held message whose sender set `NEED_REPLY` is answered here (success) when the front-end
//! negotiated `REPLY_ACK`, as the handler would.
//!
//! Everything is bounded: a message body above the protocol's maximum, more file descriptors
//! than a message may carry, or held messages for too many rings end the relay with an error
//! naming the problem (the caller logs it); nothing panics on what a peer sends.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use vhost::vhost_user::message::{MAX_ATTACHED_FD_ENTRIES, MAX_MSG_SIZE};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// A vhost-user header: request (u32), flags (u32), body size (u32), little-endian.
pub const HEADER_SIZE: usize = 12;
/// The largest body accepted (the `vhost` crate's limit for every request).
pub const MAX_BODY_SIZE: usize = MAX_MSG_SIZE;
/// The most file descriptors one message may carry.
pub const MAX_FDS: usize = MAX_ATTACHED_FD_ENTRIES;
/// The most rings whose early `SET_VRING_ENABLE` is held (QEMU's virtio-net sends one per
/// ring, several times; the latest per ring is kept).
pub const MAX_HELD_RINGS: usize = 16;

/// `VHOST_USER_SET_FEATURES`.
pub const SET_FEATURES: u32 = 2;
/// `VHOST_USER_SET_PROTOCOL_FEATURES`.
pub const SET_PROTOCOL_FEATURES: u32 = 16;
/// `VHOST_USER_SET_VRING_ENABLE`.
pub const SET_VRING_ENABLE: u32 = 18;
/// `VHOST_USER_F_PROTOCOL_FEATURES`, a virtio feature bit.
pub const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
/// `VHOST_USER_PROTOCOL_F_REPLY_ACK`, a protocol feature bit.
pub const REPLY_ACK_BIT: u64 = 1 << 3;
/// Header flags: the protocol version (1), "this is a reply", "reply wanted".
pub const FLAG_VERSION_1: u32 = 0x1;
/// Set on replies.
pub const FLAG_REPLY: u32 = 0x4;
/// Set by a front-end that wants a `REPLY_ACK` answer.
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// Which peer of the relay a problem came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The VMM (QEMU…), untrusted.
    FrontEnd,
    /// The `vhost` crate's request handler in this process.
    Handler,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::FrontEnd => "front-end",
            Side::Handler => "back-end request handler",
        })
    }
}

/// Why the relay ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A header announced a body larger than the protocol allows.
    #[error(
        "the {side} sent request {request} with a {size}-byte body (at most {MAX_BODY_SIZE} \
         bytes are allowed)"
    )]
    Oversized {
        /// Who sent it.
        side: Side,
        /// The request code.
        request: u32,
        /// The announced body size.
        size: u32,
    },
    /// A message carried more file descriptors than the protocol allows.
    #[error("the {side} attached more than {MAX_FDS} file descriptors to one message")]
    TooManyFds {
        /// Who sent them.
        side: Side,
    },
    /// Early `SET_VRING_ENABLE`s for more rings than are held.
    #[error(
        "the front-end sent SET_VRING_ENABLE for more than {MAX_HELD_RINGS} rings before \
         SET_FEATURES (ring {index})"
    )]
    TooManyHeld {
        /// The ring index that did not fit.
        index: u32,
    },
    /// The peer closed its socket in the middle of a message.
    #[error("the {side} closed the connection in the middle of a message")]
    PartialMessage {
        /// Who closed it.
        side: Side,
    },
    /// Reading or writing a socket failed.
    #[error("{side} socket: {source}")]
    Socket {
        /// Whose socket.
        side: Side,
        /// What the system reported.
        #[source]
        source: io::Error,
    },
    /// A relay thread panicked (a bug; the connection is closed).
    #[error("a relay thread panicked")]
    Panicked,
}

impl RelayError {
    /// True for a peer that broke the protocol; false for a peer that went away.
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            RelayError::Oversized { .. }
                | RelayError::TooManyFds { .. }
                | RelayError::TooManyHeld { .. }
                | RelayError::Panicked
        )
    }
}

/// One vhost-user message with the descriptors that came with it.
#[derive(Debug)]
pub struct Message {
    /// The request code.
    pub request: u32,
    /// The header flags.
    pub flags: u32,
    /// The body (`size` bytes).
    pub body: Vec<u8>,
    /// File descriptors received with it.
    pub fds: Vec<OwnedFd>,
}

impl Message {
    /// A message without file descriptors.
    pub fn new(request: u32, flags: u32, body: Vec<u8>) -> Self {
        Self {
            request,
            flags,
            body,
            fds: Vec::new(),
        }
    }

    fn header(&self) -> [u8; HEADER_SIZE] {
        let mut header = [0u8; HEADER_SIZE];
        header[..4].copy_from_slice(&self.request.to_le_bytes());
        header[4..8].copy_from_slice(&self.flags.to_le_bytes());
        // The body comes from a header we parsed (at most MAX_BODY_SIZE) or from this module.
        let size = u32::try_from(self.body.len()).unwrap_or(u32::MAX);
        header[8..].copy_from_slice(&size.to_le_bytes());
        header
    }

    /// The body's first `u32` (a ring index) and the `u64` at its start, if it has them.
    fn u32_at(&self, offset: usize) -> Option<u32> {
        let bytes = self.body.get(offset..offset + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    fn u64_body(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.body.as_slice().try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

/// Reads one message from `stream`: `Ok(None)` when the peer closed the socket between
/// messages.
pub fn receive(stream: &UnixStream, side: Side) -> Result<Option<Message>, RelayError> {
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER_SIZE];
    let got = read_with_fds(stream, &mut header, &mut fds, side)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_SIZE {
        return Err(RelayError::PartialMessage { side });
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (request, flags, size) = (word(0), word(4), word(8));
    let body_len = usize::try_from(size).unwrap_or(usize::MAX);
    if body_len > MAX_BODY_SIZE {
        return Err(RelayError::Oversized {
            side,
            request,
            size,
        });
    }
    let mut body = vec![0u8; body_len];
    if read_with_fds(stream, &mut body, &mut fds, side)? < body_len {
        return Err(RelayError::PartialMessage { side });
    }
    Ok(Some(Message {
        request,
        flags,
        body,
        fds,
    }))
}

/// Fills `buf` from `stream` (fewer bytes only at end of stream), collecting the file
/// descriptors that come with the data into `fds` (at most [`MAX_FDS`] in all).
fn read_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    side: Side,
) -> Result<usize, RelayError> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        let mut iovec = [libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        }];
        let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
        // SAFETY: the iovec points into `buf`, which is borrowed mutably for the call and may
        // hold any bytes; `raw` has room for MAX_FDS descriptors, and vmm-sys-util closes the
        // received ones and fails (ENOBUFS) if more came than fit.
        let received = unsafe { stream.recv_with_fds(&mut iovec, &mut raw) };
        let (count, fd_count) = match received {
            Ok(counts) => counts,
            Err(error) if error.errno() == libc::EINTR => continue,
            Err(error) if error.errno() == libc::ENOBUFS => {
                return Err(RelayError::TooManyFds { side });
            }
            Err(error) => {
                return Err(RelayError::Socket {
                    side,
                    source: io::Error::from_raw_os_error(error.errno()),
                });
            }
        };
        for &fd in raw.iter().take(fd_count) {
            // SAFETY: recvmsg just created these descriptors in this process; nothing else
            // owns them.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if fds.len() > MAX_FDS {
            return Err(RelayError::TooManyFds { side });
        }
        if count == 0 {
            break;
        }
        filled += count;
    }
    Ok(filled)
}

/// Writes `message` to `stream`, its descriptors with its first bytes.
pub fn send(stream: &UnixStream, message: &Message) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_SIZE + message.body.len());
    bytes.extend_from_slice(&message.header());
    bytes.extend_from_slice(&message.body);
    let raw: Vec<RawFd> = message.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = loop {
        match stream.send_with_fds(&[bytes.as_slice()], &raw) {
            Ok(sent) => break sent,
            Err(error) if error.errno() == libc::EINTR => continue,
            Err(error) => return Err(io::Error::from_raw_os_error(error.errno())),
        }
    };
    // A stream socket may take part of a message; the descriptors went with the first part.
    let mut rest = stream;
    rest.write_all(&bytes[sent..])
}

/// Where a message goes.
#[derive(Debug)]
pub enum Route {
    /// To the request handler.
    ToHandler(Message),
    /// Back to the front-end (an answer given by the relay itself).
    ToFrontEnd(Message),
}

/// The one rewrite: `SET_VRING_ENABLE` held until the first `SET_FEATURES`.
#[derive(Debug, Default)]
pub struct EarlyEnables {
    features_set: bool,
    reply_ack: bool,
    /// The latest held message per ring, in the order of those latest messages.
    held: Vec<(u32, Message)>,
}

impl EarlyEnables {
    /// Decides what becomes of a message from the front-end.
    pub fn route(&mut self, message: Message) -> Result<Vec<Route>, RelayError> {
        match message.request {
            SET_PROTOCOL_FEATURES => {
                if let Some(features) = message.u64_body() {
                    self.reply_ack = features & REPLY_ACK_BIT != 0;
                }
                Ok(vec![Route::ToHandler(message)])
            }
            SET_VRING_ENABLE if !self.features_set && message.body.len() == 8 => self.hold(message),
            SET_FEATURES if !self.features_set => Ok(self.release(message)),
            _ => Ok(vec![Route::ToHandler(message)]),
        }
    }

    /// How many rings have a held message.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn hold(&mut self, mut message: Message) -> Result<Vec<Route>, RelayError> {
        let index = message.u32_at(0).unwrap_or(u32::MAX);
        if let Some(at) = self.held.iter().position(|(ring, _)| *ring == index) {
            self.held.remove(at);
        } else if self.held.len() >= MAX_HELD_RINGS {
            return Err(RelayError::TooManyHeld { index });
        }
        let answer = (message.flags & FLAG_NEED_REPLY != 0 && self.reply_ack).then(|| {
            Route::ToFrontEnd(Message::new(
                SET_VRING_ENABLE,
                FLAG_VERSION_1 | FLAG_REPLY,
                0u64.to_le_bytes().to_vec(),
            ))
        });
        tracing::debug!(
            ring = index,
            state = message.u32_at(4),
            "SET_VRING_ENABLE before SET_FEATURES: held"
        );
        message.flags &= !FLAG_NEED_REPLY;
        self.held.push((index, message));
        Ok(answer.into_iter().collect())
    }

    fn release(&mut self, features: Message) -> Vec<Route> {
        self.features_set = true;
        let acked = features.u64_body().unwrap_or(0) & PROTOCOL_FEATURES_BIT != 0;
        let held = std::mem::take(&mut self.held);
        let mut routes = vec![Route::ToHandler(features)];
        if acked {
            tracing::debug!(rings = held.len(), "early SET_VRING_ENABLE replayed");
            routes.extend(
                held.into_iter()
                    .map(|(_, message)| Route::ToHandler(message)),
            );
        } else if !held.is_empty() {
            tracing::debug!(
                rings = held.len(),
                "early SET_VRING_ENABLE dropped: the front-end did not acknowledge \
                 VHOST_USER_F_PROTOCOL_FEATURES, so the rings start enabled"
            );
        }
        routes
    }
}

/// The two threads relaying one connection.
pub struct Relay {
    to_handler: JoinHandle<Result<(), RelayError>>,
    to_front_end: JoinHandle<Result<(), RelayError>>,
}

/// The sockets each thread needs to end the whole relay.
#[derive(Clone)]
struct Ends {
    front_end: Arc<UnixStream>,
    handler: Arc<UnixStream>,
    /// Writes to the front-end come from both threads (replies and the relay's own
    /// answers); one whole message at a time.
    front_end_writer: Arc<Mutex<()>>,
}

impl Ends {
    fn shut_down(&self) {
        let _ = self.front_end.shutdown(Shutdown::Both);
        let _ = self.handler.shutdown(Shutdown::Both);
    }

    fn send_to_front_end(&self, message: &Message) -> Result<(), RelayError> {
        let _guard = self
            .front_end_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        send(&self.front_end, message).map_err(|source| RelayError::Socket {
            side: Side::FrontEnd,
            source,
        })
    }

    fn send_to_handler(&self, message: &Message) -> Result<(), RelayError> {
        send(&self.handler, message).map_err(|source| RelayError::Socket {
            side: Side::Handler,
            source,
        })
    }
}

impl Relay {
    /// Starts relaying between `front_end` (the accepted front-end socket) and `handler`
    /// (the socket the request handler reads). When either side closes or breaks the
    /// protocol, both sockets are shut down.
    pub fn spawn(front_end: UnixStream, handler: UnixStream) -> io::Result<Self> {
        let ends = Ends {
            front_end: Arc::new(front_end),
            handler: Arc::new(handler),
            front_end_writer: Arc::new(Mutex::new(())),
        };
        let forward = ends.clone();
        let to_handler = std::thread::Builder::new()
            .name("vhost-user relay in".to_owned())
            .spawn(move || {
                let result = relay_front_end(&forward);
                forward.shut_down();
                result
            })?;
        let backward = ends.clone();
        let spawned = std::thread::Builder::new()
            .name("vhost-user relay out".to_owned())
            .spawn(move || {
                let result = relay_handler(&backward);
                backward.shut_down();
                result
            });
        let to_front_end = match spawned {
            Ok(handle) => handle,
            Err(error) => {
                ends.shut_down();
                let _ = to_handler.join();
                return Err(error);
            }
        };
        Ok(Self {
            to_handler,
            to_front_end,
        })
    }

    /// Waits for both threads: the front-end's protocol error if there was one, else the
    /// handler side's, else how the front-end side ended.
    pub fn join(self) -> Result<(), RelayError> {
        let inbound = self.to_handler.join().unwrap_or(Err(RelayError::Panicked));
        let outbound = self
            .to_front_end
            .join()
            .unwrap_or(Err(RelayError::Panicked));
        match (inbound, outbound) {
            (Err(error), _) if error.is_protocol_error() => Err(error),
            (_, Err(error)) if error.is_protocol_error() => Err(error),
            (inbound, _) => inbound,
        }
    }
}

/// Front-end → handler, with the early `SET_VRING_ENABLE` rewrite.
fn relay_front_end(ends: &Ends) -> Result<(), RelayError> {
    let mut early = EarlyEnables::default();
    while let Some(message) = receive(&ends.front_end, Side::FrontEnd)? {
        for route in early.route(message)? {
            match route {
                Route::ToHandler(message) => ends.send_to_handler(&message)?,
                Route::ToFrontEnd(message) => ends.send_to_front_end(&message)?,
            }
        }
    }
    Ok(())
}

/// Handler → front-end, unchanged.
fn relay_handler(ends: &Ends) -> Result<(), RelayError> {
    while let Some(message) = receive(&ends.handler, Side::Handler)? {
        ends.send_to_front_end(&message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    fn enable(index: u32, state: u32, flags: u32) -> Message {
        let mut body = index.to_le_bytes().to_vec();
        body.extend_from_slice(&state.to_le_bytes());
        Message::new(SET_VRING_ENABLE, FLAG_VERSION_1 | flags, body)
    }

    fn u64_message(request: u32, value: u64) -> Message {
        Message::new(request, FLAG_VERSION_1, value.to_le_bytes().to_vec())
    }

    /// What reaches the handler, as (request, flags, body).
    fn handler_view(routes: Vec<Route>) -> Vec<(u32, u32, Vec<u8>)> {
        routes
            .into_iter()
            .map(|route| match route {
                Route::ToHandler(m) => (m.request, m.flags, m.body),
                Route::ToFrontEnd(m) => panic!("unexpected answer {m:?}"),
            })
            .collect()
    }

    /// A relay between two test sockets: (front-end's end, handler's end, relay).
    fn relay() -> (UnixStream, UnixStream, Relay) {
        let (front_end, relay_front) = UnixStream::pair().unwrap();
        let (relay_handler, handler) = UnixStream::pair().unwrap();
        for stream in [&front_end, &handler] {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }
        (
            front_end,
            handler,
            Relay::spawn(relay_front, relay_handler).unwrap(),
        )
    }

    fn next(stream: &UnixStream, side: Side) -> Message {
        receive(stream, side).unwrap().expect("the relay closed")
    }

    /// True when nothing is waiting on `stream` (the relay sent nothing).
    fn nothing_waiting(stream: &UnixStream) -> bool {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8];
        let result = (&*stream).read(&mut byte);
        stream.set_nonblocking(false).unwrap();
        matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[test]
    fn an_early_enable_is_held_and_replayed_after_set_features_with_protocol_features() {
        // Arrange
        let mut early = EarlyEnables::default();

        // Act
        let held_0 = early.route(enable(0, 1, 0)).unwrap();
        let held_1 = early.route(enable(1, 1, 0)).unwrap();
        let released = early
            .route(u64_message(SET_FEATURES, PROTOCOL_FEATURES_BIT | 1))
            .unwrap();

        // Assert
        assert!(held_0.is_empty() && held_1.is_empty());
        let seen = handler_view(released);
        let requests: Vec<_> = seen.iter().map(|(r, _, b)| (*r, b[..4].to_vec())).collect();
        assert_eq!(
            requests,
            [
                (
                    SET_FEATURES,
                    (PROTOCOL_FEATURES_BIT | 1).to_le_bytes()[..4].to_vec()
                ),
                (SET_VRING_ENABLE, 0u32.to_le_bytes().to_vec()),
                (SET_VRING_ENABLE, 1u32.to_le_bytes().to_vec()),
            ]
        );
        assert_eq!(early.held(), 0);
    }

    #[test]
    fn held_enables_are_dropped_when_set_features_lacks_protocol_features() {
        let mut early = EarlyEnables::default();
        early.route(enable(0, 1, 0)).unwrap();

        let released = early.route(u64_message(SET_FEATURES, 1)).unwrap();

        assert_eq!(handler_view(released).len(), 1, "only SET_FEATURES");
        assert_eq!(early.held(), 0);
    }

    #[test]
    fn only_the_latest_state_of_a_ring_is_replayed() {
        let mut early = EarlyEnables::default();
        for state in [1, 0, 1, 0] {
            early.route(enable(0, state, 0)).unwrap();
        }

        let released = early
            .route(u64_message(SET_FEATURES, PROTOCOL_FEATURES_BIT))
            .unwrap();

        let seen = handler_view(released);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].2, [0, 0, 0, 0, 0, 0, 0, 0], "ring 0, disabled");
    }

    #[test]
    fn enables_after_set_features_pass_straight_through() {
        let mut early = EarlyEnables::default();
        early
            .route(u64_message(SET_FEATURES, PROTOCOL_FEATURES_BIT))
            .unwrap();

        let routed = early.route(enable(0, 1, FLAG_NEED_REPLY)).unwrap();

        let seen = handler_view(routed);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, FLAG_VERSION_1 | FLAG_NEED_REPLY, "unchanged");
    }

    #[test]
    fn a_held_enable_wanting_a_reply_is_answered_only_under_reply_ack() {
        let mut without = EarlyEnables::default();
        let mut with = EarlyEnables::default();
        with.route(u64_message(SET_PROTOCOL_FEATURES, REPLY_ACK_BIT))
            .unwrap();

        let silent = without.route(enable(0, 1, FLAG_NEED_REPLY)).unwrap();
        let answered = with.route(enable(0, 1, FLAG_NEED_REPLY)).unwrap();
        let replayed = with
            .route(u64_message(SET_FEATURES, PROTOCOL_FEATURES_BIT))
            .unwrap();

        assert!(silent.is_empty());
        match answered.as_slice() {
            [Route::ToFrontEnd(ack)] => {
                assert_eq!(ack.request, SET_VRING_ENABLE);
                assert_eq!(ack.flags, FLAG_VERSION_1 | FLAG_REPLY);
                assert_eq!(ack.body, 0u64.to_le_bytes());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            handler_view(replayed)[1].1,
            FLAG_VERSION_1,
            "NEED_REPLY cleared"
        );
    }

    #[test]
    fn too_many_rings_held_is_an_error() {
        let mut early = EarlyEnables::default();
        for index in 0..MAX_HELD_RINGS as u32 {
            early.route(enable(index, 1, 0)).unwrap();
        }

        let result = early.route(enable(MAX_HELD_RINGS as u32, 1, 0));

        assert!(matches!(result, Err(RelayError::TooManyHeld { .. })));
    }

    #[test]
    fn messages_and_descriptors_pass_both_ways_in_order() {
        // Arrange
        let (front_end, handler, relay) = relay();
        let (passed, kept) = UnixStream::pair().unwrap();
        let mut kick = Message::new(12, FLAG_VERSION_1, 0u64.to_le_bytes().to_vec());
        kick.fds.push(OwnedFd::from(passed));

        // Act
        send(&front_end, &Message::new(1, FLAG_VERSION_1, Vec::new())).unwrap();
        send(&front_end, &kick).unwrap();
        let first = next(&handler, Side::Handler);
        let second = next(&handler, Side::Handler);
        let (reply_fd, reply_kept) = UnixStream::pair().unwrap();
        let mut reply = Message::new(1, FLAG_VERSION_1 | FLAG_REPLY, vec![7; 8]);
        reply.fds.push(OwnedFd::from(reply_fd));
        send(&handler, &reply).unwrap();
        let answer = next(&front_end, Side::FrontEnd);

        // Assert
        assert_eq!(
            (first.request, first.body.len(), first.fds.len()),
            (1, 0, 0)
        );
        assert_eq!(
            (second.request, second.body, second.fds.len()),
            (12, vec![0; 8], 1)
        );
        let mut through = UnixStream::from(second.fds.into_iter().next().unwrap());
        through.write_all(b"kick").unwrap();
        let mut got = [0u8; 4];
        (&kept).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"kick", "the descriptor reached the handler");
        assert_eq!(
            (answer.flags, answer.body, answer.fds.len()),
            (5, vec![7; 8], 1)
        );
        let mut back = UnixStream::from(answer.fds.into_iter().next().unwrap());
        back.write_all(b"call").unwrap();
        (&reply_kept).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"call", "the descriptor reached the front-end");
        drop(front_end);
        assert!(receive(&handler, Side::Handler).unwrap().is_none());
        assert!(relay.join().is_ok());
    }

    #[test]
    fn qemu_7_2_order_reaches_the_handler_with_enable_after_set_features() {
        // Arrange: what QEMU 7.2's virtio-net sends (logged from a real QEMU).
        let (front_end, handler, relay) = relay();
        send(&front_end, &u64_message(SET_PROTOCOL_FEATURES, 0x2009)).unwrap();
        send(&front_end, &enable(0, 1, FLAG_NEED_REPLY)).unwrap();
        send(&front_end, &enable(1, 1, 0)).unwrap();

        // Act
        let ack = next(&front_end, Side::FrontEnd);
        let protocol = next(&handler, Side::Handler);
        let early_nothing = nothing_waiting(&handler);
        send(
            &front_end,
            &u64_message(SET_FEATURES, PROTOCOL_FEATURES_BIT),
        )
        .unwrap();
        let order: Vec<_> = (0..3)
            .map(|_| {
                let m = next(&handler, Side::Handler);
                (m.request, m.flags, m.body.first().copied())
            })
            .collect();

        // Assert
        assert_eq!(
            (ack.request, ack.flags),
            (SET_VRING_ENABLE, FLAG_VERSION_1 | FLAG_REPLY)
        );
        assert_eq!(protocol.request, SET_PROTOCOL_FEATURES);
        assert!(
            early_nothing,
            "an enable reached the handler before SET_FEATURES"
        );
        assert_eq!(
            order,
            [
                (SET_FEATURES, FLAG_VERSION_1, Some(0)),
                (SET_VRING_ENABLE, FLAG_VERSION_1, Some(0)),
                (SET_VRING_ENABLE, FLAG_VERSION_1, Some(1)),
            ]
        );
        assert!(nothing_waiting(&front_end), "no second answer");
        drop(front_end);
        assert!(relay.join().is_ok());
    }

    #[test]
    fn an_oversized_body_closes_both_sides_with_an_error() {
        let (mut front_end, handler, relay) = relay();
        let mut header = Vec::new();
        for word in [5u32, FLAG_VERSION_1, (MAX_BODY_SIZE + 1) as u32] {
            header.extend_from_slice(&word.to_le_bytes());
        }

        front_end.write_all(&header).unwrap();

        let error = relay.join().unwrap_err();
        assert!(
            matches!(
                error,
                RelayError::Oversized {
                    side: Side::FrontEnd,
                    request: 5,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("4097-byte body"), "{error}");
        assert!(receive(&handler, Side::Handler).unwrap().is_none());
        assert!(receive(&front_end, Side::FrontEnd).unwrap().is_none());
    }

    #[test]
    fn too_many_descriptors_on_one_message_is_an_error() {
        let (front_end, _handler, relay) = relay();
        let mut message = Message::new(5, FLAG_VERSION_1, vec![0; 8]);
        let mut keep = Vec::new();
        for _ in 0..=MAX_FDS {
            let (a, b) = UnixStream::pair().unwrap();
            message.fds.push(OwnedFd::from(a));
            keep.push(b);
        }

        send(&front_end, &message).unwrap();

        let error = relay.join().unwrap_err();
        assert!(
            matches!(
                error,
                RelayError::TooManyFds {
                    side: Side::FrontEnd
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn half_a_header_is_a_partial_message_not_a_protocol_error() {
        let (mut front_end, _handler, relay) = relay();

        front_end.write_all(&[1, 0, 0, 0, 1]).unwrap();
        drop(front_end);

        let error = relay.join().unwrap_err();
        assert!(
            matches!(
                error,
                RelayError::PartialMessage {
                    side: Side::FrontEnd
                }
            ),
            "{error}"
        );
        assert!(!error.is_protocol_error());
    }

    #[test]
    fn the_handler_closing_closes_the_front_end() {
        let (front_end, handler, relay) = relay();

        drop(handler);

        assert!(receive(&front_end, Side::FrontEnd).unwrap().is_none());
        assert!(relay.join().is_ok());
    }
}
