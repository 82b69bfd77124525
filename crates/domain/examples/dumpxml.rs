//! Reads a domain XML file and prints it as `virsh dumpxml --inactive` would, or the error.
//! `cargo run -p domain --example dumpxml -- FILE.xml`

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: dumpxml FILE.xml");
        return ExitCode::FAILURE;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match domain::DomainDef::from_xml(&text) {
        Ok(def) => {
            print!("{}", def.to_xml(&domain::XmlOptions::INACTIVE));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
