use std::os::unix::fs::{FileExt, MetadataExt};

use vm_memory::Bytes;

use super::*;
use crate::file::tests::TempDir;

/// 260 pages (not a multiple of 64, to exercise the last bitmap word) at 0, and 512 pages
/// above 4 GiB.
const REGION0: (GuestAddress, usize) = (GuestAddress(0), 260 * PAGE_SIZE);
const REGION1: (GuestAddress, usize) = (GuestAddress(0x1_0000_0000), 512 * PAGE_SIZE);
/// `/proc/self/pagemap` entry bit: the page is present in RAM.
const PAGEMAP_PRESENT: u64 = 1 << 63;
const TOTAL: u64 = (REGION0.1 + REGION1.1) as u64;

fn layout() -> Vec<(GuestAddress, usize)> {
    vec![REGION0, REGION1]
}

fn new_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&layout()).unwrap()
}

fn page_addr(region: (GuestAddress, usize), page: usize) -> GuestAddress {
    GuestAddress(region.0.0 + (page * PAGE_SIZE) as u64)
}

fn fill_page(mem: &GuestMemoryMmap, region: (GuestAddress, usize), page: usize, byte: u8) {
    mem.write_slice(&[byte; PAGE_SIZE], page_addr(region, page))
        .unwrap();
}

fn read_page(mem: &GuestMemoryMmap, region: (GuestAddress, usize), page: usize) -> Vec<u8> {
    let mut buf = vec![0; PAGE_SIZE];
    mem.read_slice(&mut buf, page_addr(region, page)).unwrap();
    buf
}

fn contents(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut all = Vec::new();
    for (addr, len) in memory_layout(mem) {
        let mut buf = vec![0; len];
        mem.read_slice(&mut buf, addr).unwrap();
        all.extend_from_slice(&buf);
    }
    all
}

/// Memory where 6 pages hold data and one written page holds only zeros.
fn touched_memory() -> GuestMemoryMmap {
    let mem = new_memory();
    for (region, page, byte) in [
        (REGION0, 0, 0x11),
        (REGION0, 5, 0x22),
        (REGION0, 6, 0x33),
        (REGION0, 259, 0x44),
        (REGION1, 0, 0x55),
        (REGION1, 300, 0x66),
    ] {
        fill_page(&mem, region, page, byte);
    }
    fill_page(&mem, REGION0, 10, 0);
    mem
}

/// Bitmaps in KVM's format flagging the given pages.
fn bitmaps(flagged: &[(usize, usize)]) -> Vec<Vec<u64>> {
    let mut maps = vec![
        vec![0u64; (REGION0.1 / PAGE_SIZE).div_ceil(64)],
        vec![0u64; (REGION1.1 / PAGE_SIZE).div_ceil(64)],
    ];
    for &(region, page) in flagged {
        maps[region][page / 64] |= 1 << (page % 64);
    }
    maps
}

fn memory_error(error: SnapshotError) -> MemoryError {
    match error {
        SnapshotError::Memory(e) => e,
        other => panic!("expected a memory error, got: {other}"),
    }
}

#[test]
fn full_file_holds_only_written_nonzero_pages_and_is_sparse() {
    // Arrange
    let dir = TempDir::new("mem-full");
    let path = dir.path().join("memory");
    let mem = touched_memory();

    // Act
    let stats = write_full_memory(&mem, &path).unwrap();

    // Assert
    assert_eq!(
        stats,
        MemoryFileStats {
            pages_written: 6,
            bytes_written: 6 * PAGE_SIZE as u64,
            file_len: TOTAL,
            dirty_pages: 0,
        }
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), TOTAL);
    let allocated = meta.blocks() * 512;
    assert!(
        allocated <= 16 * PAGE_SIZE as u64 && allocated < TOTAL / 16,
        "{allocated} bytes allocated for a {TOTAL}-byte file"
    );
}

#[test]
fn pages_sit_at_their_documented_file_offsets() {
    // Arrange
    let dir = TempDir::new("mem-offsets");
    let path = dir.path().join("memory");
    write_full_memory(&touched_memory(), &path).unwrap();
    let file = File::open(&path).unwrap();
    let mut byte = [0u8];

    // Act + Assert: region 1 starts right after region 0.
    file.read_exact_at(&mut byte, (5 * PAGE_SIZE) as u64)
        .unwrap();
    assert_eq!(byte[0], 0x22);
    file.read_exact_at(&mut byte, (REGION0.1 + 300 * PAGE_SIZE) as u64)
        .unwrap();
    assert_eq!(byte[0], 0x66);
}

#[test]
fn mapped_file_reads_back_identical_memory() {
    // Arrange
    let dir = TempDir::new("mem-map");
    let path = dir.path().join("memory");
    let mem = touched_memory();
    write_full_memory(&mem, &path).unwrap();

    // Act
    let restored = map_memory_file(&path, &memory_layout(&mem)).unwrap();

    // Assert
    assert_eq!(memory_layout(&restored), layout());
    assert!(contents(&restored) == contents(&mem));
}

#[test]
fn writes_to_mapped_memory_do_not_reach_the_file() {
    // Arrange
    let dir = TempDir::new("mem-private");
    let path = dir.path().join("memory");
    write_full_memory(&touched_memory(), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let restored = map_memory_file(&path, &layout()).unwrap();

    // Act
    fill_page(&restored, REGION0, 5, 0xee);
    fill_page(&restored, REGION1, 100, 0xef);

    // Assert
    assert_eq!(read_page(&restored, REGION0, 5), vec![0xee; PAGE_SIZE]);
    assert!(std::fs::read(&path).unwrap() == before);
}

#[test]
fn memory_file_of_the_wrong_size_is_refused() {
    // Arrange
    let dir = TempDir::new("mem-size");
    let path = dir.path().join("memory");
    write_full_memory(&touched_memory(), &path).unwrap();
    let smaller = vec![REGION0, (REGION1.0, 256 * PAGE_SIZE)];

    // Act
    let error = memory_error(map_memory_file::<()>(&path, &smaller).unwrap_err());

    // Assert
    assert!(matches!(error, MemoryError::FileSize { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "memory file {} is {TOTAL} bytes, the snapshot's memory is {} bytes",
            path.display(),
            REGION0.1 + 256 * PAGE_SIZE
        )
    );
}

#[test]
fn invalid_layouts_are_refused_before_mapping() {
    // Arrange
    let dir = TempDir::new("mem-layout");
    let path = dir.path().join("memory");
    std::fs::write(&path, vec![0; 2 * PAGE_SIZE]).unwrap();
    let page = |addr: u64| (GuestAddress(addr), PAGE_SIZE);

    let map = |layout: &[(GuestAddress, usize)]| {
        memory_error(map_memory_file::<()>(&path, layout).unwrap_err())
    };

    // Act
    let empty = map(&[]);
    let unaligned = map(&[page(0x800), page(0x4000)]);
    let overlapping = map(&[page(0), page(0)]);
    let wrapping = map(&[page(0), page(!0xfff)]);

    // Assert
    assert!(matches!(empty, MemoryError::NoRegions), "{empty}");
    assert!(
        matches!(unaligned, MemoryError::BadRegion { index: 0, .. }),
        "{unaligned}"
    );
    assert!(
        matches!(overlapping, MemoryError::Layout { .. }),
        "{overlapping}"
    );
    assert!(
        matches!(wrapping, MemoryError::LayoutOverflow { index: 1 }),
        "{wrapping}"
    );
}

#[test]
fn unaligned_guest_memory_is_refused_by_the_writer() {
    // Arrange
    let dir = TempDir::new("mem-unaligned");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1800)]).unwrap();

    // Act
    let error = memory_error(write_full_memory(&mem, &dir.path().join("memory")).unwrap_err());

    // Assert
    assert!(
        matches!(error, MemoryError::BadRegion { len: 0x1800, .. }),
        "{error}"
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn mincore_flags_only_touched_pages() {
    // Arrange (in region 0, too small for a transparent huge page)
    let mem = new_memory();
    fill_page(&mem, REGION0, 3, 0x77);
    let (regions, _) = region_views(&mem).unwrap();
    let mut out = vec![false; 64];

    // Act
    ResidencyProbe::Mincore
        .candidates(&regions[0], 0, &mut out)
        .unwrap();

    // Assert
    let flagged: Vec<usize> = (0..64).filter(|&p| out[p]).collect();
    assert_eq!(flagged, vec![3]);
}

#[test]
fn pagemap_reports_touched_pages_present() {
    // Arrange
    // (Region 0 is too small to hold a 2 MiB transparent huge page, which would make the
    // neighbours present too.)
    let mem = new_memory();
    fill_page(&mem, REGION0, 1, 0x77);
    let (regions, _) = region_views(&mem).unwrap();
    let pagemap = File::open("/proc/self/pagemap").unwrap();

    // Act
    let entries = pagemap_entries(&pagemap, regions[0].page_host(0), 3).unwrap();

    // Assert
    assert_eq!(entries[0] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED), 0);
    assert_ne!(entries[1] & PAGEMAP_PRESENT, 0);
    assert_eq!(entries[2] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED), 0);
}

#[test]
fn every_residency_probe_writes_the_same_file() {
    // Arrange
    let dir = TempDir::new("mem-probes");
    let mem = touched_memory();
    let probes = [
        ResidencyProbe::Mincore,
        ResidencyProbe::MincoreAndSwap(File::open("/proc/self/pagemap").unwrap()),
        ResidencyProbe::AllPages,
    ];

    // Act
    let results: Vec<(MemoryFileStats, Vec<u8>)> = probes
        .iter()
        .enumerate()
        .map(|(i, probe)| {
            let path = dir.path().join(format!("memory{i}"));
            let stats = write_full_memory_with(&mem, &path, probe).unwrap();
            (stats, std::fs::read(&path).unwrap())
        })
        .collect();

    // Assert
    assert_eq!(results[0].0.pages_written, 6);
    assert!(results.iter().all(|r| *r == results[0]));
}

#[test]
fn file_data_extents_mark_exactly_the_written_pages() {
    // Arrange
    let dir = TempDir::new("mem-extents");
    let path = dir.path().join("sparse");
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(16 * PAGE_SIZE as u64).unwrap();
    for page in [2u64, 9, 10] {
        file.write_all_at(&[1; PAGE_SIZE], page * PAGE_U64).unwrap();
    }
    let mut whole = vec![false; 16];
    let mut from_page_4 = vec![false; 8];

    // Act
    mark_file_data(&file, 0, &mut whole).unwrap();
    mark_file_data(&file, 4 * PAGE_U64, &mut from_page_4).unwrap();

    // Assert
    let flagged = |out: &[bool]| (0..out.len()).filter(|&p| out[p]).collect::<Vec<_>>();
    assert_eq!(flagged(&whole), vec![2, 9, 10]);
    assert_eq!(flagged(&from_page_4), vec![5, 6]);
}

#[test]
fn snapshot_of_a_restored_vm_keeps_pages_not_yet_read_back() {
    // Arrange: restore from a file whose pages were dropped from the page cache, change one
    // page, and snapshot into the very file the memory is mapped from.
    let dir = TempDir::new("mem-resnapshot");
    let path = dir.path().join("memory");
    let original = touched_memory();
    write_full_memory(&original, &path).unwrap();
    drop_page_cache(&path);
    let restored = map_memory_file(&path, &layout()).unwrap();
    fill_page(&restored, REGION1, 7, 0x99);

    // Act
    let stats = write_full_memory(&restored, &path).unwrap();
    let again = map_memory_file(&path, &layout()).unwrap();

    // Assert
    assert_eq!(stats.pages_written, 7);
    assert_eq!(read_page(&restored, REGION0, 5), vec![0x22; PAGE_SIZE]);
    assert!(contents(&again) == contents(&restored));
}

/// Asks the kernel to forget the (clean, flushed) cached pages of a file, so mincore on a
/// mapping of it reports them not resident. Advisory: the test holds either way.
fn drop_page_cache(path: &Path) {
    let file = File::open(path).unwrap();
    // SAFETY: posix_fadvise only gives the kernel a caching hint for our descriptor.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

#[test]
fn dirty_pages_diff_writes_only_flagged_pages_and_applies_onto_the_base() {
    // Arrange
    let dir = TempDir::new("mem-diff");
    let (base_path, diff_path) = (dir.path().join("memory"), dir.path().join("memory.diff"));
    let mem = touched_memory();
    write_full_memory(&mem, &base_path).unwrap();
    fill_page(&mem, REGION0, 5, 0xa5); // flagged
    fill_page(&mem, REGION0, 6, 0x00); // flagged, now zero
    fill_page(&mem, REGION1, 7, 0xb7); // changed but not flagged: must not be saved
    fill_page(&mem, REGION1, 300, 0xc3); // flagged
    let dirty = bitmaps(&[(0, 5), (0, 6), (1, 300)]);

    // Act
    let stats = write_dirty_pages(&mem, &diff_path, &dirty).unwrap();
    let restored = map_memory_file(&base_path, &layout()).unwrap();
    let applied = apply_diff(&restored, &diff_path, &layout()).unwrap();

    // Assert
    let table_len = 8 + 4 + 4 + 2 * 16 + 8 * (5 + 8) + 4;
    assert_eq!(stats.dirty_pages, 3);
    assert_eq!(stats.pages_written, 2);
    assert_eq!(stats.file_len, TOTAL + table_len);
    assert_eq!(stats.bytes_written, 2 * PAGE_SIZE as u64 + table_len);
    assert_eq!(applied, 3);
    assert_eq!(read_page(&restored, REGION0, 5), vec![0xa5; PAGE_SIZE]);
    assert_eq!(read_page(&restored, REGION0, 6), vec![0; PAGE_SIZE]);
    assert_eq!(read_page(&restored, REGION1, 7), vec![0; PAGE_SIZE]);
    assert_eq!(read_page(&restored, REGION1, 300), vec![0xc3; PAGE_SIZE]);
    assert_eq!(read_page(&restored, REGION0, 0), vec![0x11; PAGE_SIZE]);
    let allocated = std::fs::metadata(&diff_path).unwrap().blocks() * 512;
    assert!(
        allocated <= 8 * PAGE_SIZE as u64,
        "{allocated} bytes allocated"
    );
}

#[test]
fn diff_chain_applies_in_order() {
    // Arrange
    let dir = TempDir::new("mem-chain");
    let base = dir.path().join("memory");
    let (diff1, diff2) = (dir.path().join("diff1"), dir.path().join("diff2"));
    let mem = touched_memory();
    write_full_memory(&mem, &base).unwrap();
    fill_page(&mem, REGION0, 1, 0x01);
    fill_page(&mem, REGION1, 2, 0x01);
    write_dirty_pages(&mem, &diff1, &bitmaps(&[(0, 1), (1, 2)])).unwrap();
    fill_page(&mem, REGION1, 2, 0x02);
    fill_page(&mem, REGION1, 511, 0x02);
    write_dirty_pages(&mem, &diff2, &bitmaps(&[(1, 2), (1, 511)])).unwrap();

    // Act
    let restored = map_memory_file(&base, &layout()).unwrap();
    apply_diff(&restored, &diff1, &layout()).unwrap();
    apply_diff(&restored, &diff2, &layout()).unwrap();

    // Assert
    assert!(contents(&restored) == contents(&mem));
}

#[test]
fn malformed_dirty_logs_are_refused() {
    // Arrange
    let dir = TempDir::new("mem-bitmaps");
    let path = dir.path().join("diff");
    let mem = new_memory();
    let mut short = bitmaps(&[]);
    short[1].pop();
    let mut past_end = bitmaps(&[]);
    past_end[0][4] = 1 << 4; // page 260 of a 260-page region

    // Act
    let count = memory_error(write_dirty_pages(&mem, &path, &bitmaps(&[])[..1]).unwrap_err());
    let length = memory_error(write_dirty_pages(&mem, &path, &short).unwrap_err());
    let beyond = memory_error(write_dirty_pages(&mem, &path, &past_end).unwrap_err());

    // Assert
    assert!(
        matches!(
            count,
            MemoryError::BitmapCount {
                found: 1,
                expected: 2
            }
        ),
        "{count}"
    );
    assert!(
        matches!(
            length,
            MemoryError::BitmapLength {
                index: 1,
                found: 7,
                expected: 8,
                ..
            }
        ),
        "{length}"
    );
    assert_eq!(
        beyond.to_string(),
        "dirty bitmap of region 0 flags page 260, past the region's 260 pages"
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

fn diff_fixture(dir: &TempDir) -> (GuestMemoryMmap, PathBuf) {
    let path = dir.path().join("diff");
    let mem = touched_memory();
    write_dirty_pages(&mem, &path, &bitmaps(&[(0, 5), (1, 300)])).unwrap();
    (mem, path)
}

fn bad_diff_problem(mem: &GuestMemoryMmap, path: &Path) -> String {
    match memory_error(apply_diff(mem, path, &layout()).unwrap_err()) {
        MemoryError::BadDiff { problem, .. } => problem,
        other => panic!("expected a bad diff, got: {other}"),
    }
}

#[test]
fn corrupted_dirty_page_table_is_refused() {
    // Arrange
    let dir = TempDir::new("mem-diff-crc");
    let (mem, path) = diff_fixture(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = TOTAL as usize + 40;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    // Act
    let problem = bad_diff_problem(&mem, &path);

    // Assert
    assert!(
        problem.starts_with("dirty-page table is corrupted: checksum"),
        "{problem}"
    );
}

#[test]
fn diff_file_of_the_wrong_size_is_refused() {
    // Arrange
    let dir = TempDir::new("mem-diff-size");
    let (mem, path) = diff_fixture(&dir);
    let full = dir.path().join("memory");
    write_full_memory(&mem, &full).unwrap();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(TOTAL + 1)
        .unwrap();

    // Act
    let truncated = bad_diff_problem(&mem, &path);
    let full_as_diff = bad_diff_problem(&mem, &full);

    // Assert
    assert!(
        truncated.starts_with(&format!("it is {} bytes", TOTAL + 1)),
        "{truncated}"
    );
    assert!(
        full_as_diff.starts_with(&format!("it is {TOTAL} bytes")),
        "{full_as_diff}"
    );
}

#[test]
fn diff_with_a_foreign_table_is_refused() {
    // Arrange: a table with a bad magic, and one claiming another region layout.
    let dir = TempDir::new("mem-diff-table");
    let (mem, path) = diff_fixture(&dir);
    let table_at = TOTAL as usize;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[table_at] = b'X';
    let bad_magic = dir.path().join("bad-magic");
    std::fs::write(&bad_magic, &bytes).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[table_at + 16..table_at + 24].copy_from_slice(&0x2000u64.to_le_bytes());
    let crc_at = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[table_at..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
    let moved = dir.path().join("moved");
    std::fs::write(&moved, &bytes).unwrap();

    // Act
    let magic_problem = bad_diff_problem(&mem, &bad_magic);
    let layout_problem = bad_diff_problem(&mem, &moved);

    // Assert
    assert!(magic_problem.contains("expected"), "{magic_problem}");
    assert_eq!(
        layout_problem,
        "its region 0 is 0x104000 bytes at 0x2000, this memory's is 0x104000 bytes at 0x0"
    );
}

#[test]
fn diff_onto_memory_of_another_layout_is_refused() {
    // Arrange
    let dir = TempDir::new("mem-diff-layout");
    let (_, path) = diff_fixture(&dir);
    let other = GuestMemoryMmap::<()>::from_ranges(&[REGION0]).unwrap();

    // Act
    let error = memory_error(apply_diff(&other, &path, &layout()).unwrap_err());

    // Assert
    assert_eq!(
        error.to_string(),
        "guest memory region 1 is absent, but the diff's base layout has 0x200000 bytes at \
         0x100000000"
    );
}
