/*
 * virtio-vsock (virtio 1.2, 5.10) driver and its scenarios: a polled stream-socket transport
 * on queues 0 (rx), 1 (tx) and 2 (event), with credit-based flow control.
 *
 *   vsock-echo     listens on ports vsock-port .. vsock-port + vsock-ports - 1 and echoes every
 *                  byte a host connection sends; passes after vsock-conns connections ended
 *                  (0: serves until the machine stops). Its buffers are in scratch memory.
 *   vsock-connect  connects to host ports vsock-port .. + vsock-ports - 1 in turn, sends one
 *                  line, prints the line the host answers, closes.
 */
#ifndef OXGUEST_VIRTIO_VSOCK_H
#define OXGUEST_VIRTIO_VSOCK_H

#include "bootinfo.h"

/* The host's CID. */
#define VSOCK_HOST_CID 2
/* Receive buffer the guest advertises per connection. */
#define VSOCK_GUEST_BUF_ALLOC 65536
/* Payload bytes per rx and tx buffer. */
#define VSOCK_BUF_PAYLOAD 4096
/* Default first port (vsock-port=). */
#define VSOCK_DEFAULT_PORT 5000
/* Most ports (vsock-ports=) and connections at once. */
#define VSOCK_MAX_PORTS 4
#define VSOCK_MAX_CONNS 8
/* First guest-side port of vsock-connect's connections. */
#define VSOCK_CONNECT_LOCAL_PORT 49152
/* Longest reply line vsock-connect keeps (bytes outside printable ASCII become '?'). */
#define VSOCK_REPLY_MAX 120

void run_vsock_echo(const char *name, const struct boot_info *info, unsigned pci_flags);
void run_vsock_connect(const char *name, const char *cmdline, unsigned pci_flags);

#endif
