//! Host networking helpers: TAP devices opened with a virtio-net header and offloads
//! ([`Tap`]), interface settings through ioctls (link up, MAC address), persistent TAPs for
//! tests, and raw packet sockets bound to an interface ([`PacketSocket`]) that tests and
//! benchmarks use to see the other end of a TAP.
//!
//! It knows nothing of VMs, virtio queues or guest memory: the VMM hands a [`Tap`]'s file
//! descriptor to its virtio-net device. It must not depend on any other workspace crate.

mod ifreq;
mod packet;
mod tap;

pub use ifreq::{IfError, set_link_up, set_mac};
pub use packet::PacketSocket;
pub use tap::{Offloads, Tap, TapError, VNET_HDR_LEN};
