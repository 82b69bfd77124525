/*
 * Scratch memory for scenarios that need more than the image holds (the counter's touch
 * region, virtio-blk's in-guest disk model): usable RAM from the first 2 MiB boundary above
 * the loaded image (__image_end), inside the identity map (below 4 GiB) and clear of the
 * initrd. Scenarios run one at a time, so each may use all of it while it runs.
 */
#ifndef OXGUEST_SCRATCH_H
#define OXGUEST_SCRATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "bootinfo.h"

#define SCRATCH_ALIGN 0x200000ULL

/*
 * The scratch region's first byte in *base; true when its first bytes bytes are usable.
 * Otherwise why says "0x<start>-0x<end> is not usable RAM below 4 GiB" or "... overlaps the
 * initrd". bytes 0 always succeeds.
 */
bool scratch_region(const struct boot_info *info, uint64_t bytes, uint64_t *base, char *why,
		    int why_size);

#endif
