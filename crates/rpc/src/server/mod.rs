//! The async server side: one task reads frames from a connection and dispatches them, one
//! writer task owns the socket's write half and is fed by a channel, so replies, events
//! (MESSAGE) and stream data from any task go out whole and in order.
//!
//! The daemon implements [`Dispatcher`]; each CALL runs in its own task (up to
//! [`ServerConfig::max_calls_in_flight`] per connection), so a slow call blocks neither
//! keepalive nor stream traffic. An unknown procedure gets an error reply and the connection
//! stays up; a malformed frame closes that connection.

mod connection;
mod stream;

pub use connection::{Connection, ConnectionClosed};
pub use stream::{ServerStream, StreamPacket, StreamReader, StreamWriter};

use crate::message::{
    self, Header, KEEPALIVE_PROC_PING, KEEPALIVE_PROC_PONG, KEEPALIVE_PROGRAM, Message,
    MessageStatus, MessageType, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION,
};
use crate::procedures::{Procedure, RemoteCall};
use crate::remote_error::RemoteError;
use crate::xdr;
use connection::StreamKey;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

/// Tunables of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Calls of one connection that may run at once; reading pauses beyond it.
    pub max_calls_in_flight: usize,
    /// Frames that may wait for the writer of one connection.
    pub outgoing_queue: usize,
    /// Idle time after which a keepalive PING is sent (once the dispatcher enabled keepalive).
    pub keepalive_interval: Duration,
    /// Unanswered PINGs after which the connection is closed.
    pub keepalive_count: u32,
}

impl Default for ServerConfig {
    /// libvirtd's defaults: 5 s interval, 5 missed PINGs.
    fn default() -> Self {
        Self {
            max_calls_in_flight: 16,
            outgoing_queue: 256,
            keepalive_interval: Duration::from_secs(5),
            keepalive_count: 5,
        }
    }
}

/// A CALL received from a client.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    /// The procedure called.
    pub procedure: Procedure,
    /// The call's serial (streams opened by this call carry it too).
    pub serial: u32,
    /// The encoded `remote_*_args`.
    pub body: Vec<u8>,
}

impl IncomingCall {
    /// Decodes the arguments as those of `C`.
    pub fn args<C: RemoteCall>(&self) -> Result<C::Args, RemoteError> {
        if self.procedure != C::PROCEDURE {
            return Err(RemoteError::internal(format!(
                "arguments of {} decoded as those of {}",
                self.procedure,
                C::PROCEDURE
            )));
        }
        xdr::from_bytes(&self.body).map_err(|e| {
            RemoteError::rpc(format!(
                "cannot decode the arguments of {}: {e}",
                self.procedure
            ))
        })
    }

    /// The error for a procedure the daemon does not implement (libvirt's `VIR_ERR_NO_SUPPORT`,
    /// naming the procedure).
    pub fn unsupported(&self) -> RemoteError {
        RemoteError::no_support(self.procedure)
    }

    /// Decodes `C::Args`, runs `handler` and encodes its `C::Ret` as the reply.
    pub async fn handle<C, F, Fut>(&self, handler: F) -> Result<Reply, RemoteError>
    where
        C: RemoteCall,
        F: FnOnce(C::Args) -> Fut,
        Fut: Future<Output = Result<C::Ret, RemoteError>>,
    {
        let args = self.args::<C>()?;
        let ret = handler(args).await?;
        Reply::encode::<C>(&ret)
    }
}

/// The payload of a successful reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    payload: Vec<u8>,
}

impl Reply {
    /// An empty reply, for procedures whose `ret` is void.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The encoded `C::Ret`.
    pub fn encode<C: RemoteCall>(ret: &C::Ret) -> Result<Self, RemoteError> {
        xdr::to_bytes(ret)
            .map(|payload| Self { payload })
            .map_err(|e| {
                RemoteError::internal(format!("cannot encode the reply of {}: {e}", C::PROCEDURE))
            })
    }

    /// An already encoded payload.
    pub fn raw(payload: Vec<u8>) -> Self {
        Self { payload }
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// What the daemon implements: the meaning of each call.
pub trait Dispatcher: Send + Sync + 'static {
    /// Handles one call. An `Err` becomes an error reply that virsh prints as
    /// `error: <message>`; the connection stays up either way.
    fn call(
        &self,
        conn: &Connection,
        call: IncomingCall,
    ) -> impl Future<Output = Result<Reply, RemoteError>> + Send;

    /// Called once when a connection has closed (drop its event registrations here).
    fn disconnected(&self, conn: &Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }
}

/// Serves connections with one dispatcher.
#[derive(Debug)]
pub struct Server<D> {
    dispatcher: Arc<D>,
    config: ServerConfig,
}

impl<D> Clone for Server<D> {
    fn clone(&self) -> Self {
        Self {
            dispatcher: Arc::clone(&self.dispatcher),
            config: self.config.clone(),
        }
    }
}

impl<D: Dispatcher> Server<D> {
    /// A server that hands calls to `dispatcher`.
    pub fn new(dispatcher: Arc<D>, config: ServerConfig) -> Self {
        Self { dispatcher, config }
    }

    /// Accepts connections on `listener` forever, each served in its own task. Connections of
    /// a `read_only` listener start read-only (libvirt's `-ro` socket).
    pub async fn serve_unix(&self, listener: UnixListener, read_only: bool) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let peer = stream.peer_cred().ok();
            let server = self.clone();
            tokio::spawn(async move {
                let info = PeerInfo {
                    uid: peer.map(|c| c.uid()),
                    pid: peer.and_then(|c| c.pid()),
                };
                server.serve_connection(stream, read_only, info).await;
            });
        }
    }

    /// Serves one connection until the peer closes it or sends a malformed frame.
    pub async fn serve_connection<S>(&self, stream: S, read_only: bool, peer: PeerInfo)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, writer) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::channel(self.config.outgoing_queue);
        let conn = Connection::new(read_only, peer, out_tx);
        let writer_task = tokio::spawn(write_frames(writer, out_rx, conn.clone()));
        let keepalive_task = tokio::spawn(keepalive(conn.clone(), self.config.clone()));
        let calls = Arc::new(Semaphore::new(self.config.max_calls_in_flight.max(1)));
        debug!(conn = conn.id(), "connection opened");

        loop {
            let next = tokio::select! {
                next = message::read_message(&mut reader) => next,
                () = conn.wait_closed() => break,
            };
            match next {
                Ok(Some(msg)) => {
                    conn.note_received();
                    self.handle_message(&conn, msg, &calls).await;
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(conn = conn.id(), error = %e, "closing connection after a bad frame");
                    break;
                }
            }
        }

        conn.close();
        keepalive_task.abort();
        // The writer exits once it sees the close; what was queued before is dropped.
        let _ = writer_task.await;
        self.dispatcher.disconnected(&conn).await;
        debug!(conn = conn.id(), "connection closed");
    }

    async fn handle_message(&self, conn: &Connection, msg: Message, calls: &Arc<Semaphore>) {
        let h = msg.header;
        match (h.prog, h.msg_type) {
            (KEEPALIVE_PROGRAM, MessageType::Message) => handle_keepalive(conn, h.proc_).await,
            (REMOTE_PROGRAM, MessageType::Call) if h.vers == REMOTE_PROTOCOL_VERSION => {
                self.start_call(conn, msg, calls).await;
            }
            (REMOTE_PROGRAM, MessageType::Stream) => conn.route_stream_packet(msg).await,
            (_, MessageType::Call | MessageType::CallWithFds) => {
                let err = if h.msg_type == MessageType::CallWithFds {
                    RemoteError::rpc("passing file descriptors is not supported")
                } else {
                    RemoteError::rpc(format!(
                        "cannot find program {:#x} version {}",
                        h.prog, h.vers
                    ))
                };
                let _ = conn.send_error_reply(h.proc_, h.serial, &err).await;
            }
            _ => debug!(conn = conn.id(), header = ?h, "ignoring unexpected message"),
        }
    }

    async fn start_call(&self, conn: &Connection, msg: Message, calls: &Arc<Semaphore>) {
        let h = msg.header;
        let Some(procedure) = Procedure::from_number(h.proc_) else {
            let err = RemoteError::no_support(format!("unknown procedure: {}", h.proc_));
            let _ = conn.send_error_reply(h.proc_, h.serial, &err).await;
            return;
        };
        let Ok(permit) = Arc::clone(calls).acquire_owned().await else {
            return;
        };
        let call = IncomingCall {
            procedure,
            serial: h.serial,
            body: msg.payload,
        };
        let dispatcher = Arc::clone(&self.dispatcher);
        let conn = conn.clone();
        tokio::spawn(async move {
            let handler_conn = conn.clone();
            // A panicking handler must still answer, or the client waits forever.
            let result = tokio::spawn(async move { dispatcher.call(&handler_conn, call).await })
                .await
                .unwrap_or_else(|e| {
                    Err(RemoteError::internal(format!(
                        "handler of {procedure} failed: {e}"
                    )))
                });
            let key = StreamKey {
                proc_: h.proc_,
                serial: h.serial,
            };
            let sent = match result {
                Ok(reply) => conn.send_reply(h.proc_, h.serial, reply.payload).await,
                Err(err) => {
                    conn.drop_stream(key);
                    conn.send_error_reply(h.proc_, h.serial, &err).await
                }
            };
            // Stream data queued by the handler's tasks may go out only after the reply.
            if sent.is_ok() {
                conn.release_stream(key);
            }
            drop(permit);
        });
    }
}

/// Who is on the other end of a Unix socket (from `SO_PEERCRED`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's user id.
    pub uid: Option<u32>,
    /// The peer's process id.
    pub pid: Option<i32>,
}

async fn handle_keepalive(conn: &Connection, proc_: i32) {
    match proc_ {
        KEEPALIVE_PROC_PING => {
            let _ = conn.send_keepalive(KEEPALIVE_PROC_PONG).await;
        }
        // Any traffic already counted as a sign of life; a PONG needs nothing more.
        KEEPALIVE_PROC_PONG => {}
        other => debug!(
            conn = conn.id(),
            proc_ = other,
            "unknown keepalive procedure"
        ),
    }
}

async fn write_frames<W: AsyncWrite>(
    writer: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    conn: Connection,
) {
    let mut writer = std::pin::pin!(writer);
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            () = conn.wait_closed() => None,
        };
        let Some(frame) = frame else { break };
        if let Err(e) = writer.write_all(&frame).await {
            debug!(conn = conn.id(), error = %e, "write failed");
            break;
        }
    }
    conn.close();
    let _ = writer.shutdown().await;
}

/// libvirt's keepalive: after `interval` without a message from the client, PING it every
/// `interval`; close after `count` PINGs in a row went unanswered.
async fn keepalive(conn: Connection, config: ServerConfig) {
    let mut missed = 0u32;
    let mut last_ping: Option<Instant> = None;
    loop {
        tokio::time::sleep(config.keepalive_interval).await;
        if !conn.keepalive_enabled() {
            continue;
        }
        let heard = conn.last_received();
        if heard.elapsed() < config.keepalive_interval || last_ping.is_some_and(|p| heard > p) {
            missed = 0;
            if heard.elapsed() < config.keepalive_interval {
                continue;
            }
        }
        if missed >= config.keepalive_count {
            warn!(
                conn = conn.id(),
                missed, "no keepalive answer, closing connection"
            );
            conn.close();
            return;
        }
        let _ = conn.send_keepalive(KEEPALIVE_PROC_PING).await;
        missed += 1;
        last_ping = Some(Instant::now());
    }
}

/// Builds the header of a server-sent frame.
fn remote_header(proc_: i32, msg_type: MessageType, serial: u32, status: MessageStatus) -> Header {
    Header::remote(proc_, msg_type, serial, status)
}
