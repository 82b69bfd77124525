//! A real Linux guest (QEMU TCG, `vhost-user-rng-pci`) reads entropy served by
//! `oxvmm-vhost-user rng`, twice in a row on the same back-end process: the second QEMU
//! reconnects to the socket the first one left.

mod common;

use common::{Backend, Guest, TempDir, initramfs, vhost_user_device};

const CHECKS: &str = r#"
echo "RESULT current=$(cat /sys/class/misc/hw_random/rng_current)"
echo "RESULT first=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | hexdump -v -e '/1 "%02x"')"
echo "RESULT second=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | hexdump -v -e '/1 "%02x"')"
"#;

fn check_guest(guest: &Guest) {
    guest.assert_modules_loaded();
    assert!(
        guest.result("current").starts_with("virtio_rng"),
        "{}",
        guest.console
    );
    let (first, second) = (guest.result("first"), guest.result("second"));
    assert_eq!(first.len(), 64, "32 bytes in hex: {first:?}");
    assert_eq!(second.len(), 64, "32 bytes in hex: {second:?}");
    assert_ne!(first, second, "two reads of /dev/hwrng gave the same bytes");
    assert_ne!(first, "0".repeat(64));
}

#[test]
fn a_linux_guest_reads_entropy_and_a_second_guest_reconnects() {
    // Arrange
    let dir = TempDir::new("rng");
    let mut backend = Backend::start(&dir, "rng", "rng", "src=/dev/urandom");
    let initrd = dir.join("initramfs.cpio");
    initramfs(&initrd, CHECKS);
    let devices = vhost_user_device("c0", &backend.socket, "vhost-user-rng-pci", "");

    // Act
    let first_guest = Guest::run(&initrd, &devices);
    let second_guest = Guest::run(&initrd, &devices);

    // Assert
    eprintln!(
        "{}\n[back-end log]\n{}",
        second_guest.console,
        backend.log()
    );
    check_guest(&first_guest);
    check_guest(&second_guest);
    assert_ne!(first_guest.result("first"), second_guest.result("first"));
    let log = backend.log();
    assert_eq!(log.matches("front-end disconnected").count(), 2, "{log}");
    backend.assert_alive();
}
