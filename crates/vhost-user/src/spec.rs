//! The `DEVICE` argument: which device model to serve and its options, as
//! `KIND [key=value[,key=value…]]` (`blk path=disk.img,readonly=on`, `rng`,
//! `rng src=/dev/hwrng`), and how to build it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use storage::{RawFile, RawFileError, RawFileOptions};
use virtio::block::{Block, BlockError, BlockOptions, IO_THREADS};
use virtio::net::{Net, NetOptions, TapBackend, random_mac};
use virtio::rng::Rng;
use virtio::vsock::Vsock;
use virtio::vsock::unix::{UnixSocketBackend, VsockHostError};

use crate::backend::DeviceBackend;

/// Where virtio-rng reads its entropy unless `src=` says otherwise.
pub const DEFAULT_RNG_SOURCE: &str = "/dev/urandom";

/// A device to serve, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// virtio-blk over a raw image file or block device.
    Blk {
        /// The image.
        path: PathBuf,
        /// The guest may only read.
        read_only: bool,
        /// What GET_ID answers (at most 20 bytes).
        serial: Option<String>,
    },
    /// virtio-rng reading from a file.
    Rng {
        /// The entropy source.
        source: PathBuf,
    },
    /// virtio-vsock with Firecracker's host side: host programs connect to `uds` and write
    /// `CONNECT <port>`; the guest's connections to host port P go to `uds_P`.
    Vsock {
        /// The guest's context ID.
        cid: u64,
        /// The host-side Unix socket path (and prefix of the per-port paths).
        uds: PathBuf,
    },
    /// virtio-net over a TAP device (created if it does not exist; rate limits are not
    /// available here).
    Net {
        /// The TAP interface.
        tap: String,
    },
}

/// Why a `DEVICE` argument was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The kind is none of ours.
    #[error("unknown device {kind:?}: expected blk, rng, vsock or net")]
    UnknownDevice {
        /// What was given.
        kind: String,
    },
    /// An option without `=`.
    #[error("{device}: option {option:?} is not key=value")]
    NotKeyValue {
        /// The device kind.
        device: &'static str,
        /// The option as given.
        option: String,
    },
    /// An option the device does not have.
    #[error("{device}: unknown option {key:?} (options: {known})")]
    UnknownOption {
        /// The device kind.
        device: &'static str,
        /// The key given.
        key: String,
        /// The keys it has.
        known: &'static str,
    },
    /// An option given twice.
    #[error("{device}: option {key:?} is given twice")]
    Duplicate {
        /// The device kind.
        device: &'static str,
        /// The key.
        key: String,
    },
    /// A required option is missing.
    #[error("{device}: option {key}= is required")]
    Missing {
        /// The device kind.
        device: &'static str,
        /// The key.
        key: &'static str,
    },
    /// An option's value is not what it must be.
    #[error("{device}: {key}={value:?} is invalid: expected {expected}")]
    BadValue {
        /// The device kind.
        device: &'static str,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
}

/// Why a device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The disk image could not be opened.
    #[error("blk: {0}")]
    Disk(#[from] RawFileError),
    /// The block device refused its options.
    #[error("blk: {0}")]
    Block(#[from] BlockError),
    /// The entropy source could not be opened.
    #[error("rng: cannot open entropy source {path}: {source}")]
    RngSource {
        /// The source.
        path: PathBuf,
        /// What open reported.
        #[source]
        source: std::io::Error,
    },
    /// The vsock host socket could not be set up.
    #[error("vsock: {0}")]
    VsockSocket(#[from] VsockHostError),
    /// The vsock device refused its CID or could not make its epoll instance.
    #[error("vsock: {0}")]
    Vsock(#[from] virtio::vsock::VsockError),
    /// The TAP could not be opened.
    #[error("net: {0}")]
    Tap(#[from] net_util::TapError),
    /// No MAC address could be drawn for the configuration space.
    #[error("net: cannot draw a MAC address from /dev/urandom: {0}")]
    Mac(#[source] std::io::Error),
}

/// The options of one device: `key=value` pairs, each key once.
struct Options {
    device: &'static str,
    known: &'static str,
    values: BTreeMap<String, String>,
}

impl Options {
    fn parse(device: &'static str, known: &'static str, text: &str) -> Result<Self, SpecError> {
        let mut values = BTreeMap::new();
        for option in text.split(',').filter(|option| !option.is_empty()) {
            let Some((key, value)) = option.split_once('=') else {
                return Err(SpecError::NotKeyValue {
                    device,
                    option: option.to_owned(),
                });
            };
            if !known.split(", ").any(|k| k == key) {
                return Err(SpecError::UnknownOption {
                    device,
                    key: key.to_owned(),
                    known,
                });
            }
            if values.insert(key.to_owned(), value.to_owned()).is_some() {
                return Err(SpecError::Duplicate {
                    device,
                    key: key.to_owned(),
                });
            }
        }
        Ok(Self {
            device,
            known,
            values,
        })
    }

    fn take(&mut self, key: &'static str) -> Option<String> {
        debug_assert!(self.known.split(", ").any(|k| k == key));
        self.values.remove(key)
    }

    fn required(&mut self, key: &'static str) -> Result<String, SpecError> {
        let device = self.device;
        self.take(key)
            .filter(|value| !value.is_empty())
            .ok_or(SpecError::Missing { device, key })
    }

    fn switch(&mut self, key: &'static str) -> Result<bool, SpecError> {
        match self.take(key).as_deref() {
            None | Some("off") => Ok(false),
            Some("on") => Ok(true),
            Some(other) => Err(SpecError::BadValue {
                device: self.device,
                key,
                value: other.to_owned(),
                expected: "on or off",
            }),
        }
    }
}

impl DeviceSpec {
    /// Parses `kind` and its comma-separated `key=value` options (may be empty).
    pub fn parse(kind: &str, options: &str) -> Result<Self, SpecError> {
        match kind {
            "blk" => {
                let mut options = Options::parse("blk", "path, readonly, serial", options)?;
                Ok(Self::Blk {
                    path: options.required("path")?.into(),
                    read_only: options.switch("readonly")?,
                    serial: options.take("serial"),
                })
            }
            "rng" => {
                let mut options = Options::parse("rng", "src", options)?;
                let source = options
                    .take("src")
                    .unwrap_or_else(|| DEFAULT_RNG_SOURCE.to_owned());
                Ok(Self::Rng {
                    source: source.into(),
                })
            }
            "vsock" => {
                let mut options = Options::parse("vsock", "cid, uds", options)?;
                let cid_text = options.required("cid")?;
                // CIDs 0-2 are reserved (hypervisor, local, host); u32::MAX is "any".
                let cid = cid_text
                    .parse::<u64>()
                    .ok()
                    .filter(|cid| (3..u64::from(u32::MAX)).contains(cid))
                    .ok_or(SpecError::BadValue {
                        device: "vsock",
                        key: "cid",
                        value: cid_text,
                        expected: "a context ID from 3 to 4294967294",
                    })?;
                Ok(Self::Vsock {
                    cid,
                    uds: options.required("uds")?.into(),
                })
            }
            "net" => {
                let mut options = Options::parse("net", "tap", options)?;
                Ok(Self::Net {
                    tap: options.required("tap")?,
                })
            }
            _ => Err(SpecError::UnknownDevice {
                kind: kind.to_owned(),
            }),
        }
    }

    /// Opens what the device needs and builds it.
    pub fn build(&self) -> Result<DeviceBackend, BuildError> {
        match self {
            Self::Blk {
                path,
                read_only,
                serial,
            } => {
                let options = RawFileOptions {
                    read_only: *read_only,
                    direct: false,
                };
                let disk = RawFile::open(path, options)?;
                let block_options = BlockOptions {
                    serial: serial.clone(),
                    rate_limiter: None,
                };
                // Requests run on I/O threads, several in flight at once, as in oxvmm; the
                // vring worker watches their completions (the device's own event).
                let block =
                    Block::new(Box::new(disk), block_options)?.with_io_threads(IO_THREADS)?;
                Ok(DeviceBackend::new(Box::new(block), "virtio-blk").with_requests_in_flight())
            }
            Self::Rng { source } => {
                let file = File::open(source).map_err(|error| BuildError::RngSource {
                    path: source.clone(),
                    source: error,
                })?;
                Ok(DeviceBackend::new(
                    Box::new(Rng::new(Box::new(file))),
                    "virtio-rng",
                ))
            }
            Self::Vsock { cid, uds } => {
                let host = UnixSocketBackend::bind(uds)?;
                let vsock = Vsock::new(*cid, Box::new(host))?;
                Ok(DeviceBackend::new(Box::new(vsock), "virtio-vsock"))
            }
            Self::Net { tap } => {
                let tap = net_util::Tap::open(tap)?;
                let options = NetOptions {
                    // Front-ends such as QEMU's virtio-net keep their own configuration space
                    // and never read this one; it is there for those that do.
                    mac: random_mac().map_err(BuildError::Mac)?,
                    offloads: tap.supports_all_offloads(),
                    ..NetOptions::default()
                };
                tracing::info!(tap = tap.name(), offloads = options.offloads, "virtio-net");
                let net = Net::new(Box::new(TapBackend(tap)), options);
                Ok(DeviceBackend::new(Box::new(net), "virtio-net").with_edge_triggered_event())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blk_options_are_parsed() {
        let spec = DeviceSpec::parse("blk", "path=/d.img,readonly=on,serial=abc").unwrap();

        assert_eq!(
            spec,
            DeviceSpec::Blk {
                path: "/d.img".into(),
                read_only: true,
                serial: Some("abc".into())
            }
        );
    }

    #[test]
    fn blk_needs_a_path() {
        assert_eq!(
            DeviceSpec::parse("blk", "readonly=off"),
            Err(SpecError::Missing {
                device: "blk",
                key: "path"
            })
        );
    }

    #[test]
    fn rng_reads_urandom_by_default() {
        assert_eq!(
            DeviceSpec::parse("rng", "").unwrap(),
            DeviceSpec::Rng {
                source: DEFAULT_RNG_SOURCE.into()
            }
        );
    }

    #[test]
    fn bad_options_are_named() {
        let unknown = DeviceSpec::parse("rng", "source=/x").unwrap_err();
        let twice = DeviceSpec::parse("blk", "path=a,path=b").unwrap_err();
        let switch = DeviceSpec::parse("blk", "path=a,readonly=yes").unwrap_err();
        let bare = DeviceSpec::parse("blk", "path").unwrap_err();

        assert_eq!(
            unknown.to_string(),
            "rng: unknown option \"source\" (options: src)"
        );
        assert!(matches!(twice, SpecError::Duplicate { .. }));
        assert_eq!(
            switch.to_string(),
            "blk: readonly=\"yes\" is invalid: expected on or off"
        );
        assert!(matches!(bare, SpecError::NotKeyValue { .. }));
    }

    #[test]
    fn vsock_cids_below_3_are_refused() {
        let error = DeviceSpec::parse("vsock", "cid=2,uds=/tmp/v").unwrap_err();

        assert!(matches!(error, SpecError::BadValue { key: "cid", .. }));
    }

    #[test]
    fn vsock_is_built_listening_on_its_socket_and_refuses_a_file_in_the_way() {
        use vhost_user_backend::VhostUserBackend;
        let dir = std::env::temp_dir().join(format!("oxvirt-vu-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let spec = DeviceSpec::parse("vsock", &format!("cid=7,uds={}", uds.display())).unwrap();

        let backend = spec.build().unwrap();
        let listening = std::os::unix::net::UnixStream::connect(&uds);
        let config = backend.get_config(0, 8);
        drop(backend);
        std::fs::write(&uds, b"not a socket").unwrap();
        let refused = spec.build().err().unwrap().to_string();

        assert!(listening.is_ok(), "{listening:?}");
        assert_eq!(config, 7u64.to_le_bytes(), "guest_cid in GET_CONFIG");
        assert!(
            refused.starts_with("vsock: ") && refused.contains("v.sock"),
            "{refused}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        assert_eq!(
            DeviceSpec::parse("gpu", ""),
            Err(SpecError::UnknownDevice { kind: "gpu".into() })
        );
    }

    #[test]
    fn a_bad_tap_name_is_an_error_naming_it() {
        let spec = DeviceSpec::parse("net", "tap=oxvirt-name-too-long").unwrap();

        let error = spec.build().err().unwrap();

        let text = error.to_string();
        assert!(
            text.starts_with("net: ") && text.contains("oxvirt-name-too-long"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_disk_is_an_error_naming_it() {
        let spec = DeviceSpec::parse("blk", "path=/nonexistent/oxvirt-disk.img").unwrap();

        let error = spec.build().err().unwrap();

        assert!(error.to_string().contains("/nonexistent/oxvirt-disk.img"));
    }
}
