/*
 * A polled virtio-blk driver (virtio 1.2, 5.2) on the virtio.c core: one request queue
 * (queue 0), requests as descriptor chains "header (device reads) | data segments | status
 * byte (device writes)", several in flight at once.
 *
 * blk_open and blk_close run at CPL0 (config space, PM timer). Everything else is
 * MMIO and memory only, so CPL3 code may call it (usermode_call): waits use the TSC deadline
 * that blk_open calibrated, and errors are left as text in blk->error, never printed.
 *
 * Negotiated when offered: RO, FLUSH, DISCARD, WRITE_ZEROES, BLK_SIZE, SIZE_MAX, SEG_MAX
 * (data is split into segments of at most size_max bytes, at most seg_max of them). Not
 * negotiated: MQ, CONFIG_WCE, GEOMETRY, TOPOLOGY, LIFETIME, SECURE_ERASE.
 */
#ifndef OXGUEST_VIRTIO_BLK_H
#define OXGUEST_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"
#include "virtio.h"

/* Feature bits (virtio 1.2, 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX (1ULL << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ULL << 2)
#define VIRTIO_BLK_F_RO (1ULL << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ULL << 6)
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)
#define VIRTIO_BLK_F_DISCARD (1ULL << 13)
#define VIRTIO_BLK_F_WRITE_ZEROES (1ULL << 14)

/* Request types and status values (virtio 1.2, 5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define BLK_SECTOR_SIZE 512
/* GET_ID answers with up to 20 bytes, NUL-terminated only when shorter. */
#define BLK_ID_BYTES 20
/* Requests in flight at once (each needs a slot and 3 or more descriptors). */
#define BLK_SLOTS 8
/* Data descriptors of one request, at most (size_max splits). */
#define BLK_MAX_SEGMENTS 8
/* Per wait for a completion. */
#define BLK_TIMEOUT_US 5000000u
#define BLK_ERROR_MAX 160

/* The device-specific configuration this driver reads (virtio_blk_config, 5.2.4). */
struct blk_config {
	uint64_t capacity; /* 512-byte sectors */
	uint32_t size_max; /* 0: no limit (SIZE_MAX not offered) */
	uint32_t seg_max;  /* 0: no limit (SEG_MAX not offered) */
	uint32_t blk_size; /* 0: not offered */
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
};

struct blk_req_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* The data of DISCARD and WRITE_ZEROES: one range (virtio_blk_discard_write_zeroes). */
struct blk_range {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* One request slot: what the device reads and writes besides the caller's data. */
struct blk_slot {
	struct blk_req_header header;
	struct blk_range range;
	uint8_t status; /* written by the device: read it through a volatile access */
	bool busy;
	uint16_t head;     /* virtq chain head while busy */
	uint32_t writable; /* device-writable bytes of the chain (data and status) */
};

struct blk {
	struct virtio_dev dev;
	struct virtq queue;
	struct blk_config cfg;
	/* Offered by the device (and accepted). */
	bool ro, flush, discard, write_zeroes;
	uint32_t in_flight;
	struct blk_slot slots[BLK_SLOTS];
	char error[BLK_ERROR_MAX];
};

/* Opens the device, negotiates, reads its configuration, sets up queue 0, DRIVER_OK. CPL0. */
bool blk_open(struct blk *b, const struct pci_device *pci, struct virtq_mem *ring);
/* Resets the device (the ring memory is free again). CPL0. */
void blk_close(struct blk *b);

/*
 * True when a request with len bytes of data can start now (a free slot and enough free
 * descriptors); otherwise finish one first.
 */
bool blk_can_start(const struct blk *b, uint32_t len);
/*
 * Starts a request and notifies the device; returns its slot, or -1 (b->error says why).
 * IN and GET_ID: the device writes data; OUT: it reads data; FLUSH: no data (NULL, 0).
 */
int blk_start(struct blk *b, uint32_t type, uint64_t sector, void *data, uint32_t len);
/* DISCARD or WRITE_ZEROES of count sectors from sector, as one range (flags 0). */
int blk_start_range(struct blk *b, uint32_t type, uint64_t sector, uint32_t count);
/*
 * Waits (BLK_TIMEOUT_US) for the next completion, frees its slot and returns it, with the
 * status byte the device wrote in *status; -1 on timeout or a bad completion (b->error).
 */
int blk_finish_one(struct blk *b, uint8_t *status);
/* blk_start and waits for that request (nothing else may be in flight); status or -1. */
int blk_do(struct blk *b, uint32_t type, uint64_t sector, void *data, uint32_t len);
/* blk_start_range and waits for it; status or -1. */
int blk_do_range(struct blk *b, uint32_t type, uint64_t sector, uint32_t count);

/* "OK", "IOERR", "UNSUPP" or "unknown". */
const char *blk_status_name(uint8_t status);

#endif
