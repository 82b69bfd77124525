//! Raw disk images: a regular file or a host block device, byte for byte the disk.
//!
//! Opening takes an advisory `flock` on the open file: exclusive for a writable disk,
//! shared for a read-only one, never waiting. Two processes (or two opens in one process)
//! therefore cannot both write a disk, nor can one read a disk another writes; QEMU and
//! Cloud Hypervisor lock their images the same way. The lock goes with the file
//! descriptor.
//!
//! With `direct`, the file is opened `O_DIRECT` (no host page cache). The kernel then wants
//! the buffer address, the offset and the length aligned (`statx`'s `STATX_DIOALIGN`, else
//! the device's logical block size, else 4 KiB); requests that are not go through an
//! aligned bounce buffer, with read-modify-write of partial blocks. The one place that
//! cannot be aligned, the last partial block of a disk whose size is not a multiple of
//! the alignment, is written with `O_DIRECT` switched off for that write (an aligned
//! write there would grow the file).
//!
//! Discard punches a hole (`FALLOC_FL_PUNCH_HOLE`) in a file and issues `BLKDISCARD` on a
//! block device; where neither is supported it does nothing (a discard is a hint).
//! Write-zeroes uses `FALLOC_FL_PUNCH_HOLE` when the caller allows unmapping, then
//! `FALLOC_FL_ZERO_RANGE`, and writes zeroes where the file system or device supports
//! neither.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::DiskBackend;
use crate::sys::{self, LockKind};
use crate::vectored::{self, Direction, IoSliceRaw};

/// Size of the bounce buffer for unaligned direct I/O, and of the zero buffer for
/// write-zeroes done by writing.
const CHUNK: usize = 1 << 20;
/// Alignment used for direct I/O when the kernel does not tell.
const FALLBACK_DIRECT_ALIGN: u64 = 4096;
/// Memory alignment of the bounce buffer: a page satisfies every device.
const PAGE: u64 = 4096;

/// How to open a [`RawFile`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawFileOptions {
    /// Open read-only (a shared lock; writes are refused).
    pub read_only: bool,
    /// Bypass the host page cache (`O_DIRECT`).
    pub direct: bool,
}

/// What was being done to a disk when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reading.
    Read,
    /// Writing.
    Write,
    /// Flushing to stable storage.
    Flush,
    /// Discarding a range.
    Discard,
    /// Zeroing a range.
    WriteZeroes,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Flush => "flush",
            Self::Discard => "discard",
            Self::WriteZeroes => "write-zeroes",
        })
    }
}

/// Why a raw disk could not be opened or accessed.
#[derive(Debug, thiserror::Error)]
pub enum RawFileError {
    /// The path could not be opened (missing, no permission…).
    #[error("cannot open disk {}: {source}", path.display())]
    Open {
        /// The disk's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The path is neither a regular file nor a block device.
    #[error("disk {} is not a regular file or a block device", path.display())]
    NotADisk {
        /// The disk's path.
        path: PathBuf,
    },
    /// Another open file holds a conflicting lock.
    #[error("disk {} is in use by another process (locked)", path.display())]
    Locked {
        /// The disk's path.
        path: PathBuf,
    },
    /// Taking the lock failed for another reason.
    #[error("cannot lock disk {}: {source}", path.display())]
    Lock {
        /// The disk's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The size of a block device could not be read.
    #[error("cannot get the size of disk {}: {source}", path.display())]
    Size {
        /// The disk's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// An access failed.
    #[error("disk {}: {op} of {len} bytes at offset {offset} failed: {source}", path.display())]
    Io {
        /// The disk's path.
        path: PathBuf,
        /// The operation.
        op: Operation,
        /// Its first byte.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// An access reached past the end of the disk.
    #[error(
        "disk {}: {op} of {len} bytes at offset {offset} goes past its end ({size} bytes)",
        path.display()
    )]
    OutOfRange {
        /// The disk's path.
        path: PathBuf,
        /// The operation.
        op: Operation,
        /// Its first byte.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// Size of the disk.
        size: u64,
    },
    /// A write-like operation on a disk opened read-only.
    #[error("disk {} is read-only: {op} refused", path.display())]
    ReadOnly {
        /// The disk's path.
        path: PathBuf,
        /// The operation.
        op: Operation,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    BlockDevice { logical_block: u64 },
}

/// A heap buffer whose start is aligned (for `O_DIRECT`): callers that pass such buffers to
/// [`RawFile`] avoid its bounce copy.
pub struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// `len` zero bytes starting at a multiple of `align` (a power of two).
    pub fn new(len: usize, align: usize) -> Self {
        let storage = vec![0u8; len + align];
        // The address only picks the offset into our own allocation, which never moves.
        let addr = storage.as_ptr() as usize;
        let start = addr.next_multiple_of(align) - addr;
        Self {
            storage,
            start,
            len,
        }
    }

    /// The aligned bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

/// What `O_DIRECT` needs: the alignments and a bounce buffer.
struct DirectIo {
    /// Offsets and lengths must be multiples of this (a power of two).
    offset_align: u64,
    /// Buffers must start at a multiple of this (a power of two).
    memory_align: u64,
    bounce: AlignedBuffer,
}

impl DirectIo {
    fn new(file: &File, kind: Kind) -> Self {
        let (memory_align, offset_align) = match sys::direct_io_alignment(file) {
            Some((memory, offset)) => (u64::from(memory), u64::from(offset)),
            None => match kind {
                Kind::BlockDevice { logical_block } => (logical_block, logical_block),
                Kind::File => (FALLBACK_DIRECT_ALIGN, FALLBACK_DIRECT_ALIGN),
            },
        };
        // Power-of-two alignments the bounce buffer can hold; anything odd becomes 4 KiB.
        let sane = |align: u64| {
            if align.is_power_of_two() && align <= CHUNK as u64 {
                align
            } else {
                FALLBACK_DIRECT_ALIGN
            }
        };
        let (memory_align, offset_align) = (sane(memory_align), sane(offset_align));
        let buffer_align = memory_align.max(offset_align).max(PAGE) as usize;
        Self {
            offset_align,
            memory_align,
            bounce: AlignedBuffer::new(CHUNK, buffer_align),
        }
    }

    /// Whether `preadv`/`pwritev` may take `iovecs` at `offset` as they are: the offset
    /// and every segment's length a multiple of the offset alignment, every segment's
    /// address of the memory alignment.
    fn takes_vectored(&self, offset: u64, iovecs: &[libc::iovec]) -> bool {
        offset.is_multiple_of(self.offset_align)
            && iovecs.iter().all(|iovec| {
                (iovec.iov_len as u64).is_multiple_of(self.offset_align)
                    && (iovec.iov_base as usize as u64).is_multiple_of(self.memory_align)
            })
    }

    fn is_aligned(&self, offset: u64, len: usize, buffer: *const u8) -> bool {
        offset.is_multiple_of(self.offset_align)
            && (len as u64).is_multiple_of(self.offset_align)
            && (buffer as usize as u64).is_multiple_of(self.memory_align)
    }

    /// The aligned window covering the start of `offset..end`, at most a bounce buffer
    /// long: (window start, end of the part of the request it covers, window end).
    fn window(&self, offset: u64, end: u64) -> (u64, u64, u64) {
        let start = offset - offset % self.offset_align;
        let covered = end.min(start + CHUNK as u64);
        let window_end = covered.next_multiple_of(self.offset_align);
        (start, covered, window_end)
    }

    fn read(&mut self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let (start, covered, window_end) = self.window(pos, end);
            let window = &mut self.bounce.as_mut_slice()[..(window_end - start) as usize];
            // The window may reach past the end of a disk whose size is unaligned: the
            // kernel then returns fewer bytes, and only the covered part must be there.
            let got = read_up_to(file, window, start)?;
            if (got as u64) < covered - start {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let skip = (pos - start) as usize;
            let n = (covered - pos) as usize;
            let done = (pos - offset) as usize;
            buf[done..done + n].copy_from_slice(&window[skip..skip + n]);
            pos = covered;
        }
        Ok(())
    }

    fn write(&mut self, file: &File, offset: u64, buf: &[u8], disk_len: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let (start, covered, window_end) = self.window(pos, end);
            let done = (pos - offset) as usize;
            let data = &buf[done..done + (covered - pos) as usize];
            if window_end > disk_len {
                write_buffered(file, data, pos)?;
            } else {
                self.write_window(file, start, pos, data, window_end)?;
            }
            pos = covered;
        }
        Ok(())
    }

    /// Writes `data` at `pos` through the aligned window `start..window_end`, reading the
    /// partial blocks at either edge first.
    fn write_window(
        &mut self,
        file: &File,
        start: u64,
        pos: u64,
        data: &[u8],
        window_end: u64,
    ) -> io::Result<()> {
        let align = self.offset_align;
        let window = &mut self.bounce.as_mut_slice()[..(window_end - start) as usize];
        let head_partial = pos != start;
        if head_partial {
            file.read_exact_at(&mut window[..align as usize], start)?;
        }
        let tail_block = window_end - align;
        let tail_partial = pos + data.len() as u64 != window_end;
        if tail_partial && !(head_partial && tail_block == start) {
            file.read_exact_at(&mut window[(tail_block - start) as usize..], tail_block)?;
        }
        let skip = (pos - start) as usize;
        window[skip..skip + data.len()].copy_from_slice(data);
        file.write_all_at(window, start)
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(got)
}

/// Writes through the page cache on a file opened `O_DIRECT`, for the one unalignable
/// block at the end of the disk; the kernel keeps cached and direct accesses coherent.
fn write_buffered(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    sys::set_direct(file, false)?;
    let result = file.write_all_at(data, offset);
    let restored = sys::set_direct(file, true);
    result.and(restored)
}

/// Whether an error says the file system or device cannot do this at all.
fn is_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOTTY)
    )
}

/// A raw disk image in a regular file or a block device.
pub struct RawFile {
    file: File,
    path: PathBuf,
    len: u64,
    read_only: bool,
    kind: Kind,
    direct: Option<DirectIo>,
    /// Bounce buffer of the vectored accesses `O_DIRECT` cannot take as they are
    /// (allocated on first use).
    vectored_bounce: Option<AlignedBuffer>,
}

impl fmt::Debug for RawFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("read_only", &self.read_only)
            .field("kind", &self.kind)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl RawFile {
    /// Opens and locks the disk at `path`.
    pub fn open(path: impl AsRef<Path>, options: RawFileOptions) -> Result<Self, RawFileError> {
        let path = path.as_ref().to_path_buf();
        // Refuse FIFOs and the like before open(), which would block on a FIFO.
        let metadata = std::fs::metadata(&path).map_err(|source| RawFileError::Open {
            path: path.clone(),
            source,
        })?;
        if !is_disk(&metadata) {
            return Err(RawFileError::NotADisk { path });
        }
        let file = open_file(&path, options)?;
        let metadata = file.metadata().map_err(|source| RawFileError::Open {
            path: path.clone(),
            source,
        })?;
        if !is_disk(&metadata) {
            return Err(RawFileError::NotADisk { path });
        }
        lock(&file, &path, options.read_only)?;
        let (kind, len) = if metadata.file_type().is_block_device() {
            let len = sys::block_device_size(&file).map_err(|source| RawFileError::Size {
                path: path.clone(),
                source,
            })?;
            let logical_block = sys::logical_block_size(&file).map_or(512, u64::from);
            (Kind::BlockDevice { logical_block }, len)
        } else {
            (Kind::File, metadata.len())
        };
        let direct = options.direct.then(|| DirectIo::new(&file, kind));
        tracing::debug!(path = %path.display(), len, ?kind, direct = options.direct, "disk opened");
        Ok(Self {
            file,
            path,
            len,
            read_only: options.read_only,
            kind,
            direct,
            vectored_bounce: None,
        })
    }

    /// The path the disk was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the disk is a host block device (rather than a regular file).
    pub fn is_block_device(&self) -> bool {
        matches!(self.kind, Kind::BlockDevice { .. })
    }

    /// Whether the host page cache is bypassed (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn io_error(&self, op: Operation, offset: u64, len: u64, source: io::Error) -> io::Error {
        let kind = source.kind();
        let error = RawFileError::Io {
            path: self.path.clone(),
            op,
            offset,
            len,
            source,
        };
        io::Error::new(kind, error)
    }

    fn check_range(&self, op: Operation, offset: u64, len: u64) -> io::Result<()> {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            return Ok(());
        }
        let error = RawFileError::OutOfRange {
            path: self.path.clone(),
            op,
            offset,
            len,
            size: self.len,
        };
        Err(io::Error::new(io::ErrorKind::InvalidInput, error))
    }

    fn check_writable(&self, op: Operation) -> io::Result<()> {
        if !self.read_only {
            return Ok(());
        }
        let error = RawFileError::ReadOnly {
            path: self.path.clone(),
            op,
        };
        Err(io::Error::new(io::ErrorKind::PermissionDenied, error))
    }

    /// `fallocate` with `mode`; `Ok(false)` where the file system or device cannot.
    fn try_fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<bool> {
        match sys::fallocate(&self.file, mode, offset, len) {
            Ok(()) => Ok(true),
            Err(error) if is_unsupported(&error) => Ok(false),
            // Block devices refuse ranges not aligned to their logical block.
            Err(error) if self.is_block_device() && error.raw_os_error() == Some(libc::EINVAL) => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn write_zero_bytes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; len.min(CHUNK as u64) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(offset + done, &zeroes[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    fn discard_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.kind {
            Kind::File => sys::fallocate(
                &self.file,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ),
            Kind::BlockDevice { logical_block } => {
                // Whole logical blocks only: the partial ones at the edges are kept.
                let start = offset.next_multiple_of(logical_block);
                let end = (offset + len) - (offset + len) % logical_block;
                if end <= start {
                    return Ok(());
                }
                sys::block_discard(&self.file, start, end - start)
            }
        }
    }
}

/// Reads and writes of ranges already checked against the disk.
impl RawFile {
    fn read_checked(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &mut self.direct {
            Some(direct) if !direct.is_aligned(offset, buf.len(), buf.as_ptr()) => {
                direct.read(&self.file, offset, buf)
            }
            _ => self.file.read_exact_at(buf, offset),
        }
    }

    fn write_checked(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let disk_len = self.len;
        match &mut self.direct {
            Some(direct) if !direct.is_aligned(offset, buf.len(), buf.as_ptr()) => {
                direct.write(&self.file, offset, buf, disk_len)
            }
            _ => self.file.write_all_at(buf, offset),
        }
    }

    /// The total length of `iovecs`, once it is known to fit the disk at `offset`.
    fn vectored_len(
        &self,
        op: Operation,
        offset: u64,
        iovecs: &[IoSliceRaw<'_>],
    ) -> io::Result<u64> {
        let len = vectored::total_len(iovecs).unwrap_or(u64::MAX);
        self.check_range(op, offset, len)?;
        Ok(len)
    }

    /// `preadv`/`pwritev` straight to or from the segments; where `O_DIRECT` cannot take
    /// them as they are (alignment), the rest goes through the aligned bounce buffer.
    fn vectored(
        &mut self,
        direction: Direction,
        offset: u64,
        iovecs: &[IoSliceRaw<'_>],
    ) -> io::Result<()> {
        let direct = self.direct.as_ref();
        let ready = |pos: u64, rest: &[libc::iovec]| {
            direct.is_none_or(|direct| direct.takes_vectored(pos, rest))
        };
        let done = match vectored::transfer(&self.file, direction, offset, iovecs, ready)? {
            Ok(()) => return Ok(()),
            Err(done) => done,
        };
        let rest = vectored::skip(iovecs, done);
        let pos = offset + done;
        let mut scratch = self
            .vectored_bounce
            .take()
            .unwrap_or_else(|| AlignedBuffer::new(CHUNK, PAGE as usize));
        let result = match direction {
            Direction::Read => {
                vectored::bounce_read(pos, &rest, scratch.as_mut_slice(), |at, chunk| {
                    self.read_checked(at, chunk)
                })
            }
            Direction::Write => {
                vectored::bounce_write(pos, &rest, scratch.as_mut_slice(), |at, chunk| {
                    self.write_checked(at, chunk)
                })
            }
        };
        self.vectored_bounce = Some(scratch);
        result
    }
}

fn is_disk(metadata: &std::fs::Metadata) -> bool {
    let file_type = metadata.file_type();
    file_type.is_file() || file_type.is_block_device()
}

fn open_file(path: &Path, options: RawFileOptions) -> Result<File, RawFileError> {
    let mut open = OpenOptions::new();
    open.read(true).write(!options.read_only);
    if options.direct {
        open.custom_flags(libc::O_DIRECT);
    }
    open.open(path).map_err(|source| RawFileError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn lock(file: &File, path: &Path, read_only: bool) -> Result<(), RawFileError> {
    let kind = if read_only {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    sys::try_lock(file, kind).map_err(|source| {
        if source.kind() == io::ErrorKind::WouldBlock {
            RawFileError::Locked {
                path: path.to_path_buf(),
            }
        } else {
            RawFileError::Lock {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

impl DiskBackend for RawFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        self.check_range(Operation::Read, offset, len)?;
        self.read_checked(offset, buf)
            .map_err(|error| self.io_error(Operation::Read, offset, len, error))
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        self.check_writable(Operation::Write)?;
        self.check_range(Operation::Write, offset, len)?;
        self.write_checked(offset, buf)
            .map_err(|error| self.io_error(Operation::Write, offset, len, error))
    }

    fn read_vectored_at(&mut self, offset: u64, iovecs: &[IoSliceRaw<'_>]) -> io::Result<()> {
        let len = self.vectored_len(Operation::Read, offset, iovecs)?;
        self.vectored(Direction::Read, offset, iovecs)
            .map_err(|error| self.io_error(Operation::Read, offset, len, error))
    }

    fn write_vectored_at(&mut self, offset: u64, iovecs: &[IoSliceRaw<'_>]) -> io::Result<()> {
        self.check_writable(Operation::Write)?;
        let len = self.vectored_len(Operation::Write, offset, iovecs)?;
        self.vectored(Direction::Write, offset, iovecs)
            .map_err(|error| self.io_error(Operation::Write, offset, len, error))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|error| self.io_error(Operation::Flush, 0, self.len, error))
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable(Operation::Discard)?;
        self.check_range(Operation::Discard, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        match self.discard_range(offset, len) {
            Ok(()) => Ok(()),
            Err(error) if is_unsupported(&error) => {
                tracing::debug!(path = %self.path.display(), %error, "discard not supported, ignored");
                Ok(())
            }
            Err(error) => Err(self.io_error(Operation::Discard, offset, len, error)),
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        self.check_writable(Operation::WriteZeroes)?;
        self.check_range(Operation::WriteZeroes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let zero_range = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        let modes = if may_unmap {
            &[punch, zero_range][..]
        } else {
            &[zero_range][..]
        };
        for &mode in modes {
            match self.try_fallocate(mode, offset, len) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => {
                    return Err(self.io_error(Operation::WriteZeroes, offset, len, error));
                }
            }
        }
        self.write_zero_bytes(offset, len)
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// A duplicate descriptor of the same open file: it shares the file offset (unused:
    /// every access is positioned) and the advisory lock, which holds until the last
    /// handle closes.
    fn try_clone(&self) -> io::Result<Box<dyn DiskBackend>> {
        let file = self.file.try_clone()?;
        let direct = self
            .direct
            .as_ref()
            .map(|_| DirectIo::new(&file, self.kind));
        Ok(Box::new(Self {
            file,
            path: self.path.clone(),
            len: self.len,
            read_only: self.read_only,
            kind: self.kind,
            direct,
            vectored_bounce: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{TempPath, pattern};

    const MIB: usize = 1 << 20;

    fn open(temp: &TempPath, read_only: bool, direct: bool) -> RawFile {
        RawFile::open(temp.path(), RawFileOptions { read_only, direct }).unwrap()
    }

    fn read(disk: &mut RawFile, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        disk.read_at(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_file_reads_as_its_bytes() {
        let temp = TempPath::with_pattern("read", 64 * 1024);
        let mut disk = open(&temp, false, false);

        let data = read(&mut disk, 5000, 3000);

        assert_eq!(disk.len(), 64 * 1024);
        assert!(!disk.is_block_device() && !disk.is_direct() && !disk.is_read_only());
        assert_eq!(data, pattern(5000, 3000));
    }

    #[test]
    fn writes_read_back_and_reach_the_file() {
        let temp = TempPath::with_pattern("write", 64 * 1024);
        let mut disk = open(&temp, false, false);

        disk.write_at(4096, &[0xAB; 512]).unwrap();
        disk.flush().unwrap();

        assert_eq!(read(&mut disk, 4096, 512), vec![0xAB; 512]);
        let contents = temp.contents();
        assert_eq!(&contents[4096..4608], &[0xAB; 512]);
        assert_eq!(&contents[..4096], &pattern(0, 4096)[..]);
    }

    #[test]
    fn accesses_past_the_end_are_refused_with_the_path() {
        let temp = TempPath::with_pattern("range", 8192);
        let mut disk = open(&temp, false, false);

        let read_error = disk.read_at(8000, &mut [0u8; 512]).unwrap_err();
        let write_error = disk.write_at(u64::MAX - 10, &[0u8; 512]).unwrap_err();
        let discard_error = disk.discard(4096, 8192).unwrap_err();

        assert_eq!(read_error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(write_error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(discard_error.kind(), io::ErrorKind::InvalidInput);
        let message = read_error.to_string();
        assert!(
            message.contains(&temp.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("read of 512 bytes at offset 8000"),
            "{message}"
        );
        assert_eq!(temp.contents(), pattern(0, 8192));
    }

    #[test]
    fn a_read_only_disk_refuses_every_change() {
        let temp = TempPath::with_pattern("ro", 16 * 1024);
        let mut disk = open(&temp, true, false);

        let errors = [
            disk.write_at(0, &[1; 512]).unwrap_err(),
            disk.discard(0, 4096).unwrap_err(),
            disk.write_zeroes(0, 4096, true).unwrap_err(),
        ];

        for error in &errors {
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
            assert!(error.to_string().contains("is read-only"), "{error}");
        }
        assert!(disk.is_read_only());
        disk.flush().unwrap();
        assert_eq!(read(&mut disk, 0, 512), pattern(0, 512));
        assert_eq!(temp.contents(), pattern(0, 16 * 1024));
    }

    #[test]
    fn discard_makes_the_file_sparse() {
        let temp = TempPath::with_pattern("discard", 4 * MIB);
        let mut disk = open(&temp, false, false);
        let before = temp.allocated();

        disk.discard(MIB as u64, 2 * MIB as u64).unwrap();

        assert!(
            temp.allocated() + 2 * MIB as u64 <= before,
            "allocated {} of {before} bytes after the discard",
            temp.allocated()
        );
        assert_eq!(read(&mut disk, MIB as u64, 4096), vec![0; 4096]);
        assert_eq!(read(&mut disk, 0, 4096), pattern(0, 4096));
        assert_eq!(disk.len(), 4 * MIB as u64);
        assert_eq!(temp.contents().len(), 4 * MIB);
    }

    #[test]
    fn write_zeroes_zeroes_and_unmaps_only_when_allowed() {
        let temp = TempPath::with_pattern("zeroes", 4 * MIB);
        let mut disk = open(&temp, false, false);
        let before = temp.allocated();

        disk.write_zeroes(0, MIB as u64, false).unwrap();
        let after_keep = temp.allocated();
        disk.write_zeroes(2 * MIB as u64, MIB as u64, true).unwrap();
        let after_unmap = temp.allocated();
        disk.write_zeroes(3 * MIB as u64 + 100, 1000, false)
            .unwrap();

        let contents = temp.contents();
        assert!(contents[..MIB].iter().all(|&b| b == 0));
        assert_eq!(&contents[MIB..2 * MIB], &pattern(MIB, MIB)[..]);
        assert!(contents[2 * MIB..3 * MIB].iter().all(|&b| b == 0));
        assert_eq!(
            &contents[3 * MIB..3 * MIB + 100],
            &pattern(3 * MIB, 100)[..]
        );
        assert!(
            contents[3 * MIB + 100..3 * MIB + 1100]
                .iter()
                .all(|&b| b == 0)
        );
        assert_eq!(contents[3 * MIB + 1100], pattern(3 * MIB + 1100, 1)[0]);
        assert_eq!(after_keep, before, "zeroing without unmap keeps the blocks");
        assert!(
            after_unmap + MIB as u64 <= after_keep,
            "unmap frees the blocks"
        );
    }

    #[test]
    fn a_writable_disk_is_locked_against_every_other_open() {
        let temp = TempPath::with_pattern("lock", 4096);
        let first = open(&temp, false, false);

        let second = RawFile::open(temp.path(), RawFileOptions::default()).unwrap_err();
        let reader = RawFile::open(
            temp.path(),
            RawFileOptions {
                read_only: true,
                direct: false,
            },
        )
        .unwrap_err();
        drop(first);
        let after_close = RawFile::open(temp.path(), RawFileOptions::default());

        assert!(matches!(second, RawFileError::Locked { .. }));
        assert!(matches!(reader, RawFileError::Locked { .. }));
        assert_eq!(
            second.to_string(),
            format!(
                "disk {} is in use by another process (locked)",
                temp.path().display()
            )
        );
        assert!(after_close.is_ok());
    }

    #[test]
    fn a_clone_reaches_the_same_file_and_keeps_the_lock_until_both_close() {
        let temp = TempPath::with_pattern("clone", 4096);
        let mut first = open(&temp, false, true);
        let mut clone = first.try_clone().unwrap();

        clone.write_at(512, &[0x5A; 512]).unwrap();
        let seen_by_first = read(&mut first, 512, 512);
        drop(first);
        let while_clone_open = RawFile::open(temp.path(), RawFileOptions::default());
        drop(clone);
        let after_both = RawFile::open(temp.path(), RawFileOptions::default());

        assert_eq!(seen_by_first, vec![0x5A; 512]);
        assert!(matches!(while_clone_open, Err(RawFileError::Locked { .. })));
        assert!(after_both.is_ok());
    }

    #[test]
    fn readers_share_a_disk_but_keep_writers_out() {
        let temp = TempPath::with_pattern("shared", 4096);
        let first = open(&temp, true, false);

        let second = RawFile::open(
            temp.path(),
            RawFileOptions {
                read_only: true,
                direct: false,
            },
        );
        let writer = RawFile::open(temp.path(), RawFileOptions::default());

        assert!(second.is_ok());
        assert!(matches!(writer, Err(RawFileError::Locked { .. })));
        drop(first);
    }

    #[test]
    fn missing_paths_and_directories_are_not_disks() {
        let missing = TempPath::new("missing");
        let dir = std::env::temp_dir();

        let missing_error = RawFile::open(missing.path(), RawFileOptions::default()).unwrap_err();
        let dir_error = RawFile::open(&dir, RawFileOptions::default()).unwrap_err();

        assert!(matches!(missing_error, RawFileError::Open { .. }));
        assert!(
            missing_error
                .to_string()
                .starts_with(&format!("cannot open disk {}", missing.path().display()))
        );
        assert!(matches!(dir_error, RawFileError::NotADisk { .. }));
    }

    #[test]
    fn direct_io_handles_unaligned_buffers_offsets_and_lengths() {
        let temp = TempPath::with_pattern("direct", 3 * MIB);
        let mut disk = open(&temp, false, true);
        let mut model = pattern(0, 3 * MIB);

        // Aligned offset and length through an unaligned buffer, then unaligned ranges,
        // including one wider than the bounce buffer.
        let mut unaligned = vec![0u8; 8193];
        disk.read_at(8192, &mut unaligned[1..]).unwrap();
        let mut aligned = AlignedBuffer::new(8192, 4096);
        disk.read_at(16384, aligned.as_mut_slice()).unwrap();
        let writes: [(usize, usize); 4] =
            [(100, 1000), (4095, 2), (4096, 8192), (12345, MIB + 5000)];
        for (i, &(offset, len)) in writes.iter().enumerate() {
            let data = vec![i as u8 + 1; len];
            disk.write_at(offset as u64, &data).unwrap();
            model[offset..offset + len].copy_from_slice(&data);
        }
        let whole = read(&mut disk, 0, 3 * MIB);
        let piece = read(&mut disk, 777, 10_000);

        assert!(disk.is_direct());
        assert_eq!(&unaligned[1..], &pattern(8192, 8192)[..]);
        assert_eq!(aligned.as_mut_slice(), &pattern(16384, 8192)[..]);
        assert!(whole == model, "direct reads differ from the model");
        assert_eq!(piece, &model[777..10_777]);
        assert!(temp.contents() == model, "the file differs from the model");
    }

    #[test]
    fn direct_io_reaches_the_unaligned_end_without_growing_the_file() {
        let len = 64 * 1024 + 512;
        let temp = TempPath::with_pattern("direct-tail", len);
        let mut disk = open(&temp, false, true);

        disk.write_at(len as u64 - 512, &[0x5A; 512]).unwrap();
        disk.write_at(len as u64 - 1000, &[0x6B; 100]).unwrap();
        let tail = read(&mut disk, len as u64 - 512, 512);
        disk.write_zeroes(len as u64 - 300, 300, false).unwrap();

        let contents = temp.contents();
        assert_eq!(contents.len(), len);
        assert_eq!(tail, vec![0x5A; 512]);
        assert_eq!(&contents[len - 1000..len - 900], &[0x6B; 100]);
        assert_eq!(&contents[len - 512..len - 300], &[0x5A; 212]);
        assert!(contents[len - 300..].iter().all(|&b| b == 0));
    }

    #[test]
    fn an_empty_file_is_an_empty_disk() {
        let temp = TempPath::new("empty");
        std::fs::write(temp.path(), b"").unwrap();
        let mut disk = open(&temp, false, false);

        assert!(disk.is_empty());
        disk.read_at(0, &mut []).unwrap();
        assert!(disk.read_at(0, &mut [0]).is_err());
    }

    /// Splits `buf` into segments of `lens` bytes (their sum must be `buf.len()`).
    fn split<'a>(mut buf: &'a mut [u8], lens: &[usize]) -> Vec<IoSliceRaw<'a>> {
        lens.iter()
            .map(|&len| {
                let (head, tail) = std::mem::take(&mut buf).split_at_mut(len);
                buf = tail;
                IoSliceRaw::from_mut(head)
            })
            .collect()
    }

    #[test]
    fn vectored_reads_and_writes_go_through_split_segments_in_order() {
        let temp = TempPath::with_pattern("vectored", 64 * 1024);
        let mut disk = open(&temp, false, false);
        let mut model = pattern(0, 64 * 1024);
        let mut read_buf = vec![0u8; 10_000];
        let mut write_buf: Vec<u8> = (0..7000).map(|i| (i % 251) as u8).collect();

        disk.read_vectored_at(1234, &split(&mut read_buf, &[1, 4095, 0, 5904]))
            .unwrap();
        let expected_write = write_buf.clone();
        disk.write_vectored_at(30_000, &split(&mut write_buf, &[3000, 17, 3983]))
            .unwrap();
        model[30_000..37_000].copy_from_slice(&expected_write);

        assert_eq!(read_buf, pattern(1234, 10_000));
        assert!(temp.contents() == model, "the file differs from the model");
        assert!(disk.vectored_bounce.is_none(), "buffered I/O never bounces");
    }

    #[test]
    fn vectored_io_of_more_segments_than_one_call_takes_is_finished_by_later_calls() {
        let temp = TempPath::with_pattern("vectored-many", 64 * 1024);
        let mut disk = open(&temp, false, false);
        let mut buf = vec![0u8; 1500 * 8];

        disk.read_vectored_at(100, &split(&mut buf, &[8; 1500]))
            .unwrap();

        assert_eq!(buf, pattern(100, 1500 * 8));
    }

    #[test]
    fn a_vectored_read_past_a_file_that_shrank_fails_instead_of_spinning() {
        let temp = TempPath::with_pattern("vectored-shrunk", 64 * 1024);
        let mut disk = open(&temp, false, false);
        std::fs::OpenOptions::new()
            .write(true)
            .open(temp.path())
            .unwrap()
            .set_len(40 * 1024)
            .unwrap();
        let mut buf = vec![0u8; 8192];

        let error = disk
            .read_vectored_at(36 * 1024, &split(&mut buf, &[4096, 4096]))
            .unwrap_err();

        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            error
                .to_string()
                .contains("read of 8192 bytes at offset 36864"),
            "{error}"
        );
        assert_eq!(&buf[..4096], &pattern(36 * 1024, 4096)[..]);
    }

    #[test]
    fn vectored_io_out_of_range_or_on_a_read_only_disk_is_refused() {
        let temp = TempPath::with_pattern("vectored-range", 8192);
        let mut disk = open(&temp, false, false);
        let mut buf = vec![0u8; 1024];
        let mut byte = [0u8; 1];
        // SAFETY: the segment is only summed with the other and refused, never accessed.
        let huge = unsafe { IoSliceRaw::new(byte.as_mut_ptr(), usize::MAX) };

        let past_end = disk
            .write_vectored_at(7680, &split(&mut buf, &[512, 512]))
            .unwrap_err();
        let overflow = disk.read_vectored_at(0, &[huge, huge]).unwrap_err();
        drop(disk);
        let mut read_only = open(&temp, true, false);
        let refused = read_only
            .write_vectored_at(0, &split(&mut buf, &[1024]))
            .unwrap_err();

        assert_eq!(past_end.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(overflow.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(temp.contents(), pattern(0, 8192));
    }

    #[test]
    fn direct_vectored_io_of_aligned_segments_skips_the_bounce_buffer() {
        let temp = TempPath::with_pattern("vectored-direct", MIB);
        let mut disk = open(&temp, false, true);
        let mut model = pattern(0, MIB);
        let mut read_buf = AlignedBuffer::new(3 * 4096, 4096);
        let mut write_buf = AlignedBuffer::new(2 * 4096, 4096);
        write_buf.as_mut_slice().fill(0x3C);

        disk.read_vectored_at(8192, &split(read_buf.as_mut_slice(), &[4096, 8192]))
            .unwrap();
        disk.write_vectored_at(65536, &split(write_buf.as_mut_slice(), &[4096, 4096]))
            .unwrap();
        model[65536..65536 + 8192].fill(0x3C);

        assert_eq!(read_buf.as_slice(), &pattern(8192, 3 * 4096)[..]);
        assert!(
            disk.vectored_bounce.is_none(),
            "aligned segments went through the bounce"
        );
        assert!(
            read(&mut disk, 0, MIB) == model,
            "direct reads differ from the model"
        );
        assert!(temp.contents() == model, "the file differs from the model");
    }

    #[test]
    fn direct_vectored_io_of_unaligned_segments_or_offsets_bounces_correctly() {
        let len = 2 * MIB + 512;
        let temp = TempPath::with_pattern("vectored-direct-odd", len);
        let mut disk = open(&temp, false, true);
        let mut model = pattern(0, len);
        let mut odd_address = vec![0u8; 8193];
        let mut aligned = AlignedBuffer::new(MIB + 8192, 4096);
        let mut big: Vec<u8> = (0..MIB + 8192).map(|i| (i % 253) as u8).collect();
        let tail = vec![0x77u8; 700];
        let mut tail_copy = tail.clone();

        disk.read_vectored_at(4096, &split(&mut odd_address[1..], &[4096, 4096]))
            .unwrap();
        let big_data = big.clone();
        // An aligned offset with a segment length that is not, across more than one chunk.
        disk.write_vectored_at(4096, &split(&mut big, &[100, MIB, 8092]))
            .unwrap();
        model[4096..4096 + MIB + 8192].copy_from_slice(&big_data);
        // An unaligned offset reaching the unaligned end of the disk.
        disk.write_vectored_at(len as u64 - 700, &split(&mut tail_copy, &[300, 400]))
            .unwrap();
        model[len - 700..].copy_from_slice(&tail);
        disk.read_vectored_at(
            4096,
            &split(aligned.as_mut_slice(), &[512, MIB, 8192 - 512]),
        )
        .unwrap();

        assert_eq!(&odd_address[1..], &pattern(4096, 8192)[..]);
        assert!(aligned.as_slice() == &model[4096..4096 + MIB + 8192]);
        assert!(
            disk.vectored_bounce.is_some(),
            "unaligned segments need the bounce"
        );
        let contents = temp.contents();
        assert_eq!(contents.len(), len, "the file grew");
        assert!(contents == model, "the file differs from the model");
    }

    /// Runs against the block device named by `OXVIRT_TEST_BLOCK_DEVICE` (its contents are
    /// overwritten), e.g. a loop device: `losetup -f --show FILE`.
    #[test]
    #[ignore = "needs a scratch block device in OXVIRT_TEST_BLOCK_DEVICE"]
    fn a_block_device_is_sized_read_written_discarded_and_zeroed() {
        let path = std::env::var("OXVIRT_TEST_BLOCK_DEVICE").unwrap();
        for direct in [false, true] {
            let options = RawFileOptions {
                read_only: false,
                direct,
            };
            let mut disk = RawFile::open(&path, options).unwrap();
            let len = disk.len();
            let data = pattern(0, 64 * 1024);

            disk.write_at(0, &data).unwrap();
            disk.write_at(len - 512, &[0x77; 512]).unwrap();
            disk.write_at(100, &[0x33; 50]).unwrap();
            disk.flush().unwrap();
            disk.discard(8192, 8192).unwrap();
            disk.write_zeroes(16384, 4096, false).unwrap();
            disk.write_zeroes(20480, 4096, true).unwrap();
            let second = RawFile::open(&path, RawFileOptions::default()).unwrap_err();

            assert!(disk.is_block_device() && len >= 64 * 1024);
            assert_eq!(read(&mut disk, len - 512, 512), vec![0x77; 512]);
            assert_eq!(read(&mut disk, 100, 50), vec![0x33; 50]);
            assert_eq!(read(&mut disk, 4096, 4096), pattern(4096, 4096));
            assert_eq!(read(&mut disk, 16384, 8192), vec![0; 8192]);
            assert_eq!(read(&mut disk, 24576, 4096), pattern(24576, 4096));
            assert!(matches!(second, RawFileError::Locked { .. }));
        }
    }
}
