/*
 * The counter scenario: a loop at CPL3 (native speed even where KVM emulates CPL0) that counts
 * in guest memory and prints the count, until the host stops the machine. Snapshot and restore
 * tests use it: the count lives in memory at COUNTER_ADDR, so a restored guest goes on from the
 * snapshot's count.
 *
 * Output: optionally "oxguest: touched <N> MiB", then "oxguest: counter running at cpl3", then
 * every 2^COUNTER_LINE_SHIFT increments "counter <count>" (decimal). No TEST line on success;
 * "TEST <name> FAIL <reason>" when the options or the memory map do not allow it to run (the
 * scenario then returns), or when the CPL3 code takes an exception (then the guest powers off).
 *
 * Options (command-line words): touch=<N> writes one byte to each 4 KiB page of N MiB starting
 * at the first 2 MiB boundary above the guest image, at CPL3, before counting; dirty=<M>
 * (M <= N, default 0) rewrites one byte of each page of the first M MiB of that region after
 * every count line, with a value that differs from the previous line's.
 */
#ifndef OXGUEST_COUNTER_H
#define OXGUEST_COUNTER_H

#include "bootinfo.h"

/* Guest-physical address of struct counter_state (the count is its first field, 8 bytes LE). */
#define COUNTER_ADDR 0x2000
/* One "counter" line every 2^30 increments: ~0.25 s on the development machines (~4.3e9/s). */
#define COUNTER_LINE_SHIFT 30
/* Upper bound of touch= and dirty=, in MiB (the region must also be usable RAM below 4 GiB). */
#define TOUCH_MAX_MIB 3072

/* Returns only when it fails before entering user mode. */
void run_counter(const char *name, const struct boot_info *info);

#endif
