//! Our inactive XML is what libvirt itself writes for the same definition: each golden
//! `.out.xml` is defined in libvirt's mock driver (`virsh -c test:///default`, Debian package
//! libvirt-clients) and its `dumpxml` must be the same text. The mock driver formats with the
//! same code as the QEMU driver; it differs only in the domain type ('test') and in naming a
//! bridge interface's TAP device (`testnet0`, `testnet1`, ...) in inactive XML, which are both
//! accounted for.

mod common;

use std::process::Command;

use common::golden_dir;

fn libvirt_dumpxml(name: &str, xml: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("domain-libvirt");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.xml"));
    std::fs::write(&file, xml).unwrap();
    let script = format!("define {}; dumpxml {name}", file.display());
    let output = Command::new("virsh")
        .args(["-q", "-c", "test:///default", &script])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run virsh ({e}): install the Debian package libvirt-clients")
        });
    assert!(
        output.status.success(),
        "libvirt refused {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    // virsh prints "Domain 'NAME' defined from FILE" and blank lines around the XML.
    let start = text.find("<domain").expect("dumpxml printed a domain");
    text[start..].trim_end().to_string() + "\n"
}

#[test]
fn inactive_xml_is_byte_for_byte_what_libvirt_writes() {
    let mut compared = 0;
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let path = entry.unwrap().path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(case) = file.strip_suffix(".out.xml") else {
            continue;
        };
        let ours = std::fs::read_to_string(&path).unwrap().replacen(
            "<domain type='kvm'>",
            "<domain type='test'>",
            1,
        );
        let name_start = ours.find("<name>").unwrap() + "<name>".len();
        let name_end = ours.find("</name>").unwrap();
        let name = &ours[name_start..name_end];

        let theirs: String = libvirt_dumpxml(name, &ours)
            .lines()
            .filter(|line| !line.trim().starts_with("<target dev='testnet"))
            .map(|line| format!("{line}\n"))
            .collect();

        assert_eq!(ours, theirs, "{case}: libvirt writes it differently");
        compared += 1;
    }
    assert!(compared >= 8, "only {compared} golden outputs compared");
}
