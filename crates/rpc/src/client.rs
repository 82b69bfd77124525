//! An async (tokio) client of the remote program, for the `oxvirt` CLI and for tests.
//!
//! One reader task matches replies to calls by serial, answers the server's keepalive PINGs,
//! queues events (MESSAGE) for [`Client::take_events`] and routes STREAM packets to the
//! [`ClientStream`] of their call; one writer task owns the write half. A CLI that is not async
//! can drive it with a current-thread runtime's `block_on`.

use crate::message::{
    self, EncodeError, Header, KEEPALIVE_PROC_PING, KEEPALIVE_PROC_PONG, KEEPALIVE_PROGRAM,
    MessageError, MessageStatus, MessageType, REMOTE_PROGRAM, STREAM_CHUNK_MAX, encode_frame,
};
use crate::procedures::{AUTH_NONE, ConnectOpenArgs, Procedure, RemoteCall, RemoteEvent, call};
use crate::remote_error::RemoteError;
use crate::server::StreamPacket;
use crate::uri::ConnectUri;
use crate::xdr::{self, XdrError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// Events that may wait for the caller before newer ones are dropped.
const EVENT_QUEUE: usize = 1024;
/// Stream packets that may wait for the caller before reading pauses.
const STREAM_QUEUE: usize = 64;
/// `VIR_CONNECT_RO`.
const CONNECT_RO: u32 = 1;

/// What went wrong on the client side.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Connecting to the daemon socket failed.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error (virsh would print `error: <message>`).
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// The connection closed before the answer came.
    #[error("the connection to the daemon is closed")]
    Closed,
    /// The server sent a frame this client cannot read.
    #[error("bad frame from the server")]
    Frame(#[from] MessageError),
    /// Arguments could not be encoded.
    #[error("cannot encode the arguments")]
    Encode(#[from] EncodeError),
    /// A reply or event did not decode as its type.
    #[error("cannot decode {what}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why.
        #[source]
        source: XdrError,
    },
    /// The server offers no authentication this client speaks.
    #[error("the server offers no supported authentication (types {0:?}; only none is supported)")]
    AuthUnsupported(Vec<i32>),
    /// No answer in time.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    /// The URI cannot be used.
    #[error(transparent)]
    Uri(#[from] crate::uri::UriError),
}

/// An event (MESSAGE of the remote program) the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    /// The procedure number of the message.
    pub procedure: i32,
    /// The encoded `remote_*_msg`.
    pub payload: Vec<u8>,
}

impl EventMessage {
    /// Whether this is an `E` event.
    pub fn is<E: RemoteEvent>(&self) -> bool {
        self.procedure == E::PROCEDURE.number()
    }

    /// Decodes the message as an `E` event; `Ok(None)` if it is another event.
    pub fn decode<E: RemoteEvent>(&self) -> Result<Option<E::Msg>, ClientError> {
        if !self.is::<E>() {
            return Ok(None);
        }
        xdr::from_bytes(&self.payload)
            .map(Some)
            .map_err(|source| ClientError::Decode {
                what: format!("event {}", E::PROCEDURE),
                source,
            })
    }
}

type ReplySender = oneshot::Sender<Result<Vec<u8>, ClientError>>;

struct Shared {
    out: mpsc::Sender<Vec<u8>>,
    serial: AtomicU32,
    pending: Mutex<HashMap<u32, ReplySender>>,
    streams: Mutex<HashMap<u32, mpsc::Sender<StreamPacket>>>,
    pongs: Mutex<Vec<oneshot::Sender<()>>>,
    events: Mutex<Option<mpsc::Sender<EventMessage>>>,
    closed: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their plain maps inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection to a daemon that speaks the remote program.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    events: Arc<Mutex<Option<mpsc::Receiver<EventMessage>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the socket of `uri` and opens the connection as virsh does
    /// (`AUTH_LIST`, then `CONNECT_OPEN` with [`ConnectUri::remote_name`]).
    pub async fn connect(uri: &ConnectUri, read_only: bool) -> Result<Self, ClientError> {
        let client = Self::connect_unix(&uri.socket).await?;
        client.open(&uri.remote_name(), read_only).await?;
        Ok(client)
    }

    /// Connects to a Unix socket without any handshake.
    pub async fn connect_unix(path: &Path) -> Result<Self, ClientError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::from_stream(stream))
    }

    /// Runs the protocol over any byte stream (e.g. one end of `tokio::io::duplex`).
    pub fn from_stream<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let (out, out_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            out,
            serial: AtomicU32::new(0),
            pending: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            pongs: Mutex::new(Vec::new()),
            events: Mutex::new(Some(events_tx)),
            closed: watch::Sender::new(false),
        });
        tokio::spawn(write_frames(writer, out_rx, Arc::clone(&shared)));
        tokio::spawn(read_frames(reader, Arc::clone(&shared)));
        Self {
            shared,
            events: Arc::new(Mutex::new(Some(events_rx))),
        }
    }

    /// `AUTH_LIST` (only "none" is supported) and `CONNECT_OPEN` of `name`.
    pub async fn open(&self, name: &str, read_only: bool) -> Result<(), ClientError> {
        let auth = self.call::<call::AuthList>(&()).await?;
        if !auth.types.is_empty() && !auth.types.contains(&AUTH_NONE) {
            return Err(ClientError::AuthUnsupported(auth.types));
        }
        let args = ConnectOpenArgs {
            name: Some(name.to_owned()),
            flags: if read_only { CONNECT_RO } else { 0 },
        };
        self.call::<call::ConnectOpen>(&args).await
    }

    /// `CONNECT_CLOSE`.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.call::<call::ConnectClose>(&()).await
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Calls `C` and decodes its reply.
    pub async fn call<C: RemoteCall>(&self, args: &C::Args) -> Result<C::Ret, ClientError> {
        let payload = xdr::to_bytes(args).map_err(EncodeError::Xdr)?;
        let ret = self.call_raw(C::PROCEDURE.number(), payload).await?;
        decode_ret::<C>(&ret)
    }

    /// Calls procedure `proc_` with an encoded payload; returns the encoded reply.
    pub async fn call_raw(&self, proc_: i32, payload: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let serial = self.shared.serial.fetch_add(1, Ordering::Relaxed);
        let rx = self.send_call(proc_, serial, &payload).await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    async fn send_call(
        &self,
        proc_: i32,
        serial: u32,
        payload: &[u8],
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, ClientError>>, ClientError> {
        let header = Header::remote(proc_, MessageType::Call, serial, MessageStatus::Ok);
        let frame = encode_frame(&header, payload)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(serial, tx);
        if self.is_closed() || self.shared.out.send(frame).await.is_err() {
            lock(&self.shared.pending).remove(&serial);
            return Err(ClientError::Closed);
        }
        Ok(rx)
    }

    /// Takes the receiver of events (once; later calls get `None`). Events that arrive while
    /// nobody takes them are kept up to a limit, then dropped.
    pub fn take_events(&self) -> Option<mpsc::Receiver<EventMessage>> {
        lock(&self.events).take()
    }

    /// Sends a keepalive PING and waits for the PONG.
    pub async fn ping(&self, timeout: Duration) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pongs).push(tx);
        let frame = encode_frame(&Header::keepalive(KEEPALIVE_PROC_PING), &[])?;
        self.shared
            .out
            .send(frame)
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Calls `C` (e.g. `DomainOpenConsole`) and returns its reply and the stream it opened.
    pub async fn open_stream<C: RemoteCall>(
        &self,
        args: &C::Args,
    ) -> Result<(C::Ret, ClientStream), ClientError> {
        let payload = xdr::to_bytes(args).map_err(EncodeError::Xdr)?;
        let serial = self.shared.serial.fetch_add(1, Ordering::Relaxed);
        // Route the stream before calling: data may follow the reply at once.
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        lock(&self.shared.streams).insert(serial, tx);
        let result = async {
            let reply = self
                .send_call(C::PROCEDURE.number(), serial, &payload)
                .await?;
            let ret = reply.await.map_err(|_| ClientError::Closed)??;
            decode_ret::<C>(&ret)
        }
        .await;
        match result {
            Ok(ret) => Ok((
                ret,
                ClientStream {
                    shared: Arc::clone(&self.shared),
                    proc_: C::PROCEDURE.number(),
                    serial,
                    rx,
                },
            )),
            Err(e) => {
                lock(&self.shared.streams).remove(&serial);
                Err(e)
            }
        }
    }
}

fn decode_ret<C: RemoteCall>(ret: &[u8]) -> Result<C::Ret, ClientError> {
    xdr::from_bytes(ret).map_err(|source| ClientError::Decode {
        what: format!("the reply of {}", C::PROCEDURE),
        source,
    })
}

/// The client side of a stream opened by [`Client::open_stream`].
#[derive(Debug)]
pub struct ClientStream {
    shared: Arc<Shared>,
    proc_: i32,
    serial: u32,
    rx: mpsc::Receiver<StreamPacket>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl ClientStream {
    async fn send_packet(&self, status: MessageStatus, payload: &[u8]) -> Result<(), ClientError> {
        let header = Header::remote(self.proc_, MessageType::Stream, self.serial, status);
        let frame = encode_frame(&header, payload)?;
        self.shared
            .out
            .send(frame)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Sends data to the server.
    pub async fn send(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(STREAM_CHUNK_MAX) {
            self.send_packet(MessageStatus::Continue, chunk).await?;
        }
        Ok(())
    }

    /// The server's next packet: data, its end of stream (`Finish`) or an abort with its
    /// error. `None` when the connection closed.
    pub async fn recv(&mut self) -> Option<StreamPacket> {
        self.rx.recv().await
    }

    /// Finishes the stream and waits for the server's confirmation; data still in flight is
    /// discarded.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        self.send_packet(MessageStatus::Ok, &[]).await?;
        self.wait_for_confirmation().await
    }

    /// Aborts the stream and waits for the server's confirmation.
    pub async fn abort(mut self) -> Result<(), ClientError> {
        self.send_packet(MessageStatus::Error, &[]).await?;
        self.wait_for_confirmation().await
    }

    async fn wait_for_confirmation(&mut self) -> Result<(), ClientError> {
        loop {
            match self.rx.recv().await {
                Some(StreamPacket::Data(_)) => {}
                Some(StreamPacket::Finish) => break,
                Some(StreamPacket::Abort(err)) => {
                    lock(&self.shared.streams).remove(&self.serial);
                    return Err(ClientError::Remote(err.unwrap_or_else(|| {
                        RemoteError::rpc("stream aborted by the server")
                    })));
                }
                None => return Err(ClientError::Closed),
            }
        }
        lock(&self.shared.streams).remove(&self.serial);
        Ok(())
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        lock(&self.shared.streams).remove(&self.serial);
    }
}

async fn write_frames<W: AsyncWrite>(
    writer: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let mut writer = std::pin::pin!(writer);
    let mut closed = shared.closed.subscribe();
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(frame) = frame else { break };
        if writer.write_all(&frame).await.is_err() {
            break;
        }
    }
    shutdown(&shared);
    let _ = writer.shutdown().await;
}

async fn read_frames<R: AsyncRead + Unpin>(mut reader: R, shared: Arc<Shared>) {
    loop {
        match message::read_message(&mut reader).await {
            Ok(Some(msg)) => dispatch(&shared, msg).await,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection after a bad frame from the server");
                break;
            }
        }
    }
    shutdown(&shared);
}

fn shutdown(shared: &Shared) {
    shared.closed.send_replace(true);
    for (_, tx) in lock(&shared.pending).drain() {
        let _ = tx.send(Err(ClientError::Closed));
    }
    lock(&shared.streams).clear();
    lock(&shared.pongs).clear();
    lock(&shared.events).take();
}

async fn dispatch(shared: &Shared, msg: message::Message) {
    let h = msg.header;
    match (h.prog, h.msg_type) {
        (REMOTE_PROGRAM, MessageType::Reply) => {
            let Some(tx) = lock(&shared.pending).remove(&h.serial) else {
                tracing::debug!(serial = h.serial, "reply to no pending call");
                return;
            };
            let result = match h.status {
                MessageStatus::Error => Err(decode_error(&msg.payload)),
                _ => Ok(msg.payload),
            };
            let _ = tx.send(result);
        }
        (REMOTE_PROGRAM, MessageType::Message) => {
            let event = EventMessage {
                procedure: h.proc_,
                payload: msg.payload,
            };
            let sender = lock(&shared.events).clone();
            if let Some(tx) = sender
                && tx.try_send(event).is_err()
            {
                tracing::warn!(
                    procedure = h.proc_,
                    "event dropped: nobody reads events or too many are queued"
                );
            }
        }
        (REMOTE_PROGRAM, MessageType::Stream) => {
            let Some(tx) = lock(&shared.streams).get(&h.serial).cloned() else {
                return;
            };
            let packet = match h.status {
                // An empty CONTINUE is the server's end of file.
                MessageStatus::Continue if msg.payload.is_empty() => StreamPacket::Finish,
                MessageStatus::Continue => StreamPacket::Data(msg.payload),
                MessageStatus::Ok => StreamPacket::Finish,
                MessageStatus::Error => StreamPacket::Abort(xdr::from_bytes(&msg.payload).ok()),
            };
            let _ = tx.send(packet).await;
        }
        (KEEPALIVE_PROGRAM, MessageType::Message) => match h.proc_ {
            KEEPALIVE_PROC_PING => {
                if let Ok(frame) = encode_frame(&Header::keepalive(KEEPALIVE_PROC_PONG), &[]) {
                    let _ = shared.out.send(frame).await;
                }
            }
            KEEPALIVE_PROC_PONG => {
                for tx in lock(&shared.pongs).drain(..) {
                    let _ = tx.send(());
                }
            }
            _ => {}
        },
        _ => tracing::debug!(header = ?h, "ignoring unexpected message"),
    }
}

fn decode_error(payload: &[u8]) -> ClientError {
    match xdr::from_bytes::<RemoteError>(payload) {
        Ok(err) => ClientError::Remote(err),
        Err(source) => ClientError::Decode {
            what: "an error reply".into(),
            source,
        },
    }
}

/// Names a procedure number for messages (e.g. `REMOTE_PROC_CONNECT_OPEN (1)`).
pub fn procedure_name(number: i32) -> String {
    Procedure::from_number(number).map_or_else(|| format!("procedure {number}"), |p| p.to_string())
}
