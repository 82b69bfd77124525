#include "virtio.h"

#include <stdarg.h>
#include <stddef.h>

#include "console.h"
#include "io.h"
#include "timer.h"

/* virtio_pci_cap (virtio 1.2, 4.1.4): offsets inside a vendor-specific capability. */
#define CAP_LEN 2
#define CAP_CFG_TYPE 3
#define CAP_BAR 4
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_NOTIFY_MULTIPLIER 16
#define CAP_MIN_LEN 16
#define CAP_NOTIFY_MIN_LEN 20

#define CFG_TYPE_COMMON 1
#define CFG_TYPE_NOTIFY 2
#define CFG_TYPE_ISR 3
#define CFG_TYPE_DEVICE 4

/* virtio_pci_common_cfg (virtio 1.2, 4.1.4.3). */
#define COMMON_DEVICE_FEATURE_SELECT 0x00
#define COMMON_DEVICE_FEATURE 0x04
#define COMMON_DRIVER_FEATURE_SELECT 0x08
#define COMMON_DRIVER_FEATURE 0x0C
#define COMMON_NUM_QUEUES 0x12
#define COMMON_DEVICE_STATUS 0x14
#define COMMON_CONFIG_GENERATION 0x15
#define COMMON_QUEUE_SELECT 0x16
#define COMMON_QUEUE_SIZE 0x18
#define COMMON_QUEUE_MSIX_VECTOR 0x1A
#define COMMON_QUEUE_ENABLE 0x1C
#define COMMON_QUEUE_NOTIFY_OFF 0x1E
#define COMMON_QUEUE_DESC 0x20
#define COMMON_QUEUE_DRIVER 0x28
#define COMMON_QUEUE_DEVICE 0x30
/* Everything up to and including queue_device. */
#define COMMON_MIN_LEN 0x38

_Static_assert(sizeof(struct virtq_mem) == 4096, "one page of rings per queue");

#define VIRTIO_MSI_NO_VECTOR 0xFFFF
#define PCI_SUBSYSTEM_ID 0x2E
#define RESET_TIMEOUT_US 100000u
/* Reads of a configuration field before giving up on a config_generation that keeps moving. */
#define CONFIG_READ_ATTEMPTS 16

__attribute__((format(printf, 2, 3))) static bool set_error(struct virtio_dev *dev,
							    const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	kvsnprintf(dev->error, sizeof(dev->error), fmt, args);
	va_end(args);
	return false;
}

uint8_t virtio_status(const struct virtio_dev *dev)
{
	return mmio_read8(dev->common + COMMON_DEVICE_STATUS);
}

static void add_status(struct virtio_dev *dev, uint8_t bits)
{
	mmio_write8(dev->common + COMMON_DEVICE_STATUS, virtio_status(dev) | bits);
}

/* Tells the device the driver gave up (virtio 1.2, 3.1.1), keeping dev->error. */
static bool give_up(struct virtio_dev *dev)
{
	add_status(dev, VIRTIO_STATUS_FAILED);
	return false;
}

bool virtio_pci_matches(const struct pci_device *pci, uint16_t virtio_id)
{
	if (pci->vendor != VIRTIO_PCI_VENDOR)
		return false;
	if (pci->device == VIRTIO_PCI_MODERN_ID(virtio_id))
		return true;
	return pci->device >= VIRTIO_PCI_TRANSITIONAL_FIRST &&
	       pci->device <= VIRTIO_PCI_TRANSITIONAL_LAST &&
	       pci_read16(pci->bdf, PCI_SUBSYSTEM_ID) == virtio_id;
}

const struct pci_device *virtio_find(unsigned pci_flags, uint16_t virtio_id)
{
	const struct pci_topology *topo = pci_scan(pci_flags);
	for (uint32_t i = 0; i < topo->count; i++) {
		if (virtio_pci_matches(&topo->devices[i], virtio_id))
			return &topo->devices[i];
	}
	return NULL;
}

/* The MMIO range a capability points at, checked against its BAR. */
static bool cap_region(struct virtio_dev *dev, uint8_t cap, uintptr_t *addr, uint32_t *len)
{
	const struct pci_device *pci = dev->pci;
	uint8_t bar_index = pci_read8(pci->bdf, cap + CAP_BAR);
	uint32_t offset = pci_read32(pci->bdf, cap + CAP_OFFSET);
	uint32_t length = pci_read32(pci->bdf, cap + CAP_LENGTH);
	uint8_t type = pci_read8(pci->bdf, cap + CAP_CFG_TYPE);
	if (bar_index >= PCI_BAR_COUNT)
		return set_error(dev, "capability type %u names BAR %u", type, bar_index);
	const struct pci_bar *bar = &pci->bars[bar_index];
	if (bar->kind != PCI_BAR_MEM32 && bar->kind != PCI_BAR_MEM64)
		return set_error(dev, "capability type %u is in BAR %u, not a memory BAR", type,
				 bar_index);
	if ((uint64_t)offset + length > bar->size)
		return set_error(dev, "capability type %u: 0x%x+0x%x exceeds BAR %u (0x%llx bytes)",
				 type, offset, length, bar_index, (unsigned long long)bar->size);
	*addr = (uintptr_t)(bar->base + offset);
	*len = length;
	return true;
}

/* Takes the first usable capability of each type the core uses (virtio 1.2, 4.1.4). */
static void use_cap(struct virtio_dev *dev, uint8_t cap)
{
	uint16_t bdf = dev->pci->bdf;
	uint8_t cap_len = pci_read8(bdf, cap + CAP_LEN);
	uint8_t type = pci_read8(bdf, cap + CAP_CFG_TYPE);
	uintptr_t addr = 0;
	uint32_t len = 0;
	if (cap_len < CAP_MIN_LEN || type < CFG_TYPE_COMMON || type > CFG_TYPE_DEVICE)
		return;
	if ((type == CFG_TYPE_COMMON && dev->common != 0) ||
	    (type == CFG_TYPE_NOTIFY && dev->notify_base != 0) ||
	    (type == CFG_TYPE_ISR && dev->isr != 0) ||
	    (type == CFG_TYPE_DEVICE && dev->device_cfg != 0))
		return;
	if (!cap_region(dev, cap, &addr, &len))
		return;
	if (type == CFG_TYPE_COMMON && len >= COMMON_MIN_LEN)
		dev->common = addr;
	if (type == CFG_TYPE_NOTIFY && cap_len >= CAP_NOTIFY_MIN_LEN) {
		dev->notify_base = addr;
		dev->notify_len = len;
		dev->notify_multiplier = pci_read32(bdf, cap + CAP_NOTIFY_MULTIPLIER);
	}
	if (type == CFG_TYPE_ISR && len >= 1)
		dev->isr = addr;
	if (type == CFG_TYPE_DEVICE) {
		dev->device_cfg = addr;
		dev->device_cfg_len = len;
	}
}

static bool find_caps(struct virtio_dev *dev)
{
	const struct pci_device *pci = dev->pci;
	for (uint8_t i = 0; i < pci->cap_count; i++) {
		if (pci->cap_ids[i] == PCI_CAP_ID_VENDOR)
			use_cap(dev, pci->cap_offsets[i]);
	}
	const char *missing = dev->common == 0        ? "common"
			      : dev->notify_base == 0 ? "notify"
			      : dev->isr == 0         ? "ISR"
						      : NULL;
	if (missing == NULL)
		return true;
	if (dev->error[0] != '\0')
		return false; /* cap_region said why */
	return set_error(dev, "no usable virtio %s configuration capability", missing);
}

bool virtio_reset(struct virtio_dev *dev)
{
	struct deadline d;
	mmio_write8(dev->common + COMMON_DEVICE_STATUS, 0);
	deadline_start(&d, RESET_TIMEOUT_US);
	for (;;) {
		uint8_t status = virtio_status(dev);
		if (status == 0)
			return true;
		if (deadline_expired(&d))
			return set_error(dev, "device status stays 0x%02x after reset", status);
	}
}

static uint32_t read_feature_word(struct virtio_dev *dev, uint32_t word)
{
	mmio_write32(dev->common + COMMON_DEVICE_FEATURE_SELECT, word);
	return mmio_read32(dev->common + COMMON_DEVICE_FEATURE);
}

bool virtio_open(struct virtio_dev *dev, const struct pci_device *pci)
{
	*dev = (struct virtio_dev){.pci = pci};
	if (pci->problem != NULL)
		return set_error(dev, "BAR %u: %s", pci->problem_bar, pci->problem);
	if (!find_caps(dev))
		return false;
	pci_enable(pci->bdf, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	if (!virtio_reset(dev))
		return false;
	add_status(dev, VIRTIO_STATUS_ACKNOWLEDGE);
	add_status(dev, VIRTIO_STATUS_DRIVER);
	dev->num_queues = mmio_read16(dev->common + COMMON_NUM_QUEUES);
	dev->device_features = read_feature_word(dev, 0) | (uint64_t)read_feature_word(dev, 1) << 32;
	return true;
}

bool virtio_negotiate(struct virtio_dev *dev, uint64_t wanted)
{
	uint64_t offered = dev->device_features;
	uint64_t accepted = offered & (wanted | VIRTIO_F_VERSION_1 | VIRTIO_F_ACCESS_PLATFORM) &
			    ~(VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC);
	if (!(offered & VIRTIO_F_VERSION_1)) {
		set_error(dev, "device does not offer VERSION_1 (features 0x%llx)",
			  (unsigned long long)offered);
		return give_up(dev);
	}
	mmio_write32(dev->common + COMMON_DRIVER_FEATURE_SELECT, 0);
	mmio_write32(dev->common + COMMON_DRIVER_FEATURE, (uint32_t)accepted);
	mmio_write32(dev->common + COMMON_DRIVER_FEATURE_SELECT, 1);
	mmio_write32(dev->common + COMMON_DRIVER_FEATURE, (uint32_t)(accepted >> 32));
	add_status(dev, VIRTIO_STATUS_FEATURES_OK);
	if (!(virtio_status(dev) & VIRTIO_STATUS_FEATURES_OK)) {
		set_error(dev, "device cleared FEATURES_OK for features 0x%llx (offered 0x%llx)",
			  (unsigned long long)accepted, (unsigned long long)offered);
		return give_up(dev);
	}
	dev->features = accepted;
	return true;
}

static void write_address(uintptr_t reg, const volatile void *ptr)
{
	uint64_t addr = (uintptr_t)ptr;
	/* 64-bit fields may be written as two 32-bit halves, low first (virtio 1.2, 4.1.3.1). */
	mmio_write32(reg, (uint32_t)addr);
	mmio_write32(reg + 4, (uint32_t)(addr >> 32));
}

/* Empty rings and every descriptor on the free list. */
static void reset_rings(struct virtq *q)
{
	struct virtq_mem *mem = q->mem;
	mem->avail.flags = 0;
	mem->avail.idx = 0;
	mem->used.flags = 0;
	mem->used.idx = 0;
	for (uint16_t i = 0; i < q->size; i++) {
		mem->desc[i].next = (uint16_t)(i + 1);
		q->chain_len[i] = 0;
	}
	q->free_head = 0;
	q->num_free = q->size;
	q->avail_idx = 0;
	q->last_used = 0;
}

bool virtq_init(struct virtio_dev *dev, struct virtq *q, uint16_t index, struct virtq_mem *mem)
{
	uintptr_t common = dev->common;
	if (index >= dev->num_queues) {
		set_error(dev, "queue %u requested, the device has %u", index, dev->num_queues);
		return give_up(dev);
	}
	mmio_write16(common + COMMON_QUEUE_SELECT, index);
	uint16_t max = mmio_read16(common + COMMON_QUEUE_SIZE);
	uint64_t notify_at =
		(uint64_t)mmio_read16(common + COMMON_QUEUE_NOTIFY_OFF) * dev->notify_multiplier;
	if (max == 0 || mmio_read16(common + COMMON_QUEUE_ENABLE) != 0) {
		set_error(dev, "queue %u is unavailable (size %u) or already enabled", index, max);
		return give_up(dev);
	}
	if (notify_at + 2 > dev->notify_len) {
		set_error(dev, "queue %u notifies at 0x%llx, past the notify region (0x%x bytes)",
			  index, (unsigned long long)notify_at, dev->notify_len);
		return give_up(dev);
	}
	uint16_t size = VIRTQ_MAX_SIZE;
	while (size > max)
		size >>= 1; /* split queues need a power of two */
	*q = (struct virtq){.mem = mem, .index = index, .size = size};
	q->notify = dev->notify_base + (uintptr_t)notify_at;
	reset_rings(q);
	mmio_write16(common + COMMON_QUEUE_SIZE, size);
	mmio_write16(common + COMMON_QUEUE_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR);
	write_address(common + COMMON_QUEUE_DESC, mem->desc);
	write_address(common + COMMON_QUEUE_DRIVER, &mem->avail);
	write_address(common + COMMON_QUEUE_DEVICE, &mem->used);
	mmio_write16(common + COMMON_QUEUE_ENABLE, 1);
	return true;
}

/* One read of a field, with accesses of the field's own width. */
static uint64_t config_read_once(uintptr_t addr, uint32_t width)
{
	switch (width) {
	case 1:
		return mmio_read8(addr);
	case 2:
		return mmio_read16(addr);
	case 4:
		return mmio_read32(addr);
	default:
		return mmio_read32(addr) | (uint64_t)mmio_read32(addr + 4) << 32;
	}
}

/* A naturally aligned field of 1, 2, 4 or 8 bytes inside the device configuration region. */
static bool config_field_ok(struct virtio_dev *dev, uint32_t offset, uint32_t width)
{
	if (width != 1 && width != 2 && width != 4 && width != 8)
		return set_error(dev, "configuration access of width %u", width);
	if (offset % width != 0)
		return set_error(dev, "configuration field at 0x%x is not %u-byte aligned", offset,
				 width);
	if (dev->device_cfg == 0 || (uint64_t)offset + width > dev->device_cfg_len)
		return set_error(dev,
				 "configuration field 0x%x+%u lies outside the device's %u-byte "
				 "configuration region",
				 offset, width, dev->device_cfg_len);
	return true;
}

bool virtio_config_write(struct virtio_dev *dev, uint32_t offset, uint32_t width, uint64_t value)
{
	if (!config_field_ok(dev, offset, width))
		return false;
	uintptr_t addr = dev->device_cfg + offset;
	switch (width) {
	case 1:
		mmio_write8(addr, (uint8_t)value);
		break;
	case 2:
		mmio_write16(addr, (uint16_t)value);
		break;
	case 4:
		mmio_write32(addr, (uint32_t)value);
		break;
	default:
		mmio_write32(addr, (uint32_t)value);
		mmio_write32(addr + 4, (uint32_t)(value >> 32));
		break;
	}
	return true;
}

bool virtio_config_read(struct virtio_dev *dev, uint32_t offset, uint32_t width, uint64_t *value)
{
	if (!config_field_ok(dev, offset, width))
		return false;
	for (int attempt = 0; attempt < CONFIG_READ_ATTEMPTS; attempt++) {
		uint8_t before = mmio_read8(dev->common + COMMON_CONFIG_GENERATION);
		uint64_t read = config_read_once(dev->device_cfg + offset, width);
		if (mmio_read8(dev->common + COMMON_CONFIG_GENERATION) == before) {
			*value = read;
			return true;
		}
	}
	return set_error(dev, "config_generation kept changing over %u reads of field 0x%x",
			 CONFIG_READ_ATTEMPTS, offset);
}

void virtio_driver_ok(struct virtio_dev *dev)
{
	add_status(dev, VIRTIO_STATUS_DRIVER_OK);
}

int virtq_add(struct virtq *q, const struct virtq_buf *bufs, uint16_t count)
{
	if (count == 0 || count > q->num_free)
		return -1;
	struct virtq_desc *desc = q->mem->desc;
	uint16_t head = q->free_head;
	uint16_t id = head;
	uint16_t tail = head;
	for (uint16_t i = 0; i < count; i++) {
		tail = id;
		desc[id].addr = (uintptr_t)bufs[i].addr;
		desc[id].len = bufs[i].len;
		/* The free list already links the chain: next is the following free descriptor. */
		desc[id].flags = (bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
				 (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0);
		id = desc[id].next;
	}
	q->free_head = id;
	q->num_free -= count;
	q->chain_len[head] = count;
	q->chain_tail[head] = tail;
	q->mem->avail.ring[q->avail_idx & (q->size - 1)] = head;
	/* The ring entry and the descriptors before the index (x86 keeps stores in order). */
	compiler_barrier();
	q->avail_idx++;
	*(volatile uint16_t *)&q->mem->avail.idx = q->avail_idx;
	return head;
}

void virtq_kick(const struct virtq *q)
{
	/*
	 * avail.idx (written by virtq_add) must be visible before used.flags is read, or a device
	 * that re-enables notifications and then checks avail.idx could miss this buffer: a
	 * store-load order, which x86 keeps only across a locked instruction (not mfence: KVM's
	 * instruction emulator, which runs CPL0 code on some hosts, does not implement it).
	 */
	__asm__ volatile("lock addl $0, (%%rsp)" : : : "memory", "cc");
	/* Without EVENT_IDX the driver should not notify while the device says it polls (2.7.10). */
	if (*(volatile uint16_t *)&q->mem->used.flags & VIRTQ_USED_F_NO_NOTIFY)
		return;
	mmio_write16(q->notify, q->index);
}

enum virtq_poll virtq_take_used(struct virtio_dev *dev, struct virtq *q,
				struct virtq_completion *out)
{
	volatile struct virtq_used *used = &q->mem->used;
	uint16_t used_idx = used->idx;
	if (used_idx == q->last_used)
		return VIRTQ_EMPTY;
	if ((uint16_t)(used_idx - q->last_used) > q->size) {
		set_error(dev, "queue %u: used.idx jumped from %u to %u", q->index, q->last_used,
			  used_idx);
		return VIRTQ_BAD;
	}
	/* The element after the index (x86 does not reorder loads). */
	compiler_barrier();
	volatile struct virtq_used_elem *elem = &used->ring[q->last_used & (q->size - 1)];
	uint32_t id = elem->id;
	uint32_t len = elem->len;
	q->last_used++;
	if (id >= q->size || q->chain_len[id] == 0) {
		set_error(dev, "queue %u: used id %u is not in flight", q->index, id);
		return VIRTQ_BAD;
	}
	q->mem->desc[q->chain_tail[id]].next = q->free_head;
	q->free_head = (uint16_t)id;
	q->num_free += q->chain_len[id];
	q->chain_len[id] = 0;
	out->head = (uint16_t)id;
	out->len = len;
	return VIRTQ_USED;
}

enum virtq_poll virtq_wait_used(struct virtio_dev *dev, struct virtq *q, uint32_t timeout_us,
				struct virtq_completion *out)
{
	struct deadline d;
	deadline_start(&d, timeout_us);
	for (;;) {
		enum virtq_poll result = virtq_take_used(dev, q, out);
		if (result != VIRTQ_EMPTY)
			return result;
		if (deadline_expired(&d))
			return VIRTQ_TIMEOUT;
	}
}
