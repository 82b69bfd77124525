use std::path::PathBuf;

/// What is wrong with a kernel or initrd image.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file cannot be opened.
    #[error("cannot open")]
    Open(#[source] std::io::Error),
    /// The file cannot be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// Neither an ELF nor a bzImage.
    #[error("not a kernel: neither an ELF vmlinux nor a bzImage")]
    NotAKernel,
    /// `builtin:` names a guest this binary does not embed.
    #[error("unknown built-in guest (the only one is builtin:oxguest)")]
    UnknownBuiltin,
    /// `--boot-protocol pvh` with a kernel that has no PVH entry.
    #[error("the kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhEntry,
    /// A bzImage too old for the 64-bit boot protocol.
    #[error("the bzImage does not support the 64-bit boot protocol (needs boot protocol 2.12)")]
    No64BitEntry,
    /// The image extends past guest RAM below the MMIO hole.
    #[error("does not fit in guest memory: it ends at {end:#x}, past the {memory_mib} MiB of RAM")]
    DoesNotFit {
        /// First byte after the image.
        end: u64,
        /// Guest RAM size.
        memory_mib: u64,
    },
    /// The loader refused the image.
    #[error("cannot load: {0}")]
    Load(String),
}

/// Errors building or running a VM. Messages name the option and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A configuration value is invalid.
    #[error("{option} {value}: {problem}")]
    InvalidOption {
        /// The command-line option (and JSON field) at fault.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// The kernel cannot be used.
    #[error("--kernel {}", path.display())]
    Kernel {
        /// The kernel path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: KernelError,
    },
    /// The firmware image cannot be used.
    #[error("--firmware {}", path.display())]
    Firmware {
        /// The firmware path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::firmware::FirmwareError,
    },
    /// The initrd cannot be used.
    #[error("--initrd {}", path.display())]
    Initrd {
        /// The initrd path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: KernelError,
    },
    /// The command line cannot be written.
    #[error("--cmdline: {0}")]
    Cmdline(String),
    /// Memory size overflows.
    #[error("--memory {0}M: too large")]
    MemoryTooLarge(u64),
    /// The memory layout cannot be built.
    #[error("--memory")]
    MemoryLayout(#[source] arch::memory::MemoryError),
    /// Guest RAM cannot be allocated.
    #[error("cannot allocate guest memory: {0}")]
    AllocateMemory(String),
    /// The serial output file cannot be opened.
    #[error("--serial file={}: cannot open", path.display())]
    SerialFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing boot tables failed.
    #[error("cannot write the boot tables: {0}")]
    BootTables(String),
    /// A KVM call failed.
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::HypervisorError),
    /// A device could not be set up.
    #[error("cannot set up device {device}: {problem}")]
    Device {
        /// Which device.
        device: &'static str,
        /// What failed.
        problem: String,
    },
    /// A snapshot cannot be restored.
    #[error("--restore {}: {problem}", dir.display())]
    Restore {
        /// The snapshot directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Thread or event-loop plumbing failed.
    #[error("{0}")]
    Runtime(String),
}
