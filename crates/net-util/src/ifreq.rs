//! Interface settings through `struct ifreq` ioctls on a datagram socket.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why an interface setting failed.
#[derive(Debug, thiserror::Error)]
pub enum IfError {
    /// The name does not fit `IFNAMSIZ` (15 bytes) or holds a NUL.
    #[error("interface name {name:?} is invalid: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// An ioctl or socket call failed.
    #[error("interface {name}: {what} failed: {source}")]
    Io {
        /// The interface.
        name: String,
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// An `ifreq` naming `name`, checked.
pub(crate) fn ifreq_for(name: &str) -> Result<libc::ifreq, IfError> {
    let bad = |reason| IfError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(bad("longer than 15 bytes"));
    }
    if name
        .bytes()
        .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(bad("contains NUL, '/' or white space"));
    }
    // SAFETY: ifreq is plain old data (a name and a union of integers, addresses and a
    // pointer); all-zero bytes are a valid value of every field.
    let mut ifreq: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in ifreq.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    Ok(ifreq)
}

/// The name in an `ifreq` the kernel filled.
pub(crate) fn name_of(ifreq: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifreq
        .ifr_name
        .iter()
        .map(|&c| c as u8)
        .chain(std::iter::once(0))
        .collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn control_socket(name: &str) -> Result<OwnedFd, IfError> {
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IfError::Io {
            name: name.to_string(),
            what: "socket(AF_INET)",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs ioctl `request` with `ifreq` on a control socket.
fn ifreq_ioctl(
    name: &str,
    request: libc::Ioctl,
    ifreq: &mut libc::ifreq,
    what: &'static str,
) -> Result<(), IfError> {
    let socket = control_socket(name)?;
    // SAFETY: the SIOC*IF* requests used here read and write one `struct ifreq`, which
    // `ifreq` is, valid and exclusively borrowed for the call.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), request, ifreq as *mut libc::ifreq) };
    if ret < 0 {
        return Err(IfError::Io {
            name: name.to_string(),
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Brings interface `name` up (IFF_UP), keeping its other flags.
pub fn set_link_up(name: &str) -> Result<(), IfError> {
    let mut ifreq = ifreq_for(name)?;
    ifreq_ioctl(
        name,
        libc::SIOCGIFFLAGS as libc::Ioctl,
        &mut ifreq,
        "SIOCGIFFLAGS",
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifreq.ifr_ifru.ifru_flags };
    ifreq.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ifreq_ioctl(
        name,
        libc::SIOCSIFFLAGS as libc::Ioctl,
        &mut ifreq,
        "SIOCSIFFLAGS",
    )
}

/// Sets the (host side) Ethernet address of interface `name`.
pub fn set_mac(name: &str, mac: [u8; 6]) -> Result<(), IfError> {
    let mut ifreq = ifreq_for(name)?;
    // SAFETY: sockaddr is plain old data; all-zero bytes are valid.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::ARPHRD_ETHER;
    for (slot, byte) in addr.sa_data.iter_mut().zip(mac) {
        *slot = byte as libc::c_char;
    }
    ifreq.ifr_ifru.ifru_hwaddr = addr;
    ifreq_ioctl(
        name,
        libc::SIOCSIFHWADDR as libc::Ioctl,
        &mut ifreq,
        "SIOCSIFHWADDR",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_system_call() {
        assert!(ifreq_for("tap0").is_ok());
        assert!(matches!(ifreq_for(""), Err(IfError::BadName { .. })));
        assert!(matches!(
            ifreq_for("a-very-long-name0"),
            Err(IfError::BadName { .. })
        ));
        assert!(matches!(ifreq_for("a/b"), Err(IfError::BadName { .. })));
        assert_eq!(name_of(&ifreq_for("tap7").unwrap()), "tap7");
    }

    #[test]
    fn a_missing_interface_is_an_error_naming_it() {
        let err = set_link_up("oxnoexist0").unwrap_err();
        assert!(err.to_string().contains("oxnoexist0"), "{err}");
    }
}
