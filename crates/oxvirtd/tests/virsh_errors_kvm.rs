//! Bad input through Debian's `virsh`: every case gets the exact error text a user sees.

mod common;

use common::daemon::{TestDaemon, guest_xml};
use common::require_kvm;

/// A minimal definition with `body` inside `<domain>` after the name.
fn domain_with(name_and_body: &str) -> String {
    format!(
        "<domain type='kvm'>{name_and_body}<os><type>hvm</type><kernel>{}</kernel></os>\
         <features><acpi/><apic/></features></domain>",
        guests::OXGUEST_PATH
    )
}

/// The two lines virsh prints when a define fails.
fn define_error(daemon: &TestDaemon, file_name: &str, xml: &str) -> String {
    let file = daemon.write_file(file_name, xml);
    let stderr = daemon.virsh_err(&["define", file.to_str().unwrap()]);
    let first = format!("error: Failed to define domain from {}", file.display());
    assert!(stderr.starts_with(&first), "{stderr}");
    stderr[first.len()..].trim().to_string()
}

#[test]
fn definitions_with_bad_xml_are_refused_with_their_path() {
    // Arrange
    let daemon = TestDaemon::start("badxml");
    let cases = [
        (
            domain_with("<memory unit='MiB'>64</memory>"),
            "error: XML error: missing element /domain/name",
        ),
        (
            domain_with(
                "<name>u</name><memory unit='MiB'>64</memory><devices><graphics type='vnc'/>\
                 </devices>",
            ),
            "error: XML error: unsupported element /domain/devices/graphics",
        ),
        (
            domain_with("<name>u</name><memory>-1</memory>"),
            "error: XML error: /domain/memory: \"-1\" is not a number",
        ),
        (
            domain_with("<name>u</name><memory unit='MiB'>64</memory><vcpu>0</vcpu>"),
            "error: XML error: /domain/vcpu: \"0\" vCPUs: at least 1 is needed",
        ),
        (
            "<domain type='kvm'><name>u</name><memory unit='MiB'>64</memory><os><kern".into(),
            "error: XML error: malformed XML at /domain/os (byte 67): syntax error: tag not \
             closed: `>` not found before end of input",
        ),
    ];

    for (i, (xml, want)) in cases.iter().enumerate() {
        // Act
        let got = define_error(&daemon, &format!("bad{i}.xml"), xml);

        // Assert
        assert_eq!(got, *want, "case {i}");
    }
    let list = daemon.virsh_ok(&["list", "--all", "--name"]);
    assert_eq!(list.trim(), "", "nothing was defined");
}

#[test]
fn a_name_taken_by_another_uuid_is_refused() {
    // Arrange
    let daemon = TestDaemon::start("dup");
    let uuid = |last: &str| format!("<uuid>11111111-2222-3333-4444-{last}</uuid>");
    let first = domain_with(&format!(
        "<name>dup</name>{}<memory unit='MiB'>64</memory>",
        uuid("555555555555")
    ));
    let same_name = domain_with(&format!(
        "<name>dup</name>{}<memory unit='MiB'>64</memory>",
        uuid("666666666666")
    ));
    let same_uuid = domain_with(&format!(
        "<name>dup2</name>{}<memory unit='MiB'>64</memory>",
        uuid("555555555555")
    ));
    daemon.define("dup", &first);

    // Act
    let name_err = define_error(&daemon, "same-name.xml", &same_name);
    let uuid_err = define_error(&daemon, "same-uuid.xml", &same_uuid);

    // Assert
    assert_eq!(
        name_err,
        "error: operation failed: domain 'dup' already exists with uuid \
         11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(
        uuid_err,
        "error: operation failed: domain 'dup' is already defined with uuid \
         11111111-2222-3333-4444-555555555555"
    );
}

#[test]
fn a_missing_kernel_is_named_at_start() {
    // Arrange
    let daemon = TestDaemon::start("nokernel");
    let xml = guest_xml("nok", "counter", "").replace(guests::OXGUEST_PATH, "/nonexistent/vmlinux");
    daemon.define("nok", &xml);

    // Act
    let stderr = daemon.virsh_err(&["start", "nok"]);

    // Assert
    assert_eq!(
        stderr.trim(),
        "error: Failed to start domain 'nok'\nerror: Cannot access kernel \
         '/nonexistent/vmlinux' (/domain/os/kernel): No such file or directory"
    );
    assert_eq!(daemon.domstate("nok"), "shut off (unknown)");
}

#[test]
fn unknown_domains_and_wrong_states_read_like_libvirt_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("states");
    daemon.define("st", &guest_xml("st", "counter", ""));

    // Act + Assert: a stopped domain.
    assert_eq!(
        daemon.virsh_err(&["destroy", "st"]).trim(),
        "error: Failed to destroy domain 'st'\nerror: Requested operation is not valid: domain \
         is not running"
    );
    assert_eq!(
        daemon.virsh_err(&["suspend", "st"]).trim(),
        "error: Failed to suspend domain 'st'\nerror: Requested operation is not valid: domain \
         is not running"
    );
    // A running one: virsh checks this one itself; the daemon's own answer is the python
    // test's (`create()` of a running domain).
    daemon.virsh_ok(&["start", "st"]);
    assert_eq!(
        daemon.virsh_err(&["start", "st"]).trim(),
        "error: Domain is already active"
    );
    // Unknown ones.
    for command in ["dominfo", "start", "destroy", "dumpxml", "undefine"] {
        assert_eq!(
            daemon.virsh_err(&[command, "nosuch"]).trim(),
            "error: failed to get domain 'nosuch'",
            "{command}"
        );
    }
    daemon.virsh_ok(&["destroy", "st"]);
}

#[test]
fn the_read_only_socket_refuses_changes_but_answers_questions() {
    // Arrange
    let daemon = TestDaemon::start("ro");
    daemon.define("ro", &guest_xml("ro", "counter", ""));
    let uri = daemon.uri_ro();

    // Act
    let start = daemon.virsh_uri(&uri, &["start", "ro"]);
    let undefine = daemon.virsh_uri(&uri, &["undefine", "ro"]);
    let list = daemon.virsh_uri(&uri, &["list", "--all", "--name"]);

    // Assert
    let stderr = String::from_utf8_lossy(&start.stderr);
    assert_eq!(
        stderr.trim(),
        "error: Failed to start domain 'ro'\nerror: operation forbidden: read only access \
         prevents this operation"
    );
    assert!(!undefine.status.success());
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "ro");
    assert_eq!(daemon.domstate("ro"), "shut off (unknown)");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(daemon.socket()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the read-write socket is private");
}
