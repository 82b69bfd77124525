#include "scratch.h"

#include "console.h"

#define MAPPED_LIMIT 0x100000000ULL

/* End of the loaded image, .noinit included (linker.ld). */
extern char __image_end[];

static bool overlaps(uint64_t a, uint64_t a_end, uint64_t b, uint64_t b_end)
{
	return a < b_end && b < a_end;
}

bool scratch_region(const struct boot_info *info, uint64_t bytes, uint64_t *base, char *why,
		    int why_size)
{
	uint64_t start = ((uintptr_t)__image_end + SCRATCH_ALIGN - 1) & ~(SCRATCH_ALIGN - 1);
	uint64_t end = start + bytes;
	*base = start;
	if (bytes == 0)
		return true;
	if (end > MAPPED_LIMIT || !e820_range_usable(info, start, bytes)) {
		ksnprintf(why, why_size, "0x%llx-0x%llx is not usable RAM below 4 GiB",
			  (unsigned long long)start, (unsigned long long)end);
		return false;
	}
	uint64_t initrd_end = info->initrd_addr + info->initrd_size;
	if (info->initrd_size > 0 && overlaps(start, end, info->initrd_addr, initrd_end)) {
		ksnprintf(why, why_size, "0x%llx-0x%llx overlaps the initrd",
			  (unsigned long long)start, (unsigned long long)end);
		return false;
	}
	return true;
}
