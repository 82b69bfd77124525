//! Our client against our server in-process: typed calls, error replies, unknown procedures,
//! keepalive, events, streams, read-only connections and malformed frames.

mod support;

use rpc::client::{Client, ClientError, ClientStream};
use rpc::message::{self, Header, MessageStatus, MessageType};
use rpc::procedures::{
    ConnectDomainEventCallbackRegisterAnyArgs, ConnectListAllDomainsArgs, DomainArgs,
    DomainLookupByNameArgs, DomainOpenConsoleArgs, call, event,
};
use rpc::remote_error::code;
use rpc::server::StreamPacket;
use std::time::Duration;
use support::{EVENT_SUSPENDED, FakeHypervisor, fake_domain, serve_duplex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

async fn open_client(read_only: bool) -> (Client, std::sync::Arc<FakeHypervisor>) {
    let hypervisor = FakeHypervisor::new();
    let client = Client::from_stream(serve_duplex(hypervisor.clone(), false));
    client.open("oxvirt:///system", read_only).await.unwrap();
    (client, hypervisor)
}

/// The arguments that open the fake domain's console.
fn console_args() -> DomainOpenConsoleArgs {
    DomainOpenConsoleArgs {
        dom: fake_domain(),
        dev_name: None,
        flags: 0,
    }
}

/// Opens the fake domain's console.
async fn open_console(client: &Client) -> ClientStream {
    let ((), stream) = client
        .open_stream::<call::DomainOpenConsole>(&console_args())
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn typed_calls_round_trip() {
    // Arrange
    let (client, hypervisor) = open_client(false).await;

    // Act
    let list = client
        .call::<call::ConnectListAllDomains>(&ConnectListAllDomainsArgs {
            need_results: 1,
            flags: 0,
        })
        .await
        .unwrap();
    let found = client
        .call::<call::DomainLookupByName>(&DomainLookupByNameArgs {
            name: "fake1".into(),
        })
        .await
        .unwrap();
    let info = client
        .call::<call::DomainGetInfo>(&DomainArgs {
            dom: found.dom.clone(),
        })
        .await
        .unwrap();
    let uri = client.call::<call::ConnectGetUri>(&()).await.unwrap();

    // Assert
    assert_eq!(list.domains, vec![fake_domain()]);
    assert_eq!(found.dom, fake_domain());
    assert_eq!((info.state, info.nr_virt_cpu), (1, 2));
    assert_eq!(uri.uri, "oxvirt:///system");
    assert_eq!(
        hypervisor.opened_names.lock().unwrap().as_slice(),
        ["oxvirt:///system"]
    );
    client.close().await.unwrap();
}

#[tokio::test]
async fn error_replies_carry_libvirt_codes_and_keep_the_connection() {
    // Arrange
    let (client, _) = open_client(false).await;

    // Act
    let missing = client
        .call::<call::DomainLookupByName>(&DomainLookupByNameArgs {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    let unknown = client.call_raw(9999, vec![]).await.unwrap_err();
    let still_up = client.call::<call::ConnectGetUri>(&()).await;

    // Assert
    let ClientError::Remote(missing) = missing else {
        panic!("expected a remote error, got {missing:?}");
    };
    assert_eq!(missing.code, code::NO_DOMAIN);
    assert_eq!(
        missing.to_string(),
        "Domain not found: no domain with matching name 'nope'"
    );
    let ClientError::Remote(unknown) = unknown else {
        panic!("expected a remote error, got {unknown:?}");
    };
    assert_eq!(unknown.code, code::NO_SUPPORT);
    assert!(unknown.to_string().contains("9999"), "{unknown}");
    assert!(still_up.is_ok());
}

#[tokio::test]
async fn a_panicking_handler_still_answers() {
    // Arrange
    let (client, _) = open_client(false).await;

    // Act
    let err = client
        .call::<call::ConnectGetSysinfo>(&rpc::procedures::ConnectGetSysinfoArgs { flags: 0 })
        .await
        .unwrap_err();

    // Assert
    assert!(
        matches!(err, ClientError::Remote(ref e) if e.code == code::INTERNAL_ERROR),
        "{err:?}"
    );
    assert!(client.call::<call::ConnectGetUri>(&()).await.is_ok());
}

#[tokio::test]
async fn undecodable_arguments_get_an_rpc_error() {
    // Arrange
    let (client, _) = open_client(false).await;

    // Act: DOMAIN_LOOKUP_BY_NAME with a string length that runs past the end.
    let err = client
        .call_raw(23, vec![0, 0, 1, 0, b'x', 0, 0, 0])
        .await
        .unwrap_err();

    // Assert
    let ClientError::Remote(err) = err else {
        panic!("expected a remote error, got {err:?}");
    };
    assert_eq!(err.code, code::RPC);
    assert!(
        err.to_string().contains("DomainLookupByNameArgs.name"),
        "{err}"
    );
}

#[tokio::test]
async fn keepalive_ping_gets_a_pong() {
    // Arrange
    let (client, _) = open_client(false).await;

    // Act
    let result = client.ping(WAIT).await;

    // Assert
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn events_reach_registered_clients() {
    // Arrange
    let (watcher, hypervisor) = open_client(false).await;
    let mut events = watcher.take_events().unwrap();
    let reg = watcher
        .call::<call::ConnectDomainEventCallbackRegisterAny>(
            &ConnectDomainEventCallbackRegisterAnyArgs {
                event_id: 0,
                dom: None,
            },
        )
        .await
        .unwrap();
    let actor = Client::from_stream(support::serve_duplex(hypervisor, false));
    actor.open("oxvirt:///system", false).await.unwrap();

    // Act
    actor
        .call::<call::DomainSuspend>(&DomainArgs { dom: fake_domain() })
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();

    // Assert
    let msg = got
        .decode::<event::DomainEventCallbackLifecycle>()
        .unwrap()
        .expect("a lifecycle event");
    assert_eq!(msg.callback_id, reg.callback_id);
    assert_eq!(msg.msg.dom.name, "fake1");
    assert_eq!(msg.msg.event, EVENT_SUSPENDED);
}

#[tokio::test]
async fn console_stream_carries_data_both_ways() {
    // Arrange
    let (client, _) = open_client(false).await;

    // Act
    let mut stream = open_console(&client).await;
    let banner = tokio::time::timeout(WAIT, stream.recv()).await.unwrap();
    stream.send(b"hello").await.unwrap();
    let echo = tokio::time::timeout(WAIT, stream.recv()).await.unwrap();
    let finished = stream.finish().await;

    // Assert
    assert_eq!(
        banner,
        Some(StreamPacket::Data(b"console ready\r\n".to_vec()))
    );
    assert_eq!(echo, Some(StreamPacket::Data(b"HELLO".to_vec())));
    assert!(finished.is_ok(), "{finished:?}");
    assert!(client.call::<call::ConnectGetUri>(&()).await.is_ok());
}

#[tokio::test]
async fn server_can_end_a_stream() {
    // Arrange
    let (client, _) = open_client(false).await;
    let mut stream = open_console(&client).await;
    let _banner = stream.recv().await;

    // Act: the fake console ends the stream when it reads "bye".
    stream.send(b"bye").await.unwrap();
    let end = tokio::time::timeout(WAIT, stream.recv()).await.unwrap();
    let confirmed = stream.finish().await;

    // Assert
    assert_eq!(end, Some(StreamPacket::Finish));
    assert!(confirmed.is_ok(), "{confirmed:?}");
}

/// The next message on `raw` that is not a keepalive.
async fn next_remote_message(raw: &mut tokio::io::DuplexStream) -> message::Message {
    loop {
        let msg = tokio::time::timeout(WAIT, message::read_message(raw))
            .await
            .expect("a message in time")
            .unwrap()
            .expect("the server closed the connection");
        if msg.header.prog != message::KEEPALIVE_PROGRAM {
            return msg;
        }
    }
}

#[tokio::test]
async fn the_servers_end_of_a_stream_is_an_empty_continue_as_libvirtd_sends() {
    // Arrange: a raw client opens the fake console (serial 1).
    let mut raw = serve_duplex(FakeHypervisor::new(), false);
    let proc_ = rpc::Procedure::DomainOpenConsole.number();
    let args = console_args();
    let call_header = Header::remote(proc_, MessageType::Call, 1, MessageStatus::Ok);
    let open = message::encode_frame_with(&call_header, &args).unwrap();
    raw.write_all(&open).await.unwrap();
    let reply = next_remote_message(&mut raw).await;
    let banner = next_remote_message(&mut raw).await;
    let stream_packet = |status, payload: &[u8]| {
        let header = Header::remote(proc_, MessageType::Stream, 1, status);
        message::encode_frame(&header, payload).unwrap()
    };

    // Act: "bye" makes the fake console end the stream; the client then finishes it.
    raw.write_all(&stream_packet(MessageStatus::Continue, b"bye"))
        .await
        .unwrap();
    let end = next_remote_message(&mut raw).await;
    raw.write_all(&stream_packet(MessageStatus::Ok, &[]))
        .await
        .unwrap();
    let confirmation = next_remote_message(&mut raw).await;

    // Assert
    assert_eq!(reply.header.msg_type, MessageType::Reply);
    assert_eq!(banner.payload, b"console ready\r\n");
    // libvirt's client takes an OK it did not ask for as a protocol error and drops the
    // connection; end of file is an empty CONTINUE.
    assert_eq!(
        (end.header.msg_type, end.header.status, end.header.serial),
        (MessageType::Stream, MessageStatus::Continue, 1)
    );
    assert!(end.payload.is_empty(), "{:?}", end.payload);
    assert_eq!(
        (confirmation.header.msg_type, confirmation.header.status),
        (MessageType::Stream, MessageStatus::Ok)
    );
    assert!(confirmation.payload.is_empty());
}

#[tokio::test]
async fn failed_stream_open_is_an_error_reply() {
    // Arrange
    let (client, _) = open_client(false).await;
    let mut dom = fake_domain();
    dom.name = "nope".into();
    dom.uuid = [0; 16];

    // Act
    let err = client
        .open_stream::<call::DomainOpenConsole>(&DomainOpenConsoleArgs {
            dom,
            dev_name: None,
            flags: 0,
        })
        .await
        .unwrap_err();

    // Assert
    assert!(matches!(err, ClientError::Remote(ref e) if e.code == code::NO_DOMAIN));
}

#[tokio::test]
async fn read_only_connections_are_refused_writes() {
    // Arrange
    let (client, _) = open_client(true).await;

    // Act
    let err = client
        .call::<call::DomainSuspend>(&DomainArgs { dom: fake_domain() })
        .await
        .unwrap_err();

    // Assert
    assert!(
        matches!(err, ClientError::Remote(ref e) if e.code == code::OPERATION_DENIED),
        "{err:?}"
    );
}

async fn server_closes_after(bytes: &[u8]) -> bool {
    let mut raw = serve_duplex(FakeHypervisor::new(), false);
    raw.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, raw.read(&mut buf)).await,
        Ok(Ok(0))
    )
}

#[tokio::test]
async fn malformed_frames_close_only_that_connection() {
    // Arrange: a length word above the 16 MiB limit, one below a header, a bad message type.
    let too_long = (16u32 * 1024 * 1024 + 5).to_be_bytes();
    let too_short = 8u32.to_be_bytes();
    let mut bad_type = message::encode_frame(
        &Header::remote(1, MessageType::Call, 0, MessageStatus::Ok),
        &[],
    )
    .unwrap();
    bad_type[16..20].copy_from_slice(&77u32.to_be_bytes());
    let (healthy, _) = open_client(false).await;

    // Act + Assert
    assert!(server_closes_after(&too_long).await);
    assert!(server_closes_after(&too_short).await);
    assert!(server_closes_after(&bad_type).await);
    assert!(healthy.call::<call::ConnectGetUri>(&()).await.is_ok());
}

fn fast_keepalive() -> rpc::server::ServerConfig {
    rpc::server::ServerConfig {
        keepalive_interval: Duration::from_millis(40),
        keepalive_count: 2,
        ..Default::default()
    }
}

fn keepalive_feature_call() -> Vec<u8> {
    let header = Header::remote(60, MessageType::Call, 0, MessageStatus::Ok);
    message::encode_frame(&header, &10i32.to_be_bytes()).unwrap()
}

#[tokio::test]
async fn server_keepalive_keeps_answering_clients() {
    // Arrange: a client that enabled keepalive; ours answers the server's PINGs.
    let stream = support::serve_duplex_with(FakeHypervisor::new(), false, fast_keepalive());
    let client = Client::from_stream(stream);
    client
        .call::<call::ConnectSupportsFeature>(&rpc::procedures::ConnectSupportsFeatureArgs {
            feature: rpc::procedures::feature::PROGRAM_KEEPALIVE,
        })
        .await
        .unwrap();

    // Act: stay idle for many keepalive intervals.
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Assert
    assert!(client.call::<call::ConnectGetUri>(&()).await.is_ok());
}

#[tokio::test]
async fn server_keepalive_closes_silent_clients() {
    // Arrange: a raw client that enables keepalive and then never answers a PING.
    let mut raw = support::serve_duplex_with(FakeHypervisor::new(), false, fast_keepalive());
    raw.write_all(&keepalive_feature_call()).await.unwrap();

    // Act: read everything the server sends until it closes.
    let mut pings = 0;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match message::read_message(&mut raw).await {
                Ok(Some(msg)) if msg.header.prog == message::KEEPALIVE_PROGRAM => pings += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;

    // Assert
    assert!(closed.is_ok(), "server kept a silent client open");
    assert_eq!(pings, 2);
}
