//! Randomized robustness tests: every device gets many random accesses (any offset, width
//! and value, reads and writes interleaved with host-side calls) and must neither panic nor
//! break the invariants a guest relies on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::acpi_pm::ACPI_PM_LEN;
use crate::cmos::CMOS_LEN;
use crate::i8042::I8042_LEN;
use crate::ioapic::{IOAPIC_MMIO_LEN, IOAPIC_NUM_PINS};
use crate::serial::SERIAL_PORT_LEN;
use crate::test_utils::{
    FakeClock, FakePower, RecordingIrq, RecordingMsi, Rng, WIDTHS, random_access, read_byte,
};
use crate::{AcpiPm, Bus, BusDevice, Cmos, I8042, Ioapic, Serial};

const ITERATIONS: usize = 20_000;

#[test]
fn serial_survives_random_accesses() {
    let mut rng = Rng::new(0x5e71a1);
    let mut serial = Serial::new(Arc::new(RecordingIrq::default()), Box::new(std::io::sink()));

    for _ in 0..ITERATIONS {
        match rng.below(50) {
            0 => {
                let input = vec![rng.byte(); rng.below(80) as usize];
                let _ = serial.enqueue_input(&input);
            }
            1 => serial.reset(),
            _ => random_access(&mut rng, &mut serial, SERIAL_PORT_LEN),
        }
        assert!(serial.fifo_capacity() <= 64);
    }
}

#[test]
fn i8042_survives_random_accesses() {
    let mut rng = Rng::new(0x8042);
    let mut i8042 = I8042::new(
        Arc::new(FakePower::default()),
        Arc::new(RecordingIrq::default()),
    );

    for _ in 0..ITERATIONS {
        match rng.below(50) {
            0 => {
                let _ = i8042.trigger_ctrl_alt_del();
            }
            1 => i8042.reset(),
            _ => random_access(&mut rng, &mut i8042, I8042_LEN),
        }
        // The keyboard-lock bit never drops: the guest always sees an unlocked keyboard.
        assert_ne!(read_byte(&mut i8042, 4) & 0x10, 0);
    }
}

#[test]
fn cmos_survives_random_accesses() {
    let mut rng = Rng::new(0xc305);
    let clock = Arc::new(FakeClock::at(Duration::from_secs(1_700_000_000)));
    let mut cmos = Cmos::new(clock.clone());

    for _ in 0..ITERATIONS {
        match rng.below(50) {
            0 => cmos.reset(),
            1 => cmos.set_memory_size(rng.next(), rng.next()),
            2 => clock.advance(Duration::from_nanos(rng.below(3_000_000_000))),
            3 => clock.set(Duration::from_nanos(rng.next())),
            _ => random_access(&mut rng, &mut cmos, CMOS_LEN),
        }
    }
    cmos.write(0, &[0x0D]);
    assert_eq!(read_byte(&mut cmos, 1), 0x80, "Status D keeps VRT");
}

#[test]
fn acpi_pm_survives_random_accesses() {
    let mut rng = Rng::new(0xac91);
    let clock = Arc::new(FakeClock::default());
    let mut pm = AcpiPm::with_clock(
        Arc::new(FakePower::default()),
        Arc::new(RecordingIrq::default()),
        clock.clone(),
    );

    for _ in 0..ITERATIONS {
        match rng.below(50) {
            0 => pm.press_power_button(),
            1 => pm.reset(),
            2 => clock.set(Duration::from_nanos(rng.next())),
            _ => random_access(&mut rng, &mut pm, ACPI_PM_LEN),
        }
        assert_eq!(read_byte(&mut pm, 4) & 1, 1, "SCI_EN always reads 1");
        assert!(pm.pm_timer() <= 0x00FF_FFFF);
    }
}

#[test]
fn ioapic_survives_random_accesses() {
    let mut rng = Rng::new(0x10a91c);
    let mut ioapic = Ioapic::new(Arc::new(RecordingMsi::default()));

    for _ in 0..ITERATIONS {
        match rng.below(20) {
            0 => ioapic.set_irq(
                rng.below(IOAPIC_NUM_PINS as u64 + 4) as usize,
                rng.chance(2),
            ),
            1 => ioapic.end_of_interrupt(rng.byte()),
            2 if rng.chance(10) => ioapic.reset(),
            // Aim at the registers often, since the window is mostly empty.
            3..=10 => {
                let offset = [0x00, 0x10, 0x40][rng.below(3) as usize];
                let value = rng.next().to_le_bytes();
                let width = WIDTHS[rng.below(WIDTHS.len() as u64) as usize].min(8);
                ioapic.write(offset, &value[..width]);
            }
            _ => random_access(&mut rng, &mut ioapic, IOAPIC_MMIO_LEN),
        }
    }
    ioapic.write(0, &[0x01]);
    let mut version = [0u8; 4];
    ioapic.read(0x10, &mut version);
    assert_eq!(u32::from_le_bytes(version), 0x0017_0020);
}

#[test]
fn platform_port_bus_survives_random_port_accesses() {
    let mut rng = Rng::new(0xb05);
    let power = Arc::new(FakePower::default());
    let msi = Arc::new(RecordingMsi::default());
    let ioapic = Arc::new(Mutex::new(Ioapic::new(msi)));
    let line = |pin| Ioapic::pin(&ioapic, pin);
    let clock = Arc::new(FakeClock::at(Duration::from_secs(1_700_000_000)));
    let mut bus = Bus::new();
    let serial = Serial::new(line(4), Box::new(std::io::sink()));
    bus.insert(Arc::new(Mutex::new(serial)), 0x3f8, SERIAL_PORT_LEN)
        .unwrap();
    let i8042 = I8042::new(power.clone(), line(1));
    bus.insert(Arc::new(Mutex::new(i8042)), 0x60, I8042_LEN)
        .unwrap();
    bus.insert(
        Arc::new(Mutex::new(Cmos::new(clock.clone()))),
        0x70,
        CMOS_LEN,
    )
    .unwrap();
    let pm = AcpiPm::with_clock(power.clone(), line(9), clock);
    bus.insert(Arc::new(Mutex::new(pm)), 0x600, ACPI_PM_LEN)
        .unwrap();
    // Let every pin deliver, so interrupts flow while the devices are shaken.
    {
        let mut ioapic = ioapic.lock().unwrap();
        for pin in 0..IOAPIC_NUM_PINS as u8 {
            ioapic.write(0, &[0x10 + 2 * pin]);
            ioapic.write(0x10, &(0x20 + u32::from(pin)).to_le_bytes());
        }
    }

    let mut handled = 0;
    for _ in 0..ITERATIONS {
        let port = rng.below(0x700);
        let width = WIDTHS[rng.below(WIDTHS.len() as u64) as usize];
        let mut data = vec![rng.byte(); width];
        let hit = if rng.chance(2) {
            bus.read(port, &mut data)
        } else {
            bus.write(port, &data)
        };
        handled += usize::from(hit);
    }

    assert!(handled > 0);
}
