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

static bool stuck_reported;

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
