//! Debian's real `virsh` against a real oxvirtd running the bundled test guest under oxvmm.
//!
//! Needs /dev/kvm, `virsh` (libvirt-clients), `script` (bsdutils) and the oxvmm binary built in
//! the same target directory (`cargo build -p oxvmm`).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{TIMEOUT, TestDaemon, feed, guest_xml, require, text};
use common::require_kvm;

#[test]
fn virsh_drives_a_domain_through_its_life_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("life");
    let disk = daemon.write_file("disk.img", &"\0".repeat(1 << 20));
    let xml = guest_xml(
        "life",
        "counter",
        &format!(
            "<disk type='file' device='disk'><source file='{}'/><target dev='vda'/></disk>",
            disk.display()
        ),
    );

    // Act + Assert: define and list.
    let defined = daemon.define("life", &xml);
    assert!(defined.contains("Domain 'life' defined from"), "{defined}");
    let list = daemon.virsh_ok(&["list", "--all"]);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [
            " Id   Name   State",
            "-----------------------",
            " -    life   shut off",
            ""
        ],
        "{list}"
    );
    assert_eq!(daemon.domstate("life"), "shut off (unknown)");
    let blklist = daemon.virsh_ok(&["domblklist", "life"]);
    assert!(
        blklist
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["vda", disk.to_str().unwrap()]),
        "{blklist}"
    );

    // Start, information.
    let started = daemon.virsh_ok(&["start", "life"]);
    assert!(started.contains("Domain 'life' started"), "{started}");
    let list = daemon.virsh_ok(&["list"]);
    assert!(list.contains(" 1    life   running"), "{list}");
    assert_eq!(daemon.domstate("life"), "running (booted)");
    let info = daemon.virsh_ok(&["dominfo", "life"]);
    for line in [
        "Id:             1",
        "Name:           life",
        "State:          running",
        "CPU(s):         1",
        "Max memory:     65536 KiB",
        "Used memory:    65536 KiB",
        "Persistent:     yes",
        "Autostart:      disable",
    ] {
        assert!(info.contains(line), "{line:?} missing from:\n{info}");
    }
    let live = daemon.virsh_ok(&["dumpxml", "life"]);
    assert!(live.starts_with("<domain type='kvm' id='1'>"), "{live}");
    assert!(live.contains("<alias name='virtio-disk0'/>"), "{live}");
    let inactive = daemon.virsh_ok(&["dumpxml", "--inactive", "life"]);
    assert!(inactive.starts_with("<domain type='kvm'>"), "{inactive}");
    assert!(!inactive.contains("alias"), "{inactive}");

    // Statistics.
    let stats = daemon.virsh_ok(&["domstats", "life"]);
    for field in [
        "state.state=1",
        "state.reason=1",
        "cpu.time=",
        "balloon.current=65536",
        "balloon.maximum=65536",
        "vcpu.current=1",
        "vcpu.0.state=1",
        "vcpu.0.time=",
        "net.count=0",
        "block.count=1",
        "block.0.name=vda",
        "block.0.capacity=1048576",
    ] {
        assert!(stats.contains(field), "{field:?} missing from:\n{stats}");
    }
    let vcpus = daemon.virsh_ok(&["vcpuinfo", "life"]);
    assert!(vcpus.contains("VCPU:           0"), "{vcpus}");
    assert!(vcpus.contains("State:          running"), "{vcpus}");

    // Suspend and resume.
    daemon.virsh_ok(&["suspend", "life"]);
    assert_eq!(daemon.domstate("life"), "paused (user)");
    daemon.virsh_ok(&["resume", "life"]);
    assert_eq!(daemon.domstate("life"), "running (unpaused)");

    // Destroy, undefine.
    let destroyed = daemon.virsh_ok(&["destroy", "life"]);
    assert!(destroyed.contains("Domain 'life' destroyed"), "{destroyed}");
    assert_eq!(daemon.domstate("life"), "shut off (destroyed)");
    let undefined = daemon.virsh_ok(&["undefine", "life"]);
    assert!(
        undefined.contains("Domain 'life' has been undefined"),
        "{undefined}"
    );
    let list = daemon.virsh_ok(&["list", "--all"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(daemon.vm_pids().is_empty());
}

#[test]
fn virsh_shutdown_of_a_guest_that_listens_ends_shut_off_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("shut");
    daemon.define("shut", &guest_xml("shut", "wait-shutdown", ""));
    daemon.virsh_ok(&["start", "shut"]);

    // Act
    let out = daemon.virsh_ok(&["shutdown", "shut"]);

    // Assert
    assert!(out.contains("Domain 'shut' is being shutdown"), "{out}");
    daemon.wait_state("shut", "shut off (shutdown)");
}

#[test]
fn virsh_create_runs_a_transient_domain_that_vanishes_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("trans");
    let file = daemon.write_file("t.xml", &guest_xml("trans", "counter", ""));

    // Act
    let created = daemon.virsh_ok(&["create", file.to_str().unwrap()]);
    let info = daemon.virsh_ok(&["dominfo", "trans"]);
    daemon.virsh_ok(&["destroy", "trans"]);
    let list = daemon.virsh_ok(&["list", "--all"]);

    // Assert
    assert!(created.contains("Domain 'trans' created from"), "{created}");
    assert!(info.contains("Persistent:     no"), "{info}");
    assert!(!list.contains("trans"), "{list}");
}

#[test]
fn virsh_autostart_starts_the_domain_with_the_next_daemon_kvm() {
    // Arrange
    require_kvm();
    let mut daemon = TestDaemon::start("auto");
    daemon.define("auto", &guest_xml("auto", "counter", ""));
    daemon.define("manual", &guest_xml("manual", "counter", ""));

    // Act
    let marked = daemon.virsh_ok(&["autostart", "auto"]);
    let autostart_list = daemon.virsh_ok(&["list", "--all", "--autostart", "--name"]);
    daemon.terminate();
    daemon.restart();

    // Assert
    assert!(
        marked.contains("Domain 'auto' marked as autostarted"),
        "{marked}"
    );
    assert_eq!(autostart_list.trim(), "auto");
    assert_eq!(daemon.domstate("auto"), "running (booted)");
    assert_eq!(daemon.domstate("manual"), "shut off (unknown)");
    let info = daemon.virsh_ok(&["dominfo", "auto"]);
    assert!(info.contains("Autostart:      enable"), "{info}");
    daemon.virsh_ok(&["autostart", "--disable", "auto"]);
    daemon.virsh_ok(&["destroy", "auto"]);
}

#[test]
fn virsh_event_loop_sees_started_and_stopped_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("event");
    daemon.define("ev", &guest_xml("ev", "counter", ""));
    let watcher = Command::new("virsh")
        .args(["-c", &daemon.uri(), "event", "--loop", "--timeout", "15"])
        .args(["--event", "lifecycle"])
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // virsh registers within a moment; the daemon logs nothing for it, so give it time.
    std::thread::sleep(Duration::from_millis(700));

    // Act
    daemon.virsh_ok(&["start", "ev"]);
    daemon.virsh_ok(&["suspend", "ev"]);
    daemon.virsh_ok(&["destroy", "ev"]);
    daemon.virsh_ok(&["undefine", "ev"]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill() takes no pointers; the pid is our child's, not yet reaped.
    unsafe { libc::kill(watcher.id() as i32, libc::SIGINT) };
    let out = watcher.wait_with_output().unwrap();

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "event 'lifecycle' for domain 'ev': Started Booted",
        "event 'lifecycle' for domain 'ev': Suspended Paused",
        "event 'lifecycle' for domain 'ev': Stopped Destroyed",
        "event 'lifecycle' for domain 'ev': Undefined Removed",
    ] {
        assert!(stdout.contains(line), "{line:?} missing: {}", text(&out));
    }
}

/// `virsh console DOMAIN` under script(1), which gives it the terminal it needs, with
/// everything it prints collected.
struct VirshConsole {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl VirshConsole {
    fn open(daemon: &TestDaemon, domain: &str) -> VirshConsole {
        require("script", "bsdutils");
        let command = format!("virsh -c '{}' console {domain}", daemon.uri());
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        VirshConsole {
            child,
            stdin,
            seen,
            reader,
        }
    }

    /// Whether virsh printed `text` within the timeout.
    fn wait_for(&self, text: &str) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        while !String::from_utf8_lossy(&self.seen.lock().unwrap()).contains(text) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        feed(&mut self.stdin, bytes);
    }

    /// Waits (up to the timeout) for virsh to end; its exit status and all it printed.
    fn end(mut self) -> std::process::Output {
        let deadline = Instant::now() + TIMEOUT;
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.stdin);
        let out = self.child.wait_with_output().unwrap();
        self.reader.join().unwrap();
        std::process::Output {
            stdout: self.seen.lock().unwrap().clone(),
            ..out
        }
    }
}

#[test]
fn virsh_console_talks_to_the_serial_port_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("cons");
    daemon.define("cons", &guest_xml("cons", "serial-echo", ""));
    daemon.virsh_ok(&["start", "cons"]);
    let mut console = VirshConsole::open(&daemon, "cons");

    // Act: once the guest listens (its own output says so), type a line, then Ctrl-].
    let listening = console.wait_for("oxguest: waiting up to 10 s for a line on COM1");
    console.type_bytes(b"hello\r");
    // (virsh may print its end-of-console message inside the line: match its tail.)
    let echoed = console.wait_for("serial-echo PASS got=hello");
    console.type_bytes(b"\x1d");
    let out = console.end();
    assert!(listening && echoed, "{}\n{}", text(&out), daemon.log());

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Connected to domain 'cons'"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("oxguest: waiting up to 10 s for a line on COM1"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("serial-echo PASS got=hello"),
        "{}\n{}",
        text(&out),
        daemon.log()
    );
}

#[test]
fn virsh_console_ends_cleanly_when_the_guest_powers_off_kvm() {
    // Arrange: the guest powers off by itself once it has echoed a line.
    require_kvm();
    let daemon = TestDaemon::start("consoff");
    daemon.define("off", &guest_xml("off", "serial-echo", ""));
    daemon.virsh_ok(&["start", "off"]);
    let mut console = VirshConsole::open(&daemon, "off");

    // Act
    let listening = console.wait_for("oxguest: waiting up to 10 s for a line on COM1");
    console.type_bytes(b"bye\r");
    let out = console.end();

    // Assert: everything the guest printed up to its power-off, then virsh leaves with
    // status 0 and no complaint.
    let all = format!("{}\n{}", text(&out), daemon.log());
    assert!(listening, "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("serial-echo PASS got=bye"), "{all}");
    assert!(stdout.contains("oxguest: done"), "{all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!stdout.contains("Disconnected"), "{all}");
    assert!(!stdout.contains("error"), "{all}");
    daemon.wait_state("off", "shut off (shutdown)");
}
