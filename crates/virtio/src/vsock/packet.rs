//! virtio-vsock packets (virtio 1.2, 5.10.6): the 44-byte header, and moving packets between
//! the device and the guest's descriptor chains.
//!
//! A transmitted packet (tx queue) is a device-readable chain: the header, then `len` bytes of
//! payload, split across descriptors any way the driver likes. A received packet (rx queue) is
//! written into a device-writable chain the same way. Every length comes from the guest and is
//! checked: a tx chain with a writable buffer, a header cut short, a payload longer than
//! [`MAX_PAYLOAD`] or than the chain are refused; an rx chain with a readable buffer or room
//! for less than a header is returned unused.

use std::ops::Range;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress};

use crate::VirtioMemory;

/// Bytes of a packet header.
pub const HEADER_LEN: usize = 44;
/// The host's CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;
/// Largest payload of one packet in either direction (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// `type` of stream sockets, the only type this device carries.
pub const TYPE_STREAM: u16 = 1;
/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Event id of `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
pub const EVENT_TRANSPORT_RESET: u32 = 0;
/// Bytes of an event (`le32 id`).
pub const EVENT_LEN: usize = 4;

/// Packet operations (virtio 1.2, 5.10.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Connect.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection refused or torn down.
    Rst = 3,
    /// No more data in one or both directions (flags).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// The sender's `buf_alloc` / `fwd_cnt` changed.
    CreditUpdate = 6,
    /// Asks the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation `value` names, if any.
    pub fn from_u16(value: u16) -> Option<Self> {
        Some(match value {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Rst,
            4 => Self::Shutdown,
            5 => Self::Rw,
            6 => Self::CreditUpdate,
            7 => Self::CreditRequest,
            _ => return None,
        })
    }
}

/// A packet header, fields in host order (little-endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

impl Header {
    /// Decodes the wire format.
    pub fn from_bytes(raw: &[u8; HEADER_LEN]) -> Self {
        Self {
            src_cid: le_u64(raw, 0),
            dst_cid: le_u64(raw, 8),
            src_port: le_u32(raw, 16),
            dst_port: le_u32(raw, 20),
            len: le_u32(raw, 24),
            kind: le_u16(raw, 28),
            op: le_u16(raw, 30),
            flags: le_u32(raw, 32),
            buf_alloc: le_u32(raw, 36),
            fwd_cnt: le_u32(raw, 40),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut raw = [0u8; HEADER_LEN];
        raw[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        raw[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        raw[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        raw[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        raw[24..28].copy_from_slice(&self.len.to_le_bytes());
        raw[28..30].copy_from_slice(&self.kind.to_le_bytes());
        raw[30..32].copy_from_slice(&self.op.to_le_bytes());
        raw[32..36].copy_from_slice(&self.flags.to_le_bytes());
        raw[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        raw[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        raw
    }

    /// The operation, if it is a known one.
    pub fn operation(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }
}

/// Why a chain does not hold a packet (or cannot take one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A tx chain holds a device-writable buffer, or an rx chain a device-readable one.
    #[error("buffer {addr:#x}+{len:#x} has the wrong direction")]
    WrongDirection {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The chain holds fewer bytes than a header.
    #[error("the chain holds {len} bytes, a header needs {HEADER_LEN}")]
    Short {
        /// Bytes in the chain.
        len: u64,
    },
    /// The header announces more payload than a packet may carry.
    #[error("payload of {len} bytes, at most {MAX_PAYLOAD} allowed")]
    PayloadTooLong {
        /// The header's `len`.
        len: u32,
    },
    /// The header announces more payload than the chain holds.
    #[error("header announces {len} bytes of payload, the chain holds {available}")]
    PayloadMissing {
        /// The header's `len`.
        len: u32,
        /// Bytes after the header.
        available: u64,
    },
    /// Guest memory refused an access the chain checks had allowed.
    #[error("guest memory at {addr:#x}")]
    Memory {
        /// Where.
        addr: u64,
    },
}

/// The buffers of a chain, in order, as (address, length).
#[derive(Debug, Clone, Default)]
pub struct Segments {
    list: Vec<(GuestAddress, u32)>,
}

impl Segments {
    fn total(&self) -> u64 {
        self.list.iter().map(|&(_, len)| u64::from(len)).sum()
    }

    /// Copies bytes from offset `skip` of the buffers into `out` (fully, or an error).
    fn read_at(&self, mem: &VirtioMemory, skip: u64, out: &mut [u8]) -> Result<(), PacketError> {
        self.walk(skip, out.len(), |at, range| {
            mem.read_slice(&mut out[range], at)
                .map_err(|_| PacketError::Memory { addr: at.0 })
        })
    }

    /// Copies `data` to offset `skip` of the buffers (fully, or an error).
    fn write_at(&self, mem: &VirtioMemory, skip: u64, data: &[u8]) -> Result<(), PacketError> {
        self.walk(skip, data.len(), |at, range| {
            mem.write_slice(&data[range], at)
                .map_err(|_| PacketError::Memory { addr: at.0 })
        })
    }

    /// Walks `len` bytes from offset `skip` of the buffers piece by piece: `copy` gets each
    /// piece's guest address and its range in the caller's `len` bytes. An error if the
    /// buffers end first.
    fn walk(
        &self,
        skip: u64,
        len: usize,
        mut copy: impl FnMut(GuestAddress, Range<usize>) -> Result<(), PacketError>,
    ) -> Result<(), PacketError> {
        let mut skip = skip;
        let mut done = 0;
        for &(addr, segment_len) in &self.list {
            if done == len {
                break;
            }
            let segment_len = u64::from(segment_len);
            if skip >= segment_len {
                skip -= segment_len;
                continue;
            }
            let n = ((segment_len - skip) as usize).min(len - done);
            let at = addr
                .checked_add(skip)
                .ok_or(PacketError::Memory { addr: addr.0 })?;
            copy(at, done..done + n)?;
            done += n;
            skip = 0;
        }
        if done == len {
            Ok(())
        } else {
            Err(PacketError::Short { len: self.total() })
        }
    }
}

/// Collects the buffers of `descriptors`, all of which must go the way `device_writes` says.
fn segments(descriptors: &[Descriptor], device_writes: bool) -> Result<Segments, PacketError> {
    let mut list = Vec::with_capacity(descriptors.len());
    for descriptor in descriptors {
        if descriptor.is_write_only() != device_writes {
            return Err(PacketError::WrongDirection {
                addr: descriptor.addr().raw_value(),
                len: descriptor.len(),
            });
        }
        if descriptor.len() > 0 {
            list.push((descriptor.addr(), descriptor.len()));
        }
    }
    Ok(Segments { list })
}

/// A tx chain that holds no valid packet, and its header when one could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct TxError {
    /// What is wrong.
    pub error: PacketError,
    /// The header, when the chain held a whole one (the payload is what is wrong).
    pub header: Option<Header>,
}

impl From<PacketError> for TxError {
    fn from(error: PacketError) -> Self {
        Self {
            error,
            header: None,
        }
    }
}

/// A packet the driver transmitted: its header and where its payload is.
#[derive(Debug)]
pub struct TxPacket {
    /// The header as the guest wrote it.
    pub header: Header,
    buffers: Segments,
}

impl TxPacket {
    /// Parses a tx chain (already checked by [`crate::chain::collect_chain`]).
    pub fn parse(mem: &VirtioMemory, descriptors: &[Descriptor]) -> Result<Self, TxError> {
        let buffers = segments(descriptors, false)?;
        let total = buffers.total();
        if total < HEADER_LEN as u64 {
            return Err(PacketError::Short { len: total }.into());
        }
        let mut raw = [0u8; HEADER_LEN];
        buffers.read_at(mem, 0, &mut raw)?;
        let header = Header::from_bytes(&raw);
        let with_header = |error| TxError {
            error,
            header: Some(header),
        };
        if header.len > MAX_PAYLOAD {
            return Err(with_header(PacketError::PayloadTooLong { len: header.len }));
        }
        let available = total - HEADER_LEN as u64;
        if u64::from(header.len) > available {
            return Err(with_header(PacketError::PayloadMissing {
                len: header.len,
                available,
            }));
        }
        Ok(Self { header, buffers })
    }

    /// Copies the payload (`header.len` bytes, at most [`MAX_PAYLOAD`]) into `out`.
    pub fn read_payload(&self, mem: &VirtioMemory, out: &mut Vec<u8>) -> Result<(), PacketError> {
        out.resize(self.header.len as usize, 0);
        self.buffers.read_at(mem, HEADER_LEN as u64, out)
    }
}

/// A device-writable chain the driver offered for a received packet.
#[derive(Debug)]
pub struct RxBuffer {
    buffers: Segments,
    capacity: u64,
}

impl RxBuffer {
    /// Checks an rx chain: device-writable throughout, with room for at least a header.
    pub fn new(descriptors: &[Descriptor]) -> Result<Self, PacketError> {
        let buffers = segments(descriptors, true)?;
        let capacity = buffers.total();
        if capacity < HEADER_LEN as u64 {
            return Err(PacketError::Short { len: capacity });
        }
        Ok(Self { buffers, capacity })
    }

    /// Most payload bytes a packet written here can carry.
    pub fn payload_room(&self) -> usize {
        (self.capacity - HEADER_LEN as u64).min(u64::from(MAX_PAYLOAD)) as usize
    }

    /// Writes a packet (its header's `len` set to the payload's); returns the used length.
    pub fn write(
        &self,
        mem: &VirtioMemory,
        header: &Header,
        payload: &[u8],
    ) -> Result<u32, PacketError> {
        let payload = &payload[..payload.len().min(self.payload_room())];
        let mut header = *header;
        header.len = payload.len() as u32;
        self.buffers.write_at(mem, 0, &header.to_bytes())?;
        self.buffers.write_at(mem, HEADER_LEN as u64, payload)?;
        // At most HEADER_LEN + MAX_PAYLOAD.
        Ok((HEADER_LEN + payload.len()) as u32)
    }
}

/// Writes a TRANSPORT_RESET event into an event-queue chain; returns the used length.
pub fn write_transport_reset(
    mem: &VirtioMemory,
    descriptors: &[Descriptor],
) -> Result<u32, PacketError> {
    let buffers = segments(descriptors, true)?;
    let total = buffers.total();
    if total < EVENT_LEN as u64 {
        return Err(PacketError::Short { len: total });
    }
    buffers.write_at(mem, 0, &EVENT_TRANSPORT_RESET.to_le_bytes())?;
    Ok(EVENT_LEN as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{WRITE, guest_memory};

    fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 0x1234_5678,
            dst_port: 52,
            len: 5,
            kind: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 0,
            buf_alloc: 0x4_0000,
            fwd_cnt: 7,
        }
    }

    #[test]
    fn headers_round_trip_in_little_endian() {
        let header = sample();

        let raw = header.to_bytes();

        assert_eq!(&raw[0..8], &3u64.to_le_bytes());
        assert_eq!(&raw[16..20], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&raw[30..32], &5u16.to_le_bytes());
        assert_eq!(Header::from_bytes(&raw), header);
        assert_eq!(header.operation(), Some(Op::Rw));
        assert_eq!(Op::from_u16(8), None);
    }

    #[test]
    fn a_tx_packet_may_split_its_header_and_payload_anywhere() {
        let mem = guest_memory();
        let mut bytes = sample().to_bytes().to_vec();
        bytes.extend_from_slice(b"hello");
        mem.write_slice(&bytes[..30], GuestAddress(0x1000)).unwrap();
        mem.write_slice(&bytes[30..], GuestAddress(0x2000)).unwrap();
        let chain = [
            Descriptor::new(0x1000, 30, 0, 0),
            Descriptor::new(0x2000, 19, 0, 0),
        ];

        let packet = TxPacket::parse(&mem, &chain).unwrap();
        let mut payload = Vec::new();
        packet.read_payload(&mem, &mut payload).unwrap();

        assert_eq!(packet.header, sample());
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn bad_tx_chains_are_refused() {
        let mem = guest_memory();
        let mut header = sample();
        header.len = 100;
        mem.write_slice(&header.to_bytes(), GuestAddress(0x1000))
            .unwrap();
        let short = [Descriptor::new(0x1000, 43, 0, 0)];
        let writable = [Descriptor::new(0x1000, 64, WRITE, 0)];
        let missing = [Descriptor::new(0x1000, 44 + 99, 0, 0)];

        assert_eq!(
            TxPacket::parse(&mem, &short).unwrap_err(),
            PacketError::Short { len: 43 }.into()
        );
        assert!(matches!(
            TxPacket::parse(&mem, &writable).unwrap_err().error,
            PacketError::WrongDirection { .. }
        ));
        let missing = TxPacket::parse(&mem, &missing).unwrap_err();
        assert_eq!(
            missing.error,
            PacketError::PayloadMissing {
                len: 100,
                available: 99
            }
        );
        assert_eq!(missing.header.map(|h| h.dst_port), Some(52));
        header.len = MAX_PAYLOAD + 1;
        mem.write_slice(&header.to_bytes(), GuestAddress(0x1000))
            .unwrap();
        let huge = [Descriptor::new(0x1000, 0x2_0000, 0, 0)];
        assert!(matches!(
            TxPacket::parse(&mem, &huge).unwrap_err().error,
            PacketError::PayloadTooLong { .. }
        ));
    }

    #[test]
    fn rx_buffers_take_what_fits_across_descriptors() {
        let mem = guest_memory();
        let chain = [
            Descriptor::new(0x3000, 10, WRITE, 0),
            Descriptor::new(0x4000, 40, WRITE, 0),
        ];
        let buffer = RxBuffer::new(&chain).unwrap();

        let used = buffer.write(&mem, &sample(), b"0123456789").unwrap();

        assert_eq!(buffer.payload_room(), 6);
        assert_eq!(used, 50);
        let mut raw = [0u8; HEADER_LEN];
        mem.read_slice(&mut raw[..10], GuestAddress(0x3000))
            .unwrap();
        mem.read_slice(&mut raw[10..], GuestAddress(0x4000))
            .unwrap();
        assert_eq!(Header::from_bytes(&raw).len, 6);
        let mut payload = [0u8; 6];
        mem.read_slice(&mut payload, GuestAddress(0x4000 + 34))
            .unwrap();
        assert_eq!(&payload, b"012345");
        assert!(RxBuffer::new(&[Descriptor::new(0x3000, 43, WRITE, 0)]).is_err());
        assert!(RxBuffer::new(&[Descriptor::new(0x3000, 64, 0, 0)]).is_err());
    }

    #[test]
    fn transport_reset_events_need_four_writable_bytes() {
        let mem = guest_memory();
        mem.write_slice(&[0xFF; 4], GuestAddress(0x5000)).unwrap();

        let used = write_transport_reset(&mem, &[Descriptor::new(0x5000, 8, WRITE, 0)]);
        let short = write_transport_reset(&mem, &[Descriptor::new(0x5000, 3, WRITE, 0)]);

        assert_eq!(used, Ok(4));
        assert!(short.is_err());
        let id: u32 = mem.read_obj(GuestAddress(0x5000)).unwrap();
        assert_eq!(id, EVENT_TRANSPORT_RESET);
    }
}
