//! The `oxvirt` CLI against a real oxvirtd running the bundled test guest under oxvmm.
//!
//! Where oxvirt must print what virsh prints, both run against the same daemon and their
//! standard output, standard error and exit status are compared ([`Clients::same`]); values
//! that change from one moment to the next (CPU times, the host CPU a vCPU ran on) are masked
//! first. The expected text is also spelled out, so that a change in both shows.
//!
//! Needs /dev/kvm, root (an `ethernet` interface gets a TAP device), `virsh` (libvirt-clients),
//! and the oxvmm and oxvirt binaries built in the same target directory
//! (`cargo build -p oxvmm -p oxvirt`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{TIMEOUT, TestDaemon, feed, guest_xml, require, text};
use common::require_kvm;

/// The oxvirt binary, beside this test's target directory's oxvmm and oxvirtd.
fn oxvirt_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let oxvirt = profile_dir.join("oxvirt");
    assert!(
        oxvirt.is_file(),
        "{} does not exist: build it first with `cargo build -p oxvirt` (same target directory \
         and profile)",
        oxvirt.display()
    );
    oxvirt
}

/// The two clients pointed at one daemon.
struct Clients<'a> {
    daemon: &'a TestDaemon,
}

impl Clients<'_> {
    /// `oxvirt` as a command against `uri`, in the C locale.
    fn command(&self, uri: &str, args: &[&str]) -> Command {
        let mut command = Command::new(oxvirt_path());
        command
            .arg("-c")
            .arg(uri)
            .args(args)
            .env("HOME", &self.daemon.root)
            .env("LC_ALL", "C");
        command
    }

    /// Runs oxvirt against the daemon's read-write socket.
    fn oxvirt(&self, args: &[&str]) -> Output {
        self.command(&self.daemon.uri(), args).output().unwrap()
    }

    /// Runs oxvirt, asserts it succeeded; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.oxvirt(args);
        assert!(
            out.status.success(),
            "oxvirt {args:?}: {}\ndaemon log:\n{}",
            text(&out),
            self.daemon.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs oxvirt and virsh with `args` against `uri`; asserts that they printed the same
    /// (after `mask`) and ended the same; returns oxvirt's standard output and error.
    fn same_masked(&self, uri: &str, args: &[&str], mask: fn(&str) -> String) -> (String, String) {
        let ours = self.command(uri, args).output().unwrap();
        let theirs = self.daemon.virsh_uri(uri, args);
        let streams = |out: &Output| {
            (
                mask(&String::from_utf8_lossy(&out.stdout)),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert_eq!(
            (streams(&ours), ours.status.code()),
            (streams(&theirs), theirs.status.code()),
            "oxvirt (left) and virsh (right) differ for {args:?}\ndaemon log:\n{}",
            self.daemon.log()
        );
        streams(&ours)
    }

    /// [`Clients::same_masked`] without a mask, on the read-write socket: oxvirt's stdout.
    fn same(&self, args: &[&str]) -> String {
        self.same_masked(&self.daemon.uri(), args, str::to_owned).0
    }

    /// [`Clients::same`] for a command that must fail: its standard error.
    fn same_err(&self, args: &[&str]) -> String {
        let (stdout, stderr) = self.same_masked(&self.daemon.uri(), args, str::to_owned);
        assert_eq!(stdout, "\n", "{args:?} failed, so only virsh's empty line");
        stderr
    }

    /// Polls oxvirt's `domstate --reason` until it is `want`.
    fn wait_state(&self, name: &str, want: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let state = self.ok(&["domstate", name, "--reason"]);
            if state.trim() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {state:?}, never {want:?}\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until running domain `name` and its vCPU have used some CPU time (counted in clock
/// ticks, it is 0 for the first ~10 ms): virsh prints no "CPU time" line before, so two
/// clients asked a moment apart would differ.
fn wait_for_cpu_time(daemon: &TestDaemon, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let used = |command| daemon.virsh_ok(&[command, name]).contains("CPU time:");
    while !(used("dominfo") && used("vcpuinfo")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} used no CPU time in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines whose value changes between two calls (CPU times, the host CPU a vCPU is on), with
/// the value cut off.
fn mask_cpu(output: &str) -> String {
    output
        .lines()
        .map(|line| match line.split_once(':') {
            Some((key @ ("CPU" | "CPU time"), _)) => format!("{key}: *"),
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect()
}

/// `domstats` with the values that keep changing (times, resident memory, traffic counters)
/// cut off.
fn mask_stats(output: &str) -> String {
    output
        .lines()
        .map(|line| match line.split_once('=') {
            Some((key, _))
                if key.trim_start().starts_with("cpu.")
                    || key.ends_with(".time")
                    || key.ends_with(".rss")
                    || key.contains(".rx.")
                    || key.contains(".tx.") =>
            {
                format!("{key}=*")
            }
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect()
}

/// Output as lines, for assertions that name the exact lines.
fn lines(output: &str) -> Vec<&str> {
    output.lines().collect()
}

#[test]
fn oxvirt_prints_what_virsh_prints_through_a_domain_life_kvm() {
    // Arrange: a disk, and an ethernet interface with a TAP name of its own (tests of other
    // processes may create vnetN devices at the same time).
    require_kvm();
    let daemon = TestDaemon::start("cli");
    let cli = Clients { daemon: &daemon };
    let disk = daemon.write_file("disk.img", &"\0".repeat(1 << 20));
    let tap = format!("oxc{}", std::process::id() % 1_000_000);
    let devices = format!(
        "<disk type='file' device='disk'><source file='{}'/><target dev='vda'/></disk>\n    \
         <interface type='ethernet'><mac address='52:54:00:00:00:31'/>\
         <target dev='{tap}'/></interface>",
        disk.display()
    );
    let file = daemon.write_file("life.xml", &guest_xml("life", "counter", &devices));
    let file = file.to_str().unwrap();

    // Act + Assert: define, and what a defined domain shows.
    assert_eq!(
        cli.ok(&["define", file]),
        format!("Domain 'life' defined from {file}\n\n")
    );
    assert_eq!(
        lines(&cli.same(&["list", "--all"])),
        [
            " Id   Name   State",
            "-----------------------",
            " -    life   shut off",
            ""
        ]
    );
    assert_eq!(
        cli.same(&["domstate", "life", "--reason"]),
        "shut off (unknown)\n\n"
    );
    let blklist = cli.same(&["domblklist", "life"]);
    assert_eq!(
        lines(&blklist)[2].split_whitespace().collect::<Vec<_>>(),
        ["vda", disk.to_str().unwrap()],
        "{blklist}"
    );
    let iflist = cli.same(&["domiflist", "life"]);
    assert_eq!(
        lines(&iflist)[2].split_whitespace().collect::<Vec<_>>(),
        [tap.as_str(), "ethernet", "-", "virtio", "52:54:00:00:00:31"],
        "{iflist}"
    );
    cli.same(&["dominfo", "life"]);
    cli.same(&["vcpuinfo", "life"]);
    let inactive = cli.same(&["dumpxml", "life"]);
    assert!(inactive.starts_with("<domain type='kvm'>"), "{inactive}");

    // Start, and what a running domain shows.
    assert_eq!(cli.ok(&["start", "life"]), "Domain 'life' started\n\n");
    assert_eq!(
        lines(&cli.same(&["list", "--all"]))[2],
        " 1    life   running"
    );
    assert_eq!(
        cli.same(&["domstate", "life", "--reason"]),
        "running (booted)\n\n"
    );
    let uri = daemon.uri();
    wait_for_cpu_time(&daemon, "life");
    let (info, _) = cli.same_masked(&uri, &["dominfo", "life"], mask_cpu);
    for line in [
        "Id:             1",
        "State:          running",
        "CPU time: *",
        "Max memory:     65536 KiB",
        "Persistent:     yes",
    ] {
        assert!(info.contains(line), "{line:?} missing from:\n{info}");
    }
    let (vcpus, _) = cli.same_masked(&uri, &["vcpuinfo", "life"], mask_cpu);
    assert!(vcpus.contains("State:          running"), "{vcpus}");
    let live = cli.same(&["dumpxml", "life"]);
    assert!(live.starts_with("<domain type='kvm' id='1'>"), "{live}");
    assert!(live.contains("<alias name='virtio-disk0'/>"), "{live}");
    assert_eq!(cli.same(&["dumpxml", "--inactive", "life"]), inactive);
    cli.same(&["domblklist", "life"]);
    cli.same(&["domiflist", "life"]);
    let (stats, _) = cli.same_masked(&uri, &["domstats", "life"], mask_stats);
    for field in [
        "state.state=1",
        "cpu.time=*",
        "balloon.current=65536",
        "vcpu.0.time=*",
        "net.count=1",
        &format!("net.0.name={tap}"),
        "block.0.name=vda",
        "block.0.capacity=1048576",
    ] {
        assert!(stats.contains(field), "{field:?} missing from:\n{stats}");
    }

    // Suspend and resume.
    assert_eq!(cli.ok(&["suspend", "life"]), "Domain 'life' suspended\n\n");
    assert_eq!(
        cli.same(&["domstate", "life", "--reason"]),
        "paused (user)\n\n"
    );
    assert_eq!(cli.ok(&["resume", "life"]), "Domain 'life' resumed\n\n");
    assert_eq!(
        cli.same(&["domstate", "life", "--reason"]),
        "running (unpaused)\n\n"
    );

    // Autostart.
    assert_eq!(
        cli.ok(&["autostart", "life"]),
        "Domain 'life' marked as autostarted\n\n"
    );
    assert_eq!(
        cli.same(&["list", "--all", "--autostart", "--name"]),
        "life\n\n"
    );
    assert_eq!(
        cli.ok(&["autostart", "--disable", "life"]),
        "Domain 'life' unmarked as autostarted\n\n"
    );

    // Wrong states.
    assert_eq!(
        cli.same_err(&["start", "life"]),
        "error: Domain is already active\n"
    );
    assert_eq!(cli.ok(&["destroy", "life"]), "Domain 'life' destroyed\n\n");
    assert_eq!(
        cli.same(&["domstate", "life", "--reason"]),
        "shut off (destroyed)\n\n"
    );
    assert_eq!(
        cli.same_err(&["destroy", "life"]),
        "error: Failed to destroy domain 'life'\nerror: Requested operation is not valid: \
         domain is not running\n"
    );
    assert_eq!(
        cli.same_err(&["console", "life"]),
        "error: The domain is not running\n"
    );

    // Undefine.
    assert_eq!(
        cli.ok(&["undefine", "life"]),
        "Domain 'life' has been undefined\n\n"
    );
    assert_eq!(lines(&cli.same(&["list", "--all"])).len(), 3);
    assert!(daemon.vm_pids().is_empty());
}

#[test]
fn oxvirt_shutdown_of_a_guest_that_listens_ends_shut_off_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("clishut");
    let cli = Clients { daemon: &daemon };
    daemon.define("shut", &guest_xml("shut", "wait-shutdown", ""));
    cli.ok(&["start", "shut"]);

    // Act
    let out = cli.ok(&["shutdown", "shut"]);

    // Assert
    assert_eq!(out, "Domain 'shut' is being shutdown\n\n");
    cli.wait_state("shut", "shut off (shutdown)");
    cli.same(&["domstate", "shut", "--reason"]);
}

#[test]
fn oxvirt_event_loop_sees_what_virsh_sees_kvm() {
    // Arrange: both clients wait for lifecycle events of the same daemon.
    require_kvm();
    require("virsh", "libvirt-clients");
    let daemon = TestDaemon::start("clievent");
    let cli = Clients { daemon: &daemon };
    let file = daemon.write_file("trans.xml", &guest_xml("trans", "counter", ""));
    let file = file.to_str().unwrap();
    let wait = ["event", "--loop", "--timeout", "4", "--event", "lifecycle"];
    let spawn = |mut command: Command| {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ours = spawn(cli.command(&daemon.uri(), &wait));
    let mut virsh = Command::new("virsh");
    virsh
        .args(["-c", &daemon.uri()])
        .args(wait)
        .env("HOME", &daemon.root)
        .env("LC_ALL", "C");
    let theirs = spawn(virsh);
    // Neither says when it has registered; give them a moment.
    std::thread::sleep(Duration::from_millis(700));

    // Act: a transient domain's life.
    let created = cli.ok(&["create", file]);
    wait_for_cpu_time(&daemon, "trans");
    let (info, _) = cli.same_masked(&daemon.uri(), &["dominfo", "trans"], mask_cpu);
    cli.ok(&["destroy", "trans"]);
    let list = cli.same(&["list", "--all", "--name"]);
    let ours = ours.wait_with_output().unwrap();
    let theirs = theirs.wait_with_output().unwrap();

    // Assert
    assert_eq!(created, format!("Domain 'trans' created from {file}\n\n"));
    assert!(info.contains("Persistent:     no"), "{info}");
    assert_eq!(list, "\n", "a destroyed transient domain is gone");
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        "event 'lifecycle' for domain 'trans': Started Booted\n\
         event 'lifecycle' for domain 'trans': Stopped Destroyed\n\
         event loop timed out\nevents received: 2\n\n",
        "{}",
        text(&ours)
    );
    assert_eq!(
        (ours.stdout, ours.stderr, ours.status.code()),
        (theirs.stdout, theirs.stderr, theirs.status.code()),
        "oxvirt and virsh saw different events"
    );
}

#[test]
fn oxvirt_console_talks_to_the_serial_port_without_a_terminal_kvm() {
    // Arrange: the guest echoes one line it reads on COM1.
    require_kvm();
    let daemon = TestDaemon::start("clicons");
    let cli = Clients { daemon: &daemon };
    daemon.define("cons", &guest_xml("cons", "serial-echo", ""));
    cli.ok(&["start", "cons"]);
    let mut child = cli
        .command(&daemon.uri(), &["console", "cons"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let wait_for = |text: &str| {
        let deadline = Instant::now() + TIMEOUT;
        while !String::from_utf8_lossy(&seen.lock().unwrap()).contains(text) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };

    // Act: once the guest listens, type a line; then Ctrl-].
    let listening = wait_for("oxguest: waiting up to 10 s for a line on COM1");
    feed(&mut stdin, b"hello\r");
    let echoed = wait_for("serial-echo PASS got=hello");
    feed(&mut stdin, b"\x1d");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let out = Output {
        stdout: seen.lock().unwrap().clone(),
        ..out
    };

    // Assert
    assert!(listening && echoed, "{}\n{}", text(&out), daemon.log());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("Connected to domain 'cons'\nEscape character is ^] (Ctrl + ])\n"),
        "{}",
        text(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn oxvirt_reports_bad_input_in_virsh_words() {
    // Arrange
    let daemon = TestDaemon::start("clierr");
    let cli = Clients { daemon: &daemon };
    daemon.define("st", &guest_xml("st", "counter", ""));
    let bad_vcpus = guest_xml("bad", "counter", "").replace("<vcpu>1</vcpu>", "<vcpu>0</vcpu>");
    let bad_vcpus = daemon.write_file("bad-vcpus.xml", &bad_vcpus);
    let malformed = daemon.write_file("malformed.xml", "<domain type='kvm'><name>m</name><os><k");
    let missing = daemon.root.join("missing.xml");
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    // Act + Assert: unknown domains.
    for command in [
        "dominfo", "domstate", "start", "destroy", "suspend", "dumpxml", "undefine", "console",
    ] {
        assert_eq!(
            cli.same_err(&[command, "nosuch"]),
            "error: failed to get domain 'nosuch'\n",
            "{command}"
        );
    }
    // Bad definitions name the XML path of what is wrong.
    assert_eq!(
        cli.same_err(&["define", &path(&bad_vcpus)]),
        format!(
            "error: Failed to define domain from {}\nerror: XML error: /domain/vcpu: \"0\" \
             vCPUs: at least 1 is needed\n",
            bad_vcpus.display()
        )
    );
    assert_eq!(
        cli.same_err(&["create", &path(&malformed)]),
        format!(
            "error: Failed to create domain from {}\nerror: XML error: malformed XML at \
             /domain/os (byte 37): syntax error: tag not closed: `>` not found before end of \
             input\n",
            malformed.display()
        )
    );
    assert_eq!(
        cli.same_err(&["define", &path(&missing)]),
        format!(
            "error: Failed to open file '{}': No such file or directory\n",
            missing.display()
        )
    );
    // A stopped domain.
    assert_eq!(
        cli.same_err(&["suspend", "st"]),
        "error: Failed to suspend domain 'st'\nerror: Requested operation is not valid: domain \
         is not running\n"
    );
    assert_eq!(cli.same(&["list", "--all", "--name"]), "st\n\n");
}

#[test]
fn oxvirt_read_only_connections_refuse_changes_like_virsh() {
    // Arrange
    let daemon = TestDaemon::start("cliro");
    let cli = Clients { daemon: &daemon };
    daemon.define("ro", &guest_xml("ro", "counter", ""));
    let uri = daemon.uri();
    let uri_ro = daemon.uri_ro();

    // Act: the read-only socket (the daemon refuses), and `-r` on the read-write one (the
    // client refuses, naming the libvirt function, as libvirt's client library does).
    let (_, socket_start) = cli.same_masked(&uri_ro, &["start", "ro"], str::to_owned);
    let (_, socket_undefine) = cli.same_masked(&uri_ro, &["undefine", "ro"], str::to_owned);
    let (_, flag_start) = cli.same_masked(&uri, &["-r", "start", "ro"], str::to_owned);
    let (_, flag_destroy) = cli.same_masked(&uri, &["-r", "destroy", "ro"], str::to_owned);
    let (_, flag_define) = cli.same_masked(
        &uri,
        &["-r", "define", daemon.root.join("ro.xml").to_str().unwrap()],
        str::to_owned,
    );
    let (list, _) = cli.same_masked(&uri_ro, &["list", "--all"], str::to_owned);

    // Assert
    let denied = "error: operation forbidden: read only access prevents";
    assert_eq!(
        socket_start,
        format!("error: Failed to start domain 'ro'\n{denied} this operation\n")
    );
    assert_eq!(
        socket_undefine,
        format!("error: Failed to undefine domain 'ro'\n{denied} this operation\n")
    );
    assert_eq!(
        flag_start,
        format!("error: Failed to start domain 'ro'\n{denied} virDomainCreate\n")
    );
    assert_eq!(
        flag_destroy,
        format!("error: Failed to destroy domain 'ro'\n{denied} virDomainDestroy\n")
    );
    assert!(
        flag_define.ends_with(&format!("\n{denied} virDomainDefineXML\n")),
        "{flag_define}"
    );
    assert_eq!(lines(&list)[2], " -    ro     shut off");
}
