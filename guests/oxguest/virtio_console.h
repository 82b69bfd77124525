/*
 * virtio-console scenarios: find the first virtio console function (1af4:1043, or a
 * transitional 1af4:1003 through its modern interface), use its single port (receiveq 0,
 * transmitq 1; no features beyond VERSION_1), polled.
 *
 * console-write: transmits CONSOLE_HELLO_LINE and waits for the device to return the buffer.
 *   PASS "bytes=<n>".
 * console-echo: posts CONSOLE_RX_BUFFERS receive buffers, transmits CONSOLE_WAITING_LINE,
 *   reads one line from the receive queue for up to CONSOLE_ECHO_TIMEOUT_US (line rules as
 *   serial-echo: ends at '\n' or '\r', line ends before any text skipped, bytes outside
 *   printable ASCII become '?', the first CONSOLE_LINE_MAX bytes kept), transmits
 *   "echo: <line>\n" and passes with "got=<line>".
 * Both print "oxguest: virtio-console <bdf> features=0x<negotiated> queue_size=<rx>/<tx>" first.
 */
#ifndef OXGUEST_VIRTIO_CONSOLE_H
#define OXGUEST_VIRTIO_CONSOLE_H

#define CONSOLE_HELLO_LINE "oxguest: hello from virtio-console\n"
#define CONSOLE_WAITING_LINE "oxguest: virtio-console waiting for a line\n"
#define CONSOLE_ECHO_TIMEOUT_US 10000000u
#define CONSOLE_LINE_MAX 120
#define CONSOLE_RX_BUFFERS 4
#define CONSOLE_RX_BUFFER_BYTES 64

void run_console_write(const char *name, unsigned pci_flags);
void run_console_echo(const char *name, unsigned pci_flags);

#endif
