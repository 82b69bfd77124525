//! The control-API server: accepts connections on a Unix socket, one thread each, and passes
//! each request to the VMM's event loop.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vmm::api::ApiSender;
use vmm_api::http::HttpLimits;
use vmm_api::{ApiResponse, serve_connection};

/// Requests being answered right now, across connections.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
}

/// A running API server. Dropping it removes the socket file.
pub struct ApiServer {
    path: PathBuf,
    in_flight: Arc<InFlight>,
}

/// Refuses to take over a socket another process serves; removes a stale one.
fn claim_socket_path(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "--api-socket {}: another process is serving this socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("--api-socket {}: cannot remove", path.display()))
        }
        Ok(_) => bail!(
            "--api-socket {}: exists and is not a socket",
            path.display()
        ),
    }
}

/// Listens on `path` and serves requests through `sender`.
pub fn start(path: &Path, sender: ApiSender) -> anyhow::Result<ApiServer> {
    claim_socket_path(path)?;
    let listener = UnixListener::bind(path)
        .with_context(|| format!("--api-socket {}: cannot listen", path.display()))?;
    let in_flight = Arc::new(InFlight::default());
    let accept_in_flight = in_flight.clone();
    std::thread::Builder::new()
        .name("api-accept".into())
        .spawn(move || accept_loop(&listener, &sender, &accept_in_flight))
        .context("cannot start the API thread")?;
    Ok(ApiServer {
        path: path.to_path_buf(),
        in_flight,
    })
}

fn accept_loop(listener: &UnixListener, sender: &ApiSender, in_flight: &Arc<InFlight>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("API socket: accept failed: {e}");
                continue;
            }
        };
        let sender = sender.clone();
        let in_flight = in_flight.clone();
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || serve(stream, &sender, &in_flight));
        if let Err(e) = spawned {
            tracing::warn!("API socket: cannot start a connection thread: {e}");
        }
    }
}

/// Marks its connection idle again when the server starts reading the next request, which
/// it does only after the previous response has been written.
struct TrackedReader {
    inner: BufReader<UnixStream>,
    busy: Arc<AtomicBool>,
    in_flight: Arc<InFlight>,
}

impl TrackedReader {
    fn settle(&self) {
        if self.busy.swap(false, Ordering::SeqCst) {
            self.in_flight.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Read for TrackedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.settle();
        self.inner.read(buf)
    }
}

impl BufRead for TrackedReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.settle();
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
    }
}

impl Drop for TrackedReader {
    fn drop(&mut self) {
        self.settle();
    }
}

fn serve(stream: UnixStream, sender: &ApiSender, in_flight: &Arc<InFlight>) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(e) => {
            tracing::warn!("API socket: {e}");
            return;
        }
    };
    let busy = Arc::new(AtomicBool::new(false));
    let mut reader = TrackedReader {
        inner: BufReader::new(stream),
        busy: busy.clone(),
        in_flight: in_flight.clone(),
    };
    let result = serve_connection(&mut reader, &mut writer, &HttpLimits::SERVER, |request| {
        if !busy.swap(true, Ordering::SeqCst) {
            in_flight.count.fetch_add(1, Ordering::SeqCst);
        }
        tracing::debug!("API request: {request:?}");
        sender.call(request).map(ApiResponse::from)
    });
    if let Err(e) = result {
        tracing::debug!("API connection ended: {e}");
    }
}

impl ApiServer {
    /// Waits (up to `timeout`) until every answered request has been written back, so a
    /// `vm.power-off` caller gets its response before the process exits.
    pub fn drain(&self, timeout: Duration) {
        let start = Instant::now();
        while self.in_flight.count.load(Ordering::SeqCst) > 0 && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
