//! Golden files, libvirt's `qemuxmlconfdata` way: `tests/golden/NAME.in.xml` is read and written
//! back as `NAME.out.xml` (`dumpxml --inactive`) and `NAME.live.xml` (a running domain).
//! `DOMAIN_GOLDEN_UPDATE=1 cargo test -p domain --test golden` rewrites the expected files;
//! review their diff before committing.

mod common;

use std::fs;
use std::path::Path;

use common::{golden_dir, golden_inputs, golden_live_info};
use domain::{DomainDef, XmlOptions};

fn check_or_update(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("DOMAIN_GOLDEN_UPDATE").is_some() {
        fs::write(path, actual).unwrap();
        return;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(e) => failures.push(format!(
            "{}: {e} (run with DOMAIN_GOLDEN_UPDATE=1 to create it)",
            path.display()
        )),
    }
}

#[test]
fn golden_inputs_are_written_as_expected() {
    let cases = golden_inputs();
    assert!(cases.len() >= 8, "golden cases missing: {cases:?}");
    let live = golden_live_info();
    let mut failures = Vec::new();

    for (name, input) in &cases {
        let def = DomainDef::from_xml(&fs::read_to_string(input).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inactive = def.to_xml(&XmlOptions::INACTIVE);
        let running = def.to_xml(&XmlOptions::live(&live));
        check_or_update(
            &golden_dir().join(format!("{name}.out.xml")),
            &inactive,
            &mut failures,
        );
        check_or_update(
            &golden_dir().join(format!("{name}.live.xml")),
            &running,
            &mut failures,
        );
    }

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_outputs_read_back_as_the_same_definition_and_are_stable() {
    let live = golden_live_info();
    for (name, input) in golden_inputs() {
        let def = DomainDef::from_xml(&fs::read_to_string(&input).unwrap()).unwrap();
        let inactive = def.to_xml(&XmlOptions::INACTIVE);
        let running = def.to_xml(&XmlOptions::live(&live));

        let from_inactive =
            DomainDef::from_xml(&inactive).unwrap_or_else(|e| panic!("{name}: {e}"));
        let from_live = DomainDef::from_xml(&running).unwrap_or_else(|e| panic!("{name}: {e}"));

        assert_eq!(from_inactive, def, "{name}: inactive XML read back differs");
        assert_eq!(from_live, def, "{name}: live XML read back differs");
        assert_eq!(
            from_inactive.to_xml(&XmlOptions::INACTIVE),
            inactive,
            "{name}: unstable"
        );
    }
}
