//! Connection set-up and host information: what every virsh session calls first, plus
//! `version`, `hostname`, `uri`, `capabilities`, `nodeinfo`.

use rpc::procedures::{
    AUTH_NONE, AuthListRet, ConnectGetCapabilitiesRet, ConnectGetHostnameRet,
    ConnectGetLibVersionRet, ConnectGetMaxVcpusRet, ConnectGetTypeRet, ConnectGetUriRet,
    ConnectGetVersionRet, ConnectIsSecureRet, ConnectSupportsFeatureRet, NodeGetCpuMapRet,
    NodeGetInfoRet, NodeGetSecurityModelRet, c_chars_fixed, call, feature,
};
use rpc::server::{Connection, IncomingCall, Reply};
use rpc::{Procedure, RemoteError};

use super::Daemon;

/// The URI of the native driver (what virsh's `uri` prints).
pub const URI: &str = "oxvirt:///system";
/// The driver name `virsh version` prints ("Using API: OXVIRT ...").
pub const DRIVER_TYPE: &str = "OXVIRT";
/// The libvirt version whose protocol we speak (`virsh version`'s "library" of the daemon).
const LIBVIRT_VERSION: u64 = 9_000_000;
/// `VIR_CONNECT_RO`.
const CONNECT_RO: u32 = 1;

/// Facts about the host, read once at start.
#[derive(Debug, Clone)]
pub struct HostInfo {
    hostname: String,
    cpus: u32,
    memory_kib: u64,
    mhz: i32,
}

impl HostInfo {
    /// Reads the host name, CPU count, memory and CPU frequency.
    pub fn read() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostInfo {
            hostname: hostname(),
            cpus: host_cpus(),
            memory_kib: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0),
            mhz: cpu_mhz(&cpuinfo).unwrap_or(0),
        }
    }

    /// Online host CPUs.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, which it borrows
    // mutably for the call.
    let ret = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if ret != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Online CPUs of the host.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1)
}

/// A `/proc/meminfo` (or `/proc/<pid>/status`) field in KiB.
pub fn meminfo_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

fn cpu_mhz(cpuinfo: &str) -> Option<i32> {
    let value = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(value as i32)
}

/// The capabilities XML: one x86_64 host, guests of type `hvm` run by domain type `kvm`.
pub fn capabilities_xml(emulator: &str) -> String {
    format!(
        "<capabilities>\n\n  <host>\n    <cpu>\n      <arch>x86_64</arch>\n    </cpu>\n  </host>\n\n  \
         <guest>\n    <os_type>hvm</os_type>\n    <arch name='x86_64'>\n      <wordsize>64</wordsize>\n      \
         <emulator>{emulator}</emulator>\n      <machine>pc</machine>\n      <domain type='kvm'/>\n    \
         </arch>\n    <features>\n      <acpi default='on' toggle='no'/>\n      \
         <apic default='on' toggle='no'/>\n    </features>\n  </guest>\n\n</capabilities>\n"
    )
}

/// `version` encodes as libvirt does: major * 1,000,000 + minor * 1,000 + release.
fn own_version() -> u64 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    let release = parts.next().unwrap_or(0);
    major * 1_000_000 + minor * 1_000 + release
}

impl Daemon {
    /// The connection and host procedures; `None` for any other.
    pub(super) async fn connect_call(
        &self,
        conn: &Connection,
        call: &IncomingCall,
    ) -> Option<Result<Reply, RemoteError>> {
        Some(match call.procedure {
            Procedure::AuthList => Reply::encode::<call::AuthList>(&AuthListRet {
                types: vec![AUTH_NONE],
            }),
            Procedure::ConnectSupportsFeature => {
                call.handle::<call::ConnectSupportsFeature, _, _>(|a| async move {
                    Ok(ConnectSupportsFeatureRet {
                        supported: i32::from(supports_feature(conn, a.feature)),
                    })
                })
                .await
            }
            Procedure::ConnectOpen => {
                call.handle::<call::ConnectOpen, _, _>(|a| async move { open(conn, a) })
                    .await
            }
            Procedure::ConnectClose
            | Procedure::ConnectRegisterCloseCallback
            | Procedure::ConnectUnregisterCloseCallback => Ok(Reply::empty()),
            Procedure::ConnectGetType => {
                Reply::encode::<call::ConnectGetType>(&ConnectGetTypeRet {
                    type_: DRIVER_TYPE.into(),
                })
            }
            Procedure::ConnectGetVersion => {
                Reply::encode::<call::ConnectGetVersion>(&ConnectGetVersionRet {
                    hv_ver: own_version(),
                })
            }
            Procedure::ConnectGetLibVersion => {
                Reply::encode::<call::ConnectGetLibVersion>(&ConnectGetLibVersionRet {
                    lib_ver: LIBVIRT_VERSION,
                })
            }
            Procedure::ConnectGetHostname => {
                Reply::encode::<call::ConnectGetHostname>(&ConnectGetHostnameRet {
                    hostname: self.host.hostname.clone(),
                })
            }
            Procedure::ConnectGetUri => {
                Reply::encode::<call::ConnectGetUri>(&ConnectGetUriRet { uri: URI.into() })
            }
            Procedure::ConnectGetCapabilities => {
                let oxvmm = &self.registry.driver().config().oxvmm;
                Reply::encode::<call::ConnectGetCapabilities>(&ConnectGetCapabilitiesRet {
                    capabilities: capabilities_xml(&oxvmm.display().to_string()),
                })
            }
            Procedure::ConnectGetMaxVcpus => {
                Reply::encode::<call::ConnectGetMaxVcpus>(&ConnectGetMaxVcpusRet {
                    max_vcpus: domain::native::MAX_NATIVE_VCPUS as i32,
                })
            }
            Procedure::ConnectIsSecure => {
                Reply::encode::<call::ConnectIsSecure>(&ConnectIsSecureRet { secure: 1 })
            }
            Procedure::NodeGetInfo => Reply::encode::<call::NodeGetInfo>(&self.node_info()),
            Procedure::NodeGetSecurityModel => {
                Reply::encode::<call::NodeGetSecurityModel>(&NodeGetSecurityModelRet::default())
            }
            Procedure::NodeGetCpuMap => {
                call.handle::<call::NodeGetCpuMap, _, _>(|a| async move {
                    let cpus = self.host.cpus;
                    Ok(NodeGetCpuMapRet {
                        cpumap: if a.need_map != 0 {
                            all_cpus_map(cpus)
                        } else {
                            Vec::new()
                        },
                        online: if a.need_online != 0 { cpus } else { 0 },
                        ret: cpus as i32,
                    })
                })
                .await
            }
            _ => return None,
        })
    }

    fn node_info(&self) -> NodeGetInfoRet {
        let host = &self.host;
        NodeGetInfoRet {
            model: c_chars_fixed("x86_64"),
            memory: host.memory_kib,
            cpus: host.cpus as i32,
            mhz: host.mhz,
            nodes: 1,
            sockets: 1,
            cores: host.cpus as i32,
            threads: 1,
        }
    }
}

fn supports_feature(conn: &Connection, feature: i32) -> bool {
    match feature {
        feature::PROGRAM_KEEPALIVE => {
            conn.enable_keepalive();
            true
        }
        feature::REMOTE_EVENT_CALLBACK
        | feature::REMOTE_CLOSE_CALLBACK
        | feature::TYPED_PARAM_STRING => true,
        _ => false,
    }
}

fn open(conn: &Connection, args: rpc::procedures::ConnectOpenArgs) -> Result<(), RemoteError> {
    if args.flags & CONNECT_RO != 0 {
        conn.set_read_only();
    }
    // virsh sends the URI without its transport; an empty name means "the default driver".
    match args.name.as_deref() {
        None | Some("") | Some(URI) | Some("oxvirt:///") => Ok(()),
        Some(other) => Err(RemoteError::new(
            rpc::remote_error::code::NO_CONNECT,
            rpc::remote_error::domain::REMOTE,
            format!("no connection driver available for {other}: this daemon serves {URI} only"),
        )),
    }
}

/// A CPU bitmap with the first `cpus` bits set (libvirt's layout: CPU n is bit n % 8 of byte
/// n / 8).
pub fn all_cpus_map(cpus: u32) -> Vec<u8> {
    let mut map = vec![0u8; cpus.div_ceil(8) as usize];
    for cpu in 0..cpus as usize {
        map[cpu / 8] |= 1 << (cpu % 8);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_maps_set_one_bit_per_cpu() {
        assert_eq!(all_cpus_map(2), vec![0b11]);
        assert_eq!(all_cpus_map(9), vec![0xff, 0x01]);
    }

    #[test]
    fn meminfo_fields_are_read_in_kib() {
        let text = "MemTotal:       24576000 kB\nMemFree:  10 kB\n";

        assert_eq!(meminfo_kib(text, "MemTotal"), Some(24_576_000));
        assert_eq!(meminfo_kib(text, "MemFree"), Some(10));
        assert_eq!(meminfo_kib(text, "Swap"), None);
    }

    #[test]
    fn capabilities_name_an_x86_64_kvm_guest() {
        let xml = capabilities_xml("/usr/bin/oxvmm");

        assert!(xml.contains("<arch>x86_64</arch>"), "{xml}");
        assert!(xml.contains("<os_type>hvm</os_type>"), "{xml}");
        assert!(xml.contains("<domain type='kvm'/>"), "{xml}");
    }

    #[test]
    fn capabilities_validate_against_libvirts_schema() {
        let schema = "/usr/share/libvirt/schemas/capability.rng";
        assert!(
            std::path::Path::new(schema).exists(),
            "{schema} is missing: install the Debian package libvirt0 (or libvirt-clients)"
        );
        let file = std::env::temp_dir().join(format!("oxvirtd-caps-{}.xml", std::process::id()));
        std::fs::write(&file, capabilities_xml("/usr/bin/oxvmm")).unwrap();

        let out = std::process::Command::new("xmllint")
            .args(["--noout", "--relaxng", schema])
            .arg(&file)
            .output()
            .expect("xmllint (Debian package libxml2-utils)");
        std::fs::remove_file(&file).unwrap();

        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_version_is_encoded_as_libvirt_does() {
        let v = own_version();

        assert!(v > 0 && v < 1_000_000_000, "{v}");
    }
}
