#include "virtio_console.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "console.h"
#include "io.h"
#include "pci.h"
#include "scenarios.h"
#include "string.h"
#include "timer.h"
#include "virtio.h"

#define RX_QUEUE 0
#define TX_QUEUE 1
#define TX_TIMEOUT_US 2000000u
#define TX_MAX 200
#define WHY_MAX 160

struct console_run {
	struct virtio_dev dev;
	struct virtq rx;
	struct virtq tx;
	int rx_head[CONSOLE_RX_BUFFERS]; /* head of each posted receive buffer */
	char line[CONSOLE_LINE_MAX + 1];
	uint32_t line_len;
	char why[WHY_MAX];
};

static struct virtq_mem rx_ring;
static struct virtq_mem tx_ring;
static uint8_t rx_bytes[CONSOLE_RX_BUFFERS][CONSOLE_RX_BUFFER_BYTES] __attribute__((aligned(64)));
static char tx_bytes[TX_MAX] __attribute__((aligned(64)));
static struct console_run run;

static bool fail_with_device_error(struct console_run *r)
{
	ksnprintf(r->why, sizeof(r->why), "%s", r->dev.error);
	return false;
}

static bool setup(struct console_run *r, const struct pci_device *pci)
{
	bool ok = virtio_open(&r->dev, pci) && virtio_negotiate(&r->dev, 0) &&
		  virtq_init(&r->dev, &r->rx, RX_QUEUE, &rx_ring) &&
		  virtq_init(&r->dev, &r->tx, TX_QUEUE, &tx_ring);
	if (!ok)
		return fail_with_device_error(r);
	virtio_driver_ok(&r->dev);
	char bdf[8];
	pci_format_bdf(pci->bdf, bdf);
	kprintf("oxguest: virtio-console %s features=0x%llx queue_size=%u/%u\n", bdf,
		(unsigned long long)r->dev.features, r->rx.size, r->tx.size);
	return true;
}

/* Sends len bytes of text and waits until the device returns the buffer. */
static bool transmit(struct console_run *r, const char *text, uint32_t len)
{
	if (len > TX_MAX)
		len = TX_MAX;
	memcpy(tx_bytes, text, len);
	struct virtq_buf buf = {tx_bytes, len, false};
	int head = virtq_add(&r->tx, &buf, 1);
	if (head < 0) {
		ksnprintf(r->why, sizeof(r->why), "no free transmit descriptor");
		return false;
	}
	virtq_kick(&r->tx);
	struct virtq_completion done;
	enum virtq_poll result = virtq_wait_used(&r->dev, &r->tx, TX_TIMEOUT_US, &done);
	if (result == VIRTQ_TIMEOUT) {
		ksnprintf(r->why, sizeof(r->why),
			  "transmit not returned within %u ms (device status 0x%02x)",
			  TX_TIMEOUT_US / 1000, virtio_status(&r->dev));
		return false;
	}
	if (result != VIRTQ_USED || done.head != (uint16_t)head)
		return fail_with_device_error(r);
	return true;
}

static bool post_rx(struct console_run *r, int i)
{
	struct virtq_buf buf = {rx_bytes[i], CONSOLE_RX_BUFFER_BYTES, true};
	r->rx_head[i] = virtq_add(&r->rx, &buf, 1);
	if (r->rx_head[i] < 0) {
		ksnprintf(r->why, sizeof(r->why), "no free receive descriptor");
		return false;
	}
	return true;
}

/* Adds received bytes to the line; true once the line is complete. */
static bool take_bytes(struct console_run *r, const uint8_t *bytes, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++) {
		char c = (char)bytes[i];
		if (c == '\n' || c == '\r') {
			if (r->line_len > 0)
				return true;
			continue;
		}
		if (r->line_len < CONSOLE_LINE_MAX)
			r->line[r->line_len++] = (c >= 0x20 && c < 0x7f) ? c : '?';
	}
	return false;
}

static int rx_index_of(const struct console_run *r, uint16_t head)
{
	for (int i = 0; i < CONSOLE_RX_BUFFERS; i++) {
		if (r->rx_head[i] == head)
			return i;
	}
	return -1;
}

static bool receive_line(struct console_run *r)
{
	struct deadline d;
	deadline_start(&d, CONSOLE_ECHO_TIMEOUT_US);
	for (;;) {
		struct virtq_completion done;
		enum virtq_poll result = virtq_take_used(&r->dev, &r->rx, &done);
		if (result == VIRTQ_BAD)
			return fail_with_device_error(r);
		if (result == VIRTQ_USED) {
			int i = rx_index_of(r, done.head);
			if (i < 0 || done.len > CONSOLE_RX_BUFFER_BYTES) {
				ksnprintf(r->why, sizeof(r->why),
					  "receive completion head %u len %u is not a posted buffer",
					  done.head, done.len);
				return false;
			}
			/* The device wrote the buffer behind the compiler's back. */
			compiler_barrier();
			bool complete = take_bytes(r, rx_bytes[i], done.len);
			if (complete)
				return true;
			if (!post_rx(r, i))
				return false;
			virtq_kick(&r->rx);
			continue;
		}
		if (deadline_expired(&d)) {
			r->line[r->line_len] = '\0';
			if (r->line_len > 0)
				ksnprintf(r->why, sizeof(r->why), "timeout (no line end after \"%s\")",
					  r->line);
			else
				ksnprintf(r->why, sizeof(r->why), "timeout");
			return false;
		}
	}
}

static bool open_console(struct console_run *r, const char *name, unsigned pci_flags)
{
	memset(r, 0, sizeof(*r));
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_CONSOLE, "virtio-console");
	if (pci == NULL)
		return false;
	if (!setup(r, pci)) {
		if (r->dev.common != 0)
			virtio_reset(&r->dev);
		scenario_fail(name, r->why);
		return false;
	}
	return true;
}

static void finish(struct console_run *r, const char *name, bool ok, const char *details)
{
	virtio_reset(&r->dev);
	if (ok)
		scenario_pass(name, details);
	else
		scenario_fail(name, r->why);
}

void run_console_write(const char *name, unsigned pci_flags)
{
	struct console_run *r = &run;
	if (!open_console(r, name, pci_flags))
		return;
	uint32_t len = (uint32_t)strlen(CONSOLE_HELLO_LINE);
	bool ok = transmit(r, CONSOLE_HELLO_LINE, len);
	char details[24];
	ksnprintf(details, sizeof(details), "bytes=%u", len);
	finish(r, name, ok, details);
}

void run_console_echo(const char *name, unsigned pci_flags)
{
	struct console_run *r = &run;
	if (!open_console(r, name, pci_flags))
		return;
	bool ok = true;
	for (int i = 0; ok && i < CONSOLE_RX_BUFFERS; i++)
		ok = post_rx(r, i);
	if (ok) {
		virtq_kick(&r->rx);
		ok = transmit(r, CONSOLE_WAITING_LINE, (uint32_t)strlen(CONSOLE_WAITING_LINE)) &&
		     receive_line(r);
	}
	char reply[TX_MAX];
	char details[CONSOLE_LINE_MAX + 8];
	if (ok) {
		r->line[r->line_len] = '\0';
		int n = ksnprintf(reply, sizeof(reply), "echo: %s\n", r->line);
		ok = transmit(r, reply, (uint32_t)n);
	}
	ksnprintf(details, sizeof(details), "got=%s", r->line);
	finish(r, name, ok, details);
}
