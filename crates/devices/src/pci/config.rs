//! One PCI function's configuration space: a type-0 header, BARs and a capability list.
//!
//! The space is 4 KiB of bytes with two per-byte masks: the bits the guest may write, and
//! the bits a guest write of 1 clears (status error bits). BARs are ordinary registers
//! whose write mask drops the bits below the BAR's size, which makes the standard sizing
//! protocol (write all ones, read back) work by construction. Device-side setters
//! (`set_u8`…) bypass the masks and also become the values [`PciConfigSpace::reset`]
//! restores, so a BAR placed by the VMM stays placed across a guest reboot.

use serde::{Deserialize, Serialize};

use super::{PciError, regs};

/// Size of the configuration space (PCI Express extended; conventional PCI uses 256).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Number of BAR slots in a type-0 header.
pub const NUM_BARS: usize = 6;

/// End of the standard (non-extended) configuration space, where capabilities live.
const STANDARD_END: usize = 0x100;
/// Command bits a guest can write: memory, bus master, parity, SERR#, INTx disable.
const COMMAND_WRITABLE: u16 = regs::COMMAND_MEMORY
    | regs::COMMAND_BUS_MASTER
    | (1 << 6)
    | (1 << 8)
    | regs::COMMAND_INTX_DISABLE;
/// Status bits cleared by writing 1: parity, target/master aborts, SERR#, parity error.
const STATUS_WRITE_1_TO_CLEAR: u16 = 0xF900;
/// BAR low bits: 64-bit memory type and prefetchable.
const BAR_TYPE_64: u32 = 0b10 << 1;
const BAR_PREFETCHABLE: u32 = 1 << 3;
/// The flag bits of a memory BAR (never part of the address).
const BAR_FLAGS_MASK: u64 = 0xF;

/// The identity of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Class code: base class (bits 16–23), subclass (8–15), programming interface (0–7).
    pub class_code: u32,
    /// Revision ID.
    pub revision: u8,
}

/// The kind of a memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarKind {
    /// A 32-bit memory BAR (one slot).
    Mmio32,
    /// A 64-bit memory BAR (two slots: the index and the next one).
    Mmio64,
}

impl BarKind {
    fn max_size(self) -> u64 {
        match self {
            BarKind::Mmio32 => 1 << 31,
            BarKind::Mmio64 => 1 << 63,
        }
    }
}

/// What a BAR is, and where its registers currently put it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR index (for a 64-bit BAR, the lower of its two slots).
    pub index: usize,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// 32- or 64-bit.
    pub kind: BarKind,
    /// Whether the BAR is marked prefetchable.
    pub prefetchable: bool,
    /// The address the BAR registers hold now (the guest may be sizing it).
    pub address: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarSlot {
    Unused,
    Base {
        size: u64,
        kind: BarKind,
        prefetchable: bool,
    },
    /// The upper half of the 64-bit BAR in the slot below.
    Upper,
}

/// One effect of a configuration write that the caller may need to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigEffect {
    /// A BAR's address registers changed (the guest moved or is sizing it).
    BarMoved {
        /// BAR index.
        index: usize,
        /// Address before the write.
        old: u64,
        /// Address after the write.
        new: u64,
    },
    /// The command register changed.
    CommandChanged {
        /// Value before the write.
        old: u16,
        /// Value after the write.
        new: u16,
    },
}

/// What one configuration write changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigWrite {
    /// The effects, BARs in index order then the command register.
    pub effects: Vec<ConfigEffect>,
}

impl ConfigWrite {
    /// Whether the write changed a BAR address or the command register.
    pub fn changes_decoding(&self) -> bool {
        !self.effects.is_empty()
    }
}

/// The guest-visible contents of a configuration space.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PciConfigState {
    /// All 4096 bytes.
    pub bytes: Vec<u8>,
}

/// A type-0 configuration space.
#[derive(Clone, Debug)]
pub struct PciConfigSpace {
    bytes: Vec<u8>,
    /// The contents after a reset: initial values plus device-side writes.
    defaults: Vec<u8>,
    writable: Vec<u8>,
    write_1_to_clear: Vec<u8>,
    bars: [BarSlot; NUM_BARS],
    /// Offset of the last capability in the list (its next pointer is patched on append).
    last_capability: Option<usize>,
    /// Where the next capability goes.
    next_capability: usize,
}

impl PciConfigSpace {
    /// A function with `ids`, no BARs, no capabilities, interrupt pin none.
    pub fn new(ids: PciIds) -> Self {
        let mut space = Self {
            bytes: vec![0; CONFIG_SPACE_SIZE],
            defaults: vec![0; CONFIG_SPACE_SIZE],
            writable: vec![0; CONFIG_SPACE_SIZE],
            write_1_to_clear: vec![0; CONFIG_SPACE_SIZE],
            bars: [BarSlot::Unused; NUM_BARS],
            last_capability: None,
            next_capability: usize::from(regs::DEVICE_SPECIFIC),
        };
        space.set_u16(regs::VENDOR_ID, ids.vendor);
        space.set_u16(regs::DEVICE_ID, ids.device);
        space.set_u8(regs::REVISION_ID, ids.revision);
        let class = ids.class_code.to_le_bytes();
        space.set_bytes(usize::from(regs::CLASS_CODE), &class[..3]);
        space.set_u16(regs::SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor);
        space.set_u16(regs::SUBSYSTEM_ID, ids.subsystem_id);
        space.set_mask16(regs::COMMAND, COMMAND_WRITABLE, 0);
        space.set_mask16(regs::STATUS, 0, STATUS_WRITE_1_TO_CLEAR);
        for register in [
            regs::CACHE_LINE_SIZE,
            regs::LATENCY_TIMER,
            regs::INTERRUPT_LINE,
        ] {
            space.writable[usize::from(register)] = 0xFF;
        }
        space
    }

    /// Reads `data.len()` bytes at `offset`, as the guest sees them; bytes past the end of
    /// the space read as 0.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::from(offset)
                .checked_add(i)
                .and_then(|at| self.bytes.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Applies a guest write of `data` at `offset` through the write masks and reports what
    /// changed. Bytes past the end of the space are ignored.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> ConfigWrite {
        let start = usize::from(offset);
        let end = start.saturating_add(data.len());
        let touches_bars = overlaps(start, end, usize::from(regs::BAR0), 4 * NUM_BARS);
        let touches_command = overlaps(start, end, usize::from(regs::COMMAND), 2);
        let old_bars = touches_bars.then(|| self.bar_addresses());
        let old_command = self.command();

        for (i, &value) in data.iter().enumerate() {
            let Some(at) = start.checked_add(i).filter(|&at| at < CONFIG_SPACE_SIZE) else {
                break;
            };
            let writable = self.writable[at];
            let clear = value & self.write_1_to_clear[at];
            self.bytes[at] = ((self.bytes[at] & !writable) | (value & writable)) & !clear;
        }

        let mut result = ConfigWrite::default();
        if let Some(old_bars) = old_bars {
            let new_bars = self.bar_addresses();
            for (index, (old, new)) in old_bars.into_iter().zip(new_bars).enumerate() {
                if let (Some(old), Some(new)) = (old, new)
                    && old != new
                {
                    result
                        .effects
                        .push(ConfigEffect::BarMoved { index, old, new });
                }
            }
        }
        let new_command = self.command();
        if touches_command && new_command != old_command {
            result.effects.push(ConfigEffect::CommandChanged {
                old: old_command,
                new: new_command,
            });
        }
        result
    }

    /// The byte at `offset` (0 past the end).
    pub fn read_u8(&self, offset: u16) -> u8 {
        let mut data = [0u8; 1];
        self.read(offset, &mut data);
        data[0]
    }

    /// The little-endian 16-bit register at `offset`.
    pub fn read_u16(&self, offset: u16) -> u16 {
        let mut data = [0u8; 2];
        self.read(offset, &mut data);
        u16::from_le_bytes(data)
    }

    /// The little-endian 32-bit register at `offset`.
    pub fn read_u32(&self, offset: u16) -> u32 {
        let mut data = [0u8; 4];
        self.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// Device-side write of a byte, bypassing the masks; also its value after reset.
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        self.set_bytes(usize::from(offset), &[value]);
    }

    /// Device-side write of a 16-bit register, bypassing the masks.
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        self.set_bytes(usize::from(offset), &value.to_le_bytes());
    }

    /// Device-side write of a 32-bit register, bypassing the masks.
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        self.set_bytes(usize::from(offset), &value.to_le_bytes());
    }

    /// Device-side write of live register contents (bypassing the masks) that a reset
    /// must not bring back, such as data a device latches for the guest to read.
    pub fn set_live(&mut self, offset: u16, values: &[u8]) {
        for (i, &value) in values.iter().enumerate() {
            if let Some(at) = usize::from(offset)
                .checked_add(i)
                .filter(|&at| at < CONFIG_SPACE_SIZE)
            {
                self.bytes[at] = value;
            }
        }
    }

    /// Makes `mask` (one byte of mask per register byte) guest-writable at `offset` in the
    /// device-specific area (0x40 and up). The header's registers have fixed masks.
    pub fn set_writable(&mut self, offset: u16, mask: &[u8]) -> Result<(), PciError> {
        let start = usize::from(offset);
        let end = start.saturating_add(mask.len());
        if start < usize::from(regs::DEVICE_SPECIFIC) || end > CONFIG_SPACE_SIZE {
            return Err(PciError::RegisterRange {
                offset: start,
                len: mask.len(),
            });
        }
        self.writable[start..end].copy_from_slice(mask);
        Ok(())
    }

    /// Vendor ID.
    pub fn vendor_id(&self) -> u16 {
        self.read_u16(regs::VENDOR_ID)
    }

    /// Device ID.
    pub fn device_id(&self) -> u16 {
        self.read_u16(regs::DEVICE_ID)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(regs::COMMAND)
    }

    /// Whether the function decodes its memory BARs.
    pub fn memory_enabled(&self) -> bool {
        self.command() & regs::COMMAND_MEMORY != 0
    }

    /// Whether the function may master the bus (DMA to guest memory, MSI).
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & regs::COMMAND_BUS_MASTER != 0
    }

    /// Whether the guest disabled INTx# in the command register.
    pub fn intx_disabled(&self) -> bool {
        self.command() & regs::COMMAND_INTX_DISABLE != 0
    }

    /// Sets the interrupt pin the function uses: 0 none, 1..=4 INTA#..INTD#.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_u8(regs::INTERRUPT_PIN, pin.min(4));
    }

    /// The interrupt line the OS wrote (or the VMM preset).
    pub fn interrupt_line(&self) -> u8 {
        self.read_u8(regs::INTERRUPT_LINE)
    }

    /// Presets the interrupt line register, as firmware would.
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.set_u8(regs::INTERRUPT_LINE, line);
    }

    /// Sets or clears the status register's Interrupt Status bit (INTx# asserted). It is
    /// live state, not a reset default.
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let at = usize::from(regs::STATUS);
        let bit = regs::STATUS_INTERRUPT.to_le_bytes()[0];
        if asserted {
            self.bytes[at] |= bit;
        } else {
            self.bytes[at] &= !bit;
        }
    }

    /// Declares a memory BAR at `index`: `size` a power of two of at least 16 bytes (at most
    /// 2 GiB for a 32-bit BAR); a 64-bit BAR also takes slot `index + 1`. Its address
    /// starts at 0.
    pub fn add_bar(
        &mut self,
        index: usize,
        size: u64,
        kind: BarKind,
        prefetchable: bool,
    ) -> Result<(), PciError> {
        let slots = match kind {
            BarKind::Mmio32 => 1,
            BarKind::Mmio64 => 2,
        };
        if index.checked_add(slots).is_none_or(|end| end > NUM_BARS) {
            return Err(PciError::BarIndexOutOfRange { index, kind });
        }
        if let Some(used) = (index..index + slots).find(|&i| self.bars[i] != BarSlot::Unused) {
            return Err(PciError::BarInUse { index: used });
        }
        if !size.is_power_of_two() || size < 16 || size > kind.max_size() {
            return Err(PciError::InvalidBarSize {
                size,
                kind,
                max: kind.max_size(),
            });
        }
        self.bars[index] = BarSlot::Base {
            size,
            kind,
            prefetchable,
        };
        let mut flags = if prefetchable { BAR_PREFETCHABLE } else { 0 };
        let address_mask = !(size - 1);
        let low_mask = (address_mask & !BAR_FLAGS_MASK) as u32;
        if kind == BarKind::Mmio64 {
            flags |= BAR_TYPE_64;
            self.bars[index + 1] = BarSlot::Upper;
            let high_mask = (address_mask >> 32) as u32;
            self.set_mask32(bar_register(index + 1), high_mask);
        }
        self.set_u32(bar_register(index), flags);
        self.set_mask32(bar_register(index), low_mask);
        Ok(())
    }

    /// Places BAR `index` at `address` (aligned to its size; below 4 GiB for a 32-bit BAR),
    /// as firmware would; the guest may move it later.
    pub fn set_bar_address(&mut self, index: usize, address: u64) -> Result<(), PciError> {
        let info = self.bar(index).ok_or(PciError::NoSuchBar { index })?;
        let fits = match info.kind {
            BarKind::Mmio32 => address
                .checked_add(info.size - 1)
                .is_some_and(|end| end <= u64::from(u32::MAX)),
            BarKind::Mmio64 => address.checked_add(info.size - 1).is_some(),
        };
        if address & (info.size - 1) != 0 || !fits {
            return Err(PciError::InvalidBarAddress {
                index,
                address,
                size: info.size,
            });
        }
        let low = self.read_u32(bar_register(index)) & BAR_FLAGS_MASK as u32;
        self.set_u32(bar_register(index), low | address as u32);
        if info.kind == BarKind::Mmio64 {
            self.set_u32(bar_register(index + 1), (address >> 32) as u32);
        }
        Ok(())
    }

    /// The address BAR `index` holds now; `None` if there is no BAR there (or it is the
    /// upper half of a 64-bit BAR).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bar(index).map(|info| info.address)
    }

    /// Everything about BAR `index`, if there is one.
    pub fn bar(&self, index: usize) -> Option<BarInfo> {
        let BarSlot::Base {
            size,
            kind,
            prefetchable,
        } = *self.bars.get(index)?
        else {
            return None;
        };
        let low = u64::from(self.read_u32(bar_register(index))) & !BAR_FLAGS_MASK;
        let high = match kind {
            BarKind::Mmio32 => 0,
            BarKind::Mmio64 => u64::from(self.read_u32(bar_register(index + 1))),
        };
        Some(BarInfo {
            index,
            size,
            kind,
            prefetchable,
            address: (high << 32) | low,
        })
    }

    /// Every BAR, in index order.
    pub fn bars(&self) -> impl Iterator<Item = BarInfo> + '_ {
        (0..NUM_BARS).filter_map(|index| self.bar(index))
    }

    /// Appends a capability with ID `id` and `body` (the bytes after the ID and next
    /// pointer) to the list, read-only to the guest; returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u16, PciError> {
        let mask = vec![0u8; body.len()];
        self.add_capability_with_mask(id, body, &mask)
    }

    /// Like [`PciConfigSpace::add_capability`], with `writable` (one mask byte per body
    /// byte) saying which bits of the body the guest may write.
    pub fn add_capability_with_mask(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<u16, PciError> {
        if writable.len() != body.len() {
            return Err(PciError::MaskLength {
                mask: writable.len(),
                len: body.len(),
            });
        }
        let len = body.len() + 2;
        let offset = self.next_capability;
        if offset + len > STANDARD_END {
            return Err(PciError::CapabilitySpaceFull { id, len });
        }
        self.set_bytes(offset, &[id, 0]);
        self.set_bytes(offset + 2, body);
        self.writable[offset + 2..offset + len].copy_from_slice(writable);
        // The offset is below 0x100 (checked above), so it fits the 8-bit pointers.
        let pointer = offset as u8;
        match self.last_capability {
            None => {
                self.set_u8(regs::CAPABILITIES_POINTER, pointer);
                let status = self.read_u16(regs::STATUS) | regs::STATUS_CAPABILITIES;
                self.set_u16(regs::STATUS, status);
            }
            Some(last) => self.set_bytes(last + 1, &[pointer]),
        }
        self.last_capability = Some(offset);
        self.next_capability = (offset + len).next_multiple_of(4);
        Ok(offset as u16)
    }

    /// The capabilities in list order, as (ID, offset).
    pub fn capabilities(&self) -> Vec<(u8, u16)> {
        let mut found = Vec::new();
        let mut at = self.read_u8(regs::CAPABILITIES_POINTER);
        // The list is built by this type, but bound the walk anyway.
        while at != 0 && found.len() < STANDARD_END / 4 {
            found.push((self.read_u8(u16::from(at)), u16::from(at)));
            at = self.read_u8(u16::from(at) + 1);
        }
        found
    }

    /// Puts every register back to its power-on value (the device-side values).
    pub fn reset(&mut self) {
        self.bytes.copy_from_slice(&self.defaults);
    }

    /// The guest-visible contents.
    pub fn state(&self) -> PciConfigState {
        PciConfigState {
            bytes: self.bytes.clone(),
        }
    }

    /// Replaces the contents with `state`. Refused, leaving the space unchanged, when the
    /// state has the wrong length or differs from this device in a byte the guest cannot
    /// write (apart from the status register, which the device drives).
    pub fn restore(&mut self, state: &PciConfigState) -> Result<(), PciError> {
        if state.bytes.len() != CONFIG_SPACE_SIZE {
            return Err(PciError::StateLength {
                len: state.bytes.len(),
            });
        }
        let status = usize::from(regs::STATUS)..usize::from(regs::STATUS) + 2;
        for (offset, (&found, &expected)) in state.bytes.iter().zip(&self.bytes).enumerate() {
            let guest_controlled = self.writable[offset] | self.write_1_to_clear[offset];
            if status.contains(&offset) || (found ^ expected) & !guest_controlled == 0 {
                continue;
            }
            return Err(PciError::StateReadOnlyMismatch {
                offset,
                expected,
                found,
            });
        }
        self.bytes.copy_from_slice(&state.bytes);
        Ok(())
    }

    fn bar_addresses(&self) -> [Option<u64>; NUM_BARS] {
        std::array::from_fn(|index| self.bar_address(index))
    }

    fn set_bytes(&mut self, offset: usize, values: &[u8]) {
        for (i, &value) in values.iter().enumerate() {
            if let Some(at) = offset.checked_add(i).filter(|&at| at < CONFIG_SPACE_SIZE) {
                self.bytes[at] = value;
                self.defaults[at] = value;
            }
        }
    }

    fn set_mask16(&mut self, offset: u16, writable: u16, write_1_to_clear: u16) {
        let at = usize::from(offset);
        self.writable[at..at + 2].copy_from_slice(&writable.to_le_bytes());
        self.write_1_to_clear[at..at + 2].copy_from_slice(&write_1_to_clear.to_le_bytes());
    }

    fn set_mask32(&mut self, offset: u16, writable: u32) {
        let at = usize::from(offset);
        self.writable[at..at + 4].copy_from_slice(&writable.to_le_bytes());
    }
}

/// Offset of BAR slot `index` (below [`NUM_BARS`]).
fn bar_register(index: usize) -> u16 {
    regs::BAR0 + 4 * index as u16
}

/// Whether `[start, end)` overlaps `[base, base + len)`.
fn overlaps(start: usize, end: usize, base: usize, len: usize) -> bool {
    start < base + len && base < end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1AF4,
            device: 0x1044,
            subsystem_vendor: 0x1AF4,
            subsystem_id: 0x1100,
            class_code: 0xFF_0000,
            revision: 1,
        }
    }

    fn write_u32(space: &mut PciConfigSpace, offset: u16, value: u32) -> ConfigWrite {
        space.write(offset, &value.to_le_bytes())
    }

    #[test]
    fn header_holds_the_ids_and_is_read_only() {
        let mut space = PciConfigSpace::new(ids());

        write_u32(&mut space, 0, 0xDEAD_BEEF);
        write_u32(&mut space, 8, 0xFFFF_FFFF);
        write_u32(&mut space, 0x2C, 0);

        assert_eq!(space.read_u32(0), 0x1044_1AF4);
        assert_eq!(space.read_u32(8), 0xFF00_0001);
        assert_eq!(space.read_u32(0x2C), 0x1100_1AF4);
        assert_eq!(space.read_u8(regs::HEADER_TYPE), 0);
    }

    #[test]
    fn command_keeps_only_writable_bits_and_reports_changes() {
        let mut space = PciConfigSpace::new(ids());

        let effect = space.write(regs::COMMAND, &0xFFFFu16.to_le_bytes());

        assert_eq!(space.command(), COMMAND_WRITABLE);
        assert!(space.memory_enabled() && space.bus_master_enabled() && space.intx_disabled());
        assert_eq!(
            effect.effects,
            vec![ConfigEffect::CommandChanged {
                old: 0,
                new: COMMAND_WRITABLE
            }]
        );
    }

    #[test]
    fn status_error_bits_are_write_1_to_clear() {
        let mut space = PciConfigSpace::new(ids());
        space.bytes[usize::from(regs::STATUS) + 1] = 0xF9;
        space.set_interrupt_status(true);

        space.write(regs::STATUS, &0x0800u16.to_le_bytes());

        assert_eq!(space.read_u16(regs::STATUS), 0xF108);
        space.write(regs::STATUS, &0xFFFFu16.to_le_bytes());
        assert_eq!(space.read_u16(regs::STATUS), 0x0008);
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask_and_flags() {
        let mut space = PciConfigSpace::new(ids());
        space.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();
        space.add_bar(2, 0x4000, BarKind::Mmio64, true).unwrap();

        write_u32(&mut space, regs::BAR0, 0xFFFF_FFFF);
        write_u32(&mut space, regs::BAR0 + 8, 0xFFFF_FFFF);
        write_u32(&mut space, regs::BAR0 + 12, 0xFFFF_FFFF);

        assert_eq!(space.read_u32(regs::BAR0), 0xFFFF_F000);
        assert_eq!(space.read_u32(regs::BAR0 + 8), 0xFFFF_C00C);
        assert_eq!(space.read_u32(regs::BAR0 + 12), 0xFFFF_FFFF);
        assert_eq!(space.read_u32(regs::BAR0 + 4), 0, "unused BAR reads 0");
    }

    #[test]
    fn moving_a_bar_reports_old_and_new_addresses() {
        let mut space = PciConfigSpace::new(ids());
        space.add_bar(2, 0x4000, BarKind::Mmio64, true).unwrap();
        space.set_bar_address(2, 0xC000_4000).unwrap();

        let low = write_u32(&mut space, regs::BAR0 + 8, 0xD000_0000);
        let high = write_u32(&mut space, regs::BAR0 + 12, 0x1);

        assert_eq!(
            low.effects,
            vec![ConfigEffect::BarMoved {
                index: 2,
                old: 0xC000_4000,
                new: 0xD000_0000
            }]
        );
        assert_eq!(
            high.effects,
            vec![ConfigEffect::BarMoved {
                index: 2,
                old: 0xD000_0000,
                new: 0x1_D000_0000
            }]
        );
        assert_eq!(space.bar_address(2), Some(0x1_D000_0000));
        assert_eq!(space.bar_address(3), None);
    }

    #[test]
    fn bar_declarations_are_checked() {
        let mut space = PciConfigSpace::new(ids());
        space.add_bar(4, 0x100, BarKind::Mmio64, false).unwrap();

        assert_eq!(
            space.add_bar(5, 0x100, BarKind::Mmio64, false),
            Err(PciError::BarIndexOutOfRange {
                index: 5,
                kind: BarKind::Mmio64
            })
        );
        assert_eq!(
            space.add_bar(5, 0x100, BarKind::Mmio32, false),
            Err(PciError::BarInUse { index: 5 })
        );
        assert!(matches!(
            space.add_bar(0, 0x300, BarKind::Mmio32, false),
            Err(PciError::InvalidBarSize { .. })
        ));
        assert!(matches!(
            space.add_bar(0, 8, BarKind::Mmio32, false),
            Err(PciError::InvalidBarSize { .. })
        ));
        assert!(matches!(
            space.set_bar_address(4, 0x80),
            Err(PciError::InvalidBarAddress { .. })
        ));
        assert_eq!(
            space.set_bar_address(0, 0),
            Err(PciError::NoSuchBar { index: 0 })
        );
    }

    #[test]
    fn a_32_bit_bar_cannot_be_placed_above_4_gib() {
        let mut space = PciConfigSpace::new(ids());
        space.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();

        let result = space.set_bar_address(0, 0x1_0000_0000);

        assert!(matches!(result, Err(PciError::InvalidBarAddress { .. })));
    }

    #[test]
    fn capabilities_are_linked_in_order() {
        let mut space = PciConfigSpace::new(ids());

        let first = space.add_capability(0x11, &[1, 2, 3]).unwrap();
        let second = space
            .add_capability_with_mask(0x09, &[4, 5], &[0xFF, 0])
            .unwrap();
        space.write(second + 2, &[0xAA, 0xBB]);

        assert_eq!((first, second), (0x40, 0x48));
        assert_eq!(space.capabilities(), vec![(0x11, 0x40), (0x09, 0x48)]);
        assert_eq!(
            space.read_u16(regs::STATUS) & regs::STATUS_CAPABILITIES,
            0x10
        );
        assert_eq!(space.read_u8(0x41), 0x48);
        assert_eq!(space.read_u16(second + 2), 0x05AA);
    }

    #[test]
    fn capabilities_that_do_not_fit_are_refused() {
        let mut space = PciConfigSpace::new(ids());

        let result = space.add_capability(0x09, &[0; 0xC0]);

        assert_eq!(
            result,
            Err(PciError::CapabilitySpaceFull { id: 9, len: 0xC2 })
        );
        assert!(space.capabilities().is_empty());
    }

    #[test]
    fn accesses_past_the_end_never_panic() {
        let mut space = PciConfigSpace::new(ids());
        let mut data = [0xAAu8; 8];

        space.write(0xFFC, &[1; 8]);
        space.read(0xFFC, &mut data);
        space.read(u16::MAX, &mut data);

        assert_eq!(data, [0; 8]);
    }

    #[test]
    fn reset_restores_device_values_and_keeps_vmm_placement() {
        let mut space = PciConfigSpace::new(ids());
        space.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();
        space.set_bar_address(0, 0xC000_0000).unwrap();
        space.set_interrupt_line(5);
        write_u32(&mut space, regs::BAR0, 0xD000_0000);
        space.write(regs::COMMAND, &[0x06, 0]);
        space.write(regs::INTERRUPT_LINE, &[11]);

        space.reset();

        assert_eq!(space.bar_address(0), Some(0xC000_0000));
        assert_eq!(space.command(), 0);
        assert_eq!(space.interrupt_line(), 5);
    }

    #[test]
    fn state_round_trips_and_refuses_another_device() {
        let mut space = PciConfigSpace::new(ids());
        space.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();
        write_u32(&mut space, regs::BAR0, 0xC123_4000);
        space.write(regs::COMMAND, &[0x02, 0]);
        let state = space.state();
        let json = serde_json::to_string(&state).unwrap();
        let mut fresh = PciConfigSpace::new(ids());
        fresh.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();

        fresh
            .restore(&serde_json::from_str(&json).unwrap())
            .unwrap();

        assert_eq!(fresh.bar_address(0), Some(0xC123_4000));
        assert!(fresh.memory_enabled());
        let mut other = PciConfigSpace::new(PciIds {
            device: 0x1041,
            ..ids()
        });
        other.add_bar(0, 0x1000, BarKind::Mmio32, false).unwrap();
        assert_eq!(
            other.restore(&state),
            Err(PciError::StateReadOnlyMismatch {
                offset: 2,
                expected: 0x41,
                found: 0x44
            })
        );
        assert_eq!(
            other.restore(&PciConfigState { bytes: vec![0; 3] }),
            Err(PciError::StateLength { len: 3 })
        );
    }

    #[test]
    fn live_values_are_not_reset_defaults() {
        let mut space = PciConfigSpace::new(ids());
        space.set_u8(0x50, 1);

        space.set_live(0x50, &[7, 8]);
        let live = space.read_u16(0x50);
        space.set_live(0xFFF, &[1, 2]);
        space.reset();

        assert_eq!(live, 0x0807);
        assert_eq!(space.read_u16(0x50), 0x0001);
    }

    #[test]
    fn set_writable_refuses_the_header_and_the_end() {
        let mut space = PciConfigSpace::new(ids());

        assert!(space.set_writable(0x3F, &[0xFF]).is_err());
        assert!(space.set_writable(0xFFF, &[0xFF, 0xFF]).is_err());
        assert!(space.set_writable(0x59, &[0xFF; 7]).is_ok());
    }
}
