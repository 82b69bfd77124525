//! How a virtio-blk request sits in a descriptor chain (virtio 1.2, 5.2.6): a 16-byte
//! header and any data the device reads, in device-readable buffers; then any data the
//! device writes and, last, the status byte, in device-writable buffers.
//!
//! The driver may cut these into buffers however it likes (virtio 1.2, 2.6.4: "message
//! framing"), so the header may span buffers and the status byte may share the last buffer
//! with data. [`frame`] therefore treats the chain as two byte streams, readable then
//! writable, and refuses chains that interleave them.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError};

/// Bytes of the request header: le32 type, le32 reserved, le64 sector.
pub const HEADER_LEN: usize = 16;

/// A run of guest memory, inside guest memory (checked by `collect_chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Its first byte.
    pub addr: GuestAddress,
    /// Its length in bytes.
    pub len: u64,
}

/// Total bytes of `segments`.
pub fn total_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|segment| segment.len).sum()
}

/// The request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `VIRTIO_BLK_T_*`.
    pub request_type: u32,
    /// First 512-byte sector, for the types that have one.
    pub sector: u64,
}

/// A chain cut into the parts of a request.
#[derive(Debug)]
pub struct Framed {
    /// The header.
    pub header: Header,
    /// Device-readable bytes after the header (OUT data, discard ranges).
    pub readable: Vec<Segment>,
    /// Device-writable bytes before the status byte (IN data, the ID).
    pub writable: Vec<Segment>,
    /// Where the status byte goes.
    pub status: GuestAddress,
    /// Every device-writable byte, the status included: what the used element reports.
    pub used_len: u32,
}

/// Why a chain is not a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Where to report `VIRTIO_BLK_S_IOERR` and the used length to report, when the chain
    /// ends in a device-writable byte; otherwise the chain is returned with 0 bytes.
    pub status: Option<(GuestAddress, u32)>,
    /// What is wrong, for the log.
    pub reason: &'static str,
}

/// Cuts a whole, checked chain into header, data and status.
pub fn frame<M: GuestMemory>(mem: &M, descriptors: &[Descriptor]) -> Result<Framed, Refusal> {
    let (status, used_len) = status_byte(descriptors)?;
    let refuse = |reason| Refusal {
        status: Some((status, used_len)),
        reason,
    };
    let first_writable = descriptors
        .iter()
        .position(|d| d.is_write_only())
        .unwrap_or(descriptors.len());
    if descriptors[first_writable..]
        .iter()
        .any(|d| !d.is_write_only())
    {
        return Err(refuse(
            "a device-readable buffer follows a device-writable one",
        ));
    }
    let readable = segments(&descriptors[..first_writable]);
    let mut writable = segments(&descriptors[first_writable..]);
    if total_len(&readable) < HEADER_LEN as u64 {
        return Err(refuse(
            "the header is shorter than 16 bytes or not device-readable",
        ));
    }
    let mut raw = [0u8; HEADER_LEN];
    let mut cursor = Cursor::new(&readable);
    if cursor.read(mem, &mut raw).is_err() {
        return Err(refuse("the header cannot be read"));
    }
    let readable = cursor.remaining();
    drop_last_byte(&mut writable);
    Ok(Framed {
        header: parse_header(&raw),
        readable,
        writable,
        status,
        used_len,
    })
}

/// The status byte (the last byte of the last buffer, which must be device-writable) and
/// the count of device-writable bytes.
fn status_byte(descriptors: &[Descriptor]) -> Result<(GuestAddress, u32), Refusal> {
    let no_status = |reason| Refusal {
        status: None,
        reason,
    };
    let last = descriptors
        .last()
        .ok_or_else(|| no_status("the chain is empty"))?;
    if !last.is_write_only() || last.len() == 0 {
        return Err(no_status(
            "the last buffer is not a device-writable status byte",
        ));
    }
    let status = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .ok_or_else(|| no_status("the status byte is outside the address space"))?;
    let writable: u64 = descriptors
        .iter()
        .filter(|d| d.is_write_only())
        .map(|d| u64::from(d.len()))
        .sum();
    // virtio-queue stops chains at 4 GiB, so this fits; saturate rather than trust it.
    Ok((status, u32::try_from(writable).unwrap_or(u32::MAX)))
}

fn segments(descriptors: &[Descriptor]) -> Vec<Segment> {
    descriptors
        .iter()
        .filter(|d| d.len() > 0)
        .map(|d| Segment {
            addr: d.addr(),
            len: u64::from(d.len()),
        })
        .collect()
}

fn drop_last_byte(segments: &mut Vec<Segment>) {
    if let Some(last) = segments.last_mut() {
        last.len -= 1;
        if last.len == 0 {
            segments.pop();
        }
    }
}

fn parse_header(raw: &[u8; HEADER_LEN]) -> Header {
    let mut request_type = [0u8; 4];
    let mut sector = [0u8; 8];
    request_type.copy_from_slice(&raw[0..4]);
    sector.copy_from_slice(&raw[8..16]);
    Header {
        request_type: u32::from_le_bytes(request_type),
        sector: u64::from_le_bytes(sector),
    }
}

/// A position in a list of segments, for copying a byte stream in or out piece by piece.
pub struct Cursor<'a> {
    segments: &'a [Segment],
    index: usize,
    offset: u64,
}

impl<'a> Cursor<'a> {
    /// At the first byte of `segments`.
    pub fn new(segments: &'a [Segment]) -> Self {
        Self {
            segments,
            index: 0,
            offset: 0,
        }
    }

    /// The next piece of at most `max` bytes, advancing past it.
    fn next_piece(&mut self, max: usize) -> Option<(GuestAddress, usize)> {
        while let Some(segment) = self.segments.get(self.index) {
            let left = segment.len - self.offset;
            if left == 0 {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = left.min(max as u64);
            // Segments lie inside guest memory (checked with the chain): no overflow.
            let addr = segment.addr.checked_add(self.offset)?;
            self.offset += n;
            return Some((addr, n as usize));
        }
        None
    }

    /// Copies the next `buf.len()` bytes of guest memory into `buf`.
    pub fn read<M: GuestMemory>(
        &mut self,
        mem: &M,
        buf: &mut [u8],
    ) -> Result<(), GuestMemoryError> {
        let mut done = 0;
        while done < buf.len() {
            let (addr, n) =
                self.next_piece(buf.len() - done)
                    .ok_or(GuestMemoryError::PartialBuffer {
                        expected: buf.len(),
                        completed: done,
                    })?;
            mem.read_slice(&mut buf[done..done + n], addr)?;
            done += n;
        }
        Ok(())
    }

    /// Copies `data` into the next `data.len()` bytes of guest memory.
    pub fn write<M: GuestMemory>(&mut self, mem: &M, data: &[u8]) -> Result<(), GuestMemoryError> {
        let mut done = 0;
        while done < data.len() {
            let (addr, n) =
                self.next_piece(data.len() - done)
                    .ok_or(GuestMemoryError::PartialBuffer {
                        expected: data.len(),
                        completed: done,
                    })?;
            mem.write_slice(&data[done..done + n], addr)?;
            done += n;
        }
        Ok(())
    }

    /// The segments not consumed yet.
    pub fn remaining(&self) -> Vec<Segment> {
        let mut rest: Vec<Segment> = self.segments.get(self.index..).unwrap_or(&[]).to_vec();
        if let Some(first) = rest.first_mut() {
            // Inside guest memory like the segment itself; an impossible overflow empties it.
            match first.addr.checked_add(self.offset) {
                Some(addr) => {
                    first.addr = addr;
                    first.len -= self.offset;
                }
                None => first.len = 0,
            }
        }
        rest.retain(|segment| segment.len > 0);
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{WRITE, guest_memory};

    fn desc(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    fn seg(addr: u64, len: u64) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    fn put_header(mem: &crate::VirtioMemory, addr: u64, request_type: u32, sector: u64) {
        let mut raw = [0u8; HEADER_LEN];
        raw[..4].copy_from_slice(&request_type.to_le_bytes());
        raw[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(addr)).unwrap();
    }

    #[test]
    fn the_usual_three_buffers_frame_as_header_data_status() {
        let mem = guest_memory();
        put_header(&mem, 0x1000, 7, 0x1122_3344_5566_7788);
        let chain = [
            desc(0x1000, 16, 0),
            desc(0x2000, 1024, WRITE),
            desc(0x3000, 1, WRITE),
        ];

        let framed = frame(&mem, &chain).unwrap();

        assert_eq!(
            framed.header,
            Header {
                request_type: 7,
                sector: 0x1122_3344_5566_7788
            }
        );
        assert!(framed.readable.is_empty());
        assert_eq!(framed.writable, vec![seg(0x2000, 1024)]);
        assert_eq!(framed.status, GuestAddress(0x3000));
        assert_eq!(framed.used_len, 1025);
    }

    #[test]
    fn any_framing_is_understood() {
        let mem = guest_memory();
        // The header split 5 + 11 bytes and followed by data in the same buffer; the
        // status byte at the end of a data buffer.
        put_header(&mem, 0x1000 - 5, 1, 42);
        let chain = [
            desc(0x1000 - 5, 5, 0),
            desc(0x1000, 11 + 512, 0),
            desc(0x4000, 0, WRITE),
            desc(0x5000, 513, WRITE),
        ];

        let framed = frame(&mem, &chain).unwrap();

        assert_eq!(framed.header.sector, 42);
        assert_eq!(framed.readable, vec![seg(0x1000 + 11, 512)]);
        assert_eq!(framed.writable, vec![seg(0x5000, 512)]);
        assert_eq!(framed.status, GuestAddress(0x5000 + 512));
    }

    #[test]
    fn chains_without_a_writable_last_byte_have_no_status() {
        let mem = guest_memory();
        let readable_last = [desc(0x1000, 16, 0), desc(0x2000, 1, 0)];
        let empty_last = [desc(0x1000, 16, 0), desc(0x2000, 0, WRITE)];

        let refusals = [frame(&mem, &readable_last), frame(&mem, &empty_last)];

        for refusal in refusals {
            assert_eq!(refusal.unwrap_err().status, None);
        }
    }

    #[test]
    fn interleaved_directions_and_short_headers_get_an_error_status() {
        let mem = guest_memory();
        let interleaved = [
            desc(0x1000, 16, 0),
            desc(0x2000, 512, WRITE),
            desc(0x3000, 512, 0),
            desc(0x4000, 1, WRITE),
        ];
        let short = [desc(0x1000, 15, 0), desc(0x4000, 1, WRITE)];
        let header_writable = [desc(0x1000, 16, WRITE), desc(0x4000, 1, WRITE)];

        let results = [
            frame(&mem, &interleaved),
            frame(&mem, &short),
            frame(&mem, &header_writable),
        ];

        let used = [513, 1, 17];
        for (result, used) in results.into_iter().zip(used) {
            let refusal = result.unwrap_err();
            assert_eq!(refusal.status, Some((GuestAddress(0x4000), used)));
        }
    }

    #[test]
    fn a_cursor_copies_across_segments() {
        let mem = guest_memory();
        let segments = [seg(0x1000, 3), seg(0x2000, 0), seg(0x3000, 5)];
        let mut cursor = Cursor::new(&segments);

        cursor.write(&mem, &[1, 2, 3, 4]).unwrap();
        let rest = cursor.remaining();
        let overflow = cursor.write(&mem, &[9; 5]);
        let mut back = [0u8; 8];
        Cursor::new(&segments).read(&mem, &mut back).unwrap();

        assert_eq!(rest, vec![seg(0x3001, 4)]);
        assert!(overflow.is_err());
        assert_eq!(
            back,
            [1, 2, 3, 4, 9, 9, 9, 9],
            "the cursor stopped at the end"
        );
    }
}
