//! The snapshot state decoder `oxvmm --restore` runs on the `state` file: envelope (magic,
//! version, kind, length, CRC32), bincode payload, and the embedded JSON configuration.
//! Inputs whose first byte is odd get a valid envelope around the rest, so the fuzzer also
//! reaches the payload decoder behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn envelope(payload: &[u8]) -> Vec<u8> {
    let kind = vmm::SNAPSHOT_STATE_KIND.as_bytes();
    let mut out = b"OXSNAPv\0".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(kind.len() as u16).to_le_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(&vmm::SNAPSHOT_STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => {
            let _ = vmm::decode_snapshot_state(&envelope(rest));
        }
        _ => {
            let _ = vmm::decode_snapshot_state(data);
        }
    }
});
