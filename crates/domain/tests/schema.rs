//! Every XML `to_xml` writes (inactive and live) must be valid for libvirt's own RelaxNG schema:
//! the golden outputs and a few hundred generated definitions, checked by `xmllint --relaxng`.
//! Needs the Debian packages libxml2-utils (xmllint) and libvirt0 (ships the schemas); the test
//! fails, saying which is missing, rather than skipping.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{arb_domain, arb_live_info, golden_dir};
use domain::XmlOptions;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRng, TestRunner};

const SCHEMA: &str = "/usr/share/libvirt/schemas/domain.rng";
const GENERATED_CASES: usize = 300;

fn validate(files: &[PathBuf]) {
    assert!(
        Path::new(SCHEMA).exists(),
        "{SCHEMA} is missing: install the Debian package libvirt0 (it ships libvirt's schemas)"
    );
    let output = Command::new("xmllint")
        .args(["--noout", "--relaxng", SCHEMA])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run xmllint ({e}): install the Debian package libxml2-utils")
        });
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "xmllint refused libvirt-schema validation:\n{report}"
    );
    let valid = report.lines().filter(|l| l.ends_with(" validates")).count();
    assert_eq!(
        valid,
        files.len(),
        "xmllint did not validate every file:\n{report}"
    );
}

#[test]
fn golden_outputs_are_valid_for_libvirts_schema() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.to_string_lossy();
            name.ends_with(".out.xml") || name.ends_with(".live.xml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 16, "golden outputs missing: {files:?}");

    validate(&files);
}

#[test]
fn generated_definitions_are_valid_for_libvirts_schema_inactive_and_live() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("domain-schema");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A fixed seed: the same definitions on every run, so a failure reproduces.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strategy = (arb_domain(), arb_live_info());
    let mut files = Vec::new();

    for i in 0..GENERATED_CASES {
        let (def, live) = strategy.new_tree(&mut runner).unwrap().current();
        for (kind, xml) in [
            ("inactive", def.to_xml(&XmlOptions::INACTIVE)),
            ("live", def.to_xml(&XmlOptions::live(&live))),
        ] {
            let path = dir.join(format!("{i}-{kind}.xml"));
            std::fs::write(&path, xml).unwrap();
            files.push(path);
        }
    }

    validate(&files);
}
