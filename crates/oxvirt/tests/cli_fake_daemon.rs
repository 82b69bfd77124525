//! The `oxvirt` binary as a process against an in-process daemon made with the `rpc` crate's
//! server: what it prints, on which stream, and its exit status.

mod fake_daemon;

use fake_daemon::Running;
use rpc::Procedure;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn list_all_prints_virsh_table_sorted_by_id_then_name() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(&["list", "--all"], b"");

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        " Id   Name      State
--------------------------
 1    db        paused
 2    web       running
 -    Archive   shut off
 -    backup    shut off

"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn list_asks_for_active_domains_by_default_and_quiet_drops_headers() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(&["-q", "list"], b"");
    let names = daemon.oxvirt(&["list", "--inactive", "--name"], b"");

    // Assert
    assert_eq!(text(&out.stdout), " 1   db    paused\n 2   web   running\n");
    assert_eq!(text(&names.stdout), "Archive\nbackup\n\n");
    let calls = daemon.daemon.calls.lock().unwrap().clone();
    assert_eq!(calls[0], Procedure::AuthList);
    assert_eq!(calls[1], Procedure::ConnectOpen);
    assert!(calls.contains(&Procedure::ConnectClose));
}

#[test]
fn missing_domain_prints_virsh_error_line_and_exits_1() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(&["dominfo", "nope"], b"");

    // Assert
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: failed to get domain 'nope'\n");
    assert_eq!(text(&out.stdout), "\n");
}

#[test]
fn dominfo_without_security_driver() {
    // Arrange
    let daemon = Running::start();

    // Act: "2" is looked up as an id first, as virsh does.
    let out = daemon.oxvirt(&["dominfo", "2"], b"");

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Id:             2
Name:           web
UUID:           11111111-1111-1111-1111-111111111111
OS Type:        hvm
State:          running
CPU(s):         2
CPU time:       1.5s
Max memory:     1048576 KiB
Used memory:    524288 KiB
Persistent:     yes
Autostart:      disable
Managed save:   no

"
    );
}

#[test]
fn start_then_destroy_reports_like_virsh() {
    // Arrange
    let daemon = Running::start();

    // Act
    let started = daemon.oxvirt(&["start", "backup"], b"");
    let again = daemon.oxvirt(&["start", "backup"], b"");
    let destroyed = daemon.oxvirt(&["destroy", "backup"], b"");
    let not_running = daemon.oxvirt(&["destroy", "backup"], b"");

    // Assert
    assert_eq!(text(&started.stdout), "Domain 'backup' started\n\n");
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(text(&again.stderr), "error: Domain is already active\n");
    assert_eq!(text(&destroyed.stdout), "Domain 'backup' destroyed\n\n");
    assert_eq!(not_running.status.code(), Some(1));
    assert_eq!(
        text(&not_running.stderr),
        "error: Failed to destroy domain 'backup'
error: Requested operation is not valid: domain is not running
"
    );
}

#[test]
fn read_only_flag_refuses_changes_before_asking_the_daemon() {
    // Arrange
    let daemon = Running::start();

    // Act
    let start = daemon.oxvirt(&["-r", "start", "backup"], b"");
    let xml = daemon.oxvirt(&["-r", "dumpxml", "--security-info", "web"], b"");
    let info = daemon.oxvirt(&["-r", "domstate", "backup"], b"");

    // Assert: libvirt's client library's words, naming the function virsh calls.
    assert_eq!(start.status.code(), Some(1));
    assert_eq!(
        text(&start.stderr),
        "error: Failed to start domain 'backup'
error: operation forbidden: read only access prevents virDomainCreate
"
    );
    assert_eq!(
        text(&xml.stderr),
        "error: operation forbidden: virDomainGetXMLDesc with secure flag\n"
    );
    assert_eq!(text(&info.stdout), "shut off\n\n");
    let calls = daemon.daemon.calls.lock().unwrap().clone();
    assert!(!calls.contains(&Procedure::DomainCreate), "{calls:?}");
    assert!(!calls.contains(&Procedure::DomainGetXmlDesc), "{calls:?}");
}

#[test]
fn unsupported_call_shows_the_daemon_message() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(&["hostname"], b"");

    // Assert
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: this function is not supported"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn event_loop_prints_events_until_the_timeout() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(
        &["event", "--loop", "--event", "lifecycle", "--timeout", "1"],
        b"",
    );

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "event 'lifecycle' for domain 'web': Started Booted
event loop timed out
events received: 1

"
    );
}

#[test]
fn console_forwards_input_and_ends_with_the_stream() {
    // Arrange
    let daemon = Running::start();

    // Act: the fake console upper-cases input and ends the stream after "bye".
    let out = daemon.oxvirt(&["console", "web"], b"bye");

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Connected to domain 'web'
Escape character is ^] (Ctrl + ])
console ready\r\nBYE
"
    );
}

#[test]
fn console_escape_byte_leaves_at_once() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(&["console", "web"], b"\x1d");

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("Connected to domain 'web'\n"));
}

#[test]
fn console_of_a_stopped_domain_is_refused() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = daemon.oxvirt(&["console", "backup"], b"");

    // Assert
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: The domain is not running\n");
}

#[test]
fn unreachable_daemon_and_bad_command_lines() {
    // Act
    let no_socket = std::process::Command::new(env!("CARGO_BIN_EXE_oxvirt"))
        .args([
            "-c",
            "oxvirt+unix:///system?socket=/nonexistent/oxvirt.sock",
            "list",
        ])
        .output()
        .unwrap();
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_oxvirt"))
        .arg("bogus")
        .output()
        .unwrap();
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_oxvirt"))
        .arg("dominfo")
        .output()
        .unwrap();

    // Assert
    assert_eq!(no_socket.status.code(), Some(1));
    assert_eq!(
        text(&no_socket.stderr),
        "error: failed to connect to the hypervisor
error: Failed to connect socket to '/nonexistent/oxvirt.sock': No such file or directory
"
    );
    assert_eq!(text(&unknown.stderr), "error: unknown command: 'bogus'\n");
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        "error: command 'dominfo' requires <domain> option\n"
    );
}

#[test]
fn libvirt_default_uri_is_honoured() {
    // Arrange
    let daemon = Running::start();

    // Act
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oxvirt"))
        .args(["uri"])
        .env("LIBVIRT_DEFAULT_URI", daemon.uri())
        .output()
        .unwrap();

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n\n", daemon.uri()));
}

#[test]
fn one_shot_event_with_timestamp_stops_after_the_first_event() {
    // Arrange
    let daemon = Running::start();

    // Act: --all registers lifecycle and reboot; the first event ends a one-shot wait.
    let out = daemon.oxvirt(&["event", "--all", "--timestamp", "--timeout", "5"], b"");

    // Assert
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (stamp, rest) = stdout.split_once(": ").unwrap();
    assert_eq!(
        stamp.len(),
        "2026-11-30 12:34:56.789+0000".len(),
        "{stdout}"
    );
    assert!(stamp.ends_with("+0000"), "{stdout}");
    assert_eq!(
        rest,
        "event 'lifecycle' for domain 'web': Started Booted\nevents received: 1\n\n"
    );
    let calls = daemon.daemon.calls.lock().unwrap().clone();
    let registrations = calls
        .iter()
        .filter(|p| **p == Procedure::ConnectDomainEventCallbackRegisterAny)
        .count();
    assert_eq!(registrations, 2);
}
