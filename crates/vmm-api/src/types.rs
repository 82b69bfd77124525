//! Request and response bodies of the control API.
//!
//! Request types refuse unknown fields, so a typo in a client (`"target_mb"`) is a 400 naming the
//! field rather than a silently ignored setting. Response types accept unknown fields, so an
//! older client keeps working against a newer oxvmm that reports more.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;

/// The API version in every route (`/api/v1/...`) and in [`PingResponse::api`].
pub const API_VERSION: &str = "v1";

/// Answer of `GET /api/v1/vmm.ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    /// oxvmm's version (the crate version it was built from).
    pub version: String,
    /// The API version it serves, `"v1"`.
    pub api: String,
}

impl PingResponse {
    /// The answer this build gives.
    pub fn current() -> Self {
        PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api: API_VERSION.to_string(),
        }
    }
}

/// Whether the guest's vCPUs are running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// vCPUs run.
    Running,
    /// vCPUs are stopped (by `vm.pause`, or restored without `--resume`).
    Paused,
}

/// Answer of `GET /api/v1/vm.info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Running or paused.
    pub state: VmState,
    /// The effective configuration (defaults filled in).
    pub config: VmConfig,
    /// Milliseconds since the VM was first started by this process.
    pub uptime_ms: u64,
    /// How many times the guest has booted (1 + guest-initiated reboots + `vm.reboot`).
    pub boots: u32,
}

/// Body of `PUT /api/v1/vm.snapshot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Directory to write the snapshot into.
    pub destination: PathBuf,
    /// Save only the pages written since the previous snapshot.
    #[serde(default)]
    pub diff: bool,
}

/// Body of `PUT /api/v1/vm.balloon`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonRequest {
    /// Memory the guest should keep, in MiB.
    pub target_mib: u64,
}

/// Answer of `GET /api/v1/vm.counters`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// vCPU exits by kind (e.g. `"io"`, `"mmio"`, `"hlt"`), summed over vCPUs.
    pub exits: BTreeMap<String, u64>,
    /// Per-device traffic, by device name.
    pub devices: BTreeMap<String, DeviceCounters>,
    /// Interrupts delivered, by path: `msix_irqfd` (MSI-X through an irqfd),
    /// `msix_signal_msi` (MSI-X through `KVM_SIGNAL_MSI`), `ioapic_signal_msi`.
    #[serde(default)]
    pub interrupts: BTreeMap<String, u64>,
    /// virtio-blk requests per disk, by disk name: the disk's `id`, else `vda`, `vdb`, … by its
    /// place among the disks (the name Linux gives it; see `DiskConfig::name`).
    #[serde(default)]
    pub disks: BTreeMap<String, DiskCounters>,
}

/// Requests one virtio-blk disk completed since oxvmm started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCounters {
    /// Read requests completed.
    pub reads: u64,
    /// Bytes those read.
    pub bytes_read: u64,
    /// Write requests completed.
    pub writes: u64,
    /// Bytes those wrote.
    pub bytes_written: u64,
    /// Flush requests completed.
    pub flushes: u64,
    /// Discard and write-zeroes requests completed.
    pub discards: u64,
    /// Requests that failed on the host (answered `IOERR`).
    pub errors: u64,
}

/// Traffic of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounters {
    /// Requests served (virtio descriptor chains, port or MMIO accesses).
    pub requests: u64,
    /// Bytes the device read from its backend and gave the guest.
    pub bytes_read: u64,
    /// Bytes the guest gave the device to write to its backend.
    pub bytes_written: u64,
}

/// Body of every error answer: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, worded for the user.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_state_serializes_lowercase() {
        assert_eq!(
            serde_json::to_string(&VmState::Running).unwrap(),
            "\"running\""
        );
        let paused: VmState = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(paused, VmState::Paused);
        assert!(serde_json::from_str::<VmState>("\"Paused\"").is_err());
    }

    #[test]
    fn snapshot_request_defaults_diff_to_false() {
        let request: SnapshotRequest = serde_json::from_str(r#"{"destination":"/s"}"#).unwrap();

        assert_eq!(
            request,
            SnapshotRequest {
                destination: PathBuf::from("/s"),
                diff: false
            }
        );
    }

    #[test]
    fn request_types_refuse_unknown_fields() {
        let err = serde_json::from_str::<BalloonRequest>(r#"{"target_mb":1}"#).unwrap_err();
        assert!(err.to_string().contains("target_mb"), "{err}");
        let err = serde_json::from_str::<SnapshotRequest>(r#"{"destination":"/s","dif":true}"#)
            .unwrap_err();
        assert!(err.to_string().contains("dif"), "{err}");
    }

    #[test]
    fn response_types_accept_fields_from_newer_servers() {
        let ping: PingResponse =
            serde_json::from_str(r#"{"version":"9.9.9","api":"v1","build":"x"}"#).unwrap();
        assert_eq!(ping.api, "v1");
    }

    #[test]
    fn ping_reports_this_build() {
        let ping = PingResponse::current();
        assert_eq!(ping.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(ping.api, "v1");
    }

    #[test]
    fn counters_round_trip() {
        let mut counters = Counters::default();
        counters.exits.insert("io".to_string(), 7);
        counters.devices.insert(
            "virtio-blk0".to_string(),
            DeviceCounters {
                requests: 3,
                bytes_read: 4096,
                bytes_written: 512,
            },
        );
        counters.disks.insert(
            "vda".to_string(),
            DiskCounters {
                reads: 2,
                bytes_read: 8192,
                flushes: 1,
                ..DiskCounters::default()
            },
        );

        let json = serde_json::to_string(&counters).unwrap();
        let again: Counters = serde_json::from_str(&json).unwrap();

        assert_eq!(again, counters);
        assert!(json.contains(r#""bytes_written":512"#), "{json}");
        assert!(
            json.contains(r#""vda":{"reads":2,"bytes_read":8192"#),
            "{json}"
        );
    }

    #[test]
    fn counters_without_disks_from_an_older_oxvmm_still_parse() {
        let counters: Counters = serde_json::from_str(r#"{"exits":{},"devices":{}}"#).unwrap();

        assert!(counters.disks.is_empty());
    }
}
