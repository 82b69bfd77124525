#!/usr/bin/env bash
# virtio-blk benchmark: sequential read and write throughput and 4 KiB random-read IOPS of the
# bundled guest (request loop at CPL3) on oxvmm, as a ratio to what the host itself gets from
# the same file. Builds oxvmm and bench/kvm-floor in release mode, then runs bench/kvm-floor's
# blk-bench.
# Usage: bench/blk.sh [RUNS] [-- EXTRA_BLK_BENCH_ARGS...]   (RUNS defaults to 5; e.g.
# `-- --cache warm` for the page cache on both sides, `-- --dir /dev/shm` for tmpfs)
# Honours CARGO_TARGET_DIR. See bench/README.md for what is measured and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
if (($# > 0)) && [[ $1 != -- ]]; then
    runs=$1
    shift
fi
if (($# > 0)) && [[ $1 == -- ]]; then
    shift
fi
if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1)); then
    echo "usage: $0 [RUNS] [-- EXTRA_BLK_BENCH_ARGS...]" >&2
    exit 64
fi
if ((runs < 3)); then
    echo "$0: note: medians of fewer than 3 runs are not worth quoting" >&2
fi
[[ -w /dev/kvm ]] || {
    echo "$0: needs read-write /dev/kvm" >&2
    exit 1
}

cargo build --release --quiet -p oxvmm -p kvm-floor
release=${CARGO_TARGET_DIR:-target}/release
exec "$release/blk-bench" --runs "$runs" --oxvmm "$release/oxvmm" "$@"
