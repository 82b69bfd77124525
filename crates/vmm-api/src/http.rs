//! Minimal HTTP/1.1 framing for the control API: requests and responses with a `Content-Length`
//! body, persistent connections, nothing else (no chunked encoding, no `Expect`, no upgrades).
//!
//! The reader is the part a hostile local client talks to, so every size is checked against
//! [`HttpLimits`] before anything is allocated for it, and every malformed input is an
//! [`HttpError`] that maps to the status to answer with; nothing here panics on input.

use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};

use crate::routes::target_path;

/// Size limits for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest request or status line, line end included.
    pub max_start_line: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Total bytes of all header lines, line ends and the terminating blank line included.
    pub max_header_bytes: usize,
    /// Largest body.
    pub max_body: usize,
}

impl HttpLimits {
    /// Limits for the server reading requests: request bodies are small JSON objects.
    pub const SERVER: HttpLimits = HttpLimits {
        max_start_line: 8 * 1024,
        max_headers: 64,
        max_header_bytes: 16 * 1024,
        max_body: 64 * 1024,
    };

    /// Limits for the client reading responses: answers carry whole configurations.
    pub const CLIENT: HttpLimits = HttpLimits {
        max_body: 16 * 1024 * 1024,
        ..HttpLimits::SERVER
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::SERVER
    }
}

/// Blank lines tolerated before a request line (RFC 9112 section 2.2 asks for at least one).
const MAX_LEADING_BLANK_LINES: usize = 8;
/// Longest method token accepted.
const MAX_METHOD_LEN: usize = 32;
/// How much of a bad input an error message quotes.
const SNIPPET_LEN: usize = 64;

/// A message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection failed (or timed out); no answer can be sent.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of the {0}")]
    Truncated(&'static str),
    /// The request or status line exceeds [`HttpLimits::max_start_line`].
    #[error("request line longer than {limit} bytes")]
    StartLineTooLong {
        /// The limit.
        limit: usize,
    },
    /// The request line is not `METHOD TARGET HTTP/1.x`.
    #[error("malformed request line {line}: {problem}")]
    MalformedRequestLine {
        /// The line, quoted and shortened.
        line: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The status line is not `HTTP/1.x NNN reason`.
    #[error("malformed status line {line}")]
    MalformedStatusLine {
        /// The line, quoted and shortened.
        line: String,
    },
    /// An HTTP version other than 1.0 and 1.1.
    #[error("HTTP version {version} is not supported; use HTTP/1.1")]
    UnsupportedVersion {
        /// The version given, quoted and shortened.
        version: String,
    },
    /// A header line is not `Name: value`.
    #[error("malformed header line {line}: {problem}")]
    MalformedHeader {
        /// The line, quoted and shortened.
        line: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// More header fields than [`HttpLimits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// Header lines longer in total than [`HttpLimits::max_header_bytes`].
    #[error("header section larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A `Content-Length` that is not a decimal number.
    #[error("invalid Content-Length {value}")]
    BadContentLength {
        /// The value, quoted and shortened.
        value: String,
    },
    /// Several `Content-Length` fields that disagree.
    #[error("conflicting Content-Length values {first} and {second}")]
    ConflictingContentLength {
        /// The first value.
        first: u64,
        /// A different later value.
        second: u64,
    },
    /// A body larger than [`HttpLimits::max_body`].
    #[error("body of {length} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The length announced (or read so far).
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// A `Transfer-Encoding` (chunked or other): only `Content-Length` bodies are supported.
    #[error("Transfer-Encoding {value} is not supported; send the body with a Content-Length")]
    TransferEncodingUnsupported {
        /// The value, quoted and shortened.
        value: String,
    },
}

impl HttpError {
    /// The status a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Io(_)
            | HttpError::Truncated(_)
            | HttpError::MalformedRequestLine { .. }
            | HttpError::MalformedHeader { .. }
            | HttpError::BadContentLength { .. }
            | HttpError::ConflictingContentLength { .. } => 400,
            HttpError::MalformedStatusLine { .. } => 502,
            HttpError::StartLineTooLong { .. } => 414,
            HttpError::UnsupportedVersion { .. } => 505,
            HttpError::TooManyHeaders { .. } | HttpError::HeadersTooLarge { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::TransferEncodingUnsupported { .. } => 501,
        }
    }

    /// True for a read or write that timed out (a socket timeout expired).
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0: the connection closes after one exchange unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: the connection persists unless `Connection: close`.
    Http11,
}

/// One request as read from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    /// The protocol version.
    pub version: HttpVersion,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The target's path, without query string.
    pub fn path(&self) -> &str {
        target_path(&self.target)
    }

    /// Whether the client wants the connection kept open after the answer.
    pub fn keep_alive(&self) -> bool {
        let wants = |option: &str| connection_has(&self.headers, option);
        match self.version {
            HttpVersion::Http11 => !wants("close"),
            HttpVersion::Http10 => wants("keep-alive") && !wants("close"),
        }
    }
}

/// One response as read from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether any `Connection` field lists `option` (the field is a comma-separated token list).
fn connection_has(headers: &[(String, String)], option: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(option))
}

/// Quotes at most [`SNIPPET_LEN`] bytes of hostile input for an error message.
fn snippet(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SNIPPET_LEN)];
    let mut text = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > SNIPPET_LEN {
        text.push_str("...");
    }
    text
}

/// Outcome of reading one line.
enum Line {
    /// The line, without its `\n` or `\r\n`.
    Complete(Vec<u8>),
    /// End of input before any byte.
    Eof,
    /// `limit` bytes without a line end.
    TooLong,
}

/// Reads one line of at most `limit` bytes (line end included); allocates at most that much.
fn read_line(
    reader: &mut impl BufRead,
    limit: usize,
    what: &'static str,
) -> Result<Line, HttpError> {
    if limit == 0 {
        return Ok(Line::TooLong);
    }
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(Line::Eof);
    }
    if line.last() != Some(&b'\n') {
        return if read >= limit {
            Ok(Line::TooLong)
        } else {
            Err(HttpError::Truncated(what))
        };
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Line::Complete(line))
}

/// `tchar` of RFC 9110 section 5.6.2: what method and header names are made of.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().copied().all(is_token_char)
}

fn parse_version(version: &[u8]) -> Result<HttpVersion, HttpError> {
    match version {
        b"HTTP/1.1" => Ok(HttpVersion::Http11),
        b"HTTP/1.0" => Ok(HttpVersion::Http10),
        other => Err(HttpError::UnsupportedVersion {
            version: snippet(other),
        }),
    }
}

/// Reads one request. `Ok(None)` when the peer closed the connection cleanly between requests.
pub fn read_request(
    reader: &mut impl BufRead,
    limits: &HttpLimits,
) -> Result<Option<HttpRequest>, HttpError> {
    let Some(line) = read_request_line(reader, limits)? else {
        return Ok(None);
    };
    let (method, target, version) = parse_request_line(&line)?;
    let headers = read_headers(reader, limits)?;
    let body = read_body(reader, &headers, limits)?;
    Ok(Some(HttpRequest {
        method,
        target,
        version,
        headers,
        body,
    }))
}

fn read_request_line(
    reader: &mut impl BufRead,
    limits: &HttpLimits,
) -> Result<Option<Vec<u8>>, HttpError> {
    for _ in 0..=MAX_LEADING_BLANK_LINES {
        match read_line(reader, limits.max_start_line, "request line")? {
            Line::Eof => return Ok(None),
            Line::TooLong => {
                return Err(HttpError::StartLineTooLong {
                    limit: limits.max_start_line,
                });
            }
            Line::Complete(line) if line.is_empty() => continue,
            Line::Complete(line) => return Ok(Some(line)),
        }
    }
    Err(HttpError::MalformedRequestLine {
        line: String::new(),
        problem: "too many blank lines before the request",
    })
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, HttpVersion), HttpError> {
    let malformed = |problem| HttpError::MalformedRequestLine {
        line: snippet(line),
        problem,
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected METHOD TARGET HTTP/1.1"));
    };
    if !is_token(method) || method.len() > MAX_METHOD_LEN {
        return Err(malformed("invalid method"));
    }
    if target.first() != Some(&b'/') || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("the target must be a path starting with /"));
    }
    if !version.starts_with(b"HTTP/") {
        return Err(malformed("expected METHOD TARGET HTTP/1.1"));
    }
    let version = parse_version(version)?;
    // Both are ASCII, checked above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target, version))
}

/// Reads header lines up to the blank line that ends them.
fn read_headers(
    reader: &mut impl BufRead,
    limits: &HttpLimits,
) -> Result<Vec<(String, String)>, HttpError> {
    let mut headers = Vec::new();
    let mut budget = limits.max_header_bytes;
    loop {
        let too_large = HttpError::HeadersTooLarge {
            limit: limits.max_header_bytes,
        };
        let line = match read_line(reader, budget, "headers")? {
            Line::Complete(line) => line,
            Line::Eof => return Err(HttpError::Truncated("headers")),
            Line::TooLong => return Err(too_large),
        };
        // At least the line end was read too; the exact count does not matter for a budget.
        budget = budget.saturating_sub(line.len() + 1);
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() >= limits.max_headers {
            return Err(HttpError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        headers.push(parse_header(&line)?);
    }
}

fn parse_header(line: &[u8]) -> Result<(String, String), HttpError> {
    let malformed = |problem| HttpError::MalformedHeader {
        line: snippet(line),
        problem,
    };
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(malformed("folded header lines are not supported"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| malformed("expected Name: value"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(malformed("invalid field name"));
    }
    let value = value.trim_ascii();
    if value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(malformed("control character in the value"));
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// The body length announced by `Content-Length`; `None` without one.
fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, HttpError> {
    if let Some(value) = find_header(headers, "transfer-encoding") {
        return Err(HttpError::TransferEncodingUnsupported {
            value: snippet(value.as_bytes()),
        });
    }
    let mut length: Option<u64> = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let bad = || HttpError::BadContentLength {
            value: snippet(value.as_bytes()),
        };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let parsed: u64 = value.parse().map_err(|_| bad())?;
        match length {
            Some(first) if first != parsed => {
                return Err(HttpError::ConflictingContentLength {
                    first,
                    second: parsed,
                });
            }
            _ => length = Some(parsed),
        }
    }
    Ok(length)
}

/// Reads exactly `length` bytes, after checking `length` against the limit.
fn read_exact_body(
    reader: &mut impl BufRead,
    length: u64,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let too_large = HttpError::BodyTooLarge { length, limit };
    let length = usize::try_from(length).map_err(|_| too_large)?;
    if length > limit {
        return Err(HttpError::BodyTooLarge {
            length: length as u64,
            limit,
        });
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => HttpError::Truncated("body"),
        _ => HttpError::Io(e),
    })?;
    Ok(body)
}

fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    limits: &HttpLimits,
) -> Result<Vec<u8>, HttpError> {
    match content_length(headers)? {
        Some(length) => read_exact_body(reader, length, limits.max_body),
        // A request without Content-Length or Transfer-Encoding has no body (RFC 9112 6.3).
        None => Ok(Vec::new()),
    }
}

/// The standard reason phrase of the statuses this API uses.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Statuses that never carry a body (RFC 9110 sections 15.2, 15.3.5 and 15.4.5).
fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Refuses header text that would break the framing (CR, LF or other control characters).
fn check_header_text(text: &str) -> io::Result<()> {
    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("control character in header text {text:?}"),
        ));
    }
    Ok(())
}

fn push_headers(message: &mut String, headers: &[(&str, &str)]) -> io::Result<()> {
    for (name, value) in headers {
        if !is_token(name.as_bytes()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid header name {name:?}"),
            ));
        }
        check_header_text(value)?;
        // Writing to a String cannot fail.
        let _ = write!(message, "{name}: {value}\r\n");
    }
    Ok(())
}

/// Writes a response that keeps the connection open: JSON `body` with `Content-Type` and
/// `Content-Length`, or `Content-Length: 0` without one. 204 (and 1xx, 304) never carry a
/// body: a `body` given with them is not sent.
pub fn write_response(writer: &mut impl Write, status: u16, body: Option<&[u8]>) -> io::Result<()> {
    write_response_with_headers(writer, status, &[], body)
}

/// [`write_response`] with extra header fields, such as `("Connection", "close")` (the
/// connection then ends after this response) or `("Allow", "PUT")` on a 405.
pub fn write_response_with_headers(
    writer: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    let body = if status_has_no_body(status) {
        None
    } else {
        let length = body.map_or(0, <[u8]>::len);
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(head, "Content-Length: {length}\r\n");
        body
    };
    push_headers(&mut head, headers)?;
    head.push_str("\r\n");
    write_message(writer, head, body)
}

/// One `write_all` for head and body: one syscall on an unbuffered socket.
fn write_message(writer: &mut impl Write, head: String, body: Option<&[u8]>) -> io::Result<()> {
    let mut message = head.into_bytes();
    message.extend_from_slice(body.unwrap_or_default());
    writer.write_all(&message)?;
    writer.flush()
}

/// Writes a request with a JSON `body`. `PUT` and `POST` without a body send
/// `Content-Length: 0`, which some servers require.
pub fn write_request(
    writer: &mut impl Write,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> io::Result<()> {
    write_request_with_headers(writer, method, target, &[], body)
}

/// [`write_request`] with extra header fields, such as `("Connection", "close")`.
pub fn write_request_with_headers(
    writer: &mut impl Write,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    if !is_token(method.as_bytes()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid method {method:?}"),
        ));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid request target {target:?}: a path starting with / without spaces"),
        ));
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    head.push_str("Accept: application/json\r\n");
    match body {
        Some(body) => {
            let _ = write!(
                head,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        None if matches!(method, "PUT" | "POST" | "PATCH") => {
            head.push_str("Content-Length: 0\r\n");
        }
        None => {}
    }
    push_headers(&mut head, headers)?;
    head.push_str("\r\n");
    write_message(writer, head, body)
}

/// Reads one response (skipping any `1xx` interim responses). A body without `Content-Length`
/// runs to the end of the connection.
pub fn read_response(
    reader: &mut impl BufRead,
    limits: &HttpLimits,
) -> Result<HttpResponse, HttpError> {
    loop {
        let status = read_status_line(reader, limits)?;
        let headers = read_headers(reader, limits)?;
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status_has_no_body(status) {
            Vec::new()
        } else {
            match content_length(&headers)? {
                Some(length) => read_exact_body(reader, length, limits.max_body)?,
                None => read_to_end_limited(reader, limits.max_body)?,
            }
        };
        return Ok(HttpResponse {
            status,
            headers,
            body,
        });
    }
}

fn read_status_line(reader: &mut impl BufRead, limits: &HttpLimits) -> Result<u16, HttpError> {
    let line = match read_line(reader, limits.max_start_line, "status line")? {
        Line::Complete(line) => line,
        Line::Eof => return Err(HttpError::Truncated("status line")),
        Line::TooLong => {
            return Err(HttpError::StartLineTooLong {
                limit: limits.max_start_line,
            });
        }
    };
    let malformed = || HttpError::MalformedStatusLine {
        line: snippet(&line),
    };
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(malformed());
    };
    if !version.starts_with(b"HTTP/") {
        return Err(malformed());
    }
    parse_version(version)?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    std::str::from_utf8(code)
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)
}

fn read_to_end_limited(reader: &mut impl BufRead, limit: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    reader
        .by_ref()
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut body)?;
    if body.len() > limit {
        return Err(HttpError::BodyTooLarge {
            length: body.len() as u64,
            limit,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn read_all(input: &[u8]) -> Vec<Result<Option<HttpRequest>, HttpError>> {
        let mut reader = Cursor::new(input.to_vec());
        let mut results = Vec::new();
        loop {
            let result = read_request(&mut reader, &HttpLimits::SERVER);
            let done = !matches!(result, Ok(Some(_)));
            results.push(result);
            if done {
                return results;
            }
        }
    }

    fn read_one(input: &[u8]) -> Result<Option<HttpRequest>, HttpError> {
        read_request(&mut Cursor::new(input.to_vec()), &HttpLimits::SERVER)
    }

    fn status_of(input: &[u8]) -> u16 {
        match read_one(input) {
            Err(e) => e.status(),
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_request_with_a_body() {
        let input = b"PUT /api/v1/vm.balloon HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";

        let request = read_one(input).unwrap().unwrap();

        assert_eq!(request.method, "PUT");
        assert_eq!(request.target, "/api/v1/vm.balloon");
        assert_eq!(request.version, HttpVersion::Http11);
        assert_eq!(request.header("host"), Some("x"));
        assert_eq!(request.body, b"hello");
        assert!(request.keep_alive());
    }

    #[test]
    fn clean_eof_before_a_request_is_none() {
        assert!(read_one(b"").unwrap().is_none());
        assert!(read_one(b"\r\n\r\n").unwrap().is_none());
    }

    #[test]
    fn pipelined_requests_are_read_one_after_another() {
        let input = b"GET /a HTTP/1.1\r\n\r\n\
                      PUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\
                      \r\nGET /c?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n";

        let results = read_all(input);

        let requests: Vec<HttpRequest> = results
            .into_iter()
            .map_while(|r| r.ok().flatten())
            .collect();
        let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["/a", "/b", "/c?x=1"]);
        assert_eq!(requests[1].body, b"{}");
        assert_eq!(requests[2].path(), "/c");
        assert!(requests[0].keep_alive());
        assert!(!requests[2].keep_alive());
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let input =
            b"PUT / HTTP/1.1\r\ncOnTeNt-LeNgTh: 3\r\nCONNECTION: Keep-Alive, CLOSE\r\n\r\nabc";

        let request = read_one(input).unwrap().unwrap();

        assert_eq!(request.body, b"abc");
        assert_eq!(request.header("Content-Length"), Some("3"));
        assert!(!request.keep_alive());
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let request = read_one(b"GET /x HTTP/1.1\nA:  b \n\n").unwrap().unwrap();

        assert_eq!(request.header("a"), Some("b"));
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        let plain = read_one(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        let kept = read_one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();

        assert!(!plain.keep_alive());
        assert!(kept.keep_alive());
    }

    #[test]
    fn truncated_input_is_400() {
        for input in [
            &b"GET / HTTP/1.1"[..],
            b"GET / HTTP/1.1\r\nHost: x",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        ] {
            let err = read_one(input).unwrap_err();
            assert!(matches!(err, HttpError::Truncated(_)), "{input:?}: {err}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn garbage_is_400() {
        for input in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET relative HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nName : v\r\n\r\n",
            b"GET / HTTP/1.1\r\n: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                status_of(input),
                400,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn repeated_equal_content_lengths_are_accepted() {
        let input = b"PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";

        assert_eq!(read_one(input).unwrap().unwrap().body, b"ab");
    }

    #[test]
    fn other_http_versions_are_505() {
        assert_eq!(status_of(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/0.9\r\n\r\n"), 505);
    }

    #[test]
    fn transfer_encoding_is_501() {
        let input = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

        let err = read_one(input).unwrap_err();

        assert_eq!(err.status(), 501);
        assert!(err.to_string().contains("chunked"), "{err}");
    }

    #[test]
    fn body_limit_is_checked_before_reading() {
        let limits = HttpLimits {
            max_body: 4,
            ..HttpLimits::SERVER
        };
        // Announces far more than is sent: the error must come from the header alone.
        let input = b"PUT / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";

        let err = read_request(&mut Cursor::new(&input[..]), &limits).unwrap_err();

        assert!(matches!(err, HttpError::BodyTooLarge { .. }), "{err}");
        assert_eq!(err.status(), 413);
        let err = read_request(
            &mut Cursor::new(&b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"[..]),
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn long_request_line_is_414() {
        let mut input = b"GET /".to_vec();
        input.extend(std::iter::repeat_n(b'a', 10_000));
        input.extend_from_slice(b" HTTP/1.1\r\n\r\n");

        assert_eq!(status_of(&input), 414);
    }

    #[test]
    fn header_count_limit_is_431() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=HttpLimits::SERVER.max_headers {
            input.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");

        let err = read_one(&input).unwrap_err();

        assert!(matches!(err, HttpError::TooManyHeaders { .. }), "{err}");
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn header_size_limit_is_431() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'v', 20_000));
        input.extend_from_slice(b"\r\n\r\n");
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..40 {
            many.extend_from_slice(b"X-Medium: ");
            many.extend(std::iter::repeat_n(b'v', 500));
            many.extend_from_slice(b"\r\n");
        }
        many.extend_from_slice(b"\r\n");

        assert_eq!(status_of(&input), 431);
        assert_eq!(status_of(&many), 431);
    }

    #[test]
    fn errors_quote_at_most_a_snippet() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 4000));
        input.extend_from_slice(b"\r\n\r\n");

        let message = read_one(&input).unwrap_err().to_string();

        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn response_with_body_has_json_framing() {
        let mut out = Vec::new();

        write_response(&mut out, 200, Some(b"{\"a\":1}")).unwrap();

        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 7\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"), "{text}");
    }

    #[test]
    fn no_content_response_has_no_body_or_length() {
        let mut out = Vec::new();

        write_response(&mut out, 204, Some(b"ignored")).unwrap();

        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn extra_headers_are_written_and_checked() {
        let mut out = Vec::new();
        write_response_with_headers(&mut out, 405, &[("Allow", "PUT")], None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Allow: PUT\r\n"), "{text}");
        assert!(text.contains("Content-Length: 0\r\n"), "{text}");

        let err = write_response_with_headers(&mut Vec::new(), 200, &[("X", "a\r\nB: c")], None)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn written_requests_read_back() {
        let mut wire = Vec::new();
        write_request(&mut wire, "PUT", "/api/v1/vm.pause", None).unwrap();
        write_request(&mut wire, "PUT", "/api/v1/vm.balloon", Some(b"{}")).unwrap();
        write_request_with_headers(&mut wire, "GET", "/p?q", &[("Connection", "close")], None)
            .unwrap();

        let requests: Vec<HttpRequest> = read_all(&wire)
            .into_iter()
            .map_while(|r| r.ok().flatten())
            .collect();

        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0].header("content-length"), Some("0"));
        assert_eq!(requests[1].body, b"{}");
        assert_eq!(requests[2].header("content-length"), None);
        assert!(!requests[2].keep_alive());
    }

    #[test]
    fn request_framing_refuses_injection() {
        for (method, target) in [
            ("GET", "/a b"),
            ("GET", "/a\r\nX: y"),
            ("G T", "/"),
            ("GET", "a"),
        ] {
            let err = write_request(&mut Vec::new(), method, target, None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{method} {target}");
        }
    }

    #[test]
    fn written_responses_read_back() {
        let mut wire = Vec::new();
        wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        write_response(&mut wire, 204, None).unwrap();
        write_response(&mut wire, 404, Some(b"{\"error\":\"x\"}")).unwrap();
        let mut reader = Cursor::new(wire);

        let first = read_response(&mut reader, &HttpLimits::CLIENT).unwrap();
        let second = read_response(&mut reader, &HttpLimits::CLIENT).unwrap();

        assert_eq!((first.status, first.body.len()), (204, 0));
        assert_eq!(second.status, 404);
        assert_eq!(second.body, b"{\"error\":\"x\"}");
        assert_eq!(second.header("content-type"), Some("application/json"));
    }

    #[test]
    fn response_without_length_runs_to_eof_within_the_limit() {
        let limits = HttpLimits {
            max_body: 5,
            ..HttpLimits::CLIENT
        };
        let ok = b"HTTP/1.1 200 OK\r\n\r\nhello";
        let too_long = b"HTTP/1.1 200 OK\r\n\r\nhello!";

        let response = read_response(&mut Cursor::new(&ok[..]), &limits).unwrap();
        let err = read_response(&mut Cursor::new(&too_long[..]), &limits).unwrap_err();

        assert_eq!(response.body, b"hello");
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn malformed_responses_are_errors() {
        for input in [
            &b""[..],
            b"HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"SPDY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
        ] {
            assert!(
                read_response(&mut Cursor::new(input), &HttpLimits::CLIENT).is_err(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn header_budget_exhausted_exactly_is_431_not_truncation() {
        let limits = HttpLimits {
            max_header_bytes: 6,
            ..HttpLimits::SERVER
        };
        let input = b"GET / HTTP/1.1\r\nA: bc\r\n\r\n";

        let err = read_request(&mut Cursor::new(&input[..]), &limits).unwrap_err();

        assert_eq!(err.status(), 431, "{err}");
    }

    /// xorshift64*: a tiny deterministic generator, so failures reproduce from the seed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % bound.max(1) as u64).unwrap()
        }
    }

    const SEEDS: &[&[u8]] = &[
        b"GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"PUT /api/v1/vm.balloon HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"target_mib\": 1}",
        b"PUT /api/v1/vm.pause HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];

    /// Interesting bytes for a parser: delimiters, digits, high bytes.
    const SPICE: &[u8] = b"\r\n :/0123456789\t\x00\xff-HTTP";

    fn mutate(rng: &mut XorShift, input: &mut Vec<u8>) {
        for _ in 0..=rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(5) {
                0 if !input.is_empty() => {
                    let at = at.min(input.len() - 1);
                    input[at] = SPICE[rng.below(SPICE.len())];
                }
                1 => input.insert(at, SPICE[rng.below(SPICE.len())]),
                2 if at < input.len() => {
                    input.remove(at);
                }
                3 => input.truncate(at),
                _ => {
                    let copy: Vec<u8> = input[at..].iter().take(40).copied().collect();
                    input.splice(at..at, copy);
                }
            }
        }
    }

    fn check_never_panics_and_respects_limits(input: &[u8], limits: &HttpLimits) {
        // A one-byte buffer exercises every partial-read path of the line reader.
        let mut reader = std::io::BufReader::with_capacity(1, input);
        for _ in 0..input.len() + 1 {
            match read_request(&mut reader, limits) {
                Ok(Some(request)) => {
                    assert!(request.body.len() <= limits.max_body);
                    assert!(request.headers.len() <= limits.max_headers);
                    assert!(request.target.len() <= limits.max_start_line);
                }
                Ok(None) | Err(_) => return,
            }
        }
        panic!("more requests than input bytes: {input:?}");
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let limits = HttpLimits {
            max_start_line: 64,
            max_headers: 4,
            max_header_bytes: 128,
            max_body: 32,
        };
        for round in 0..20_000 {
            let mut input = if round % 4 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                let mut input = SEEDS[rng.below(SEEDS.len())].repeat(1 + rng.below(3));
                mutate(&mut rng, &mut input);
                input
            };
            if round % 7 == 0 {
                input.retain(|b| *b != b'\r');
            }
            check_never_panics_and_respects_limits(&input, &limits);
            check_never_panics_and_respects_limits(&input, &HttpLimits::SERVER);
            let _ = read_response(&mut Cursor::new(&input), &limits);
        }
    }

    #[test]
    fn timeouts_are_recognised() {
        let timeout = HttpError::Io(io::Error::from(io::ErrorKind::WouldBlock));
        let other = HttpError::Io(io::Error::from(io::ErrorKind::BrokenPipe));

        assert!(timeout.is_timeout());
        assert!(!other.is_timeout());
        assert!(!HttpError::Truncated("body").is_timeout());
    }
}
