//! `console`: the guest's console over libvirt's stream procedures (`DOMAIN_OPEN_CONSOLE`,
//! then STREAM packets both ways), with the terminal in raw mode and Ctrl-] (0x1d) to leave,
//! as virsh does.
//!
//! Unlike virsh, a console whose standard input is not a terminal is allowed (for scripts and
//! tests): input is forwarded until it ends, output is printed until the stream ends, the
//! escape byte arrives, or SIGINT/SIGTERM.

use super::domain::{domain_arg, state_of};
use super::{CmdError, LookupBy, Session, describe};
use crate::args::Either;
use crate::names::state;
use rpc::client::ClientStream;
use rpc::procedures::{DomainOpenConsoleArgs, call};
use rpc::server::StreamPacket;
use std::io::Read;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Ctrl-]: ends the console session.
pub const ESCAPE: u8 = 0x1d;
/// How long to wait for the daemon to confirm the end of the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where input stops at the escape byte: the bytes to forward, and whether it was seen.
pub fn split_at_escape(chunk: &[u8]) -> (&[u8], bool) {
    match chunk.iter().position(|b| *b == ESCAPE) {
        Some(i) => (&chunk[..i], true),
        None => (chunk, false),
    }
}

pub(super) async fn run(
    s: &mut Session<'_>,
    arg: &Either,
    dev_name: Option<String>,
    flags: u32,
) -> Result<(), CmdError> {
    let dom = domain_arg(s, arg, "console", LookupBy::ANY).await?;
    let (st, _) = state_of(s, &dom)
        .await
        .map_err(|e| CmdError::with_cause("Unable to get domain status", &e))?;
    if st == state::SHUTOFF {
        return Err(CmdError::msg("The domain is not running"));
    }
    s.print_extra(&format!(
        "Connected to domain '{}'\nEscape character is ^] (Ctrl + ])\n",
        dom.name
    ))?;
    let args = DomainOpenConsoleArgs {
        dom,
        dev_name,
        flags,
    };
    let (_, stream) = s
        .client()
        .open_stream::<call::DomainOpenConsole>(&args)
        .await
        .map_err(|e| CmdError::cause(&e))?;
    let raw = RawTerminal::enter();
    let result = pump(s, stream).await;
    drop(raw);
    result
}

/// Reads standard input on its own thread: a blocking read cannot be cancelled, and the
/// process exits without waiting for it.
fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

async fn pump(s: &mut Session<'_>, mut stream: ClientStream) -> Result<(), CmdError> {
    let mut input = stdin_reader();
    let mut input_open = true;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| CmdError::msg(format!("cannot handle SIGINT: {e}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| CmdError::msg(format!("cannot handle SIGTERM: {e}")))?;
    loop {
        tokio::select! {
            chunk = input.recv(), if input_open => match chunk {
                Some(chunk) => {
                    let (data, escaped) = split_at_escape(&chunk);
                    if !data.is_empty() {
                        stream.send(data).await.map_err(|e| CmdError::cause(&e))?;
                    }
                    if escaped {
                        return close(stream).await;
                    }
                }
                None => input_open = false,
            },
            packet = stream.recv() => match packet {
                Some(StreamPacket::Data(data)) => s.print_bytes(&data)?,
                // The daemon ended the console (the domain stopped).
                Some(StreamPacket::Finish) => return Ok(()),
                Some(StreamPacket::Abort(err)) => {
                    return Err(CmdError::msg(err.map_or_else(
                        || "console stream aborted by the daemon".to_owned(),
                        |e| e.to_string(),
                    )));
                }
                None => return Err(CmdError::msg("the connection to the daemon is closed")),
            },
            _ = interrupt.recv() => return close(stream).await,
            _ = terminate.recv() => return close(stream).await,
        }
    }
}

/// Ends the stream as virsh does when leaving (an abort), without waiting forever.
async fn close(stream: ClientStream) -> Result<(), CmdError> {
    match tokio::time::timeout(CLOSE_TIMEOUT, stream.abort()).await {
        Ok(Ok(())) | Err(_) => Ok(()),
        // The daemon confirming the abort with an error is the normal end of an aborted stream.
        Ok(Err(rpc::client::ClientError::Remote(_))) => Ok(()),
        Ok(Err(e)) => Err(CmdError::msg(describe(&e))),
    }
}

/// The terminal in raw mode while the console runs; restored on drop.
struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    /// Puts standard input in raw mode when it is a terminal.
    fn enter() -> Self {
        // SAFETY: isatty only inspects the descriptor number.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return Self { saved: None };
        }
        let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios it is given and reports failure by its result.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) } != 0 {
            return Self { saved: None };
        }
        // SAFETY: tcgetattr returned 0, so it initialised `saved`.
        let saved = unsafe { saved.assume_init() };
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the termios value it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios derived from the terminal's own settings.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &raw) } != 0 {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings tcgetattr returned for the same descriptor.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, saved) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_byte_cuts_the_input() {
        assert_eq!(split_at_escape(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_at_escape(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_at_escape(b"\x1d"), (&b""[..], true));
    }
}
