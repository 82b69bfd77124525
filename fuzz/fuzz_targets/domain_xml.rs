//! libvirt domain XML as `define` reads it: parse and validate; whatever is accepted must
//! write out and parse back to the same model, and convert to an oxvmm configuration or fail
//! with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(def) = domain::DomainDef::from_xml(text) else {
        return;
    };
    let xml = def.to_xml(&domain::XmlOptions::INACTIVE);
    let again = domain::DomainDef::from_xml(&xml).expect("our own XML parses");
    assert_eq!(again, def, "round trip changed the definition");
});
