//! The firmware debug console: QEMU's `isa-debugcon`, one port (0x402 on x86) that a firmware
//! writes its log to a byte at a time. SeaBIOS uses it only when a read of the port returns
//! [`DEBUGCON_READBACK`], so reading tells it the console is there.
//!
//! Bytes are gathered into lines and each complete line goes to the sink the VMM gives (oxvmm
//! logs them); a line longer than [`MAX_LINE`] bytes is passed on in pieces. Control
//! characters other than tab are dropped, so a hostile guest cannot forge terminal sequences
//! in the host's log.

use crate::BusDevice;

/// What a read of the port returns: QEMU's value, which SeaBIOS checks for.
pub const DEBUGCON_READBACK: u8 = 0xE9;
/// Longest line handed to the sink in one piece.
pub const MAX_LINE: usize = 512;

/// Where complete lines go.
pub type LineSink = Box<dyn FnMut(&str) + Send>;

/// The debug console.
pub struct DebugCon {
    line: Vec<u8>,
    sink: LineSink,
}

impl DebugCon {
    /// A console that hands each line to `sink`.
    pub fn new(sink: LineSink) -> Self {
        DebugCon {
            line: Vec::with_capacity(MAX_LINE),
            sink,
        }
    }

    fn push(&mut self, byte: u8) {
        match byte {
            b'\n' => self.flush(),
            b'\t' | 0x20..=0x7E | 0x80..=0xFF => {
                self.line.push(byte);
                if self.line.len() >= MAX_LINE {
                    self.flush();
                }
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        (self.sink)(&text);
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(DEBUGCON_READBACK);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        for &byte in data {
            self.push(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn console() -> (DebugCon, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let console = DebugCon::new(Box::new(move |line| {
            sink.lock().unwrap().push(line.to_string());
        }));
        (console, lines)
    }

    #[test]
    fn bytes_become_lines_without_control_characters() {
        let (mut console, lines) = console();

        console.write(0, b"SeaBIOS (version 1)\r\n");
        console.write(0, b"\x1b[2Jcl");
        console.write(0, b"ear\n");
        console.write(0, b"pending");

        assert_eq!(
            *lines.lock().unwrap(),
            vec!["SeaBIOS (version 1)".to_string(), "[2Jclear".to_string()]
        );
    }

    #[test]
    fn reads_say_the_console_is_present_and_long_lines_are_split() {
        let (mut console, lines) = console();
        let mut probe = [0u8; 2];

        console.read(0, &mut probe);
        console.write(0, &vec![b'x'; MAX_LINE + 3]);
        console.write(0, b"\n");

        assert_eq!(probe, [DEBUGCON_READBACK; 2]);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "xxx");
    }
}
