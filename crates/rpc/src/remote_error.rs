//! `remote_error`: the body of every error reply, shaped exactly as libvirt's, so that virsh
//! prints `error: <message>` and python's `libvirtError` carries the code and domain.
//!
//! Numbers are those of libvirt's `virterror.h` (`virErrorNumber`, `virErrorDomain`,
//! `virErrorLevel`); the message prefixes are libvirt's own (`virErrorMsg`), so our errors read
//! like libvirt's to users and scripts.

use crate::procedures::NonnullDomain;
use crate::xdr::{Decoder, Encoder, XdrDecode, XdrEncode, XdrError};
use std::fmt;

/// libvirt's `virErrorNumber` values that the daemon and this crate use.
pub mod code {
    /// `VIR_ERR_INTERNAL_ERROR`
    pub const INTERNAL_ERROR: i32 = 1;
    /// `VIR_ERR_NO_MEMORY`
    pub const NO_MEMORY: i32 = 2;
    /// `VIR_ERR_NO_SUPPORT`
    pub const NO_SUPPORT: i32 = 3;
    /// `VIR_ERR_NO_CONNECT`
    pub const NO_CONNECT: i32 = 5;
    /// `VIR_ERR_INVALID_CONN`
    pub const INVALID_CONN: i32 = 6;
    /// `VIR_ERR_INVALID_DOMAIN`
    pub const INVALID_DOMAIN: i32 = 7;
    /// `VIR_ERR_INVALID_ARG`
    pub const INVALID_ARG: i32 = 8;
    /// `VIR_ERR_OPERATION_FAILED`
    pub const OPERATION_FAILED: i32 = 9;
    /// `VIR_ERR_XML_ERROR`
    pub const XML_ERROR: i32 = 27;
    /// `VIR_ERR_DOM_EXIST`
    pub const DOM_EXIST: i32 = 28;
    /// `VIR_ERR_OPERATION_DENIED` (also used for read-only connections)
    pub const OPERATION_DENIED: i32 = 29;
    /// `VIR_ERR_OPEN_FAILED`
    pub const OPEN_FAILED: i32 = 30;
    /// `VIR_ERR_SYSTEM_ERROR`
    pub const SYSTEM_ERROR: i32 = 38;
    /// `VIR_ERR_RPC`
    pub const RPC: i32 = 39;
    /// `VIR_ERR_NO_DOMAIN`
    pub const NO_DOMAIN: i32 = 42;
    /// `VIR_ERR_NO_NETWORK`
    pub const NO_NETWORK: i32 = 43;
    /// `VIR_ERR_AUTH_FAILED`
    pub const AUTH_FAILED: i32 = 45;
    /// `VIR_ERR_NO_STORAGE_POOL`
    pub const NO_STORAGE_POOL: i32 = 49;
    /// `VIR_ERR_NO_STORAGE_VOL`
    pub const NO_STORAGE_VOL: i32 = 50;
    /// `VIR_ERR_OPERATION_INVALID`
    pub const OPERATION_INVALID: i32 = 55;
    /// `VIR_ERR_CONFIG_UNSUPPORTED`
    pub const CONFIG_UNSUPPORTED: i32 = 67;
    /// `VIR_ERR_OPERATION_TIMEOUT`
    pub const OPERATION_TIMEOUT: i32 = 68;
    /// `VIR_ERR_NO_DOMAIN_SNAPSHOT`
    pub const NO_DOMAIN_SNAPSHOT: i32 = 72;
    /// `VIR_ERR_ARGUMENT_UNSUPPORTED`
    pub const ARGUMENT_UNSUPPORTED: i32 = 74;
    /// `VIR_ERR_OPERATION_ABORTED`
    pub const OPERATION_ABORTED: i32 = 78;
    /// `VIR_ERR_OPERATION_UNSUPPORTED`
    pub const OPERATION_UNSUPPORTED: i32 = 84;
    /// `VIR_ERR_ACCESS_DENIED`
    pub const ACCESS_DENIED: i32 = 88;
}

/// libvirt's `virErrorDomain` values (which part of libvirt raised the error).
pub mod domain {
    /// `VIR_FROM_NONE`
    pub const NONE: i32 = 0;
    /// `VIR_FROM_DOM`
    pub const DOM: i32 = 6;
    /// `VIR_FROM_RPC`
    pub const RPC: i32 = 7;
    /// `VIR_FROM_QEMU`
    pub const QEMU: i32 = 10;
    /// `VIR_FROM_TEST`
    pub const TEST: i32 = 12;
    /// `VIR_FROM_REMOTE`
    pub const REMOTE: i32 = 13;
    /// `VIR_FROM_NETWORK`
    pub const NETWORK: i32 = 19;
    /// `VIR_FROM_DOMAIN`
    pub const DOMAIN: i32 = 20;
    /// `VIR_FROM_STORAGE`
    pub const STORAGE: i32 = 18;
    /// `VIR_FROM_STREAMS`
    pub const STREAMS: i32 = 38;
    /// `VIR_FROM_EVENT`
    pub const EVENT: i32 = 40;
}

/// libvirt's `VIR_ERR_ERROR` level.
pub const LEVEL_ERROR: i32 = 2;

/// The `remote_error` structure of an error reply.
///
/// The fields clients rarely read (`dom`, `str1..3`, `int1/2`, `net`) live in a boxed
/// [`ErrorExtra`], absent when they hold libvirt's defaults, which keeps `Result`s small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// `virErrorNumber`.
    pub code: i32,
    /// `virErrorDomain`.
    pub domain: i32,
    /// The full message virsh prints after `error: `.
    pub message: Option<String>,
    /// `virErrorLevel`.
    pub level: i32,
    /// The other fields, when any is not at its default.
    pub extra: Option<Box<ErrorExtra>>,
}

/// The rarely used fields of `remote_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorExtra {
    /// Unused by clients; kept for wire compatibility.
    pub dom: Option<NonnullDomain>,
    /// Extra information (libvirt puts the message format here).
    pub str1: Option<String>,
    /// Extra information.
    pub str2: Option<String>,
    /// Extra information.
    pub str3: Option<String>,
    /// Extra information.
    pub int1: i32,
    /// Extra information.
    pub int2: i32,
    /// Unused `remote_network`; kept for wire compatibility.
    pub net: Option<NonnullNetwork>,
}

impl Default for ErrorExtra {
    /// What libvirt sends when it has nothing extra: no strings, integers at -1.
    fn default() -> Self {
        Self {
            dom: None,
            str1: None,
            str2: None,
            str3: None,
            int1: -1,
            int2: -1,
            net: None,
        }
    }
}

/// `remote_nonnull_network`: only here because `remote_error` carries one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NonnullNetwork {
    /// Network name.
    pub name: String,
    /// Network UUID.
    pub uuid: crate::xdr::Uuid,
}

impl XdrEncode for NonnullNetwork {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        self.name.encode(enc)?;
        self.uuid.encode(enc)
    }
}

impl XdrDecode for NonnullNetwork {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            name: String::decode(dec)?,
            uuid: XdrDecode::decode(dec)?,
        })
    }
}

impl RemoteError {
    /// An error with `code` and `domain` whose text is exactly `message`.
    pub fn new(code: i32, domain: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            domain,
            message: Some(message.into()),
            level: LEVEL_ERROR,
            extra: None,
        }
    }

    /// `VIR_ERR_NO_DOMAIN`: "Domain not found: {detail}".
    pub fn no_domain(detail: impl fmt::Display) -> Self {
        Self::new(
            code::NO_DOMAIN,
            domain::DOMAIN,
            format!("Domain not found: {detail}"),
        )
    }

    /// `VIR_ERR_OPERATION_INVALID`: "Requested operation is not valid: {detail}".
    pub fn operation_invalid(detail: impl fmt::Display) -> Self {
        Self::new(
            code::OPERATION_INVALID,
            domain::DOMAIN,
            format!("Requested operation is not valid: {detail}"),
        )
    }

    /// `VIR_ERR_INVALID_ARG`: "invalid argument: {detail}".
    pub fn invalid_arg(detail: impl fmt::Display) -> Self {
        Self::new(
            code::INVALID_ARG,
            domain::DOMAIN,
            format!("invalid argument: {detail}"),
        )
    }

    /// `VIR_ERR_NO_SUPPORT`: "this function is not supported by the connection driver: {what}".
    pub fn no_support(what: impl fmt::Display) -> Self {
        Self::new(
            code::NO_SUPPORT,
            domain::DOMAIN,
            format!("this function is not supported by the connection driver: {what}"),
        )
    }

    /// `VIR_ERR_OPERATION_DENIED`: "operation forbidden: {detail}".
    pub fn operation_denied(detail: impl fmt::Display) -> Self {
        Self::new(
            code::OPERATION_DENIED,
            domain::DOMAIN,
            format!("operation forbidden: {detail}"),
        )
    }

    /// The error libvirt returns for a write on a read-only connection.
    pub fn read_only() -> Self {
        Self::new(
            code::OPERATION_DENIED,
            domain::DOMAIN,
            "operation forbidden: read only access prevents this operation",
        )
    }

    /// `VIR_ERR_XML_ERROR`: "XML error: {detail}".
    pub fn xml_error(detail: impl fmt::Display) -> Self {
        Self::new(
            code::XML_ERROR,
            domain::DOMAIN,
            format!("XML error: {detail}"),
        )
    }

    /// `VIR_ERR_OPERATION_FAILED`: "operation failed: {detail}".
    pub fn operation_failed(detail: impl fmt::Display) -> Self {
        Self::new(
            code::OPERATION_FAILED,
            domain::DOMAIN,
            format!("operation failed: {detail}"),
        )
    }

    /// `VIR_ERR_INTERNAL_ERROR`: "internal error: {detail}".
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(
            code::INTERNAL_ERROR,
            domain::DOMAIN,
            format!("internal error: {detail}"),
        )
    }

    /// `VIR_ERR_RPC` from `VIR_FROM_RPC`: protocol-level failures (bad arguments, unknown
    /// program).
    pub fn rpc(detail: impl fmt::Display) -> Self {
        Self::new(code::RPC, domain::RPC, detail.to_string())
    }

    /// The message, or libvirt's text for an error without one.
    pub fn message_text(&self) -> &str {
        self.message
            .as_deref()
            .unwrap_or("An error occurred, but the cause is unknown")
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message_text())
    }
}

impl std::error::Error for RemoteError {}

impl XdrEncode for RemoteError {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        enc.set_field("remote_error");
        let default_extra = ErrorExtra::default();
        let extra = self.extra.as_deref().unwrap_or(&default_extra);
        self.code.encode(enc)?;
        self.domain.encode(enc)?;
        self.message.encode(enc)?;
        self.level.encode(enc)?;
        extra.dom.encode(enc)?;
        extra.str1.encode(enc)?;
        extra.str2.encode(enc)?;
        extra.str3.encode(enc)?;
        extra.int1.encode(enc)?;
        extra.int2.encode(enc)?;
        extra.net.encode(enc)
    }
}

impl XdrDecode for RemoteError {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        dec.set_field("remote_error");
        let code = XdrDecode::decode(dec)?;
        let domain = XdrDecode::decode(dec)?;
        let message = XdrDecode::decode(dec)?;
        let level = XdrDecode::decode(dec)?;
        let extra = ErrorExtra {
            dom: XdrDecode::decode(dec)?,
            str1: XdrDecode::decode(dec)?,
            str2: XdrDecode::decode(dec)?,
            str3: XdrDecode::decode(dec)?,
            int1: XdrDecode::decode(dec)?,
            int2: XdrDecode::decode(dec)?,
            net: XdrDecode::decode(dec)?,
        };
        Ok(Self {
            code,
            domain,
            message,
            level,
            extra: (extra != ErrorExtra::default()).then(|| Box::new(extra)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::{from_bytes, to_bytes, unhex};

    /// The error libvirtd 9.0's test driver sent for `virsh domblkstat test vda` (captured).
    const CAPTURED: &str = "00000003000000140000000100000051746869732066756e6374696f6e206973206e6f7420737570706f727465642062792074686520636f6e6e656374696f6e206472697665723a20766972446f6d61696e426c6f636b5374617473466c6167730000000000000200000000000000010000003b746869732066756e6374696f6e206973206e6f7420737570706f727465642062792074686520636f6e6e656374696f6e206472697665723a202573000000000100000018766972446f6d61696e426c6f636b5374617473466c61677300000000ffffffffffffffff00000000";

    #[test]
    fn decodes_an_error_captured_from_libvirtd() {
        // Arrange
        let bytes = unhex(CAPTURED);

        // Act
        let err: RemoteError = from_bytes(&bytes).unwrap();

        // Assert
        assert_eq!(err.code, code::NO_SUPPORT);
        assert_eq!(err.domain, domain::DOMAIN);
        assert_eq!(
            err.to_string(),
            "this function is not supported by the connection driver: virDomainBlockStatsFlags"
        );
        let extra = err.extra.as_deref().unwrap();
        assert_eq!(extra.str2.as_deref(), Some("virDomainBlockStatsFlags"));
        assert_eq!((extra.int1, extra.int2), (-1, -1));
        assert_eq!(to_bytes(&err).unwrap(), bytes);
    }

    #[test]
    fn plain_errors_encode_libvirts_defaults_and_round_trip() {
        // Arrange
        let err = RemoteError::operation_invalid("domain is not running");

        // Act
        let bytes = to_bytes(&err).unwrap();
        let back: RemoteError = from_bytes(&bytes).unwrap();

        // Assert: dom, str1..3 absent, int1/int2 -1, net absent.
        let tail = &bytes[bytes.len() - 28..];
        assert_eq!(
            tail,
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255,
                255, 0, 0, 0, 0
            ]
        );
        assert_eq!(back, err);
        assert!(back.extra.is_none());
    }

    #[test]
    fn helpers_use_libvirts_codes_and_prefixes() {
        // Act
        let err = RemoteError::no_domain("no domain with matching name 'vm9'");

        // Assert
        assert_eq!(err.code, 42);
        assert_eq!(
            err.message_text(),
            "Domain not found: no domain with matching name 'vm9'"
        );
        assert_eq!(RemoteError::operation_invalid("x").code, 55);
        assert_eq!(RemoteError::invalid_arg("x").code, 8);
        assert_eq!(RemoteError::no_support("x").code, 3);
        assert_eq!(RemoteError::operation_denied("x").code, 29);
        assert_eq!(RemoteError::xml_error("x").code, 27);
        assert_eq!(RemoteError::operation_failed("x").code, 9);
        assert_eq!(RemoteError::internal("x").code, 1);
    }
}
