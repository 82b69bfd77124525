//! QEMU's firmware configuration interface (`fw_cfg`), the traditional port interface only:
//! how a firmware such as SeaBIOS learns what the VMM wants it to know (the e820 map, the CPU
//! count, that there is no screen, no boot menu).
//!
//! Two ports from the base (0x510 on x86): offset 0 is the 16-bit selector, offset 1 the data
//! port. Writing a key to the selector picks an item and rewinds it; each byte read from the
//! data port is the item's next byte, zero past its end or for an unknown key. There is no DMA
//! interface (the ID item says so), and data-port writes are ignored, as QEMU ignores them
//! since 2.4. Items are the legacy numbered keys ([`keys`]) and named files, which the file
//! directory (key 0x19) lists with big-endian sizes and keys, as QEMU's does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BusDevice;

/// Keys of the items this device knows, as QEMU numbers them.
pub mod keys {
    /// The signature, "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Interface features: bit 0 traditional interface, bit 1 DMA.
    pub const ID: u16 = 0x01;
    /// Nonzero when the machine has no graphics: SeaBIOS then uses COM1 as its console.
    pub const NOGRAPHIC: u16 = 0x04;
    /// Number of CPUs present at boot (16 bits).
    pub const NB_CPUS: u16 = 0x05;
    /// Whether to show the boot menu (16 bits).
    pub const BOOT_MENU: u16 = 0x0e;
    /// Largest CPU count (16 bits).
    pub const MAX_CPUS: u16 = 0x0f;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// Key of the first file.
    pub const FIRST_FILE: u16 = 0x20;
}

/// Files a device can hold (QEMU's default number of file slots).
pub const MAX_FILES: usize = 0x20;
/// Longest file name in bytes; the directory entry has 56 bytes with the terminating NUL.
pub const MAX_FILE_NAME: usize = 55;
/// The ID item: the traditional interface, no DMA.
const ID_TRADITIONAL: u32 = 1;
/// Bytes of one directory entry: size (4), select (2), reserved (2), name (56).
const DIR_ENTRY_SIZE: usize = 64;
/// Port offsets.
const SELECTOR_OFFSET: u64 = 0;
const DATA_OFFSET: u64 = 1;

/// Why an item cannot be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// The name is empty, too long or has a NUL byte.
    #[error("fw_cfg file name {name:?} must be 1 to {MAX_FILE_NAME} bytes without NUL")]
    BadName {
        /// The name given.
        name: String,
    },
    /// A file of that name exists.
    #[error("fw_cfg file {name:?} already exists")]
    Duplicate {
        /// The name given.
        name: String,
    },
    /// Every file slot is taken.
    #[error("fw_cfg holds at most {MAX_FILES} files; cannot add {name:?}")]
    Full {
        /// The name given.
        name: String,
    },
    /// An item larger than its 32-bit size field.
    #[error("fw_cfg item {name:?} of {size} bytes is larger than 4 GiB")]
    TooLarge {
        /// The name (or key) of the item.
        name: String,
        /// Its size.
        size: usize,
    },
}

/// The guest-visible state: which item is selected and how far it has been read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwCfgState {
    /// The selected key.
    pub selector: u16,
    /// Bytes of the selected item read so far.
    pub offset: u32,
}

/// The `fw_cfg` device.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    state: FwCfgState,
}

impl Default for FwCfg {
    fn default() -> Self {
        Self::new()
    }
}

impl FwCfg {
    /// A device with the signature, the ID item and an empty file directory.
    pub fn new() -> Self {
        let mut device = FwCfg {
            items: BTreeMap::new(),
            files: Vec::new(),
            state: FwCfgState::default(),
        };
        device.items.insert(keys::SIGNATURE, b"QEMU".to_vec());
        device
            .items
            .insert(keys::ID, ID_TRADITIONAL.to_le_bytes().to_vec());
        device.rebuild_directory();
        device
    }

    /// Sets a legacy numbered item to a 16-bit little-endian value (as QEMU stores them).
    pub fn set_u16(&mut self, key: u16, value: u16) {
        self.items.insert(key, value.to_le_bytes().to_vec());
    }

    /// Adds a named file and lists it in the directory; returns its key.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() > MAX_FILE_NAME || name.contains('\0') {
            return Err(FwCfgError::BadName { name: name.into() });
        }
        if self.files.iter().any(|(existing, _)| existing == name) {
            return Err(FwCfgError::Duplicate { name: name.into() });
        }
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::Full { name: name.into() });
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge {
                name: name.into(),
                size: data.len(),
            });
        }
        let key = keys::FIRST_FILE + self.files.len() as u16;
        self.items.insert(key, data);
        self.files.push((name.to_string(), key));
        self.rebuild_directory();
        Ok(key)
    }

    /// The bytes of the item under `key`, if any.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&key).map(Vec::as_slice)
    }

    /// The guest-visible state.
    pub fn state(&self) -> FwCfgState {
        self.state
    }

    /// Puts back a state from [`FwCfg::state`]. Any value is one the device can be in: an
    /// unknown key or an offset past the end just reads zeros.
    pub fn restore(&mut self, state: &FwCfgState) {
        self.state = *state;
    }

    /// Power-on state: the signature selected, nothing read.
    pub fn reset(&mut self) {
        self.state = FwCfgState::default();
    }

    fn rebuild_directory(&mut self) {
        let mut dir = Vec::with_capacity(4 + self.files.len() * DIR_ENTRY_SIZE);
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (name, key) in &self.files {
            let size = self.items.get(key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; DIR_ENTRY_SIZE - 8];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
        }
        self.items.insert(keys::FILE_DIR, dir);
    }

    fn next_data_byte(&mut self) -> u8 {
        let item = self.items.get(&self.state.selector);
        let byte = item
            .and_then(|bytes| bytes.get(self.state.offset as usize))
            .copied()
            .unwrap_or(0);
        self.state.offset = self.state.offset.saturating_add(1);
        byte
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            // Every byte of a wider access is the next byte, as a string read would give.
            DATA_OFFSET => data.iter_mut().for_each(|b| *b = self.next_data_byte()),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != SELECTOR_OFFSET {
            return;
        }
        let key = match data {
            [low] => u16::from(*low),
            [low, high, ..] => u16::from_le_bytes([*low, *high]),
            [] => return,
        };
        self.state = FwCfgState {
            selector: key,
            offset: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(device: &mut FwCfg, key: u16) {
        device.write(SELECTOR_OFFSET, &key.to_le_bytes());
    }

    fn read_bytes(device: &mut FwCfg, count: usize) -> Vec<u8> {
        (0..count)
            .map(|_| {
                let mut byte = [0u8];
                device.read(DATA_OFFSET, &mut byte);
                byte[0]
            })
            .collect()
    }

    #[test]
    fn signature_and_id_say_qemu_without_dma() {
        let mut device = FwCfg::new();

        select(&mut device, keys::SIGNATURE);
        let signature = read_bytes(&mut device, 4);
        select(&mut device, keys::ID);
        let id = read_bytes(&mut device, 4);

        assert_eq!(signature, b"QEMU");
        assert_eq!(id, [1, 0, 0, 0]);
    }

    #[test]
    fn the_directory_lists_files_big_endian_and_files_read_back() {
        let mut device = FwCfg::new();
        let key = device.add_file("etc/e820", vec![1, 2, 3]).unwrap();

        select(&mut device, keys::FILE_DIR);
        let dir = read_bytes(&mut device, 4 + DIR_ENTRY_SIZE);
        select(&mut device, key);
        let mut wide = [0u8; 5];
        device.read(DATA_OFFSET, &mut wide);

        assert_eq!(key, keys::FIRST_FILE);
        assert_eq!(dir[..4], [0, 0, 0, 1]);
        assert_eq!(dir[4..8], [0, 0, 0, 3], "size, big-endian");
        assert_eq!(dir[8..10], [0, 0x20], "select, big-endian");
        assert_eq!(&dir[12..20], b"etc/e820");
        assert!(dir[20..].iter().all(|&b| b == 0));
        assert_eq!(
            wide,
            [1, 2, 3, 0, 0],
            "a wide read continues, zeros past the end"
        );
    }

    #[test]
    fn selecting_rewinds_and_unknown_keys_read_zero() {
        let mut device = FwCfg::new();
        device.set_u16(keys::NB_CPUS, 0x0102);
        select(&mut device, keys::NB_CPUS);
        read_bytes(&mut device, 1);

        select(&mut device, keys::NB_CPUS);
        let again = read_bytes(&mut device, 2);
        select(&mut device, 0x7777);
        let unknown = read_bytes(&mut device, 3);

        assert_eq!(again, [0x02, 0x01]);
        assert_eq!(unknown, [0, 0, 0]);
    }

    #[test]
    fn bad_files_are_refused_with_the_name() {
        let mut device = FwCfg::new();
        device.add_file("a", vec![]).unwrap();

        let long = "x".repeat(MAX_FILE_NAME + 1);
        assert!(matches!(
            device.add_file(&long, vec![]),
            Err(FwCfgError::BadName { .. })
        ));
        assert!(matches!(
            device.add_file("", vec![]),
            Err(FwCfgError::BadName { .. })
        ));
        let duplicate = device.add_file("a", vec![]).unwrap_err();
        assert!(duplicate.to_string().contains("\"a\""), "{duplicate}");
        for n in 1..MAX_FILES {
            device.add_file(&format!("f{n}"), vec![]).unwrap();
        }
        assert!(matches!(
            device.add_file("one-too-many", vec![]),
            Err(FwCfgError::Full { .. })
        ));
    }

    #[test]
    fn state_round_trips_and_reset_selects_the_signature() {
        let mut device = FwCfg::new();
        select(&mut device, keys::SIGNATURE);
        read_bytes(&mut device, 2);
        let saved = device.state();

        let mut other = FwCfg::new();
        other.restore(&saved);
        let rest = read_bytes(&mut other, 2);
        other.reset();

        assert_eq!(rest, b"MU");
        assert_eq!(other.state(), FwCfgState::default());
    }

    #[test]
    fn any_guest_access_is_harmless() {
        let mut device = FwCfg::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let offset = state % 4;
            let len = (state >> 8) as usize % 9;
            let mut data = vec![(state >> 16) as u8; len];
            if state & (1 << 40) == 0 {
                device.read(offset, &mut data);
            } else {
                device.write(offset, &data);
            }
        }
        device.state.offset = u32::MAX;
        read_bytes(&mut device, 2);
    }
}
