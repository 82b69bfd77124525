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

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_setup 10 10 "$@"
exec "$release/snapshot-bench" --runs "$runs" --oxvmm "$release/oxvmm" "${extra[@]}"
