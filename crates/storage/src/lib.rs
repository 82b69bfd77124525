//! Disk backends: the storage a virtual disk (or, later, a daemon's volume) lives on.
//!
//! This crate owns:
//! - [`DiskBackend`]: the one trait every disk format implements (byte-addressed reads and
//!   writes, flush, discard, write-zeroes), so the virtio-blk device and the daemon's volume
//!   code do not care what is underneath;
//! - [`RawFile`]: a raw image in a regular file or a host block device, with optional
//!   `O_DIRECT` (aligned bounce buffers where the caller's buffer or range is not aligned)
//!   and an advisory lock so two processes cannot open the same writable disk;
//! - [`rate_limit`]: token buckets for bytes and operations per second.
//!
//! What it must not do: know about virtual machines, guest memory, virtio or sectors.
//! Offsets and lengths here are bytes of the disk; callers check them against their own
//! protocol's limits, and every backend checks them again against its size.

pub mod rate_limit;
mod raw;
mod sys;

#[cfg(test)]
mod test_utils;

use std::io;

pub use rate_limit::{Clock, MonotonicClock, RateLimitError, RateLimiter, TokenBucket};
pub use raw::{AlignedBuffer, Operation, RawFile, RawFileError, RawFileOptions};

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
}
