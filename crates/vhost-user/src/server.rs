//! The listening socket and the connection loop: one front-end at a time, each connection
//! served by a fresh `vhost-user-backend` daemon (its vrings and worker thread, which also
//! watches the device's own descriptor if it has one), the device reset between connections
//! so that a front-end that reconnects (QEMU with `reconnect=N`, or after a restart) finds it
//! as new (virtio-vsock: every connection closed).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vhost::vhost_user::{Error as VhostError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use virtio::VirtioMemory;

use crate::backend::{AtomicMemory, DeviceBackend};

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
        let started = daemon.start(&mut self.listener);
        let result = match started {
            Ok(()) => daemon.wait(),
            Err(error) => Err(error),
        };
        for handler in daemon.get_epoll_handlers() {
            handler.send_exit_event();
        }
        // Joins the worker thread: nothing touches the device after this.
        drop(daemon);
        self.backend.disconnected();
        classify(result)
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
