//! Guest memory files: sparse full images, dirty-page diffs, and copy-on-write restore.
//!
//! # Layout
//!
//! A memory file's data area is guest memory region after region, in ascending guest-address
//! order (the order of `GuestMemoryMmap::iter()`): region `i` starts at file offset
//! `len(0) + … + len(i-1)`, page `p` of region `i` is at that offset plus `p * PAGE_SIZE`.
//! The file does not record the layout: the VMM keeps [`memory_layout`] (guest address and
//! length of each region) in its state file and hands it back to [`map_memory_file`]. Regions
//! must be non-empty and page-aligned in address and length.
//!
//! - **Full file** ([`write_full_memory`]): exactly the guest's size. Only pages that may ever
//!   have been written and are not all zero are written; everything else is a hole, so the
//!   file takes disk space only for the memory the guest used. "May have been written" is
//!   `mincore(2)` residency (a never-touched page of a private anonymous mapping is not
//!   resident); where the host has swap, pages `/proc/self/pagemap` reports swapped out are
//!   added (mincore does not count them), and if pagemap cannot be read every page is a
//!   candidate. For file-backed regions (a VM restored from a snapshot maps its memory file)
//!   the backing file's data extents (`lseek(SEEK_DATA/SEEK_HOLE)`) are added too, since pages
//!   not yet read back are not resident but hold data.
//! - **Diff file** ([`write_dirty_pages`]): the same data area holding only the pages KVM's
//!   dirty log flags (all-zero dirty pages stay holes), followed by a dirty-page table:
//!
//!   | size        | field                                                   |
//!   |-------------|---------------------------------------------------------|
//!   | 8           | magic `OXDIRTY\0`                                       |
//!   | 4           | table version (1)                                       |
//!   | 4           | region count `n`                                        |
//!   | 16 × n      | per region: guest address (u64), length (u64)           |
//!   | 8 × words   | per region: `ceil(pages / 64)` u64 dirty-bitmap words   |
//!   | 4           | CRC-32 of the table bytes before it                     |
//!
//!   (all little-endian). The table, not the holes, says which pages a diff replaces: a page
//!   the guest zeroed since the base is a hole in the data area yet must be applied, and not
//!   every file system reports holes exactly (or at all) through `SEEK_HOLE`.
//!
//! Restore maps a full file `MAP_PRIVATE` ([`map_memory_file`]): the guest's writes go to
//! private copies, the file is never modified, and nothing is read before the guest touches
//! it. The snapshot file must therefore stay in place, unmodified, while the VM runs. Writers
//! replace files by rename (temporary file, flush, rename), so snapshotting a restored VM into
//! its own snapshot directory does not disturb the inode it is running from.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_memory::bitmap::{Bitmap, NewBitmap};
use vm_memory::mmap::MmapRegionError;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionCollectionError, GuestRegionMmap, MmapRegion,
};

use crate::file::{AtomicFile, FileError, open_read_only};
use crate::{PAGE_SIZE, SnapshotError};

/// Pages handled per residency query: bounds the query buffers to a few hundred KiB.
const CHUNK_PAGES: usize = 16 * 1024;
/// Longest single read or write of guest memory, so one huge run does not hit the kernel's
/// 2 GiB-per-call limit or hold up error reporting.
const MAX_RUN_BYTES: usize = 64 << 20;
const PAGE_U64: u64 = PAGE_SIZE as u64;
const DIFF_MAGIC: [u8; 8] = *b"OXDIRTY\0";
const DIFF_TABLE_VERSION: u32 = 1;

/// What a memory-file writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryFileStats {
    /// Pages whose contents were written to the file (all-zero pages are left as holes).
    pub pages_written: u64,
    /// Bytes written: page data, plus a diff file's dirty-page table.
    pub bytes_written: u64,
    /// The file's length (its apparent size; the disk usage is about `bytes_written`).
    pub file_len: u64,
    /// Diff files only: pages flagged dirty, which [`apply_diff`] restores (including dirty
    /// pages that are now all zero and stored as holes). Zero for a full file.
    pub dirty_pages: u64,
}

/// Errors of reading, writing or mapping guest memory files.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Memory files use 4 KiB pages, as KVM's dirty log on x86_64 does.
    #[error("host page size is {found} bytes; memory files use {PAGE_SIZE}-byte pages")]
    HostPageSize { found: i64 },
    /// A layout with no regions.
    #[error("guest memory layout has no regions")]
    NoRegions,
    /// A region that is empty or not page-aligned.
    #[error(
        "guest memory region {index} at {addr:#x}, {len:#x} bytes, is empty or not aligned to \
         {PAGE_SIZE}-byte pages"
    )]
    BadRegion { index: usize, addr: u64, len: u64 },
    /// A region whose end, or the layout's total size, does not fit in 63 bits.
    #[error("guest memory region {index} ends beyond what a file offset can address")]
    LayoutOverflow { index: usize },
    /// Regions that overlap or are out of order.
    #[error("guest memory layout is invalid: {source}")]
    Layout {
        #[source]
        source: GuestRegionCollectionError,
    },
    /// `mincore(2)` failed.
    #[error("cannot find the resident pages of guest memory region {index}: {source}")]
    Residency {
        index: usize,
        #[source]
        source: io::Error,
    },
    /// The dirty log does not have one bitmap per region.
    #[error("dirty log has {found} bitmaps, guest memory has {expected} regions")]
    BitmapCount { found: usize, expected: usize },
    /// A dirty bitmap of the wrong size for its region.
    #[error("dirty bitmap of region {index} has {found} words; its {pages} pages need {expected}")]
    BitmapLength {
        index: usize,
        found: usize,
        expected: usize,
        pages: u64,
    },
    /// A dirty bitmap flags a page past the end of its region.
    #[error("dirty bitmap of region {index} flags page {page}, past the region's {pages} pages")]
    BitmapPastEnd { index: usize, page: u64, pages: u64 },
    /// A full memory file whose length is not the layout's size.
    #[error("memory file {path} is {found} bytes, the snapshot's memory is {expected} bytes")]
    FileSize {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    /// Mapping a region of the memory file failed.
    #[error(
        "cannot map {len:#x} bytes at offset {offset:#x} of {path} as memory region {index}: \
         {source}"
    )]
    Map {
        index: usize,
        path: PathBuf,
        offset: u64,
        len: usize,
        #[source]
        source: MmapRegionError,
    },
    /// The memory a diff is applied to is not laid out like the diff's base.
    #[error("guest memory region {index} is {found}, but the diff's base layout has {expected}")]
    LayoutMismatch {
        index: usize,
        found: String,
        expected: String,
    },
    /// A diff file whose size or dirty-page table is wrong.
    #[error("diff memory file {path} is invalid: {problem}")]
    BadDiff { path: PathBuf, problem: String },
}

/// The (guest address, length) of each region of `mem`, in file order: what the VMM records
/// to map a memory file back with [`map_memory_file`].
pub fn memory_layout<B: Bitmap>(mem: &GuestMemoryMmap<B>) -> Vec<(GuestAddress, usize)> {
    mem.iter()
        .map(|region| (region.start_addr(), region.len() as usize))
        .collect()
}

/// Writes all of `mem` to a new sparse file at `path` (replacing it atomically), skipping pages
/// that were never written or are all zero.
///
/// Nothing may write guest memory meanwhile: pause the vCPUs and quiesce device threads first.
/// `mem` may carry a vm-memory dirty bitmap (`B`); it is neither read nor changed here.
pub fn write_full_memory<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    path: &Path,
) -> Result<MemoryFileStats, SnapshotError> {
    write_full_memory_with(mem, path, &ResidencyProbe::for_host())
}

fn write_full_memory_with<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    path: &Path,
    probe: &ResidencyProbe,
) -> Result<MemoryFileStats, SnapshotError> {
    check_host_page_size()?;
    let (regions, total) = region_views(mem)?;
    let out = AtomicFile::create(path)?;
    out.file()
        .set_len(total)
        .map_err(|e| FileError::new("size", out.tmp_path(), e))?;
    let mut runs = PageRuns::new(out.file(), out.tmp_path(), Direction::ToFile);
    let mut candidates = vec![false; CHUNK_PAGES];
    for region in &regions {
        for first in (0..region.pages()).step_by(CHUNK_PAGES) {
            let count = CHUNK_PAGES.min(region.pages() - first);
            let candidates = &mut candidates[..count];
            probe.candidates(region, first, candidates)?;
            for (page, _) in candidates.iter().enumerate().filter(|(_, c)| **c) {
                runs.push_if_nonzero(region, first + page)?;
            }
        }
    }
    runs.flush()?;
    let stats = MemoryFileStats {
        file_len: total,
        ..runs.stats
    };
    out.commit()?;
    Ok(stats)
}

/// Writes the pages flagged in `dirty` to a new diff file at `path` (replacing it atomically).
///
/// `dirty` holds one KVM dirty bitmap per region of `mem`, in region order: bit `b` of word
/// `w` flags page `64 * w + b` of that region. Each bitmap must have exactly
/// `ceil(pages / 64)` words and no bit past the region's last page. KVM logs only the vCPUs'
/// writes: OR in the pages the VMM's own devices wrote (for example from a vm-memory
/// `AtomicBitmap` on `mem`), or the diff misses them. Quiesce writers first, as for
/// [`write_full_memory`].
pub fn write_dirty_pages<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    path: &Path,
    dirty: &[Vec<u64>],
) -> Result<MemoryFileStats, SnapshotError> {
    check_host_page_size()?;
    let (regions, total) = region_views(mem)?;
    check_bitmaps(&regions, dirty)?;
    let table = encode_dirty_table(&regions, dirty);
    let file_len = total + table.len() as u64;
    let out = AtomicFile::create(path)?;
    out.file()
        .set_len(file_len)
        .map_err(|e| FileError::new("size", out.tmp_path(), e))?;
    let mut runs = PageRuns::new(out.file(), out.tmp_path(), Direction::ToFile);
    for (region, bitmap) in regions.iter().zip(dirty) {
        for page in set_bits(bitmap) {
            runs.stats.dirty_pages += 1;
            runs.push_if_nonzero(region, page as usize)?;
        }
    }
    runs.flush()?;
    out.file()
        .write_all_at(&table, total)
        .map_err(|e| FileError::new("write", out.tmp_path(), e))?;
    let stats = MemoryFileStats {
        bytes_written: runs.stats.bytes_written + table.len() as u64,
        file_len,
        ..runs.stats
    };
    out.commit()?;
    Ok(stats)
}

/// Maps the full memory file at `path` copy-on-write (`MAP_PRIVATE`) as guest memory laid out
/// as `layout`. Nothing is read now: pages come in from the file as the guest touches them,
/// and the guest's writes never reach the file.
pub fn map_memory_file<B: NewBitmap>(
    path: &Path,
    layout: &[(GuestAddress, usize)],
) -> Result<GuestMemoryMmap<B>, SnapshotError> {
    check_host_page_size()?;
    let total = validate_layout(layout)?;
    let file = open_read_only(path)?;
    let found = file
        .metadata()
        .map_err(|e| FileError::new("stat", path, e))?
        .len();
    if found != total {
        return Err(MemoryError::FileSize {
            path: path.to_path_buf(),
            found,
            expected: total,
        }
        .into());
    }
    let file = Arc::new(file);
    let mut offset = 0;
    let mut regions = Vec::with_capacity(layout.len());
    for (index, &(addr, len)) in layout.iter().enumerate() {
        let file_offset = FileOffset::from_arc(Arc::clone(&file), offset);
        let mapping = MmapRegion::<B>::build(
            Some(file_offset),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|source| MemoryError::Map {
            index,
            path: path.to_path_buf(),
            offset,
            len,
            source,
        })?;
        regions.push(
            GuestRegionMmap::new(mapping, addr).ok_or(MemoryError::LayoutOverflow { index })?,
        );
        offset += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|source| MemoryError::Layout { source }.into())
}

/// Copies the pages a diff file at `diff_path` holds onto `mem`, which must be laid out as
/// `base_layout` (the layout the diff was taken of). Returns how many pages were copied.
///
/// Apply a chain in order: map the full file, then each diff from oldest to newest.
pub fn apply_diff<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    diff_path: &Path,
    base_layout: &[(GuestAddress, usize)],
) -> Result<u64, SnapshotError> {
    check_host_page_size()?;
    let total = validate_layout(base_layout)?;
    let (regions, _) = region_views(mem)?;
    check_same_layout(&regions, base_layout)?;
    let bad_diff = |problem: String| MemoryError::BadDiff {
        path: diff_path.to_path_buf(),
        problem,
    };

    let file = open_read_only(diff_path)?;
    let found = file
        .metadata()
        .map_err(|e| FileError::new("stat", diff_path, e))?
        .len();
    let table_len = dirty_table_len(&regions);
    if found != total + table_len {
        return Err(bad_diff(format!(
            "it is {found} bytes; for this memory layout it must be {} ({total} bytes of pages \
             and a {table_len}-byte dirty-page table)",
            total + table_len
        ))
        .into());
    }
    // The table's size follows from the trusted layout, not from the file.
    let mut table = vec![0; table_len as usize];
    file.read_exact_at(&mut table, total)
        .map_err(|e| FileError::new("read", diff_path, e))?;
    let bitmaps = decode_dirty_table(&table, &regions).map_err(bad_diff)?;

    let mut runs = PageRuns::new(&file, diff_path, Direction::FromFile);
    for (region, bitmap) in regions.iter().zip(&bitmaps) {
        for page in set_bits(bitmap) {
            runs.push(region, page as usize)?;
        }
    }
    runs.flush()?;
    Ok(runs.stats.pages_written)
}

/// One guest memory region as the file writers see it.
struct RegionView<'a> {
    index: usize,
    addr: u64,
    len: usize,
    host: *mut u8,
    /// Where the region starts in a memory file.
    file_offset: u64,
    /// The file the region is mapped from, if any.
    backing: Option<&'a FileOffset>,
}

impl RegionView<'_> {
    fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    fn page_host(&self, page: usize) -> *mut u8 {
        self.host.wrapping_add(page * PAGE_SIZE)
    }

    fn page_file_offset(&self, page: usize) -> u64 {
        self.file_offset + (page * PAGE_SIZE) as u64
    }
}

fn region_views<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
) -> Result<(Vec<RegionView<'_>>, u64), MemoryError> {
    let total = validate_layout(&memory_layout(mem))?;
    let mut file_offset = 0;
    let views = mem
        .iter()
        .enumerate()
        .map(|(index, region)| {
            let view = RegionView {
                index,
                addr: region.start_addr().0,
                len: region.len() as usize,
                host: region.as_ptr(),
                file_offset,
                backing: region.file_offset(),
            };
            file_offset += region.len();
            view
        })
        .collect();
    Ok((views, total))
}

/// Checks every region is non-empty and page-aligned, and returns the total size.
fn validate_layout(layout: &[(GuestAddress, usize)]) -> Result<u64, MemoryError> {
    if layout.is_empty() {
        return Err(MemoryError::NoRegions);
    }
    let mut total: u64 = 0;
    for (index, &(addr, len)) in layout.iter().enumerate() {
        let len = len as u64;
        if len == 0 || !len.is_multiple_of(PAGE_U64) || !addr.0.is_multiple_of(PAGE_U64) {
            return Err(MemoryError::BadRegion {
                index,
                addr: addr.0,
                len,
            });
        }
        total = total
            .checked_add(len)
            .filter(|&t| t <= i64::MAX as u64 && addr.0.checked_add(len).is_some())
            .ok_or(MemoryError::LayoutOverflow { index })?;
    }
    Ok(total)
}

fn check_same_layout(
    regions: &[RegionView<'_>],
    layout: &[(GuestAddress, usize)],
) -> Result<(), MemoryError> {
    let describe = |addr: u64, len: usize| format!("{len:#x} bytes at {addr:#x}");
    for index in 0..regions.len().max(layout.len()) {
        let found = regions.get(index).map(|r| (r.addr, r.len));
        let expected = layout.get(index).map(|&(a, l)| (a.0, l));
        if found != expected {
            return Err(MemoryError::LayoutMismatch {
                index,
                found: found.map_or("absent".into(), |(a, l)| describe(a, l)),
                expected: expected.map_or("no such region".into(), |(a, l)| describe(a, l)),
            });
        }
    }
    Ok(())
}

fn check_host_page_size() -> Result<(), MemoryError> {
    // SAFETY: sysconf only reads a system constant.
    let found = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if found != PAGE_SIZE as i64 {
        return Err(MemoryError::HostPageSize { found });
    }
    Ok(())
}

fn bitmap_words(pages: usize) -> usize {
    pages.div_ceil(64)
}

fn check_bitmaps(regions: &[RegionView<'_>], dirty: &[Vec<u64>]) -> Result<(), MemoryError> {
    if dirty.len() != regions.len() {
        return Err(MemoryError::BitmapCount {
            found: dirty.len(),
            expected: regions.len(),
        });
    }
    for (region, bitmap) in regions.iter().zip(dirty) {
        let expected = bitmap_words(region.pages());
        if bitmap.len() != expected {
            return Err(MemoryError::BitmapLength {
                index: region.index,
                found: bitmap.len(),
                expected,
                pages: region.pages() as u64,
            });
        }
        check_bitmap(region, bitmap).map_err(|page| MemoryError::BitmapPastEnd {
            index: region.index,
            page,
            pages: region.pages() as u64,
        })?;
    }
    Ok(())
}

/// Finds the first flagged page past the region's end, if any.
fn check_bitmap(region: &RegionView<'_>, bitmap: &[u64]) -> Result<(), u64> {
    match set_bits(bitmap).find(|&page| page >= region.pages() as u64) {
        Some(page) => Err(page),
        None => Ok(()),
    }
}

/// The indexes of the set bits, ascending.
fn set_bits(bitmap: &[u64]) -> impl Iterator<Item = u64> + '_ {
    bitmap.iter().enumerate().flat_map(|(word_index, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            Some(word_index as u64 * 64 + u64::from(bit))
        })
    })
}

fn dirty_table_len(regions: &[RegionView<'_>]) -> u64 {
    let words: usize = regions.iter().map(|r| bitmap_words(r.pages())).sum();
    (DIFF_MAGIC.len() + 4 + 4 + 16 * regions.len() + 8 * words + 4) as u64
}

fn encode_dirty_table(regions: &[RegionView<'_>], dirty: &[Vec<u64>]) -> Vec<u8> {
    let mut table = Vec::with_capacity(dirty_table_len(regions) as usize);
    table.extend_from_slice(&DIFF_MAGIC);
    table.extend_from_slice(&DIFF_TABLE_VERSION.to_le_bytes());
    table.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    for region in regions {
        table.extend_from_slice(&region.addr.to_le_bytes());
        table.extend_from_slice(&(region.len as u64).to_le_bytes());
    }
    for word in dirty.iter().flatten() {
        table.extend_from_slice(&word.to_le_bytes());
    }
    let crc = crc32fast::hash(&table);
    table.extend_from_slice(&crc.to_le_bytes());
    table
}

/// Checks a dirty-page table read from a diff file against the memory it is applied to, and
/// returns its bitmaps. `table` is exactly [`dirty_table_len`] bytes.
fn decode_dirty_table(table: &[u8], regions: &[RegionView<'_>]) -> Result<Vec<Vec<u64>>, String> {
    let (body, crc) = table.split_at(table.len() - 4);
    let mut words = body
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
    let magic = &body[..DIFF_MAGIC.len()];
    if magic != DIFF_MAGIC {
        return Err(format!(
            "its dirty-page table starts with {magic:02x?}, expected {DIFF_MAGIC:02x?} \
             (\"OXDIRTY\\0\")"
        ));
    }
    let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "dirty-page table is corrupted: checksum {stored:#010x} stored, \
             {computed:#010x} computed"
        ));
    }
    words.next(); // the magic, checked above
    let version_and_count = words.next().unwrap_or_default();
    let version = version_and_count as u32;
    let count = (version_and_count >> 32) as usize;
    if version != DIFF_TABLE_VERSION {
        return Err(format!(
            "dirty-page table version {version}, this oxvmm reads {DIFF_TABLE_VERSION}"
        ));
    }
    if count != regions.len() {
        return Err(format!(
            "it was taken of {count} memory regions, this memory has {}",
            regions.len()
        ));
    }
    for region in regions {
        let (addr, len) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        if (addr, len) != (region.addr, region.len as u64) {
            return Err(format!(
                "its region {} is {len:#x} bytes at {addr:#x}, this memory's is {:#x} bytes at \
                 {:#x}",
                region.index, region.len, region.addr
            ));
        }
    }
    let mut bitmaps = Vec::with_capacity(regions.len());
    for region in regions {
        let bitmap: Vec<u64> = words.by_ref().take(bitmap_words(region.pages())).collect();
        if let Err(page) = check_bitmap(region, &bitmap) {
            return Err(format!(
                "its bitmap flags page {page} of region {}, which has {} pages",
                region.index,
                region.pages()
            ));
        }
        bitmaps.push(bitmap);
    }
    Ok(bitmaps)
}

/// How to decide which pages of a region may hold data.
enum ResidencyProbe {
    /// `mincore(2)` alone: exact when nothing can be swapped out.
    Mincore,
    /// `mincore(2)` plus the swapped-out pages `/proc/self/pagemap` reports.
    MincoreAndSwap(File),
    /// Every page (the all-zero check still skips untouched ones): when swap exists but
    /// pagemap cannot be read.
    AllPages,
}

/// `/proc/self/pagemap` entry bit: the page is swapped out.
const PAGEMAP_SWAPPED: u64 = 1 << 62;

impl ResidencyProbe {
    fn for_host() -> Self {
        if !host_has_swap() {
            return Self::Mincore;
        }
        match File::open("/proc/self/pagemap") {
            Ok(pagemap) => Self::MincoreAndSwap(pagemap),
            Err(e) => {
                tracing::debug!(
                    "host has swap but /proc/self/pagemap is unreadable ({e}): \
                     checking every guest page"
                );
                Self::AllPages
            }
        }
    }

    /// Sets `out[i]` for each page `first + i` of `region` that may hold data.
    fn candidates(
        &self,
        region: &RegionView<'_>,
        first: usize,
        out: &mut [bool],
    ) -> Result<(), MemoryError> {
        let residency_error = |source| MemoryError::Residency {
            index: region.index,
            source,
        };
        match self {
            Self::AllPages => out.fill(true),
            Self::Mincore => mincore(region.page_host(first), out).map_err(residency_error)?,
            Self::MincoreAndSwap(pagemap) => {
                mincore(region.page_host(first), out).map_err(residency_error)?;
                let entries = pagemap_entries(pagemap, region.page_host(first), out.len())
                    .map_err(residency_error)?;
                for (flag, entry) in out.iter_mut().zip(entries) {
                    *flag |= entry & PAGEMAP_SWAPPED != 0;
                }
            }
        }
        if let Some(backing) = region.backing {
            let start = backing.start() + (first * PAGE_SIZE) as u64;
            if let Err(e) = mark_file_data(backing.file(), start, out) {
                tracing::debug!("SEEK_DATA unusable on guest memory's backing file ({e})");
                out.fill(true);
            }
        }
        Ok(())
    }
}

fn host_has_swap() -> bool {
    // SAFETY: all-zero is a valid `sysinfo` value.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable `sysinfo` for the call to fill in.
    let rc = unsafe { libc::sysinfo(&mut info) };
    // If the kernel will not say, assume swap: the safe answer.
    rc != 0 || info.totalswap != 0
}

/// Marks the resident pages of `out.len()` pages starting at `start`.
fn mincore(start: *mut u8, out: &mut [bool]) -> io::Result<()> {
    let mut vec = vec![0u8; out.len()];
    // SAFETY: `start` is page-aligned and the range lies inside one mapped guest memory
    // region; `vec` has one writable byte per page of the range. mincore only writes `vec`.
    let rc = unsafe { libc::mincore(start.cast(), out.len() * PAGE_SIZE, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    for (flag, byte) in out.iter_mut().zip(vec) {
        *flag = byte & 1 != 0;
    }
    Ok(())
}

/// Reads the pagemap entries of `count` pages starting at the page-aligned address `start`.
fn pagemap_entries(pagemap: &File, start: *mut u8, count: usize) -> io::Result<Vec<u64>> {
    let mut bytes = vec![0u8; count * 8];
    let offset = (start as u64 / PAGE_U64) * 8;
    pagemap.read_exact_at(&mut bytes, offset)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|e| u64::from_ne_bytes(e.try_into().unwrap_or_default()))
        .collect())
}

/// Marks the pages of `out.len()` pages at file offset `start` that hold data in `file`.
fn mark_file_data(file: &File, start: u64, out: &mut [bool]) -> io::Result<()> {
    let end = start + (out.len() * PAGE_SIZE) as u64;
    let mut pos = start;
    while pos < end {
        let Some(data) = seek(file.as_raw_fd(), pos, libc::SEEK_DATA)? else {
            break; // no data from `pos` to the end of the file
        };
        if data >= end {
            break;
        }
        let hole = seek(file.as_raw_fd(), data, libc::SEEK_HOLE)?.unwrap_or(end);
        let hole = hole.clamp(data + 1, end);
        let first = ((data - start) / PAGE_U64) as usize;
        let last = (hole - start).div_ceil(PAGE_U64) as usize;
        let last = last.min(out.len());
        out[first..last].fill(true);
        pos = hole;
    }
    Ok(())
}

/// `lseek`; `None` for ENXIO (no data, or no hole, past `pos`).
fn seek(fd: RawFd, pos: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: lseek only moves the file position of a descriptor we own.
    let at = unsafe { libc::lseek(fd, pos as libc::off_t, whence) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(error),
    }
}

/// Whether the guest page at `page` reads as all zeros.
///
/// # Safety
/// `page` must be 8-aligned and valid for reads of `PAGE_SIZE` bytes.
unsafe fn page_is_zero(page: *const u8) -> bool {
    let words = page.cast::<u64>();
    // Volatile: this is guest memory, which Rust does not own; most non-zero pages stop at
    // the first word.
    (0..PAGE_SIZE / 8).all(|i| {
        // SAFETY: `i * 8 < PAGE_SIZE`, inside the page the caller vouches for.
        let word = unsafe { words.add(i).read_volatile() };
        word == 0
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Guest memory → file (snapshot).
    ToFile,
    /// File → guest memory (applying a diff).
    FromFile,
}

/// Copies pages between guest memory and a file, merging adjacent pages into one system call.
struct PageRuns<'a> {
    file: &'a File,
    path: &'a Path,
    direction: Direction,
    host: *mut u8,
    file_offset: u64,
    len: usize,
    stats: MemoryFileStats,
}

impl<'a> PageRuns<'a> {
    fn new(file: &'a File, path: &'a Path, direction: Direction) -> Self {
        Self {
            file,
            path,
            direction,
            host: std::ptr::null_mut(),
            file_offset: 0,
            len: 0,
            stats: MemoryFileStats::default(),
        }
    }

    /// Adds a page to the copy unless it is all zero (a hole in the file reads as zeros).
    fn push_if_nonzero(&mut self, region: &RegionView<'_>, page: usize) -> Result<(), FileError> {
        // SAFETY: `page` is inside the region (callers iterate its pages or checked bitmaps),
        // whose mapping is page-aligned and lives as long as the borrowed guest memory.
        if unsafe { page_is_zero(region.page_host(page)) } {
            return Ok(());
        }
        self.push(region, page)
    }

    fn push(&mut self, region: &RegionView<'_>, page: usize) -> Result<(), FileError> {
        let host = region.page_host(page);
        let file_offset = region.page_file_offset(page);
        let extends = self.len > 0
            && self.len < MAX_RUN_BYTES
            && host == self.host.wrapping_add(self.len)
            && file_offset == self.file_offset + self.len as u64;
        if extends {
            self.len += PAGE_SIZE;
            return Ok(());
        }
        self.flush()?;
        (self.host, self.file_offset, self.len) = (host, file_offset, PAGE_SIZE);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FileError> {
        if self.len == 0 {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: the run is made of whole pages of one mapped guest memory region (see
        // `push`), valid for `len` bytes of reads and, for diffs, writes.
        let result =
            unsafe { transfer_all(fd, self.host, self.len, self.file_offset, self.direction) };
        let op = match self.direction {
            Direction::ToFile => "write guest memory to",
            Direction::FromFile => "read guest memory from",
        };
        result.map_err(|e| FileError::new(op, self.path, e))?;
        self.stats.pages_written += (self.len / PAGE_SIZE) as u64;
        self.stats.bytes_written += self.len as u64;
        self.len = 0;
        Ok(())
    }
}

/// Moves `len` bytes between `buf` and the file at `offset` in `direction`, retrying short
/// transfers and EINTR. (Guest memory is only ever reached through this raw pointer, never as a
/// Rust slice.)
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes, and for `FromFile` also for writes.
unsafe fn transfer_all(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    offset: u64,
    direction: Direction,
) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let at = (offset + done as u64) as libc::off_t;
        // SAFETY: `buf + done .. buf + len` is readable (and writable for reads from the
        // file), per the caller.
        let n = unsafe {
            match direction {
                Direction::ToFile => libc::pwrite(fd, buf.add(done).cast(), len - done, at),
                Direction::FromFile => libc::pread(fd, buf.add(done).cast(), len - done, at),
            }
        };
        match n {
            0 if direction == Direction::ToFile => return Err(io::ErrorKind::WriteZero.into()),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
