#include "pci.h"

#include <stddef.h>

#include "acpi.h"
#include "io.h"
#include "layout.h"

#define PCI_CONFIG_ADDRESS 0xCF8
#define PCI_CONFIG_DATA 0xCFC
#define PCI_CONFIG_ENABLE 0x80000000u
/* Mechanism #1 reaches only the first 256 bytes of a function's config space. */
#define PCI_LEGACY_CONFIG_SIZE 256
#define PCI_ECAM_FUNCTION_SHIFT 12
#define PCI_ECAM_BUS_SHIFT 20
#define PCI_DEVICES_PER_BUS 32
#define PCI_FUNCTIONS 8
#define PCI_CAP_FIRST 0x40
/* A capability list cannot hold more entries than fit in 192 bytes of 4-byte headers. */
#define PCI_CAP_WALK_LIMIT 48
#define PCI_BAR_IO_FLAG 0x1u
#define PCI_BAR_MEM_TYPE_SHIFT 1
#define PCI_BAR_MEM_TYPE_64 2
#define PCI_BAR_PREFETCH 0x8u
#define PCI_BAR_IO_ADDR_MASK 0xFFFFFFFCu
#define PCI_BAR_MEM_ADDR_MASK 0xFFFFFFF0u
/* Memory BARs get at least a page each, so that no two devices share a page. */
#define PCI_MEM_MIN_ALIGN 0x1000ULL
#define MAPPED_LIMIT 0x100000000ULL
/* The top GiB of the identity map is uncached already (boot.S). */
#define UNCACHED_START 0xC0000000ULL
#define LARGE_PAGE_SHIFT 21
#define BUS_COUNT 256

/* The 2 MiB page directory entries of the identity map of 0-4 GiB (boot.S). */
extern uint64_t page_directories[];

static struct pci_topology topo;
static bool scanned;
static bool reassign_all;
static uint64_t mem_cursor;
static uint32_t io_cursor;

static uintptr_t ecam_address(uint16_t bdf, uint16_t offset)
{
	return (uintptr_t)(topo.ecam_base + ((uint64_t)bdf << PCI_ECAM_FUNCTION_SHIFT) + offset);
}

static bool config_reachable(uint16_t bdf, uint16_t offset)
{
	if (topo.ecam)
		return (bdf >> 8) <= topo.ecam_end_bus && offset < (1u << PCI_ECAM_FUNCTION_SHIFT);
	return offset < PCI_LEGACY_CONFIG_SIZE;
}

uint32_t pci_read32(uint16_t bdf, uint16_t offset)
{
	offset &= ~3u;
	if (!config_reachable(bdf, offset))
		return 0xFFFFFFFFu;
	if (topo.ecam)
		return mmio_read32(ecam_address(bdf, offset));
	outl(PCI_CONFIG_ADDRESS, PCI_CONFIG_ENABLE | (uint32_t)bdf << 8 | offset);
	return inl(PCI_CONFIG_DATA);
}

void pci_write32(uint16_t bdf, uint16_t offset, uint32_t value)
{
	offset &= ~3u;
	if (!config_reachable(bdf, offset))
		return;
	if (topo.ecam) {
		mmio_write32(ecam_address(bdf, offset), value);
		return;
	}
	outl(PCI_CONFIG_ADDRESS, PCI_CONFIG_ENABLE | (uint32_t)bdf << 8 | offset);
	outl(PCI_CONFIG_DATA, value);
}

uint8_t pci_read8(uint16_t bdf, uint16_t offset)
{
	return (uint8_t)(pci_read32(bdf, offset) >> (8 * (offset & 3)));
}

uint16_t pci_read16(uint16_t bdf, uint16_t offset)
{
	return (uint16_t)(pci_read32(bdf, offset) >> (8 * (offset & 2)));
}

void pci_enable(uint16_t bdf, uint16_t command_bits)
{
	uint16_t command = pci_read16(bdf, PCI_COMMAND);
	/* The upper half (status) is written as 0: its bits are write-1-to-clear. */
	pci_write32(bdf, PCI_COMMAND, command | command_bits);
}

void pci_format_bdf(uint16_t bdf, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t bus = bdf >> 8;
	uint8_t dev = (bdf >> 3) & 0x1F;
	buf[0] = hex[bus >> 4];
	buf[1] = hex[bus & 0xF];
	buf[2] = ':';
	buf[3] = hex[dev >> 4];
	buf[4] = hex[dev & 0xF];
	buf[5] = '.';
	buf[6] = hex[bdf & 7];
	buf[7] = '\0';
}

static void write_cr3(uint64_t value)
{
	__asm__ volatile("mov %0, %%cr3" : : "r"(value) : "memory");
}

/*
 * ECAM is MMIO: below the identity map's uncached top GiB (QEMU q35 puts it at 0xB0000000),
 * its 2 MiB pages are switched to uncached before the first access.
 */
static void map_uncached(uint64_t base, uint64_t len)
{
	uint64_t end = base + len < UNCACHED_START ? base + len : UNCACHED_START;
	uint64_t page = base >> LARGE_PAGE_SHIFT;
	if (base >= UNCACHED_START)
		return;
	for (; (page << LARGE_PAGE_SHIFT) < end; page++)
		page_directories[page] |= PDE_PCD | PDE_PWT;
	write_cr3(read_cr3());
}

static void choose_mechanism(bool force_ports)
{
	const struct platform *p = platform();
	topo.ecam = p->have_mcfg && !force_ports;
	if (!topo.ecam)
		return;
	topo.ecam_base = p->ecam_base;
	topo.ecam_end_bus = p->ecam_end_bus;
	map_uncached(p->ecam_base, ((uint64_t)p->ecam_end_bus + 1) << PCI_ECAM_BUS_SHIFT);
}

static void read_caps(struct pci_device *d)
{
	if (!(pci_read16(d->bdf, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return;
	uint8_t offset = pci_read8(d->bdf, PCI_CAP_PTR) & 0xFC;
	for (int i = 0; offset >= PCI_CAP_FIRST && i < PCI_CAP_WALK_LIMIT; i++) {
		uint32_t header = pci_read32(d->bdf, offset);
		if (d->cap_count < PCI_MAX_CAPS) {
			d->cap_ids[d->cap_count] = (uint8_t)header;
			d->cap_offsets[d->cap_count] = offset;
			d->cap_count++;
		}
		offset = (uint8_t)(header >> 8) & 0xFC;
	}
}

/* Writes all-ones to a BAR dword and restores it; returns what read back. */
static uint32_t probe_dword(uint16_t bdf, uint16_t offset, uint32_t *original)
{
	*original = pci_read32(bdf, offset);
	pci_write32(bdf, offset, 0xFFFFFFFFu);
	uint32_t mask = pci_read32(bdf, offset);
	pci_write32(bdf, offset, *original);
	return mask;
}

/* Sizes BAR i; returns true when it is 64-bit and BAR i + 1 was its upper half. */
static bool size_bar(struct pci_device *d, uint8_t i, uint8_t count)
{
	struct pci_bar *bar = &d->bars[i];
	uint16_t offset = PCI_BAR0 + 4 * i;
	uint32_t original;
	uint32_t mask = probe_dword(d->bdf, offset, &original);
	if (original & PCI_BAR_IO_FLAG) {
		uint32_t bits = mask & PCI_BAR_IO_ADDR_MASK;
		if (bits == 0)
			return false;
		if ((bits & 0xFFFF0000u) == 0)
			bits |= 0xFFFF0000u; /* a 16-bit decoder: the upper half reads 0 */
		bar->kind = PCI_BAR_IO;
		bar->base = original & PCI_BAR_IO_ADDR_MASK;
		bar->size = (uint32_t)(~bits + 1);
		return false;
	}
	uint64_t bits = mask & PCI_BAR_MEM_ADDR_MASK;
	bool is64 = ((original >> PCI_BAR_MEM_TYPE_SHIFT) & 3) == PCI_BAR_MEM_TYPE_64 &&
		    i + 1 < count;
	bar->base = original & PCI_BAR_MEM_ADDR_MASK;
	bar->prefetchable = original & PCI_BAR_PREFETCH;
	if (is64) {
		uint32_t original_high;
		bits |= (uint64_t)probe_dword(d->bdf, offset + 4, &original_high) << 32;
		bar->base |= (uint64_t)original_high << 32;
	} else {
		bits |= 0xFFFFFFFF00000000ULL;
	}
	if (is64 ? bits == 0 : (uint32_t)bits == 0) {
		bar->base = 0;
		bar->prefetchable = false;
		return is64;
	}
	bar->kind = is64 ? PCI_BAR_MEM64 : PCI_BAR_MEM32;
	bar->size = ~bits + 1;
	return is64;
}

static uint8_t bar_count(const struct pci_device *d)
{
	if (d->header_type == PCI_HEADER_TYPE_NORMAL)
		return 6;
	return d->header_type == PCI_HEADER_TYPE_BRIDGE ? 2 : 0;
}

/* Decoding is off while a BAR holds all-ones, so it never claims addresses it should not. */
static void size_bars(struct pci_device *d)
{
	uint8_t count = bar_count(d);
	if (count == 0)
		return;
	uint16_t command = pci_read16(d->bdf, PCI_COMMAND);
	pci_write32(d->bdf, PCI_COMMAND, command & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
	for (uint8_t i = 0; i < count; i++) {
		if (size_bar(d, i, count))
			i++;
	}
	pci_write32(d->bdf, PCI_COMMAND, command);
}

/* Records one function; returns its raw header type byte (multi-function bit included). */
static uint8_t add_function(uint16_t bdf, uint32_t ids)
{
	uint8_t header = pci_read8(bdf, PCI_HEADER_TYPE);
	if (topo.count >= PCI_MAX_DEVICES) {
		topo.truncated = true;
		return header;
	}
	struct pci_device *d = &topo.devices[topo.count++];
	uint32_t class_revision = pci_read32(bdf, PCI_CLASS_REVISION);
	d->bdf = bdf;
	d->vendor = (uint16_t)ids;
	d->device = (uint16_t)(ids >> 16);
	d->revision = (uint8_t)class_revision;
	d->prog_if = (uint8_t)(class_revision >> 8);
	d->subclass = (uint8_t)(class_revision >> 16);
	d->class_code = (uint8_t)(class_revision >> 24);
	d->header_type = header & ~PCI_HEADER_MULTI_FUNCTION;
	if (d->header_type == PCI_HEADER_TYPE_BRIDGE)
		d->secondary_bus = pci_read8(bdf, PCI_SECONDARY_BUS);
	read_caps(d);
	size_bars(d);
	return header;
}

static bool present(uint32_t ids)
{
	uint16_t vendor = (uint16_t)ids;
	return vendor != 0xFFFF && vendor != 0x0000;
}

static void scan_bus(uint8_t bus)
{
	for (uint16_t dev = 0; dev < PCI_DEVICES_PER_BUS; dev++) {
		uint16_t bdf = (uint16_t)(bus << 8 | dev << 3);
		uint32_t ids = pci_read32(bdf, PCI_VENDOR_ID);
		if (!present(ids))
			continue;
		if (!(add_function(bdf, ids) & PCI_HEADER_MULTI_FUNCTION))
			continue;
		for (uint16_t fn = 1; fn < PCI_FUNCTIONS; fn++) {
			ids = pci_read32(bdf | fn, PCI_VENDOR_ID);
			if (present(ids))
				add_function(bdf | fn, ids);
		}
	}
}

/*
 * Follows bridges whose secondary bus firmware already numbered (the list grows while it is
 * walked, so bridges behind bridges are found too). Each bus is scanned once.
 */
static void scan_behind_bridges(void)
{
	uint8_t seen[BUS_COUNT / 8] = {1}; /* bus 0 */
	for (uint32_t i = 0; i < topo.count; i++) {
		uint8_t bus = topo.devices[i].secondary_bus;
		if (topo.devices[i].header_type != PCI_HEADER_TYPE_BRIDGE || bus == 0)
			continue;
		if ((seen[bus / 8] & (1u << (bus % 8))) || (topo.ecam && bus > topo.ecam_end_bus))
			continue;
		seen[bus / 8] |= (uint8_t)(1u << (bus % 8));
		scan_bus(bus);
	}
}

static bool needs_address(const struct pci_bar *bar)
{
	if (reassign_all)
		return true;
	if (bar->kind == PCI_BAR_IO)
		return bar->base == 0;
	uint64_t end = bar->base + bar->size;
	return bar->base == 0 || end > MAPPED_LIMIT || end < bar->base;
}

/* Starts the cursors above every BAR already assigned inside this guest's windows. */
static void reserve_assigned(void)
{
	mem_cursor = PCI_MEM_WINDOW_START;
	io_cursor = PCI_IO_WINDOW_START;
	for (uint32_t i = 0; i < topo.count; i++) {
		for (int b = 0; b < PCI_BAR_COUNT; b++) {
			const struct pci_bar *bar = &topo.devices[i].bars[b];
			uint64_t end = bar->base + bar->size;
			if (bar->kind == PCI_BAR_NONE || needs_address(bar))
				continue;
			if (bar->kind == PCI_BAR_IO && bar->base >= PCI_IO_WINDOW_START &&
			    bar->base < PCI_IO_WINDOW_END && end > io_cursor)
				io_cursor = (uint32_t)end;
			if (bar->kind != PCI_BAR_IO && bar->base >= PCI_MEM_WINDOW_START &&
			    bar->base < PCI_MEM_WINDOW_END && end > mem_cursor)
				mem_cursor = end;
		}
	}
}

static uint64_t align_up(uint64_t value, uint64_t align)
{
	return (value + align - 1) & ~(align - 1);
}

/* Gives BAR i an address in this guest's window; false (and d->problem) when it cannot. */
static bool place_bar(struct pci_device *d, uint8_t i)
{
	struct pci_bar *bar = &d->bars[i];
	bool io = bar->kind == PCI_BAR_IO;
	uint64_t cursor = io ? io_cursor : mem_cursor;
	uint64_t limit = io ? PCI_IO_WINDOW_END : PCI_MEM_WINDOW_END;
	uint64_t align = !io && bar->size < PCI_MEM_MIN_ALIGN ? PCI_MEM_MIN_ALIGN : bar->size;
	uint64_t base = align_up(cursor, align);
	d->problem_bar = i;
	if ((d->bdf >> 8) != 0) {
		/* Its bridge's windows would have to be programmed too. */
		d->problem = "behind a bridge (this guest does not program bridge windows)";
		return false;
	}
	if (bar->size > limit || base < cursor || base > limit - bar->size) {
		d->problem = "no room in the BAR window";
		return false;
	}
	uint16_t offset = PCI_BAR0 + 4 * i;
	pci_write32(d->bdf, offset, (uint32_t)base);
	if (bar->kind == PCI_BAR_MEM64)
		pci_write32(d->bdf, offset + 4, (uint32_t)(base >> 32));
	bar->base = base;
	bar->placed = true;
	topo.placed_bars++;
	if (io)
		io_cursor = (uint32_t)(base + bar->size);
	else
		mem_cursor = base + bar->size;
	return true;
}

/*
 * Places what needs an address, with decoding off meanwhile, then turns on decoding for the
 * kinds of BAR present. Decoding stays off when a BAR gets no address.
 */
static void place_and_enable(struct pci_device *d)
{
	uint16_t enable = 0;
	bool placing = false;
	for (uint8_t i = 0; i < PCI_BAR_COUNT; i++) {
		const struct pci_bar *bar = &d->bars[i];
		if (bar->kind == PCI_BAR_NONE)
			continue;
		enable |= bar->kind == PCI_BAR_IO ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
		placing |= needs_address(bar);
	}
	if (enable == 0)
		return;
	uint16_t command = pci_read16(d->bdf, PCI_COMMAND);
	if (placing) {
		pci_write32(d->bdf, PCI_COMMAND, command & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
		for (uint8_t i = 0; i < PCI_BAR_COUNT; i++) {
			const struct pci_bar *bar = &d->bars[i];
			if (bar->kind != PCI_BAR_NONE && needs_address(bar) && !place_bar(d, i))
				return;
		}
	}
	/* The status half is written as 0: its bits are write-1-to-clear. */
	pci_write32(d->bdf, PCI_COMMAND, command | enable);
}

const struct pci_topology *pci_scan(unsigned flags)
{
	if (scanned)
		return &topo;
	scanned = true;
	reassign_all = flags & PCI_SCAN_REASSIGN;
	choose_mechanism(flags & PCI_SCAN_PORTS);
	scan_bus(0);
	scan_behind_bridges();
	reserve_assigned();
	for (uint32_t i = 0; i < topo.count; i++)
		place_and_enable(&topo.devices[i]);
	return &topo;
}

const struct pci_device *pci_find(uint16_t vendor, uint16_t device)
{
	for (uint32_t i = 0; i < topo.count; i++) {
		if (topo.devices[i].vendor == vendor && topo.devices[i].device == device)
			return &topo.devices[i];
	}
	return NULL;
}
