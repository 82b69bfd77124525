//! A small in-process daemon built on the `rpc` crate's server, answering the procedures the
//! CLI tests use, and a helper that runs the real `oxvirt` binary against it.

use rpc::procedures::{
    AuthListRet, ConnectDomainEventCallbackRegisterAnyRet, ConnectListAllDomainsRet,
    ConnectSupportsFeatureRet, DomainEventCallbackLifecycleMsg, DomainEventLifecycleMsg,
    DomainGetInfoRet, DomainGetOsTypeRet, DomainGetStateRet, DomainRet, IntRet, NonnullDomain,
    call, event, feature,
};
use rpc::server::{
    Connection, Dispatcher, IncomingCall, Reply, Server, ServerConfig, StreamPacket,
};
use rpc::{Procedure, RemoteError};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One domain of the fake daemon.
#[derive(Debug, Clone)]
pub struct FakeDomain {
    pub dom: NonnullDomain,
    pub state: i32,
}

/// The fake daemon's state.
#[derive(Debug)]
pub struct FakeDaemon {
    pub domains: Mutex<Vec<FakeDomain>>,
    pub calls: Mutex<Vec<Procedure>>,
    next_callback: AtomicU32,
}

fn domain(name: &str, uuid_byte: u8, id: i32, state: i32) -> FakeDomain {
    FakeDomain {
        dom: NonnullDomain {
            name: name.into(),
            uuid: [uuid_byte; 16],
            id,
        },
        state,
    }
}

impl FakeDaemon {
    /// `web` running as id 2, `db` paused as id 1, `backup` and `Archive` shut off.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            domains: Mutex::new(vec![
                domain("web", 0x11, 2, 1),
                domain("backup", 0x22, -1, 5),
                domain("db", 0x33, 1, 3),
                domain("Archive", 0x44, -1, 5),
            ]),
            calls: Mutex::new(Vec::new()),
            next_callback: AtomicU32::new(1),
        })
    }

    fn find(
        &self,
        pred: impl Fn(&NonnullDomain) -> bool,
        what: String,
    ) -> Result<FakeDomain, RemoteError> {
        self.domains
            .lock()
            .unwrap()
            .iter()
            .find(|d| pred(&d.dom))
            .cloned()
            .ok_or_else(|| RemoteError::no_domain(what))
    }

    fn by_uuid(&self, uuid: [u8; 16]) -> Result<FakeDomain, RemoteError> {
        self.find(|d| d.uuid == uuid, "no domain with matching uuid".into())
    }

    fn set(&self, uuid: [u8; 16], state: i32, id: i32) {
        for d in self.domains.lock().unwrap().iter_mut() {
            if d.dom.uuid == uuid {
                d.state = state;
                d.dom.id = id;
            }
        }
    }

    fn register(&self, conn: &Connection, call: &IncomingCall) -> Result<Reply, RemoteError> {
        let args = call.args::<call::ConnectDomainEventCallbackRegisterAny>()?;
        let callback_id = self.next_callback.fetch_add(1, Ordering::SeqCst) as i32;
        let dom = self.find(|d| d.name == "web", "web".into())?.dom;
        // Send one lifecycle event right after the reply, as a running daemon would when the
        // domain starts.
        if args.event_id == 0 {
            let conn = conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let msg = DomainEventCallbackLifecycleMsg {
                    callback_id,
                    msg: DomainEventLifecycleMsg {
                        dom,
                        event: 2,
                        detail: 0,
                    },
                };
                let _ = conn
                    .send_event::<event::DomainEventCallbackLifecycle>(&msg)
                    .await;
            });
        }
        Reply::encode::<call::ConnectDomainEventCallbackRegisterAny>(
            &ConnectDomainEventCallbackRegisterAnyRet { callback_id },
        )
    }

    fn console(&self, conn: &Connection, call: &IncomingCall) -> Result<Reply, RemoteError> {
        let args = call.args::<call::DomainOpenConsole>()?;
        self.by_uuid(args.dom.uuid)?;
        let stream = conn
            .open_stream(call)
            .map_err(|e| RemoteError::internal(e.to_string()))?;
        let (writer, mut reader) = stream.split();
        tokio::spawn(async move {
            let _ = writer.send(b"console ready\r\n").await;
            while let Some(packet) = reader.recv().await {
                match packet {
                    StreamPacket::Data(data) => {
                        let _ = writer.send(&data.to_ascii_uppercase()).await;
                        if data.ends_with(b"bye") {
                            let _ = writer.finish().await;
                        }
                    }
                    StreamPacket::Finish | StreamPacket::Abort(_) => break,
                }
            }
        });
        Ok(Reply::empty())
    }
}

impl Dispatcher for FakeDaemon {
    async fn call(&self, conn: &Connection, call: IncomingCall) -> Result<Reply, RemoteError> {
        self.calls.lock().unwrap().push(call.procedure);
        match call.procedure {
            Procedure::AuthList => Reply::encode::<call::AuthList>(&AuthListRet { types: vec![0] }),
            Procedure::ConnectOpen | Procedure::ConnectClose => Ok(Reply::empty()),
            Procedure::ConnectSupportsFeature => {
                call.handle::<call::ConnectSupportsFeature, _, _>(|a| async move {
                    let supported = i32::from(a.feature == feature::REMOTE_EVENT_CALLBACK);
                    Ok(ConnectSupportsFeatureRet { supported })
                })
                .await
            }
            Procedure::ConnectListAllDomains => {
                call.handle::<call::ConnectListAllDomains, _, _>(|a| async move {
                    let domains: Vec<NonnullDomain> = self
                        .domains
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|d| {
                            let active = d.dom.id != -1;
                            (a.flags & 1 != 0 && active) || (a.flags & 2 != 0 && !active)
                        })
                        .map(|d| d.dom.clone())
                        .collect();
                    let ret = domains.len() as u32;
                    Ok(ConnectListAllDomainsRet { domains, ret })
                })
                .await
            }
            Procedure::DomainLookupByName => {
                call.handle::<call::DomainLookupByName, _, _>(|a| async move {
                    let what = format!("no domain with matching name '{}'", a.name);
                    let d = self.find(|d| d.name == a.name, what)?;
                    Ok(DomainRet { dom: d.dom })
                })
                .await
            }
            Procedure::DomainLookupById => {
                call.handle::<call::DomainLookupById, _, _>(|a| async move {
                    let what = format!("no domain with matching id {}", a.id);
                    let d = self.find(|d| d.id == a.id, what)?;
                    Ok(DomainRet { dom: d.dom })
                })
                .await
            }
            Procedure::DomainGetState => {
                call.handle::<call::DomainGetState, _, _>(|a| async move {
                    let d = self.by_uuid(a.dom.uuid)?;
                    Ok(DomainGetStateRet {
                        state: d.state,
                        reason: 1,
                    })
                })
                .await
            }
            Procedure::DomainGetInfo => {
                call.handle::<call::DomainGetInfo, _, _>(|a| async move {
                    let d = self.by_uuid(a.dom.uuid)?;
                    Ok(DomainGetInfoRet {
                        state: d.state as u32,
                        max_mem: 1_048_576,
                        memory: 524_288,
                        nr_virt_cpu: 2,
                        cpu_time: 1_500_000_000,
                    })
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
            Procedure::DomainGetAutostart | Procedure::DomainHasManagedSaveImage => {
                Reply::encode::<call::DomainGetAutostart>(&IntRet { value: 0 })
            }
            Procedure::DomainCreate => {
                call.handle::<call::DomainCreate, _, _>(|a| async move {
                    let d = self.by_uuid(a.dom.uuid)?;
                    if d.dom.id != -1 {
                        return Err(RemoteError::operation_invalid("domain is already running"));
                    }
                    self.set(a.dom.uuid, 1, 9);
                    Ok(())
                })
                .await
            }
            Procedure::DomainDestroy => {
                call.handle::<call::DomainDestroy, _, _>(|a| async move {
                    let d = self.by_uuid(a.dom.uuid)?;
                    if d.dom.id == -1 {
                        return Err(RemoteError::operation_invalid("domain is not running"));
                    }
                    self.set(a.dom.uuid, 5, -1);
                    Ok(())
                })
                .await
            }
            Procedure::ConnectDomainEventCallbackRegisterAny => self.register(conn, &call),
            Procedure::ConnectDomainEventCallbackDeregisterAny => Ok(Reply::empty()),
            Procedure::DomainOpenConsole => self.console(conn, &call),
            _ => Err(call.unsupported()),
        }
    }
}

/// A fake daemon serving a socket of its own until dropped.
pub struct Running {
    pub daemon: Arc<FakeDaemon>,
    pub socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Running {
    /// Starts the daemon on a fresh socket.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let socket = std::env::temp_dir().join(format!(
            "oxvirt-cli-test-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&socket);
        let daemon = FakeDaemon::new();
        let server = Server::new(Arc::clone(&daemon), ServerConfig::default());
        let listener = runtime
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .unwrap();
        runtime.spawn(async move { server.serve_unix(listener, false).await });
        Self {
            daemon,
            socket,
            runtime,
        }
    }

    /// The URI of this daemon.
    pub fn uri(&self) -> String {
        format!("oxvirt+unix:///system?socket={}", self.socket.display())
    }

    /// Runs `oxvirt -c URI ARGS...` with `stdin` as its input.
    pub fn oxvirt(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxvirt"))
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .env_remove("LIBVIRT_DEFAULT_URI")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = &self.runtime;
    }
}
