//! The daemon killed with SIGKILL: while VMs run, in the middle of a define, in the middle of a
//! start. A new daemon must find everything as it was (or as it was just before), with nothing
//! half-written and no VM that nobody knows about.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{TestDaemon, guest_xml};
use common::require_kvm;

/// The oxvmm processes started for this daemon's runtime directory.
fn vmm_processes(daemon: &TestDaemon) -> Vec<i32> {
    let marker = daemon.runtime_dir.join("domains");
    let marker = marker.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = !stat.contains(") Z ");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            alive
                && cmdline.starts_with(&*common::oxvmm_path().to_string_lossy())
                && cmdline.contains(&marker)
        })
        .collect()
}

/// Files whose name starts with `.` (the store's temporary files) under `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn running_vms_survive_a_killed_daemon_and_stay_controllable_kvm() {
    // Arrange
    require_kvm();
    let mut daemon = TestDaemon::start("restart");
    for name in ["one", "two"] {
        daemon.define(name, &guest_xml(name, "counter", ""));
        daemon.virsh_ok(&["start", name]);
    }
    let before = daemon.virsh_ok(&["list"]);
    let pids = vmm_processes(&daemon);
    assert_eq!(pids.len(), 2, "{before}");

    // Act
    daemon.kill9();
    daemon.restart();

    // Assert
    let after = daemon.virsh_ok(&["list"]);
    assert_eq!(after, before, "the list after the restart");
    assert!(after.contains(" 1    one    running"), "{after}");
    assert!(after.contains(" 2    two    running"), "{after}");
    let mut now = vmm_processes(&daemon);
    now.sort_unstable();
    let mut pids = pids;
    pids.sort_unstable();
    assert_eq!(now, pids, "the same processes");
    daemon.virsh_ok(&["suspend", "one"]);
    assert_eq!(daemon.domstate("one"), "paused (user)");
    daemon.virsh_ok(&["destroy", "one"]);
    daemon.virsh_ok(&["destroy", "two"]);
    assert_eq!(daemon.domstate("one"), "shut off (destroyed)");
    assert_eq!(daemon.domstate("two"), "shut off (destroyed)");
    // A new start continues the ids.
    daemon.virsh_ok(&["start", "two"]);
    assert!(daemon.virsh_ok(&["list"]).contains(" 3    two    running"));
    daemon.virsh_ok(&["destroy", "two"]);
    assert!(vmm_processes(&daemon).is_empty());
}

#[test]
fn a_define_cut_short_leaves_the_old_or_the_new_definition() {
    // Arrange
    let mut daemon = TestDaemon::start("cutdef");
    // One UUID: the new definition replaces the old one.
    let new = guest_xml("cut", "counter", "").replace(
        "<name>cut</name>",
        "<name>cut</name><uuid>0a1b2c3d-0000-4000-8000-000000000001</uuid>",
    );
    let old = new.replace("<memory unit='MiB'>64", "<memory unit='MiB'>32");
    daemon.define("cut", &old);
    let file = daemon.write_file("new.xml", &new);

    for delay_ms in [0, 1, 2, 3, 5, 8] {
        // Act: send the define, kill the daemon right after.
        daemon.cut_short(
            &["define", file.to_str().unwrap()],
            Duration::from_millis(delay_ms),
        );

        // Assert
        let xml = daemon.virsh_ok(&["dumpxml", "--inactive", "cut"]);
        assert!(
            xml.contains("<memory unit='KiB'>32768</memory>")
                || xml.contains("<memory unit='KiB'>65536</memory>"),
            "delay {delay_ms} ms: {xml}"
        );
        let defs = daemon.state_dir.join("domains");
        assert!(temp_files(&defs).is_empty(), "{:?}", temp_files(&defs));
        // Back to the old definition for the next round.
        daemon.define("cut", &old);
    }
}

#[test]
fn a_start_cut_short_is_reattached_or_leaves_nothing_running_kvm() {
    // Arrange
    require_kvm();
    let mut daemon = TestDaemon::start("cutstart");
    daemon.define("cs", &guest_xml("cs", "counter", ""));

    for delay_ms in [0, 2, 5, 10, 20, 40] {
        // Act
        daemon.cut_short(&["start", "cs"], Duration::from_millis(delay_ms));

        // Assert
        let state = daemon.domstate("cs");
        let processes = vmm_processes(&daemon);
        match state.as_str() {
            "running (booted)" | "running (unknown)" => {
                assert_eq!(processes.len(), 1, "delay {delay_ms} ms: {processes:?}");
                daemon.virsh_ok(&["destroy", "cs"]);
                assert!(vmm_processes(&daemon).is_empty(), "delay {delay_ms} ms");
            }
            _ => {
                assert!(
                    state.starts_with("shut off"),
                    "delay {delay_ms} ms: {state}"
                );
                // A killed leftover may take a moment to disappear.
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !vmm_processes(&daemon).is_empty() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                assert!(
                    vmm_processes(&daemon).is_empty(),
                    "delay {delay_ms} ms: a half-started VM runs\n{}",
                    daemon.log()
                );
            }
        }
    }
}
