#include "virtio_blk.h"

#include <stdarg.h>
#include <stddef.h>

#include "console.h"
#include "io.h"
#include "string.h"
#include "timer.h"

/* virtio_blk_config field offsets (virtio 1.2, 5.2.4). */
#define CFG_CAPACITY 0
#define CFG_SIZE_MAX 8
#define CFG_SEG_MAX 12
#define CFG_BLK_SIZE 20
#define CFG_MAX_DISCARD_SECTORS 36
#define CFG_MAX_DISCARD_SEG 40
#define CFG_DISCARD_SECTOR_ALIGNMENT 44
#define CFG_MAX_WRITE_ZEROES_SECTORS 48
#define CFG_MAX_WRITE_ZEROES_SEG 52

#define BLK_QUEUE 0
/* What a status byte holds until the device writes it (no valid status is 0xFF). */
#define STATUS_UNWRITTEN 0xFF
/* Descriptors besides the data: the header and the status byte. */
#define FIXED_DESCRIPTORS 2

#define WANTED_FEATURES                                                                        \
	(VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_DISCARD |                          \
	 VIRTIO_BLK_F_WRITE_ZEROES | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_SIZE_MAX |            \
	 VIRTIO_BLK_F_SEG_MAX)

__attribute__((format(printf, 2, 3))) static bool set_error(struct blk *b, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	kvsnprintf(b->error, sizeof(b->error), fmt, args);
	va_end(args);
	return false;
}

static bool read_u32(struct blk *b, uint32_t offset, uint32_t *out)
{
	uint64_t value;
	if (!virtio_config_read(&b->dev, offset, 4, &value))
		return false;
	*out = (uint32_t)value;
	return true;
}

/* The fields of the negotiated features only: the region may end before the others. */
static bool read_config(struct blk *b)
{
	uint64_t features = b->dev.features;
	struct blk_config *cfg = &b->cfg;
	if (!virtio_config_read(&b->dev, CFG_CAPACITY, 8, &cfg->capacity))
		return false;
	if ((features & VIRTIO_BLK_F_SIZE_MAX) && !read_u32(b, CFG_SIZE_MAX, &cfg->size_max))
		return false;
	if ((features & VIRTIO_BLK_F_SEG_MAX) && !read_u32(b, CFG_SEG_MAX, &cfg->seg_max))
		return false;
	if ((features & VIRTIO_BLK_F_BLK_SIZE) && !read_u32(b, CFG_BLK_SIZE, &cfg->blk_size))
		return false;
	if ((features & VIRTIO_BLK_F_DISCARD) &&
	    (!read_u32(b, CFG_MAX_DISCARD_SECTORS, &cfg->max_discard_sectors) ||
	     !read_u32(b, CFG_MAX_DISCARD_SEG, &cfg->max_discard_seg) ||
	     !read_u32(b, CFG_DISCARD_SECTOR_ALIGNMENT, &cfg->discard_sector_alignment)))
		return false;
	if ((features & VIRTIO_BLK_F_WRITE_ZEROES) &&
	    (!read_u32(b, CFG_MAX_WRITE_ZEROES_SECTORS, &cfg->max_write_zeroes_sectors) ||
	     !read_u32(b, CFG_MAX_WRITE_ZEROES_SEG, &cfg->max_write_zeroes_seg)))
		return false;
	b->ro = (features & VIRTIO_BLK_F_RO) != 0;
	b->flush = (features & VIRTIO_BLK_F_FLUSH) != 0;
	b->discard = (features & VIRTIO_BLK_F_DISCARD) != 0;
	b->write_zeroes = (features & VIRTIO_BLK_F_WRITE_ZEROES) != 0;
	return true;
}

bool blk_open(struct blk *b, const struct pci_device *pci, struct virtq_mem *ring)
{
	memset(b, 0, sizeof(*b));
	/* The deadlines of blk_finish_one must work at CPL3, where the PM timer cannot be read. */
	tsc_calibrate();
	bool ok = virtio_open(&b->dev, pci) && virtio_negotiate(&b->dev, WANTED_FEATURES) &&
		  read_config(b) && virtq_init(&b->dev, &b->queue, BLK_QUEUE, ring);
	if (!ok)
		return set_error(b, "%s", b->dev.error);
	virtio_driver_ok(&b->dev);
	return true;
}

void blk_close(struct blk *b)
{
	if (b->dev.common != 0)
		virtio_reset(&b->dev);
}

/* The largest data segment for len bytes: size_max when the device set one below len. */
static uint32_t segment_size(const struct blk *b, uint32_t len)
{
	return b->cfg.size_max != 0 && b->cfg.size_max < len ? b->cfg.size_max : len;
}

static uint32_t segments_for(const struct blk *b, uint32_t len)
{
	if (len == 0)
		return 0;
	uint32_t size = segment_size(b, len);
	return (len + size - 1) / size;
}

bool blk_can_start(const struct blk *b, uint32_t len)
{
	return b->in_flight < BLK_SLOTS &&
	       b->queue.num_free >= FIXED_DESCRIPTORS + segments_for(b, len);
}

static int free_slot(const struct blk *b)
{
	for (int i = 0; i < BLK_SLOTS; i++) {
		if (!b->slots[i].busy)
			return i;
	}
	return -1;
}

static bool device_writes_data(uint32_t type)
{
	return type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
}

/* Header, data (split into segments), status; the slot's header must be filled in already. */
static int add_chain(struct blk *b, int slot, const void *data, uint32_t len, bool writes)
{
	struct blk_slot *s = &b->slots[slot];
	struct virtq_buf bufs[BLK_MAX_SEGMENTS + FIXED_DESCRIPTORS];
	uint32_t size = segment_size(b, len);
	uint16_t n = 0;
	bufs[n++] = (struct virtq_buf){&s->header, sizeof(s->header), false};
	for (uint32_t offset = 0; offset < len; offset += size) {
		uint32_t piece = len - offset < size ? len - offset : size;
		bufs[n++] = (struct virtq_buf){(const uint8_t *)data + offset, piece, writes};
	}
	s->status = STATUS_UNWRITTEN;
	bufs[n++] = (struct virtq_buf){&s->status, 1, true};
	int head = virtq_add(&b->queue, bufs, n);
	if (head < 0) {
		set_error(b, "%u free descriptors for a request of %u (%u in flight)",
			  b->queue.num_free, n, b->in_flight);
		return -1;
	}
	s->busy = true;
	s->head = (uint16_t)head;
	s->writable = (writes ? len : 0) + 1;
	b->in_flight++;
	virtq_kick(&b->queue);
	return slot;
}

/* A free slot for a request of len data bytes, its header filled in; -1 (b->error) if none. */
static int prepare_slot(struct blk *b, uint32_t type, uint64_t sector, uint32_t len)
{
	uint32_t segments = segments_for(b, len);
	if (segments > BLK_MAX_SEGMENTS || (b->cfg.seg_max != 0 && segments > b->cfg.seg_max)) {
		set_error(b, "%u bytes need %u segments of at most %u bytes; seg_max is %u", len,
			  segments, segment_size(b, len), b->cfg.seg_max);
		return -1;
	}
	int slot = free_slot(b);
	if (slot < 0) {
		set_error(b, "all %u request slots are in flight", BLK_SLOTS);
		return -1;
	}
	b->slots[slot].header = (struct blk_req_header){type, 0, sector};
	return slot;
}

int blk_start(struct blk *b, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
	int slot = prepare_slot(b, type, sector, len);
	if (slot < 0)
		return -1;
	return add_chain(b, slot, data, len, device_writes_data(type));
}

int blk_start_range(struct blk *b, uint32_t type, uint64_t sector, uint32_t count)
{
	int slot = prepare_slot(b, type, 0, sizeof(struct blk_range));
	if (slot < 0)
		return -1;
	b->slots[slot].range = (struct blk_range){sector, count, 0};
	return add_chain(b, slot, &b->slots[slot].range, sizeof(struct blk_range), false);
}

static int slot_of_head(const struct blk *b, uint16_t head)
{
	for (int i = 0; i < BLK_SLOTS; i++) {
		if (b->slots[i].busy && b->slots[i].head == head)
			return i;
	}
	return -1;
}

static bool wait_used(struct blk *b, struct virtq_completion *done)
{
	struct tsc_deadline deadline;
	tsc_deadline_start(&deadline, BLK_TIMEOUT_US);
	for (;;) {
		enum virtq_poll result = virtq_take_used(&b->dev, &b->queue, done);
		if (result == VIRTQ_USED)
			return true;
		if (result != VIRTQ_EMPTY)
			return set_error(b, "%s", b->dev.error);
		if (tsc_deadline_expired(&deadline))
			return set_error(b,
					 "no completion within %u ms (%u requests in flight, device "
					 "status 0x%02x)",
					 BLK_TIMEOUT_US / 1000, b->in_flight, virtio_status(&b->dev));
	}
}

int blk_finish_one(struct blk *b, uint8_t *status)
{
	struct virtq_completion done;
	if (!wait_used(b, &done))
		return -1;
	int slot = slot_of_head(b, done.head);
	if (slot < 0) {
		set_error(b, "completion of chain %u, which no request holds", done.head);
		return -1;
	}
	struct blk_slot *s = &b->slots[slot];
	s->busy = false;
	b->in_flight--;
	if (done.len > s->writable) {
		set_error(b, "type %u request: the device reports %u bytes written into %u writable",
			  s->header.type, done.len, s->writable);
		return -1;
	}
	/* The device wrote the status (and data) behind the compiler's back. */
	compiler_barrier();
	*status = *(volatile uint8_t *)&s->status;
	return slot;
}

static int finish(struct blk *b, int slot)
{
	uint8_t status;
	if (slot < 0)
		return -1;
	int done = blk_finish_one(b, &status);
	if (done < 0)
		return -1;
	if (done != slot) {
		set_error(b, "slot %d completed while waiting for slot %d", done, slot);
		return -1;
	}
	return status;
}

int blk_do(struct blk *b, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
	return finish(b, blk_start(b, type, sector, data, len));
}

int blk_do_range(struct blk *b, uint32_t type, uint64_t sector, uint32_t count)
{
	return finish(b, blk_start_range(b, type, sector, count));
}

const char *blk_status_name(uint8_t status)
{
	switch (status) {
	case VIRTIO_BLK_S_OK:
		return "OK";
	case VIRTIO_BLK_S_IOERR:
		return "IOERR";
	case VIRTIO_BLK_S_UNSUPP:
		return "UNSUPP";
	default:
		return "unknown";
	}
}
