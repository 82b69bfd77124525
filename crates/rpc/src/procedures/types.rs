//! The XDR structures of the remote program that the covered procedures use, field for field
//! as in libvirt's `remote_protocol.x` (names in snake case). Limits are libvirt 9.0's.

use crate::xdr::{Decoder, Encoder, Uuid, XdrDecode, XdrEncode, XdrError};
use crate::xdr_struct;

/// `REMOTE_DOMAIN_LIST_MAX`: domains in one list.
pub const DOMAIN_LIST_MAX: u32 = 16_384;
/// `REMOTE_AUTH_TYPE_LIST_MAX`.
pub const AUTH_TYPE_LIST_MAX: u32 = 20;
/// `REMOTE_CPUMAP_MAX`.
pub const CPUMAP_MAX: u32 = 2_048;
/// `REMOTE_CPUMAPS_MAX`.
pub const CPUMAPS_MAX: u32 = 8_388_608;
/// `REMOTE_VCPUINFO_MAX`.
pub const VCPUINFO_MAX: u32 = 16_384;
/// `REMOTE_DOMAIN_MEMORY_STATS_MAX`.
pub const DOMAIN_MEMORY_STATS_MAX: u32 = 1_024;
/// `REMOTE_DOMAIN_BLOCK_STATS_PARAMETERS_MAX`.
pub const DOMAIN_BLOCK_STATS_PARAMETERS_MAX: u32 = 16;
/// `REMOTE_CONNECT_GET_ALL_DOMAIN_STATS_MAX`: typed parameters in one stats record.
pub const CONNECT_GET_ALL_DOMAIN_STATS_MAX: u32 = 262_144;
/// `REMOTE_SECURITY_LABEL_LIST_MAX`.
pub const SECURITY_LABEL_LIST_MAX: u32 = 64;
/// `REMOTE_SECURITY_MODEL_MAX` (`VIR_SECURITY_MODEL_BUFLEN`).
pub const SECURITY_MODEL_MAX: u32 = 257;
/// `REMOTE_SECURITY_DOI_MAX` (`VIR_SECURITY_DOI_BUFLEN`).
pub const SECURITY_DOI_MAX: u32 = 257;
/// `REMOTE_SECURITY_LABEL_MAX` (`VIR_SECURITY_LABEL_BUFLEN`).
pub const SECURITY_LABEL_MAX: u32 = 4_097;
/// `REMOTE_DOMAIN_MESSAGES_MAX`.
pub const DOMAIN_MESSAGES_MAX: u32 = 2_048;

/// `REMOTE_AUTH_NONE`: the only authentication type a Unix socket needs.
pub const AUTH_NONE: i32 = 0;

/// `VIR_DRV_FEATURE_*` numbers asked with `CONNECT_SUPPORTS_FEATURE` (libvirt_internal.h).
pub mod feature {
    /// `VIR_DRV_FEATURE_FD_PASSING`.
    pub const FD_PASSING: i32 = 8;
    /// `VIR_DRV_FEATURE_TYPED_PARAM_STRING`.
    pub const TYPED_PARAM_STRING: i32 = 9;
    /// `VIR_DRV_FEATURE_PROGRAM_KEEPALIVE`: virsh asks before CONNECT_OPEN.
    pub const PROGRAM_KEEPALIVE: i32 = 10;
    /// `VIR_DRV_FEATURE_XML_MIGRATABLE`.
    pub const XML_MIGRATABLE: i32 = 11;
    /// `VIR_DRV_FEATURE_REMOTE_EVENT_CALLBACK`: with 1, virsh registers events with
    /// `CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY` and expects `*_CALLBACK_*` messages.
    pub const REMOTE_EVENT_CALLBACK: i32 = 14;
    /// `VIR_DRV_FEATURE_REMOTE_CLOSE_CALLBACK`: with 1, virsh calls
    /// `CONNECT_REGISTER_CLOSE_CALLBACK`.
    pub const REMOTE_CLOSE_CALLBACK: i32 = 15;
}

/// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`: the event id of lifecycle events.
pub const DOMAIN_EVENT_ID_LIFECYCLE: i32 = 0;
/// `VIR_DOMAIN_EVENT_ID_REBOOT`.
pub const DOMAIN_EVENT_ID_REBOOT: i32 = 1;

/// Converts a string to rpcgen `char` items with the trailing NUL libvirt sends.
pub fn c_chars(s: &str) -> Vec<i8> {
    s.bytes()
        .map(|b| b as i8)
        .chain(std::iter::once(0))
        .collect()
}

/// Converts a string to a fixed `char x[N]`, truncated to leave room for the NUL.
pub fn c_chars_fixed<const N: usize>(s: &str) -> [i8; N] {
    let mut out = [0i8; N];
    for (slot, b) in out.iter_mut().zip(s.bytes().take(N.saturating_sub(1))) {
        *slot = b as i8;
    }
    out
}

/// Reads rpcgen `char` items up to the first NUL as a (lossy) UTF-8 string.
pub fn c_chars_to_string(chars: &[i8]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

xdr_struct! {
    /// `remote_nonnull_domain`: how every call names a domain.
    pub struct NonnullDomain {
        /// Domain name.
        pub name: String,
        /// Domain UUID.
        pub uuid: Uuid,
        /// Domain id while running, -1 otherwise.
        pub id: i32,
    }

    /// `remote_vcpu_info`.
    pub struct VcpuInfo {
        /// vCPU number.
        pub number: u32,
        /// `virVcpuState`.
        pub state: i32,
        /// CPU time used, in nanoseconds.
        pub cpu_time: u64,
        /// Host CPU the vCPU runs on, -1 when offline.
        pub cpu: i32,
    }

    /// `remote_typed_param`.
    pub struct TypedParam {
        /// Parameter name, e.g. `state.state`.
        pub field: String,
        /// Parameter value.
        pub value: TypedParamValue,
    }

    /// `remote_domain_memory_stat`.
    pub struct DomainMemoryStat {
        /// `VIR_DOMAIN_MEMORY_STAT_*` tag.
        pub tag: i32,
        /// Value (KiB for sizes).
        pub val: u64,
    }

    /// `remote_domain_stats_record`.
    pub struct DomainStatsRecord {
        /// The domain.
        pub dom: NonnullDomain,
        /// Its statistics.
        pub params: Vec<TypedParam> [max = CONNECT_GET_ALL_DOMAIN_STATS_MAX],
    }

    /// One domain's security label (`remote_domain_get_security_label_ret`).
    pub struct SecurityLabel {
        /// NUL-terminated label as rpcgen chars (see [`c_chars`]).
        pub label: Vec<i8> [max = SECURITY_LABEL_MAX],
        /// Whether the label is enforced.
        pub enforcing: i32,
    }
}

impl Eq for NonnullDomain {}

/// `VIR_TYPED_PARAM_*` discriminants.
pub mod typed_param_type {
    /// `VIR_TYPED_PARAM_INT`.
    pub const INT: i32 = 1;
    /// `VIR_TYPED_PARAM_UINT`.
    pub const UINT: i32 = 2;
    /// `VIR_TYPED_PARAM_LLONG`.
    pub const LLONG: i32 = 3;
    /// `VIR_TYPED_PARAM_ULLONG`.
    pub const ULLONG: i32 = 4;
    /// `VIR_TYPED_PARAM_DOUBLE`.
    pub const DOUBLE: i32 = 5;
    /// `VIR_TYPED_PARAM_BOOLEAN`.
    pub const BOOLEAN: i32 = 6;
    /// `VIR_TYPED_PARAM_STRING`.
    pub const STRING: i32 = 7;
}

/// `remote_typed_param_value`: a union switched on the `VIR_TYPED_PARAM_*` type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedParamValue {
    /// `int i`.
    Int(i32),
    /// `unsigned int ui`.
    UInt(u32),
    /// `hyper l`.
    LLong(i64),
    /// `unsigned hyper ul`.
    ULLong(u64),
    /// `double d`.
    Double(f64),
    /// `int b`.
    Boolean(bool),
    /// `remote_nonnull_string s`.
    String(String),
}

impl Default for TypedParamValue {
    fn default() -> Self {
        Self::Int(0)
    }
}

impl XdrEncode for TypedParamValue {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        use typed_param_type as t;
        match self {
            Self::Int(v) => {
                enc.put_i32(t::INT);
                enc.put_i32(*v);
            }
            Self::UInt(v) => {
                enc.put_i32(t::UINT);
                enc.put_u32(*v);
            }
            Self::LLong(v) => {
                enc.put_i32(t::LLONG);
                enc.put_i64(*v);
            }
            Self::ULLong(v) => {
                enc.put_i32(t::ULLONG);
                enc.put_u64(*v);
            }
            Self::Double(v) => {
                enc.put_i32(t::DOUBLE);
                enc.put_f64(*v);
            }
            Self::Boolean(v) => {
                enc.put_i32(t::BOOLEAN);
                enc.put_i32(i32::from(*v));
            }
            Self::String(v) => {
                enc.put_i32(t::STRING);
                v.encode(enc)?;
            }
        }
        Ok(())
    }
}

impl XdrDecode for TypedParamValue {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        use typed_param_type as t;
        Ok(match dec.get_i32()? {
            t::INT => Self::Int(dec.get_i32()?),
            t::UINT => Self::UInt(dec.get_u32()?),
            t::LLONG => Self::LLong(dec.get_i64()?),
            t::ULLONG => Self::ULLong(dec.get_u64()?),
            t::DOUBLE => Self::Double(dec.get_f64()?),
            // libvirt treats any non-zero int as true.
            t::BOOLEAN => Self::Boolean(dec.get_i32()? != 0),
            t::STRING => Self::String(String::decode(dec)?),
            value => {
                return Err(XdrError::UnknownDiscriminant {
                    field: "remote_typed_param_value",
                    value,
                });
            }
        })
    }
}

impl TypedParam {
    /// A parameter named `field` with `value`.
    pub fn new(field: impl Into<String>, value: TypedParamValue) -> Self {
        Self {
            field: field.into(),
            value,
        }
    }
}

xdr_struct! {
    // ----- connection -----

    /// `remote_auth_list_ret`.
    pub struct AuthListRet {
        /// `REMOTE_AUTH_*` types; `[AUTH_NONE]` for no authentication.
        pub types: Vec<i32> [max = AUTH_TYPE_LIST_MAX],
    }

    /// `remote_connect_open_args`.
    pub struct ConnectOpenArgs {
        /// The URI without the transport, e.g. `oxvirt:///system`.
        pub name: Option<String>,
        /// `VIR_CONNECT_*` flags (1 = read-only).
        pub flags: u32,
    }

    /// `remote_connect_supports_feature_args`.
    pub struct ConnectSupportsFeatureArgs {
        /// A [`feature`] number.
        pub feature: i32,
    }

    /// `remote_connect_supports_feature_ret`.
    pub struct ConnectSupportsFeatureRet {
        /// 1 when supported.
        pub supported: i32,
    }

    /// `remote_connect_get_type_ret`.
    pub struct ConnectGetTypeRet {
        /// Hypervisor type name, e.g. `QEMU`.
        pub type_: String,
    }

    /// `remote_connect_get_version_ret`.
    pub struct ConnectGetVersionRet {
        /// Hypervisor version as major * 1,000,000 + minor * 1,000 + release.
        pub hv_ver: u64,
    }

    /// `remote_connect_get_lib_version_ret`.
    pub struct ConnectGetLibVersionRet {
        /// Library version, same encoding as `hv_ver`.
        pub lib_ver: u64,
    }

    /// `remote_connect_get_hostname_ret`.
    pub struct ConnectGetHostnameRet {
        /// Host name.
        pub hostname: String,
    }

    /// `remote_connect_get_uri_ret`.
    pub struct ConnectGetUriRet {
        /// The canonical URI of the connection.
        pub uri: String,
    }

    /// `remote_connect_get_capabilities_ret`.
    pub struct ConnectGetCapabilitiesRet {
        /// Capabilities XML.
        pub capabilities: String,
    }

    /// `remote_connect_get_sysinfo_args`.
    pub struct ConnectGetSysinfoArgs {
        /// Unused flags.
        pub flags: u32,
    }

    /// `remote_connect_get_sysinfo_ret`.
    pub struct ConnectGetSysinfoRet {
        /// Sysinfo XML.
        pub sysinfo: String,
    }

    /// `remote_connect_get_max_vcpus_args`.
    pub struct ConnectGetMaxVcpusArgs {
        /// Guest type, may be absent.
        pub type_: Option<String>,
    }

    /// `remote_connect_get_max_vcpus_ret`.
    pub struct ConnectGetMaxVcpusRet {
        /// Maximum vCPUs per guest.
        pub max_vcpus: i32,
    }

    /// `remote_connect_is_secure_ret`.
    pub struct ConnectIsSecureRet {
        /// 1 when the channel is secure (a local Unix socket is).
        pub secure: i32,
    }

    /// `remote_node_get_info_ret`.
    pub struct NodeGetInfoRet {
        /// CPU model as a NUL-padded `char[32]` (see [`c_chars_fixed`]).
        pub model: [i8; 32],
        /// Memory in KiB.
        pub memory: u64,
        /// Active CPUs.
        pub cpus: i32,
        /// CPU frequency in MHz.
        pub mhz: i32,
        /// NUMA nodes.
        pub nodes: i32,
        /// Sockets per node.
        pub sockets: i32,
        /// Cores per socket.
        pub cores: i32,
        /// Threads per core.
        pub threads: i32,
    }

    /// `remote_node_get_security_model_ret`.
    pub struct NodeGetSecurityModelRet {
        /// Model name as NUL-terminated chars; empty (no items) for none.
        pub model: Vec<i8> [max = SECURITY_MODEL_MAX],
        /// Domain of interpretation as NUL-terminated chars.
        pub doi: Vec<i8> [max = SECURITY_DOI_MAX],
    }

    /// `remote_node_get_cpu_map_args`.
    pub struct NodeGetCpuMapArgs {
        /// Non-zero when the caller wants the map.
        pub need_map: i32,
        /// Non-zero when the caller wants the online count.
        pub need_online: i32,
        /// Unused flags.
        pub flags: u32,
    }

    /// `remote_node_get_cpu_map_ret`.
    pub struct NodeGetCpuMapRet {
        /// Bitmap of online CPUs (empty unless asked).
        pub cpumap: Vec<u8> [max = CPUMAP_MAX],
        /// Online CPU count (0 unless asked).
        pub online: u32,
        /// Number of CPUs in the map (host CPU count).
        pub ret: i32,
    }

    // ----- listing -----

    /// `remote_connect_list_all_domains_args`.
    pub struct ConnectListAllDomainsArgs {
        /// Non-zero when the caller wants the domains, not just the count.
        pub need_results: i32,
        /// `VIR_CONNECT_LIST_DOMAINS_*` filter flags.
        pub flags: u32,
    }

    /// `remote_connect_list_all_domains_ret`.
    pub struct ConnectListAllDomainsRet {
        /// The domains (empty when `need_results` was 0).
        pub domains: Vec<NonnullDomain> [max = DOMAIN_LIST_MAX],
        /// The number of matching domains.
        pub ret: u32,
    }

    /// `remote_connect_num_of_domains_ret` (also `..._defined_domains_ret`).
    pub struct ConnectNumOfDomainsRet {
        /// Count.
        pub num: i32,
    }

    /// `remote_connect_list_domains_args`.
    pub struct ConnectListDomainsArgs {
        /// Maximum ids wanted.
        pub maxids: i32,
    }

    /// `remote_connect_list_domains_ret`.
    pub struct ConnectListDomainsRet {
        /// Ids of running domains.
        pub ids: Vec<i32> [max = DOMAIN_LIST_MAX],
    }

    /// `remote_connect_list_defined_domains_args`.
    pub struct ConnectListDefinedDomainsArgs {
        /// Maximum names wanted.
        pub maxnames: i32,
    }

    /// `remote_connect_list_defined_domains_ret`.
    pub struct ConnectListDefinedDomainsRet {
        /// Names of inactive persistent domains.
        pub names: Vec<String> [max = DOMAIN_LIST_MAX],
    }

    // ----- lookup, define, lifecycle -----

    /// `remote_domain_lookup_by_name_args`.
    pub struct DomainLookupByNameArgs {
        /// Domain name.
        pub name: String,
    }

    /// `remote_domain_lookup_by_uuid_args`.
    pub struct DomainLookupByUuidArgs {
        /// Domain UUID.
        pub uuid: Uuid,
    }

    /// `remote_domain_lookup_by_id_args`.
    pub struct DomainLookupByIdArgs {
        /// Domain id.
        pub id: i32,
    }

    /// A reply that is one domain (`remote_domain_lookup_by_*_ret`,
    /// `remote_domain_define_xml_ret`, `remote_domain_create_xml_ret`, ...).
    pub struct DomainRet {
        /// The domain.
        pub dom: NonnullDomain,
    }

    /// Arguments that are just a domain (`remote_domain_create_args`, `..._suspend_args`,
    /// `..._get_info_args`, ...).
    pub struct DomainArgs {
        /// The domain.
        pub dom: NonnullDomain,
    }

    /// Arguments that are a domain and flags (`remote_domain_destroy_flags_args`,
    /// `..._get_state_args`, `..._reboot_args`, `..._undefine_flags_args`, ...).
    pub struct DomainFlagsArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Procedure-specific flags.
        pub flags: u32,
    }

    /// `remote_domain_define_xml_args`.
    pub struct DomainDefineXmlArgs {
        /// Domain XML.
        pub xml: String,
    }

    /// `remote_domain_define_xml_flags_args`.
    pub struct DomainDefineXmlFlagsArgs {
        /// Domain XML.
        pub xml: String,
        /// `VIR_DOMAIN_DEFINE_*` flags.
        pub flags: u32,
    }

    /// `remote_domain_create_xml_args`.
    pub struct DomainCreateXmlArgs {
        /// Domain XML.
        pub xml_desc: String,
        /// `VIR_DOMAIN_START_*` flags.
        pub flags: u32,
    }

    /// `remote_domain_set_autostart_args`.
    pub struct DomainSetAutostartArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// 1 to autostart.
        pub autostart: i32,
    }

    /// A reply that is one int (`remote_domain_get_autostart_ret`, `..._is_active_ret`,
    /// `..._is_persistent_ret`, `..._has_managed_save_image_ret`, `..._snapshot_num_ret`, ...).
    pub struct IntRet {
        /// The value.
        pub value: i32,
    }

    // ----- information -----

    /// `remote_domain_get_info_ret` (C chars and shorts travel as 4-byte ints).
    pub struct DomainGetInfoRet {
        /// `virDomainState` (an `unsigned char` in C, 4 bytes on the wire).
        pub state: u32,
        /// Maximum memory in KiB.
        pub max_mem: u64,
        /// Current memory in KiB.
        pub memory: u64,
        /// vCPU count (an `unsigned short` in C, 4 bytes on the wire).
        pub nr_virt_cpu: u16,
        /// CPU time in nanoseconds.
        pub cpu_time: u64,
    }

    /// `remote_domain_get_state_ret`.
    pub struct DomainGetStateRet {
        /// `virDomainState`.
        pub state: i32,
        /// State-specific reason.
        pub reason: i32,
    }

    /// `remote_domain_get_os_type_ret`.
    pub struct DomainGetOsTypeRet {
        /// OS type, e.g. `hvm`.
        pub type_: String,
    }

    /// `remote_domain_get_max_memory_ret`.
    pub struct DomainGetMaxMemoryRet {
        /// Maximum memory in KiB.
        pub memory: u64,
    }

    /// `remote_domain_get_xml_desc_ret`.
    pub struct DomainGetXmlDescRet {
        /// Domain XML.
        pub xml: String,
    }

    /// `remote_domain_get_security_label_list_ret`.
    pub struct DomainGetSecurityLabelListRet {
        /// Labels.
        pub labels: Vec<SecurityLabel> [max = SECURITY_LABEL_LIST_MAX],
        /// Label count.
        pub ret: i32,
    }

    /// `remote_domain_get_messages_ret`.
    pub struct DomainGetMessagesRet {
        /// Taint and deprecation messages.
        pub msgs: Vec<String> [max = DOMAIN_MESSAGES_MAX],
    }

    // ----- vCPUs and statistics -----

    /// `remote_domain_get_vcpus_args`.
    pub struct DomainGetVcpusArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Maximum vCPU infos wanted.
        pub maxinfo: i32,
        /// Bytes per CPU map (0: no maps).
        pub maplen: i32,
    }

    /// `remote_domain_get_vcpus_ret`.
    pub struct DomainGetVcpusRet {
        /// One entry per vCPU.
        pub info: Vec<VcpuInfo> [max = VCPUINFO_MAX],
        /// `maplen` bytes of affinity per vCPU.
        pub cpumaps: Vec<u8> [max = CPUMAPS_MAX],
    }

    /// `remote_domain_get_vcpu_pin_info_args`.
    pub struct DomainGetVcpuPinInfoArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// CPU maps wanted.
        pub ncpumaps: i32,
        /// Bytes per map.
        pub maplen: i32,
        /// `VIR_DOMAIN_AFFECT_*` flags.
        pub flags: u32,
    }

    /// `remote_domain_get_vcpu_pin_info_ret`.
    pub struct DomainGetVcpuPinInfoRet {
        /// Maps, `maplen` bytes each.
        pub cpumaps: Vec<u8> [max = CPUMAPS_MAX],
        /// Maps returned.
        pub num: i32,
    }

    /// `remote_connect_get_all_domain_stats_args` (also used by virDomainListGetStats).
    pub struct ConnectGetAllDomainStatsArgs {
        /// Domains to report; empty for all.
        pub doms: Vec<NonnullDomain> [max = DOMAIN_LIST_MAX],
        /// `VIR_DOMAIN_STATS_*` groups (0: all).
        pub stats: u32,
        /// `VIR_CONNECT_GET_ALL_DOMAINS_STATS_*` flags.
        pub flags: u32,
    }

    /// `remote_connect_get_all_domain_stats_ret`.
    pub struct ConnectGetAllDomainStatsRet {
        /// One record per domain.
        pub ret_stats: Vec<DomainStatsRecord> [max = DOMAIN_LIST_MAX],
    }

    /// `remote_domain_block_stats_args`.
    pub struct DomainBlockStatsArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Disk target (`vda`) or source path.
        pub path: String,
    }

    /// `remote_domain_block_stats_ret`.
    pub struct DomainBlockStatsRet {
        /// Read requests.
        pub rd_req: i64,
        /// Bytes read.
        pub rd_bytes: i64,
        /// Write requests.
        pub wr_req: i64,
        /// Bytes written.
        pub wr_bytes: i64,
        /// Errors.
        pub errs: i64,
    }

    /// `remote_domain_block_stats_flags_args`.
    pub struct DomainBlockStatsFlagsArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Disk target or source path.
        pub path: String,
        /// Parameters wanted (0: just the count).
        pub nparams: i32,
        /// Flags.
        pub flags: u32,
    }

    /// `remote_domain_block_stats_flags_ret`.
    pub struct DomainBlockStatsFlagsRet {
        /// Statistics (empty when `nparams` was 0).
        pub params: Vec<TypedParam> [max = DOMAIN_BLOCK_STATS_PARAMETERS_MAX],
        /// Number of parameters available.
        pub nparams: i32,
    }

    /// `remote_domain_interface_stats_args`.
    pub struct DomainInterfaceStatsArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Interface target (`vnet0`) or MAC address.
        pub device: String,
    }

    /// `remote_domain_interface_stats_ret`.
    pub struct DomainInterfaceStatsRet {
        /// Bytes received.
        pub rx_bytes: i64,
        /// Packets received.
        pub rx_packets: i64,
        /// Receive errors.
        pub rx_errs: i64,
        /// Receive drops.
        pub rx_drop: i64,
        /// Bytes sent.
        pub tx_bytes: i64,
        /// Packets sent.
        pub tx_packets: i64,
        /// Send errors.
        pub tx_errs: i64,
        /// Send drops.
        pub tx_drop: i64,
    }

    /// `remote_domain_memory_stats_args`.
    pub struct DomainMemoryStatsArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Maximum statistics wanted.
        pub max_stats: u32,
        /// Flags.
        pub flags: u32,
    }

    /// `remote_domain_memory_stats_ret`.
    pub struct DomainMemoryStatsRet {
        /// Statistics.
        pub stats: Vec<DomainMemoryStat> [max = DOMAIN_MEMORY_STATS_MAX],
    }

    // ----- console -----

    /// `remote_domain_open_console_args`; the reply is empty, then stream packets follow.
    pub struct DomainOpenConsoleArgs {
        /// The domain.
        pub dom: NonnullDomain,
        /// Console device alias; absent for the first console.
        pub dev_name: Option<String>,
        /// `VIR_DOMAIN_CONSOLE_*` flags.
        pub flags: u32,
    }

    // ----- events -----

    /// `remote_connect_domain_event_callback_register_any_args`.
    pub struct ConnectDomainEventCallbackRegisterAnyArgs {
        /// `VIR_DOMAIN_EVENT_ID_*`.
        pub event_id: i32,
        /// Only events of this domain; absent for all.
        pub dom: Option<NonnullDomain>,
    }

    /// `remote_connect_domain_event_callback_register_any_ret`.
    pub struct ConnectDomainEventCallbackRegisterAnyRet {
        /// The server-chosen id the messages carry.
        pub callback_id: i32,
    }

    /// `remote_connect_domain_event_callback_deregister_any_args`.
    pub struct ConnectDomainEventCallbackDeregisterAnyArgs {
        /// The id from the register reply.
        pub callback_id: i32,
    }

    /// `remote_connect_domain_event_register_any_args` (pre-callback-id API), also
    /// `..._deregister_any_args`.
    pub struct ConnectDomainEventRegisterAnyArgs {
        /// `VIR_DOMAIN_EVENT_ID_*`.
        pub event_id: i32,
    }

    /// `remote_domain_event_lifecycle_msg` (message `DOMAIN_EVENT_LIFECYCLE`, 107).
    pub struct DomainEventLifecycleMsg {
        /// The domain.
        pub dom: NonnullDomain,
        /// `virDomainEventType`.
        pub event: i32,
        /// Event-specific detail.
        pub detail: i32,
    }

    /// `remote_domain_event_callback_lifecycle_msg` (message
    /// `DOMAIN_EVENT_CALLBACK_LIFECYCLE`, 318).
    pub struct DomainEventCallbackLifecycleMsg {
        /// Id from the register reply.
        pub callback_id: i32,
        /// The event.
        pub msg: DomainEventLifecycleMsg,
    }

    /// `remote_domain_event_reboot_msg`.
    pub struct DomainEventRebootMsg {
        /// The domain.
        pub dom: NonnullDomain,
    }

    /// `remote_domain_event_callback_reboot_msg` (message `DOMAIN_EVENT_CALLBACK_REBOOT`).
    pub struct DomainEventCallbackRebootMsg {
        /// Id from the register reply.
        pub callback_id: i32,
        /// The event.
        pub msg: DomainEventRebootMsg,
    }
}
