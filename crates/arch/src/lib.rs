//! x86_64 platform description of oxvmm, and everything written into guest memory or vCPU
//! state at boot.
//!
//! Owns: the memory map, ports and IRQ pins of `docs/platform.md` ([`layout`]); guest RAM
//! regions and the e820 map ([`memory`]); page tables, GDT/IDT, the Linux zero page, the PVH
//! start info, initrd placement and boot register state ([`boot`]); boot MSRs ([`msr`]);
//! per-vCPU CPUID ([`cpuid`]); ACPI tables ([`acpi`]).
//!
//! Everything here is a pure function of its inputs and guest memory, testable without
//! `/dev/kvm`. It must not use kvm-ioctls (only kvm-bindings' data types) nor depend on the
//! `devices` or `vmm` crates: the vmm calls these functions and issues the ioctls itself.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod memory;
pub mod msr;
