#!/usr/bin/env bash
# virtio-net benchmark: frames per second from the guest to a TAP. The bundled guest's
# `net-bench` scenario sends FRAMES frames (default 200000) of BYTES bytes (default 60, the
# smallest Ethernet frame without its FCS) from CPL3 as fast as the transmit queue takes them;
# the guest times the loop on its TSC, and the TAP's rx_packets counter checks that every
# frame reached the host. Builds oxvmm in release mode, creates a TAP (root), deletes it at the
# end.
# Usage: bench/net.sh [RUNS] [-- FRAMES [BYTES]]   (RUNS defaults to 5)
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
frames=${1:-200000}
bytes=${2:-60}
[[ $runs =~ ^[0-9]+$ && $frames =~ ^[0-9]+$ && $bytes =~ ^[0-9]+$ ]] || {
    echo "usage: $0 [RUNS] [-- FRAMES [BYTES]]" >&2
    exit 64
}
[[ -w /dev/kvm && -w /dev/net/tun ]] || {
    echo "$0: needs read-write /dev/kvm and /dev/net/tun (root)" >&2
    exit 1
}
cargo build --release --quiet -p oxvmm
oxvmm=${CARGO_TARGET_DIR:-target}/release/oxvmm
tap=oxbench$$
tap=${tap:0:15}
ip tuntap add dev "$tap" mode tap vnet_hdr
trap 'ip link delete "$tap" 2>/dev/null || true' EXIT
ip link set "$tap" up
echo 1 > "/proc/sys/net/ipv6/conf/$tap/disable_ipv6" 2>/dev/null || true
counter=/sys/class/net/$tap/statistics/rx_packets

rates=()
for ((run = 1; run <= runs; run++)); do
    before=$(<"$counter")
    out=$("$oxvmm" --kernel builtin:oxguest --memory 128M --net "tap=$tap" \
        --cmdline "net-bench bench-frames=$frames bench-frame-bytes=$bytes")
    after=$(<"$counter")
    line=$(grep '^TEST net-bench ' <<<"$out" || true)
    [[ $line == "TEST net-bench PASS "* ]] || {
        echo "run $run failed:" >&2
        echo "$out" >&2
        exit 1
    }
    ns=${line##*ns=}
    arrived=$((after - before))
    ((arrived == frames)) || {
        echo "run $run: the guest sent $frames frames, the TAP got $arrived" >&2
        exit 1
    }
    rate=$((frames * 1000000000 / ns))
    rates+=("$rate")
    echo "run $run: $frames frames of $bytes bytes in $((ns / 1000)) us: $rate frames/s"
done
sorted=$(printf '%s\n' "${rates[@]}" | sort -n)
median=$(sed -n "$(((runs + 1) / 2))p" <<<"$sorted")
echo "guest -> TAP, $bytes-byte frames: median $median frames/s [$(head -1 <<<"$sorted")-$(tail -1 <<<"$sorted")] over $runs runs"
