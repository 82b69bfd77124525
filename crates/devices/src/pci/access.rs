//! The bus devices through which a guest reaches bus 0: configuration mechanism #1 at
//! ports 0xCF8–0xCFF, ECAM over MMIO, and the PCI MMIO windows where BARs live.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{PciError, PciRoot};
use crate::bus::lock_recovering;
use crate::{BusDevice, PowerEvents};

/// Number of ports [`PciConfigIo`] spans from its base (0xCF8).
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Bytes of ECAM per bus: 32 devices × 8 functions × 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

const CONFIG_ADDRESS: u64 = 0;
const RESET_CONTROL: u64 = 1;
const CONFIG_DATA: u64 = 4;
const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;
/// Bits CONFIG_ADDRESS keeps: enable, bus, device, function, dword register.
const CONFIG_ADDRESS_BITS: u32 = 0x80FF_FFFC;
/// Reset control register (PIIX3 RCR at 0xCF9): bit 1 selects a full reset, and writing
/// bit 2 resets the machine.
const RESET_CONTROL_FULL: u8 = 1 << 1;
const RESET_CONTROL_RESET: u8 = 1 << 2;
/// Bytes of configuration space per function.
const FUNCTION_CONFIG_SIZE: u64 = 0x1000;

/// The guest-visible state of [`PciConfigIo`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PciConfigIoState {
    /// CONFIG_ADDRESS (0xCF8).
    pub address: u32,
    /// The reset control register (0xCF9): only bit 1 is kept.
    pub reset_control: u8,
}

/// Configuration mechanism #1: CONFIG_ADDRESS at 0xCF8 (32-bit accesses only), CONFIG_DATA
/// at 0xCFC–0xCFF (1-, 2- and 4-byte accesses inside it), and the reset control register
/// at 0xCF9 that SeaBIOS and Linux (`reboot=pci`) use to reset the machine.
///
/// Other accesses read all ones and are ignored, as on an i440FX.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
    reset_control: u8,
    power: Option<Arc<dyn PowerEvents>>,
}

impl PciConfigIo {
    /// Configuration access to `root`, without a reset control register.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self {
            root,
            address: 0,
            reset_control: 0,
            power: None,
        }
    }

    /// Configuration access to `root`, with the reset control register asking `power` to
    /// reset the machine.
    pub fn with_reset(root: Arc<Mutex<PciRoot>>, power: Arc<dyn PowerEvents>) -> Self {
        Self {
            power: Some(power),
            ..Self::new(root)
        }
    }

    /// The guest-visible state.
    pub fn state(&self) -> PciConfigIoState {
        PciConfigIoState {
            address: self.address,
            reset_control: self.reset_control,
        }
    }

    /// Restores `state`, refusing values the registers cannot hold.
    pub fn restore(&mut self, state: &PciConfigIoState) -> Result<(), PciError> {
        if state.address & !CONFIG_ADDRESS_BITS != 0 {
            return Err(PciError::IoState {
                field: "address",
                value: state.address,
            });
        }
        if state.reset_control & !RESET_CONTROL_FULL != 0 {
            return Err(PciError::IoState {
                field: "reset_control",
                value: u32::from(state.reset_control),
            });
        }
        self.address = state.address;
        self.reset_control = state.reset_control;
        Ok(())
    }

    /// Puts CONFIG_ADDRESS and the reset control register back to 0.
    pub fn reset(&mut self) {
        self.address = 0;
        self.reset_control = 0;
    }

    /// (bus, device, function, register) for a data-port access at `byte` (0..4), if
    /// CONFIG_ADDRESS is enabled.
    fn target(&self, byte: u64) -> Option<(u8, u8, u8, u16)> {
        if self.address & CONFIG_ADDRESS_ENABLE == 0 {
            return None;
        }
        let [register, low, bus, _] = self.address.to_le_bytes();
        let device = low >> 3;
        let function = low & 0x7;
        Some((bus, device, function, u16::from(register) + byte as u16))
    }

    /// The byte offset inside CONFIG_DATA of an access at `offset` of `len` bytes, if it is
    /// a 1-, 2- or 4-byte access that stays inside the data port.
    fn data_byte(offset: u64, len: usize) -> Option<u64> {
        let byte = offset.checked_sub(CONFIG_DATA)?;
        (matches!(len, 1 | 2 | 4) && byte + len as u64 <= 4).then_some(byte)
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (CONFIG_ADDRESS, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (RESET_CONTROL, 1) => data[0] = self.reset_control,
            _ => match Self::data_byte(offset, data.len()).and_then(|b| self.target(b)) {
                Some((bus, device, function, register)) => {
                    lock_recovering(&self.root).config_read(bus, device, function, register, data);
                }
                None => data.fill(0xFF),
            },
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (CONFIG_ADDRESS, &[a, b, c, d]) => {
                self.address = u32::from_le_bytes([a, b, c, d]) & CONFIG_ADDRESS_BITS;
            }
            (RESET_CONTROL, &[value]) => {
                if value & RESET_CONTROL_RESET != 0 {
                    if let Some(power) = &self.power {
                        power.reset();
                    }
                } else {
                    self.reset_control = value & RESET_CONTROL_FULL;
                }
            }
            _ => {
                if let Some((bus, device, function, register)) =
                    Self::data_byte(offset, data.len()).and_then(|b| self.target(b))
                {
                    lock_recovering(&self.root).config_write(bus, device, function, register, data);
                }
            }
        }
    }
}

/// ECAM (PCI Express enhanced configuration access): 4 KiB per function, 1 MiB per bus,
/// from the base of the window the VMM inserts it at. Accesses that cross a function's
/// 4 KiB read all ones and are ignored.
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    /// ECAM access to `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root }
    }

    /// (bus, device, function, register) of an access, if it stays in one function.
    fn target(offset: u64, len: usize) -> Option<(u8, u8, u8, u16)> {
        let bus = u8::try_from(offset / ECAM_BUS_SIZE).ok()?;
        let device = ((offset >> 15) & 0x1F) as u8;
        let function = ((offset >> 12) & 0x7) as u8;
        let register = offset % FUNCTION_CONFIG_SIZE;
        (register + len as u64 <= FUNCTION_CONFIG_SIZE).then_some((
            bus,
            device,
            function,
            register as u16,
        ))
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::target(offset, data.len()) {
            Some((bus, device, function, register)) => {
                lock_recovering(&self.root).config_read(bus, device, function, register, data);
            }
            None => data.fill(0xFF),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, device, function, register)) = Self::target(offset, data.len()) {
            lock_recovering(&self.root).config_write(bus, device, function, register, data);
        }
    }
}

/// A PCI MMIO window: forwards each access to the memory-enabled BAR that decodes the
/// address now, at the BAR-relative offset. Addresses no BAR decodes read all ones.
pub struct PciMmioWindow {
    root: Arc<Mutex<PciRoot>>,
    base: u64,
}

impl PciMmioWindow {
    /// A window the VMM inserts at guest-physical `base`.
    pub fn new(root: Arc<Mutex<PciRoot>>, base: u64) -> Self {
        Self { root, base }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let target = self
            .base
            .checked_add(offset)
            .and_then(|addr| lock_recovering(&self.root).decoder(addr, data.len()));
        match target {
            // The root's lock is released: a device's BAR access may take a while.
            Some(target) => {
                lock_recovering(&target.device).bar_read(target.index, target.offset, data);
            }
            None => data.fill(0xFF),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let target = self
            .base
            .checked_add(offset)
            .and_then(|addr| lock_recovering(&self.root).decoder(addr, data.len()));
        if let Some(target) = target {
            lock_recovering(&target.device).bar_write(target.index, target.offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::root::tests::{TestDevice, windows};
    use crate::pci::{BarKind, regs};
    use crate::test_utils::FakePower;

    fn root_with_device() -> (Arc<Mutex<PciRoot>>, Arc<Mutex<TestDevice>>) {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let device = Arc::new(Mutex::new(TestDevice::new(&[(0, 0x1000, BarKind::Mmio32)])));
        root.lock()
            .unwrap()
            .add_device_at(3, device.clone())
            .unwrap();
        (root, device)
    }

    fn select(io: &mut PciConfigIo, device: u32, register: u32) {
        io.write(0, &(0x8000_0000 | (device << 11) | register).to_le_bytes());
    }

    fn read_u32(device: &mut dyn BusDevice, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        device.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn config_address_keeps_only_its_bits() {
        let (root, _) = root_with_device();
        let mut io = PciConfigIo::new(root);

        io.write(0, &0xFFFF_FFFFu32.to_le_bytes());

        assert_eq!(read_u32(&mut io, 0), 0x80FF_FFFC);
    }

    #[test]
    fn data_port_reads_the_selected_device() {
        let (root, _) = root_with_device();
        let mut io = PciConfigIo::new(root);
        select(&mut io, 3, 0);

        let id = read_u32(&mut io, 4);
        let mut device_id = [0u8; 2];
        io.read(6, &mut device_id);
        let mut vendor_high = [0u8; 1];
        io.read(5, &mut vendor_high);

        assert_eq!(id, 0x5678_1234);
        assert_eq!(u16::from_le_bytes(device_id), 0x5678);
        assert_eq!(vendor_high, [0x12]);
    }

    #[test]
    fn data_port_writes_reach_the_device() {
        let (root, device) = root_with_device();
        let mut io = PciConfigIo::new(root);
        select(&mut io, 3, u32::from(regs::BAR0));

        io.write(4, &0xC000_0000u32.to_le_bytes());
        io.write(5, &[0x12]);

        assert_eq!(
            device.lock().unwrap().config.bar_address(0),
            Some(0xC000_1000)
        );
    }

    #[test]
    fn disabled_address_and_odd_accesses_read_all_ones() {
        let (root, _) = root_with_device();
        let mut io = PciConfigIo::new(root);
        io.write(0, &(3u32 << 11).to_le_bytes());

        let disabled = read_u32(&mut io, 4);
        select(&mut io, 3, 0);
        let mut straddling = [0u8; 2];
        io.read(7, &mut straddling);
        let mut byte_of_address = [0u8; 1];
        io.read(0, &mut byte_of_address);

        assert_eq!(disabled, 0xFFFF_FFFF);
        assert_eq!(straddling, [0xFF; 2]);
        assert_eq!(byte_of_address, [0xFF]);
    }

    #[test]
    fn reset_control_register_resets_the_machine() {
        let (root, _) = root_with_device();
        let power = Arc::new(FakePower::default());
        let mut io = PciConfigIo::with_reset(root, power.clone());

        io.write(1, &[0x02]);
        let mut value = [0u8];
        io.read(1, &mut value);
        io.write(1, &[0x06]);

        assert_eq!(value, [0x02]);
        assert_eq!(power.resets(), 1);
    }

    #[test]
    fn io_state_round_trips_and_rejects_reserved_bits() {
        let (root, _) = root_with_device();
        let mut io = PciConfigIo::new(root.clone());
        select(&mut io, 3, 8);
        let state = io.state();
        let mut fresh = PciConfigIo::new(root);

        fresh.restore(&state).unwrap();

        assert_eq!(fresh.state(), state);
        let bad = PciConfigIoState {
            address: 1,
            reset_control: 0,
        };
        assert_eq!(
            fresh.restore(&bad),
            Err(PciError::IoState {
                field: "address",
                value: 1
            })
        );
    }

    #[test]
    fn ecam_decodes_bus_device_function_register() {
        let (root, _) = root_with_device();
        let mut ecam = PciConfigMmio::new(root);

        let id = read_u32(&mut ecam, 3 << 15);
        let class = read_u32(&mut ecam, (3 << 15) + 8);
        let function_1 = read_u32(&mut ecam, (3 << 15) | (1 << 12));
        let bus_1 = read_u32(&mut ecam, ECAM_BUS_SIZE + (3 << 15));
        let host = read_u32(&mut ecam, 0);

        assert_eq!(id, 0x5678_1234);
        assert_eq!(class >> 8, 0xFF_0000);
        assert_eq!((function_1, bus_1), (0xFFFF_FFFF, 0xFFFF_FFFF));
        assert_eq!(host, 0x1237_8086);
    }

    #[test]
    fn ecam_refuses_accesses_that_cross_a_function() {
        let (root, device) = root_with_device();
        let mut ecam = PciConfigMmio::new(root);

        ecam.write((3 << 15) + 0xFFE, &[1, 2, 3, 4]);
        let value = read_u32(&mut ecam, (3 << 15) + 0xFFE);

        assert_eq!(value, 0xFFFF_FFFF);
        assert!(device.lock().unwrap().written.is_empty());
    }

    #[test]
    fn window_forwards_to_the_decoding_bar_and_answers_ones_elsewhere() {
        let (root, device) = root_with_device();
        root.lock().unwrap().allocate_bars(&windows()).unwrap();
        let mut ecam = PciConfigMmio::new(root.clone());
        ecam.write((3 << 15) + u64::from(regs::COMMAND), &[0x02, 0]);
        let mut window = PciMmioWindow::new(root, 0xC000_0000);

        window.write(0x10, &[9]);
        let mut inside = [0u8; 2];
        window.read(0x20, &mut inside);
        let outside = read_u32(&mut window, 0x1000);
        window.write(u64::MAX, &[1]);

        assert_eq!(device.lock().unwrap().writes, vec![(0, 0x10, vec![9])]);
        assert_eq!(inside, [0x20, 0x21]);
        assert_eq!(outside, 0xFFFF_FFFF);
    }
}
