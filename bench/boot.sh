#!/usr/bin/env bash
# Boot benchmark: oxvmm against kvm-floor (the least any VMM must do) on the bundled guest's
# `poweroff` scenario. Builds both in release mode, then runs bench/kvm-floor's boot-bench.
# Usage: bench/boot.sh [RUNS] [-- EXTRA_OXVMM_ARGS...]    (RUNS defaults to 30)
# Honours CARGO_TARGET_DIR. See bench/README.md for what is measured and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=30
if (($# > 0)) && [[ $1 != -- ]]; then
    runs=$1
    shift
fi
if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1)); then
    echo "usage: $0 [RUNS] [-- EXTRA_OXVMM_ARGS...]" >&2
    exit 64
fi
if ((runs < 20)); then
    echo "$0: note: medians of fewer than 20 runs are not worth quoting" >&2
fi
[[ -w /dev/kvm ]] || {
    echo "$0: needs read-write /dev/kvm" >&2
    exit 1
}

cargo build --release --quiet -p oxvmm -p kvm-floor
release=${CARGO_TARGET_DIR:-target}/release
exec "$release/boot-bench" --runs "$runs" --oxvmm "$release/oxvmm" --floor "$release/kvm-floor" "$@"
