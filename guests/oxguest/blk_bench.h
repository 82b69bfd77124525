/*
 * virtio-blk throughput benchmarks: a request loop at CPL3 (native speed where KVM emulates
 * CPL0 code), timed with the calibrated TSC from the first request started to the last one
 * completed. They are not tests of the device's logic (blk_scenarios.h has those) and are left
 * out of the test suites' command lines; bench/blk.sh runs them against a host file.
 *
 * blk-bench-seq-read   reads bench-mib MiB from byte 0 of the disk on, bench-req-kib KiB per
 *                      request, bench-qd requests in flight
 * blk-bench-seq-write  writes the same range the same way
 * blk-bench-rand-read  reads bench-mib MiB in requests at random offsets of the whole disk,
 *                      each a multiple of the request size: offset = (x % (disk bytes /
 *                      request bytes)) * request bytes, x the next value of splitmix64 seeded
 *                      with BLK_BENCH_RAND_SEED (guests::protocol::blk_bench_rand_offsets)
 *
 * Options (command-line words, decimal): bench-mib=N (1 to BLK_BENCH_MAX_MIB; default
 * BLK_BENCH_DEFAULT_MIB), bench-req-kib=N (a multiple of 4 from 4 to BLK_BENCH_MAX_REQ_KIB;
 * default BLK_BENCH_DEFAULT_SEQ_REQ_KIB for the sequential scenarios and
 * BLK_BENCH_DEFAULT_RAND_REQ_KIB for the random one), bench-qd=N (1 to BLK_BENCH_MAX_QD;
 * default BLK_BENCH_DEFAULT_QD). bench-mib must be a whole number of requests.
 *
 * The disk is stamped in blocks of BLK_BENCH_BLOCK bytes: the first 8 bytes of each block hold
 * its byte offset on the disk, the next 8 a tag (little-endian; the host plants
 * BLK_BENCH_HOST_TAG, the write benchmark writes BLK_BENCH_GUEST_TAG). The read benchmarks
 * check the offset of every block they read (one load per block), so they fail on data from
 * the wrong place; the write benchmark stamps every block it writes (two stores per block), so
 * the host can check afterwards that the writes landed.
 *
 * Output: the blk scenarios' device line (blk_scenarios.h), then, when the loop ran to its end,
 *   oxguest: <name> submit_ns=<N> wait_ns=<N>
 * (time spent starting requests, the notification's exit included, and waiting for
 * completions), then
 *   TEST <name> PASS bytes=<N> ns=<N> requests=<N> req_bytes=<N> qd=<N>
 * (ns: TSC nanoseconds). The driver polls: it sets VIRTQ_AVAIL_F_NO_INTERRUPT. FAIL reasons: those every blk scenario shares, "bad bench-<key>= value
 * ...", "bench-mib=N is not a whole number of ...-byte requests", "the TSC is not calibrated
 * (...)", "<read|write> at offset N: status N (NAME)", "read at offset N: block at offset N
 * holds stamp 0x..., expected 0x...", or a transport error.
 */
#ifndef OXGUEST_BLK_BENCH_H
#define OXGUEST_BLK_BENCH_H

#include "bootinfo.h"

#define BLK_BENCH_BLOCK 4096
/* The bytes "oblkhost" and "oblkgues" read as little-endian words. */
#define BLK_BENCH_HOST_TAG 0x74736f686b6c626fULL
#define BLK_BENCH_GUEST_TAG 0x736575676b6c626fULL
#define BLK_BENCH_RAND_SEED 0x6f78626c6b72616eULL
#define BLK_BENCH_MAX_MIB 65536
#define BLK_BENCH_MAX_REQ_KIB 4096
#define BLK_BENCH_DEFAULT_MIB 64
#define BLK_BENCH_DEFAULT_SEQ_REQ_KIB 128
#define BLK_BENCH_DEFAULT_RAND_REQ_KIB 4
#define BLK_BENCH_DEFAULT_QD 4
/* Requests in flight at most: the driver's request slots (virtio_blk.h BLK_SLOTS). */
#define BLK_BENCH_MAX_QD 8

void run_blk_bench_seq_read(const char *name, const struct boot_info *info, unsigned pci_flags);
void run_blk_bench_seq_write(const char *name, const struct boot_info *info, unsigned pci_flags);
void run_blk_bench_rand_read(const char *name, const struct boot_info *info, unsigned pci_flags);

#endif
