//! Adding a TAP device to a host bridge (`SIOCBRADDIF`), for `<interface type='bridge'>`.
//!
//! This belongs with the other host networking helpers in `net-util` (see DESIGN.md); it lives
//! here until that crate grows bridge support, so `net-util` stays untouched by the daemon.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SIOCBRADDIF` from `<linux/sockios.h>` (not in the libc crate for Linux).
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// Whether `name` is a bridge on this host.
pub fn is_bridge(name: &str) -> bool {
    !name.contains('/')
        && std::path::Path::new("/sys/class/net")
            .join(name)
            .join("bridge")
            .is_dir()
}

/// The interface index of `name`.
fn index_of(name: &str) -> io::Result<i32> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("interface name holds NUL"))?;
    // SAFETY: if_nametoindex reads the NUL-terminated string `c_name` owns.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(index).map_err(|_| io::Error::other(format!("interface index {index}")))
}

/// Adds interface `port` (a TAP device) to `bridge` and brings it up.
pub fn add_to_bridge(bridge: &str, port: &str) -> io::Result<()> {
    if bridge.is_empty() || bridge.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!(
            "bridge name {bridge:?} is not 1-15 bytes"
        )));
    }
    let index =
        index_of(port).map_err(|e| io::Error::new(e.kind(), format!("interface {port}: {e}")))?;
    // SAFETY: ifreq is plain old data; all-zero bytes are a valid value.
    let mut ifreq: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in ifreq.ifr_name.iter_mut().zip(bridge.bytes()) {
        *slot = byte as libc::c_char;
    }
    ifreq.ifr_ifru.ifru_ifindex = index;
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCBRADDIF reads one `struct ifreq` (bridge name and port index), which
    // `ifreq` is, valid for the call.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCBRADDIF, &mut ifreq) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot add {port} to bridge {bridge}: {e}"),
        ));
    }
    net_util::set_link_up(port).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_not_a_bridge() {
        assert!(!is_bridge("lo"));
        assert!(!is_bridge("../lo"));
    }

    #[test]
    fn a_missing_port_is_named_in_the_error() {
        let err = add_to_bridge("nobr0", "nosuchtap0").unwrap_err();

        assert!(err.to_string().contains("nosuchtap0"), "{err}");
    }
}
