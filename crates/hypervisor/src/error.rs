use std::io;

/// Errors from KVM calls. Each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// `/dev/kvm` is missing.
    #[error(
        "/dev/kvm does not exist: this host has no KVM (load the kvm module, or enable nested virtualization)"
    )]
    NoKvm,
    /// `/dev/kvm` exists but we may not open it.
    #[error(
        "no permission to open /dev/kvm: run as root or add this user to the group that owns /dev/kvm"
    )]
    KvmPermission,
    /// Opening `/dev/kvm` failed for another reason.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] io::Error),
    /// KVM reports an API version other than 12.
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    /// A capability oxvmm needs is absent.
    #[error("this host's KVM lacks the capability {0}")]
    MissingCapability(&'static str),
    /// An ioctl failed.
    #[error("KVM {operation} failed")]
    Ioctl {
        /// What we asked KVM to do.
        operation: &'static str,
        /// The error KVM returned.
        #[source]
        source: io::Error,
    },
}

impl HypervisorError {
    pub(crate) fn ioctl(operation: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |e| HypervisorError::Ioctl {
            operation,
            source: io::Error::from_raw_os_error(e.errno()),
        }
    }
}
