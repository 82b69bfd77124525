//! Checks the shape of the built guest ELF that VMM loaders rely on: a 64-bit x86 executable
//! loaded at 1 MiB, `e_entry` (Linux 64-bit entry) and a PVH note (XEN_ELFNOTE_PHYS32_ENTRY)
//! pointing at code, with the note laid out the way linux-loader and QEMU parse it.

use guests::{OXGUEST_ELF, OXGUEST_LOAD_ADDR, OXGUEST_PATH};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `cli; cld`: both entry points start with these two instructions.
const ENTRY_PROLOGUE: [u8; 2] = [0xFA, 0xFC];

struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("2 bytes"))
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

fn segments(elf: &[u8]) -> Vec<Segment> {
    let phoff = u64_at(elf, 0x20) as usize;
    let phentsize = usize::from(u16_at(elf, 0x36));
    let phnum = usize::from(u16_at(elf, 0x38));
    (0..phnum)
        .map(|i| {
            let ph = &elf[phoff + i * phentsize..phoff + (i + 1) * phentsize];
            Segment {
                kind: u32_at(ph, 0),
                flags: u32_at(ph, 4),
                offset: u64_at(ph, 8),
                paddr: u64_at(ph, 0x18),
                filesz: u64_at(ph, 0x20),
                memsz: u64_at(ph, 0x28),
                align: u64_at(ph, 0x30),
            }
        })
        .collect()
}

/// The file bytes at a guest-physical address inside a loaded segment.
fn bytes_at<'a>(elf: &'a [u8], segs: &[Segment], addr: u64, len: usize) -> Option<&'a [u8]> {
    let seg = segs.iter().find(|s| {
        s.kind == PT_LOAD && addr >= s.paddr && addr + len as u64 <= s.paddr + s.filesz
    })?;
    let start = (seg.offset + addr - seg.paddr) as usize;
    elf.get(start..start + len)
}

fn is_executable(segs: &[Segment], addr: u64) -> bool {
    segs.iter().any(|s| {
        s.kind == PT_LOAD && s.flags & PF_X != 0 && addr >= s.paddr && addr < s.paddr + s.filesz
    })
}

/// The PVH entry address from the single PT_NOTE segment, parsed with 4-byte alignment.
fn pvh_entry(elf: &[u8], note: &Segment) -> Option<u64> {
    let notes = &elf[note.offset as usize..(note.offset + note.filesz) as usize];
    let mut pos = 0;
    while pos + 12 <= notes.len() {
        let namesz = u32_at(notes, pos) as usize;
        let descsz = u32_at(notes, pos + 4) as usize;
        let kind = u32_at(notes, pos + 8);
        let name_at = pos + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        if kind == XEN_ELFNOTE_PHYS32_ENTRY
            && notes.get(name_at..name_at + namesz) == Some(b"Xen\0")
        {
            return match descsz {
                4 => Some(u64::from(u32_at(notes, desc_at))),
                8 => Some(u64_at(notes, desc_at)),
                _ => None,
            };
        }
        pos = desc_at + descsz.next_multiple_of(4);
    }
    None
}

#[test]
fn header_is_x86_64_executable() {
    let elf = OXGUEST_ELF;

    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELFCLASS64");
    assert_eq!(elf[5], 1, "little endian");
    assert_eq!(u16_at(elf, 0x10), ET_EXEC);
    assert_eq!(u16_at(elf, 0x12), EM_X86_64);
}

#[test]
fn loads_at_one_mib_below_the_mmio_hole() {
    let segs = segments(OXGUEST_ELF);

    let loads: Vec<&Segment> = segs.iter().filter(|s| s.kind == PT_LOAD).collect();

    assert_eq!(loads.iter().map(|s| s.paddr).min(), Some(OXGUEST_LOAD_ADDR));
    assert!(loads.iter().all(|s| s.memsz >= s.filesz));
    assert!(loads.iter().all(|s| s.paddr + s.memsz < 0xC000_0000));
}

#[test]
fn linux64_entry_is_code() {
    let elf = OXGUEST_ELF;
    let segs = segments(elf);

    let entry = u64_at(elf, 0x18);

    assert!(is_executable(&segs, entry), "e_entry {entry:#x}");
    assert_eq!(bytes_at(elf, &segs, entry, 2), Some(&ENTRY_PROLOGUE[..]));
}

#[test]
fn pvh_note_points_at_32_bit_entry() {
    let elf = OXGUEST_ELF;
    let segs = segments(elf);
    let notes: Vec<&Segment> = segs.iter().filter(|s| s.kind == PT_NOTE).collect();

    // linux-loader reads only one PT_NOTE; QEMU aligns the name with the segment's p_align.
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].align, 4);
    let entry = pvh_entry(elf, notes[0]).expect("XEN_ELFNOTE_PHYS32_ENTRY note");

    assert!(entry < 0x1_0000_0000, "32-bit entry {entry:#x}");
    assert_ne!(entry, u64_at(elf, 0x18), "PVH and Linux entries differ");
    assert!(is_executable(&segs, entry), "PVH entry {entry:#x}");
    assert_eq!(bytes_at(elf, &segs, entry, 2), Some(&ENTRY_PROLOGUE[..]));
}

#[test]
fn path_holds_the_embedded_image() {
    let on_disk = std::fs::read(OXGUEST_PATH).expect("read OXGUEST_PATH");

    assert_eq!(on_disk, OXGUEST_ELF);
}
