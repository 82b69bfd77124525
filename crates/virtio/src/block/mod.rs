//! virtio-blk (block device, virtio 1.2, 5.2) over a [`storage::DiskBackend`].
//!
//! One request queue of up to [`QUEUE_SIZE`] entries. Requests: IN (read), OUT (write),
//! FLUSH, GET_ID (the 20-byte serial, zero-padded), DISCARD and WRITE_ZEROES (one range per
//! request). Offered features: `FLUSH`, `SEG_MAX`, `BLK_SIZE` (512), `DISCARD`,
//! `WRITE_ZEROES`, `RO` for a read-only disk, and the ring features of
//! [`crate::features::COMMON`]. The disk's size is rounded down to whole 512-byte sectors.
//!
//! Answers, as QEMU gives them: a write, discard or write-zeroes on a read-only disk is
//! `IOERR` and leaves the disk alone; a range past the capacity, data that is not whole
//! sectors, a header or data in the wrong direction, or a failing disk is `IOERR`; an
//! unknown request type, a discard or write-zeroes the driver did not negotiate, an unknown
//! flag or more than one range is `UNSUPP`. A chain whose last byte is not device-writable
//! has nowhere to put a status: it is returned used with 0 bytes, as is a chain
//! `collect_chain` refuses (loops, buffers outside guest memory…). Nothing the guest puts
//! in a chain makes the device panic or touch memory outside the chain's buffers.
//!
//! Requests run synchronously in [`VirtioDevice::process_queue`]. Data moves between the
//! disk and the guest's own buffers: each data segment becomes one or more host
//! [`IoSliceRaw`]s (split where guest memory regions end) for the disk's vectored methods
//! (`preadv`/`pwritev` on a raw file), with no copy. Should a segment not map (never
//! expected: the chain was checked against guest memory), the request moves through a
//! bounce buffer of at most [`CHUNK`] bytes instead.
//!
//! Rate limiting: with a [`storage::RateLimiter`], each request takes one operation and its
//! data bytes (IN and OUT) before it runs. When the limiter says wait, the device puts the
//! request back on the queue, stops, and [`Block::throttled_until`] tells when to try
//! again: the VMM arms a timer for that instant and, when it fires, has the transport
//! process queue 0 again (a driver notification before then retries too, harmlessly).

mod request;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use std::mem::offset_of;
use std::sync::Arc;
use std::time::Instant;

use storage::{DiskBackend, IoSliceRaw, RateLimiter};
use virtio_bindings::virtio_blk::{self as blk, virtio_blk_config};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

use crate::chain::{ChainError, collect_chain};
use crate::device::read_config_bytes;
use crate::{
    ActivateError, ActiveQueue, DeviceError, ExternalQueues, VirtioDevice, VirtioInterrupt,
    VirtioMemory, device_type, features,
};
use request::{Cursor, Framed, Refusal, total_len};

/// Maximum size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per sector: the unit of the capacity and of request offsets.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = blk::VIRTIO_BLK_ID_BYTES as usize;
/// Most data segments per request (`seg_max`): the queue minus header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most sectors in one discard or write-zeroes range (64 MiB): these run synchronously,
/// and zeroing by writing (where the host cannot punch holes) must stay short.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 17;
/// Discard granularity advertised, in sectors (4 KiB: the host file system's block).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
/// Largest piece of a request moved through the bounce buffer at once.
pub const CHUNK: usize = 1 << 20;
/// Alignment of the copy buffer (a page: enough for any `O_DIRECT` memory alignment).
const SCRATCH_ALIGN: usize = 4096;

const REQUEST_QUEUE: u16 = 0;
/// Bytes of the configuration space up to `write_zeroes_may_unmap` and its padding.
const CONFIG_LEN: usize = offset_of!(virtio_blk_config, max_secure_erase_sectors);
/// Bytes of a discard / write-zeroes range: le64 sector, le32 num_sectors, le32 flags.
const RANGE_LEN: u64 = 16;
const FLAG_UNMAP: u32 = blk::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// A request's status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done.
    Ok = blk::VIRTIO_BLK_S_OK as u8,
    /// Failed (or refused: read-only disk, out of range, malformed).
    IoErr = blk::VIRTIO_BLK_S_IOERR as u8,
    /// Not supported.
    Unsupp = blk::VIRTIO_BLK_S_UNSUPP as u8,
}

/// Why a block device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The serial does not fit GET_ID's 20 bytes.
    #[error("disk serial {serial:?} is {len} bytes long, virtio-blk allows at most {ID_BYTES}")]
    SerialTooLong {
        /// The serial given.
        serial: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// Settings of a [`Block`] beyond its disk.
#[derive(Debug, Default)]
pub struct BlockOptions {
    /// What GET_ID answers (at most 20 bytes; zero-padded). None answers 20 zero bytes.
    pub serial: Option<String>,
    /// Limits on bytes and requests per second.
    pub rate_limiter: Option<RateLimiter>,
}

/// What the device did since it was built.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    /// IN requests completed.
    pub reads: u64,
    /// Bytes those read.
    pub bytes_read: u64,
    /// OUT requests completed.
    pub writes: u64,
    /// Bytes those wrote.
    pub bytes_written: u64,
    /// FLUSH requests completed.
    pub flushes: u64,
    /// DISCARD requests completed.
    pub discards: u64,
    /// WRITE_ZEROES requests completed.
    pub write_zeroes: u64,
    /// Requests answered `IOERR`.
    pub errors: u64,
    /// Requests answered `UNSUPP`.
    pub unsupported: u64,
    /// Chains returned without a status (malformed).
    pub refused: u64,
    /// Times the rate limiter stopped the queue.
    pub throttled: u64,
}

/// A request that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Read { offset: u64, len: u64 },
    Write { offset: u64, len: u64 },
    Flush,
    GetId,
    Discard { offset: u64, len: u64 },
    WriteZeroes { offset: u64, len: u64, unmap: bool },
}

impl Request {
    /// Bytes the rate limiter charges.
    fn bytes(self) -> u64 {
        match self {
            Self::Read { len, .. } | Self::Write { len, .. } => len,
            _ => 0,
        }
    }
}

/// What became of one chain.
enum Served {
    /// Return it with this used length.
    Used(u32),
    /// Put it back: the rate limiter wants a pause.
    Throttled(Instant),
}

type Active = ActiveQueue;

/// The virtio block device.
pub struct Block {
    disk: Box<dyn DiskBackend>,
    read_only: bool,
    capacity: u64,
    serial: [u8; ID_BYTES],
    config: [u8; CONFIG_LEN],
    acked_features: u64,
    queue_sizes: [u16; 1],
    rate_limiter: Option<RateLimiter>,
    throttled_until: Option<Instant>,
    active: Option<Active>,
    /// Page-aligned, so `O_DIRECT` disks read and write it without a bounce copy.
    scratch: storage::AlignedBuffer,
    stats: BlockStats,
}

impl Block {
    /// A device serving `disk`, read-only if the disk is.
    pub fn new(disk: Box<dyn DiskBackend>, options: BlockOptions) -> Result<Self, BlockError> {
        let mut serial = [0u8; ID_BYTES];
        if let Some(given) = options.serial {
            let bytes = given.as_bytes();
            if bytes.len() > ID_BYTES {
                let len = bytes.len();
                return Err(BlockError::SerialTooLong { serial: given, len });
            }
            serial[..bytes.len()].copy_from_slice(bytes);
        }
        let capacity = disk.len() / SECTOR_SIZE;
        if !disk.len().is_multiple_of(SECTOR_SIZE) {
            tracing::warn!(
                len = disk.len(),
                "disk size is not a multiple of 512 bytes; the guest sees {capacity} sectors"
            );
        }
        Ok(Self {
            read_only: disk.is_read_only(),
            disk,
            capacity,
            serial,
            config: build_config(capacity),
            acked_features: 0,
            queue_sizes: [QUEUE_SIZE],
            rate_limiter: options.rate_limiter,
            throttled_until: None,
            active: None,
            scratch: storage::AlignedBuffer::new(CHUNK, SCRATCH_ALIGN),
            stats: BlockStats::default(),
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the guest sees a read-only disk.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// What the device did so far.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// Serves every available request of `queue`, with driver notifications off meanwhile,
    /// then interrupts the driver if it asked for it.
    fn drain(
        &mut self,
        mem: &VirtioMemory,
        queue: &mut Queue,
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let queue_error = |source| DeviceError::Queue {
            index: REQUEST_QUEUE,
            source,
        };
        let mut used_any = false;
        self.throttled_until = None;
        loop {
            queue.disable_notification(mem).map_err(queue_error)?;
            while let Some(chain) = queue.iter(mem).map_err(queue_error)?.next() {
                let head = chain.head_index();
                let len = match self.serve(mem, collect_chain(chain)) {
                    Served::Used(len) => len,
                    Served::Throttled(until) => {
                        queue.go_to_previous_position();
                        self.throttled_until = Some(until);
                        self.stats.throttled += 1;
                        // Let the driver's next notification retry as well as the timer.
                        queue.enable_notification(mem).map_err(queue_error)?;
                        return notify(mem, queue, interrupt, used_any);
                    }
                };
                match queue.add_used(mem, head, len) {
                    Ok(()) => used_any = true,
                    // A head index past the table: nothing to return it on; skip it.
                    Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                        tracing::debug!(head, "virtio-blk request with an invalid head skipped");
                    }
                    Err(error) => return Err(queue_error(error)),
                }
            }
            if !queue.enable_notification(mem).map_err(queue_error)? {
                break;
            }
        }
        notify(mem, queue, interrupt, used_any)
    }
}

/// Interrupts the driver if buffers were used and it asked to hear about them.
fn notify(
    mem: &VirtioMemory,
    queue: &mut Queue,
    interrupt: &dyn VirtioInterrupt,
    used_any: bool,
) -> Result<(), DeviceError> {
    let needs = used_any
        && queue
            .needs_notification(mem)
            .map_err(|source| DeviceError::Queue {
                index: REQUEST_QUEUE,
                source,
            })?;
    if needs {
        interrupt.signal_queue(REQUEST_QUEUE);
    }
    Ok(())
}

impl Block {
    /// Answers one chain.
    fn serve(&mut self, mem: &VirtioMemory, chain: Result<Vec<Descriptor>, ChainError>) -> Served {
        let descriptors = match chain {
            Ok(descriptors) => descriptors,
            Err(error) => {
                tracing::debug!(%error, "virtio-blk request refused");
                self.stats.refused += 1;
                return Served::Used(0);
            }
        };
        let framed = match request::frame(mem, &descriptors) {
            Ok(framed) => framed,
            Err(Refusal { status, reason }) => {
                tracing::debug!(reason, "virtio-blk request malformed");
                return match status {
                    Some((addr, used_len)) => self.answer(mem, addr, Status::IoErr, used_len),
                    None => {
                        self.stats.refused += 1;
                        Served::Used(0)
                    }
                };
            }
        };
        let request = match self.validate(mem, &framed) {
            Ok(request) => request,
            Err(status) => return self.answer(mem, framed.status, status, framed.used_len),
        };
        if let Some(limiter) = &mut self.rate_limiter
            && let Err(wait) = limiter.consume(request.bytes())
        {
            return Served::Throttled(limiter.now() + wait);
        }
        let status = self.execute(mem, request, &framed);
        self.answer(mem, framed.status, status, framed.used_len)
    }

    /// Writes the status byte and counts the outcome.
    fn answer(
        &mut self,
        mem: &VirtioMemory,
        at: GuestAddress,
        status: Status,
        used: u32,
    ) -> Served {
        match status {
            Status::Ok => {}
            Status::IoErr => self.stats.errors += 1,
            Status::Unsupp => self.stats.unsupported += 1,
        }
        if mem.write_obj(status as u8, at).is_err() {
            // Checked against guest memory with the chain; nothing else to do.
            tracing::debug!(addr = at.0, "virtio-blk status byte not writable");
        }
        Served::Used(used)
    }

    /// Checks a framed request against the disk and the negotiated features.
    fn validate(&self, mem: &VirtioMemory, framed: &Framed) -> Result<Request, Status> {
        let sector = framed.header.sector;
        match framed.header.request_type {
            blk::VIRTIO_BLK_T_IN => {
                if !framed.readable.is_empty() {
                    return Err(Status::IoErr);
                }
                let len = total_len(&framed.writable);
                let offset = self.data_range(sector, len)?;
                Ok(Request::Read { offset, len })
            }
            blk::VIRTIO_BLK_T_OUT => {
                if self.read_only || !framed.writable.is_empty() {
                    return Err(Status::IoErr);
                }
                let len = total_len(&framed.readable);
                let offset = self.data_range(sector, len)?;
                Ok(Request::Write { offset, len })
            }
            blk::VIRTIO_BLK_T_FLUSH => Ok(Request::Flush),
            blk::VIRTIO_BLK_T_GET_ID => Ok(Request::GetId),
            blk::VIRTIO_BLK_T_DISCARD => self.validate_range(mem, framed, false),
            blk::VIRTIO_BLK_T_WRITE_ZEROES => self.validate_range(mem, framed, true),
            _ => Err(Status::Unsupp),
        }
    }

    /// The byte offset of `len` bytes of data at `sector`, if they are whole sectors inside
    /// the disk.
    fn data_range(&self, sector: u64, len: u64) -> Result<u64, Status> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(Status::IoErr);
        }
        self.sector_range(sector, len / SECTOR_SIZE)
    }

    /// The byte offset of `sectors` sectors at `sector`, if inside the disk.
    fn sector_range(&self, sector: u64, sectors: u64) -> Result<u64, Status> {
        match sector.checked_add(sectors) {
            Some(end) if end <= self.capacity => Ok(sector * SECTOR_SIZE),
            _ => Err(Status::IoErr),
        }
    }

    /// Checks a DISCARD (`zeroes` false) or WRITE_ZEROES request and its one range.
    fn validate_range(
        &self,
        mem: &VirtioMemory,
        framed: &Framed,
        zeroes: bool,
    ) -> Result<Request, Status> {
        let feature = if zeroes {
            blk::VIRTIO_BLK_F_WRITE_ZEROES
        } else {
            blk::VIRTIO_BLK_F_DISCARD
        };
        if self.acked_features & bit(feature) == 0 {
            return Err(Status::Unsupp);
        }
        if self.read_only || !framed.writable.is_empty() {
            return Err(Status::IoErr);
        }
        let len = total_len(&framed.readable);
        if len == 0 || !len.is_multiple_of(RANGE_LEN) {
            return Err(Status::IoErr);
        }
        if len > RANGE_LEN {
            // max_discard_seg and max_write_zeroes_seg are 1.
            return Err(Status::Unsupp);
        }
        let mut raw = [0u8; RANGE_LEN as usize];
        Cursor::new(&framed.readable)
            .read(mem, &mut raw)
            .map_err(|_| Status::IoErr)?;
        let (sector, sectors, flags) = parse_range(&raw);
        let allowed_flags = if zeroes { FLAG_UNMAP } else { 0 };
        if flags & !allowed_flags != 0 {
            return Err(Status::Unsupp);
        }
        if sectors > MAX_DISCARD_SECTORS {
            return Err(Status::IoErr);
        }
        let offset = self.sector_range(sector, u64::from(sectors))?;
        let len = u64::from(sectors) * SECTOR_SIZE;
        Ok(if zeroes {
            Request::WriteZeroes {
                offset,
                len,
                unmap: flags & FLAG_UNMAP != 0,
            }
        } else {
            Request::Discard { offset, len }
        })
    }

    /// Runs a valid request against the disk.
    fn execute(&mut self, mem: &VirtioMemory, request: Request, framed: &Framed) -> Status {
        let result = match request {
            Request::Read { offset, len } => self.read(mem, &framed.writable, offset, len),
            Request::Write { offset, len } => self.write(mem, &framed.readable, offset, len),
            Request::Flush => self.disk.flush().map_err(Into::into),
            Request::GetId => {
                let n = total_len(&framed.writable).min(ID_BYTES as u64) as usize;
                Cursor::new(&framed.writable)
                    .write(mem, &self.serial[..n])
                    .map_err(Into::into)
            }
            Request::Discard { offset, len } => self.disk.discard(offset, len).map_err(Into::into),
            Request::WriteZeroes { offset, len, unmap } => self
                .disk
                .write_zeroes(offset, len, unmap)
                .map_err(Into::into),
        };
        match result {
            Ok(()) => {
                self.count(request);
                Status::Ok
            }
            Err(error) => {
                tracing::warn!(%error, ?request, "virtio-blk request failed");
                Status::IoErr
            }
        }
    }

    fn count(&mut self, request: Request) {
        let stats = &mut self.stats;
        match request {
            Request::Read { len, .. } => {
                stats.reads += 1;
                stats.bytes_read += len;
            }
            Request::Write { len, .. } => {
                stats.writes += 1;
                stats.bytes_written += len;
            }
            Request::Flush => stats.flushes += 1,
            Request::GetId => {}
            Request::Discard { .. } => stats.discards += 1,
            Request::WriteZeroes { .. } => stats.write_zeroes += 1,
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
        // read may still have written some of the bytes.
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
            // enabled). No Rust reference covers guest memory: the guest may write these
            // bytes while the disk uses them, which only garbles its own data.
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

fn parse_range(raw: &[u8; RANGE_LEN as usize]) -> (u64, u32, u32) {
    let mut sector = [0u8; 8];
    let mut sectors = [0u8; 4];
    let mut flags = [0u8; 4];
    sector.copy_from_slice(&raw[0..8]);
    sectors.copy_from_slice(&raw[8..12]);
    flags.copy_from_slice(&raw[12..16]);
    (
        u64::from_le_bytes(sector),
        u32::from_le_bytes(sectors),
        u32::from_le_bytes(flags),
    )
}

/// The configuration space (virtio 1.2, 5.2.4), little-endian, up to
/// `write_zeroes_may_unmap`; the fields of features not offered stay 0.
fn build_config(capacity: u64) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    let mut put = |offset: usize, bytes: &[u8]| {
        config[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(
        offset_of!(virtio_blk_config, capacity),
        &capacity.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, seg_max),
        &SEG_MAX.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, blk_size),
        &(SECTOR_SIZE as u32).to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, num_queues),
        &1u16.to_le_bytes(),
    );
    let limits = [
        (
            offset_of!(virtio_blk_config, max_discard_sectors),
            MAX_DISCARD_SECTORS,
        ),
        (offset_of!(virtio_blk_config, max_discard_seg), 1),
        (
            offset_of!(virtio_blk_config, discard_sector_alignment),
            DISCARD_SECTOR_ALIGNMENT,
        ),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            MAX_DISCARD_SECTORS,
        ),
        (offset_of!(virtio_blk_config, max_write_zeroes_seg), 1),
    ];
    for (offset, value) in limits {
        put(offset, &value.to_le_bytes());
    }
    // Write-zeroes with UNMAP may deallocate (a hole punched in the image file).
    put(offset_of!(virtio_blk_config, write_zeroes_may_unmap), &[1]);
    config
}

impl ExternalQueues for Block {
    fn process_external_queue(
        &mut self,
        index: u16,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let queue = crate::device::single_external_queue(queues, index)?;
        self.drain(mem, queue, interrupt)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let mut offered = features::COMMON
            | bit(blk::VIRTIO_BLK_F_FLUSH)
            | bit(blk::VIRTIO_BLK_F_SEG_MAX)
            | bit(blk::VIRTIO_BLK_F_BLK_SIZE)
            | bit(blk::VIRTIO_BLK_F_DISCARD)
            | bit(blk::VIRTIO_BLK_F_WRITE_ZEROES);
        if self.read_only {
            offered |= bit(blk::VIRTIO_BLK_F_RO);
        }
        offered
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.active = Some(ActiveQueue::activate(mem, queues, interrupt)?);
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        let mut active = ActiveQueue::take(&mut self.active, index)?;
        let result = self.drain(&active.mem, &mut active.queue, &*active.interrupt);
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.throttled_until = None;
    }

    fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        ActiveQueue::states(&self.active)
    }
}
