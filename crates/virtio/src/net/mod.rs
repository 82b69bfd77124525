//! virtio-net (network card, virtio 1.2, 5.1) over a host backend that moves whole frames
//! with their virtio-net header (a TAP opened with `IFF_VNET_HDR` and a 12-byte header).
//!
//! Queues: 0 receiveq, 1 transmitq (one pair, no control queue). Offered features: `MAC`,
//! `STATUS` (link always up), `MRG_RXBUF`, and, when the backend accepts the offloads,
//! `CSUM`, `GUEST_CSUM`, `HOST_TSO4/6` and `GUEST_TSO4/6`. What the driver accepts of the
//! `GUEST_*` ones is handed to the backend (`TUNSETOFFLOAD`), so the TAP only produces frames
//! the guest can take; the `HOST_*` ones need nothing: the TAP takes the guest's headers as
//! they are.
//!
//! Transmit: each chain is one frame, header first; its device-readable bytes go to the
//! backend in one write (through a copy, at most [`MAX_CHAIN_BYTES`]); the chain is used with
//! length 0. A chain that is malformed, has a device-writable buffer, is shorter than the
//! header or longer than the limit is dropped (counted) and used with length 0.
//!
//! Receive: [`VirtioDevice::process_queue`] of queue 0 means "move frames from the backend to
//! the guest while both last": the VMM calls it when the driver adds buffers and when the
//! backend becomes readable. A frame is read only when the one before was delivered: with no
//! receive buffers the device stops reading (the frame read last waits in the device) and
//! asks for the driver's next notification; the backend's own queue holds the rest, so the
//! host sees back-pressure as a full TAP queue. With `MRG_RXBUF` a frame spreads over as many
//! chains as it needs (`num_buffers` says how many); without it, a frame goes into one chain,
//! and a frame larger than the next chain is dropped (counted), the chain kept.
//!
//! Rate limits: each direction may have its own [`storage::RateLimiter`] (as Cloud
//! Hypervisor's rx and tx limiters), charged one operation per frame and the frame's bytes
//! without the virtio-net header. A frame goes only when its limiter lets it; otherwise the
//! queue stops and [`VirtioDevice::queue_throttled_until`] tells when to try again (the VMM
//! arms a timer and processes the queue then). Nothing is dropped for it: a transmit chain
//! goes back on its queue, a received frame waits in the device (and the TAP behind it fills,
//! which the host sees as back-pressure). Malformed transmit chains and frames that are
//! dropped anyway are not charged.
//!
//! Nothing the guest writes makes the device panic or touch memory outside the buffers of a
//! chain.

mod tap;
#[cfg(test)]
mod tests;

pub use tap::{TapBackend, random_mac};

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use storage::RateLimiter;
use virtio_bindings::virtio_net as vnet;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::Bytes;

use crate::active_queues::{ActiveQueues, queue_error};
use crate::chain::{ChainError, collect_chain, gather, writable_chain};
use crate::device::read_config_bytes;
use crate::{
    ActivateError, DeviceError, DeviceStateError, ExternalQueues, VirtioDevice, VirtioDeviceState,
    VirtioInterrupt, VirtioMemory, device_type, features,
};

/// Maximum size of each queue.
pub const NET_QUEUE_SIZE: u16 = 256;
/// Bytes of the virtio-net header in front of every frame (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame with its header: a 64 KiB GSO packet, an Ethernet header and a VLAN tag.
pub const MAX_CHAIN_BYTES: usize = VNET_HDR_LEN + 65535 + 14 + 4;
/// Receive queue index.
pub const RX_QUEUE: u16 = 0;
/// Transmit queue index.
pub const TX_QUEUE: u16 = 1;

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Feature bits of virtio-net (virtio 1.2, 5.1.3).
pub mod net_features {
    use super::{bit, vnet};

    /// The device takes frames with partial checksums.
    pub const CSUM: u64 = bit(vnet::VIRTIO_NET_F_CSUM);
    /// The driver takes frames with partial checksums.
    pub const GUEST_CSUM: u64 = bit(vnet::VIRTIO_NET_F_GUEST_CSUM);
    /// The device has a MAC address in its configuration.
    pub const MAC: u64 = bit(vnet::VIRTIO_NET_F_MAC);
    /// The driver takes TCPv4 segmentation-offloaded frames.
    pub const GUEST_TSO4: u64 = bit(vnet::VIRTIO_NET_F_GUEST_TSO4);
    /// The driver takes TCPv6 segmentation-offloaded frames.
    pub const GUEST_TSO6: u64 = bit(vnet::VIRTIO_NET_F_GUEST_TSO6);
    /// The device takes TCPv4 segmentation-offloaded frames.
    pub const HOST_TSO4: u64 = bit(vnet::VIRTIO_NET_F_HOST_TSO4);
    /// The device takes TCPv6 segmentation-offloaded frames.
    pub const HOST_TSO6: u64 = bit(vnet::VIRTIO_NET_F_HOST_TSO6);
    /// Received frames may spread over several chains.
    pub const MRG_RXBUF: u64 = bit(vnet::VIRTIO_NET_F_MRG_RXBUF);
    /// The configuration has a link status.
    pub const STATUS: u64 = bit(vnet::VIRTIO_NET_F_STATUS);
    /// Every offload, offered only when the backend accepts them.
    pub const OFFLOADS: u64 = CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | HOST_TSO4 | HOST_TSO6;
}

use net_features::*;

/// The offloads the guest accepted, for the backend: which frames it may hand over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestOffloads {
    /// Partial checksums.
    pub csum: bool,
    /// TCPv4 segmentation offload.
    pub tso4: bool,
    /// TCPv6 segmentation offload.
    pub tso6: bool,
}

/// Where frames come from and go to (a TAP in the VMM, a socket pair in tests). Each frame
/// carries a [`VNET_HDR_LEN`]-byte header first.
pub trait NetBackend: Send {
    /// Reads one frame into `buf`; `WouldBlock` when none is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame.
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize>;
    /// Limits the frames it produces to what the guest accepts.
    fn set_offloads(&mut self, offloads: GuestOffloads) -> std::io::Result<()>;
    /// A descriptor that becomes readable when frames arrive, for a holder of the queues
    /// that watches it itself ([`ExternalQueues::external_event_fd`]; watch it
    /// edge-triggered, see [`Net`]'s `ExternalQueues` implementation). `None` by default:
    /// the VMM watches its TAP on its own.
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
}

/// Traffic counters, shared with the VMM (which reads them without locking the device).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes of those frames (headers excluded).
    pub rx_bytes: AtomicU64,
    /// Frames from the backend that could not be delivered.
    pub rx_dropped: AtomicU64,
    /// Frames the guest sent to the backend.
    pub tx_frames: AtomicU64,
    /// Bytes of those frames (headers excluded).
    pub tx_bytes: AtomicU64,
    /// Frames of the guest that were refused or that the backend did not take.
    pub tx_dropped: AtomicU64,
    /// Times the receive rate limiter stopped the receive queue.
    pub rx_throttled: AtomicU64,
    /// Times the transmit rate limiter stopped the transmit queue.
    pub tx_throttled: AtomicU64,
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Settings of a [`Net`] beyond its backend.
#[derive(Debug, Default)]
pub struct NetOptions {
    /// The MAC address the guest reads.
    pub mac: [u8; 6],
    /// The backend accepts csum and TSO offloads (offer them).
    pub offloads: bool,
    /// Where traffic is counted.
    pub counters: Arc<NetCounters>,
    /// Limits frames from the backend to the guest.
    pub rx_limiter: Option<RateLimiter>,
    /// Limits frames from the guest to the backend.
    pub tx_limiter: Option<RateLimiter>,
}

/// What a snapshot keeps of virtio-net beyond its queues: the MAC the guest knows (a frame
/// read from the backend but not delivered is dropped, as a real NIC may drop one; rate
/// limiters start again full).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetState {
    /// The MAC address.
    pub mac: [u8; 6],
}

/// How a frame fits the receive queue now.
enum Fit {
    /// It goes into this many chains.
    Chains(u16),
    /// There are not enough buffers yet (this many chains are available).
    NoBuffers(u16),
    /// Without `MRG_RXBUF`, the next chain is too small for it.
    TooSmall,
}

/// The device's two queues while it processes them, wherever they are held: by the device
/// (activated by the VMM) or by a vhost-user back-end's vrings ([`ExternalQueues`]).
struct Rings<'a> {
    mem: &'a VirtioMemory,
    queues: [&'a mut Queue; 2],
    interrupt: &'a dyn VirtioInterrupt,
}

impl<'a> Rings<'a> {
    /// The queues of a device the VMM activated.
    fn active(active: &'a mut ActiveQueues) -> Result<Self, DeviceError> {
        let ActiveQueues {
            mem,
            queues,
            interrupt,
        } = active;
        match queues.as_mut_slice() {
            [rx, tx] => Ok(Self {
                mem,
                queues: [rx, tx],
                interrupt: &**interrupt,
            }),
            _ => Err(DeviceError::NoSuchQueue { index: TX_QUEUE }),
        }
    }

    /// The queues an [`ExternalQueues`] holder handed over.
    fn external(
        mem: &'a VirtioMemory,
        queues: &'a mut [&mut Queue],
        interrupt: &'a dyn VirtioInterrupt,
    ) -> Result<Self, DeviceError> {
        match queues {
            [rx, tx] => Ok(Self {
                mem,
                queues: [&mut **rx, &mut **tx],
                interrupt,
            }),
            // The first queue missing, or the first one too many.
            _ => Err(DeviceError::NoSuchQueue {
                index: u16::try_from(queues.len().min(2)).unwrap_or(u16::MAX),
            }),
        }
    }

    /// Queue `index`, or an error naming it.
    fn queue(&mut self, index: u16) -> Result<&mut Queue, DeviceError> {
        self.queues
            .get_mut(usize::from(index))
            .map(|queue| &mut **queue)
            .ok_or(DeviceError::NoSuchQueue { index })
    }

    /// Whether queue `index` was set up by the driver (a vhost-user front-end may hand over
    /// one it has not set up yet).
    fn ready(&self, index: u16) -> bool {
        self.queues
            .get(usize::from(index))
            .is_some_and(|queue| queue.ready())
    }

    /// Returns `head` used with `len` bytes; a head outside the table is skipped (nothing to
    /// return it on). True when it was used.
    fn add_used(&mut self, index: u16, head: u16, len: u32) -> Result<bool, DeviceError> {
        let mem = self.mem;
        match self.queue(index)?.add_used(mem, head, len) {
            Ok(()) => Ok(true),
            Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                tracing::debug!(index, head, "virtio chain with an invalid head skipped");
                Ok(false)
            }
            Err(source) => Err(DeviceError::Queue { index, source }),
        }
    }

    /// Interrupts the driver for queue `index` if buffers were used and it asked for it.
    fn signal_if_needed(&mut self, index: u16, used_any: bool) -> Result<(), DeviceError> {
        if !used_any {
            return Ok(());
        }
        let mem = self.mem;
        let needs = self
            .queue(index)?
            .needs_notification(mem)
            .map_err(queue_error(index))?;
        if needs {
            self.interrupt.signal_queue(index);
        }
        Ok(())
    }
}

/// The virtio network device.
pub struct Net {
    backend: Box<dyn NetBackend>,
    options: NetOptions,
    queue_sizes: [u16; 2],
    acked: u64,
    active: Option<ActiveQueues>,
    /// The frame read from the backend and not yet delivered (length in `rx_frame`).
    rx_pending: Option<usize>,
    rx_frame: Vec<u8>,
    tx_frame: Vec<u8>,
    /// Per queue: when its rate limiter will let the next frame go, while it is stopped.
    throttled: [Option<Instant>; 2],
}

impl Net {
    /// A network device on `backend`.
    pub fn new(backend: Box<dyn NetBackend>, options: NetOptions) -> Self {
        Net {
            backend,
            options,
            queue_sizes: [NET_QUEUE_SIZE; 2],
            acked: 0,
            active: None,
            rx_pending: None,
            rx_frame: vec![0; MAX_CHAIN_BYTES],
            tx_frame: Vec::with_capacity(MAX_CHAIN_BYTES),
            throttled: [None; 2],
        }
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.options.mac
    }

    /// The traffic counters.
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.options.counters
    }

    /// The configuration space: mac, status (link up), max_virtqueue_pairs.
    fn config(&self) -> [u8; 10] {
        let mut config = [0u8; 10];
        config[..6].copy_from_slice(&self.options.mac);
        config[6..8].copy_from_slice(&(vnet::VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config
    }

    /// Serves a notification of queue `index`; a queue that is not set up is left alone
    /// (frames then wait in the backend until the driver's first receive notification).
    fn serve(&mut self, rings: &mut Rings<'_>, index: u16) -> Result<(), DeviceError> {
        match index {
            RX_QUEUE | TX_QUEUE if !rings.ready(index) => Ok(()),
            RX_QUEUE => self.receive(rings),
            TX_QUEUE => self.transmit(rings),
            _ => Err(DeviceError::NoSuchQueue { index }),
        }
    }

    fn mergeable(&self) -> bool {
        self.acked & MRG_RXBUF != 0
    }

    /// Moves frames from the backend to receive chains while both last.
    fn receive(&mut self, rings: &mut Rings<'_>) -> Result<(), DeviceError> {
        let mut used_any = false;
        let mut seen_before = None;
        self.throttled[usize::from(RX_QUEUE)] = None;
        loop {
            let len = match self.rx_pending {
                Some(len) => len,
                None => match self.read_backend() {
                    Some(len) => len,
                    None => break,
                },
            };
            match self.fit(rings, len)? {
                Fit::Chains(chains) => {
                    if self.throttle(RX_QUEUE, len) {
                        // The frame waits in the device; the backend is not read meanwhile.
                        self.rx_pending = Some(len);
                        break;
                    }
                    self.deliver(rings, len, chains)?;
                    used_any = true;
                    self.rx_pending = None;
                    seen_before = None;
                }
                Fit::TooSmall => {
                    count(&self.options.counters.rx_dropped, 1);
                    self.rx_pending = None;
                }
                Fit::NoBuffers(seen) => {
                    self.rx_pending = Some(len);
                    if seen_before == Some(seen) {
                        break;
                    }
                    seen_before = Some(seen);
                    // Ask for the driver's next notification, then look once more in case
                    // buffers arrived meanwhile.
                    let mem = rings.mem;
                    rings
                        .queue(RX_QUEUE)?
                        .enable_notification(mem)
                        .map_err(queue_error(RX_QUEUE))?;
                }
            }
        }
        rings.signal_if_needed(RX_QUEUE, used_any)
    }

    /// Reads the next frame from the backend into `rx_frame`; `None` when there is none.
    fn read_backend(&mut self) -> Option<usize> {
        loop {
            match self.backend.read_frame(&mut self.rx_frame) {
                Ok(len) if len >= VNET_HDR_LEN => return Some(len),
                Ok(len) => {
                    tracing::debug!(len, "virtio-net: frame shorter than its header dropped");
                    count(&self.options.counters.rx_dropped, 1);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    tracing::warn!("virtio-net: reading the backend failed: {e}");
                    return None;
                }
            }
        }
    }

    /// How the frame of `len` bytes fits the available chains. The chains are read and the
    /// queue's position put back: nothing is taken yet.
    fn fit(&self, rings: &mut Rings<'_>, len: usize) -> Result<Fit, DeviceError> {
        let mem = rings.mem;
        let queue = rings.queue(RX_QUEUE)?;
        let start = queue.next_avail();
        let fit = self.probe(queue, mem, len);
        queue.set_next_avail(start);
        fit
    }

    fn probe(&self, queue: &mut Queue, mem: &VirtioMemory, len: usize) -> Result<Fit, DeviceError> {
        let mut room = 0usize;
        let mut chains = 0u16;
        while room < len {
            let Some(chain) = queue.iter(mem).map_err(queue_error(RX_QUEUE))?.next() else {
                return Ok(Fit::NoBuffers(chains));
            };
            chains += 1;
            if let Ok(buffers) = writable_chain(chain) {
                room = room.saturating_add(chain_bytes(&buffers));
            }
            if !self.mergeable() {
                return Ok(if room >= len {
                    Fit::Chains(1)
                } else {
                    Fit::TooSmall
                });
            }
        }
        Ok(Fit::Chains(chains))
    }

    /// Copies the pending frame into the next `chains` chains, with its header completed.
    fn deliver(
        &mut self,
        rings: &mut Rings<'_>,
        len: usize,
        chains: u16,
    ) -> Result<(), DeviceError> {
        let mem = rings.mem;
        self.rx_frame[10..12].copy_from_slice(&chains.to_le_bytes());
        if self.acked & GUEST_CSUM == 0 {
            // DATA_VALID and NEEDS_CSUM mean nothing to a driver without GUEST_CSUM.
            self.rx_frame[0] = 0;
        }
        let mut offset = 0usize;
        for _ in 0..chains {
            let queue = rings.queue(RX_QUEUE)?;
            let Some(chain) = queue.iter(mem).map_err(queue_error(RX_QUEUE))?.next() else {
                break;
            };
            let head = chain.head_index();
            let written = match writable_chain(chain) {
                Ok(buffers) => self.copy_out(mem, &buffers, offset, len),
                Err(error) => {
                    tracing::debug!(%error, "virtio-net receive chain refused");
                    0
                }
            };
            offset += written;
            // At most one chain's bytes, which virtio-queue caps below 4 GiB.
            rings.add_used(RX_QUEUE, head, written as u32)?;
        }
        if offset < len {
            count(&self.options.counters.rx_dropped, 1);
        } else {
            count(&self.options.counters.rx_frames, 1);
            count(&self.options.counters.rx_bytes, (len - VNET_HDR_LEN) as u64);
        }
        Ok(())
    }

    /// Writes `rx_frame[offset..len]` into `buffers` as far as they reach; returns the bytes.
    fn copy_out(
        &self,
        mem: &VirtioMemory,
        buffers: &[Descriptor],
        offset: usize,
        len: usize,
    ) -> usize {
        let mut at = offset;
        for buffer in buffers {
            if at >= len {
                break;
            }
            let n = (buffer.len() as usize).min(len - at);
            if mem
                .write_slice(&self.rx_frame[at..at + n], buffer.addr())
                .is_err()
            {
                break;
            }
            at += n;
        }
        at - offset
    }

    /// Sends every transmit chain to the backend.
    fn transmit(&mut self, rings: &mut Rings<'_>) -> Result<(), DeviceError> {
        let mem = rings.mem;
        let mut used_any = false;
        self.throttled[usize::from(TX_QUEUE)] = None;
        loop {
            rings
                .queue(TX_QUEUE)?
                .disable_notification(mem)
                .map_err(queue_error(TX_QUEUE))?;
            while let Some(chain) = rings
                .queue(TX_QUEUE)?
                .iter(mem)
                .map_err(queue_error(TX_QUEUE))?
                .next()
            {
                let head = chain.head_index();
                if !self.transmit_chain(mem, collect_chain(chain)) {
                    // The chain stays on the queue for the VMM's timer (the driver's next
                    // notification retries too).
                    let queue = rings.queue(TX_QUEUE)?;
                    queue.go_to_previous_position();
                    queue
                        .enable_notification(mem)
                        .map_err(queue_error(TX_QUEUE))?;
                    return rings.signal_if_needed(TX_QUEUE, used_any);
                }
                used_any |= rings.add_used(TX_QUEUE, head, 0)?;
            }
            if !rings
                .queue(TX_QUEUE)?
                .enable_notification(mem)
                .map_err(queue_error(TX_QUEUE))?
            {
                break;
            }
        }
        rings.signal_if_needed(TX_QUEUE, used_any)
    }

    /// Sends the frame of one transmit chain, or drops a chain that cannot be one; false
    /// when the rate limiter held the frame back (nothing was done: the chain is not used).
    fn transmit_chain(
        &mut self,
        mem: &VirtioMemory,
        chain: Result<Vec<Descriptor>, ChainError>,
    ) -> bool {
        let buffers = match chain {
            Ok(buffers) => buffers,
            Err(error) => {
                tracing::debug!(%error, "virtio-net transmit chain refused");
                count(&self.options.counters.tx_dropped, 1);
                return true;
            }
        };
        let Some(len) = frame_len(&buffers) else {
            tracing::debug!("virtio-net transmit chain refused");
            count(&self.options.counters.tx_dropped, 1);
            return true;
        };
        if self.throttle(TX_QUEUE, len) {
            return false;
        }
        self.send(mem, &buffers, len);
        true
    }

    /// Takes a frame of `len` bytes (header included) from queue `index`'s rate limiter;
    /// when it is short, notes until when the queue stops and returns true.
    fn throttle(&mut self, index: u16, len: usize) -> bool {
        let limiter = match index {
            RX_QUEUE => self.options.rx_limiter.as_mut(),
            _ => self.options.tx_limiter.as_mut(),
        };
        let Some(limiter) = limiter else {
            return false;
        };
        let bytes = len.saturating_sub(VNET_HDR_LEN) as u64;
        let Err(wait) = limiter.consume(bytes) else {
            return false;
        };
        self.throttled[usize::from(index)] = Some(limiter.now() + wait);
        let counters = &self.options.counters;
        count(
            match index {
                RX_QUEUE => &counters.rx_throttled,
                _ => &counters.tx_throttled,
            },
            1,
        );
        true
    }

    /// Gathers one frame of `total` bytes (checked by [`frame_len`]) and writes it to the
    /// backend.
    fn send(&mut self, mem: &VirtioMemory, buffers: &[Descriptor], total: usize) {
        self.tx_frame.clear();
        self.tx_frame.resize(total, 0);
        if gather(mem, buffers, &mut self.tx_frame).is_err() {
            count(&self.options.counters.tx_dropped, 1);
            return;
        }
        match self.backend.write_frame(&self.tx_frame) {
            Ok(_) => {
                count(&self.options.counters.tx_frames, 1);
                count(
                    &self.options.counters.tx_bytes,
                    (total - VNET_HDR_LEN) as u64,
                );
            }
            Err(e) => {
                // A full or downed TAP: the frame is lost, as on a congested link.
                tracing::debug!("virtio-net: the backend refused a frame: {e}");
                count(&self.options.counters.tx_dropped, 1);
            }
        }
    }

    /// Tells the backend which offloaded frames the guest accepted.
    fn apply_offloads(&mut self, features: u64) {
        let csum = features & GUEST_CSUM != 0;
        let offloads = GuestOffloads {
            csum,
            tso4: csum && features & GUEST_TSO4 != 0,
            tso6: csum && features & GUEST_TSO6 != 0,
        };
        if let Err(e) = self.backend.set_offloads(offloads) {
            tracing::warn!("virtio-net: cannot set the backend's offloads {offloads:?}: {e}");
        }
    }
}

/// The length of the frame a transmit chain carries, header included; `None` when the chain
/// cannot be one (a device-writable buffer, shorter than the header, longer than the limit).
fn frame_len(buffers: &[Descriptor]) -> Option<usize> {
    let total = chain_bytes(buffers);
    let valid = !buffers.iter().any(|b| b.is_write_only())
        && (VNET_HDR_LEN..=MAX_CHAIN_BYTES).contains(&total);
    valid.then_some(total)
}

/// Bytes of a chain's buffers (saturating: lengths come from the guest).
fn chain_bytes(buffers: &[Descriptor]) -> usize {
    buffers
        .iter()
        .fold(0usize, |sum, b| sum.saturating_add(b.len() as usize))
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let offloads = if self.options.offloads { OFFLOADS } else { 0 };
        features::COMMON | MAC | STATUS | MRG_RXBUF | offloads
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
        self.apply_offloads(features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(
        &mut self,
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.active = Some(ActiveQueues::activate(mem, queues, interrupt, 2)?);
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        let mut active = crate::device::take_active(&mut self.active, index)?;
        let result = Rings::active(&mut active).and_then(|mut rings| self.serve(&mut rings, index));
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.active = None;
        self.throttled = [None; 2];
        if self.rx_pending.take().is_some() {
            count(&self.options.counters.rx_dropped, 1);
        }
        self.acked = 0;
        self.apply_offloads(0);
    }

    fn throttled_until(&self) -> Option<Instant> {
        self.throttled.iter().flatten().min().copied()
    }

    fn queue_throttled_until(&self, index: u16) -> Option<Instant> {
        self.throttled.get(usize::from(index)).copied().flatten()
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        self.active.as_ref().map(ActiveQueues::states)
    }

    fn device_state(&self) -> Option<VirtioDeviceState> {
        Some(VirtioDeviceState::Net(NetState {
            mac: self.options.mac,
        }))
    }

    fn restore_device_state(
        &mut self,
        state: Option<&VirtioDeviceState>,
    ) -> Result<(), DeviceStateError> {
        let Some(VirtioDeviceState::Net(net)) = state else {
            return Err(DeviceStateError::wrong_device("virtio-net", state));
        };
        self.options.mac = net.mac;
        Ok(())
    }
}

/// Driven by a vhost-user back-end: the same receive and transmit code on its vrings. The
/// backend's [`NetBackend::event_fd`] is the device's event, to be watched edge-triggered:
/// each event reads the backend until it is empty or the guest has no receive buffers left,
/// and then the driver's next receive notification resumes the reading, as in the VMM.
/// Rate limiters are not resumed by anything here: give such a device none.
impl ExternalQueues for Net {
    fn process_external_queue(
        &mut self,
        index: u16,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let mut rings = Rings::external(mem, queues, interrupt)?;
        self.serve(&mut rings, index)
    }

    fn external_event_fd(&self) -> Option<RawFd> {
        self.backend.event_fd()
    }

    fn process_external_event(
        &mut self,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let mut rings = Rings::external(mem, queues, interrupt)?;
        self.serve(&mut rings, RX_QUEUE)
    }
}
