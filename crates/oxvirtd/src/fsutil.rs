//! Crash-safe file replacement.
//!
//! A file is replaced by writing a temporary file in the same directory, `fsync`ing it,
//! renaming it over the target and `fsync`ing the directory: after a crash at any point the
//! target holds either the old or the new contents, never a mix. A crash before the rename
//! leaves a temporary file behind; its name starts with `.` and contains [`TEMP_MARKER`], which
//! no valid domain name can produce, so listings skip it and [`remove_stale_temp_files`]
//! deletes it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Part of every temporary file name.
pub(crate) const TEMP_MARKER: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary file `write_atomically` uses for `target`: `.<file name>.tmp-<pid>-<n>`.
pub(crate) fn temp_path_for(target: &Path) -> PathBuf {
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(
        ".{file_name}{TEMP_MARKER}{}-{n}",
        std::process::id()
    ))
}

/// Whether a directory entry is a temporary file left by [`write_atomically`].
pub(crate) fn is_temp_file_name(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(TEMP_MARKER)
}

/// What a replaced file must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// A crash of the host (power loss): the data and the rename are `fsync`ed. Definitions.
    HostCrash,
    /// A crash of the daemon only. Runtime files describe processes that a host crash ends too,
    /// and live on tmpfs (`/run`) where an `fsync` does nothing: the rename's atomicity is
    /// what matters, and skipping the `fsync`s keeps starts fast where the runtime directory
    /// is on a disk.
    DaemonCrash,
}

/// Replaces `target` with `contents` (mode 0644), atomically and durably.
pub(crate) fn write_atomically(target: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file(target, contents, Durability::HostCrash)
}

/// Replaces `target` with `contents` (mode 0644), atomically, surviving what `durability` says.
pub(crate) fn replace_file(
    target: &Path,
    contents: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let temp = temp_path_for(target);
    let result = write_and_rename(&temp, target, contents, durability);
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", target.display())))
}

fn write_and_rename(
    temp: &Path,
    target: &Path,
    contents: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(contents)?;
    if durability == Durability::HostCrash {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(temp, target)?;
    if durability == Durability::HostCrash {
        sync_parent_dir(target)?;
    }
    Ok(())
}

/// Removes `path` (absent is fine) and makes the removal durable.
pub(crate) fn remove_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("removing {}: {e}", path.display()),
        )),
    }
}

/// `fsync`s the directory holding `path`, so a rename or unlink in it survives a crash.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Deletes temporary files a crash left in `dir`; returns how many.
pub(crate) fn remove_stale_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if is_temp_file_name(&name.to_string_lossy()) {
            tracing::info!(file = %entry.path().display(), "removing a leftover temporary file");
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomically_replaces_the_contents_and_leaves_no_temp_file() {
        let dir = crate::test_util::temp_dir("atomic");
        let target = dir.join("a.xml");
        write_atomically(&target, b"old").unwrap();

        write_atomically(&target, b"new").unwrap();

        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn temp_names_are_hidden_and_recognised() {
        let temp = temp_path_for(Path::new("/d/vm.xml"));
        let name = temp.file_name().unwrap().to_str().unwrap();

        assert!(name.starts_with(".vm.xml.tmp-"), "{name}");
        assert!(is_temp_file_name(name));
        assert!(!is_temp_file_name("vm.xml"));
        assert!(!is_temp_file_name("vm.tmp-1.xml"));
    }

    #[test]
    fn a_failed_write_names_the_target_and_cleans_up() {
        let dir = crate::test_util::temp_dir("atomic-fail");
        let target = dir.join("missing-subdir").join("a.xml");

        let err = write_atomically(&target, b"x").unwrap_err();

        assert!(err.to_string().contains("a.xml"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_temp_files_are_removed_and_others_kept() {
        let dir = crate::test_util::temp_dir("stale");
        std::fs::write(dir.join(".vm.xml.tmp-1-0"), b"half").unwrap();
        std::fs::write(dir.join("vm.xml"), b"whole").unwrap();

        let removed = remove_stale_temp_files(&dir).unwrap();

        assert_eq!(removed, 1);
        assert!(dir.join("vm.xml").exists());
        assert!(!dir.join(".vm.xml.tmp-1-0").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
