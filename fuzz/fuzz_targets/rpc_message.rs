//! libvirt RPC messages as the daemon reads them: the frame's length word, the header, then
//! the XDR arguments (and replies, as the client reads them) of every typed procedure.
//! Whatever decodes must encode to bytes that decode and encode to the same bytes again
//! (XDR padding may hold anything on input, as glibc's decoder allows, and is zero on output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc::procedures::{Procedure, TYPED_PROCEDURES, reencode_args, reencode_ret};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = rpc::message::body_len([data[0], data[1], data[2], data[3]]);
        let _ = rpc::Message::decode(&data[4..]);
    }
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let procedure: Procedure = TYPED_PROCEDURES[usize::from(selector) % TYPED_PROCEDURES.len()];
    if let Some(Ok(once)) = reencode_args(procedure, body) {
        let twice = reencode_args(procedure, &once).map(|r| r.expect("our own encoding decodes"));
        assert_eq!(
            twice.as_ref(),
            Some(&once),
            "{procedure:?} arguments do not round-trip"
        );
        assert_eq!(
            once.len(),
            body.len(),
            "{procedure:?} arguments changed length"
        );
    }
    if let Some(Ok(once)) = reencode_ret(procedure, body) {
        let twice = reencode_ret(procedure, &once).map(|r| r.expect("our own encoding decodes"));
        assert_eq!(
            twice.as_ref(),
            Some(&once),
            "{procedure:?} reply does not round-trip"
        );
        assert_eq!(once.len(), body.len(), "{procedure:?} reply changed length");
    }
});
