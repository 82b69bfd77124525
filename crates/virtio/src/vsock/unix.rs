//! The host side Firecracker uses for virtio-vsock, as a [`VsockBackend`]: host programs
//! connect to a listening Unix socket `PATH` and write `CONNECT <port>\n`; the guest's
//! connections to host port `P` go to the Unix socket `PATH_P`.
//!
//! oxvmm hands it to its in-process device and `oxvmm-vhost-user vsock` to the same device
//! served over vhost-user. A socket file left behind by a process that died (nobody accepts
//! on it) is replaced; a live one is refused, as is any other kind of file; the file is
//! removed when the backend is dropped, if it is still ours.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::VsockBackend;

/// Why the host side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VsockHostError {
    /// Another process accepts connections on the socket.
    #[error("{path} is in use by another process")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path names something that is not a socket.
    #[error("{path} exists and is not a Unix socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding, listening or removing a stale socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// Listens on `socket`, connects to `socket_<port>`.
pub struct UnixSocketBackend {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode, so that only our own file is removed at the end.
    inode: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VsockHostError + '_ {
    move |source| VsockHostError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a socket file nobody accepts on; refuses a live one or another kind of file.
fn remove_stale_socket(path: &Path) -> Result<(), VsockHostError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    if !metadata.file_type().is_socket() {
        return Err(VsockHostError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(VsockHostError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!("removing the stale vsock socket {}", path.display());
            std::fs::remove_file(path).map_err(io_error(path))
        }
        Err(e) => Err(io_error(path)(e)),
    }
}

impl UnixSocketBackend {
    /// Listens on `path` (replacing a stale socket file).
    pub fn bind(path: &Path) -> Result<Self, VsockHostError> {
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path).map_err(io_error(path))?;
        listener.set_nonblocking(true).map_err(io_error(path))?;
        let inode = std::fs::symlink_metadata(path)
            .map_err(io_error(path))?
            .ino();
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            inode,
        })
    }

    /// Where a guest connection to host port `port` goes.
    pub fn port_path(&self, port: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!("_{port}"));
        PathBuf::from(name)
    }
}

impl Drop for UnixSocketBackend {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Connects a non-blocking stream socket to `path` without waiting: a listener whose backlog
/// is full refuses (EAGAIN) instead of stalling the VMM.
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(ErrorKind::InvalidInput.into());
    }
    for (slot, &byte) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call, and `len` covers its
    // family and the NUL-terminated path inside it.
    let result = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

impl VsockBackend for UnixSocketBackend {
    fn listener_fd(&self) -> Option<RawFd> {
        Some(self.listener.as_raw_fd())
    }

    fn accept(&mut self) -> std::io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => Ok(Some(stream)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn connect(&mut self, port: u32) -> std::io::Result<UnixStream> {
        connect_nonblocking(&self.port_path(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("oxvirt-vsock-unix-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = temp_dir("stale");
        let path = dir.join("v.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dead listener leaves its file");

        let backend = UnixSocketBackend::bind(&path).unwrap();
        let second = UnixSocketBackend::bind(&path);

        assert!(matches!(second, Err(VsockHostError::InUse { .. })));
        drop(backend);
        assert!(!path.exists(), "the backend removes its own socket");
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            UnixSocketBackend::bind(&path),
            Err(VsockHostError::NotASocket { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn host_programs_are_accepted_and_ports_reached_at_their_paths() {
        let dir = temp_dir("paths");
        let path = dir.join("v.sock");
        let mut backend = UnixSocketBackend::bind(&path).unwrap();
        let service = UnixListener::bind(dir.join("v.sock_52")).unwrap();

        let none = backend.accept().unwrap();
        let mut program = UnixStream::connect(&path).unwrap();
        let accepted = backend.accept().unwrap();
        let mut to_service = backend.connect(52).unwrap();
        let refused = backend.connect(53);

        assert!(none.is_none());
        program.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        accepted.unwrap().read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        let (mut served, _) = service.accept().unwrap();
        to_service.set_nonblocking(false).unwrap();
        to_service.write_all(b"y").unwrap();
        served.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"y");
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::NotFound);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
