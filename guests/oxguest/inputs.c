#include "inputs.h"

#include <stdbool.h>
#include <stdint.h>

#include "console.h"
#include "io.h"
#include "layout.h"
#include "scenarios.h"
#include "timer.h"

#define FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x00000100000001b3ULL

/* Only the identity-mapped first 4 GiB can be read. */
#define MAPPED_LIMIT 0x100000000ULL

#define COM1_RBR 0
#define LSR_DATA_READY 0x01

/* End of the loaded image, .noinit included (linker.ld). */
extern char __image_end[];

static uint64_t fnv1a64(const uint8_t *bytes, uint64_t len)
{
	uint64_t hash = FNV_OFFSET_BASIS;
	/* Unrolled: the loop bookkeeping would otherwise double the emulated instructions. */
#pragma GCC unroll 8
	for (uint64_t i = 0; i < len; i++) {
		hash ^= bytes[i];
		hash *= FNV_PRIME;
	}
	return hash;
}

/* Writes why the initrd cannot be used into why; true when it can be read and hashed. */
static bool initrd_usable(const struct boot_info *info, char *why, int why_size)
{
	uint64_t start = info->initrd_addr;
	uint64_t size = info->initrd_size;
	uint64_t image_end = (uint64_t)(uintptr_t)__image_end;
	if (start >= MAPPED_LIMIT || size > MAPPED_LIMIT - start) {
		ksnprintf(why, why_size, "initrd at 0x%llx (%llu bytes) is not below 4 GiB",
			  (unsigned long long)start, (unsigned long long)size);
		return false;
	}
	uint64_t end = start + size;
	if (!e820_range_usable(info, start, size)) {
		ksnprintf(why, why_size, "initrd 0x%llx-0x%llx is not inside usable e820 RAM",
			  (unsigned long long)start, (unsigned long long)end);
		return false;
	}
	if (start < image_end && end > LOAD_ADDR) {
		ksnprintf(why, why_size, "initrd 0x%llx-0x%llx overlaps the guest image 0x%x-0x%llx",
			  (unsigned long long)start, (unsigned long long)end, LOAD_ADDR,
			  (unsigned long long)image_end);
		return false;
	}
	return true;
}

void check_initrd(const char *name, const struct boot_info *info)
{
	char text[160];
	if (info->initrd_size == 0) {
		scenario_fail(name, "no initrd");
		return;
	}
	if (!initrd_usable(info, text, sizeof(text))) {
		scenario_fail(name, text);
		return;
	}
	uint64_t hashed = info->initrd_size < INITRD_HASH_LIMIT ? info->initrd_size
								: INITRD_HASH_LIMIT;
	uint64_t hash = fnv1a64((const uint8_t *)(uintptr_t)info->initrd_addr, hashed);
	ksnprintf(text, sizeof(text), "addr=0x%llx size=%llu fnv1a=0x%016llx",
		  (unsigned long long)info->initrd_addr, (unsigned long long)info->initrd_size,
		  (unsigned long long)hash);
	scenario_pass(name, text);
}

/* Keeps the TEST line one printable line whatever the host sends. */
static char printable(uint8_t c)
{
	return c >= 0x20 && c < 0x7F ? (char)c : '?';
}

void echo_serial_line(const char *name)
{
	char line[ECHO_LINE_MAX + 1];
	char text[ECHO_LINE_MAX + 48];
	uint32_t len = 0;
	struct deadline d;
	/* A prompt to send on: bytes sent earlier may be lost on UARTs that flush their FIFO. */
	kprintf("oxguest: waiting up to %u s for a line on COM1\n", ECHO_TIMEOUT_US / 1000000);
	deadline_start(&d, ECHO_TIMEOUT_US);
	/* The deadline is checked for every byte too: a host may send without ever ending. */
	while (!deadline_expired(&d)) {
		if ((inb(COM1_PORT + COM1_LSR) & LSR_DATA_READY) == 0)
			continue;
		uint8_t c = inb(COM1_PORT + COM1_RBR);
		bool line_end = c == '\n' || c == '\r';
		/* Line ends before any text are skipped: the '\n' of a "\r\n" ends no new line. */
		if (line_end && len == 0)
			continue;
		if (line_end) {
			line[len] = '\0';
			ksnprintf(text, sizeof(text), "got=%s", line);
			scenario_pass(name, text);
			return;
		}
		if (len < ECHO_LINE_MAX)
			line[len++] = printable(c);
	}
	line[len] = '\0';
	if (len == 0) {
		scenario_fail(name, "timeout");
		return;
	}
	ksnprintf(text, sizeof(text), "timeout (no line end after \"%s\")", line);
	scenario_fail(name, text);
}
