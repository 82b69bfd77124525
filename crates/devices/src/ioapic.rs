//! A userspace 82093AA I/O APIC (version 0x20, 24 pins) that delivers its pins as MSIs.
//!
//! With KVM's split irqchip the local APICs live in the kernel and the IOAPIC here: a pin
//! that fires becomes an MSI composed from its redirection entry (as QEMU and Cloud
//! Hypervisor compose it), sent through [`MsiSink::send_msi`]. Level-triggered pins set
//! Remote IRR on delivery; the VMM reports the guest's EOI ([`Ioapic::end_of_interrupt`],
//! from `KVM_EXIT_IOAPIC_EOI`), which clears it and re-delivers if the line is still high.
//! Every change to the message a pin would send is announced with
//! [`MsiSink::route_changed`], so the VMM can mirror it as a KVM GSI route (which is what
//! makes KVM report those EOIs).
//!
//! MMIO layout (offsets from the base, 0xFEC0_0000 on this platform): IOREGSEL at 0x00,
//! IOWIN at 0x10, the EOI register (version 0x20) at 0x40. Registers behind IOWIN: ID (0),
//! version (1), arbitration (2), redirection table (0x10–0x3F, low then high dword per pin).
//!
//! Pin polarity (bit 13) is stored but not applied: devices drive their [`IrqLine`] with
//! "asserted", not with the wire level. Edges arriving on a masked pin are lost, as the
//! 82093AA datasheet specifies. ExtINT and the reserved delivery modes are not delivered
//! (there is no 8259 on this platform).
//!
//! [`Ioapic::state`] and [`Ioapic::restore`] carry ID, IOREGSEL, the redirection table
//! (Remote IRR included) and the input levels across processes ([`IoapicState`]); a restore
//! announces every route and delivers level-triggered interrupts still owed.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bus::byte_offsets;
use crate::bus::lock_recovering;
use crate::{BusDevice, IrqLine, MsiMessage, MsiSink};

/// Number of input pins.
pub const IOAPIC_NUM_PINS: usize = 24;
/// Size of the MMIO window the IOAPIC decodes.
pub const IOAPIC_MMIO_LEN: u64 = 0x1000;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const EOI: u64 = 0x40;

const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION_FIRST: u8 = 0x10;
const REG_REDIRECTION_LAST: u8 = REG_REDIRECTION_FIRST + 2 * IOAPIC_NUM_PINS as u8 - 1;

/// Version 0x20, highest redirection entry 23.
const VERSION: u32 = 0x20 | ((IOAPIC_NUM_PINS as u32 - 1) << 16);
const ID_SHIFT: u32 = 24;
const ID_MASK: u32 = 0x0F;

// Redirection entry fields.
const VECTOR_MASK: u64 = 0xFF;
const DELIVERY_MODE_SHIFT: u32 = 8;
const DELIVERY_MODE_MASK: u64 = 0b111;
const DEST_MODE_LOGICAL: u64 = 1 << 11;
const REMOTE_IRR: u64 = 1 << 14;
const TRIGGER_LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
const DEST_SHIFT: u32 = 56;
/// Low-dword bits the guest can write: vector, delivery mode, destination mode, polarity,
/// trigger mode, mask. Delivery status and Remote IRR are read-only.
const LOW_WRITABLE: u64 = 0x1_AFFF;
const LOW_DWORD: u64 = 0xFFFF_FFFF;
/// Bits an entry can hold: what the guest writes, Remote IRR, and the whole high dword.
const ENTRY_POSSIBLE: u64 = !LOW_DWORD | LOW_WRITABLE | REMOTE_IRR;

// Delivery modes.
const DELIVERY_EXTINT: u64 = 0b111;
const DELIVERY_RESERVED_3: u64 = 0b011;
const DELIVERY_RESERVED_6: u64 = 0b110;

// MSI composition.
const MSI_ADDRESS_BASE: u64 = 0xFEE0_0000;
const MSI_ADDRESS_DEST_SHIFT: u32 = 12;
const MSI_ADDRESS_DEST_MODE_SHIFT: u32 = 2;
const MSI_DATA_LEVEL_ASSERT: u32 = 1 << 14;
const MSI_DATA_TRIGGER_LEVEL: u32 = 1 << 15;

/// Errors of the IOAPIC.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IoapicError {
    /// The pin number is not one of the IOAPIC's pins.
    #[error("IOAPIC pin {pin} does not exist (pins are 0..{IOAPIC_NUM_PINS})")]
    PinOutOfRange {
        /// The pin asked for.
        pin: u32,
    },
    /// The restored IOAPIC ID does not fit the ID register's four bits.
    #[error("IOAPIC state: id {id:#x} does not fit 4 bits")]
    IdOutOfRange {
        /// The restored ID.
        id: u8,
    },
    /// A restored redirection entry holds bits the IOAPIC never sets.
    #[error("IOAPIC state: redirection[{pin}] = {entry:#018x} is impossible: {reason}")]
    InvalidRedirectionEntry {
        /// The pin whose entry it is.
        pin: usize,
        /// The restored entry.
        entry: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The guest-visible state of the IOAPIC, and the input levels the devices drive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IoapicState {
    /// The IOAPIC ID (bits 24–27 of register 0).
    pub id: u8,
    /// The register IOREGSEL selects; every value is one a guest can write.
    pub ioregsel: u8,
    /// The redirection entry of each pin, Remote IRR (bit 14) included.
    pub redirection: [u64; IOAPIC_NUM_PINS],
    /// Each input's level (true = asserted).
    pub line_levels: [bool; IOAPIC_NUM_PINS],
}

impl IoapicState {
    fn validate(&self) -> Result<(), IoapicError> {
        if u32::from(self.id) & !ID_MASK != 0 {
            return Err(IoapicError::IdOutOfRange { id: self.id });
        }
        for (pin, &entry) in self.redirection.iter().enumerate() {
            let reason = if entry & !ENTRY_POSSIBLE != 0 {
                "sets the delivery status or reserved bits 17-31"
            } else if entry & REMOTE_IRR != 0 && entry & TRIGGER_LEVEL == 0 {
                "sets Remote IRR on an edge-triggered entry"
            } else {
                continue;
            };
            return Err(IoapicError::InvalidRedirectionEntry { pin, entry, reason });
        }
        Ok(())
    }
}

/// The IOAPIC as a [`BusDevice`] of [`IOAPIC_MMIO_LEN`] bytes of MMIO.
pub struct Ioapic {
    id: u8,
    ioregsel: u8,
    redirection: [u64; IOAPIC_NUM_PINS],
    /// Input levels as the devices drive them (asserted = true).
    line_high: [bool; IOAPIC_NUM_PINS],
    msi: Arc<dyn MsiSink>,
}

impl Ioapic {
    /// An IOAPIC in its power-on state (every pin masked), delivering through `msi`.
    pub fn new(msi: Arc<dyn MsiSink>) -> Self {
        Self {
            id: 0,
            ioregsel: 0,
            redirection: [MASKED; IOAPIC_NUM_PINS],
            line_high: [false; IOAPIC_NUM_PINS],
            msi,
        }
    }

    /// An [`IrqLine`] that drives `pin` of the shared IOAPIC.
    ///
    /// Pins are numbered like GSIs (`u32`, as the platform layout names them). A pin that
    /// does not exist gives a line whose every use is ignored with a warning; use
    /// [`Ioapic::try_pin`] to have that refused up front.
    pub fn pin(this: &Arc<Mutex<Ioapic>>, pin: u32) -> Arc<dyn IrqLine> {
        Self::try_pin(this, pin).unwrap_or_else(|err| {
            tracing::warn!("{err}: the device wired to it will not interrupt");
            Arc::new(IoapicPin {
                ioapic: Arc::clone(this),
                pin: usize::MAX,
            })
        })
    }

    /// An [`IrqLine`] that drives `pin` of the shared IOAPIC, or an error if there is no
    /// such pin.
    pub fn try_pin(this: &Arc<Mutex<Ioapic>>, pin: u32) -> Result<Arc<dyn IrqLine>, IoapicError> {
        match usize::try_from(pin) {
            Ok(index) if index < IOAPIC_NUM_PINS => Ok(Arc::new(IoapicPin {
                ioapic: Arc::clone(this),
                pin: index,
            })),
            _ => Err(IoapicError::PinOutOfRange { pin }),
        }
    }

    /// Drives input `pin` to `level` (true = asserted), delivering an interrupt if the pin's
    /// entry says so. A pin out of range is ignored with a warning.
    pub fn set_irq(&mut self, pin: usize, level: bool) {
        let Some(line) = self.line_high.get_mut(pin) else {
            tracing::warn!("ioapic: ignoring interrupt on pin {pin}, which does not exist");
            return;
        };
        let was_high = std::mem::replace(line, level);
        let entry = self.redirection[pin];
        if entry & MASKED != 0 || !level {
            return;
        }
        let deliver = if entry & TRIGGER_LEVEL != 0 {
            entry & REMOTE_IRR == 0
        } else {
            !was_high
        };
        if deliver {
            self.deliver(pin);
        }
    }

    /// The guest's local APIC acknowledged `vector`: clears Remote IRR of the level-triggered
    /// entries using it, and re-delivers those whose line is still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for pin in 0..IOAPIC_NUM_PINS {
            let entry = self.redirection[pin];
            if entry & TRIGGER_LEVEL == 0
                || entry & REMOTE_IRR == 0
                || entry & VECTOR_MASK != u64::from(vector)
            {
                continue;
            }
            self.redirection[pin] &= !REMOTE_IRR;
            self.deliver_pending_level(pin);
        }
    }

    /// Back to the power-on state (guest reboot): every entry masked, ID and IOREGSEL 0.
    /// Input levels are kept: they belong to the devices.
    pub fn reset(&mut self) {
        self.id = 0;
        self.ioregsel = 0;
        for pin in 0..IOAPIC_NUM_PINS {
            self.replace_entry(pin, MASKED);
        }
    }

    /// The guest-visible state and the input levels.
    pub fn state(&self) -> IoapicState {
        IoapicState {
            id: self.id,
            ioregsel: self.ioregsel,
            redirection: self.redirection,
            line_levels: self.line_high,
        }
    }

    /// Replaces the state with `state` (taken by [`Ioapic::state`], possibly in another
    /// process), keeping the MSI sink. Then announces every pin's route
    /// ([`Ioapic::announce_routes`]), so the VMM's GSI routes (and KVM's EOI reporting)
    /// match the restored table, and delivers each unmasked level-triggered pin whose line is
    /// asserted and whose Remote IRR is clear. A pin with Remote IRR set waits for the EOI
    /// of the interrupt it already sent, as before the snapshot.
    ///
    /// A state the IOAPIC can never be in is refused with an error naming the field, and the
    /// device is left unchanged (no route is announced).
    pub fn restore(&mut self, state: &IoapicState) -> Result<(), IoapicError> {
        state.validate()?;
        self.id = state.id;
        self.ioregsel = state.ioregsel;
        self.redirection = state.redirection;
        self.line_high = state.line_levels;
        self.announce_routes();
        for pin in 0..IOAPIC_NUM_PINS {
            self.deliver_pending_level(pin);
        }
        Ok(())
    }

    /// Announces the current message of every pin through [`MsiSink::route_changed`]
    /// (`None` for masked pins), e.g. after the VMM recreated its KVM VM on a reboot.
    pub fn announce_routes(&self) {
        for pin in 0..IOAPIC_NUM_PINS {
            if let Err(err) = self.msi.route_changed(pin, self.msi_message(pin)) {
                tracing::warn!("ioapic: updating the route of pin {pin} failed: {err}");
            }
        }
    }

    /// The redirection entry of `pin`, or `None` if there is no such pin.
    pub fn redirection_entry(&self, pin: usize) -> Option<u64> {
        self.redirection.get(pin).copied()
    }

    /// The MSI `pin` sends when it fires, or `None` if it is masked, cannot be delivered
    /// or does not exist.
    pub fn msi_message(&self, pin: usize) -> Option<MsiMessage> {
        self.redirection.get(pin).and_then(|&entry| route_of(entry))
    }

    fn deliver_pending_level(&mut self, pin: usize) {
        let entry = self.redirection[pin];
        if entry & TRIGGER_LEVEL != 0 && entry & (MASKED | REMOTE_IRR) == 0 && self.line_high[pin] {
            self.deliver(pin);
        }
    }

    fn deliver(&mut self, pin: usize) {
        let entry = self.redirection[pin];
        let Some(message) = compose_msi(entry) else {
            tracing::debug!("ioapic: pin {pin} uses a delivery mode we cannot deliver: {entry:#x}");
            return;
        };
        match self.msi.send_msi(message.address, message.data) {
            Ok(()) => {
                if entry & TRIGGER_LEVEL != 0 {
                    self.redirection[pin] |= REMOTE_IRR;
                }
            }
            // Remote IRR stays clear, so the next assertion or EOI tries again.
            Err(err) => tracing::warn!("ioapic: delivering pin {pin} as MSI failed: {err}"),
        }
    }

    fn read_register(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARBITRATION => u32::from(self.id) << ID_SHIFT,
            REG_VERSION => VERSION,
            REG_REDIRECTION_FIRST..=REG_REDIRECTION_LAST => {
                let (pin, high) = redirection_register(self.ioregsel);
                let [low_dword, high_dword] = split_dwords(self.redirection[pin]);
                if high { high_dword } else { low_dword }
            }
            other => {
                tracing::debug!("ioapic: read of unknown register {other:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.ioregsel {
            REG_ID => self.id = ((value >> ID_SHIFT) & ID_MASK) as u8,
            REG_REDIRECTION_FIRST..=REG_REDIRECTION_LAST => {
                let (pin, high) = redirection_register(self.ioregsel);
                if high {
                    self.write_entry_high(pin, value);
                } else {
                    self.write_entry_low(pin, value);
                }
            }
            other => tracing::debug!(
                "ioapic: write {value:#x} to read-only or unknown register {other:#x}"
            ),
        }
    }

    fn write_entry_low(&mut self, pin: usize, value: u32) {
        let old = self.redirection[pin];
        let mut entry = (old & !LOW_DWORD) | (old & REMOTE_IRR) | (u64::from(value) & LOW_WRITABLE);
        if entry & TRIGGER_LEVEL == 0 {
            // Remote IRR is only meaningful for level-triggered entries.
            entry &= !REMOTE_IRR;
        }
        self.replace_entry(pin, entry);
        // Unmasking (or switching to level) a pin whose line is asserted delivers it now.
        self.deliver_pending_level(pin);
    }

    fn write_entry_high(&mut self, pin: usize, value: u32) {
        let entry = (self.redirection[pin] & LOW_DWORD) | (u64::from(value) << 32);
        self.replace_entry(pin, entry);
    }

    fn replace_entry(&mut self, pin: usize, entry: u64) {
        let old_route = route_of(self.redirection[pin]);
        self.redirection[pin] = entry;
        let new_route = route_of(entry);
        if old_route == new_route {
            return;
        }
        if let Err(err) = self.msi.route_changed(pin, new_route) {
            tracing::warn!("ioapic: updating the route of pin {pin} failed: {err}");
        }
    }

    fn read_mmio_dword(&self, dword_offset: u64) -> u32 {
        match dword_offset {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN => self.read_register(),
            _ => 0,
        }
    }
}

/// (pin, is the high dword) of a redirection-table register index.
fn redirection_register(index: u8) -> (usize, bool) {
    let relative = index - REG_REDIRECTION_FIRST;
    (usize::from(relative / 2), relative % 2 == 1)
}

fn split_dwords(entry: u64) -> [u32; 2] {
    let [b0, b1, b2, b3, b4, b5, b6, b7] = entry.to_le_bytes();
    [
        u32::from_le_bytes([b0, b1, b2, b3]),
        u32::from_le_bytes([b4, b5, b6, b7]),
    ]
}

/// The MSI an unmasked entry sends, `None` if masked.
fn route_of(entry: u64) -> Option<MsiMessage> {
    if entry & MASKED != 0 {
        return None;
    }
    compose_msi(entry)
}

/// The MSI for a redirection entry, `None` for delivery modes that cannot be sent as MSI.
fn compose_msi(entry: u64) -> Option<MsiMessage> {
    let delivery_mode = (entry >> DELIVERY_MODE_SHIFT) & DELIVERY_MODE_MASK;
    if matches!(
        delivery_mode,
        DELIVERY_EXTINT | DELIVERY_RESERVED_3 | DELIVERY_RESERVED_6
    ) {
        return None;
    }
    let destination = (entry >> DEST_SHIFT) & 0xFF;
    let logical = u64::from(entry & DEST_MODE_LOGICAL != 0);
    let address = MSI_ADDRESS_BASE
        | (destination << MSI_ADDRESS_DEST_SHIFT)
        | (logical << MSI_ADDRESS_DEST_MODE_SHIFT);
    // Both fields are masked to 8 and 3 bits above, so they fit a u32.
    let vector = (entry & VECTOR_MASK) as u32;
    let mut data = vector | ((delivery_mode as u32) << DELIVERY_MODE_SHIFT);
    if entry & TRIGGER_LEVEL != 0 {
        data |= MSI_DATA_TRIGGER_LEVEL | MSI_DATA_LEVEL_ASSERT;
    }
    Some(MsiMessage { address, data })
}

impl BusDevice for Ioapic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Reads have no side effects, so any width is served byte by byte from the
        // dword registers.
        for (address, byte) in byte_offsets(offset).zip(data.iter_mut()) {
            let dword = self.read_mmio_dword(address & !3);
            let lane = usize::try_from(address & 3).unwrap_or(0);
            *byte = dword.to_le_bytes().get(lane).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            // The register index is the low byte, whatever the access width.
            (IOREGSEL, [index, ..]) => self.ioregsel = *index,
            (IOWIN, &[b0, b1, b2, b3]) => self.write_register(u32::from_le_bytes([b0, b1, b2, b3])),
            (EOI, [vector, ..]) => self.end_of_interrupt(*vector),
            _ => tracing::debug!(
                "ioapic: ignoring {}-byte write at offset {offset:#x}",
                data.len()
            ),
        }
    }
}

/// One IOAPIC input as an [`IrqLine`], for the device wired to it.
pub struct IoapicPin {
    ioapic: Arc<Mutex<Ioapic>>,
    pin: usize,
}

impl IoapicPin {
    /// The pin this line drives.
    pub fn pin(&self) -> usize {
        self.pin
    }
}

impl IrqLine for IoapicPin {
    fn set_level(&self, high: bool) {
        lock_recovering(&self.ioapic).set_irq(self.pin, high);
    }

    fn pulse(&self) {
        // One lock for both edges, so no other pin change can slip in between.
        let mut ioapic = lock_recovering(&self.ioapic);
        ioapic.set_irq(self.pin, true);
        ioapic.set_irq(self.pin, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingMsi;

    const EDGE: u32 = 0;
    const LEVEL: u32 = TRIGGER_LEVEL as u32;
    const MASK: u32 = MASKED as u32;
    const LOGICAL: u32 = DEST_MODE_LOGICAL as u32;
    const LOWEST_PRIORITY: u32 = 0b001 << DELIVERY_MODE_SHIFT;

    fn ioapic() -> (Ioapic, Arc<RecordingMsi>) {
        let msi = Arc::new(RecordingMsi::default());
        (Ioapic::new(msi.clone()), msi)
    }

    fn select(ioapic: &mut Ioapic, register: u8) {
        ioapic.write(IOREGSEL, &u32::from(register).to_le_bytes());
    }

    fn write_reg(ioapic: &mut Ioapic, register: u8, value: u32) {
        select(ioapic, register);
        ioapic.write(IOWIN, &value.to_le_bytes());
    }

    fn read_reg(ioapic: &mut Ioapic, register: u8) -> u32 {
        select(ioapic, register);
        let mut data = [0u8; 4];
        ioapic.read(IOWIN, &mut data);
        u32::from_le_bytes(data)
    }

    /// Programs `pin` the way a guest does: destination first, then the low dword.
    fn program(ioapic: &mut Ioapic, pin: u8, destination: u8, low: u32) {
        write_reg(ioapic, 0x11 + 2 * pin, u32::from(destination) << 24);
        write_reg(ioapic, 0x10 + 2 * pin, low);
    }

    #[test]
    fn version_and_id_registers() {
        let (mut ioapic, _msi) = ioapic();

        write_reg(&mut ioapic, REG_ID, 0x0A00_0000);
        write_reg(&mut ioapic, REG_VERSION, 0);

        assert_eq!(read_reg(&mut ioapic, REG_VERSION), 0x0017_0020);
        assert_eq!(read_reg(&mut ioapic, REG_ID), 0x0A00_0000);
        assert_eq!(read_reg(&mut ioapic, REG_ARBITRATION), 0x0A00_0000);
    }

    #[test]
    fn redirection_entries_round_trip_through_ioregsel_and_iowin() {
        let (mut ioapic, _msi) = ioapic();

        program(&mut ioapic, 4, 0x03, 0x0000_A034 | LOWEST_PRIORITY);

        assert_eq!(read_reg(&mut ioapic, 0x18), 0x0000_A034 | LOWEST_PRIORITY);
        assert_eq!(read_reg(&mut ioapic, 0x19), 0x0300_0000);
        assert_eq!(ioapic.redirection_entry(4), Some(0x0300_0000_0000_A134));
        let mut selector = [0u8; 4];
        ioapic.read(IOREGSEL, &mut selector);
        assert_eq!(selector, [0x19, 0, 0, 0]);
    }

    #[test]
    fn read_only_bits_are_not_writable() {
        let (mut ioapic, _msi) = ioapic();

        write_reg(&mut ioapic, 0x10, 0xFFFF_FFFF);

        assert_eq!(read_reg(&mut ioapic, 0x10), 0x0001_AFFF);
    }

    #[test]
    fn all_pins_start_masked_and_masked_pins_do_not_deliver() {
        let (mut ioapic, msi) = ioapic();
        assert_eq!(read_reg(&mut ioapic, 0x10 + 2 * 23), MASK);
        program(&mut ioapic, 1, 0, MASK | 0x31);

        ioapic.set_irq(1, true);
        ioapic.set_irq(1, false);
        ioapic.set_irq(2, true);

        assert!(msi.sent().is_empty());
    }

    #[test]
    fn edge_pin_delivers_on_rising_edges_only() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 4, 0, EDGE | 0x24);

        ioapic.set_irq(4, true);
        ioapic.set_irq(4, true);
        ioapic.set_irq(4, false);
        ioapic.set_irq(4, true);

        assert_eq!(msi.sent(), vec![(0xFEE0_0000, 0x24), (0xFEE0_0000, 0x24)]);
    }

    #[test]
    fn edge_while_masked_is_lost() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 4, 0, MASK | 0x24);
        ioapic.set_irq(4, true);

        program(&mut ioapic, 4, 0, 0x24);

        assert!(msi.sent().is_empty());
    }

    #[test]
    fn level_pin_waits_for_eoi_before_redelivering() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 9, 0, LEVEL | 0x29);
        let expected = (0xFEE0_0000, 0x29 | 0xC000);

        ioapic.set_irq(9, true);
        ioapic.set_irq(9, true);
        assert_eq!(msi.take(), vec![expected]);
        assert_ne!(read_reg(&mut ioapic, 0x22) & REMOTE_IRR as u32, 0);

        ioapic.end_of_interrupt(0x29);
        assert_eq!(
            msi.take(),
            vec![expected],
            "line still high: delivered again"
        );

        ioapic.set_irq(9, false);
        ioapic.end_of_interrupt(0x29);
        assert!(msi.take().is_empty());
        assert_eq!(read_reg(&mut ioapic, 0x22) & REMOTE_IRR as u32, 0);
    }

    #[test]
    fn eoi_of_another_vector_keeps_remote_irr() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 9, 0, LEVEL | 0x29);
        ioapic.set_irq(9, true);

        ioapic.end_of_interrupt(0x30);

        assert_eq!(msi.take().len(), 1);
        assert_ne!(read_reg(&mut ioapic, 0x22) & REMOTE_IRR as u32, 0);
    }

    #[test]
    fn eoi_register_at_0x40_ends_the_interrupt() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 9, 0, LEVEL | 0x29);
        ioapic.set_irq(9, true);

        ioapic.write(EOI, &0x29u32.to_le_bytes());

        assert_eq!(msi.take().len(), 2);
    }

    #[test]
    fn unmasking_a_high_level_pin_delivers() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 9, 0, MASK | LEVEL | 0x29);
        ioapic.set_irq(9, true);
        assert!(msi.sent().is_empty());

        program(&mut ioapic, 9, 0, LEVEL | 0x29);

        assert_eq!(msi.take(), vec![(0xFEE0_0000, 0x29 | 0xC000)]);
    }

    #[test]
    fn switching_to_edge_clears_remote_irr() {
        let (mut ioapic, _msi) = ioapic();
        program(&mut ioapic, 9, 0, LEVEL | 0x29);
        ioapic.set_irq(9, true);

        program(&mut ioapic, 9, 0, EDGE | 0x29);

        assert_eq!(read_reg(&mut ioapic, 0x22) & REMOTE_IRR as u32, 0);
    }

    #[test]
    fn physical_and_logical_destinations_compose_like_qemu() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 1, 0x03, EDGE | 0x31);
        program(
            &mut ioapic,
            2,
            0x0F,
            LOGICAL | LOWEST_PRIORITY | LEVEL | 0x32,
        );
        program(&mut ioapic, 3, 0xFF, 0x33);

        ioapic.set_irq(1, true);
        ioapic.set_irq(2, true);
        ioapic.set_irq(3, true);

        assert_eq!(
            msi.sent(),
            vec![
                (0xFEE0_3000, 0x31),
                (0xFEE0_F004, 0x32 | 0x100 | 0x8000 | 0x4000),
                (0xFEEF_F000, 0x33),
            ]
        );
    }

    #[test]
    fn nmi_is_delivered_and_extint_is_not() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 5, 0, 0b100 << DELIVERY_MODE_SHIFT);
        program(&mut ioapic, 6, 0, 0b111 << DELIVERY_MODE_SHIFT);

        ioapic.set_irq(5, true);
        ioapic.set_irq(6, true);

        assert_eq!(msi.sent(), vec![(0xFEE0_0000, 0x400)]);
    }

    #[test]
    fn failed_level_delivery_is_retried_on_the_next_assertion() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 9, 0, LEVEL | 0x29);
        msi.set_failing(true);
        ioapic.set_irq(9, true);
        msi.set_failing(false);

        ioapic.set_irq(9, true);

        assert_eq!(msi.sent().len(), 1);
    }

    #[test]
    fn route_changes_are_announced() {
        let (mut ioapic, msi) = ioapic();

        program(&mut ioapic, 9, 0x01, LEVEL | 0x29);
        write_reg(&mut ioapic, 0x22, MASK | LEVEL | 0x29);
        write_reg(&mut ioapic, 0x22, MASK | LEVEL | 0x2A);

        assert_eq!(
            msi.take_routes(),
            vec![
                (
                    9,
                    Some(MsiMessage {
                        address: 0xFEE0_1000,
                        data: 0x29 | 0xC000
                    })
                ),
                (9, None),
            ]
        );
    }

    #[test]
    fn reset_masks_every_pin_and_withdraws_routes() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 4, 0, 0x24);
        msi.take_routes();

        ioapic.reset();
        ioapic.set_irq(4, false);
        ioapic.set_irq(4, true);

        assert!(msi.sent().is_empty());
        assert_eq!(msi.take_routes(), vec![(4, None)]);
        assert_eq!(ioapic.redirection_entry(4), Some(MASKED));
    }

    #[test]
    fn pin_out_of_range_is_ignored() {
        let (mut ioapic, msi) = ioapic();

        ioapic.set_irq(24, true);
        ioapic.set_irq(usize::MAX, true);

        assert!(msi.sent().is_empty());
        assert!(ioapic.redirection_entry(24).is_none());
        assert!(ioapic.msi_message(24).is_none());
    }

    #[test]
    fn bad_register_indexes_read_zero_and_ignore_writes() {
        let (mut ioapic, _msi) = ioapic();

        for register in [0x03u8, 0x0F, 0x40, 0x80, 0xFF] {
            write_reg(&mut ioapic, register, 0xFFFF_FFFF);
            assert_eq!(read_reg(&mut ioapic, register), 0, "register {register:#x}");
        }
    }

    #[test]
    fn odd_access_sizes_do_not_panic_or_write() {
        let (mut ioapic, _msi) = ioapic();
        program(&mut ioapic, 0, 0, 0x20);
        select(&mut ioapic, 0x10);

        ioapic.write(IOWIN, &[0xFF]);
        ioapic.write(IOWIN, &[0xFF; 2]);
        ioapic.write(IOWIN, &[0xFF; 8]);
        ioapic.write(IOWIN + 1, &[0xFF; 4]);
        ioapic.write(IOREGSEL, &[]);
        let mut byte = [0u8];
        ioapic.read(IOWIN, &mut byte);
        let mut wide = [0u8; 8];
        ioapic.read(IOWIN - 2, &mut wide);

        assert_eq!(read_reg(&mut ioapic, 0x10), 0x20);
        assert_eq!(byte, [0x20]);
        assert_eq!(wide, [0, 0, 0x20, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn ioapic_pin_drives_the_shared_ioapic() {
        let msi = Arc::new(RecordingMsi::default());
        let shared = Arc::new(Mutex::new(Ioapic::new(msi.clone())));
        program(&mut shared.lock().unwrap(), 4, 0, 0x24);
        let line = Ioapic::pin(&shared, 4);

        line.pulse();
        line.pulse();

        assert_eq!(msi.sent().len(), 2);
    }

    #[test]
    fn missing_pins_are_refused_or_inert() {
        let msi = Arc::new(RecordingMsi::default());
        let shared = Arc::new(Mutex::new(Ioapic::new(msi.clone())));

        let refused = Ioapic::try_pin(&shared, 24).err();
        let inert = Ioapic::pin(&shared, u32::MAX);
        inert.pulse();

        assert_eq!(refused, Some(IoapicError::PinOutOfRange { pin: 24 }));
        assert!(msi.sent().is_empty());
    }

    #[test]
    fn announce_routes_reports_every_pin() {
        let (mut ioapic, msi) = ioapic();
        program(&mut ioapic, 3, 0, 0x23);
        msi.take_routes();

        ioapic.announce_routes();

        let routes = msi.take_routes();
        assert_eq!(routes.len(), IOAPIC_NUM_PINS);
        assert_eq!(
            routes[3],
            (
                3,
                Some(MsiMessage {
                    address: 0xFEE0_0000,
                    data: 0x23
                })
            )
        );
        assert!(routes.iter().filter(|(_, route)| route.is_some()).count() == 1);
    }

    /// An IOAPIC a guest has programmed: ID 0xA, an edge pin, a level pin in service
    /// (Remote IRR set, line still high), a masked level pin with its line high, a logical
    /// lowest-priority pin, and IOREGSEL left on a high dword.
    fn busy_ioapic() -> (Ioapic, Arc<RecordingMsi>) {
        let (mut ioapic, msi) = ioapic();
        write_reg(&mut ioapic, REG_ID, 0x0A00_0000);
        program(&mut ioapic, 4, 0x01, EDGE | 0x24);
        program(&mut ioapic, 9, 0x02, LEVEL | 0x29);
        ioapic.set_irq(9, true);
        program(&mut ioapic, 10, 0x00, MASK | LEVEL | 0x2A);
        ioapic.set_irq(10, true);
        program(&mut ioapic, 11, 0x03, LOGICAL | LOWEST_PRIORITY | 0x2B);
        select(&mut ioapic, 0x15);
        (ioapic, msi)
    }

    /// Every register a guest reads, IOREGSEL first (without selecting anything).
    fn observe(ioapic: &mut Ioapic) -> Vec<u32> {
        let mut selector = [0u8; 4];
        ioapic.read(IOREGSEL, &mut selector);
        let mut seen = vec![u32::from_le_bytes(selector)];
        seen.extend((0..=REG_REDIRECTION_LAST).map(|register| read_reg(ioapic, register)));
        seen
    }

    /// The same guest and device activity on both IOAPICs: an EOI, an edge, an unmask of
    /// an asserted level pin, a logical-destination edge.
    fn drive_both(a: &mut Ioapic, b: &mut Ioapic) {
        for ioapic in [a, b] {
            ioapic.end_of_interrupt(0x29);
            ioapic.set_irq(4, true);
            ioapic.set_irq(4, false);
            write_reg(ioapic, 0x10 + 2 * 10, LEVEL | 0x2A);
            ioapic.set_irq(11, true);
            ioapic.set_irq(11, false);
        }
    }

    #[test]
    fn restored_ioapic_reads_routes_and_delivers_like_the_original() {
        let (mut original, original_msi) = busy_ioapic();
        let state = original.state();
        let (mut restored, restored_msi) = ioapic();

        restored.restore(&state).unwrap();

        assert_eq!(restored.state(), state);
        assert!(restored_msi.sent().is_empty(), "pin 9 is still in service");
        let expected_routes: Vec<_> = (0..IOAPIC_NUM_PINS)
            .map(|pin| (pin, original.msi_message(pin)))
            .collect();
        assert_eq!(restored_msi.take_routes(), expected_routes);
        assert_eq!(observe(&mut restored), observe(&mut original));
        original_msi.take();
        drive_both(&mut original, &mut restored);
        let sent = restored_msi.take();
        assert_eq!(sent, original_msi.take());
        assert_eq!(
            sent,
            vec![
                (0xFEE0_2000, 0xC029),
                (0xFEE0_1000, 0x24),
                (0xFEE0_0000, 0xC02A),
                (0xFEE0_3004, 0x12B),
            ]
        );
        assert_eq!(observe(&mut restored), observe(&mut original));
    }

    #[test]
    fn restore_delivers_an_asserted_level_pin_that_was_never_delivered() {
        let (mut original, original_msi) = ioapic();
        program(&mut original, 9, 0x01, LEVEL | 0x29);
        original_msi.set_failing(true);
        original.set_irq(9, true);
        let state = original.state();
        let (mut restored, restored_msi) = ioapic();

        restored.restore(&state).unwrap();

        assert_eq!(state.redirection[9] & REMOTE_IRR, 0);
        assert_eq!(restored_msi.sent(), vec![(0xFEE0_1000, 0xC029)]);
        assert_ne!(restored.redirection_entry(9).unwrap() & REMOTE_IRR, 0);
    }

    #[test]
    fn restore_announces_routes_before_delivering() {
        let (mut original, _msi) = ioapic();
        program(&mut original, 9, 0x01, LEVEL | 0x29);
        let mut state = original.state();
        state.line_levels[9] = true;
        let (mut restored, msi) = ioapic();

        restored.restore(&state).unwrap();

        // The route is what makes KVM report the EOI of the interrupt just sent.
        let routes = msi.take_routes();
        assert_eq!(routes.len(), IOAPIC_NUM_PINS);
        assert_eq!(routes[9].1.map(|route| route.data), Some(0xC029));
        assert_eq!(msi.sent().len(), 1);
    }

    #[test]
    fn any_ioregsel_restores() {
        let (mut ioapic, _msi) = ioapic();
        let state = IoapicState {
            ioregsel: 0xFF,
            ..ioapic.state()
        };

        ioapic.restore(&state).unwrap();
        let mut window = [0u8; 4];
        ioapic.read(IOWIN, &mut window);

        assert_eq!(window, [0; 4]);
        assert_eq!(ioapic.state().ioregsel, 0xFF);
    }

    #[test]
    fn state_survives_json() {
        let (ioapic, _msi) = busy_ioapic();
        let state = ioapic.state();

        let json = serde_json::to_string(&state).unwrap();
        let decoded: IoapicState = serde_json::from_str(&json).unwrap();

        assert_eq!(decoded, state);
    }

    #[test]
    fn json_with_an_unknown_field_or_a_short_table_is_refused() {
        let (ioapic, _msi) = ioapic();
        let mut extra = serde_json::to_value(ioapic.state()).unwrap();
        extra["version"] = 0x20.into();
        let mut short = serde_json::to_value(ioapic.state()).unwrap();
        short["redirection"] = serde_json::json!([0, 0]);

        let extra_err = serde_json::from_value::<IoapicState>(extra).unwrap_err();
        let short_err = serde_json::from_value::<IoapicState>(short).unwrap_err();

        assert!(extra_err.to_string().contains("unknown field `version`"));
        assert!(
            short_err.to_string().contains("invalid length 2"),
            "{short_err}"
        );
    }

    #[test]
    fn impossible_states_are_refused_by_name_and_change_nothing() {
        let (mut ioapic, msi) = busy_ioapic();
        let before = ioapic.state();
        msi.take_routes();
        let mut bad_id = before.clone();
        bad_id.id = 0x10;
        let mut delivery_status = before.clone();
        delivery_status.redirection[3] = MASKED | 1 << 12;
        let mut reserved = before.clone();
        reserved.redirection[23] = 1 << 20;
        let mut edge_in_service = before.clone();
        edge_in_service.redirection[4] |= REMOTE_IRR;

        let errors = [bad_id, delivery_status, reserved, edge_in_service]
            .map(|bad| ioapic.restore(&bad).unwrap_err());

        assert_eq!(errors[0], IoapicError::IdOutOfRange { id: 0x10 });
        let pins = errors.each_ref().map(|err| match err {
            IoapicError::InvalidRedirectionEntry { pin, .. } => Some(*pin),
            _ => None,
        });
        assert_eq!(pins, [None, Some(3), Some(23), Some(4)]);
        assert!(
            errors[3]
                .to_string()
                .contains("redirection[4] = 0x0100000000004024")
        );
        assert_eq!(ioapic.state(), before);
        assert!(msi.take_routes().is_empty());
    }
}
