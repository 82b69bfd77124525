/*
 * Several virtio-blk reads and writes in flight at once, started in order: a request that
 * overlaps one in flight, or finds no free slot or descriptors, first waits for completions.
 * So the disk ends up as if the requests had run one after another, and a read always sees
 * every write started before it. Runs at CPL0 or CPL3 (virtio_blk.h); errors go to pipe->why.
 */
#ifndef OXGUEST_BLK_PIPE_H
#define OXGUEST_BLK_PIPE_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio_blk.h"

#define BLK_PIPE_DEPTH 4
#define BLK_PIPE_MAX_SECTORS 8
#define BLK_PIPE_BUFFER_BYTES (BLK_PIPE_MAX_SECTORS * BLK_SECTOR_SIZE)
/* Bytes of read buffers a pipe needs (blk_pipe_init's buffers). */
#define BLK_PIPE_BUFFERS_BYTES (BLK_PIPE_DEPTH * BLK_PIPE_BUFFER_BYTES)
#define BLK_PIPE_WHY_MAX 200

struct blk_pipe_req {
	bool write;
	uint64_t sector;
	uint32_t count; /* sectors, 1 to BLK_PIPE_MAX_SECTORS */
	uint32_t tag;   /* the caller's, e.g. a request number */
	uint8_t *data;  /* writes: the caller's data; reads: where the sectors arrive */
};

struct blk_pipe;
/* Called for every request that completed with status OK; false stops the pipe (set why). */
typedef bool (*blk_pipe_done)(struct blk_pipe *pipe, const struct blk_pipe_req *req);

struct blk_pipe {
	struct blk *blk;
	blk_pipe_done done; /* NULL: nothing to check */
	void *ctx;          /* the caller's, for done */
	uint8_t *buffers;   /* BLK_PIPE_BUFFERS_BYTES: one read buffer per place in the pipe */
	struct blk_pipe_req reqs[BLK_PIPE_DEPTH];
	bool busy[BLK_PIPE_DEPTH];
	int8_t owner[BLK_SLOTS]; /* place in the pipe of each request slot of the driver */
	uint32_t in_flight;
	uint32_t requests; /* started so far */
	char why[BLK_PIPE_WHY_MAX];
};

void blk_pipe_init(struct blk_pipe *pipe, struct blk *blk, uint8_t *buffers, blk_pipe_done done,
		   void *ctx);
/* into NULL: the sectors arrive in one of the pipe's buffers (done's req->data). */
bool blk_pipe_read(struct blk_pipe *pipe, uint64_t sector, uint32_t count, uint8_t *into,
		   uint32_t tag);
/* data must stay unchanged until the request completes. */
bool blk_pipe_write(struct blk_pipe *pipe, uint64_t sector, uint32_t count, const uint8_t *data,
		    uint32_t tag);
/*
 * Completes requests until one for these sectors may start: call it before changing the
 * data of a write that is not started yet (nothing in flight may still use those bytes).
 */
bool blk_pipe_reserve(struct blk_pipe *pipe, uint64_t sector, uint32_t count);
/* Waits for every request in flight. */
bool blk_pipe_drain(struct blk_pipe *pipe);

#endif
