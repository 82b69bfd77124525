//! Scatter-gather I/O: [`IoSliceRaw`], the bounce-copy fallback every [`DiskBackend`] gets by
//! default, and the `preadv`/`pwritev` loops [`crate::RawFile`] uses to move data straight
//! between the disk and the caller's memory (for a VMM: guest memory, without a copy).

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;

use crate::DiskBackend;

/// Most bytes the default bounce path moves per disk access.
const BOUNCE_CHUNK: usize = 1 << 20;
/// Most segments passed to one `preadv`/`pwritev` (the kernel's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// One segment of a scatter-gather list: `len` bytes at `ptr`, valid for `'a`.
///
/// Unlike `std::io::IoSliceMut` this makes no Rust reference over the bytes: they may be
/// memory another party writes at the same time (a guest's buffers), which a `&mut [u8]`
/// must never cover. The disk reads or writes them as raw memory.
#[derive(Debug, Clone, Copy)]
pub struct IoSliceRaw<'a> {
    ptr: *mut u8,
    len: usize,
    _memory: PhantomData<&'a mut [u8]>,
}

impl<'a> IoSliceRaw<'a> {
    /// The segment `ptr..ptr + len`.
    ///
    /// # Safety
    ///
    /// For all of `'a`, the `len` bytes at `ptr` must stay mapped, readable and writable
    /// (readable is enough for a segment only ever passed to a write), and no Rust
    /// reference may cover them while a disk method uses the segment.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _memory: PhantomData,
        }
    }

    /// The segment over `buf`, borrowed for `'a`.
    pub fn from_mut(buf: &'a mut [u8]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _memory: PhantomData,
        }
    }

    /// Its first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Total bytes of `iovecs`; `InvalidInput` if that overflows.
pub(crate) fn total_len(iovecs: &[IoSliceRaw<'_>]) -> io::Result<u64> {
    iovecs
        .iter()
        .try_fold(0u64, |sum, iovec| sum.checked_add(iovec.len as u64))
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A position in a list of segments, for copying a byte stream in or out piece by piece.
struct RawCursor<'s, 'a> {
    iovecs: &'s [IoSliceRaw<'a>],
    index: usize,
    offset: usize,
}

impl<'s, 'a> RawCursor<'s, 'a> {
    fn new(iovecs: &'s [IoSliceRaw<'a>]) -> Self {
        Self {
            iovecs,
            index: 0,
            offset: 0,
        }
    }

    /// The next run of at most `max` bytes, advancing past it.
    fn next_run(&mut self, max: usize) -> Option<(*mut u8, usize)> {
        while let Some(iovec) = self.iovecs.get(self.index) {
            let left = iovec.len - self.offset;
            if left == 0 {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = left.min(max);
            // The offset stays inside the segment, which lies in one allocation.
            let ptr = iovec.ptr.wrapping_add(self.offset);
            self.offset += n;
            return Some((ptr, n));
        }
        None
    }

    /// Copies `src` into the next `src.len()` bytes of the segments.
    fn scatter(&mut self, src: &[u8]) {
        let mut done = 0;
        while done < src.len() {
            let Some((ptr, n)) = self.next_run(src.len() - done) else {
                return;
            };
            // SAFETY: `ptr..ptr + n` lies inside a segment, which `IoSliceRaw::new`'s
            // contract keeps mapped and writable with no Rust reference over it; `src` is
            // our own buffer, so the two do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(src[done..].as_ptr(), ptr, n) };
            done += n;
        }
    }

    /// Copies the next `dst.len()` bytes of the segments into `dst`.
    fn gather(&mut self, dst: &mut [u8]) {
        let mut done = 0;
        while done < dst.len() {
            let Some((ptr, n)) = self.next_run(dst.len() - done) else {
                return;
            };
            // SAFETY: `ptr..ptr + n` lies inside a segment, which `IoSliceRaw::new`'s
            // contract keeps mapped and readable with no Rust reference over it; `dst` is
            // our own buffer, so the two do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, dst[done..].as_mut_ptr(), n) };
            done += n;
        }
    }
}

/// Reads the disk at `offset` into `iovecs` through `scratch` (not empty), a chunk at a
/// time, with `read_at`.
pub(crate) fn bounce_read(
    offset: u64,
    iovecs: &[IoSliceRaw<'_>],
    scratch: &mut [u8],
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    let total = total_len(iovecs)?;
    let mut cursor = RawCursor::new(iovecs);
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(scratch.len() as u64) as usize;
        let chunk = &mut scratch[..n];
        read_at(offset + done, chunk)?;
        cursor.scatter(chunk);
        done += n as u64;
    }
    Ok(())
}

/// Writes `iovecs` to the disk at `offset` through `scratch` (not empty), a chunk at a
/// time, with `write_at`.
pub(crate) fn bounce_write(
    offset: u64,
    iovecs: &[IoSliceRaw<'_>],
    scratch: &mut [u8],
    mut write_at: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let total = total_len(iovecs)?;
    let mut cursor = RawCursor::new(iovecs);
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(scratch.len() as u64) as usize;
        let chunk = &mut scratch[..n];
        cursor.gather(chunk);
        write_at(offset + done, chunk)?;
        done += n as u64;
    }
    Ok(())
}

/// A scratch buffer for the default bounce path (as long as the request, at most a chunk),
/// once the whole request is known to lie inside `disk`: a write that fails half-way
/// must not have changed the disk.
pub(crate) fn bounce_buffer<D: DiskBackend + ?Sized>(
    disk: &D,
    offset: u64,
    iovecs: &[IoSliceRaw<'_>],
) -> io::Result<Vec<u8>> {
    let total = total_len(iovecs)?;
    if offset.checked_add(total).is_none_or(|end| end > disk.len()) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    Ok(vec![0u8; total.clamp(1, BOUNCE_CHUNK as u64) as usize])
}

/// Which way a vectored transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Disk → memory (`preadv`).
    Read,
    /// Memory → disk (`pwritev`).
    Write,
}

/// Moves all of `iovecs` at `offset` with `preadv`/`pwritev`, again after short transfers,
/// until done. `ready` is asked before each call whether the rest (its disk offset and
/// segments) may go this way (`O_DIRECT` alignment); when it says no, the bytes done so
/// far are returned as `Ok(Err(done))` for the caller to finish otherwise. `Ok(Ok(()))`
/// when everything moved.
pub(crate) fn transfer(
    file: &File,
    direction: Direction,
    offset: u64,
    iovecs: &[IoSliceRaw<'_>],
    ready: impl Fn(u64, &[libc::iovec]) -> bool,
) -> io::Result<Result<(), u64>> {
    let mut rest: Vec<libc::iovec> = iovecs
        .iter()
        .filter(|iovec| iovec.len > 0)
        .map(|iovec| libc::iovec {
            iov_base: iovec.ptr.cast(),
            iov_len: iovec.len,
        })
        .collect();
    let mut done = 0u64;
    let mut first = 0;
    while first < rest.len() {
        let pos = offset + done;
        if !ready(pos, &rest[first..]) {
            return Ok(Err(done));
        }
        let n = transfer_once(file, direction, pos, &rest[first..])?;
        if n == 0 {
            return Err(match direction {
                Direction::Read => io::ErrorKind::UnexpectedEof.into(),
                Direction::Write => io::ErrorKind::WriteZero.into(),
            });
        }
        done += n as u64;
        first += advance(&mut rest[first..], n);
    }
    Ok(Ok(()))
}

/// One `preadv`/`pwritev` of at most [`IOV_MAX`] segments, retried on `EINTR`.
fn transfer_once(
    file: &File,
    direction: Direction,
    offset: u64,
    iovecs: &[libc::iovec],
) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let count = iovecs.len().min(IOV_MAX) as libc::c_int;
    loop {
        let ret = match direction {
            // SAFETY: each iovec names bytes an `IoSliceRaw` keeps mapped and writable for
            // the call (its constructor's contract); the kernel writes only inside them.
            Direction::Read => unsafe {
                libc::preadv(file.as_raw_fd(), iovecs.as_ptr(), count, offset)
            },
            // SAFETY: each iovec names bytes an `IoSliceRaw` keeps mapped and readable for
            // the call; the kernel only reads them.
            Direction::Write => unsafe {
                libc::pwritev(file.as_raw_fd(), iovecs.as_ptr(), count, offset)
            },
        };
        match usize::try_from(ret) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// Drops the first `n` bytes of `iovecs`: returns how many segments were used up and
/// shortens the next one by what was taken of it.
fn advance(iovecs: &mut [libc::iovec], mut n: usize) -> usize {
    let mut used = 0;
    for iovec in iovecs.iter_mut() {
        if n < iovec.iov_len {
            iovec.iov_base = iovec.iov_base.cast::<u8>().wrapping_add(n).cast();
            iovec.iov_len -= n;
            break;
        }
        n -= iovec.iov_len;
        used += 1;
    }
    used
}

/// The part of `iovecs` after its first `n` bytes (the first segment maybe shortened).
pub(crate) fn skip<'a>(iovecs: &[IoSliceRaw<'a>], mut n: u64) -> Vec<IoSliceRaw<'a>> {
    let mut rest = Vec::with_capacity(iovecs.len());
    for iovec in iovecs {
        if n >= iovec.len as u64 {
            n -= iovec.len as u64;
            continue;
        }
        let taken = n as usize;
        n = 0;
        rest.push(IoSliceRaw {
            ptr: iovec.ptr.wrapping_add(taken),
            len: iovec.len - taken,
            _memory: PhantomData,
        });
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: len,
        }
    }

    #[test]
    fn advance_uses_up_whole_segments_and_shortens_the_next() {
        let mut iovecs = [iov(10), iov(20), iov(30)];

        let used = advance(&mut iovecs, 15);

        assert_eq!(used, 1);
        assert_eq!(iovecs[1].iov_len, 15);
        assert_eq!(iovecs[1].iov_base as usize, 5);
        assert_eq!(iovecs[2].iov_len, 30);
    }

    #[test]
    fn skip_drops_leading_bytes_across_segments() {
        let mut a = [0u8; 4];
        let mut b = [0u8; 6];
        let b_ptr = b.as_mut_ptr();
        let iovecs = [IoSliceRaw::from_mut(&mut a), IoSliceRaw::from_mut(&mut b)];

        let rest = skip(&iovecs, 5);
        let none = skip(&iovecs, 10);

        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].len(), 5);
        assert_eq!(rest[0].ptr(), b_ptr.wrapping_add(1));
        assert!(none.is_empty());
    }

    #[test]
    fn a_total_that_overflows_is_invalid_input() {
        let mut a = [0u8; 1];
        let slice = IoSliceRaw::from_mut(&mut a);
        // SAFETY: the segments are only summed, never read or written.
        let huge = unsafe { IoSliceRaw::new(a_ptr(&slice), usize::MAX) };

        let error = total_len(&[huge, huge]).unwrap_err();

        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    fn a_ptr(slice: &IoSliceRaw<'_>) -> *mut u8 {
        slice.ptr()
    }
}
