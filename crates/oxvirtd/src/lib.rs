//! oxvirtd's core below the RPC dispatch: the native driver that starts, supervises, reaps and
//! re-attaches oxvmm processes ([`native`]), the persistent definition store ([`store`]), the
//! runtime records that let a restarted daemon find its VMs ([`runtime`]), lifecycle events
//! and states numbered as libvirt's ([`events`], [`state`]), and the registry that ties them
//! together and is what the RPC dispatcher calls ([`registry`]). The layout on disk is in
//! [`paths`] and `docs/oxvirtd.md`.
//!
//! It must not parse domain XML (definitions are opaque text here; the `domain` crate parses
//! them and derives the `VmConfig` the driver starts), speak the RPC protocol, or depend on
//! `vmm`/`hypervisor`: VMs live in their own oxvmm processes, reached through `vmm-api`.

pub mod events;
mod fsutil;
pub mod ident;
pub mod native;
pub mod paths;
pub mod process;
pub mod registry;
pub mod runtime;
pub mod state;
pub mod store;

pub use events::{EventBus, EventKind, LifecycleEvent};
pub use ident::{NAME_MAX_LEN, NameError, Uuid, validate_name};
pub use native::{
    ActiveDomain, NativeConfig, NativeDriver, NativeError, RecoveryReport, RuntimeInfo, StartSpec,
};
pub use paths::Paths;
pub use registry::{
    DefineOutcome, Definition, DomainRegistry, DomainSummary, IdentifyFn, LoadProblem,
    RegistryError,
};
pub use state::{DomainState, PausedReason, RunningReason, ShutoffReason};
pub use store::{DefinitionStore, StoreError};

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// A fresh temporary directory for one test.
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("oxvirtd-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
