#!/usr/bin/env bash
# virtio-blk benchmark: sequential read and write throughput and 4 KiB random-read IOPS of the
# bundled guest (request loop at CPL3) on oxvmm, as a ratio to what the host itself gets from
# the same file, at queue depth 1 and at the guest's queue depth. Builds oxvmm and bench/kvm-floor in release mode, then runs bench/kvm-floor's
# blk-bench.
# Usage: bench/blk.sh [RUNS] [-- EXTRA_BLK_BENCH_ARGS...]   (RUNS defaults to 5; e.g.
# `-- --cache warm` for the page cache on both sides, `-- --dir /dev/shm` for tmpfs)
# Honours CARGO_TARGET_DIR. See bench/README.md for what is measured and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_setup 5 3 "$@"
exec "$release/blk-bench" --runs "$runs" --oxvmm "$release/oxvmm" "${extra[@]}"
