/*
 * virtio-net scenarios: find the first virtio network function (1af4:1041, or a transitional
 * 1af4:1000 through its modern interface), accept only MAC (no offloads, no mergeable
 * buffers: every receive buffer holds a whole frame), polled. Each prints first
 *   oxguest: virtio-net <bdf> features=0x<negotiated> queue_size=<rx>/<tx> mac=<mac>
 * (mac=none without the MAC feature; frames then carry 02:00:00:00:00:00) and resets the
 * device when done.
 *
 * net-tx: sends NET_TX_FRAMES broadcast frames, EtherType NET_ETHERTYPE, from the card's MAC,
 *   each with NET_PAYLOAD_LEN payload bytes: byte j of frame s is (s * 17 + j) & 0xff. Waits
 *   for each to come back used. PASS "frames=4 mac=<mac>".
 * net-rx: posts NET_RX_BUFFERS buffers, prints NET_RX_WAITING, takes frames for up to 10 s
 *   until one has EtherType NET_ETHERTYPE (others are counted and their buffer posted again).
 *   PASS "len=<payload bytes> fnv1a=0x<16 hex> skipped=<n>": 64-bit FNV-1a of the payload
 *   (everything after the 14-byte Ethernet header).
 * net-echo: posts NET_RX_BUFFERS buffers, prints NET_ECHO_WAITING, then echo-frames=N times
 *   (default NET_ECHO_FRAMES_DEFAULT, 1 to NET_ECHO_FRAMES_MAX) waits up to 10 s for a frame
 *   of NET_ETHERTYPE (as net-rx), sends it back to its source MAC from the card's MAC (same
 *   EtherType and payload), waits for the transmit to be used and prints
 *   NET_ECHO_ECHOED<count>. PASS "frames=<n> skipped=<n>".
 * net-bench: at CPL3, sends bench-frames=N (default 200000, 1 to 10^8) frames of
 *   bench-frame-bytes=B (60 to 1514, default 60) as fast as the queue takes them, up to the
 *   queue size in flight, timed on the TSC. PASS "frames=<n> bytes=<frame bytes> ns=<n>".
 */
#ifndef OXGUEST_VIRTIO_NET_H
#define OXGUEST_VIRTIO_NET_H

#include "bootinfo.h"

#define NET_ETHERTYPE 0x88B5
#define NET_TX_FRAMES 4
#define NET_PAYLOAD_LEN 64
#define NET_RX_BUFFERS 4
#define NET_RX_WAITING "oxguest: net-rx waiting for a frame"
#define NET_RX_TIMEOUT_US 10000000u
#define NET_ECHO_WAITING "oxguest: net-echo waiting for frames"
#define NET_ECHO_ECHOED "oxguest: net-echo echoed "
#define NET_ECHO_FRAMES_DEFAULT 3
#define NET_ECHO_FRAMES_MAX 10000

void run_net_tx(const char *name, unsigned pci_flags);
void run_net_rx(const char *name, unsigned pci_flags);
void run_net_echo(const char *name, const struct boot_info *info, unsigned pci_flags);
void run_net_bench(const char *name, const struct boot_info *info, unsigned pci_flags);

#endif
