//! The state file: a versioned, checksummed envelope around one serde value.
//!
//! Layout (integers little-endian, `K` = kind length, `P` = payload length):
//!
//! | offset     | size | field                                                             |
//! |------------|------|-------------------------------------------------------------------|
//! | 0          | 8    | magic `OXSNAPv\0`                                                 |
//! | 8          | 4    | container format version ([`CONTAINER_VERSION`])                  |
//! | 12         | 2    | `K`, 1..=[`MAX_KIND_LEN`]                                         |
//! | 14         | K    | kind, UTF-8: what the payload is (`"oxvmm-vm"`)                   |
//! | 14+K       | 4    | payload version: the payload type's own version, set by its owner |
//! | 18+K       | 8    | `P`, at most [`MAX_PAYLOAD_LEN`]                                  |
//! | 26+K       | P    | payload: bincode 2, fixed-width little-endian integers, via serde |
//! | 26+K+P     | 4    | CRC-32 (IEEE, `crc32fast`) of bytes `0..26+K+P`                   |
//!
//! The container version changes only when this envelope changes; the payload version is the
//! VMM's to bump whenever its serde types change. [`decode_state`] checks, in order: magic
//! (on whatever prefix there is, so a stray short file reads "not an oxvmm snapshot"), header
//! truncation, container version, kind, payload version, payload length against the file
//! size, checksum, then decodes the payload. Each failure is a distinct [`StateError`] that
//! names what was found and what was expected.
//!
//! Nothing is allocated from an unchecked length: the payload length is compared with the bytes
//! actually present before slicing, and bincode decodes under a byte limit of at most 16 times
//! the payload length (bincode's limits are compile-time constants, so the limit is the
//! smallest of a few size classes that holds the payload), so a corrupt string length inside
//! the payload cannot make the decoder reserve more than that.

use std::io::Read;
use std::path::Path;

use bincode::config::{Config, Configuration, Fixint, LittleEndian};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::SnapshotError;
use crate::file::{AtomicFile, FileError, open_read_only};

/// First 8 bytes of every state file.
pub const STATE_MAGIC: [u8; 8] = *b"OXSNAPv\0";
/// Version of the envelope described in this module's documentation.
pub const CONTAINER_VERSION: u32 = 1;
/// Longest kind string accepted.
pub const MAX_KIND_LEN: usize = 64;
/// Largest payload accepted (256 MiB): VM state without guest memory is far smaller.
pub const MAX_PAYLOAD_LEN: u64 = 256 << 20;

const MAGIC_LEN: usize = STATE_MAGIC.len();
/// Magic, container version, kind length.
const FIXED_HEADER_LEN: usize = MAGIC_LEN + 4 + 2;
/// Payload version and payload length, after the kind.
const VERSION_AND_LEN: usize = 4 + 8;
const CRC_LEN: usize = 4;

/// Errors of encoding or decoding a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The kind given to [`encode_state`] is empty or longer than [`MAX_KIND_LEN`].
    #[error("snapshot kind {kind:?} is {len} bytes; it must be 1 to {MAX_KIND_LEN}")]
    InvalidKind { kind: String, len: usize },
    /// The payload is larger than [`MAX_PAYLOAD_LEN`].
    #[error("snapshot payload is {len} bytes, more than the {MAX_PAYLOAD_LEN} this oxvmm accepts")]
    PayloadTooLarge { len: u64 },
    /// bincode could not encode the value.
    #[error("cannot encode snapshot state: {message}")]
    Encode { message: String },
    /// The data ends inside the header.
    #[error(
        "snapshot is truncated: {len} bytes, but its header needs {needed} ({} missing)",
        .needed - .len
    )]
    Truncated { len: usize, needed: usize },
    /// The data does not start with [`STATE_MAGIC`].
    #[error(
        "not an oxvmm snapshot: it starts with {found:02x?}, expected {STATE_MAGIC:02x?} \
         (\"OXSNAPv\\0\")"
    )]
    BadMagic { found: Vec<u8> },
    /// The envelope is of a version this code does not read.
    #[error("snapshot container version {found}, this oxvmm reads {CONTAINER_VERSION}")]
    UnsupportedContainer { found: u32 },
    /// The file holds another kind of state.
    #[error("snapshot holds {found:?} state, expected {expected:?}")]
    WrongKind { found: String, expected: String },
    /// The payload was written by another version of its type.
    #[error("snapshot format version {found}, this oxvmm reads {supported}")]
    PayloadVersion { found: u32, supported: u32 },
    /// The payload length field disagrees with the size of the data.
    #[error(
        "snapshot length field says the payload is {payload_len} bytes, so the file should be \
         {expected_len} bytes, but it is {len} ({})",
        describe_size_gap(*.len, *.expected_len)
    )]
    LengthMismatch {
        payload_len: u64,
        expected_len: u128,
        len: usize,
    },
    /// The checksum does not match the contents.
    #[error("snapshot is corrupted: checksum {stored:#010x} stored, {computed:#010x} computed")]
    Checksum { stored: u32, computed: u32 },
    /// The checksum matched but the payload is not a valid value of the requested type.
    #[error("snapshot payload does not decode: {message}")]
    Decode { message: String },
    /// The payload decoded without using all of its bytes.
    #[error("snapshot payload decoded from {used} of its {len} bytes; the rest is unexplained")]
    TrailingPayload { used: usize, len: usize },
    /// A state file is larger than the caller's limit.
    #[error("{path} is {len} bytes, more than the {max} allowed for a state file")]
    FileTooLarge {
        path: std::path::PathBuf,
        len: u64,
        max: u64,
    },
}

fn describe_size_gap(len: usize, expected: u128) -> String {
    let len = len as u128;
    if len < expected {
        format!("{} bytes missing: truncated?", expected - len)
    } else {
        format!("{} bytes too many", len - expected)
    }
}

/// The bincode configuration of every payload: fixed-width little-endian integers, so the
/// encoding does not depend on the host and every field has a predictable size.
fn bincode_config() -> Configuration<LittleEndian, Fixint> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Serializes `value` into a state file image of the given `kind` and payload `version`.
pub fn encode_state<T: Serialize>(
    kind: &str,
    version: u32,
    value: &T,
) -> Result<Vec<u8>, SnapshotError> {
    let kind_len = u16::try_from(kind.len())
        .ok()
        .filter(|&len| len != 0 && usize::from(len) <= MAX_KIND_LEN)
        .ok_or_else(|| StateError::InvalidKind {
            kind: kind.chars().take(MAX_KIND_LEN).collect(),
            len: kind.len(),
        })?;
    let payload =
        bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| StateError::Encode {
            message: e.to_string(),
        })?;
    let payload_len = payload.len() as u64;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(StateError::PayloadTooLarge { len: payload_len }.into());
    }

    let total = FIXED_HEADER_LEN + kind.len() + VERSION_AND_LEN + payload.len() + CRC_LEN;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&CONTAINER_VERSION.to_le_bytes());
    out.extend_from_slice(&kind_len.to_le_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks a state file image and decodes its payload, which must be of `kind` and
/// `supported_version`.
pub fn decode_state<T: DeserializeOwned>(
    bytes: &[u8],
    kind: &str,
    supported_version: u32,
) -> Result<T, SnapshotError> {
    let payload = checked_payload(bytes, kind, supported_version)?;
    Ok(decode_payload(payload)?)
}

/// Runs every envelope check and returns the payload bytes.
fn checked_payload<'a>(
    bytes: &'a [u8],
    kind: &str,
    supported_version: u32,
) -> Result<&'a [u8], StateError> {
    let prefix = &bytes[..bytes.len().min(MAGIC_LEN)];
    if prefix != &STATE_MAGIC[..prefix.len()] {
        return Err(StateError::BadMagic {
            found: prefix.to_vec(),
        });
    }
    let mut reader = HeaderReader { bytes, pos: 0 };
    reader.take(MAGIC_LEN, FIXED_HEADER_LEN)?;
    let container = reader.u32(FIXED_HEADER_LEN)?;
    if container != CONTAINER_VERSION {
        return Err(StateError::UnsupportedContainer { found: container });
    }
    let kind_len = usize::from(reader.u16(FIXED_HEADER_LEN)?);
    let header_len = FIXED_HEADER_LEN + kind_len + VERSION_AND_LEN;
    let found_kind = reader.take(kind_len, header_len + CRC_LEN)?;
    if found_kind != kind.as_bytes() {
        return Err(StateError::WrongKind {
            found: printable_kind(found_kind),
            expected: kind.to_string(),
        });
    }
    let found_version = reader.u32(header_len + CRC_LEN)?;
    if found_version != supported_version {
        return Err(StateError::PayloadVersion {
            found: found_version,
            supported: supported_version,
        });
    }
    let payload_len = reader.u64(header_len + CRC_LEN)?;
    let expected_len = header_len as u128 + payload_len as u128 + CRC_LEN as u128;
    if expected_len != bytes.len() as u128 {
        return Err(StateError::LengthMismatch {
            payload_len,
            expected_len,
            len: bytes.len(),
        });
    }
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(StateError::PayloadTooLarge { len: payload_len });
    }
    // The length now matches the data, so these slices are in range.
    let crc_at = bytes.len() - CRC_LEN;
    let stored = u32::from_le_bytes(reader.array(crc_at)?);
    let computed = crc32fast::hash(&bytes[..crc_at]);
    if stored != computed {
        return Err(StateError::Checksum { stored, computed });
    }
    Ok(&bytes[header_len..crc_at])
}

/// Shows a kind found in a file, which may be any bytes, in a bounded, readable form.
fn printable_kind(found: &[u8]) -> String {
    let shown = &found[..found.len().min(MAX_KIND_LEN)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if found.len() > shown.len() {
        text.push_str(&format!("… ({} bytes)", found.len()));
    }
    text
}

/// Sequential reads from the header; running out of bytes is a [`StateError::Truncated`]
/// against `needed`, the header size known so far.
struct HeaderReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> HeaderReader<'a> {
    fn take(&mut self, n: usize, needed: usize) -> Result<&'a [u8], StateError> {
        let end = self.pos.saturating_add(n);
        let slice = self.bytes.get(self.pos..end).ok_or(StateError::Truncated {
            len: self.bytes.len(),
            needed: needed.max(end),
        })?;
        self.pos = end;
        Ok(slice)
    }

    fn fixed<const N: usize>(&mut self, needed: usize) -> Result<[u8; N], StateError> {
        let slice = self.take(N, needed)?;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u16(&mut self, needed: usize) -> Result<u16, StateError> {
        self.fixed(needed).map(u16::from_le_bytes)
    }

    fn u32(&mut self, needed: usize) -> Result<u32, StateError> {
        self.fixed(needed).map(u32::from_le_bytes)
    }

    fn u64(&mut self, needed: usize) -> Result<u64, StateError> {
        self.fixed(needed).map(u64::from_le_bytes)
    }

    /// Reads `N` bytes at an absolute offset, leaving the position alone.
    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], StateError> {
        let mut reader = HeaderReader {
            bytes: self.bytes,
            pos: at,
        };
        reader.fixed(at + N)
    }
}

/// Decodes a payload with a byte limit no larger than 16 times its length (at least 4 KiB).
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, StateError> {
    let config = bincode_config();
    let len = payload.len();
    let decoded = if len <= 4 << 10 {
        decode_limited(payload, config.with_limit::<{ 4 << 10 }>())
    } else if len <= 64 << 10 {
        decode_limited(payload, config.with_limit::<{ 64 << 10 }>())
    } else if len <= 1 << 20 {
        decode_limited(payload, config.with_limit::<{ 1 << 20 }>())
    } else if len <= 16 << 20 {
        decode_limited(payload, config.with_limit::<{ 16 << 20 }>())
    } else {
        // MAX_PAYLOAD_LEN; checked_payload has refused anything longer.
        decode_limited(payload, config.with_limit::<{ 256 << 20 }>())
    };
    let (value, used) = decoded?;
    if used != len {
        return Err(StateError::TrailingPayload { used, len });
    }
    Ok(value)
}

fn decode_limited<T: DeserializeOwned, C: Config>(
    payload: &[u8],
    config: C,
) -> Result<(T, usize), StateError> {
    bincode::serde::decode_from_slice(payload, config).map_err(|e| StateError::Decode {
        message: e.to_string(),
    })
}

/// Writes a state file image to `path` atomically: a temporary file in the same directory,
/// flushed, renamed over `path`, and the directory flushed.
pub fn write_state_file(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let file = AtomicFile::create(path)?;
    std::io::Write::write_all(&mut file.file(), bytes)
        .map_err(|e| FileError::new("write", file.tmp_path(), e))?;
    file.commit()?;
    Ok(())
}

/// Reads a state file, refusing one longer than `max_len` bytes before reading it.
pub fn read_state_file(path: &Path, max_len: u64) -> Result<Vec<u8>, SnapshotError> {
    let file = open_read_only(path)?;
    let len = file
        .metadata()
        .map_err(|e| FileError::new("stat", path, e))?
        .len();
    let too_large = |len| StateError::FileTooLarge {
        path: path.to_path_buf(),
        len,
        max: max_len,
    };
    if len > max_len {
        return Err(too_large(len).into());
    }
    // The file may grow between stat and read: never read more than max_len + 1 bytes.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::new("read", path, e))?;
    if bytes.len() as u64 > max_len {
        return Err(too_large(bytes.len() as u64).into());
    }
    Ok(bytes)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
