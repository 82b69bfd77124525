//! The root complex: bus 0 with up to 32 devices, the i440FX host bridge at 00:00.0, BAR
//! placement and the map of BARs the devices decode.
//!
//! Lock order: [`PciRoot`] before a device. MMIO accesses look the device up under the
//! root's lock and release it before locking the device, so a slow device (a virtio queue
//! being processed) never holds up configuration accesses to the others.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{BarKind, ConfigWrite, PciConfigSpace, PciConfigState, PciError, PciIds};
use crate::bus::{BusRange, lock_recovering};

/// Number of device slots on bus 0.
const SLOTS: usize = 32;
/// i440FX PAM registers: PAM0 at 0x59 up to PAM6 at 0x5F.
const PAM_FIRST: u16 = 0x59;
const PAM_COUNT: usize = 7;

/// A PCI function on bus 0, as the root sees it.
///
/// The root applies guest configuration writes to [`PciDevice::config_mut`] and then calls
/// [`PciDevice::config_written`]; BAR accesses arrive with the offset relative to the
/// BAR's current address.
pub trait PciDevice: Send {
    /// The configuration space.
    fn config(&self) -> &PciConfigSpace;

    /// The configuration space, to apply writes to.
    fn config_mut(&mut self) -> &mut PciConfigSpace;

    /// Reads configuration space for the guest. Devices with registers computed on read
    /// (virtio's PCI configuration access window) override this.
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config().read(offset, data);
    }

    /// Called after a guest write to `[offset, offset + len)` was applied.
    fn config_written(&mut self, offset: u16, len: usize) {
        let _ = (offset, len);
    }

    /// Reads `data.len()` bytes at `offset` in BAR `index`.
    fn bar_read(&mut self, index: usize, offset: u64, data: &mut [u8]);

    /// Writes `data` at `offset` in BAR `index`.
    fn bar_write(&mut self, index: usize, offset: u64, data: &[u8]);

    /// Puts the function back to its power-on state (a PCI reset).
    fn reset(&mut self);
}

/// A device as the root and the VMM share it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Where an MMIO access goes: a device's BAR, at an offset inside it.
#[derive(Clone)]
pub struct BarTarget {
    /// The device.
    pub device: SharedPciDevice,
    /// The BAR index.
    pub index: usize,
    /// The offset from the BAR's address.
    pub offset: u64,
}

/// Told when a BAR starts or stops decoding an address range (moved, memory decoding
/// switched, restore). Called with the root locked: it must not call back into the root.
pub trait PciBarObserver: Send + Sync {
    /// BAR `index` of the device in `slot` decoded `old` and now decodes `new`.
    fn bar_remapped(&self, slot: u8, index: usize, old: Option<BusRange>, new: Option<BusRange>);
}

/// The PCI MMIO windows BARs are placed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindows {
    /// The window below 4 GiB (platform.md: 0xC000_0000, 512 MiB).
    pub mmio32: BusRange,
    /// A window above 4 GiB for 64-bit BARs; without one they go below 4 GiB too.
    pub mmio64: Option<BusRange>,
}

/// The Intel 82441FX (i440FX) host bridge at 00:00.0, as QEMU presents it: SeaBIOS
/// recognises the platform by its IDs and subsystem 1AF4:1100, and unlocks the BIOS area
/// through the PAM registers (plain writable bytes here: that memory is always RAM).
pub struct HostBridge {
    config: PciConfigSpace,
}

impl HostBridge {
    /// The IDs of QEMU's i440FX.
    pub const IDS: PciIds = PciIds {
        vendor: 0x8086,
        device: 0x1237,
        subsystem_vendor: 0x1AF4,
        subsystem_id: 0x1100,
        class_code: 0x06_0000,
        revision: 0x02,
    };

    /// A bridge in its power-on state.
    pub fn new() -> Self {
        let mut config = PciConfigSpace::new(Self::IDS);
        // Cannot fail: the range lies in the device-specific area.
        let _ = config.set_writable(PAM_FIRST, &[0xFF; PAM_COUNT]);
        Self { config }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }

    fn bar_read(&mut self, _index: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xFF);
    }

    fn bar_write(&mut self, _index: usize, _offset: u64, _data: &[u8]) {}

    fn reset(&mut self) {
        self.config.reset();
    }
}

/// The root's state: the host bridge's configuration space (devices save their own).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PciRootState {
    /// The host bridge's configuration space.
    pub host_bridge: PciConfigState,
}

/// A BAR that currently decodes an address range.
#[derive(Clone)]
struct DecodedBar {
    range: BusRange,
    slot: u8,
    index: usize,
    device: SharedPciDevice,
}

/// Bus 0: the host bridge and up to 31 more devices.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    host_bridge: Arc<Mutex<HostBridge>>,
    decoded: Vec<DecodedBar>,
    observer: Option<Arc<dyn PciBarObserver>>,
}

impl PciRoot {
    /// Bus 0 with only the host bridge.
    pub fn new() -> Self {
        let host_bridge = Arc::new(Mutex::new(HostBridge::new()));
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; SLOTS];
        slots[0] = Some(host_bridge.clone());
        Self {
            slots,
            host_bridge,
            decoded: Vec::new(),
            observer: None,
        }
    }

    /// Plugs `device` into the first free slot and returns the slot (device number).
    pub fn add_device(&mut self, device: SharedPciDevice) -> Result<u8, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::NoFreeSlot)?;
        // SLOTS is 32.
        let slot = slot as u8;
        self.add_device_at(slot, device)?;
        Ok(slot)
    }

    /// Plugs `device` into `slot`, which must exist and be free.
    pub fn add_device_at(&mut self, slot: u8, device: SharedPciDevice) -> Result<(), PciError> {
        match self.slots.get_mut(usize::from(slot)) {
            Some(entry @ None) => *entry = Some(device),
            _ => return Err(PciError::SlotUnavailable { slot }),
        }
        self.refresh_decoding();
        Ok(())
    }

    /// The device in `slot`.
    pub fn device(&self, slot: u8) -> Option<SharedPciDevice> {
        self.slots.get(usize::from(slot))?.clone()
    }

    /// The host bridge (slot 0).
    pub fn host_bridge(&self) -> Arc<Mutex<HostBridge>> {
        self.host_bridge.clone()
    }

    /// Sets who hears about BAR decoding changes; announces every decoded BAR to it.
    pub fn set_observer(&mut self, observer: Option<Arc<dyn PciBarObserver>>) {
        self.observer = observer;
        if let Some(observer) = &self.observer {
            for bar in &self.decoded {
                observer.bar_remapped(bar.slot, bar.index, None, Some(bar.range));
            }
        }
    }

    /// Reads configuration space of bus/device/function at `offset`; absent functions read
    /// all ones.
    pub fn config_read(&self, bus: u8, device: u8, function: u8, offset: u16, data: &mut [u8]) {
        match self.function(bus, device, function) {
            Some(device) => lock_recovering(&device).config_read(offset, data),
            None => data.fill(0xFF),
        }
    }

    /// Writes configuration space of bus/device/function at `offset` (ignored for absent
    /// functions) and follows BAR or command changes.
    pub fn config_write(&mut self, bus: u8, device: u8, function: u8, offset: u16, data: &[u8]) {
        let Some(target) = self.function(bus, device, function) else {
            return;
        };
        let effects: ConfigWrite = {
            let mut target = lock_recovering(&target);
            let effects = target.config_mut().write(offset, data);
            target.config_written(offset, data.len());
            effects
        };
        if effects.changes_decoding() {
            self.refresh_decoding();
        }
    }

    /// Places every device's BARs in `windows`, largest first, each aligned to its size:
    /// 64-bit BARs in the 64-bit window when there is one. Memory decoding stays as it is
    /// (off at power-on): the guest enables it.
    pub fn allocate_bars(&mut self, windows: &PciWindows) -> Result<(), PciError> {
        let mut bars = Vec::new();
        for (slot, device) in self.occupied() {
            for bar in lock_recovering(&device).config().bars() {
                bars.push((slot, device.clone(), bar));
            }
        }
        bars.sort_by_key(|(slot, _, bar)| (std::cmp::Reverse(bar.size), *slot, bar.index));
        let mut low = windows.mmio32.base;
        let mut high = windows.mmio64.map(|window| window.base);
        for (slot, device, bar) in bars {
            let (cursor, window) = match (bar.kind, high.as_mut(), windows.mmio64) {
                (BarKind::Mmio64, Some(cursor), Some(window)) => (cursor, window),
                _ => (&mut low, windows.mmio32),
            };
            let full = PciError::WindowFull {
                slot,
                index: bar.index,
                size: bar.size,
            };
            let address = cursor
                .checked_next_multiple_of(bar.size)
                .ok_or(full.clone())?;
            let end = address.checked_add(bar.size).ok_or(full.clone())?;
            // In u128: a window may end at the very top of the address space.
            if u128::from(end) > u128::from(window.base) + u128::from(window.len) {
                return Err(full);
            }
            lock_recovering(&device)
                .config_mut()
                .set_bar_address(bar.index, address)?;
            *cursor = end;
        }
        self.refresh_decoding();
        Ok(())
    }

    /// Reads guest-physical `addr` from the BAR that decodes it; false if none does.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.decoder(addr, data.len()) {
            Some(target) => {
                lock_recovering(&target.device).bar_read(target.index, target.offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes guest-physical `addr` to the BAR that decodes it; false if none does.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        match self.decoder(addr, data.len()) {
            Some(target) => {
                lock_recovering(&target.device).bar_write(target.index, target.offset, data);
                true
            }
            None => false,
        }
    }

    /// The device, BAR index and offset an access of `len` bytes at `addr` goes to.
    ///
    /// The root's lock can be dropped before the device is locked: callers that hold the
    /// root in a mutex use this to keep the root's lock short.
    pub fn decoder(&self, addr: u64, len: usize) -> Option<BarTarget> {
        let len = u64::try_from(len).ok()?;
        self.decoded.iter().find_map(|bar| {
            let offset = addr.checked_sub(bar.range.base)?;
            (offset < bar.range.len && len <= bar.range.len - offset).then(|| BarTarget {
                device: bar.device.clone(),
                index: bar.index,
                offset,
            })
        })
    }

    /// The address ranges BARs decode now, as (slot, BAR index, range).
    pub fn decoded_bars(&self) -> Vec<(u8, usize, BusRange)> {
        self.decoded
            .iter()
            .map(|bar| (bar.slot, bar.index, bar.range))
            .collect()
    }

    /// Rebuilds the map of decoded BARs from the devices' configuration spaces (after
    /// anything changed them other than a guest write through the root, such as a
    /// device's restore) and tells the observer what changed.
    pub fn refresh_decoding(&mut self) {
        let mut decoded = Vec::new();
        for (slot, device) in self.occupied() {
            let guard = lock_recovering(&device);
            let config = guard.config();
            if !config.memory_enabled() {
                continue;
            }
            for bar in config.bars() {
                // A BAR the guest placed across the top of the address space decodes nothing.
                if bar.address.checked_add(bar.size - 1).is_some() {
                    decoded.push(DecodedBar {
                        range: BusRange {
                            base: bar.address,
                            len: bar.size,
                        },
                        slot,
                        index: bar.index,
                        device: device.clone(),
                    });
                }
            }
        }
        let old = std::mem::replace(&mut self.decoded, decoded);
        self.announce_changes(&old);
    }

    /// Resets every device (a platform reset) and rebuilds the decoded map.
    pub fn reset(&mut self) {
        for (_, device) in self.occupied() {
            lock_recovering(&device).reset();
        }
        self.refresh_decoding();
    }

    /// The root's state: the host bridge's configuration space.
    pub fn state(&self) -> PciRootState {
        PciRootState {
            host_bridge: lock_recovering(&self.host_bridge).config.state(),
        }
    }

    /// Restores the host bridge and rebuilds the decoded map from the devices (restore them
    /// first).
    pub fn restore(&mut self, state: &PciRootState) -> Result<(), PciError> {
        lock_recovering(&self.host_bridge)
            .config
            .restore(&state.host_bridge)?;
        self.refresh_decoding();
        Ok(())
    }

    fn function(&self, bus: u8, device: u8, function: u8) -> Option<SharedPciDevice> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.device(device)
    }

    fn occupied(&self) -> Vec<(u8, SharedPciDevice)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, device)| Some((slot as u8, device.clone()?)))
            .collect()
    }

    fn announce_changes(&self, old: &[DecodedBar]) {
        let Some(observer) = &self.observer else {
            return;
        };
        let find = |bars: &[DecodedBar], slot: u8, index: usize| {
            bars.iter()
                .find(|bar| bar.slot == slot && bar.index == index)
                .map(|bar| bar.range)
        };
        for bar in old {
            if find(&self.decoded, bar.slot, bar.index).is_none() {
                observer.bar_remapped(bar.slot, bar.index, Some(bar.range), None);
            }
        }
        for bar in &self.decoded {
            let before = find(old, bar.slot, bar.index);
            if before != Some(bar.range) {
                observer.bar_remapped(bar.slot, bar.index, before, Some(bar.range));
            }
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pci::regs;

    /// A device with the given BARs that records BAR accesses and answers reads with the
    /// low byte of the offset.
    pub(crate) struct TestDevice {
        pub config: PciConfigSpace,
        pub writes: Vec<(usize, u64, Vec<u8>)>,
        pub resets: usize,
        pub written: Vec<(u16, usize)>,
    }

    impl TestDevice {
        pub(crate) fn new(bars: &[(usize, u64, BarKind)]) -> Self {
            let mut config = PciConfigSpace::new(PciIds {
                vendor: 0x1234,
                device: 0x5678,
                subsystem_vendor: 0,
                subsystem_id: 0,
                class_code: 0xFF_0000,
                revision: 0,
            });
            for &(index, size, kind) in bars {
                config.add_bar(index, size, kind, false).unwrap();
            }
            Self {
                config,
                writes: Vec::new(),
                resets: 0,
                written: Vec::new(),
            }
        }
    }

    impl PciDevice for TestDevice {
        fn config(&self) -> &PciConfigSpace {
            &self.config
        }
        fn config_mut(&mut self) -> &mut PciConfigSpace {
            &mut self.config
        }
        fn config_written(&mut self, offset: u16, len: usize) {
            self.written.push((offset, len));
        }
        fn bar_read(&mut self, index: usize, offset: u64, data: &mut [u8]) {
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = (offset as u8).wrapping_add(i as u8) ^ (index as u8 * 0x10);
            }
        }
        fn bar_write(&mut self, index: usize, offset: u64, data: &[u8]) {
            self.writes.push((index, offset, data.to_vec()));
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.config.reset();
        }
    }

    type Remap = (u8, usize, Option<BusRange>, Option<BusRange>);

    #[derive(Default)]
    struct RecordingObserver {
        events: Mutex<Vec<Remap>>,
    }

    impl PciBarObserver for RecordingObserver {
        fn bar_remapped(
            &self,
            slot: u8,
            index: usize,
            old: Option<BusRange>,
            new: Option<BusRange>,
        ) {
            self.events.lock().unwrap().push((slot, index, old, new));
        }
    }

    pub(crate) fn windows() -> PciWindows {
        PciWindows {
            mmio32: BusRange {
                base: 0xC000_0000,
                len: 0x2000_0000,
            },
            mmio64: None,
        }
    }

    fn range(base: u64, len: u64) -> BusRange {
        BusRange { base, len }
    }

    fn enable_memory(root: &mut PciRoot, slot: u8) {
        root.config_write(
            0,
            slot,
            0,
            regs::COMMAND,
            &regs::COMMAND_MEMORY.to_le_bytes(),
        );
    }

    #[test]
    fn host_bridge_is_an_i440fx_with_qemu_subsystem() {
        let root = PciRoot::new();
        let mut data = [0u8; 4];

        root.config_read(0, 0, 0, 0, &mut data);
        let id = u32::from_le_bytes(data);
        root.config_read(0, 0, 0, 0x2C, &mut data);
        let subsystem = u32::from_le_bytes(data);
        root.config_read(0, 0, 0, 0x08, &mut data);

        assert_eq!(id, 0x1237_8086);
        assert_eq!(subsystem, 0x1100_1AF4);
        assert_eq!(u32::from_le_bytes(data) >> 8, 0x06_0000);
    }

    #[test]
    fn pam_registers_take_seabios_dword_writes() {
        let mut root = PciRoot::new();

        root.config_write(0, 0, 0, 0x58, &0x3000_0012u32.to_le_bytes());
        root.config_write(0, 0, 0, 0x5C, &0x3333_3333u32.to_le_bytes());
        let mut data = [0u8; 8];
        root.config_read(0, 0, 0, 0x58, &mut data);

        assert_eq!(data, [0x00, 0x00, 0x00, 0x30, 0x33, 0x33, 0x33, 0x33]);
    }

    #[test]
    fn absent_functions_read_all_ones_and_ignore_writes() {
        let mut root = PciRoot::new();
        let mut data = [0u8; 4];

        root.config_write(0, 5, 0, 4, &[0xFF; 4]);
        root.config_read(0, 5, 0, 0, &mut data);
        assert_eq!(data, [0xFF; 4]);
        root.config_read(0, 0, 1, 0, &mut data);
        assert_eq!(data, [0xFF; 4]);
        root.config_read(1, 0, 0, 0, &mut data);
        assert_eq!(data, [0xFF; 4]);
    }

    #[test]
    fn devices_fill_free_slots_in_order() {
        let mut root = PciRoot::new();

        let first = root.add_device(Arc::new(Mutex::new(TestDevice::new(&[]))));
        root.add_device_at(3, Arc::new(Mutex::new(TestDevice::new(&[]))))
            .unwrap();
        let taken = root.add_device_at(3, Arc::new(Mutex::new(TestDevice::new(&[]))));
        let out_of_range = root.add_device_at(32, Arc::new(Mutex::new(TestDevice::new(&[]))));

        assert_eq!(first, Ok(1));
        assert_eq!(taken, Err(PciError::SlotUnavailable { slot: 3 }));
        assert_eq!(out_of_range, Err(PciError::SlotUnavailable { slot: 32 }));
        for _ in 0..29 {
            root.add_device(Arc::new(Mutex::new(TestDevice::new(&[]))))
                .unwrap();
        }
        assert_eq!(
            root.add_device(Arc::new(Mutex::new(TestDevice::new(&[])))),
            Err(PciError::NoFreeSlot)
        );
    }

    #[test]
    fn allocation_aligns_bars_naturally_largest_first() {
        let mut root = PciRoot::new();
        let a = Arc::new(Mutex::new(TestDevice::new(&[(0, 0x1000, BarKind::Mmio32)])));
        let b = Arc::new(Mutex::new(TestDevice::new(&[
            (0, 0x100, BarKind::Mmio32),
            (2, 0x4000, BarKind::Mmio64),
        ])));
        root.add_device(a.clone()).unwrap();
        root.add_device(b.clone()).unwrap();

        root.allocate_bars(&windows()).unwrap();

        let b = b.lock().unwrap();
        assert_eq!(b.config.bar_address(2), Some(0xC000_0000));
        assert_eq!(a.lock().unwrap().config.bar_address(0), Some(0xC000_4000));
        assert_eq!(b.config.bar_address(0), Some(0xC000_5000));
        assert!(root.decoded_bars().is_empty(), "memory decoding is off");
    }

    #[test]
    fn sixty_four_bit_bars_go_to_the_high_window_when_there_is_one() {
        let mut root = PciRoot::new();
        let device = Arc::new(Mutex::new(TestDevice::new(&[
            (0, 0x1000, BarKind::Mmio32),
            (2, 0x4000, BarKind::Mmio64),
        ])));
        root.add_device(device.clone()).unwrap();
        let windows = PciWindows {
            mmio64: Some(range(0x40_0000_0000, 0x40_0000_0000)),
            ..windows()
        };

        root.allocate_bars(&windows).unwrap();

        let device = device.lock().unwrap();
        assert_eq!(device.config.bar_address(0), Some(0xC000_0000));
        assert_eq!(device.config.bar_address(2), Some(0x40_0000_0000));
    }

    #[test]
    fn an_empty_window_holds_nothing() {
        let mut root = PciRoot::new();
        root.add_device(Arc::new(Mutex::new(TestDevice::new(&[(
            0,
            0x10,
            BarKind::Mmio32,
        )]))))
        .unwrap();
        let empty = PciWindows {
            mmio32: range(0xC000_0000, 0),
            mmio64: None,
        };

        let result = root.allocate_bars(&empty);

        assert!(matches!(result, Err(PciError::WindowFull { .. })));
    }

    #[test]
    fn allocation_that_does_not_fit_names_the_bar() {
        let mut root = PciRoot::new();
        root.add_device(Arc::new(Mutex::new(TestDevice::new(&[(
            0,
            0x4000_0000,
            BarKind::Mmio32,
        )]))))
        .unwrap();

        let result = root.allocate_bars(&windows());

        assert_eq!(
            result,
            Err(PciError::WindowFull {
                slot: 1,
                index: 0,
                size: 0x4000_0000
            })
        );
    }

    #[test]
    fn mmio_reaches_an_enabled_bar_at_its_current_address() {
        let mut root = PciRoot::new();
        let device = Arc::new(Mutex::new(TestDevice::new(&[(2, 0x4000, BarKind::Mmio64)])));
        let slot = root.add_device(device.clone()).unwrap();
        root.allocate_bars(&windows()).unwrap();
        let mut data = [0u8; 2];

        let before_enable = root.mmio_read(0xC000_0010, &mut data);
        enable_memory(&mut root, slot);
        let after_enable = root.mmio_read(0xC000_0010, &mut data);
        root.config_write(0, slot, 0, regs::BAR0 + 8, &0xD000_0000u32.to_le_bytes());
        let old_address = root.mmio_write(0xC000_0010, &[1]);
        let new_address = root.mmio_write(0xD000_3FFF, &[2]);
        let straddling = root.mmio_write(0xD000_3FFF, &[3, 4]);

        assert!(!before_enable && after_enable);
        assert_eq!(data, [0x30, 0x31]);
        assert!(!old_address && new_address && !straddling);
        assert_eq!(device.lock().unwrap().writes, vec![(2, 0x3FFF, vec![2])]);
    }

    #[test]
    fn config_written_hook_sees_every_write() {
        let mut root = PciRoot::new();
        let device = Arc::new(Mutex::new(TestDevice::new(&[])));
        let slot = root.add_device(device.clone()).unwrap();

        root.config_write(0, slot, 0, 0x41, &[1, 2]);

        assert_eq!(device.lock().unwrap().written, vec![(0x41, 2)]);
    }

    #[test]
    fn observer_hears_bars_appear_move_and_disappear() {
        let mut root = PciRoot::new();
        let observer = Arc::new(RecordingObserver::default());
        root.set_observer(Some(observer.clone()));
        let device = Arc::new(Mutex::new(TestDevice::new(&[(0, 0x1000, BarKind::Mmio32)])));
        let slot = root.add_device(device).unwrap();
        root.allocate_bars(&windows()).unwrap();

        enable_memory(&mut root, slot);
        root.config_write(0, slot, 0, regs::BAR0, &0xC010_0000u32.to_le_bytes());
        root.config_write(0, slot, 0, regs::COMMAND, &[0, 0]);

        let a = range(0xC000_0000, 0x1000);
        let b = range(0xC010_0000, 0x1000);
        assert_eq!(
            *observer.events.lock().unwrap(),
            vec![
                (1, 0, None, Some(a)),
                (1, 0, Some(a), Some(b)),
                (1, 0, Some(b), None)
            ]
        );
    }

    #[test]
    fn reset_resets_devices_and_stops_decoding() {
        let mut root = PciRoot::new();
        let device = Arc::new(Mutex::new(TestDevice::new(&[(0, 0x1000, BarKind::Mmio32)])));
        let slot = root.add_device(device.clone()).unwrap();
        root.allocate_bars(&windows()).unwrap();
        enable_memory(&mut root, slot);

        root.reset();

        assert_eq!(device.lock().unwrap().resets, 1);
        assert!(root.decoded_bars().is_empty());
        assert_eq!(
            device.lock().unwrap().config.bar_address(0),
            Some(0xC000_0000)
        );
    }

    #[test]
    fn state_round_trips_the_host_bridge() {
        let mut root = PciRoot::new();
        root.config_write(0, 0, 0, 0x5A, &[0x33]);
        let state = root.state();
        let mut fresh = PciRoot::new();

        fresh.restore(&state).unwrap();

        let mut data = [0u8];
        fresh.config_read(0, 0, 0, 0x5A, &mut data);
        assert_eq!(data, [0x33]);
        assert_eq!(fresh.state(), state);
    }
}
