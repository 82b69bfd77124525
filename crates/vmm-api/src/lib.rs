//! The vmm-api crate owns oxvmm's control-API types: the VM configuration (shared by the
//! command line, `--config FILE.json` and the API), requests and responses, and a small
//! blocking client. It depends on no other workspace crate.

pub mod config;

pub use config::VmConfig;
