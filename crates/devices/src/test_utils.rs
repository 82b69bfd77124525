//! In-memory fakes of the outside-world traits, shared by the unit tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::{BusDevice, IrqLine, MonotonicClock, MsiMessage, MsiSink, PowerEvents, WallClock};

/// Records every level an interrupt line was driven to.
#[derive(Default)]
pub struct RecordingIrq {
    levels: Mutex<Vec<bool>>,
}

impl RecordingIrq {
    /// Number of low→high transitions seen (the line starts low).
    pub fn rising_edges(&self) -> usize {
        let levels = self.levels.lock().unwrap();
        let mut previous = false;
        let mut edges = 0;
        for &level in levels.iter() {
            if level && !previous {
                edges += 1;
            }
            previous = level;
        }
        edges
    }

    /// The level the line was last driven to (low if never driven).
    pub fn is_high(&self) -> bool {
        self.levels.lock().unwrap().last().copied().unwrap_or(false)
    }

    pub fn clear(&self) {
        self.levels.lock().unwrap().clear();
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, high: bool) {
        self.levels.lock().unwrap().push(high);
    }
}

/// Counts power-off and reset requests.
#[derive(Default)]
pub struct FakePower {
    power_offs: AtomicUsize,
    resets: AtomicUsize,
}

impl FakePower {
    pub fn power_offs(&self) -> usize {
        self.power_offs.load(Ordering::SeqCst)
    }

    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }
}

impl PowerEvents for FakePower {
    fn power_off(&self) {
        self.power_offs.fetch_add(1, Ordering::SeqCst);
    }

    fn reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

/// A settable clock, usable as both a wall clock and a monotonic clock.
#[derive(Default)]
pub struct FakeClock {
    now: Mutex<Duration>,
}

impl FakeClock {
    pub fn at(now: Duration) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn set(&self, now: Duration) {
        *self.now.lock().unwrap() = now;
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }
}

impl WallClock for FakeClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap()
    }
}

impl MonotonicClock for FakeClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap()
    }
}

/// Records every MSI sent and every route change; can be told to fail.
#[derive(Default)]
pub struct RecordingMsi {
    sent: Mutex<Vec<(u64, u32)>>,
    routes: Mutex<Vec<(usize, Option<MsiMessage>)>>,
    routed: Mutex<Vec<usize>>,
    failing: AtomicBool,
}

impl RecordingMsi {
    pub fn sent(&self) -> Vec<(u64, u32)> {
        self.sent.lock().unwrap().clone()
    }

    pub fn take(&self) -> Vec<(u64, u32)> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }

    /// Sources of the messages sent through `send_routed`, in order.
    pub fn take_routed(&self) -> Vec<usize> {
        std::mem::take(&mut *self.routed.lock().unwrap())
    }

    pub fn take_routes(&self) -> Vec<(usize, Option<MsiMessage>)> {
        std::mem::take(&mut *self.routes.lock().unwrap())
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl MsiSink for RecordingMsi {
    fn send_msi(&self, address: u64, data: u32) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected MSI failure"));
        }
        self.sent.lock().unwrap().push((address, data));
        Ok(())
    }

    fn send_routed(&self, source: usize, message: MsiMessage) -> std::io::Result<()> {
        self.routed.lock().unwrap().push(source);
        self.send_msi(message.address, message.data)
    }

    fn route_changed(&self, source: usize, message: Option<MsiMessage>) -> std::io::Result<()> {
        self.routes.lock().unwrap().push((source, message));
        Ok(())
    }
}

/// Access widths the randomized tests use, odd and oversized ones included.
pub const WIDTHS: [usize; 8] = [0, 1, 2, 3, 4, 5, 8, 16];

/// xorshift64*: small, deterministic, good enough to shake a device.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// Random bytes, `len` of them.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// A random offset: mostly inside (or just past) the device, sometimes anywhere.
fn random_offset(rng: &mut Rng, len: u64) -> u64 {
    match rng.below(10) {
        0 => rng.next(),
        1 => u64::MAX - rng.below(16),
        _ => rng.below(len + 8),
    }
}

/// One random read or write.
pub fn random_access(rng: &mut Rng, device: &mut dyn BusDevice, len: u64) {
    let offset = random_offset(rng, len);
    let width = WIDTHS[rng.below(WIDTHS.len() as u64) as usize];
    let mut data = vec![0u8; width];
    if rng.chance(2) {
        device.read(offset, &mut data);
    } else {
        data.iter_mut().for_each(|byte| *byte = rng.byte());
        device.write(offset, &data);
    }
}

pub fn read_byte(device: &mut dyn BusDevice, offset: u64) -> u8 {
    let mut data = [0u8];
    device.read(offset, &mut data);
    data[0]
}
