/*
 * A small virtio 1.x driver core: the modern PCI transport (virtio 1.2, 4.1) and split
 * virtqueues (2.7), polled (no interrupts: MSI-X stays off, vectors are VIRTIO_MSI_NO_VECTOR).
 * Device drivers (virtio_rng.c; later blk, net, vsock, console) use it like this:
 *
 *   virtio_open(&dev, pci)          reset, ACKNOWLEDGE | DRIVER, bus mastering on
 *   virtio_negotiate(&dev, wanted)  device-specific features wanted; VERSION_1 is required
 *   virtq_init(&dev, &q, 0, &mem)   for each queue, with caller-owned ring memory
 *   virtio_config_read(&dev, offset, width, &value)   device-specific configuration fields
 *   virtio_config_write(&dev, offset, width, value)   (the few the driver writes)
 *   virtio_driver_ok(&dev)
 *   virtq_add(&q, bufs, n); virtq_kick(&q); virtq_wait_used(&q, timeout_us, &used)
 *   virtio_reset(&dev)              when done (also frees the rings for reuse)
 *
 * Functions that can fail return false and leave a reason in dev->error. Guest-physical
 * addresses are the pointers themselves (identity map); buffers must lie below 4 GiB in RAM.
 */
#ifndef OXGUEST_VIRTIO_H
#define OXGUEST_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"

#define VIRTIO_PCI_VENDOR 0x1AF4
/* Modern (virtio 1.x only) PCI device IDs are 0x1040 + the virtio device ID. */
#define VIRTIO_PCI_MODERN_ID(id) (0x1040 + (id))
/* Transitional devices (legacy and modern) have IDs 0x1000-0x103F. */
#define VIRTIO_PCI_TRANSITIONAL_FIRST 0x1000
#define VIRTIO_PCI_TRANSITIONAL_LAST 0x103F

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_VSOCK 19

/* Device-independent feature bits this core knows (virtio 1.2, 6). */
#define VIRTIO_F_INDIRECT_DESC (1ULL << 28)
#define VIRTIO_F_EVENT_IDX (1ULL << 29)
#define VIRTIO_F_VERSION_1 (1ULL << 32)
#define VIRTIO_F_ACCESS_PLATFORM (1ULL << 33)

/* Device status bits (virtio 1.2, 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* Largest queue this core sets up: its rings fit one 4 KiB page (struct virtq_mem). */
#define VIRTQ_MAX_SIZE 64

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
/* In used.flags: the device is processing the queue and needs no notification. */
#define VIRTQ_USED_F_NO_NOTIFY 1

#define VIRTIO_ERROR_MAX 120

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[VIRTQ_MAX_SIZE]; /* then used_event, unused without EVENT_IDX */
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[VIRTQ_MAX_SIZE]; /* then avail_event */
};

/* The three rings of one queue (alignment: descriptors 16, available 2, used 4). */
struct virtq_mem {
	struct virtq_desc desc[VIRTQ_MAX_SIZE];
	struct virtq_avail avail;
	uint16_t avail_used_event;
	struct virtq_used used __attribute__((aligned(64)));
	uint16_t used_avail_event;
} __attribute__((aligned(4096)));

struct virtq {
	struct virtq_mem *mem;
	uint16_t index;
	uint16_t size;      /* a power of two, at most VIRTQ_MAX_SIZE */
	uint16_t free_head; /* free descriptors are chained through desc[].next */
	uint16_t num_free;
	uint16_t avail_idx; /* next value of avail.idx */
	uint16_t last_used; /* used.idx consumed so far */
	uintptr_t notify;   /* where the queue index is written to notify the device */
	/* Per chain head: descriptors in the chain (0: not in flight) and its last descriptor. */
	uint16_t chain_len[VIRTQ_MAX_SIZE];
	uint16_t chain_tail[VIRTQ_MAX_SIZE];
};

struct virtio_dev {
	const struct pci_device *pci;
	uintptr_t common;
	uintptr_t notify_base;
	uint32_t notify_multiplier;
	uint32_t notify_len;
	uintptr_t isr;
	uintptr_t device_cfg; /* 0: the device has no device-specific configuration */
	uint32_t device_cfg_len;
	uint16_t num_queues;
	uint64_t device_features;
	uint64_t features; /* negotiated */
	char error[VIRTIO_ERROR_MAX];
};

/* One buffer of a descriptor chain. */
struct virtq_buf {
	const void *addr;
	uint32_t len;
	bool device_writes; /* the device writes it (VIRTQ_DESC_F_WRITE) */
};

struct virtq_completion {
	uint16_t head; /* what virtq_add returned for the chain */
	uint32_t len;  /* bytes the device wrote into the chain's device-writable buffers */
};

enum virtq_poll {
	VIRTQ_EMPTY,   /* nothing used yet */
	VIRTQ_USED,    /* *out holds a completion */
	VIRTQ_BAD,     /* the device returned a head that is not in flight (dev->error says) */
	VIRTQ_TIMEOUT, /* virtq_wait_used only */
};

/* True for 1af4:(0x1040 + id) and transitional 1af4 devices (their modern interface is used). */
bool virtio_pci_matches(const struct pci_device *pci, uint16_t virtio_id);
/* The first device pci_scan(pci_flags) finds that virtio_pci_matches virtio_id, or NULL. */
const struct pci_device *virtio_find(unsigned pci_flags, uint16_t virtio_id);

bool virtio_open(struct virtio_dev *dev, const struct pci_device *pci);
/*
 * Accepts (device features & wanted) plus VERSION_1 (required) and ACCESS_PLATFORM when
 * offered (DMA is untranslated here, which that bit allows); sets FEATURES_OK and checks that
 * the device kept it. EVENT_IDX and INDIRECT_DESC are never accepted: this core has neither.
 */
bool virtio_negotiate(struct virtio_dev *dev, uint64_t wanted);
/* Sets up queue index with min(device maximum, VIRTQ_MAX_SIZE) entries, rounded to 2^n. */
bool virtq_init(struct virtio_dev *dev, struct virtq *q, uint16_t index, struct virtq_mem *mem);
void virtio_driver_ok(struct virtio_dev *dev);
/*
 * Reads a field of the device-specific configuration (virtio 1.2, 4.1.4.6): width 1, 2, 4 or 8
 * bytes at a naturally aligned offset, with accesses of the field's width (8-byte fields as two
 * 32-bit halves, low first), retried while config_generation changes so that a multi-access
 * read is consistent (4.1.4.3.1). False (dev->error says why) for a field outside the
 * device's configuration region, a bad width or alignment, or a generation that never settles.
 */
bool virtio_config_read(struct virtio_dev *dev, uint32_t offset, uint32_t width, uint64_t *value);
/*
 * Writes a field of the device-specific configuration (the few the driver owns, like the
 * balloon's actual): same widths, alignment and bounds as virtio_config_read, one access of
 * the field's width (8-byte fields as two 32-bit halves, low first).
 */
bool virtio_config_write(struct virtio_dev *dev, uint32_t offset, uint32_t width, uint64_t value);
/* Status 0, then waits (bounded) until the device reads back 0. */
bool virtio_reset(struct virtio_dev *dev);
uint8_t virtio_status(const struct virtio_dev *dev);

/* Adds a chain of count buffers; returns its head, or -1 when too few descriptors are free. */
int virtq_add(struct virtq *q, const struct virtq_buf *bufs, uint16_t count);
/*
 * Notifies the device of new buffers, unless it set VIRTQ_USED_F_NO_NOTIFY (it is then
 * processing the queue and will see them before it stops; virtio 1.2, 2.7.10).
 */
void virtq_kick(const struct virtq *q);
/* Takes the next completion, if any, and frees its descriptors. */
enum virtq_poll virtq_take_used(struct virtio_dev *dev, struct virtq *q,
				struct virtq_completion *out);
/* virtq_take_used, polled until a completion arrives or timeout_us pass (PM timer). */
enum virtq_poll virtq_wait_used(struct virtio_dev *dev, struct virtq *q, uint32_t timeout_us,
				struct virtq_completion *out);

#endif
