//! The remote program: procedure numbers, XDR structures, and the typed call table that ties
//! each covered procedure to its argument and reply types.
//!
//! A call is named by a marker type in [`call`] (e.g. [`call::DomainLookupByName`]) that
//! implements [`RemoteCall`]; the client sends `C::Args` and gets `C::Ret`, the server decodes
//! `C::Args` and encodes `C::Ret`. Events are named by marker types in [`event`].

mod numbers;
mod types;

pub use numbers::Procedure;
pub use types::*;

use crate::xdr::{XdrDecode, XdrEncode};

/// A procedure with typed arguments and reply.
pub trait RemoteCall {
    /// The procedure number.
    const PROCEDURE: Procedure;
    /// The `remote_*_args` type (`()` for none).
    type Args: XdrEncode + XdrDecode + Send + Sync;
    /// The `remote_*_ret` type (`()` for none).
    type Ret: XdrEncode + XdrDecode + Send + Sync;
}

/// An asynchronous message (type MESSAGE) the server sends: a domain event.
pub trait RemoteEvent {
    /// The procedure number the message carries.
    const PROCEDURE: Procedure;
    /// The `remote_*_msg` type.
    type Msg: XdrEncode + XdrDecode + Send + Sync;
}

macro_rules! calls {
    ($($name:ident : $args:ty => $ret:ty;)*) => {
        /// Marker types, one per covered procedure, named as the [`Procedure`] variant.
        pub mod call {
            use super::*;
            $(
                #[doc = concat!("The `", stringify!($name), "` call.")]
                #[derive(Debug, Clone, Copy)]
                pub struct $name;
                impl RemoteCall for $name {
                    const PROCEDURE: Procedure = Procedure::$name;
                    type Args = $args;
                    type Ret = $ret;
                }
            )*
        }

        /// The procedures with typed argument and reply types in this crate.
        pub const TYPED_PROCEDURES: &[Procedure] = &[$(Procedure::$name,)*];

        /// Decodes `body` as the arguments of `procedure` and encodes them again; `None` for
        /// a procedure without typed arguments. The entry point of the XDR fuzz target.
        pub fn reencode_args(procedure: Procedure, body: &[u8]) -> Option<Result<Vec<u8>, crate::xdr::XdrError>> {
            match procedure {
                $(Procedure::$name => Some(
                    crate::xdr::from_bytes::<$args>(body).and_then(|args| crate::xdr::to_bytes(&args)),
                ),)*
                #[allow(unreachable_patterns, reason = "the macro lists only the typed procedures")]
                _ => None,
            }
        }

        /// As [`reencode_args`], for the reply of `procedure`.
        pub fn reencode_ret(procedure: Procedure, body: &[u8]) -> Option<Result<Vec<u8>, crate::xdr::XdrError>> {
            match procedure {
                $(Procedure::$name => Some(
                    crate::xdr::from_bytes::<$ret>(body).and_then(|ret| crate::xdr::to_bytes(&ret)),
                ),)*
                #[allow(unreachable_patterns, reason = "the macro lists only the typed procedures")]
                _ => None,
            }
        }
    };
}

calls! {
    // Connection set-up and host information.
    AuthList: () => AuthListRet;
    ConnectOpen: ConnectOpenArgs => ();
    ConnectClose: () => ();
    ConnectSupportsFeature: ConnectSupportsFeatureArgs => ConnectSupportsFeatureRet;
    ConnectRegisterCloseCallback: () => ();
    ConnectUnregisterCloseCallback: () => ();
    ConnectGetType: () => ConnectGetTypeRet;
    ConnectGetVersion: () => ConnectGetVersionRet;
    ConnectGetLibVersion: () => ConnectGetLibVersionRet;
    ConnectGetHostname: () => ConnectGetHostnameRet;
    ConnectGetUri: () => ConnectGetUriRet;
    ConnectGetCapabilities: () => ConnectGetCapabilitiesRet;
    ConnectGetSysinfo: ConnectGetSysinfoArgs => ConnectGetSysinfoRet;
    ConnectGetMaxVcpus: ConnectGetMaxVcpusArgs => ConnectGetMaxVcpusRet;
    ConnectIsSecure: () => ConnectIsSecureRet;
    NodeGetInfo: () => NodeGetInfoRet;
    NodeGetSecurityModel: () => NodeGetSecurityModelRet;
    NodeGetCpuMap: NodeGetCpuMapArgs => NodeGetCpuMapRet;
    // Listing.
    ConnectListAllDomains: ConnectListAllDomainsArgs => ConnectListAllDomainsRet;
    ConnectNumOfDomains: () => ConnectNumOfDomainsRet;
    ConnectListDomains: ConnectListDomainsArgs => ConnectListDomainsRet;
    ConnectNumOfDefinedDomains: () => ConnectNumOfDomainsRet;
    ConnectListDefinedDomains: ConnectListDefinedDomainsArgs => ConnectListDefinedDomainsRet;
    // Lookup.
    DomainLookupByName: DomainLookupByNameArgs => DomainRet;
    DomainLookupByUuid: DomainLookupByUuidArgs => DomainRet;
    DomainLookupById: DomainLookupByIdArgs => DomainRet;
    // Define, create, lifecycle.
    DomainDefineXml: DomainDefineXmlArgs => DomainRet;
    DomainDefineXmlFlags: DomainDefineXmlFlagsArgs => DomainRet;
    DomainUndefine: DomainArgs => ();
    DomainUndefineFlags: DomainFlagsArgs => ();
    DomainCreateXml: DomainCreateXmlArgs => DomainRet;
    DomainCreate: DomainArgs => ();
    DomainCreateWithFlags: DomainFlagsArgs => DomainRet;
    DomainShutdown: DomainArgs => ();
    DomainShutdownFlags: DomainFlagsArgs => ();
    DomainDestroy: DomainArgs => ();
    DomainDestroyFlags: DomainFlagsArgs => ();
    DomainReboot: DomainFlagsArgs => ();
    DomainReset: DomainFlagsArgs => ();
    DomainSuspend: DomainArgs => ();
    DomainResume: DomainArgs => ();
    DomainGetAutostart: DomainArgs => IntRet;
    DomainSetAutostart: DomainSetAutostartArgs => ();
    // Information.
    DomainGetInfo: DomainArgs => DomainGetInfoRet;
    DomainGetState: DomainFlagsArgs => DomainGetStateRet;
    DomainIsActive: DomainArgs => IntRet;
    DomainIsPersistent: DomainArgs => IntRet;
    DomainIsUpdated: DomainArgs => IntRet;
    DomainHasManagedSaveImage: DomainFlagsArgs => IntRet;
    DomainSnapshotNum: DomainFlagsArgs => IntRet;
    DomainGetOsType: DomainArgs => DomainGetOsTypeRet;
    DomainGetMaxMemory: DomainArgs => DomainGetMaxMemoryRet;
    DomainGetMaxVcpus: DomainArgs => IntRet;
    DomainGetVcpusFlags: DomainFlagsArgs => IntRet;
    DomainGetSecurityLabel: DomainArgs => SecurityLabel;
    DomainGetSecurityLabelList: DomainArgs => DomainGetSecurityLabelListRet;
    DomainGetMessages: DomainFlagsArgs => DomainGetMessagesRet;
    DomainGetXmlDesc: DomainFlagsArgs => DomainGetXmlDescRet;
    // vCPUs and statistics.
    DomainGetVcpus: DomainGetVcpusArgs => DomainGetVcpusRet;
    DomainGetVcpuPinInfo: DomainGetVcpuPinInfoArgs => DomainGetVcpuPinInfoRet;
    ConnectGetAllDomainStats: ConnectGetAllDomainStatsArgs => ConnectGetAllDomainStatsRet;
    DomainBlockStats: DomainBlockStatsArgs => DomainBlockStatsRet;
    DomainBlockStatsFlags: DomainBlockStatsFlagsArgs => DomainBlockStatsFlagsRet;
    DomainInterfaceStats: DomainInterfaceStatsArgs => DomainInterfaceStatsRet;
    DomainMemoryStats: DomainMemoryStatsArgs => DomainMemoryStatsRet;
    // Console (an empty reply, then STREAM packets with this call's serial).
    DomainOpenConsole: DomainOpenConsoleArgs => ();
    // Events.
    ConnectDomainEventCallbackRegisterAny:
        ConnectDomainEventCallbackRegisterAnyArgs => ConnectDomainEventCallbackRegisterAnyRet;
    ConnectDomainEventCallbackDeregisterAny: ConnectDomainEventCallbackDeregisterAnyArgs => ();
    ConnectDomainEventRegisterAny: ConnectDomainEventRegisterAnyArgs => ();
    ConnectDomainEventDeregisterAny: ConnectDomainEventRegisterAnyArgs => ();
}

/// Marker types for the events this crate types.
pub mod event {
    use super::*;

    /// `DOMAIN_EVENT_CALLBACK_LIFECYCLE` (318): for clients that registered with
    /// `CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY` (virsh 9.0 does when the server supports
    /// `feature::REMOTE_EVENT_CALLBACK`).
    #[derive(Debug, Clone, Copy)]
    pub struct DomainEventCallbackLifecycle;
    impl RemoteEvent for DomainEventCallbackLifecycle {
        const PROCEDURE: Procedure = Procedure::DomainEventCallbackLifecycle;
        type Msg = DomainEventCallbackLifecycleMsg;
    }

    /// `DOMAIN_EVENT_LIFECYCLE` (107): for clients that registered with the older
    /// `CONNECT_DOMAIN_EVENT_REGISTER_ANY`.
    #[derive(Debug, Clone, Copy)]
    pub struct DomainEventLifecycle;
    impl RemoteEvent for DomainEventLifecycle {
        const PROCEDURE: Procedure = Procedure::DomainEventLifecycle;
        type Msg = DomainEventLifecycleMsg;
    }

    /// `DOMAIN_EVENT_CALLBACK_REBOOT`.
    #[derive(Debug, Clone, Copy)]
    pub struct DomainEventCallbackReboot;
    impl RemoteEvent for DomainEventCallbackReboot {
        const PROCEDURE: Procedure = Procedure::DomainEventCallbackReboot;
        type Msg = DomainEventCallbackRebootMsg;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::{from_bytes, to_bytes, unhex};
    use proptest::prelude::*;

    const TEST_UUID: [u8; 16] = [
        0x66, 0x95, 0xeb, 0x01, 0xf6, 0xa4, 0x83, 0x04, 0x79, 0xaa, 0x97, 0xf2, 0x50, 0x2e, 0x19,
        0x3f,
    ];

    #[test]
    fn decodes_list_all_domains_reply_captured_from_libvirtd() {
        // Arrange: libvirtd 9.0 test driver's reply to `virsh list --all`.
        let bytes =
            unhex("0000000100000004746573746695eb01f6a4830479aa97f2502e193f0000000100000001");

        // Act
        let ret: ConnectListAllDomainsRet = from_bytes(&bytes).unwrap();

        // Assert
        assert_eq!(ret.ret, 1);
        assert_eq!(
            ret.domains,
            vec![NonnullDomain {
                name: "test".into(),
                uuid: TEST_UUID,
                id: 1
            }]
        );
        assert_eq!(to_bytes(&ret).unwrap(), bytes);
    }

    #[test]
    fn decodes_node_info_and_security_model_captured_from_libvirtd() {
        // Arrange: NODE_GET_INFO and NODE_GET_SECURITY_MODEL replies of the test driver.
        let node_info = unhex(concat!(
            "0000006900000036000000380000003600000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000300000000000100000057800000002000000020000000200000002",
        ));
        let model = unhex(concat!(
            "0000000d000000740000006500000073000000740000005300000065000000630000007500000072",
            "000000690000007400000079000000000000000100000000"
        ));

        // Act
        let info: NodeGetInfoRet = from_bytes(&node_info).unwrap();
        let sec: NodeGetSecurityModelRet = from_bytes(&model).unwrap();

        // Assert
        assert_eq!(c_chars_to_string(&info.model), "i686");
        assert_eq!(
            (info.memory, info.cpus, info.mhz, info.nodes),
            (3_145_728, 16, 1400, 2)
        );
        assert_eq!(c_chars_to_string(&sec.model), "testSecurity");
        assert_eq!(sec.model, c_chars("testSecurity"));
        assert_eq!(c_chars_to_string(&sec.doi), "");
    }

    #[test]
    fn decodes_domain_stats_and_lifecycle_event_captured_from_libvirtd() {
        // Arrange
        let stats = unhex(concat!(
            "0000000100000004746573746695eb01f6a4830479aa97f2502e193f00000001",
            "000000020000000b73746174652e73746174650000000001000000010000000c",
            "73746174652e726561736f6e0000000100000000"
        ));
        let event = unhex(concat!(
            "0000000000000004746573746695eb01f6a4830479aa97f2502e193f",
            "ffffffff0000000500000001"
        ));

        // Act
        let stats: ConnectGetAllDomainStatsRet = from_bytes(&stats).unwrap();
        let event: DomainEventCallbackLifecycleMsg = from_bytes(&event).unwrap();

        // Assert
        assert_eq!(
            stats.ret_stats[0].params,
            vec![
                TypedParam::new("state.state", TypedParamValue::Int(1)),
                TypedParam::new("state.reason", TypedParamValue::Int(0)),
            ]
        );
        assert_eq!(event.callback_id, 0);
        assert_eq!(event.msg.dom.id, -1);
        assert_eq!((event.msg.event, event.msg.detail), (5, 1));
    }

    #[test]
    fn decodes_vcpu_and_info_replies_captured_from_libvirtd() {
        // Arrange: `virsh vcpuinfo test` against the test driver (GET_VCPUS, GET_INFO).
        let vcpus = unhex(concat!(
            "0000000200000000000000010000a35950eb6f490000000f",
            "00000001000000010000a35950eb6f490000000f00000002ffff0000"
        ));
        let info = unhex("00000001000000000080000000000000002000000000000218ecd0e8ec8d5260");

        // Act
        let vcpus: DomainGetVcpusRet = from_bytes(&vcpus).unwrap();
        let info: DomainGetInfoRet = from_bytes(&info).unwrap();

        // Assert
        assert_eq!(vcpus.info.len(), 2);
        assert_eq!((vcpus.info[1].number, vcpus.info[1].cpu), (1, 15));
        assert_eq!(vcpus.cpumaps, vec![0xff, 0xff]);
        assert_eq!(
            (info.state, info.max_mem, info.memory, info.nr_virt_cpu),
            (1, 8_388_608, 2_097_152, 2)
        );
    }

    #[test]
    fn typed_params_round_trip_every_type() {
        // Arrange
        let params = vec![
            TypedParam::new("i", TypedParamValue::Int(-3)),
            TypedParam::new("u", TypedParamValue::UInt(3)),
            TypedParam::new("l", TypedParamValue::LLong(-1 << 40)),
            TypedParam::new("ul", TypedParamValue::ULLong(1 << 50)),
            TypedParam::new("d", TypedParamValue::Double(0.5)),
            TypedParam::new("b", TypedParamValue::Boolean(true)),
            TypedParam::new("s", TypedParamValue::String("x".into())),
        ];
        let record = DomainStatsRecord {
            dom: NonnullDomain::default(),
            params,
        };

        // Act
        let back: DomainStatsRecord = from_bytes(&to_bytes(&record).unwrap()).unwrap();

        // Assert
        assert_eq!(back, record);
    }

    #[test]
    fn unknown_typed_param_type_is_refused() {
        // Arrange: field "a", type 9.
        let bytes = unhex("000000016100000000000009");

        // Act
        let err = from_bytes::<TypedParam>(&bytes).unwrap_err();

        // Assert
        assert!(err.to_string().contains("discriminant 9"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_any_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let _ = from_bytes::<ConnectGetAllDomainStatsRet>(&bytes);
            let _ = from_bytes::<DomainGetVcpusRet>(&bytes);
            let _ = from_bytes::<ConnectListAllDomainsRet>(&bytes);
            let _ = from_bytes::<DomainOpenConsoleArgs>(&bytes);
            let _ = from_bytes::<NodeGetSecurityModelRet>(&bytes);
            let _ = from_bytes::<DomainEventCallbackLifecycleMsg>(&bytes);
            let _ = from_bytes::<crate::RemoteError>(&bytes);
        }

        #[test]
        fn typed_params_round_trip(
            field in ".{0,12}",
            i in any::<i64>(),
            d in any::<f64>().prop_filter("NaN != NaN", |d| !d.is_nan()),
            s in ".{0,12}",
        ) {
            let params = vec![
                TypedParam::new(field.clone(), TypedParamValue::LLong(i)),
                TypedParam::new(field.clone(), TypedParamValue::Double(d)),
                TypedParam::new(field, TypedParamValue::String(s)),
            ];
            let record = DomainStatsRecord { dom: NonnullDomain::default(), params };
            let back: DomainStatsRecord = from_bytes(&to_bytes(&record).unwrap()).unwrap();
            prop_assert_eq!(back, record);
        }
    }

    #[test]
    fn the_call_table_names_its_procedures() {
        assert_eq!(
            <call::DomainGetState as RemoteCall>::PROCEDURE.number(),
            212
        );
        assert!(TYPED_PROCEDURES.contains(&Procedure::DomainOpenConsole));
    }
}
