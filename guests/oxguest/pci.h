/*
 * PCI configuration space, enumeration and BAR placement.
 *
 * Config space goes through ECAM when ACPI has an MCFG entry for segment 0 that decodes bus 0
 * (acpi.c), else through ports 0xCF8/0xCFC with 32-bit accesses only (offsets below 256).
 * pci_scan() enumerates bus 0 and the buses behind bridges that firmware already numbered,
 * sizes every BAR (decoding off while it writes all-ones), keeps addresses that firmware or the
 * VMM assigned and places the others itself: memory BARs upwards from PCI_MEM_WINDOW_START
 * (the docs/platform.md BAR window), I/O BARs upwards from PCI_IO_WINDOW_START, and also moves
 * 64-bit BARs that lie above 4 GiB (outside the guest's identity map) into the window. Then it
 * turns on memory (and I/O) decoding. Drivers turn on bus mastering themselves.
 * PCI_SCAN_REASSIGN places every BAR itself, ignoring what firmware chose: it exercises the
 * path a guest takes on a VMM that leaves BARs unassigned, on VMMs whose firmware assigns them.
 */
#ifndef OXGUEST_PCI_H
#define OXGUEST_PCI_H

#include <stdbool.h>
#include <stdint.h>

#define PCI_MAX_DEVICES 64
#define PCI_BAR_COUNT 6
#define PCI_MAX_CAPS 16

/* Where this guest places BARs that nobody assigned (docs/platform.md). */
#define PCI_MEM_WINDOW_START 0xC0000000ULL
#define PCI_MEM_WINDOW_END 0xE0000000ULL
#define PCI_IO_WINDOW_START 0xC000u
#define PCI_IO_WINDOW_END 0x10000u

/* Configuration header offsets and bits (PCI Local Bus 3.0, 6.1). */
#define PCI_VENDOR_ID 0x00
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_CLASS_REVISION 0x08
#define PCI_HEADER_TYPE 0x0E
#define PCI_BAR0 0x10
#define PCI_SECONDARY_BUS 0x19
#define PCI_CAP_PTR 0x34
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_HEADER_MULTI_FUNCTION 0x80
#define PCI_HEADER_TYPE_NORMAL 0
#define PCI_HEADER_TYPE_BRIDGE 1
#define PCI_CAP_ID_VENDOR 0x09

enum pci_bar_kind {
	PCI_BAR_NONE = 0, /* not implemented, or the upper half of a 64-bit BAR */
	PCI_BAR_IO,
	PCI_BAR_MEM32,
	PCI_BAR_MEM64,
};

struct pci_bar {
	uint8_t kind; /* enum pci_bar_kind */
	bool prefetchable;
	bool placed;  /* this guest chose the address (read 0, lay above 4 GiB, or REASSIGN) */
	uint64_t base;
	uint64_t size;
};

struct pci_device {
	uint16_t bdf; /* bus << 8 | device << 3 | function */
	uint16_t vendor;
	uint16_t device;
	uint8_t class_code;
	uint8_t subclass;
	uint8_t prog_if;
	uint8_t revision;
	uint8_t header_type; /* without the multi-function bit */
	uint8_t secondary_bus; /* bridges only */
	struct pci_bar bars[PCI_BAR_COUNT];
	uint8_t cap_count;
	uint8_t cap_ids[PCI_MAX_CAPS];
	uint8_t cap_offsets[PCI_MAX_CAPS];
	const char *problem; /* NULL, or why a BAR has no usable address (decoding stays off) */
	uint8_t problem_bar;
};

struct pci_topology {
	bool ecam; /* false: ports 0xCF8/0xCFC */
	uint64_t ecam_base;
	uint8_t ecam_end_bus;
	uint32_t count;
	bool truncated; /* more than PCI_MAX_DEVICES functions */
	uint32_t placed_bars; /* BARs this guest assigned */
	struct pci_device devices[PCI_MAX_DEVICES];
};

/* pci_scan flags. */
#define PCI_SCAN_PORTS 1u    /* config space through 0xCF8/0xCFC even when there is an MCFG */
#define PCI_SCAN_REASSIGN 2u /* place every BAR, also those firmware assigned */

/* Enumerates and places BARs on the first call; later calls return the same result. */
const struct pci_topology *pci_scan(unsigned flags);

/* The first function with this vendor and device ID, or NULL. */
const struct pci_device *pci_find(uint16_t vendor, uint16_t device);

/* Config accesses for a function of the scanned topology; offset is dword-aligned. */
uint32_t pci_read32(uint16_t bdf, uint16_t offset);
void pci_write32(uint16_t bdf, uint16_t offset, uint32_t value);
/* 8/16-bit reads through a 32-bit read (any offset with the value inside one dword). */
uint8_t pci_read8(uint16_t bdf, uint16_t offset);
uint16_t pci_read16(uint16_t bdf, uint16_t offset);
/* Sets bits in the command register without touching status (its bits are write-1-to-clear). */
void pci_enable(uint16_t bdf, uint16_t command_bits);

/* "bb:dd.f" of a bdf into buf (at least 8 bytes). */
void pci_format_bdf(uint16_t bdf, char *buf);

#endif
