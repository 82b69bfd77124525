//! Character backends of the byte-stream devices (COM1, virtio-console): a Unix socket oxvmm
//! listens on, for a management daemon's `virsh console` or a person with `socat`.
//!
//! - One client at a time. A new connection replaces the current one (which is closed): a
//!   daemon that restarts and reconnects gets the console back even if oxvmm has not noticed
//!   yet that its old connection is gone.
//! - Guest output goes to the client without ever blocking the guest: what the client does not
//!   take at once (its socket buffer is full) and what the guest writes while no client is
//!   connected is kept in a backlog of at most [`BACKLOG_BYTES`] (the oldest bytes are dropped
//!   beyond that) and sent, in order, as soon as the client takes it or the next client
//!   connects. A byte is delivered at most once: a reconnecting client does not see output an
//!   earlier client already received.
//! - Client input goes to the device through an [`InputSink`] with back-pressure: bytes the
//!   device cannot take yet are held, and the socket is not read again until the device took
//!   them (offered again every [`INPUT_RETRY`]), as for standard input.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::timerfd::TimerFd;

/// Most guest output kept for a client that is absent or slow.
pub const BACKLOG_BYTES: usize = 64 * 1024;
/// How often input the device has not taken yet is offered again.
pub const INPUT_RETRY: Duration = Duration::from_millis(5);
/// How often a backlog is offered again to a connected client that was not taking it.
const OUTPUT_RETRY: Duration = Duration::from_millis(5);
/// Bytes read from the client at once.
const READ_CHUNK: usize = 256;

/// Why a socket backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChardevError {
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket {
        /// The path given.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where client input goes: the device takes what it can now.
pub trait InputSink: Send {
    /// Offers `bytes`; returns how many of the first bytes the device took.
    fn offer(&self, bytes: &[u8]) -> usize;
}

/// The output side, shared between the device's writer and the event loop.
struct Output {
    /// The connected client's write side (non-blocking).
    client: Option<UnixStream>,
    backlog: VecDeque<u8>,
    /// Armed while a connected client has a backlog to take.
    retry: TimerFd,
    /// Bytes dropped from the front of a full backlog.
    dropped: u64,
}

impl Output {
    fn keep(&mut self, bytes: &[u8]) {
        self.backlog.extend(bytes);
        let excess = self.backlog.len().saturating_sub(BACKLOG_BYTES);
        if excess > 0 {
            self.backlog.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// Writes as much of `bytes` as the client takes now; `None` when it is gone.
    fn send(client: &mut UnixStream, bytes: &[u8]) -> Option<usize> {
        loop {
            match client.write(bytes) {
                Ok(n) => return Some(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(0),
                Err(e) => {
                    tracing::debug!("console client gone while writing: {e}");
                    return None;
                }
            }
        }
    }

    /// Sends the backlog to the client as far as it takes it; arms the retry timer for the rest.
    fn flush(&mut self) {
        while let Some(client) = self.client.as_mut() {
            let (front, _) = self.backlog.as_slices();
            if front.is_empty() {
                break;
            }
            match Self::send(client, front) {
                Some(0) => break,
                Some(n) => drop(self.backlog.drain(..n)),
                None => self.client = None,
            }
        }
        self.arm_retry();
    }

    fn arm_retry(&mut self) {
        let result = if self.client.is_some() && !self.backlog.is_empty() {
            self.retry.reset(OUTPUT_RETRY, None)
        } else {
            self.retry.clear()
        };
        if let Err(e) = result {
            tracing::warn!("cannot arm the console output timer: {e}");
        }
    }

    fn write_all(&mut self, bytes: &[u8]) {
        if !self.backlog.is_empty() {
            self.flush();
        }
        let sent = match self.client.as_mut() {
            Some(client) if self.backlog.is_empty() => match Self::send(client, bytes) {
                Some(n) => n,
                None => {
                    self.client = None;
                    0
                }
            },
            _ => 0,
        };
        if sent < bytes.len() {
            self.keep(&bytes[sent..]);
            self.arm_retry();
        }
    }
}

fn lock(output: &Mutex<Output>) -> MutexGuard<'_, Output> {
    output.lock().unwrap_or_else(|e| e.into_inner())
}

/// The device's output end: never blocks, never fails (see the module documentation).
pub struct ChardevWriter {
    output: Arc<Mutex<Output>>,
}

impl Write for ChardevWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.output).write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Unix socket backend: the event-loop subscriber that accepts clients, reads their input
/// and retries output. Removes its socket file when dropped.
pub struct SocketChardev {
    path: PathBuf,
    listener: UnixListener,
    output: Arc<Mutex<Output>>,
    output_retry_fd: RawFd,
    /// The connected client's read side.
    reader: Option<UnixStream>,
    watching_reader: bool,
    sink: Option<Box<dyn InputSink>>,
    pending: VecDeque<u8>,
    input_retry: TimerFd,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ChardevError {
    let path = path.to_path_buf();
    move |source| ChardevError::Io { what, path, source }
}

/// Removes a socket file left by an earlier run; refuses to remove anything else.
fn remove_stale_socket(path: &Path) -> Result<(), ChardevError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io_error("cannot remove the old socket", path))
        }
        Ok(_) => Err(ChardevError::NotASocket {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("cannot inspect", path)(e)),
    }
}

impl SocketChardev {
    /// Listens on `path` (a stale socket there is replaced); returns the backend and the writer
    /// to give the device.
    pub fn listen(path: &Path) -> Result<(SocketChardev, ChardevWriter), ChardevError> {
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path).map_err(io_error("cannot listen on", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_error("cannot configure", path))?;
        let timer = || {
            TimerFd::new()
                .map_err(|e| io_error("cannot create a timer for", path)(std::io::Error::from(e)))
        };
        let retry = timer()?;
        let output_retry_fd = retry.as_raw_fd();
        let output = Arc::new(Mutex::new(Output {
            client: None,
            backlog: VecDeque::new(),
            retry,
            dropped: 0,
        }));
        let chardev = SocketChardev {
            path: path.to_path_buf(),
            listener,
            output: output.clone(),
            output_retry_fd,
            reader: None,
            watching_reader: false,
            sink: None,
            pending: VecDeque::new(),
            input_retry: timer()?,
        };
        Ok((chardev, ChardevWriter { output }))
    }

    /// Where client input goes (without one it is read and discarded).
    pub fn set_input(&mut self, sink: Box<dyn InputSink>) {
        self.sink = Some(sink);
    }

    fn accept_clients(&mut self, ops: &mut EventOps) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.connect(stream, ops),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("{}: accept failed: {e}", self.path.display());
                    return;
                }
            }
        }
    }

    /// Makes `stream` the client, replacing the current one, and sends it the backlog.
    fn connect(&mut self, stream: UnixStream, ops: &mut EventOps) {
        self.disconnect(ops);
        let writer = stream
            .set_nonblocking(true)
            .and_then(|()| stream.try_clone());
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                tracing::warn!("{}: cannot set up a client: {e}", self.path.display());
                return;
            }
        };
        tracing::debug!("{}: client connected", self.path.display());
        self.reader = Some(stream);
        let mut output = lock(&self.output);
        if output.dropped > 0 {
            tracing::info!(
                "{}: {} bytes of output were dropped while no client took them",
                self.path.display(),
                output.dropped
            );
            output.dropped = 0;
        }
        output.client = Some(writer);
        output.flush();
    }

    /// Forgets the client entirely.
    fn disconnect(&mut self, ops: &mut EventOps) {
        self.stop_reading(ops);
        let mut output = lock(&self.output);
        if output.client.take().is_some() {
            tracing::debug!("{}: client disconnected", self.path.display());
        }
        output.arm_retry();
    }

    /// Stops reading the client (its input ended); output goes on until a write fails.
    fn stop_reading(&mut self, ops: &mut EventOps) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        if self.watching_reader {
            if let Err(e) = ops.remove(Events::empty(&reader)) {
                tracing::debug!("cannot stop watching a console client: {e:?}");
            }
            self.watching_reader = false;
        }
    }

    /// Reads one chunk of client input. At its end the client may still be reading (it shut
    /// down its write side only): output goes on until writing to it fails.
    fn read_client(&mut self, ops: &mut EventOps) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let mut buf = [0u8; READ_CHUNK];
        match reader.read(&mut buf) {
            Ok(0) => self.stop_reading(ops),
            Ok(n) if self.sink.is_some() => self.pending.extend(&buf[..n]),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                tracing::debug!("console client read failed: {e}");
                self.disconnect(ops);
            }
        }
    }

    fn offer_pending(&mut self) {
        let Some(sink) = &self.sink else {
            self.pending.clear();
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        let taken = sink.offer(self.pending.make_contiguous());
        self.pending.drain(..taken.min(self.pending.len()));
    }

    /// Reads the client only while nothing is pending; retries pending input on a timer.
    fn update_interest(&mut self, ops: &mut EventOps) {
        if let Some(reader) = &self.reader {
            let want = self.pending.is_empty();
            if want != self.watching_reader {
                let result = if want {
                    ops.add(Events::new(reader, EventSet::IN))
                } else {
                    ops.remove(Events::empty(reader))
                };
                match result {
                    Ok(()) => self.watching_reader = want,
                    Err(e) => tracing::warn!("cannot change the watch on a console client: {e:?}"),
                }
            }
        }
        let armed = if self.pending.is_empty() {
            self.input_retry.clear()
        } else {
            self.input_retry.reset(INPUT_RETRY, Some(INPUT_RETRY))
        };
        if let Err(e) = armed {
            tracing::warn!("cannot arm the console input timer: {e}");
        }
    }
}

impl MutEventSubscriber for SocketChardev {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept_clients(ops);
        } else if fd == self.input_retry.as_raw_fd() {
            let _ = self.input_retry.wait();
        } else if fd == self.output_retry_fd {
            let mut output = lock(&self.output);
            let _ = output.retry.wait();
            output.flush();
        } else if self.reader.as_ref().is_some_and(|r| r.as_raw_fd() == fd) {
            self.read_client(ops);
        }
        self.offer_pending();
        self.update_interest(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fds = [
            self.listener.as_raw_fd(),
            self.input_retry.as_raw_fd(),
            self.output_retry_fd,
        ];
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                tracing::error!("cannot watch {}: {e:?}", self.path.display());
            }
        }
    }
}

impl Drop for SocketChardev {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_manager::{EventManager, SubscriberOps};

    type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

    /// Takes at most `room` bytes per offer and records them.
    struct Fifo {
        room: usize,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl InputSink for Fifo {
        fn offer(&self, bytes: &[u8]) -> usize {
            let n = bytes.len().min(self.room);
            self.got.lock().unwrap().extend(&bytes[..n]);
            n
        }
    }

    struct Setup {
        dir: PathBuf,
        path: PathBuf,
        manager: EventManager<Subscriber>,
        writer: ChardevWriter,
        got: Arc<Mutex<Vec<u8>>>,
    }

    fn setup(name: &str, room: usize) -> Setup {
        let dir = std::env::temp_dir().join(format!("chardev-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.sock");
        let (mut chardev, writer) = SocketChardev::listen(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        chardev.set_input(Box::new(Fifo {
            room,
            got: got.clone(),
        }));
        let mut manager = EventManager::<Subscriber>::new().unwrap();
        manager.add_subscriber(Arc::new(Mutex::new(chardev)));
        Setup {
            dir,
            path,
            manager,
            writer,
            got,
        }
    }

    impl Setup {
        fn spin(&mut self, rounds: usize) {
            for _ in 0..rounds {
                self.manager.run_with_timeout(10).unwrap();
            }
        }

        fn connect(&mut self) -> UnixStream {
            let client = UnixStream::connect(&self.path).unwrap();
            client
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            self.spin(3);
            client
        }
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn read_available(client: &mut UnixStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend(&buf[..n]);
            client
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
        }
        all
    }

    #[test]
    fn output_before_a_client_is_replayed_once_then_goes_live() {
        let mut s = setup("replay", 64);
        s.writer.write_all(b"early ").unwrap();

        let mut first = s.connect();
        s.writer.write_all(b"live").unwrap();
        let first_got = read_available(&mut first);
        drop(first);
        s.spin(3);
        s.writer.write_all(b" later").unwrap();
        let mut second = s.connect();
        let second_got = read_available(&mut second);

        assert_eq!(first_got, b"early live");
        assert_eq!(second_got, b" later", "no byte is delivered twice");
    }

    #[test]
    fn the_backlog_keeps_the_newest_bytes() {
        let mut s = setup("backlog", 64);
        let old = vec![b'o'; BACKLOG_BYTES];
        s.writer.write_all(&old).unwrap();
        s.writer.write_all(b"newest").unwrap();

        let mut client = s.connect();
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(read_available(&mut client));
            if got.len() >= BACKLOG_BYTES {
                break;
            }
            s.spin(1);
        }

        assert_eq!(got.len(), BACKLOG_BYTES);
        assert!(got.ends_with(b"newest"));
    }

    #[test]
    fn input_is_held_until_the_device_takes_it() {
        // The device takes 4 bytes per offer (every INPUT_RETRY): all 300 arrive, in order.
        let mut s = setup("input", 4);
        let mut client = s.connect();
        let input: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        client.write_all(&input).unwrap();
        drop(client);

        for _ in 0..400 {
            s.spin(1);
            if s.got.lock().unwrap().len() == input.len() {
                break;
            }
        }

        assert_eq!(*s.got.lock().unwrap(), input);
    }

    #[test]
    fn a_new_client_replaces_the_old_one() {
        let mut s = setup("replace", 64);
        let mut old = s.connect();
        let mut new = s.connect();

        s.writer.write_all(b"to the new one").unwrap();
        new.write_all(b"from new").unwrap();
        s.spin(3);

        assert_eq!(read_available(&mut new), b"to the new one");
        assert_eq!(read_available(&mut old), b"", "the old client was closed");
        assert_eq!(*s.got.lock().unwrap(), b"from new");
    }

    #[test]
    fn a_stale_socket_is_replaced_but_a_file_is_not() {
        let dir = std::env::temp_dir().join(format!("chardev-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s.sock");
        drop(UnixListener::bind(&socket).unwrap());
        let file = dir.join("f");
        std::fs::write(&file, b"keep").unwrap();

        let replaced = SocketChardev::listen(&socket);
        let refused = SocketChardev::listen(&file);

        assert!(replaced.is_ok());
        assert!(matches!(refused, Err(ChardevError::NotASocket { .. })));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        drop(replaced);
        assert!(!socket.exists(), "removed when dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
