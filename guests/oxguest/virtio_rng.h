/*
 * The virtio-rng scenario: finds the virtio entropy device (1af4:1044, or a transitional
 * 1af4:1005), sets up its one request queue, asks for RNG_REQUESTS buffers of RNG_REQUEST_BYTES
 * at once and checks that every byte arrives (a short answer is topped up with another
 * request for the rest), that no buffer is all zero and that the buffers differ.
 * PASS "bytes=128 distinct=yes". pci_flags: pci_scan's flags (first scan of a boot only).
 */
#ifndef OXGUEST_VIRTIO_RNG_H
#define OXGUEST_VIRTIO_RNG_H

#include <stdbool.h>

#define RNG_REQUESTS 2
#define RNG_REQUEST_BYTES 64

void run_virtio_rng(const char *name, unsigned pci_flags);

#endif
