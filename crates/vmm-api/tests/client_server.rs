//! Client and server together over a real Unix socket, in one process: a fake VMM (a state
//! machine behind a mutex) answers through `serve_connection`, driven by `Client`.

use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vmm_api::config::{MemoryConfig, PayloadConfig};
use vmm_api::http::{HttpLimits, read_response, write_request};
use vmm_api::{
    ApiError, ApiRequest, ApiResponse, Client, ClientError, Counters, DeviceCounters, PingResponse,
    SnapshotRequest, VmConfig, VmInfo, VmState, serve_connection,
};

/// What the fake VMM remembers, so tests can check the requests arrived typed and in order.
#[derive(Default)]
struct FakeVm {
    paused: bool,
    boots: u32,
    balloon_mib: Option<u64>,
    snapshots: Vec<SnapshotRequest>,
    handled: u64,
}

fn config() -> VmConfig {
    VmConfig {
        payload: PayloadConfig {
            kernel: PathBuf::from("builtin:oxguest"),
            firmware: None,
            initrd: None,
            cmdline: String::new(),
            boot_protocol: Default::default(),
        },
        cpus: Default::default(),
        memory: MemoryConfig { size_mib: 64 },
        serial: Default::default(),
        on_reboot: Default::default(),
        rng: None,
        balloon: None,
        disks: Vec::new(),
        console: None,
        nets: Vec::new(),
        vsock: None,
    }
}

fn handle(vm: &Mutex<FakeVm>, request: ApiRequest) -> Result<ApiResponse, ApiError> {
    let mut vm = vm
        .lock()
        .map_err(|_| ApiError::internal("state poisoned"))?;
    vm.handled += 1;
    match request {
        ApiRequest::Ping => ApiResponse::json(&PingResponse::current()),
        ApiRequest::Info => ApiResponse::json(&VmInfo {
            state: if vm.paused {
                VmState::Paused
            } else {
                VmState::Running
            },
            config: config(),
            uptime_ms: 1234,
            boots: vm.boots,
        }),
        ApiRequest::Pause if vm.paused => Err(ApiError::conflict("the VM is already paused")),
        ApiRequest::Pause => {
            vm.paused = true;
            Ok(ApiResponse::NoContent)
        }
        ApiRequest::Resume if !vm.paused => Err(ApiError::conflict("the VM is not paused")),
        ApiRequest::Resume => {
            vm.paused = false;
            Ok(ApiResponse::NoContent)
        }
        ApiRequest::Reboot => {
            vm.boots += 1;
            Ok(ApiResponse::NoContent)
        }
        ApiRequest::Shutdown | ApiRequest::PowerOff => Ok(ApiResponse::NoContent),
        ApiRequest::Counters => {
            let mut counters = Counters::default();
            counters.exits.insert("io".to_string(), vm.handled);
            counters
                .devices
                .insert("serial".to_string(), DeviceCounters::default());
            ApiResponse::json(&counters)
        }
        ApiRequest::Balloon(request) => {
            vm.balloon_mib = Some(request.target_mib);
            Ok(ApiResponse::NoContent)
        }
        ApiRequest::Snapshot(request) if request.destination.as_os_str().is_empty() => Err(
            ApiError::internal("cannot create the snapshot directory \"\""),
        ),
        ApiRequest::Snapshot(request) => {
            vm.snapshots.push(request);
            Ok(ApiResponse::NoContent)
        }
    }
}

struct Server {
    path: PathBuf,
    vm: Arc<Mutex<FakeVm>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts a fake VMM whose accept loop runs for the rest of the test process.
fn start_server(name: &str) -> Server {
    let path = std::env::temp_dir().join(format!("vmm-api-it-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let vm = Arc::new(Mutex::new(FakeVm {
        boots: 1,
        ..FakeVm::default()
    }));
    let shared = Arc::clone(&vm);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let vm = Arc::clone(&shared);
            thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut writer = &stream;
                let _ = serve_connection(&mut reader, &mut writer, &HttpLimits::SERVER, |r| {
                    handle(&vm, r)
                });
            });
        }
    });
    Server { path, vm }
}

fn client(server: &Server) -> Client {
    Client::wait_for_socket(&server.path, Duration::from_secs(10))
        .unwrap()
        .with_timeout(Some(Duration::from_secs(10)))
}

#[test]
fn every_client_call_reaches_the_vmm_typed() {
    let server = start_server("calls");
    let client = client(&server);

    let ping = client.ping().unwrap();
    client.pause().unwrap();
    let paused = client.info().unwrap();
    client.resume().unwrap();
    client.reboot().unwrap();
    client.shutdown().unwrap();
    client.power_off().unwrap();
    client.balloon(96).unwrap();
    let snapshot = SnapshotRequest {
        destination: PathBuf::from("/tmp/snap-1"),
        diff: true,
    };
    client.snapshot(&snapshot).unwrap();
    let counters = client.counters().unwrap();
    let info = client.info().unwrap();

    assert_eq!(ping, PingResponse::current());
    assert_eq!(paused.state, VmState::Paused);
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.boots, 2);
    assert_eq!(info.config, config());
    assert_eq!(counters.exits["io"], 10);
    assert!(counters.devices.contains_key("serial"));
    let vm = server.vm.lock().unwrap();
    assert_eq!(vm.balloon_mib, Some(96));
    assert_eq!(vm.snapshots, [snapshot]);
}

#[test]
fn wrong_state_comes_back_as_409_with_the_message() {
    let server = start_server("conflict");
    let client = client(&server);

    let err = client.resume().unwrap_err();

    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("not paused"), "{err}");
    client.ping().expect("the VMM keeps serving after an error");
}

#[test]
fn vmm_failures_come_back_as_500() {
    let server = start_server("failure");
    let client = client(&server);

    let err = client
        .snapshot(&SnapshotRequest {
            destination: PathBuf::new(),
            diff: false,
        })
        .unwrap_err();

    assert!(
        matches!(&err, ClientError::Api { status: 500, message } if message.contains("snapshot directory")),
        "{err}"
    );
}

#[test]
fn raw_requests_see_routing_errors() {
    let server = start_server("raw");
    let client = client(&server);

    let (unknown, unknown_body) = client.request("GET", "/api/v1/vm.nothing", None).unwrap();
    let (wrong_method, _) = client.request("POST", "/api/v1/vm.pause", None).unwrap();
    let (bad_field, bad_body) = client
        .request(
            "PUT",
            "/api/v1/vm.balloon",
            Some(br#"{"target_mib":1,"x":2}"#),
        )
        .unwrap();
    let (bad_type, _) = client
        .request("PUT", "/api/v1/vm.balloon", Some(br#"{"target_mib":true}"#))
        .unwrap();
    let (with_query, _) = client.request("GET", "/api/v1/vm.info?x=1", None).unwrap();

    assert_eq!(unknown, 404);
    assert!(String::from_utf8_lossy(&unknown_body).contains("/api/v1/vm.nothing"));
    assert_eq!(wrong_method, 405);
    assert_eq!(bad_field, 400);
    assert!(String::from_utf8_lossy(&bad_body).contains("\\\"x\\\""));
    assert_eq!(bad_type, 400);
    assert_eq!(with_query, 200);
    assert_eq!(
        server.vm.lock().unwrap().handled,
        1,
        "only the valid request reached the VMM"
    );
}

fn raw_exchange(path: &Path, requests: &[(&str, &str, Option<&[u8]>)]) -> Vec<u16> {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut wire = Vec::new();
    for (method, target, body) in requests {
        write_request(&mut wire, method, target, *body).unwrap();
    }
    (&stream).write_all(&wire).unwrap();
    let mut reader = BufReader::new(&stream);
    requests
        .iter()
        .map(|_| {
            read_response(&mut reader, &HttpLimits::CLIENT)
                .unwrap()
                .status
        })
        .collect()
}

#[test]
fn one_connection_serves_pipelined_requests() {
    let server = start_server("pipeline");
    let _ = client(&server);

    let statuses = raw_exchange(
        &server.path,
        &[
            ("GET", "/api/v1/vmm.ping", None),
            ("PUT", "/api/v1/vm.pause", Some(b"{}")),
            ("PUT", "/api/v1/vm.pause", None),
            ("GET", "/api/v1/vm.info", None),
            ("PUT", "/api/v1/vm.balloon", Some(br#"{"target_mib": 8}"#)),
        ],
    );

    assert_eq!(statuses, [200, 204, 409, 200, 204]);
}

#[test]
fn concurrent_clients_are_all_answered() {
    let server = start_server("concurrent");
    let client = client(&server);

    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || (0..20).all(|_| client.ping().is_ok()))
        })
        .collect();

    for worker in workers {
        assert!(worker.join().unwrap());
    }
    assert_eq!(server.vm.lock().unwrap().handled, 160);
}
