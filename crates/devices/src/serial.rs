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
//!
//! [`Serial::state`] and [`Serial::restore`] carry the guest-visible registers and the
//! pending receive FIFO across processes ([`SerialState`]); the IRQ line, the output sink and
//! the [`SerialCounters`] stay with the host side.

use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as UartError, NoEvents, SerialState as UartState};
use vm_superio::{Serial as Uart, Trigger};

use crate::bus::byte_offsets;
use crate::{BusDevice, IrqLine};

/// Number of I/O ports the UART decodes (insert it with this length).
pub const SERIAL_PORT_LEN: u64 = 8;

/// Bytes the receive FIFO holds (`vm_superio`'s FIFO size).
pub const SERIAL_FIFO_LEN: usize = 64;

const DATA_OFFSET: u8 = 0;
const IER_OFFSET: u8 = 1;
const LCR_OFFSET: u8 = 3;
const MCR_OFFSET: u8 = 4;
const LCR_DLAB_BIT: u8 = 0x80;
const MCR_LOOP_BIT: u8 = 0x10;

/// IER bits a 16550A has; `vm_superio` drops the others on write.
const IER_VALID_BITS: u8 = 0x0F;
/// IIR values `vm_superio` can hold: "none pending", or THR empty and/or data available.
const IIR_NONE_PENDING: u8 = 0x01;
const IIR_PENDING_BITS: u8 = 0x06;
const LSR_DATA_READY: u8 = 0x01;
/// LSR bits the model keeps set: the transmitter is always empty and idle.
const LSR_ALWAYS_SET: u8 = 0x60;

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
    /// A restored receive FIFO is longer than the UART's.
    #[error("serial state: rx_fifo holds {len} bytes, the FIFO holds at most {capacity}")]
    FifoTooLong {
        /// Bytes in the restored FIFO.
        len: usize,
        /// The FIFO's size.
        capacity: usize,
    },
    /// A restored register holds a value the UART can never reach.
    #[error("serial state: {register} = {value:#04x} is impossible: {reason}")]
    InvalidRegister {
        /// The [`SerialState`] field.
        register: &'static str,
        /// Its value.
        value: u8,
        /// What the value breaks.
        reason: &'static str,
    },
}

/// The guest-visible state of the UART: its registers and the bytes waiting in the receive
/// FIFO. Field names follow `vm_superio::serial::SerialState`, which it mirrors (that one
/// has no serde support).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SerialState {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable register (bits 0–3).
    pub interrupt_enable: u8,
    /// Pending interrupts: 0x01 (none), or 0x02 (THR empty) and/or 0x04 (data available).
    pub interrupt_identification: u8,
    /// Line control register (bit 7 is DLAB).
    pub line_control: u8,
    /// Line status register: 0x60, plus 0x01 while `rx_fifo` is not empty.
    pub line_status: u8,
    /// Modem control register (bit 4 is loopback).
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Received bytes the guest has not read yet, oldest first (at most [`SERIAL_FIFO_LEN`]).
    pub rx_fifo: Vec<u8>,
}

impl SerialState {
    fn from_uart(state: UartState) -> Self {
        Self {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            rx_fifo: state.in_buffer,
        }
    }

    fn to_uart(&self) -> UartState {
        UartState {
            baud_divisor_low: self.baud_divisor_low,
            baud_divisor_high: self.baud_divisor_high,
            interrupt_enable: self.interrupt_enable,
            interrupt_identification: self.interrupt_identification,
            line_control: self.line_control,
            line_status: self.line_status,
            modem_control: self.modem_control,
            modem_status: self.modem_status,
            scratch: self.scratch,
            in_buffer: self.rx_fifo.clone(),
        }
    }

    /// Refuses what the UART can never hold: it would misbehave from there on.
    fn validate(&self) -> Result<(), SerialError> {
        if self.rx_fifo.len() > SERIAL_FIFO_LEN {
            return Err(SerialError::FifoTooLong {
                len: self.rx_fifo.len(),
                capacity: SERIAL_FIFO_LEN,
            });
        }
        if self.interrupt_enable & !IER_VALID_BITS != 0 {
            return Err(invalid_register(
                "interrupt_enable",
                self.interrupt_enable,
                "bits 4-7 do not exist on a 16550A",
            ));
        }
        let iir = self.interrupt_identification;
        if iir != IIR_NONE_PENDING && (iir & !IIR_PENDING_BITS != 0 || iir == 0) {
            return Err(invalid_register(
                "interrupt_identification",
                iir,
                "must be 0x01, 0x02, 0x04 or 0x06",
            ));
        }
        let data_ready = !self.rx_fifo.is_empty();
        let expected_lsr = LSR_ALWAYS_SET | if data_ready { LSR_DATA_READY } else { 0 };
        if self.line_status != expected_lsr {
            return Err(invalid_register(
                "line_status",
                self.line_status,
                "must be 0x60, plus 0x01 exactly when rx_fifo is not empty",
            ));
        }
        Ok(())
    }
}

fn invalid_register(register: &'static str, value: u8, reason: &'static str) -> SerialError {
    SerialError::InvalidRegister {
        register,
        value,
        reason,
    }
}

/// How much data the guest moved through the UART since the device was created. Host-side
/// statistics: a guest reset or a restore does not clear them, and they are not part of
/// [`SerialState`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SerialCounters {
    /// Bytes the guest transmitted to the host (writes to THR outside loopback mode).
    pub bytes_out: u64,
    /// Bytes the guest took from the receive FIFO (reads of RBR that returned data).
    pub bytes_in: u64,
}

/// Raises the UART's interrupt as one edge on the IRQ line.
///
/// A muted trigger drops interrupts: [`Serial::restore`] mutes it while `vm_superio`
/// rebuilds the UART, because the interrupts pending in the restored state were delivered
/// before the snapshot, and the interrupt controllers' own state carries them.
struct IrqTrigger {
    line: Arc<dyn IrqLine>,
    muted: AtomicBool,
}

impl IrqTrigger {
    fn live(line: &Arc<dyn IrqLine>) -> Self {
        Self {
            line: Arc::clone(line),
            muted: AtomicBool::new(false),
        }
    }

    fn muted(line: &Arc<dyn IrqLine>) -> Self {
        Self {
            line: Arc::clone(line),
            muted: AtomicBool::new(true),
        }
    }

    fn unmute(&self) {
        self.muted.store(false, Ordering::Relaxed);
    }
}

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        if !self.muted.load(Ordering::Relaxed) {
            self.line.pulse();
        }
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
    /// Set after an output error was logged, so a closed sink is reported once, not per byte.
    output_failing: bool,
    counters: SerialCounters,
}

impl Serial {
    /// A UART in its power-on state, interrupting through `irq` and writing guest output
    /// to `out`.
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Uart::new(IrqTrigger::live(&irq), Output::new(out)),
            irq,
            output_failing: false,
            counters: SerialCounters::default(),
        }
    }

    /// The guest-visible state: registers and unread input.
    pub fn state(&self) -> SerialState {
        SerialState::from_uart(self.uart.state())
    }

    /// Replaces the guest-visible state with `state` (taken by [`Serial::state`], possibly
    /// in another process). The IRQ line, output sink and counters stay; output not yet
    /// flushed is flushed first.
    ///
    /// No interrupt is raised: an interrupt the state shows pending was already sent before
    /// the snapshot, and the interrupt controllers' restored state holds it.
    ///
    /// A state the UART can never be in is refused with an error naming the field, and the
    /// device is left unchanged.
    pub fn restore(&mut self, state: &SerialState) -> Result<(), SerialError> {
        state.validate()?;
        let placeholder = Output::new(Box::new(io::sink()));
        let mut uart = match Uart::from_state(
            &state.to_uart(),
            IrqTrigger::muted(&self.irq),
            NoEvents,
            placeholder,
        ) {
            Ok(uart) => uart,
            Err(UartError::Trigger(never)) => match never {},
            // `from_state` only refuses an over-long FIFO, which `validate` already did.
            Err(UartError::FullFifo | UartError::IOError(_)) => {
                return Err(SerialError::FifoTooLong {
                    len: state.rx_fifo.len(),
                    capacity: SERIAL_FIFO_LEN,
                });
            }
        };
        self.flush_output();
        std::mem::swap(self.uart.writer_mut(), uart.writer_mut());
        uart.interrupt_evt().unmute();
        self.uart = uart;
        Ok(())
    }

    /// Bytes the guest sent and received so far.
    pub fn counters(&self) -> SerialCounters {
        self.counters
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
            IrqTrigger::live(&self.irq),
            Output::new(Box::new(io::sink())),
        );
        let old = std::mem::replace(&mut self.uart, placeholder);
        let out = old.into_writer();
        self.uart = Uart::new(IrqTrigger::live(&self.irq), out);
    }

    /// Whether offsets 0 and 1 address the divisor latch (LCR's DLAB bit).
    fn dlab(&mut self) -> bool {
        // Reading LCR has no side effect.
        self.uart.read(LCR_OFFSET) & LCR_DLAB_BIT != 0
    }

    fn loopback(&mut self) -> bool {
        // Reading MCR has no side effect.
        self.uart.read(MCR_OFFSET) & MCR_LOOP_BIT != 0
    }

    fn read_register(&mut self, offset: u8) -> u8 {
        let takes_input =
            offset == DATA_OFFSET && !self.dlab() && self.uart.fifo_capacity() < SERIAL_FIFO_LEN;
        if takes_input {
            self.counters.bytes_in = self.counters.bytes_in.wrapping_add(1);
        }
        self.uart.read(offset)
    }

    fn write_register(&mut self, offset: u8, value: u8) {
        let dlab = self.dlab();
        if offset == DATA_OFFSET && !dlab && !self.loopback() {
            self.counters.bytes_out = self.counters.bytes_out.wrapping_add(1);
        }
        match self.uart.write(offset, value) {
            Ok(()) => {}
            Err(UartError::IOError(err)) => self.report_output_error(&err),
            Err(UartError::Trigger(never)) => match never {},
            Err(UartError::FullFifo) => {}
        }
        if offset == IER_OFFSET && !dlab {
            self.flush_output();
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
                Ok(port) if u64::from(port) < SERIAL_PORT_LEN => self.read_register(port),
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
    const MCR: u64 = 4;
    const MSR: u64 = 6;
    const SCR: u64 = 7;
    const MCR_LOOP: u8 = 0x10;
    const IER_RDA: u8 = 0x01;
    const LSR_DATA_READY: u8 = 0x01;
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

    /// Drives a UART into a state that touches every register: a new divisor, 7E1 framing,
    /// both interrupts enabled, scratch and modem bits set, input half read.
    fn busy_serial() -> (Serial, Arc<RecordingIrq>, FlushVisible) {
        let (mut serial, irq, out) = serial_with_output();
        serial.write(LCR, &[LCR_DLAB_BIT]);
        serial.write(DATA, &[0x01]);
        serial.write(IER, &[0x02]);
        serial.write(LCR, &[0x1a]);
        serial.write(IER, &[IER_RDA | IER_THRE]);
        serial.write(SCR, &[0x5a]);
        serial.write(MCR, &[0x0b]);
        serial.enqueue_input(b"hello").unwrap();
        let _ = read_port(&mut serial, DATA);
        transmit(&mut serial, "before");
        (serial, irq, out)
    }

    /// Everything a guest can read, in an order that also exercises the side effects
    /// (IIR acknowledges, RBR drains the FIFO), then the divisor latch.
    fn observe(serial: &mut Serial) -> Vec<u8> {
        let mut seen: Vec<u8> = [IER, LCR, MCR, LSR, MSR, SCR, IIR, IIR]
            .iter()
            .map(|&port| read_port(serial, port))
            .collect();
        while read_port(serial, LSR) & LSR_DATA_READY != 0 {
            seen.push(read_port(serial, DATA));
        }
        let lcr = read_port(serial, LCR);
        serial.write(LCR, &[lcr | LCR_DLAB_BIT]);
        seen.extend([read_port(serial, DATA), read_port(serial, IER)]);
        serial.write(LCR, &[lcr]);
        seen
    }

    #[test]
    fn restored_uart_reads_and_writes_like_the_original() {
        let (mut original, original_irq, original_out) = busy_serial();
        let state = original.state();
        let (mut restored, restored_irq, restored_out) = serial_with_output();

        restored.restore(&state).unwrap();

        assert_eq!(restored.state(), state);
        assert_eq!(observe(&mut restored), observe(&mut original));
        original_irq.clear();
        restored_irq.clear();
        transmit(&mut original, "after\n");
        transmit(&mut restored, "after\n");
        assert_eq!(restored_out.written(), "after\n");
        assert_eq!(original_out.written(), "beforeafter\n");
        assert_eq!(restored_irq.rising_edges(), original_irq.rising_edges());
        assert_eq!(observe(&mut restored), observe(&mut original));
    }

    #[test]
    fn state_holds_the_unread_input() {
        let (serial, _irq, _out) = busy_serial();

        let state = serial.state();

        assert_eq!(state.rx_fifo, b"ello");
        assert_eq!(state.line_control, 0x1a);
        assert_eq!(state.baud_divisor_low, 0x01);
    }

    #[test]
    fn restore_raises_no_interrupt_but_later_events_do() {
        let (mut original, _irq, _out) = busy_serial();
        let _ = read_port(&mut original, IIR);
        let state = original.state();
        let (mut restored, irq, _out) = serial_with_output();

        restored.restore(&state).unwrap();
        assert_eq!(irq.rising_edges(), 0, "pending interrupts were sent before");
        transmit(&mut restored, "x");

        assert_eq!(irq.rising_edges(), 1);
        assert_eq!(read_port(&mut restored, IIR) & 0x0f, 0x02);
    }

    #[test]
    fn restore_flushes_and_keeps_the_sink_and_the_counters() {
        let (mut serial, _irq, out) = serial_with_output();
        transmit(&mut serial, "partial");
        let (other, _other_irq, _other_out) = busy_serial();

        serial.restore(&other.state()).unwrap();
        transmit(&mut serial, "!");

        assert_eq!(out.visible(), "partial");
        assert_eq!(out.written(), "partial!");
        assert_eq!(serial.counters().bytes_out, 8);
    }

    #[test]
    fn state_survives_json() {
        let (serial, _irq, _out) = busy_serial();
        let state = serial.state();

        let json = serde_json::to_string(&state).unwrap();
        let decoded: SerialState = serde_json::from_str(&json).unwrap();

        assert_eq!(decoded, state);
    }

    #[test]
    fn json_with_an_unknown_field_is_refused() {
        let (serial, _irq, _out) = serial_with_output();
        let mut json = serde_json::to_value(serial.state()).unwrap();
        json["dlab"] = serde_json::Value::Bool(true);

        let err = serde_json::from_value::<SerialState>(json).unwrap_err();

        assert!(err.to_string().contains("unknown field `dlab`"), "{err}");
    }

    #[test]
    fn impossible_states_are_refused_by_name_and_change_nothing() {
        let (mut serial, _irq, _out) = busy_serial();
        let before = serial.state();
        let good = serial.state();
        type Corruption = fn(&mut SerialState);
        let cases: [(Corruption, &str); 6] = [
            (|s| s.rx_fifo = vec![0; SERIAL_FIFO_LEN + 1], "rx_fifo"),
            (|s| s.interrupt_enable = 0x10, "interrupt_enable"),
            (
                |s| s.interrupt_identification = 0x00,
                "interrupt_identification",
            ),
            (
                |s| s.interrupt_identification = 0x08,
                "interrupt_identification",
            ),
            (|s| s.line_status = 0x60, "line_status"),
            (|s| s.line_status = 0xff, "line_status"),
        ];

        for (corrupt, field) in cases {
            let mut bad = good.clone();
            corrupt(&mut bad);
            let err = serial.restore(&bad).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }

        assert_eq!(serial.state(), before);
        assert_eq!(
            serial
                .restore(&SerialState {
                    rx_fifo: vec![0; 65],
                    ..good
                })
                .unwrap_err(),
            SerialError::FifoTooLong {
                len: 65,
                capacity: SERIAL_FIFO_LEN
            }
        );
    }

    #[test]
    fn a_full_fifo_restores() {
        let (mut original, _irq, _out) = serial_with_output();
        original.enqueue_input(&[b'z'; SERIAL_FIFO_LEN]).unwrap();
        let (mut restored, _irq2, _out2) = serial_with_output();

        restored.restore(&original.state()).unwrap();

        assert_eq!(restored.fifo_capacity(), 0);
        assert_eq!(read_port(&mut restored, DATA), b'z');
    }

    #[test]
    fn counters_count_data_the_guest_moved() {
        let (mut serial, _irq, _out) = serial_with_output();
        serial.enqueue_input(b"ab").unwrap();

        transmit(&mut serial, "hello");
        let _ = read_port(&mut serial, DATA);
        let _ = read_port(&mut serial, DATA);
        let _ = read_port(&mut serial, DATA); // FIFO empty: no byte moved

        assert_eq!(
            serial.counters(),
            SerialCounters {
                bytes_out: 5,
                bytes_in: 2
            }
        );
    }

    #[test]
    fn counters_ignore_the_divisor_latch_and_loopback() {
        let (mut serial, _irq, out) = serial_with_output();
        serial.write(LCR, &[LCR_DLAB_BIT]);
        serial.write(DATA, &[0x0c]);
        let _ = read_port(&mut serial, DATA);
        serial.write(LCR, &[DEFAULT_LCR]);
        serial.write(MCR, &[MCR_LOOP]);

        transmit(&mut serial, "loop");
        let looped_back = read_port(&mut serial, DATA);
        serial.reset();

        assert_eq!(looped_back, b'l');
        assert_eq!(out.written(), "");
        assert_eq!(
            serial.counters(),
            SerialCounters {
                bytes_out: 0,
                bytes_in: 1
            },
            "and a reset keeps them"
        );
    }
}
