//! Loading a payload into guest memory: the kernel (ELF or bzImage), the initrd, the command
//! line, and the tables a kernel reads at boot (zero page or PVH start info, e820, ACPI, page
//! tables, GDT).

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arch::boot::ZeroPageConfig;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{KernelLoader, KernelLoaderResult, bzimage::BzImage, elf::Elf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::config::{BUILTIN_OXGUEST, BUILTIN_PREFIX, BootProtocol, PayloadConfig};
use crate::error::{KernelError, VmmError};
use crate::memory::GuestRam;

/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Size of the buffer `Cmdline` builds the command line in when the kernel does not say.
const DEFAULT_CMDLINE_CAPACITY: usize = 4096;

/// How the bootstrap processor enters the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// Linux 64-bit boot protocol: long mode, RSI = zero page.
    Linux64(u64),
    /// PVH: 32-bit protected mode, EBX = start info.
    Pvh(u64),
}

/// A kernel image opened for loading, with the name used in errors.
pub struct KernelImage {
    name: PathBuf,
    source: ImageSource,
}

/// Where the kernel's bytes come from.
enum ImageSource {
    File(File),
    Builtin(Cursor<&'static [u8]>),
}

/// What the loaders need of an image.
trait ImageReader: Read + Seek + vm_memory::ReadVolatile {}
impl<T: Read + Seek + vm_memory::ReadVolatile> ImageReader for T {}

impl KernelImage {
    /// Opens `--kernel`: a file, or one of the guests embedded in this binary.
    pub fn open(path: &Path) -> Result<Self, VmmError> {
        let text = path.to_string_lossy();
        let source = if text.starts_with(BUILTIN_PREFIX) {
            if text != BUILTIN_OXGUEST {
                return Err(VmmError::Kernel {
                    path: path.to_path_buf(),
                    source: KernelError::UnknownBuiltin,
                });
            }
            ImageSource::Builtin(Cursor::new(guests::OXGUEST_ELF))
        } else {
            let file = File::open(path).map_err(|e| VmmError::Kernel {
                path: path.to_path_buf(),
                source: KernelError::Open(e),
            })?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(VmmError::Kernel {
                    path: path.to_path_buf(),
                    source: KernelError::Read(std::io::Error::from_raw_os_error(libc::EISDIR)),
                });
            }
            ImageSource::File(file)
        };
        Ok(KernelImage {
            name: path.to_path_buf(),
            source,
        })
    }
}

/// Reads the first bytes to tell an ELF from a bzImage.
fn sniff_format<R: ImageReader>(reader: &mut R) -> Result<KernelFormat, KernelError> {
    let mut header = [0u8; 0x208];
    reader.rewind().map_err(KernelError::Read)?;
    let read = read_up_to(reader, &mut header).map_err(KernelError::Read)?;
    reader.rewind().map_err(KernelError::Read)?;
    if read >= 4 && header[..4] == *b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    if read >= 0x206 && header[0x202..0x206] == *b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(KernelError::NotAKernel)
}

fn read_up_to<R: ImageReader>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match reader.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelFormat {
    Elf,
    BzImage,
}

/// The result of loading the kernel image itself.
struct LoadedKernel {
    entry: EntryPoint,
    end: u64,
    header: Option<setup_header>,
}

fn load_kernel(
    memory: &GuestRam,
    image: &mut KernelImage,
    protocol: BootProtocol,
) -> Result<LoadedKernel, KernelError> {
    match &mut image.source {
        ImageSource::File(file) => load_kernel_from(memory, file, protocol),
        ImageSource::Builtin(cursor) => load_kernel_from(memory, cursor, protocol),
    }
}

fn load_kernel_from<R: ImageReader>(
    memory: &GuestRam,
    reader: &mut R,
    protocol: BootProtocol,
) -> Result<LoadedKernel, KernelError> {
    let format = sniff_format(reader)?;
    let highmem = Some(GuestAddress(arch::layout::HIGH_RAM_START));
    let ram_top = memory.last_addr().0.saturating_add(1);
    let memory_mib = (memory.iter().map(|r| r.len()).sum::<u64>()) >> 20;
    let check_fits = |end: u64| {
        if end > ram_top.min(arch::layout::MMIO_HOLE_START) {
            Err(KernelError::DoesNotFit { end, memory_mib })
        } else {
            Ok(())
        }
    };
    match format {
        KernelFormat::Elf => {
            check_fits(elf_load_end(reader)?)?;
            let result = Elf::load(memory, None, reader, highmem)
                .map_err(|e| KernelError::Load(e.to_string()))?;
            Ok(LoadedKernel {
                entry: elf_entry(&result, protocol)?,
                end: result.kernel_end,
                header: None,
            })
        }
        KernelFormat::BzImage => {
            if protocol == BootProtocol::Pvh {
                return Err(KernelError::NoPvhEntry);
            }
            let file_end = reader.seek(SeekFrom::End(0)).map_err(KernelError::Read)?;
            check_fits(arch::layout::HIGH_RAM_START.saturating_add(file_end))?;
            let result = BzImage::load(memory, None, reader, highmem)
                .map_err(|e| KernelError::Load(e.to_string()))?;
            let header = result.setup_header.ok_or(KernelError::NotAKernel)?;
            if header.version < 0x020c || header.xloadflags & 1 == 0 {
                return Err(KernelError::No64BitEntry);
            }
            // The kernel decompresses itself to its preferred address and needs `init_size`
            // bytes there.
            check_fits(
                header
                    .pref_address
                    .saturating_add(u64::from(header.init_size)),
            )?;
            Ok(LoadedKernel {
                entry: EntryPoint::Linux64(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                end: result.kernel_end,
                header: Some(header),
            })
        }
    }
}

/// The first byte after every loadable segment of an ELF image (its physical extent).
fn elf_load_end<R: ImageReader>(reader: &mut R) -> Result<u64, KernelError> {
    const PHDR_SIZE: usize = 56;
    const MAX_PHDRS: u16 = 512;
    let mut header = [0u8; 64];
    reader.rewind().map_err(KernelError::Read)?;
    reader
        .read_exact(&mut header)
        .map_err(|_| KernelError::NotAKernel)?;
    if header[4] != 2 || header[5] != 1 {
        return Err(KernelError::Load(
            "not a 64-bit little-endian ELF".to_string(),
        ));
    }
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().unwrap_or_default());
    let phentsize = u16::from_le_bytes([header[0x36], header[0x37]]);
    let phnum = u16::from_le_bytes([header[0x38], header[0x39]]);
    if usize::from(phentsize) != PHDR_SIZE || phnum > MAX_PHDRS {
        return Err(KernelError::Load(format!(
            "bad ELF program header table ({phnum} entries of {phentsize} bytes)"
        )));
    }
    reader
        .seek(SeekFrom::Start(phoff))
        .map_err(KernelError::Read)?;
    let mut end = 0u64;
    for _ in 0..phnum {
        let mut phdr = [0u8; PHDR_SIZE];
        reader
            .read_exact(&mut phdr)
            .map_err(|_| KernelError::Load("truncated ELF program headers".to_string()))?;
        let p_type = u32::from_le_bytes([phdr[0], phdr[1], phdr[2], phdr[3]]);
        let paddr = u64::from_le_bytes(phdr[0x18..0x20].try_into().unwrap_or_default());
        let memsz = u64::from_le_bytes(phdr[0x28..0x30].try_into().unwrap_or_default());
        const PT_LOAD: u32 = 1;
        if p_type == PT_LOAD {
            end = end.max(paddr.saturating_add(memsz));
        }
    }
    reader.rewind().map_err(KernelError::Read)?;
    Ok(end)
}

fn elf_entry(
    result: &KernelLoaderResult,
    protocol: BootProtocol,
) -> Result<EntryPoint, KernelError> {
    let pvh = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => Some(addr.0),
        _ => None,
    };
    match (protocol, pvh) {
        (BootProtocol::Auto | BootProtocol::Pvh, Some(addr)) => Ok(EntryPoint::Pvh(addr)),
        (BootProtocol::Pvh, None) => Err(KernelError::NoPvhEntry),
        _ => Ok(EntryPoint::Linux64(result.kernel_load.0)),
    }
}

/// Everything about the guest the boot tables describe.
pub struct BootEnvironment<'a> {
    /// The payload settings.
    pub payload: &'a PayloadConfig,
    /// Guest RAM size in bytes.
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpu_count: u8,
}

/// Loads the kernel, initrd and command line and writes every boot table. Returns the entry.
pub fn load_payload(
    memory: &GuestRam,
    kernel: &mut KernelImage,
    env: &BootEnvironment<'_>,
) -> Result<EntryPoint, VmmError> {
    let name = kernel.name.clone();
    let kernel_err = |source| VmmError::Kernel {
        path: name.clone(),
        source,
    };
    let loaded = load_kernel(memory, kernel, env.payload.boot_protocol).map_err(kernel_err)?;
    let low_top = arch::memory::low_ram_top(env.memory_bytes);
    if loaded.end > low_top {
        return Err(kernel_err(KernelError::DoesNotFit {
            end: loaded.end,
            memory_mib: env.memory_bytes >> 20,
        }));
    }
    let cmdline_size = write_cmdline(memory, &env.payload.cmdline, loaded.header.as_ref())?;
    let initrd = match &env.payload.initrd {
        Some(path) => Some(load_initrd(memory, path, env, &loaded)?),
        None => None,
    };
    let e820 = arch::memory::e820_map(env.memory_bytes);
    let rsdp = arch::acpi::create_acpi_tables(
        memory,
        &arch::acpi::AcpiConfig {
            vcpu_count: env.vcpu_count,
        },
    )
    .map_err(|e| VmmError::BootTables(e.to_string()))?;
    arch::boot::setup_page_tables(memory).map_err(|e| VmmError::BootTables(e.to_string()))?;
    arch::boot::setup_gdt(memory).map_err(|e| VmmError::BootTables(e.to_string()))?;
    match loaded.entry {
        EntryPoint::Linux64(_) => arch::boot::write_linux_zero_page(
            memory,
            &ZeroPageConfig {
                setup_header: loaded.header,
                cmdline_addr: arch::layout::CMDLINE,
                cmdline_size,
                initrd,
                e820: &e820,
                rsdp_addr: rsdp.0,
            },
        ),
        EntryPoint::Pvh(_) => {
            arch::boot::write_pvh_start_info(memory, arch::layout::CMDLINE, initrd, &e820, rsdp.0)
        }
    }
    .map_err(|e| VmmError::BootTables(e.to_string()))?;
    Ok(loaded.entry)
}

fn write_cmdline(
    memory: &GuestRam,
    text: &str,
    header: Option<&setup_header>,
) -> Result<u32, VmmError> {
    let capacity = match header.map(|h| h.cmdline_size) {
        Some(size) if size > 0 => (size as usize).saturating_add(1),
        _ => DEFAULT_CMDLINE_CAPACITY,
    }
    .min(arch::layout::CMDLINE_MAX as usize);
    let too_long = || {
        VmmError::Cmdline(format!(
            "{} bytes is longer than the kernel accepts ({} bytes)",
            text.len(),
            capacity - 1
        ))
    };
    let mut cmdline = Cmdline::new(capacity).map_err(|e| VmmError::Cmdline(e.to_string()))?;
    if !text.is_empty() {
        cmdline.insert_str(text).map_err(|e| match e {
            linux_loader::cmdline::Error::TooLarge => too_long(),
            other => VmmError::Cmdline(other.to_string()),
        })?;
    }
    linux_loader::loader::load_cmdline(memory, GuestAddress(arch::layout::CMDLINE), &cmdline)
        .map_err(|e| VmmError::Cmdline(e.to_string()))?;
    Ok(text.len() as u32)
}

fn load_initrd(
    memory: &GuestRam,
    path: &Path,
    env: &BootEnvironment<'_>,
    kernel: &LoadedKernel,
) -> Result<(u64, u64), VmmError> {
    let initrd_err = |source| VmmError::Initrd {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(|e| initrd_err(KernelError::Open(e)))?;
    let size = file
        .metadata()
        .map_err(|e| initrd_err(KernelError::Read(e)))?
        .len();
    let addr_max = kernel.header.map(|h| h.initrd_addr_max);
    let addr = arch::boot::initrd_load_addr(env.memory_bytes, size, addr_max, kernel.end)
        .map_err(|e| initrd_err(KernelError::Load(e.to_string())))?;
    memory
        .read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| initrd_err(KernelError::Load(e.to_string())))?;
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use vm_memory::Address;

    use super::*;

    #[test]
    fn formats_are_told_apart_by_their_magic() {
        let mut elf = Cursor::new(b"\x7fELF\x02\x01\x01".to_vec());
        assert_eq!(sniff_format(&mut elf).unwrap(), KernelFormat::Elf);

        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(
            sniff_format(&mut Cursor::new(bz)).unwrap(),
            KernelFormat::BzImage
        );

        let err = sniff_format(&mut Cursor::new(b"#!/bin/sh\n".to_vec())).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel));
    }

    /// A minimal ELF64 header with one PT_LOAD segment at `paddr` of `memsz` bytes.
    fn tiny_elf(paddr: u64, memsz: u64) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        elf[64 + 0x18..64 + 0x20].copy_from_slice(&paddr.to_le_bytes());
        elf[64 + 0x28..64 + 0x30].copy_from_slice(&memsz.to_le_bytes());
        elf
    }

    #[test]
    fn elf_extent_covers_every_loadable_segment() {
        let mut elf = Cursor::new(tiny_elf(0x100_0000, 0x20_0000));
        assert_eq!(elf_load_end(&mut elf).unwrap(), 0x120_0000);

        let mut bad = tiny_elf(0, 0);
        bad[0x36] = 40;
        assert!(elf_load_end(&mut Cursor::new(bad)).is_err());
        let truncated = tiny_elf(0, 0)[..80].to_vec();
        assert!(elf_load_end(&mut Cursor::new(truncated)).is_err());
    }

    #[test]
    fn a_kernel_larger_than_memory_is_refused_before_loading() {
        let memory = crate::memory::create_guest_memory(4).unwrap();
        let mut elf = Cursor::new(tiny_elf(0x100_0000, 0x1000));

        let err = load_kernel_from(&memory, &mut elf, BootProtocol::Auto)
            .err()
            .unwrap();

        assert!(
            err.to_string().contains("does not fit in guest memory"),
            "{err}"
        );
        assert!(err.to_string().contains("4 MiB"), "{err}");
    }

    fn payload(cmdline: &str, protocol: BootProtocol) -> PayloadConfig {
        PayloadConfig {
            kernel: PathBuf::from(BUILTIN_OXGUEST),
            firmware: None,
            initrd: None,
            cmdline: cmdline.to_string(),
            boot_protocol: protocol,
        }
    }

    #[test]
    fn linux64_boot_writes_the_zero_page_and_command_line() {
        let memory = crate::memory::create_guest_memory(64).unwrap();
        let mut kernel = KernelImage::open(Path::new(BUILTIN_OXGUEST)).unwrap();
        let payload = payload("serial token=42", BootProtocol::Linux64);
        let env = BootEnvironment {
            payload: &payload,
            memory_bytes: 64 << 20,
            vcpu_count: 2,
        };

        let entry = load_payload(&memory, &mut kernel, &env).unwrap();

        assert!(matches!(entry, EntryPoint::Linux64(_)));
        let zero_page = GuestAddress(arch::layout::ZERO_PAGE);
        let cmd_line_ptr: u32 = memory.read_obj(zero_page.unchecked_add(0x228)).unwrap();
        assert_eq!(u64::from(cmd_line_ptr), arch::layout::CMDLINE);
        let mut text = [0u8; 16];
        memory
            .read_slice(&mut text, GuestAddress(arch::layout::CMDLINE))
            .unwrap();
        assert_eq!(&text, b"serial token=42\0");
        let e820_entries: u8 = memory.read_obj(zero_page.unchecked_add(0x1e8)).unwrap();
        assert_eq!(
            usize::from(e820_entries),
            arch::memory::e820_map(64 << 20).len()
        );
        let rsdp: u64 = memory.read_obj(zero_page.unchecked_add(0x70)).unwrap();
        assert_eq!(rsdp, arch::layout::RSDP);
    }

    #[test]
    fn pvh_boot_writes_the_start_info() {
        let memory = crate::memory::create_guest_memory(64).unwrap();
        let mut kernel = KernelImage::open(Path::new(BUILTIN_OXGUEST)).unwrap();
        let payload = payload("", BootProtocol::Auto);
        let env = BootEnvironment {
            payload: &payload,
            memory_bytes: 64 << 20,
            vcpu_count: 1,
        };

        let entry = load_payload(&memory, &mut kernel, &env).unwrap();

        assert!(matches!(entry, EntryPoint::Pvh(_)));
        let magic: u32 = memory
            .read_obj(GuestAddress(arch::layout::PVH_INFO))
            .unwrap();
        assert_eq!(magic, 0x336e_c578);
    }

    #[test]
    fn unknown_builtins_and_directories_are_refused() {
        let err = KernelImage::open(Path::new("builtin:nope")).err().unwrap();
        assert!(err.to_string().contains("--kernel builtin:nope"), "{err}");
        assert!(KernelImage::open(Path::new("/")).is_err());
    }

    /// xorshift64: a small deterministic generator for the mutation test.
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn mutated_kernel_images_are_refused_or_loaded_without_panicking() {
        // Kernel files are user input: flip random bytes of a real ELF and of a synthetic
        // bzImage header and load the result into a small guest.
        let memory = crate::memory::create_guest_memory(8).unwrap();
        let mut bz = vec![0u8; 0x1000];
        bz[0x1f1] = 1;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let seeds: [&[u8]; 2] = [guests::OXGUEST_ELF, &bz];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..600 {
            let mut image = seeds[round % seeds.len()].to_vec();
            let header_len = image.len().min(0x300);
            for _ in 0..(1 + next_random(&mut state) % 8) {
                let at = (next_random(&mut state) as usize) % header_len;
                image[at] = next_random(&mut state) as u8;
            }
            if round % 7 == 0 {
                let keep = (next_random(&mut state) as usize) % image.len();
                image.truncate(keep);
            }
            for protocol in [BootProtocol::Auto, BootProtocol::Linux64] {
                let _ = load_kernel_from(&memory, &mut Cursor::new(image.as_slice()), protocol);
            }
        }
    }

    #[test]
    fn elf_entry_prefers_pvh_only_when_asked_or_automatic() {
        let result = KernelLoaderResult {
            kernel_load: GuestAddress(0x100000),
            pvh_boot_cap: PvhBootCapability::PvhEntryPresent(GuestAddress(0x100040)),
            ..Default::default()
        };
        assert_eq!(
            elf_entry(&result, BootProtocol::Auto).unwrap(),
            EntryPoint::Pvh(0x100040)
        );
        assert_eq!(
            elf_entry(&result, BootProtocol::Linux64).unwrap(),
            EntryPoint::Linux64(0x100000)
        );
        let no_pvh = KernelLoaderResult {
            pvh_boot_cap: PvhBootCapability::PvhEntryNotPresent,
            ..result
        };
        assert!(matches!(
            elf_entry(&no_pvh, BootProtocol::Pvh),
            Err(KernelError::NoPvhEntry)
        ));
    }
}
