//! The server's handle on one client connection: the outgoing frame queue, the read-only flag,
//! keepalive state and the table of open streams.

use super::stream::{ServerStream, StreamPacket};
use super::{IncomingCall, PeerInfo, remote_header};
use crate::message::{
    Header, KEEPALIVE_PROC_PING, MessageStatus, MessageType, encode_frame, encode_frame_with,
};
use crate::procedures::RemoteEvent;
use crate::remote_error::RemoteError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// Packets from the client that may wait for a slow stream consumer before reading pauses.
const STREAM_QUEUE: usize = 64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Sending to a client failed.
#[derive(Debug, Error)]
pub enum ConnectionClosed {
    /// The connection is closed.
    #[error("connection {0} is closed")]
    Closed(u64),
    /// The outgoing queue is full (only from the non-waiting `try_*` sends).
    #[error("outgoing queue of connection {0} is full")]
    QueueFull(u64),
    /// The stream was finished or aborted.
    #[error("stream of procedure {proc_} serial {serial} is closed")]
    StreamClosed {
        /// Procedure that opened the stream.
        proc_: i32,
        /// Serial of the call that opened it.
        serial: u32,
    },
    /// The message could not be encoded.
    #[error("cannot encode the message")]
    Encode(#[source] crate::message::EncodeError),
}

/// Identifies a stream: the procedure and serial of the call that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub(crate) proc_: i32,
    pub(crate) serial: u32,
}

struct Route {
    to_daemon: mpsc::Sender<StreamPacket>,
    released: watch::Sender<bool>,
}

struct Shared {
    id: u64,
    read_only: AtomicBool,
    peer: PeerInfo,
    out: mpsc::Sender<Vec<u8>>,
    closed: watch::Sender<bool>,
    keepalive: AtomicBool,
    last_rx: Mutex<Instant>,
    streams: Mutex<HashMap<StreamKey, Route>>,
}

/// A client connection as the daemon sees it. Cheap to clone; keep a clone to send events.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("read_only", &self.is_read_only())
            .field("peer", &self.shared.peer)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their plain maps inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connection {
    pub(crate) fn new(read_only: bool, peer: PeerInfo, out: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                read_only: AtomicBool::new(read_only),
                peer,
                out,
                closed: watch::Sender::new(false),
                keepalive: AtomicBool::new(false),
                last_rx: Mutex::new(Instant::now()),
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A process-unique id, for logs and for keying per-connection state.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether write operations must be refused (see [`RemoteError::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.shared.read_only.load(Ordering::Relaxed)
    }

    /// Makes the connection read-only (e.g. `CONNECT_OPEN` with `VIR_CONNECT_RO`); a
    /// read-only connection never becomes writable again.
    pub fn set_read_only(&self) {
        self.shared.read_only.store(true, Ordering::Relaxed);
    }

    /// The peer's credentials, when known.
    pub fn peer(&self) -> PeerInfo {
        self.shared.peer
    }

    /// Starts server-side keepalive: PINGs when the client is idle, and closing the connection
    /// when they go unanswered. libvirtd does this when the client asked
    /// `CONNECT_SUPPORTS_FEATURE(PROGRAM_KEEPALIVE)`, so call it when answering that with 1.
    pub fn enable_keepalive(&self) {
        self.shared.keepalive.store(true, Ordering::Relaxed);
    }

    pub(crate) fn keepalive_enabled(&self) -> bool {
        self.shared.keepalive.load(Ordering::Relaxed)
    }

    pub(crate) fn note_received(&self) {
        *lock(&self.shared.last_rx) = Instant::now();
    }

    pub(crate) fn last_received(&self) -> Instant {
        *lock(&self.shared.last_rx)
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Waits until the connection closes.
    pub async fn wait_closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        // An error means the sender is gone, which only happens once the connection is gone.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Closes the connection: the reader and writer stop, open streams end.
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
        lock(&self.shared.streams).clear();
    }

    async fn send_frame(&self, frame: Vec<u8>) -> Result<(), ConnectionClosed> {
        if self.is_closed() {
            return Err(ConnectionClosed::Closed(self.id()));
        }
        self.shared
            .out
            .send(frame)
            .await
            .map_err(|_| ConnectionClosed::Closed(self.id()))
    }

    fn try_send_frame(&self, frame: Vec<u8>) -> Result<(), ConnectionClosed> {
        if self.is_closed() {
            return Err(ConnectionClosed::Closed(self.id()));
        }
        self.shared.out.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ConnectionClosed::QueueFull(self.id()),
            mpsc::error::TrySendError::Closed(_) => ConnectionClosed::Closed(self.id()),
        })
    }

    fn event_frame<E: RemoteEvent>(msg: &E::Msg) -> Result<Vec<u8>, ConnectionClosed> {
        // libvirtd 9.0 sends events with serial 1 (seen on the wire); clients ignore it.
        let header = remote_header(
            E::PROCEDURE.number(),
            MessageType::Message,
            1,
            MessageStatus::Ok,
        );
        encode_frame_with(&header, msg).map_err(ConnectionClosed::Encode)
    }

    /// Sends an event (a MESSAGE of `E`'s procedure), waiting for room in the queue.
    pub async fn send_event<E: RemoteEvent>(&self, msg: &E::Msg) -> Result<(), ConnectionClosed> {
        self.send_frame(Self::event_frame::<E>(msg)?).await
    }

    /// Sends an event without waiting; fails with `QueueFull` when the client is not reading.
    pub fn try_send_event<E: RemoteEvent>(&self, msg: &E::Msg) -> Result<(), ConnectionClosed> {
        self.try_send_frame(Self::event_frame::<E>(msg)?)
    }

    /// Sends a MESSAGE of `procedure` with an already encoded payload, for events that have
    /// no [`RemoteEvent`] type here yet.
    pub async fn send_message_raw(
        &self,
        procedure: crate::Procedure,
        payload: &[u8],
    ) -> Result<(), ConnectionClosed> {
        let header = remote_header(
            procedure.number(),
            MessageType::Message,
            1,
            MessageStatus::Ok,
        );
        let frame = encode_frame(&header, payload)
            .map_err(|e| ConnectionClosed::Encode(crate::message::EncodeError::Frame(e)))?;
        self.send_frame(frame).await
    }

    pub(crate) async fn send_keepalive(&self, proc_: i32) -> Result<(), ConnectionClosed> {
        let frame = encode_frame(&Header::keepalive(proc_), &[])
            .map_err(|e| ConnectionClosed::Encode(crate::message::EncodeError::Frame(e)))?;
        if proc_ == KEEPALIVE_PROC_PING {
            debug!(conn = self.id(), "sending keepalive PING");
        }
        self.send_frame(frame).await
    }

    pub(crate) async fn send_reply(
        &self,
        proc_: i32,
        serial: u32,
        payload: Vec<u8>,
    ) -> Result<(), ConnectionClosed> {
        let header = remote_header(proc_, MessageType::Reply, serial, MessageStatus::Ok);
        match encode_frame(&header, &payload) {
            Ok(frame) => self.send_frame(frame).await,
            Err(e) => {
                let err = RemoteError::internal(format!("reply cannot be sent: {e}"));
                self.send_error_reply(proc_, serial, &err).await
            }
        }
    }

    pub(crate) async fn send_error_reply(
        &self,
        proc_: i32,
        serial: u32,
        err: &RemoteError,
    ) -> Result<(), ConnectionClosed> {
        let frame = crate::message::encode_error_reply(proc_, serial, err).or_else(|e| {
            warn!(error = %e, "error reply too large, sending a short one");
            let short = RemoteError::internal("error message too large to send");
            crate::message::encode_error_reply(proc_, serial, &short)
        });
        self.send_frame(frame.map_err(ConnectionClosed::Encode)?)
            .await
    }

    pub(crate) async fn send_stream_frame(
        &self,
        key: StreamKey,
        status: MessageStatus,
        payload: &[u8],
    ) -> Result<(), ConnectionClosed> {
        let header = remote_header(key.proc_, MessageType::Stream, key.serial, status);
        let frame = encode_frame(&header, payload)
            .map_err(|e| ConnectionClosed::Encode(crate::message::EncodeError::Frame(e)))?;
        self.send_frame(frame).await
    }

    /// Opens the stream of `call` (e.g. `DOMAIN_OPEN_CONSOLE`). Call it from the handler before
    /// returning `Ok`: packets the client sends after the reply then reach the stream, and data
    /// written to the stream waits until the reply has gone out. If the handler returns an
    /// error instead, the stream is closed.
    pub fn open_stream(&self, call: &IncomingCall) -> Result<ServerStream, ConnectionClosed> {
        if self.is_closed() {
            return Err(ConnectionClosed::Closed(self.id()));
        }
        let key = StreamKey {
            proc_: call.procedure.number(),
            serial: call.serial,
        };
        let (to_daemon, from_client) = mpsc::channel(STREAM_QUEUE);
        let (released, released_rx) = watch::channel(false);
        lock(&self.shared.streams).insert(
            key,
            Route {
                to_daemon,
                released,
            },
        );
        Ok(ServerStream::new(
            self.clone(),
            key,
            from_client,
            released_rx,
        ))
    }

    pub(crate) fn stream_is_open(&self, key: StreamKey) -> bool {
        lock(&self.shared.streams).contains_key(&key)
    }

    pub(crate) fn release_stream(&self, key: StreamKey) {
        if let Some(route) = lock(&self.shared.streams).get(&key) {
            route.released.send_replace(true);
        }
    }

    pub(crate) fn drop_stream(&self, key: StreamKey) {
        lock(&self.shared.streams).remove(&key);
    }

    /// Delivers a STREAM packet from the client. Packets of unknown streams are dropped, as
    /// libvirtd does: the client may still be sending after a stream ended.
    pub(crate) async fn route_stream_packet(&self, msg: crate::message::Message) {
        let key = StreamKey {
            proc_: msg.header.proc_,
            serial: msg.header.serial,
        };
        let Some(to_daemon) = lock(&self.shared.streams)
            .get(&key)
            .map(|r| r.to_daemon.clone())
        else {
            debug!(
                conn = self.id(),
                ?key,
                "dropping packet of an unknown stream"
            );
            return;
        };
        let packet = match msg.header.status {
            MessageStatus::Continue => StreamPacket::Data(msg.payload),
            MessageStatus::Ok => StreamPacket::Finish,
            MessageStatus::Error => StreamPacket::Abort(msg.payload_as::<RemoteError>().ok()),
        };
        let ends = !matches!(packet, StreamPacket::Data(_));
        if ends {
            self.drop_stream(key);
        }
        // A consumer that went away simply loses the data.
        let _ = to_daemon.send(packet).await;
        if ends {
            // libvirtd confirms a client's finish or abort with an empty STREAM OK.
            let _ = self.send_stream_frame(key, MessageStatus::Ok, &[]).await;
        }
    }
}
