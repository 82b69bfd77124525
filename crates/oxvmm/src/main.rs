//! oxvmm: runs one virtual machine on KVM, configured from the command line or a JSON file.

mod api_server;
mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use vmm::VmOutcome;

/// Exit status for errors in the configuration or the host (the VM never ran).
const EXIT_ERROR: u8 = 1;
/// Exit status when the VM crashed.
const EXIT_CRASH: u8 = 2;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = match cli::parse_args(std::env::args_os()) {
        Ok(cli::Parsed::Run(args)) => args,
        Ok(cli::Parsed::Exit(code)) => return code,
        Err(e) => return report_error(&e),
    };
    init_logging(args.log_level);
    match run(&args) {
        Ok(Some(VmOutcome::Crashed(reason))) => {
            eprintln!("oxvmm: the guest crashed: {reason}");
            ExitCode::from(EXIT_CRASH)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => report_error(&e),
    }
}

/// A new VM from a configuration, or one restored from a snapshot.
enum Plan {
    /// Boxed, as the restore options: both are large beside a pointer.
    Boot(Box<vmm::VmConfig>),
    Restore(Box<vmm::RestoreOptions>),
}

/// Runs (or restores) the VM; `None` when only the configuration was printed.
fn run(args: &cli::Args) -> anyhow::Result<Option<VmOutcome>> {
    let plan = match &args.restore {
        Some(dir) => Plan::Restore(Box::new(cli::build_restore(args, dir)?)),
        None => Plan::Boot(Box::new(cli::build_config(args)?)),
    };
    if args.print_config {
        let Plan::Boot(config) = &plan else {
            anyhow::bail!("--print-config cannot be used with --restore");
        };
        println!("{}", serde_json::to_string_pretty(config)?);
        return Ok(None);
    }
    let (server, api) = match &args.api_socket {
        Some(path) => {
            let (sender, receiver) = vmm::api::api_channel()?;
            (Some(api_server::start(path, sender)?), Some(receiver))
        }
        None => (None, None),
    };
    let outcome = match plan {
        Plan::Restore(options) => vmm::restore_vm(*options, api),
        Plan::Boot(config) => vmm::run_vm(*config, api),
    };
    if let Some(server) = &server {
        server.drain(API_DRAIN_TIMEOUT);
    }
    match &outcome {
        Ok(VmOutcome::PoweredOff) => tracing::info!("guest powered off"),
        Ok(VmOutcome::ResetExit) => tracing::info!("guest reset; exiting"),
        _ => {}
    }
    Ok(Some(outcome?))
}

/// How long to wait for API responses still being written when the VM stops.
const API_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// One malloc arena for every thread: glibc would otherwise reserve (and set up) a 64 MiB arena
/// the first time each vCPU thread allocates, which costs start-up time and address space for
/// no gain in a process whose threads hardly allocate.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Prints the error and its whole cause chain on one line.
fn report_error(error: &anyhow::Error) -> ExitCode {
    let chain: Vec<String> = error.chain().map(|cause| cause.to_string()).collect();
    eprintln!("oxvmm: {}", chain.join(": "));
    ExitCode::from(EXIT_ERROR)
}

fn init_logging(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
