//! Connection URIs as virsh writes them: `DRIVER[+unix]:///PATH[?socket=SOCKET]`.
//!
//! The driver names the hypervisor driver (`oxvirt`, `qemu`), the path the daemon instance
//! (`system`, `session`), and `socket=` overrides the daemon socket. Only local Unix-socket
//! transports exist here; a host name or another transport is refused.

use std::path::PathBuf;
use thiserror::Error;

/// The daemon socket when the URI does not name one.
pub const DEFAULT_SOCKET: &str = "/run/oxvirt/oxvirtd-sock";

/// A URI that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UriError {
    /// No `scheme://` at the start.
    #[error("URI '{0}' has no scheme (expected e.g. oxvirt:///system)")]
    NoScheme(String),
    /// An empty driver name.
    #[error("URI '{0}' names no driver")]
    NoDriver(String),
    /// A transport other than `unix`.
    #[error("URI '{uri}': transport '{transport}' is not supported (only unix)")]
    UnsupportedTransport {
        /// The URI.
        uri: String,
        /// The transport found.
        transport: String,
    },
    /// A host part: remote hosts are not supported by this client.
    #[error("URI '{uri}': remote host '{host}' is not supported (only local sockets)")]
    RemoteHost {
        /// The URI.
        uri: String,
        /// The host found.
        host: String,
    },
    /// A `%` escape that is not two hex digits, or decodes to non-UTF-8.
    #[error("URI '{0}' has an invalid percent escape")]
    BadEscape(String),
    /// `socket=` with an empty value.
    #[error("URI '{0}' has an empty socket path")]
    EmptySocket(String),
}

/// A parsed connection URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectUri {
    /// Hypervisor driver, e.g. `oxvirt` or `qemu`.
    pub driver: String,
    /// Transport after `+`, e.g. `unix`.
    pub transport: Option<String>,
    /// Path without the leading slash, e.g. `system`.
    pub path: String,
    /// The daemon socket to connect to.
    pub socket: PathBuf,
    /// Query parameters other than `socket`, decoded, in order.
    pub params: Vec<(String, String)>,
}

impl ConnectUri {
    /// Parses `uri`; a missing `socket=` gives [`DEFAULT_SOCKET`].
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| UriError::NoScheme(uri.to_owned()))?;
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d, Some(t)),
            None => (scheme, None),
        };
        if driver.is_empty() {
            return Err(UriError::NoDriver(uri.to_owned()));
        }
        if let Some(t) = transport.filter(|t| *t != "unix") {
            return Err(UriError::UnsupportedTransport {
                uri: uri.to_owned(),
                transport: t.to_owned(),
            });
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = location.split_once('/').unwrap_or((location, ""));
        if !host.is_empty() {
            return Err(UriError::RemoteHost {
                uri: uri.to_owned(),
                host: host.to_owned(),
            });
        }
        let mut socket = None;
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k).ok_or_else(|| UriError::BadEscape(uri.to_owned()))?;
            let value = percent_decode(v).ok_or_else(|| UriError::BadEscape(uri.to_owned()))?;
            if key == "socket" {
                if value.is_empty() {
                    return Err(UriError::EmptySocket(uri.to_owned()));
                }
                socket = Some(PathBuf::from(value));
            } else {
                params.push((key, value));
            }
        }
        Ok(Self {
            driver: driver.to_owned(),
            transport: transport.map(str::to_owned),
            path: path.trim_end_matches('/').to_owned(),
            socket: socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            params,
        })
    }

    /// The name sent in `CONNECT_OPEN`: the URI without transport and socket, as libvirt's
    /// remote driver sends it (`oxvirt+unix:///system?socket=/x` → `oxvirt:///system`).
    pub fn remote_name(&self) -> String {
        format!("{}:///{}", self.driver, self.path)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            // from_str_radix alone would take a sign: "%+f" is not an escape.
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_uri_uses_the_default_socket() {
        // Act
        let uri = ConnectUri::parse("oxvirt:///system").unwrap();

        // Assert
        assert_eq!(uri.driver, "oxvirt");
        assert_eq!(uri.transport, None);
        assert_eq!(uri.path, "system");
        assert_eq!(uri.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(uri.remote_name(), "oxvirt:///system");
    }

    #[test]
    fn unix_transport_with_socket() {
        // Act
        let uri = ConnectUri::parse("oxvirt+unix:///system?socket=/tmp/a%20b/sock").unwrap();

        // Assert
        assert_eq!(uri.transport.as_deref(), Some("unix"));
        assert_eq!(uri.socket, PathBuf::from("/tmp/a b/sock"));
        assert_eq!(uri.remote_name(), "oxvirt:///system");
    }

    #[test]
    fn qemu_driver_and_extra_params() {
        // Act
        let uri = ConnectUri::parse("qemu+unix:///system?socket=/run/x&mode=direct").unwrap();

        // Assert
        assert_eq!(uri.driver, "qemu");
        assert_eq!(uri.socket, PathBuf::from("/run/x"));
        assert_eq!(uri.params, vec![("mode".into(), "direct".into())]);
        assert_eq!(uri.remote_name(), "qemu:///system");
    }

    #[test]
    fn refuses_what_it_cannot_connect_to() {
        assert!(matches!(
            ConnectUri::parse("qemu+ssh://host/system"),
            Err(UriError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            ConnectUri::parse("qemu://host/system"),
            Err(UriError::RemoteHost { .. })
        ));
        assert!(matches!(
            ConnectUri::parse("system"),
            Err(UriError::NoScheme(_))
        ));
        assert!(matches!(
            ConnectUri::parse("+unix:///system"),
            Err(UriError::NoDriver(_))
        ));
        assert!(matches!(
            ConnectUri::parse("oxvirt:///system?socket=%zz"),
            Err(UriError::BadEscape(_))
        ));
        assert!(matches!(
            ConnectUri::parse("oxvirt:///system?socket=%+f"),
            Err(UriError::BadEscape(_))
        ));
        assert!(matches!(
            ConnectUri::parse("oxvirt:///system?socket="),
            Err(UriError::EmptySocket(_))
        ));
    }
}
