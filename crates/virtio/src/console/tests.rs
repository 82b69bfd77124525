use std::sync::Mutex;

use vm_memory::GuestAddress;

use super::*;
use crate::test_utils::{DriverQueue, RecordingInterrupt, WRITE, guest_memory};

const NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;

/// Output that the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

struct Rig<'m> {
    mem: &'m VirtioMemory,
    rx: DriverQueue<'m>,
    tx: DriverQueue<'m>,
    console: Console,
    output: Captured,
    interrupt: Arc<RecordingInterrupt>,
}

fn rig(mem: &VirtioMemory) -> Rig<'_> {
    let rx = DriverQueue::new(mem, 0x1000, 16);
    let tx = DriverQueue::new(mem, 0x3000, 16);
    let output = Captured::default();
    let mut console = Console::new(Box::new(output.clone()));
    let interrupt = Arc::new(RecordingInterrupt::default());
    console
        .activate(mem.clone(), vec![rx.queue(), tx.queue()], interrupt.clone())
        .unwrap();
    Rig {
        mem,
        rx,
        tx,
        console,
        output,
        interrupt,
    }
}

impl Rig<'_> {
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
        data
    }
}

#[test]
fn transmitted_chains_reach_the_output_in_order() {
    let mem = guest_memory();
    let mut r = rig(&mem);
    mem.write_slice(b"hello ", GuestAddress(0x10000)).unwrap();
    mem.write_slice(b"world\n", GuestAddress(0x11000)).unwrap();
    mem.write_slice(b"again\n", GuestAddress(0x12000)).unwrap();
    r.tx.write_desc(0, 0x10000, 6, NEXT, 1);
    r.tx.write_desc(1, 0x11000, 6, 0, 0);
    r.tx.write_desc(2, 0x12000, 6, 0, 0);
    r.tx.publish(0, 0);
    r.tx.publish(1, 2);

    r.console.process_queue(TRANSMIT_QUEUE).unwrap();

    assert_eq!(r.output.bytes(), b"hello world\nagain\n");
    assert_eq!(r.tx.used_idx(), 2);
    assert_eq!(r.tx.used_elem(0), (0, 0));
    assert_eq!(r.interrupt.queue_signals(), vec![TRANSMIT_QUEUE]);
    assert_eq!(r.console.byte_counts(), (18, 0));
}

#[test]
fn input_fills_receive_buffers_and_waits_for_more() {
    let mem = guest_memory();
    let mut r = rig(&mem);
    r.rx.write_desc(0, 0x20000, 4, WRITE, 0);
    r.rx.write_desc(1, 0x21000, 4, WRITE, 0);
    r.rx.publish(0, 0);
    r.rx.publish(1, 1);

    let taken = r.console.push_input(b"0123456789");
    r.console.process_queue(RECEIVE_QUEUE).unwrap();
    let pending_after_two = r.console.pending_input();
    r.rx.write_desc(2, 0x22000, 64, WRITE, 0);
    r.rx.publish(2, 2);
    r.console.process_queue(RECEIVE_QUEUE).unwrap();

    assert_eq!(taken, 10);
    assert_eq!(pending_after_two, 2, "no buffer left for the last bytes");
    assert_eq!(r.read(0x20000, 4), b"0123");
    assert_eq!(r.read(0x21000, 4), b"4567");
    assert_eq!(r.read(0x22000, 3), b"89\0");
    assert_eq!(r.rx.used_elem(2), (2, 2));
    assert_eq!(r.console.pending_input(), 0);
    assert_eq!(
        r.rx.avail_event(),
        0,
        "EVENT_IDX is off: avail_event is untouched"
    );
}

#[test]
fn buffers_are_kept_while_there_is_no_input() {
    let mem = guest_memory();
    let mut r = rig(&mem);
    r.rx.write_desc(0, 0x20000, 4, WRITE, 0);
    r.rx.publish(0, 0);

    r.console.process_queue(RECEIVE_QUEUE).unwrap();
    r.console.push_input(b"ab");
    r.console.process_queue(RECEIVE_QUEUE).unwrap();

    assert_eq!(r.rx.used_idx(), 1);
    assert_eq!(r.rx.used_elem(0), (0, 2));
    assert_eq!(r.interrupt.queue_signals(), vec![RECEIVE_QUEUE]);
}

#[test]
fn the_input_buffer_is_bounded() {
    let mut console = Console::new(Box::new(std::io::sink()));

    let first = console.push_input(&vec![1u8; INPUT_BUFFER - 10]);
    let second = console.push_input(&[2u8; 64]);
    let third = console.push_input(&[3u8; 1]);

    assert_eq!((first, second, third), (INPUT_BUFFER - 10, 10, 0));
    assert_eq!(console.pending_input(), INPUT_BUFFER);
}

#[test]
fn hostile_chains_are_used_empty_and_untouched() {
    let mem = guest_memory();
    let mut r = rig(&mem);
    // rx: a device-readable buffer, then one reaching into the hole after 1 MiB.
    r.rx.write_desc(0, 0x20000, 8, 0, 0);
    r.rx.write_desc(1, 0xF_FFF8, 0x20, WRITE, 0);
    r.rx.publish(0, 0);
    r.rx.publish(1, 1);
    // tx: a device-writable buffer, then a loop.
    mem.write_slice(b"secret", GuestAddress(0x30000)).unwrap();
    r.tx.write_desc(0, 0x30000, 6, WRITE, 0);
    r.tx.write_desc(1, 0x30000, 6, NEXT, 2);
    r.tx.write_desc(2, 0x30000, 6, NEXT, 1);
    r.tx.publish(0, 0);
    r.tx.publish(1, 1);
    r.console.push_input(b"xyz");

    r.console.process_queue(RECEIVE_QUEUE).unwrap();
    r.console.process_queue(TRANSMIT_QUEUE).unwrap();

    assert_eq!((r.rx.used_elem(0), r.rx.used_elem(1)), ((0, 0), (1, 0)));
    assert_eq!(r.read(0x20000, 8), [0; 8]);
    assert_eq!(
        r.console.pending_input(),
        3,
        "input waits for a proper buffer"
    );
    assert_eq!(r.tx.used_idx(), 2);
    assert!(r.output.bytes().is_empty());
}

#[test]
fn an_oversized_transmit_chain_is_refused() {
    let mem = guest_memory();
    let mut r = rig(&mem);
    r.tx.write_desc(0, 0x40000, (MAX_TX_CHAIN + 1) as u32, 0, 0);
    r.tx.publish(0, 0);

    r.console.process_queue(TRANSMIT_QUEUE).unwrap();

    assert_eq!(r.tx.used_elem(0), (0, 0));
    assert!(r.output.bytes().is_empty());
}

#[test]
fn activation_needs_both_queues_and_unknown_queues_are_errors() {
    let mem = guest_memory();
    let rx = DriverQueue::new(&mem, 0x1000, 16);
    let mut console = Console::new(Box::new(std::io::sink()));
    let interrupt = Arc::new(RecordingInterrupt::default());

    let one = console.activate(mem.clone(), vec![rx.queue()], interrupt.clone());
    let not_ready = console.activate(
        mem.clone(),
        vec![rx.queue(), Queue::new(16).unwrap()],
        interrupt.clone(),
    );
    let before = console.process_queue(0);

    assert!(matches!(one, Err(ActivateError::QueueCount { .. })));
    assert!(matches!(
        not_ready,
        Err(ActivateError::QueueNotEnabled { index: 1 })
    ));
    assert!(matches!(before, Err(DeviceError::NotActivated { .. })));
    let mut r = rig(&mem);
    assert!(matches!(
        r.console.process_queue(2),
        Err(DeviceError::NoSuchQueue { index: 2 })
    ));
}

#[test]
fn state_keeps_pending_input_and_refuses_bad_states() {
    let mut console = Console::new(Box::new(std::io::sink()));
    console.push_input(b"typed");
    let state = console.device_state().unwrap();
    let mut restored = Console::new(Box::new(std::io::sink()));

    restored.restore_device_state(Some(&state)).unwrap();
    let too_big = VirtioDeviceState::Console(ConsoleState {
        pending_input: vec![0; INPUT_BUFFER + 1],
    });
    let refused = restored.restore_device_state(Some(&too_big));
    let missing = restored.restore_device_state(None);

    assert_eq!(restored.pending_input(), 5);
    assert!(matches!(refused, Err(DeviceStateError::Invalid { .. })));
    assert!(matches!(missing, Err(DeviceStateError::WrongDevice { .. })));
    assert_eq!(restored.pending_input(), 5, "refused: unchanged");
}

#[test]
fn queue_states_cover_both_queues() {
    let mem = guest_memory();
    let mut r = rig(&mem);
    r.tx.write_desc(0, 0x10000, 1, 0, 0);
    r.tx.publish(0, 0);

    r.console.process_queue(TRANSMIT_QUEUE).unwrap();
    let states = r.console.queue_states().unwrap();

    assert_eq!(states.len(), 2);
    assert_eq!((states[1].next_avail, states[1].next_used), (1, 1));
    assert_eq!(states[0].next_avail, 0);
}
