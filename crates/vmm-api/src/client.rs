//! A small blocking client for oxvmm's control API, used by the daemon and the tests.
//!
//! Each call opens a connection to the Unix socket, sends one request with
//! `Connection: close`, reads the answer and closes: no connection state survives a failed
//! call, and a VMM that restarts is picked up by the next call.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::http::{HttpError, HttpLimits, read_response, write_request_with_headers};
use crate::routes::ApiRequest;
use crate::types::{BalloonRequest, Counters, ErrorBody, PingResponse, SnapshotRequest, VmInfo};

/// How much of an unexpected answer an error message quotes.
const SNIPPET_LEN: usize = 200;
/// Pause between connection attempts in [`Client::wait_for_socket`].
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts connections on the socket (no such file, nobody listening, no access).
    #[error("cannot connect to the API socket {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// [`Client::wait_for_socket`] gave up.
    #[error("the API socket {path} did not accept connections within {waited:?}: {source}")]
    SocketWait {
        /// The socket.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
        /// The last connection error.
        source: std::io::Error,
    },
    /// The request could not be sent or the answer not read in time or at all.
    #[error("{method} {target} on {path}: {source}")]
    Transport {
        /// The request's method.
        method: String,
        /// The request's target.
        target: String,
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: HttpError,
    },
    /// The VMM did not answer within the timeout.
    #[error("{method} {target} on {path}: no answer within {timeout:?}")]
    Timeout {
        /// The request's method.
        method: String,
        /// The request's target.
        target: String,
        /// The socket.
        path: PathBuf,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The request could not be encoded (a snapshot destination that is not UTF-8).
    #[error("cannot encode the request for {target}: {source}")]
    Encode {
        /// The request's target.
        target: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The VMM refused or failed the request; `message` is its `{"error": ...}`.
    #[error("oxvmm answered {status}: {message}")]
    Api {
        /// HTTP status (400, 404, 405, 409, 500...).
        status: u16,
        /// The VMM's message.
        message: String,
    },
    /// A success answer whose body is not what the route promises.
    #[error("unexpected answer to {target} (status {status}): {problem}")]
    BadResponse {
        /// The request's target.
        target: String,
        /// The status received.
        status: u16,
        /// What is wrong with it.
        problem: String,
    },
}

impl ClientError {
    /// The HTTP status of a refused request, if the VMM answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::BadResponse { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// A client of one VMM's API socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket_path: PathBuf,
    timeout: Option<Duration>,
}

impl Client {
    /// The default read/write timeout of a call.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A client for the socket at `socket_path`; nothing is opened until a call.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Client {
            socket_path: socket_path.into(),
            timeout: Some(Client::DEFAULT_TIMEOUT),
        }
    }

    /// Sets how long a call waits for each read and write; `None` (or zero) waits forever.
    ///
    /// Connecting to a Unix socket does not wait for the server to accept: it succeeds as soon
    /// as the kernel queues the connection (it only blocks when the listen backlog is full), so
    /// a hung VMM shows up as a read that times out.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// The socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Retries connecting to `socket_path` until something accepts connections there or
    /// `timeout` passes; for callers that just started the VMM.
    pub fn wait_for_socket(
        socket_path: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let path = socket_path.into();
        let start = Instant::now();
        loop {
            let error = match UnixStream::connect(&path) {
                Ok(_) => return Ok(Client::new(path)),
                Err(error) => error,
            };
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(ClientError::SocketWait {
                    path,
                    waited,
                    source: error,
                });
            }
            thread::sleep(RETRY_INTERVAL.min(timeout - waited));
        }
    }

    /// Sends one request and returns the status and body of the answer, whatever the status.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let stream =
            UnixStream::connect(&self.socket_path).map_err(|source| ClientError::Connect {
                path: self.socket_path.clone(),
                source,
            })?;
        let transport = |source: HttpError| self.transport_error(method, target, source);
        stream
            .set_read_timeout(self.timeout)
            .and_then(|()| stream.set_write_timeout(self.timeout))
            .map_err(|e| transport(HttpError::Io(e)))?;
        let mut writer = &stream;
        write_request_with_headers(
            &mut writer,
            method,
            target,
            &[("Connection", "close")],
            body,
        )
        .map_err(|e| transport(HttpError::Io(e)))?;
        let response =
            read_response(&mut BufReader::new(&stream), &HttpLimits::CLIENT).map_err(transport)?;
        Ok((response.status, response.body))
    }

    fn transport_error(&self, method: &str, target: &str, source: HttpError) -> ClientError {
        match self.timeout {
            Some(timeout) if source.is_timeout() => ClientError::Timeout {
                method: method.to_string(),
                target: target.to_string(),
                path: self.socket_path.clone(),
                timeout,
            },
            _ => ClientError::Transport {
                method: method.to_string(),
                target: target.to_string(),
                path: self.socket_path.clone(),
                source,
            },
        }
    }

    /// Sends a typed request; returns the body of a 2xx answer, or the VMM's error.
    pub fn send(&self, request: &ApiRequest) -> Result<Vec<u8>, ClientError> {
        let route = request.route();
        let body = request.body().map_err(|source| ClientError::Encode {
            target: route.path.to_string(),
            source,
        })?;
        let (status, body) = self.request(route.method, route.path, body.as_deref())?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(api_error(status, &body))
        }
    }

    fn send_for_json<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<T, ClientError> {
        let body = self.send(request)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            target: request.route().path.to_string(),
            status: 200,
            problem: format!("{e} in {}", snippet(&body)),
        })
    }

    fn send_for_nothing(&self, request: &ApiRequest) -> Result<(), ClientError> {
        self.send(request).map(|_| ())
    }

    /// `GET /api/v1/vmm.ping`
    pub fn ping(&self) -> Result<PingResponse, ClientError> {
        self.send_for_json(&ApiRequest::Ping)
    }

    /// `GET /api/v1/vm.info`
    pub fn info(&self) -> Result<VmInfo, ClientError> {
        self.send_for_json(&ApiRequest::Info)
    }

    /// `PUT /api/v1/vm.pause`
    pub fn pause(&self) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::Pause)
    }

    /// `PUT /api/v1/vm.resume`
    pub fn resume(&self) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::Resume)
    }

    /// `PUT /api/v1/vm.shutdown`: presses the ACPI power button; the guest decides.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::Shutdown)
    }

    /// `PUT /api/v1/vm.reboot`
    pub fn reboot(&self) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::Reboot)
    }

    /// `PUT /api/v1/vm.power-off`: stops the VM without asking the guest.
    pub fn power_off(&self) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::PowerOff)
    }

    /// `GET /api/v1/vm.counters`
    pub fn counters(&self) -> Result<Counters, ClientError> {
        self.send_for_json(&ApiRequest::Counters)
    }

    /// `PUT /api/v1/vm.balloon`
    pub fn balloon(&self, target_mib: u64) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::Balloon(BalloonRequest { target_mib }))
    }

    /// `PUT /api/v1/vm.snapshot`
    pub fn snapshot(&self, request: &SnapshotRequest) -> Result<(), ClientError> {
        self.send_for_nothing(&ApiRequest::Snapshot(request.clone()))
    }
}

/// The error of a non-2xx answer: the VMM's `{"error": ...}`, or the body itself if it is not.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => error,
        Err(_) if body.is_empty() => crate::http::reason_phrase(status).to_string(),
        Err(_) => snippet(body),
    };
    ClientError::Api { status, message }
}

fn snippet(body: &[u8]) -> String {
    let shown = &body[..body.len().min(SNIPPET_LEN)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if body.len() > SNIPPET_LEN {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vmm-api-{}-{name}.sock", std::process::id()))
    }

    /// Serves one connection with a canned raw answer, after reading the request head.
    fn canned_server(name: &str, answer: &'static [u8]) -> (PathBuf, thread::JoinHandle<()>) {
        let path = socket_path(name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            (&stream).write_all(answer).unwrap();
        });
        (path, handle)
    }

    #[test]
    fn connect_error_names_the_socket() {
        let path = socket_path("absent");

        let err = Client::new(&path).ping().unwrap_err();

        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }

    #[test]
    fn error_answers_carry_status_and_message() {
        let answer =
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 26\r\n\r\n{\"error\":\"already paused\"}";
        let (path, server) = canned_server("conflict", answer);

        let err = Client::new(&path).pause().unwrap_err();

        server.join().unwrap();
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.to_string(), "oxvmm answered 409: already paused");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn non_json_error_bodies_are_quoted() {
        let answer = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops";
        let (path, server) = canned_server("plain", answer);

        let err = Client::new(&path).resume().unwrap_err();

        server.join().unwrap();
        assert!(matches!(&err, ClientError::Api { status: 500, message } if message == "oops"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn wrong_shaped_success_is_a_bad_response() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        let (path, server) = canned_server("shape", answer);

        let err = Client::new(&path).info().unwrap_err();

        server.join().unwrap();
        assert!(matches!(err, ClientError::BadResponse { .. }), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_hung_server_times_out() {
        let path = socket_path("hung");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Read until the client gives up and closes; never answer.
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        });
        let client = Client::new(&path).with_timeout(Some(Duration::from_millis(100)));

        let started = Instant::now();
        let err = client.ping().unwrap_err();

        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        server.join().unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn wait_for_socket_gives_up_after_the_timeout() {
        let path = socket_path("never");

        let started = Instant::now();
        let err = Client::wait_for_socket(&path, Duration::from_millis(50)).unwrap_err();

        assert!(matches!(err, ClientError::SocketWait { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn wait_for_socket_returns_once_the_server_is_up() {
        let path = socket_path("late");
        let _ = std::fs::remove_file(&path);
        let bind_path = path.clone();
        let server = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            UnixListener::bind(bind_path).unwrap()
        });

        let client = Client::wait_for_socket(&path, Duration::from_secs(10)).unwrap();

        assert_eq!(client.socket_path(), path);
        drop(server.join().unwrap());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn zero_timeout_means_none() {
        let client = Client::new("/x").with_timeout(Some(Duration::ZERO));

        assert_eq!(client.timeout, None);
    }
}
