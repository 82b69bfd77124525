#!/usr/bin/env bash
# oxvirtd benchmark: the daemon's share of a call through python3-libvirt (listAllDomains(),
# dom.info() with 10 domains defined), `virsh list --all` beside virsh's own floor, the daemon's
# RSS idle and with 10 running VMs, and VMs started per second (define + start, 20 in a row).
# Builds oxvirtd and oxvmm in release mode (honours CARGO_TARGET_DIR), runs a daemon over
# temporary directories, and drives it with bench/oxvirtd_bench.py under Debian's
# /usr/bin/python3 (packages python3-libvirt, libvirt-clients). See bench/README.md.
# Usage: bench/oxvirtd.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[[ -w /dev/kvm ]] || { echo "$0: needs read-write /dev/kvm" >&2; exit 1; }
/usr/bin/python3 -c 'import libvirt' 2>/dev/null || {
    echo "$0: needs python3-libvirt (Debian package) for /usr/bin/python3" >&2; exit 1; }
command -v virsh >/dev/null || { echo "$0: needs virsh (Debian package libvirt-clients)" >&2; exit 1; }

cargo build --release --quiet -p oxvirtd -p oxvmm -p guests
release=${CARGO_TARGET_DIR:-target}/release
guest=$(find "$release/build" -path '*/guests-*/out/oxguest.elf' -newer "$release/oxvmm" -print -quit 2>/dev/null || true)
[[ -n $guest ]] || guest=$(find "$release/build" -path '*/guests-*/out/oxguest.elf' -print -quit)
[[ -n $guest ]] || { echo "$0: the bundled guest was not built" >&2; exit 1; }

work=$(mktemp -d /tmp/oxvirtd-bench.XXXXXX)
daemon=
cleanup() {
    [[ -n $daemon ]] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    # The daemon leaves VMs running by design; the benchmark destroys its own, this is a net.
    for record in "$work"/run/domains/*.json; do
        [[ $record == *.vm.json || ! -e $record ]] && continue
        pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$record")
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

"$release/oxvirtd" --state-dir "$work/state" --runtime-dir "$work/run" \
    --oxvmm "$release/oxvmm" 2>"$work/oxvirtd.log" &
daemon=$!
for _ in $(seq 200); do [[ -S $work/run/oxvirtd-sock ]] && break; sleep 0.05; done
[[ -S $work/run/oxvirtd-sock ]] || { cat "$work/oxvirtd.log" >&2; exit 1; }

/usr/bin/python3 bench/oxvirtd_bench.py \
    "oxvirt+unix:///system?socket=$work/run/oxvirtd-sock" "$daemon" "$guest" "$work"
