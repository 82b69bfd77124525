//! Firmware boot (`--firmware`): Debian's SeaBIOS (package `seabios`) finds a virtio-blk disk
//! through our PCI and boots the boot sector this test assembles; and the errors for a bad
//! firmware file or a firmware given with a kernel.
//!
//! KVM here runs real-mode and CPL0 code in its instruction emulator, so one pass through
//! SeaBIOS takes seconds (about 5.7 million emulated instructions, as under QEMU); the time
//! limits leave room for a slow, loaded machine.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Run, oxvmm, require_kvm};

/// Debian's SeaBIOS image (package `seabios`).
const SEABIOS: &str = "/usr/share/seabios/bios.bin";
/// Time limit of one boot through SeaBIOS.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// What SeaBIOS prints on its (serial) console first.
const SEABIOS_BANNER: &str = "SeaBIOS (version ";
/// ACPI PM1a control (platform.md): SLP_EN with SLP_TYP 0 (S5) powers off.
const PM1A_CNT: u16 = 0x604;
const SLP_EN_S5: u16 = 0x2000;
/// ACPI reset register and its value.
const RESET_PORT: u16 = 0x60C;
const RESET_VALUE: u8 = 0x06;
/// COM1's transmit register.
const COM1: u16 = 0x3F8;
/// A CMOS NVRAM byte nothing else uses; NVRAM survives a reset.
const CMOS_SCRATCH: u8 = 0x7E;
/// Where the BIOS loads the boot sector.
const BOOT_SECTOR_ADDR: u16 = 0x7C00;

/// A few 16-bit real-mode instructions, encoded by hand, with labels for jumps and strings.
#[derive(Default)]
struct BootSector {
    code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    /// (where, label, kind): rel8 jumps, rel16 calls and absolute 16-bit addresses.
    fixups: Vec<(usize, &'static str, Fixup)>,
}

#[derive(Clone, Copy)]
enum Fixup {
    Rel8,
    Rel16,
    Abs16,
}

impl BootSector {
    fn emit(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }

    fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.code.len());
        self
    }

    fn refer(&mut self, opcode: &[u8], label: &'static str, fixup: Fixup) -> &mut Self {
        self.emit(opcode);
        self.fixups.push((self.code.len(), label, fixup));
        let width = match fixup {
            Fixup::Rel8 => 1,
            Fixup::Rel16 | Fixup::Abs16 => 2,
        };
        self.emit(&vec![0; width])
    }

    /// `cli; cld; xor ax, ax; mov ds, ax`
    fn prologue(&mut self) -> &mut Self {
        self.emit(&[0xFA, 0xFC, 0x31, 0xC0, 0x8E, 0xD8])
    }

    /// `mov si, label; call print`
    fn print(&mut self, label: &'static str) -> &mut Self {
        self.refer(&[0xBE], label, Fixup::Abs16)
            .refer(&[0xE8], "print", Fixup::Rel16)
    }

    /// `mov dx, port; mov ax, value; out dx, ax`
    fn out16(&mut self, port: u16, value: u16) -> &mut Self {
        self.emit(&[0xBA])
            .emit(&port.to_le_bytes())
            .emit(&[0xB8])
            .emit(&value.to_le_bytes())
            .emit(&[0xEF])
    }

    /// `mov dx, port; mov al, value; out dx, al`
    fn out8(&mut self, port: u16, value: u8) -> &mut Self {
        self.emit(&[0xBA])
            .emit(&port.to_le_bytes())
            .emit(&[0xB0, value, 0xEE])
    }

    /// `mov al, index; out 0x70, al; in al, 0x71; test al, al`
    fn cmos_test(&mut self, index: u8) -> &mut Self {
        self.emit(&[0xB0, index, 0xE6, 0x70, 0xE4, 0x71, 0x84, 0xC0])
    }

    /// `mov al, index; out 0x70, al; mov al, value; out 0x71, al`
    fn cmos_write(&mut self, index: u8, value: u8) -> &mut Self {
        self.emit(&[0xB0, index, 0xE6, 0x70, 0xB0, value, 0xE6, 0x71])
    }

    /// `halt: hlt; jmp halt`
    fn halt_forever(&mut self, label: &'static str) -> &mut Self {
        self.label(label)
            .emit(&[0xF4])
            .refer(&[0xEB], label, Fixup::Rel8)
    }

    /// The `print` routine: writes the NUL-terminated string at DS:SI to COM1.
    fn print_routine(&mut self) -> &mut Self {
        self.label("print")
            .emit(&[0xBA])
            .emit(&COM1.to_le_bytes())
            .label("print_next")
            .emit(&[0xAC, 0x84, 0xC0]) // lodsb; test al, al
            .refer(&[0x74], "print_done", Fixup::Rel8) // jz
            .emit(&[0xEE]) // out dx, al
            .refer(&[0xEB], "print_next", Fixup::Rel8)
            .label("print_done")
            .emit(&[0xC3]) // ret
    }

    fn string(&mut self, label: &'static str, text: &str) -> &mut Self {
        self.label(label).emit(text.as_bytes()).emit(&[0])
    }

    /// The 512-byte sector, with labels resolved and the 0x55AA signature.
    fn assemble(&self) -> Vec<u8> {
        let mut code = self.code.clone();
        for &(at, label, fixup) in &self.fixups {
            let target = *self
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("no label {label}"));
            match fixup {
                Fixup::Rel8 => {
                    let rel = i8::try_from(target as isize - (at as isize + 1))
                        .unwrap_or_else(|_| panic!("jump to {label} is too far"));
                    code[at] = rel as u8;
                }
                Fixup::Rel16 => {
                    let rel = (target as isize - (at as isize + 2)) as i16;
                    code[at..at + 2].copy_from_slice(&rel.to_le_bytes());
                }
                Fixup::Abs16 => {
                    let addr = BOOT_SECTOR_ADDR + target as u16;
                    code[at..at + 2].copy_from_slice(&addr.to_le_bytes());
                }
            }
        }
        assert!(
            code.len() <= 510,
            "boot sector code is {} bytes",
            code.len()
        );
        code.resize(510, 0);
        code.extend_from_slice(&[0x55, 0xAA]);
        code
    }
}

/// A boot sector that prints a line on COM1 and powers the machine off.
fn print_and_power_off() -> Vec<u8> {
    let mut sector = BootSector::default();
    sector
        .prologue()
        .print("message")
        .out16(PM1A_CNT, SLP_EN_S5)
        .halt_forever("halt")
        .print_routine()
        .string("message", "oxvmm-mbr: booted from disk\r\n");
    sector.assemble()
}

/// A boot sector that resets the machine the first time (marking CMOS NVRAM) and powers it
/// off the second time.
fn reset_once_then_power_off() -> Vec<u8> {
    let mut sector = BootSector::default();
    sector
        .prologue()
        .cmos_test(CMOS_SCRATCH)
        .refer(&[0x75], "second", Fixup::Rel8) // jnz
        .cmos_write(CMOS_SCRATCH, 1)
        .print("first")
        .out8(RESET_PORT, RESET_VALUE)
        .halt_forever("halt1")
        .label("second")
        .print("again")
        .out16(PM1A_CNT, SLP_EN_S5)
        .halt_forever("halt2")
        .print_routine()
        .string("first", "oxvmm-mbr: first boot, resetting\r\n")
        .string("again", "oxvmm-mbr: second boot\r\n");
    sector.assemble()
}

/// A file under the system's temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        TempFile(std::env::temp_dir().join(format!("oxvmm-fw-{}-{name}", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A 1 MiB raw disk whose first sector is `boot_sector`.
fn disk_with(name: &str, boot_sector: &[u8]) -> TempFile {
    let disk = TempFile::new(name);
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..512].copy_from_slice(boot_sector);
    std::fs::write(&disk.0, bytes).expect("write the disk image");
    disk
}

fn require_seabios() {
    assert!(
        Path::new(SEABIOS).exists(),
        "this test needs {SEABIOS}: install Debian's `seabios` package"
    );
}

/// Why a firmware boot did not get to the boot sector, from SeaBIOS's own log (the debug
/// console, logged by oxvmm at debug level) and its console output.
fn diagnosis(run: &Run) -> String {
    let firmware_log: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.contains("DEBUG") && !line.contains("vmm::"))
        .collect();
    let tail = &firmware_log[firmware_log.len().saturating_sub(25)..];
    let reason = if !run.stdout.contains(SEABIOS_BANNER) {
        "SeaBIOS never printed its banner on COM1 (no fw_cfg NOGRAPHIC, or it stopped early)"
    } else if run.stdout.contains("No bootable device") {
        "SeaBIOS found no bootable disk (virtio-blk not found or its boot sector not read)"
    } else {
        "SeaBIOS printed its banner but the boot sector never ran"
    };
    format!(
        "{reason}\n--- last firmware log lines ---\n{}\n{run}",
        tail.join("\n")
    )
}

fn boot_firmware(disk: &TempFile, extra: &[&str]) -> (Run, Duration) {
    let disk_option = format!("path={}", disk.path());
    let mut args = vec![
        "--firmware",
        SEABIOS,
        "--disk",
        &disk_option,
        "--serial",
        "stdio",
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    let start = Instant::now();
    let run = oxvmm(&args, BOOT_TIMEOUT);
    (run, start.elapsed())
}

#[test]
fn firmware_kvm_seabios_boots_the_boot_sector_of_a_virtio_blk_disk() {
    require_kvm();
    require_seabios();
    let disk = disk_with("boot.img", &print_and_power_off());

    let (run, elapsed) = boot_firmware(&disk, &[]);

    assert!(
        run.stdout.contains("oxvmm-mbr: booted from disk"),
        "{}",
        diagnosis(&run)
    );
    assert!(run.stdout.contains(SEABIOS_BANNER), "{}", diagnosis(&run));
    assert!(
        run.stdout.contains("Booting from Hard Disk"),
        "{}",
        diagnosis(&run)
    );
    assert!(
        run.stderr.contains("found virtio-blk at 00:01.0"),
        "SeaBIOS's log should name our virtio-blk function\n{run}"
    );
    run.assert_exit(0);
    eprintln!("SeaBIOS to the boot sector and power-off: {elapsed:.1?}");
}

#[test]
fn firmware_kvm_reboot_in_place_runs_seabios_again_with_two_vcpus() {
    require_kvm();
    require_seabios();
    let disk = disk_with("reboot.img", &reset_once_then_power_off());

    let (run, elapsed) = boot_firmware(&disk, &["--cpus", "2"]);

    assert!(
        run.stdout.contains("oxvmm-mbr: second boot"),
        "{}",
        diagnosis(&run)
    );
    let first = run.stdout.find("oxvmm-mbr: first boot");
    assert!(first.is_some(), "{}", diagnosis(&run));
    assert_eq!(
        run.stdout.matches(SEABIOS_BANNER).count(),
        2,
        "SeaBIOS should run once per boot\n{run}"
    );
    assert!(
        run.stderr.contains("Found 2 cpu(s)"),
        "SeaBIOS should have started the second vCPU with INIT/SIPI\n{run}"
    );
    run.assert_exit(0);
    eprintln!("two boots through SeaBIOS: {elapsed:.1?}");
}

fn assert_firmware_error(args: &[&str], expected: &[&str]) {
    let run = oxvmm(args, Duration::from_secs(60));
    run.assert_exit(1);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "expected one line\n{run}");
    for text in expected {
        assert!(
            stderr.contains(text),
            "expected {text:?} in the error\n{run}"
        );
    }
}

#[test]
fn firmware_kvm_bad_files_and_a_kernel_with_firmware_are_refused() {
    require_kvm();
    let odd = TempFile::new("odd.bin");
    std::fs::write(&odd.0, vec![0u8; 100_000]).unwrap();
    let huge = TempFile::new("huge.bin");
    let file = std::fs::File::create(&huge.0).unwrap();
    file.set_len((16 << 20) + (64 << 10)).unwrap();

    assert_firmware_error(
        &["--firmware", "/nonexistent/bios.bin"],
        &["--firmware /nonexistent/bios.bin", "No such file"],
    );
    assert_firmware_error(
        &["--firmware", odd.path()],
        &[odd.path(), "100000 bytes", "multiple of 64 KiB"],
    );
    assert_firmware_error(
        &["--firmware", huge.path()],
        &[huge.path(), "too large", "16 MiB"],
    );
    assert_firmware_error(
        &["--firmware", SEABIOS, "--kernel", guests::OXGUEST_PATH],
        &["--firmware", "cannot be used with --kernel"],
    );
}
