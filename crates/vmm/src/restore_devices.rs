//! What a restore command says the VM has, checked against the snapshot's configuration.
//!
//! A restore that names devices (`--disk`, `--net`, `--vsock`, …) states the VM it expects: the
//! guest-visible side of every device (kinds, count, order, ids, readonly, serial, MAC, CID,
//! balloon size and features) must be the snapshot's, or the restore is refused naming the
//! first difference. The host side (a disk's path, a card's TAP, socket and file paths, rate
//! limits, O_DIRECT, the entropy source) may change and is taken from the command line.

use crate::config::{
    BalloonConfig, ConsoleConfig, DiskConfig, NetConfig, RngConfig, VmConfig, VsockConfig,
};

/// The size and devices a restore command names; `None` / empty where it names none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestoreDevices {
    /// `--memory`, compared when given.
    pub memory_mib: Option<u64>,
    /// `--cpus`, compared when given.
    pub cpus: Option<u8>,
    /// `--disk`, in order.
    pub disks: Vec<DiskConfig>,
    /// `--net`, in order.
    pub nets: Vec<NetConfig>,
    /// `--vsock`.
    pub vsock: Option<VsockConfig>,
    /// `--console`.
    pub console: Option<ConsoleConfig>,
    /// `--rng`.
    pub rng: Option<RngConfig>,
    /// `--balloon`.
    pub balloon: Option<BalloonConfig>,
}

impl RestoreDevices {
    /// Whether any device option was given (then the whole set of devices is compared).
    pub fn names_devices(&self) -> bool {
        !self.disks.is_empty()
            || !self.nets.is_empty()
            || self.vsock.is_some()
            || self.console.is_some()
            || self.rng.is_some()
            || self.balloon.is_some()
    }
}

/// The snapshot's configuration with the host-side settings `named` gives, or the first
/// difference between what the snapshot has and what `named` says it has.
pub fn apply_restore_devices(
    snapshot: &VmConfig,
    named: &RestoreDevices,
) -> Result<VmConfig, String> {
    let mut config = snapshot.clone();
    if let Some(mib) = named
        .memory_mib
        .filter(|&mib| mib != snapshot.memory.size_mib)
    {
        return Err(format!(
            "memory: {} MiB in the snapshot, {mib} MiB on the command line",
            snapshot.memory.size_mib
        ));
    }
    if let Some(cpus) = named.cpus.filter(|&cpus| cpus != snapshot.cpus.count) {
        return Err(format!(
            "cpus: {} in the snapshot, {cpus} on the command line",
            snapshot.cpus.count
        ));
    }
    if !named.names_devices() {
        return Ok(config);
    }
    config.disks = apply_disks(&snapshot.disks, &named.disks)?;
    config.nets = apply_nets(&snapshot.nets, &named.nets)?;
    config.vsock = apply_vsock(snapshot.vsock.as_ref(), named.vsock.as_ref())?;
    config.console = same_presence(
        "virtio-console device",
        snapshot.console.as_ref(),
        named.console.as_ref(),
    )?
    .cloned();
    config.rng = same_presence(
        "virtio-rng device",
        snapshot.rng.as_ref(),
        named.rng.as_ref(),
    )?
    .cloned();
    config.balloon = apply_balloon(snapshot.balloon.as_ref(), named.balloon.as_ref())?;
    Ok(config)
}

/// `named` when the snapshot has the device exactly when the command names it.
fn same_presence<'a, T>(
    kind: &str,
    snapshot: Option<&T>,
    named: Option<&'a T>,
) -> Result<Option<&'a T>, String> {
    match (snapshot, named) {
        (Some(_), None) => Err(format!(
            "the snapshot has a {kind}, the restore command names none"
        )),
        (None, Some(_)) => Err(format!(
            "the snapshot has no {kind}, the restore command names one"
        )),
        _ => Ok(named),
    }
}

/// `2 disks (vda, data)`, `1 disk (vda)`, `no disks`.
fn counted(kind: &str, names: &[String]) -> String {
    match names.len() {
        0 => format!("no {kind}s"),
        1 => format!("1 {kind} ({})", names[0]),
        n => format!("{n} {kind}s ({})", names.join(", ")),
    }
}

fn same_count(kind: &str, snapshot: &[String], named: &[String]) -> Result<(), String> {
    if snapshot.len() == named.len() {
        return Ok(());
    }
    let named_text = match named.len() {
        0 => "none".to_string(),
        n => format!("{n} ({})", named.join(", ")),
    };
    Err(format!(
        "the snapshot has {}, the restore command names {named_text}",
        counted(kind, snapshot)
    ))
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

fn or_none(value: Option<&str>) -> &str {
    value.unwrap_or("none")
}

fn apply_disks(snapshot: &[DiskConfig], named: &[DiskConfig]) -> Result<Vec<DiskConfig>, String> {
    let names = |disks: &[DiskConfig]| -> Vec<String> {
        disks.iter().enumerate().map(|(i, d)| d.name(i)).collect()
    };
    same_count("disk", &names(snapshot), &names(named))?;
    let mut disks = Vec::with_capacity(snapshot.len());
    for (index, (old, new)) in snapshot.iter().zip(named).enumerate() {
        let name = old.name(index);
        if new.name(index) != name {
            return Err(format!(
                "disk {}: id {name} in the snapshot, {} on the command line",
                index,
                new.name(index)
            ));
        }
        if old.readonly != new.readonly {
            return Err(format!(
                "disk {name}: readonly={} in the snapshot, {} on the command line",
                on_off(old.readonly),
                on_off(new.readonly)
            ));
        }
        if old.serial != new.serial {
            return Err(format!(
                "disk {name}: serial {} in the snapshot, {} on the command line",
                or_none(old.serial.as_deref()),
                or_none(new.serial.as_deref())
            ));
        }
        // Host side: path, O_DIRECT and rate limits come from the command line; the id stays
        // the snapshot's (counters keep their names).
        disks.push(DiskConfig {
            id: old.id.clone(),
            ..new.clone()
        });
    }
    Ok(disks)
}

fn apply_nets(snapshot: &[NetConfig], named: &[NetConfig]) -> Result<Vec<NetConfig>, String> {
    let names = |nets: &[NetConfig]| -> Vec<String> {
        nets.iter().enumerate().map(|(i, n)| n.name(i)).collect()
    };
    same_count("net card", &names(snapshot), &names(named))?;
    let mut nets = Vec::with_capacity(snapshot.len());
    for (index, (old, new)) in snapshot.iter().zip(named).enumerate() {
        let name = old.name(index);
        if old.id != new.id {
            return Err(format!(
                "net card {name}: id {} in the snapshot, {} on the command line",
                or_none(old.id.as_deref()),
                or_none(new.id.as_deref())
            ));
        }
        // A MAC left out keeps the snapshot's (a random one lives in the device state).
        if new.mac.is_some() && new.mac != old.mac {
            return Err(format!(
                "net card {name}: mac {} in the snapshot, {} on the command line",
                old.mac.as_deref().unwrap_or("random"),
                or_none(new.mac.as_deref())
            ));
        }
        nets.push(NetConfig {
            mac: old.mac.clone(),
            ..new.clone()
        });
    }
    Ok(nets)
}

fn apply_vsock(
    snapshot: Option<&VsockConfig>,
    named: Option<&VsockConfig>,
) -> Result<Option<VsockConfig>, String> {
    let named = same_presence("virtio-vsock device", snapshot, named)?;
    if let (Some(old), Some(new)) = (snapshot, named)
        && old.cid != new.cid
    {
        return Err(format!(
            "vsock: cid {} in the snapshot, {} on the command line",
            old.cid, new.cid
        ));
    }
    Ok(named.cloned())
}

fn apply_balloon(
    snapshot: Option<&BalloonConfig>,
    named: Option<&BalloonConfig>,
) -> Result<Option<BalloonConfig>, String> {
    let named = same_presence("virtio-balloon device", snapshot, named)?;
    let (Some(old), Some(new)) = (snapshot, named) else {
        return Ok(None);
    };
    let differences = [
        ("size", old.size_mib.to_string(), new.size_mib.to_string()),
        (
            "deflate-on-oom",
            on_off(old.deflate_on_oom).to_string(),
            on_off(new.deflate_on_oom).to_string(),
        ),
        (
            "stats",
            on_off(old.stats).to_string(),
            on_off(new.stats).to_string(),
        ),
    ];
    match differences.into_iter().find(|(_, old, new)| old != new) {
        Some((option, old, new)) => Err(format!(
            "balloon: {option}={old} in the snapshot, {new} on the command line"
        )),
        None => Ok(Some(old.clone())),
    }
}

#[cfg(test)]
#[path = "restore_devices_tests.rs"]
mod tests;
