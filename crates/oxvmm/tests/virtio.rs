//! PCI and virtio on real KVM: the bundled guest enumerates the bus and drives virtio-rng.

mod common;

use std::time::Duration;

use common::{oxvmm, require_kvm, run_guest, temp_dir};

#[test]
fn kvm_pci_bus_has_the_host_bridge() {
    let run = run_guest("pci", &[]);
    run.assert_exit(0);
    assert_eq!(run.passed("pci"), "devices=00:00.0 8086:1237", "{run}");
}

#[test]
fn kvm_virtio_rng_delivers_random_bytes_over_ecam() {
    let run = run_guest("pci virtio-rng", &["--rng"]);
    run.assert_exit(0);
    assert!(run.passed("pci").contains("1af4:1044"), "{run}");
    assert_eq!(run.passed("virtio-rng"), "bytes=128 distinct=yes", "{run}");
    assert!(run.stdout.contains("config=ecam"), "{run}");
}

#[test]
fn kvm_virtio_rng_works_through_the_configuration_ports() {
    let run = run_guest("pci virtio-rng pci-config=ports", &["--rng"]);
    run.assert_exit(0);
    assert!(run.stdout.contains("config=ports"), "{run}");
    run.passed("virtio-rng");
}

#[test]
fn kvm_virtio_rng_follows_bars_the_guest_moves() {
    let run = run_guest(
        "pci virtio-rng pci-bars=reassign",
        &["--rng", "--cpus", "2"],
    );
    run.assert_exit(0);
    run.passed("virtio-rng");
}

#[test]
fn kvm_virtio_rng_is_reset_by_a_reboot() {
    let run = run_guest("virtio-rng reset virtio-rng", &["--rng"]);
    run.assert_exit(0);
    assert_eq!(
        run.stdout.matches("TEST virtio-rng PASS").count(),
        2,
        "{run}"
    );
}

#[test]
fn kvm_rng_reads_the_source_it_is_given() {
    let dir = temp_dir("rng-source");
    let source = dir.join("entropy");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let option = format!("src={}", source.display());

    let run = run_guest("virtio-rng", &["--rng", &option]);

    run.assert_exit(0);
    // The guest prints the first 4 bytes of its two 64-byte requests: bytes 0..4 and 64..68
    // of the file.
    assert!(run.stdout.contains("first=030a1118/c3cad1d8"), "{run}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_a_missing_rng_source_is_named() {
    require_kvm();
    let run = oxvmm(
        &[
            "--kernel",
            guests::OXGUEST_PATH,
            "--rng",
            "src=/nonexistent/entropy",
        ],
        Duration::from_secs(30),
    );
    run.assert_exit(1);
    assert!(
        run.stderr
            .contains("--rng src=/nonexistent/entropy: cannot open"),
        "{run}"
    );
}

fn ioeventfd_notifications(run: &common::Run) -> usize {
    run.stderr.matches("notified through its ioeventfd").count()
}

#[test]
fn kvm_queue_notifications_arrive_through_ioeventfd() {
    let run = run_guest("virtio-rng virtio-rng", &["--rng", "--log-level", "debug"]);
    run.assert_exit(0);
    assert_eq!(
        run.stdout.matches("TEST virtio-rng PASS").count(),
        2,
        "{run}"
    );
    // The driver kicks once per scenario; KVM signalled the eventfd both times.
    assert_eq!(ioeventfd_notifications(&run), 2, "{run}");
}

#[test]
fn kvm_ioeventfds_follow_a_moved_bar() {
    // The guest moves the BARs, then kicks at once: the vCPU that moved them re-registered
    // before it ran the guest again, so both kicks reach the eventfds at the new address.
    let run = run_guest(
        "pci-bars=reassign pci virtio-rng virtio-rng",
        &["--rng", "--log-level", "debug"],
    );
    run.assert_exit(0);
    assert!(run.stdout.contains(":placed"), "{run}");
    assert_eq!(
        run.stdout.matches("TEST virtio-rng PASS").count(),
        2,
        "{run}"
    );
    assert_eq!(ioeventfd_notifications(&run), 2, "{run}");
}
