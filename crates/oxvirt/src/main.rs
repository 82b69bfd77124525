//! `oxvirt [-c URI] [-q] [-r] COMMAND [ARGS...]`: a virsh-compatible client of oxvirtd.
//!
//! Exit status and streams follow virsh: output on stdout followed by an empty line (unless
//! `-q`), errors as `error: ...` lines on stderr, status 1 on any failure.

use oxvirt::args::{self, ParseOutcome};
use oxvirt::commands::{self, CmdError, Session};
use rpc::client::Client;
use rpc::uri::ConnectUri;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How long opening the connection may take before the daemon is considered unresponsive.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn print_errors(lines: &[String]) {
    let mut stderr = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(stderr, "error: {line}");
    }
}

fn main() -> ExitCode {
    // Like virsh and other C tools, end quietly when the reader of our output goes away
    // (`oxvirt list | head -1`) instead of reporting a write error.
    // SAFETY: setting a signal's disposition to the default has no preconditions, and no
    // other thread exists yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match args::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ParseOutcome::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ParseOutcome::Fail(lines)) => {
            print_errors(&lines);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = commands::validate(&cli.command) {
        print_errors(&[e.to_string()]);
        // virsh checks these inside the command, which then ends with its empty line.
        if !e.is_parse_error() && !cli.quiet {
            println!();
        }
        return ExitCode::FAILURE;
    }
    let env_uri = std::env::var("LIBVIRT_DEFAULT_URI").ok();
    let uri = args::choose_uri(cli.connect.as_deref(), env_uri.as_deref());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_errors(&[format!("cannot start the async runtime: {e}")]);
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli, uri));
    // Leave a console's blocked stdin reader behind instead of waiting for it.
    runtime.shutdown_background();
    code
}

async fn connect(uri: &str, read_only: bool) -> Result<Client, CmdError> {
    let context = "failed to connect to the hypervisor";
    let parsed = ConnectUri::parse(uri).map_err(|e| CmdError {
        lines: vec![context.to_owned(), e.to_string()],
    })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&parsed, read_only)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(CmdError::with_cause(context, &e)),
        Err(_) => Err(CmdError {
            lines: vec![
                context.to_owned(),
                format!("no answer from the daemon within {CONNECT_TIMEOUT:?}"),
            ],
        }),
    }
}

async fn run(cli: args::Cli, uri: String) -> ExitCode {
    let client = match connect(&uri, cli.readonly).await {
        Ok(client) => client,
        Err(e) => {
            print_errors(&e.lines);
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = {
        let mut session =
            Session::new(client.clone(), uri, cli.quiet, &mut stdout).read_only(cli.readonly);
        session.run(&cli.command).await
    };
    // Tell the daemon we are leaving; a daemon that already went away is no error here.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
    if let Err(e) = &result {
        print_errors(&e.lines);
    }
    if !cli.quiet {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unusable_uri_fails_like_a_refused_connection() {
        // Act
        let err = connect("no-scheme", false).await.unwrap_err();

        // Assert
        assert_eq!(err.lines[0], "failed to connect to the hypervisor");
        assert!(err.lines[1].contains("no-scheme"), "{err:?}");
    }

    #[tokio::test]
    async fn missing_socket_names_the_path() {
        // Act
        let err = connect("oxvirt+unix:///system?socket=/nonexistent/sock", false)
            .await
            .unwrap_err();

        // Assert
        assert_eq!(
            err.lines,
            [
                "failed to connect to the hypervisor",
                "Failed to connect socket to '/nonexistent/sock': No such file or directory"
            ]
        );
    }
}
