//! oxvmm-remote: drives a running oxvmm through its control API (like Cloud Hypervisor's
//! ch-remote).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vmm_api::{Client, SnapshotRequest};

/// Command line of oxvmm-remote.
#[derive(Parser, Debug)]
#[command(name = "oxvmm-remote", version, about = "Control a running oxvmm")]
struct Args {
    /// The oxvmm's control socket (its --api-socket).
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that oxvmm answers; prints its version.
    Ping,
    /// The VM's state, configuration and uptime (JSON).
    Info,
    /// Stop the vCPUs.
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Press the ACPI power button (the guest decides what to do).
    Shutdown,
    /// Reboot the VM in place.
    Reboot,
    /// Power the VM off at once.
    PowerOff,
    /// Exit and device counters (JSON).
    Counters,
    /// Set the balloon's target size.
    Balloon {
        /// Target in MiB.
        target_mib: u64,
    },
    /// Snapshot the VM into a directory (paused for the time it takes).
    Snapshot {
        /// Destination directory.
        destination: PathBuf,
        /// Only pages written since the previous snapshot.
        #[arg(long)]
        diff: bool,
    },
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "oxvmm-remote: {} (see oxvmm-remote --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::FAILURE;
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("oxvmm-remote: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<()> {
    let client = Client::new(&args.api_socket);
    let socket = args.api_socket.display();
    let context = || format!("--api-socket {socket}");
    match &args.command {
        Command::Ping => {
            let ping = client.ping().with_context(context)?;
            println!("oxvmm {} (API {})", ping.version, ping.api);
        }
        Command::Info => print_json(&client.info().with_context(context)?)?,
        Command::Pause => client.pause().with_context(context)?,
        Command::Resume => client.resume().with_context(context)?,
        Command::Shutdown => client.shutdown().with_context(context)?,
        Command::Reboot => client.reboot().with_context(context)?,
        Command::PowerOff => client.power_off().with_context(context)?,
        Command::Counters => print_json(&client.counters().with_context(context)?)?,
        Command::Balloon { target_mib } => client.balloon(*target_mib).with_context(context)?,
        Command::Snapshot { destination, diff } => {
            let request = SnapshotRequest {
                destination: destination.clone(),
                diff: *diff,
            };
            let body = client
                .send(&vmm_api::ApiRequest::Snapshot(request))
                .with_context(context)?;
            let report: serde_json::Value =
                serde_json::from_slice(&body).context("the snapshot report is not JSON")?;
            print_json(&report)?;
        }
    }
    Ok(())
}
