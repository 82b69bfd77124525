#include "virtio_net.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmdline.h"
#include "console.h"
#include "io.h"
#include "pci.h"
#include "scenarios.h"
#include "string.h"
#include "timer.h"
#include "usermode.h"
#include "virtio.h"

#define RX_QUEUE 0
#define TX_QUEUE 1
#define VIRTIO_NET_F_MAC (1ULL << 5)
#define HDR_LEN 12 /* virtio_net_hdr_v1 */
#define ETH_HDR_LEN 14
#define ETH_MAX_FRAME 1514
#define SLOT_BYTES 1536 /* header + the largest untagged frame, rounded up */
#define TX_TIMEOUT_US 2000000u
#define WHY_MAX 160
#define MAC_TEXT 18
#define BENCH_SLOTS 32
#define BENCH_FRAMES_DEFAULT 200000
#define BENCH_FRAMES_MAX 100000000ULL
#define BENCH_BYTES_DEFAULT 60
#define BENCH_BYTES_MIN 60
#define NS_PER_US 1000ULL

struct net_run {
	struct virtio_dev dev;
	struct virtq rx;
	struct virtq tx;
	uint8_t mac[6];
	bool has_mac;
	char mac_text[MAC_TEXT];
	int rx_head[NET_RX_BUFFERS];
	char why[WHY_MAX];
	/* net-bench */
	uint64_t frames;
	uint32_t frame_bytes;
	uint64_t started;
	uint64_t completed;
	uint32_t in_flight;
	uint64_t tsc_start;
	uint64_t tsc_end;
};

static struct virtq_mem rx_ring;
static struct virtq_mem tx_ring;
static uint8_t slots[BENCH_SLOTS][SLOT_BYTES] __attribute__((aligned(64)));
static struct net_run run;

static bool set_why(struct net_run *r, const char *text)
{
	ksnprintf(r->why, sizeof(r->why), "%s", text);
	return false;
}

static bool read_mac(struct net_run *r)
{
	r->has_mac = (r->dev.features & VIRTIO_NET_F_MAC) != 0;
	for (int i = 0; i < 6 && r->has_mac; i++) {
		uint64_t byte;
		if (!virtio_config_read(&r->dev, (uint32_t)i, 1, &byte))
			return set_why(r, r->dev.error);
		r->mac[i] = (uint8_t)byte;
	}
	if (!r->has_mac)
		r->mac[0] = 0x02;
	ksnprintf(r->mac_text, sizeof(r->mac_text), "%02x:%02x:%02x:%02x:%02x:%02x", r->mac[0],
		  r->mac[1], r->mac[2], r->mac[3], r->mac[4], r->mac[5]);
	return true;
}

static bool open_net(struct net_run *r, const char *name, unsigned pci_flags)
{
	memset(r, 0, sizeof(*r));
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_NET, "virtio-net");
	if (pci == NULL)
		return false;
	bool ok = virtio_open(&r->dev, pci) && virtio_negotiate(&r->dev, VIRTIO_NET_F_MAC) &&
		  virtq_init(&r->dev, &r->rx, RX_QUEUE, &rx_ring) &&
		  virtq_init(&r->dev, &r->tx, TX_QUEUE, &tx_ring);
	if (!ok)
		set_why(r, r->dev.error);
	if (ok)
		ok = read_mac(r);
	if (!ok) {
		if (r->dev.common != 0)
			virtio_reset(&r->dev);
		scenario_fail(name, r->why);
		return false;
	}
	virtio_driver_ok(&r->dev);
	char bdf[8];
	pci_format_bdf(pci->bdf, bdf);
	kprintf("oxguest: virtio-net %s features=0x%llx queue_size=%u/%u mac=%s\n", bdf,
		(unsigned long long)r->dev.features, r->rx.size, r->tx.size,
		r->has_mac ? r->mac_text : "none");
	return true;
}

static void finish(struct net_run *r, const char *name, bool ok, const char *details)
{
	virtio_reset(&r->dev);
	if (ok)
		scenario_pass(name, details);
	else
		scenario_fail(name, r->why);
}

/* Header (all zero: no offloads) and an Ethernet frame of frame_bytes in slot. */
static void build_frame(const struct net_run *r, uint8_t *slot, uint32_t seq, uint32_t frame_bytes)
{
	memset(slot, 0, HDR_LEN);
	uint8_t *eth = slot + HDR_LEN;
	memset(eth, 0xff, 6);
	memcpy(eth + 6, r->mac, 6);
	eth[12] = NET_ETHERTYPE >> 8;
	eth[13] = NET_ETHERTYPE & 0xff;
	for (uint32_t j = 0; j + ETH_HDR_LEN < frame_bytes; j++)
		eth[ETH_HDR_LEN + j] = (uint8_t)(seq * 17 + j);
}

/* --- net-tx --- */

static bool send_and_wait(struct net_run *r, uint8_t *slot, uint32_t len)
{
	struct virtq_buf buf = {slot, len, false};
	int head = virtq_add(&r->tx, &buf, 1);
	if (head < 0)
		return set_why(r, "no free transmit descriptor");
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
		return set_why(r, r->dev.error);
	return true;
}

void run_net_tx(const char *name, unsigned pci_flags)
{
	struct net_run *r = &run;
	if (!open_net(r, name, pci_flags))
		return;
	bool ok = true;
	uint32_t frame_bytes = ETH_HDR_LEN + NET_PAYLOAD_LEN;
	for (uint32_t seq = 0; ok && seq < NET_TX_FRAMES; seq++) {
		build_frame(r, slots[0], seq, frame_bytes);
		ok = send_and_wait(r, slots[0], HDR_LEN + frame_bytes);
	}
	char details[48];
	ksnprintf(details, sizeof(details), "frames=%u mac=%s", NET_TX_FRAMES, r->mac_text);
	finish(r, name, ok, details);
}

/* --- net-rx --- */

static uint64_t fnv1a64(const uint8_t *bytes, uint32_t len)
{
	uint64_t hash = 0xcbf29ce484222325ULL;
	for (uint32_t i = 0; i < len; i++) {
		hash ^= bytes[i];
		hash *= 0x00000100000001b3ULL;
	}
	return hash;
}

static bool post_rx(struct net_run *r, int i)
{
	struct virtq_buf buf = {slots[i], SLOT_BYTES, true};
	r->rx_head[i] = virtq_add(&r->rx, &buf, 1);
	if (r->rx_head[i] < 0)
		return set_why(r, "no free receive descriptor");
	return true;
}

static int rx_slot_of(const struct net_run *r, uint16_t head)
{
	for (int i = 0; i < NET_RX_BUFFERS; i++) {
		if (r->rx_head[i] == head)
			return i;
	}
	return -1;
}

/*
 * Waits up to NET_RX_TIMEOUT_US for a frame of NET_ETHERTYPE, posting the buffers of others
 * again (counted in *skipped); gives its slot and length (header included).
 */
static bool wait_test_frame(struct net_run *r, uint32_t *skipped, int *slot, uint32_t *len)
{
	struct deadline d;
	deadline_start(&d, NET_RX_TIMEOUT_US);
	for (;;) {
		struct virtq_completion done;
		enum virtq_poll result = virtq_take_used(&r->dev, &r->rx, &done);
		if (result == VIRTQ_BAD)
			return set_why(r, r->dev.error);
		if (result == VIRTQ_EMPTY) {
			if (deadline_expired(&d)) {
				ksnprintf(r->why, sizeof(r->why), "timeout (skipped=%u)", *skipped);
				return false;
			}
			continue;
		}
		int i = rx_slot_of(r, done.head);
		if (i < 0 || done.len > SLOT_BYTES) {
			ksnprintf(r->why, sizeof(r->why),
				  "receive completion head %u len %u is not a posted buffer", done.head,
				  done.len);
			return false;
		}
		compiler_barrier();
		const uint8_t *eth = slots[i] + HDR_LEN;
		bool ours = done.len >= HDR_LEN + ETH_HDR_LEN &&
			    eth[12] == (NET_ETHERTYPE >> 8) && eth[13] == (NET_ETHERTYPE & 0xff);
		if (ours) {
			*slot = i;
			*len = done.len;
			return true;
		}
		(*skipped)++;
		if (!post_rx(r, i))
			return false;
		virtq_kick(&r->rx);
	}
}

/* Waits for a frame of NET_ETHERTYPE; fills details. */
static bool receive_test_frame(struct net_run *r, char *details, int details_size)
{
	uint32_t skipped = 0;
	int i;
	uint32_t len;
	if (!wait_test_frame(r, &skipped, &i, &len))
		return false;
	const uint8_t *eth = slots[i] + HDR_LEN;
	uint32_t payload = len - HDR_LEN - ETH_HDR_LEN;
	ksnprintf(details, details_size, "len=%u fnv1a=0x%016llx skipped=%u", payload,
		  (unsigned long long)fnv1a64(eth + ETH_HDR_LEN, payload), skipped);
	return true;
}

void run_net_rx(const char *name, unsigned pci_flags)
{
	struct net_run *r = &run;
	if (!open_net(r, name, pci_flags))
		return;
	bool ok = true;
	for (int i = 0; ok && i < NET_RX_BUFFERS; i++)
		ok = post_rx(r, i);
	char details[80] = "";
	if (ok) {
		virtq_kick(&r->rx);
		kprintf("%s\n", NET_RX_WAITING);
		ok = receive_test_frame(r, details, sizeof(details));
	}
	finish(r, name, ok, details);
}

/* --- net-echo --- */

/* Sends the frame of `len` bytes in rx slot i back to its sender, then posts the slot again. */
static bool echo_one(struct net_run *r, int i, uint32_t len)
{
	uint8_t *out = slots[NET_RX_BUFFERS];
	const uint8_t *in = slots[i];
	memset(out, 0, HDR_LEN);
	memcpy(out + HDR_LEN, in + HDR_LEN + 6, 6);
	memcpy(out + HDR_LEN + 6, r->mac, 6);
	memcpy(out + HDR_LEN + 12, in + HDR_LEN + 12, len - HDR_LEN - 12);
	if (!send_and_wait(r, out, len) || !post_rx(r, i))
		return false;
	virtq_kick(&r->rx);
	return true;
}

static bool echo_frames_option(struct net_run *r, const struct boot_info *info, uint64_t *frames)
{
	uint64_t value;
	const char *text;
	enum cmdline_option o =
		cmdline_u64(info->cmdline, "echo-frames", NET_ECHO_FRAMES_MAX, &value, &text);
	if (o == OPTION_INVALID || (o == OPTION_SET && value == 0))
		return set_why(r, "bad echo-frames= value (decimal, 1 to 10000)");
	*frames = o == OPTION_SET ? value : NET_ECHO_FRAMES_DEFAULT;
	return true;
}

void run_net_echo(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	struct net_run *r = &run;
	if (!open_net(r, name, pci_flags))
		return;
	uint64_t frames = 0;
	bool ok = echo_frames_option(r, info, &frames);
	for (int i = 0; ok && i < NET_RX_BUFFERS; i++)
		ok = post_rx(r, i);
	if (ok) {
		virtq_kick(&r->rx);
		kprintf("%s\n", NET_ECHO_WAITING);
	}
	uint32_t skipped = 0;
	uint64_t echoed = 0;
	while (ok && echoed < frames) {
		int i;
		uint32_t len;
		ok = wait_test_frame(r, &skipped, &i, &len) && echo_one(r, i, len);
		if (ok) {
			echoed++;
			kprintf("%s%llu\n", NET_ECHO_ECHOED, (unsigned long long)echoed);
		}
	}
	char details[48];
	ksnprintf(details, sizeof(details), "frames=%llu skipped=%u", (unsigned long long)echoed,
		  skipped);
	finish(r, name, ok, details);
}

/* --- net-bench --- */

static bool bench_start_one(struct net_run *r)
{
	uint32_t slot = (uint32_t)(r->started % BENCH_SLOTS);
	struct virtq_buf buf = {slots[slot], HDR_LEN + r->frame_bytes, false};
	if (virtq_add(&r->tx, &buf, 1) < 0)
		return set_why(r, "no free transmit descriptor");
	r->started++;
	r->in_flight++;
	return true;
}

static bool bench_complete_one(struct net_run *r)
{
	struct tsc_deadline d;
	tsc_deadline_start(&d, TX_TIMEOUT_US);
	for (;;) {
		struct virtq_completion done;
		enum virtq_poll result = virtq_take_used(&r->dev, &r->tx, &done);
		if (result == VIRTQ_USED) {
			r->completed++;
			r->in_flight--;
			return true;
		}
		if (result == VIRTQ_BAD)
			return set_why(r, r->dev.error);
		if (tsc_deadline_expired(&d))
			return set_why(r, "a transmit was not returned within 2000 ms");
	}
}

static uint64_t bench_at_cpl3(void *arg)
{
	struct net_run *r = arg;
	uint32_t depth = r->tx.size < BENCH_SLOTS ? r->tx.size : BENCH_SLOTS;
	r->tsc_start = rdtsc();
	while (r->completed < r->frames) {
		bool added = false;
		while (r->started < r->frames && r->in_flight < depth) {
			if (!bench_start_one(r))
				return 0;
			added = true;
		}
		if (added)
			virtq_kick(&r->tx);
		if (!bench_complete_one(r))
			return 0;
		/* Take every completion already there: the next refill is one batch, one kick. */
		struct virtq_completion done;
		while (virtq_take_used(&r->dev, &r->tx, &done) == VIRTQ_USED) {
			r->completed++;
			r->in_flight--;
		}
	}
	r->tsc_end = rdtsc();
	return 1;
}

static bool bench_options(struct net_run *r, const struct boot_info *info)
{
	uint64_t value;
	const char *text;
	enum cmdline_option o =
		cmdline_u64(info->cmdline, "bench-frames", BENCH_FRAMES_MAX, &value, &text);
	if (o == OPTION_INVALID || (o == OPTION_SET && value == 0))
		return set_why(r, "bad bench-frames= value (decimal, 1 to 100000000)");
	r->frames = o == OPTION_SET ? value : BENCH_FRAMES_DEFAULT;
	o = cmdline_u64(info->cmdline, "bench-frame-bytes", ETH_MAX_FRAME, &value, &text);
	if (o == OPTION_INVALID || (o == OPTION_SET && value < BENCH_BYTES_MIN))
		return set_why(r, "bad bench-frame-bytes= value (decimal, 60 to 1514)");
	r->frame_bytes = o == OPTION_SET ? (uint32_t)value : BENCH_BYTES_DEFAULT;
	if (tsc_calibrate() == 0)
		return set_why(r, "the TSC is not calibrated (no PM timer or no TSC)");
	return true;
}

void run_net_bench(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	struct net_run *r = &run;
	if (!open_net(r, name, pci_flags))
		return;
	bool ok = bench_options(r, info);
	for (uint32_t i = 0; ok && i < BENCH_SLOTS; i++)
		build_frame(r, slots[i], i, r->frame_bytes);
	if (ok)
		ok = usermode_call(name, bench_at_cpl3, r) == 1;
	char details[80] = "";
	if (ok) {
		uint64_t ns = (r->tsc_end - r->tsc_start) * NS_PER_US / tsc_ticks_per_us();
		ksnprintf(details, sizeof(details), "frames=%llu bytes=%u ns=%llu",
			  (unsigned long long)r->frames, r->frame_bytes, (unsigned long long)ns);
	}
	finish(r, name, ok, details);
}
