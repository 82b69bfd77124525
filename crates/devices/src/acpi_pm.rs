//! ACPI fixed hardware: the PM1a event and control blocks, the PM timer and the reset
//! register, in one 16-port block (the platform puts it at 0x600).
//!
//! | offset | register | notes |
//! | --- | --- | --- |
//! | 0x0–0x1 | PM1_STS | write 1 to clear; PWRBTN_STS is bit 8 |
//! | 0x2–0x3 | PM1_EN | PWRBTN_EN is bit 8 |
//! | 0x4–0x5 | PM1_CNT | SCI_EN (bit 0) always reads 1; SLP_EN (bit 13) with SLP_TYP (bits 10–12) = 0 powers off |
//! | 0x8–0xB | PM_TMR | 24-bit counter at 3.579545 MHz |
//! | 0xC | RESET_REG | writing 0x06 resets the machine |
//!
//! Every register is decoded byte by byte, so any access width at any offset is answered
//! (unused bytes read 0 and ignore writes). The SCI is level-triggered: it is asserted while
//! any enabled status bit is set. Only the power button raises status bits; the timer
//! overflow status (TMR_STS) and sleep states other than S5 are not emulated.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::byte_offsets;
use crate::{BusDevice, IrqLine, MonotonicClock, PowerEvents, SystemMonotonicClock};

/// Number of I/O ports the block spans from its base.
pub const ACPI_PM_LEN: u64 = 0x10;

const PM1_STS: u64 = 0x0;
const PM1_EN: u64 = 0x2;
const PM1_CNT: u64 = 0x4;
const PM_TMR: u64 = 0x8;
const RESET_REG: u64 = 0xC;

/// PWRBTN_STS in PM1_STS and PWRBTN_EN in PM1_EN.
const POWER_BUTTON: u16 = 1 << 8;

const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that hold what the guest writes (SLP_EN and GBL_RLS are write-only).
const PM1_CNT_STORED: u16 = (1 << 1) | SLP_TYP_MASK;
/// The SLP_TYP value our DSDT's `\_S5` names.
const SLP_TYP_SOFT_OFF: u16 = 0;

/// The value that, written to RESET_REG, resets the machine (the FADT's RESET_VALUE).
pub const RESET_VALUE: u8 = 0x06;

const PM_TIMER_HZ: u128 = 3_579_545;
const PM_TIMER_MASK: u32 = 0x00FF_FFFF;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// ACPI PM1a blocks, PM timer and reset register as a [`BusDevice`] of [`ACPI_PM_LEN`] ports.
pub struct AcpiPm {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    power: Arc<dyn PowerEvents>,
    sci: Arc<dyn IrqLine>,
    sci_asserted: bool,
    clock: Arc<dyn MonotonicClock>,
    timer_origin: Duration,
}

impl AcpiPm {
    /// The block in its power-on state, with the PM timer running on the host's monotonic
    /// clock from now.
    pub fn new(power: Arc<dyn PowerEvents>, sci: Arc<dyn IrqLine>) -> Self {
        Self::with_clock(power, sci, Arc::new(SystemMonotonicClock::new()))
    }

    /// Like [`AcpiPm::new`], with the PM timer counting on `clock`.
    pub fn with_clock(
        power: Arc<dyn PowerEvents>,
        sci: Arc<dyn IrqLine>,
        clock: Arc<dyn MonotonicClock>,
    ) -> Self {
        let timer_origin = clock.now();
        Self {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            power,
            sci,
            sci_asserted: false,
            clock,
            timer_origin,
        }
    }

    /// Presses the power button: sets PWRBTN_STS and, if the guest enabled it, raises the
    /// SCI until the guest clears the status. An ACPI guest answers with an orderly shutdown.
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= POWER_BUTTON;
        self.update_sci();
    }

    /// Puts the block back in its power-on state (guest reboot): status and enables cleared,
    /// SCI lowered, the PM timer restarted from 0.
    pub fn reset(&mut self) {
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = 0;
        self.timer_origin = self.clock.now();
        self.update_sci();
    }

    /// The PM timer's current 24-bit value.
    pub fn pm_timer(&self) -> u32 {
        let elapsed = self.clock.now().saturating_sub(self.timer_origin);
        let ticks = elapsed.as_nanos() * PM_TIMER_HZ / NANOS_PER_SEC;
        // Only the low 24 bits are kept, so the narrowing cannot lose anything.
        u32::try_from(ticks & u128::from(PM_TIMER_MASK)).unwrap_or(0)
    }

    fn pm1_cnt_value(&self) -> u16 {
        self.pm1_cnt | SCI_EN
    }

    fn read_byte(&self, offset: u64, timer: u32) -> u8 {
        match offset {
            0x0..=0x1 => byte_of(self.pm1_sts, offset - PM1_STS),
            0x2..=0x3 => byte_of(self.pm1_en, offset - PM1_EN),
            0x4..=0x5 => byte_of(self.pm1_cnt_value(), offset - PM1_CNT),
            0x8..=0xB => usize::try_from(offset - PM_TMR)
                .ok()
                .and_then(|byte| timer.to_le_bytes().get(byte).copied())
                .unwrap_or(0),
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            0x0..=0x1 => self.pm1_sts &= !shifted(value, offset - PM1_STS),
            0x2..=0x3 => self.pm1_en = replace_byte(self.pm1_en, offset - PM1_EN, value),
            0x4..=0x5 => self.write_pm1_cnt_byte(offset - PM1_CNT, value),
            RESET_REG if value == RESET_VALUE => self.power.reset(),
            RESET_REG => tracing::debug!("acpi: ignoring reset register value {value:#04x}"),
            _ => {}
        }
    }

    fn write_pm1_cnt_byte(&mut self, byte: u64, value: u8) {
        let written = shifted(value, byte);
        let byte_mask = shifted(0xff, byte);
        self.pm1_cnt = (self.pm1_cnt & !byte_mask) | (written & PM1_CNT_STORED);
        // SLP_EN and SLP_TYP share the high byte, so one byte write carries both.
        if written & SLP_EN != 0 {
            self.enter_sleep_state((written & SLP_TYP_MASK) >> SLP_TYP_SHIFT);
        }
    }

    fn enter_sleep_state(&self, slp_typ: u16) {
        if slp_typ == SLP_TYP_SOFT_OFF {
            self.power.power_off();
        } else {
            tracing::warn!(
                "acpi: guest asked for sleep type {slp_typ}, which is not supported; ignoring"
            );
        }
    }

    fn update_sci(&mut self) {
        let asserted = self.pm1_sts & self.pm1_en != 0;
        if asserted != self.sci_asserted {
            self.sci_asserted = asserted;
            self.sci.set_level(asserted);
        }
    }
}

/// Byte `byte` (0 = low) of a 16-bit register.
fn byte_of(register: u16, byte: u64) -> u8 {
    let [low, high] = register.to_le_bytes();
    if byte == 0 { low } else { high }
}

/// `value` placed at byte `byte` (0 = low) of a 16-bit register.
fn shifted(value: u8, byte: u64) -> u16 {
    if byte == 0 {
        u16::from(value)
    } else {
        u16::from(value) << 8
    }
}

fn replace_byte(register: u16, byte: u64, value: u8) -> u16 {
    (register & !shifted(0xff, byte)) | shifted(value, byte)
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // One timer sample per access, so a 32-bit read is never torn.
        let timer = if offset < PM_TMR + 4 {
            self.pm_timer()
        } else {
            0
        };
        for (port, byte) in byte_offsets(offset).zip(data.iter_mut()) {
            *byte = self.read_byte(port, timer);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (port, &value) in byte_offsets(offset).zip(data) {
            self.write_byte(port, value);
        }
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{FakeClock, FakePower, RecordingIrq};

    struct Fixture {
        pm: AcpiPm,
        power: Arc<FakePower>,
        sci: Arc<RecordingIrq>,
        clock: Arc<FakeClock>,
    }

    fn fixture() -> Fixture {
        let power = Arc::new(FakePower::default());
        let sci = Arc::new(RecordingIrq::default());
        let clock = Arc::new(FakeClock::at(Duration::from_secs(1000)));
        let pm = AcpiPm::with_clock(power.clone(), sci.clone(), clock.clone());
        Fixture {
            pm,
            power,
            sci,
            clock,
        }
    }

    fn read16(pm: &mut AcpiPm, offset: u64) -> u16 {
        let mut data = [0u8; 2];
        pm.read(offset, &mut data);
        u16::from_le_bytes(data)
    }

    fn read32(pm: &mut AcpiPm, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        pm.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write16(pm: &mut AcpiPm, offset: u64, value: u16) {
        pm.write(offset, &value.to_le_bytes());
    }

    #[test]
    fn sci_en_always_reads_set() {
        let mut f = fixture();
        write16(&mut f.pm, PM1_CNT, 0);

        assert_eq!(read16(&mut f.pm, PM1_CNT) & SCI_EN, SCI_EN);
    }

    #[test]
    fn slp_en_with_soft_off_type_powers_off() {
        let mut f = fixture();

        write16(
            &mut f.pm,
            PM1_CNT,
            SLP_EN | (SLP_TYP_SOFT_OFF << SLP_TYP_SHIFT),
        );

        assert_eq!(f.power.power_offs(), 1);
        assert_eq!(f.power.resets(), 0);
    }

    #[test]
    fn byte_write_of_the_high_control_byte_powers_off() {
        let mut f = fixture();

        f.pm.write(PM1_CNT + 1, &[(SLP_EN >> 8) as u8]);

        assert_eq!(f.power.power_offs(), 1);
    }

    #[test]
    fn other_sleep_types_are_ignored_but_remembered() {
        let mut f = fixture();

        write16(&mut f.pm, PM1_CNT, SLP_EN | (5 << SLP_TYP_SHIFT));

        assert_eq!(f.power.power_offs(), 0);
        assert_eq!(read16(&mut f.pm, PM1_CNT), SCI_EN | (5 << SLP_TYP_SHIFT));
    }

    #[test]
    fn slp_typ_without_slp_en_does_nothing() {
        let mut f = fixture();

        write16(&mut f.pm, PM1_CNT, SLP_TYP_SOFT_OFF << SLP_TYP_SHIFT);

        assert_eq!(f.power.power_offs(), 0);
    }

    #[test]
    fn reset_register_resets_only_on_its_value() {
        let mut f = fixture();
        f.pm.write(RESET_REG, &[0x04]);
        assert_eq!(f.power.resets(), 0);

        f.pm.write(RESET_REG, &[RESET_VALUE]);

        assert_eq!(f.power.resets(), 1);
    }

    #[test]
    fn pm_timer_counts_at_3_579545_mhz_and_wraps_at_24_bits() {
        let mut f = fixture();
        assert_eq!(read32(&mut f.pm, PM_TMR), 0);

        f.clock.advance(Duration::from_secs(1));
        let one_second = read32(&mut f.pm, PM_TMR);
        f.clock.advance(Duration::from_secs(4));
        let five_seconds = read32(&mut f.pm, PM_TMR);

        assert_eq!(one_second, 3_579_545);
        assert_eq!(five_seconds, (5 * 3_579_545) & PM_TIMER_MASK);
    }

    #[test]
    fn pm_timer_restarts_on_reset() {
        let mut f = fixture();
        f.clock.advance(Duration::from_millis(10));

        f.pm.reset();
        f.clock.advance(Duration::from_micros(1));

        assert_eq!(read32(&mut f.pm, PM_TMR), 3);
    }

    #[test]
    fn power_button_raises_sci_until_status_is_cleared() {
        let mut f = fixture();
        write16(&mut f.pm, PM1_EN, POWER_BUTTON);

        f.pm.press_power_button();
        assert!(f.sci.is_high());
        assert_eq!(read16(&mut f.pm, PM1_STS) & POWER_BUTTON, POWER_BUTTON);
        write16(&mut f.pm, PM1_STS, 0x0001);
        assert!(f.sci.is_high(), "clearing another bit keeps the SCI");

        write16(&mut f.pm, PM1_STS, POWER_BUTTON);

        assert!(!f.sci.is_high());
        assert_eq!(read16(&mut f.pm, PM1_STS), 0);
        assert_eq!(f.sci.rising_edges(), 1);
    }

    #[test]
    fn power_button_without_enable_only_sets_status() {
        let mut f = fixture();

        f.pm.press_power_button();
        assert!(!f.sci.is_high());
        assert_eq!(read16(&mut f.pm, PM1_STS), POWER_BUTTON);

        write16(&mut f.pm, PM1_EN, POWER_BUTTON);

        assert!(f.sci.is_high(), "enabling a pending event raises the SCI");
    }

    #[test]
    fn reset_clears_status_and_lowers_sci() {
        let mut f = fixture();
        write16(&mut f.pm, PM1_EN, POWER_BUTTON);
        f.pm.press_power_button();

        f.pm.reset();

        assert!(!f.sci.is_high());
        assert_eq!(read16(&mut f.pm, PM1_STS), 0);
        assert_eq!(read16(&mut f.pm, PM1_EN), 0);
    }

    #[test]
    fn whole_block_reads_at_any_width() {
        let mut f = fixture();
        write16(&mut f.pm, PM1_EN, 0x0321);
        let mut data = [0xaau8; 16];

        f.pm.read(0, &mut data);

        assert_eq!(&data[..6], &[0, 0, 0x21, 0x03, 0x01, 0x00]);
        assert_eq!(&data[6..8], &[0, 0]);
        assert_eq!(&data[12..], &[0, 0, 0, 0]);
    }
}
