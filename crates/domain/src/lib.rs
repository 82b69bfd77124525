//! The domain crate owns libvirt's domain XML for oxvirt: a typed model ([`DomainDef`]) of the
//! subset oxvmm runs, its validation and defaults, its serialization in the layout
//! `virsh dumpxml` prints, and its conversion to oxvmm's [`vmm_api::VmConfig`].
//!
//! It must not depend on the daemon and does no I/O: reading and writing definition files,
//! choosing socket paths and allocating pseudo-terminals are the daemon's. (Generating a UUID or
//! a MAC address reads the host's random source through `getrandom`.)
//!
//! # The contract
//!
//! - [`DomainDef::from_xml`] accepts the supported subset (see `docs/domain-xml.md`) and refuses
//!   everything else with the XML path of what was refused: `unsupported element
//!   /domain/devices/graphics`, `unsupported attribute /domain/devices/disk[1]/driver/@io`,
//!   `/domain/memory: "12x" is not a number`. Nothing is silently ignored, except the live
//!   details `dumpxml` of a running domain adds (the id, `<alias>`, pty paths, generated `vnet*`
//!   TAP names), so that a running domain's XML reads back as its definition.
//! - It fills in libvirt's defaults (UUID, MAC addresses, `<clock offset='utc'/>`, lifecycle
//!   actions, a virtio memory balloon, the console that mirrors the serial port), so
//!   `DomainDef::from_xml(&def.to_xml(..)) == def` and writing is stable.
//! - [`DomainDef::to_xml`] writes libvirt's layout; [`XmlOptions::live`] adds a running
//!   domain's live state ([`LiveInfo`]), [`XmlOptions::INACTIVE`] gives `dumpxml --inactive`.
//! - [`DomainDef::to_vm_config`] refuses, naming the path, whatever oxvmm cannot do today.
//!
//! # Example
//!
//! ```
//! use domain::{DomainDef, NativeRuntime, XmlOptions};
//!
//! let def = DomainDef::from_xml(
//!     "<domain type='kvm'>
//!        <name>demo</name>
//!        <memory unit='MiB'>256</memory>
//!        <os><type>hvm</type><kernel>/boot/vmlinux</kernel></os>
//!        <features><acpi/><apic/></features>
//!      </domain>",
//! )?;
//! assert!(def.to_xml(&XmlOptions::INACTIVE).contains("<memory unit='KiB'>262144</memory>"));
//! let runtime = NativeRuntime {
//!     serial_socket: "/run/oxvirt/demo/serial.sock".into(),
//!     console_socket: "/run/oxvirt/demo/console.sock".into(),
//!     interface_taps: Vec::new(),
//!     vsock_socket: "/run/oxvirt/domains/demo.vsock.sock".into(),
//!     auto_vsock_cid: 3,
//! };
//! let config = def.to_vm_config(&runtime)?;
//! assert_eq!(config.memory.size_mib, 256);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod devices;
mod dom;
pub mod error;
mod format;
pub mod model;
pub mod native;
mod parse;
mod qos;
mod units;

pub use devices::GENERATED_TAP_PREFIX;
pub use dom::{MAX_DEPTH, MAX_DOCUMENT_BYTES};
pub use error::DomainError;
pub use format::{LiveInfo, XmlOptions};
pub use model::MIN_GUEST_CID;
pub use model::{
    Bandwidth, BootDevice, CharDevice, ClockOffset, Cpu, CpuFeature, CpuMode, Devices, Disk,
    DiskCache, DiskType, DomainDef, DomainType, FeaturePolicy, Features, Interface,
    InterfaceTarget, InterfaceType, IoTune, LifecycleAction, Loader, LoaderType, MacAddr,
    MemBalloon, Os, Rng, Uuid, Vsock, VsockCid,
};
pub use native::{NativeError, NativeRuntime};

impl DomainDef {
    /// Parses, validates and completes a domain definition.
    pub fn from_xml(text: &str) -> Result<DomainDef, DomainError> {
        parse::parse_domain(text)
    }

    /// Writes the definition as `virsh dumpxml` would, live state included when given.
    pub fn to_xml(&self, options: &XmlOptions<'_>) -> String {
        format::format_domain(self, options)
    }

    /// oxvmm's configuration for this domain, or the path of what oxvmm cannot do.
    pub fn to_vm_config(&self, runtime: &NativeRuntime) -> Result<vmm_api::VmConfig, NativeError> {
        native::to_vm_config(self, runtime)
    }
}
