//! python3-libvirt (Debian's `/usr/bin/python3`) against a real oxvirtd.

mod common;

use common::daemon::{TestDaemon, guest_xml, text};
use common::require_kvm;

#[test]
fn python_libvirt_lists_looks_up_creates_and_destroys_kvm() {
    // Arrange
    require_kvm();
    let daemon = TestDaemon::start("py");
    daemon.define("pydef", &guest_xml("pydef", "counter", ""));
    let transient = guest_xml("pytmp", "counter", "");
    let script = format!(
        r#"
c = libvirt.open(URI)
print("names", sorted(d.name() for d in c.listAllDomains()))
d = c.lookupByName("pydef")
print("info-off", d.info())
print("state-off", d.state())
d.create()
print("active", d.isActive(), d.ID())
info = d.info()
print("info-on", info[0], info[1], info[2], info[3], info[4] >= 0)
print("state-on", d.state())
print("xml-id", "id='%d'" % d.ID() in d.XMLDesc(0))
try:
    d.create()
except libvirt.libvirtError as e:
    print("again", e.get_error_code(), e.get_error_message())
t = c.createXML({transient:?}, 0)
print("transient", t.name(), t.isPersistent(), t.ID() > d.ID())
print("running", sorted(x.name() for x in c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)))
t.destroy()
d.destroy()
print("state-destroyed", d.state())
print("names-after", sorted(x.name() for x in c.listAllDomains()))
try:
    c.lookupByName("nosuch")
except libvirt.libvirtError as e:
    print("error", e.get_error_code(), e.get_error_message())
c.close()
"#
    );

    // Act
    let out = daemon.python(&script);

    // Assert
    let all = format!("{}\n{}", text(&out), daemon.log());
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "names ['pydef']",
        "info-off [5, 65536, 65536, 1, 0]",
        "state-off [5, 0]",
        "active 1 1",
        "info-on 1 65536 65536 1 True",
        "state-on [1, 1]",
        "xml-id True",
        "again 55 Requested operation is not valid: domain is already running",
        "transient pytmp 0 True",
        "running ['pydef', 'pytmp']",
        "state-destroyed [5, 2]",
        "names-after ['pydef']",
        "error 42 Domain not found: no domain with matching name 'nosuch'",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{all}"
        );
    }
}
