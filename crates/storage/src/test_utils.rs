//! Temporary files for the unit tests (removed when dropped).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A path in the temporary directory, unique to this process and call; the file (if any)
/// is removed on drop.
pub struct TempPath(PathBuf);

impl TempPath {
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("oxvirt-storage-{}-{n}-{name}", std::process::id());
        Self(std::env::temp_dir().join(file))
    }

    /// A file of `len` bytes where byte `i` is `i * 7 + i / 4096` (wrapping): every 4 KiB
    /// block differs from its neighbours.
    pub fn with_pattern(name: &str, len: usize) -> Self {
        let temp = Self::new(name);
        std::fs::write(&temp.0, pattern(0, len)).unwrap();
        temp
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }

    /// Bytes the file system allocated for the file.
    pub fn allocated(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.0).unwrap().blocks() * 512
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bytes `start..start + len` of the pattern [`TempPath::with_pattern`] writes.
pub fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i.wrapping_mul(7) + i / 4096) as u8)
        .collect()
}
