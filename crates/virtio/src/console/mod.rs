//! virtio-console (virtio 1.2, 5.3) with a single port and no optional features: queue 0
//! (receiveq, host to guest) and queue 1 (transmitq, guest to host).
//!
//! Output: the bytes of every transmit chain go to a `Write` the VMM hands over (a socket
//! backend or a file); a chain is returned used with length 0 (the device writes nothing).
//! Input: the VMM pushes host bytes with [`Console::push_input`], which keeps at most
//! [`INPUT_BUFFER`] bytes and says how many it took (the rest waits on the host side: that is
//! the back-pressure); then it notifies queue 0, and each receive chain gets as many pending
//! bytes as it holds. A driver notification of queue 0 (new buffers) delivers what is pending
//! too. Pending input survives a driver reset (a driver that opens the device after the host
//! typed still gets the bytes) and is part of the snapshot state.
//!
//! Malformed chains (loops, buffers outside guest memory, the wrong direction) are returned
//! used with 0 bytes and never touched.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::Bytes;

use crate::active_queues::{ActiveQueues, queue_error};
use crate::chain::{collect_chain, gather, writable_chain};
use crate::{
    ActivateError, DeviceError, DeviceStateError, VirtioDevice, VirtioDeviceState, VirtioInterrupt,
    VirtioMemory, device_type, features,
};

/// Maximum size of each queue.
pub const CONSOLE_QUEUE_SIZE: u16 = 128;
/// Most host input the device holds for the guest.
pub const INPUT_BUFFER: usize = 4096;
/// Most bytes one transmit chain may carry; longer chains are refused (the driver sends
/// page-sized buffers).
pub const MAX_TX_CHAIN: usize = 64 * 1024;

const RECEIVE_QUEUE: u16 = 0;
const TRANSMIT_QUEUE: u16 = 1;

/// What a snapshot keeps of virtio-console beyond its queues: input not yet delivered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleState {
    /// Host input waiting for receive buffers (at most [`INPUT_BUFFER`] bytes).
    pub pending_input: Vec<u8>,
}

/// The virtio console device.
pub struct Console {
    output: Box<dyn Write + Send>,
    queue_sizes: [u16; 2],
    active: Option<ActiveQueues>,
    pending_input: VecDeque<u8>,
    bytes_out: u64,
    bytes_in: u64,
}

impl Console {
    /// A console whose guest output goes to `output`.
    pub fn new(output: Box<dyn Write + Send>) -> Self {
        Console {
            output,
            queue_sizes: [CONSOLE_QUEUE_SIZE; 2],
            active: None,
            pending_input: VecDeque::new(),
            bytes_out: 0,
            bytes_in: 0,
        }
    }

    /// Takes as much of `bytes` as the input buffer has room for; returns how many. Notify
    /// queue 0 afterwards so that they reach the guest.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let room = INPUT_BUFFER.saturating_sub(self.pending_input.len());
        let taken = room.min(bytes.len());
        self.pending_input.extend(&bytes[..taken]);
        taken
    }

    /// Host input not yet delivered to the guest.
    pub fn pending_input(&self) -> usize {
        self.pending_input.len()
    }

    /// Bytes the guest transmitted, and bytes it received, since creation.
    pub fn byte_counts(&self) -> (u64, u64) {
        (self.bytes_out, self.bytes_in)
    }

    /// Moves pending input into receive chains while both last.
    fn receive(&mut self, active: &mut ActiveQueues) -> Result<(), DeviceError> {
        let mem = active.mem.clone();
        let mut used_any = false;
        loop {
            while !self.pending_input.is_empty() {
                let queue = active.queue(RECEIVE_QUEUE)?;
                let Some(chain) = queue.iter(&mem).map_err(queue_error(RECEIVE_QUEUE))?.next()
                else {
                    break;
                };
                let head = chain.head_index();
                let len = match writable_chain(chain) {
                    Ok(buffers) => self.fill(&mem, &buffers),
                    Err(error) => {
                        tracing::debug!(%error, "virtio-console receive buffer refused");
                        0
                    }
                };
                used_any |= active.add_used(RECEIVE_QUEUE, head, len)?;
            }
            // Asks for the driver's next notification (avail_event with EVENT_IDX), then
            // looks again in case buffers arrived meanwhile.
            let more = active
                .queue(RECEIVE_QUEUE)?
                .enable_notification(&mem)
                .map_err(queue_error(RECEIVE_QUEUE))?;
            if !more || self.pending_input.is_empty() {
                break;
            }
        }
        active.signal_if_needed(RECEIVE_QUEUE, used_any)
    }

    /// Copies pending input into `buffers`; returns the bytes written.
    fn fill(&mut self, mem: &VirtioMemory, buffers: &[Descriptor]) -> u32 {
        let mut written = 0u32;
        for buffer in buffers {
            let n = (buffer.len() as usize).min(self.pending_input.len());
            if n == 0 {
                continue;
            }
            let bytes: Vec<u8> = self.pending_input.range(..n).copied().collect();
            if mem.write_slice(&bytes, buffer.addr()).is_err() {
                break;
            }
            self.pending_input.drain(..n);
            // n is at most the buffer's u32 length.
            written += n as u32;
        }
        self.bytes_in += u64::from(written);
        written
    }

    /// Sends every transmit chain to the output.
    fn transmit(&mut self, active: &mut ActiveQueues) -> Result<(), DeviceError> {
        let mem = active.mem.clone();
        let mut used_any = false;
        loop {
            let queue = active.queue(TRANSMIT_QUEUE)?;
            queue
                .disable_notification(&mem)
                .map_err(queue_error(TRANSMIT_QUEUE))?;
            while let Some(chain) = active
                .queue(TRANSMIT_QUEUE)?
                .iter(&mem)
                .map_err(queue_error(TRANSMIT_QUEUE))?
                .next()
            {
                let head = chain.head_index();
                match collect_chain(chain) {
                    Ok(buffers) => self.send(&mem, &buffers),
                    Err(error) => tracing::debug!(%error, "virtio-console transmit refused"),
                }
                used_any |= active.add_used(TRANSMIT_QUEUE, head, 0)?;
            }
            if !active
                .queue(TRANSMIT_QUEUE)?
                .enable_notification(&mem)
                .map_err(queue_error(TRANSMIT_QUEUE))?
            {
                break;
            }
        }
        active.signal_if_needed(TRANSMIT_QUEUE, used_any)
    }

    /// Writes the device-readable bytes of one chain to the output.
    fn send(&mut self, mem: &VirtioMemory, buffers: &[Descriptor]) {
        if buffers.iter().any(|b| b.is_write_only()) {
            tracing::debug!("virtio-console transmit chain with a device-writable buffer refused");
            return;
        }
        let total: usize = buffers.iter().map(|b| b.len() as usize).sum();
        if total > MAX_TX_CHAIN {
            tracing::debug!(total, "virtio-console transmit chain too long, refused");
            return;
        }
        let mut data = vec![0u8; total];
        if gather(mem, buffers, &mut data).is_err() {
            return;
        }
        if let Err(e) = self
            .output
            .write_all(&data)
            .and_then(|()| self.output.flush())
        {
            tracing::warn!("virtio-console output failed: {e}");
            return;
        }
        self.bytes_out += total as u64;
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        features::COMMON
    }

    fn activate(
        &mut self,
        mem: VirtioMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.active = Some(ActiveQueues::activate(mem, queues, interrupt, 2)?);
        Ok(())
    }

    fn process_queue(&mut self, index: u16) -> Result<(), DeviceError> {
        let mut active = crate::device::take_active(&mut self.active, index)?;
        let result = match index {
            RECEIVE_QUEUE => self.receive(&mut active),
            TRANSMIT_QUEUE => self.transmit(&mut active),
            _ => Err(DeviceError::NoSuchQueue { index }),
        };
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        self.active.as_ref().map(ActiveQueues::states)
    }

    fn device_state(&self) -> Option<VirtioDeviceState> {
        Some(VirtioDeviceState::Console(ConsoleState {
            pending_input: self.pending_input.iter().copied().collect(),
        }))
    }

    fn restore_device_state(
        &mut self,
        state: Option<&VirtioDeviceState>,
    ) -> Result<(), DeviceStateError> {
        let Some(VirtioDeviceState::Console(console)) = state else {
            return Err(DeviceStateError::wrong_device("virtio-console", state));
        };
        if console.pending_input.len() > INPUT_BUFFER {
            return Err(DeviceStateError::Invalid {
                field: "pending_input",
                reason: format!(
                    "{} bytes, the device holds at most {INPUT_BUFFER}",
                    console.pending_input.len()
                ),
            });
        }
        self.pending_input = console.pending_input.iter().copied().collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
