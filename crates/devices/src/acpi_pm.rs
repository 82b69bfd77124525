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
//!
//! [`AcpiPm::state`] and [`AcpiPm::restore`] carry the registers and the PM timer's count
//! across processes ([`AcpiPmState`]); the timer continues from the saved count.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// PM1_STS bits that can be set: only the power button raises status.
const PM1_STS_IMPLEMENTED: u16 = POWER_BUTTON;

/// Errors of the ACPI PM block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiPmError {
    /// A restored register sets bits the block never sets.
    #[error("ACPI PM state: {field} = {value:#x} sets bits outside {allowed:#x}")]
    ReservedBits {
        /// The [`AcpiPmState`] field.
        field: &'static str,
        /// Its value.
        value: u32,
        /// The bits it can hold.
        allowed: u32,
    },
    /// The restored progress towards the next PM timer tick is a whole tick or more.
    #[error("ACPI PM state: pm_timer_fraction = {value} is not below 1000000000")]
    FractionOutOfRange {
        /// The restored value.
        value: u32,
    },
}

/// The guest-visible state of the PM1a blocks and the PM timer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcpiPmState {
    /// PM1_STS (only PWRBTN_STS, bit 8, can be set).
    pub pm1_status: u16,
    /// PM1_EN, as the guest wrote it.
    pub pm1_enable: u16,
    /// The stored bits of PM1_CNT (bit 1 and SLP_TYP, bits 10–12); SCI_EN is implied.
    pub pm1_control: u16,
    /// The PM timer's 24-bit count when the state was taken; it continues from there.
    pub pm_timer: u32,
    /// How far the PM timer was towards its next tick, in billionths of a tick (below 1e9).
    pub pm_timer_fraction: u32,
}

impl AcpiPmState {
    fn validate(&self) -> Result<(), AcpiPmError> {
        let fields = [
            (
                "pm1_status",
                u32::from(self.pm1_status),
                u32::from(PM1_STS_IMPLEMENTED),
            ),
            (
                "pm1_control",
                u32::from(self.pm1_control),
                u32::from(PM1_CNT_STORED),
            ),
            ("pm_timer", self.pm_timer, PM_TIMER_MASK),
        ];
        if u128::from(self.pm_timer_fraction) >= NANOS_PER_SEC {
            return Err(AcpiPmError::FractionOutOfRange {
                value: self.pm_timer_fraction,
            });
        }
        for (field, value, allowed) in fields {
            if value & !allowed != 0 {
                return Err(AcpiPmError::ReservedBits {
                    field,
                    value,
                    allowed,
                });
            }
        }
        Ok(())
    }
}

/// ACPI PM1a blocks, PM timer and reset register as a [`BusDevice`] of [`ACPI_PM_LEN`] ports.
pub struct AcpiPm {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    power: Arc<dyn PowerEvents>,
    sci: Arc<dyn IrqLine>,
    sci_asserted: bool,
    clock: Arc<dyn MonotonicClock>,
    /// The clock reading at which the PM timer showed `timer_base`, `timer_fraction`
    /// billionths of a tick past it.
    timer_origin: Duration,
    timer_base: u32,
    timer_fraction: u32,
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
            timer_base: 0,
            timer_fraction: 0,
        }
    }

    /// Presses the power button: sets PWRBTN_STS and, if the guest enabled it, raises the
    /// SCI until the guest clears the status. An ACPI guest answers with an orderly shutdown.
    ///
    /// The status latches whether or not the guest enabled the event, as ACPI specifies: a
    /// guest that polls PM1_STS (or enables PWRBTN_EN later) still sees the press.
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= POWER_BUTTON;
        self.update_sci();
    }

    /// The guest-visible state: PM1 registers and the PM timer's current count.
    pub fn state(&self) -> AcpiPmState {
        let (pm_timer, pm_timer_fraction) = self.pm_timer_position();
        AcpiPmState {
            pm1_status: self.pm1_sts,
            pm1_enable: self.pm1_en,
            pm1_control: self.pm1_cnt,
            pm_timer,
            pm_timer_fraction,
        }
    }

    /// Replaces the guest-visible state with `state` (taken by [`AcpiPm::state`], possibly in
    /// another process). The PM timer continues from the saved count on this device's clock.
    /// The SCI line is driven to the level the restored registers call for, so an interrupt
    /// controller restored before or after sees the same level.
    ///
    /// Bits the block can never hold are refused with an error naming the field, and the
    /// device is left unchanged.
    pub fn restore(&mut self, state: &AcpiPmState) -> Result<(), AcpiPmError> {
        state.validate()?;
        self.pm1_sts = state.pm1_status;
        self.pm1_en = state.pm1_enable;
        self.pm1_cnt = state.pm1_control;
        self.restart_timer_at(state.pm_timer, state.pm_timer_fraction);
        let asserted = self.sci_should_be_asserted();
        self.sci_asserted = asserted;
        self.sci.set_level(asserted);
        Ok(())
    }

    /// Puts the block back in its power-on state (guest reboot): status and enables cleared,
    /// SCI lowered, the PM timer restarted from 0.
    pub fn reset(&mut self) {
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = 0;
        self.restart_timer_at(0, 0);
        self.update_sci();
    }

    /// The PM timer's current 24-bit value.
    pub fn pm_timer(&self) -> u32 {
        self.pm_timer_position().0
    }

    /// The PM timer's count and how far it is towards the next tick, in billionths of a
    /// tick (so that a restored timer ticks at exactly the same moments).
    fn pm_timer_position(&self) -> (u32, u32) {
        let elapsed = self.clock.now().saturating_sub(self.timer_origin);
        let scaled = elapsed.as_nanos() * PM_TIMER_HZ + u128::from(self.timer_fraction);
        let ticks = scaled / NANOS_PER_SEC + u128::from(self.timer_base);
        // Masked to 24 bits and reduced below 1e9: both narrowings are lossless.
        let count = u32::try_from(ticks & u128::from(PM_TIMER_MASK)).unwrap_or(0);
        let fraction = u32::try_from(scaled % NANOS_PER_SEC).unwrap_or(0);
        (count, fraction)
    }

    fn restart_timer_at(&mut self, count: u32, fraction: u32) {
        self.timer_origin = self.clock.now();
        self.timer_base = count & PM_TIMER_MASK;
        self.timer_fraction = fraction;
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

    fn sci_should_be_asserted(&self) -> bool {
        self.pm1_sts & self.pm1_en != 0
    }

    fn update_sci(&mut self) {
        let asserted = self.sci_should_be_asserted();
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

    /// Every readable register, the timer as one 32-bit read.
    fn observe(pm: &mut AcpiPm) -> [u32; 4] {
        [
            u32::from(read16(pm, PM1_STS)),
            u32::from(read16(pm, PM1_EN)),
            u32::from(read16(pm, PM1_CNT)),
            read32(pm, PM_TMR),
        ]
    }

    /// A block whose guest enabled the power button and a GPE-ish bit, stored a sleep type,
    /// saw a press, and ran for 1.234 s.
    fn busy_fixture() -> Fixture {
        let mut f = fixture();
        write16(&mut f.pm, PM1_EN, POWER_BUTTON | 0x0020);
        write16(&mut f.pm, PM1_CNT, 5 << SLP_TYP_SHIFT | 0x0002);
        f.pm.press_power_button();
        f.clock.advance(Duration::from_millis(1234));
        f
    }

    #[test]
    fn restored_block_reads_and_interrupts_like_the_original() {
        let mut original = busy_fixture();
        let state = original.pm.state();
        let mut restored = fixture();
        restored.clock.set(Duration::from_secs(7));

        restored.pm.restore(&state).unwrap();

        assert_eq!(restored.pm.state(), state);
        assert!(
            restored.sci.is_high(),
            "pending enabled status drives the SCI"
        );
        for step in [0, 1, 999, 4_000_000] {
            original.clock.advance(Duration::from_micros(step));
            restored.clock.advance(Duration::from_micros(step));
            assert_eq!(
                observe(&mut restored.pm),
                observe(&mut original.pm),
                "+{step} us"
            );
        }
        write16(&mut restored.pm, PM1_STS, POWER_BUTTON);
        assert!(!restored.sci.is_high());
        write16(&mut restored.pm, PM1_CNT, SLP_EN);
        assert_eq!(restored.power.power_offs(), 1);
    }

    #[test]
    fn pm_timer_continues_from_the_saved_count_and_wraps() {
        let mut f = fixture();
        f.clock.set(Duration::ZERO);
        let state = AcpiPmState {
            pm1_status: 0,
            pm1_enable: 0,
            pm1_control: 0,
            pm_timer: 0x00FF_FFF0,
            pm_timer_fraction: 0,
        };

        f.pm.restore(&state).unwrap();
        let at_restore = read32(&mut f.pm, PM_TMR);
        // 0x20 ticks at 3.579545 MHz take 8.94 us.
        f.clock.advance(Duration::from_nanos(8_940));
        let after = read32(&mut f.pm, PM_TMR);

        assert_eq!(at_restore, 0x00FF_FFF0);
        assert_eq!(after, 0x0000_0010);
    }

    #[test]
    fn restore_lowers_an_sci_the_state_does_not_call_for() {
        let mut f = busy_fixture();
        assert!(f.sci.is_high());

        f.pm.restore(&fixture().pm.state()).unwrap();

        assert!(!f.sci.is_high());
        assert_eq!(read16(&mut f.pm, PM1_STS), 0);
    }

    #[test]
    fn polling_guest_sees_the_power_button_with_the_event_disabled() {
        let mut f = fixture();
        write16(&mut f.pm, PM1_EN, 0);

        f.pm.press_power_button();
        f.pm.press_power_button();
        let polled = read16(&mut f.pm, PM1_STS);
        write16(&mut f.pm, PM1_STS, POWER_BUTTON);

        assert_eq!(polled & POWER_BUTTON, POWER_BUTTON);
        assert_eq!(f.sci.rising_edges(), 0, "a disabled event never interrupts");
        assert_eq!(read16(&mut f.pm, PM1_STS), 0, "write 1 to clear");
    }

    #[test]
    fn a_latched_press_survives_a_snapshot_with_the_event_disabled() {
        let mut original = fixture();
        original.pm.press_power_button();
        let mut restored = fixture();

        restored.pm.restore(&original.pm.state()).unwrap();

        assert!(!restored.sci.is_high());
        assert_eq!(read16(&mut restored.pm, PM1_STS), POWER_BUTTON);
        write16(&mut restored.pm, PM1_EN, POWER_BUTTON);
        assert!(restored.sci.is_high());
    }

    #[test]
    fn state_survives_json() {
        let f = busy_fixture();
        let state = f.pm.state();

        let json = serde_json::to_string(&state).unwrap();
        let decoded: AcpiPmState = serde_json::from_str(&json).unwrap();

        assert_eq!(decoded, state);
        assert_eq!(state.pm_timer, 4_417_158 & PM_TIMER_MASK);
    }

    #[test]
    fn json_with_an_unknown_field_is_refused() {
        let f = fixture();
        let mut json = serde_json::to_value(f.pm.state()).unwrap();
        json["tmr_sts"] = true.into();

        let err = serde_json::from_value::<AcpiPmState>(json).unwrap_err();

        assert!(err.to_string().contains("unknown field `tmr_sts`"), "{err}");
    }

    #[test]
    fn impossible_states_are_refused_by_name_and_change_nothing() {
        let mut f = busy_fixture();
        let before = f.pm.state();
        let bad_states = [
            AcpiPmState {
                pm1_status: 0x0001,
                ..before.clone()
            },
            AcpiPmState {
                pm1_control: SLP_EN,
                ..before.clone()
            },
            AcpiPmState {
                pm_timer: 0x0100_0000,
                ..before.clone()
            },
            AcpiPmState {
                pm_timer_fraction: 1_000_000_000,
                ..before.clone()
            },
        ];

        let errors = bad_states.map(|bad| f.pm.restore(&bad).unwrap_err());

        let fields = errors.each_ref().map(|err| match err {
            AcpiPmError::ReservedBits { field, .. } => *field,
            AcpiPmError::FractionOutOfRange { .. } => "pm_timer_fraction",
        });
        assert_eq!(
            fields,
            ["pm1_status", "pm1_control", "pm_timer", "pm_timer_fraction"]
        );
        assert_eq!(
            errors[2].to_string(),
            "ACPI PM state: pm_timer = 0x1000000 sets bits outside 0xffffff"
        );
        assert_eq!(f.pm.state(), before);
    }
}
