//! Snapshots through the control API and restore in a new process, on real KVM: the guest's
//! count continues from the snapshot, diff snapshots layer on full ones, and bad snapshots are
//! refused with a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{LiveVmm, oxvmm, require_kvm, temp_dir};
use vmm_api::{Client, SnapshotRequest, VmState};

const TIMEOUT: Duration = Duration::from_secs(60);

fn count_of(line: &str) -> Option<u64> {
    line.strip_prefix("counter ")?.trim().parse().ok()
}

/// Waits for the next `counter N` line and returns N.
fn next_count(vmm: &mut LiveVmm) -> u64 {
    let line = vmm.expect_line(|l| count_of(l).is_some(), TIMEOUT);
    count_of(&line).unwrap_or_default()
}

/// Boots the counting guest with the API; returns it once it has counted a little.
fn start_counter(dir: &Path, cmdline: &str) -> (LiveVmm, Client) {
    require_kvm();
    let socket = dir.join("api.sock");
    let mut vmm = common::spawn_guest_with_api(cmdline, &socket, &["--memory", "128M"]);
    let client = Client::wait_for_socket(&socket, TIMEOUT).expect("API socket");
    next_count(&mut vmm);
    (vmm, client)
}

fn snapshot(client: &Client, destination: &Path, diff: bool) {
    client
        .snapshot(&SnapshotRequest {
            destination: destination.to_path_buf(),
            diff,
        })
        .unwrap_or_else(|e| panic!("snapshot to {}: {e}", destination.display()));
}

/// Pauses, snapshots, and returns the last count printed before the snapshot.
fn paused_snapshot(vmm: &mut LiveVmm, client: &Client, destination: &Path, diff: bool) -> u64 {
    client.pause().unwrap();
    // Lines already on their way are part of the state before the snapshot.
    vmm.lines_for(Duration::from_millis(100));
    let before = vmm.seen.iter().rev().find_map(|l| count_of(l)).unwrap_or(0);
    snapshot(client, destination, diff);
    before
}

/// Boots `cmdline` (whose `serial-echo` makes the guest wait for a line) with `extra` options,
/// waits for `ready` and the serial-echo prompt, snapshots the running VM and kills it;
/// then restores the snapshot with `input` on standard input and returns the restored run.
fn snapshot_at_the_prompt_and_restore(
    dir: &Path,
    cmdline: &str,
    extra: &[&str],
    ready: &str,
    input: &[u8],
) -> common::Run {
    require_kvm();
    let socket = dir.join("api.sock");
    let mut vmm = common::spawn_guest_with_api(cmdline, &socket, extra);
    vmm.expect_line(|l| l.starts_with(ready), TIMEOUT);
    vmm.expect_line(|l| l.contains("waiting up to 10 s for a line"), TIMEOUT);
    let client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();
    let snap = dir.join("s");
    snapshot(&client, &snap, false);
    // The restored VM opens its disks again: the first one must let go of their locks.
    vmm.kill();
    common::oxvmm_with_input(
        &["--restore", snap.to_str().unwrap(), "--resume"],
        input,
        TIMEOUT,
    )
}

fn restore(dir: &Path, extra: &[&str]) -> LiveVmm {
    let dir_text = dir.to_str().unwrap().to_string();
    let mut args = vec!["--restore", dir_text.as_str()];
    args.extend_from_slice(extra);
    LiveVmm::spawn(&args)
}

#[test]
fn kvm_restore_continues_the_count_from_the_snapshot() {
    let dir = temp_dir("snap-count");
    let (mut vmm, client) = start_counter(&dir, "counter");
    let snap = dir.join("full");
    let before = paused_snapshot(&mut vmm, &client, &snap, false);
    client.resume().unwrap();
    let later = next_count(&mut vmm);
    vmm.kill();

    let mut restored = restore(&snap, &["--resume"]);
    let first = next_count(&mut restored);

    assert!(before > 0);
    assert!(
        first > before,
        "the count restarted: {first} after a snapshot at {before}"
    );
    assert!(
        first <= later,
        "the restored count {first} is past what the first VM reached after the snapshot ({later})"
    );
    restored.kill();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_snapshot_of_a_running_vm_resumes_it_and_the_memory_file_is_sparse() {
    let dir = temp_dir("snap-running");
    let (mut vmm, client) = start_counter(&dir, "counter");
    let snap = dir.join("running");

    snapshot(&client, &snap, false);

    assert_eq!(client.info().unwrap().state, VmState::Running);
    let a = next_count(&mut vmm);
    let b = next_count(&mut vmm);
    assert!(b > a, "the guest stopped counting after the snapshot");
    let memory = std::fs::metadata(snap.join("memory")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(memory.len(), 128 << 20);
    assert!(
        memory.blocks() * 512 < 8 << 20,
        "memory file not sparse: {} bytes allocated",
        memory.blocks() * 512
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_restore_is_paused_until_resumed() {
    let dir = temp_dir("snap-paused");
    let (mut vmm, client) = start_counter(&dir, "counter");
    let snap = dir.join("s");
    paused_snapshot(&mut vmm, &client, &snap, false);
    vmm.kill();
    let socket = dir.join("restored.sock");

    let mut restored = restore(&snap, &["--api-socket", socket.to_str().unwrap()]);
    let client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();

    assert_eq!(client.info().unwrap().state, VmState::Paused);
    assert!(
        restored.lines_for(Duration::from_millis(500)).is_empty(),
        "a paused restore printed output"
    );
    client.resume().unwrap();
    next_count(&mut restored);
    client.power_off().unwrap();
    assert_eq!(restored.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_diff_snapshots_layer_on_the_full_one() {
    let dir = temp_dir("snap-diff");
    let (mut vmm, client) = start_counter(&dir, "counter touch=8 dirty=1");
    let full = dir.join("full");
    let diff = dir.join("diff");
    let at_full = paused_snapshot(&mut vmm, &client, &full, false);
    client.resume().unwrap();
    next_count(&mut vmm);
    next_count(&mut vmm);
    let at_diff = paused_snapshot(&mut vmm, &client, &diff, true);
    vmm.kill();

    let mut restored = restore(&diff, &["--resume"]);
    let first = next_count(&mut restored);

    assert!(at_diff > at_full);
    assert!(
        first > at_diff,
        "restored from the diff at {first}, the diff was taken at {at_diff}"
    );
    let diff_len = std::fs::metadata(diff.join("memory")).unwrap().len();
    assert!(diff_len > 0);
    restored.kill();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Takes a snapshot of a paused counting guest and returns its directory.
fn a_snapshot(name: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let (mut vmm, client) = start_counter(&dir, "counter");
    let snap = dir.join("s");
    paused_snapshot(&mut vmm, &client, &snap, false);
    vmm.kill();
    (dir, snap)
}

fn assert_restore_fails(snap: &Path, expected: &str) {
    let run = oxvmm(&["--restore", snap.to_str().unwrap()], TIMEOUT);
    run.assert_exit(1);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{run}");
    assert!(stderr.contains("--restore"), "{run}");
    assert!(stderr.contains(expected), "expected {expected:?}\n{run}");
}

#[test]
fn kvm_bad_snapshots_are_refused_with_a_reason() {
    let (dir, snap) = a_snapshot("snap-bad");
    let state = std::fs::read(snap.join("state")).unwrap();
    let memory = snap.join("memory");

    std::fs::write(snap.join("state"), &state[..state.len() / 2]).unwrap();
    assert_restore_fails(&snap, "truncated");

    let mut flipped = state.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    std::fs::write(snap.join("state"), &flipped).unwrap();
    assert_restore_fails(&snap, "checksum");

    std::fs::write(snap.join("state"), b"#!/bin/sh\n").unwrap();
    assert_restore_fails(&snap, "not an oxvmm snapshot");

    std::fs::write(snap.join("state"), &state).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap();
    file.set_len((64 << 20) as u64).unwrap();
    assert_restore_fails(&snap, "memory");

    std::fs::remove_file(&memory).unwrap();
    assert_restore_fails(&snap, "memory");

    assert_restore_fails(&dir.join("nonexistent"), "nonexistent");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_wrong_version_snapshots_are_refused() {
    let (dir, snap) = a_snapshot("snap-version");
    let mut state = std::fs::read(snap.join("state")).unwrap();
    // Container version: the u32 right after the 8-byte magic.
    state[8] = state[8].wrapping_add(7);
    std::fs::write(snap.join("state"), &state).unwrap();

    assert_restore_fails(&snap, "version");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_virtio_rng_keeps_working_after_restore() {
    let dir = temp_dir("snap-virtio");

    let run = snapshot_at_the_prompt_and_restore(
        &dir,
        "virtio-rng serial-echo virtio-rng",
        &["--rng"],
        "TEST virtio-rng PASS",
        b"after-restore\n",
    );

    run.assert_exit(0);
    assert_eq!(run.passed("serial-echo"), "got=after-restore", "{run}");
    // The virtio queue continues where it was: the second request is served after restore.
    assert_eq!(run.passed("virtio-rng"), "bytes=128 distinct=yes", "{run}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Boots the blk-snapshot scenario on a disk holding the blk-read pattern, with the API.
fn start_blk_snapshot_guest(dir: &Path, extra: &[&str]) -> (LiveVmm, Client) {
    use guests::protocol::{BLK_MIN_SECTORS, BLK_READ_SECTORS, blk_pattern, pattern_bytes};

    require_kvm();
    let mut image = vec![0u8; BLK_MIN_SECTORS as usize * 512];
    let planted = pattern_bytes(BLK_READ_SECTORS, blk_pattern);
    image[..planted.len()].copy_from_slice(&planted);
    let disk = dir.join("disk.img");
    std::fs::write(&disk, &image).unwrap();
    let disk_option = format!("path={}", disk.display());
    let socket = dir.join("api.sock");
    let mut args = vec!["--disk", disk_option.as_str()];
    args.extend_from_slice(extra);
    let vmm = common::spawn_guest_with_api("blk-snapshot", &socket, &args);
    let client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();
    (vmm, client)
}

#[test]
fn kvm_diff_snapshots_carry_what_the_disk_read_into_guest_memory() {
    // Arrange: a full snapshot before the read, the read (only the device writes the
    // buffer's page), a diff snapshot after it
    let dir = temp_dir("snap-blk-diff");
    let (mut vmm, client) = start_blk_snapshot_guest(&dir, &["--rng"]);
    vmm.expect_line(|l| l == "oxguest: blk-snapshot ready", TIMEOUT);
    snapshot(&client, &dir.join("full"), false);
    client.shutdown().unwrap();
    vmm.expect_line(|l| l == "oxguest: blk-snapshot read", TIMEOUT);
    let diff = dir.join("diff");
    snapshot(&client, &diff, true);
    vmm.kill();

    // Act: restore the diff (on the full one) and let the guest check its buffer
    let socket = dir.join("restored.sock");
    let mut restored = restore(
        &diff,
        &["--resume", "--api-socket", socket.to_str().unwrap()],
    );
    let restored_client = Client::wait_for_socket(&socket, TIMEOUT).unwrap();
    restored_client.shutdown().unwrap();
    let line = restored.expect_line(|l| l.starts_with("TEST blk-snapshot "), TIMEOUT);

    // Assert
    assert_eq!(
        line,
        "TEST blk-snapshot PASS sectors=8",
        "{}",
        restored.stderr()
    );
    assert_eq!(restored.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_disk_reads_work_after_restore() {
    use guests::protocol::{BLK_MIN_SECTORS, BLK_READ_SECTORS, blk_pattern, pattern_bytes};

    let dir = temp_dir("snap-disk");
    let mut image = vec![0u8; BLK_MIN_SECTORS as usize * 512];
    let planted = pattern_bytes(BLK_READ_SECTORS, blk_pattern);
    image[..planted.len()].copy_from_slice(&planted);
    let disk = dir.join("disk.img");
    std::fs::write(&disk, &image).unwrap();
    let disk_option = format!("path={}", disk.display());

    let run = snapshot_at_the_prompt_and_restore(
        &dir,
        "blk-read serial-echo blk-read",
        &["--disk", &disk_option],
        "TEST blk-read PASS",
        b"go\n",
    );

    run.assert_exit(0);
    assert_eq!(run.passed("serial-echo"), "got=go", "{run}");
    assert_eq!(run.passed("blk-read"), "sectors=8", "{run}");
    std::fs::remove_dir_all(dir).unwrap();
}
