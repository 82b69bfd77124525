//! The system calls behind [`crate::RawFile`] that `std` does not wrap: advisory locks,
//! `fallocate`, block-device ioctls, `statx` for direct-I/O alignment and toggling
//! `O_DIRECT`. Each wrapper turns a failure into `io::Error::last_os_error()`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

// <linux/fs.h>: block-device ioctls (type 0x12).
ioctl_ior_nr!(BLKGETSIZE64, 0x12, 114, u64);
ioctl_io_nr!(BLKSSZGET, 0x12, 104);
ioctl_io_nr!(BLKDISCARD, 0x12, 119);

/// How an advisory lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Others may hold shared locks too (readers).
    Shared,
    /// Nobody else may hold any lock (a writer).
    Exclusive,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn off_t(value: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Takes an advisory `flock` on the open file description without waiting;
/// `ErrorKind::WouldBlock` when another description holds a conflicting lock.
pub fn try_lock(file: &File, kind: LockKind) -> io::Result<()> {
    let operation = match kind {
        LockKind::Shared => libc::LOCK_SH,
        LockKind::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open.
        let ret = unsafe { libc::flock(file.as_raw_fd(), operation) };
        match check(ret) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `fallocate(2)` on `len` bytes at `offset`.
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off_t(offset)?, off_t(len)?);
    loop {
        // SAFETY: fallocate takes plain integers; `file` keeps the descriptor open.
        let ret = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
        match check(ret) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Size in bytes of the block device open as `file`.
pub fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    let ret = unsafe { ioctl_with_mut_ref(file, BLKGETSIZE64(), &mut size) };
    check(ret).map(|()| size)
}

/// Logical block size of the block device open as `file`: the unit of its direct I/O and
/// discards.
pub fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `size`.
    let ret = unsafe { ioctl_with_mut_ref(file, BLKSSZGET(), &mut size) };
    check(ret)?;
    u32::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Discards `len` bytes at `offset` of the block device open as `file` (both multiples of
/// its logical block size).
pub fn block_discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKDISCARD reads two u64 (start, length) through the pointer, which points at
    // `range`.
    let ret = unsafe { ioctl_with_ref(file, BLKDISCARD(), &range) };
    check(ret)
}

/// Direct-I/O alignment of `file` as `statx` reports it: (memory, file offset), both
/// non-zero; `None` where the kernel or file system does not say.
pub fn direct_io_alignment(file: &File) -> Option<(u32, u32)> {
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid NUL-terminated empty string and AT_EMPTY_PATH makes statx
    // describe the descriptor itself; the kernel writes one statx into `stx`.
    let ret = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if ret < 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let (memory, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    (memory != 0 && offset != 0).then_some((memory, offset))
}

/// Turns `O_DIRECT` on or off for the open file description.
pub fn set_direct(file: &File, direct: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    check(flags)?;
    let flags = if direct {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: F_SETFL takes an int of status flags; only O_DIRECT changes.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) })
}
