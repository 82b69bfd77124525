/*
 * The virtio-msix scenario: interrupts of a virtio device through MSI-X (virtio 1.2, 4.1.4.5;
 * PCI 3.0, 6.8.2), on the virtio-rng device. It enables MSI-X, points queue 0 at table entry 1
 * (a fixed, edge-triggered message with vector MSIX_TEST_VECTOR to this CPU's local APIC),
 * then:
 *   1. with entry 1 masked, has one request answered: the PBA bit of vector 1 must be set and
 *      nothing may reach the local APIC;
 *   2. unmasks entry 1: the pending message must arrive (local APIC IRR) and the PBA bit clear;
 *   3. has another request answered with the entry unmasked: a second message must arrive.
 * Each arrival is accepted through a one-entry IDT (sti; hlt; cli) whose handler counts it and
 * writes the local APIC's EOI. Afterwards the device is reset and MSI-X disabled again.
 * PASS "vector=0x41 pending=yes delivered=2". pci_flags: pci_scan's flags.
 */
#ifndef OXGUEST_VIRTIO_MSIX_H
#define OXGUEST_VIRTIO_MSIX_H

#define MSIX_TEST_VECTOR 0x41

void run_virtio_msix(const char *name, unsigned pci_flags);

#endif
