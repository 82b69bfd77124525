#include "blk_scenarios.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk_pipe.h"
#include "console.h"
#include "io.h"
#include "pci.h"
#include "scenarios.h"
#include "scratch.h"
#include "string.h"
#include "timer.h"
#include "usermode.h"
#include "virtio_blk.h"

#define WHY_MAX 200
#define DETAILS_MAX 96
#define SECTORS_BYTES(n) ((uint32_t)(n) * BLK_SECTOR_SIZE)
#define ONE_REQUEST_BYTES BLK_PIPE_BUFFER_BYTES
#define MIXED_MODEL_BYTES SECTORS_BYTES(BLK_MIXED_SECTORS)
#define FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
#define SPLITMIX_GAMMA 0x9E3779B97F4A7C15ULL
#define PRINTABLE_FIRST 0x21
#define PRINTABLE_LAST 0x7E

_Static_assert(SECTORS_BYTES(BLK_READ_SECTORS) <= ONE_REQUEST_BYTES, "blk-read: one request");
_Static_assert(SECTORS_BYTES(BLK_WRITE_SECTORS) <= ONE_REQUEST_BYTES, "blk-write: one request");
_Static_assert(BLK_MIXED_SECTORS % BLK_PIPE_MAX_SECTORS == 0, "whole requests cover the range");
_Static_assert(BLK_DISCARD_SECTORS % BLK_PIPE_MAX_SECTORS == 0, "whole requests cover the range");
_Static_assert(BLK_ZEROES_SECTORS % BLK_PIPE_MAX_SECTORS == 0, "whole requests cover the range");

typedef uint8_t (*sector_pattern)(uint64_t sector, uint32_t i);

static struct virtq_mem blk_ring;
static struct blk blk;
static uint8_t io_buf[2][ONE_REQUEST_BYTES] __attribute__((aligned(4096)));

/* --- common: open, report, close --- */

static void print_info(const struct blk *b, const struct pci_device *pci)
{
	char bdf[8];
	pci_format_bdf(pci->bdf, bdf);
	kprintf("oxguest: virtio-blk %s features=0x%llx queue_size=%u sectors=%llu blk_size=%u "
		"size_max=%u seg_max=%u ro=%d flush=%d discard=%d write_zeroes=%d\n",
		bdf, (unsigned long long)b->dev.features, b->queue.size,
		(unsigned long long)b->cfg.capacity, b->cfg.blk_size, b->cfg.size_max,
		b->cfg.seg_max, b->ro, b->flush, b->discard, b->write_zeroes);
}

/* Finds and opens the device and prints its line; NULL after printing the FAIL line. */
struct blk *blk_scenario_open(const char *name, unsigned pci_flags)
{
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_BLOCK, "virtio-blk");
	if (pci == NULL)
		return NULL;
	if (!blk_open(&blk, pci, &blk_ring)) {
		blk_close(&blk);
		scenario_fail(name, blk.error);
		return NULL;
	}
	print_info(&blk, pci);
	return &blk;
}

/* Resets the device (leaving it as found) and prints the TEST line. */
void blk_scenario_close(const char *name, struct blk *b, bool ok, const char *text)
{
	blk_close(b);
	if (ok)
		scenario_pass(name, text);
	else
		scenario_fail(name, text);
}

static bool need_sectors(const struct blk *b, uint64_t sectors, char *why)
{
	if (b->cfg.capacity >= sectors)
		return true;
	ksnprintf(why, WHY_MAX, "the disk has %llu sectors, the scenario needs %llu",
		  (unsigned long long)b->cfg.capacity, (unsigned long long)sectors);
	return false;
}

/* One request on its own that must end with status OK. */
static bool request_ok(struct blk *b, uint32_t type, uint64_t sector, void *data, uint32_t len,
		       const char *what, char *why)
{
	int status = blk_do(b, type, sector, data, len);
	if (status < 0) {
		ksnprintf(why, WHY_MAX, "%s: %s", what, b->error);
		return false;
	}
	if (status != VIRTIO_BLK_S_OK) {
		ksnprintf(why, WHY_MAX, "%s: status %d (%s)", what, status,
			  blk_status_name((uint8_t)status));
		return false;
	}
	return true;
}

static void fill_pattern(uint8_t *data, uint64_t first, uint32_t count, sector_pattern pattern)
{
	for (uint32_t s = 0; s < count; s++) {
		for (uint32_t i = 0; i < BLK_SECTOR_SIZE; i++)
			data[SECTORS_BYTES(s) + i] = pattern(first + s, i);
	}
}

/* Compares count sectors from sector first with what they should hold; why names the first
 * byte that differs. */
static bool compare_sectors(const uint8_t *got, const uint8_t *want, uint64_t first,
			    uint32_t count, const char *what, char *why)
{
	uint32_t len = SECTORS_BYTES(count);
	if (memcmp(got, want, len) == 0)
		return true;
	uint32_t at = 0;
	while (at < len && got[at] == want[at])
		at++;
	ksnprintf(why, WHY_MAX, "%s: sector %llu byte %u is 0x%02x, expected 0x%02x", what,
		  (unsigned long long)(first + at / BLK_SECTOR_SIZE), at % BLK_SECTOR_SIZE, got[at],
		  want[at]);
	return false;
}

/* --- blk-info, blk-read, blk-write, blk-ro: a few requests at CPL0 --- */

/* GET_ID's answer up to the first NUL, with bytes a TEST line cannot carry replaced by '?'. */
static void format_serial(const uint8_t *id, char *out)
{
	uint32_t n = 0;
	for (; n < BLK_ID_BYTES && id[n] != 0; n++) {
		bool printable = id[n] >= PRINTABLE_FIRST && id[n] <= PRINTABLE_LAST;
		out[n] = printable ? (char)id[n] : '?';
	}
	out[n] = '\0';
}

void run_blk_info(const char *name, unsigned pci_flags)
{
	char why[WHY_MAX];
	char serial[BLK_ID_BYTES + 1];
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	uint8_t *id = io_buf[0];
	memset(id, 0, BLK_ID_BYTES);
	if (!request_ok(b, VIRTIO_BLK_T_GET_ID, 0, id, BLK_ID_BYTES, "GET_ID", why)) {
		blk_scenario_close(name, b, false, why);
		return;
	}
	compiler_barrier();
	format_serial(id, serial);
	ksnprintf(why, sizeof(why), "sectors=%llu ro=%d serial=%s",
		  (unsigned long long)b->cfg.capacity, b->ro, serial);
	blk_scenario_close(name, b, true, why);
}

void run_blk_read(const char *name, unsigned pci_flags)
{
	char why[WHY_MAX];
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	uint32_t len = SECTORS_BYTES(BLK_READ_SECTORS);
	memset(io_buf[0], 0, len);
	fill_pattern(io_buf[1], BLK_READ_FIRST, BLK_READ_SECTORS, blk_read_pattern);
	bool ok = need_sectors(b, BLK_READ_FIRST + BLK_READ_SECTORS, why) &&
		  request_ok(b, VIRTIO_BLK_T_IN, BLK_READ_FIRST, io_buf[0], len, "read", why) &&
		  compare_sectors(io_buf[0], io_buf[1], BLK_READ_FIRST, BLK_READ_SECTORS,
				  "the planted pattern", why);
	if (ok)
		ksnprintf(why, sizeof(why), "sectors=%u", BLK_READ_SECTORS);
	blk_scenario_close(name, b, ok, why);
}

void run_blk_write(const char *name, unsigned pci_flags)
{
	char why[WHY_MAX];
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	uint32_t len = SECTORS_BYTES(BLK_WRITE_SECTORS);
	fill_pattern(io_buf[0], BLK_WRITE_FIRST, BLK_WRITE_SECTORS, blk_write_pattern);
	memset(io_buf[1], 0, len);
	bool ok = need_sectors(b, BLK_WRITE_FIRST + BLK_WRITE_SECTORS, why) &&
		  request_ok(b, VIRTIO_BLK_T_OUT, BLK_WRITE_FIRST, io_buf[0], len, "write", why) &&
		  (!b->flush || request_ok(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, "flush", why)) &&
		  request_ok(b, VIRTIO_BLK_T_IN, BLK_WRITE_FIRST, io_buf[1], len, "read back", why) &&
		  compare_sectors(io_buf[1], io_buf[0], BLK_WRITE_FIRST, BLK_WRITE_SECTORS,
				  "read back", why);
	if (ok)
		ksnprintf(why, sizeof(why), "sectors=%u flushed=%s", BLK_WRITE_SECTORS,
			  b->flush ? "yes" : "no");
	blk_scenario_close(name, b, ok, why);
}

/* Writes BLK_RO_SECTOR (with bytes it does not hold) and expects IOERR; it must not change. */
static bool write_is_refused(struct blk *b, char *details, char *why)
{
	uint8_t *before = io_buf[0];
	uint8_t *data = io_buf[1];
	if (!request_ok(b, VIRTIO_BLK_T_IN, BLK_RO_SECTOR, before, BLK_SECTOR_SIZE, "read", why))
		return false;
	compiler_barrier();
	for (uint32_t i = 0; i < BLK_SECTOR_SIZE; i++)
		data[i] = (uint8_t)~before[i];
	int status = blk_do(b, VIRTIO_BLK_T_OUT, BLK_RO_SECTOR, data, BLK_SECTOR_SIZE);
	if (status < 0) {
		ksnprintf(why, WHY_MAX, "write: %s", b->error);
		return false;
	}
	if (status != VIRTIO_BLK_S_IOERR) {
		ksnprintf(why, WHY_MAX, "write-status=%d (%s), expected %d (IOERR)", status,
			  blk_status_name((uint8_t)status), VIRTIO_BLK_S_IOERR);
		return false;
	}
	memset(data, 0, BLK_SECTOR_SIZE);
	if (!request_ok(b, VIRTIO_BLK_T_IN, BLK_RO_SECTOR, data, BLK_SECTOR_SIZE, "read after",
			why) ||
	    !compare_sectors(data, before, BLK_RO_SECTOR, 1, "after the refused write", why))
		return false;
	ksnprintf(details, DETAILS_MAX, "write-status=%d", status);
	return true;
}

void run_blk_ro(const char *name, unsigned pci_flags)
{
	char why[WHY_MAX];
	char details[DETAILS_MAX];
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	if (!b->ro) {
		blk_scenario_close(name, b, false, "the device does not offer VIRTIO_BLK_F_RO");
		return;
	}
	bool ok = need_sectors(b, BLK_RO_SECTOR + 1, why) && write_is_refused(b, details, why);
	blk_scenario_close(name, b, ok, ok ? details : why);
}

/* --- blk-mixed and blk-discard: many requests at CPL3 --- */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += SPLITMIX_GAMMA);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static uint64_t fnv1a64(const uint8_t *data, uint32_t len)
{
	uint64_t hash = FNV_OFFSET_BASIS;
	for (uint32_t i = 0; i < len; i++)
		hash = (hash ^ data[i]) * FNV_PRIME;
	return hash;
}

struct mixed_run {
	struct blk_pipe pipe;
	uint8_t *model; /* sectors BLK_MIXED_FIRST.. as the disk must hold them */
	const char *phase;
	bool check_reads; /* false while the model itself is being read */
	uint32_t reads, writes, sectors;
	uint64_t checksum;
	uint64_t tsc_start, tsc_mixed_start, tsc_mixed_end, tsc_end;
	uint32_t mixed_requests_started, all_requests;
	char why[WHY_MAX];
};

static uint8_t *model_at(const struct mixed_run *r, uint64_t sector)
{
	return r->model + SECTORS_BYTES(sector - BLK_MIXED_FIRST);
}

static bool mixed_read_done(struct blk_pipe *pipe, const struct blk_pipe_req *req)
{
	struct mixed_run *r = pipe->ctx;
	if (req->write || !r->check_reads)
		return true;
	char what[48];
	ksnprintf(what, sizeof(what), "%s %u", r->phase, req->tag);
	return compare_sectors(req->data, model_at(r, req->sector), req->sector, req->count, what,
			       pipe->why);
}

/* Reads the whole range, into the model (check_reads false) or to compare with it. */
static bool mixed_read_all(struct mixed_run *r)
{
	for (uint32_t s = 0; s < BLK_MIXED_SECTORS; s += BLK_PIPE_MAX_SECTORS) {
		uint8_t *into = r->check_reads ? NULL : model_at(r, BLK_MIXED_FIRST + s);
		if (!blk_pipe_read(&r->pipe, BLK_MIXED_FIRST + s, BLK_PIPE_MAX_SECTORS, into,
				   s / BLK_PIPE_MAX_SECTORS))
			return false;
	}
	return blk_pipe_drain(&r->pipe);
}

static void fill_random(uint8_t *data, uint32_t len, uint64_t seed)
{
	uint64_t state = seed;
	for (uint32_t at = 0; at < len; at += sizeof(uint64_t)) {
		uint64_t word = splitmix64(&state);
		__builtin_memcpy(data + at, &word, sizeof(word));
	}
}

/* One request of the sequence blk_scenarios.h describes. */
static bool mixed_request(struct mixed_run *r, uint64_t *rng, uint32_t k)
{
	uint64_t x = splitmix64(rng);
	bool write = (x & 1) != 0;
	uint32_t count = 1 + (uint32_t)((x >> 1) & 7);
	uint64_t sector = BLK_MIXED_FIRST + (x >> 4) % (BLK_MIXED_SECTORS - count + 1);
	r->sectors += count;
	if (!write) {
		r->reads++;
		return blk_pipe_read(&r->pipe, sector, count, NULL, k);
	}
	r->writes++;
	/* The model holds what the disk will hold; nothing in flight may use those bytes. */
	if (!blk_pipe_reserve(&r->pipe, sector, count))
		return false;
	fill_random(model_at(r, sector), SECTORS_BYTES(count), x);
	return blk_pipe_write(&r->pipe, sector, count, model_at(r, sector), k);
}

static bool mixed_requests(struct mixed_run *r)
{
	uint64_t rng = BLK_MIXED_SEED;
	r->phase = "request";
	r->check_reads = true;
	for (uint32_t k = 0; k < BLK_MIXED_REQUESTS; k++) {
		if (!mixed_request(r, &rng, k))
			return false;
	}
	return blk_pipe_drain(&r->pipe);
}

/* The CPL3 part of blk-mixed; 1 when every check passed. */
static uint64_t mixed_at_cpl3(void *arg)
{
	struct mixed_run *r = arg;
	r->tsc_start = rdtsc();
	r->phase = "initial read";
	r->check_reads = false;
	bool ok = mixed_read_all(r);
	r->tsc_mixed_start = rdtsc();
	uint32_t before = r->pipe.requests;
	ok = ok && mixed_requests(r);
	r->mixed_requests_started = r->pipe.requests - before;
	r->tsc_mixed_end = rdtsc();
	r->phase = "final read";
	r->check_reads = true;
	ok = ok && mixed_read_all(r);
	if (ok)
		r->checksum = fnv1a64(r->model, MIXED_MODEL_BYTES);
	r->tsc_end = rdtsc();
	r->all_requests = r->pipe.requests;
	if (!ok)
		ksnprintf(r->why, sizeof(r->why), "%s", r->pipe.why);
	return ok;
}

static struct mixed_run mixed;

void run_blk_mixed(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	struct mixed_run *r = &mixed;
	char where[WHY_MAX];
	uint64_t base;
	memset(r, 0, sizeof(*r));
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	uint64_t bytes = MIXED_MODEL_BYTES + BLK_PIPE_BUFFERS_BYTES;
	if (!scratch_region(info, bytes, &base, where, sizeof(where))) {
		ksnprintf(r->why, sizeof(r->why), "no memory for the disk model: %s", where);
		blk_scenario_close(name, b, false, r->why);
		return;
	}
	if (!need_sectors(b, BLK_MIXED_FIRST + BLK_MIXED_SECTORS, r->why)) {
		blk_scenario_close(name, b, false, r->why);
		return;
	}
	r->model = (uint8_t *)(uintptr_t)base;
	blk_pipe_init(&r->pipe, b, r->model + MIXED_MODEL_BYTES, mixed_read_done, r);
	bool ok = usermode_call(name, mixed_at_cpl3, r) == 1;
	kprintf("oxguest: blk-mixed cpl=3 requests=%u reads=%u writes=%u sectors=%u us=%llu "
		"all_requests=%u all_us=%llu\n",
		r->mixed_requests_started, r->reads, r->writes, r->sectors,
		(unsigned long long)tsc_elapsed_us(r->tsc_mixed_start, r->tsc_mixed_end),
		r->all_requests, (unsigned long long)tsc_elapsed_us(r->tsc_start, r->tsc_end));
	if (ok)
		ksnprintf(r->why, sizeof(r->why), "requests=%u checksum=0x%016llx",
			  r->mixed_requests_started, (unsigned long long)r->checksum);
	blk_scenario_close(name, b, ok, r->why);
}

struct discard_run {
	struct blk *blk;
	struct blk_pipe pipe;
	uint8_t *fill; /* BLK_PIPE_BUFFER_BYTES of BLK_FILL_BYTE */
	uint32_t discarded_nonzero; /* discarded sectors that still hold data */
	char why[WHY_MAX];
};

static bool is_zero(const uint8_t *data, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++) {
		if (data[i] != 0)
			return false;
	}
	return true;
}

static bool discard_read_done(struct blk_pipe *pipe, const struct blk_pipe_req *req)
{
	struct discard_run *r = pipe->ctx;
	if (req->write)
		return true;
	for (uint32_t s = 0; s < req->count; s++) {
		uint64_t sector = req->sector + s;
		if (is_zero(req->data + SECTORS_BYTES(s), BLK_SECTOR_SIZE))
			continue;
		if (sector < BLK_DISCARD_FIRST + BLK_DISCARD_SECTORS) {
			r->discarded_nonzero++;
			continue;
		}
		ksnprintf(pipe->why, sizeof(pipe->why), "sector %llu is not zero after WRITE_ZEROES",
			  (unsigned long long)sector);
		return false;
	}
	return true;
}

/* Fills count sectors from first with BLK_FILL_BYTE (writes), or reads them (check). */
static bool discard_pass(struct discard_run *r, uint64_t first, uint32_t count, bool write)
{
	for (uint32_t s = 0; s < count; s += BLK_PIPE_MAX_SECTORS) {
		bool ok = write ? blk_pipe_write(&r->pipe, first + s, BLK_PIPE_MAX_SECTORS, r->fill, s)
				: blk_pipe_read(&r->pipe, first + s, BLK_PIPE_MAX_SECTORS, NULL, s);
		if (!ok)
			return false;
	}
	return blk_pipe_drain(&r->pipe);
}

/* The largest range one request may cover: the device's maximum, kept aligned. */
static uint32_t range_limit(uint32_t max_sectors, uint32_t alignment, uint32_t count)
{
	uint32_t limit = max_sectors != 0 && max_sectors < count ? max_sectors : count;
	if (alignment > 1 && limit > alignment)
		limit -= limit % alignment;
	return limit;
}

/* DISCARD or WRITE_ZEROES of count sectors from first, one range per request. */
static bool range_requests(struct discard_run *r, uint32_t type, uint64_t first, uint32_t count,
			   uint32_t limit)
{
	const char *what = type == VIRTIO_BLK_T_DISCARD ? "DISCARD" : "WRITE_ZEROES";
	for (uint32_t done = 0; done < count;) {
		uint32_t n = count - done < limit ? count - done : limit;
		int status = blk_do_range(r->blk, type, first + done, n);
		if (status < 0) {
			ksnprintf(r->why, sizeof(r->why), "%s of sectors %llu-%llu: %s", what,
				  (unsigned long long)(first + done),
				  (unsigned long long)(first + done + n - 1), r->blk->error);
			return false;
		}
		if (status != VIRTIO_BLK_S_OK) {
			ksnprintf(r->why, sizeof(r->why), "%s of sectors %llu-%llu: status %d (%s)",
				  what, (unsigned long long)(first + done),
				  (unsigned long long)(first + done + n - 1), status,
				  blk_status_name((uint8_t)status));
			return false;
		}
		done += n;
	}
	return true;
}

static bool pipe_ok(struct discard_run *r, bool ok)
{
	if (!ok && r->why[0] == '\0')
		ksnprintf(r->why, sizeof(r->why), "%s", r->pipe.why);
	return ok;
}

/* The CPL3 part of blk-discard; 1 when every check passed. */
static uint64_t discard_at_cpl3(void *arg)
{
	struct discard_run *r = arg;
	struct blk *b = r->blk;
	const struct blk_config *cfg = &b->cfg;
	bool ok = true;
	if (b->discard) {
		uint32_t limit = range_limit(cfg->max_discard_sectors, cfg->discard_sector_alignment,
					     BLK_DISCARD_SECTORS);
		ok = pipe_ok(r, discard_pass(r, BLK_DISCARD_FIRST, BLK_DISCARD_SECTORS, true)) &&
		     range_requests(r, VIRTIO_BLK_T_DISCARD, BLK_DISCARD_FIRST, BLK_DISCARD_SECTORS,
				    limit) &&
		     pipe_ok(r, discard_pass(r, BLK_DISCARD_FIRST, BLK_DISCARD_SECTORS, false));
	}
	if (ok && b->write_zeroes) {
		uint32_t limit = range_limit(cfg->max_write_zeroes_sectors, 0, BLK_ZEROES_SECTORS);
		ok = pipe_ok(r, discard_pass(r, BLK_ZEROES_FIRST, BLK_ZEROES_SECTORS, true)) &&
		     range_requests(r, VIRTIO_BLK_T_WRITE_ZEROES, BLK_ZEROES_FIRST,
				    BLK_ZEROES_SECTORS, limit) &&
		     pipe_ok(r, discard_pass(r, BLK_ZEROES_FIRST, BLK_ZEROES_SECTORS, false));
	}
	return ok;
}

static struct discard_run discard;

void run_blk_discard(const char *name, const struct boot_info *info, unsigned pci_flags)
{
	struct discard_run *r = &discard;
	char where[WHY_MAX];
	uint64_t base;
	memset(r, 0, sizeof(*r));
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	r->blk = b;
	bool ok = (!b->discard && !b->write_zeroes) ||
		  need_sectors(b, BLK_ZEROES_FIRST + BLK_ZEROES_SECTORS, r->why);
	if (ok && (b->discard || b->write_zeroes)) {
		if (!scratch_region(info, BLK_PIPE_BUFFERS_BYTES + BLK_PIPE_BUFFER_BYTES, &base, where,
				    sizeof(where))) {
			ksnprintf(r->why, sizeof(r->why), "no memory for the buffers: %s", where);
			blk_scenario_close(name, b, false, r->why);
			return;
		}
		r->fill = (uint8_t *)(uintptr_t)base + BLK_PIPE_BUFFERS_BYTES;
		memset(r->fill, BLK_FILL_BYTE, BLK_PIPE_BUFFER_BYTES);
		blk_pipe_init(&r->pipe, b, (uint8_t *)(uintptr_t)base, discard_read_done, r);
		ok = usermode_call(name, discard_at_cpl3, r) == 1;
	}
	if (ok)
		ksnprintf(r->why, sizeof(r->why), "discard=%s write_zeroes=%s",
			  !b->discard ? "no" : r->discarded_nonzero > 0 ? "kept" : "yes",
			  b->write_zeroes ? "yes" : "no");
	blk_scenario_close(name, b, ok, r->why);
}
