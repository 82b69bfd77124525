#include "blk_snapshot.h"

#include <stddef.h>
#include <stdint.h>

#include "blk_scenarios.h"
#include "console.h"
#include "io.h"
#include "power.h"
#include "string.h"
#include "timer.h"
#include "virtio_blk.h"

#define BUTTON_TIMEOUT_US 30000000u
#define BUTTON_POLL_US 1000u
#define WHY_MAX 160
#define READ_BYTES (BLK_READ_SECTORS * BLK_SECTOR_SIZE)

/* Its own page: after step 1 only the device writes it. */
static uint8_t snapshot_buf[READ_BYTES] __attribute__((aligned(4096)));

/* Waits for a press of the power button (PWRBTN_STS), clears it; false on timeout. */
static bool wait_for_button(void)
{
	uint16_t enable = pm1_enable();
	pm1_set_enable(enable | PM1_PWRBTN);
	struct deadline d;
	deadline_start(&d, BUTTON_TIMEOUT_US);
	bool pressed = false;
	while (!pressed && !deadline_expired(&d)) {
		pressed = (pm1_status() & PM1_PWRBTN) != 0;
		if (!pressed)
			delay_us(BUTTON_POLL_US);
	}
	if (pressed)
		pm1_status_clear(PM1_PWRBTN);
	pm1_set_enable(enable);
	return pressed;
}

static bool read_sectors(struct blk *b, char *why)
{
	int status = blk_do(b, VIRTIO_BLK_T_IN, BLK_READ_FIRST, snapshot_buf, READ_BYTES);
	if (status < 0) {
		ksnprintf(why, WHY_MAX, "read: %s", b->error);
		return false;
	}
	if (status != VIRTIO_BLK_S_OK) {
		ksnprintf(why, WHY_MAX, "read: status %d (%s)", status,
			  blk_status_name((uint8_t)status));
		return false;
	}
	return true;
}

static bool check_pattern(char *why)
{
	/* The device wrote the buffer behind the compiler's back. */
	compiler_barrier();
	for (uint32_t s = 0; s < BLK_READ_SECTORS; s++) {
		for (uint32_t i = 0; i < BLK_SECTOR_SIZE; i++) {
			uint8_t got = snapshot_buf[s * BLK_SECTOR_SIZE + i];
			uint8_t want = blk_read_pattern(BLK_READ_FIRST + s, i);
			if (got != want) {
				ksnprintf(why, WHY_MAX,
					  "after the snapshot: sector %u byte %u is 0x%02x, expected 0x%02x",
					  BLK_READ_FIRST + s, i, got, want);
				return false;
			}
		}
	}
	return true;
}

static bool button(const char *step, char *why)
{
	if (wait_for_button())
		return true;
	ksnprintf(why, WHY_MAX, "timeout waiting for the power button (%s)", step);
	return false;
}

void run_blk_snapshot(const char *name, unsigned pci_flags)
{
	char why[WHY_MAX];
	struct blk *b = blk_scenario_open(name, pci_flags);
	if (b == NULL)
		return;
	memset(snapshot_buf, 0, sizeof(snapshot_buf));
	kprintf("oxguest: blk-snapshot ready\n");
	bool ok = button("before the read", why) && read_sectors(b, why);
	if (ok) {
		kprintf("oxguest: blk-snapshot read\n");
		ok = button("after the read", why) && check_pattern(why);
	}
	if (ok)
		ksnprintf(why, sizeof(why), "sectors=%u", BLK_READ_SECTORS);
	blk_scenario_close(name, b, ok, why);
}
