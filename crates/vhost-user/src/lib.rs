//! `oxvmm-vhost-user`: oxvirt's virtio device models served as vhost-user back-ends, so that
//! another VMM (QEMU's `vhost-user-blk-pci`, `vhost-user-rng-pci`, Cloud Hypervisor…) runs
//! them in a separate process.
//!
//! This crate owns:
//! - [`spec`]: the `DEVICE` argument (`blk path=…`, `rng src=…`, `vsock cid=…,uds=…`,
//!   `net tap=…`) and building the device (virtio-net's TAP backend is
//!   [`virtio::net::TapBackend`], the VMM's too);
//! - [`backend::DeviceBackend`]: a device model behind `vhost-user-backend`'s
//!   `VhostUserBackend` trait; queues are processed by the device's own code through
//!   [`virtio::ExternalQueues`], the one implementation oxvmm also runs in-process, and a
//!   device's own events (virtio-vsock's host sockets, virtio-net's TAP, virtio-blk's I/O
//!   thread completions) are watched by the vring worker;
//! - [`server::Server`]: the listening socket, one front-end at a time, a fresh protocol state
//!   and a device reset for each connection, so a front-end can reconnect;
//! - [`reorder`]: the relay between the front-end's socket and the `vhost` crate's request
//!   handler that holds a `SET_VRING_ENABLE` sent before `SET_FEATURES` (QEMU 7.2).
//!
//! What it must not do: implement a device a second time (device behaviour belongs to the
//! `virtio` crate), or trust the front-end: every message error closes that connection and
//! the server waits for the next; guest-made queue errors stop that queue, never the process.

pub mod backend;
pub mod reorder;
pub mod server;
pub mod spec;

pub use backend::DeviceBackend;
pub use server::{ConnectionEnd, Server, ServerError};
pub use spec::{BuildError, DeviceSpec, SpecError};
