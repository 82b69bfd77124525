//! Planning a start: from a domain definition to the `VmConfig` oxvmm runs, with the paths only
//! the daemon knows (console sockets, generated TAP names) and the checks libvirt makes before
//! it starts anything (files that must exist, bridges that must be there).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use domain::{DomainDef, GENERATED_TAP_PREFIX, InterfaceType, NativeRuntime};
use oxvirtd::Paths;
use rpc::RemoteError;
use rpc::remote_error::{code, domain as from};

/// TAP names handed to starts that are still in progress (a running domain's names are in its
/// live configuration; these are the ones not there yet).
#[derive(Default)]
pub struct TapNames {
    reserved: Mutex<HashMap<String, Vec<String>>>,
}

impl TapNames {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.reserved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One TAP name per interface of `def`: its `<target dev>`, else the lowest free `vnetN`
    /// (not an existing host interface, not in `in_use`, not reserved by another start).
    pub fn reserve(&self, domain: &str, def: &DomainDef, in_use: &HashSet<String>) -> Vec<String> {
        let mut reserved = self.lock();
        let mut taken: HashSet<String> = in_use.clone();
        taken.extend(reserved.values().flatten().cloned());
        let mut next = 0u32;
        let names: Vec<String> = (def.devices.interfaces.iter())
            .map(|nic| match &nic.target {
                Some(target) => target.dev.clone(),
                None => loop {
                    let candidate = format!("{GENERATED_TAP_PREFIX}{next}");
                    next += 1;
                    if !taken.contains(&candidate) && !host_interface_exists(&candidate) {
                        taken.insert(candidate.clone());
                        break candidate;
                    }
                },
            })
            .collect();
        reserved.insert(domain.to_string(), names.clone());
        names
    }

    /// Gives back the names of `domain`'s start (it ended, either way).
    pub fn release(&self, domain: &str) {
        self.lock().remove(domain);
    }
}

fn host_interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// libvirt's `VIR_ERR_SYSTEM_ERROR` for a file the definition names that cannot be used.
fn cannot_access(what: &str, xml_path: &str, file: &Path, e: &std::io::Error) -> RemoteError {
    RemoteError::new(
        code::SYSTEM_ERROR,
        from::DOMAIN,
        format!(
            "Cannot access {what} '{}' ({xml_path}): {}",
            file.display(),
            describe(e)
        ),
    )
}

/// An I/O error without Rust's " (os error N)" suffix, as libvirt words it.
fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// Checks that every file the VM needs exists, naming the XML element of the first missing.
pub fn check_files(def: &DomainDef) -> Result<(), RemoteError> {
    let os = &def.os;
    let mut files: Vec<(&str, String, &Path)> = Vec::new();
    if let Some(kernel) = &os.kernel {
        files.push(("kernel", "/domain/os/kernel".into(), kernel));
    }
    if let Some(initrd) = &os.initrd {
        files.push(("initrd", "/domain/os/initrd".into(), initrd));
    }
    if let Some(loader) = &os.loader {
        files.push(("loader", "/domain/os/loader".into(), &loader.path));
    }
    for (i, disk) in def.devices.disks.iter().enumerate() {
        let xml_path = format!("/domain/devices/disk[{}]/source", i + 1);
        files.push(("storage file", xml_path, &disk.source));
    }
    if let Some(rng) = &def.devices.rng {
        files.push((
            "rng backend",
            "/domain/devices/rng/backend".into(),
            &rng.backend,
        ));
    }
    for (what, xml_path, file) in files {
        if let Err(e) = std::fs::metadata(file) {
            return Err(cannot_access(what, &xml_path, file, &e));
        }
    }
    Ok(())
}

/// Checks that every bridge an interface joins exists.
pub fn check_bridges(def: &DomainDef) -> Result<(), RemoteError> {
    for (i, nic) in def.devices.interfaces.iter().enumerate() {
        if let InterfaceType::Bridge { bridge } = &nic.kind
            && !crate::bridge::is_bridge(bridge)
        {
            return Err(RemoteError::operation_failed(format!(
                "/domain/devices/interface[{}]/source/@bridge: there is no bridge '{bridge}' \
                 on this host",
                i + 1
            )));
        }
    }
    Ok(())
}

/// The runtime paths oxvmm gets for domain `name`; `cids_in_use` are the vsock CIDs of the
/// running guests (an automatic CID avoids them, as libvirt's does, although each of our
/// userspace vsock devices is private to its VM).
pub fn native_runtime(
    paths: &Paths,
    name: &str,
    taps: Vec<String>,
    cids_in_use: &HashSet<u64>,
) -> NativeRuntime {
    let auto_vsock_cid = (domain::MIN_GUEST_CID..u32::MAX)
        .find(|cid| !cids_in_use.contains(&u64::from(*cid)))
        .unwrap_or(domain::MIN_GUEST_CID);
    NativeRuntime {
        serial_socket: paths.console_socket(name),
        console_socket: paths.virtio_console_socket(name),
        interface_taps: taps,
        vsock_socket: paths.vsock_socket(name),
        auto_vsock_cid,
    }
}

/// `(bridge, TAP)` for every bridge interface, in definition order.
pub fn bridge_ports(def: &DomainDef, taps: &[String]) -> Vec<(String, String)> {
    (def.devices.interfaces.iter().zip(taps))
        .filter_map(|(nic, tap)| match &nic.kind {
            InterfaceType::Bridge { bridge } => Some((bridge.clone(), tap.clone())),
            InterfaceType::Ethernet => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(extra_devices: &str) -> DomainDef {
        DomainDef::from_xml(&format!(
            "<domain type='kvm'><name>p</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type><kernel>/bin/sh</kernel></os>\
             <features><acpi/><apic/></features><devices>{extra_devices}</devices></domain>"
        ))
        .unwrap()
    }

    #[test]
    fn generated_taps_skip_names_in_use_and_reserved() {
        let taps = TapNames::default();
        let two = def("<interface type='ethernet'/><interface type='ethernet'>\
             <target dev='mytap'/></interface><interface type='ethernet'/>");
        let in_use: HashSet<String> = ["vnet0".to_string()].into();

        let first = taps.reserve("a", &two, &in_use);
        let second = taps.reserve("b", &def("<interface type='ethernet'/>"), &in_use);
        taps.release("a");
        let third = taps.reserve("c", &def("<interface type='ethernet'/>"), &in_use);

        assert_eq!(first[1], "mytap");
        assert!(
            first[0].starts_with("vnet") && first[0] != "vnet0",
            "{first:?}"
        );
        assert_ne!(first[0], first[2]);
        assert!(!first.contains(&second[0]), "{first:?} {second:?}");
        assert_eq!(third[0], first[0]);
    }

    #[test]
    fn a_missing_kernel_is_named_with_its_xml_path() {
        let mut missing = def("");
        missing.os.kernel = Some("/nonexistent/vmlinux".into());

        let err = check_files(&missing).unwrap_err();

        assert_eq!(
            err.message_text(),
            "Cannot access kernel '/nonexistent/vmlinux' (/domain/os/kernel): No such file or \
             directory"
        );
        assert!(check_files(&def("")).is_ok());
    }

    #[test]
    fn a_missing_bridge_is_refused() {
        let bridged = def("<interface type='bridge'><source bridge='nosuchbr9'/></interface>");

        let err = check_bridges(&bridged).unwrap_err();

        assert!(err.message_text().contains("nosuchbr9"), "{err}");
        assert_eq!(
            bridge_ports(&bridged, &["vnet3".to_string()]),
            vec![("nosuchbr9".to_string(), "vnet3".to_string())]
        );
    }
}
