#include "virtio_balloon.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmdline.h"
#include "console.h"
#include "io.h"
#include "pci.h"
#include "scenarios.h"
#include "scratch.h"
#include "string.h"
#include "timer.h"
#include "virtio.h"

#define INFLATE_QUEUE 0
#define DEFLATE_QUEUE 1
#define STATS_QUEUE 2
#define F_STATS_VQ (1ULL << 1)
/* Configuration space (virtio 1.2, 5.5.4): le32 num_pages (host), le32 actual (driver). */
#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4
#define STAT_MEMFREE 4
#define STAT_MEMTOT 5
#define PAGE_SHIFT 12
#define PAGE_SIZE (1ULL << PAGE_SHIFT)
#define MIB (1ULL << 20)
#define POLL_US 1000u
#define COMPLETION_TIMEOUT_US 5000000u
#define TOUCH_KEY "balloon-touch"
#define TOUCH_BYTE 0x5A
#define WHY_MAX 160

struct balloon_stat {
	uint16_t tag;
	uint64_t value;
} __attribute__((packed));

struct balloon_run {
	struct virtio_dev dev;
	struct virtq inflate;
	struct virtq deflate;
	struct virtq stats;
	bool has_stats;
	uint64_t usable;    /* usable RAM, for the statistics */
	uint8_t *pages;     /* the first page the balloon takes (scratch memory) */
	uint32_t inflated;  /* pages in the balloon */
	uint32_t stats_sent;
	char why[WHY_MAX];
};

static struct virtq_mem inflate_ring;
static struct virtq_mem deflate_ring;
static struct virtq_mem stats_ring;
static uint32_t pfns[BALLOON_PFNS_PER_BUFFER];
static struct balloon_stat stats_buffer[2];
static struct balloon_run run;

__attribute__((format(printf, 2, 3))) static bool fail(struct balloon_run *r, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	kvsnprintf(r->why, sizeof(r->why), fmt, args);
	va_end(args);
	return false;
}

static bool transport_failed(struct balloon_run *r)
{
	return fail(r, "%s", r->dev.error);
}

/*
 * "<key>=<decimal>" on the command line: false when absent (value 0); a bad value fails the
 * scenario.
 */
static bool option_value(struct balloon_run *r, const char *cmdline, const char *key,
			 uint64_t max, uint64_t *value, bool *bad)
{
	const char *text = 0;
	*value = 0;
	*bad = false;
	switch (cmdline_u64(cmdline, key, max, value, &text)) {
	case OPTION_SET:
		return true;
	case OPTION_ABSENT:
		return false;
	case OPTION_INVALID:
		break;
	}
	char given[24];
	size_t len = 0;
	while (len + 1 < sizeof(given) && text[len] != '\0' && !is_space(text[len])) {
		given[len] = text[len];
		len++;
	}
	given[len] = '\0';
	*value = 0;
	*bad = true;
	fail(r, "bad %s= value \"%s\" (0 to %llu)", key, given, (unsigned long long)max);
	return false;
}

static void fill_stats(struct balloon_run *r)
{
	uint64_t given = (uint64_t)r->inflated << PAGE_SHIFT;
	stats_buffer[0] = (struct balloon_stat){STAT_MEMTOT, r->usable};
	stats_buffer[1] = (struct balloon_stat){STAT_MEMFREE, r->usable > given ? r->usable - given : 0};
}

/* Makes the stats buffer available (again) with the current values. */
static bool send_stats(struct balloon_run *r)
{
	fill_stats(r);
	struct virtq_buf buf = {stats_buffer, sizeof(stats_buffer), false};
	if (virtq_add(&r->stats, &buf, 1) < 0)
		return fail(r, "no free descriptor on the stats queue");
	virtq_kick(&r->stats);
	r->stats_sent++;
	return true;
}

/* The device hands the stats buffer back when it wants fresh values. */
static bool service_stats(struct balloon_run *r)
{
	struct virtq_completion done;
	if (!r->has_stats)
		return true;
	switch (virtq_take_used(&r->dev, &r->stats, &done)) {
	case VIRTQ_EMPTY:
		return true;
	case VIRTQ_USED:
		return send_stats(r);
	default:
		return transport_failed(r);
	}
}

static bool setup(struct balloon_run *r, const struct pci_device *pci)
{
	bool ok = virtio_open(&r->dev, pci) && virtio_negotiate(&r->dev, F_STATS_VQ) &&
		  virtq_init(&r->dev, &r->inflate, INFLATE_QUEUE, &inflate_ring) &&
		  virtq_init(&r->dev, &r->deflate, DEFLATE_QUEUE, &deflate_ring);
	r->has_stats = ok && (r->dev.features & F_STATS_VQ);
	if (ok && r->has_stats)
		ok = virtq_init(&r->dev, &r->stats, STATS_QUEUE, &stats_ring);
	if (!ok)
		return transport_failed(r);
	virtio_driver_ok(&r->dev);
	return !r->has_stats || send_stats(r);
}

static bool read_target(struct balloon_run *r, uint32_t *pages)
{
	uint64_t value;
	if (!virtio_config_read(&r->dev, CFG_NUM_PAGES, 4, &value))
		return transport_failed(r);
	*pages = (uint32_t)value;
	return true;
}

/*
 * Polls num_pages until it differs from unwanted in the direction asked (above: the target
 * rises past it; otherwise it falls below it), serving the stats queue meanwhile.
 */
static bool wait_target(struct balloon_run *r, uint32_t bound, bool above, uint32_t timeout_us,
			uint32_t *pages, bool *timed_out)
{
	struct deadline d;
	deadline_start(&d, timeout_us);
	*timed_out = false;
	for (;;) {
		if (!read_target(r, pages) || !service_stats(r))
			return false;
		if (above ? *pages > bound : *pages < bound)
			return true;
		if (deadline_expired(&d)) {
			*timed_out = true;
			return false;
		}
		delay_us(POLL_US);
	}
}

static void touch_pages(uint8_t *first, uint64_t count, uint8_t value)
{
	volatile uint8_t *p = first;
	for (uint64_t i = 0; i < count; i++)
		p[i << PAGE_SHIFT] = value;
}

/* Sends the PFNs of count pages from first on queue q (one buffer), waits until it is used. */
static bool send_pfns(struct balloon_run *r, struct virtq *q, uint8_t *first, uint32_t count)
{
	for (uint32_t i = 0; i < count; i++)
		pfns[i] = (uint32_t)(((uintptr_t)first >> PAGE_SHIFT) + i);
	struct virtq_buf buf = {pfns, count * (uint32_t)sizeof(pfns[0]), false};
	if (virtq_add(q, &buf, 1) < 0)
		return fail(r, "no free descriptor on queue %u", q->index);
	virtq_kick(q);
	struct virtq_completion done;
	switch (virtq_wait_used(&r->dev, q, COMPLETION_TIMEOUT_US, &done)) {
	case VIRTQ_USED:
		return true;
	case VIRTQ_TIMEOUT:
		return fail(r, "no completion within %u ms on queue %u (device status 0x%02x)",
			    COMPLETION_TIMEOUT_US / 1000, q->index, virtio_status(&r->dev));
	default:
		return transport_failed(r);
	}
}

static bool set_actual(struct balloon_run *r)
{
	return virtio_config_write(&r->dev, CFG_ACTUAL, 4, r->inflated) || transport_failed(r);
}

/* Gives the host `target` pages from the scratch memory, touched first. */
static bool inflate(struct balloon_run *r, uint32_t target)
{
	while (r->inflated < target) {
		uint32_t count = target - r->inflated;
		if (count > BALLOON_PFNS_PER_BUFFER)
			count = BALLOON_PFNS_PER_BUFFER;
		uint8_t *first = r->pages + ((uint64_t)r->inflated << PAGE_SHIFT);
		/* The host must really have had these pages for their release to show. */
		touch_pages(first, count, TOUCH_BYTE);
		if (!send_pfns(r, &r->inflate, first, count))
			return false;
		r->inflated += count;
		if (!set_actual(r))
			return false;
	}
	return true;
}

/* Takes back the pages above `target`, last given first, and checks they work again. */
static bool deflate(struct balloon_run *r, uint32_t target)
{
	uint32_t from = r->inflated;
	while (r->inflated > target) {
		uint32_t count = r->inflated - target;
		if (count > BALLOON_PFNS_PER_BUFFER)
			count = BALLOON_PFNS_PER_BUFFER;
		uint8_t *first = r->pages + ((uint64_t)(r->inflated - count) << PAGE_SHIFT);
		if (!send_pfns(r, &r->deflate, first, count))
			return false;
		r->inflated -= count;
		if (!set_actual(r))
			return false;
	}
	for (uint32_t i = target; i < from; i++) {
		volatile uint8_t *page = r->pages + ((uint64_t)i << PAGE_SHIFT);
		uint8_t value = (uint8_t)(0x80 | (i & 0x7F));
		page[0] = value;
		page[PAGE_SIZE - 1] = value;
		if (page[0] != value || page[PAGE_SIZE - 1] != value)
			return fail(r, "deflated page 0x%llx reads 0x%02x after writing 0x%02x",
				    (unsigned long long)(uintptr_t)page, page[0], value);
	}
	return true;
}

/* Checks that `bytes` of scratch memory are usable; sets r->pages. */
static bool claim_scratch(struct balloon_run *r, const struct boot_info *info, uint64_t bytes,
			  const char *what)
{
	char why[96];
	uint64_t base;
	if (!scratch_region(info, bytes, &base, why, sizeof(why)))
		return fail(r, "%s: %s", what, why);
	r->pages = (uint8_t *)(uintptr_t)base;
	return true;
}

static bool touch_option(struct balloon_run *r, const struct boot_info *info)
{
	uint64_t mib;
	bool bad;
	uint64_t max_mib = ((uint64_t)BALLOON_MAX_PAGES << PAGE_SHIFT) / MIB;
	if (!option_value(r, info->cmdline, TOUCH_KEY, max_mib, &mib, &bad))
		return !bad;
	if (!claim_scratch(r, info, mib * MIB, TOUCH_KEY))
		return false;
	touch_pages(r->pages, mib * MIB / PAGE_SIZE, TOUCH_BYTE);
	kprintf("oxguest: balloon touched %llu MiB\n", (unsigned long long)mib);
	return true;
}

/* Waits for a target, checks it fits, inflates. */
static bool take_target(struct balloon_run *r, const struct boot_info *info)
{
	uint32_t target;
	bool timed_out;
	char what[64];
	kprintf("%s\n", BALLOON_WAITING_LINE);
	if (!wait_target(r, 0, true, BALLOON_TARGET_TIMEOUT_US, &target, &timed_out))
		return timed_out ? fail(r, "no balloon target from the host within %u ms",
					BALLOON_TARGET_TIMEOUT_US / 1000)
				 : false;
	if (target > BALLOON_MAX_PAGES)
		return fail(r, "the host asks for %u pages, more than %u", target, BALLOON_MAX_PAGES);
	ksnprintf(what, sizeof(what), "the host asks for %u pages", target);
	if (!claim_scratch(r, info, (uint64_t)target << PAGE_SHIFT, what) || !inflate(r, target))
		return false;
	kprintf("oxguest: balloon inflated %u pages\n", r->inflated);
	return true;
}

/* Waits for the target to fall, deflates to it. */
static bool give_back(struct balloon_run *r, uint32_t *deflated)
{
	uint32_t target;
	bool timed_out;
	uint32_t inflated = r->inflated;
	kprintf("oxguest: balloon waiting for the target to fall below %u\n", inflated);
	if (!wait_target(r, inflated, false, BALLOON_DEFLATE_TIMEOUT_US, &target, &timed_out))
		return timed_out ? fail(r, "the host kept the target at %u pages (inflated %u) for %u ms",
					target, inflated, BALLOON_DEFLATE_TIMEOUT_US / 1000)
				 : false;
	if (!deflate(r, target))
		return false;
	*deflated = inflated - target;
	return true;
}

static void print_info(struct balloon_run *r, const struct pci_device *pci)
{
	char bdf[8];
	uint32_t target = 0;
	pci_format_bdf(pci->bdf, bdf);
	read_target(r, &target);
	kprintf("oxguest: virtio-balloon %s features=0x%llx queue_size=%u stats=%u num_pages=%u\n",
		bdf, (unsigned long long)r->dev.features, r->inflate.size, r->has_stats ? 1 : 0,
		target);
}

void run_balloon(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	struct balloon_run *r = &run;
	uint32_t inflated = 0, deflated = 0;
	char details[48];
	memset(r, 0, sizeof(*r));
	r->usable = e820_usable_bytes(info);
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_BALLOON, "virtio-balloon");
	if (pci == NULL)
		return;
	bool ok = setup(r, pci);
	if (ok) {
		print_info(r, pci);
		ok = touch_option(r, info) && take_target(r, info);
		inflated = r->inflated;
		ok = ok && give_back(r, &deflated);
	}
	if (r->dev.common != 0)
		virtio_reset(&r->dev); /* leaves the device as found, the rings free for reuse */
	if (!ok) {
		scenario_fail(name, r->why);
		return;
	}
	ksnprintf(details, sizeof(details), "inflated=%u deflated=%u", inflated, deflated);
	scenario_pass(name, details);
}
