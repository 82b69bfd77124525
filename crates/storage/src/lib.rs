//! Disk backends: the storage a virtual disk (or, later, a daemon's volume) lives on.
//!
//! This crate owns:
//! - [`DiskBackend`]: the one trait every disk format implements (byte-addressed reads and
//!   writes, flush, discard, write-zeroes), so the virtio-blk device and the daemon's volume
//!   code do not care what is underneath;
//! - [`RawFile`]: a raw image in a regular file or a host block device, with optional
//!   `O_DIRECT` (aligned bounce buffers where the caller's buffer or range is not aligned)
//!   and an advisory lock so two processes cannot open the same writable disk;
//! - [`IoSliceRaw`]: scatter-gather segments for [`DiskBackend::read_vectored_at`] and
//!   [`DiskBackend::write_vectored_at`], which a raw file serves with `preadv`/`pwritev`
//!   straight to and from the caller's memory;
//! - [`rate_limit`]: token buckets for bytes and operations per second.
//!
//! What it must not do: know about virtual machines, guest memory, virtio or sectors.
//! Offsets and lengths here are bytes of the disk; callers check them against their own
//! protocol's limits, and every backend checks them again against its size.

pub mod rate_limit;
mod raw;
mod sys;
mod vectored;

#[cfg(test)]
mod test_utils;

use std::io;

pub use rate_limit::{Clock, MonotonicClock, RateLimitError, RateLimiter, TokenBucket};
pub use raw::{AlignedBuffer, Operation, RawFile, RawFileError, RawFileOptions};
pub use vectored::IoSliceRaw;

/// A disk: a fixed number of bytes that can be read, written, flushed, discarded and
/// zeroed. Ranges must lie inside `0..len()`; a backend refuses others with
/// [`io::ErrorKind::InvalidInput`].
///
/// Methods take `&mut self`: a backend may keep scratch buffers, and one owner drives it.
pub trait DiskBackend: Send {
    /// Size of the disk in bytes.
    fn len(&self) -> u64;

    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from the disk at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `buf` to the disk at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// Fills the segments, in order, from the disk at `offset` (their total length).
    ///
    /// The default reads through a bounce buffer with [`DiskBackend::read_at`]; backends
    /// that can read into the segments directly override it.
    fn read_vectored_at(&mut self, offset: u64, iovecs: &[IoSliceRaw<'_>]) -> io::Result<()> {
        let mut scratch = vectored::bounce_buffer(self, offset, iovecs)?;
        vectored::bounce_read(offset, iovecs, &mut scratch, |pos, chunk| {
            self.read_at(pos, chunk)
        })
    }

    /// Writes the segments, in order, to the disk at `offset`.
    ///
    /// The default copies them into a bounce buffer for [`DiskBackend::write_at`];
    /// backends that can write from the segments directly override it.
    fn write_vectored_at(&mut self, offset: u64, iovecs: &[IoSliceRaw<'_>]) -> io::Result<()> {
        let mut scratch = vectored::bounce_buffer(self, offset, iovecs)?;
        vectored::bounce_write(offset, iovecs, &mut scratch, |pos, chunk| {
            self.write_at(pos, chunk)
        })
    }

    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;

    /// Tells the backend the range's contents are no longer needed; it may deallocate them.
    /// Afterwards the range reads as zeroes or as its old contents: callers that need
    /// zeroes use [`DiskBackend::write_zeroes`].
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes the range read as zeroes; with `may_unmap` the backend may deallocate it too.
    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()>;

    /// Whether writes, discards and write-zeroes are refused.
    fn is_read_only(&self) -> bool;

    /// Another handle on the same disk, with its own scratch buffers, that another thread
    /// drives at the same time as this one (virtio-blk's I/O threads each take one). Writes
    /// through either handle reach the same storage; `flush` on one makes the writes of all
    /// durable. The default refuses with [`io::ErrorKind::Unsupported`]: such a disk is
    /// driven by one owner only.
    fn try_clone(&self) -> io::Result<Box<dyn DiskBackend>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this disk backend cannot be shared between threads",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk in a `Vec`, with only the required methods: the vectored ones are the
    /// trait's defaults.
    struct MemoryDisk(Vec<u8>);

    impl DiskBackend for MemoryDisk {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }

        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let start = offset as usize;
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
            Ok(())
        }

        fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            let start = offset as usize;
            self.0[start..start + buf.len()].copy_from_slice(buf);
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn discard(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
            Ok(())
        }

        fn write_zeroes(&mut self, _offset: u64, _len: u64, _may_unmap: bool) -> io::Result<()> {
            Ok(())
        }

        fn is_read_only(&self) -> bool {
            false
        }
    }

    #[test]
    fn the_default_vectored_methods_bounce_through_read_at_and_write_at() {
        let mut disk = MemoryDisk((0..=255).collect());
        let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
        let (mut c, mut d) = ([0xEE_u8; 2], [0xDD_u8; 4]);

        disk.read_vectored_at(
            10,
            &[IoSliceRaw::from_mut(&mut a), IoSliceRaw::from_mut(&mut b)],
        )
        .unwrap();
        disk.write_vectored_at(
            100,
            &[IoSliceRaw::from_mut(&mut c), IoSliceRaw::from_mut(&mut d)],
        )
        .unwrap();
        let past_end = disk
            .write_vectored_at(
                254,
                &[IoSliceRaw::from_mut(&mut c), IoSliceRaw::from_mut(&mut d)],
            )
            .unwrap_err();

        assert_eq!(a, [10, 11, 12]);
        assert_eq!(b, [13, 14, 15, 16, 17]);
        assert_eq!(&disk.0[100..106], &[0xEE, 0xEE, 0xDD, 0xDD, 0xDD, 0xDD]);
        assert_eq!(past_end.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            &disk.0[254..],
            &[254, 255],
            "a refused write changes nothing"
        );
    }
}
