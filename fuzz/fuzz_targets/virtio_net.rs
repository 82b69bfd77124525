//! virtio-net behind the PCI transport, driven by a hostile guest script, on a fake TAP that
//! swallows transmitted frames and has frames of script-chosen sizes to receive.
#![no_main]

use std::io;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use virtio::VirtioDevice;
use virtio::net::{GuestOffloads, Net, NetBackend, NetCounters, NetOptions};

#[derive(Default)]
struct FakeTap {
    pending: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl NetBackend for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = (self.pending.lock().unwrap().pop()).ok_or(io::ErrorKind::WouldBlock)?;
        let len = frame.len().min(buf.len());
        buf[..len].copy_from_slice(&frame[..len]);
        Ok(len)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        Ok(frame.len())
    }

    fn set_offloads(&mut self, _offloads: GuestOffloads) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let options = NetOptions {
        mac: [0x02, 0, 0, 0, 0, 1],
        offloads: true,
        counters: Arc::new(NetCounters::default()),
        rx_limiter: None,
        tx_limiter: None,
    };
    let tap = FakeTap::default();
    let pending = Arc::clone(&tap.pending);
    let device = Net::new(Box::new(tap), options);
    // A host step: a frame of 0 to 2 KiB arrives on the TAP, and the TAP reads as ready.
    let host = move |device: &mut Net, size: u8| {
        let mut frames = pending.lock().unwrap();
        if frames.len() < 16 {
            frames.push(vec![size; usize::from(size) * 8]);
        }
        drop(frames);
        let _ = device.process_queue(0);
    };
    oxvirt_fuzz::run_device_script_with_host(device, oxvirt_fuzz::guest_memory(), data, host);
});
