#include "virtio_rng.h"

#include <stddef.h>
#include <stdint.h>

#include "console.h"
#include "io.h"
#include "pci.h"
#include "scenarios.h"
#include "string.h"
#include "virtio.h"

/* Per wait for a completion; the device answers from the host's entropy source at once. */
#define RNG_TIMEOUT_US 2000000u
/* Rounds of requests (the first, then top-ups of short answers) before giving up. */
#define RNG_MAX_ROUNDS 8
#define RNG_QUEUE 0
#define WHY_MAX 160
#define NONE_IN_FLIGHT (-1)

_Static_assert(RNG_REQUESTS == 2, "the checks and messages compare exactly two buffers");

struct rng_run {
	struct virtio_dev dev;
	struct virtq queue;
	uint32_t filled[RNG_REQUESTS];
	int in_flight[RNG_REQUESTS]; /* head of the buffer's request, or NONE_IN_FLIGHT */
	uint32_t requests;
	char why[WHY_MAX];
};

static struct virtq_mem rng_ring;
static uint8_t rng_bytes[RNG_REQUESTS][RNG_REQUEST_BYTES] __attribute__((aligned(64)));
static struct rng_run run;

static bool setup(struct rng_run *r, const struct pci_device *pci)
{
	bool ok = virtio_open(&r->dev, pci) && virtio_negotiate(&r->dev, 0) &&
		  virtq_init(&r->dev, &r->queue, RNG_QUEUE, &rng_ring);
	if (!ok) {
		ksnprintf(r->why, sizeof(r->why), "%s", r->dev.error);
		return false;
	}
	virtio_driver_ok(&r->dev);
	return true;
}

/* Asks for the rest of buffer i (all of it the first time). */
static bool submit(struct rng_run *r, int i)
{
	struct virtq_buf buf = {rng_bytes[i] + r->filled[i], RNG_REQUEST_BYTES - r->filled[i], true};
	r->in_flight[i] = virtq_add(&r->queue, &buf, 1);
	if (r->in_flight[i] == NONE_IN_FLIGHT) {
		ksnprintf(r->why, sizeof(r->why), "no free descriptor for request %u", r->requests);
		return false;
	}
	r->requests++;
	return true;
}

static int buffer_of(const struct rng_run *r, uint16_t head)
{
	for (int i = 0; i < RNG_REQUESTS; i++) {
		if (r->in_flight[i] == head)
			return i;
	}
	return NONE_IN_FLIGHT;
}

/* Takes one completion and adds its bytes to the buffer it belongs to. */
static bool take_one(struct rng_run *r)
{
	struct virtq_completion done;
	enum virtq_poll result = virtq_wait_used(&r->dev, &r->queue, RNG_TIMEOUT_US, &done);
	if (result == VIRTQ_TIMEOUT) {
		ksnprintf(r->why, sizeof(r->why), "no answer within %u ms (device status 0x%02x)",
			  RNG_TIMEOUT_US / 1000, virtio_status(&r->dev));
		return false;
	}
	int i = result == VIRTQ_USED ? buffer_of(r, done.head) : NONE_IN_FLIGHT;
	if (i == NONE_IN_FLIGHT) {
		ksnprintf(r->why, sizeof(r->why), "%s", r->dev.error);
		return false;
	}
	if (done.len > RNG_REQUEST_BYTES - r->filled[i]) {
		ksnprintf(r->why, sizeof(r->why), "device wrote %u bytes into a %u-byte buffer",
			  done.len, RNG_REQUEST_BYTES - r->filled[i]);
		return false;
	}
	r->filled[i] += done.len;
	r->in_flight[i] = NONE_IN_FLIGHT;
	return true;
}

/* All buffers in flight at once; short answers (allowed by virtio 1.2, 5.4.6) are topped up. */
static bool fetch(struct rng_run *r)
{
	for (int round = 0; round < RNG_MAX_ROUNDS; round++) {
		int submitted = 0;
		for (int i = 0; i < RNG_REQUESTS; i++) {
			if (r->filled[i] == RNG_REQUEST_BYTES)
				continue;
			if (!submit(r, i))
				return false;
			submitted++;
		}
		if (submitted == 0)
			return true;
		virtq_kick(&r->queue);
		for (int n = 0; n < submitted; n++) {
			if (!take_one(r))
				return false;
		}
	}
	ksnprintf(r->why, sizeof(r->why), "buffers not full after %u requests (%u and %u of %u bytes)",
		  r->requests, r->filled[0], r->filled[1], RNG_REQUEST_BYTES);
	return false;
}

static bool all_zero(const uint8_t *bytes, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++) {
		if (bytes[i] != 0)
			return false;
	}
	return true;
}

static bool check_bytes(struct rng_run *r)
{
	/* The device wrote the buffers behind the compiler's back. */
	compiler_barrier();
	for (int i = 0; i < RNG_REQUESTS; i++) {
		if (all_zero(rng_bytes[i], RNG_REQUEST_BYTES)) {
			ksnprintf(r->why, sizeof(r->why), "buffer %d is all zero", i);
			return false;
		}
	}
	if (memcmp(rng_bytes[0], rng_bytes[1], RNG_REQUEST_BYTES) == 0) {
		ksnprintf(r->why, sizeof(r->why), "both buffers hold the same bytes");
		return false;
	}
	return true;
}

static void print_info(const struct rng_run *r, const struct pci_device *pci)
{
	char bdf[8];
	pci_format_bdf(pci->bdf, bdf);
	kprintf("oxguest: virtio-rng %s features=0x%llx queue_size=%u requests=%u "
		"first=%02x%02x%02x%02x/%02x%02x%02x%02x\n",
		bdf, (unsigned long long)r->dev.features, r->queue.size, r->requests,
		rng_bytes[0][0], rng_bytes[0][1], rng_bytes[0][2], rng_bytes[0][3], rng_bytes[1][0],
		rng_bytes[1][1], rng_bytes[1][2], rng_bytes[1][3]);
}

void run_virtio_rng(const char *name, unsigned pci_flags)
{
	struct rng_run *r = &run;
	char details[32];
	memset(r, 0, sizeof(*r));
	memset(rng_bytes, 0, sizeof(rng_bytes));
	for (int i = 0; i < RNG_REQUESTS; i++)
		r->in_flight[i] = NONE_IN_FLIGHT;
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_RNG, "virtio-rng");
	if (pci == NULL)
		return;
	bool ok = setup(r, pci) && fetch(r) && check_bytes(r);
	if (r->dev.common != 0) {
		print_info(r, pci);
		/* Leaves the device as found (and the ring memory free for the next run). */
		virtio_reset(&r->dev);
	}
	if (!ok) {
		scenario_fail(name, r->why);
		return;
	}
	ksnprintf(details, sizeof(details), "bytes=%u distinct=yes", RNG_REQUESTS * RNG_REQUEST_BYTES);
	scenario_pass(name, details);
}
