//! libvirt's RPC wire protocol, so that `oxvirtd` can serve the real `virsh` and
//! python3-libvirt and the `oxvirt` CLI can be a client.
//!
//! This crate owns the bytes on the socket: XDR, framing, the procedure table of the remote
//! program (`0x20008086` v1), the keepalive program (`0x6b656570`), error replies, events and
//! streams, and an async server and client. It must not hold any domain logic: what a call
//! *does* is the daemon's business, behind [`server::Dispatcher`].
//!
//! See `docs/rpc.md` for what is implemented, which procedures are typed and what virsh calls.
//!
//! - [`xdr`]: the XDR codec (`XdrEncode`, `XdrDecode`, `XdrBounded`, [`xdr_struct!`]); every
//!   length is checked against its protocol limit and the remaining input before allocating.
//! - [`message`]: header, message types and statuses, framing with libvirt's 16 MiB limit.
//! - [`remote_error`]: `remote_error` with libvirt's error numbers and message prefixes.
//! - [`procedures`]: the 427 procedure numbers, typed structures, and the `call::*` / `event::*`
//!   markers that tie a procedure to its argument, reply or message type.
//! - [`server`]: tokio server; the daemon implements [`server::Dispatcher`].
//! - [`client`]: tokio client for the CLI; [`uri`]: `oxvirt+unix:///system?socket=…` URIs.
//!
//! A daemon answers calls like this:
//!
//! ```no_run
//! use rpc::procedures::{call, DomainGetStateRet};
//! use rpc::server::{Connection, Dispatcher, IncomingCall, Reply, Server, ServerConfig};
//! use rpc::{Procedure, RemoteError};
//! use std::sync::Arc;
//!
//! struct Daemon;
//!
//! impl Dispatcher for Daemon {
//!     async fn call(&self, conn: &Connection, call: IncomingCall) -> Result<Reply, RemoteError> {
//!         match call.procedure {
//!             Procedure::DomainGetState => {
//!                 call.handle::<call::DomainGetState, _, _>(|args| async move {
//!                     if args.dom.name != "vm1" {
//!                         return Err(RemoteError::no_domain(format!(
//!                             "no domain with matching name '{}'",
//!                             args.dom.name
//!                         )));
//!                     }
//!                     Ok(DomainGetStateRet { state: 1, reason: 1 })
//!                 })
//!                 .await
//!             }
//!             _ => Err(call.unsupported()),
//!         }
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::UnixListener::bind("/run/oxvirt/oxvirtd-sock")?;
//! Server::new(Arc::new(Daemon), ServerConfig::default())
//!     .serve_unix(listener, false)
//!     .await
//! # }
//! ```

pub mod client;
pub mod message;
pub mod procedures;
pub mod remote_error;
pub mod server;
pub mod uri;
pub mod xdr;

pub use message::{Header, Message, MessageStatus, MessageType};
pub use procedures::{Procedure, RemoteCall, RemoteEvent};
pub use remote_error::RemoteError;
