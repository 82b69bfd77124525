//! virtio-console behind the PCI transport, driven by a hostile guest script, with host input
//! arriving at script-chosen moments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::VirtioDevice;
use virtio::console::Console;

fuzz_target!(|data: &[u8]| {
    let device = Console::new(Box::new(std::io::sink()));
    let host = |device: &mut Console, byte: u8| {
        device.push_input(&vec![byte; usize::from(byte)]);
        let _ = device.process_queue(0);
    };
    oxvirt_fuzz::run_device_script_with_host(device, oxvirt_fuzz::guest_memory(), data, host);
});
