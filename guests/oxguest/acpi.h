/*
 * Platform facts read from ACPI (FADT, MADT), with the oxvmm platform values
 * (docs/platform.md) as fallback when there is no RSDP.
 */
#ifndef OXGUEST_ACPI_H
#define OXGUEST_ACPI_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

/* Generic Address Structure address spaces used by the reset register. */
#define GAS_SYSTEM_MEMORY 0
#define GAS_SYSTEM_IO 1

struct reset_register {
	bool present;
	uint8_t space; /* GAS_SYSTEM_MEMORY or GAS_SYSTEM_IO */
	uint64_t address;
	uint8_t value;
};

struct platform {
	uint64_t rsdp; /* 0: no ACPI, fallbacks in use */
	bool have_fadt;
	bool have_madt;
	uint16_t pm1a_evt; /* PM1a event block: PM1_STS, then PM1_EN at pm1a_evt + pm1_evt_len / 2 */
	uint8_t pm1_evt_len;
	uint16_t pm1a_cnt;
	uint16_t pm1b_cnt; /* 0: none */
	uint16_t pm_timer; /* 0: none */
	struct reset_register reset;
	uint64_t lapic_base;
	/*
	 * PCI Express ECAM from the MCFG entry of segment 0 that decodes bus 0 (have_mcfg false:
	 * no such entry; config space then goes through ports 0xCF8/0xCFC). ecam_base is the
	 * address of bus 0 even when ecam_start_bus is not 0 (PCI Firmware 3.2, table 4-3).
	 */
	bool have_mcfg;
	uint64_t ecam_base;
	uint8_t ecam_start_bus;
	uint8_t ecam_end_bus;
	/* Enabled local APICs from the MADT, in table order. */
	uint32_t cpu_count;
	uint8_t apic_ids[MAX_CPUS];
	bool cpus_truncated; /* the MADT listed more than MAX_CPUS */
};

/* Parses the tables reachable from rsdp (0: none). Prints one summary line. */
void acpi_init(uint64_t rsdp);
const struct platform *platform(void);

#endif
