/*
 * The virtio-blk scenarios. Each finds the first virtio-blk function (1af4:1042, or a
 * transitional 1af4:1001), opens it, prints
 *   "oxguest: virtio-blk <bdf> features=0x<negotiated> queue_size=<n> sectors=<capacity>
 *    blk_size=<n> size_max=<n> seg_max=<n> ro=<0|1> flush=<0|1> discard=<0|1>
 *    write_zeroes=<0|1>"
 * (one line; 0 for a field whose feature the device does not offer), runs, resets the device
 * and prints its TEST line. Sector numbers are 512-byte sectors; byte i of a sector is 0-511.
 *
 * blk-info     PASS "sectors=<capacity> ro=<0|1> serial=<GET_ID answer>" (bytes up to the
 *              first NUL, at most 20; bytes outside 0x21-0x7e become '?'; may be empty)
 * blk-read     reads sectors 0-7 in one request; byte i of sector s must be blk_read_pattern.
 *              PASS "sectors=8"
 * blk-write    writes blk_write_pattern to sectors 8-15 in one request, FLUSHes (when FLUSH
 *              is offered), reads them back and compares. PASS "sectors=8 flushed=<yes|no>"
 * blk-ro       on a disk that offers RO: writes sector 8 and expects status IOERR, then checks
 *              that the sector did not change. PASS "write-status=1"
 * blk-mixed    at CPL3: reads sectors 64-1087 into an in-guest model, runs 1000 requests of
 *              1-8 sectors within them (BLK_MIXED_SEED, see below), up to 4 in flight, and
 *              compares every read with the model; then reads the whole range back, compares
 *              it and hashes it. PASS "requests=1000 checksum=0x<FNV-1a 64 of sectors
 *              64-1087>", after "oxguest: blk-mixed cpl=3 requests=1000 reads=<n> writes=<n>
 *              sectors=<n> us=<n> all_requests=<n> all_us=<n>" (all_*: with the initial and
 *              final reads).
 * blk-discard  at CPL3: fills sectors 2048-4095 (if DISCARD) and 4096-4159 (if WRITE_ZEROES)
 *              with 0x5A, DISCARDs the first range and WRITE_ZEROES the second (split at the
 *              device's limits), reads both back. Write-zeroed sectors must read zero.
 *              PASS "discard=<yes|kept|no> write_zeroes=<yes|no>": yes = done and reads zero,
 *              kept = done, but the old bytes are still there (allowed: discard is a hint),
 *              no = not offered.
 *
 * blk-mixed requests (the host recomputes them, guests::protocol::blk_mixed_requests): x is
 * the next value of splitmix64 seeded with BLK_MIXED_SEED; write = x & 1; count = 1 +
 * ((x >> 1) & 7); sector = BLK_MIXED_FIRST + (x >> 4) % (BLK_MIXED_SECTORS - count + 1). A
 * write's data is the splitmix64 stream seeded with x: its outputs, little-endian, 8 bytes
 * each.
 */
#ifndef OXGUEST_BLK_SCENARIOS_H
#define OXGUEST_BLK_SCENARIOS_H

#include <stdbool.h>
#include <stdint.h>

#include "bootinfo.h"
#include "virtio_blk.h"

#define BLK_READ_FIRST 0
#define BLK_READ_SECTORS 8
#define BLK_WRITE_FIRST 8
#define BLK_WRITE_SECTORS 8
#define BLK_RO_SECTOR 8
#define BLK_MIXED_FIRST 64
#define BLK_MIXED_SECTORS 1024
#define BLK_MIXED_REQUESTS 1000
#define BLK_MIXED_SEED 0x6f78626c6b6d6978ULL
#define BLK_DISCARD_FIRST 2048
#define BLK_DISCARD_SECTORS 2048
#define BLK_ZEROES_FIRST 4096
#define BLK_ZEROES_SECTORS 64
#define BLK_FILL_BYTE 0x5A

/* What the host plants in sectors 0-7 for blk-read. */
static inline uint8_t blk_read_pattern(uint64_t sector, uint32_t i)
{
	return (uint8_t)(sector * 31 + i);
}

/* What blk-write writes to sectors 8-15. */
static inline uint8_t blk_write_pattern(uint64_t sector, uint32_t i)
{
	return (uint8_t)(sector * 17 + i * 3 + 1);
}

/*
 * For every blk scenario (blk_bench.c too): finds and opens the first virtio-blk function and
 * prints the device line above; NULL after printing the scenario's FAIL line. The device and
 * its ring are this file's (scenarios run one at a time). CPL0.
 */
struct blk *blk_scenario_open(const char *name, unsigned pci_flags);
/* Resets the device (leaving it as found) and prints the TEST line: PASS text or FAIL text. */
void blk_scenario_close(const char *name, struct blk *b, bool ok, const char *text);

void run_blk_info(const char *name, unsigned pci_flags);
void run_blk_read(const char *name, unsigned pci_flags);
void run_blk_write(const char *name, unsigned pci_flags);
void run_blk_ro(const char *name, unsigned pci_flags);
void run_blk_mixed(const char *name, const struct boot_info *info, unsigned pci_flags);
void run_blk_discard(const char *name, const struct boot_info *info, unsigned pci_flags);

#endif
