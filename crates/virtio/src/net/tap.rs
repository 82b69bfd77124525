//! A TAP ([`net_util::Tap`]) as virtio-net's host side, shared by the VMM and
//! `oxvmm-vhost-user`, and the random MAC address a card gets when none is configured.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};

use net_util::{Offloads, Tap};

use super::{GuestOffloads, NetBackend};

/// A TAP as virtio-net's backend.
pub struct TapBackend(pub Tap);

impl NetBackend for TapBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_frame(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.0.write_frame(frame)
    }

    fn set_offloads(&mut self, offloads: GuestOffloads) -> std::io::Result<()> {
        self.0
            .set_offloads(Offloads {
                csum: offloads.csum,
                tso4: offloads.tso4,
                tso6: offloads.tso6,
            })
            .map_err(std::io::Error::other)
    }

    /// The TAP itself: a vhost-user back-end's vring worker watches it (edge-triggered, see
    /// [`super::Net`]'s `ExternalQueues` implementation); the VMM watches its own duplicate
    /// and never asks.
    fn event_fd(&self) -> Option<RawFd> {
        Some(self.0.as_raw_fd())
    }
}

/// A random locally administered unicast address (`02:xx:xx:xx:xx:xx`) for a card the user
/// gave no MAC address.
pub fn random_mac() -> std::io::Result<[u8; 6]> {
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    File::open("/dev/urandom")?.read_exact(&mut mac[1..])?;
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_locally_administered_unicast() {
        let a = random_mac().unwrap();
        let b = random_mac().unwrap();

        assert_eq!(a[0], 0x02);
        assert_ne!(a, b);
    }
}
