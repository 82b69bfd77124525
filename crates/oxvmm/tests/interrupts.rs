//! MSI-X on real KVM: a virtio device's interrupts leave through irqfds on KVM GSI routes
//! (never `KVM_SIGNAL_MSI`), masked vectors wait in the PBA and arrive when unmasked.

mod common;

use std::time::Duration;

use common::{LiveVmm, require_kvm, temp_dir};
use vmm_api::Client;

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn kvm_virtio_msix_interrupts_go_through_irqfds() {
    // Arrange: virtio-rng, the MSI-X scenario, then a wait so the counters can be read
    require_kvm();
    let dir = temp_dir("msix-irqfd");
    let socket = dir.join("api.sock");
    let mut vmm = LiveVmm::spawn(&[
        "--kernel",
        guests::OXGUEST_PATH,
        "--cmdline",
        "virtio-msix wait-shutdown",
        "--rng",
        "--api-socket",
        socket.to_str().unwrap(),
    ]);

    // Act
    let line = vmm.expect_line(|l| l.starts_with("TEST virtio-msix "), TIMEOUT);
    vmm.expect_line(|l| l.contains("waiting for the power button"), TIMEOUT);
    let client = Client::wait_for_socket(&socket, TIMEOUT).expect("API socket");
    let counters = client.counters().unwrap();
    client.power_off().unwrap();

    // Assert: both deliveries (the pending one on unmask and the direct one) were eventfd
    // writes; the IOAPIC path is separate
    assert_eq!(
        line,
        "TEST virtio-msix PASS vector=0x41 pending=yes delivered=2",
        "{}",
        vmm.stderr()
    );
    let interrupts = &counters.interrupts;
    assert_eq!(interrupts["msix_irqfd"], 2, "{counters:?}");
    assert_eq!(interrupts["msix_signal_msi"], 0, "{counters:?}");
    assert_eq!(vmm.wait(TIMEOUT), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kvm_virtio_msix_twice_in_one_boot_reuses_the_routes() {
    // The second run re-enables MSI-X on the same function: routes come back, same irqfds.
    require_kvm();
    let run = common::run_guest("virtio-msix virtio-msix virtio-rng", &["--rng"]);

    run.assert_exit(0);
    let passes = run
        .stdout
        .lines()
        .filter(|l| *l == "TEST virtio-msix PASS vector=0x41 pending=yes delivered=2")
        .count();
    assert_eq!(passes, 2, "{run}");
    run.passed("virtio-rng");
}
