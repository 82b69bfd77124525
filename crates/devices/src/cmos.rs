//! The CMOS real-time clock and its 128 bytes of battery-backed NVRAM (MC146818 compatible).
//!
//! Port 0x70 (offset 0) selects a register; bit 7 of that write is the NMI mask on real
//! chipsets and is ignored here. Port 0x71 (offset 1) reads or writes the selected register.
//!
//! The time registers (0x00–0x09 and the century at 0x32) are computed on every read from a
//! [`WallClock`] plus an offset the guest sets by writing the time, honouring Status B's
//! binary/BCD and 12/24-hour bits. The clock stops while Status B's SET bit is on, or while
//! Status A's divider is held in reset; the registers then hold whatever the guest writes, and
//! restarting the clock makes that the new time. After a divider reset the first second
//! lasts 500 ms, as on the real chip (Linux times its RTC writes around that).
//!
//! Not emulated: the alarm, periodic and update-ended interrupts (Status C always reads 0 and
//! the IRQ 8 line is never raised), the square-wave output and daylight-saving adjustment
//! (Status B DSE). All other registers, including the shutdown status at 0x0F, are plain
//! NVRAM that survives a guest reset, as the battery-backed original does.
//!
//! [`Cmos::state`] and [`Cmos::restore`] carry the registers and the guest's clock across
//! processes ([`CmosState`]). The clock travels as an offset from the host's wall clock, not
//! as a time: like the battery-backed original, the RTC keeps counting real time while the
//! VM is saved, so a restored guest reads the current time plus whatever offset it set.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bus::byte_offsets;
use crate::{BusDevice, WallClock};

/// Number of I/O ports the device spans from its base (0x70 index, 0x71 data).
pub const CMOS_LEN: u64 = 2;

const INDEX_OFFSET: u64 = 0;
const DATA_OFFSET: u64 = 1;
/// Number of NVRAM bytes, clock and status registers included.
pub const NVRAM_SIZE: usize = 128;
/// Bit 7 of the index port masks NMIs; the register index is the low 7 bits.
const INDEX_MASK: u8 = 0x7F;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;
const REG_CENTURY: u8 = 0x32;

const REG_BASE_MEM_LOW: u8 = 0x15;
const REG_BASE_MEM_HIGH: u8 = 0x16;
const REG_EXT_MEM_LOW: u8 = 0x17;
const REG_EXT_MEM_HIGH: u8 = 0x18;
const REG_EXT_MEM2_LOW: u8 = 0x30;
const REG_EXT_MEM2_HIGH: u8 = 0x31;
const REG_MEM_ABOVE_16M_LOW: u8 = 0x34;
const REG_MEM_ABOVE_16M_HIGH: u8 = 0x35;
const REG_MEM_ABOVE_4G_LOW: u8 = 0x5B;
const REG_MEM_ABOVE_4G_MID: u8 = 0x5C;
const REG_MEM_ABOVE_4G_HIGH: u8 = 0x5D;
const REG_CPU_COUNT_MINUS_ONE: u8 = 0x5F;
/// The standard checksum covers 0x10..=0x2D and is stored big-endian at 0x2E/0x2F.
const CHECKSUM_RANGE: std::ops::RangeInclusive<usize> = 0x10..=0x2D;
const REG_CHECKSUM_HIGH: usize = 0x2E;
const REG_CHECKSUM_LOW: usize = 0x2F;

const A_UPDATE_IN_PROGRESS: u8 = 0x80;
const A_DIVIDER_MASK: u8 = 0x70;
/// Divider values above this (0x30..=0x70) hold the divider chain in reset.
const A_DIVIDER_RUNNING_MAX: u8 = 0x20;
/// 32.768 kHz time base, 1024 Hz periodic rate: what firmware programs.
const DEFAULT_A: u8 = 0x26;

const B_SET: u8 = 0x80;
const B_PERIODIC_IRQ: u8 = 0x40;
const B_ALARM_IRQ: u8 = 0x20;
const B_UPDATE_IRQ: u8 = 0x10;
const B_SQUARE_WAVE: u8 = 0x08;
const B_BINARY: u8 = 0x04;
const B_24_HOUR: u8 = 0x02;
/// 24-hour, BCD.
const DEFAULT_B: u8 = B_24_HOUR;

/// Valid RAM and Time: the battery is fine.
const D_VALID_RAM: u8 = 0x80;
const HOURS_PM: u8 = 0x80;

const NANOS_PER_SEC: i128 = 1_000_000_000;
/// UIP rises this long before each update (244 µs at the 32.768 kHz time base).
const UIP_WINDOW_NS: i128 = 244_000;
/// The first update after the divider leaves reset comes this long later.
const DIVIDER_RESET_PHASE_NS: i128 = NANOS_PER_SEC / 2;

const BASE_MEMORY_KIB: u16 = 640;
const ONE_MIB: u64 = 1 << 20;
const SIXTEEN_MIB: u64 = 16 << 20;
const SIXTY_FOUR_KIB: u64 = 64 << 10;

/// Errors of the CMOS device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmosError {
    /// The restored register index does not address NVRAM.
    #[error("CMOS state: index {index:#04x} is past the last register ({last:#04x})")]
    IndexOutOfRange {
        /// The restored index.
        index: u8,
        /// The last valid index.
        last: u8,
    },
    /// The restored NVRAM is not exactly [`NVRAM_SIZE`] bytes.
    #[error("CMOS state: nvram holds {len} bytes, it must hold exactly {NVRAM_SIZE}")]
    NvramLength {
        /// Bytes in the restored NVRAM.
        len: usize,
    },
    /// A restored sub-second field is not below one second.
    #[error("CMOS state: {field} = {value} ns is not below one second")]
    NanosOutOfRange {
        /// The [`CmosState`] field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
}

/// The guest-visible state of the RTC and NVRAM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CmosState {
    /// The register the index port selects (0..=0x7F).
    pub index: u8,
    /// All [`NVRAM_SIZE`] register bytes, Status A/B (SET, divider) included. The time
    /// registers matter only while the clock is stopped.
    pub nvram: Vec<u8>,
    /// Guest time minus host wall-clock time: whole seconds (rounded down)...
    pub clock_offset_secs: i64,
    /// ...plus these nanoseconds (below 1e9).
    pub clock_offset_nanos: u32,
    /// Where in its second the guest's clock restarts when SET or the divider reset ends
    /// (below 1e9 ns).
    pub stopped_phase_nanos: u32,
}

impl CmosState {
    /// The NVRAM as an array, after refusing values that would index past it or break the
    /// clock arithmetic.
    fn validated_nvram(&self) -> Result<[u8; NVRAM_SIZE], CmosError> {
        if self.index > INDEX_MASK {
            return Err(CmosError::IndexOutOfRange {
                index: self.index,
                last: INDEX_MASK,
            });
        }
        let nvram = <[u8; NVRAM_SIZE]>::try_from(self.nvram.as_slice()).map_err(|_| {
            CmosError::NvramLength {
                len: self.nvram.len(),
            }
        })?;
        for (field, value) in [
            ("clock_offset_nanos", self.clock_offset_nanos),
            ("stopped_phase_nanos", self.stopped_phase_nanos),
        ] {
            if i128::from(value) >= NANOS_PER_SEC {
                return Err(CmosError::NanosOutOfRange { field, value });
            }
        }
        Ok(nvram)
    }
}

/// The CMOS RTC and NVRAM as a [`BusDevice`] of [`CMOS_LEN`] ports.
pub struct Cmos {
    index: u8,
    /// Every register's stored byte. Time registers are only meaningful while the clock
    /// is stopped; while it runs, reads compute them from the clock.
    nvram: [u8; NVRAM_SIZE],
    clock: Arc<dyn WallClock>,
    /// Guest time = host wall clock + `offset_ns`.
    offset_ns: i128,
    /// Sub-second phase of the guest time when the clock stopped (restored on restart).
    stopped_phase_ns: i128,
}

impl Cmos {
    /// A CMOS whose clock shows `clock`'s time, with NVRAM in its power-on state.
    pub fn new(clock: Arc<dyn WallClock>) -> Self {
        let mut nvram = [0; NVRAM_SIZE];
        nvram[usize::from(REG_A)] = DEFAULT_A;
        nvram[usize::from(REG_B)] = DEFAULT_B;
        nvram[usize::from(REG_D)] = D_VALID_RAM;
        let mut cmos = Self {
            index: 0,
            nvram,
            clock,
            offset_ns: 0,
            stopped_phase_ns: 0,
        };
        cmos.set_u16(REG_BASE_MEM_LOW, REG_BASE_MEM_HIGH, BASE_MEMORY_KIB);
        cmos.update_checksum();
        cmos
    }

    /// Fills the memory-size registers firmware reads, from the bytes of RAM below 4 GiB
    /// (including the first MiB) and above 4 GiB.
    pub fn set_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        let ext_kib = clamp_u16(below_4g.saturating_sub(ONE_MIB) / 1024);
        let above_16m = clamp_u16(below_4g.saturating_sub(SIXTEEN_MIB) / SIXTY_FOUR_KIB);
        let above_4g = (above_4g / SIXTY_FOUR_KIB).min(0xFF_FFFF);
        self.set_u16(REG_BASE_MEM_LOW, REG_BASE_MEM_HIGH, BASE_MEMORY_KIB);
        self.set_u16(REG_EXT_MEM_LOW, REG_EXT_MEM_HIGH, ext_kib);
        self.set_u16(REG_EXT_MEM2_LOW, REG_EXT_MEM2_HIGH, ext_kib);
        self.set_u16(REG_MEM_ABOVE_16M_LOW, REG_MEM_ABOVE_16M_HIGH, above_16m);
        let [low, mid, high, ..] = above_4g.to_le_bytes();
        self.nvram[usize::from(REG_MEM_ABOVE_4G_LOW)] = low;
        self.nvram[usize::from(REG_MEM_ABOVE_4G_MID)] = mid;
        self.nvram[usize::from(REG_MEM_ABOVE_4G_HIGH)] = high;
        self.update_checksum();
    }

    /// Records the number of CPUs for firmware (register 0x5F holds count − 1).
    pub fn set_cpu_count(&mut self, n: u8) {
        self.nvram[usize::from(REG_CPU_COUNT_MINUS_ONE)] = n.saturating_sub(1);
    }

    /// The guest-visible state: index latch, NVRAM and the clock's offset from the host's.
    pub fn state(&self) -> CmosState {
        let offset_secs = self.offset_ns.div_euclid(NANOS_PER_SEC);
        CmosState {
            index: self.index,
            nvram: self.nvram.to_vec(),
            // Offsets come from calendar times of at most five digits' years: far inside i64.
            clock_offset_secs: i64::try_from(offset_secs).unwrap_or(if offset_secs < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
            clock_offset_nanos: nanos_below_a_second(self.offset_ns),
            stopped_phase_nanos: nanos_below_a_second(self.stopped_phase_ns),
        }
    }

    /// Replaces the guest-visible state with `state` (taken by [`Cmos::state`], possibly in
    /// another process). The wall clock stays; a running guest clock shows the host's time
    /// now plus the restored offset.
    ///
    /// A state that would index past NVRAM or break the clock arithmetic is refused with an
    /// error naming the field, and the device is left unchanged.
    pub fn restore(&mut self, state: &CmosState) -> Result<(), CmosError> {
        let nvram = state.validated_nvram()?;
        self.index = state.index;
        self.nvram = nvram;
        self.offset_ns = i128::from(state.clock_offset_secs) * NANOS_PER_SEC
            + i128::from(state.clock_offset_nanos);
        self.stopped_phase_ns = i128::from(state.stopped_phase_nanos);
        Ok(())
    }

    /// Guest reset: only transient state goes back to its power-on value (the index latch,
    /// interrupt enables, interrupt flags). NVRAM contents and the time are battery-backed
    /// and survive.
    pub fn reset(&mut self) {
        self.index = 0;
        let b = &mut self.nvram[usize::from(REG_B)];
        *b &= !(B_PERIODIC_IRQ | B_ALARM_IRQ | B_UPDATE_IRQ | B_SQUARE_WAVE);
        self.nvram[usize::from(REG_C)] = 0;
    }

    fn read_data(&self) -> u8 {
        let index = self.index;
        match index {
            REG_A => self.status_a(),
            REG_C => 0,
            REG_D => D_VALID_RAM,
            _ if is_time_register(index) && self.clock_running() => {
                self.time_register(index, &self.guest_time())
            }
            _ => self.nvram[usize::from(index)],
        }
    }

    fn write_data(&mut self, value: u8) {
        let index = self.index;
        match index {
            REG_A => self.write_status_a(value),
            REG_B => self.write_status_b(value),
            REG_C | REG_D => {}
            _ if is_time_register(index) && self.clock_running() => {
                // Setting one field of a running clock: the others keep their current values.
                self.store_time(&self.guest_time());
                self.nvram[usize::from(index)] = value;
                let phase = self.guest_ns().rem_euclid(NANOS_PER_SEC);
                self.start_at(self.parse_time(), phase);
            }
            _ => self.nvram[usize::from(index)] = value,
        }
    }

    fn status_a(&self) -> u8 {
        let a = self.nvram[usize::from(REG_A)] & !A_UPDATE_IN_PROGRESS;
        if self.update_in_progress() {
            a | A_UPDATE_IN_PROGRESS
        } else {
            a
        }
    }

    fn update_in_progress(&self) -> bool {
        self.clock_running()
            && self.guest_ns().rem_euclid(NANOS_PER_SEC) >= NANOS_PER_SEC - UIP_WINDOW_NS
    }

    fn write_status_a(&mut self, value: u8) {
        let divider_was_reset = divider_in_reset(self.nvram[usize::from(REG_A)]);
        if divider_was_reset && !divider_in_reset(value) {
            // Leaving divider reset restarts the second: the first update comes 500 ms
            // later (now, or when SET is cleared if it is still on).
            self.stopped_phase_ns = DIVIDER_RESET_PHASE_NS;
        }
        self.change_clock_state(|cmos| {
            cmos.nvram[usize::from(REG_A)] = value & !A_UPDATE_IN_PROGRESS;
        });
    }

    fn write_status_b(&mut self, value: u8) {
        let value = if value & B_SET != 0 {
            // Setting SET clears the update-ended interrupt enable.
            value & !B_UPDATE_IRQ
        } else {
            value
        };
        self.change_clock_state(|cmos| {
            cmos.nvram[usize::from(REG_B)] = value;
        });
    }

    /// Applies a register change that may stop or restart the clock.
    fn change_clock_state(&mut self, change: impl FnOnce(&mut Self)) {
        let was_running = self.clock_running();
        let now = self.guest_ns();
        // Registers written while stopped are in the format that was in force then, even if
        // this same write changes the format.
        let written = self.parse_time();
        change(self);
        let running = self.clock_running();
        if was_running && !running {
            // Freeze: the registers now hold the time of this moment, in the new format.
            self.store_time(&DateTime::from_unix(now.div_euclid(NANOS_PER_SEC)));
            self.stopped_phase_ns = now.rem_euclid(NANOS_PER_SEC);
        } else if !was_running && running {
            self.start_at(written, self.stopped_phase_ns);
        }
    }

    fn clock_running(&self) -> bool {
        let a = self.nvram[usize::from(REG_A)];
        let b = self.nvram[usize::from(REG_B)];
        b & B_SET == 0 && !divider_in_reset(a)
    }

    fn host_ns(&self) -> i128 {
        duration_ns(self.clock.now())
    }

    fn guest_ns(&self) -> i128 {
        self.host_ns() + self.offset_ns
    }

    fn guest_time(&self) -> DateTime {
        DateTime::from_unix(self.guest_ns().div_euclid(NANOS_PER_SEC))
    }

    /// Makes `time` the current guest time, `phase_ns` into its second.
    fn start_at(&mut self, time: DateTime, phase_ns: i128) {
        let seconds = time.to_unix();
        self.offset_ns = i128::from(seconds) * NANOS_PER_SEC + phase_ns - self.host_ns();
    }

    fn binary(&self) -> bool {
        self.nvram[usize::from(REG_B)] & B_BINARY != 0
    }

    fn twenty_four_hour(&self) -> bool {
        self.nvram[usize::from(REG_B)] & B_24_HOUR != 0
    }

    fn encode(&self, value: u8) -> u8 {
        if self.binary() { value } else { to_bcd(value) }
    }

    fn decode(&self, raw: u8) -> u8 {
        if self.binary() { raw } else { from_bcd(raw) }
    }

    fn time_register(&self, index: u8, time: &DateTime) -> u8 {
        match index {
            REG_SECONDS => self.encode(time.second),
            REG_MINUTES => self.encode(time.minute),
            REG_HOURS => self.encode_hours(time.hour),
            REG_DAY_OF_WEEK => self.encode(time.weekday),
            REG_DAY_OF_MONTH => self.encode(time.day),
            REG_MONTH => self.encode(time.month),
            REG_YEAR => self.encode(year_in_century(time.year)),
            REG_CENTURY => self.encode(century(time.year)),
            _ => self.nvram[usize::from(index)],
        }
    }

    fn encode_hours(&self, hour: u8) -> u8 {
        if self.twenty_four_hour() {
            return self.encode(hour);
        }
        let twelve_hour = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOURS_PM } else { 0 };
        self.encode(twelve_hour) | pm
    }

    fn decode_hours(&self, raw: u8) -> u8 {
        let hour = self.decode(raw & !HOURS_PM);
        if self.twenty_four_hour() {
            return hour.min(23);
        }
        let pm = if raw & HOURS_PM != 0 { 12 } else { 0 };
        hour % 12 + pm
    }

    fn store_time(&mut self, time: &DateTime) {
        for index in TIME_REGISTERS {
            self.nvram[usize::from(index)] = self.time_register(index, time);
        }
    }

    /// Reads the stored time registers, forgiving whatever nonsense the guest wrote.
    fn parse_time(&self) -> DateTime {
        let reg = |index: u8| self.decode(self.nvram[usize::from(index)]);
        let year = i64::from(reg(REG_CENTURY)) * 100 + i64::from(reg(REG_YEAR));
        DateTime {
            year,
            month: reg(REG_MONTH).clamp(1, 12),
            day: reg(REG_DAY_OF_MONTH).clamp(1, 31),
            hour: self.decode_hours(self.nvram[usize::from(REG_HOURS)]),
            minute: reg(REG_MINUTES).min(59),
            second: reg(REG_SECONDS).min(59),
            // Derived from the date; the guest's day-of-week value is not trusted.
            weekday: 1,
        }
    }

    fn set_u16(&mut self, low: u8, high: u8, value: u16) {
        let [lo, hi] = value.to_le_bytes();
        self.nvram[usize::from(low)] = lo;
        self.nvram[usize::from(high)] = hi;
    }

    fn update_checksum(&mut self) {
        let sum: u16 = self.nvram[CHECKSUM_RANGE]
            .iter()
            .fold(0u16, |sum, &byte| sum.wrapping_add(u16::from(byte)));
        let [hi, lo] = sum.to_be_bytes();
        self.nvram[REG_CHECKSUM_HIGH] = hi;
        self.nvram[REG_CHECKSUM_LOW] = lo;
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (port, byte) in byte_offsets(offset).zip(data.iter_mut()) {
            *byte = match port {
                DATA_OFFSET => self.read_data(),
                // The index port is write-only.
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (port, &value) in byte_offsets(offset).zip(data) {
            match port {
                INDEX_OFFSET => self.index = value & INDEX_MASK,
                DATA_OFFSET => self.write_data(value),
                _ => {}
            }
        }
    }
}

const TIME_REGISTERS: [u8; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_DAY_OF_WEEK,
    REG_DAY_OF_MONTH,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];

fn divider_in_reset(status_a: u8) -> bool {
    status_a & A_DIVIDER_MASK > A_DIVIDER_RUNNING_MAX
}

fn is_time_register(index: u8) -> bool {
    TIME_REGISTERS.contains(&index)
}

fn duration_ns(duration: Duration) -> i128 {
    i128::try_from(duration.as_nanos()).unwrap_or(i128::MAX / 2)
}

/// The nanoseconds into its second of a nanosecond count (always below 1e9).
fn nanos_below_a_second(ns: i128) -> u32 {
    u32::try_from(ns.rem_euclid(NANOS_PER_SEC)).unwrap_or(0)
}

fn clamp_u16(value: u64) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

fn to_bcd(value: u8) -> u8 {
    let value = value % 100;
    ((value / 10) << 4) | (value % 10)
}

fn from_bcd(raw: u8) -> u8 {
    (raw >> 4) * 10 + (raw & 0x0f)
}

fn year_in_century(year: i64) -> u8 {
    u8::try_from(year.rem_euclid(100)).unwrap_or(0)
}

fn century(year: i64) -> u8 {
    u8::try_from(year.div_euclid(100).rem_euclid(100)).unwrap_or(0)
}

/// A UTC calendar time, as the RTC registers show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday … 7 = Saturday.
    weekday: u8,
}

const SECONDS_PER_DAY: i64 = 86_400;

impl DateTime {
    fn from_unix(seconds: i128) -> Self {
        // Out-of-range values only come from absurd offsets; clamp rather than wrap.
        let seconds =
            i64::try_from(seconds).unwrap_or(if seconds < 0 { i64::MIN } else { i64::MAX });
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let in_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday (5 with Sunday = 1).
        let weekday = (days + 4).rem_euclid(7) + 1;
        Self {
            year,
            month: small(month),
            day: small(day),
            hour: small(in_day / 3600),
            minute: small(in_day % 3600 / 60),
            second: small(in_day % 60),
            weekday: small(weekday),
        }
    }

    fn to_unix(self) -> i64 {
        let days = days_from_civil(self.year, i64::from(self.month), i64::from(self.day));
        days.saturating_mul(SECONDS_PER_DAY)
            .saturating_add(i64::from(self.hour) * 3600)
            .saturating_add(i64::from(self.minute) * 60)
            .saturating_add(i64::from(self.second))
    }
}

/// Narrows a value known to be small (a calendar field).
fn small(value: i64) -> u8 {
    u8::try_from(value).unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Keep absurd years far from overflow; the RTC can only hold 0..=9999 anyway.
    let year = year.clamp(-1_000_000, 1_000_000) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days.clamp(-400_000_000, 400_000_000) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::FakeClock;

    /// 2024-02-29T13:45:07Z, a Thursday.
    const LEAP_DAY: u64 = 1_709_214_307;
    /// 2031-07-04T00:30:00Z, a Friday.
    const JULY_2031: u64 = 1_940_891_400;

    fn cmos_at(seconds: u64, nanos: u32) -> (Cmos, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::at(Duration::new(seconds, nanos)));
        (Cmos::new(clock.clone()), clock)
    }

    fn read_reg(cmos: &mut Cmos, index: u8) -> u8 {
        cmos.write(INDEX_OFFSET, &[index]);
        let mut data = [0u8];
        cmos.read(DATA_OFFSET, &mut data);
        data[0]
    }

    fn write_reg(cmos: &mut Cmos, index: u8, value: u8) {
        cmos.write(INDEX_OFFSET, &[index]);
        cmos.write(DATA_OFFSET, &[value]);
    }

    /// (century, year, month, day, weekday, hours, minutes, seconds) as raw register bytes.
    fn read_time(cmos: &mut Cmos) -> [u8; 8] {
        [
            REG_CENTURY,
            REG_YEAR,
            REG_MONTH,
            REG_DAY_OF_MONTH,
            REG_DAY_OF_WEEK,
            REG_HOURS,
            REG_MINUTES,
            REG_SECONDS,
        ]
        .map(|index| read_reg(cmos, index))
    }

    #[test]
    fn reads_the_date_in_bcd_by_default() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        let time = read_time(&mut cmos);

        assert_eq!(time, [0x20, 0x24, 0x02, 0x29, 0x05, 0x13, 0x45, 0x07]);
    }

    #[test]
    fn reads_the_date_in_binary_when_dm_is_set() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_BINARY);

        let time = read_time(&mut cmos);

        assert_eq!(time, [20, 24, 2, 29, 5, 13, 45, 7]);
    }

    #[test]
    fn twelve_hour_mode_sets_the_pm_bit() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 0);
        write_reg(&mut cmos, REG_B, 0);

        let afternoon = read_reg(&mut cmos, REG_HOURS);
        clock.set(Duration::from_secs(LEAP_DAY - 13 * 3600 - 45 * 60));
        let midnight = read_reg(&mut cmos, REG_HOURS);
        clock.set(Duration::from_secs(LEAP_DAY - 3600 - 45 * 60));
        let noon = read_reg(&mut cmos, REG_HOURS);
        write_reg(&mut cmos, REG_B, B_BINARY);
        let noon_binary = read_reg(&mut cmos, REG_HOURS);

        assert_eq!(afternoon, HOURS_PM | 0x01);
        assert_eq!(midnight, 0x12);
        assert_eq!(noon, HOURS_PM | 0x12);
        assert_eq!(noon_binary, HOURS_PM | 12);
    }

    #[test]
    fn the_clock_advances_with_the_wall_clock() {
        let (mut cmos, clock) = cmos_at(946_684_799, 0);
        assert_eq!(
            read_time(&mut cmos),
            [0x19, 0x99, 0x12, 0x31, 0x06, 0x23, 0x59, 0x59]
        );

        clock.advance(Duration::from_secs(1));

        assert_eq!(
            read_time(&mut cmos),
            [0x20, 0x00, 0x01, 0x01, 0x07, 0x00, 0x00, 0x00]
        );
    }

    fn set_time_2031(cmos: &mut Cmos) {
        write_reg(cmos, REG_CENTURY, 0x20);
        write_reg(cmos, REG_YEAR, 0x31);
        write_reg(cmos, REG_MONTH, 0x07);
        write_reg(cmos, REG_DAY_OF_MONTH, 0x04);
        write_reg(cmos, REG_HOURS, 0x00);
        write_reg(cmos, REG_MINUTES, 0x30);
        write_reg(cmos, REG_SECONDS, 0x00);
    }

    #[test]
    fn set_bit_freezes_the_clock_and_clearing_it_applies_the_written_time() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 0);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        set_time_2031(&mut cmos);
        clock.advance(Duration::from_secs(10));
        assert_eq!(read_reg(&mut cmos, REG_SECONDS), 0x00, "frozen while SET");

        write_reg(&mut cmos, REG_B, B_24_HOUR);
        clock.advance(Duration::from_secs(5));

        assert_eq!(
            read_time(&mut cmos),
            [0x20, 0x31, 0x07, 0x04, 0x06, 0x00, 0x30, 0x05]
        );
    }

    #[test]
    fn freezing_snapshots_the_current_time() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);

        assert_eq!(
            read_time(&mut cmos),
            [0x20, 0x24, 0x02, 0x29, 0x05, 0x13, 0x45, 0x07]
        );
    }

    #[test]
    fn time_written_in_twelve_hour_binary_mode_is_understood() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        write_reg(&mut cmos, REG_B, B_BINARY | B_SET);

        write_reg(&mut cmos, REG_HOURS, HOURS_PM | 11);
        write_reg(&mut cmos, REG_B, B_BINARY | B_24_HOUR);

        assert_eq!(read_reg(&mut cmos, REG_HOURS), 23);
        assert_eq!(read_reg(&mut cmos, REG_DAY_OF_MONTH), 29);
    }

    #[test]
    fn writing_one_field_of_a_running_clock_keeps_the_others() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 0);

        write_reg(&mut cmos, REG_MINUTES, 0x00);
        clock.advance(Duration::from_secs(2));

        assert_eq!(
            read_time(&mut cmos),
            [0x20, 0x24, 0x02, 0x29, 0x05, 0x13, 0x00, 0x09]
        );
    }

    #[test]
    fn leaving_divider_reset_starts_the_second_half_way() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 123);
        write_reg(&mut cmos, REG_A, 0x70);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        set_time_2031(&mut cmos);
        write_reg(&mut cmos, REG_B, B_24_HOUR);
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            read_reg(&mut cmos, REG_SECONDS),
            0x00,
            "divider still in reset"
        );

        write_reg(&mut cmos, REG_A, DEFAULT_A);
        clock.advance(Duration::from_millis(499));
        let before_update = read_reg(&mut cmos, REG_SECONDS);
        clock.advance(Duration::from_millis(1));
        let after_update = read_reg(&mut cmos, REG_SECONDS);

        assert_eq!((before_update, after_update), (0x00, 0x01));
        assert_eq!(read_reg(&mut cmos, REG_MINUTES), 0x30);
    }

    #[test]
    fn linux_set_time_sequence_starts_the_second_half_way() {
        // drivers/rtc/rtc-mc146818-lib.c: SET on, divider reset, write, SET off, A restored.
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 777);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        write_reg(&mut cmos, REG_A, DEFAULT_A | 0x60);
        set_time_2031(&mut cmos);
        write_reg(&mut cmos, REG_B, B_24_HOUR);
        clock.advance(Duration::from_secs(2));

        write_reg(&mut cmos, REG_A, DEFAULT_A);
        clock.advance(Duration::from_millis(499));
        let before_update = read_reg(&mut cmos, REG_SECONDS);
        clock.advance(Duration::from_millis(1));
        let after_update = read_reg(&mut cmos, REG_SECONDS);

        assert_eq!((before_update, after_update), (0x00, 0x01));
    }

    #[test]
    fn divider_released_before_set_is_cleared_still_starts_half_way() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 777);
        write_reg(&mut cmos, REG_A, 0x70);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        set_time_2031(&mut cmos);
        write_reg(&mut cmos, REG_A, DEFAULT_A);

        write_reg(&mut cmos, REG_B, B_24_HOUR);
        clock.advance(Duration::from_millis(499));
        let before_update = read_reg(&mut cmos, REG_SECONDS);
        clock.advance(Duration::from_millis(1));
        let after_update = read_reg(&mut cmos, REG_SECONDS);

        assert_eq!((before_update, after_update), (0x00, 0x01));
    }

    #[test]
    fn set_alone_keeps_the_sub_second_phase() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 900_000_000);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        clock.advance(Duration::from_secs(30));

        write_reg(&mut cmos, REG_B, B_24_HOUR);
        let restarted = read_reg(&mut cmos, REG_SECONDS);
        clock.advance(Duration::from_millis(100));

        assert_eq!(restarted, 0x07);
        assert_eq!(read_reg(&mut cmos, REG_SECONDS), 0x08);
    }

    #[test]
    fn uip_is_set_only_just_before_the_update() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 500_000_000);
        let mid_second = read_reg(&mut cmos, REG_A);
        clock.set(Duration::new(LEAP_DAY, 999_800_000));
        let just_before = read_reg(&mut cmos, REG_A);
        clock.set(Duration::new(LEAP_DAY, 999_700_000));
        let before_window = read_reg(&mut cmos, REG_A);

        assert_eq!(mid_second, DEFAULT_A);
        assert_eq!(just_before, DEFAULT_A | A_UPDATE_IN_PROGRESS);
        assert_eq!(before_window, DEFAULT_A);
    }

    #[test]
    fn uip_is_clear_while_the_clock_is_stopped() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 999_900_000);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);

        assert_eq!(read_reg(&mut cmos, REG_A) & A_UPDATE_IN_PROGRESS, 0);
    }

    #[test]
    fn uip_bit_is_not_writable() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        write_reg(&mut cmos, REG_A, 0xA6);

        assert_eq!(read_reg(&mut cmos, REG_A), DEFAULT_A);
    }

    #[test]
    fn status_c_and_d_are_fixed() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        write_reg(&mut cmos, REG_C, 0xff);
        write_reg(&mut cmos, REG_D, 0x00);

        assert_eq!(read_reg(&mut cmos, REG_C), 0);
        assert_eq!(read_reg(&mut cmos, REG_D), D_VALID_RAM);
    }

    #[test]
    fn nvram_and_time_survive_a_reset() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        write_reg(&mut cmos, 0x0F, 0x0A);
        write_reg(&mut cmos, 0x7F, 0x5A);
        write_reg(&mut cmos, REG_MINUTES, 0x00);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_PERIODIC_IRQ | B_ALARM_IRQ);

        cmos.reset();

        assert_eq!(read_reg(&mut cmos, 0x0F), 0x0A);
        assert_eq!(read_reg(&mut cmos, 0x7F), 0x5A);
        assert_eq!(read_reg(&mut cmos, REG_MINUTES), 0x00);
        assert_eq!(read_reg(&mut cmos, REG_B), B_24_HOUR);
    }

    #[test]
    fn nmi_mask_bit_is_ignored_for_indexing() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        write_reg(&mut cmos, 0x80 | 0x40, 0x77);

        assert_eq!(read_reg(&mut cmos, 0x40), 0x77);
        assert_eq!(read_reg(&mut cmos, 0x80 | REG_SECONDS), 0x07);
    }

    #[test]
    fn index_port_reads_all_ones() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        let mut data = [0u8; 2];
        cmos.write(INDEX_OFFSET, &[0x0F]);
        write_reg(&mut cmos, 0x0F, 0x42);

        cmos.read(INDEX_OFFSET, &mut data);

        assert_eq!(data, [0xff, 0x42]);
    }

    #[test]
    fn memory_size_registers_follow_firmware_conventions() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        cmos.set_memory_size(0xC000_0000, 0x1_4000_0000);
        cmos.set_cpu_count(4);

        assert_eq!(read_reg(&mut cmos, 0x15), 0x80);
        assert_eq!(read_reg(&mut cmos, 0x16), 0x02);
        // (3 GiB - 1 MiB) / 1 KiB does not fit 16 bits.
        assert_eq!(read_reg(&mut cmos, 0x17), 0xff);
        assert_eq!(read_reg(&mut cmos, 0x18), 0xff);
        assert_eq!(read_reg(&mut cmos, 0x30), 0xff);
        assert_eq!(read_reg(&mut cmos, 0x31), 0xff);
        // (3 GiB - 16 MiB) / 64 KiB = 0xBF00
        assert_eq!(read_reg(&mut cmos, 0x34), 0x00);
        assert_eq!(read_reg(&mut cmos, 0x35), 0xBF);
        // 5 GiB / 64 KiB = 0x01_4000
        assert_eq!(read_reg(&mut cmos, 0x5B), 0x00);
        assert_eq!(read_reg(&mut cmos, 0x5C), 0x40);
        assert_eq!(read_reg(&mut cmos, 0x5D), 0x01);
        assert_eq!(read_reg(&mut cmos, 0x5F), 3);
    }

    #[test]
    fn small_memory_fills_the_extended_registers_exactly() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);

        cmos.set_memory_size(32 << 20, 0);

        // 31 MiB = 31744 KiB = 0x7C00
        assert_eq!(read_reg(&mut cmos, 0x17), 0x00);
        assert_eq!(read_reg(&mut cmos, 0x18), 0x7C);
        // 16 MiB / 64 KiB = 0x100
        assert_eq!(read_reg(&mut cmos, 0x34), 0x00);
        assert_eq!(read_reg(&mut cmos, 0x35), 0x01);
        assert_eq!(read_reg(&mut cmos, 0x5B), 0x00);
        let checksum = u16::from_be_bytes([read_reg(&mut cmos, 0x2E), read_reg(&mut cmos, 0x2F)]);
        assert_eq!(checksum, 0x80 + 0x02 + 0x7C);
    }

    #[test]
    fn memory_registers_survive_a_reset() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        cmos.set_memory_size(32 << 20, 0);
        cmos.set_cpu_count(2);

        cmos.reset();

        assert_eq!(read_reg(&mut cmos, 0x18), 0x7C);
        assert_eq!(read_reg(&mut cmos, 0x5F), 1);
    }

    #[test]
    fn garbage_time_does_not_panic_and_yields_a_valid_date() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        write_reg(&mut cmos, REG_B, B_SET);
        for index in TIME_REGISTERS {
            write_reg(&mut cmos, index, 0xff);
        }

        write_reg(&mut cmos, REG_B, B_24_HOUR | B_BINARY);

        let [_, _, month, day, weekday, hours, minutes, seconds] = read_time(&mut cmos);
        assert!((1..=12).contains(&month));
        assert!((1..=31).contains(&day));
        assert!((1..=7).contains(&weekday));
        assert!(hours < 24 && minutes < 60 && seconds < 60);
    }

    #[test]
    fn calendar_conversion_round_trips() {
        for seconds in [0i64, 951_782_400, 4_107_542_400, -86_400, 253_402_300_799] {
            let time = DateTime::from_unix(i128::from(seconds));
            assert_eq!(time.to_unix(), seconds, "{time:?}");
        }
        assert_eq!(DateTime::from_unix(i128::from(JULY_2031)).weekday, 6);
    }

    /// Everything a guest reads: every register, Status A (UIP) included.
    fn read_all(cmos: &mut Cmos) -> Vec<u8> {
        (0..NVRAM_SIZE as u8)
            .map(|index| read_reg(cmos, index))
            .collect()
    }

    /// A CMOS whose guest set its clock to 2031 in 12-hour binary mode and stored NVRAM
    /// bytes, 2.25 s of host time ago.
    fn cmos_running_2031() -> (Cmos, Arc<FakeClock>) {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 250_000_000);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        set_time_2031(&mut cmos);
        write_reg(&mut cmos, REG_B, B_BINARY);
        write_reg(&mut cmos, 0x40, 0x77);
        write_reg(&mut cmos, 0x0F, 0x0A);
        clock.advance(Duration::from_millis(2250));
        (cmos, clock)
    }

    #[test]
    fn restored_clock_reads_like_the_original_as_time_goes_on() {
        let (mut original, original_clock) = cmos_running_2031();
        let state = original.state();
        let restored_clock = Arc::new(FakeClock::at(WallClock::now(&*original_clock)));
        let mut restored = Cmos::new(restored_clock.clone());

        restored.restore(&state).unwrap();

        assert_eq!(restored.state(), state);
        for step in [0, 300, 700, 999, 86_400_000] {
            original_clock.advance(Duration::from_millis(step));
            restored_clock.advance(Duration::from_millis(step));
            assert_eq!(
                read_all(&mut restored),
                read_all(&mut original),
                "+{step} ms"
            );
        }
    }

    #[test]
    fn restored_clock_keeps_counting_real_time_while_saved() {
        let (mut original, _clock) = cmos_running_2031();
        let state = original.state();
        // The state was taken at host time LEAP_DAY + 2.5 s.
        let a_day_later = Duration::from_secs(LEAP_DAY + 86_400) + Duration::from_millis(2500);
        let mut restored = Cmos::new(Arc::new(FakeClock::at(a_day_later)));

        restored.restore(&state).unwrap();

        assert_eq!(read_reg(&mut original, REG_DAY_OF_MONTH), 4);
        assert_eq!(read_reg(&mut restored, REG_DAY_OF_MONTH), 5);
        assert_eq!(
            read_reg(&mut restored, REG_HOURS),
            12,
            "12-hour mode, binary"
        );
        assert_eq!(read_reg(&mut restored, REG_MINUTES), 30);
        assert_eq!(read_reg(&mut restored, REG_SECONDS), 2);
    }

    #[test]
    fn restored_index_and_nvram_are_read_without_reselecting() {
        let (mut original, clock) = cmos_running_2031();
        original.write(INDEX_OFFSET, &[0x80 | 0x40]);
        let mut restored = Cmos::new(clock);

        restored.restore(&original.state()).unwrap();
        let mut data = [0u8];
        restored.read(DATA_OFFSET, &mut data);

        assert_eq!(data, [0x77]);
        assert_eq!(read_reg(&mut restored, 0x0F), 0x0A);
    }

    #[test]
    fn a_clock_stopped_mid_set_restarts_the_same_way_after_restore() {
        // Linux's set-time sequence, interrupted after the writes: SET on, divider in reset.
        let (mut original, original_clock) = cmos_at(LEAP_DAY, 777);
        write_reg(&mut original, REG_B, B_24_HOUR | B_SET);
        write_reg(&mut original, REG_A, DEFAULT_A | 0x60);
        set_time_2031(&mut original);
        let state = original.state();
        let restored_clock = Arc::new(FakeClock::at(Duration::new(LEAP_DAY + 50, 0)));
        let mut restored = Cmos::new(restored_clock.clone());
        restored.restore(&state).unwrap();
        original_clock.advance(Duration::from_secs(9));

        for cmos in [&mut original, &mut restored] {
            write_reg(cmos, REG_B, B_24_HOUR);
            write_reg(cmos, REG_A, DEFAULT_A);
        }
        original_clock.advance(Duration::from_millis(500));
        restored_clock.advance(Duration::from_millis(500));

        assert_eq!(read_all(&mut restored), read_all(&mut original));
        assert_eq!(read_reg(&mut restored, REG_SECONDS), 0x01);
    }

    #[test]
    fn state_survives_json() {
        let (cmos, _clock) = cmos_running_2031();
        let state = cmos.state();

        let json = serde_json::to_string(&state).unwrap();
        let decoded: CmosState = serde_json::from_str(&json).unwrap();

        assert_eq!(decoded, state);
    }

    #[test]
    fn negative_offsets_round_down_to_whole_seconds() {
        let (mut cmos, clock) = cmos_at(LEAP_DAY, 100);
        write_reg(&mut cmos, REG_B, B_24_HOUR | B_SET);
        write_reg(&mut cmos, REG_CENTURY, 0x19);
        write_reg(&mut cmos, REG_B, B_24_HOUR);

        let state = cmos.state();
        let mut restored = Cmos::new(clock);
        restored.restore(&state).unwrap();

        assert!(state.clock_offset_secs < 0);
        assert_eq!(state.clock_offset_nanos, 0, "same phase as the host clock");
        assert_eq!(read_time(&mut restored), read_time(&mut cmos));
    }

    #[test]
    fn json_with_an_unknown_field_is_refused() {
        let (cmos, _clock) = cmos_at(LEAP_DAY, 0);
        let mut json = serde_json::to_value(cmos.state()).unwrap();
        json["alarm"] = 0.into();

        let err = serde_json::from_value::<CmosState>(json).unwrap_err();

        assert!(err.to_string().contains("unknown field `alarm`"), "{err}");
    }

    #[test]
    fn impossible_states_are_refused_by_name_and_change_nothing() {
        let (mut cmos, _clock) = cmos_running_2031();
        let before = cmos.state();
        let with = |change: fn(&mut CmosState)| {
            let mut state = before.clone();
            change(&mut state);
            state
        };

        let errors = [
            with(|s| s.index = 0x80),
            with(|s| s.nvram.truncate(NVRAM_SIZE - 1)),
            with(|s| s.nvram.push(0)),
            with(|s| s.clock_offset_nanos = 1_000_000_000),
            with(|s| s.stopped_phase_nanos = u32::MAX),
        ]
        .map(|bad| cmos.restore(&bad).unwrap_err());

        assert_eq!(
            errors,
            [
                CmosError::IndexOutOfRange {
                    index: 0x80,
                    last: 0x7F
                },
                CmosError::NvramLength { len: 127 },
                CmosError::NvramLength { len: 129 },
                CmosError::NanosOutOfRange {
                    field: "clock_offset_nanos",
                    value: 1_000_000_000
                },
                CmosError::NanosOutOfRange {
                    field: "stopped_phase_nanos",
                    value: u32::MAX
                },
            ]
        );
        assert!(errors[0].to_string().contains("index 0x80"));
        assert_eq!(cmos.state(), before);
    }

    #[test]
    fn extreme_offsets_restore_without_panicking() {
        let (mut cmos, _clock) = cmos_at(LEAP_DAY, 0);
        for secs in [i64::MIN, i64::MAX] {
            let state = CmosState {
                clock_offset_secs: secs,
                clock_offset_nanos: 999_999_999,
                ..cmos.state()
            };

            cmos.restore(&state).unwrap();
            let time = read_all(&mut cmos);

            assert!(time[usize::from(REG_MONTH)] <= 0x12);
        }
    }
}
