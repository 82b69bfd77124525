use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::file::tests::TempDir;

const KIND: &str = "oxvmm-vm";
const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Power {
    Running,
    Paused { since_ns: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Queue {
    index: u16,
    avail: u64,
    enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VmState {
    name: String,
    power: Power,
    registers: [u64; 4],
    lapic: Vec<u8>,
    queues: Vec<Queue>,
    msrs: BTreeMap<u32, u64>,
    serial: Option<String>,
    tsc_khz: Option<u32>,
}

fn sample() -> VmState {
    VmState {
        name: "vm0".into(),
        power: Power::Paused { since_ns: 77 },
        registers: [1, 2, u64::MAX, 0x8000_0000_0000_0000],
        lapic: (0..=255).collect(),
        queues: vec![
            Queue {
                index: 0,
                avail: 10,
                enabled: true,
            },
            Queue {
                index: 1,
                avail: 0,
                enabled: false,
            },
        ],
        msrs: [(0x10, 123_456), (0xc000_0080, 0xd01)]
            .into_iter()
            .collect(),
        serial: Some("login:".into()),
        tsc_khz: None,
    }
}

fn encoded() -> Vec<u8> {
    encode_state(KIND, VERSION, &sample()).unwrap()
}

fn decode(bytes: &[u8]) -> Result<VmState, StateError> {
    match decode_state::<VmState>(bytes, KIND, VERSION) {
        Ok(value) => Ok(value),
        Err(SnapshotError::State(e)) => Err(e),
        Err(other) => panic!("decoding bytes gave a non-state error: {other}"),
    }
}

/// Offset of the payload in an encoding of kind [`KIND`].
const PAYLOAD_AT: usize = FIXED_HEADER_LEN + KIND.len() + VERSION_AND_LEN;
const LEN_AT: usize = PAYLOAD_AT - 8;

/// Makes a hand-edited encoding self-consistent again: the length field follows the file
/// size and the checksum follows the contents, so only the payload decoder can object.
fn reseal(bytes: &mut [u8]) {
    let payload_len = (bytes.len() - PAYLOAD_AT - CRC_LEN) as u64;
    bytes[LEN_AT..PAYLOAD_AT].copy_from_slice(&payload_len.to_le_bytes());
    let crc_at = bytes.len() - CRC_LEN;
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
}

/// Replaces the payload of an encoding and reseals it.
fn with_payload(payload: &[u8]) -> Vec<u8> {
    let mut bytes = encoded()[..PAYLOAD_AT].to_vec();
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&[0; CRC_LEN]);
    reseal(&mut bytes);
    bytes
}

#[test]
fn round_trip_preserves_the_value() {
    // Arrange
    let value = sample();

    // Act
    let bytes = encode_state(KIND, VERSION, &value).unwrap();
    let back: VmState = decode_state(&bytes, KIND, VERSION).unwrap();

    // Assert
    assert_eq!(back, value);
}

#[test]
fn header_is_laid_out_as_documented() {
    // Act
    let bytes = encoded();

    // Assert
    assert_eq!(&bytes[..8], b"OXSNAPv\0");
    assert_eq!(bytes[8..12], CONTAINER_VERSION.to_le_bytes());
    assert_eq!(bytes[12..14], (KIND.len() as u16).to_le_bytes());
    assert_eq!(&bytes[14..22], KIND.as_bytes());
    assert_eq!(bytes[22..26], VERSION.to_le_bytes());
    let payload_len = u64::from_le_bytes(bytes[26..34].try_into().unwrap());
    assert_eq!(payload_len as usize, bytes.len() - 34 - 4);
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    assert_eq!(crc, crc32fast::hash(&bytes[..bytes.len() - 4]));
}

#[test]
fn payload_integers_are_fixed_width_little_endian() {
    // Act
    let bytes = encode_state(KIND, VERSION, &0x0102_0304u32).unwrap();

    // Assert
    assert_eq!(&bytes[PAYLOAD_AT..bytes.len() - CRC_LEN], &[4, 3, 2, 1]);
}

#[test]
fn encode_refuses_an_empty_or_overlong_kind() {
    // Act
    let empty = encode_state("", 1, &0u8).unwrap_err();
    let long = encode_state(&"k".repeat(MAX_KIND_LEN + 1), 1, &0u8).unwrap_err();

    // Assert
    assert!(matches!(
        empty,
        SnapshotError::State(StateError::InvalidKind { len: 0, .. })
    ));
    assert!(matches!(
        long,
        SnapshotError::State(StateError::InvalidKind { len: 65, .. })
    ));
    assert!(encode_state(&"k".repeat(MAX_KIND_LEN), 1, &0u8).is_ok());
}

#[test]
fn every_truncation_is_refused_as_truncated_or_short() {
    // Arrange
    let bytes = encoded();

    for len in 0..bytes.len() {
        // Act
        let error = decode(&bytes[..len]).unwrap_err();

        // Assert: inside the header it is "truncated", after that the length field no
        // longer matches the size.
        if len < PAYLOAD_AT {
            let StateError::Truncated { len: found, needed } = error else {
                panic!("truncated to {len}: {error}");
            };
            assert_eq!(found, len);
            assert!(needed > len, "truncated to {len}: needs {needed}");
        } else {
            assert!(
                matches!(error, StateError::LengthMismatch { .. }),
                "truncated to {len}: {error}"
            );
            assert!(error.to_string().contains("bytes missing"), "{error}");
        }
    }
}

#[test]
fn truncation_message_says_how_much_is_missing() {
    // Act
    let error = decode(&encoded()[..10]).unwrap_err();

    // Assert
    assert_eq!(
        error.to_string(),
        "snapshot is truncated: 10 bytes, but its header needs 14 (4 missing)"
    );
}

#[test]
fn every_single_byte_corruption_is_caught_by_the_right_check() {
    // Arrange
    let bytes = encoded();
    let kind_at = FIXED_HEADER_LEN;
    let version_at = kind_at + KIND.len();

    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= mask;

            // Act
            let error = decode(&corrupt).unwrap_err();

            // Assert
            let expected = match at {
                0..8 => matches!(error, StateError::BadMagic { .. }),
                8..12 => matches!(error, StateError::UnsupportedContainer { .. }),
                12..14 => matches!(
                    error,
                    StateError::Truncated { .. } | StateError::WrongKind { .. }
                ),
                _ if at < version_at => matches!(error, StateError::WrongKind { .. }),
                _ if at < LEN_AT => matches!(error, StateError::PayloadVersion { .. }),
                _ if at < PAYLOAD_AT => matches!(error, StateError::LengthMismatch { .. }),
                _ => matches!(error, StateError::Checksum { .. }),
            };
            assert!(expected, "byte {at} ^ {mask:#x}: {error}");
        }
    }
}

#[test]
fn foreign_file_is_not_an_oxvmm_snapshot() {
    // Act
    let error = decode(b"\x7fELF\x02\x01\x01\0 and more").unwrap_err();
    let short = decode(b"PK").unwrap_err();

    // Assert
    assert!(
        error.to_string().starts_with("not an oxvmm snapshot"),
        "{error}"
    );
    assert!(matches!(short, StateError::BadMagic { .. }), "{short}");
}

#[test]
fn newer_container_version_is_named() {
    // Arrange
    let mut bytes = encoded();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert_eq!(
        error.to_string(),
        "snapshot container version 7, this oxvmm reads 1"
    );
}

#[test]
fn wrong_kind_names_both_kinds() {
    // Arrange
    let bytes = encode_state("oxvmm-migration", VERSION, &sample()).unwrap();

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert_eq!(
        error.to_string(),
        "snapshot holds \"oxvmm-migration\" state, expected \"oxvmm-vm\""
    );
}

#[test]
fn other_payload_version_names_both_versions() {
    // Arrange
    let bytes = encode_state(KIND, 3, &sample()).unwrap();

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert_eq!(
        error.to_string(),
        "snapshot format version 3, this oxvmm reads 2"
    );
}

#[test]
fn huge_length_fields_are_refused_without_allocating() {
    for payload_len in [u64::MAX, 1 << 62, 1 << 40, MAX_PAYLOAD_LEN + 1, 0] {
        // Arrange
        let mut bytes = encoded();
        bytes[LEN_AT..PAYLOAD_AT].copy_from_slice(&payload_len.to_le_bytes());

        // Act
        let error = decode(&bytes).unwrap_err();

        // Assert
        assert!(
            matches!(error, StateError::LengthMismatch { payload_len: p, .. } if p == payload_len),
            "{payload_len}: {error}"
        );
    }
}

#[test]
fn huge_kind_length_is_truncation_not_an_allocation() {
    // Arrange
    let mut bytes = encoded();
    bytes[12..14].copy_from_slice(&u16::MAX.to_le_bytes());

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert!(matches!(error, StateError::Truncated { .. }), "{error}");
}

#[test]
fn checksum_mismatch_says_corrupted() {
    // Arrange
    let mut bytes = encoded();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert!(
        error
            .to_string()
            .starts_with("snapshot is corrupted: checksum"),
        "{error}"
    );
}

#[test]
fn huge_string_length_inside_a_sealed_payload_is_a_decode_error() {
    // Arrange: a `String` whose length prefix claims 2^60 bytes, with a valid checksum.
    let mut payload = (1u64 << 60).to_le_bytes().to_vec();
    payload.extend_from_slice(b"abc");
    let bytes = with_payload(&payload);

    // Act
    let result = decode_state::<String>(&bytes, KIND, VERSION);

    // Assert
    assert!(
        matches!(result, Err(SnapshotError::State(StateError::Decode { .. }))),
        "{result:?}"
    );
}

#[test]
fn huge_sequence_length_inside_a_sealed_payload_is_a_decode_error() {
    // Arrange: a `Vec<u64>` claiming 2^61 elements and holding two.
    let mut payload = (1u64 << 61).to_le_bytes().to_vec();
    payload.extend_from_slice(&[0; 16]);
    let bytes = with_payload(&payload);

    // Act
    let result = decode_state::<Vec<u64>>(&bytes, KIND, VERSION);

    // Assert
    assert!(
        matches!(result, Err(SnapshotError::State(StateError::Decode { .. }))),
        "{result:?}"
    );
}

#[test]
fn payload_of_another_type_is_a_decode_error() {
    // Arrange: a `u64` where a `VmState` is expected.
    let bytes = encode_state(KIND, VERSION, &5u64).unwrap();

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert!(matches!(error, StateError::Decode { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("snapshot payload does not decode: ")
    );
}

#[test]
fn unexplained_payload_bytes_are_refused() {
    // Arrange
    let mut payload = encoded()[PAYLOAD_AT..].to_vec();
    payload.truncate(payload.len() - CRC_LEN);
    payload.extend_from_slice(b"extra");
    let bytes = with_payload(&payload);

    // Act
    let error = decode(&bytes).unwrap_err();

    // Assert
    assert!(
        matches!(error, StateError::TrailingPayload { len, used } if len == used + 5),
        "{error}"
    );
}

#[test]
fn payloads_in_every_limit_class_decode() {
    for len in [0usize, 4 << 10, 40 << 10, 900 << 10, 2 << 20] {
        // Arrange
        let value = vec![0xa5u8; len];
        let bytes = encode_state(KIND, VERSION, &value).unwrap();

        // Act
        let back: Vec<u8> = decode_state(&bytes, KIND, VERSION).unwrap();

        // Assert
        assert_eq!(back, value, "{len}-byte payload");
    }
}

/// xorshift64: a deterministic pseudo-random sequence, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>) {
    match rng.below(5) {
        0 => {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        1 => {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        2 => {
            let len = rng.below(bytes.len());
            bytes.truncate(len.max(1));
        }
        3 => {
            let at = rng.below(bytes.len());
            bytes.insert(at, rng.next() as u8);
        }
        _ => {
            // A random 8-byte value anywhere: hits length prefixes inside the payload.
            let at = rng.below(bytes.len().saturating_sub(8));
            let end = (at + 8).min(bytes.len());
            let value = rng.next().to_le_bytes();
            bytes[at..end].copy_from_slice(&value[..end - at]);
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    // Arrange
    let original = encoded();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decoded_ok = 0;
    let mut payload_errors = 0;

    for case in 0..20_000 {
        let mut bytes = original.clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut rng, &mut bytes);
        }
        // Half the cases get a valid envelope, so the payload decoder sees the damage.
        if case % 2 == 0 && bytes.len() >= PAYLOAD_AT + CRC_LEN {
            bytes[..PAYLOAD_AT].copy_from_slice(&original[..PAYLOAD_AT]);
            reseal(&mut bytes);
        }

        // Act
        let result = decode(&bytes);

        // Assert: any outcome but a panic; count them to show both paths ran.
        match result {
            Ok(_) => decoded_ok += 1,
            Err(StateError::Decode { .. } | StateError::TrailingPayload { .. }) => {
                payload_errors += 1
            }
            Err(_) => {}
        }
    }
    assert!(
        payload_errors > 1000,
        "only {payload_errors} payload errors"
    );
    assert!(decoded_ok > 0, "no mutated payload still decoded");
}

#[test]
fn state_file_round_trip() {
    // Arrange
    let dir = TempDir::new("state-file");
    let path = dir.path().join("state");
    let bytes = encoded();

    // Act
    write_state_file(&path, &bytes).unwrap();
    let back = read_state_file(&path, 1 << 20).unwrap();

    // Assert
    assert_eq!(back, bytes);
    assert_eq!(dir.entries(), vec!["state".to_string()]);
}

#[test]
fn state_file_over_the_limit_is_refused() {
    // Arrange
    let dir = TempDir::new("state-limit");
    let path = dir.path().join("state");
    write_state_file(&path, &encoded()).unwrap();

    // Act
    let error = read_state_file(&path, 16).unwrap_err();

    // Assert
    assert!(
        matches!(
            error,
            SnapshotError::State(StateError::FileTooLarge { max: 16, .. })
        ),
        "{error}"
    );
}

#[test]
fn missing_state_file_names_the_path() {
    // Arrange
    let dir = TempDir::new("state-missing");
    let path = dir.path().join("nothing-here");

    // Act
    let error = read_state_file(&path, 1 << 20).unwrap_err();

    // Assert
    assert!(matches!(error, SnapshotError::File(_)), "{error}");
    assert!(error.to_string().contains("nothing-here"), "{error}");
}
