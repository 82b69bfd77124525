//! COM1: a 16550A UART built on `vm_superio::Serial`.
//!
//! Guest output goes to a host writer (stdout, a log file, or `std::io::sink()`); host input
//! is queued with [`Serial::enqueue_input`]. The interrupt is ISA-style, edge-triggered: each
//! event the UART reports becomes one [`IrqLine::pulse`].
//!
//! Output is handed to the writer byte by byte as the guest transmits (so an unbuffered file
//! is readable while the VM runs), and the writer is flushed when a line ends, when the guest
//! writes the interrupt-enable register (Linux does that when a transmit burst ends, both
//! in its console path and its tty path, so a prompt without a newline shows up), on
//! [`Serial::flush_output`], on reset and on drop.

use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::serial::{Error as UartError, NoEvents};
use vm_superio::{Serial as Uart, Trigger};

use crate::bus::byte_offsets;
use crate::{BusDevice, IrqLine};

/// Number of I/O ports the UART decodes (insert it with this length).
pub const SERIAL_PORT_LEN: u64 = 8;

const IER_OFFSET: u8 = 1;
const LCR_OFFSET: u8 = 3;
const LCR_DLAB_BIT: u8 = 0x80;

/// Errors of the serial device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SerialError {
    /// The receive FIFO has less room than the input offered; nothing was queued.
    #[error("serial input of {requested} bytes does not fit the receive FIFO ({free} bytes free)")]
    FifoFull {
        /// Bytes the caller offered.
        requested: usize,
        /// Bytes the FIFO could take.
        free: usize,
    },
}

/// Raises the UART's interrupt as one edge on the IRQ line.
struct IrqTrigger(Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.pulse();
        Ok(())
    }
}

/// The host-side writer, flushed only when [`Serial`] decides to.
///
/// `vm_superio` calls `flush` after every byte; forwarding that to a line-buffered stdout or a
/// `BufWriter` would cost a system call per byte, so `flush` here is a no-op and the real
/// flush happens in [`Output::flush_pending`].
struct Output {
    sink: Box<dyn Write + Send>,
    unflushed: bool,
}

impl Output {
    fn new(sink: Box<dyn Write + Send>) -> Self {
        Self {
            sink,
            unflushed: false,
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if !self.unflushed {
            return Ok(());
        }
        self.unflushed = false;
        self.sink.flush()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.sink.write(buf)?;
        if written > 0 {
            self.unflushed = true;
            if buf[..written].contains(&b'\n') {
                self.flush_pending()?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Err(err) = self.flush_pending() {
            tracing::warn!("serial: flushing output on drop failed: {err}");
        }
    }
}

/// The COM1 16550A UART as a [`BusDevice`] of [`SERIAL_PORT_LEN`] ports.
pub struct Serial {
    uart: Uart<IrqTrigger, NoEvents, Output>,
    irq: Arc<dyn IrqLine>,
    /// Mirror of the divisor-latch access bit, to know whether offset 1 is IER.
    dlab: bool,
    /// Set after an output error was logged, so a closed sink is reported once, not per byte.
    output_failing: bool,
}

impl Serial {
    /// A UART in its power-on state, interrupting through `irq` and writing guest output
    /// to `out`.
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Uart::new(IrqTrigger(Arc::clone(&irq)), Output::new(out)),
            irq,
            dlab: false,
            output_failing: false,
        }
    }

    /// Queues host input for the guest to read, raising the receive interrupt if enabled.
    ///
    /// All of `bytes` is queued, or nothing: [`SerialError::FifoFull`] says how much room there
    /// was (see [`Serial::fifo_capacity`]). In loopback mode the UART ignores host input.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<(), SerialError> {
        let free = self.uart.fifo_capacity();
        if bytes.len() > free {
            return Err(SerialError::FifoFull {
                requested: bytes.len(),
                free,
            });
        }
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(_) => Ok(()),
            Err(UartError::FullFifo) => Err(SerialError::FifoFull {
                requested: bytes.len(),
                free: self.uart.fifo_capacity(),
            }),
            Err(UartError::Trigger(never)) => match never {},
            // Enqueuing input never writes to the output.
            Err(UartError::IOError(err)) => {
                self.report_output_error(&err);
                Ok(())
            }
        }
    }

    /// How many bytes of host input the receive FIFO can take now.
    pub fn fifo_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Flushes guest output that was written to the sink but not flushed yet.
    pub fn flush_output(&mut self) {
        if let Err(err) = self.uart.writer_mut().flush_pending() {
            self.report_output_error(&err);
        }
    }

    /// Puts the UART back in its power-on state (guest reboot). The output sink is kept;
    /// queued input is dropped, as on real hardware.
    pub fn reset(&mut self) {
        self.flush_output();
        let placeholder = Uart::new(
            IrqTrigger(Arc::clone(&self.irq)),
            Output::new(Box::new(io::sink())),
        );
        let old = std::mem::replace(&mut self.uart, placeholder);
        let out = old.into_writer();
        self.uart = Uart::new(IrqTrigger(Arc::clone(&self.irq)), out);
        self.dlab = false;
    }

    fn write_register(&mut self, offset: u8, value: u8) {
        match self.uart.write(offset, value) {
            Ok(()) => {}
            Err(UartError::IOError(err)) => self.report_output_error(&err),
            Err(UartError::Trigger(never)) => match never {},
            Err(UartError::FullFifo) => {}
        }
        match offset {
            LCR_OFFSET => self.dlab = value & LCR_DLAB_BIT != 0,
            IER_OFFSET if !self.dlab => self.flush_output(),
            _ => {}
        }
    }

    fn report_output_error(&mut self, err: &io::Error) {
        if !self.output_failing {
            tracing::warn!("serial: writing guest output failed, dropping output: {err}");
            self.output_failing = true;
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A wide access to 8-bit ports is a run of byte accesses, as on ISA.
        for (port, byte) in byte_offsets(offset).zip(data.iter_mut()) {
            *byte = match u8::try_from(port) {
                Ok(port) if u64::from(port) < SERIAL_PORT_LEN => self.uart.read(port),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (port, &value) in byte_offsets(offset).zip(data) {
            match u8::try_from(port) {
                Ok(port) if u64::from(port) < SERIAL_PORT_LEN => self.write_register(port, value),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::test_utils::RecordingIrq;

    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;
    const IER_RDA: u8 = 0x01;
    const IER_THRE: u8 = 0x02;
    /// What the power-on line control register holds (8 data bits, DLAB clear).
    const DEFAULT_LCR: u8 = 0x03;

    /// A writer that, like a line-buffered stream, shows bytes only once flushed.
    #[derive(Clone, Default)]
    struct FlushVisible {
        pending: Arc<Mutex<Vec<u8>>>,
        visible: Arc<Mutex<Vec<u8>>>,
        flushes: Arc<Mutex<usize>>,
    }

    impl FlushVisible {
        fn visible(&self) -> String {
            String::from_utf8(self.visible.lock().unwrap().clone()).unwrap()
        }

        fn written(&self) -> String {
            let mut all = self.visible.lock().unwrap().clone();
            all.extend_from_slice(&self.pending.lock().unwrap());
            String::from_utf8(all).unwrap()
        }

        fn flushes(&self) -> usize {
            *self.flushes.lock().unwrap()
        }
    }

    impl Write for FlushVisible {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.pending.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            let mut pending = self.pending.lock().unwrap();
            self.visible.lock().unwrap().append(&mut pending);
            *self.flushes.lock().unwrap() += 1;
            Ok(())
        }
    }

    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn serial_with_output() -> (Serial, Arc<RecordingIrq>, FlushVisible) {
        let irq = Arc::new(RecordingIrq::default());
        let out = FlushVisible::default();
        let serial = Serial::new(irq.clone(), Box::new(out.clone()));
        (serial, irq, out)
    }

    fn read_port(serial: &mut Serial, offset: u64) -> u8 {
        let mut data = [0u8];
        serial.read(offset, &mut data);
        data[0]
    }

    fn transmit(serial: &mut Serial, text: &str) {
        for byte in text.bytes() {
            serial.write(DATA, &[byte]);
        }
    }

    #[test]
    fn output_is_flushed_at_end_of_line_only() {
        let (mut serial, _irq, out) = serial_with_output();

        transmit(&mut serial, "hello\nwor");

        assert_eq!(out.visible(), "hello\n");
        assert_eq!(out.written(), "hello\nwor");
        assert_eq!(out.flushes(), 1);
    }

    #[test]
    fn ier_write_flushes_a_partial_line() {
        let (mut serial, _irq, out) = serial_with_output();
        transmit(&mut serial, "login: ");

        serial.write(IER, &[0]);

        assert_eq!(out.visible(), "login: ");
    }

    #[test]
    fn divisor_latch_write_at_offset_one_does_not_flush() {
        let (mut serial, _irq, out) = serial_with_output();
        transmit(&mut serial, "abc");
        serial.write(LCR, &[0x80]);

        serial.write(IER, &[0]);

        assert_eq!(out.visible(), "");
        serial.flush_output();
        assert_eq!(out.visible(), "abc");
    }

    #[test]
    fn output_to_a_file_is_readable_while_running() {
        let path = std::env::temp_dir().join(format!("oxvirt-serial-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let irq = Arc::new(RecordingIrq::default());
        let mut serial = Serial::new(irq, Box::new(file));

        transmit(&mut serial, "boot ok\npartial");

        let contents = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(contents, "boot ok\npartial");
    }

    #[test]
    fn input_is_read_back_and_raises_the_receive_interrupt() {
        let (mut serial, irq, _out) = serial_with_output();
        serial.write(IER, &[IER_RDA]);
        irq.clear();

        serial.enqueue_input(b"ok").unwrap();

        assert_eq!(irq.rising_edges(), 1);
        assert!(!irq.is_high(), "ISA serial interrupts are pulses");
        assert_eq!(read_port(&mut serial, LSR) & 0x01, 0x01);
        assert_eq!(read_port(&mut serial, DATA), b'o');
        assert_eq!(read_port(&mut serial, DATA), b'k');
        assert_eq!(read_port(&mut serial, LSR) & 0x01, 0x00);
    }

    #[test]
    fn input_larger_than_the_fifo_is_refused_whole() {
        let (mut serial, _irq, _out) = serial_with_output();
        let free = serial.fifo_capacity();
        let input = vec![b'x'; free + 1];

        let err = serial.enqueue_input(&input).unwrap_err();

        assert_eq!(
            err,
            SerialError::FifoFull {
                requested: free + 1,
                free
            }
        );
        assert_eq!(serial.fifo_capacity(), free);
    }

    #[test]
    fn enabling_the_transmit_interrupt_pulses_the_line() {
        let (mut serial, irq, _out) = serial_with_output();

        serial.write(IER, &[IER_THRE]);

        assert_eq!(irq.rising_edges(), 1);
        assert_eq!(read_port(&mut serial, IIR) & 0x0f, 0x02);
    }

    #[test]
    fn reset_restores_power_on_registers_and_keeps_the_sink() {
        let (mut serial, _irq, out) = serial_with_output();
        serial.write(SCR, &[0x5a]);
        serial.write(LCR, &[0x80 | 0x1b]);
        serial.write(IER, &[0x0f]);
        serial.enqueue_input(b"stale").unwrap();

        serial.reset();

        assert_eq!(read_port(&mut serial, SCR), 0);
        assert_eq!(read_port(&mut serial, LCR), DEFAULT_LCR);
        assert_eq!(read_port(&mut serial, IER), 0);
        assert_eq!(read_port(&mut serial, LSR) & 0x01, 0, "input FIFO emptied");
        transmit(&mut serial, "after reset\n");
        assert_eq!(out.visible(), "after reset\n");
    }

    #[test]
    fn reset_flushes_pending_output() {
        let (mut serial, _irq, out) = serial_with_output();
        transmit(&mut serial, "last words");

        serial.reset();

        assert_eq!(out.visible(), "last words");
    }

    #[test]
    fn broken_output_does_not_stop_the_uart() {
        let irq = Arc::new(RecordingIrq::default());
        let mut serial = Serial::new(irq.clone(), Box::new(BrokenPipe));
        serial.write(IER, &[IER_THRE]);
        let _ = read_port(&mut serial, IIR);
        irq.clear();

        serial.write(DATA, b"a");
        let _ = read_port(&mut serial, IIR);
        serial.write(DATA, b"b");

        assert_eq!(irq.rising_edges(), 2, "THRE still raised per byte");
        assert_eq!(read_port(&mut serial, LSR) & 0x20, 0x20);
    }

    #[test]
    fn wide_accesses_are_split_into_ports_and_stay_in_range() {
        let (mut serial, _irq, _out) = serial_with_output();
        serial.write(SCR, &[0x42]);
        let mut data = [0u8; 4];

        serial.read(6, &mut data);

        assert_eq!(data[1], 0x42);
        assert_eq!(&data[2..], &[0xff, 0xff]);
    }
}
