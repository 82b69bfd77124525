//! Booting a firmware image (`--firmware`, e.g. SeaBIOS's `bios.bin`) instead of a kernel.
//!
//! The machine then looks like a PC at power-on, as QEMU builds one:
//! - the image is mapped read-only so that it ends at 4 GiB (the reset vector `FFFF_FFF0` is
//!   its last 16 bytes); a host whose KVM cannot map memory read-only gets a writable mapping
//!   that is restored from the file's bytes at every boot;
//! - its last 128 KiB are copied into RAM at `0xE0000–0xFFFFF`, the ISA BIOS area. QEMU maps
//!   them there as a read-only alias and the i440FX PAM registers switch that range to RAM,
//!   into which SeaBIOS copies itself from the 4 GiB mapping before it writes its variables.
//!   Our PAM registers are plain bytes over RAM, so the copy gives SeaBIOS the same bytes,
//!   writable, from the first instruction;
//! - no boot tables are written (no zero page, no ACPI, no page tables): the firmware builds
//!   its own, and learns the memory map and CPU count from `fw_cfg` ([`fw_cfg_device`]);
//! - the bootstrap processor starts in its reset state (real mode, `CS` = `F000` with base
//!   `FFFF_0000`, `IP` = `FFF0`) and the other vCPUs wait for INIT/SIPI.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arch::layout;
use devices::fw_cfg::{FwCfg, keys};
use vm_memory::{Bytes, GuestAddress, MmapRegion, VolatileMemory, VolatileSlice};

use crate::config::VmConfig;
use crate::error::VmmError;
use crate::memory::GuestRam;

/// What is wrong with a firmware image.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// The file cannot be opened.
    #[error("cannot open")]
    Open(#[source] std::io::Error),
    /// The file cannot be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// Empty, or not a whole number of 64 KiB blocks.
    #[error("{size} bytes is not a firmware image: its size must be a non-zero multiple of 64 KiB")]
    BadSize {
        /// The file's size.
        size: u64,
    },
    /// Larger than the firmware area below 4 GiB.
    #[error("{size} bytes is too large: a firmware image is at most {max} bytes (16 MiB)")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The host mapping for the image cannot be made or filled.
    #[error("cannot map the image: {0}")]
    Map(String),
    /// The image cannot be copied into guest RAM.
    #[error("cannot copy its last {len} bytes to guest address {addr:#x}: {problem}")]
    IsaCopy {
        /// Where the copy goes.
        addr: u64,
        /// How many bytes.
        len: u64,
        /// Why it failed.
        problem: String,
    },
}

/// A firmware image, held in a host mapping that KVM maps below 4 GiB.
pub struct Firmware {
    path: PathBuf,
    image: Vec<u8>,
    rom: MmapRegion,
}

impl Firmware {
    /// Reads and checks the image at `path`.
    pub fn open(path: &Path) -> Result<Self, VmmError> {
        let failed = |source| VmmError::Firmware {
            path: path.to_path_buf(),
            source,
        };
        let image = read_image(path).map_err(failed)?;
        let rom =
            MmapRegion::new(image.len()).map_err(|e| failed(FirmwareError::Map(e.to_string())))?;
        let firmware = Firmware {
            path: path.to_path_buf(),
            image,
            rom,
        };
        firmware.restore_rom()?;
        Ok(firmware)
    }

    /// Size of the image in bytes.
    pub fn size(&self) -> u64 {
        self.image.len() as u64
    }

    /// Guest-physical address of the image's first byte: it ends at 4 GiB.
    pub fn base(&self) -> u64 {
        layout::MMIO_HOLE_END - self.size()
    }

    fn error(&self, source: FirmwareError) -> VmmError {
        VmmError::Firmware {
            path: self.path.clone(),
            source,
        }
    }

    /// Puts the file's bytes back into the ROM mapping (a writable mapping may have been
    /// changed by the guest).
    fn restore_rom(&self) -> Result<(), VmmError> {
        let slice: VolatileSlice<'_, _> = self
            .rom
            .get_slice(0, self.image.len())
            .map_err(|e| self.error(FirmwareError::Map(e.to_string())))?;
        slice.copy_from(&self.image);
        Ok(())
    }

    /// Maps the image into `vm`, read-only where KVM can.
    pub fn map_into(&self, vm: &mut hypervisor::Vm) -> Result<(), VmmError> {
        let slot = hypervisor::MemorySlot {
            guest_addr: self.base(),
            size: self.size(),
            host_addr: self.rom.as_ptr() as u64,
        };
        // SAFETY: `self.rom` is an anonymous mapping owned by this `Firmware`, which the
        // `Machine` keeps for its whole life, longer than any of its KVM VMs.
        let read_only = unsafe { vm.add_rom(slot)? };
        if !read_only {
            tracing::warn!(
                "this host's KVM cannot map memory read-only: the firmware is writable by the \
                 guest until the next boot"
            );
            // SAFETY: as above.
            unsafe { vm.add_writable_rom(slot)? };
        }
        Ok(())
    }

    /// Prepares a boot: restores the ROM mapping and copies the image's last 128 KiB (all of a
    /// smaller image) to the ISA BIOS area, so that it ends at 1 MiB.
    pub fn load(&self, memory: &GuestRam) -> Result<(), VmmError> {
        self.restore_rom()?;
        let len = self.size().min(layout::ISA_BIOS_MAX_SIZE);
        let addr = layout::HIGH_RAM_START - len;
        let tail = &self.image[self.image.len() - len as usize..];
        memory.write_slice(tail, GuestAddress(addr)).map_err(|e| {
            self.error(FirmwareError::IsaCopy {
                addr,
                len,
                problem: e.to_string(),
            })
        })
    }
}

fn read_image(path: &Path) -> Result<Vec<u8>, FirmwareError> {
    let mut file = File::open(path).map_err(FirmwareError::Open)?;
    let metadata = file.metadata().map_err(FirmwareError::Read)?;
    if metadata.is_dir() {
        return Err(FirmwareError::Read(std::io::Error::from_raw_os_error(
            libc::EISDIR,
        )));
    }
    let size = metadata.len();
    check_size(size)?;
    let mut image = Vec::with_capacity(size as usize);
    // One byte more than announced, to notice a file that grew while it was read.
    file.by_ref()
        .take(size + 1)
        .read_to_end(&mut image)
        .map_err(FirmwareError::Read)?;
    check_size(image.len() as u64)?;
    Ok(image)
}

fn check_size(size: u64) -> Result<(), FirmwareError> {
    if size > layout::FIRMWARE_MAX_SIZE {
        return Err(FirmwareError::TooLarge {
            size,
            max: layout::FIRMWARE_MAX_SIZE,
        });
    }
    if size == 0 || !size.is_multiple_of(layout::FIRMWARE_SIZE_GRANULE) {
        return Err(FirmwareError::BadSize { size });
    }
    Ok(())
}

/// QEMU's `etc/e820` file: packed little-endian `{u64 address, u64 length, u32 type}` entries.
fn etc_e820(entries: &[arch::memory::E820Entry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * 20);
    for entry in entries {
        bytes.extend_from_slice(&entry.addr.to_le_bytes());
        bytes.extend_from_slice(&entry.size.to_le_bytes());
        bytes.extend_from_slice(&entry.kind.to_le_bytes());
    }
    bytes
}

/// The `fw_cfg` device of a firmware boot: the memory map (`etc/e820`, which SeaBIOS prefers to
/// the CMOS sizes), the CPU count, no boot menu (its key wait needs a timer interrupt this
/// platform does not have) and no graphics (SeaBIOS then mirrors its screen on COM1).
pub fn fw_cfg_device(config: &VmConfig) -> Result<FwCfg, VmmError> {
    let mut fw_cfg = FwCfg::new();
    let cpus = u16::from(config.cpus.count);
    fw_cfg.set_u16(keys::NB_CPUS, cpus);
    fw_cfg.set_u16(keys::MAX_CPUS, cpus);
    fw_cfg.set_u16(keys::BOOT_MENU, 0);
    fw_cfg.set_u16(keys::NOGRAPHIC, 1);
    let map = arch::memory::firmware_e820_map(config.memory.bytes());
    fw_cfg
        .add_file("etc/e820", etc_e820(&map))
        .map_err(|e| VmmError::Device {
            device: "fw_cfg",
            problem: e.to_string(),
        })?;
    Ok(fw_cfg)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn image_file(bytes: &[u8]) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(bytes)
    }

    /// A file under the target directory, removed when dropped (no tempfile dependency).
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct TempPath(pub PathBuf);

        impl TempPath {
            pub fn with(bytes: &[u8]) -> Self {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("oxvmm-firmware-{}-{n}.bin", std::process::id()));
                std::fs::write(&path, bytes).unwrap();
                TempPath(path)
            }
        }

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn sizes_are_checked_with_the_reason() {
        let empty = image_file(&[]);
        let odd = image_file(&[0u8; 0x1_0001]);

        let empty_err = Firmware::open(&empty.0).err().unwrap();
        let odd_err = Firmware::open(&odd.0).err().unwrap();
        let missing_err = Firmware::open(Path::new("/nonexistent/bios.bin"))
            .err()
            .unwrap();

        assert!(matches!(
            empty_err,
            VmmError::Firmware {
                source: FirmwareError::BadSize { size: 0 },
                ..
            }
        ));
        assert!(
            format!("{:?}", std::error::Error::source(&odd_err)).contains("65537"),
            "{odd_err:?}"
        );
        assert!(
            missing_err
                .to_string()
                .contains("--firmware /nonexistent/bios.bin")
        );
        assert!(matches!(
            check_size(layout::FIRMWARE_MAX_SIZE + layout::FIRMWARE_SIZE_GRANULE),
            Err(FirmwareError::TooLarge { .. })
        ));
        assert!(check_size(layout::FIRMWARE_MAX_SIZE).is_ok());
    }

    #[test]
    fn load_copies_the_last_128k_below_one_mib() {
        let mut bytes = vec![0u8; 256 << 10];
        bytes[(128 << 10) - 1] = 0x11; // just outside the copied tail
        bytes[128 << 10] = 0x22; // first byte of the tail
        *bytes.last_mut().unwrap() = 0x33;
        let file = image_file(&bytes);
        let firmware = Firmware::open(&file.0).unwrap();
        let memory = crate::memory::create_guest_memory(4).unwrap();

        firmware.load(&memory).unwrap();

        assert_eq!(firmware.base(), 0xFFFC_0000);
        let first: u8 = memory.read_obj(GuestAddress(0xE_0000)).unwrap();
        let last: u8 = memory.read_obj(GuestAddress(0xF_FFFF)).unwrap();
        let below: u8 = memory.read_obj(GuestAddress(0xD_FFFF)).unwrap();
        assert_eq!((first, last, below), (0x22, 0x33, 0));
    }

    #[test]
    fn a_small_image_ends_at_one_mib_too() {
        let mut bytes = vec![0u8; 64 << 10];
        bytes[0] = 0x44;
        let file = image_file(&bytes);
        let firmware = Firmware::open(&file.0).unwrap();
        let memory = crate::memory::create_guest_memory(4).unwrap();

        firmware.load(&memory).unwrap();

        let first: u8 = memory.read_obj(GuestAddress(0xF_0000)).unwrap();
        assert_eq!(first, 0x44);
    }

    #[test]
    fn etc_e820_is_packed_little_endian() {
        let bytes = etc_e820(&[arch::memory::E820Entry {
            addr: 0x1000,
            size: 0x2000,
            kind: 2,
        }]);

        let mut expected = Vec::new();
        expected.write_all(&0x1000u64.to_le_bytes()).unwrap();
        expected.write_all(&0x2000u64.to_le_bytes()).unwrap();
        expected.write_all(&2u32.to_le_bytes()).unwrap();
        assert_eq!(bytes, expected);
    }
}
