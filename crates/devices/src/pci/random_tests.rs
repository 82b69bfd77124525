//! Randomized robustness tests of the PCI model: random configuration, ECAM, window and
//! MSI-X accesses must never panic, and must leave the read-only identity untouched.

use std::sync::{Arc, Mutex};

use super::root::tests::{TestDevice, windows};
use super::{
    BarKind, MsixConfig, MsixRegion, PCI_CONFIG_IO_LEN, PciConfigIo, PciConfigMmio, PciMmioWindow,
    PciRoot,
};
use crate::BusDevice;
use crate::test_utils::{FakePower, RecordingMsi, Rng, random_access};

const ITERATIONS: usize = 20_000;

fn populated_root() -> Arc<Mutex<PciRoot>> {
    let root = Arc::new(Mutex::new(PciRoot::new()));
    {
        let mut root = root.lock().unwrap();
        for bars in [
            vec![(0, 0x1000, BarKind::Mmio32)],
            vec![(0, 0x100, BarKind::Mmio32), (2, 0x4000, BarKind::Mmio64)],
            vec![(4, 0x10, BarKind::Mmio64)],
        ] {
            root.add_device(Arc::new(Mutex::new(TestDevice::new(&bars))))
                .unwrap();
        }
        root.allocate_bars(&windows()).unwrap();
    }
    root
}

fn identity(root: &Arc<Mutex<PciRoot>>) -> Vec<u32> {
    let root = root.lock().unwrap();
    (0..4u8)
        .map(|slot| {
            let mut data = [0u8; 4];
            root.config_read(0, slot, 0, 0, &mut data);
            u32::from_le_bytes(data)
        })
        .collect()
}

#[test]
fn config_ports_survive_random_accesses() {
    let mut rng = Rng::new(0xCF8);
    let root = populated_root();
    let before = identity(&root);
    let mut io = PciConfigIo::with_reset(root.clone(), Arc::new(FakePower::default()));

    for _ in 0..ITERATIONS {
        if rng.chance(3) {
            // Aim CONFIG_ADDRESS at a populated slot so the data port sees real devices.
            let address =
                0x8000_0000u32 | ((rng.below(5) as u32) << 11) | (rng.below(64) as u32 * 4);
            io.write(0, &address.to_le_bytes());
        }
        random_access(&mut rng, &mut io, PCI_CONFIG_IO_LEN);
    }

    assert_eq!(identity(&root), before);
}

#[test]
fn ecam_and_windows_survive_random_accesses() {
    let mut rng = Rng::new(0xECA);
    let root = populated_root();
    let before = identity(&root);
    let mut ecam = PciConfigMmio::new(root.clone());
    let mut window = PciMmioWindow::new(root.clone(), 0xC000_0000);

    for _ in 0..ITERATIONS {
        match rng.below(3) {
            0 => random_access(&mut rng, &mut ecam, 5 << 15),
            1 => random_access(&mut rng, &mut window, 0x10000),
            _ => {
                // Keep memory decoding on most of the time so window accesses reach BARs.
                let slot = rng.below(4);
                ecam.write((slot << 15) + 4, &[0x06, 0]);
            }
        }
    }

    assert_eq!(identity(&root), before);
    let decoded = root.lock().unwrap().decoded_bars();
    for (_, _, range) in decoded {
        assert!(range.base.checked_add(range.len - 1).is_some());
    }
}

#[test]
fn msix_survives_random_table_accesses() {
    let mut rng = Rng::new(0x11);
    let sink = Arc::new(RecordingMsi::default());
    let mut msix = MsixConfig::new(
        5,
        MsixRegion {
            bar: 1,
            offset: 0x100,
        },
        MsixRegion {
            bar: 1,
            offset: 0x800,
        },
        sink,
    )
    .unwrap();
    msix.set_route_base(Some(24));

    for _ in 0..ITERATIONS {
        let offset = match rng.below(4) {
            0 => rng.next(),
            _ => rng.below(0x900),
        };
        let len = rng.below(9) as usize;
        let mut data = rng.bytes(len);
        match rng.below(6) {
            0 => {
                msix.bar_read(rng.below(3) as usize, offset, &mut data);
            }
            1 => msix.set_control(rng.next() as u16),
            2 => {
                msix.notify(rng.below(7) as u16);
            }
            _ => {
                msix.bar_write(1, offset, &data);
            }
        }
        for vector in 0..5 {
            assert!(!(msix.enabled() && !msix.is_masked(vector) && msix.is_pending(vector)));
        }
    }
}
