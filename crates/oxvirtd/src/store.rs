//! Persistent domain definitions: one XML file per domain, kept as opaque text (the `domain`
//! crate parses it), plus autostart markers.
//!
//! Writes are atomic ([`crate::fsutil::write_atomically`]); a temporary file left by a crash is
//! ignored by [`DefinitionStore::names`] and deleted by [`DefinitionStore::open`].

use std::io;
use std::path::PathBuf;

use crate::fsutil;
use crate::ident::{NameError, validate_name};
use crate::paths::Paths;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name cannot be a domain name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No definition with this name.
    #[error("no persistent definition for domain {name:?}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A file could not be read, written or removed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted ("read", "write", "list", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A definition file is not UTF-8 text.
    #[error("definition file {path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

fn io_error(action: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The definition files under `<state>/domains` and markers under `<state>/autostart`.
#[derive(Clone, Debug)]
pub struct DefinitionStore {
    paths: Paths,
}

impl DefinitionStore {
    /// Opens the store, creating its directories and deleting temporary files a crash left.
    pub fn open(paths: &Paths) -> Result<Self, StoreError> {
        paths
            .create_dirs()
            .map_err(io_error("create", paths.state_dir().to_path_buf()))?;
        for dir in [paths.definitions_dir(), paths.autostart_dir()] {
            fsutil::remove_stale_temp_files(&dir).map_err(io_error("clean", dir.clone()))?;
        }
        Ok(DefinitionStore {
            paths: paths.clone(),
        })
    }

    /// Writes (or replaces) the definition of `name`.
    pub fn save(&self, name: &str, xml: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        let path = self.paths.definition_file(name);
        fsutil::write_atomically(&path, xml.as_bytes()).map_err(io_error("write", path))
    }

    /// The definition of `name`.
    pub fn load(&self, name: &str) -> Result<String, StoreError> {
        validate_name(name)?;
        let path = self.paths.definition_file(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    name: name.to_string(),
                });
            }
            Err(e) => return Err(io_error("read", path)(e)),
        };
        String::from_utf8(bytes).map_err(|_| StoreError::NotUtf8 { path })
    }

    /// Whether `name` has a definition.
    pub fn contains(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.paths.definition_file(name).is_file()
    }

    /// Names of every stored definition, sorted. Files that are not `<valid name>.xml`
    /// (temporary files, editor backups) are skipped.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.paths.definitions_dir();
        let entries = std::fs::read_dir(&dir).map_err(io_error("list", dir.clone()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list", dir.clone()))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if fsutil::is_temp_file_name(file_name) {
                continue;
            }
            match file_name.strip_suffix(".xml") {
                Some(name) if validate_name(name).is_ok() => names.push(name.to_string()),
                _ => tracing::debug!(file = file_name, "not a definition file; skipped"),
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes the definition of `name` and its autostart marker.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        if !self.contains(name) {
            validate_name(name)?;
            return Err(StoreError::NotFound {
                name: name.to_string(),
            });
        }
        // The marker first: a crash in between leaves a definition without autostart rather
        // than a marker without a definition.
        let marker = self.paths.autostart_marker(name);
        fsutil::remove_durably(&marker).map_err(io_error("remove", marker))?;
        let path = self.paths.definition_file(name);
        fsutil::remove_durably(&path).map_err(io_error("remove", path))
    }

    /// Whether `name` starts with the daemon.
    pub fn autostart(&self, name: &str) -> Result<bool, StoreError> {
        self.require(name)?;
        Ok(self.paths.autostart_marker(name).exists())
    }

    /// Sets whether `name` starts with the daemon.
    pub fn set_autostart(&self, name: &str, enabled: bool) -> Result<(), StoreError> {
        self.require(name)?;
        let marker = self.paths.autostart_marker(name);
        if enabled {
            fsutil::write_atomically(&marker, b"").map_err(io_error("write", marker))
        } else {
            fsutil::remove_durably(&marker).map_err(io_error("remove", marker))
        }
    }

    fn require(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        if self.contains(name) {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                name: name.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_dir;

    fn store(test: &str) -> (DefinitionStore, Paths, PathBuf) {
        let root = temp_dir(test);
        let paths = Paths::new(root.join("state"), root.join("run"));
        (DefinitionStore::open(&paths).unwrap(), paths, root)
    }

    #[test]
    fn saved_definitions_load_back_and_list_sorted() {
        let (store, _, root) = store("store-basic");

        store.save("web", "<domain>web</domain>").unwrap();
        store.save("db", "<domain>db</domain>").unwrap();

        assert_eq!(store.load("web").unwrap(), "<domain>web</domain>");
        assert_eq!(store.names().unwrap(), ["db", "web"]);
        assert!(store.contains("db"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn saving_again_replaces_the_definition() {
        let (store, _, root) = store("store-replace");
        store.save("vm", "<v1/>").unwrap();

        store.save("vm", "<v2/>").unwrap();

        assert_eq!(store.load("vm").unwrap(), "<v2/>");
        assert_eq!(store.names().unwrap(), ["vm"]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn removal_deletes_the_definition_and_its_autostart_marker() {
        let (store, paths, root) = store("store-remove");
        store.save("vm", "<x/>").unwrap();
        store.set_autostart("vm", true).unwrap();

        store.remove("vm").unwrap();

        assert!(matches!(store.load("vm"), Err(StoreError::NotFound { .. })));
        assert!(!paths.autostart_marker("vm").exists());
        assert!(matches!(
            store.remove("vm"),
            Err(StoreError::NotFound { .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn autostart_is_a_marker_that_needs_a_definition() {
        let (store, _, root) = store("store-autostart");
        store.save("vm", "<x/>").unwrap();

        assert!(!store.autostart("vm").unwrap());
        store.set_autostart("vm", true).unwrap();
        assert!(store.autostart("vm").unwrap());
        store.set_autostart("vm", true).unwrap();
        store.set_autostart("vm", false).unwrap();
        assert!(!store.autostart("vm").unwrap());
        assert!(matches!(
            store.set_autostart("ghost", true),
            Err(StoreError::NotFound { .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_names_are_refused_before_touching_files() {
        let (store, _, root) = store("store-names");

        for name in ["../escape", ".hidden", ""] {
            assert!(
                matches!(store.save(name, "<x/>"), Err(StoreError::Name(_))),
                "{name}"
            );
        }
        assert!(matches!(store.load("a/b"), Err(StoreError::Name(_))));
        assert!(store.names().unwrap().is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_crash_in_the_middle_of_a_save_leaves_the_old_definition() {
        let (store, paths, root) = store("store-crash");
        store.save("vm", "<old/>").unwrap();
        // What a crash between writing the temporary file and the rename leaves behind.
        let temp = crate::fsutil::temp_path_for(&paths.definition_file("vm"));
        std::fs::write(&temp, "<new half-writ").unwrap();

        let names_after_crash = store.names().unwrap();
        let loaded_after_crash = store.load("vm").unwrap();
        let reopened = DefinitionStore::open(&paths).unwrap();

        assert_eq!(names_after_crash, ["vm"]);
        assert_eq!(loaded_after_crash, "<old/>");
        assert!(!temp.exists(), "open() removes the leftover temporary file");
        assert_eq!(reopened.names().unwrap(), ["vm"]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn foreign_files_in_the_directory_are_skipped() {
        let (store, paths, root) = store("store-foreign");
        std::fs::write(paths.definitions_dir().join("notes.txt"), "x").unwrap();
        std::fs::write(paths.definitions_dir().join(".vm.xml.swp"), "x").unwrap();
        store.save("vm", "<x/>").unwrap();

        assert_eq!(store.names().unwrap(), ["vm"]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn non_utf8_definitions_are_an_error_naming_the_file() {
        let (store, paths, root) = store("store-utf8");
        std::fs::write(paths.definition_file("vm"), b"\xff\xfe").unwrap();

        let err = store.load("vm").unwrap_err();

        assert!(err.to_string().contains("vm.xml"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
