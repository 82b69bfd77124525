/*
 * Scenarios about what the host hands in: the initrd (found through the boot protocol) and
 * bytes arriving on COM1's receive side. Each prints its own TEST line.
 */
#ifndef OXGUEST_INPUTS_H
#define OXGUEST_INPUTS_H

#include "bootinfo.h"

/* FNV-1a covers at most this many leading bytes of the initrd (cost: ~3 instructions/byte). */
#define INITRD_HASH_LIMIT 65536

/* How long serial-echo waits for its line, and how much of the line it reports. */
#define ECHO_TIMEOUT_US 10000000u
#define ECHO_LINE_MAX 120

/*
 * Checks that the initrd lies in usable e820 RAM below 4 GiB and off the guest's own image,
 * then prints "TEST <name> PASS addr=0x<addr> size=<bytes> fnv1a=0x<16 hex digits>", the
 * 64-bit FNV-1a of its first min(size, INITRD_HASH_LIMIT) bytes. "FAIL no initrd" without one.
 */
void check_initrd(const char *name, const struct boot_info *info);

/*
 * Prints "oxguest: waiting up to 10 s for a line on COM1", then reads one line by polling
 * (LSR data ready, RBR) for up to ECHO_TIMEOUT_US in all. The line ends at '\n' or '\r'; line
 * ends before any text are skipped; bytes outside printable ASCII become '?'; only the first
 * ECHO_LINE_MAX bytes are kept. Prints "TEST <name> PASS got=<line>", or "FAIL timeout"
 * (with what arrived so far, if anything).
 */
void echo_serial_line(const char *name);

#endif
