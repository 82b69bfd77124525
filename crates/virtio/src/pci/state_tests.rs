//! Tests of snapshots of the PCI transport: a guest drives the rng, the function is saved
//! and restored into a fresh one on the same guest memory, and the driver carries on.

use std::sync::Arc;

use devices::pci::{PciConfigState, PciDevice, regs};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::VirtioMemory;
use crate::pci::tests::{
    CONFIG_GENERATION, CONFIG_MSIX_VECTOR, Harness, QUEUE_SELECT, Queues, bring_up, build,
    enable_bus_master, enable_msix, harness, negotiate, notify, publish_write_buffer, read,
    set_status, setup_queue, status, write,
};
use crate::pci::{ISR_CFG_OFFSET, ISR_QUEUE, MSIX_BAR, VIRTIO_BAR};
use crate::rng::{Rng, RngState};
use crate::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::test_utils::{
    CountingSource, DriverQueue, RecordingIrq, RecordingMsi, XorShift, guest_memory,
};
use crate::{DeviceStateError, VirtioDevice, VirtioDeviceState, features};

/// A fresh rng function on `mem`, as a restoring VMM builds it.
fn fresh(mem: &VirtioMemory) -> Harness {
    let msi = Arc::new(RecordingMsi::default());
    let irq = Arc::new(RecordingIrq::default());
    let rng = Rng::new(Box::new(CountingSource::default()));
    let dev = VirtioPciDevice::new(rng, mem.clone(), msi.clone(), irq.clone()).unwrap();
    Harness {
        dev,
        mem: mem.clone(),
        msi,
        irq,
    }
}

fn bytes_at(mem: &VirtioMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
    data
}

/// A running rng (MSI-X, queue vector 1) that served one 8-byte request at 0x10000.
fn served_one(dev: &mut VirtioPciDevice<Rng>, vq: &DriverQueue<'_>) {
    bring_up(dev, vq, features::VERSION_1, true);
    publish_write_buffer(vq, 0, 0x10000, 8);
    notify(dev, 0);
    assert_eq!(vq.used_idx(), 1);
}

fn restore_error(state: &VirtioPciState) -> String {
    let mem = guest_memory();
    let mut h = fresh(&mem);
    let before = h.dev.state().unwrap();
    let error = h.dev.restore(state).unwrap_err().to_string();
    assert_eq!(
        h.dev.state().unwrap(),
        before,
        "refused: unchanged ({error})"
    );
    assert!(!h.dev.is_activated());
    error
}

#[test]
fn restored_rng_continues_the_queue_where_the_snapshot_stopped() {
    let mut original = harness();
    let vq = DriverQueue::new(&original.mem, 0, 16);
    served_one(&mut original.dev, &vq);
    let first_msi = original.msi.take();
    let state = original.dev.state().unwrap();
    let mut restored = fresh(&original.mem);

    restored.dev.restore(&state).unwrap();
    publish_write_buffer(&vq, 1, 0x10100, 4);
    notify(&mut restored.dev, 0);

    assert!(restored.dev.is_activated());
    assert_eq!(vq.used_idx(), 2, "the used index continues");
    assert_eq!(
        vq.used_elem(1),
        (1, 4),
        "the next avail entry, not entry 0 again"
    );
    assert_eq!(bytes_at(&restored.mem, 0x10100, 4), [0, 1, 2, 3]);
    assert_eq!(first_msi, vec![(0xFEE0_0000, 0x41)]);
    assert_eq!(restored.msi.take(), first_msi, "same MSI-X message");
    assert_eq!(restored.dev.device().bytes_delivered(), 12);
    assert_eq!(
        status(&mut restored.dev),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
}

#[test]
fn a_restored_function_reports_the_state_it_was_given() {
    let mut original = harness();
    let vq = DriverQueue::new(&original.mem, 0, 16);
    served_one(&mut original.dev, &vq);
    write(&mut original.dev, QUEUE_SELECT, &7u16.to_le_bytes());
    let state = original.dev.state().unwrap();
    let mut restored = fresh(&original.mem);

    restored.dev.restore(&state).unwrap();

    assert_eq!(restored.dev.state().unwrap(), state);
    assert_eq!(state.queues[0].next_avail, 1);
    assert_eq!(state.queues[0].next_used, 1);
    assert_eq!(state.queue_select, 7);
    assert_eq!(
        state.device,
        Some(VirtioDeviceState::Rng(RngState { bytes_delivered: 8 }))
    );
}

#[test]
fn a_device_the_driver_had_not_started_stays_inactive_and_can_be_started() {
    let mut original = harness();
    let vq = DriverQueue::new(&original.mem, 0, 16);
    enable_bus_master(&mut original.dev);
    enable_msix(&mut original.dev);
    negotiate(&mut original.dev, features::VERSION_1);
    setup_queue(&mut original.dev, &vq, 16, 1);
    let state = original.dev.state().unwrap();
    let mut restored = fresh(&original.mem);

    restored.dev.restore(&state).unwrap();
    let inactive = !restored.dev.is_activated();
    set_status(
        &mut restored.dev,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    publish_write_buffer(&vq, 0, 0x10000, 4);
    notify(&mut restored.dev, 0);

    assert!(inactive);
    assert!(restored.dev.is_activated());
    assert_eq!(vq.used_elem(0), (0, 4));
    assert_eq!(restored.msi.take(), vec![(0xFEE0_0000, 0x41)]);
}

#[test]
fn restoring_into_a_running_function_replaces_what_it_was_doing() {
    let mut h = harness();
    let inactive = h.dev.state().unwrap();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    served_one(&mut h.dev, &vq);

    h.dev.restore(&inactive).unwrap();
    publish_write_buffer(&vq, 1, 0x10100, 4);
    notify(&mut h.dev, 0);

    assert!(!h.dev.is_activated());
    assert_eq!(status(&mut h.dev), 0);
    assert_eq!(vq.used_idx(), 1, "the old queue is gone");
    assert_eq!(h.dev.state().unwrap(), inactive);
}

#[test]
fn a_pending_intx_interrupt_is_asserted_again() {
    let mut original = harness();
    let vq = DriverQueue::new(&original.mem, 0, 16);
    bring_up(&mut original.dev, &vq, features::VERSION_1, false);
    publish_write_buffer(&vq, 0, 0x10000, 4);
    notify(&mut original.dev, 0);
    let state = original.dev.state().unwrap();
    let mut restored = fresh(&original.mem);

    restored.dev.restore(&state).unwrap();
    let raised = restored.irq.is_high();
    let mut isr = [0u8];
    restored.dev.bar_read(VIRTIO_BAR, ISR_CFG_OFFSET, &mut isr);

    assert_eq!(state.isr, ISR_QUEUE);
    assert!(raised);
    assert_eq!(isr, [ISR_QUEUE]);
    assert!(!restored.irq.is_high(), "reading the ISR deasserts INTx");
}

#[test]
fn event_idx_and_vectors_survive_a_restore() {
    let mut original = harness();
    let vq = DriverQueue::new(&original.mem, 0, 16);
    bring_up(
        &mut original.dev,
        &vq,
        features::VERSION_1 | features::RING_EVENT_IDX,
        true,
    );
    publish_write_buffer(&vq, 0, 0x10000, 4);
    notify(&mut original.dev, 0);
    let state = original.dev.state().unwrap();
    let mut restored = fresh(&original.mem);

    restored.dev.restore(&state).unwrap();
    publish_write_buffer(&vq, 1, 0x10100, 4);
    notify(&mut restored.dev, 0);

    assert_eq!(vq.used_idx(), 2);
    assert_eq!(
        vq.avail_event(),
        2,
        "EVENT_IDX: the device asks for the next kick"
    );
    assert_eq!(read::<2>(&mut restored.dev, CONFIG_MSIX_VECTOR), 0);
    assert_eq!(
        read::<1>(&mut restored.dev, CONFIG_GENERATION),
        u64::from(state.config_generation)
    );
}

#[test]
fn a_device_that_needs_a_reset_is_restored_needing_it() {
    let mut original = harness();
    let vq = DriverQueue::new(&original.mem, 0, 16);
    bring_up(&mut original.dev, &vq, features::VERSION_1, true);
    vq.set_avail_idx(40);
    notify(&mut original.dev, 0);
    let state = original.dev.state().unwrap();
    let mut restored = fresh(&original.mem);

    restored.dev.restore(&state).unwrap();
    vq.set_avail_idx(0);
    publish_write_buffer(&vq, 0, 0x10000, 4);
    notify(&mut restored.dev, 0);

    assert_ne!(status(&mut restored.dev) & DEVICE_NEEDS_RESET, 0);
    assert_eq!(vq.used_idx(), 0, "ignored until the driver resets it");
    set_status(&mut restored.dev, 0);
    assert_eq!(status(&mut restored.dev), 0);
}

#[test]
fn the_state_round_trips_through_json_and_bincode() {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    served_one(&mut h.dev, &vq);
    let state = h.dev.state().unwrap();
    let config = bincode::config::standard().with_fixed_int_encoding();

    let json = serde_json::to_string(&state).unwrap();
    let from_json: VirtioPciState = serde_json::from_str(&json).unwrap();
    let bytes = bincode::serde::encode_to_vec(&state, config).unwrap();
    let (from_bincode, read): (VirtioPciState, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();

    assert_eq!(from_json, state);
    assert_eq!((from_bincode, read), (state, bytes.len()));
    assert!(json.contains("\"Rng\":{\"bytes_delivered\":8}"));
}

#[test]
fn unknown_fields_are_refused_when_decoding() {
    let h = harness();
    let mut json: serde_json::Value = serde_json::to_value(h.dev.state().unwrap()).unwrap();
    let mut queue_json = json.clone();
    json["surprise"] = serde_json::json!(1);
    queue_json["queues"][0]["surprise"] = serde_json::json!(1);

    let top = serde_json::from_value::<VirtioPciState>(json).unwrap_err();
    let queue = serde_json::from_value::<VirtioPciState>(queue_json).unwrap_err();

    assert!(top.to_string().contains("surprise"), "{top}");
    assert!(queue.to_string().contains("surprise"), "{queue}");
}

/// A valid state of a running rng, and a way to break one field of it.
fn running_state() -> VirtioPciState {
    let mut h = harness();
    let vq = DriverQueue::new(&h.mem, 0, 16);
    served_one(&mut h.dev, &vq);
    h.dev.state().unwrap()
}

#[test]
fn invalid_states_are_refused_naming_the_field() {
    type Breaker = fn(&mut VirtioPciState);
    let cases: [(&str, Breaker); 22] = [
        ("queues[0].size", |s| s.queues[0].size = 100),
        ("queues[0].size", |s| s.queues[0].size = 512),
        ("queues[0].size", |s| s.queues[0].size = 0),
        ("queues[0].msix_vector", |s| s.queues[0].msix_vector = 2),
        ("queues[0].desc_table", |s| s.queues[0].desc_table = 0x1008),
        ("queues[0].avail_ring", |s| s.queues[0].avail_ring += 1),
        ("queues[0].used_ring", |s| s.queues[0].used_ring += 2),
        ("queues[0] is invalid: the rings", |s| {
            s.queues[0].desc_table = 0x18_0000
        }),
        ("queues", |s| s.queues.clear()),
        ("config_msix_vector", |s| s.config_msix_vector = 2),
        ("device_status", |s| s.device_status = DRIVER | FEATURES_OK),
        ("device_status", |s| s.device_status |= 0x10),
        ("device_status", |s| {
            s.device_status = ACKNOWLEDGE | DRIVER | DRIVER_OK
        }),
        ("activated", |s| {
            s.device_status = ACKNOWLEDGE | DRIVER | FEATURES_OK
        }),
        ("activated", |s| s.activated = false),
        ("driver_features", |s| s.driver_features |= 1 << 40),
        ("driver_features", |s| s.driver_features = 0),
        ("driver_features_beyond_64", |s| {
            s.driver_features_beyond_64 = true
        }),
        ("isr", |s| s.isr = 0x4),
        ("msix.enabled", |s| s.msix.enabled = false),
        ("msix.function_masked", |s| s.msix.function_masked = true),
        ("entries", |s| {
            s.msix.entries.pop();
        }),
    ];

    for (field, breaker) in cases {
        let mut state = running_state();
        breaker(&mut state);

        let error = restore_error(&state);

        assert!(error.contains(field), "{field}: {error}");
    }
}

#[test]
fn states_of_another_device_are_refused() {
    let mut other_type = running_state();
    other_type.device_type = crate::device_type::NET;
    let mut other_ids = running_state();
    other_ids.config.bytes[usize::from(regs::DEVICE_ID)] = 0x41;
    let mut short_config = running_state();
    short_config.config = PciConfigState { bytes: vec![0; 16] };
    let mut no_device_state = running_state();
    no_device_state.device = None;
    let mut inactive_positions = harness().dev.state().unwrap();
    inactive_positions.queues[0].next_used = 3;

    assert!(restore_error(&other_type).contains("device type 1"));
    assert!(restore_error(&other_ids).contains("read-only byte 0x2"));
    assert!(restore_error(&short_config).contains("16 bytes"));
    assert!(restore_error(&no_device_state).contains("no device state"));
    assert!(restore_error(&inactive_positions).contains("queues[0].next_avail"));
}

#[test]
fn an_active_device_that_cannot_report_its_queues_cannot_be_snapshotted() {
    let mut dev = build(vec![16]).unwrap();
    let mem = guest_memory();
    let vq = DriverQueue::new(&mem, 0, 16);
    let inactive = dev.state();
    bring_up(&mut dev, &vq, features::VERSION_1, true);

    let active = dev.state();

    assert!(inactive.is_ok(), "positions are all 0 before activation");
    assert!(matches!(
        active,
        Err(VirtioPciError::SnapshotUnsupported { device_type: 1 })
    ));
}

#[test]
fn devices_without_device_state_refuse_one() {
    let mut device = Queues(vec![16]);

    let none = device.restore_device_state(None);
    let some = device.restore_device_state(Some(&VirtioDeviceState::Rng(RngState {
        bytes_delivered: 0,
    })));

    assert!(none.is_ok());
    assert!(matches!(
        some,
        Err(DeviceStateError::WrongDevice {
            found: "virtio-rng",
            ..
        })
    ));
}

/// Random changes to a valid state: one to three fields get random, often hostile, values.
fn mutate(state: &mut VirtioPciState, rng: &mut XorShift) {
    let small = |rng: &mut XorShift| match rng.below(4) {
        0 => rng.next() as u16,
        1 => 0xFFFF,
        _ => rng.below(4) as u16,
    };
    for _ in 0..1 + rng.below(3) {
        let queue = rng.below(2) as usize;
        match rng.below(20) {
            0 => state.device_status = rng.next() as u8,
            1 => state.activated = !state.activated,
            2 => state.driver_features ^= 1 << rng.below(64),
            3 => state.driver_features_beyond_64 = rng.chance(2),
            4 => state.isr = rng.below(8) as u8,
            5 => state.config_msix_vector = small(rng),
            6 => state.queue_select = rng.next() as u16,
            7 => state.config_generation = rng.next() as u8,
            8 => {
                let at = rng.below(state.config.bytes.len() as u64 + 1) as usize;
                if let Some(byte) = state.config.bytes.get_mut(at) {
                    *byte = rng.next() as u8;
                }
            }
            9 => state.msix.enabled = rng.chance(2),
            10 => state.msix.function_masked = rng.chance(2),
            11 => state.msix.pending = vec![rng.next(); rng.below(3) as usize],
            12 => {
                if let Some(entry) = state.msix.entries.get_mut(queue) {
                    entry.vector_control = rng.below(3) as u32;
                    entry.data = rng.next() as u32;
                }
            }
            13 => state.device = None,
            _ => {
                let Some(q) = state.queues.get_mut(queue) else {
                    continue;
                };
                match rng.below(8) {
                    0 => q.size = small(rng),
                    1 => q.ready = !q.ready,
                    2 => q.msix_vector = small(rng),
                    3 => q.desc_table = rng.next() >> rng.below(64),
                    4 => q.avail_ring = rng.next() >> rng.below(64),
                    5 => q.used_ring = rng.next() >> rng.below(64),
                    6 => q.next_avail = rng.next() as u16,
                    _ => q.next_used = rng.next() as u16,
                }
            }
        }
    }
}

/// A valid state from a random point of a driver's life.
fn random_valid_state(rng: &mut XorShift, mem: &VirtioMemory) -> VirtioPciState {
    let mut h = fresh(mem);
    let vq = DriverQueue::new(mem, 0, 16);
    match rng.below(4) {
        0 => {}
        1 => {
            negotiate(&mut h.dev, features::VERSION_1 | features::RING_EVENT_IDX);
        }
        _ => {
            let ring = if rng.chance(2) {
                features::RING_EVENT_IDX
            } else {
                0
            };
            bring_up(&mut h.dev, &vq, features::VERSION_1 | ring, rng.chance(2));
            for slot in 0..rng.below(20) as u16 {
                publish_write_buffer(&vq, slot % 16, 0x10000 + 0x100 * u64::from(slot % 16), 8);
                notify(&mut h.dev, 0);
            }
        }
    }
    h.dev.state().unwrap()
}

/// A guest poking at random registers after a restore.
fn random_accesses(dev: &mut VirtioPciDevice<Rng>, vq: &DriverQueue<'_>, rng: &mut XorShift) {
    for step in 0..200u16 {
        let len = [1usize, 2, 4, 8][rng.below(4) as usize];
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match rng.below(8) {
            0 => {
                let offset = rng.below(0x110) as u16;
                dev.config_mut().write(offset, &data);
                dev.config_written(offset, data.len());
            }
            1 => dev.config_read(rng.below(0x110) as u16, &mut data),
            2 => dev.bar_write(MSIX_BAR, rng.below(0x1100), &data),
            3 => dev.bar_read(VIRTIO_BAR, rng.below(0x4100), &mut data),
            4 => dev.bar_write(VIRTIO_BAR, rng.below(0x40), &data),
            _ => {
                vq.write_desc(step % 16, 0x10000, 64, crate::test_utils::WRITE, 0);
                vq.publish(step, step % 16);
                notify(dev, 0);
            }
        }
    }
}

#[test]
fn mutated_states_never_panic_and_restore_exactly_what_they_accept() {
    let mut rng = XorShift::new(0x7374_6174);
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..1_500 {
        let mem = guest_memory();
        let mut state = random_valid_state(&mut rng, &mem);
        mutate(&mut state, &mut rng);
        let mut h = fresh(&mem);

        let result = h.dev.restore(&state);

        match result {
            Ok(()) => {
                accepted += 1;
                let mut reported = h.dev.state().unwrap();
                // Restoring delivers MSI-X vectors that are pending and unmasked.
                reported.msix.pending.clone_from(&state.msix.pending);
                assert_eq!(reported, state);
            }
            Err(_) => {
                refused += 1;
                assert!(!h.dev.is_activated());
            }
        }
        let vq = DriverQueue::new(&mem, 0, 16);
        random_accesses(&mut h.dev, &vq, &mut rng);
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused: the mutations lost their teeth"
    );
}

#[test]
fn corrupted_encodings_never_panic() {
    let mut rng = XorShift::new(0x6269_6e63);
    let config = bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<{ 1 << 20 }>();
    let mem = guest_memory();
    let state = random_valid_state(&mut XorShift::new(3), &mem);
    let encoded = bincode::serde::encode_to_vec(&state, config).unwrap();
    let mut decoded = 0;

    for _ in 0..2_000 {
        let mut bytes = encoded.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] = rng.next() as u8;
        }
        if rng.chance(10) {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
        }
        let Ok((state, _)) = bincode::serde::decode_from_slice::<VirtioPciState, _>(&bytes, config)
        else {
            continue;
        };
        decoded += 1;
        let mut h = fresh(&mem);
        if h.dev.restore(&state).is_ok() {
            let vq = DriverQueue::new(&mem, 0, 16);
            random_accesses(&mut h.dev, &vq, &mut rng);
        }
    }
    assert!(decoded > 100, "only {decoded} corrupted states decoded");
}
