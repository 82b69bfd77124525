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

#endif
