//! hypervisor (being written).
