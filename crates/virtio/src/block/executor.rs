//! Runs a validated virtio-blk request against a disk: the part of the device that may run
//! on an I/O thread. It touches only the buffers of the request it is handed (checked with
//! the chain and by `Block::validate`) and the disk; the status byte, the used ring and the
//! statistics stay with the device.

use storage::{DiskBackend, IoSliceRaw};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestMemoryBackend, VolatileSlice};

use super::request::{self, Cursor, Framed, total_len};
use super::{CHUNK, ID_BYTES, Request, SCRATCH_ALIGN, Status};
use crate::VirtioMemory;

/// A disk with its own bounce buffer: the synchronous device has one, each I/O thread
/// another (over its own handle on the same disk).
pub(super) struct Executor {
    disk: Box<dyn DiskBackend>,
    serial: [u8; ID_BYTES],
    /// Page-aligned, so `O_DIRECT` disks read and write it without a bounce copy.
    scratch: storage::AlignedBuffer,
}

impl Executor {
    pub(super) fn new(disk: Box<dyn DiskBackend>, serial: [u8; ID_BYTES]) -> Self {
        Self {
            disk,
            serial,
            scratch: storage::AlignedBuffer::new(CHUNK, SCRATCH_ALIGN),
        }
    }

    /// An executor over another handle on the same disk, for an I/O thread.
    pub(super) fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self::new(self.disk.try_clone()?, self.serial))
    }

    /// Runs a valid request; a failure is logged and answered `IOERR`.
    pub(super) fn run(&mut self, mem: &VirtioMemory, request: Request, framed: &Framed) -> Status {
        match self.execute(mem, request, framed) {
            Ok(()) => Status::Ok,
            Err(error) => {
                tracing::warn!(%error, ?request, "virtio-blk request failed");
                Status::IoErr
            }
        }
    }

    fn execute(
        &mut self,
        mem: &VirtioMemory,
        request: Request,
        framed: &Framed,
    ) -> Result<(), ExecuteError> {
        match request {
            Request::Read { offset, len } => self.read(mem, &framed.writable, offset, len),
            Request::Write { offset, len } => self.write(mem, &framed.readable, offset, len),
            Request::Flush => Ok(self.disk.flush()?),
            Request::GetId => {
                let n = total_len(&framed.writable).min(ID_BYTES as u64) as usize;
                Ok(Cursor::new(&framed.writable).write(mem, &self.serial[..n])?)
            }
            Request::Discard { offset, len } => Ok(self.disk.discard(offset, len)?),
            Request::WriteZeroes { offset, len, unmap } => {
                Ok(self.disk.write_zeroes(offset, len, unmap)?)
            }
        }
    }

    /// Disk → guest, straight into the guest's buffers.
    fn read(
        &mut self,
        mem: &VirtioMemory,
        buffers: &[request::Segment],
        offset: u64,
        len: u64,
    ) -> Result<(), ExecuteError> {
        let Some(slices) = guest_slices(mem, buffers) else {
            return self.read_bounced(mem, buffers, offset, len);
        };
        let read = self.disk.read_vectored_at(offset, &host_segments(&slices));
        // The disk wrote through raw pointers, which the dirty bitmap does not see; a failed
        // read may still have written some of the bytes. The bitmap is atomic: marking from
        // an I/O thread is fine.
        for slice in &slices {
            slice.bitmap().mark_dirty(0, slice.len());
        }
        read?;
        Ok(())
    }

    /// Guest → disk, straight from the guest's buffers.
    fn write(
        &mut self,
        mem: &VirtioMemory,
        buffers: &[request::Segment],
        offset: u64,
        len: u64,
    ) -> Result<(), ExecuteError> {
        let Some(slices) = guest_slices(mem, buffers) else {
            return self.write_bounced(mem, buffers, offset, len);
        };
        self.disk
            .write_vectored_at(offset, &host_segments(&slices))?;
        Ok(())
    }

    /// Disk → guest through the bounce buffer, a chunk at a time.
    fn read_bounced(
        &mut self,
        mem: &VirtioMemory,
        buffers: &[request::Segment],
        offset: u64,
        len: u64,
    ) -> Result<(), ExecuteError> {
        self.bounce(buffers, offset, len, |disk, at, chunk, cursor| {
            disk.read_at(at, chunk)?;
            cursor.write(mem, chunk)?;
            Ok(())
        })
    }

    /// Guest → disk through the bounce buffer, a chunk at a time.
    fn write_bounced(
        &mut self,
        mem: &VirtioMemory,
        buffers: &[request::Segment],
        offset: u64,
        len: u64,
    ) -> Result<(), ExecuteError> {
        self.bounce(buffers, offset, len, |disk, at, chunk, cursor| {
            cursor.read(mem, chunk)?;
            disk.write_at(at, chunk)?;
            Ok(())
        })
    }

    /// Walks `len` bytes at disk `offset` and in `buffers` a bounce-buffer chunk at a time;
    /// `copy` moves one chunk (at its disk offset) between the disk, the bounce buffer and
    /// the guest's buffers.
    fn bounce(
        &mut self,
        buffers: &[request::Segment],
        offset: u64,
        len: u64,
        mut copy: impl FnMut(
            &mut dyn DiskBackend,
            u64,
            &mut [u8],
            &mut Cursor<'_>,
        ) -> Result<(), ExecuteError>,
    ) -> Result<(), ExecuteError> {
        let mut cursor = Cursor::new(buffers);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let chunk = &mut self.scratch.as_mut_slice()[..n];
            // Inside the disk (checked with the request): no overflow.
            copy(&mut *self.disk, offset + done, chunk, &mut cursor)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// A slice of guest memory with its piece of the dirty bitmap.
type GuestSlice<'m> = VolatileSlice<'m, vm_memory::bitmap::MS<'m, VirtioMemory>>;

/// The guest memory of `segments`, in order, cut where memory regions end; `None` if any
/// byte is not in guest memory (the chain checks rule that out) or a length does not fit.
fn guest_slices<'m>(
    mem: &'m VirtioMemory,
    segments: &[request::Segment],
) -> Option<Vec<GuestSlice<'m>>> {
    let mut slices = Vec::with_capacity(segments.len());
    for segment in segments {
        let len = usize::try_from(segment.len).ok()?;
        for slice in GuestMemoryBackend::get_slices(mem, segment.addr, len) {
            slices.push(slice.ok()?);
        }
    }
    Some(slices)
}

/// The host segments of `slices`, valid while the slices borrow guest memory.
fn host_segments<'m>(slices: &[GuestSlice<'m>]) -> Vec<IoSliceRaw<'m>> {
    slices
        .iter()
        .map(|slice| {
            let guard = slice.ptr_guard_mut();
            // SAFETY: the bytes are a mapping of guest memory that `mem` (borrowed for 'm)
            // owns, so they stay mapped, readable and writable for 'm; the `PtrGuardMut`
            // only carries the address (the xen feature, which maps on demand, is not
            // enabled). No Rust reference covers guest memory: the guest (or another I/O
            // thread serving an overlapping request) may write these bytes while the disk
            // uses them, which only garbles the guest's own data.
            unsafe { IoSliceRaw::new(guard.as_ptr(), guard.len()) }
        })
        .collect()
}

/// Why a valid request failed: the disk or (never expected) guest memory.
#[derive(Debug, thiserror::Error)]
enum ExecuteError {
    #[error(transparent)]
    Disk(#[from] std::io::Error),
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}
