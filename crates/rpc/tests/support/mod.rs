//! A tiny fake hypervisor behind the `Dispatcher` trait, shared by the integration tests: one
//! running domain `fake1`, lifecycle events on suspend/resume, and an echoing console.

#![allow(dead_code, reason = "each test binary uses part of the support code")]

use rpc::procedures::{
    AuthListRet, ConnectDomainEventCallbackRegisterAnyRet, ConnectGetAllDomainStatsRet,
    ConnectGetHostnameRet, ConnectGetTypeRet, ConnectGetUriRet, ConnectGetVersionRet,
    ConnectListAllDomainsRet, ConnectSupportsFeatureRet, DomainEventCallbackLifecycleMsg,
    DomainEventLifecycleMsg, DomainGetInfoRet, DomainGetOsTypeRet, DomainGetStateRet,
    DomainGetXmlDescRet, DomainRet, DomainStatsRecord, IntRet, NodeGetSecurityModelRet,
    NonnullDomain, TypedParam, TypedParamValue, call, event, feature,
};
use rpc::server::{
    Connection, Dispatcher, IncomingCall, PeerInfo, Reply, Server, ServerConfig, StreamPacket,
};
use rpc::{Procedure, RemoteError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

pub const FAKE_UUID: [u8; 16] = [
    0x4d, 0xea, 0x22, 0xb3, 0x1d, 0x52, 0xd8, 0xf3, 0x26, 0x75, 0xd5, 0x2d, 0x2b, 0x5a, 0xd0, 0x2f,
];
pub const VIR_DOMAIN_RUNNING: i32 = 1;
pub const VIR_DOMAIN_PAUSED: i32 = 3;
pub const EVENT_SUSPENDED: i32 = 3;
pub const EVENT_RESUMED: i32 = 4;

pub fn fake_domain() -> NonnullDomain {
    NonnullDomain {
        name: "fake1".into(),
        uuid: FAKE_UUID,
        id: 7,
    }
}

/// The fake hypervisor.
#[derive(Default)]
pub struct FakeHypervisor {
    pub state: Mutex<i32>,
    pub opened_names: Mutex<Vec<String>>,
    pub callbacks: Mutex<Vec<(Connection, i32)>>,
    /// Consoles opened so far.
    pub consoles_opened: Arc<AtomicU32>,
    /// Console data packets echoed so far.
    pub console_echoes: Arc<AtomicU32>,
    next_callback: AtomicU32,
}

impl FakeHypervisor {
    pub fn new() -> Arc<Self> {
        let h = Self::default();
        *h.state.lock().unwrap() = VIR_DOMAIN_RUNNING;
        Arc::new(h)
    }

    fn lookup(&self, dom: &NonnullDomain) -> Result<NonnullDomain, RemoteError> {
        if dom.name == "fake1" || dom.uuid == FAKE_UUID {
            Ok(fake_domain())
        } else {
            Err(RemoteError::no_domain(format!(
                "no domain with matching name '{}'",
                dom.name
            )))
        }
    }

    async fn set_state(&self, conn: &Connection, dom: NonnullDomain, state: i32, event: i32) {
        if conn.is_read_only() {
            return;
        }
        *self.state.lock().unwrap() = state;
        let targets = self.callbacks.lock().unwrap().clone();
        for (target, callback_id) in targets {
            let msg = DomainEventCallbackLifecycleMsg {
                callback_id,
                msg: DomainEventLifecycleMsg {
                    dom: dom.clone(),
                    event,
                    detail: 0,
                },
            };
            let _ = target
                .send_event::<event::DomainEventCallbackLifecycle>(&msg)
                .await;
        }
    }

    fn open_console(&self, conn: &Connection, call: &IncomingCall) -> Result<Reply, RemoteError> {
        let args = call.args::<call::DomainOpenConsole>()?;
        self.lookup(&args.dom)?;
        let stream = conn
            .open_stream(call)
            .map_err(|e| RemoteError::internal(e.to_string()))?;
        let (writer, mut reader) = stream.split();
        self.consoles_opened.fetch_add(1, Ordering::SeqCst);
        let echoes = Arc::clone(&self.console_echoes);
        tokio::spawn(async move {
            let _ = writer.send(b"console ready\r\n").await;
            while let Some(packet) = reader.recv().await {
                match packet {
                    StreamPacket::Data(data) => {
                        if data == b"bye" {
                            let _ = writer.finish().await;
                        } else {
                            let _ = writer.send(&data.to_ascii_uppercase()).await;
                            echoes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    StreamPacket::Finish | StreamPacket::Abort(_) => break,
                }
            }
        });
        Ok(Reply::empty())
    }

    fn dom_info(&self) -> DomainGetInfoRet {
        DomainGetInfoRet {
            state: *self.state.lock().unwrap() as u32,
            max_mem: 1_048_576,
            memory: 524_288,
            nr_virt_cpu: 2,
            cpu_time: 1_500_000_000,
        }
    }
}

impl Dispatcher for FakeHypervisor {
    async fn call(&self, conn: &Connection, call: IncomingCall) -> Result<Reply, RemoteError> {
        match call.procedure {
            Procedure::AuthList => Reply::encode::<call::AuthList>(&AuthListRet { types: vec![0] }),
            Procedure::ConnectSupportsFeature => {
                call.handle::<call::ConnectSupportsFeature, _, _>(|a| async move {
                    let supported = match a.feature {
                        feature::PROGRAM_KEEPALIVE => {
                            conn.enable_keepalive();
                            1
                        }
                        feature::REMOTE_EVENT_CALLBACK | feature::REMOTE_CLOSE_CALLBACK => 1,
                        _ => 0,
                    };
                    Ok(ConnectSupportsFeatureRet { supported })
                })
                .await
            }
            Procedure::ConnectOpen => {
                call.handle::<call::ConnectOpen, _, _>(|a| async move {
                    if a.flags & 1 != 0 {
                        conn.set_read_only();
                    }
                    self.opened_names
                        .lock()
                        .unwrap()
                        .push(a.name.unwrap_or_default());
                    Ok(())
                })
                .await
            }
            Procedure::ConnectClose
            | Procedure::ConnectRegisterCloseCallback
            | Procedure::ConnectUnregisterCloseCallback => Ok(Reply::empty()),
            Procedure::ConnectGetUri => Reply::encode::<call::ConnectGetUri>(&ConnectGetUriRet {
                uri: "oxvirt:///system".into(),
            }),
            Procedure::ConnectGetType => {
                Reply::encode::<call::ConnectGetType>(&ConnectGetTypeRet {
                    type_: "OXVIRT".into(),
                })
            }
            Procedure::ConnectGetVersion => {
                Reply::encode::<call::ConnectGetVersion>(&ConnectGetVersionRet {
                    hv_ver: 1_002_003,
                })
            }
            Procedure::ConnectGetHostname => {
                Reply::encode::<call::ConnectGetHostname>(&ConnectGetHostnameRet {
                    hostname: "fakehost".into(),
                })
            }
            Procedure::ConnectListAllDomains => {
                Reply::encode::<call::ConnectListAllDomains>(&ConnectListAllDomainsRet {
                    domains: vec![fake_domain()],
                    ret: 1,
                })
            }
            Procedure::DomainLookupByName => {
                call.handle::<call::DomainLookupByName, _, _>(|a| async move {
                    let dom = self.lookup(&NonnullDomain {
                        name: a.name,
                        ..Default::default()
                    })?;
                    Ok(DomainRet { dom })
                })
                .await
            }
            Procedure::DomainGetState => {
                call.handle::<call::DomainGetState, _, _>(|a| async move {
                    self.lookup(&a.dom)?;
                    Ok(DomainGetStateRet {
                        state: *self.state.lock().unwrap(),
                        reason: 1,
                    })
                })
                .await
            }
            Procedure::DomainGetInfo => {
                call.handle::<call::DomainGetInfo, _, _>(|a| async move {
                    self.lookup(&a.dom)?;
                    Ok(self.dom_info())
                })
                .await
            }
            Procedure::DomainGetOsType => {
                Reply::encode::<call::DomainGetOsType>(&DomainGetOsTypeRet {
                    type_: "hvm".into(),
                })
            }
            Procedure::DomainIsPersistent => {
                Reply::encode::<call::DomainIsPersistent>(&IntRet { value: 1 })
            }
            Procedure::DomainGetAutostart
            | Procedure::DomainHasManagedSaveImage
            | Procedure::DomainIsUpdated => Ok(Reply::raw(vec![0, 0, 0, 0])),
            Procedure::NodeGetSecurityModel => {
                Reply::encode::<call::NodeGetSecurityModel>(&NodeGetSecurityModelRet::default())
            }
            Procedure::DomainGetXmlDesc => {
                Reply::encode::<call::DomainGetXmlDesc>(&DomainGetXmlDescRet {
                    xml: "<domain type='oxvirt'><name>fake1</name></domain>\n".into(),
                })
            }
            Procedure::ConnectGetAllDomainStats => {
                Reply::encode::<call::ConnectGetAllDomainStats>(&ConnectGetAllDomainStatsRet {
                    ret_stats: vec![DomainStatsRecord {
                        dom: fake_domain(),
                        params: vec![
                            TypedParam::new("state.state", TypedParamValue::Int(1)),
                            TypedParam::new("balloon.current", TypedParamValue::ULLong(524_288)),
                        ],
                    }],
                })
            }
            Procedure::DomainSuspend | Procedure::DomainResume => {
                if conn.is_read_only() {
                    return Err(RemoteError::read_only());
                }
                let resuming = call.procedure == Procedure::DomainResume;
                let args = if resuming {
                    call.args::<call::DomainResume>()?
                } else {
                    call.args::<call::DomainSuspend>()?
                };
                let dom = self.lookup(&args.dom)?;
                if resuming && *self.state.lock().unwrap() != VIR_DOMAIN_PAUSED {
                    return Err(RemoteError::operation_invalid("domain is not paused"));
                }
                let (state, event) = if !resuming {
                    (VIR_DOMAIN_PAUSED, EVENT_SUSPENDED)
                } else {
                    (VIR_DOMAIN_RUNNING, EVENT_RESUMED)
                };
                self.set_state(conn, dom, state, event).await;
                Ok(Reply::empty())
            }
            Procedure::ConnectDomainEventCallbackRegisterAny => {
                let id = self.next_callback.fetch_add(1, Ordering::Relaxed) as i32 + 1;
                self.callbacks.lock().unwrap().push((conn.clone(), id));
                Reply::encode::<call::ConnectDomainEventCallbackRegisterAny>(
                    &ConnectDomainEventCallbackRegisterAnyRet { callback_id: id },
                )
            }
            Procedure::ConnectDomainEventCallbackDeregisterAny => {
                let a = call.args::<call::ConnectDomainEventCallbackDeregisterAny>()?;
                self.callbacks
                    .lock()
                    .unwrap()
                    .retain(|(_, id)| *id != a.callback_id);
                Ok(Reply::empty())
            }
            Procedure::DomainOpenConsole => self.open_console(conn, &call),
            Procedure::ConnectGetSysinfo => panic!("the fake's sysinfo handler panics"),
            _ => Err(call.unsupported()),
        }
    }

    async fn disconnected(&self, conn: &Connection) {
        self.callbacks
            .lock()
            .unwrap()
            .retain(|(c, _)| c.id() != conn.id());
    }
}

/// A private directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh private directory under the system temp dir.
pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "oxvirt-rpc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Serves `hypervisor` on a Unix socket in `dir`; returns the socket path.
pub fn serve_unix(hypervisor: Arc<FakeHypervisor>, dir: &std::path::Path) -> PathBuf {
    let path = dir.join("sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = Server::new(hypervisor, ServerConfig::default());
    tokio::spawn(async move { server.serve_unix(listener, false).await });
    path
}

/// Serves `hypervisor` on one end of an in-memory pipe; returns the other end.
pub fn serve_duplex(hypervisor: Arc<FakeHypervisor>, read_only: bool) -> tokio::io::DuplexStream {
    serve_duplex_with(hypervisor, read_only, ServerConfig::default())
}

/// [`serve_duplex`] with a chosen configuration.
pub fn serve_duplex_with(
    hypervisor: Arc<FakeHypervisor>,
    read_only: bool,
    config: ServerConfig,
) -> tokio::io::DuplexStream {
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    let server = Server::new(hypervisor, config);
    tokio::spawn(async move {
        server
            .serve_connection(server_end, read_only, PeerInfo::default())
            .await;
    });
    client_end
}
