#!/usr/bin/env bash
# Runs every fuzz target for N runs (default 100000) and prints one summary line per target.
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-100000}
for target in $(cargo +nightly fuzz list); do
    log=$(mktemp)
    if cargo +nightly fuzz run -O "$target" -- -runs="$runs" -max_len=4096 >"$log" 2>&1; then
        echo "$target: $runs runs, no crash ($(grep -o 'cov: [0-9]*' "$log" | tail -1))"
    else
        echo "$target: FAILED, see $log"; tail -30 "$log"; exit 1
    fi
    rm -f "$log"
done
