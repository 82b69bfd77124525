//! The route table and the typed requests it maps to.
//!
//! [`parse_request`] turns a method, a request target and a body into an [`ApiRequest`], or into
//! an [`ApiError`] carrying the status and message to send back. Handlers answer with an
//! [`ApiResponse`] (`204 No Content` or `200` with a JSON body) or an [`ApiError`]; the
//! [`crate::server::serve_connection`] loop writes either one to the wire.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{BalloonRequest, ErrorBody, SnapshotRequest};

/// `GET`: the VMM answers, with its version.
pub const PATH_PING: &str = "/api/v1/vmm.ping";
/// `GET`: state, effective configuration, uptime.
pub const PATH_INFO: &str = "/api/v1/vm.info";
/// `PUT`: stop the vCPUs.
pub const PATH_PAUSE: &str = "/api/v1/vm.pause";
/// `PUT`: restart the vCPUs.
pub const PATH_RESUME: &str = "/api/v1/vm.resume";
/// `PUT`: press the ACPI power button; the guest decides.
pub const PATH_SHUTDOWN: &str = "/api/v1/vm.shutdown";
/// `PUT`: reset the VM and boot again.
pub const PATH_REBOOT: &str = "/api/v1/vm.reboot";
/// `PUT`: stop the VM now, without asking the guest.
pub const PATH_POWER_OFF: &str = "/api/v1/vm.power-off";
/// `GET`: exits by kind and per-device traffic.
pub const PATH_COUNTERS: &str = "/api/v1/vm.counters";
/// `PUT`: set the balloon target.
pub const PATH_BALLOON: &str = "/api/v1/vm.balloon";
/// `PUT`: write a (full or diff) snapshot.
pub const PATH_SNAPSHOT: &str = "/api/v1/vm.snapshot";

/// A request body a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySpec {
    /// Name of its schema in `openapi.json` (`components.schemas`) and of the Rust type.
    pub schema: &'static str,
    /// A valid example, quoted in the error for a missing body.
    pub example: &'static str,
}

/// One route of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path, without query string.
    pub path: &'static str,
    /// The JSON body it takes; `None` for routes that take none (an empty body or `{}`).
    pub request_body: Option<BodySpec>,
    /// Schema name of its `200` answer; `None` for routes that answer `204 No Content`.
    pub response_body: Option<&'static str>,
}

const fn action(path: &'static str) -> Route {
    Route {
        method: "PUT",
        path,
        request_body: None,
        response_body: None,
    }
}

const fn query(path: &'static str, response: &'static str) -> Route {
    Route {
        method: "GET",
        path,
        request_body: None,
        response_body: Some(response),
    }
}

const ROUTE_PING: Route = query(PATH_PING, "PingResponse");
const ROUTE_INFO: Route = query(PATH_INFO, "VmInfo");
const ROUTE_PAUSE: Route = action(PATH_PAUSE);
const ROUTE_RESUME: Route = action(PATH_RESUME);
const ROUTE_SHUTDOWN: Route = action(PATH_SHUTDOWN);
const ROUTE_REBOOT: Route = action(PATH_REBOOT);
const ROUTE_POWER_OFF: Route = action(PATH_POWER_OFF);
const ROUTE_COUNTERS: Route = query(PATH_COUNTERS, "Counters");
const ROUTE_BALLOON: Route = Route {
    request_body: Some(BodySpec {
        schema: "BalloonRequest",
        example: r#"{"target_mib": 512}"#,
    }),
    ..action(PATH_BALLOON)
};
const ROUTE_SNAPSHOT: Route = Route {
    request_body: Some(BodySpec {
        schema: "SnapshotRequest",
        example: r#"{"destination": "/path/to/dir", "diff": false}"#,
    }),
    ..action(PATH_SNAPSHOT)
};

/// Every route the API serves; `openapi.json` describes exactly these (a test checks it).
pub const ROUTES: &[Route] = &[
    ROUTE_PING,
    ROUTE_INFO,
    ROUTE_PAUSE,
    ROUTE_RESUME,
    ROUTE_SHUTDOWN,
    ROUTE_REBOOT,
    ROUTE_POWER_OFF,
    ROUTE_COUNTERS,
    ROUTE_BALLOON,
    ROUTE_SNAPSHOT,
];

/// A request of the control API, decoded and type-checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET /api/v1/vmm.ping`
    Ping,
    /// `GET /api/v1/vm.info`
    Info,
    /// `PUT /api/v1/vm.pause`
    Pause,
    /// `PUT /api/v1/vm.resume`
    Resume,
    /// `PUT /api/v1/vm.shutdown`
    Shutdown,
    /// `PUT /api/v1/vm.reboot`
    Reboot,
    /// `PUT /api/v1/vm.power-off`
    PowerOff,
    /// `GET /api/v1/vm.counters`
    Counters,
    /// `PUT /api/v1/vm.balloon`
    Balloon(BalloonRequest),
    /// `PUT /api/v1/vm.snapshot`
    Snapshot(SnapshotRequest),
}

impl ApiRequest {
    /// The route this request travels on.
    pub fn route(&self) -> &'static Route {
        match self {
            ApiRequest::Ping => &ROUTE_PING,
            ApiRequest::Info => &ROUTE_INFO,
            ApiRequest::Pause => &ROUTE_PAUSE,
            ApiRequest::Resume => &ROUTE_RESUME,
            ApiRequest::Shutdown => &ROUTE_SHUTDOWN,
            ApiRequest::Reboot => &ROUTE_REBOOT,
            ApiRequest::PowerOff => &ROUTE_POWER_OFF,
            ApiRequest::Counters => &ROUTE_COUNTERS,
            ApiRequest::Balloon(_) => &ROUTE_BALLOON,
            ApiRequest::Snapshot(_) => &ROUTE_SNAPSHOT,
        }
    }

    /// The JSON body to send for this request (`None` for body-less routes). Fails only for a
    /// snapshot destination that is not UTF-8, which JSON cannot carry.
    pub fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        match self {
            ApiRequest::Balloon(request) => serde_json::to_vec(request).map(Some),
            ApiRequest::Snapshot(request) => serde_json::to_vec(request).map(Some),
            _ => Ok(None),
        }
    }
}

/// A refused or failed request: the HTTP status and a message for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status: 400 bad request, 404 unknown route, 405 wrong method, 409 wrong state for
    /// this request, 500 the VMM failed.
    pub status: u16,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed (body, field, value).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, message)
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, message)
    }

    /// 409: the request is valid but not in the VM's current state (e.g. resume while running).
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, message)
    }

    /// 500: the VMM tried and failed.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, message)
    }

    /// The JSON body to send: `{"error": "<message>"}`.
    pub fn body(&self) -> Vec<u8> {
        to_json_bytes(&ErrorBody {
            error: self.message.clone(),
        })
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiResponse {
    /// `204 No Content`: the action was carried out (or, for shutdown, requested).
    NoContent,
    /// `200 OK` with this JSON body.
    Json(serde_json::Value),
}

impl ApiResponse {
    /// A `200` answer carrying `value` as JSON; a value that does not serialize (a map with
    /// non-string keys, a failing `Serialize` impl) is a 500.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, ApiError> {
        serde_json::to_value(value)
            .map(ApiResponse::Json)
            .map_err(|e| ApiError::internal(format!("cannot encode the answer as JSON: {e}")))
    }

    /// The HTTP status: 204 or 200.
    pub fn status(&self) -> u16 {
        match self {
            ApiResponse::NoContent => 204,
            ApiResponse::Json(_) => 200,
        }
    }

    /// The body to send, if any.
    pub fn body(&self) -> Option<Vec<u8>> {
        match self {
            ApiResponse::NoContent => None,
            ApiResponse::Json(value) => Some(to_json_bytes(value)),
        }
    }
}

/// `None` is `204 No Content`, `Some(value)` a `200` with that JSON body.
impl From<Option<serde_json::Value>> for ApiResponse {
    fn from(value: Option<serde_json::Value>) -> Self {
        value.map_or(ApiResponse::NoContent, ApiResponse::Json)
    }
}

/// Serializes values whose serialization cannot fail (strings, `serde_json::Value`); should it
/// ever fail, the body is still valid JSON saying so, rather than a panic.
fn to_json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        format!(
            r#"{{"error":"cannot encode as JSON: {}"}}"#,
            escape_json(&e.to_string())
        )
        .into_bytes()
    })
}

fn escape_json(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_string()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// The path of a request target, without query string or fragment.
pub fn target_path(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

/// The route serving `path` (query string ignored), whatever its method.
pub fn find_route(path: &str) -> Option<&'static Route> {
    let path = target_path(path);
    ROUTES.iter().find(|route| route.path == path)
}

/// Decodes one request: finds its route, checks the method and type-checks the body.
///
/// Errors: 404 for an unknown path, 405 for a known path with the wrong method (the message
/// names the right one), 400 for a missing or malformed body (the message names the field and
/// the problem) or a body sent to a route that takes none (an empty body or `{}` is accepted).
pub fn parse_request(method: &str, target: &str, body: &[u8]) -> Result<ApiRequest, ApiError> {
    let path = target_path(target);
    let route = find_route(path).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown route {path:?}; the API's routes are under /api/v1/ (try GET {PATH_PING})"
        ))
    })?;
    if method != route.method {
        return Err(ApiError::new(
            405,
            format!(
                "method {method:?} is not allowed on {path}; use {}",
                route.method
            ),
        ));
    }
    match route.path {
        PATH_PING => expect_no_body(route, body).map(|()| ApiRequest::Ping),
        PATH_INFO => expect_no_body(route, body).map(|()| ApiRequest::Info),
        PATH_PAUSE => expect_no_body(route, body).map(|()| ApiRequest::Pause),
        PATH_RESUME => expect_no_body(route, body).map(|()| ApiRequest::Resume),
        PATH_SHUTDOWN => expect_no_body(route, body).map(|()| ApiRequest::Shutdown),
        PATH_REBOOT => expect_no_body(route, body).map(|()| ApiRequest::Reboot),
        PATH_POWER_OFF => expect_no_body(route, body).map(|()| ApiRequest::PowerOff),
        PATH_COUNTERS => expect_no_body(route, body).map(|()| ApiRequest::Counters),
        PATH_BALLOON => parse_body(route, body).map(ApiRequest::Balloon),
        PATH_SNAPSHOT => parse_body(route, body).map(ApiRequest::Snapshot),
        other => Err(ApiError::internal(format!(
            "route {other} is in the route table but has no decoder"
        ))),
    }
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Body-less routes accept nothing, whitespace or `{}`: some clients always send an object.
fn expect_no_body(route: &Route, body: &[u8]) -> Result<(), ApiError> {
    if is_blank(body) {
        return Ok(());
    }
    let refuse = |problem: String| {
        ApiError::bad_request(format!(
            "{} {} takes no request body (send none or {{}}): {problem}",
            route.method, route.path
        ))
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) if map.is_empty() => Ok(()),
        Ok(serde_json::Value::Object(map)) => {
            let fields: Vec<&String> = map.keys().take(4).collect();
            Err(refuse(format!("unexpected field(s) {fields:?}")))
        }
        Ok(other) => Err(refuse(format!("got a JSON {}", json_kind(&other)))),
        Err(e) => Err(refuse(e.to_string())),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Decodes a JSON body; the error names the field at fault (`target_mib: invalid type: ...`).
fn parse_body<T: DeserializeOwned>(route: &Route, body: &[u8]) -> Result<T, ApiError> {
    let spec = route.request_body.ok_or_else(|| {
        ApiError::internal(format!("route {} declares no request body", route.path))
    })?;
    if is_blank(body) {
        return Err(ApiError::bad_request(format!(
            "{} {} needs a JSON body ({}), e.g. {}",
            route.method, route.path, spec.schema, spec.example
        )));
    }
    let refuse = |problem: String| {
        ApiError::bad_request(format!(
            "invalid {} body for {} {}: {problem}",
            spec.schema, route.method, route.path
        ))
    };
    // serde's derived structs also accept a JSON array of the fields in order; the API is
    // described with objects only, so anything else is refused up front.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(refuse("expected a JSON object".to_string()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path == "?" {
            refuse(e.into_inner().to_string())
        } else {
            refuse(format!("field {path:?}: {}", e.into_inner()))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| refuse(format!("trailing data after the JSON object: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    fn every_request() -> Vec<ApiRequest> {
        vec![
            ApiRequest::Ping,
            ApiRequest::Info,
            ApiRequest::Pause,
            ApiRequest::Resume,
            ApiRequest::Shutdown,
            ApiRequest::Reboot,
            ApiRequest::PowerOff,
            ApiRequest::Counters,
            ApiRequest::Balloon(BalloonRequest { target_mib: 64 }),
            ApiRequest::Snapshot(SnapshotRequest {
                destination: PathBuf::from("/tmp/snap"),
                diff: true,
            }),
        ]
    }

    #[test]
    fn every_request_round_trips_through_its_route() {
        for request in every_request() {
            let route = request.route();
            let body = request.body().unwrap().unwrap_or_default();

            let parsed = parse_request(route.method, route.path, &body);

            assert_eq!(parsed, Ok(request));
        }
    }

    #[test]
    fn every_route_has_exactly_one_request_variant() {
        let from_requests: BTreeSet<_> = every_request()
            .iter()
            .map(|r| (r.route().method, r.route().path))
            .collect();
        let from_table: BTreeSet<_> = ROUTES.iter().map(|r| (r.method, r.path)).collect();

        assert_eq!(from_requests, from_table);
        assert_eq!(from_table.len(), ROUTES.len(), "duplicate route in ROUTES");
    }

    #[test]
    fn routes_take_bodies_exactly_when_their_request_carries_one() {
        for request in every_request() {
            assert_eq!(
                request.body().unwrap().is_some(),
                request.route().request_body.is_some(),
                "{request:?}"
            );
        }
    }

    #[test]
    fn wrong_method_is_405_naming_the_allowed_one() {
        let err = parse_request("GET", PATH_PAUSE, b"").unwrap_err();
        assert_eq!(err.status, 405);
        assert!(err.message.contains("use PUT"), "{}", err.message);

        let err = parse_request("PUT", PATH_PING, b"").unwrap_err();
        assert_eq!(err.status, 405);
        assert!(err.message.contains("use GET"), "{}", err.message);

        let err = parse_request("put", PATH_PAUSE, b"").unwrap_err();
        assert_eq!(err.status, 405, "methods are case-sensitive");
    }

    #[test]
    fn unknown_route_is_404_naming_the_path() {
        for path in [
            "/api/v1/vm.frobnicate",
            "/",
            "/api/v2/vmm.ping",
            "/api/v1/vm.info/",
        ] {
            let err = parse_request("GET", path, b"").unwrap_err();
            assert_eq!(err.status, 404, "{path}");
            assert!(err.message.contains(path), "{}", err.message);
        }
    }

    #[test]
    fn query_strings_are_ignored() {
        assert_eq!(
            parse_request("GET", "/api/v1/vm.info?pretty=1", b""),
            Ok(ApiRequest::Info)
        );
        assert_eq!(
            parse_request("PUT", "/api/v1/vm.pause?", b""),
            Ok(ApiRequest::Pause)
        );
    }

    #[test]
    fn body_less_routes_accept_empty_whitespace_or_empty_object() {
        for body in [&b""[..], b"  \r\n", b"{}", b" { } "] {
            assert_eq!(
                parse_request("PUT", PATH_PAUSE, body),
                Ok(ApiRequest::Pause),
                "{body:?}"
            );
        }
    }

    #[test]
    fn body_less_routes_refuse_a_real_body() {
        for (body, expected) in [
            (&br#"{"force":true}"#[..], "force"),
            (b"[]", "array"),
            (b"null", "null"),
            (b"{", "EOF"),
        ] {
            let err = parse_request("PUT", PATH_RESUME, body).unwrap_err();
            assert_eq!(err.status, 400, "{body:?}");
            assert!(
                err.message.contains("takes no request body"),
                "{}",
                err.message
            );
            assert!(err.message.contains(expected), "{}", err.message);
        }
    }

    #[test]
    fn missing_body_is_400_with_an_example() {
        let err = parse_request("PUT", PATH_BALLOON, b"").unwrap_err();

        assert_eq!(err.status, 400);
        assert!(err.message.contains("target_mib"), "{}", err.message);
    }

    #[test]
    fn unknown_field_is_400_naming_it() {
        let err = parse_request("PUT", PATH_BALLOON, br#"{"target_mb": 5}"#).unwrap_err();

        assert_eq!(err.status, 400);
        assert!(err.message.contains("target_mb"), "{}", err.message);
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn wrong_type_is_400_naming_the_field() {
        let err = parse_request("PUT", PATH_BALLOON, br#"{"target_mib": "lots"}"#).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("\"target_mib\""), "{}", err.message);
        assert!(err.message.contains("invalid type"), "{}", err.message);

        let err = parse_request("PUT", PATH_SNAPSHOT, br#"{"destination": "/d", "diff": 1}"#)
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("\"diff\""), "{}", err.message);
    }

    #[test]
    fn negative_or_overflowing_numbers_are_400() {
        for body in [&br#"{"target_mib": -1}"#[..], br#"{"target_mib": 1e400}"#] {
            let err = parse_request("PUT", PATH_BALLOON, body).unwrap_err();
            assert_eq!(err.status, 400, "{body:?}");
        }
        let err = parse_request(
            "PUT",
            PATH_BALLOON,
            br#"{"target_mib": 18446744073709551616}"#,
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn bodies_must_be_objects() {
        for body in [&br#"["/d", true]"#[..], b"null", b"\"x\"", b"5"] {
            let err = parse_request("PUT", PATH_SNAPSHOT, body).unwrap_err();
            assert_eq!(err.status, 400, "{body:?}");
            assert!(
                err.message.contains("expected a JSON object"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn missing_field_is_400_naming_it() {
        let err = parse_request("PUT", PATH_SNAPSHOT, br#"{"diff": true}"#).unwrap_err();

        assert_eq!(err.status, 400);
        assert!(err.message.contains("destination"), "{}", err.message);
    }

    #[test]
    fn trailing_garbage_and_non_utf8_are_400() {
        let err = parse_request("PUT", PATH_BALLOON, br#"{"target_mib": 1} x"#).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("trailing"), "{}", err.message);

        let err = parse_request("PUT", PATH_SNAPSHOT, b"{\"destination\": \"\xff\"}").unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn error_body_is_json_with_the_message() {
        let err = ApiError::conflict("the VM is already paused \"now\"");

        let body: ErrorBody = serde_json::from_slice(&err.body()).unwrap();

        assert_eq!(body.error, "the VM is already paused \"now\"");
        assert_eq!(err.status, 409);
    }

    #[test]
    fn responses_carry_status_and_body() {
        let ping = ApiResponse::json(&crate::types::PingResponse::current()).unwrap();
        assert_eq!(ping.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(&ping.body().unwrap()).unwrap();
        assert_eq!(body["api"], "v1");

        assert_eq!(ApiResponse::NoContent.status(), 204);
        assert_eq!(ApiResponse::NoContent.body(), None);
    }

    #[test]
    fn optional_values_convert_to_responses() {
        assert_eq!(ApiResponse::from(None), ApiResponse::NoContent);
        assert_eq!(
            ApiResponse::from(Some(serde_json::json!({"a": 1}))).status(),
            200
        );
    }

    #[test]
    fn unserializable_answers_are_500() {
        let mut map = std::collections::BTreeMap::new();
        map.insert((1, 2), 3);

        let err = ApiResponse::json(&map).unwrap_err();

        assert_eq!(err.status, 500);
    }

    #[test]
    fn non_utf8_snapshot_destination_cannot_be_encoded() {
        use std::os::unix::ffi::OsStrExt;
        let request = ApiRequest::Snapshot(SnapshotRequest {
            destination: PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff")),
            diff: false,
        });

        assert!(request.body().is_err());
    }

    #[test]
    fn escape_json_escapes_quotes() {
        assert_eq!(escape_json("a\"b\n"), "a\\\"b\\n");
    }
}
