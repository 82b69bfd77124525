//! The runtime record of a running VM, `<runtime>/domains/<name>.json`: what a restarted
//! daemon needs to find the process again and to know it is the same process.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmm_api::VmConfig;

use crate::fsutil::{self, Durability};
use crate::ident::Uuid;
use crate::paths::Paths;
use crate::state::ActiveState;

/// Format version written into every record.
pub const RECORD_VERSION: u32 = 1;

/// Everything the daemon knows about a running VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: Uuid,
    /// The domain id given at start (kept across daemon restarts).
    pub id: u32,
    /// oxvmm's pid.
    pub pid: i32,
    /// oxvmm's start time from `/proc/<pid>/stat` (clock ticks after boot): a pid with another
    /// start time is another process.
    pub start_time: u64,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// oxvmm's control API socket.
    pub api_socket: PathBuf,
    /// The configuration oxvmm was started with.
    pub config: VmConfig,
    /// Whether the domain has a persistent definition (a transient one vanishes when it stops).
    pub persistent: bool,
    /// Running or paused, with the reason, as last changed through the daemon.
    pub state: ActiveState,
    /// The live definition (XML text) the VM was started from.
    pub xml: String,
    /// Length of the log file before this run's first line: this run's messages follow it.
    pub log_offset: u64,
}

/// A runtime record that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading or writing failed.
    #[error("runtime record {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a record.
    #[error("runtime record {path} is malformed: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The file is a record of another format version.
    #[error("runtime record {path} has format version {found}; this daemon reads {RECORD_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in it.
        found: u32,
    },
}

impl RuntimeRecord {
    /// Writes the record to `<runtime>/domains/<name>.json`, atomically (surviving a daemon
    /// crash: a host crash ends the VM it describes too).
    pub fn save(&self, paths: &Paths) -> Result<(), RecordError> {
        let path = paths.runtime_record(&self.name);
        let json = serde_json::to_vec_pretty(self).map_err(|source| RecordError::Malformed {
            path: path.clone(),
            source,
        })?;
        fsutil::replace_file(&path, &json, Durability::DaemonCrash)
            .map_err(|source| RecordError::Io { path, source })
    }

    /// Reads a record file.
    pub fn load(path: &Path) -> Result<RuntimeRecord, RecordError> {
        let bytes = std::fs::read(path).map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let record: RuntimeRecord =
            serde_json::from_slice(&bytes).map_err(|source| RecordError::Malformed {
                path: path.to_path_buf(),
                source,
            })?;
        if record.version != RECORD_VERSION {
            return Err(RecordError::Version {
                path: path.to_path_buf(),
                found: record.version,
            });
        }
        Ok(record)
    }

    /// Every record file in `<runtime>/domains` (sorted; temporary files skipped).
    pub fn list_files(paths: &Paths) -> io::Result<Vec<PathBuf>> {
        let dir = paths.runtime_domains_dir();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if fsutil::is_temp_file_name(&name) {
                continue;
            }
            if name.ends_with(".json") && !name.ends_with(".vm.json") {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }
}

/// Removes every runtime file of `name` (record, config, sockets); absent files are fine.
pub fn remove_runtime_files(paths: &Paths, name: &str) {
    for path in paths.runtime_files(name) {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!("removing {}: {e}", path.display());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) fn sample_record(name: &str) -> RuntimeRecord {
    RuntimeRecord {
        version: RECORD_VERSION,
        name: name.to_string(),
        uuid: Uuid([7; 16]),
        id: 3,
        pid: 4242,
        start_time: 123456,
        started_at_ms: 1_700_000_000_000,
        api_socket: PathBuf::from(format!("/run/oxvirt/domains/{name}.api.sock")),
        // From JSON, so fields added to VmConfig later take their defaults.
        config: serde_json::from_str(r#"{"payload":{"kernel":"/k","cmdline":"counter"}}"#).unwrap(),
        persistent: true,
        state: ActiveState::Running(crate::state::RunningReason::Booted),
        xml: "<domain/>".to_string(),
        log_offset: 77,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_dir;

    #[test]
    fn records_round_trip_and_are_listed() {
        let root = temp_dir("record");
        let paths = Paths::new(root.join("s"), root.join("r"));
        paths.create_dirs().unwrap();
        let record = sample_record("vm");
        std::fs::write(paths.vm_config_file("vm"), "{}").unwrap();

        record.save(&paths).unwrap();
        let files = RuntimeRecord::list_files(&paths).unwrap();
        let loaded = RuntimeRecord::load(&files[0]).unwrap();

        assert_eq!(files, [paths.runtime_record("vm")]);
        assert_eq!(loaded, record);
        remove_runtime_files(&paths, "vm");
        assert!(RuntimeRecord::list_files(&paths).unwrap().is_empty());
        assert!(!paths.vm_config_file("vm").exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn malformed_and_foreign_version_records_are_errors_naming_the_file() {
        let root = temp_dir("record-bad");
        let path = root.join("vm.json");
        std::fs::write(&path, "{\"version\": 1").unwrap();
        let err = RuntimeRecord::load(&path).unwrap_err();
        assert!(matches!(err, RecordError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("vm.json"), "{err}");

        let mut json = serde_json::to_value(sample_record("vm")).unwrap();
        json["version"] = 99.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = RuntimeRecord::load(&path).unwrap_err();
        assert!(
            matches!(err, RecordError::Version { found: 99, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
