#include "blk_bench.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk_scenarios.h"
#include "cmdline.h"
#include "console.h"
#include "io.h"
#include "scratch.h"
#include "string.h"
#include "timer.h"
#include "usermode.h"
#include "virtio_blk.h"

#define KIB 1024ULL
#define MIB (1024ULL * 1024ULL)
#define WHY_MAX 200
#define DETAILS_MAX 128
#define SPLITMIX_GAMMA 0x9E3779B97F4A7C15ULL
#define NS_PER_US 1000ULL
/* What the write benchmark's buffers hold besides the stamps. */
#define WRITE_FILL_BYTE 0xA5
/* virtio 1.2, 2.7.7: the driver polls, the device need not interrupt it. */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

_Static_assert(BLK_BENCH_MAX_QD <= BLK_SLOTS, "one driver slot per request in flight");
_Static_assert(BLK_BENCH_BLOCK % BLK_SECTOR_SIZE == 0, "stamp blocks are whole sectors");

enum bench_kind {
	BENCH_SEQ_READ,
	BENCH_SEQ_WRITE,
	BENCH_RAND_READ,
};

struct bench_params {
	uint64_t bytes;     /* bench-mib, in bytes */
	uint32_t req_bytes; /* bench-req-kib, in bytes */
	uint32_t qd;        /* bench-qd */
};

/* Everything the CPL3 loop uses. */
struct bench_run {
	struct blk *blk;
	enum bench_kind kind;
	struct bench_params p;
	uint64_t disk_bytes;
	uint8_t *buffers; /* p.qd buffers of p.req_bytes, page aligned */
	uint64_t rng;     /* rand-read: splitmix64 state */
	uint64_t requests, started, completed;
	uint32_t free_buffers[BLK_BENCH_MAX_QD];
	uint32_t free_count;
	uint32_t buffer_of_slot[BLK_SLOTS];
	uint64_t offset_of_slot[BLK_SLOTS];
	uint64_t tsc_start, tsc_end;
	/* TSC ticks spent starting requests (the notification's exit included) and waiting. */
	uint64_t tsc_submitting, tsc_waiting;
	char why[WHY_MAX];
};

static struct bench_run bench;

__attribute__((format(printf, 2, 3))) static bool set_why(struct bench_run *r, const char *fmt,
							  ...)
{
	va_list args;
	va_start(args, fmt);
	kvsnprintf(r->why, sizeof(r->why), fmt, args);
	va_end(args);
	return false;
}

/* --- options --- */

/* One option between min and max (default when absent); false with why set otherwise. */
static bool option_in_range(struct bench_run *r, const char *cmdline, const char *key,
			    uint64_t min, uint64_t max, uint64_t fallback, uint64_t *out)
{
	*out = fallback;
	enum cmdline_option got = cmdline_u64(cmdline, key, max, out, 0);
	if (got == OPTION_ABSENT)
		return true;
	if (got == OPTION_SET && *out >= min)
		return true;
	return set_why(r, "bad %s= value (decimal, %llu to %llu)", key, (unsigned long long)min,
		       (unsigned long long)max);
}

static bool parse_params(struct bench_run *r, const char *cmdline)
{
	uint64_t mib, req_kib, qd;
	uint64_t default_req = r->kind == BENCH_RAND_READ ? BLK_BENCH_DEFAULT_RAND_REQ_KIB
							  : BLK_BENCH_DEFAULT_SEQ_REQ_KIB;
	if (!option_in_range(r, cmdline, "bench-mib", 1, BLK_BENCH_MAX_MIB, BLK_BENCH_DEFAULT_MIB,
			     &mib) ||
	    !option_in_range(r, cmdline, "bench-req-kib", 4, BLK_BENCH_MAX_REQ_KIB, default_req,
			     &req_kib) ||
	    !option_in_range(r, cmdline, "bench-qd", 1, BLK_BENCH_MAX_QD, BLK_BENCH_DEFAULT_QD, &qd))
		return false;
	if (req_kib * KIB % BLK_BENCH_BLOCK != 0)
		return set_why(r, "bad bench-req-kib= value %llu (a multiple of %u)",
			       (unsigned long long)req_kib, BLK_BENCH_BLOCK / 1024);
	r->p = (struct bench_params){mib * MIB, (uint32_t)(req_kib * KIB), (uint32_t)qd};
	if (r->p.bytes % r->p.req_bytes != 0)
		return set_why(r, "bench-mib=%llu is not a whole number of %u-byte requests",
			       (unsigned long long)mib, r->p.req_bytes);
	r->requests = r->p.bytes / r->p.req_bytes;
	return true;
}

/* --- the disk, memory and clock the run needs (CPL0) --- */

static bool check_disk(struct bench_run *r)
{
	uint64_t capacity = r->blk->cfg.capacity;
	/* A capacity the byte count cannot hold is more than any run needs anyway. */
	r->disk_bytes = capacity <= UINT64_MAX / BLK_SECTOR_SIZE ? capacity * BLK_SECTOR_SIZE
								 : UINT64_MAX;
	uint64_t needed = r->kind == BENCH_RAND_READ ? r->p.req_bytes : r->p.bytes;
	if (r->disk_bytes >= needed)
		return true;
	return set_why(r, "the disk has %llu sectors, the scenario needs %llu",
		       (unsigned long long)r->blk->cfg.capacity,
		       (unsigned long long)(needed / BLK_SECTOR_SIZE));
}

static bool prepare(struct bench_run *r, const struct boot_info *info)
{
	char where[WHY_MAX];
	uint64_t base;
	if (!parse_params(r, info->cmdline) || !check_disk(r))
		return false;
	if (tsc_ticks_per_us() == 0)
		return set_why(r, "the TSC is not calibrated (no PM timer, or a TSC that does not "
				  "count): nothing to time the run with");
	if (!scratch_region(info, (uint64_t)r->p.qd * r->p.req_bytes, &base, where,
			    sizeof(where)))
		return set_why(r, "no memory for the buffers: %s", where);
	r->buffers = (uint8_t *)(uintptr_t)base;
	for (uint32_t i = 0; i < r->p.qd; i++)
		r->free_buffers[i] = i;
	r->free_count = r->p.qd;
	r->rng = BLK_BENCH_RAND_SEED;
	/* Completions are polled: a device that honours this flag need not interrupt at all. */
	r->blk->queue.mem->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	return true;
}

/* --- the request loop (CPL3) --- */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += SPLITMIX_GAMMA);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static uint64_t next_offset(struct bench_run *r)
{
	if (r->kind != BENCH_RAND_READ)
		return r->started * r->p.req_bytes;
	uint64_t places = r->disk_bytes / r->p.req_bytes;
	return splitmix64(&r->rng) % places * r->p.req_bytes;
}

static uint8_t *buffer(const struct bench_run *r, uint32_t index)
{
	return r->buffers + (uint64_t)index * r->p.req_bytes;
}

static void stamp(uint8_t *data, uint32_t len, uint64_t offset)
{
	for (uint32_t at = 0; at < len; at += BLK_BENCH_BLOCK) {
		uint64_t words[2] = {offset + at, BLK_BENCH_GUEST_TAG};
		__builtin_memcpy(data + at, words, sizeof(words));
	}
}

static bool check_stamps(struct bench_run *r, const uint8_t *data, uint64_t offset)
{
	for (uint32_t at = 0; at < r->p.req_bytes; at += BLK_BENCH_BLOCK) {
		uint64_t got = load_u64(data + at);
		if (got != offset + at)
			return set_why(r,
				       "read at offset %llu: block at offset %llu holds stamp "
				       "0x%llx, expected 0x%llx",
				       (unsigned long long)offset, (unsigned long long)(offset + at),
				       (unsigned long long)got, (unsigned long long)(offset + at));
	}
	return true;
}

static bool start_next(struct bench_run *r)
{
	uint64_t offset = next_offset(r);
	bool write = r->kind == BENCH_SEQ_WRITE;
	uint32_t index = r->free_buffers[--r->free_count];
	uint8_t *data = buffer(r, index);
	if (write)
		stamp(data, r->p.req_bytes, offset);
	uint32_t type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
	uint64_t before = rdtsc();
	int slot = blk_start(r->blk, type, offset / BLK_SECTOR_SIZE, data, r->p.req_bytes);
	r->tsc_submitting += rdtsc() - before;
	if (slot < 0)
		return set_why(r, "%s at offset %llu: %s", write ? "write" : "read",
			       (unsigned long long)offset, r->blk->error);
	r->buffer_of_slot[slot] = index;
	r->offset_of_slot[slot] = offset;
	r->started++;
	return true;
}

static bool complete_one(struct bench_run *r)
{
	uint8_t status;
	uint64_t before = rdtsc();
	int slot = blk_finish_one(r->blk, &status);
	r->tsc_waiting += rdtsc() - before;
	if (slot < 0)
		return set_why(r, "%s", r->blk->error);
	uint32_t index = r->buffer_of_slot[slot];
	uint64_t offset = r->offset_of_slot[slot];
	r->free_buffers[r->free_count++] = index;
	r->completed++;
	bool write = r->kind == BENCH_SEQ_WRITE;
	if (status != VIRTIO_BLK_S_OK)
		return set_why(r, "%s at offset %llu: status %u (%s)", write ? "write" : "read",
			       (unsigned long long)offset, status, blk_status_name(status));
	return write || check_stamps(r, buffer(r, index), offset);
}

/* The CPL3 part: 1 when every request completed with status OK (and the right stamps). */
static uint64_t bench_at_cpl3(void *arg)
{
	struct bench_run *r = arg;
	if (r->kind == BENCH_SEQ_WRITE)
		memset(r->buffers, WRITE_FILL_BYTE, (size_t)r->p.qd * r->p.req_bytes);
	r->tsc_start = rdtsc();
	while (r->completed < r->requests) {
		while (r->started < r->requests && r->blk->in_flight < r->p.qd) {
			if (!start_next(r))
				return 0;
		}
		if (!complete_one(r))
			return 0;
	}
	r->tsc_end = rdtsc();
	return 1;
}

/* --- the scenarios --- */

static void run_bench(const char *name, const struct boot_info *info, unsigned pci_flags,
		      enum bench_kind kind)
{
	struct bench_run *r = &bench;
	char details[DETAILS_MAX];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->blk = blk_scenario_open(name, pci_flags);
	if (r->blk == NULL)
		return;
	if (!prepare(r, info)) {
		blk_scenario_close(name, r->blk, false, r->why);
		return;
	}
	if (usermode_call(name, bench_at_cpl3, r) != 1) {
		blk_scenario_close(name, r->blk, false, r->why);
		return;
	}
	uint64_t per_us = tsc_ticks_per_us();
	kprintf("oxguest: %s submit_ns=%llu wait_ns=%llu\n", name,
		(unsigned long long)(r->tsc_submitting * NS_PER_US / per_us),
		(unsigned long long)(r->tsc_waiting * NS_PER_US / per_us));
	uint64_t ns = (r->tsc_end - r->tsc_start) * NS_PER_US / per_us;
	ksnprintf(details, sizeof(details), "bytes=%llu ns=%llu requests=%llu req_bytes=%u qd=%u",
		  (unsigned long long)r->p.bytes, (unsigned long long)ns,
		  (unsigned long long)r->requests, r->p.req_bytes, r->p.qd);
	blk_scenario_close(name, r->blk, true, details);
}

void run_blk_bench_seq_read(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	run_bench(name, info, pci_flags, BENCH_SEQ_READ);
}

void run_blk_bench_seq_write(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	run_bench(name, info, pci_flags, BENCH_SEQ_WRITE);
}

void run_blk_bench_rand_read(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	run_bench(name, info, pci_flags, BENCH_RAND_READ);
}
