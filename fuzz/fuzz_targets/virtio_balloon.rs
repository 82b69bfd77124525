//! virtio-balloon (with the stats queue) behind the PCI transport, driven by a hostile guest
//! script; released pages are only counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::balloon::{Balloon, BalloonOptions, PageReleaser};

struct CountingReleaser(u64);

impl PageReleaser for CountingReleaser {
    fn release(&mut self, _guest_addr: u64, len: u64) -> std::io::Result<()> {
        self.0 += len;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let options = BalloonOptions {
        target_pages: 16,
        deflate_on_oom: true,
        stats: true,
    };
    let device = Balloon::new(options, Box::new(CountingReleaser(0)));
    oxvirt_fuzz::run_device_script(device, oxvirt_fuzz::guest_memory(), data);
});
