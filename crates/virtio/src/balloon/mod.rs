//! virtio-balloon (traditional memory balloon, virtio 1.2, 5.5).
//!
//! The host sets a target, `num_pages` in the configuration space ([`Balloon::set_target_pages`],
//! which raises a configuration change interrupt); the driver gives pages up by sending
//! their page frame numbers on the inflate queue and takes them back on the deflate queue,
//! and reports how many it holds in `actual`.
//!
//! | queue | index | buffers |
//! | --- | --- | --- |
//! | inflate | 0 | device-readable arrays of le32 PFNs (4 KiB frames) |
//! | deflate | 1 | the same |
//! | stats | 2, with `VIRTIO_BALLOON_F_STATS_VQ` | device-readable `le16 tag, le64 value` pairs |
//!
//! Configuration space: `le32 num_pages` (the host's target, read-only for the driver) at 0,
//! `le32 actual` (written by the driver) at 4; the fields of features this device never
//! offers (free page hinting, page poisoning) read as 0.
//!
//! Inflate: every PFN whose page lies inside guest memory is released through a
//! [`PageReleaser`] (the VMM's [`GuestMemoryReleaser`] gives it back to the host with
//! `madvise`); neighbouring pages go in one call; PFNs outside guest memory are skipped with
//! a warning; duplicates are released again, harmlessly. Deflate is bookkeeping only: the
//! device does not negotiate `MUST_TELL_HOST`, and a released page comes back zero-filled
//! when the guest touches it. Offered features: `STATS_VQ` and `DEFLATE_ON_OOM` as
//! [`BalloonOptions`] say, with [`crate::features::COMMON`].
//!
//! Stats: the driver sends a buffer; the device keeps the values ([`Balloon::stats`]) and holds
//! the buffer. [`Balloon::request_stats`] hands it back (used, 0 bytes), which asks the driver
//! to send fresh values. A chain that is malformed, reaches outside guest memory or holds a
//! device-writable buffer is returned used with 0 bytes and changes nothing.

mod release;
mod stats;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transport_tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

pub use release::{GuestMemoryReleaser, PageReleaser};
pub use stats::{BalloonStats, MAX_STATS_BYTES, STAT_LEN};

use crate::chain::{ChainError, collect_chain};
use crate::{
    ActivateError, DeviceError, DeviceStateError, VirtioDevice, VirtioDeviceState, VirtioInterrupt,
    VirtioMemory, device_type, features,
};

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// `VIRTIO_BALLOON_PFN_SHIFT`: PFNs count 4 KiB frames, whatever the guest's page size.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes of the page a PFN names.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Most PFNs read from one inflate or deflate chain (256 MiB of guest memory; Linux sends
/// 256 a buffer): the rest of a longer chain is ignored, so one notification costs bounded
/// time and memory.
pub const MAX_PFNS_PER_CHAIN: usize = 1 << 16;
/// `VIRTIO_BALLOON_F_STATS_VQ`: the stats queue exists.
pub const F_STATS_VQ: u64 = 1 << 1;
/// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the driver may deflate when the guest runs out of memory.
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// Queue indexes.
pub const INFLATE_QUEUE: u16 = 0;
/// The deflate queue.
pub const DEFLATE_QUEUE: u16 = 1;
/// The stats queue (only with [`F_STATS_VQ`]).
pub const STATS_QUEUE: u16 = 2;

/// Bytes of the configuration space: `num_pages`, `actual`.
const CONFIG_LEN: usize = 8;
const ACTUAL_OFFSET: usize = 4;
const PFN_LEN: usize = 4;

/// Why a balloon size or target cannot be applied to a guest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    /// A balloon as large as the guest's memory would leave it nothing.
    #[error("balloon size {size} bytes is not smaller than the guest's memory ({ram} bytes)")]
    SizeTooLarge {
        /// The balloon size asked for, in bytes.
        size: u64,
        /// The guest's memory, in bytes.
        ram: u64,
    },
    /// The guest cannot keep more memory than it has.
    #[error("balloon target {target_mib} MiB is more than the guest's memory ({ram_mib} MiB)")]
    TargetAboveMemory {
        /// The memory the guest should keep, in MiB.
        target_mib: u64,
        /// The guest's memory, in MiB.
        ram_mib: u64,
    },
    /// A target of 0 would take all of the guest's memory.
    #[error("balloon target 0 MiB would take all of the guest's memory")]
    TargetZero,
    /// More pages than the 32-bit `num_pages` holds (16 TiB).
    #[error("a balloon of {pages} pages does not fit virtio-balloon's 32-bit page count")]
    TooManyPages {
        /// The pages asked for.
        pages: u64,
    },
}

/// The balloon target, in pages, for a balloon of `size_bytes` (`--balloon size=N`, as Cloud
/// Hypervisor means it: how much memory the balloon takes from the guest), rounded down to
/// whole pages.
pub fn pages_for_size(size_bytes: u64, ram_bytes: u64) -> Result<u32, BalloonError> {
    if size_bytes >= ram_bytes && size_bytes > 0 {
        return Err(BalloonError::SizeTooLarge {
            size: size_bytes,
            ram: ram_bytes,
        });
    }
    let pages = size_bytes >> PAGE_SHIFT;
    u32::try_from(pages).map_err(|_| BalloonError::TooManyPages { pages })
}

/// The balloon target, in pages, that leaves the guest `target_mib` MiB of its `ram_bytes`
/// (`PUT /api/v1/vm.balloon {"target_mib": N}`, QEMU's `balloon N`).
pub fn pages_for_target_mib(target_mib: u64, ram_bytes: u64) -> Result<u32, BalloonError> {
    if target_mib == 0 {
        return Err(BalloonError::TargetZero);
    }
    let above = || BalloonError::TargetAboveMemory {
        target_mib,
        ram_mib: ram_bytes >> 20,
    };
    let target = target_mib.checked_mul(1 << 20).ok_or_else(above)?;
    let taken = ram_bytes.checked_sub(target).ok_or_else(above)?;
    let pages = taken >> PAGE_SHIFT;
    u32::try_from(pages).map_err(|_| BalloonError::TooManyPages { pages })
}

/// Settings of a [`Balloon`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BalloonOptions {
    /// The initial target, `num_pages` (see [`pages_for_size`]).
    pub target_pages: u32,
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// Offer `VIRTIO_BALLOON_F_STATS_VQ` (a third queue).
    pub stats: bool,
}

/// What the device did since it was built (kept in snapshots).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BalloonCounters {
    /// PFNs inside guest memory received on the inflate queue (duplicates count again).
    pub inflated_pages: u64,
    /// PFNs inside guest memory received on the deflate queue.
    pub deflated_pages: u64,
    /// PFNs outside guest memory, skipped.
    pub refused_pfns: u64,
    /// Releases the [`PageReleaser`] failed.
    pub release_errors: u64,
    /// Chains refused whole (malformed, outside guest memory, device-writable buffers).
    pub refused_chains: u64,
    /// Stats buffers received.
    pub stats_updates: u64,
}

/// What a snapshot keeps of virtio-balloon beyond its queues.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BalloonState {
    /// The host's target (`num_pages`).
    pub num_pages: u32,
    /// The driver's `actual`.
    pub actual: u32,
    /// Head of the stats buffer the device holds, to hand back on the next request.
    pub stats_head: Option<u16>,
    /// The latest statistics.
    pub stats: BalloonStats,
    /// [`Balloon::counters`].
    pub counters: BalloonCounters,
}

/// What the device does with one chain.
enum Outcome {
    /// Return it used (with 0 bytes: the device writes nothing).
    Used,
    /// Keep it (the stats buffer) until the host wants fresh statistics.
    Hold,
}

/// The queues of an activated balloon, with the memory and interrupt it was activated with.
struct Active {
    mem: VirtioMemory,
    /// Every queue the transport handed over, in order (the stats queue too when unused, so
    /// that snapshots report all of them).
    queues: Vec<Queue>,
    interrupt: Arc<dyn VirtioInterrupt>,
    /// The driver negotiated `STATS_VQ` and enabled queue 2.
    stats_enabled: bool,
}

/// The virtio memory balloon device.
pub struct Balloon {
    options: BalloonOptions,
    queue_sizes: Vec<u16>,
    num_pages: u32,
    actual: u32,
    acked_features: u64,
    releaser: Box<dyn PageReleaser>,
    active: Option<Active>,
    stats: BalloonStats,
    stats_head: Option<u16>,
    counters: BalloonCounters,
    scratch: Vec<u8>,
}

impl Balloon {
    /// A balloon with `options`, releasing inflated pages through `releaser`.
    pub fn new(options: BalloonOptions, releaser: Box<dyn PageReleaser>) -> Self {
        let queues = if options.stats { 3 } else { 2 };
        Self {
            options,
            queue_sizes: vec![QUEUE_SIZE; queues],
            num_pages: options.target_pages,
            actual: 0,
            acked_features: 0,
            releaser,
            active: None,
            stats: BalloonStats::default(),
            stats_head: None,
            counters: BalloonCounters::default(),
            scratch: Vec::new(),
        }
    }

    /// Sets the target (`num_pages`), in 4 KiB pages, and tells a running driver through a
    /// configuration change interrupt. A driver not running yet reads it when it starts.
    pub fn set_target_pages(&mut self, pages: u32) {
        if pages == self.num_pages {
            return;
        }
        tracing::debug!(from = self.num_pages, to = pages, "virtio-balloon target");
        self.num_pages = pages;
        if let Some(active) = &self.active {
            active.interrupt.signal_config();
        }
    }

    /// The target, in pages.
    pub fn target_pages(&self) -> u32 {
        self.num_pages
    }

    /// The pages the driver says it holds in the balloon (`actual`; 0 after a reset).
    pub fn actual_pages(&self) -> u32 {
        self.actual
    }

    /// The latest statistics the driver sent.
    pub fn stats(&self) -> &BalloonStats {
        &self.stats
    }

    /// What the device did since it was built.
    pub fn counters(&self) -> BalloonCounters {
        self.counters
    }

    /// Asks the driver for fresh statistics by handing back the stats buffer it holds.
    /// `Ok(false)` when there is none to hand back (no stats queue, not running, or the
    /// driver has not sent the refreshed buffer yet). An error means the ring is broken.
    pub fn request_stats(&mut self) -> Result<bool, DeviceError> {
        let Some(active) = self.active.as_mut().filter(|active| active.stats_enabled) else {
            return Ok(false);
        };
        let Some(head) = self.stats_head.take() else {
            return Ok(false);
        };
        let queue = &mut active.queues[usize::from(STATS_QUEUE)];
        let used = return_used(queue, &active.mem, STATS_QUEUE, head)?;
        notify(active, STATS_QUEUE, used)?;
        Ok(used)
    }

    /// Serves every available chain of queue `index`, with notifications from the driver off
    /// meanwhile, then interrupts the driver if it asked for it.
    fn drain(&mut self, active: &mut Active, index: u16) -> Result<(), DeviceError> {
        let queue_error = |source| DeviceError::Queue { index, source };
        let mem = active.mem.clone();
        let queue = &mut active.queues[usize::from(index)];
        let mut used_any = false;
        loop {
            queue.disable_notification(&mem).map_err(queue_error)?;
            while let Some(chain) = queue.iter(&mem).map_err(queue_error)?.next() {
                let head = chain.head_index();
                let outcome = self.serve(&mem, index, chain);
                let to_return = match outcome {
                    Outcome::Used => Some(head),
                    // A driver that sends a second stats buffer gets the first one back.
                    Outcome::Hold => self.stats_head.replace(head),
                };
                if let Some(head) = to_return {
                    used_any |= return_used(queue, &mem, index, head)?;
                }
            }
            if !queue.enable_notification(&mem).map_err(queue_error)? {
                break;
            }
        }
        notify(active, index, used_any)
    }

    /// Handles one chain of queue `index`.
    fn serve(
        &mut self,
        mem: &VirtioMemory,
        index: u16,
        chain: DescriptorChain<&VirtioMemory>,
    ) -> Outcome {
        let descriptors = match readable_chain(chain) {
            Ok(descriptors) => descriptors,
            Err(error) => {
                tracing::debug!(%error, queue = index, "virtio-balloon buffer refused");
                self.counters.refused_chains += 1;
                return Outcome::Used;
            }
        };
        let limit = if index == STATS_QUEUE {
            MAX_STATS_BYTES
        } else {
            MAX_PFNS_PER_CHAIN * PFN_LEN
        };
        let mut bytes = std::mem::take(&mut self.scratch);
        let outcome = match read_chain(mem, &descriptors, limit, &mut bytes) {
            Ok(()) if index == INFLATE_QUEUE => self.inflate(mem, &bytes),
            Ok(()) if index == DEFLATE_QUEUE => self.deflate(mem, &bytes),
            Ok(()) => self.receive_stats(&bytes),
            Err(error) => {
                // Checked against guest memory with the chain: not expected.
                tracing::warn!(%error, queue = index, "virtio-balloon buffer unreadable");
                self.counters.refused_chains += 1;
                Outcome::Used
            }
        };
        self.scratch = bytes;
        outcome
    }

    /// Releases the pages of an inflate buffer, neighbours together.
    fn inflate(&mut self, mem: &VirtioMemory, pfns: &[u8]) -> Outcome {
        let mut run = PageRun::default();
        let mut outside = Outside::default();
        for pfn in pfns.chunks_exact(PFN_LEN).map(parse_pfn) {
            let addr = u64::from(pfn) << PAGE_SHIFT;
            if !page_in_memory(mem, addr) {
                outside.add(pfn);
                continue;
            }
            self.counters.inflated_pages += 1;
            if let Some((start, len)) = run.push(addr) {
                self.release(start, len);
            }
        }
        if let Some((start, len)) = run.finish() {
            self.release(start, len);
        }
        self.count_outside(outside, "inflate");
        Outcome::Used
    }

    /// Counts the pages of a deflate buffer: nothing to do on the host, which never kept
    /// anything of them.
    fn deflate(&mut self, mem: &VirtioMemory, pfns: &[u8]) -> Outcome {
        let mut outside = Outside::default();
        for pfn in pfns.chunks_exact(PFN_LEN).map(parse_pfn) {
            if page_in_memory(mem, u64::from(pfn) << PAGE_SHIFT) {
                self.counters.deflated_pages += 1;
            } else {
                outside.add(pfn);
            }
        }
        self.count_outside(outside, "deflate");
        Outcome::Used
    }

    /// Keeps the statistics of a stats buffer (replacing the previous ones whole, as QEMU
    /// does) and holds the buffer.
    fn receive_stats(&mut self, bytes: &[u8]) -> Outcome {
        let (stats, unknown) = BalloonStats::parse(bytes);
        if unknown > 0 {
            tracing::debug!(
                unknown,
                "virtio-balloon statistics with unknown tags ignored"
            );
        }
        self.stats = stats;
        self.counters.stats_updates += 1;
        Outcome::Hold
    }

    fn release(&mut self, start: u64, len: u64) {
        if let Err(error) = self.releaser.release(start, len) {
            self.counters.release_errors += 1;
            tracing::warn!(%error, start, len, "virtio-balloon could not release guest memory");
        }
    }

    /// Counts PFNs outside guest memory; warns the first time only (after that they are in
    /// the counters and debug logs), so a hostile guest cannot flood the log.
    fn count_outside(&mut self, outside: Outside, queue: &str) {
        if outside.count == 0 {
            return;
        }
        let (count, first) = (outside.count, outside.first);
        if self.counters.refused_pfns == 0 {
            tracing::warn!(
                count,
                first,
                queue,
                "virtio-balloon PFNs outside guest memory skipped"
            );
        } else {
            tracing::debug!(
                count,
                first,
                queue,
                "virtio-balloon PFNs outside guest memory skipped"
            );
        }
        self.counters.refused_pfns += count;
    }

    /// Notices a stats buffer the driver made available before `DRIVER_OK` (Linux primes
    /// the queue then; the transport drops notifications until the device runs).
    fn pick_up_stats(&mut self, active: &mut Active) {
        if !active.stats_enabled || self.stats_head.is_some() {
            return;
        }
        if let Err(error) = self.drain(active, STATS_QUEUE) {
            tracing::warn!(%error, "virtio-balloon stats queue unusable at activation");
        }
    }
}

/// Reads up to `limit` bytes of a chain's buffers, in order, into `out`.
fn read_chain(
    mem: &VirtioMemory,
    descriptors: &[Descriptor],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), vm_memory::GuestMemoryError> {
    out.clear();
    for descriptor in descriptors {
        let room = limit - out.len();
        if room == 0 {
            break;
        }
        let take = usize::try_from(descriptor.len()).map_or(room, |len| len.min(room));
        let start = out.len();
        out.resize(start + take, 0);
        mem.read_slice(&mut out[start..], descriptor.addr())?;
    }
    Ok(())
}

/// Returns `head` used with 0 bytes; false when its index is outside the table (nothing to
/// return it on: skipped).
fn return_used(
    queue: &mut Queue,
    mem: &VirtioMemory,
    index: u16,
    head: u16,
) -> Result<bool, DeviceError> {
    match queue.add_used(mem, head, 0) {
        Ok(()) => Ok(true),
        Err(virtio_queue::Error::InvalidDescriptorIndex) => {
            tracing::debug!(
                head,
                queue = index,
                "virtio-balloon buffer with an invalid head"
            );
            Ok(false)
        }
        Err(source) => Err(DeviceError::Queue { index, source }),
    }
}

/// Interrupts the driver if buffers were used and it asked to hear about them.
fn notify(active: &mut Active, index: u16, used_any: bool) -> Result<(), DeviceError> {
    let queue = &mut active.queues[usize::from(index)];
    let needs = used_any
        && queue
            .needs_notification(&active.mem)
            .map_err(|source| DeviceError::Queue { index, source })?;
    if needs {
        active.interrupt.signal_queue(index);
    }
    Ok(())
}

/// Like [`crate::chain::collect_chain`], for chains the device only reads.
fn readable_chain(chain: DescriptorChain<&VirtioMemory>) -> Result<Vec<Descriptor>, ChainError> {
    let head = chain.head_index();
    let descriptors = collect_chain(chain)?;
    match descriptors.iter().find(|d| d.is_write_only()) {
        Some(writable) => Err(ChainError::WrongDirection {
            head,
            addr: writable.addr().raw_value(),
            len: writable.len(),
        }),
        None => Ok(descriptors),
    }
}

fn parse_pfn(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; PFN_LEN];
    raw.copy_from_slice(bytes);
    u32::from_le_bytes(raw)
}

/// Whether the whole 4 KiB page at `addr` is guest memory.
fn page_in_memory(mem: &VirtioMemory, addr: u64) -> bool {
    GuestMemory::check_range(
        mem,
        GuestAddress(addr),
        PAGE_SIZE as usize,
        Permissions::ReadWrite,
    )
}

/// Consecutive pages collected into one release.
#[derive(Default)]
struct PageRun {
    start: u64,
    len: u64,
}

impl PageRun {
    /// Adds the page at `addr`; returns the run it ends, if it does not continue it.
    fn push(&mut self, addr: u64) -> Option<(u64, u64)> {
        if self.len > 0 && self.start.checked_add(self.len) == Some(addr) {
            self.len += PAGE_SIZE;
            return None;
        }
        let finished = self.finish();
        self.start = addr;
        self.len = PAGE_SIZE;
        finished
    }

    fn finish(&mut self) -> Option<(u64, u64)> {
        let run = (self.len > 0).then_some((self.start, self.len));
        self.len = 0;
        run
    }
}

/// PFNs of one buffer that were outside guest memory.
#[derive(Default)]
struct Outside {
    count: u64,
    first: u32,
}

impl Outside {
    fn add(&mut self, pfn: u32) {
        if self.count == 0 {
            self.first = pfn;
        }
        self.count += 1;
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let mut offered = features::COMMON;
        if self.options.stats {
            offered |= F_STATS_VQ;
        }
        if self.options.deflate_on_oom {
            offered |= F_DEFLATE_ON_OOM;
        }
        offered
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_LEN];
        config[..ACTUAL_OFFSET].copy_from_slice(&self.num_pages.to_le_bytes());
        config[ACTUAL_OFFSET..].copy_from_slice(&self.actual.to_le_bytes());
        crate::device::read_config_bytes(&config, offset, data);
    }

    /// Only `actual` is writable, at any width; the rest is ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut actual = self.actual.to_le_bytes();
        for (i, byte) in data.iter().enumerate() {
            let at = usize::try_from(offset)
                .ok()
                .and_then(|start| start.checked_add(i));
            if let Some(at) = at.filter(|at| (ACTUAL_OFFSET..CONFIG_LEN).contains(at)) {
                actual[at - ACTUAL_OFFSET] = *byte;
            }
        }
        let actual = u32::from_le_bytes(actual);
        if actual != self.actual {
            tracing::debug!(actual, target = self.num_pages, "virtio-balloon actual");
            self.actual = actual;
        }
    }

    fn activate(
        &mut self,
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        if queues.len() != self.queue_sizes.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                given: queues.len(),
            });
        }
        for index in [INFLATE_QUEUE, DEFLATE_QUEUE].map(usize::from) {
            if !queues[index].ready() {
                return Err(ActivateError::QueueNotEnabled { index });
            }
        }
        let stats_queue = queues
            .get(usize::from(STATS_QUEUE))
            .filter(|queue| queue.ready() && self.acked_features & F_STATS_VQ != 0);
        let stats_enabled = stats_queue.is_some();
        // A held head only makes sense on the queue it came from (a restored state).
        if stats_queue.is_none_or(|queue| self.stats_head.is_some_and(|h| h >= queue.size())) {
            self.stats_head = None;
        }
        let mut active = Active {
            mem,
            queues,
            interrupt,
            stats_enabled,
        };
        self.pick_up_stats(&mut active);
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        let Some(mut active) = self.active.take() else {
            return Err(if usize::from(index) < self.queue_sizes.len() {
                DeviceError::NotActivated { index }
            } else {
                DeviceError::NoSuchQueue { index }
            });
        };
        let result = match index {
            INFLATE_QUEUE | DEFLATE_QUEUE => self.drain(&mut active, index),
            STATS_QUEUE if active.stats_enabled => self.drain(&mut active, index),
            STATS_QUEUE if self.options.stats => {
                tracing::debug!("virtio-balloon stats queue notified without STATS_VQ");
                Ok(())
            }
            _ => Err(DeviceError::NoSuchQueue { index }),
        };
        self.active = Some(active);
        result
    }

    /// The target stays (it is the host's); the driver's `actual` goes back to 0, since a
    /// new driver starts with every page.
    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.actual = 0;
        self.stats_head = None;
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        self.active
            .as_ref()
            .map(|active| active.queues.iter().map(Queue::state).collect())
    }

    fn device_state(&self) -> Option<VirtioDeviceState> {
        Some(VirtioDeviceState::Balloon(Box::new(BalloonState {
            num_pages: self.num_pages,
            actual: self.actual,
            stats_head: self.stats_head,
            stats: self.stats,
            counters: self.counters,
        })))
    }

    fn restore_device_state(
        &mut self,
        state: Option<&VirtioDeviceState>,
    ) -> Result<(), DeviceStateError> {
        // `let … else` rather than `match`: other devices' variants fall into the refusal.
        let Some(VirtioDeviceState::Balloon(balloon)) = state else {
            return Err(DeviceStateError::wrong_device("virtio-balloon", state));
        };
        if let Some(head) = balloon.stats_head {
            let reason = if !self.options.stats {
                Some("a stats buffer is held, but this balloon has no stats queue".to_string())
            } else if head >= QUEUE_SIZE {
                Some(format!("head {head} is past the queue size {QUEUE_SIZE}"))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(DeviceStateError::Invalid {
                    field: "stats_head",
                    reason,
                });
            }
        }
        self.num_pages = balloon.num_pages;
        self.actual = balloon.actual;
        self.stats_head = balloon.stats_head;
        self.stats = balloon.stats;
        self.counters = balloon.counters;
        Ok(())
    }
}
