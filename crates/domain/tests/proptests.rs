//! Property tests: any valid definition survives a write and a read (inactive and live); random
//! and mutated documents never make the parser, the writer or the conversion panic.

mod common;

use common::{arb_domain, arb_live_info, golden_inputs};
use domain::{DomainDef, NativeRuntime, XmlOptions};
use proptest::prelude::*;

fn runtime() -> NativeRuntime {
    NativeRuntime {
        serial_socket: "/run/oxvirt/t/serial.sock".into(),
        console_socket: "/run/oxvirt/t/console.sock".into(),
        interface_taps: vec!["vnet0".into()],
        vsock_socket: "/run/oxvirt/domains/t.vsock.sock".into(),
        auto_vsock_cid: 3,
    }
}

/// A parsed document must be written, read back to the same value and converted without panic.
fn check_accepted(def: &DomainDef) {
    let xml = def.to_xml(&XmlOptions::INACTIVE);
    let again = DomainDef::from_xml(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(&again, def, "{xml}");
    assert_eq!(again.to_xml(&XmlOptions::INACTIVE), xml);
    let _ = def.to_vm_config(&runtime());
}

/// Pieces of XML that, spliced in anywhere, make documents almost right.
const SNIPPETS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "'",
    "\"",
    "&",
    "&amp;",
    "&#0;",
    "&#x41;",
    "=",
    " ",
    "\n",
    "<disk>",
    "</devices>",
    "<serial type='pty'/>",
    "<console/>",
    " unit='MiB'",
    " unit='QB'",
    "-1",
    "99999999999999999999",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<?pi x?>",
    "é",
    "\u{0}",
    "\u{7}",
    "<vsock><cid auto='no' address='2'/></vsock>",
    "<memballoon model='none'/>",
    "<boot dev='hd'/>",
    " managed='no'",
    "vnet0",
    "<alias name='x'/>",
    "<title/>",
    "<qemu:commandline/>",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, snippet: usize },
    Duplicate { at: usize, len: usize },
    Replace { at: usize, with: char },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(at, snippet)| Edit::Insert { at, snippet }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Edit::Replace { at, with }),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len().max(1);
        match *edit {
            Edit::Delete { at, len: n } => {
                let start = at % len;
                let end = (start + n).min(chars.len());
                chars.drain(start.min(end)..end);
            }
            Edit::Insert { at, snippet } => {
                let at = (at % len).min(chars.len());
                chars.splice(at..at, SNIPPETS[snippet].chars());
            }
            Edit::Duplicate { at, len: n } => {
                let start = (at % len).min(chars.len());
                let end = (start + n).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, copy);
            }
            Edit::Replace { at, with } => {
                if !chars.is_empty() {
                    chars[at % len] = with;
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_definitions_round_trip_inactive_and_live(def in arb_domain(), live in arb_live_info()) {
        let inactive = def.to_xml(&XmlOptions::INACTIVE);
        let running = def.to_xml(&XmlOptions::live(&live));

        let from_inactive = DomainDef::from_xml(&inactive);
        let from_live = DomainDef::from_xml(&running);

        prop_assert_eq!(from_inactive.as_ref(), Ok(&def), "{}", inactive);
        prop_assert_eq!(from_live.as_ref(), Ok(&def), "{}", running);
        prop_assert_eq!(def.to_xml(&XmlOptions::INACTIVE), inactive);
    }

    #[test]
    fn conversion_never_panics(def in arb_domain()) {
        let _ = def.to_vm_config(&runtime());
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        if let Ok(def) = DomainDef::from_xml(&text) {
            check_accepted(&def);
        }
    }

    #[test]
    fn random_bytes_as_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(def) = DomainDef::from_xml(&text) {
            check_accepted(&def);
        }
    }

    #[test]
    fn mutated_golden_inputs_never_panic_and_read_back_when_accepted(
        case in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let cases = golden_inputs();
        let (_, path) = &cases[case.index(cases.len())];
        let text = apply(&std::fs::read_to_string(path).unwrap(), &edits);

        if let Ok(def) = DomainDef::from_xml(&text) {
            check_accepted(&def);
        }
    }
}
