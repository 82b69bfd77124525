//! Network interfaces: an `ethernet` interface gets a TAP device named by the daemon, a
//! `bridge` interface's TAP device joins the bridge; `domiflist`, `domifstat` and `domstats`
//! show them. Needs root (it creates a bridge with `ip`, package iproute2) and /dev/kvm.

mod common;

use std::path::Path;
use std::process::Command;

use common::daemon::{TestDaemon, guest_xml, require};
use common::require_kvm;

/// A host bridge that is deleted when dropped.
struct Bridge(String);

impl Bridge {
    fn create() -> Bridge {
        require("ip", "iproute2");
        let name = format!("oxbr{}", std::process::id() % 100_000);
        let out = Command::new("ip")
            .args(["link", "add", &name, "type", "bridge"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot create bridge {name} (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bridge(name)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn ethernet_and_bridge_interfaces_get_tap_devices_kvm() {
    // Arrange
    require_kvm();
    let bridge = Bridge::create();
    let daemon = TestDaemon::start("nics");
    let devices = format!(
        "<interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>\n    \
         <interface type='bridge'><mac address='52:54:00:00:00:02'/>\
         <source bridge='{}'/></interface>",
        bridge.0
    );
    daemon.define("nics", &guest_xml("nics", "counter", &devices));

    // Act
    daemon.virsh_ok(&["start", "nics"]);
    let iflist = daemon.virsh_ok(&["domiflist", "nics"]);
    let stats = daemon.virsh_ok(&["domstats", "nics", "--interface"]);

    // Assert
    let taps: Vec<String> = iflist
        .lines()
        .filter(|l| l.contains("52:54:00:00:00:0"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(taps.len(), 2, "{iflist}");
    assert!(taps.iter().all(|t| t.starts_with("vnet")), "{iflist}");
    let bridged = &taps[1];
    let master = std::fs::read_link(format!("/sys/class/net/{bridged}/master")).unwrap();
    assert_eq!(
        master.file_name().unwrap().to_str(),
        Some(bridge.0.as_str())
    );
    assert!(
        !Path::new(&format!("/sys/class/net/{}/master", taps[0])).exists(),
        "the ethernet TAP joins no bridge"
    );
    assert!(stats.contains("net.count=2"), "{stats}");
    assert!(
        stats.contains(&format!("net.0.name={}", taps[0])),
        "{stats}"
    );
    assert!(stats.contains("net.1.rx.bytes="), "{stats}");
    let ifstat = daemon.virsh_ok(&["domifstat", "nics", bridged]);
    assert!(ifstat.contains(&format!("{bridged} rx_bytes")), "{ifstat}");
    let live = daemon.virsh_ok(&["dumpxml", "nics"]);
    assert!(
        live.contains(&format!("<target dev='{bridged}'/>")),
        "{live}"
    );
    daemon.virsh_ok(&["destroy", "nics"]);
    for tap in &taps {
        assert!(
            !Path::new("/sys/class/net").join(tap).exists(),
            "{tap} outlived the VM"
        );
    }
}
