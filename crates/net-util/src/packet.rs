//! A raw `AF_PACKET` socket bound to one interface: the other end of a TAP as the host's
//! network stack sees it. Frames the guest sends through its TAP arrive here; frames sent
//! here leave through the interface, which for a TAP means to the TAP's reader (the guest).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::ifreq::{IfError, ifreq_for};

/// A packet socket bound to an interface, seeing every Ethernet frame.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn io_error(name: &str, what: &'static str) -> IfError {
    IfError::Io {
        name: name.to_string(),
        what,
        source: std::io::Error::last_os_error(),
    }
}

impl PacketSocket {
    /// Opens a packet socket on interface `name` (root only).
    pub fn bind(name: &str) -> Result<PacketSocket, IfError> {
        let c_name = ifreq_for(name).map(|r| r.ifr_name)?;
        // SAFETY: c_name is a NUL-terminated array (ifreq_for checked the length).
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(io_error(name, "if_nametoindex"));
        }
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket() takes no pointers; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io_error(name, "socket(AF_PACKET)"));
        }
        // SAFETY: raw is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero bytes are valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll and the length is its size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io_error(name, "bind(AF_PACKET)"));
        }
        Ok(PacketSocket {
            fd,
            ifindex: ifindex as i32,
        })
    }

    /// Waits up to `timeout` for a frame arriving on the interface (frames the host itself
    /// sends are skipped); returns its length, or `None` at the timeout.
    pub fn recv_incoming(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> std::io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: sockaddr_ll is plain old data; all-zero bytes are valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and from are valid for writes of the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n >= 0 {
                if from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                return Ok(Some(n as usize));
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(error);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait_readable(left)?;
        }
    }

    fn wait_readable(&self, timeout: Duration) -> std::io::Result<()> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: poll reads and writes one pollfd, which `poll` is.
        let ret = unsafe { libc::poll(&mut poll, 1, ms) };
        if ret < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Sends one Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero bytes are valid.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        // SAFETY: frame is valid for reads of its length; `to` is a valid sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &to as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
