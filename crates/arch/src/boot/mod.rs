//! What the bootstrap processor finds when it starts: page tables, GDT/IDT, the Linux zero
//! page or the PVH start info, and the register state of the two entry modes.
//!
//! - 64-bit Linux entry ([`linux64_sregs`], [`linux64_regs`]): long mode, paging on with the
//!   identity map of [`setup_page_tables`], `RSI` = zero page ([`write_linux_zero_page`]).
//! - PVH entry ([`pvh_sregs`], [`pvh_regs`]): 32-bit protected mode, paging off,
//!   `EBX` = `hvm_start_info` ([`write_pvh_start_info`]).
//!
//! Both need [`setup_gdt`] (the segments the registers name) in guest memory.
//! - Firmware ([`reset_sregs`], [`reset_regs`]): the CPU's reset state, real mode at the reset
//!   vector; nothing in guest memory.

mod gdt;
mod initrd;
mod paging;
mod pvh;
mod regs;
mod zero_page;

pub use gdt::setup_gdt;
pub use initrd::initrd_load_addr;
pub use paging::setup_page_tables;
pub use pvh::{PVH_MAX_MEMMAP_ENTRIES, write_pvh_start_info};
pub use regs::{
    RESET_IP, boot_fpu, linux64_regs, linux64_sregs, pvh_regs, pvh_sregs, reset_regs, reset_sregs,
};
pub use zero_page::{ZeroPageConfig, write_linux_zero_page};

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

/// Why a boot structure could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Guest memory does not cover the structure's address.
    #[error("cannot write the {what} at guest address {addr:#x}")]
    GuestMemory {
        /// Which structure.
        what: &'static str,
        /// Where it goes.
        addr: u64,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// More memory-map entries than the boot structure has room for.
    #[error("{count} memory map entries do not fit in the {what} (at most {max})")]
    TooManyMemoryMapEntries {
        /// Which structure (zero page e820 table or PVH memory map).
        what: &'static str,
        /// Entries given.
        count: usize,
        /// The table's capacity.
        max: usize,
    },
    /// The command line is longer than the kernel's setup header allows.
    #[error("kernel command line of {size} bytes is longer than this kernel accepts ({max} bytes)")]
    CmdlineTooLong {
        /// Its length without the terminating NUL.
        size: u32,
        /// The kernel's `cmdline_size`.
        max: u32,
    },
    /// No page-aligned room for the initrd between the kernel and the top of low RAM.
    #[error("initrd of {size} bytes does not fit in guest memory above the kernel")]
    InitrdDoesNotFit {
        /// Initrd size.
        size: u64,
    },
}

/// Writes `value` at `addr`, naming `what` in the error.
fn write_at<M, T>(mem: &M, what: &'static str, addr: u64, value: T) -> Result<(), BootError>
where
    M: GuestMemory + ?Sized,
    T: vm_memory::ByteValued,
{
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| BootError::GuestMemory { what, addr, source })
}

/// Writes `bytes` at `addr`, naming `what` in the error.
fn write_bytes_at<M>(mem: &M, what: &'static str, addr: u64, bytes: &[u8]) -> Result<(), BootError>
where
    M: GuestMemory + ?Sized,
{
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| BootError::GuestMemory { what, addr, source })
}

#[cfg(test)]
pub(crate) mod test_memory {
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    /// A 16 MiB guest, enough for every low-memory boot structure.
    pub fn guest_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }
}
