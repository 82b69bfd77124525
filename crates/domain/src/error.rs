//! Why a domain XML document was refused. Every variant names the XML path of the problem, in the
//! XPath-like form libvirt users know: `/domain/devices/disk[2]/driver/@io`.

/// A domain XML document that did not parse or did not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not well-formed XML (or a construct we refuse, such as a DTD).
    #[error("malformed XML at {path} (byte {position}): {reason}")]
    Malformed {
        /// The innermost element open when the problem was found.
        path: String,
        /// Byte offset in the document.
        position: u64,
        /// What the XML reader reported.
        reason: String,
    },
    /// The document is larger or deeper than any domain definition we accept.
    #[error("{path}: {reason}")]
    TooLarge {
        /// Where the limit was hit.
        path: String,
        /// Which limit.
        reason: String,
    },
    /// An element outside the supported subset.
    #[error("unsupported element {path}")]
    UnsupportedElement {
        /// The element's path.
        path: String,
    },
    /// An attribute outside the supported subset.
    #[error("unsupported attribute {path}")]
    UnsupportedAttribute {
        /// The attribute's path (`.../@name`).
        path: String,
    },
    /// Text content where the element takes none.
    #[error("unexpected text in {path}")]
    UnexpectedText {
        /// The element's path.
        path: String,
    },
    /// A required element is absent.
    #[error("missing element {path}")]
    MissingElement {
        /// The path the element should have.
        path: String,
    },
    /// A required attribute is absent.
    #[error("missing attribute {path}")]
    MissingAttribute {
        /// The path the attribute should have.
        path: String,
    },
    /// An element that may appear once appears again.
    #[error("duplicate element {path}")]
    DuplicateElement {
        /// The path of the second occurrence.
        path: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{path}: {value:?} {problem}")]
    InvalidValue {
        /// Where the value is.
        path: String,
        /// The value as written.
        value: String,
        /// What is wrong with it, phrased to follow the value.
        problem: String,
    },
    /// A rule between several values is broken (e.g. two disks with one target).
    #[error("{path}: {problem}")]
    Conflict {
        /// The element or attribute that breaks the rule.
        path: String,
        /// The rule and the values involved.
        problem: String,
    },
    /// The host gave no random bytes for a generated UUID or MAC address.
    #[error("{path}: cannot generate a value: {reason}")]
    Random {
        /// What was being generated.
        path: String,
        /// The host's error.
        reason: String,
    },
}

impl DomainError {
    /// The XML path the error is about.
    pub fn path(&self) -> &str {
        match self {
            DomainError::Malformed { path, .. }
            | DomainError::TooLarge { path, .. }
            | DomainError::UnsupportedElement { path }
            | DomainError::UnsupportedAttribute { path }
            | DomainError::UnexpectedText { path }
            | DomainError::MissingElement { path }
            | DomainError::MissingAttribute { path }
            | DomainError::DuplicateElement { path }
            | DomainError::InvalidValue { path, .. }
            | DomainError::Conflict { path, .. }
            | DomainError::Random { path, .. } => path,
        }
    }

    pub(crate) fn invalid(path: &str, value: &str, problem: impl Into<String>) -> Self {
        DomainError::InvalidValue {
            path: path.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn conflict(path: &str, problem: impl Into<String>) -> Self {
        DomainError::Conflict {
            path: path.to_string(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_value() {
        let error = DomainError::invalid("/domain/memory", "12x", "is not a number");

        let message = error.to_string();

        assert_eq!(message, "/domain/memory: \"12x\" is not a number");
        assert_eq!(error.path(), "/domain/memory");
    }
}
