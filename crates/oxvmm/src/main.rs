//! oxvmm: runs one virtual machine on KVM, configured from the command line or a JSON file.

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
    let config = match cli::build_config(&args) {
        Ok(config) => config,
        Err(e) => return report_error(&e),
    };
    if args.print_config {
        return match serde_json::to_string_pretty(&config) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => report_error(&e.into()),
        };
    }
    match vmm::run_vm(config) {
        Ok(VmOutcome::PoweredOff) => {
            tracing::info!("guest powered off");
            ExitCode::SUCCESS
        }
        Ok(VmOutcome::ResetExit) => ExitCode::SUCCESS,
        Ok(VmOutcome::Crashed(reason)) => {
            eprintln!("oxvmm: the guest crashed: {reason}");
            ExitCode::from(EXIT_CRASH)
        }
        Err(e) => report_error(&e.into()),
    }
}

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
