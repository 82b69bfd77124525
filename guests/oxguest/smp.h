/*
 * Application processor start-up: INIT, SIPI, SIPI through the xAPIC ICR for every enabled
 * local APIC in the MADT, one AP at a time, through the real-mode trampoline (trampoline.S).
 * Each AP records its APIC ID from CPUID and from its LAPIC, checks in with a locked add and
 * halts. The work is done once; later calls return the same result.
 */
#ifndef OXGUEST_SMP_H
#define OXGUEST_SMP_H

#include <stdbool.h>
#include <stdint.h>

#include "bootinfo.h"
#include "layout.h"

struct smp_result {
	bool ok;
	char error[128];
	uint32_t expected; /* enabled local APICs in the MADT (0 without a MADT) */
	uint32_t online;   /* CPUs running, BSP included */
	uint8_t online_ids[MAX_CPUS]; /* their APIC IDs, in MADT order */
};

const struct smp_result *smp_bring_up(const struct boot_info *info);

/* Writes "0<sep>1<sep>..." for the online CPUs into buf. */
void smp_format_ids(const struct smp_result *r, const char *sep, char *buf, int size);

/* C entry of an AP (trampoline.S), on its own stack in long mode. */
_Noreturn void ap_main(void);

#endif
