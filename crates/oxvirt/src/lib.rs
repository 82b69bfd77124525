//! The `oxvirt` command-line client: virsh's commands, options and output layout over libvirt's
//! RPC protocol, spoken to `oxvirtd` (or any libvirt daemon) through the `rpc` crate's client.
//!
//! This crate owns argument parsing ([`args`]), the text each command prints ([`format`],
//! [`table`], [`devices`]) and the order of calls each command makes ([`commands`]). It must not
//! hold any business logic: what a call does is the daemon's decision; the CLI only asks and
//! prints.

pub mod args;
pub mod commands;
pub mod devices;
pub mod format;
pub mod names;
pub mod table;
