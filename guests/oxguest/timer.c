#include "timer.h"

#include "acpi.h"
#include "console.h"
#include "io.h"

#define PM_TIMER_HZ 3579545ULL
#define PM_TIMER_MASK 0xFFFFFF
/*
 * Reads without progress before the timer is declared stuck. Far more than a working timer
 * can produce between two ticks (279 ns) even when reads are very fast (software emulation).
 */
#define STUCK_LIMIT 200000

/* tsc_calibrate() measures the TSC over this many PM timer ticks (10 ms). */
#define CALIBRATION_TICKS (PM_TIMER_HZ / 100)
#define US_PER_S 1000000ULL

static bool stuck_reported;
static bool tsc_calibrated;
static uint64_t tsc_per_us;

static uint32_t read_timer(void)
{
	return inl(platform()->pm_timer) & PM_TIMER_MASK;
}

void deadline_start(struct deadline *d, uint32_t microseconds)
{
	d->remaining = ((uint64_t)microseconds * PM_TIMER_HZ + 999999) / 1000000;
	d->stuck = 0;
	d->last = platform()->pm_timer != 0 ? read_timer() : 0;
}

bool deadline_expired(struct deadline *d)
{
	if (platform()->pm_timer == 0) {
		/* No timer: count each poll as one tick, which over-estimates nothing. */
		if (d->remaining == 0)
			return true;
		d->remaining--;
		return false;
	}
	uint32_t now = read_timer();
	uint32_t delta = (now - d->last) & PM_TIMER_MASK;
	d->last = now;
	if (delta == 0) {
		if (++d->stuck < STUCK_LIMIT)
			return false;
		if (!stuck_reported) {
			stuck_reported = true;
			kprintf("oxguest: PM timer at port 0x%x does not count\n", platform()->pm_timer);
		}
		return true;
	}
	d->stuck = 0;
	if (delta >= d->remaining) {
		d->remaining = 0;
		return true;
	}
	d->remaining -= delta;
	return false;
}

void delay_us(uint32_t microseconds)
{
	struct deadline d;
	deadline_start(&d, microseconds);
	while (!deadline_expired(&d))
		;
}

/* PM timer ticks until at least CALIBRATION_TICKS passed; 0 when the timer is stuck. */
static uint32_t wait_calibration_ticks(void)
{
	uint32_t last = read_timer();
	uint32_t elapsed = 0;
	uint32_t stuck = 0;
	while (elapsed < CALIBRATION_TICKS) {
		uint32_t now = read_timer();
		if (now == last) {
			if (++stuck >= STUCK_LIMIT)
				return 0;
			continue;
		}
		stuck = 0;
		elapsed += (now - last) & PM_TIMER_MASK;
		last = now;
	}
	return elapsed;
}

uint64_t tsc_calibrate(void)
{
	if (tsc_calibrated)
		return tsc_per_us;
	tsc_calibrated = true;
	if (platform()->pm_timer == 0)
		return 0;
	uint64_t start = rdtsc();
	uint32_t ticks = wait_calibration_ticks();
	uint64_t tsc = rdtsc() - start;
	if (ticks == 0)
		return 0;
	tsc_per_us = tsc * PM_TIMER_HZ / ((uint64_t)ticks * US_PER_S);
	return tsc_per_us;
}

uint64_t tsc_ticks_per_us(void)
{
	return tsc_per_us;
}

void tsc_deadline_start(struct tsc_deadline *d, uint32_t microseconds)
{
	d->end = tsc_per_us != 0 ? rdtsc() + microseconds * tsc_per_us : 0;
	d->polls = (uint64_t)microseconds * TSC_FALLBACK_POLLS_PER_US;
}

bool tsc_deadline_expired(struct tsc_deadline *d)
{
	if (tsc_per_us != 0)
		return (int64_t)(rdtsc() - d->end) >= 0;
	if (d->polls == 0)
		return true;
	d->polls--;
	return false;
}

uint64_t tsc_elapsed_us(uint64_t start, uint64_t end)
{
	return tsc_per_us != 0 ? (end - start) / tsc_per_us : 0;
}
