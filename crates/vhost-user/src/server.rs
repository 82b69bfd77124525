//! The listening socket and the connection loop: one front-end at a time, each connection
//! served by a fresh `vhost-user-backend` daemon (its vrings and worker thread, which also
//! watches the device's own descriptor if it has one), the device reset between connections
//! so that a front-end that reconnects (QEMU with `reconnect=N`, or after a restart) finds it
//! as new (virtio-vsock: every connection closed).
//!
//! The front-end's socket is not handed to the `vhost` crate directly: a relay
//! ([`crate::reorder`]) sits between it and the request handler, which reads a socket of a
//! private pair, so that a `SET_VRING_ENABLE` sent before `SET_FEATURES` (QEMU 7.2's
//! virtio-net) is held instead of closing the connection.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vhost::vhost_user::{Error as VhostError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use virtio::VirtioMemory;

use crate::backend::{AtomicMemory, DeviceBackend};
use crate::reorder::{Relay, RelayError};

/// Why the server could not (go on) serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something other than a socket is in the way.
    #[error("{path} exists and is not a socket: refusing to replace it")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// What the vhost crate reported.
        #[source]
        source: VhostError,
    },
    /// A connection could not be set up or accepted.
    #[error("cannot serve a connection: {0}")]
    Daemon(String),
    /// The worker's exit event could not be made.
    #[error("cannot create the worker thread's exit event: {0}")]
    ExitEvent(#[source] io::Error),
    /// The device's own descriptor could not be watched by the worker thread.
    #[error("cannot watch the device's host-side events in the worker thread: {0}")]
    DeviceEvent(#[source] io::Error),
    /// The private socket between the relay and the request handler could not be made.
    #[error("cannot connect the request handler to the relay ({what}): {source}")]
    HandlerSocket {
        /// The step that failed.
        what: &'static str,
        /// What the system reported.
        #[source]
        source: io::Error,
    },
    /// The relay threads could not be started.
    #[error("cannot start the front-end relay: {0}")]
    Relay(#[source] io::Error),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The front-end closed the connection.
    Disconnected,
    /// The front-end broke the protocol; the connection was closed. The text says how.
    ProtocolError(String),
}

/// A vhost-user back-end listening on a Unix socket.
pub struct Server {
    listener: Listener,
    backend: Arc<DeviceBackend>,
    path: PathBuf,
}

impl Server {
    /// Listens on `path` for front-ends of `backend`. A stale socket at `path` is replaced;
    /// any other file there is an error.
    pub fn bind(path: &Path, backend: DeviceBackend) -> Result<Self, ServerError> {
        match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                // A socket nobody listens on any more (a previous run), or one in use: bind
                // fails on neither, and the old listener keeps its open socket either way.
                let _ = std::fs::remove_file(path);
            }
            Ok(_) => {
                return Err(ServerError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(_) => {}
        }
        let listener = Listener::new(path, false).map_err(|source| ServerError::Listen {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            listener,
            backend: Arc::new(backend),
            path: path.to_owned(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a front-end and serves it until it goes away or breaks the protocol; the
    /// device is reset afterwards. Errors are the server's own (it cannot go on), never the
    /// front-end's.
    pub fn serve_connection(&mut self) -> Result<ConnectionEnd, ServerError> {
        self.backend.prepare().map_err(ServerError::ExitEvent)?;
        let memory = AtomicMemory::new(VirtioMemory::new());
        let name = format!("vhost-user {}", self.backend.name());
        let mut daemon = VhostUserDaemon::new(name, self.backend.clone(), memory)
            .map_err(|error| ServerError::Daemon(error.to_string()))?;
        if let Some(fd) = self.backend.device_event_fd() {
            // One worker thread serves every queue (the default `queues_per_thread`).
            for handler in daemon.get_epoll_handlers() {
                handler
                    .register_listener(
                        fd,
                        self.backend.device_event_set(),
                        self.backend.device_event_id(),
                    )
                    .map_err(ServerError::DeviceEvent)?;
            }
        }
        let served = self.accept_front_end().and_then(|front_end| {
            let handler_end = connect_handler(&mut daemon)?;
            let relay = Relay::spawn(front_end, handler_end).map_err(ServerError::Relay)?;
            let handled = daemon.wait();
            // The handler's end is shut down when it stops, which ends the relay.
            Ok((handled, relay.join()))
        });
        for handler in daemon.get_epoll_handlers() {
            handler.send_exit_event();
        }
        // Joins the worker thread: nothing touches the device after this.
        drop(daemon);
        self.backend.disconnected();
        let (handled, relayed) = served?;
        match relayed {
            Err(error) if error.is_protocol_error() => {
                Ok(ConnectionEnd::ProtocolError(error.to_string()))
            }
            Err(error @ RelayError::PartialMessage { .. })
            | Err(error @ RelayError::Socket { .. }) => {
                tracing::debug!("relay ended: {error}");
                classify(handled)
            }
            _ => classify(handled),
        }
    }

    /// Waits for the next front-end.
    fn accept_front_end(&mut self) -> Result<UnixStream, ServerError> {
        loop {
            match self.listener.accept() {
                Ok(Some(stream)) => return Ok(stream),
                // A connection closed before it was accepted: wait for the next.
                Ok(None) => continue,
                Err(error) => return Err(ServerError::Daemon(error.to_string())),
            }
        }
    }

    /// Serves front-ends one after another, forever (until a server error).
    pub fn serve_forever(&mut self) -> Result<(), ServerError> {
        loop {
            tracing::info!(socket = %self.path.display(), "waiting for a front-end");
            match self.serve_connection()? {
                ConnectionEnd::Disconnected => tracing::info!("front-end disconnected"),
                ConnectionEnd::ProtocolError(reason) => {
                    tracing::error!("connection closed: {reason}");
                }
            }
        }
    }
}

/// Starts `daemon`'s request handler on one end of a private connection and returns the
/// other end. `vhost-user-backend` takes its socket only from a listener or a path, so the
/// handler connects to a listener in a fresh directory only this user can enter (removed on
/// return); the accepted peer is checked to be this process.
fn connect_handler(
    daemon: &mut VhostUserDaemon<Arc<DeviceBackend>>,
) -> Result<UnixStream, ServerError> {
    let dir = PrivateDir::create()?;
    let path = dir.0.join("handler.sock");
    let step = |what| move |source| ServerError::HandlerSocket { what, source };
    let listener = UnixListener::bind(&path).map_err(step("bind"))?;
    let path_text = path.to_str().ok_or_else(|| ServerError::HandlerSocket {
        what: "path",
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            "the temporary directory is not UTF-8",
        ),
    })?;
    daemon
        .start_client(path_text)
        .map_err(|error| ServerError::Daemon(error.to_string()))?;
    // The handler connected before start_client returned: its connection is waiting.
    listener.set_nonblocking(true).map_err(step("accept"))?;
    loop {
        let (stream, _) = listener.accept().map_err(step("accept"))?;
        if peer_pid(&stream) == Some(std::process::id()) {
            stream.set_nonblocking(false).map_err(step("accept"))?;
            return Ok(stream);
        }
        tracing::warn!("refused a connection to the private handler socket from another process");
    }
}

/// The process id of the peer of a connected Unix socket (`SO_PEERCRED`).
fn peer_pid(stream: &UnixStream) -> Option<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `credentials` and `len` are valid for writes of a `ucred` and its size, which is
    // what SO_PEERCRED writes; the descriptor is a connected Unix socket we own.
    let status = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &raw mut len,
        )
    };
    (status == 0)
        .then(|| u32::try_from(credentials.pid).ok())
        .flatten()
}

/// A directory under the system temporary directory, mode 0700, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> Result<Self, ServerError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut last = None;
        for _ in 0..16 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("oxvmm-vhost-user-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last = Some(error),
                Err(source) => {
                    return Err(ServerError::HandlerSocket {
                        what: "mkdir",
                        source,
                    });
                }
            }
        }
        Err(ServerError::HandlerSocket {
            what: "mkdir",
            source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sorts how a connection ended into the front-end's doing and the server's failures.
fn classify(result: Result<(), DaemonError>) -> Result<ConnectionEnd, ServerError> {
    match result {
        Ok(()) => Ok(ConnectionEnd::Disconnected),
        Err(DaemonError::HandleRequest(error)) => Ok(match error {
            VhostError::Disconnected | VhostError::PartialMessage | VhostError::SocketBroken(_) => {
                ConnectionEnd::Disconnected
            }
            other => ConnectionEnd::ProtocolError(describe(&other)),
        }),
        Err(DaemonError::CreateBackendListener(VhostError::SocketError(error)))
            if error.kind() == io::ErrorKind::ConnectionAborted =>
        {
            Ok(ConnectionEnd::Disconnected)
        }
        Err(other) => Err(ServerError::Daemon(other.to_string())),
    }
}

/// What a protocol error of the front-end means, in words.
pub fn describe(error: &VhostError) -> String {
    match error {
        VhostError::InvalidMessage => "the front-end sent a malformed message or a request this \
             back-end does not support (an unknown request code, or a size, flag or body that \
             does not match its request)"
            .to_owned(),
        VhostError::InactiveOperation(features) => format!(
            "the front-end sent a request that needs protocol feature {features:?}, which was \
             not negotiated (this back-end offers {:?}, REPLY_ACK and, for devices with a \
             configuration space, CONFIG)",
            crate::backend::PROTOCOL_FEATURES
        ),
        VhostError::InactiveFeature(features) => format!(
            "the front-end sent a request that needs virtio feature {features:?}, which was \
             not negotiated"
        ),
        VhostError::InvalidParam => {
            "the front-end sent a request with an invalid parameter (a queue index, size or \
             address out of range, or features that were not offered)"
                .to_owned()
        }
        VhostError::IncorrectFds => {
            "the front-end attached the wrong number of file descriptors to a request".to_owned()
        }
        VhostError::OversizedMsg => "the front-end sent an oversized message".to_owned(),
        VhostError::ReqHandlerError(error) => format!("the back-end refused a request: {error}"),
        other => format!("vhost-user protocol error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hang_up_is_a_disconnection() {
        let result = Err(DaemonError::HandleRequest(VhostError::Disconnected));

        assert_eq!(classify(result).unwrap(), ConnectionEnd::Disconnected);
    }

    #[test]
    fn an_unknown_request_is_a_protocol_error_saying_so() {
        let result = Err(DaemonError::HandleRequest(VhostError::InvalidMessage));

        let end = classify(result).unwrap();

        assert!(
            matches!(&end, ConnectionEnd::ProtocolError(text) if text.contains("does not support")),
            "{end:?}"
        );
    }

    #[test]
    fn a_file_in_the_way_is_not_replaced() {
        let path = std::env::temp_dir().join(format!("oxvirt-vu-notsock-{}", std::process::id()));
        std::fs::write(&path, b"keep me").unwrap();
        let backend = DeviceBackend::new(
            Box::new(virtio::rng::Rng::new(Box::new(std::io::empty()))),
            "virtio-rng",
        );

        let result = Server::bind(&path, backend);

        assert!(matches!(result, Err(ServerError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        std::fs::remove_file(&path).unwrap();
    }
}
