//! virtio-rng behind the PCI transport, driven by a hostile guest script.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let device = virtio::rng::Rng::new(Box::new(std::io::repeat(0x5A)));
    oxvirt_fuzz::run_device_script(device, oxvirt_fuzz::guest_memory(), data);
});
