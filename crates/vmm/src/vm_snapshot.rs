//! Snapshots of a running or paused VM, and restoring one in a new process.
//!
//! A snapshot directory holds `state` (the versioned, checksummed machine state: configuration,
//! vCPUs, KVM clock, devices, memory layout) and `memory` (guest RAM, sparse: only pages that
//! were ever written, or for a diff snapshot only pages written since the previous snapshot,
//! whose directory the state names as `parent`).
//!
//! The pages of a diff are those in KVM's dirty log (the guest's writes) and those in guest
//! memory's own dirty bitmap (`virtio::dirty`: what devices and the VMM wrote, used rings,
//! receive and read buffers, ballooned pages). Both are cleared at every snapshot.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vm_memory::GuestAddress;
use vmm_api::routes::ApiError;
use vmm_api::types::SnapshotRequest;

use crate::api::ApiReply;
use crate::config::{SerialConfig, VmConfig};
use crate::device_manager::DevicesState;
use crate::error::VmmError;
use crate::memory::GuestRam;
use crate::vcpu_control::Mode;
use crate::vm::{Boot, Machine, VmOutcome, open_checked};

/// File names inside a snapshot directory.
const STATE_FILE: &str = "state";
const MEMORY_FILE: &str = "memory";
/// What the state file holds, and the version of its payload this oxvmm writes and reads.
pub const STATE_KIND: &str = "oxvmm-vm";
/// 2: device state gained fw_cfg, vsock and console. 3: the disks' sizes.
pub const STATE_VERSION: u32 = 3;
/// Upper bound on a state file (vCPU state is a few KiB each; devices are small).
const MAX_STATE_BYTES: u64 = 64 << 20;
/// Longest chain of diff snapshots a restore follows.
const MAX_DIFF_CHAIN: usize = 64;

/// The machine state saved in `state`.
#[derive(Serialize, Deserialize)]
struct VmSnapshot {
    /// The configuration as JSON: its serde shape skips empty fields, which a
    /// non-self-describing encoding cannot read back.
    config_json: String,
    memory: MemoryLayout,
    vm: hypervisor::VmState,
    vcpus: Vec<hypervisor::VcpuState>,
    devices: DevicesState,
    boots: u32,
    /// Each disk's size in 512-byte sectors, as the guest sees it: a restore opens the disks
    /// again (maybe at another path) and refuses files of another size.
    disk_sectors: Vec<u64>,
}

/// Where guest RAM is, and which snapshot a diff applies to.
#[derive(Serialize, Deserialize)]
struct MemoryLayout {
    /// (guest address, length) of each RAM region, in file order.
    regions: Vec<(u64, u64)>,
    /// For a diff snapshot: the directory of the snapshot it applies to.
    parent: Option<PathBuf>,
}

fn api_error(status: u16, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    api_error(500, format!("{context}: {error}"))
}

impl Machine {
    /// Takes a snapshot; a running VM is paused for it and resumed afterwards.
    pub(crate) fn snapshot(&mut self, boot: &Boot, request: &SnapshotRequest) -> ApiReply {
        let started = Instant::now();
        let was_running = !boot.threads.is_paused();
        if was_running {
            boot.threads.pause();
            // Nothing in flight: the saved queue positions count every request taken as used.
            self.devices.quiesce();
        }
        let result = self.write_snapshot(boot, request);
        if was_running {
            self.devices.resume();
            boot.threads.resume();
        }
        let stats = result?;
        Ok(Some(serde_json::json!({
            "destination": request.destination,
            "diff": request.diff,
            "pages_written": stats.pages_written,
            "bytes_written": stats.bytes_written,
            "memory_file_bytes": stats.file_len,
            "duration_ms": started.elapsed().as_millis() as u64,
        })))
    }

    fn write_snapshot(
        &mut self,
        boot: &Boot,
        request: &SnapshotRequest,
    ) -> Result<snapshot::MemoryFileStats, ApiError> {
        let dir = &request.destination;
        std::fs::create_dir_all(dir)
            .map_err(|e| api_error(400, format!("destination {}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| api_error(400, format!("destination {}: {e}", dir.display())))?;
        let parent = if request.diff {
            let parent = self.last_snapshot.clone().ok_or_else(|| {
                api_error(
                    409,
                    "a diff snapshot needs an earlier full snapshot of this boot of the VM",
                )
            })?;
            if parent == dir {
                return Err(api_error(
                    400,
                    "a diff snapshot must go to another directory than the snapshot it builds on",
                ));
            }
            Some(parent)
        } else {
            None
        };
        // Device state first: a device that cannot be saved fails the snapshot before any file
        // is written.
        let state = self.capture_state(boot, parent.clone())?;
        let written = self.write_snapshot_files(boot, &dir, parent.is_some(), &state);
        if written.is_err() {
            // The dirty logs were consumed: a diff on the previous snapshot would miss pages.
            self.last_snapshot = None;
        }
        let stats = written?;
        self.last_snapshot = Some(dir);
        Ok(stats)
    }

    /// Writes guest memory (all of it, or the pages written since the last snapshot: those
    /// in KVM's dirty log and those devices wrote) and the state; restarts both dirty logs.
    fn write_snapshot_files(
        &self,
        boot: &Boot,
        dir: &Path,
        diff: bool,
        state: &VmSnapshot,
    ) -> Result<snapshot::MemoryFileStats, ApiError> {
        // Taken first: a device writing while the memory file is written marks the page again
        // for the next diff.
        let device_dirty = virtio::dirty::take_dirty_pages(&self.memory);
        let memory_path = dir.join(MEMORY_FILE);
        let stats = if diff {
            let mut dirty = boot
                .vm
                .take_dirty_log()
                .map_err(|e| internal("reading the dirty-page log", e))?;
            add_device_writes(&mut dirty, &device_dirty)?;
            snapshot::write_dirty_pages(&self.memory, &memory_path, &dirty)
        } else {
            snapshot::write_full_memory(&self.memory, &memory_path)
        }
        .map_err(|e| internal("writing guest memory", e))?;
        let bytes = snapshot::encode_state(STATE_KIND, STATE_VERSION, state)
            .map_err(|e| internal("encoding the state", e))?;
        snapshot::write_state_file(&dir.join(STATE_FILE), &bytes)
            .map_err(|e| internal("writing the state file", e))?;
        // From here on KVM logs written pages, for the next diff snapshot. Enabling the log
        // (again) also clears it.
        boot.vm
            .enable_dirty_log()
            .map_err(|e| internal("starting the dirty-page log", e))?;
        Ok(stats)
    }

    fn capture_state(&self, boot: &Boot, parent: Option<PathBuf>) -> Result<VmSnapshot, ApiError> {
        let host = self
            .host_cpu
            .ready()
            .ok_or_else(|| api_error(500, "the host CPU query has not finished"))?;
        let mut vcpus = Vec::with_capacity(boot.threads.vcpus.len());
        for vcpu in &boot.threads.vcpus {
            let vcpu = vcpu.lock().unwrap_or_else(|e| e.into_inner());
            let state = vcpu
                .save_state(&host.msr_indexes)
                .map_err(|e| internal(&format!("saving vCPU {}", vcpu.index()), e))?;
            vcpus.push(state);
        }
        let config_json = serde_json::to_string(&self.config)
            .map_err(|e| internal("encoding the configuration", e))?;
        Ok(VmSnapshot {
            config_json,
            memory: MemoryLayout {
                regions: memory_regions(&self.config.memory)
                    .map_err(|e| internal("memory layout", e))?,
                parent,
            },
            vm: boot
                .vm
                .save_state()
                .map_err(|e| internal("saving the VM's clock", e))?,
            vcpus,
            devices: self
                .devices
                .save_state()
                .map_err(|e| api_error(400, format!("not supported: {e}")))?,
            boots: self.boots,
            disk_sectors: self.disk_sectors(),
        })
    }
}

impl Machine {
    /// The size of each disk in sectors, in configuration order.
    fn disk_sectors(&self) -> Vec<u64> {
        let disks = &self.devices.pci.disks;
        disks
            .iter()
            .map(|(_, disk)| {
                let disk = disk.lock().unwrap_or_else(|e| e.into_inner());
                disk.device().capacity()
            })
            .collect()
    }
}

/// Refuses a restore whose disk files are not the size the snapshot's were.
fn check_disk_sizes(dir: &Path, machine: &Machine, saved: &[u64]) -> Result<(), VmmError> {
    let now = machine.disk_sectors();
    if now.len() != saved.len() {
        return Err(restore_error(
            dir,
            format!(
                "it holds the sizes of {} disks for a configuration with {}",
                saved.len(),
                now.len()
            ),
        ));
    }
    let disks = machine.config.disks.iter().enumerate();
    for ((index, disk), (now, saved)) in disks.zip(now.iter().zip(saved)) {
        if now != saved {
            return Err(restore_error(
                dir,
                format!(
                    "disk {}: {} holds {} bytes, the snapshot's disk held {} bytes",
                    disk.name(index),
                    disk.path.display(),
                    now.saturating_mul(512),
                    saved.saturating_mul(512)
                ),
            ));
        }
    }
    Ok(())
}

/// Adds the pages devices wrote to KVM's dirty log, region by region (both one bit per 4 KiB
/// page of the same regions, in the same order).
fn add_device_writes(kvm: &mut [Vec<u64>], devices: &[Vec<u64>]) -> Result<(), ApiError> {
    if kvm.len() != devices.len() || kvm.iter().zip(devices).any(|(k, d)| k.len() != d.len()) {
        return Err(api_error(
            500,
            format!(
                "the device dirty bitmaps ({} regions) do not match KVM's dirty log ({} regions)",
                devices.len(),
                kvm.len()
            ),
        ));
    }
    for (words, device_words) in kvm.iter_mut().zip(devices) {
        for (word, device_word) in words.iter_mut().zip(device_words) {
            *word |= device_word;
        }
    }
    Ok(())
}

fn memory_regions(memory: &vmm_api::config::MemoryConfig) -> Result<Vec<(u64, u64)>, VmmError> {
    // The size may come from a snapshot file: `bytes()` saturates, so one too large for a u64
    // is refused as too large rather than wrapped into a size that might match the saved layout.
    let regions = arch::memory::ram_regions(memory.bytes()).map_err(VmmError::MemoryLayout)?;
    Ok(regions.iter().map(|(a, l)| (a.0, *l as u64)).collect())
}

/// How to restore.
#[derive(Debug)]
pub struct RestoreOptions {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// Start the vCPUs at once (otherwise the VM waits, paused, for `vm.resume`).
    pub resume: bool,
    /// Where COM1 goes now (default: as when the snapshot was taken).
    pub serial: Option<SerialConfig>,
    /// What the restore command says the VM has (nothing: the snapshot's configuration).
    pub devices: crate::RestoreDevices,
}

fn restore_error(dir: &Path, problem: impl std::fmt::Display) -> VmmError {
    VmmError::Restore {
        dir: dir.to_path_buf(),
        problem: problem.to_string(),
    }
}

fn read_snapshot(dir: &Path) -> Result<VmSnapshot, VmmError> {
    let bytes = snapshot::read_state_file(&dir.join(STATE_FILE), MAX_STATE_BYTES)
        .map_err(|e| restore_error(dir, e))?;
    snapshot::decode_state(&bytes, STATE_KIND, STATE_VERSION).map_err(|e| restore_error(dir, e))
}

impl VmSnapshot {
    fn config(&self, dir: &Path) -> Result<VmConfig, VmmError> {
        serde_json::from_str(&self.config_json)
            .map_err(|e| restore_error(dir, format!("its configuration does not parse: {e}")))
    }
}

/// Maps the memory of `dir`, applying a chain of diff snapshots on their full base.
fn map_memory(dir: &Path, top: &VmSnapshot) -> Result<GuestRam, VmmError> {
    let layout: Vec<(GuestAddress, usize)> = top
        .memory
        .regions
        .iter()
        .map(|&(addr, len)| (GuestAddress(addr), len as usize))
        .collect();
    let mut chain = vec![dir.to_path_buf()];
    let mut parent = top.memory.parent.clone();
    while let Some(next) = parent {
        if chain.len() > MAX_DIFF_CHAIN || chain.contains(&next) {
            return Err(restore_error(
                dir,
                "the chain of diff snapshots loops or is too long",
            ));
        }
        let snapshot = read_snapshot(&next)?;
        if snapshot.memory.regions != top.memory.regions {
            return Err(restore_error(
                &next,
                "its memory layout differs from the diff snapshot built on it",
            ));
        }
        parent = snapshot.memory.parent.clone();
        chain.push(next);
    }
    let base = chain.pop().unwrap_or_else(|| dir.to_path_buf());
    let memory = snapshot::map_memory_file(&base.join(MEMORY_FILE), &layout)
        .map_err(|e| restore_error(&base, e))?;
    for diff in chain.iter().rev() {
        snapshot::apply_diff(&memory, &diff.join(MEMORY_FILE), &layout)
            .map_err(|e| restore_error(diff, e))?;
    }
    Ok(memory)
}

/// Checks that the state is consistent with itself before anything is built from it.
fn check_snapshot(dir: &Path, snapshot: &VmSnapshot, config: &VmConfig) -> Result<(), VmmError> {
    if snapshot.vcpus.len() != usize::from(config.cpus.count) {
        return Err(restore_error(
            dir,
            format!(
                "it holds {} vCPU states for a {}-vCPU configuration",
                snapshot.vcpus.len(),
                config.cpus.count
            ),
        ));
    }
    let expected = memory_regions(&config.memory)?;
    if snapshot.memory.regions != expected {
        return Err(restore_error(
            dir,
            "its memory layout does not match its memory size",
        ));
    }
    crate::net::check_restorable(&config.nets).map_err(|e| restore_error(dir, e))
}

/// Starts a VM from a snapshot and runs it like `run_vm`.
pub fn restore_vm(
    options: RestoreOptions,
    api: Option<crate::api::ApiReceiver>,
) -> Result<VmOutcome, VmmError> {
    let dir = &options.dir;
    let snapshot = read_snapshot(dir)?;
    let saved = snapshot.config(dir)?;
    let mut config = crate::apply_restore_devices(&saved, &options.devices)
        .map_err(|e| restore_error(dir, e))?;
    // A card the restore command names on an `fd=N` has a descriptor of this process.
    let nets_named = !options.devices.nets.is_empty();
    let checked = VmConfig {
        nets: if nets_named {
            Vec::new()
        } else {
            config.nets.clone()
        },
        ..config.clone()
    };
    check_snapshot(dir, &snapshot, &checked)?;
    let hypervisor = open_checked(&config)?;
    let memory = map_memory(dir, &snapshot)?;
    if let Some(serial) = options.serial {
        config.serial = serial;
    }
    let mut machine = Machine::new(hypervisor, config, memory)?;
    check_disk_sizes(dir, &machine, &snapshot.disk_sectors)?;
    machine
        .devices
        .restore_state(&snapshot.devices)
        .map_err(|e| restore_error(dir, e))?;
    let vm = machine.create_kvm_vm()?;
    vm.restore_state(&snapshot.vm)?;
    let mut vcpus = Vec::with_capacity(snapshot.vcpus.len());
    for state in &snapshot.vcpus {
        let vcpu = vm.create_vcpu(state.index)?;
        vcpu.restore_state(state)
            .map_err(|e| restore_error(dir, format!("vCPU {}: {e}", state.index)))?;
        vcpus.push(vcpu);
    }
    let event_loop = machine.event_loop(api)?;
    let mode = if options.resume {
        Mode::Run
    } else {
        Mode::Pause
    };
    // Both dirty logs start before anything runs: the restored snapshot is the base of the
    // next diff. (Mapping and applying the memory files marked every page they wrote.)
    vm.enable_dirty_log()?;
    virtio::dirty::take_dirty_pages(&machine.memory);
    let boot = machine.start(vm, vcpus, mode)?;
    machine.boots = snapshot.boots;
    machine.last_snapshot = dir.canonicalize().ok();
    machine.run(boot, event_loop)
}

/// Decodes a snapshot's state file and its configuration the way `--restore` does, without
/// touching KVM or the file system: the entry point of the state decoder's fuzz target.
pub fn decode_snapshot_state(bytes: &[u8]) -> Result<VmConfig, VmmError> {
    let dir = Path::new("<fuzz>");
    let snapshot: VmSnapshot = snapshot::decode_state(bytes, STATE_KIND, STATE_VERSION)
        .map_err(|e| restore_error(dir, e))?;
    snapshot.config(dir)
}
