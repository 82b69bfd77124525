//! virtio-vsock behind the PCI transport, driven by a hostile guest script. Guest connections
//! to host ports reach socket pairs whose far ends the script writes to and closes.
#![no_main]

use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use virtio::vsock::{Vsock, VsockBackend};

#[derive(Default)]
struct FakeHost {
    /// The host programs' ends of the connections the guest made.
    peers: Arc<Mutex<Vec<UnixStream>>>,
}

impl VsockBackend for FakeHost {
    fn listener_fd(&self) -> Option<RawFd> {
        None
    }

    fn accept(&mut self) -> std::io::Result<Option<UnixStream>> {
        Ok(None)
    }

    fn connect(&mut self, port: u32) -> std::io::Result<UnixStream> {
        if port % 4 == 0 {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let mut peers = self.peers.lock().unwrap();
        if peers.len() >= 8 {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        peers.push(theirs);
        Ok(ours)
    }
}

fuzz_target!(|data: &[u8]| {
    let host = FakeHost::default();
    let peers = Arc::clone(&host.peers);
    let Ok(device) = Vsock::new(3, Box::new(host)) else {
        return;
    };
    // A host step: a host program writes to one connection, or closes it.
    let host_step = move |device: &mut Vsock, byte: u8| {
        let mut peers = peers.lock().unwrap();
        if !peers.is_empty() {
            let index = usize::from(byte) % peers.len();
            if byte & 0x80 != 0 {
                peers.remove(index);
            } else {
                let _ = peers[index].write(&[byte; 64]);
            }
        }
        drop(peers);
        device.process_host_events();
    };
    oxvirt_fuzz::run_device_script_with_host(device, oxvirt_fuzz::guest_memory(), data, host_step);
});
