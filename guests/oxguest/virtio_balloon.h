/*
 * The balloon scenario: a virtio-balloon driver (virtio 1.2, 5.5) on the polled driver core.
 *
 * Finds the first virtio-balloon function (1af4:1045, or a transitional 1af4:1002 through its
 * modern interface), accepts STATS_VQ when offered (then sends one stats buffer, MEMTOT and
 * MEMFREE, and sends fresh values whenever the device hands it back), and prints
 *
 *   oxguest: virtio-balloon <bdf> features=0x<negotiated> queue_size=<n> stats=<0|1> num_pages=<n>
 *
 * With balloon-touch=<MiB> it then writes one byte to each 4 KiB page of that much scratch
 * memory (the first 2 MiB boundary above the image) and prints "oxguest: balloon touched <M>
 * MiB", so that the host's memory use can be seen to fall when the balloon inflates.
 *
 * It prints BALLOON_WAITING_LINE and polls num_pages (every ~1 ms, PM timer) for up to
 * BALLOON_TARGET_TIMEOUT_US. For a target of N pages it touches the first N pages of the
 * scratch memory, sends their PFNs on the inflate queue (BALLOON_PFNS_PER_BUFFER a buffer),
 * updates actual after each buffer and prints "oxguest: balloon inflated <N> pages". It then
 * prints "oxguest: balloon waiting for the target to fall below <N>" and polls for up to
 * BALLOON_DEFLATE_TIMEOUT_US; for a new target T < N it sends the PFNs of the last N - T
 * pages on the deflate queue, updates actual, writes and reads back each deflated page, resets
 * the device and prints "TEST <name> PASS inflated=<N> deflated=<N - T>".
 *
 * FAIL reasons: "no virtio-balloon device", a transport error (as virtio-rng's), "bad
 * balloon-touch= value ...", "no balloon target from the host within 5000 ms", "the host
 * asks for N pages, more than BALLOON_MAX_PAGES", "the host asks for N pages: <why the
 * scratch memory cannot hold them>", "the host kept the target at T pages (inflated N) for
 * 10000 ms", "no completion within 5000 ms on queue Q (device status 0x..)", "deflated page
 * 0x... reads 0x.. after writing 0x..".
 */
#ifndef OXGUEST_VIRTIO_BALLOON_H
#define OXGUEST_VIRTIO_BALLOON_H

#include "bootinfo.h"

#define BALLOON_WAITING_LINE "oxguest: balloon waiting for a target"
#define BALLOON_TARGET_TIMEOUT_US 5000000u
#define BALLOON_DEFLATE_TIMEOUT_US 10000000u
#define BALLOON_PFNS_PER_BUFFER 256
/* Largest balloon (and balloon-touch=) the scenario takes: 1 GiB. */
#define BALLOON_MAX_PAGES 262144u

void run_balloon(const char *name, const struct boot_info *info, unsigned pci_flags);

#endif
