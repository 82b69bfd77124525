#include "blk_pipe.h"

#include <stdarg.h>
#include <stddef.h>

#include "console.h"
#include "string.h"

__attribute__((format(printf, 2, 3))) static bool set_why(struct blk_pipe *pipe, const char *fmt,
							  ...)
{
	va_list args;
	va_start(args, fmt);
	kvsnprintf(pipe->why, sizeof(pipe->why), fmt, args);
	va_end(args);
	return false;
}

void blk_pipe_init(struct blk_pipe *pipe, struct blk *blk, uint8_t *buffers, blk_pipe_done done,
		   void *ctx)
{
	memset(pipe, 0, sizeof(*pipe));
	pipe->blk = blk;
	pipe->buffers = buffers;
	pipe->done = done;
	pipe->ctx = ctx;
}

/* Takes one completion, checks its status and hands it to pipe->done. */
static bool complete_one(struct blk_pipe *pipe)
{
	uint8_t status;
	int slot = blk_finish_one(pipe->blk, &status);
	if (slot < 0)
		return set_why(pipe, "%s", pipe->blk->error);
	int place = pipe->owner[slot];
	struct blk_pipe_req req = pipe->reqs[place];
	pipe->busy[place] = false;
	pipe->in_flight--;
	if (status != VIRTIO_BLK_S_OK)
		return set_why(pipe, "%s of sectors %llu-%llu (request %u): status %u (%s)",
			       req.write ? "write" : "read", (unsigned long long)req.sector,
			       (unsigned long long)(req.sector + req.count - 1), req.tag, status,
			       blk_status_name(status));
	return pipe->done == NULL || pipe->done(pipe, &req);
}

static bool overlaps_in_flight(const struct blk_pipe *pipe, uint64_t sector, uint32_t count)
{
	for (int i = 0; i < BLK_PIPE_DEPTH; i++) {
		const struct blk_pipe_req *r = &pipe->reqs[i];
		if (pipe->busy[i] && sector < r->sector + r->count && r->sector < sector + count)
			return true;
	}
	return false;
}

/* Completes requests until this one may start. */
static bool make_room(struct blk_pipe *pipe, uint64_t sector, uint32_t count)
{
	uint32_t len = count * BLK_SECTOR_SIZE;
	while (pipe->in_flight == BLK_PIPE_DEPTH || overlaps_in_flight(pipe, sector, count) ||
	       !blk_can_start(pipe->blk, len)) {
		if (pipe->in_flight == 0)
			return set_why(pipe, "a %u-byte request does not fit the %u-entry queue", len,
				       pipe->blk->queue.size);
		if (!complete_one(pipe))
			return false;
	}
	return true;
}

bool blk_pipe_reserve(struct blk_pipe *pipe, uint64_t sector, uint32_t count)
{
	return make_room(pipe, sector, count);
}

static int free_place(const struct blk_pipe *pipe)
{
	for (int i = 0; i < BLK_PIPE_DEPTH; i++) {
		if (!pipe->busy[i])
			return i;
	}
	return 0; /* make_room guarantees one */
}

static bool submit(struct blk_pipe *pipe, bool write, uint64_t sector, uint32_t count,
		   uint8_t *data, uint32_t tag)
{
	if (count == 0 || count > BLK_PIPE_MAX_SECTORS)
		return set_why(pipe, "request %u of %u sectors (1 to %u)", tag, count,
			       BLK_PIPE_MAX_SECTORS);
	if (!make_room(pipe, sector, count))
		return false;
	int place = free_place(pipe);
	if (data == NULL)
		data = pipe->buffers + (uint32_t)place * BLK_PIPE_BUFFER_BYTES;
	uint32_t type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
	int slot = blk_start(pipe->blk, type, sector, data, count * BLK_SECTOR_SIZE);
	if (slot < 0)
		return set_why(pipe, "%s", pipe->blk->error);
	pipe->owner[slot] = (int8_t)place;
	pipe->reqs[place] = (struct blk_pipe_req){write, sector, count, tag, data};
	pipe->busy[place] = true;
	pipe->in_flight++;
	pipe->requests++;
	return true;
}

bool blk_pipe_read(struct blk_pipe *pipe, uint64_t sector, uint32_t count, uint8_t *into,
		   uint32_t tag)
{
	return submit(pipe, false, sector, count, into, tag);
}

bool blk_pipe_write(struct blk_pipe *pipe, uint64_t sector, uint32_t count, const uint8_t *data,
		    uint32_t tag)
{
	/* The device only reads it; the request keeps a plain pointer like reads do. */
	return submit(pipe, true, sector, count, (uint8_t *)(uintptr_t)data, tag);
}

bool blk_pipe_drain(struct blk_pipe *pipe)
{
	while (pipe->in_flight > 0) {
		if (!complete_one(pipe))
			return false;
	}
	return true;
}
