//! The FADT: fixed ACPI hardware (PM1a event/control, PM timer, reset register) of a
//! full (not hardware-reduced) ACPI platform that is always in ACPI mode.

use acpi_tables::Aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{
    ACPI_PM_TMR_BLK, ACPI_PM_TMR_LEN, ACPI_PM1_CNT_LEN, ACPI_PM1_EVT_LEN, ACPI_PM1A_CNT_BLK,
    ACPI_PM1A_EVT_BLK, ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SCI_IRQ,
};

/// IA-PC boot architecture flags: ISA-style legacy devices present (COM1, RTC), an 8042,
/// no VGA. `CMOS RTC not present` stays clear: there is one.
pub(super) const IAPC_BOOT_ARCH: u16 = IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT;
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// `P_LVL2_LAT`/`P_LVL3_LAT` above 100/1000 µs: C2 and C3 are not supported.
const NO_C_STATE_LATENCY: u16 = 0x0FFF;

/// The FADT flags set: `WBINVD` works, C1 is supported, there is no sleep button (the power
/// button is the fixed-feature one), and the reset register is valid.
pub(super) const FLAGS: [Flags; 4] = [
    Flags::Wbinvd,
    Flags::ProcC1,
    Flags::SlpButton,
    Flags::ResetRegSup,
];

fn io_register(port: u64, bytes: u8) -> GAS {
    // Access size "undefined" lets the OS use the register width, as QEMU's tables do.
    GAS::new(
        AddressSpace::SystemIo,
        bytes * 8,
        0,
        AccessSize::Undefined,
        port,
    )
}

/// The FADT pointing at the FACS and the DSDT (both below 4 GiB, so the 32-bit and 64-bit
/// pointers carry the same address).
/// CMOS register that holds the century.
pub const CMOS_CENTURY_REGISTER: u8 = 0x32;

pub(super) fn fadt(facs: u32, dsdt: u32) -> Vec<u8> {
    let mut builder = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    builder.firmware_ctrl = facs.into();
    builder.x_firmware_ctrl = u64::from(facs).into();
    builder.dsdt = dsdt.into();
    builder.x_dsdt = u64::from(dsdt).into();
    // SMI_CMD = 0 and no ACPI_ENABLE value: the platform is always in ACPI mode.
    builder.sci_int = (ACPI_SCI_IRQ as u16).into();
    builder.pm1a_evt_blk = (ACPI_PM1A_EVT_BLK as u32).into();
    builder.pm1a_cnt_blk = (ACPI_PM1A_CNT_BLK as u32).into();
    builder.pm_tmr_blk = (ACPI_PM_TMR_BLK as u32).into();
    builder.pm1_evt_len = ACPI_PM1_EVT_LEN;
    builder.pm1_cnt_len = ACPI_PM1_CNT_LEN;
    builder.pm_tmr_len = ACPI_PM_TMR_LEN;
    builder.x_pm1a_evt_blk = io_register(ACPI_PM1A_EVT_BLK, ACPI_PM1_EVT_LEN);
    builder.x_pm1a_cnt_blk = io_register(ACPI_PM1A_CNT_BLK, ACPI_PM1_CNT_LEN);
    builder.x_pm_tmr_blk = io_register(ACPI_PM_TMR_BLK, ACPI_PM_TMR_LEN);
    builder.p_lvl2_lat = NO_C_STATE_LATENCY.into();
    builder.p_lvl3_lat = NO_C_STATE_LATENCY.into();
    builder.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    // The CMOS RTC keeps the century in register 0x32 (as on PCs and in QEMU).
    builder.century = CMOS_CENTURY_REGISTER;
    builder.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        ACPI_RESET_PORT,
    );
    builder.reset_value = ACPI_RESET_VALUE;
    let builder = FLAGS.into_iter().fold(builder, FADTBuilder::flag);
    let mut bytes = Vec::new();
    builder.finalize().to_aml_bytes(&mut bytes);
    bytes
}
