#!/usr/bin/env bash
# Fetches the guest kernel (through scripts/linux-kernel.sh) and the kernel modules the
# vhost-user tests load in the guest, into DIR:
#   DIR/bzImage, DIR/busybox             as scripts/linux-kernel.sh provides them
#   DIR/modules-VERSION/*.ko             the modules named below and every module they need
#   DIR/modules-VERSION/load-order       their file names, dependencies first
# VERSION is read from the bzImage header, so the modules always match the cached kernel.
# Usage: linux-modules.sh DIR   (the tests use <workspace>/target/linux-kernel)
# Idempotent: an existing load-order made for the same wanted list is not fetched again. Never commit what this downloads.
set -euo pipefail

if (($# != 1)); then
    echo "usage: $0 DIR" >&2
    exit 64
fi
here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../../.." && pwd)
bash "$workspace/scripts/linux-kernel.sh" "$1"
dir=$(cd "$1" && pwd)

# The modules the tests need (their dependencies are found from the modules' own data).
wanted=(virtio_pci virtio_blk virtio_rng vmw_vsock_virtio_transport virtio_net)

# The kernel release: the string at 0x200 + the 16-bit offset at 0x20e of a bzImage.
kernel_release() {
    local offset
    offset=$(od -An -tu2 -j $((0x20e)) -N2 "$1" | tr -d ' ')
    dd if="$1" bs=1 skip=$((offset + 0x200)) count=128 status=none | tr '\0' '\n' |
        head -n 1 | cut -d' ' -f1
}

release=$(kernel_release "$dir/bzImage")
[[ $release =~ ^[0-9]+\.[0-9]+ ]] || {
    echo "$0: cannot read the kernel release from $dir/bzImage (got '$release')" >&2
    exit 1
}
out=$dir/modules-$release

exec 9>"$dir/.modules.lock"
flock 9
if [[ -s $out/load-order && "$(cat "$out/wanted" 2>/dev/null)" == "${wanted[*]}" ]]; then
    exit 0
fi

work=$(mktemp -d "$dir/.modules.XXXXXX")
trap 'rm -rf "$work"' EXIT
apt_options=()
if ((EUID == 0)); then
    apt_options=(-o APT::Sandbox::User=root)
fi
package=linux-image-$release
(cd "$work" && apt-get download -qq "${apt_options[@]}" "$package") || {
    echo "$0: 'apt-get download $package' failed (try apt-get update)" >&2
    exit 1
}
dpkg-deb -x "$work"/"$package"_*.deb "$work/root"
tree=$work/root/lib/modules/$release/kernel

# Module name (dashes read as underscores, as the kernel does) -> file.
declare -A file_of
while IFS= read -r ko; do
    name=$(basename "$ko" .ko)
    file_of[${name//-/_}]=$ko
done < <(find "$tree" -name '*.ko')

# What a module depends on: the depends= field of its .modinfo section.
depends_of() {
    LC_ALL=C grep -a -o 'depends=[^[:cntrl:]]*' "$1" | head -n 1 | cut -d= -f2 | tr ',' ' '
}

declare -A placed
order=()
place() {
    local name=${1//-/_} dep
    [[ -n ${placed[$name]:-} ]] && return 0
    [[ -n ${file_of[$name]:-} ]] || {
        echo "$0: module $name is not in $package (built in?)" >&2
        exit 1
    }
    placed[$name]=1
    for dep in $(depends_of "${file_of[$name]}"); do
        place "$dep"
    done
    order+=("$(basename "${file_of[$name]}")")
}
for name in "${wanted[@]}"; do
    place "$name"
done

mkdir -p "$work/out"
for name in "${!placed[@]}"; do
    cp "${file_of[$name]}" "$work/out/"
done
printf '%s\n' "${order[@]}" >"$work/out/load-order"
printf '%s' "${wanted[*]}" >"$work/out/wanted"
rm -rf "$out"
mv "$work/out" "$out"
