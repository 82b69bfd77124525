/*
 * Timeouts on the ACPI PM timer (3.579545 MHz, 24-bit wraparound; a 32-bit timer is read the
 * same way). Waits are bounded even when the timer is missing or stuck.
 */
#ifndef OXGUEST_TIMER_H
#define OXGUEST_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct deadline {
	uint32_t last;      /* last timer value seen */
	uint64_t remaining; /* ticks left */
	uint32_t stuck;     /* consecutive reads without progress */
};

void deadline_start(struct deadline *d, uint32_t microseconds);
/* Reads the timer once; true when the time is up (or the timer cannot measure it). */
bool deadline_expired(struct deadline *d);
void delay_us(uint32_t microseconds);

/*
 * Deadlines that CPL3 code can use too (the PM timer is a port, which CPL3 cannot read): the
 * TSC, calibrated once against the PM timer by tsc_calibrate() at CPL0. When there is no PM
 * timer or the TSC does not count, a deadline counts polls instead (TSC_FALLBACK_POLLS_PER_US
 * per microsecond: bounded, not accurate).
 */
#define TSC_FALLBACK_POLLS_PER_US 16

struct tsc_deadline {
	uint64_t end;   /* TSC value at which it expires (calibrated TSC) */
	uint64_t polls; /* polls left (fallback) */
};

/* CPL0 only. Measures once per boot (~10 ms); returns TSC ticks per microsecond, 0: unusable. */
uint64_t tsc_calibrate(void);
/* Any CPL: what tsc_calibrate() found (0 before it ran or when the TSC is unusable). */
uint64_t tsc_ticks_per_us(void);
void tsc_deadline_start(struct tsc_deadline *d, uint32_t microseconds);
bool tsc_deadline_expired(struct tsc_deadline *d);
/* Microseconds between two TSC readings (0 without a calibrated TSC). */
uint64_t tsc_elapsed_us(uint64_t start, uint64_t end);

#endif
