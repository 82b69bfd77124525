//! TAP devices with a virtio-net header (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`): every frame
//! read or written carries a header of [`VNET_HDR_LEN`] bytes in front, the layout of
//! virtio 1.x's `virtio_net_hdr_v1`, so a virtio-net device passes the guest's header through.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::ifreq::{IfError, ifreq_for, name_of};

/// Bytes of the header in front of every frame: virtio 1.x's `virtio_net_hdr_v1` (flags,
/// gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
pub const VNET_HDR_LEN: usize = 12;

const TUN_PATH: &str = "/dev/net/tun";

/// TAP offloads (`TUNSETOFFLOAD`): which partial-checksum and segmentation-offload frames
/// the TAP may hand to its reader (the guest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames with a partial checksum (`TUN_F_CSUM`).
    pub csum: bool,
    /// TCPv4 segmentation offload (`TUN_F_TSO4`, needs `csum`).
    pub tso4: bool,
    /// TCPv6 segmentation offload (`TUN_F_TSO6`, needs `csum`).
    pub tso6: bool,
}

impl Offloads {
    /// Everything this crate knows.
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
    };

    fn flags(self) -> libc::c_uint {
        let mut flags = 0;
        if self.csum {
            flags |= libc::TUN_F_CSUM;
            if self.tso4 {
                flags |= libc::TUN_F_TSO4;
            }
            if self.tso6 {
                flags |= libc::TUN_F_TSO6;
            }
        }
        flags
    }
}

/// Why a TAP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is unusable.
    #[error(transparent)]
    Name(#[from] IfError),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open {TUN_PATH}: {0}")]
    OpenTun(#[source] std::io::Error),
    /// An ioctl on the TAP failed.
    #[error("TAP {name}: {what} failed: {source}")]
    Ioctl {
        /// The TAP's name (or the inherited descriptor).
        name: String,
        /// The ioctl.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An inherited descriptor is not a TAP with a virtio-net header.
    #[error("file descriptor {fd} is not usable: {reason}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        reason: String,
    },
}

/// An open TAP queue, non-blocking, with a [`VNET_HDR_LEN`]-byte virtio-net header.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn open_tun() -> Result<File, TapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TapError::OpenTun)
}

/// `ioctl(fd, request, arg)` for the TUN requests that take an integer or a pointer.
///
/// # Safety
/// `arg` must be what `request` expects: an integer value, or a pointer to a live object of
/// the type the request reads or writes.
unsafe fn tun_ioctl(fd: RawFd, request: libc::Ioctl, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: the caller guarantees `arg` matches `request`.
    let ret = unsafe { libc::ioctl(fd, request, arg) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Attaches to (or creates) TAP `name` with a virtio-net header of [`VNET_HDR_LEN`] bytes.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let file = open_tun()?;
        let mut ifreq = ifreq_for(name)?;
        ifreq.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifreq` is.
        unsafe {
            tun_ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut ifreq as *mut libc::ifreq as libc::c_ulong,
            )
        }
        .map_err(|source| TapError::Ioctl {
            name: name.to_string(),
            what: "TUNSETIFF",
            source,
        })?;
        let tap = Tap {
            file,
            name: name_of(&ifreq),
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// Takes an inherited TAP descriptor (opened by a management daemon); it must be a TAP
    /// with `IFF_NO_PI | IFF_VNET_HDR`. It is made non-blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let bad = |reason: String| TapError::BadFd { fd: raw, reason };
        let mut ifreq = ifreq_for("x")?;
        // SAFETY: TUNGETIFF writes one `struct ifreq`, which `ifreq` is.
        unsafe {
            tun_ioctl(
                raw,
                libc::TUNGETIFF,
                &mut ifreq as *mut libc::ifreq as libc::c_ulong,
            )
        }
        .map_err(|e| bad(format!("not a TUN/TAP descriptor (TUNGETIFF: {e})")))?;
        // SAFETY: TUNGETIFF filled the flags member of the union.
        let flags = i32::from(unsafe { ifreq.ifr_ifru.ifru_flags });
        let wanted = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if flags & wanted != wanted {
            return Err(bad(format!(
                "flags {flags:#x} lack IFF_TAP, IFF_NO_PI or IFF_VNET_HDR"
            )));
        }
        let file = File::from(fd);
        // SAFETY: F_GETFL/F_SETFL take and return integers.
        let nonblocking = unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            fl >= 0 && libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0
        };
        if !nonblocking {
            return Err(bad(format!(
                "cannot make it non-blocking: {}",
                std::io::Error::last_os_error()
            )));
        }
        let tap = Tap {
            file,
            name: name_of(&ifreq),
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn ioctl_error(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> TapError + '_ {
        move |source| TapError::Ioctl {
            name: self.name.clone(),
            what,
            source,
        }
    }

    fn set_vnet_hdr_len(&self) -> Result<(), TapError> {
        let len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at `len`.
        unsafe {
            tun_ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETVNETHDRSZ,
                &len as *const libc::c_int as libc::c_ulong,
            )
        }
        .map_err(self.ioctl_error("TUNSETVNETHDRSZ"))
    }

    /// Sets which offloaded frames the TAP may hand over (`TUNSETOFFLOAD`; TSO needs csum).
    pub fn set_offloads(&self, offloads: Offloads) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its flags as the integer argument.
        unsafe {
            tun_ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offloads.flags()),
            )
        }
        .map_err(self.ioctl_error("TUNSETOFFLOAD"))
    }

    /// Whether the TAP accepts every offload of [`Offloads::ALL`]; leaves offloads off.
    pub fn supports_all_offloads(&self) -> bool {
        let supported = self.set_offloads(Offloads::ALL).is_ok();
        // Turning offloads off is always accepted; the device sets them at negotiation anyway.
        let _ = self.set_offloads(Offloads::default());
        supported
    }

    /// Keeps (or stops keeping, with `false`) the TAP after its last descriptor closes.
    pub fn set_persistent(&self, persistent: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its flag as the integer argument.
        unsafe {
            tun_ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETPERSIST,
                libc::c_ulong::from(persistent),
            )
        }
        .map_err(self.ioctl_error("TUNSETPERSIST"))
    }

    /// Creates a persistent TAP `name` (as `ip tuntap add NAME mode tap vnet_hdr` does) and
    /// brings it up; for tests and benchmarks.
    pub fn create_persistent(name: &str) -> Result<(), TapError> {
        let tap = Tap::open(name)?;
        tap.set_persistent(true)?;
        crate::ifreq::set_link_up(name)?;
        Ok(())
    }

    /// Deletes a persistent TAP created by [`Tap::create_persistent`].
    pub fn delete_persistent(name: &str) -> Result<(), TapError> {
        Tap::open(name)?.set_persistent(false)
    }

    /// A second descriptor of the same queue (for an event loop's registration).
    pub fn try_clone(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Reads one frame, header included; `WouldBlock` when none is waiting.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame, header included.
    pub fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this host lets the test create TAPs (root with /dev/net/tun).
    fn can_create_taps() -> bool {
        std::path::Path::new(TUN_PATH).exists() && is_root()
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }

    fn unique(tag: &str) -> String {
        format!("ox{tag}{}", std::process::id() % 100_000)
    }

    #[test]
    fn offload_flags_need_csum_for_tso() {
        let tso_only = Offloads {
            csum: false,
            tso4: true,
            tso6: true,
        };
        assert_eq!(tso_only.flags(), 0);
        assert_eq!(Offloads::ALL.flags(), 0x07);
    }

    #[test]
    fn a_persistent_tap_is_opened_with_offloads_and_deleted() {
        if !can_create_taps() {
            eprintln!("skipped: needs root and {TUN_PATH}");
            return;
        }
        let name = unique("nu");
        Tap::create_persistent(&name).unwrap();

        let tap = Tap::open(&name).unwrap();
        let offloads = tap.supports_all_offloads();
        let inherited = Tap::from_fd(OwnedFd::from(tap.try_clone().unwrap())).unwrap();
        drop(tap);
        drop(inherited);
        Tap::delete_persistent(&name).unwrap();

        assert!(offloads, "Linux TAPs take csum and TSO offloads");
        assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
    }

    #[test]
    fn a_descriptor_that_is_not_a_tap_is_refused() {
        let file = File::open("/dev/null").unwrap();
        let err = Tap::from_fd(OwnedFd::from(file)).unwrap_err();
        assert!(matches!(err, TapError::BadFd { .. }), "{err}");
    }
}
