//! `oxvmm-vhost-user --socket PATH DEVICE [OPTIONS]`: serves one device model over vhost-user.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vhost_user::{DeviceSpec, Server};

/// Serves one of oxvirt's virtio device models as a vhost-user back-end.
#[derive(Parser, Debug)]
#[command(
    name = "oxvmm-vhost-user",
    after_help = "DEVICE is one of:\n  \
        blk path=FILE[,readonly=on][,serial=S]\n  \
        rng [src=FILE]                      (default src=/dev/urandom)\n  \
        vsock cid=N,uds=PATH                (host side: PATH and PATH_<port>, as Firecracker)\n  \
        net tap=NAME                        (the TAP is created if missing; no rate limits)\n\
        The back-end serves one front-end at a time and waits for the next when it goes."
)]
struct Cli {
    /// The Unix socket to listen on (the front-end connects to it).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The device kind: blk, rng, vsock or net.
    #[arg(value_name = "DEVICE")]
    device: String,
    /// Its options, comma-separated key=value pairs.
    #[arg(value_name = "OPTIONS", default_value = "")]
    options: String,
    /// Log every refused request and queue event (debug level).
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("oxvmm-vhost-user: error: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let spec = DeviceSpec::parse(&cli.device, &cli.options)?;
    let backend = spec.build()?;
    let mut server = Server::bind(&cli.socket, backend)?;
    server.serve_forever()?;
    Ok(())
}

/// The error and its causes, each cause left out when its text is already in what precedes
/// it (many of our messages quote their source).
fn chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}
