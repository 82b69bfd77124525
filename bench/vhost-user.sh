#!/usr/bin/env bash
# Guest disk throughput through vhost-user-blk: oxvmm-vhost-user against qemu-storage-daemon,
# on the same image file, side by side.
#
# A Linux guest (Debian's cloud kernel under QEMU TCG, busybox initramfs) runs
# `dd iflag=direct` (read) and `dd oflag=direct` (write) of SIZE_MIB in 1 MiB requests; it
# boots ROUNDS times against each back-end, alternating; the script prints the median MB/s of
# each and the ratio ours / qemu-storage-daemon. Both back-ends use the host page cache (ours: direct=off;
# qemu-storage-daemon: cache.direct=off), one queue, one guest vCPU.
#
# TCG emulates the guest's CPU in software, so absolute numbers are far below a KVM host's;
# the ratio is what this measures: both back-ends see the same guest, the same requests.
#
# With JOBS=N the guest runs N dd's at once, each on its own SIZE_MIB/N at its own offset
# (more requests in flight: what the back-ends' I/O threads are for). BASELINE_BIN=path adds a
# third back-end, another oxvmm-vhost-user binary (e.g. an older commit's), to the same
# rounds, for an A/B comparison against the same qemu-storage-daemon runs.
#
# Usage: bench/vhost-user.sh            (SIZE_MIB=256 ROUNDS=5 JOBS=1 by default)
# Needs: qemu-system-x86 (qemu-system-x86_64), qemu-system-common or qemu-utils
# (qemu-storage-daemon), busybox-static, and what crates/vhost-user/tests/linux-modules.sh
# needs (apt-get, dpkg-deb, lz4).
set -euo pipefail

size_mib=${SIZE_MIB:-256}
rounds=${ROUNDS:-5}
jobs=${JOBS:-1}
baseline_bin=${BASELINE_BIN:-}
per_job=$((size_mib / jobs))
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

for tool in qemu-system-x86_64 qemu-storage-daemon; do
    command -v "$tool" >/dev/null || {
        echo "$0: $tool is missing (Debian: qemu-system-x86, qemu-system-common)" >&2
        exit 1
    }
done

echo "building oxvmm-vhost-user (release)…" >&2
(cd "$root" && cargo build --release --quiet -p vhost-user)
backend_bin=$target/release/oxvmm-vhost-user
kernel_dir=$root/target/linux-kernel
bash "$root/crates/vhost-user/tests/linux-modules.sh" "$kernel_dir"
modules=$(find "$kernel_dir" -maxdepth 1 -type d -name 'modules-*' | head -n 1)

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# The initramfs: busybox, the modules, and an /init that measures and powers off.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,dev,proc,sys,lib/modules}
cp "$kernel_dir/busybox" "$rootfs/bin/busybox"
cp "$modules"/*.ko "$modules/load-order" "$rootfs/lib/modules/"
cat >"$rootfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in \$(cat /lib/modules/load-order); do insmod /lib/modules/\$m; done
for i in \$(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.1; done
# Busybox's dd prints no timing: MB/s from /proc/uptime (10 ms ticks) around it.
timed() {
    t0=\$(cut -d' ' -f1 /proc/uptime)
    "\$@" 2>/dev/null
    t1=\$(cut -d' ' -f1 /proc/uptime)
    awk -v t0="\$t0" -v t1="\$t1" 'BEGIN { d = t1 - t0; if (d < 0.01) d = 0.01; printf "%.1f\\n", $((per_job * jobs)) * 1.048576 / d }'
}
# $jobs dd's at once, job i on its own $per_job MiB at offset i * $per_job MiB.
rd() { dd if=/dev/vda of=/dev/null bs=1M count=$per_job skip=\$((\$1 * $per_job)) iflag=direct; }
wr() { dd if=/dev/zero of=/dev/vda bs=1M count=$per_job seek=\$((\$1 * $per_job)) oflag=direct; }
all() { i=0; while [ \$i -lt $jobs ]; do "\$1" \$i & i=\$((i + 1)); done; wait; }
echo "BENCH read \$(timed all rd)"
echo "BENCH write \$(timed all wr)"
poweroff -f
EOF
chmod +x "$rootfs/init"
(cd "$rootfs" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initramfs.cpio"

image=$work/disk.img
dd if=/dev/zero of="$image" bs=1M count=$((size_mib * 2)) status=none

# Boots the guest against the back-end on socket $1; prints its BENCH lines.
run_guest() {
    timeout 600 qemu-system-x86_64 -accel tcg -m 256M -smp 1 \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -kernel "$kernel_dir/bzImage" -initrd "$work/initramfs.cpio" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3" \
        -nodefaults -nographic -serial stdio -no-reboot \
        -chardev socket,id=c0,path="$1" -device vhost-user-blk-pci,chardev=c0 </dev/null |
        tr -d '\r' | grep -o 'BENCH .*' || true
}

# Waits for socket $1 to appear.
wait_socket() {
    for _ in $(seq 1 200); do
        [[ -S $1 ]] && return 0
        sleep 0.05
    done
    echo "$0: no socket $1" >&2
    exit 1
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'; }

"$backend_bin" --socket "$work/ours.sock" blk "path=$image" 2>"$work/ours.log" &
pids+=($!)
qemu-storage-daemon \
    --blockdev "driver=file,node-name=disk,filename=$image,cache.direct=off" \
    --export "type=vhost-user-blk,id=exp,node-name=disk,addr.type=unix,addr.path=$work/qsd.sock,writable=on" \
    2>"$work/qsd.log" &
pids+=($!)
wait_socket "$work/ours.sock"
wait_socket "$work/qsd.sock"
if [[ -n $baseline_bin ]]; then
    # An image of its own: each oxvmm-vhost-user holds an exclusive lock on its image.
    dd if=/dev/zero of="$work/base.img" bs=1M count=$((size_mib * 2)) status=none
    "$baseline_bin" --socket "$work/base.sock" blk "path=$work/base.img" 2>"$work/base.log" &
    pids+=($!)
    wait_socket "$work/base.sock"
fi
# One boot per back-end per round, alternating, so that a change in the machine's load
# during the run affects both alike. Both back-ends stay up; only the guest comes and goes.
ours=""
qsd=""
base=""
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds…" >&2
    ours+=$(run_guest "$work/ours.sock")$'\n'
    qsd+=$(run_guest "$work/qsd.sock")$'\n'
    if [[ -n $baseline_bin ]]; then
        base+=$(run_guest "$work/base.sock")$'\n'
    fi
done

[[ -n $ours && -n $qsd ]] || {
    echo "$0: a guest printed no results (ours: '$ours', qemu-storage-daemon: '$qsd')" >&2
    cat "$work/ours.log" "$work/qsd.log" >&2
    exit 1
}

printf '%-6s %22s %24s %8s\n' "" "oxvmm-vhost-user MB/s" "qemu-storage-daemon MB/s" "ratio"
for op in read write; do
    a=$({ grep "^BENCH $op " <<<"$ours" || true; } | cut -d' ' -f3 | median)
    b=$({ grep "^BENCH $op " <<<"$qsd" || true; } | cut -d' ' -f3 | median)
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
    printf '%-6s %22s %24s %8s\n' "$op" "$a" "$b" "$ratio"
    if [[ -n $baseline_bin ]]; then
        c=$({ grep "^BENCH $op " <<<"$base" || true; } | cut -d' ' -f3 | median)
        ratio=$(awk -v a="$c" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
        printf '%-6s %22s %24s %8s\n' "$op" "$c (baseline)" "$b" "$ratio"
    fi
done
echo "(guest dd, $((per_job * jobs)) MiB in 1 MiB direct requests, $jobs dd at once, median of $rounds; QEMU TCG guest, one vCPU)"
