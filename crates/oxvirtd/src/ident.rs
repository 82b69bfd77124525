//! Domain identity: name validation (names become file names) and the UUID type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest domain name accepted, in bytes.
///
/// Names become file names in the state directory and parts of Unix socket paths
/// (`<runtime>/domains/<name>.console.sock`), which the kernel limits to 107 bytes; 64 leaves
/// room for the default runtime directory.
pub const NAME_MAX_LEN: usize = 64;

/// A domain name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty string.
    #[error("a domain name cannot be empty")]
    Empty,
    /// Longer than [`NAME_MAX_LEN`].
    #[error("domain name {name:?} is {len} bytes long; at most {NAME_MAX_LEN} are allowed")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Contains `/`, which would escape the state directory.
    #[error("domain name {name:?} contains '/'")]
    Slash {
        /// The name.
        name: String,
    },
    /// Starts with `.` (hidden files, `.`/`..`, and the store's temporary files).
    #[error("domain name {name:?} starts with '.'")]
    LeadingDot {
        /// The name.
        name: String,
    },
    /// Contains a NUL or another control character.
    #[error("domain name {name:?} contains a control character")]
    Control {
        /// The name.
        name: String,
    },
}

/// Checks that `name` can be a domain name (and so a file name of the state directory).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let owned = || name.to_string();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX_LEN {
        return Err(NameError::TooLong {
            name: owned(),
            len: name.len(),
        });
    }
    if name.contains('/') {
        return Err(NameError::Slash { name: owned() });
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot { name: owned() });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control { name: owned() });
    }
    Ok(())
}

/// A domain UUID: 16 bytes, written `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

/// Text that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a UUID (expected 32 hexadecimal digits, optionally with '-')")]
pub struct UuidError {
    /// The text given.
    pub text: String,
}

impl Uuid {
    /// The raw bytes (libvirt's wire format).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl From<[u8; 16]> for Uuid {
    fn from(bytes: [u8; 16]) -> Self {
        Uuid(bytes)
    }
}

impl FromStr for Uuid {
    type Err = UuidError;

    /// Accepts what libvirt's `virUUIDParse` accepts (`domain::Uuid::from_text`).
    fn from_str(text: &str) -> Result<Self, UuidError> {
        domain::Uuid::from_text(text)
            .map(|uuid| Uuid(uuid.0))
            .ok_or_else(|| UuidError {
                text: text.to_string(),
            })
    }
}

impl fmt::Display for Uuid {
    /// libvirt's lower-case 8-4-4-4-12, written by the domain crate's UUID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&domain::Uuid(self.0), f)
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in ["vm1", "my guest", "a.b-c_d", "é", &"x".repeat(NAME_MAX_LEN)] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_that_would_escape_or_hide_are_refused() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name(&"x".repeat(NAME_MAX_LEN + 1)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            validate_name("../etc"),
            Err(NameError::Slash { .. })
        ));
        assert!(matches!(validate_name("a/b"), Err(NameError::Slash { .. })));
        for name in [".", "..", ".hidden"] {
            assert!(
                matches!(validate_name(name), Err(NameError::LeadingDot { .. })),
                "{name}"
            );
        }
        assert!(matches!(
            validate_name("a\0b"),
            Err(NameError::Control { .. })
        ));
        assert!(matches!(
            validate_name("a\nb"),
            Err(NameError::Control { .. })
        ));
    }

    #[test]
    fn name_errors_quote_the_name() {
        let err = validate_name("a/b").unwrap_err();

        assert_eq!(err.to_string(), "domain name \"a/b\" contains '/'");
    }

    #[test]
    fn uuids_round_trip_through_text() {
        let text = "c7a5fdbd-cdaf-9455-926a-d65c16db1809";

        let uuid: Uuid = text.parse().unwrap();

        assert_eq!(uuid.0[0], 0xc7);
        assert_eq!(uuid.0[15], 0x09);
        assert_eq!(uuid.to_string(), text);
        assert_eq!("C7A5FDBDCDAF9455926AD65C16DB1809".parse::<Uuid>(), Ok(uuid));
    }

    #[test]
    fn malformed_uuids_are_refused() {
        for text in [
            "",
            "c7a5fdbd",
            "c7a5fdbd-cdaf-9455-926a-d65c16db180",
            "c7a5fdbd-cdaf-9455-926a-d65c16db18090",
            "g7a5fdbd-cdaf-9455-926a-d65c16db1809",
            "c-7a5fdbdcdaf9455926ad65c16db1809",
        ] {
            let err = text.parse::<Uuid>().unwrap_err();
            assert_eq!(err.text, text);
        }
    }

    #[test]
    fn uuids_serialize_as_strings() {
        let uuid = Uuid([0xab; 16]);

        let json = serde_json::to_string(&uuid).unwrap();

        assert_eq!(json, "\"abababab-abab-abab-abab-abababababab\"");
        assert_eq!(serde_json::from_str::<Uuid>(&json).unwrap(), uuid);
        assert!(serde_json::from_str::<Uuid>("\"nope\"").is_err());
    }
}
