//! vmm (being written).
