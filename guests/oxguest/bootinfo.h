/*
 * What the loader handed over, copied out of low memory at entry (before anything else may
 * overwrite it): command line, e820 map, RSDP address, where the initrd is and which boot
 * protocol was used. The initrd's bytes stay where the loader put them.
 */
#ifndef OXGUEST_BOOTINFO_H
#define OXGUEST_BOOTINFO_H

#include <stdbool.h>
#include <stdint.h>

#define E820_MAX 128
#define CMDLINE_MAX 2048
#define E820_USABLE 1

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

struct boot_info {
	const char *protocol; /* "pvh" or "linux64" */
	char cmdline[CMDLINE_MAX];
	bool cmdline_truncated;
	uint32_t e820_count;
	struct e820_entry e820[E820_MAX];
	bool e820_truncated;
	uint64_t rsdp; /* 0: none found */
	const char *rsdp_source; /* "boot" (from the loader), "scan" or "none" */
	/* The initrd: boot_params ramdisk_image/size, or the first PVH module. Size 0: none. */
	uint64_t initrd_addr;
	uint64_t initrd_size;
	uint32_t pvh_modules; /* start_info.nr_modules (0 on the Linux path) */
};

/* Called from boot.S with the BSP stack set up and .bss zeroed; never return. */
_Noreturn void entry_pvh(uint64_t start_info);
_Noreturn void entry_linux64(uint64_t boot_params);

/* Total bytes of usable (type 1) RAM in the map. */
uint64_t e820_usable_bytes(const struct boot_info *info);
/* True when [addr, addr + size) lies inside one usable entry. */
bool e820_range_usable(const struct boot_info *info, uint64_t addr, uint64_t size);

#endif
