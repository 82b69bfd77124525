//! MSI-X: the capability in configuration space, and the vector table and pending-bit array
//! (PBA) that live in one of the device's BARs (PCI Local Bus 3.0, 6.8.2).
//!
//! The device owns an [`MsixConfig`]; it adds the capability to its configuration space
//! ([`MsixConfig::add_capability`]), forwards configuration writes
//! ([`MsixConfig::config_written`]) and BAR accesses ([`MsixConfig::bar_read`],
//! [`MsixConfig::bar_write`]), and calls [`MsixConfig::notify`] to interrupt. A vector that
//! is masked (by its own mask bit or the function mask) when notified sets its pending bit
//! instead, and is delivered as soon as it is unmasked.
//!
//! With a route base set ([`MsixConfig::set_route_base`]), every change to the message a
//! vector would deliver is announced through [`MsiSink::route_changed`] as source
//! `base + vector` (`None` while it cannot deliver), so the VMM can mirror vectors as KVM
//! GSI routes for irqfd; messages are then sent with [`MsiSink::send_routed`] naming that
//! source, and a route is always announced before a pending vector it unmasks is delivered.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{PciConfigSpace, PciError, regs};
use crate::{MsiMessage, MsiSink};

/// The most vectors an MSI-X capability can have.
pub const MSIX_MAX_VECTORS: u16 = 2048;

const ENTRY_SIZE: u64 = 16;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Offset of the message control register in the capability.
const CAP_CONTROL: u16 = 2;
/// Vector control: bit 0 masks the vector; the rest is reserved.
const VECTOR_MASKED: u32 = 1;
/// Byte offset of the vector control word in a table entry.
const VECTOR_CONTROL_FIELD: usize = 3;

/// Where a structure (table or PBA) lives: BAR index and offset (8-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixRegion {
    /// BAR index (0..6).
    pub bar: u8,
    /// Offset within the BAR, a multiple of 8.
    pub offset: u32,
}

/// One vector table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixEntry {
    /// Message address, low 32 bits.
    pub address_low: u32,
    /// Message address, high 32 bits.
    pub address_high: u32,
    /// Message data.
    pub data: u32,
    /// Vector control (bit 0: masked).
    pub vector_control: u32,
}

impl MsixEntry {
    const MASKED: Self = Self {
        address_low: 0,
        address_high: 0,
        data: 0,
        vector_control: VECTOR_MASKED,
    };

    fn masked(&self) -> bool {
        self.vector_control & VECTOR_MASKED != 0
    }

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: (u64::from(self.address_high) << 32) | u64::from(self.address_low),
            data: self.data,
        }
    }

    fn field(&self, field: usize) -> u32 {
        match field {
            0 => self.address_low,
            1 => self.address_high,
            2 => self.data,
            _ => self.vector_control,
        }
    }

    fn field_mut(&mut self, field: usize) -> &mut u32 {
        match field {
            0 => &mut self.address_low,
            1 => &mut self.address_high,
            2 => &mut self.data,
            _ => &mut self.vector_control,
        }
    }
}

/// What [`MsixConfig::notify`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixNotify {
    /// The message was sent.
    Sent,
    /// The vector is masked: its pending bit is set.
    Pending,
    /// MSI-X is disabled: the device should use INTx.
    Disabled,
    /// The vector does not exist.
    InvalidVector,
    /// The sink refused the message (logged).
    SendFailed,
}

/// The guest-visible MSI-X state: table, pending bits, enable and function mask.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MsixState {
    /// One entry per vector.
    pub entries: Vec<MsixEntry>,
    /// Pending bits, 64 vectors per word, vector 0 in bit 0 of word 0.
    pub pending: Vec<u64>,
    /// MSI-X Enable (message control bit 15).
    pub enabled: bool,
    /// Function Mask (message control bit 14).
    pub function_masked: bool,
}

/// An MSI-X capability with its table and PBA.
pub struct MsixConfig {
    entries: Vec<MsixEntry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    table: MsixRegion,
    pba: MsixRegion,
    capability: Option<u16>,
    msi: Arc<dyn MsiSink>,
    route_base: Option<usize>,
    /// The routes last announced, per vector (only kept with a route base).
    announced: Vec<Option<MsiMessage>>,
}

impl MsixConfig {
    /// `vectors` vectors (1..=2048), all masked, with the table and PBA where `table` and
    /// `pba` say; messages go to `msi`.
    pub fn new(
        vectors: u16,
        table: MsixRegion,
        pba: MsixRegion,
        msi: Arc<dyn MsiSink>,
    ) -> Result<Self, PciError> {
        if vectors == 0 || vectors > MSIX_MAX_VECTORS {
            return Err(PciError::MsixVectorCount { count: vectors });
        }
        let config = Self {
            entries: vec![MsixEntry::MASKED; usize::from(vectors)],
            pending: vec![0; usize::from(vectors).div_ceil(64)],
            enabled: false,
            function_masked: false,
            table,
            pba,
            capability: None,
            msi,
            route_base: None,
            announced: Vec::new(),
        };
        config.check_region("table", table, config.table_len())?;
        config.check_region("PBA", pba, config.pba_len())?;
        let table_range = region_range(table, config.table_len());
        let pba_range = region_range(pba, config.pba_len());
        if table.bar == pba.bar
            && table_range.start < pba_range.end
            && pba_range.start < table_range.end
        {
            return Err(PciError::MsixRegion {
                what: "PBA",
                bar: pba.bar,
                offset: pba.offset,
                reason: "overlaps the vector table",
            });
        }
        Ok(config)
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        // At most MSIX_MAX_VECTORS, checked in new().
        self.entries.len() as u16
    }

    /// Bytes the vector table spans.
    pub fn table_len(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes the PBA spans (whole 64-bit words).
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Adds the MSI-X capability to `config` (Enable and Function Mask guest-writable) and
    /// returns its offset.
    pub fn add_capability(&mut self, config: &mut PciConfigSpace) -> Result<u16, PciError> {
        let control = self.vectors() - 1;
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&control.to_le_bytes());
        body.extend_from_slice(&(self.table.offset | u32::from(self.table.bar)).to_le_bytes());
        body.extend_from_slice(&(self.pba.offset | u32::from(self.pba.bar)).to_le_bytes());
        let mut writable = vec![0u8; body.len()];
        writable[..2].copy_from_slice(&(CONTROL_ENABLE | CONTROL_FUNCTION_MASK).to_le_bytes());
        let offset = config.add_capability_with_mask(regs::CAP_ID_MSIX, &body, &writable)?;
        self.capability = Some(offset);
        Ok(offset)
    }

    /// Follows a guest write to `config` at `[offset, offset + len)`: picks up the message
    /// control register's Enable and Function Mask if the write touched them.
    pub fn config_written(&mut self, config: &PciConfigSpace, offset: u16, len: usize) {
        let Some(capability) = self.capability else {
            return;
        };
        let control = capability + CAP_CONTROL;
        let start = usize::from(offset);
        let end = start.saturating_add(len);
        if start < usize::from(control) + 2 && usize::from(control) < end {
            self.set_control(config.read_u16(control));
        }
    }

    /// Applies a message control value: Enable and Function Mask. Vectors this unmasks are
    /// delivered if pending.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        // Routes first: a pending vector delivered now goes through its new route.
        self.announce_routes(0..self.entries.len());
        for vector in 0..self.vectors() {
            self.deliver_if_pending(vector);
        }
    }

    /// Whether MSI-X is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the whole function is masked.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Whether `vector` cannot deliver now: masked itself or by the function mask. A vector
    /// that does not exist counts as masked.
    pub fn is_masked(&self, vector: u16) -> bool {
        self.entries
            .get(usize::from(vector))
            .is_none_or(|entry| entry.masked() || self.function_masked)
    }

    /// Whether `vector`'s pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let (word, bit) = pending_position(vector);
        self.pending
            .get(word)
            .is_some_and(|bits| bits & (1 << bit) != 0)
    }

    /// The message `vector` holds (whether or not it is masked).
    pub fn vector_message(&self, vector: u16) -> Option<MsiMessage> {
        self.entries
            .get(usize::from(vector))
            .map(MsixEntry::message)
    }

    /// Announce route changes as sources `base + vector` from now on (`None` stops);
    /// announces every vector's current route at once.
    pub fn set_route_base(&mut self, base: Option<usize>) {
        self.route_base = base;
        self.announced = vec![None; self.entries.len()];
        if base.is_some() {
            for vector in 0..self.entries.len() {
                self.announce(vector, self.route(vector));
            }
        }
    }

    /// Interrupts with `vector`: sends its message, or sets its pending bit while masked.
    pub fn notify(&mut self, vector: u16) -> MsixNotify {
        let Some(entry) = self.entries.get(usize::from(vector)) else {
            return MsixNotify::InvalidVector;
        };
        if !self.enabled {
            return MsixNotify::Disabled;
        }
        if entry.masked() || self.function_masked {
            self.set_pending(vector, true);
            return MsixNotify::Pending;
        }
        self.send(entry.message(), vector)
    }

    /// Reads from BAR `bar` at `offset` if the table or PBA is there; returns whether it
    /// answered.
    pub fn bar_read(&self, bar: usize, offset: u64, data: &mut [u8]) -> bool {
        if let Some(start) = self.offset_in(self.table, self.table_len(), bar, offset, data.len()) {
            self.table_read(start, data);
            true
        } else if let Some(start) =
            self.offset_in(self.pba, self.pba_len(), bar, offset, data.len())
        {
            self.pba_read(start, data);
            true
        } else {
            false
        }
    }

    /// Writes to BAR `bar` at `offset` if the table or PBA is there (the PBA is read-only);
    /// returns whether it answered.
    pub fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) -> bool {
        if let Some(start) = self.offset_in(self.table, self.table_len(), bar, offset, data.len()) {
            self.table_write(start, data);
            true
        } else {
            self.offset_in(self.pba, self.pba_len(), bar, offset, data.len())
                .is_some()
        }
    }

    /// Reads the vector table at `offset` (from the table's start); bytes past its end read
    /// as 0.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self
                .table_byte(offset.saturating_add(i as u64))
                .unwrap_or(0);
        }
    }

    /// Writes the vector table at `offset` (from the table's start). Only the mask bit of
    /// vector control is writable; unmasking a pending vector delivers it.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let mut touched = Vec::new();
        for (i, &value) in data.iter().enumerate() {
            let Some((vector, field, byte)) = table_position(offset.saturating_add(i as u64))
            else {
                break;
            };
            let Some(entry) = self.entries.get_mut(vector) else {
                break;
            };
            let word = entry.field_mut(field);
            let mut bytes = word.to_le_bytes();
            bytes[byte] = value;
            let mut new = u32::from_le_bytes(bytes);
            if field == VECTOR_CONTROL_FIELD {
                new &= VECTOR_MASKED;
            }
            *word = new;
            if touched.last() != Some(&vector) {
                touched.push(vector);
            }
        }
        // Routes first: a pending vector this unmasked is delivered through its new route.
        if let (Some(&first), Some(&last)) = (touched.first(), touched.last()) {
            self.announce_routes(first..last + 1);
        }
        for &vector in &touched {
            // `vector` indexes `entries`, whose length fits u16.
            self.deliver_if_pending(vector as u16);
        }
    }

    /// Reads the PBA at `offset` (from its start); bytes past its end read as 0.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            let word = usize::try_from(at / 8)
                .ok()
                .and_then(|w| self.pending.get(w));
            *byte = word.map_or(0, |word| word.to_le_bytes()[(at % 8) as usize]);
        }
    }

    /// Back to power-on: MSI-X disabled, every vector masked with a zero message, nothing
    /// pending.
    pub fn reset(&mut self) {
        self.entries.fill(MsixEntry::MASKED);
        self.pending.fill(0);
        self.enabled = false;
        self.function_masked = false;
        self.announce_routes(0..self.entries.len());
    }

    /// The guest-visible state.
    pub fn state(&self) -> MsixState {
        MsixState {
            entries: self.entries.clone(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
        }
    }

    /// Replaces the state with `state`, refusing (and changing nothing) one this capability
    /// could not hold; announces routes and delivers vectors pending and unmasked.
    pub fn restore(&mut self, state: &MsixState) -> Result<(), PciError> {
        if state.entries.len() != self.entries.len() {
            return Err(PciError::MsixState {
                field: "entries",
                reason: format!(
                    "{} vectors, this device has {}",
                    state.entries.len(),
                    self.entries.len()
                ),
            });
        }
        if let Some((vector, entry)) = state
            .entries
            .iter()
            .enumerate()
            .find(|(_, entry)| entry.vector_control & !VECTOR_MASKED != 0)
        {
            return Err(PciError::MsixState {
                field: "entries",
                reason: format!(
                    "vector {vector} control {:#x} sets reserved bits",
                    entry.vector_control
                ),
            });
        }
        let mut allowed = vec![u64::MAX; self.pending.len()];
        if let Some(last) = allowed.last_mut() {
            let used = self.entries.len() % 64;
            if used != 0 {
                *last = (1 << used) - 1;
            }
        }
        let valid = state.pending.len() == allowed.len()
            && state
                .pending
                .iter()
                .zip(&allowed)
                .all(|(bits, ok)| bits & !ok == 0);
        if !valid {
            return Err(PciError::MsixState {
                field: "pending",
                reason: format!(
                    "{:x?} does not fit {} vectors",
                    state.pending,
                    self.entries.len()
                ),
            });
        }
        self.entries.copy_from_slice(&state.entries);
        self.pending.copy_from_slice(&state.pending);
        self.enabled = state.enabled;
        self.function_masked = state.function_masked;
        self.announce_routes(0..self.entries.len());
        for vector in 0..self.vectors() {
            self.deliver_if_pending(vector);
        }
        Ok(())
    }

    fn check_region(
        &self,
        what: &'static str,
        region: MsixRegion,
        len: u64,
    ) -> Result<(), PciError> {
        let reason = if usize::from(region.bar) >= super::NUM_BARS {
            "no such BAR"
        } else if !region.offset.is_multiple_of(8) {
            "not 8-byte aligned"
        } else if u64::from(region.offset) + len > u64::from(u32::MAX) {
            "runs past 4 GiB"
        } else {
            return Ok(());
        };
        Err(PciError::MsixRegion {
            what,
            bar: region.bar,
            offset: region.offset,
            reason,
        })
    }

    /// The offset of an access inside `region` if it lies entirely inside it.
    fn offset_in(
        &self,
        region: MsixRegion,
        len: u64,
        bar: usize,
        offset: u64,
        size: usize,
    ) -> Option<u64> {
        if bar != usize::from(region.bar) {
            return None;
        }
        let start = offset.checked_sub(u64::from(region.offset))?;
        let end = start.checked_add(size as u64)?;
        (end <= len).then_some(start)
    }

    fn table_byte(&self, offset: u64) -> Option<u8> {
        let (vector, field, byte) = table_position(offset)?;
        let entry = self.entries.get(vector)?;
        Some(entry.field(field).to_le_bytes()[byte])
    }

    fn set_pending(&mut self, vector: u16, pending: bool) {
        let (word, bit) = pending_position(vector);
        if let Some(bits) = self.pending.get_mut(word) {
            if pending {
                *bits |= 1 << bit;
            } else {
                *bits &= !(1 << bit);
            }
        }
    }

    fn deliver_if_pending(&mut self, vector: u16) {
        if self.enabled && !self.is_masked(vector) && self.is_pending(vector) {
            self.set_pending(vector, false);
            if let Some(message) = self.vector_message(vector) {
                self.send(message, vector);
            }
        }
    }

    /// Sends through the vector's announced route when there is one (the VMM's irqfd).
    fn send(&self, message: MsiMessage, vector: u16) -> MsixNotify {
        let sent = match self.route_base {
            Some(base) => self
                .msi
                .send_routed(base.saturating_add(usize::from(vector)), message),
            None => self.msi.send_msi(message.address, message.data),
        };
        match sent {
            Ok(()) => MsixNotify::Sent,
            Err(error) => {
                tracing::warn!(vector, %error, "MSI-X message not delivered");
                MsixNotify::SendFailed
            }
        }
    }

    /// The message `vector` delivers now, if it can deliver.
    fn route(&self, vector: usize) -> Option<MsiMessage> {
        let entry = self.entries.get(vector)?;
        (self.enabled && !self.function_masked && !entry.masked()).then(|| entry.message())
    }

    fn announce_routes(&mut self, vectors: std::ops::Range<usize>) {
        if self.route_base.is_none() {
            return;
        }
        for vector in vectors {
            let route = self.route(vector);
            if self.announced.get(vector) != Some(&route) {
                self.announce(vector, route);
            }
        }
    }

    fn announce(&mut self, vector: usize, route: Option<MsiMessage>) {
        let Some(base) = self.route_base else {
            return;
        };
        if let Some(slot) = self.announced.get_mut(vector) {
            *slot = route;
        }
        if let Err(error) = self.msi.route_changed(base.saturating_add(vector), route) {
            tracing::warn!(vector, %error, "MSI-X route change not applied");
        }
    }
}

/// (vector, field, byte in field) of a table offset.
fn table_position(offset: u64) -> Option<(usize, usize, usize)> {
    let vector = usize::try_from(offset / ENTRY_SIZE).ok()?;
    let within = (offset % ENTRY_SIZE) as usize;
    Some((vector, within / 4, within % 4))
}

/// (word, bit) of a vector's pending bit.
fn pending_position(vector: u16) -> (usize, u32) {
    (usize::from(vector / 64), u32::from(vector % 64))
}

fn region_range(region: MsixRegion, len: u64) -> std::ops::Range<u64> {
    let start = u64::from(region.offset);
    start..start + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciIds;
    use crate::test_utils::RecordingMsi;

    const TABLE: MsixRegion = MsixRegion { bar: 0, offset: 0 };
    const PBA: MsixRegion = MsixRegion {
        bar: 0,
        offset: 0x800,
    };

    fn msix(vectors: u16) -> (MsixConfig, Arc<RecordingMsi>) {
        let sink = Arc::new(RecordingMsi::default());
        let config = MsixConfig::new(vectors, TABLE, PBA, sink.clone()).unwrap();
        (config, sink)
    }

    fn program(config: &mut MsixConfig, vector: u64, address: u64, data: u32, masked: bool) {
        let base = vector * ENTRY_SIZE;
        config.bar_write(0, base, &address.to_le_bytes());
        config.bar_write(0, base + 8, &data.to_le_bytes());
        config.bar_write(0, base + 12, &u32::from(masked).to_le_bytes());
    }

    fn space() -> PciConfigSpace {
        PciConfigSpace::new(PciIds {
            vendor: 0x1AF4,
            device: 0x1044,
            subsystem_vendor: 0,
            subsystem_id: 0,
            class_code: 0,
            revision: 0,
        })
    }

    #[test]
    fn capability_describes_table_and_pba() {
        let (mut msix, _) = msix(3);
        let mut space = space();

        let offset = msix.add_capability(&mut space).unwrap();

        assert_eq!(space.read_u8(offset), regs::CAP_ID_MSIX);
        assert_eq!(space.read_u16(offset + 2), 2, "table size - 1");
        assert_eq!(space.read_u32(offset + 4), 0);
        assert_eq!(space.read_u32(offset + 8), 0x800);
    }

    #[test]
    fn enabling_through_config_space_lets_vectors_deliver() {
        let (mut msix, sink) = msix(2);
        let mut space = space();
        let cap = msix.add_capability(&mut space).unwrap();
        program(&mut msix, 1, 0xFEE0_0000, 0x41, false);

        let before = msix.notify(1);
        space.write(cap + 2, &0xFFFFu16.to_le_bytes());
        msix.config_written(&space, cap + 2, 2);
        space.write(cap + 3, &[0x80]);
        msix.config_written(&space, cap + 3, 1);
        let after = msix.notify(1);

        assert_eq!(before, MsixNotify::Disabled);
        assert_eq!(
            space.read_u16(cap + 2),
            0x8001,
            "only enable/mask are writable"
        );
        assert_eq!(after, MsixNotify::Sent);
        assert_eq!(sink.sent(), vec![(0xFEE0_0000, 0x41)]);
    }

    #[test]
    fn masked_vector_is_pending_until_unmasked() {
        let (mut msix, sink) = msix(2);
        msix.set_control(CONTROL_ENABLE);
        program(&mut msix, 0, 0xFEE0_1000, 0x30, true);

        let result = msix.notify(0);
        let mut pba = [0u8; 8];
        msix.bar_read(0, 0x800, &mut pba);

        assert_eq!(result, MsixNotify::Pending);
        assert_eq!(pba[0], 1);
        assert!(sink.sent().is_empty());
        msix.bar_write(0, 12, &0u32.to_le_bytes());
        assert_eq!(sink.sent(), vec![(0xFEE0_1000, 0x30)]);
        assert!(!msix.is_pending(0));
    }

    #[test]
    fn function_mask_holds_every_vector() {
        let (mut msix, sink) = msix(2);
        program(&mut msix, 0, 0xFEE0_0000, 1, false);
        program(&mut msix, 1, 0xFEE0_0000, 2, false);
        msix.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);

        msix.notify(0);
        msix.notify(1);
        assert!(msix.is_masked(0) && msix.is_pending(1));
        msix.set_control(CONTROL_ENABLE);

        assert_eq!(sink.sent(), vec![(0xFEE0_0000, 1), (0xFEE0_0000, 2)]);
    }

    #[test]
    fn table_reads_back_and_reserved_control_bits_stay_zero() {
        let (mut msix, _) = msix(1);

        program(&mut msix, 0, 0x1_FEE0_0000, 0x1234, false);
        msix.bar_write(0, 12, &0xFFFF_FFFEu32.to_le_bytes());
        let mut entry = [0u8; 16];
        msix.bar_read(0, 0, &mut entry);

        assert_eq!(&entry[..8], &0x1_FEE0_0000u64.to_le_bytes());
        assert_eq!(&entry[8..12], &0x1234u32.to_le_bytes());
        assert_eq!(&entry[12..], &[0; 4]);
        assert_eq!(
            msix.vector_message(0),
            Some(MsiMessage {
                address: 0x1_FEE0_0000,
                data: 0x1234
            })
        );
    }

    #[test]
    fn accesses_outside_table_and_pba_are_not_claimed() {
        let (mut msix, _) = msix(2);
        let mut data = [0u8; 4];

        assert!(!msix.bar_read(1, 0, &mut data));
        assert!(!msix.bar_read(0, 0x20, &mut data), "past 2 entries");
        assert!(
            !msix.bar_read(0, 0x1E, &mut data),
            "straddles the table end"
        );
        assert!(!msix.bar_write(0, u64::MAX, &data));
        assert!(msix.bar_write(0, 0x800, &data), "PBA writes are ignored");
        assert_eq!(msix.notify(7), MsixNotify::InvalidVector);
    }

    #[test]
    fn invalid_layouts_are_refused() {
        let sink: Arc<dyn MsiSink> = Arc::new(RecordingMsi::default());
        let overlapping = MsixRegion {
            bar: 0,
            offset: 0x10,
        };

        assert!(MsixConfig::new(0, TABLE, PBA, sink.clone()).is_err());
        assert!(MsixConfig::new(2049, TABLE, PBA, sink.clone()).is_err());
        assert!(MsixConfig::new(4, TABLE, overlapping, sink.clone()).is_err());
        assert!(MsixConfig::new(4, MsixRegion { bar: 6, offset: 0 }, PBA, sink.clone()).is_err());
        assert!(MsixConfig::new(4, MsixRegion { bar: 0, offset: 4 }, PBA, sink).is_err());
    }

    #[test]
    fn routes_follow_enable_mask_and_messages() {
        let (mut msix, sink) = msix(2);
        msix.set_route_base(Some(24));
        sink.take_routes();

        program(&mut msix, 1, 0xFEE0_0000, 0x55, false);
        msix.set_control(CONTROL_ENABLE);
        let message = MsiMessage {
            address: 0xFEE0_0000,
            data: 0x55,
        };

        assert_eq!(sink.take_routes(), vec![(25, Some(message))]);
        msix.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert_eq!(sink.take_routes(), vec![(25, None)]);
    }

    /// Records route announcements and sends in one list, to check their order.
    #[derive(Default)]
    struct EventLog(std::sync::Mutex<Vec<String>>);

    impl MsiSink for EventLog {
        fn send_msi(&self, address: u64, data: u32) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("msi {address:#x} {data:#x}"));
            Ok(())
        }

        fn send_routed(&self, source: usize, message: MsiMessage) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("routed {source} {:#x}", message.data));
            Ok(())
        }

        fn route_changed(&self, source: usize, message: Option<MsiMessage>) -> std::io::Result<()> {
            let data = message.map(|m| m.data);
            self.0
                .lock()
                .unwrap()
                .push(format!("route {source} {data:x?}"));
            Ok(())
        }
    }

    #[test]
    fn routed_vectors_send_through_their_source_after_the_route_exists() {
        // Arrange: vector 1 masked, routes announced from GSI 30
        let log = Arc::new(EventLog::default());
        let mut msix = MsixConfig::new(2, TABLE, PBA, log.clone()).unwrap();
        program(&mut msix, 1, 0xFEE0_0000, 0x41, true);
        msix.set_control(CONTROL_ENABLE);
        msix.set_route_base(Some(30));
        log.0.lock().unwrap().clear();

        // Act: a masked notify, then the driver unmasks
        let masked = msix.notify(1);
        msix.bar_write(0, 16 + 12, &0u32.to_le_bytes());
        let direct = msix.notify(1);

        // Assert: pending while masked; on unmask the route comes first, then the pending
        // message through it; later messages go through the route too
        assert_eq!(masked, MsixNotify::Pending);
        assert_eq!(direct, MsixNotify::Sent);
        assert!(!msix.is_pending(1));
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["route 31 Some(41)", "routed 31 0x41", "routed 31 0x41"]
        );
    }

    #[test]
    fn without_a_route_base_messages_are_sent_plainly() {
        let (mut msix, sink) = msix(2);
        program(&mut msix, 0, 0xFEE0_0000, 0x42, false);
        msix.set_control(CONTROL_ENABLE);

        msix.notify(0);

        assert_eq!(sink.take(), vec![(0xFEE0_0000, 0x42)]);
        assert!(sink.take_routed().is_empty());
    }

    #[test]
    fn state_round_trips_and_is_validated() {
        let (mut msix, sink) = msix(3);
        program(&mut msix, 2, 0xFEE0_0000, 7, true);
        msix.set_control(CONTROL_ENABLE);
        msix.notify(2);
        let state = msix.state();
        let (mut fresh, fresh_sink) = self::msix(3);

        fresh.restore(&state).unwrap();

        assert_eq!(fresh.state(), state);
        assert!(fresh.is_pending(2) && fresh.enabled());
        assert!(fresh_sink.sent().is_empty() && sink.sent().is_empty());
        let mut bad = state.clone();
        bad.pending = vec![1 << 3];
        assert!(matches!(
            fresh.restore(&bad),
            Err(PciError::MsixState {
                field: "pending",
                ..
            })
        ));
        let mut bad = state.clone();
        bad.entries[0].vector_control = 2;
        assert!(fresh.restore(&bad).is_err());
        let (mut small, _) = self::msix(2);
        assert!(small.restore(&state).is_err());
    }

    #[test]
    fn restore_delivers_a_pending_unmasked_vector() {
        let (msix, _) = msix(1);
        let mut state = msix.state();
        state.entries[0] = MsixEntry {
            address_low: 0xFEE0_0000,
            address_high: 0,
            data: 9,
            vector_control: 0,
        };
        state.pending = vec![1];
        state.enabled = true;
        let (mut fresh, sink) = self::msix(1);

        fresh.restore(&state).unwrap();

        assert_eq!(sink.sent(), vec![(0xFEE0_0000, 9)]);
        assert!(!fresh.is_pending(0));
    }

    #[test]
    fn reset_masks_everything() {
        let (mut msix, _) = msix(2);
        program(&mut msix, 0, 0xFEE0_0000, 1, false);
        msix.set_control(CONTROL_ENABLE);

        msix.reset();

        assert!(!msix.enabled() && msix.is_masked(0));
        assert_eq!(
            msix.vector_message(0),
            Some(MsiMessage {
                address: 0,
                data: 0
            })
        );
    }
}
