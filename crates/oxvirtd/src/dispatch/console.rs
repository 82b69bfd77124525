//! `virsh console`: `DOMAIN_OPEN_CONSOLE` opens a stream that carries the bytes of the VM's
//! serial port (or virtio console) both ways.
//!
//! oxvmm serves a `pty` serial port as a Unix socket (one client at a time; a new client
//! replaces the old one, and output written while nobody was connected waits in a backlog).
//! The daemon connects to it and pumps: socket → stream packets, stream packets → socket.
//! When the VM stops, the socket ends and the stream is finished; when the client finishes or
//! aborts, the socket is closed.

use std::path::PathBuf;

use domain::CharDevice;
use rpc::RemoteError;
use rpc::procedures::call;
use rpc::server::{Connection, IncomingCall, Reply, StreamPacket, StreamReader, StreamWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use vmm_api::config::{ConsoleConfig, SerialConfig};

use super::Daemon;
use super::errors::check_flags;

/// `VIR_DOMAIN_CONSOLE_FORCE` and `VIR_DOMAIN_CONSOLE_SAFE`: oxvmm's socket always hands the
/// console to the newest client, which is what FORCE asks; SAFE is honoured by that too.
const CONSOLE_FLAGS: u32 = 3;

/// Bytes read from the console socket per stream packet.
const CHUNK: usize = 16 * 1024;

impl Daemon {
    pub(super) async fn open_console(
        &self,
        conn: &Connection,
        call: &IncomingCall,
    ) -> Result<Reply, RemoteError> {
        let args = call.args::<call::DomainOpenConsole>()?;
        check_flags(args.flags, CONSOLE_FLAGS, "virDomainOpenConsole")?;
        let summary = self.resolve(&args.dom)?;
        let config = (self.registry.driver().live_config(&summary.name))
            .ok_or_else(|| RemoteError::operation_invalid("domain is not running"))?;
        let def = self.def_of(&summary.name, false)?;
        let device = args.dev_name.as_deref().unwrap_or("serial0");
        let socket = console_socket(device, &def, &config)?;
        let stream = UnixStream::connect(&socket).await.map_err(|e| {
            RemoteError::operation_failed(format!(
                "cannot connect to the console of '{}' at {}: {e}",
                summary.name,
                socket.display()
            ))
        })?;
        let rpc_stream = conn
            .open_stream(call)
            .map_err(|e| RemoteError::internal(e.to_string()))?;
        let (writer, reader) = rpc_stream.split();
        let (socket_read, socket_write) = stream.into_split();
        tokio::spawn(guest_to_client(socket_read, writer));
        tokio::spawn(client_to_guest(reader, socket_write));
        Ok(Reply::empty())
    }
}

/// The socket behind console `device` (`serial0`/`console0` is COM1, `console1` the virtio
/// console, as the aliases of the live XML name them).
fn console_socket(
    device: &str,
    def: &domain::DomainDef,
    config: &vmm_api::VmConfig,
) -> Result<PathBuf, RemoteError> {
    let not_pty =
        || RemoteError::operation_failed(format!("character device {device} is not using a PTY"));
    match device {
        "serial0" | "console0" => match (&def.devices.serial, &config.serial) {
            (Some(CharDevice::Pty | CharDevice::UnixBind { .. }), SerialConfig::Socket(path)) => {
                Ok(path.clone())
            }
            _ => Err(not_pty()),
        },
        "console1" => match (&def.devices.virtio_console, &config.console) {
            (
                Some(CharDevice::Pty | CharDevice::UnixBind { .. }),
                Some(ConsoleConfig::Socket(path)),
            ) => Ok(path.clone()),
            _ => Err(not_pty()),
        },
        other => Err(RemoteError::operation_failed(format!(
            "cannot find character device {other}"
        ))),
    }
}

async fn guest_to_client(mut socket: OwnedReadHalf, writer: StreamWriter) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.send(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    // The VM stopped (or replaced us with another client): end of file for virsh.
    let _ = writer.finish().await;
}

async fn client_to_guest(mut reader: StreamReader, mut socket: OwnedWriteHalf) {
    while let Some(packet) = reader.recv().await {
        match packet {
            StreamPacket::Data(data) => {
                if socket.write_all(&data).await.is_err() {
                    break;
                }
            }
            StreamPacket::Finish | StreamPacket::Abort(_) => break,
        }
    }
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(serial: &str) -> domain::DomainDef {
        domain::DomainDef::from_xml(&format!(
            "<domain type='kvm'><name>c</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><features><acpi/><apic/></features>\
             <devices>{serial}</devices></domain>"
        ))
        .unwrap()
    }

    fn config(def: &domain::DomainDef) -> vmm_api::VmConfig {
        def.to_vm_config(&crate::plan::native_runtime(
            &oxvirtd::Paths::new("/s", "/r"),
            "c",
            Vec::new(),
            &std::collections::HashSet::new(),
        ))
        .unwrap()
    }

    #[test]
    fn a_pty_serial_port_is_its_socket() {
        let pty = def("<serial type='pty'/>");

        let socket = console_socket("serial0", &pty, &config(&pty)).unwrap();

        assert_eq!(socket, PathBuf::from("/r/domains/c.console.sock"));
    }

    #[test]
    fn a_file_serial_port_has_no_console() {
        let file = def("<serial type='file'><source path='/tmp/x'/></serial>");

        let err = console_socket("serial0", &file, &config(&file)).unwrap_err();
        let unknown = console_socket("parallel0", &file, &config(&file)).unwrap_err();

        assert_eq!(
            err.message_text(),
            "operation failed: character device serial0 is not using a PTY"
        );
        assert!(unknown.message_text().contains("parallel0"), "{unknown}");
    }
}
