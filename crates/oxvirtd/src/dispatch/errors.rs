//! Our errors as libvirt's: the error number a client's code checks and the message prefix
//! virsh prints (`error: Requested operation is not valid: domain is not running`).

use oxvirtd::{NativeError, RegistryError};
use rpc::RemoteError;
use rpc::remote_error::{code, domain as from};

/// A registry error as libvirt reports the same situation.
pub fn registry(e: RegistryError) -> RemoteError {
    match e {
        RegistryError::NoDomain { what } => {
            RemoteError::no_domain(format!("no domain with matching {what}"))
        }
        RegistryError::NameExists { name, uuid } => RemoteError::operation_failed(format!(
            "domain '{name}' already exists with uuid {uuid}"
        )),
        RegistryError::UuidInUse { uuid, name } => RemoteError::operation_failed(format!(
            "domain '{name}' is already defined with uuid {uuid}"
        )),
        RegistryError::NotPersistent { .. } => {
            RemoteError::operation_invalid("cannot undefine transient domain")
        }
        RegistryError::AlreadyActive { .. } => {
            RemoteError::operation_invalid("domain is already running")
        }
        RegistryError::Config { message, .. } => config_unsupported(message),
        RegistryError::Name(e) => RemoteError::xml_error(e),
        RegistryError::Store(e) => RemoteError::operation_failed(e),
        RegistryError::Driver(e) => driver(e),
    }
}

/// A native driver error.
pub fn driver(e: NativeError) -> RemoteError {
    match e {
        NativeError::NotRunning { .. } => RemoteError::operation_invalid("domain is not running"),
        NativeError::AlreadyActive { .. } => {
            RemoteError::operation_invalid("domain is already running")
        }
        NativeError::Api { source, .. } if source.status() == Some(409) => {
            // oxvmm refuses a request the VM's state does not allow (e.g. shutdown while
            // paused); its message says which.
            RemoteError::operation_invalid(source)
        }
        NativeError::Internal(message) => RemoteError::internal(message),
        other => RemoteError::operation_failed(other),
    }
}

/// libvirt's `VIR_ERR_CONFIG_UNSUPPORTED`: a valid definition this driver cannot run.
pub fn config_unsupported(detail: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(
        code::CONFIG_UNSUPPORTED,
        from::DOMAIN,
        format!("unsupported configuration: {detail}"),
    )
}

/// libvirt's refusal of flags a function does not know (`virCheckFlags`).
pub fn unsupported_flags(flags: u32, function: &str) -> RemoteError {
    RemoteError::invalid_arg(format!(
        "unsupported flags (0x{flags:x}) in function {function}"
    ))
}

/// Refuses `flags` bits outside `allowed`.
pub fn check_flags(flags: u32, allowed: u32, function: &str) -> Result<(), RemoteError> {
    let unknown = flags & !allowed;
    if unknown != 0 {
        return Err(unsupported_flags(unknown, function));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirtd::Uuid;

    #[test]
    fn registry_errors_read_like_libvirt() {
        let exists = registry(RegistryError::NameExists {
            name: "a".into(),
            uuid: Uuid([0x11; 16]),
        });
        let running = registry(RegistryError::Driver(NativeError::NotRunning {
            name: "a".into(),
        }));

        assert_eq!(exists.code, code::OPERATION_FAILED);
        assert_eq!(
            exists.message_text(),
            "operation failed: domain 'a' already exists with uuid \
             11111111-1111-1111-1111-111111111111"
        );
        assert_eq!(running.code, code::OPERATION_INVALID);
        assert_eq!(
            running.message_text(),
            "Requested operation is not valid: domain is not running"
        );
    }

    #[test]
    fn unknown_flags_are_named_in_hex() {
        let err = check_flags(0x13, 0x1, "virDomainCreateXML").unwrap_err();

        assert_eq!(err.code, code::INVALID_ARG);
        assert!(err.message_text().contains("(0x12)"), "{err}");
        assert!(check_flags(1, 1, "f").is_ok());
    }
}
