/*
 * The blk-snapshot scenario: a virtio-blk read that only the device writes into guest memory,
 * between two snapshots, and a check after a restore that its data is there. It proves that
 * diff snapshots carry the pages devices write, which KVM's dirty log (the guest's own writes)
 * does not see.
 *
 *   1. clears a page-aligned 4 KiB buffer, prints "oxguest: blk-snapshot ready" and waits for
 *      the ACPI power button (the host takes the full snapshot, then presses it);
 *   2. reads sectors 0-7 (blk_read_pattern) into the buffer without touching it, prints
 *      "oxguest: blk-snapshot read" and waits for the button again (the host takes the diff
 *      snapshot, restores it and presses the button in the restored VM);
 *   3. compares the buffer with the pattern.
 * PASS "sectors=8". FAIL as blk-read, "timeout waiting for the power button (<step>)", or
 * "after the snapshot: sector S byte I is 0x.., expected 0x..".
 */
#ifndef OXGUEST_BLK_SNAPSHOT_H
#define OXGUEST_BLK_SNAPSHOT_H

void run_blk_snapshot(const char *name, unsigned pci_flags);

#endif
