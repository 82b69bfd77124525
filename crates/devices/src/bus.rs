//! An address-range → device map, used for both port I/O and MMIO dispatch.
//!
//! The VMM keeps one [`Bus`] for I/O ports and one for MMIO; a vCPU exit for address `addr`
//! becomes [`Bus::read`] / [`Bus::write`], which finds the device whose range covers the whole
//! access and calls it with the offset relative to the base the device was inserted at.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A device that answers reads and writes in a range of a [`Bus`].
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset`.
    ///
    /// `offset` is relative to the base the device was inserted at.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset`.
    ///
    /// `offset` is relative to the base the device was inserted at.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Why a device could not be inserted into a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// A device range must cover at least one address.
    #[error("cannot insert a device of length 0 at {base:#x}")]
    ZeroLength {
        /// The requested base.
        base: u64,
    },
    /// `base + len` does not fit the 64-bit address space.
    #[error(
        "device range at {base:#x} with length {len:#x} runs past the end of the address space"
    )]
    Overflow {
        /// The requested base.
        base: u64,
        /// The requested length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("device range {new} overlaps the device already at {existing}")]
    Overlap {
        /// The requested range.
        new: BusRange,
        /// The range of the device already inserted.
        existing: BusRange,
    },
}

/// A range of bus addresses: `[base, base + len)`, never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRange {
    /// First address of the range.
    pub base: u64,
    /// Number of addresses in the range (at least 1).
    pub len: u64,
}

impl BusRange {
    /// The last address inside the range.
    pub fn last(&self) -> u64 {
        // Construction through `Bus::insert` guarantees len >= 1 and no overflow.
        self.base + (self.len - 1)
    }

    fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }

    /// Whether `[addr, addr + len)` lies entirely inside this range.
    fn covers(&self, addr: u64, len: u64) -> bool {
        if addr < self.base {
            return false;
        }
        let offset = addr - self.base;
        offset < self.len && len <= self.len - offset
    }
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.base, self.last())
    }
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Address ranges mapped to devices.
///
/// Cloning a bus is cheap and shares the devices (they are behind `Arc<Mutex<_>>`).
#[derive(Clone, Default)]
pub struct Bus {
    // Keyed by base address; ranges never overlap.
    devices: BTreeMap<u64, Entry>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ranges()).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `[base, base + len)`.
    ///
    /// Refuses an empty range, a range past the end of the address space and a range that
    /// overlaps a device already inserted.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength { base });
        }
        if base.checked_add(len - 1).is_none() {
            return Err(BusError::Overflow { base, len });
        }
        let new = BusRange { base, len };
        if let Some(existing) = self.overlapping(&new) {
            return Err(BusError::Overlap { new, existing });
        }
        self.devices.insert(base, Entry { len, device });
        Ok(())
    }

    /// Unmaps the device inserted at exactly `base` and returns it.
    pub fn remove(&mut self, base: u64) -> Option<Arc<Mutex<dyn BusDevice>>> {
        self.devices
            .remove(&base)
            .map(|entry| Arc::clone(&entry.device))
    }

    /// The device whose range contains `addr`, with that range.
    pub fn device_at(&self, addr: u64) -> Option<(BusRange, Arc<Mutex<dyn BusDevice>>)> {
        let (&base, entry) = self.devices.range(..=addr).next_back()?;
        let range = BusRange {
            base,
            len: entry.len,
        };
        range
            .covers(addr, 1)
            .then(|| (range, Arc::clone(&entry.device)))
    }

    /// The ranges of all devices, in address order.
    pub fn ranges(&self) -> impl Iterator<Item = BusRange> + '_ {
        self.devices.iter().map(|(&base, entry)| BusRange {
            base,
            len: entry.len,
        })
    }

    /// Reads `data.len()` bytes at `addr` from the device covering them.
    ///
    /// Returns false when no device covers `[addr, addr + data.len())`; `data` is then left
    /// untouched (the caller decides what the guest sees, usually all ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.covering(addr, data.len()) {
            Some((base, entry)) => {
                lock_recovering(&entry.device).read(addr - base, data);
                true
            }
            None => false,
        }
    }

    /// Writes `data` at `addr` to the device covering `[addr, addr + data.len())`.
    ///
    /// Returns false when no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.covering(addr, data.len()) {
            Some((base, entry)) => {
                lock_recovering(&entry.device).write(addr - base, data);
                true
            }
            None => false,
        }
    }

    fn covering(&self, addr: u64, len: usize) -> Option<(u64, &Entry)> {
        let (&base, entry) = self.devices.range(..=addr).next_back()?;
        let range = BusRange {
            base,
            len: entry.len,
        };
        let len = u64::try_from(len).ok()?;
        range.covers(addr, len).then_some((base, entry))
    }

    fn overlapping(&self, new: &BusRange) -> Option<BusRange> {
        // Only two candidates can overlap: the last device starting at or below `new.base`
        // and the first one starting above it.
        let below = self.devices.range(..=new.base).next_back();
        let above = self.devices.range(new.base..).next();
        below
            .into_iter()
            .chain(above)
            .map(|(&base, entry)| BusRange {
                base,
                len: entry.len,
            })
            .find(|existing| existing.overlaps(new))
    }
}

/// The offset of each byte of an access starting at `offset`, in order; it ends early
/// rather than wrap past the end of the address space.
///
/// Devices whose registers are bytes (all port I/O devices) decode a wide access as this
/// run of byte accesses, as an ISA bus does.
pub(crate) fn byte_offsets(offset: u64) -> impl Iterator<Item = u64> {
    (0u64..).map_while(move |i| offset.checked_add(i))
}

/// Locks a device, recovering the guard if a previous holder panicked.
///
/// A device that panicked mid-access may be in an odd state, but refusing every later access
/// (and panicking the vCPU thread in turn) would be worse for the VM.
pub(crate) fn lock_recovering<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the last access and answers reads with `offset + i`.
    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
        last_read: Option<(u64, usize)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.last_read = Some((offset, data.len()));
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = (offset as u8).wrapping_add(i as u8);
            }
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn read_and_write_reach_the_device_with_relative_offsets() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut data = [0u8; 2];

        let read_ok = bus.read(0x3fa, &mut data);
        let write_ok = bus.write(0x3fd, &[7]);

        assert!(read_ok && write_ok);
        assert_eq!(data, [2, 3]);
        let dev = dev.lock().unwrap();
        assert_eq!(dev.last_read, Some((2, 2)));
        assert_eq!(dev.last_write, Some((5, vec![7])));
    }

    #[test]
    fn access_outside_every_device_returns_false_and_leaves_data() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x70, 2).unwrap();
        let mut data = [0xaa];

        assert!(!bus.read(0x72, &mut data));
        assert!(!bus.read(0x6f, &mut data));
        assert!(!bus.write(0x100, &[1]));
        assert_eq!(data, [0xaa]);
    }

    #[test]
    fn access_straddling_the_end_of_a_device_is_refused() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x70, 2).unwrap();
        let mut data = [0u8; 4];

        let ok = bus.read(0x71, &mut data[..2]);

        assert!(!ok);
        assert!(dev.lock().unwrap().last_read.is_none());
        assert!(bus.read(0x70, &mut data[..2]));
    }

    #[test]
    fn adjacent_devices_are_accepted() {
        let mut bus = Bus::new();

        bus.insert(recorder(), 0x60, 5).unwrap();
        bus.insert(recorder(), 0x65, 1).unwrap();
        bus.insert(recorder(), 0x5f, 1).unwrap();

        assert_eq!(bus.ranges().count(), 3);
    }

    #[test]
    fn overlapping_insert_names_both_ranges() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x600, 0x10).unwrap();

        let err = bus.insert(recorder(), 0x5f8, 0x9).unwrap_err();

        assert_eq!(
            err,
            BusError::Overlap {
                new: BusRange {
                    base: 0x5f8,
                    len: 0x9
                },
                existing: BusRange {
                    base: 0x600,
                    len: 0x10
                },
            }
        );
        let message = err.to_string();
        assert!(message.contains("[0x5f8, 0x600]"), "{message}");
        assert!(message.contains("[0x600, 0x60f]"), "{message}");
    }

    #[test]
    fn overlap_with_the_device_below_is_refused() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x1000, 0x100).unwrap();

        let err = bus.insert(recorder(), 0x10ff, 1);

        assert!(matches!(err, Err(BusError::Overlap { .. })));
    }

    #[test]
    fn zero_length_and_overflowing_ranges_are_refused() {
        let mut bus = Bus::new();

        assert_eq!(
            bus.insert(recorder(), 0x10, 0),
            Err(BusError::ZeroLength { base: 0x10 })
        );
        assert_eq!(
            bus.insert(recorder(), u64::MAX, 2),
            Err(BusError::Overflow {
                base: u64::MAX,
                len: 2
            })
        );
        assert!(bus.insert(recorder(), u64::MAX, 1).is_ok());
    }

    #[test]
    fn device_at_the_top_of_the_address_space_is_reachable() {
        let mut bus = Bus::new();
        bus.insert(recorder(), u64::MAX - 3, 4).unwrap();
        let mut data = [0u8; 4];

        assert!(bus.read(u64::MAX - 3, &mut data));
        assert!(!bus.read(u64::MAX - 2, &mut data));
        assert!(bus.read(u64::MAX, &mut data[..1]));
    }

    #[test]
    fn remove_frees_the_range() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x70, 2).unwrap();

        let removed = bus.remove(0x70);

        assert!(removed.is_some());
        assert!(!bus.write(0x70, &[0]));
        assert!(bus.insert(recorder(), 0x70, 2).is_ok());
    }

    #[test]
    fn device_at_finds_the_covering_range() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x70, 2).unwrap();

        let found = bus.device_at(0x71).map(|(range, _)| range);

        assert_eq!(found, Some(BusRange { base: 0x70, len: 2 }));
        assert!(bus.device_at(0x72).is_none());
    }

    struct Panicker;

    impl BusDevice for Panicker {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0x5a);
        }

        fn write(&mut self, _offset: u64, _data: &[u8]) {
            panic!("device bug");
        }
    }

    #[test]
    fn poisoned_device_mutex_does_not_panic_later_callers() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Panicker)), 0x80, 1).unwrap();
        let shared = bus.clone();
        let panicked = std::thread::spawn(move || shared.write(0x80, &[1])).join();
        assert!(panicked.is_err());
        let mut data = [0u8];

        let ok = bus.read(0x80, &mut data);

        assert!(ok);
        assert_eq!(data, [0x5a]);
    }
}
