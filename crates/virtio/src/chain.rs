//! Checks every device applies to a descriptor chain before touching its buffers.
//!
//! virtio-queue's chain iterator already stops at a loop (after queue-size descriptors), at
//! a `next` index outside the table, at an unreadable descriptor, at a nested or misaligned
//! indirect table, and at 4 GiB of buffers; it just stops, though, so a chain it cut short
//! looks complete. [`collect_chain`] notices (the last descriptor it got still says "next")
//! and refuses the chain, and checks each buffer lies inside guest memory.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestMemory, GuestMemoryError};

/// Why a descriptor chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The chain ended early: it loops, links outside its table, exceeds the queue size or
    /// 4 GiB of buffers, or an indirect table is invalid.
    #[error("descriptor chain with head {head} is malformed after {descriptors} descriptors")]
    Malformed {
        /// Head index of the chain.
        head: u16,
        /// Descriptors read before it broke off.
        descriptors: usize,
    },
    /// The chain has no descriptors.
    #[error("descriptor chain with head {head} is empty")]
    Empty {
        /// Head index of the chain.
        head: u16,
    },
    /// A buffer lies (partly) outside guest memory.
    #[error("descriptor chain with head {head}: buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Head index of the chain.
        head: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A buffer goes the wrong way (device-readable where the device must write, or the
    /// other way round).
    #[error("descriptor chain with head {head}: buffer {addr:#x}+{len:#x} has the wrong direction")]
    WrongDirection {
        /// Head index of the chain.
        head: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
}

/// Reads a whole chain: every descriptor, each inside guest memory, and the chain
/// terminated properly.
pub fn collect_chain<M>(chain: DescriptorChain<M>) -> Result<Vec<Descriptor>, ChainError>
where
    M: Clone + Deref,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let mem = chain.memory();
    let mut descriptors = Vec::new();
    let mut cut_short = false;
    let mut outside = None;
    for descriptor in chain.clone() {
        cut_short = descriptor.has_next();
        let inside = usize::try_from(descriptor.len()).is_ok_and(|len| {
            mem.check_range(descriptor.addr(), len, vm_memory::Permissions::ReadWrite)
        });
        if !inside && outside.is_none() {
            outside = Some(ChainError::OutsideMemory {
                head,
                addr: descriptor.addr().raw_value(),
                len: descriptor.len(),
            });
        }
        descriptors.push(descriptor);
    }
    if cut_short {
        return Err(ChainError::Malformed {
            head,
            descriptors: descriptors.len(),
        });
    }
    if let Some(error) = outside {
        return Err(error);
    }
    if descriptors.is_empty() {
        return Err(ChainError::Empty { head });
    }
    Ok(descriptors)
}

/// Like [`collect_chain`], for chains that must be device-writable throughout (the driver
/// only receives: virtio-rng, the receive queues).
pub fn writable_chain<M>(chain: DescriptorChain<M>) -> Result<Vec<Descriptor>, ChainError>
where
    M: Clone + Deref,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let descriptors = collect_chain(chain)?;
    match descriptors.iter().find(|d| !d.is_write_only()) {
        Some(readable) => Err(ChainError::WrongDirection {
            head,
            addr: readable.addr().raw_value(),
            len: readable.len(),
        }),
        None => Ok(descriptors),
    }
}

/// Copies the bytes of `buffers`, in order, into `out` (as long as their total): how a
/// device reads what the driver sent in a checked chain. An error when guest memory refuses a
/// buffer or `out` is too short; `out` may then be partly filled.
pub(crate) fn gather<M: GuestMemory>(
    mem: &M,
    buffers: &[Descriptor],
    out: &mut [u8],
) -> Result<(), GuestMemoryError> {
    let expected = out.len();
    let mut at = 0usize;
    for buffer in buffers {
        let piece = at
            .checked_add(buffer.len() as usize)
            .and_then(|end| out.get_mut(at..end))
            .ok_or(GuestMemoryError::PartialBuffer {
                expected,
                completed: at,
            })?;
        mem.read_slice(piece, buffer.addr())?;
        at += piece.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VirtioMemory;
    use crate::test_utils::{guest_memory, write_desc};
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::GuestAddress;

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

    /// Publishes head 0 and returns the result of checking its chain.
    fn check(
        mem: &VirtioMemory,
        vq: &MockSplitQueue<'_, VirtioMemory>,
    ) -> Result<Vec<Descriptor>, ChainError> {
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut queue: Queue = vq.create_queue().unwrap();
        let chain = queue.iter(mem).unwrap().next().unwrap();
        writable_chain(chain)
    }

    #[test]
    fn a_proper_chain_is_collected() {
        let mem = guest_memory();
        let vq = MockSplitQueue::new(&mem, 16);
        write_desc(&vq, 0, 0x10000, 0x100, NEXT | WRITE, 1);
        write_desc(&vq, 1, 0x20000, 0x200, WRITE, 0);

        let descriptors = check(&mem, &vq).unwrap();

        assert_eq!(descriptors.len(), 2);
        assert_eq!(descriptors[1].addr(), GuestAddress(0x20000));
    }

    #[test]
    fn a_loop_is_refused() {
        let mem = guest_memory();
        let vq = MockSplitQueue::new(&mem, 16);
        write_desc(&vq, 0, 0x10000, 0x100, NEXT | WRITE, 1);
        write_desc(&vq, 1, 0x20000, 0x200, NEXT | WRITE, 0);

        let result = check(&mem, &vq);

        assert_eq!(
            result.unwrap_err(),
            ChainError::Malformed {
                head: 0,
                descriptors: 16
            }
        );
    }

    #[test]
    fn a_next_index_outside_the_table_is_refused() {
        let mem = guest_memory();
        let vq = MockSplitQueue::new(&mem, 16);
        write_desc(&vq, 0, 0x10000, 0x100, NEXT | WRITE, 16);

        assert!(matches!(
            check(&mem, &vq),
            Err(ChainError::Malformed { .. })
        ));
    }

    #[test]
    fn buffers_outside_memory_are_refused() {
        let mem = guest_memory();
        let vq = MockSplitQueue::new(&mem, 16);
        // The first region ends at 1 MiB; a hole follows.
        let end = 0x10_0000;
        write_desc(&vq, 0, end - 0x10, 0x20, WRITE, 0);

        let result = check(&mem, &vq);

        assert_eq!(
            result.unwrap_err(),
            ChainError::OutsideMemory {
                head: 0,
                addr: end - 0x10,
                len: 0x20
            }
        );
    }

    #[test]
    fn readable_buffers_are_the_wrong_direction_here() {
        let mem = guest_memory();
        let vq = MockSplitQueue::new(&mem, 16);
        write_desc(&vq, 0, 0x10000, 0x100, NEXT | WRITE, 1);
        write_desc(&vq, 1, 0x20000, 0x100, 0, 0);

        assert!(matches!(
            check(&mem, &vq),
            Err(ChainError::WrongDirection { .. })
        ));
    }

    #[test]
    fn a_broken_indirect_table_is_refused() {
        let mem = guest_memory();
        let vq = MockSplitQueue::new(&mem, 16);
        // 0x18 bytes is not a whole number of descriptors.
        write_desc(&vq, 0, 0x30000, 0x18, INDIRECT, 0);

        assert!(matches!(check(&mem, &vq), Err(ChainError::Empty { .. })));
    }

    #[test]
    fn gather_copies_the_buffers_in_order_and_refuses_a_short_output() {
        let mem = guest_memory();
        mem.write_slice(b"abc", vm_memory::GuestAddress(0x1000))
            .unwrap();
        mem.write_slice(b"de", vm_memory::GuestAddress(0x3000))
            .unwrap();
        let buffers = [
            Descriptor::new(0x1000, 3, 0, 0),
            Descriptor::new(0x3000, 2, 0, 0),
        ];
        let mut out = [0u8; 5];
        let mut short = [0u8; 4];

        let whole = gather(&mem, &buffers, &mut out);
        let cut = gather(&mem, &buffers, &mut short);

        assert!(whole.is_ok());
        assert_eq!(&out, b"abcde");
        assert!(matches!(
            cut,
            Err(GuestMemoryError::PartialBuffer {
                expected: 4,
                completed: 3
            })
        ));
    }
}
