//! The i8042 keyboard controller: the CPU reset line and Ctrl-Alt-Del.
//!
//! The reset command (0xFE to port 0x64) goes through `vm_superio::I8042Device`, which turns
//! it into [`PowerEvents::reset`]. Around it sits just enough of a PS/2 controller with a
//! keyboard that a guest driver (Linux's `i8042` + `atkbd`) probes it, and that the host can
//! inject Ctrl-Alt-Del ([`I8042::trigger_ctrl_alt_del`]) so the guest reboots cleanly.
//!
//! There is no auxiliary (mouse) port: the aux loopback command echoes as keyboard data and
//! the aux interface test reports a stuck clock line, which is how a driver learns there is
//! no mouse without waiting for a timeout. Typing is not emulated.
//!
//! Offsets relative to the base (port 0x60): 0 is the data port, 4 is the status/command
//! port; offsets 1–3 read 0xff and ignore writes.
//!
//! [`I8042::state`] and [`I8042::restore`] carry the controller and keyboard state
//! ([`I8042State`]) across processes; `vm_superio`'s part holds no state of its own.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::{I8042Device, Trigger};

use crate::bus::byte_offsets;
use crate::{BusDevice, IrqLine, PowerEvents};

/// Number of I/O ports the device spans from its base (0x60..=0x64).
pub const I8042_LEN: u64 = 5;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;
/// The command port's offset as `vm_superio`'s controller numbers it.
const SUPERIO_COMMAND_OFFSET: u8 = 4;

// Controller commands (written to port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xA7;
const CMD_ENABLE_AUX: u8 = 0xA8;
const CMD_TEST_AUX: u8 = 0xA9;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_TEST_KBD: u8 = 0xAB;
const CMD_DISABLE_KBD: u8 = 0xAD;
const CMD_ENABLE_KBD: u8 = 0xAE;
const CMD_READ_OUTPUT_PORT: u8 = 0xD0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xD1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xD2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xD3;
const CMD_WRITE_TO_AUX: u8 = 0xD4;
const CMD_PULSE_RESET: u8 = 0xFE;

// Controller answers.
const SELF_TEST_PASSED: u8 = 0x55;
const INTERFACE_TEST_PASSED: u8 = 0x00;
const AUX_CLOCK_STUCK_LOW: u8 = 0x01;

// Status register bits.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_KEYBOARD_UNLOCKED: u8 = 0x10;

// Controller configuration byte ("CTR") bits.
const CTR_KBD_INTERRUPT: u8 = 0x01;
const CTR_SYSTEM_FLAG: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;
const CTR_TRANSLATE: u8 = 0x40;
const _: () = assert!(CTR_SYSTEM_FLAG == STATUS_SYSTEM_FLAG);
/// Power-on configuration: keyboard interrupt on, POST passed, no scancode translation.
const DEFAULT_CTR: u8 = CTR_KBD_INTERRUPT | CTR_SYSTEM_FLAG;

/// Output port bit 0 drives the CPU reset line (active low).
const OUTPUT_PORT_RESET_HIGH: u8 = 0x01;
/// Power-on output port: reset line high, A20 enabled, the other lines idle high.
const DEFAULT_OUTPUT_PORT: u8 = 0xCF;

// Keyboard commands and answers.
const KBD_SET_LEDS: u8 = 0xED;
const KBD_ECHO: u8 = 0xEE;
const KBD_SCANCODE_SET: u8 = 0xF0;
const KBD_IDENTIFY: u8 = 0xF2;
const KBD_SET_TYPEMATIC: u8 = 0xF3;
const KBD_RESET: u8 = 0xFF;
const KBD_ACK: u8 = 0xFA;
const KBD_SELF_TEST_PASSED: u8 = 0xAA;
const KBD_ID_FIRST: u8 = 0xAB;
const KBD_ID_SECOND: u8 = 0x83;
const KBD_ID_SECOND_TRANSLATED: u8 = 0x41;
const SCANCODE_SET_2: u8 = 0x02;
const SCANCODE_SET_2_TRANSLATED: u8 = 0x41;

/// Ctrl, Alt and Delete pressed then released, in scancode set 2 (what the keyboard sends).
const CTRL_ALT_DEL_SET2: &[u8] = &[
    0x14, 0x11, 0xE0, 0x71, // make: Ctrl, Alt, Delete
    0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14, // break: Delete, Alt, Ctrl
];
/// The same keys in scancode set 1 (what the guest reads with translation on).
const CTRL_ALT_DEL_SET1: &[u8] = &[
    0x1D, 0x38, 0xE0, 0x53, // make
    0xE0, 0xD3, 0xB8, 0x9D, // break
];

/// Size of the controller's output queue.
pub const OUTPUT_QUEUE_LEN: usize = 16;
/// Keyboard commands that wait for an argument byte.
const KBD_COMMANDS_WITH_ARGUMENT: [u8; 3] = [KBD_SET_LEDS, KBD_SCANCODE_SET, KBD_SET_TYPEMATIC];

/// Errors of the i8042 device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum I8042Error {
    /// The guest has not read earlier output; the key sequence was not queued.
    #[error("i8042 output queue has room for {free} bytes, Ctrl-Alt-Del needs {needed}")]
    OutputQueueFull {
        /// Bytes the sequence needs.
        needed: usize,
        /// Bytes free in the queue.
        free: usize,
    },
    /// A restored output queue is longer than the controller's.
    #[error("i8042 state: output_queue holds {len} bytes, the queue holds at most {capacity}")]
    OutputQueueTooLong {
        /// Bytes in the restored queue.
        len: usize,
        /// The queue's size.
        capacity: usize,
    },
    /// A restored keyboard command is not one that waits for an argument.
    #[error(
        "i8042 state: keyboard_command {command:#04x} is not a command that waits for an \
         argument (0xed, 0xf0, 0xf3)"
    )]
    InvalidKeyboardCommand {
        /// The restored command.
        command: u8,
    },
}

/// The guest-visible state of the controller and its keyboard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct I8042State {
    /// The controller configuration byte ("CTR", command 0x20 reads it).
    pub configuration: u8,
    /// The controller output port (command 0xD0 reads it).
    pub output_port: u8,
    /// Whether the last write went to the command port (status bit 3).
    pub last_write_was_command: bool,
    /// What the next data-port write is for.
    pub data_target: DataTarget,
    /// A keyboard command (0xED, 0xF0 or 0xF3) waiting for its argument byte.
    pub keyboard_command: Option<u8>,
    /// Bytes waiting for the guest to read, oldest first (at most [`OUTPUT_QUEUE_LEN`]).
    pub output_queue: Vec<u8>,
}

/// Turns the reset line of `vm_superio`'s controller into a machine reset request.
struct ResetTrigger(Arc<dyn PowerEvents>);

impl Trigger for ResetTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.reset();
        Ok(())
    }
}

/// What the next byte written to the data port is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataTarget {
    /// A command (or command argument) for the keyboard.
    Keyboard,
    /// The new controller configuration byte.
    Ctr,
    /// The new output port value.
    OutputPort,
    /// A byte to hand back as if the keyboard had sent it.
    EchoAsKeyboard,
    /// A byte for the (absent) auxiliary device.
    Aux,
}

/// The i8042 controller as a [`BusDevice`] of [`I8042_LEN`] ports.
pub struct I8042 {
    reset_line: I8042Device<ResetTrigger>,
    irq: Arc<dyn IrqLine>,
    ctr: u8,
    output_port: u8,
    last_write_was_command: bool,
    data_target: DataTarget,
    /// A keyboard command waiting for its argument byte.
    kbd_command: Option<u8>,
    output: VecDeque<u8>,
}

impl I8042 {
    /// A controller in its power-on state: resets go to `power`, keyboard interrupts
    /// (ISA IRQ 1, edge-triggered) to `irq`.
    pub fn new(power: Arc<dyn PowerEvents>, irq: Arc<dyn IrqLine>) -> Self {
        Self {
            reset_line: I8042Device::new(ResetTrigger(power)),
            irq,
            ctr: DEFAULT_CTR,
            output_port: DEFAULT_OUTPUT_PORT,
            last_write_was_command: false,
            data_target: DataTarget::Keyboard,
            kbd_command: None,
            output: VecDeque::with_capacity(OUTPUT_QUEUE_LEN),
        }
    }

    /// Makes the keyboard send Ctrl-Alt-Del (press and release), in the scancode set the
    /// guest reads, and interrupts the guest if it enabled keyboard interrupts.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        let sequence = if self.ctr & CTR_TRANSLATE != 0 {
            CTRL_ALT_DEL_SET1
        } else {
            CTRL_ALT_DEL_SET2
        };
        let free = OUTPUT_QUEUE_LEN - self.output.len().min(OUTPUT_QUEUE_LEN);
        if sequence.len() > free {
            return Err(I8042Error::OutputQueueFull {
                needed: sequence.len(),
                free,
            });
        }
        self.push_from_keyboard(sequence);
        Ok(())
    }

    /// The guest-visible state: configuration, output port, pending command and output.
    pub fn state(&self) -> I8042State {
        I8042State {
            configuration: self.ctr,
            output_port: self.output_port,
            last_write_was_command: self.last_write_was_command,
            data_target: self.data_target,
            keyboard_command: self.kbd_command,
            output_queue: self.output.iter().copied().collect(),
        }
    }

    /// Replaces the guest-visible state with `state` (taken by [`I8042::state`], possibly in
    /// another process). The reset and IRQ lines stay; no interrupt is raised (one for the
    /// byte at the head of the queue was sent before the snapshot).
    ///
    /// A state the controller can never be in is refused with an error naming the field, and
    /// the device is left unchanged.
    pub fn restore(&mut self, state: &I8042State) -> Result<(), I8042Error> {
        if state.output_queue.len() > OUTPUT_QUEUE_LEN {
            return Err(I8042Error::OutputQueueTooLong {
                len: state.output_queue.len(),
                capacity: OUTPUT_QUEUE_LEN,
            });
        }
        if let Some(command) = state.keyboard_command
            && !KBD_COMMANDS_WITH_ARGUMENT.contains(&command)
        {
            return Err(I8042Error::InvalidKeyboardCommand { command });
        }
        self.ctr = state.configuration;
        self.output_port = state.output_port;
        self.last_write_was_command = state.last_write_was_command;
        self.data_target = state.data_target;
        self.kbd_command = state.keyboard_command;
        self.output.clear();
        self.output.extend(&state.output_queue);
        Ok(())
    }

    /// Puts the controller back in its power-on state (guest reboot).
    pub fn reset(&mut self) {
        self.ctr = DEFAULT_CTR;
        self.output_port = DEFAULT_OUTPUT_PORT;
        self.last_write_was_command = false;
        self.data_target = DataTarget::Keyboard;
        self.kbd_command = None;
        self.output.clear();
    }

    fn status(&self) -> u8 {
        // The system flag is the same bit in both registers.
        let mut status = STATUS_KEYBOARD_UNLOCKED | (self.ctr & STATUS_SYSTEM_FLAG);
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.last_write_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.output.pop_front().unwrap_or(0);
        // One interrupt per byte: tell the guest there is more to read.
        if !self.output.is_empty() {
            self.interrupt();
        }
        byte
    }

    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        self.data_target = DataTarget::Keyboard;
        match command {
            CMD_READ_CTR => self.reply_from_controller(self.ctr),
            CMD_WRITE_CTR => self.data_target = DataTarget::Ctr,
            CMD_DISABLE_AUX => self.ctr |= CTR_AUX_DISABLED,
            CMD_ENABLE_AUX => self.ctr &= !CTR_AUX_DISABLED,
            CMD_TEST_AUX => self.reply_from_controller(AUX_CLOCK_STUCK_LOW),
            CMD_SELF_TEST => self.reply_from_controller(SELF_TEST_PASSED),
            CMD_TEST_KBD => self.reply_from_controller(INTERFACE_TEST_PASSED),
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLED,
            CMD_ENABLE_KBD => self.ctr &= !CTR_KBD_DISABLED,
            CMD_READ_OUTPUT_PORT => self.reply_from_controller(self.output_port),
            CMD_WRITE_OUTPUT_PORT => self.data_target = DataTarget::OutputPort,
            CMD_WRITE_KBD_OUTPUT | CMD_WRITE_AUX_OUTPUT => {
                self.data_target = DataTarget::EchoAsKeyboard;
            }
            CMD_WRITE_TO_AUX => self.data_target = DataTarget::Aux,
            CMD_PULSE_RESET => self.pulse_reset_line(),
            other => tracing::debug!("i8042: ignoring controller command {other:#04x}"),
        }
    }

    fn write_data(&mut self, value: u8) {
        self.last_write_was_command = false;
        let target = std::mem::replace(&mut self.data_target, DataTarget::Keyboard);
        match target {
            DataTarget::Keyboard => self.keyboard_byte(value),
            DataTarget::Ctr => {
                self.ctr = value;
                // Enabling the interrupt with output waiting must not leave the guest waiting.
                if !self.output.is_empty() {
                    self.interrupt();
                }
            }
            DataTarget::OutputPort => {
                self.output_port = value;
                if value & OUTPUT_PORT_RESET_HIGH == 0 {
                    self.pulse_reset_line();
                }
            }
            DataTarget::EchoAsKeyboard => self.push_from_keyboard(&[value]),
            DataTarget::Aux => tracing::debug!("i8042: no aux device for byte {value:#04x}"),
        }
    }

    fn keyboard_byte(&mut self, value: u8) {
        if let Some(command) = self.kbd_command.take() {
            self.keyboard_argument(command, value);
            return;
        }
        match value {
            _ if KBD_COMMANDS_WITH_ARGUMENT.contains(&value) => {
                self.kbd_command = Some(value);
                self.push_from_keyboard(&[KBD_ACK]);
            }
            KBD_ECHO => self.push_from_keyboard(&[KBD_ECHO]),
            KBD_IDENTIFY => {
                let second = if self.ctr & CTR_TRANSLATE != 0 {
                    KBD_ID_SECOND_TRANSLATED
                } else {
                    KBD_ID_SECOND
                };
                self.push_from_keyboard(&[KBD_ACK, KBD_ID_FIRST, second]);
            }
            KBD_RESET => self.push_from_keyboard(&[KBD_ACK, KBD_SELF_TEST_PASSED]),
            // Enable, disable, set defaults, resend...: a keyboard that only acknowledges.
            _ => self.push_from_keyboard(&[KBD_ACK]),
        }
    }

    fn keyboard_argument(&mut self, command: u8, argument: u8) {
        if command == KBD_SCANCODE_SET && argument == 0 {
            // "Which set are you using?"
            let set = if self.ctr & CTR_TRANSLATE != 0 {
                SCANCODE_SET_2_TRANSLATED
            } else {
                SCANCODE_SET_2
            };
            self.push_from_keyboard(&[KBD_ACK, set]);
        } else {
            self.push_from_keyboard(&[KBD_ACK]);
        }
    }

    /// A controller answer replaces whatever was queued: the guest reads it next.
    fn reply_from_controller(&mut self, byte: u8) {
        self.output.clear();
        self.output.push_back(byte);
    }

    fn push_from_keyboard(&mut self, bytes: &[u8]) {
        let was_empty = self.output.is_empty();
        for &byte in bytes {
            if self.output.len() >= OUTPUT_QUEUE_LEN {
                tracing::debug!("i8042: output queue full, dropping {byte:#04x}");
                break;
            }
            self.output.push_back(byte);
        }
        // Later bytes are announced when the guest reads the one before.
        if was_empty && !self.output.is_empty() {
            self.interrupt();
        }
    }

    fn interrupt(&self) {
        if self.ctr & CTR_KBD_INTERRUPT != 0 {
            self.irq.pulse();
        }
    }

    fn pulse_reset_line(&mut self) {
        match self
            .reset_line
            .write(SUPERIO_COMMAND_OFFSET, CMD_PULSE_RESET)
        {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (port, byte) in byte_offsets(offset).zip(data.iter_mut()) {
            *byte = match port {
                DATA_OFFSET => self.read_data(),
                COMMAND_OFFSET => self.status(),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (port, &value) in byte_offsets(offset).zip(data) {
            match port {
                DATA_OFFSET => self.write_data(value),
                COMMAND_OFFSET => self.write_command(value),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{FakePower, RecordingIrq};

    fn i8042() -> (I8042, Arc<FakePower>, Arc<RecordingIrq>) {
        let power = Arc::new(FakePower::default());
        let irq = Arc::new(RecordingIrq::default());
        (I8042::new(power.clone(), irq.clone()), power, irq)
    }

    fn command(dev: &mut I8042, value: u8) {
        dev.write(COMMAND_OFFSET, &[value]);
    }

    fn read_port(dev: &mut I8042, offset: u64) -> u8 {
        let mut data = [0u8];
        dev.read(offset, &mut data);
        data[0]
    }

    fn drain(dev: &mut I8042) -> Vec<u8> {
        let mut bytes = Vec::new();
        while read_port(dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL != 0 {
            bytes.push(read_port(dev, DATA_OFFSET));
        }
        bytes
    }

    #[test]
    fn reset_command_resets_the_machine() {
        let (mut dev, power, _irq) = i8042();

        command(&mut dev, CMD_PULSE_RESET);

        assert_eq!(power.resets(), 1);
        assert_eq!(power.power_offs(), 0);
    }

    #[test]
    fn reset_value_on_the_data_port_is_a_keyboard_command() {
        let (mut dev, power, _irq) = i8042();

        dev.write(DATA_OFFSET, &[CMD_PULSE_RESET]);
        dev.write(2, &[CMD_PULSE_RESET]);

        assert_eq!(power.resets(), 0);
        assert_eq!(drain(&mut dev), vec![KBD_ACK]);
    }

    #[test]
    fn clearing_the_reset_bit_of_the_output_port_resets() {
        let (mut dev, power, _irq) = i8042();
        command(&mut dev, CMD_WRITE_OUTPUT_PORT);
        dev.write(DATA_OFFSET, &[0xDF]);
        assert_eq!(power.resets(), 0, "A20 toggling keeps the reset line high");

        command(&mut dev, CMD_WRITE_OUTPUT_PORT);
        dev.write(DATA_OFFSET, &[0xDE]);

        assert_eq!(power.resets(), 1);
    }

    #[test]
    fn configuration_byte_round_trips() {
        let (mut dev, _power, _irq) = i8042();
        command(&mut dev, CMD_WRITE_CTR);
        assert_ne!(
            read_port(&mut dev, COMMAND_OFFSET) & STATUS_LAST_WAS_COMMAND,
            0
        );
        dev.write(DATA_OFFSET, &[0x47]);

        command(&mut dev, CMD_READ_CTR);

        assert_eq!(drain(&mut dev), vec![0x47]);
    }

    #[test]
    fn self_tests_pass_and_aux_reports_absent() {
        let (mut dev, _power, _irq) = i8042();

        command(&mut dev, CMD_SELF_TEST);
        let self_test = drain(&mut dev);
        command(&mut dev, CMD_TEST_KBD);
        let kbd_test = drain(&mut dev);
        command(&mut dev, CMD_TEST_AUX);
        let aux_test = drain(&mut dev);

        assert_eq!(self_test, vec![SELF_TEST_PASSED]);
        assert_eq!(kbd_test, vec![INTERFACE_TEST_PASSED]);
        assert_eq!(aux_test, vec![AUX_CLOCK_STUCK_LOW]);
    }

    #[test]
    fn keyboard_identifies_and_resets() {
        let (mut dev, _power, _irq) = i8042();

        dev.write(DATA_OFFSET, &[KBD_IDENTIFY]);
        let id = drain(&mut dev);
        dev.write(DATA_OFFSET, &[KBD_RESET]);
        let reset = drain(&mut dev);

        assert_eq!(id, vec![KBD_ACK, KBD_ID_FIRST, KBD_ID_SECOND]);
        assert_eq!(reset, vec![KBD_ACK, KBD_SELF_TEST_PASSED]);
    }

    #[test]
    fn keyboard_command_arguments_are_acknowledged_not_executed() {
        let (mut dev, _power, _irq) = i8042();

        dev.write(DATA_OFFSET, &[KBD_SET_LEDS]);
        dev.write(DATA_OFFSET, &[KBD_RESET]);
        let leds = drain(&mut dev);
        dev.write(DATA_OFFSET, &[KBD_SCANCODE_SET]);
        dev.write(DATA_OFFSET, &[0]);
        let set = drain(&mut dev);

        assert_eq!(leds, vec![KBD_ACK, KBD_ACK], "0xFF was the LED argument");
        assert_eq!(set, vec![KBD_ACK, KBD_ACK, SCANCODE_SET_2]);
    }

    #[test]
    fn ctrl_alt_del_sends_set2_scancodes_with_an_interrupt_per_byte() {
        let (mut dev, _power, irq) = i8042();

        dev.trigger_ctrl_alt_del().unwrap();
        assert_eq!(irq.rising_edges(), 1);
        let bytes = drain(&mut dev);

        assert_eq!(bytes, CTRL_ALT_DEL_SET2);
        assert_eq!(irq.rising_edges(), CTRL_ALT_DEL_SET2.len());
    }

    #[test]
    fn ctrl_alt_del_is_translated_when_the_guest_asks() {
        let (mut dev, _power, _irq) = i8042();
        command(&mut dev, CMD_WRITE_CTR);
        dev.write(DATA_OFFSET, &[DEFAULT_CTR | CTR_TRANSLATE]);

        dev.trigger_ctrl_alt_del().unwrap();

        assert_eq!(drain(&mut dev), CTRL_ALT_DEL_SET1);
    }

    #[test]
    fn no_interrupt_while_the_guest_disabled_it() {
        let (mut dev, _power, irq) = i8042();
        command(&mut dev, CMD_WRITE_CTR);
        dev.write(DATA_OFFSET, &[CTR_SYSTEM_FLAG]);

        dev.trigger_ctrl_alt_del().unwrap();

        assert_eq!(irq.rising_edges(), 0);
        assert_ne!(read_port(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn enabling_the_interrupt_with_output_waiting_interrupts() {
        let (mut dev, _power, irq) = i8042();
        command(&mut dev, CMD_WRITE_CTR);
        dev.write(DATA_OFFSET, &[CTR_SYSTEM_FLAG]);
        dev.trigger_ctrl_alt_del().unwrap();

        command(&mut dev, CMD_WRITE_CTR);
        dev.write(DATA_OFFSET, &[DEFAULT_CTR]);

        assert_eq!(irq.rising_edges(), 1);
    }

    #[test]
    fn ctrl_alt_del_refused_whole_when_the_queue_is_full() {
        let (mut dev, _power, _irq) = i8042();
        dev.trigger_ctrl_alt_del().unwrap();

        let err = dev.trigger_ctrl_alt_del().unwrap_err();

        assert_eq!(
            err,
            I8042Error::OutputQueueFull {
                needed: CTRL_ALT_DEL_SET2.len(),
                free: OUTPUT_QUEUE_LEN - CTRL_ALT_DEL_SET2.len(),
            }
        );
        assert_eq!(drain(&mut dev), CTRL_ALT_DEL_SET2);
    }

    #[test]
    fn reset_empties_the_queue_and_restores_the_configuration() {
        let (mut dev, _power, _irq) = i8042();
        command(&mut dev, CMD_WRITE_CTR);
        dev.write(DATA_OFFSET, &[0x00]);
        dev.trigger_ctrl_alt_del().unwrap();
        command(&mut dev, CMD_WRITE_OUTPUT_PORT);

        dev.reset();

        assert_eq!(
            read_port(&mut dev, COMMAND_OFFSET),
            STATUS_KEYBOARD_UNLOCKED | STATUS_SYSTEM_FLAG
        );
        dev.write(DATA_OFFSET, &[KBD_ECHO]);
        assert_eq!(drain(&mut dev), vec![KBD_ECHO], "pending command forgotten");
        command(&mut dev, CMD_READ_CTR);
        assert_eq!(drain(&mut dev), vec![DEFAULT_CTR]);
    }

    #[test]
    fn unused_ports_read_all_ones_and_empty_data_reads_zero() {
        let (mut dev, _power, _irq) = i8042();
        let mut data = [0u8; 5];

        dev.read(0, &mut data);

        assert_eq!(
            data,
            [
                0,
                0xff,
                0xff,
                0xff,
                STATUS_KEYBOARD_UNLOCKED | STATUS_SYSTEM_FLAG
            ]
        );
    }

    /// A controller mid-conversation: translation on, aux disabled, a keyboard command
    /// waiting for its argument, a controller command waiting for its data byte, and two
    /// unread bytes.
    fn busy_i8042() -> (I8042, Arc<FakePower>, Arc<RecordingIrq>) {
        let (mut dev, power, irq) = i8042();
        command(&mut dev, CMD_WRITE_CTR);
        dev.write(DATA_OFFSET, &[DEFAULT_CTR | CTR_TRANSLATE]);
        command(&mut dev, CMD_DISABLE_AUX);
        dev.write(DATA_OFFSET, &[KBD_IDENTIFY]);
        let _ = read_port(&mut dev, DATA_OFFSET);
        dev.write(DATA_OFFSET, &[KBD_SCANCODE_SET]);
        command(&mut dev, CMD_WRITE_OUTPUT_PORT);
        (dev, power, irq)
    }

    /// What the guest sees from here on: status, the rest of the queue, then the answers
    /// to a fixed conversation (which depend on the pending command and the CTR).
    fn observe(dev: &mut I8042) -> Vec<u8> {
        let mut seen = vec![read_port(dev, COMMAND_OFFSET)];
        seen.extend(drain(dev));
        dev.write(DATA_OFFSET, &[0xDF]);
        seen.push(read_port(dev, COMMAND_OFFSET));
        dev.write(DATA_OFFSET, &[KBD_SCANCODE_SET]);
        dev.write(DATA_OFFSET, &[0]);
        seen.extend(drain(dev));
        for cmd in [CMD_READ_CTR, CMD_READ_OUTPUT_PORT] {
            command(dev, cmd);
            seen.extend(drain(dev));
        }
        seen
    }

    #[test]
    fn restored_controller_answers_like_the_original() {
        let (mut original, _power, original_irq) = busy_i8042();
        let state = original.state();
        let (mut restored, _power2, restored_irq) = i8042();

        restored.restore(&state).unwrap();

        assert_eq!(restored.state(), state);
        assert_eq!(restored_irq.rising_edges(), 0, "restore raises nothing");
        original_irq.clear();
        let expected = observe(&mut original);
        assert_eq!(observe(&mut restored), expected);
        assert_eq!(
            restored_irq.rising_edges(),
            original_irq.rising_edges(),
            "same interrupts afterwards"
        );
        assert_eq!(
            expected[1..4],
            [KBD_ID_FIRST, KBD_ID_SECOND_TRANSLATED, KBD_ACK],
            "queue carried over"
        );
    }

    #[test]
    fn state_captures_the_pending_conversation() {
        let (dev, _power, _irq) = busy_i8042();

        let state = dev.state();

        assert_eq!(
            state,
            I8042State {
                configuration: DEFAULT_CTR | CTR_TRANSLATE | CTR_AUX_DISABLED,
                output_port: DEFAULT_OUTPUT_PORT,
                last_write_was_command: true,
                data_target: DataTarget::OutputPort,
                keyboard_command: Some(KBD_SCANCODE_SET),
                output_queue: vec![KBD_ID_FIRST, KBD_ID_SECOND_TRANSLATED, KBD_ACK],
            }
        );
    }

    #[test]
    fn restored_pending_output_port_write_still_resets() {
        let (original, _power, _irq) = busy_i8042();
        let (mut restored, power, _irq2) = i8042();
        restored.restore(&original.state()).unwrap();

        restored.write(DATA_OFFSET, &[0xDE]);

        assert_eq!(power.resets(), 1);
    }

    #[test]
    fn state_survives_json() {
        let (mut dev, _power, _irq) = busy_i8042();
        dev.write(DATA_OFFSET, &[0xCF]);
        dev.write(DATA_OFFSET, &[0x02]);
        dev.write(DATA_OFFSET, &[KBD_SET_LEDS]);
        let state = dev.state();

        let json = serde_json::to_string(&state).unwrap();
        let decoded: I8042State = serde_json::from_str(&json).unwrap();

        assert_eq!(state.keyboard_command, Some(KBD_SET_LEDS));
        assert_eq!(decoded, state);
        assert!(json.contains("\"data_target\":\"keyboard\""), "{json}");
    }

    #[test]
    fn json_with_an_unknown_field_or_target_is_refused() {
        let (dev, _power, _irq) = i8042();
        let mut extra = serde_json::to_value(dev.state()).unwrap();
        extra["mouse"] = serde_json::Value::Null;
        let mut bad_target = serde_json::to_value(dev.state()).unwrap();
        bad_target["data_target"] = "mouse".into();

        let extra_err = serde_json::from_value::<I8042State>(extra).unwrap_err();
        let target_err = serde_json::from_value::<I8042State>(bad_target).unwrap_err();

        assert!(extra_err.to_string().contains("unknown field `mouse`"));
        assert!(target_err.to_string().contains("unknown variant `mouse`"));
    }

    #[test]
    fn impossible_states_are_refused_by_name_and_change_nothing() {
        let (mut dev, _power, _irq) = busy_i8042();
        let before = dev.state();

        let long = dev.restore(&I8042State {
            output_queue: vec![0; OUTPUT_QUEUE_LEN + 1],
            ..before.clone()
        });
        let command = dev.restore(&I8042State {
            keyboard_command: Some(KBD_ECHO),
            ..before.clone()
        });

        assert_eq!(
            long.unwrap_err(),
            I8042Error::OutputQueueTooLong {
                len: OUTPUT_QUEUE_LEN + 1,
                capacity: OUTPUT_QUEUE_LEN
            }
        );
        let command = command.unwrap_err();
        assert_eq!(
            command,
            I8042Error::InvalidKeyboardCommand { command: KBD_ECHO }
        );
        assert!(command.to_string().contains("keyboard_command 0xee"));
        assert_eq!(dev.state(), before);
    }

    #[test]
    fn a_full_queue_restores_and_refuses_more() {
        let (mut original, _power, _irq) = i8042();
        for _ in 0..OUTPUT_QUEUE_LEN {
            original.write(DATA_OFFSET, &[KBD_ECHO]);
        }
        let (mut restored, _power2, _irq2) = i8042();

        restored.restore(&original.state()).unwrap();

        assert!(matches!(
            restored.trigger_ctrl_alt_del(),
            Err(I8042Error::OutputQueueFull { free: 0, .. })
        ));
        assert_eq!(drain(&mut restored), vec![KBD_ECHO; OUTPUT_QUEUE_LEN]);
    }
}
