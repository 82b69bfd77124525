//! oxvmm's snapshot files: the container the VMM's state goes into, and guest memory files.
//!
//! This crate owns:
//! - [`state`]: the versioned, checksummed state file ([`encode_state`], [`decode_state`]) and
//!   its crash-safe file helpers ([`write_state_file`], [`read_state_file`]);
//! - [`memory`]: sparse guest-memory files holding only pages that were ever written
//!   ([`write_full_memory`]), diff files from KVM's dirty log ([`write_dirty_pages`]), mapping a
//!   memory file copy-on-write as guest memory ([`map_memory_file`]) and layering diffs onto it
//!   ([`apply_diff`]).
//!
//! What it must not do: know what is inside a snapshot. It depends on no other workspace crate
//! (no device, vCPU or KVM types): the VMM defines its own serde types, picks their kind string
//! and version, and puts them inside this container. Everything read back is treated as
//! hostile: truncated, corrupted or crafted files give an error, never a panic or an
//! allocation sized by an unchecked length.

mod file;
pub mod memory;
pub mod state;

pub use file::FileError;
pub use memory::{
    MemoryError, MemoryFileStats, apply_diff, map_memory_file, memory_layout, write_dirty_pages,
    write_full_memory,
};
pub use state::{StateError, decode_state, encode_state, read_state_file, write_state_file};

/// Size of a guest page, the unit of memory files and of KVM's dirty log.
pub const PAGE_SIZE: usize = 4096;

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A state file is malformed, of the wrong kind or version, or cannot be encoded.
    #[error(transparent)]
    State(#[from] StateError),
    /// A memory file or layout is inconsistent, or guest memory cannot be read or mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    File(#[from] FileError),
}
