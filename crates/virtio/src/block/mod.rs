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
//! Requests run on a small pool of I/O threads ([`Block::with_io_threads`], what oxvmm
//! uses), up to one per thread in flight at once, as QEMU's `aio=threads` does; they finish
//! in any order (virtio allows it). The VMM's event loop (or a vCPU's notify write) calls
//! [`VirtioDevice::process_queue`], which publishes the requests that finished (status
//! byte, used ring, one interrupt), then takes requests from the available ring while
//! fewer than the pool's size are in flight, checks each one on that thread (chain,
//! framing, range, features, read-only: everything before any disk access), charges the
//! rate limiter and hands it to a thread (GET_ID, which needs no disk, is answered at once).
//! An I/O thread touches only the checked buffers of its request and the disk, through its
//! own handle on it ([`storage::DiskBackend::try_clone`]); the request carries a clone of the
//! guest memory map, which keeps that memory mapped until the thread is done.
//! Each completion writes [`VirtioDevice::queue_event`]'s eventfd, which the VMM watches like
//! a queue notification. While any request is in flight driver notifications stay off (each
//! costs the guest an exit; the next completion processes the queue anyway), and when the
//! pool is full the device stops taking requests until a completion frees a place.
//!
//! Nothing is left in flight where that would matter: [`VirtioDevice::reset`] waits for
//! every request to finish and drops them unpublished (the queue is gone);
//! [`VirtioDevice::quiesce`] (the VMM pauses the VM, or saves it) waits for them and
//! publishes them, and until [`VirtioDevice::resume`] no request starts, so a snapshot's
//! queue positions count every request taken as used. [`VirtioDevice::queue_states`]
//! refuses (`None`) while any is in flight. Activation and resume write the eventfd once,
//! so requests the driver made available meanwhile (or before a snapshot) are picked up.
//!
//! Without I/O threads ([`Block::new`] alone) requests run synchronously, one at a time, in
//! [`VirtioDevice::process_queue`] or [`ExternalQueues::process_external_queue`].
//!
//! The vhost-user back-end drives the same code with its queues held outside the device
//! ([`ExternalQueues`]), with I/O threads too: the completion eventfd is then
//! [`ExternalQueues::external_event_fd`], which the holder watches (level-triggered) and
//! answers with [`ExternalQueues::process_external_event`]: that reads the eventfd, then
//! publishes and takes requests as a kick does (a queue that is not usable keeps its
//! completions until it is processed again). One exception: a kick that finds a single
//! request available and none in flight runs it (and any the driver adds meanwhile) on the
//! holder's thread, which serves only this device: a guest waiting for each request would
//! pay two thread switches for nothing (through vhost-user, 11-22% of its throughput).
//! Before the holder answers where a stopped queue is (vhost-user `GET_VRING_BASE`) it hands
//! the device that queue, no longer ready, through
//! [`ExternalQueues::process_external_queue`]: the device waits for the requests in flight
//! and returns them used, so the position answered counts every request taken as used (as
//! [`VirtioDevice::quiesce`] does). Reset waits for them as above.
//!
//! Data moves between the disk and the guest's own buffers: each data segment becomes one
//! or more host [`storage::IoSliceRaw`]s (split where guest memory regions end) for the disk's
//! vectored methods (`preadv`/`pwritev` on a raw file), with no copy; pages a read fills
//! are marked in the guest memory's dirty bitmap (diff snapshots). Should a segment not map
//! (never expected: the chain was checked against guest memory), the request moves through
//! a bounce buffer of at most [`CHUNK`] bytes instead.
//!
//! Rate limiting: with a [`storage::RateLimiter`], each request takes one operation and its
//! data bytes (IN and OUT) before it runs. When the limiter says wait, the device puts the
//! request back on the queue, stops, and [`Block::throttled_until`] tells when to try
//! again: the VMM arms a timer for that instant and, when it fires, has the transport
//! process queue 0 again (a driver notification before then retries too, harmlessly).

mod executor;
mod io_threads;
mod request;

#[cfg(test)]
mod io_thread_tests;
#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use std::mem::offset_of;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use storage::{DiskBackend, RateLimiter};
use virtio_bindings::virtio_blk::{self as blk, virtio_blk_config};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::chain::{ChainError, collect_chain};
use crate::device::read_config_bytes;
use crate::{
    ActivateError, ActiveQueue, DeviceError, ExternalQueues, VirtioDevice, VirtioInterrupt,
    VirtioMemory, device_type, features,
};
use executor::Executor;
use io_threads::{Completion, IoThreads, Job};
use request::{Cursor, Framed, Refusal, total_len};

/// Maximum size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per sector: the unit of the capacity and of request offsets.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = blk::VIRTIO_BLK_ID_BYTES as usize;
/// Most data segments per request (`seg_max`): the queue minus header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most sectors in one discard or write-zeroes range (64 MiB): each runs in one call (on
/// the event loop without I/O threads), and zeroing by writing (where the host cannot punch
/// holes) must stay short.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 17;
/// Discard granularity advertised, in sectors (4 KiB: the host file system's block).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
/// Largest piece of a request moved through the bounce buffer at once.
pub const CHUNK: usize = 1 << 20;
/// I/O threads oxvmm gives each disk: the most requests in flight at once.
pub const IO_THREADS: usize = 8;
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
    /// The eventfd that announces completions could not be created.
    #[error("cannot create the virtio-blk completion eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The disk cannot be shared with I/O threads, or a thread could not start.
    #[error("cannot start {threads} virtio-blk I/O threads: {source}")]
    IoThreads {
        /// Threads asked for.
        threads: usize,
        /// What failed.
        #[source]
        source: std::io::Error,
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
    /// Handed to an I/O thread; returned when it finishes.
    Submitted,
}

type Active = ActiveQueue;

/// The virtio block device.
pub struct Block {
    /// Runs requests on the calling thread: all of them without I/O threads, GET_ID with.
    executor: Executor,
    read_only: bool,
    capacity: u64,
    config: [u8; CONFIG_LEN],
    acked_features: u64,
    queue_sizes: [u16; 1],
    rate_limiter: Option<RateLimiter>,
    throttled_until: Option<Instant>,
    active: Option<Active>,
    /// Written by each completion, by activation and by resume: "process queue 0".
    event: Arc<EventFd>,
    io: Option<IoThreads>,
    /// Requests handed to I/O threads and not yet published.
    in_flight: usize,
    /// Between `quiesce` and `resume`: no request starts.
    quiesced: bool,
    stats: BlockStats,
}

impl Block {
    /// A device serving `disk`, read-only if the disk is; requests run synchronously until
    /// [`Block::with_io_threads`].
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
        let event = EventFd::new(EFD_NONBLOCK).map_err(BlockError::EventFd)?;
        Ok(Self {
            read_only: disk.is_read_only(),
            executor: Executor::new(disk, serial),
            capacity,
            config: build_config(capacity),
            acked_features: 0,
            queue_sizes: [QUEUE_SIZE],
            rate_limiter: options.rate_limiter,
            throttled_until: None,
            active: None,
            event: Arc::new(event),
            io: None,
            in_flight: 0,
            quiesced: false,
            stats: BlockStats::default(),
        })
    }

    /// Runs data requests on `threads` I/O threads (at least 1, at most the queue size),
    /// each over its own handle on the disk ([`DiskBackend::try_clone`]): that many run at
    /// once. Fails if the disk cannot be shared or a thread cannot start.
    pub fn with_io_threads(mut self, threads: usize) -> Result<Self, BlockError> {
        let threads = threads.clamp(1, usize::from(QUEUE_SIZE));
        let failed = |source| BlockError::IoThreads { threads, source };
        if self.in_flight > 0 {
            return Err(failed(std::io::Error::other("requests are in flight")));
        }
        let executors = (0..threads)
            .map(|_| self.executor.try_clone())
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        self.io = Some(IoThreads::start(executors, self.event.clone()).map_err(failed)?);
        Ok(self)
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

    /// Publishes the requests the I/O threads finished, then serves the available requests
    /// of `queue` (with driver notifications off meanwhile) while there is room in flight
    /// (always, synchronously, without `use_threads`), then interrupts the driver if it
    /// asked for it.
    fn drain(
        &mut self,
        mem: &VirtioMemory,
        queue: &mut Queue,
        interrupt: &dyn VirtioInterrupt,
        use_threads: bool,
    ) -> Result<(), DeviceError> {
        let completions = self.take_completions();
        let mut used_any = self.publish(mem, queue, completions)?;
        if self.quiesced {
            return notify(mem, queue, interrupt, used_any);
        }
        self.throttled_until = None;
        loop {
            queue.disable_notification(mem).map_err(queue_error)?;
            while !(use_threads && self.threads_busy()) {
                let Some(chain) = queue.iter(mem).map_err(queue_error)?.next() else {
                    break;
                };
                let head = chain.head_index();
                let len = match self.serve(mem, collect_chain(chain), head, use_threads) {
                    Served::Used(len) => len,
                    Served::Submitted => continue,
                    Served::Throttled(until) => {
                        queue.go_to_previous_position();
                        self.throttled_until = Some(until);
                        self.stats.throttled += 1;
                        // Let the driver's next notification retry as well as the timer.
                        queue.enable_notification(mem).map_err(queue_error)?;
                        return notify(mem, queue, interrupt, used_any);
                    }
                };
                used_any |= add_used(mem, queue, head, len)?;
            }
            if use_threads && self.in_flight > 0 {
                // The next completion processes the queue again: the driver need not notify
                // (a notification costs the guest an exit) until nothing is in flight.
                break;
            }
            if !queue.enable_notification(mem).map_err(queue_error)? {
                break;
            }
        }
        notify(mem, queue, interrupt, used_any)
    }

    /// Whether every I/O thread has a request.
    fn threads_busy(&self) -> bool {
        self.io
            .as_ref()
            .is_some_and(|io| self.in_flight >= io.len())
    }

    /// What the I/O threads finished since last asked.
    fn take_completions(&self) -> Vec<Completion> {
        self.io
            .as_ref()
            .map(IoThreads::take_completions)
            .unwrap_or_default()
    }

    /// Answers finished requests and returns them used; true if any was. Every completion
    /// is accounted for even when the ring breaks (the first error is returned).
    fn publish(
        &mut self,
        mem: &VirtioMemory,
        queue: &mut Queue,
        completions: Vec<Completion>,
    ) -> Result<bool, DeviceError> {
        let mut used_any = false;
        let mut first_error = None;
        for done in completions {
            self.in_flight = self.in_flight.saturating_sub(1);
            let len = self.finish(
                mem,
                done.request,
                done.status,
                done.status_at,
                done.used_len,
            );
            match add_used(mem, queue, done.head, len) {
                Ok(used) => used_any |= used,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(used_any),
        }
    }

    /// Waits for every request in flight and publishes them.
    fn finish_in_flight(
        &mut self,
        mem: &VirtioMemory,
        queue: &mut Queue,
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let mut used_any = false;
        while let Some(completions) = self.wait_for_completions() {
            used_any |= self.publish(mem, queue, completions)?;
        }
        notify(mem, queue, interrupt, used_any)
    }

    /// Waits for every request in flight and forgets them (the queue is being reset: they
    /// must not be published, but their threads must be done with guest memory).
    fn drop_in_flight(&mut self) {
        while let Some(completions) = self.wait_for_completions() {
            for done in completions {
                self.in_flight = self.in_flight.saturating_sub(1);
                if done.status == Status::Ok {
                    self.count(done.request);
                }
            }
        }
        self.in_flight = 0;
    }

    /// While requests are in flight: waits until some finish and takes them. `None` when
    /// nothing is in flight.
    fn wait_for_completions(&self) -> Option<Vec<Completion>> {
        let io = self.io.as_ref().filter(|_| self.in_flight > 0)?;
        Some(io.wait_completions())
    }

    /// Whether the requests an external queue's holder asks for now go to the I/O threads:
    /// not when one request alone is available and none is in flight. The holder's thread
    /// serves only this device (vhost-user's vring worker), so running that request on it
    /// blocks nothing else, and saves the two thread switches of a hand-off, which a guest
    /// waiting for each request (queue depth 1) pays in full.
    fn external_use_threads(&self, mem: &VirtioMemory, queue: &Queue) -> bool {
        if self.io.is_none() {
            return false;
        }
        if self.in_flight > 0 {
            return true;
        }
        // A ring that cannot be read fails in `drain` anyway.
        queue
            .avail_idx(mem, Ordering::Acquire)
            .map_or(true, |avail| (avail - Wrapping(queue.next_avail())).0 > 1)
    }

    /// Has the event loop process the queue (as a completion does).
    fn kick(&self) {
        if let Err(error) = self.event.write(1) {
            tracing::warn!(%error, "cannot signal the virtio-blk event");
        }
    }
}

fn queue_error(source: virtio_queue::Error) -> DeviceError {
    DeviceError::Queue {
        index: REQUEST_QUEUE,
        source,
    }
}

/// Returns `head` used with `len` bytes; true if it was (a head index past the table has
/// nothing to return it on: it is skipped).
fn add_used(
    mem: &VirtioMemory,
    queue: &mut Queue,
    head: u16,
    len: u32,
) -> Result<bool, DeviceError> {
    match queue.add_used(mem, head, len) {
        Ok(()) => Ok(true),
        Err(virtio_queue::Error::InvalidDescriptorIndex) => {
            tracing::debug!(head, "virtio-blk request with an invalid head skipped");
            Ok(false)
        }
        Err(error) => Err(queue_error(error)),
    }
}

/// Interrupts the driver if buffers were used and it asked to hear about them.
fn notify(
    mem: &VirtioMemory,
    queue: &mut Queue,
    interrupt: &dyn VirtioInterrupt,
    used_any: bool,
) -> Result<(), DeviceError> {
    let needs = used_any && queue.needs_notification(mem).map_err(queue_error)?;
    if needs {
        interrupt.signal_queue(REQUEST_QUEUE);
    }
    Ok(())
}

impl Block {
    /// Answers one chain (whose head is `head`), or hands it to an I/O thread when
    /// `use_threads` and the device has them.
    fn serve(
        &mut self,
        mem: &VirtioMemory,
        chain: Result<Vec<Descriptor>, ChainError>,
        head: u16,
        use_threads: bool,
    ) -> Served {
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
                    Some((addr, used_len)) => {
                        Served::Used(self.answer(mem, addr, Status::IoErr, used_len))
                    }
                    None => {
                        self.stats.refused += 1;
                        Served::Used(0)
                    }
                };
            }
        };
        let request = match self.validate(mem, &framed) {
            Ok(request) => request,
            Err(status) => {
                return Served::Used(self.answer(mem, framed.status, status, framed.used_len));
            }
        };
        if let Some(limiter) = &mut self.rate_limiter
            && let Err(wait) = limiter.consume(request.bytes())
        {
            return Served::Throttled(limiter.now() + wait);
        }
        if let Some(io) = self.io.as_ref().filter(|_| use_threads)
            && request != Request::GetId
        {
            let mem = mem.clone();
            io.submit(Job {
                head,
                request,
                framed,
                mem,
            });
            self.in_flight += 1;
            return Served::Submitted;
        }
        let status = self.executor.run(mem, request, &framed);
        Served::Used(self.finish(mem, request, status, framed.status, framed.used_len))
    }

    /// Counts a request that ran and answers it; returns the used length.
    fn finish(
        &mut self,
        mem: &VirtioMemory,
        request: Request,
        status: Status,
        at: GuestAddress,
        used: u32,
    ) -> u32 {
        if status == Status::Ok {
            self.count(request);
        }
        self.answer(mem, at, status, used)
    }

    /// Writes the status byte and counts the outcome; returns the used length.
    fn answer(&mut self, mem: &VirtioMemory, at: GuestAddress, status: Status, used: u32) -> u32 {
        match status {
            Status::Ok => {}
            Status::IoErr => self.stats.errors += 1,
            Status::Unsupp => self.stats.unsupported += 1,
        }
        if mem.write_obj(status as u8, at).is_err() {
            // Checked against guest memory with the chain; nothing else to do.
            tracing::debug!(addr = at.0, "virtio-blk status byte not writable");
        }
        used
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
        if !queue.ready() {
            // The holder is stopping the queue: what was taken from it must be used on it.
            return self.finish_in_flight(mem, queue, interrupt);
        }
        let use_threads = self.external_use_threads(mem, queue);
        self.drain(mem, queue, interrupt, use_threads)
    }

    fn external_event_fd(&self) -> Option<RawFd> {
        self.io.as_ref().map(|_| self.event.as_raw_fd())
    }

    fn process_external_event(
        &mut self,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        // Read first (the holder watches it level-triggered): a completion after this read
        // writes it again. Nothing to read (EAGAIN) is fine.
        let _ = self.event.read();
        match queues.get_mut(usize::from(REQUEST_QUEUE)) {
            Some(queue) if queue.ready() => {
                let use_threads = self.io.is_some();
                self.drain(mem, queue, interrupt, use_threads)
            }
            // Not usable now: the completions wait for the next kick or for the stop.
            _ => Ok(()),
        }
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
        // Requests already available (a restored snapshot's) get processed.
        self.kick();
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        let mut active = ActiveQueue::take(&mut self.active, index)?;
        let result = self.drain(&active.mem, &mut active.queue, &*active.interrupt, true);
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.drop_in_flight();
        self.active = None;
        self.acked_features = 0;
        self.throttled_until = None;
    }

    fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        if self.in_flight > 0 {
            // The positions would count requests as taken that are not used yet.
            tracing::warn!(
                in_flight = self.in_flight,
                "virtio-blk state asked for while requests are in flight (not quiesced)"
            );
            return None;
        }
        ActiveQueue::states(&self.active)
    }

    fn queue_event(&self, index: u16) -> Option<&EventFd> {
        (index == REQUEST_QUEUE).then_some(&*self.event)
    }

    fn quiesce(&mut self) -> Result<(), DeviceError> {
        self.quiesced = true;
        let Some(mut active) = self.active.take() else {
            self.drop_in_flight();
            return Ok(());
        };
        let result = self.finish_in_flight(&active.mem, &mut active.queue, &*active.interrupt);
        self.active = Some(active);
        result
    }

    fn resume(&mut self) {
        self.quiesced = false;
        self.kick();
    }
}
