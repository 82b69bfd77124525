#!/usr/bin/env bash
# Runs every test of the workspace. Installs the Debian packages the tests use when they are
# missing (needs root, as the KVM tests do). Tests that boot guests need /dev/kvm and say so when
# it is missing; the Linux boot test downloads Debian's cloud kernel with apt-get download
# (cached in target/linux-kernel/).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v lz4 >/dev/null || missing+=(lz4)
command -v virsh >/dev/null || missing+=(libvirt-clients)
/usr/bin/python3 -c 'import libvirt' 2>/dev/null || missing+=(python3-libvirt)
command -v xmllint >/dev/null || missing+=(libxml2-utils)
[[ -f /usr/share/libvirt/schemas/domain.rng ]] || missing+=(libvirt0)
[[ -f /usr/share/seabios/bios.bin ]] || missing+=(seabios)
dpkg -s busybox-static &>/dev/null || missing+=(busybox-static)
command -v e2fsck >/dev/null || missing+=(e2fsprogs)
command -v script >/dev/null || missing+=(bsdutils)
[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --workspace --locked --no-fail-fast "$@"
