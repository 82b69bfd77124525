#!/usr/bin/env bash
# Snapshot benchmark: full and diff snapshots of the bundled guest's `counter touch=64 dirty=1`
# scenario (256 MiB RAM, 64 MiB touched) through oxvmm's control API, and restores timed to the
# guest's first instruction. Builds oxvmm and bench/kvm-floor in release mode, then runs
# bench/kvm-floor's snapshot-bench.
# Usage: bench/snapshot.sh [RUNS] [-- EXTRA_SNAPSHOT_BENCH_ARGS...]   (RUNS defaults to 10;
# e.g. `-- --dir /dev/shm` to write the snapshots to tmpfs)
# Honours CARGO_TARGET_DIR. See bench/README.md for what is measured and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
if (($# > 0)) && [[ $1 != -- ]]; then
    runs=$1
    shift
fi
if (($# > 0)) && [[ $1 == -- ]]; then
    shift
fi
if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1)); then
    echo "usage: $0 [RUNS] [-- EXTRA_SNAPSHOT_BENCH_ARGS...]" >&2
    exit 64
fi
if ((runs < 10)); then
    echo "$0: note: medians of fewer than 10 runs are not worth quoting" >&2
fi
[[ -w /dev/kvm ]] || {
    echo "$0: needs read-write /dev/kvm" >&2
    exit 1
}

cargo build --release --quiet -p oxvmm -p kvm-floor
release=${CARGO_TARGET_DIR:-target}/release
exec "$release/snapshot-bench" --runs "$runs" --oxvmm "$release/oxvmm" "$@"
