#include "counter.h"

#include <stdbool.h>
#include <stdint.h>

#include "cmdline.h"
#include "console.h"
#include "scenarios.h"
#include "scratch.h"
#include "usermode.h"

#define MIB 0x100000ULL
#define PAGE_SIZE 4096ULL
#define PAGES_PER_MIB (MIB / PAGE_SIZE)
#define LINE_MASK ((1ULL << COUNTER_LINE_SHIFT) - 1)
#define TOUCH_BYTE 0x5A

/*
 * Everything the CPL3 loop uses, at COUNTER_ADDR: it keeps no state in registers across
 * iterations that memory does not also hold, so a restored snapshot carries on from here.
 */
struct counter_state {
	uint64_t count;
	uint64_t region;      /* first byte of the touch region (2 MiB aligned) */
	uint64_t touch_mib;   /* touch=N */
	uint64_t dirty_pages; /* pages rewritten after every count line (dirty=M MiB) */
	uint64_t touch;       /* 1 when touch= was given */
	uint64_t touched;     /* 1 once the touch pass finished (a restore does not repeat it) */
};

static volatile struct counter_state *state(void)
{
	return (volatile struct counter_state *)COUNTER_ADDR;
}

/* Checks the options and the memory map; fills the state or writes why it cannot run. */
static bool prepare(const struct boot_info *info, char *why, int why_size)
{
	uint64_t touch = 0, dirty = 0;
	enum cmdline_option touch_opt = cmdline_u64(info->cmdline, "touch", TOUCH_MAX_MIB, &touch, 0);
	enum cmdline_option dirty_opt = cmdline_u64(info->cmdline, "dirty", TOUCH_MAX_MIB, &dirty, 0);
	if (touch_opt == OPTION_INVALID || dirty_opt == OPTION_INVALID) {
		ksnprintf(why, why_size, "bad %s= value (MiB in decimal, at most %u)",
			  touch_opt == OPTION_INVALID ? "touch" : "dirty", TOUCH_MAX_MIB);
		return false;
	}
	if (dirty > touch) {
		ksnprintf(why, why_size, "dirty=%llu exceeds touch=%llu", (unsigned long long)dirty,
			  (unsigned long long)touch);
		return false;
	}
	if (!e820_range_usable(info, COUNTER_ADDR, PAGE_SIZE)) {
		ksnprintf(why, why_size, "counter page 0x%x is not usable RAM", COUNTER_ADDR);
		return false;
	}
	uint64_t region = 0;
	char where[96];
	if (!scratch_region(info, touch * MIB, &region, where, sizeof(where))) {
		ksnprintf(why, why_size, "touch=%llu: %s", (unsigned long long)touch, where);
		return false;
	}
	volatile struct counter_state *s = state();
	s->count = 0;
	s->region = region;
	s->touch_mib = touch;
	s->dirty_pages = dirty * PAGES_PER_MIB;
	s->touch = touch_opt == OPTION_SET;
	s->touched = 0;
	return true;
}

/* Writes value to the first byte of each of pages pages from base. Runs at CPL3. */
static void write_pages(uint64_t base, uint64_t pages, uint8_t value)
{
	for (uint64_t i = 0; i < pages; i++)
		*(volatile uint8_t *)(uintptr_t)(base + i * PAGE_SIZE) = value;
}

/* The CPL3 side: touch, then count forever. */
static _Noreturn void count_at_cpl3(void)
{
	volatile struct counter_state *s = state();
	if (s->touch && !s->touched) {
		write_pages(s->region, s->touch_mib * PAGES_PER_MIB, TOUCH_BYTE);
		s->touched = 1;
		user_printf("oxguest: touched %llu MiB\n", (unsigned long long)s->touch_mib);
	}
	user_printf("oxguest: counter running at cpl3\n");
	for (;;) {
		uint64_t count = s->count + 1;
		s->count = count;
		if ((count & LINE_MASK) != 0)
			continue;
		user_printf("counter %llu\n", (unsigned long long)count);
		/* Differs from the byte written after the previous line: 0x80 | line number. */
		write_pages(s->region, s->dirty_pages,
			    (uint8_t)(0x80 | ((count >> COUNTER_LINE_SHIFT) & 0x7F)));
	}
}

void run_counter(const char *name, const struct boot_info *info)
{
	char why[160];
	if (!prepare(info, why, sizeof(why))) {
		scenario_fail(name, why);
		return;
	}
	usermode_enter(name, count_at_cpl3);
}
