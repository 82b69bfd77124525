//! Randomized restore tests: states taken from devices a random guest drove, then randomly
//! corrupted, are restored and the devices driven again. A restore either succeeds, and the
//! device then reports exactly the state it was given (which survives the snapshot file's
//! encodings), or fails with a message and leaves the device as it was; nothing panics.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::acpi_pm::ACPI_PM_LEN;
use crate::cmos::{CMOS_LEN, NVRAM_SIZE};
use crate::i8042::{DataTarget, I8042_LEN, OUTPUT_QUEUE_LEN};
use crate::ioapic::{IOAPIC_MMIO_LEN, IOAPIC_NUM_PINS};
use crate::serial::{SERIAL_FIFO_LEN, SERIAL_PORT_LEN};
use crate::test_utils::{
    FakeClock, FakePower, RecordingIrq, RecordingMsi, Rng, random_access, read_byte,
};
use crate::{
    AcpiPm, AcpiPmState, BusDevice, Cmos, CmosState, I8042, I8042State, Ioapic, IoapicState,
    Serial, SerialState,
};

const ROUNDS: usize = 1_500;
const ACCESSES_PER_ROUND: usize = 24;

/// What the shared test loop needs from a device.
trait Snapshot: BusDevice {
    type State: Clone + Debug + PartialEq + Serialize + DeserializeOwned;
    type Error: std::error::Error;

    /// Number of addresses the device decodes.
    const LEN: u64;

    fn take(&self) -> Self::State;
    fn put(&mut self, state: &Self::State) -> Result<(), Self::Error>;

    /// Whether `got`, read back right after restoring `wanted`, is what it should be.
    fn restored_as(wanted: &Self::State, got: &Self::State) -> bool {
        wanted == got
    }
}

macro_rules! snapshot_via_state_and_restore {
    ($device:ty, $state:ty, $error:ty, $len:expr) => {
        impl Snapshot for $device {
            type State = $state;
            type Error = $error;
            const LEN: u64 = $len;

            fn take(&self) -> $state {
                self.state()
            }

            fn put(&mut self, state: &$state) -> Result<(), $error> {
                self.restore(state)
            }
        }
    };
}

snapshot_via_state_and_restore!(Serial, SerialState, crate::SerialError, SERIAL_PORT_LEN);
snapshot_via_state_and_restore!(I8042, I8042State, crate::I8042Error, I8042_LEN);
snapshot_via_state_and_restore!(Cmos, CmosState, crate::CmosError, CMOS_LEN);
snapshot_via_state_and_restore!(AcpiPm, AcpiPmState, crate::AcpiPmError, ACPI_PM_LEN);

impl Snapshot for Ioapic {
    type State = IoapicState;
    type Error = crate::IoapicError;
    const LEN: u64 = IOAPIC_MMIO_LEN;

    fn take(&self) -> IoapicState {
        self.state()
    }

    fn put(&mut self, state: &IoapicState) -> Result<(), crate::IoapicError> {
        self.restore(state)
    }

    /// A restore may deliver a pending level interrupt, which sets Remote IRR; nothing else
    /// changes.
    fn restored_as(wanted: &IoapicState, got: &IoapicState) -> bool {
        const REMOTE_IRR: u64 = 1 << 14;
        let entries_match = wanted
            .redirection
            .iter()
            .zip(&got.redirection)
            .all(|(want, got)| want & !REMOTE_IRR == got & !REMOTE_IRR && got & want == *want);
        entries_match
            && (wanted.id, wanted.ioregsel, wanted.line_levels)
                == (got.id, got.ioregsel, got.line_levels)
    }
}

/// The state survives JSON and the snapshot crate's bincode configuration unchanged.
fn assert_encodings_round_trip<S: Debug + PartialEq + Serialize + DeserializeOwned>(state: &S) {
    let json = serde_json::to_string(state).unwrap();
    assert_eq!(&serde_json::from_str::<S>(&json).unwrap(), state, "{json}");
    let config = bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding();
    let bytes = bincode::serde::encode_to_vec(state, config).unwrap();
    let (decoded, used): (S, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!((&decoded, used), (state, bytes.len()));
}

/// Counts of restores that were accepted and refused.
#[derive(Debug, Default)]
struct Outcomes {
    restored: usize,
    refused: usize,
}

/// Drives `source` randomly, corrupts its state with `mutate`, restores that into `target`
/// (a used device, or sometimes a fresh one) and drives `target` randomly, `ROUNDS` times.
fn restore_mutated_states<D: Snapshot>(
    rng: &mut Rng,
    mut make: impl FnMut() -> D,
    mutate: fn(&mut Rng, &mut D::State),
    mut host: impl FnMut(&mut Rng, &mut D),
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut source = make();
    let mut target = make();
    for _ in 0..ROUNDS {
        drive(rng, &mut source, &mut host);
        let mut state = source.take();
        if !rng.chance(8) {
            mutate(rng, &mut state);
        }
        if rng.chance(4) {
            target = make();
        }
        let before = target.take();
        match target.put(&state) {
            Ok(()) => {
                outcomes.restored += 1;
                let after = target.take();
                assert!(D::restored_as(&state, &after), "{state:?}\n{after:?}");
                assert_encodings_round_trip(&state);
            }
            Err(err) => {
                outcomes.refused += 1;
                assert!(err.to_string().contains("state"), "{err}");
                assert_eq!(target.take(), before, "a refused restore changes nothing");
            }
        }
        drive(rng, &mut target, &mut host);
        if rng.chance(2) {
            std::mem::swap(&mut source, &mut target);
        }
    }
    outcomes
}

fn drive<D: Snapshot>(rng: &mut Rng, device: &mut D, host: &mut impl FnMut(&mut Rng, &mut D)) {
    for _ in 0..ACCESSES_PER_ROUND {
        if rng.chance(10) {
            host(rng, device);
        } else {
            random_access(rng, device, D::LEN);
        }
    }
}

/// Mostly one of `likely` (values that matter to the device), sometimes anything.
fn pick_u8(rng: &mut Rng, likely: &[u8]) -> u8 {
    match likely.get(rng.below(likely.len() as u64 + 1) as usize) {
        Some(&value) => value,
        None => rng.byte(),
    }
}

fn pick_u32(rng: &mut Rng, likely: &[u32]) -> u32 {
    match likely.get(rng.below(likely.len() as u64 + 1) as usize) {
        Some(&value) => value,
        None => rng.next() as u32,
    }
}

/// Bytes of a random length up to a little past `capacity`.
fn queue(rng: &mut Rng, capacity: usize) -> Vec<u8> {
    let len = rng.below(capacity as u64 + 4) as usize;
    rng.bytes(len)
}

fn assert_both_outcomes(outcomes: &Outcomes) {
    assert!(outcomes.restored > ROUNDS / 10, "{outcomes:?}");
    assert!(outcomes.refused > ROUNDS / 20, "{outcomes:?}");
}

fn mutate_serial(rng: &mut Rng, state: &mut SerialState) {
    for _ in 0..=rng.below(3) {
        match rng.below(10) {
            0 => state.baud_divisor_low = rng.byte(),
            1 => state.baud_divisor_high = rng.byte(),
            2 => state.interrupt_enable = pick_u8(rng, &[0x00, 0x01, 0x02, 0x0F, 0x10]),
            3 => state.interrupt_identification = pick_u8(rng, &[0x01, 0x02, 0x04, 0x06, 0]),
            4 => state.line_control = rng.byte(),
            5 => state.line_status = pick_u8(rng, &[0x60, 0x61]),
            6 => state.modem_control = pick_u8(rng, &[0x08, 0x10, 0x1F]),
            7 => state.modem_status = rng.byte(),
            8 => state.scratch = rng.byte(),
            _ => state.rx_fifo = queue(rng, SERIAL_FIFO_LEN),
        }
    }
    if rng.chance(2) {
        // Keep data-ready consistent, so more of the mutated states are restorable.
        state.line_status = 0x60 | u8::from(!state.rx_fifo.is_empty());
    }
}

#[test]
fn serial_restores_mutated_states_without_panicking() {
    let mut rng = Rng::new(0x005e_71a1_5a7e);
    let make = || Serial::new(Arc::new(RecordingIrq::default()), Box::new(std::io::sink()));
    let host = |rng: &mut Rng, serial: &mut Serial| {
        let len = rng.below(8) as usize;
        let input = rng.bytes(len);
        let _ = serial.enqueue_input(&input);
    };

    let outcomes = restore_mutated_states(&mut rng, make, mutate_serial, host);

    assert_both_outcomes(&outcomes);
}

fn mutate_i8042(rng: &mut Rng, state: &mut I8042State) {
    const TARGETS: [DataTarget; 5] = [
        DataTarget::Keyboard,
        DataTarget::Ctr,
        DataTarget::OutputPort,
        DataTarget::EchoAsKeyboard,
        DataTarget::Aux,
    ];
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            0 => state.configuration = rng.byte(),
            1 => state.output_port = rng.byte(),
            2 => state.last_write_was_command = rng.chance(2),
            3 => state.data_target = TARGETS[rng.below(5) as usize],
            4 => {
                state.keyboard_command =
                    Some(pick_u8(rng, &[0xED, 0xF0, 0xF3])).filter(|_| rng.chance(3));
            }
            _ => state.output_queue = queue(rng, OUTPUT_QUEUE_LEN),
        }
    }
}

#[test]
fn i8042_restores_mutated_states_without_panicking() {
    let mut rng = Rng::new(0x8042_5a7e);
    let make = || {
        I8042::new(
            Arc::new(FakePower::default()),
            Arc::new(RecordingIrq::default()),
        )
    };
    let host = |_: &mut Rng, i8042: &mut I8042| {
        let _ = i8042.trigger_ctrl_alt_del();
        assert_ne!(read_byte(i8042, 4) & 0x10, 0, "keyboard always unlocked");
    };

    let outcomes = restore_mutated_states(&mut rng, make, mutate_i8042, host);

    assert_both_outcomes(&outcomes);
}

fn mutate_cmos(rng: &mut Rng, state: &mut CmosState) {
    for _ in 0..=rng.below(3) {
        match rng.below(8) {
            0 => state.index = pick_u8(rng, &[0x0A, 0x0B, 0x7F, 0x80, 0xFF]),
            1 | 2 => {
                let register = rng.below(NVRAM_SIZE as u64) as usize;
                if let Some(byte) = state.nvram.get_mut(register) {
                    *byte = pick_u8(rng, &[0x80, 0x26, 0x70, 0x04, 0x06]);
                }
            }
            3 => state
                .nvram
                .resize(NVRAM_SIZE - 1 + rng.below(3) as usize, 0),
            4 => {
                state.clock_offset_secs = match rng.below(4) {
                    0 => i64::MIN,
                    1 => i64::MAX,
                    _ => rng.next() as i64 >> rng.below(64),
                }
            }
            5 => {
                state.clock_offset_nanos = pick_u32(rng, &[0, 999_999_999, 1_000_000_000, u32::MAX])
            }
            _ => state.stopped_phase_nanos = pick_u32(rng, &[0, 500_000_000, 1_000_000_000]),
        }
    }
}

#[test]
fn cmos_restores_mutated_states_without_panicking() {
    let mut rng = Rng::new(0xc305_5a7e);
    let clock = Arc::new(FakeClock::at(Duration::from_secs(1_700_000_000)));
    let make = || Cmos::new(clock.clone());
    let host = |rng: &mut Rng, cmos: &mut Cmos| {
        clock.advance(Duration::from_nanos(rng.below(2_000_000_000)));
        cmos.write(0, &[0x0D]);
        assert_eq!(read_byte(cmos, 1), 0x80, "Status D keeps VRT");
    };

    let outcomes = restore_mutated_states(&mut rng, make, mutate_cmos, host);

    assert_both_outcomes(&outcomes);
}

fn mutate_acpi_pm(rng: &mut Rng, state: &mut AcpiPmState) {
    for _ in 0..=rng.below(3) {
        match rng.below(5) {
            0 => state.pm1_status = pick_u32(rng, &[0, 0x100, 0x101]) as u16,
            1 => state.pm1_enable = rng.next() as u16,
            2 => state.pm1_control = pick_u32(rng, &[0, 0x1C02, 0x2000]) as u16,
            3 => state.pm_timer = pick_u32(rng, &[0, 0x00FF_FFFF, 0x0100_0000]),
            _ => {
                state.pm_timer_fraction = pick_u32(rng, &[0, 999_999_999, 1_000_000_000, u32::MAX])
            }
        }
    }
}

#[test]
fn acpi_pm_restores_mutated_states_without_panicking() {
    let mut rng = Rng::new(0xac91_5a7e);
    let clock = Arc::new(FakeClock::default());
    let make = || {
        AcpiPm::with_clock(
            Arc::new(FakePower::default()),
            Arc::new(RecordingIrq::default()),
            clock.clone(),
        )
    };
    let host = |rng: &mut Rng, pm: &mut AcpiPm| {
        if rng.chance(2) {
            pm.press_power_button();
        }
        clock.advance(Duration::from_nanos(rng.next() >> 20));
        assert_eq!(read_byte(pm, 4) & 1, 1, "SCI_EN always reads 1");
        assert!(pm.pm_timer() <= 0x00FF_FFFF);
    };

    let outcomes = restore_mutated_states(&mut rng, make, mutate_acpi_pm, host);

    assert_both_outcomes(&outcomes);
}

fn mutate_ioapic(rng: &mut Rng, state: &mut IoapicState) {
    for _ in 0..=rng.below(4) {
        let pin = rng.below(IOAPIC_NUM_PINS as u64) as usize;
        match rng.below(5) {
            0 => state.id = pick_u8(rng, &[0, 0x0F, 0x10]),
            1 => state.ioregsel = rng.byte(),
            2 => state.line_levels[pin] = !state.line_levels[pin],
            // Plausible entries: vector, delivery mode, mode bits, Remote IRR, destination.
            3 => state.redirection[pin] = rng.next() & 0xFF00_0000_0001_EFFF,
            _ => state.redirection[pin] = rng.next(),
        }
    }
}

#[test]
fn ioapic_restores_mutated_states_without_panicking() {
    let mut rng = Rng::new(0x10a9_5a7e);
    let make = || Ioapic::new(Arc::new(RecordingMsi::default()));
    let host = |rng: &mut Rng, ioapic: &mut Ioapic| match rng.below(3) {
        0 => ioapic.set_irq(rng.below(IOAPIC_NUM_PINS as u64) as usize, rng.chance(2)),
        1 => ioapic.end_of_interrupt(rng.byte()),
        _ => {
            ioapic.write(0, &[0x10 + rng.below(48) as u8]);
            ioapic.write(0x10, &(rng.next() as u32).to_le_bytes());
        }
    };

    let outcomes = restore_mutated_states(&mut rng, make, mutate_ioapic, host);

    assert_both_outcomes(&outcomes);
}
