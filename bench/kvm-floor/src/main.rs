//! kvm-floor: the least any VMM must do to run the bundled guest's `poweroff` scenario, as the
//! floor that `boot-bench` compares oxvmm against.
//!
//! It creates a VM with one memory slot and one vCPU (no irqchip, no CPUID, no devices), loads
//! the guest ELF's PT_LOAD segments at their physical addresses, and enters it through the Linux
//! 64-bit boot protocol: identity page tables for the first GiB, a GDT with 64-bit code at 0x10
//! and data at 0x18, RSI = a zero page holding only `cmd_line_ptr`. The only device is the part
//! of a UART the guest needs (bytes written to 0x3F8 go to stdout; the line status register
//! reads "transmitter empty"), and a 16-bit write of SLP_EN to ACPI PM1a_CNT (0x604) is
//! power-off. It is a measuring stick, not a VMM: anything else the guest does ends the run.
//!
//! One addition keeps the guest's own work equal to what it does under oxvmm: the zero page
//! points (`acpi_rsdp_addr`) to an RSDP whose RSDT lists no tables. Without it the guest scans
//! 0xE0000-0xFFFFF for an RSDP, 8192 probes that take ~15 ms where KVM emulates guest kernel
//! code, which would make the "floor" slower than oxvmm. With no FADT the guest uses the
//! platform's default PM1a_CNT, 0x604.
//!
//! Usage: `kvm-floor [ELF [CMDLINE]]` (defaults: the bundled guest, `poweroff`). Exit status 0 on
//! power-off, 2 when the guest did anything else or the VM could not be built.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail, ensure};
use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest RAM, as much as `boot-bench` gives oxvmm.
const MEM_SIZE: usize = 128 << 20;

// Guest-physical layout (the same addresses as oxvmm's platform, docs/platform.md).
const GDT_ADDR: u64 = 0x500;
const ZERO_PAGE_ADDR: u64 = 0x7000;
const STACK_TOP: u64 = 0x8FF0;
const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xA000;
const PD_ADDR: u64 = 0xB000;
const CMDLINE_ADDR: u64 = 0x2_0000;
/// `boot_params.hdr.cmd_line_ptr`.
const ZERO_PAGE_CMD_LINE_PTR: u64 = 0x228;
/// `boot_params.acpi_rsdp_addr`.
const ZERO_PAGE_ACPI_RSDP_ADDR: u64 = 0x70;
const RSDP_ADDR: u64 = 0xE_0000;
const RSDT_ADDR: u64 = 0xE_0020;

const CODE64_SELECTOR: u16 = 0x10;
const DATA_SELECTOR: u16 = 0x18;
/// Null, unused, 64-bit code (0x10), flat data (0x18).
const GDT: [u64; 4] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

const PTE_PRESENT_WRITE: u64 = 0x3;
const PDE_LARGE: u64 = 0x80;
const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const COM1_THR: u16 = 0x3F8;
const COM1_LSR: u16 = 0x3FD;
/// Line status: transmitter holding register and transmitter empty.
const LSR_TX_EMPTY: u8 = 0x60;
const PM1A_CNT: u16 = 0x604;
const SLP_EN: u16 = 1 << 13;

const PT_LOAD: u32 = 1;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let elf = args
        .next()
        .unwrap_or_else(|| guests::OXGUEST_PATH.to_string());
    let cmdline = args.next().unwrap_or_else(|| "poweroff".to_string());
    match run(&elf, &cmdline) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvm-floor: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Builds the VM, runs the guest until it powers off.
fn run(elf_path: &str, cmdline: &str) -> anyhow::Result<()> {
    let elf = std::fs::read(elf_path).with_context(|| format!("cannot read {elf_path}"))?;
    let kvm = Kvm::new().context("cannot open /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .context("cannot map guest memory")?;
    let host_addr = memory
        .get_host_address(GuestAddress(0))
        .context("guest memory has no host address")?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host_addr as u64,
    };
    // SAFETY: the region is `memory`'s own mapping of MEM_SIZE bytes, which outlives the VM (both
    // live until this function returns, `memory` is declared first so it is dropped last).
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;

    let entry = load_elf(&memory, &elf).with_context(|| format!("cannot load {elf_path}"))?;
    write_boot_structures(&memory, cmdline)?;

    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    set_long_mode(&vcpu)?;
    let mut regs = vcpu.get_regs().context("KVM_GET_REGS")?;
    regs.rflags = 0x2;
    regs.rip = entry;
    regs.rsi = ZERO_PAGE_ADDR;
    regs.rsp = STACK_TOP;
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;
    run_vcpu(&mut vcpu)
}

/// Copies the PT_LOAD segments of the ELF64 `elf` to their physical addresses; returns `e_entry`.
fn load_elf(memory: &GuestMemoryMmap, elf: &[u8]) -> anyhow::Result<u64> {
    ensure!(
        elf.len() >= 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not a little-endian ELF64 file"
    );
    let entry = read_u64(elf, 24)?;
    let phoff = usize::try_from(read_u64(elf, 32)?)?;
    let phentsize = usize::from(read_u16(elf, 54)?);
    let phnum = usize::from(read_u16(elf, 56)?);
    for index in 0..phnum {
        let ph = phoff + index * phentsize;
        if read_u32(elf, ph)? != PT_LOAD {
            continue;
        }
        let offset = usize::try_from(read_u64(elf, ph + 8)?)?;
        let paddr = read_u64(elf, ph + 24)?;
        let filesz = usize::try_from(read_u64(elf, ph + 32)?)?;
        let data = elf
            .get(offset..offset.saturating_add(filesz))
            .with_context(|| format!("segment {index} lies outside the file"))?;
        // The rest of the segment (memsz > filesz) is already zero: the memory is fresh.
        memory
            .write_slice(data, GuestAddress(paddr))
            .with_context(|| format!("segment {index} at {paddr:#x} is outside guest RAM"))?;
    }
    Ok(entry)
}

fn read_bytes<const N: usize>(data: &[u8], at: usize) -> anyhow::Result<[u8; N]> {
    data.get(at..at.saturating_add(N))
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("ELF truncated at offset {at:#x}"))
}

fn read_u16(data: &[u8], at: usize) -> anyhow::Result<u16> {
    read_bytes(data, at).map(u16::from_le_bytes)
}

fn read_u32(data: &[u8], at: usize) -> anyhow::Result<u32> {
    read_bytes(data, at).map(u32::from_le_bytes)
}

fn read_u64(data: &[u8], at: usize) -> anyhow::Result<u64> {
    read_bytes(data, at).map(u64::from_le_bytes)
}

/// Makes the byte sum of `table` zero by setting the checksum byte at `at`.
fn set_checksum(table: &mut [u8], at: usize) {
    let sum = table.iter().fold(0u8, |sum, b| sum.wrapping_add(*b));
    table[at] = table[at].wrapping_sub(sum);
}

/// An ACPI 1.0 RSDP pointing to `rsdt`.
fn rsdp(rsdt: u64) -> [u8; 20] {
    let mut rsdp = [0u8; 20];
    rsdp[..8].copy_from_slice(b"RSD PTR ");
    rsdp[9..15].copy_from_slice(b"OXFLOR");
    rsdp[16..20].copy_from_slice(&(rsdt as u32).to_le_bytes());
    set_checksum(&mut rsdp, 8);
    rsdp
}

/// An RSDT that lists no tables: only the 36-byte header.
fn empty_rsdt() -> [u8; 36] {
    let mut rsdt = [0u8; 36];
    rsdt[..4].copy_from_slice(b"RSDT");
    rsdt[4..8].copy_from_slice(&36u32.to_le_bytes());
    rsdt[8] = 1; // revision
    rsdt[10..16].copy_from_slice(b"OXFLOR");
    set_checksum(&mut rsdt, 9);
    rsdt
}

/// Page tables (identity map of the first GiB with 2 MiB pages), GDT, zero page, command line,
/// and the empty ACPI root.
fn write_boot_structures(memory: &GuestMemoryMmap, cmdline: &str) -> anyhow::Result<()> {
    let mut page_directory = [0u8; 4096];
    for (index, entry) in page_directory.chunks_exact_mut(8).enumerate() {
        let pde = ((index as u64) << 21) | PDE_LARGE | PTE_PRESENT_WRITE;
        entry.copy_from_slice(&pde.to_le_bytes());
    }
    let gdt: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    let mut cmdline_bytes = cmdline.as_bytes().to_vec();
    cmdline_bytes.push(0);
    let writes: [(&[u8], u64); 9] = [
        (&(PDPT_ADDR | PTE_PRESENT_WRITE).to_le_bytes(), PML4_ADDR),
        (&(PD_ADDR | PTE_PRESENT_WRITE).to_le_bytes(), PDPT_ADDR),
        (&page_directory, PD_ADDR),
        (&gdt, GDT_ADDR),
        (
            &(CMDLINE_ADDR as u32).to_le_bytes(),
            ZERO_PAGE_ADDR + ZERO_PAGE_CMD_LINE_PTR,
        ),
        (&cmdline_bytes, CMDLINE_ADDR),
        (&rsdp(RSDT_ADDR), RSDP_ADDR),
        (&empty_rsdt(), RSDT_ADDR),
        (
            &RSDP_ADDR.to_le_bytes(),
            ZERO_PAGE_ADDR + ZERO_PAGE_ACPI_RSDP_ADDR,
        ),
    ];
    for (bytes, addr) in writes {
        memory
            .write_slice(bytes, GuestAddress(addr))
            .with_context(|| format!("cannot write boot data at {addr:#x}"))?;
    }
    Ok(())
}

/// 64-bit mode with paging on, flat segments from the GDT.
fn set_long_mode(vcpu: &VcpuFd) -> anyhow::Result<()> {
    let mut sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    let code = kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: CODE64_SELECTOR,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: DATA_SELECTOR,
        type_: 0x3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).context("KVM_SET_SREGS")
}

/// Runs the vCPU until the guest powers off; every exit the floor does not model is an error.
fn run_vcpu(vcpu: &mut VcpuFd) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    loop {
        match vcpu.run().context("KVM_RUN")? {
            VcpuExit::IoOut(COM1_THR, [byte]) => {
                // Unbuffered, as a UART: the benchmark times the first byte.
                stdout.write_all(&[*byte])?;
                stdout.flush()?;
            }
            VcpuExit::IoOut(PM1A_CNT, &[low, high]) => {
                if u16::from_le_bytes([low, high]) & SLP_EN != 0 {
                    return Ok(());
                }
            }
            // The rest of the UART's registers, written once by the guest's console setup.
            VcpuExit::IoOut(..) => {}
            VcpuExit::IoIn(COM1_LSR, data) => data.fill(LSR_TX_EMPTY),
            // No device: the bus floats high.
            VcpuExit::IoIn(_, data) => data.fill(0xFF),
            VcpuExit::Hlt => bail!("the guest halted instead of powering off"),
            VcpuExit::Shutdown => bail!("the guest triple-faulted"),
            other => bail!("unexpected vCPU exit {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte_sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
    }

    #[test]
    fn acpi_root_checksums_are_zero() {
        let rsdp = rsdp(RSDT_ADDR);
        let rsdt = empty_rsdt();

        assert_eq!(byte_sum(&rsdp), 0);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 0, "ACPI 1.0: no XSDT");
        assert_eq!(
            u32::from_le_bytes(rsdp[16..20].try_into().unwrap()),
            0xE_0020
        );
        assert_eq!(byte_sum(&rsdt), 0);
        assert_eq!(&rsdt[..8], b"RSDT\x24\0\0\0");
    }

    #[test]
    fn elf_loader_rejects_garbage() {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 21)]).unwrap();

        let error = load_elf(&memory, b"not an elf").unwrap_err();

        assert!(error.to_string().contains("not a little-endian ELF64"));
    }

    #[test]
    fn bundled_guest_loads_at_one_mib() {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let elf = std::fs::read(guests::OXGUEST_PATH).unwrap();

        let entry = load_elf(&memory, &elf).unwrap();

        assert!((0x10_0000..0x20_0000).contains(&entry), "{entry:#x}");
        assert_ne!(memory.read_obj::<u64>(GuestAddress(0x10_0000)).unwrap(), 0);
    }
}
