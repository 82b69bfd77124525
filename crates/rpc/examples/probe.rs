//! Connects to a libvirt-protocol daemon (ours or libvirtd) and prints what `virsh list --all`
//! would, plus host facts; with `--events N` it then prints N lifecycle events.
//!
//! `cargo run -p rpc --example probe -- 'test+unix:///default?socket=/path/libvirt-sock'`

use rpc::client::Client;
use rpc::procedures::{
    ConnectDomainEventCallbackRegisterAnyArgs, ConnectListAllDomainsArgs, DomainFlagsArgs, call,
    event,
};
use rpc::uri::ConnectUri;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let uri = ConnectUri::parse(args.get(1).map_or("oxvirt:///system", String::as_str))?;
    let events: usize = match args.get(2).map(String::as_str) {
        Some("--events") => args.get(3).map_or(Ok(1), |n| n.parse())?,
        _ => 0,
    };
    let client = Client::connect(&uri, false).await?;
    client.ping(Duration::from_secs(5)).await?;
    let host = client.call::<call::ConnectGetHostname>(&()).await?;
    let kind = client.call::<call::ConnectGetType>(&()).await?;
    let version = client.call::<call::ConnectGetVersion>(&()).await?;
    println!(
        "host {} type {} version {}",
        host.hostname, kind.type_, version.hv_ver
    );
    let list = client
        .call::<call::ConnectListAllDomains>(&ConnectListAllDomainsArgs {
            need_results: 1,
            flags: 0,
        })
        .await?;
    for dom in list.domains {
        let state = client
            .call::<call::DomainGetState>(&DomainFlagsArgs {
                dom: dom.clone(),
                flags: 0,
            })
            .await?;
        println!("{:>4} {:<20} state {}", dom.id, dom.name, state.state);
    }
    if events > 0 {
        let mut rx = client.take_events().ok_or("events already taken")?;
        client
            .call::<call::ConnectDomainEventCallbackRegisterAny>(
                &ConnectDomainEventCallbackRegisterAnyArgs {
                    event_id: 0,
                    dom: None,
                },
            )
            .await?;
        for _ in 0..events {
            let Some(msg) = rx.recv().await else { break };
            if let Some(ev) = msg.decode::<event::DomainEventCallbackLifecycle>()? {
                println!(
                    "event {} {} detail {}",
                    ev.msg.dom.name, ev.msg.event, ev.msg.detail
                );
            }
        }
    }
    client.close().await?;
    Ok(())
}
