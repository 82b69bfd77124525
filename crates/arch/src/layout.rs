//! Every address, port and interrupt pin of the platform, as `docs/platform.md` lists them.
//!
//! Guest-physical addresses and port numbers are `u64` because the buses and
//! `vm_memory::GuestAddress` take `u64`; IOAPIC pins are `u32` (KVM's GSI type).

// ---- Low memory: boot structures (all below 1 MiB) ----

/// End (exclusive) of the conventional RAM reported as usable: `[0, 0xA0000)`.
pub const LOW_RAM_END: u64 = 0x000A_0000;
/// The boot GDT: four 8-byte descriptors (null, 32-bit code, 64-bit code, data).
pub const GDT: u64 = 0x500;
/// The boot IDT: one empty 8-byte entry, so any exception before the guest loads its own
/// IDT is a triple fault (a clean vCPU shutdown) rather than a jump into garbage.
pub const IDT: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO: u64 = 0x6000;
/// PVH memory map (`hvm_memmap_table_entry` array), then the initrd's `hvm_modlist_entry`.
pub const PVH_MEMMAP: u64 = 0x6040;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer of the 64-bit Linux entry.
pub const BOOT_STACK: u64 = 0x8FF0;
/// Page-map level 4 of the boot identity map.
pub const PML4: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPT: u64 = 0xA000;
/// First of the [`PD_COUNT`] page directories (`0xB000–0xEFFF`).
pub const PD: u64 = 0xB000;
/// Number of page directories: one per GiB of the identity-mapped first 4 GiB.
pub const PD_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Largest command line, terminating NUL included.
pub const CMDLINE_MAX: u64 = 0x1_0000;
/// Start of the legacy VGA / option ROM window: RAM, but not in the e820 map.
pub const VGA_WINDOW_START: u64 = LOW_RAM_END;
/// Start of the e820-reserved BIOS area that holds the ACPI tables.
pub const BIOS_AREA_START: u64 = 0x000E_0000;
/// ACPI Root System Description Pointer; the other ACPI tables follow it.
pub const RSDP: u64 = BIOS_AREA_START;
/// End (exclusive) of the area the ACPI tables must fit in.
pub const ACPI_TABLES_END: u64 = HIGH_RAM_START;
/// Start of the RAM above 1 MiB, where the kernel loads.
pub const HIGH_RAM_START: u64 = 0x0010_0000;

// ---- The 32-bit MMIO hole and what lives in it ----

/// Start of the 32-bit MMIO hole: no RAM from here to [`MMIO_HOLE_END`].
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// End (exclusive) of the 32-bit MMIO hole; RAM that did not fit below the hole resumes here.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Start of the RAM above 4 GiB.
pub const RAM_ABOVE_4G_START: u64 = MMIO_HOLE_END;
/// Window for PCI 32-bit BARs.
pub const PCI_MMIO32_START: u64 = 0xC000_0000;
/// Size of the PCI 32-bit BAR window (512 MiB).
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI configuration ports: CONFIG_ADDRESS at 0xCF8, the PIIX reset register at 0xCF9,
/// CONFIG_DATA at 0xCFC–0xCFF.
pub const PCI_CONFIG_PORT: u64 = 0xCF8;
/// Number of PCI configuration ports.
pub const PCI_CONFIG_PORT_LEN: u64 = 8;
/// IOAPIC pin of INTA# of the PCI device in slot 1 (slot `s`: this + (s − 1) mod
/// [`PCI_INTX_PINS`]), as the DSDT's `_PRT` says.
pub const PCI_INTX_FIRST_PIN: u32 = 16;
/// Number of IOAPIC pins PCI INTx lines are spread over.
pub const PCI_INTX_PINS: u32 = 8;
/// PCI Express ECAM (configuration space) window.
pub const PCI_ECAM_START: u64 = 0xE000_0000;
/// Size of the ECAM window: 256 MiB, buses 0–255.
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
/// IOAPIC registers (emulated in userspace).
pub const IOAPIC_START: u64 = 0xFEC0_0000;
/// Size of the IOAPIC's MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of IOAPIC input pins.
pub const IOAPIC_PINS: u32 = 24;
/// IOAPIC ID written in the MADT (also the reset value of the IOAPIC's ID register).
pub const IOAPIC_ID: u8 = 0;
/// Local APIC registers (emulated in KVM).
pub const LAPIC_START: u64 = 0xFEE0_0000;
/// KVM's identity-map page (`KVM_SET_IDENTITY_MAP_ADDR`): just below the largest firmware, as
/// QEMU and crosvm place it.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xFEFF_C000;
/// KVM's real-mode TSS (`KVM_SET_TSS_ADDR`), three pages.
pub const KVM_TSS_ADDR: u64 = 0xFEFF_D000;
/// Size of KVM's TSS area.
pub const KVM_TSS_SIZE: u64 = 3 * 0x1000;
/// Largest firmware image (`--firmware`): it is mapped read-only so that it ends at 4 GiB.
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;
/// A firmware image is a whole number of these (64 KiB), as QEMU requires of a BIOS image.
pub const FIRMWARE_SIZE_GRANULE: u64 = 64 << 10;
/// Lowest address a firmware image can start at.
pub const FIRMWARE_AREA_START: u64 = MMIO_HOLE_END - FIRMWARE_MAX_SIZE;
/// Start of the ISA BIOS area: the last [`ISA_BIOS_MAX_SIZE`] bytes of the firmware are
/// copied to RAM here, ending at 1 MiB, as the legacy reset vector at `F000:FFF0` expects.
pub const ISA_BIOS_START: u64 = HIGH_RAM_START - ISA_BIOS_MAX_SIZE;
/// How much of the firmware's end is copied below 1 MiB (128 KiB, as on a PC).
pub const ISA_BIOS_MAX_SIZE: u64 = 128 << 10;
/// Start of a second 32-bit BAR window, between the ECAM and the IOAPIC: SeaBIOS allocates
/// i440FX BARs downwards from `0xFEC0_0000` and knows nothing of our first window.
pub const PCI_MMIO32_HIGH_START: u64 = PCI_ECAM_START + PCI_ECAM_SIZE;
/// Size of the second BAR window (up to the IOAPIC).
pub const PCI_MMIO32_HIGH_SIZE: u64 = IOAPIC_START - PCI_MMIO32_HIGH_START;

// ---- I/O ports and IOAPIC pins ----

/// COM1 16550 UART base port.
pub const COM1_PORT: u64 = 0x3F8;
/// Number of COM1 ports (`0x3F8–0x3FF`).
pub const COM1_LEN: u64 = 8;
/// COM1 IOAPIC pin.
pub const COM1_IRQ: u32 = 4;
/// i8042 data port; the range `0x60–0x64` covers the command/status port too.
pub const I8042_PORT: u64 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// i8042 (keyboard) IOAPIC pin.
pub const I8042_IRQ: u32 = 1;
/// Firmware debug console (QEMU's `isa-debugcon` port): bytes written are firmware log lines.
/// Present only when booting firmware.
pub const DEBUGCON_PORT: u64 = 0x402;
/// QEMU firmware configuration interface (`fw_cfg`): selector at 0x510, data at 0x511.
/// Present only when booting firmware.
pub const FW_CFG_PORT: u64 = 0x510;
/// Number of `fw_cfg` ports (no DMA interface).
pub const FW_CFG_LEN: u64 = 2;
/// CMOS RTC index port; the data port is `CMOS_PORT + 1`.
pub const CMOS_PORT: u64 = 0x70;
/// Number of CMOS ports.
pub const CMOS_LEN: u64 = 2;
/// CMOS RTC IOAPIC pin.
pub const CMOS_IRQ: u32 = 8;
/// Bytes of CMOS NVRAM.
pub const CMOS_NVRAM_SIZE: usize = 128;
/// First port of the ACPI PM register block (`0x600–0x60C`).
pub const ACPI_PM_PORT: u64 = 0x600;
/// Number of ports of the ACPI PM register block, reset register included.
pub const ACPI_PM_LEN: u64 = 0x0D;
/// PM1a event block: status (2 bytes) then enable (2 bytes).
pub const ACPI_PM1A_EVT_BLK: u64 = 0x600;
/// Length of the PM1a event block.
pub const ACPI_PM1_EVT_LEN: u8 = 4;
/// PM1a control block.
pub const ACPI_PM1A_CNT_BLK: u64 = 0x604;
/// Length of the PM1a control block.
pub const ACPI_PM1_CNT_LEN: u8 = 2;
/// PM timer (3.579545 MHz, 24 bit).
pub const ACPI_PM_TMR_BLK: u64 = 0x608;
/// Length of the PM timer block.
pub const ACPI_PM_TMR_LEN: u8 = 4;
/// PM timer frequency.
pub const ACPI_PM_TIMER_HZ: u64 = 3_579_545;
/// ACPI reset register (one byte).
pub const ACPI_RESET_PORT: u64 = 0x60C;
/// Value that, written to [`ACPI_RESET_PORT`], resets the machine.
pub const ACPI_RESET_VALUE: u8 = 0x06;
/// PM1 control `SLP_EN` bit: writing it with `SLP_TYP` enters that sleep state.
pub const ACPI_PM1_CNT_SLP_EN: u16 = 1 << 13;
/// PM1 control `SLP_TYP` field shift (bits 10–12).
pub const ACPI_PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
/// `SLP_TYP` value of S5 (soft off), as the DSDT's `\_S5` package says.
pub const ACPI_SLP_TYP_S5: u16 = 0;
/// PM1 control `SCI_EN`: always set, the platform has no legacy (non-ACPI) mode.
pub const ACPI_PM1_CNT_SCI_EN: u16 = 1;
/// ACPI SCI IOAPIC pin (level-triggered, active high).
pub const ACPI_SCI_IRQ: u32 = 9;

// ---- Boot GDT selectors ----

/// Flat 32-bit code segment: `CS` of the PVH entry.
pub const BOOT_CODE32_SELECTOR: u16 = 0x08;
/// Flat 64-bit code segment: `__BOOT_CS` of Linux's 64-bit boot protocol.
pub const BOOT_CODE64_SELECTOR: u16 = 0x10;
/// Flat data segment, used in both modes: `__BOOT_DS`, and `DS`/`ES`/`SS` of the PVH entry.
pub const BOOT_DATA_SELECTOR: u16 = 0x18;

// The MMIO windows sit inside the hole, in address order.
const _: () = assert!(PCI_MMIO32_START >= MMIO_HOLE_START);
const _: () = assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
const _: () = assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_START);
const _: () = assert!(IOAPIC_START + IOAPIC_SIZE <= LAPIC_START);
const _: () = assert!(LAPIC_START < KVM_IDENTITY_MAP_ADDR);
const _: () = assert!(KVM_IDENTITY_MAP_ADDR + 0x1000 == KVM_TSS_ADDR);
const _: () = assert!(KVM_TSS_ADDR + KVM_TSS_SIZE <= FIRMWARE_AREA_START);
const _: () = assert!(ISA_BIOS_START == BIOS_AREA_START);
const _: () = assert!(PCI_MMIO32_HIGH_START + PCI_MMIO32_HIGH_SIZE == IOAPIC_START);
// The ACPI PM block covers every PM register, reset register included.
const _: () = assert!(ACPI_PM_PORT == ACPI_PM1A_EVT_BLK);
const _: () = assert!(ACPI_PM_PORT + ACPI_PM_LEN == ACPI_RESET_PORT + 1);
const _: () = assert!(ACPI_PM_TMR_BLK + ACPI_PM_TMR_LEN as u64 <= ACPI_RESET_PORT);
// The command line ends below the VGA window.
const _: () = assert!(CMDLINE + CMDLINE_MAX <= LOW_RAM_END);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_structures_do_not_overlap() {
        // Arrange: (start, end) of each structure, in address order.
        let gdt_end = GDT + 4 * 8;
        let idt_end = IDT + 8;
        let pvh_end = PVH_MEMMAP + 128 * 24 + 32;
        let pd_end = PD + PD_COUNT * 0x1000;
        let ranges = [
            (GDT, gdt_end),
            (IDT, idt_end),
            (PVH_INFO, pvh_end),
            (ZERO_PAGE, ZERO_PAGE + 0x1000),
            (BOOT_STACK - 0x800, BOOT_STACK),
            (PML4, PML4 + 0x1000),
            (PDPT, PDPT + 0x1000),
            (PD, pd_end),
            (CMDLINE, CMDLINE + CMDLINE_MAX),
        ];

        // Act + Assert
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
    }
}
