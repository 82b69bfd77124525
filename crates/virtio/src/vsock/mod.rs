//! virtio-vsock (socket device, virtio 1.2, 5.10) in userspace, with Firecracker's host-side
//! convention (see [`muxer`]'s documentation): guest stream sockets reach host programs
//! through Unix streams, no `/dev/vhost-vsock` needed.
//!
//! Queues: 0 rx (device → driver packets), 1 tx (driver → device packets), 2 event. The
//! configuration space is `le64 guest_cid`. Offered features: `VIRTIO_VSOCK_F_STREAM` and
//! [`crate::features::COMMON`]. Only stream sockets exist: any other `type` is answered RST.
//!
//! What the guest sends is untrusted: malformed tx chains ([`packet`]) are dropped, a packet
//! for a connection that does not exist, a wrong destination CID or an unknown operation is
//! answered RST, a packet with a foreign source CID is dropped, data beyond the credit the
//! device granted resets its connection. rx chains that cannot take a packet are returned
//! unused. Control packets waiting for rx buffers are bounded: past
//! [`muxer::MAX_PENDING_CONTROL`] the device stops reading the tx queue until the guest
//! posts rx buffers (back-pressure, not loss).
//!
//! Host events: the VMM polls [`Vsock::host_events_fd`]; when it is readable it calls
//! [`Vsock::process_host_events`] and then has the transport process the rx queue. Driven
//! through [`ExternalQueues`] (a vhost-user back-end), the same happens in
//! [`ExternalQueues::process_external_event`]. The usual host side is [`unix`]'s
//! (Firecracker's Unix sockets). Snapshots
//! keep no connection (Firecracker's choice): after a restore the device tells the driver
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` on the event queue, the first time the event queue is
//! processed (the VMM kicks it once the restored VM runs), and the driver drops its sockets.

mod connection;
pub mod muxer;
pub mod packet;
pub mod unix;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use std::os::fd::RawFd;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};

use crate::chain::collect_chain;
use crate::device::read_config_bytes;
use crate::{
    ActivateError, DeviceError, DeviceStateError, ExternalQueues, VirtioDevice, VirtioDeviceState,
    VirtioInterrupt, VirtioMemory, device_type, features,
};
pub use connection::CONN_BUF_ALLOC;
pub use muxer::{FIRST_LOCAL_PORT, MAX_CONNECTIONS, VsockBackend};
use packet::{Op, RxBuffer, TxPacket};

/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Device → driver packets.
pub const RX_QUEUE: u16 = 0;
/// Driver → device packets.
pub const TX_QUEUE: u16 = 1;
/// Device → driver events.
pub const EVENT_QUEUE: u16 = 2;
/// `VIRTIO_VSOCK_F_STREAM`: stream sockets (implied when nothing is negotiated).
pub const F_STREAM: u64 = 1 << 0;

/// Why a vsock device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The CID is reserved or wider than the 32 bits virtio-vsock allows.
    #[error(
        "guest CID {cid} is not usable: 0, 1 and 2 are reserved (hypervisor, local, host), \
         4294967295 means any, and CIDs are 32-bit"
    )]
    InvalidCid {
        /// The CID given.
        cid: u64,
    },
    /// The device's epoll instance could not be created.
    #[error("cannot create the virtio-vsock epoll instance: {0}")]
    Epoll(#[source] std::io::Error),
}

/// Checks that `cid` can be a guest's CID.
pub fn check_cid(cid: u64) -> Result<(), VsockError> {
    if cid <= packet::HOST_CID || cid >= u64::from(u32::MAX) {
        return Err(VsockError::InvalidCid { cid });
    }
    Ok(())
}

/// What a snapshot keeps of the device beyond its queues: its CID, checked on restore.
/// Connections are not kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VsockState {
    /// The guest's CID.
    pub guest_cid: u64,
}

/// What the device did since it was built.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockStats {
    /// Host-initiated connections the guest accepted.
    pub host_connections: u64,
    /// Guest-initiated connections a host program accepted.
    pub guest_connections: u64,
    /// Payload bytes from the guest handed to host streams (queued included).
    pub bytes_to_host: u64,
    /// Payload bytes from host streams given to the guest.
    pub bytes_to_guest: u64,
    /// Packets taken from the tx queue.
    pub packets_from_guest: u64,
    /// Packets put on the rx queue.
    pub packets_to_guest: u64,
    /// RST packets sent to the guest.
    pub resets: u64,
    /// Well-formed packets dropped (foreign source CID).
    pub dropped: u64,
    /// Chains refused (malformed, or too small for a packet).
    pub refused_chains: u64,
    /// TRANSPORT_RESET events delivered.
    pub transport_resets: u64,
}

/// The queues of a device activated by the VMM.
struct Active {
    mem: VirtioMemory,
    queues: [Queue; 3],
    interrupt: Arc<dyn VirtioInterrupt>,
}

impl Active {
    fn rings(&mut self) -> Rings<'_> {
        let [rx, tx, event] = &mut self.queues;
        Rings {
            mem: &self.mem,
            queues: [rx, tx, event],
            interrupt: &*self.interrupt,
        }
    }
}

/// The three queues for one round of processing, wherever they are kept: in [`Active`], or
/// in a vhost-user back-end's vrings ([`ExternalQueues`]). A queue that is not ready is left
/// alone (a vhost-user front-end may not have set it up yet; QEMU keeps the event queue).
struct Rings<'a> {
    mem: &'a VirtioMemory,
    queues: [&'a mut Queue; 3],
    interrupt: &'a dyn VirtioInterrupt,
}

impl<'a> Rings<'a> {
    /// The device's queues among those an [`ExternalQueues`] holder handed over.
    fn external(
        mem: &'a VirtioMemory,
        queues: &'a mut [&mut Queue],
        interrupt: &'a dyn VirtioInterrupt,
    ) -> Result<Self, DeviceError> {
        match queues {
            [rx, tx, event] => Ok(Self {
                mem,
                queues: [&mut **rx, &mut **tx, &mut **event],
                interrupt,
            }),
            // The first queue missing, or the first one too many.
            _ => Err(DeviceError::NoSuchQueue {
                index: u16::try_from(queues.len().min(3)).unwrap_or(EVENT_QUEUE),
            }),
        }
    }

    /// Interrupts the driver for `index` if it asked to hear about used buffers.
    fn notify(&mut self, index: u16) -> Result<(), DeviceError> {
        let queue = &mut *self.queues[usize::from(index)];
        if queue
            .needs_notification(self.mem)
            .map_err(|source| DeviceError::Queue { index, source })?
        {
            self.interrupt.signal_queue(index);
        }
        Ok(())
    }
}

/// Returns a chain with `len` used bytes; true if it went on the used ring.
fn give_back(
    queue: &mut Queue,
    mem: &VirtioMemory,
    head: u16,
    len: u32,
    index: u16,
) -> Result<bool, DeviceError> {
    match queue.add_used(mem, head, len) {
        Ok(()) => Ok(true),
        // A head index past the table: nothing to return it on; skip it.
        Err(virtio_queue::Error::InvalidDescriptorIndex) => Ok(false),
        Err(source) => Err(DeviceError::Queue { index, source }),
    }
}

/// The virtio socket device.
pub struct Vsock {
    guest_cid: u64,
    config: [u8; 8],
    queue_sizes: [u16; 3],
    muxer: muxer::Muxer,
    active: Option<Active>,
    transport_reset_pending: bool,
    /// The tx queue was left unread because control packets piled up.
    tx_stalled: bool,
    scratch: Vec<u8>,
    stats: VsockStats,
}

impl Vsock {
    /// A device for the guest `guest_cid` whose host streams come from `backend`.
    pub fn new(guest_cid: u64, backend: Box<dyn VsockBackend>) -> Result<Self, VsockError> {
        check_cid(guest_cid)?;
        let muxer = muxer::Muxer::new(guest_cid, backend).map_err(VsockError::Epoll)?;
        Ok(Self {
            guest_cid,
            config: guest_cid.to_le_bytes(),
            queue_sizes: [QUEUE_SIZE; 3],
            muxer,
            active: None,
            transport_reset_pending: false,
            tx_stalled: false,
            scratch: Vec::with_capacity(packet::MAX_PAYLOAD as usize),
            stats: VsockStats::default(),
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// What the device did so far.
    pub fn stats(&self) -> VsockStats {
        self.stats
    }

    /// Connections now open.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// The descriptor the VMM polls: readable when host streams need
    /// [`Vsock::process_host_events`] (edge-triggered inside, so it does not stay readable).
    pub fn host_events_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }

    /// Handles host-side events (connections, `CONNECT` lines, streams ready); then the rx
    /// queue should be processed, through the transport, for what they produced.
    pub fn process_host_events(&mut self) {
        self.muxer.process_host_events(&mut self.stats);
    }

    /// Whether the restored device still has to tell the driver TRANSPORT_RESET.
    pub fn transport_reset_pending(&self) -> bool {
        self.transport_reset_pending
    }

    /// Puts packets for the guest into its rx buffers, while there are both.
    fn deliver_rx(&mut self, rings: &mut Rings<'_>) -> Result<(), DeviceError> {
        let mem = rings.mem;
        let queue = &mut *rings.queues[usize::from(RX_QUEUE)];
        if !queue.ready() {
            return Ok(());
        }
        let queue_error = |source| DeviceError::Queue {
            index: RX_QUEUE,
            source,
        };
        let mut used_any = false;
        while self.muxer.has_packets_for_guest() {
            let Some(chain) = queue.iter(mem).map_err(queue_error)?.next() else {
                break;
            };
            let head = chain.head_index();
            let buffer = collect_chain(chain)
                .map_err(|e| e.to_string())
                .and_then(|d| RxBuffer::new(&d).map_err(|e| e.to_string()));
            let used = match buffer {
                Err(why) => {
                    tracing::debug!("virtio-vsock: rx chain refused: {why}");
                    self.stats.refused_chains += 1;
                    0
                }
                Ok(buffer) => {
                    let room = buffer.payload_room();
                    let next =
                        self.muxer
                            .next_packet_for_guest(room, &mut self.scratch, &mut self.stats);
                    let Some(header) = next else {
                        // Nothing after all (the streams had no data): keep the buffer.
                        queue.go_to_previous_position();
                        break;
                    };
                    self.stats.packets_to_guest += 1;
                    buffer
                        .write(mem, &header, &self.scratch)
                        .unwrap_or_else(|e| {
                            tracing::warn!("virtio-vsock: rx packet lost: {e}");
                            0
                        })
                }
            };
            used_any |= give_back(queue, mem, head, used, RX_QUEUE)?;
        }
        if used_any {
            rings.notify(RX_QUEUE)?;
        }
        Ok(())
    }

    /// Takes every packet on the tx queue (unless control packets pile up), with driver
    /// notifications off meanwhile.
    fn process_tx(&mut self, rings: &mut Rings<'_>) -> Result<(), DeviceError> {
        let mem = rings.mem;
        let queue = &mut *rings.queues[usize::from(TX_QUEUE)];
        let queue_error = |source| DeviceError::Queue {
            index: TX_QUEUE,
            source,
        };
        let mut used_any = false;
        self.tx_stalled = false;
        if !queue.ready() {
            return Ok(());
        }
        loop {
            queue.disable_notification(mem).map_err(queue_error)?;
            loop {
                if self.muxer.is_backlogged() {
                    self.tx_stalled = true;
                    break;
                }
                let Some(chain) = queue.iter(mem).map_err(queue_error)?.next() else {
                    break;
                };
                let head = chain.head_index();
                match collect_chain(chain) {
                    Ok(descriptors) => self.transmit(mem, &descriptors),
                    Err(error) => {
                        tracing::debug!("virtio-vsock: tx chain refused: {error}");
                        self.stats.refused_chains += 1;
                    }
                }
                used_any |= give_back(queue, mem, head, 0, TX_QUEUE)?;
            }
            if !queue.enable_notification(mem).map_err(queue_error)? || self.tx_stalled {
                break;
            }
        }
        if used_any {
            rings.notify(TX_QUEUE)?;
        }
        Ok(())
    }

    /// Hands one tx chain's packet to the muxer.
    fn transmit(
        &mut self,
        mem: &VirtioMemory,
        descriptors: &[virtio_queue::desc::split::Descriptor],
    ) {
        let packet = match TxPacket::parse(mem, descriptors) {
            Ok(packet) => packet,
            Err(error) => {
                tracing::debug!("virtio-vsock: tx packet refused: {error}");
                self.stats.refused_chains += 1;
                if let Some(header) = error.header {
                    // A packet whose payload is broken breaks its stream.
                    self.muxer.refuse(&header, &mut self.stats);
                }
                return;
            }
        };
        self.stats.packets_from_guest += 1;
        self.scratch.clear();
        if packet.header.operation() == Some(Op::Rw)
            && let Err(error) = packet.read_payload(mem, &mut self.scratch)
        {
            tracing::warn!("virtio-vsock: tx payload unreadable: {error}");
            return;
        }
        self.muxer
            .handle_guest_packet(&packet.header, &self.scratch, &mut self.stats);
    }

    /// Tells the driver TRANSPORT_RESET if a restore left that pending.
    fn deliver_events(&mut self, rings: &mut Rings<'_>) -> Result<(), DeviceError> {
        let mem = rings.mem;
        let queue = &mut *rings.queues[usize::from(EVENT_QUEUE)];
        if !self.transport_reset_pending || !queue.ready() {
            return Ok(());
        }
        let queue_error = |source| DeviceError::Queue {
            index: EVENT_QUEUE,
            source,
        };
        let mut used_any = false;
        while self.transport_reset_pending {
            let Some(chain) = queue.iter(mem).map_err(queue_error)?.next() else {
                break;
            };
            let head = chain.head_index();
            let written = collect_chain(chain)
                .map_err(|e| e.to_string())
                .and_then(|d| packet::write_transport_reset(mem, &d).map_err(|e| e.to_string()));
            let used = match written {
                Ok(len) => {
                    self.transport_reset_pending = false;
                    self.stats.transport_resets += 1;
                    len
                }
                Err(why) => {
                    tracing::debug!("virtio-vsock: event chain refused: {why}");
                    self.stats.refused_chains += 1;
                    0
                }
            };
            used_any |= give_back(queue, mem, head, used, EVENT_QUEUE)?;
        }
        if used_any {
            rings.notify(EVENT_QUEUE)?;
        }
        Ok(())
    }

    /// Serves a notification of queue `index`.
    fn serve(&mut self, rings: &mut Rings<'_>, index: u16) -> Result<(), DeviceError> {
        match index {
            RX_QUEUE => {}
            TX_QUEUE => self.process_tx(rings)?,
            EVENT_QUEUE => return self.deliver_events(rings),
            _ => return Err(DeviceError::NoSuchQueue { index }),
        }
        self.deliver_rx(rings)?;
        // rx buffers freed the backlog: read the tx packets that waited for it.
        while self.tx_stalled && !self.muxer.is_backlogged() {
            self.process_tx(rings)?;
            self.deliver_rx(rings)?;
        }
        Ok(())
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        features::COMMON | F_STREAM
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
        if queues.len() != self.queue_sizes.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                given: queues.len(),
            });
        }
        for index in [RX_QUEUE, TX_QUEUE] {
            if !queues[usize::from(index)].ready() {
                return Err(ActivateError::QueueNotEnabled {
                    index: usize::from(index),
                });
            }
        }
        let given = queues.len();
        let Ok(queues) = <[Queue; 3]>::try_from(queues) else {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                given,
            });
        };
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        if usize::from(index) >= self.queue_sizes.len() {
            return Err(DeviceError::NoSuchQueue { index });
        }
        let mut active = crate::device::take_active(&mut self.active, index)?;
        let result = self.serve(&mut active.rings(), index);
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.active = None;
        self.muxer.reset();
        self.transport_reset_pending = false;
        self.tx_stalled = false;
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        self.active
            .as_ref()
            .map(|active| active.queues.iter().map(Queue::state).collect())
    }

    fn device_state(&self) -> Option<VirtioDeviceState> {
        Some(VirtioDeviceState::Vsock(VsockState {
            guest_cid: self.guest_cid,
        }))
    }

    fn restore_device_state(
        &mut self,
        state: Option<&VirtioDeviceState>,
    ) -> Result<(), DeviceStateError> {
        let Some(VirtioDeviceState::Vsock(saved)) = state else {
            return Err(DeviceStateError::wrong_device("virtio-vsock", state));
        };
        if saved.guest_cid != self.guest_cid {
            return Err(DeviceStateError::Invalid {
                field: "guest_cid",
                reason: format!(
                    "{} in the snapshot, the device was built for {}",
                    saved.guest_cid, self.guest_cid
                ),
            });
        }
        // The guest's sockets belong to connections this process never had.
        self.transport_reset_pending = true;
        Ok(())
    }
}

/// Driven by a vhost-user back-end: its vrings hold the queues, and its worker thread watches
/// [`Vsock::host_events_fd`] as the VMM's event loop does. The device resets (every
/// connection closed) when the front-end resets it or goes away.
impl ExternalQueues for Vsock {
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
        Some(self.host_events_fd())
    }

    fn process_external_event(
        &mut self,
        mem: &VirtioMemory,
        queues: &mut [&mut Queue],
        interrupt: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        self.process_host_events();
        let mut rings = Rings::external(mem, queues, interrupt)?;
        self.serve(&mut rings, RX_QUEUE)
    }
}
