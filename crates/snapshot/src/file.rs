//! Crash-safe file replacement shared by the state and memory writers.
//!
//! A snapshot file is written under a temporary name in the destination's directory, flushed
//! to disk, renamed over the destination and the directory is flushed, so a crash leaves either
//! the old file or the complete new one, never a torn file under the real name. Renaming also
//! matters for memory files: a VM restored from `DIR/memory` maps that file copy-on-write, and
//! a new snapshot into the same `DIR` must not truncate the inode the running guest still reads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Snapshot files hold guest memory and CPU state: readable by their owner only.
const SNAPSHOT_FILE_MODE: u32 = 0o600;

/// A file-system operation on a snapshot file failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}")]
pub struct FileError {
    /// What was being done ("create", "write", "rename … to", …).
    pub op: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl FileError {
    pub(crate) fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A new file that replaces `dest` only when [`AtomicFile::commit`] succeeds; dropped
/// uncommitted, it removes its temporary file.
pub(crate) struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates an empty temporary file next to `dest`.
    pub(crate) fn create(dest: &Path) -> Result<Self, FileError> {
        let tmp = temporary_name(dest)
            .ok_or_else(|| FileError::new("name", dest, io::ErrorKind::InvalidInput.into()))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(SNAPSHOT_FILE_MODE)
            .open(&tmp)
            .map_err(|e| FileError::new("create", &tmp, e))?;
        Ok(Self {
            file,
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// The temporary file, to write into.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The temporary file's path, for error messages.
    pub(crate) fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes the file, renames it over the destination and flushes the directory.
    pub(crate) fn commit(mut self) -> Result<(), FileError> {
        self.file
            .sync_all()
            .map_err(|e| FileError::new("flush", &self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| FileError::new("rename into place", &self.dest, e))?;
        self.committed = true;
        let dir = parent_dir(&self.dest);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FileError::new("flush directory", dir, e))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that made us give up is the one worth reporting.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `dir/.name.tmp-PID-N`: hidden, unique within this process, in the same directory so the
/// rename cannot cross file systems.
fn temporary_name(dest: &Path) -> Option<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name()?.to_str()?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(".{name}.tmp-{}-{n}", std::process::id());
    Some(parent_dir(dest).join(tmp_name))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Opens a snapshot file for reading only: restore never writes to a snapshot.
pub(crate) fn open_read_only(path: &Path) -> Result<File, FileError> {
    File::open(path).map_err(|e| FileError::new("open", path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A directory under the system temporary directory, removed with its contents on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("oxvirt-snapshot-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        pub(crate) fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn committed_file_replaces_destination_and_leaves_no_temporary() {
        // Arrange
        let dir = TempDir::new("atomic");
        let dest = dir.path().join("state");
        std::fs::write(&dest, b"old").unwrap();

        // Act
        let new = AtomicFile::create(&dest).unwrap();
        std::io::Write::write_all(&mut new.file(), b"new").unwrap();
        new.commit().unwrap();

        // Assert
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(dir.entries(), vec!["state".to_string()]);
    }

    #[test]
    fn uncommitted_file_is_removed_and_destination_kept() {
        // Arrange
        let dir = TempDir::new("atomic-drop");
        let dest = dir.path().join("state");
        std::fs::write(&dest, b"old").unwrap();

        // Act
        let new = AtomicFile::create(&dest).unwrap();
        std::io::Write::write_all(&mut new.file(), b"half").unwrap();
        drop(new);

        // Assert
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(dir.entries(), vec!["state".to_string()]);
    }

    #[test]
    fn new_files_are_private_to_their_owner() {
        // Arrange
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("atomic-mode");
        let dest = dir.path().join("memory");

        // Act
        AtomicFile::create(&dest).unwrap().commit().unwrap();

        // Assert
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, SNAPSHOT_FILE_MODE);
    }
}
