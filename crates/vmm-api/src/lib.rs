//! The vmm-api crate owns oxvmm's control API as data and framing: the VM configuration (shared
//! by the command line, `--config FILE.json` and the API), the request and response types, the
//! route table and request decoding, minimal HTTP/1.1 framing, the per-connection server loop,
//! the OpenAPI description (`openapi.json`, checked against the routes by tests) and a small
//! blocking client.
//!
//! It must not depend on any other workspace crate and knows nothing of VMs beyond these types:
//! what a request does is decided by the closure oxvmm passes to
//! [`server::serve_connection`]. No external HTTP crate: the framing in [`http`] is all the
//! API needs and is fuzzed here.

pub mod client;
pub mod config;
pub mod http;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod types;

pub use client::{Client, ClientError};
pub use config::VmConfig;
pub use openapi::OPENAPI_JSON;
pub use routes::{ApiError, ApiRequest, ApiResponse, ROUTES, Route, parse_request};
pub use server::serve_connection;
pub use types::{
    BalloonRequest, Counters, DeviceCounters, DiskCounters, ErrorBody, PingResponse,
    SnapshotRequest, VmInfo, VmState,
};
